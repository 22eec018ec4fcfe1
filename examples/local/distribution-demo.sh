#!/usr/bin/env bash
# Policy distribution, locally: the operator in local mode (reading this
# directory's manifests instead of an API server), two proxies subscribed to
# it, and an upstream that fails half its requests. The policy is edited
# halfway: both proxies change behaviour within a second.
#
#   bash examples/local/distribution-demo.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p outrigger-proxy -p outrigger-operator -p outrigger-tools
BIN=target/release
WORK=$(mktemp -d)
PIDS=()
trap 'kill ${PIDS[*]} 2>/dev/null || true; rm -rf "$WORK"' EXIT

$BIN/outrigger-tools fault-upstream --listen 127.0.0.1:18601 --failure-rate 0.5 >/dev/null & PIDS+=($!)
manifests() { # retry attempts
  cat > "$WORK/web.yaml.tmp" <<YAML
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: demo, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 18601}]
endpoints: [{addresses: [127.0.0.1]}]
---
apiVersion: outrigger.dev/v1alpha1
kind: ResiliencePolicy
metadata: {name: web, namespace: demo}
spec:
  targetRef: {kind: Service, name: web}
  retry: {attempts: $1, backoff: {base: 1ms, max: 10ms}, budget: {percent: 100, minRetryRate: {count: 1000, interval: 1s}}}
YAML
  mv "$WORK/web.yaml.tmp" "$WORK/web.yaml"
}
manifests 0
$BIN/outrigger-operator run --manifests "$WORK" --manifests-poll 100ms --admin-addr 127.0.0.1:19601 \
  --policy-addr 127.0.0.1:18690 > "$WORK/operator.log" 2>&1 & PIDS+=($!)
for n in 1 2; do
  $BIN/outrigger-proxy --inbound-addr 127.0.0.1:1460$n --outbound-addr 127.0.0.1:1450$n \
    --admin-addr 127.0.0.1:1470$n --control-plane http://127.0.0.1:18690 --proxy-id proxy-$n \
    --namespace demo --log-level warn & PIDS+=($!)
done
sleep 1

success() { # outbound port
  local ok=0
  for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: web.demo' "http://127.0.0.1:$1/")" = 200 ] && ok=$((ok + 1))
  done
  echo "$ok%"
}
echo "policy: retry attempts 0 (upstream fails 50%)"
echo "  proxy-1 success: $(success 14501)   proxy-2 success: $(success 14502)"
echo "editing the policy file: retry attempts 3"
manifests 3
start=$(date +%s%N)
until curl -s http://127.0.0.1:14701/config | grep -q '"attempts": 3'; do sleep 0.05; done
echo "  proxy-1 applied it after $(( ($(date +%s%N) - start) / 1000000 )) ms"
echo "  proxy-1 success: $(success 14501)   proxy-2 success: $(success 14502)"
echo "operator view: curl http://127.0.0.1:19601/view ; proxy config: curl http://127.0.0.1:14701/config"
