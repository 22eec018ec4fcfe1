#!/usr/bin/env bash
# Policy distribution at scale, modelled on production: the operator in local
# mode with 1,000 Services (3 endpoints and a retry policy each) and N
# simulated proxies, each holding ONE TLS connection to the policy server
# (CA pinned, HTTP/2) that carries its 5 watch streams and its acks, each
# presenting its own bearer token. Driven by operator/examples/stream_scale.rs
# (--tls --token-review --restart):
#   - time until every stream has its first snapshot (TLS handshakes and
#     token reviews included)
#   - one file edit changing all 1,000 policies: rename-to-snapshot and
#     rename-to-acknowledged (ack answered 204) p50/p99/max
#   - one file edit changing one policy: the same, and spurious snapshots
#   - operator RSS (peak; after every stream closed), CPU, bytes pushed
#   - reconnect storm: the operator is killed and a new one started on the
#     same address; every proxy reconnects at once (100 ms..10 s backoff with
#     full jitter, as the proxy) and resubscribes: time until every stream has
#     a snapshot from the new operator, its peak RSS, TokenReviews it asked for.
#
# What is simulated, and why:
#   - the API server: tokens are reviewed by the operator's real TokenReview
#     client (--auth token-review, 30 s verdict cache) against a stand-in
#     HTTP server inside the load generator that accepts every `tok-<proxy>`
#     token and counts reviews (a real API server needs a cluster; the
#     operator's side is what is measured);
#   - the proxies: one load-generator process with one task and one
#     connection per proxy (the proxy's real client is proven to hold exactly
#     one connection by tests/distribution.rs
#     a_proxy_holds_one_connection_for_all_its_subscriptions);
#   - the network: loopback; client and operator share the machine's cores.
# Prints a Markdown table and replaces the "Policy distribution at scale"
# section of BENCHMARKS.md.
#
#   bash bench/policy-scale.sh [proxy counts...]     (default: 1000 10000)
#   STREAMS_PER_PROXY=5 SERVICES=1000
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SERVICES=${SERVICES:-1000}
PER_PROXY=${STREAMS_PER_PROXY:-5}
COUNTS=("$@")
[ ${#COUNTS[@]} -gt 0 ] || COUNTS=(1000 10000)
command -v jq >/dev/null || { echo "jq is needed: apt-get install jq" >&2; exit 1; }
# 10,000 proxies: 10,000 connections on each side (load generator and
# operator are both children of this shell), plus the operator's connections
# to the stand-in API server during the reconnect storm.
ulimit -n 200000 2>/dev/null || ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "open files limit: $(ulimit -n)" >&2

cargo build --release -q -p outrigger-operator --bins --example stream_scale
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

for n in "${COUNTS[@]}"; do
  echo "== $n proxies × $PER_PROXY streams over $SERVICES Services" >&2
  timeout 600 target/release/examples/stream_scale --services "$SERVICES" \
    --subscribers $((n * PER_PROXY)) --connections "$n" --tls --token-review --restart \
    --shared-destination --rounds 2 --timeout 540 --json "$WORK/$n.json" >/dev/null
done

ms() { printf "%.0f" "$1"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }
TABLE="$WORK/table.md"
{
  echo "| proxies × streams | all first snapshots | edit of all 1,000 policies, received: p50 / p99 / max | acknowledged: p50 / p99 / max (acked) | edit of the policy every proxy watches, received: p50 / p99 / max | acknowledged: p50 / p99 / max | got it / acked / spurious | operator RSS peak | RSS after all closed (round 1 / last) | operator CPU: startup / all-edit / idle | bytes pushed by the all-edit | restart: resynced after kill / after new operator ready | restart: RSS peak | TokenReviews: whole run / restart |"
  echo "|---:|---:|---|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|"
  for n in "${COUNTS[@]}"; do
    j="$WORK/$n.json"
    q() { jq -r "$1" "$j"; }
    printf "| %s × %s | %s ms | %s / %s / %s ms (%s/%s) | %s / %s / %s ms (%s) | %s / %s / %s ms | %s / %s / %s ms | %s/%s / %s / %s | %s MiB | %s / %s MiB | %ss / %ss / %s%% | %s MB | %s / %s ms | %s MiB | %s / %s |\n" \
      "$(q .connections)" "$(q .streams_per_connection)" \
      "$(ms "$(q .first_snapshots_ms)")" \
      "$(ms "$(q .all_services.p50_ms)")" "$(ms "$(q .all_services.p99_ms)")" "$(ms "$(q .all_services.max_ms)")" \
      "$(q .all_services.received)" "$(q .all_services.expected)" \
      "$(ms "$(q .all_services.ack_p50_ms)")" "$(ms "$(q .all_services.ack_p99_ms)")" "$(ms "$(q .all_services.ack_max_ms)")" \
      "$(q .all_services.acked)" \
      "$(ms "$(q .one_service.p50_ms)")" "$(ms "$(q .one_service.p99_ms)")" "$(ms "$(q .one_service.max_ms)")" \
      "$(ms "$(q .one_service.ack_p50_ms)")" "$(ms "$(q .one_service.ack_p99_ms)")" "$(ms "$(q .one_service.ack_max_ms)")" \
      "$(q .one_service.received)" "$(q .one_service.expected)" "$(q .one_service.acked)" "$(q .one_service.spurious)" \
      "$(mib "$(q .rss_peak_kib)")" "$(mib "$(q ".rounds[0].rss_after_close_kib")")" "$(mib "$(q ".rounds[-1].rss_after_close_kib")")" \
      "$(q .startup_cpu_s)" "$(q .all_services.operator_cpu_s)" "$(printf "%.1f" "$(q .idle_cpu_percent)")" \
      "$(awk -v b="$(q .all_services.push_bytes)" 'BEGIN { printf "%.1f", b / 1e6 }')" \
      "$(ms "$(q .restart.resynced_after_kill_ms)")" "$(ms "$(q .restart.resynced_after_ready_ms)")" \
      "$(mib "$(q .restart.rss_peak_kib)")" \
      "$(q .token_reviews)" "$(q .restart.token_reviews)"
  done
} > "$TABLE"
cat "$TABLE"

# ---- BENCHMARKS.md: replace (or append) this section only
SECTION="$WORK/section.md"
{
  echo "## Policy distribution at scale"
  echo
  echo "The operator in local mode (\`--manifests-poll=50ms --heartbeat=5s\`, TLS with"
  echo "generated certificates, \`--auth token-review\`) with $SERVICES Services in one"
  echo "namespace, each with an EndpointSlice of 3 endpoints and a ResiliencePolicy"
  echo "(\`retry: {attempts: 2}\`). Each simulated proxy holds one TLS connection"
  echo "(pinned CA, HTTP/2) carrying $PER_PROXY watch streams (round-robin over the"
  echo "Services; with \`--shared-destination\` each proxy's first stream watches"
  echo "svc-00000 instead, a destination every pod calls) and its acks, and"
  echo "presents its own bearer token. Tokens are"
  echo "reviewed by the operator's TokenReview client (verdicts cached 30 s) against"
  echo "a stand-in API server inside the load generator that accepts every proxy's"
  echo "token and counts reviews: simulated because a real API server needs a"
  echo "cluster, and what is measured is the operator's side. The proxies are"
  echo "tasks of one load-generator process (the real proxy is proven to hold one"
  echo "connection by \`a_proxy_holds_one_connection_for_all_its_subscriptions\`)."
  echo "Propagation runs from the \`rename\` of the edited policy file into the"
  echo "directory to a stream receiving the new snapshot (\"received\"), or to its"
  echo "ack of that version being answered 204 (\"acknowledged\"), so it includes"
  echo "the manifest poll (0-50 ms), re-reading the changed file, compiling, and the"
  echo "client parsing the line. The edit of all policies changes every stream;"
  echo "the edit of one policy changes svc-00000's, which every proxy watches."
  echo "\"spurious\": streams of other Services that"
  echo "received a snapshot after the one-policy edit (should be 0). Restart: the"
  echo "operator is killed and a new one started on the same address; every proxy"
  echo "reconnects at once (backoff 100 ms doubling to 10 s, full jitter, like the"
  echo "proxy), re-handshakes TLS and resubscribes; resynced = every stream holds a"
  echo "snapshot sent by the new operator. TokenReviews: answered by the stand-in over"
  echo "the whole run (3 sets of tokens: start, restart, round 2's fresh proxy ids) / during"
  echo "the restart (one per proxy: concurrent requests with one token share a review)."
  echo "RSS after all closed: every stream closed,"
  echo "gauges back to 0; round 2 reopens all streams with fresh proxy ids. Operator"
  echo "CPU from /proc (10 ms ticks); idle: % of one core over 6 s of open streams"
  echo "with nothing changing. One run per row."
  echo
  cat "$TABLE"
  echo
  echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(date -u +%F);"
  echo "${MACHINE_NOTE:-the load generator and the operator share these cores.}"
  echo
  echo "Command: \`bash bench/policy-scale.sh ${COUNTS[*]}\`"
  echo "(one run: \`target/release/examples/stream_scale --services $SERVICES --subscribers \$((N*$PER_PROXY)) --connections N --tls --token-review --restart --shared-destination --rounds 2\`;"
  echo "\`--help\` lists the knobs)."
  echo
} > "$SECTION"

BENCH="$ROOT/BENCHMARKS.md"
[ -f "$BENCH" ] || printf "# Benchmarks\n\n" > "$BENCH"
awk -v section="$SECTION" '
  function emit() { while ((getline line < section) > 0) print line; done = 1 }
  /^## Policy distribution at scale[[:space:]]*$/ { emit(); skipping = 1; next }
  skipping && /^## / { skipping = 0 }
  !skipping { print }
  END { if (!done) { print ""; emit() } }
' "$BENCH" > "$WORK/bench.md"
# No blank-line pile-up where the section was appended.
cat -s "$WORK/bench.md" > "$BENCH"
echo "updated $BENCH" >&2
