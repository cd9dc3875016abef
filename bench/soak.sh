#!/usr/bin/env bash
# Soak: moderate load through `keel serve` against `keel chaos`, with the
# primary's faults rotated every few seconds via
# PUT /_chaos/upstreams/p/faults (500, 429, 529+502, full outage, resets,
# broken streams, healthy) and a healthy secondary. Reports the success rate
# per fault plan (must be 100%: these are faults the policy absorbs), keel's
# VmRSS and open file descriptors at start and end, and fails on any error,
# on fd growth or on RSS growth.
#
# The driver is crates/keel/tests/soak.rs (the suite, and so CI, runs it for 60 s).
#
#   bench/soak.sh            # 10 minutes
#   bench/soak.sh 120        # 2 minutes
#   KEEL_SOAK_RPS=50 KEEL_SOAK_ROTATE_SECS=5 bench/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export KEEL_SOAK_SECS="${1:-600}"
export KEEL_SOAK_RPS="${KEEL_SOAK_RPS:-20}"
export KEEL_SOAK_ROTATE_SECS="${KEEL_SOAK_ROTATE_SECS:-3}"
exec cargo test -p keel --test soak -- --nocapture --test-threads 1
