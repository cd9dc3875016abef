#!/usr/bin/env bash
# Instructions Keel executes per request, counted by valgrind's callgrind:
# unlike CPU time, the count does not move with what else the machine is
# doing, so two builds can be compared on a noisy VM.
#
#   bench/callgrind.sh [KEEL_BIN] [--stream]
#
# Runs `keel serve` under callgrind twice on the overhead bench's config:
# once idle for 10 s (start-up and shutdown), once while `keel bench overhead
# --target` sends it 400 requests (40/s for 10 s; plain, or SSE with
# --stream). Prints (instructions of the loaded run - idle run) / 400.
# Needs valgrind (Debian's `valgrind`) and curl. Ports 18080 and 19999
# (KEEL_CALLGRIND_PORT and KEEL_CALLGRIND_UPSTREAM_PORT move them, to run
# two at once).
# With CALLGRIND_KEEP=DIR the two profiles are kept there, for
# `callgrind_annotate DIR/callgrind.loaded`.
set -euo pipefail
bin="${1:-target/release/keel}"
mode="${2:-}"
port="${KEEL_CALLGRIND_PORT:-18080}"
upstream_port="${KEEL_CALLGRIND_UPSTREAM_PORT:-19999}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cat >"$work/keel.toml" <<EOF
[server]
listen = "127.0.0.1:$port"

[providers.bench]
kind = "openai"
base_url = "http://127.0.0.1:$upstream_port/v1"
api_key = "sk-bench-upstream"

[deployments.bench]
provider = "bench"
model = "bench-upstream"

[routes.gpt-4o-mini]
chain = ["bench"]
EOF

# Starts keel serve under callgrind, runs "$@" once it answers, stops it
# with SIGTERM (a clean exit writes the counts) and prints the total.
count() {
  local out="$work/callgrind.$1"; shift
  valgrind --tool=callgrind --callgrind-out-file="$out" \
    "$bin" serve --config "$work/keel.toml" >"$work/serve.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do
    curl -s -o /dev/null "http://127.0.0.1:$port/healthz" && break
    sleep 0.3
  done
  "$@"
  kill -TERM "$pid"
  wait "$pid" || true
  awk '/^summary:/ { print $2 }' "$out"
}

load() {
  "$bin" bench overhead --rates 40 --duration 10s --slice 1s --concurrency 0 \
    --upstream-listen "127.0.0.1:$upstream_port" --target-name callgrind \
    --target "http://127.0.0.1:$port/v1/chat/completions" $mode >"$work/bench.md" 2>&1
}

idle=$(count idle sleep 10)
loaded=$(count loaded load)
if ! grep -q '^| 40 | callgrind | 400/400 ' "$work/bench.md"; then
  echo "bench/callgrind.sh: not every request succeeded:" >&2
  cat "$work/bench.md" >&2
  exit 1
fi
if [ -n "${CALLGRIND_KEEP:-}" ]; then
  mkdir -p "$CALLGRIND_KEEP"
  cp "$work/callgrind.idle" "$work/callgrind.loaded" "$CALLGRIND_KEEP/"
fi
echo "keel serve: $(( (loaded - idle) / 400 )) instructions per request (${mode:-plain}; idle run $idle, loaded run $loaded)"
