#!/usr/bin/env bash
# What tracing costs the proxy: the same release build side by side, tracing
# off and tracing on (every request starts a sampled trace: the worst case,
# a span per request and per attempt, all exported), through bench/ab.sh
# (wrk -t1 -c50 against each in turn, round after round, CPU per request).
# The spans go to a real OTLP receiver (tests/peers/otlp_receiver.py in its
# counting mode) on core 0 with wrk; it prints how many it received.
#
#   bash bench/tracing.sh [rounds] [seconds-per-run] [sampling]
#
# For instructions per request (callgrind), the same environment works:
#   OUTRIGGER_TRACE_OTLP_ENDPOINT=http://127.0.0.1:14317 OUTRIGGER_TRACE_SAMPLING=1 \
#     bash bench/instructions.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-4}; SECS=${2:-5}; SAMPLING=${3:-1}
python3 -c 'import grpc, opentelemetry.proto' 2>/dev/null || {
  echo "python3 with grpcio and opentelemetry-proto is needed: bash tests/setup.sh" >&2; exit 1; }
cargo build --release -q -p outrigger-proxy
WORK=$(mktemp -d)
RECEIVER=
cleanup() {
  [ -n "$RECEIVER" ] && kill -INT "$RECEIVER" 2>/dev/null && wait "$RECEIVER" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
taskset -c 0 python3 tests/peers/otlp_receiver.py 14317 --count > "$WORK/receiver.log" &
RECEIVER=$!
for _ in $(seq 100); do grep -q listening "$WORK/receiver.log" && break; sleep 0.1; done
BIN=$(pwd)/target/release/outrigger-proxy
# Each "binary" bench/ab.sh runs is the same build under another environment
# (exec keeps the process id, whose CPU ab.sh reads).
printf '#!/bin/sh\nexec %s "$@"\n' "$BIN" > "$WORK/tracing-off"
printf '#!/bin/sh\nOUTRIGGER_TRACE_OTLP_ENDPOINT=http://127.0.0.1:14317 OUTRIGGER_TRACE_SAMPLING=%s exec %s "$@"\n' \
  "$SAMPLING" "$BIN" > "$WORK/tracing-on"
chmod +x "$WORK/tracing-off" "$WORK/tracing-on"
bash bench/ab.sh "$WORK/tracing-off" "$WORK/tracing-on" "$ROUNDS" "$SECS" | sed "s|$WORK/||"
kill -INT "$RECEIVER"; wait "$RECEIVER" 2>/dev/null || true
RECEIVER=
echo "OTLP receiver: $(grep spans "$WORK/receiver.log" || echo 'no count')"
