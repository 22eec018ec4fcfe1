#!/usr/bin/env bash
# Cost of the proxy, measured side by side in one run, alternating A/B/C:
#   direct  wrk -> upstream
#   plain   wrk -> proxy inbound -> upstream (no policy: plain forwarding)
#   full    wrk -> proxy outbound -> Service with two endpoints under a full
#           policy whose breaker stays closed: timeouts, retry + budget,
#           breaker, outlier detection, concurrency limit, P2C balancing
# Each path gets a max-throughput run (-c50) and a single-connection run
# (-c1) whose latency is the per-request cost without queueing. Reports the
# proxy's RSS idle and its peak under load, and the CPU (user + system, from
# /proc) the proxy and the two upstreams spent per request in each run: the
# full path spreads its load over both upstreams, which share core 1 with
# the proxy. Load on core 0; proxy and upstreams on core 1.
#
#   bash bench/forwarding.sh [seconds-per-run] [rounds]
#
# OUTRIGGER_PROXY_BIN measures another build of the proxy (e.g. an older
# commit's, built elsewhere) against the same upstreams.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
ROUNDS=${2:-2}
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
cargo build --release -q -p outrigger-proxy -p outrigger-tools
BIN=${OUTRIGGER_PROXY_BIN:-target/release/outrigger-proxy}
TOOLS=target/release/outrigger-tools
WORK=$(mktemp -d)

UP_A=18080; UP_B=18081; IN_PORT=14143; OUT_PORT=14140; ADMIN_PORT=14191
taskset -c 1 $TOOLS fault-upstream --listen 127.0.0.1:$UP_A --body-bytes 64 >/dev/null &
PIDS=($!)
taskset -c 1 $TOOLS fault-upstream --listen 127.0.0.1:$UP_B --body-bytes 64 >/dev/null &
PIDS+=($!)


taskset -c 1 $BIN --inbound-addr 127.0.0.1:$IN_PORT --outbound-addr 127.0.0.1:$OUT_PORT \
  --admin-addr 127.0.0.1:$ADMIN_PORT --app-addr 127.0.0.1:$UP_A --workers 1 \
  --namespace bench --policy bench/full-policy.yaml --log-level warn &
PROXY_PID=$!
PIDS+=($PROXY_PID)
trap 'kill ${PIDS[*]} 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:$ADMIN_PORT/ready >/dev/null && break; sleep 0.05; done

rss_kib() { awk '/VmRSS/ {print $2}' /proc/$PROXY_PID/status; }
# A process's user + system time so far, in clock ticks (/proc/PID/stat
# fields 14 and 15; the command name, field 2, has no spaces here).
cpu_ticks() { awk '{print $14 + $15}' /proc/$1/stat; }
TICK=$(getconf CLK_TCK)
per_request() { # ticks requests
  awk -v t="$1" -v n="$2" -v hz="$TICK" 'BEGIN { if (n > 0) printf "%.1f", t * 1e6 / hz / n; else print "-" }'
}
echo "proxy RSS idle: $(rss_kib) KiB"
echo "per run: ${SECS}s; rounds: $ROUNDS; $(nproc) cores; $(date -u +%FT%TZ)"
echo

PEAK=0
run() { # name conns url [host]
  local args=(-t1 -c"$2" -d"${SECS}s" --latency)
  [ -n "${4:-}" ] && args+=(-H "Host: $4")
  local proxy_cpu up_cpu
  proxy_cpu=$(cpu_ticks $PROXY_PID)
  up_cpu=$(( $(cpu_ticks ${PIDS[0]}) + $(cpu_ticks ${PIDS[1]}) ))
  taskset -c 0 wrk "${args[@]}" "$3" > "$WORK/out" 2>&1 &
  local wrk_pid=$!
  while kill -0 $wrk_pid 2>/dev/null; do
    r=$(rss_kib); [ "$r" -gt "$PEAK" ] && PEAK=$r; sleep 0.5
  done
  wait $wrk_pid
  local out; out=$(cat "$WORK/out")
  local rps p50 p99 errors
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  errors=$(awk '/Non-2xx/ {print $5}' <<<"$out")
  local requests
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  proxy_cpu=$(( $(cpu_ticks $PROXY_PID) - proxy_cpu ))
  up_cpu=$(( $(cpu_ticks ${PIDS[0]}) + $(cpu_ticks ${PIDS[1]}) - up_cpu ))
  printf "| %-6s | %5s | %10s | %8s | %8s | %6s | %9s | %9s |\n" "$1" "$2" "$rps" "$p50" "$p99" "${errors:-0}" \
    "$(per_request "$proxy_cpu" "$requests")" "$(per_request "$up_cpu" "$requests")"
}
echo "| path   | conns |      req/s |      p50 |      p99 | non-2xx | proxy µs/req | upstreams µs/req |"
echo "|--------|-------|------------|----------|----------|---------|-----------|-----------|"
for _ in $(seq "$ROUNDS"); do
  for conns in 50 1; do
    run direct $conns "http://127.0.0.1:$UP_A/"
    run plain $conns "http://127.0.0.1:$IN_PORT/"
    run full $conns "http://127.0.0.1:$OUT_PORT/" full.bench
  done
done
echo
echo "proxy RSS peak under load: $PEAK KiB"
curl -sf http://127.0.0.1:$ADMIN_PORT/metrics | grep -E '^outrigger_(circuit_state|retries_total)' || true
