#!/usr/bin/env bash
# Plain forwarding cost: wrk against the upstream directly and through the
# proxy's inbound listener, alternating A/B/A/B in one run, plus the proxy's RSS
# idle and under load. Load generator on core 0, proxy and upstream on core 1.
#
#   bash bench/forwarding.sh [seconds-per-run] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
ROUNDS=${2:-2}
CONNS=${CONNS:-50}
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
cargo build --release -q -p outrigger-proxy
BIN=target/release/outrigger-proxy

UP_PORT=18080; IN_PORT=14143; OUT_PORT=14140; ADMIN_PORT=14191
taskset -c 1 $BIN fault-upstream --listen 127.0.0.1:$UP_PORT --body-bytes 64 >/dev/null &
UP_PID=$!
taskset -c 1 $BIN --inbound-addr 127.0.0.1:$IN_PORT --outbound-addr 127.0.0.1:$OUT_PORT \
  --admin-addr 127.0.0.1:$ADMIN_PORT --app-addr 127.0.0.1:$UP_PORT --workers 1 --log-level warn &
PROXY_PID=$!
trap 'kill $UP_PID $PROXY_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:$ADMIN_PORT/ready >/dev/null && break; sleep 0.05; done

rss_kib() { awk '/VmRSS/ {print $2}' /proc/$PROXY_PID/status; }
echo "proxy RSS idle: $(rss_kib) KiB"

run() { # name port
  local out
  out=$(taskset -c 0 wrk -t1 -c"$CONNS" -d"${SECS}s" --latency "http://127.0.0.1:$2/" 2>&1)
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  printf "| %-8s | %10s | %8s | %8s |\n" "$1" "$rps" "$p50" "$p99"
}
echo "| path     |      req/s |      p50 |      p99 |"
echo "|----------|------------|----------|----------|"
PEAK=0
for _ in $(seq "$ROUNDS"); do
  run direct $UP_PORT
  run proxy $IN_PORT &
  RUN=$!
  while kill -0 $RUN 2>/dev/null; do
    r=$(rss_kib); [ "$r" -gt "$PEAK" ] && PEAK=$r; sleep 0.5
  done
  wait $RUN
done
echo "proxy RSS peak under load: $PEAK KiB"
