#!/usr/bin/env bash
# The soak benchmark (not a test): `bash bench/soak.sh [minutes]` (default 3).
# One test API server, the test node (tests/node) and `helm install` of the
# chart; a meshed `load` Deployment calls the meshed `web` Deployment at
# OUTRIGGER_SOAK_RATE req/s (default 500, bounded, open loop) while the
# ResiliencePolicy is patched every 10 s, a web pod deleted every 30 s and
# the operator's leader pod every 2 minutes. Prints requests, failed
# requests, p99 and the RSS of the proxies and operators at start and end
# (the SOAK lines; tests/node/tests/soak.rs does the work). Needs root.
# SOAK_PROFILE=release measures optimized binaries (default: the dev
# profile the tests use).
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-3}
OUTRIGGER_APISERVER_BIN=$(bash tests/apiserver/build.sh | tail -n1)
OUTRIGGER_ETCD_BIN=$(dirname "$(dirname "$OUTRIGGER_APISERVER_BIN")")/etcd
KUBE_TOOLS=$(bash tests/apiserver/install-kubectl.sh | tail -n1)
OUTRIGGER_KUBECTL=$KUBE_TOOLS/kubectl OUTRIGGER_HELM=$KUBE_TOOLS/helm
export OUTRIGGER_APISERVER_BIN OUTRIGGER_ETCD_BIN OUTRIGGER_KUBECTL OUTRIGGER_HELM
export OUTRIGGER_SOAK_MINUTES=$minutes
profile=()
if [ "${SOAK_PROFILE:-dev}" = release ]; then
    profile=(--release)
fi
# The programs the node runs for the images, built as the tests build them
# (one package at a time, so with the same features).
cargo build --locked "${profile[@]}" -p outrigger-proxy --bin outrigger-proxy
cargo build --locked "${profile[@]}" -p outrigger-operator --bin outrigger-operator
cargo test --locked "${profile[@]}" -p outrigger-testnode --test soak -- \
    --ignored --nocapture 2>&1 | grep --line-buffered -E '^SOAK|panicked|test result'
