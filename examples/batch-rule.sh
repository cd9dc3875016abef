#!/bin/sh
# A rule-based tier for `keel batch --rule-fallback 'sh examples/batch-rule.sh'`:
# gets an item the models could not answer as one JSON line on stdin, and
# answers {"content": "..."} on stdout (or exits non-zero: dead letter).
# This one pulls the invoice number out of the prompt.
number=$(grep -o 'Invoice [0-9][0-9]*' | head -n 1 | cut -d' ' -f2)
[ -n "$number" ] || exit 1
printf '{"content": "invoice number: %s (rule-based)"}\n' "$number"
