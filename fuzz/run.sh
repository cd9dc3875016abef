#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECONDS each (default 60)
# on the stable toolchain, and prints one line of numbers per target.
# Exits non-zero on the first crash (its input is in fuzz/artifacts/<target>/).
#
# Usage: fuzz/run.sh [SECONDS] [TARGET...]        (needs cargo-fuzz on PATH)
#
# cargo-fuzz passes unstable flags (-Zsanitizer=address, sancov) to rustc;
# RUSTC_BOOTSTRAP=1 lets the stable compiler accept them. Targets are built
# with optimisations *and* debug assertions (-O -a), so an arithmetic
# overflow is a crash too. The build goes to $KEEL_FUZZ_TARGET (default
# fuzz/target), never to the main workspace's CARGO_TARGET_DIR: the
# sanitizer flags would invalidate that build.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(sse_decoder chunk_view answer_view request_reader retry_hints classify_response extract_json translate_openai translate_anthropic responses_reader)
fi
export RUSTC_BOOTSTRAP=1
unset CARGO_TARGET_DIR
target_dir="${KEEL_FUZZ_TARGET:-$PWD/target}"
flags=(-O -a --target-dir "$target_dir")
cargo fuzz build "${flags[@]}"
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  log="$(mktemp)"
  rc=0
  cargo fuzz run "${flags[@]}" "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "fuzz/run.sh: $t FAILED (exit $rc)" >&2
    grep -A30 -m1 -E "panicked at|ERROR: libFuzzer|ERROR: AddressSanitizer" "$log" >&2 || tail -40 "$log" >&2
    grep -E "Test unit written to" "$log" >&2 || true
    rm -f "$log"
    exit "$rc"
  fi
  execs="$(sed -n 's/^stat::number_of_executed_units:[[:space:]]*//p' "$log")"
  rate="$(sed -n 's/^stat::average_exec_per_sec:[[:space:]]*//p' "$log")"
  files="$(find "corpus/$t" -type f | wc -l)"
  bytes="$(find "corpus/$t" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')"
  echo "fuzz $t: ${secs}s, ${execs:-?} execs, ${rate:-?} exec/s, corpus ${files} files / ${bytes} bytes, 0 crashes"
  rm -f "$log"
done
