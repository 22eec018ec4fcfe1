#!/usr/bin/env bash
# The project's test command (README): format, lints, then every test.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each phase says how long it took (CI has a time limit; this shows where
# the time goes).
phase_start=$SECONDS
phase() {
  echo "== [$((SECONDS - phase_start)) s] $1 done (total $SECONDS s)"
  phase_start=$SECONDS
}
# Installs what is missing on a fresh Debian machine (apt, pip, cargo).
bash tests/setup.sh
phase setup
cargo fmt --all -- --check
phase fmt
cargo clippy --workspace --all-targets --locked -- -D warnings
phase clippy
# Property-based fuzz targets (parsers, detection, stream decoder, webhook)
# run with this many cases each; raise it for a longer fuzzing session.
export PROPTEST_CASES=${PROPTEST_CASES:-2048}
# Each test starts real processes; on 2 cores, four at a time keeps the
# timing-sensitive ones honest.
export RUST_TEST_THREADS=${RUST_TEST_THREADS:-4}
# A real Kubernetes API server for tests/cluster.rs (built from Debian's Go
# sources once, then cached under ~/.cache/outrigger) and kubectl.
OUTRIGGER_APISERVER_BIN=$(bash tests/apiserver/build.sh | tail -n1)
OUTRIGGER_ETCD_BIN=$(dirname "$(dirname "$OUTRIGGER_APISERVER_BIN")")/etcd
KUBE_TOOLS=$(bash tests/apiserver/install-kubectl.sh | tail -n1)
OUTRIGGER_KUBECTL=$KUBE_TOOLS/kubectl OUTRIGGER_HELM=$KUBE_TOOLS/helm
export OUTRIGGER_APISERVER_BIN OUTRIGGER_ETCD_BIN OUTRIGGER_KUBECTL OUTRIGGER_HELM
phase "API server and kubectl"
# Every binary the tests start, built once with the features `cargo test
# --workspace` resolves; the tests then use them as they are (see
# tests/support::binary) instead of building them again with other features.
cargo build --workspace --all-targets --locked
phase "build"
OUTRIGGER_BINARIES_PREBUILT=1 cargo test --workspace --locked
phase "cargo test"
# The Helm chart: lint, render with several values files, validate offline.
bash tests/chart/check.sh
phase chart
# Coverage-guided fuzzing (cargo fuzz): each target from its committed corpus
# for a bounded time (OUTRIGGER_FUZZ_SECONDS, default 60).
bash tests/fuzz/run.sh
phase fuzz
# The peer benchmark, briefly: it runs and produces numbers (the figures are
# not assertions; `bash bench/run.sh --write` measures for BENCHMARKS.md).
bash bench/run.sh --smoke
phase "bench smoke"
# Supply chain: advisories (RustSec; offline copy when upstream is
# unreachable), licenses, duplicate versions, sources (deny.toml).
bash tests/supply-chain.sh
phase "supply chain"
