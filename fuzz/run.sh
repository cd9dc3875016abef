#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) on the stable toolchain.
# cargo-fuzz passes unstable flags (-Zsanitizer=address, sancov) to rustc;
# RUSTC_BOOTSTRAP=1 lets the stable compiler accept them.
# Usage: fuzz/run.sh [SECONDS] [TARGET...]   (needs `cargo install cargo-fuzz`)
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(sse_decoder retry_hints classify_response extract_json translate_requests)
fi
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "== $t (${secs}s)"
  log="$(mktemp)"
  rc=0
  cargo fuzz run -O "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 >"$log" 2>&1 || rc=$?
  grep -E '^#[0-9]+[[:space:]]+DONE|^Done' "$log" || true
  if [ "$rc" -ne 0 ]; then
    tail -40 "$log"
    exit "$rc"
  fi
  rm -f "$log"
done
