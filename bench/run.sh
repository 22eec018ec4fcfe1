#!/usr/bin/env bash
# Outrigger against HAProxy and nginx, side by side in one run (bench/run.py
# says what each path and scenario is). Installs its tools: wrk, haproxy,
# nginx, h2load (Debian) and oha (crates.io).
#
#   bash bench/run.sh                 # 10 s per run, 2 alternating rounds
#   bash bench/run.sh --write         # ... and update BENCHMARKS.md, bench/latency.svg
#   bash bench/run.sh --smoke         # every scenario for a moment (CI)
#   bash bench/run.sh --seconds 5 --rounds 3
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for pair in wrk:wrk haproxy:haproxy nginx:nginx-light h2load:nghttp2-client taskset:util-linux; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
command -v oha >/dev/null 2>&1 || cargo install --locked oha
cargo build --release -q -p outrigger-proxy
ulimit -n 65536 2>/dev/null || true
exec python3 bench/run.py "$@"
