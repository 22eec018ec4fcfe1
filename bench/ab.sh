#!/usr/bin/env bash
# Two builds of the proxy side by side: plain forwarding to one fault-upstream,
# wrk -t1 -c50 against each in turn, round after round (A/B/A/B), with the
# proxy's CPU per request (user+system from /proc). Both proxies and the
# upstream on core 1, wrk on core 0. For the per-request cost of a change.
# With AB_LOAD=h2 the load is HTTP/2 instead: h2load -c10 -m10 (prior
# knowledge), forwarded as HTTP/2 to the same upstream.
#
#   bash bench/ab.sh OLD_BINARY NEW_BINARY [rounds] [seconds-per-run]
#   AB_LOAD=h2 bash bench/ab.sh OLD_BINARY NEW_BINARY [rounds] [seconds-per-run]
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: bash bench/ab.sh OLD_BINARY NEW_BINARY [rounds] [seconds]" >&2; exit 2; }
BINS=("$1" "$2"); ROUNDS=${3:-4}; SECS=${4:-5}
LOAD=${AB_LOAD:-h1}
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
[ "$LOAD" = h1 ] || command -v h2load >/dev/null || { echo "h2load is needed: apt-get install nghttp2-client" >&2; exit 1; }
cargo build --release -q -p outrigger-tools
taskset -c 1 target/release/outrigger-tools fault-upstream --listen 127.0.0.1:18080 --body-bytes 64 >/dev/null &
PIDS=($!)
trap 'kill ${PIDS[*]} 2>/dev/null || true' EXIT
for i in 0 1; do
  taskset -c 1 "${BINS[$i]}" --inbound-addr 127.0.0.1:$((15143 + i * 100)) --outbound-addr 127.0.0.1:0 \
    --admin-addr 127.0.0.1:$((15191 + i * 100)) --app-addr 127.0.0.1:18080 --workers 1 \
    --namespace bench --log-level warn &
  PIDS+=($!)
done
for i in 0 1; do
  for _ in $(seq 100); do curl -sf http://127.0.0.1:$((15191 + i * 100))/ready >/dev/null && break; sleep 0.05; done
  taskset -c 0 wrk -t1 -c10 -d1s http://127.0.0.1:$((15143 + i * 100))/ >/dev/null # warm up
done
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
echo "$(nproc) cores; $(date -u +%FT%TZ); ${SECS}s per run; load $LOAD"
for r in $(seq "$ROUNDS"); do
  for i in 0 1; do
    pid=${PIDS[$((i + 1))]}
    t0=$(ticks "$pid")
    if [ "$LOAD" = h2 ]; then
      out=$(taskset -c 0 h2load -c10 -m10 -t1 -D "$SECS" http://127.0.0.1:$((15143 + i * 100))/)
      t1=$(ticks "$pid")
      n=$(awk '/^requests:/ {print $8}' <<<"$out")
      rps=$(awk '/^finished in/ {print $4}' <<<"$out")
    else
      out=$(taskset -c 0 wrk -t1 -c50 -d"${SECS}s" http://127.0.0.1:$((15143 + i * 100))/)
      t1=$(ticks "$pid")
      n=$(awk '/requests in/ {print $1}' <<<"$out")
      rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    fi
    us=$(awk -v d=$((t1 - t0)) -v n="$n" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", d * 1e6 / hz / n}')
    echo "round $r  ${BINS[$i]}  req/s $rps  CPU µs/request $us"
  done
done
