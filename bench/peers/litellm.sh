#!/usr/bin/env bash
# Keel and LiteLLM side by side, on the same machine, in the same run.
#
# Installs LiteLLM's proxy from PyPI into a venv, configures it like Keel
# (the same upstreams, retries and fallback), and runs both `keel bench`
# modes with LiteLLM as one more path (--target). Not part of CI: the
# install alone takes minutes. Writes bench/results/<date>-litellm.md.
#
#   bench/peers/litellm.sh                  # full run (several minutes)
#   QUICK=1 bench/peers/litellm.sh          # short run, to try the script
#
# Environment: KEEL (a release `keel` binary; default: built with cargo),
# PEERS_DIR (where the venv lives; default ~/.cache/keel-peers),
# LITELLM_VERSION (pip spec suffix, e.g. "==1.79.0"; default: latest),
# RATES (overhead rates; default 100,200,500,1000).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PEERS_DIR="${PEERS_DIR:-$HOME/.cache/keel-peers}"
VENV="$PEERS_DIR/litellm-venv"
LITELLM_PORT="${LITELLM_PORT:-14000}"
UPSTREAM_PORT="${UPSTREAM_PORT:-18431}"
CHAOS_PORT="${CHAOS_PORT:-18432}"
MASTER_KEY="sk-bench-litellm"
WORKERS="${WORKERS:-$(nproc)}"
if [[ -n "${QUICK:-}" ]]; then
  RATES="${RATES:-50,100}"; OVERHEAD_DURATION=2s; TP_DURATION=2s
  RES_DURATION=15s; RES_RATE=10
else
  RATES="${RATES:-100,200,500,1000}"; OVERHEAD_DURATION=6s; TP_DURATION=6s
  RES_DURATION=60s; RES_RATE=50
fi

# 1. LiteLLM's proxy in a venv.
mkdir -p "$PEERS_DIR"
if [[ ! -x "$VENV/bin/litellm" ]]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
  "$VENV/bin/pip" install --quiet "litellm[proxy]${LITELLM_VERSION:-}"
fi
LITELLM_VERSION_INSTALLED="$("$VENV/bin/pip" show litellm | awk '/^Version/ {print $2}')"

# 2. Keel.
if [[ -z "${KEEL:-}" ]]; then
  (cd "$ROOT" && cargo build --release -p keel --quiet)
  KEEL="$ROOT/target/release/keel"
fi

WORK="$(mktemp -d)"
LITELLM_PID=""
cleanup() {
  if [[ -n "$LITELLM_PID" ]]; then stop_litellm; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

start_litellm() { # config file
  # Its own process group, so its workers stop with it.
  LITELLM_LOG=ERROR setsid "$VENV/bin/litellm" --config "$1" --host 127.0.0.1 --port "$LITELLM_PORT" \
    --num_workers "$WORKERS" >"$WORK/litellm.log" 2>&1 &
  LITELLM_PID=$!
  for _ in $(seq 1 300); do
    if curl -fs -o /dev/null "http://127.0.0.1:$LITELLM_PORT/health/liveliness"; then return 0; fi
    if ! kill -0 "$LITELLM_PID" 2>/dev/null; then cat "$WORK/litellm.log" >&2; exit 1; fi
    sleep 1
  done
  echo "LiteLLM did not start within 300 s" >&2; cat "$WORK/litellm.log" >&2; exit 1
}
stop_litellm() {
  kill -- "-$LITELLM_PID" 2>/dev/null || true; wait "$LITELLM_PID" 2>/dev/null || true; LITELLM_PID=""
}

# Settings shared by both runs: quiet, no database, no telemetry.
COMMON_SETTINGS="
litellm_settings:
  telemetry: false
  set_verbose: false
  drop_params: true
general_settings:
  master_key: $MASTER_KEY
  disable_spend_logs: true
"

# 3. Overhead: one deployment on the bench's fixed upstream (no retries
#    needed: it never fails).
cat >"$WORK/overhead.yaml" <<EOF
model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/bench-upstream
      api_base: http://127.0.0.1:$UPSTREAM_PORT/v1
      api_key: sk-bench-upstream
$COMMON_SETTINGS
EOF

# 4. Resilience: Keel's demo policy in LiteLLM's words: 3 attempts on the
#    primary (2 retries), then the Anthropic-style secondary; a 1 s attempt
#    timeout; a deployment cools down after 5 failures (Keel: breaker).
cat >"$WORK/resilience.yaml" <<EOF
model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: http://127.0.0.1:$CHAOS_PORT/target-primary/v1
      api_key: sk-demo-primary
      timeout: 1
  - model_name: claude-fallback
    litellm_params:
      model: anthropic/claude-haiku-4-5
      api_base: http://127.0.0.1:$CHAOS_PORT/target-secondary/v1/messages
      api_key: sk-ant-demo-secondary
      timeout: 10
router_settings:
  num_retries: 2
  allowed_fails: 5
  cooldown_time: 2
  fallbacks: [{"gpt-4o-mini": ["claude-fallback"]}]
$COMMON_SETTINGS
EOF

OUT="$ROOT/bench/results/$(date -u +%Y-%m-%d)-litellm.md"
mkdir -p "$ROOT/bench/results"
{
  echo "# Keel vs LiteLLM $LITELLM_VERSION_INSTALLED, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- machine: \`nproc\` = $(nproc); \`uname -a\` = \`$(uname -a)\`"
  echo "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- LiteLLM: \`litellm --config ... --num_workers $WORKERS\` (LITELLM_LOG=ERROR), configs below"
  echo "- command: \`bench/peers/litellm.sh\`${QUICK:+ (QUICK=1)}"
  echo
} >"$OUT"

start_litellm "$WORK/overhead.yaml"
"$KEEL" bench overhead --rates "$RATES" --duration "$OVERHEAD_DURATION" --slice 1s \
  --throughput-duration "$TP_DURATION" --upstream-listen "127.0.0.1:$UPSTREAM_PORT" \
  --target "http://127.0.0.1:$LITELLM_PORT/v1/chat/completions" --target-name litellm \
  --target-key "$MASTER_KEY" | tee -a "$OUT"
stop_litellm

start_litellm "$WORK/resilience.yaml"
"$KEEL" bench resilience --duration "$RES_DURATION" --rate "$RES_RATE" \
  --chaos-listen "127.0.0.1:$CHAOS_PORT" \
  --target "http://127.0.0.1:$LITELLM_PORT/v1/chat/completions" --target-name litellm \
  --target-key "$MASTER_KEY" | tee -a "$OUT"
stop_litellm

{
  echo
  echo "## LiteLLM configs"
  echo
  echo '```yaml'; cat "$WORK/overhead.yaml"; echo '```'
  echo
  echo '```yaml'; cat "$WORK/resilience.yaml"; echo '```'
} >>"$OUT"
echo "wrote $OUT"
