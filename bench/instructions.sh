#!/usr/bin/env bash
# User-space instructions per request, counted by valgrind's callgrind: a
# figure that does not move with the machine's load, for comparing builds and
# paths where wall-clock runs on 2 shared cores are too noisy to tell a few
# percent apart. Kernel time (syscalls, wake-ups) is not in it: bench/run.sh
# measures the whole.
#
#   plain  client -> proxy inbound -> upstream (no policy)
#   full   client -> proxy outbound -> Service with two endpoints under
#          bench/full-policy.yaml (every resilience layer, breaker closed)
#   h2     with INSTR_LOAD=h2 instead: h2load -c10 -m10 (prior knowledge)
#          -> proxy inbound -> nginx over HTTP/2, as bench/run.py's h2 path
#
# The upstream is nginx (one worker, 64-byte body), as in bench/run.py. The
# proxy runs under callgrind; after a warm-up the counters are zeroed, N GETs
# go over 10 keep-alive connections, and the counters are dumped.
#
#   bash bench/instructions.sh [requests]          # default 3000
#   INSTR_LOAD=h2 bash bench/instructions.sh [requests]
#   OUTRIGGER_PROXY_BIN=/path/to/other/build bash bench/instructions.sh
#   INSTR_PORT_OFFSET=1000 bash bench/instructions.sh   # beside bench/run.sh
#
# Installs valgrind, nginx and h2load (Debian) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-3000}
need=()
for pair in valgrind:valgrind nginx:nginx-light h2load:nghttp2-client; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
if [ -z "${OUTRIGGER_PROXY_BIN:-}" ]; then
  cargo build --release -q -p outrigger-proxy
fi
BIN=${OUTRIGGER_PROXY_BIN:-target/release/outrigger-proxy}
WORK=$(mktemp -d)
chmod 755 "$WORK"
OFF=${INSTR_PORT_OFFSET:-0}
UP_A=$((18080 + OFF)); UP_B=$((18081 + OFF)); UP_H2=$((18082 + OFF))
IN_PORT=$((14143 + OFF)); OUT_PORT=$((14140 + OFF)); ADMIN_PORT=$((14191 + OFF))
LOAD=${INSTR_LOAD:-h1}
# The full policy names the upstreams' ports: moved with the offset.
sed -e "s/port: 18080/port: $UP_A/" -e "s/port: 18081/port: $UP_B/" \
  bench/full-policy.yaml > "$WORK/full-policy.yaml"
BODY=0123456789012345678901234567890123456789012345678901234567890123
mkdir -p "$WORK/logs"
cat > "$WORK/nginx.conf" <<EOF
worker_processes 1;
daemon off;
error_log $WORK/logs/error.log warn;
pid $WORK/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$UP_A; location = / { default_type text/plain; return 200 "$BODY"; } }
  server { listen 127.0.0.1:$UP_B; location = / { default_type text/plain; return 200 "$BODY"; } }
  server { listen 127.0.0.1:$UP_H2 http2; location = / { default_type text/plain; return 200 "$BODY"; } }
}
EOF
nginx -c "$WORK/nginx.conf" -p "$WORK" &
NGINX=$!
PROXY=
cleanup() {
  [ -n "$PROXY" ] && kill "$PROXY" 2>/dev/null || true
  kill "$NGINX" 2>/dev/null || true
  [ -n "${INSTR_KEEP:-}" ] && cp "$WORK"/callgrind.* "$INSTR_KEEP"/ 2>/dev/null; rm -rf "$WORK"
}
trap cleanup EXIT

# GETs over `conns` keep-alive connections, each response read whole.
load() { # port host requests conns
  python3 - "$@" <<'PY'
import socket, sys
port, host, n, conns = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(conns)]
request = ("GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % host).encode()
for _ in range(n // conns):
    for s in socks:
        s.sendall(request)
    for s in socks:
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < 64:
            chunk = s.recv(4096)
            if not chunk:
                raise SystemExit("connection closed mid-response")
            data += chunk
        if not data.startswith(b"HTTP/1.1 200"):
            raise SystemExit("unexpected response: %r" % data[:80])
PY
}

# GETs over 10 HTTP/2 connections, 10 streams at a time on each; fails
# unless every one succeeds.
load_h2() { # port host requests conns
  local out
  out=$(h2load -c "$4" -m 10 -n "$3" -H ":authority: $2" "http://127.0.0.1:$1/")
  grep -q "^requests: $3 total, $3 started, $3 done, $3 succeeded" <<<"$out" || {
    echo "h2load: not every request succeeded:" >&2
    echo "$out" >&2
    exit 1
  }
}

measure() { # name port host [app port]
  local out="$WORK/callgrind.$1" send=load
  [ "$LOAD" = h2 ] && send=load_h2
  valgrind --tool=callgrind --callgrind-out-file="$out" "$BIN" \
    --inbound-addr 127.0.0.1:$IN_PORT --outbound-addr 127.0.0.1:$OUT_PORT \
    --admin-addr 127.0.0.1:$ADMIN_PORT --app-addr 127.0.0.1:${4:-$UP_A} --workers 1 \
    --namespace bench --policy "$WORK/full-policy.yaml" --log-level warn 2>"$WORK/valgrind.log" &
  PROXY=$!
  for _ in $(seq 600); do
    curl -sf http://127.0.0.1:$ADMIN_PORT/ready >/dev/null && break
    kill -0 $PROXY 2>/dev/null || { cat "$WORK/valgrind.log" >&2; exit 1; }
    sleep 0.1
  done
  $send "$2" "$3" 200 10
  callgrind_control -z $PROXY >/dev/null 2>&1
  $send "$2" "$3" "$N" 10
  callgrind_control -d $PROXY >/dev/null 2>&1
  kill $PROXY; wait $PROXY 2>/dev/null || true
  PROXY=
  local total
  total=$(callgrind_annotate "$out.1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  echo "$1 $((total / N))"
}

if [ "$LOAD" = h2 ]; then
  echo "instructions per HTTP/2 request (callgrind, $N GETs over 10 connections, 10 streams each, $BIN)"
  measure h2 $IN_PORT plain.bench $UP_H2
  exit 0
fi
echo "instructions per request (callgrind, $N GETs over 10 connections, $BIN)"
plain=$(measure plain $IN_PORT plain.bench | awk '{print $2}')
full=$(measure full $OUT_PORT full.bench | awk '{print $2}')
echo "plain $plain"
echo "full  $full"
awk -v p="$plain" -v f="$full" 'BEGIN {printf "the full resilience stack: +%.1f%% instructions\n", (f - p) * 100 / p}'
