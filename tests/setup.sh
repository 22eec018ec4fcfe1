#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine (run as root:
# apt-get and network namespaces need it), or says exactly what is missing.
# Idempotent and quick when everything is there; tests/run.sh calls it first.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "tests/setup.sh: run as root (apt-get installs; tests create network namespaces)" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# command:package pairs.
need_apt=()
for pair in curl:curl redis-server:redis-server redis-cli:redis-tools wrk:wrk \
            h2load:nghttp2-client iptables:iptables ip:iproute2 sha256sum:coreutils \
            haproxy:haproxy nginx:nginx-light taskset:util-linux setpriv:util-linux \
            git:git python3:python3 epmd:erlang-base \
            /usr/lib/rabbitmq/bin/rabbitmq-server:rabbitmq-server; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need_apt+=("${pair#*:}")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== apt-get install ${need_apt[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

# Prometheus and promtool (Debian's package ships both): the monitoring test
# (tests/node/tests/prometheus.rs) and the alert rule tests in
# tests/chart/check.sh.
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || {
  echo "== apt-get install prometheus"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends prometheus
}

python3 -m pip --version >/dev/null 2>&1 || {
  echo "== apt-get install python3-pip"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends python3-pip
}
# Every module the Python peers (tests/peers/) import: websockets, grpc
# (grpcio), pika (AMQP), aiosmtpd, opentelemetry.proto (OTLP receiver).
python3 -c 'import websockets, grpc, pika, aiosmtpd, opentelemetry.proto' 2>/dev/null || {
  echo "== pip install -r tests/peers/requirements.txt"
  python3 -m pip install -q -r tests/peers/requirements.txt
}

rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt

command -v cargo-fuzz >/dev/null 2>&1 || {
  echo "== cargo install cargo-fuzz"
  cargo install --locked cargo-fuzz
}

command -v oha >/dev/null 2>&1 || {
  echo "== cargo install oha (benchmark smoke)"
  cargo install --locked oha
}

command -v cargo-deny >/dev/null 2>&1 || {
  echo "== cargo install cargo-deny"
  cargo install --locked cargo-deny
}

