#!/usr/bin/env bash
# Policy distribution at scale: the operator in local mode with 1,000
# Services (3 endpoints and a retry policy each) serving N watch streams
# (HTTP/2, 100 streams per connection, every snapshot acknowledged), measured
# by operator/examples/stream_scale.rs:
#   - time until every stream has its first snapshot
#   - one file edit changing all 1,000 policies: rename-to-snapshot p50/p99/max
#   - one file edit changing one policy: the same, and streams that got a
#     snapshot they did not need
#   - operator RSS (peak, and after every stream closed), CPU, bytes pushed
# Prints a Markdown table and replaces the "Policy distribution at scale"
# section of BENCHMARKS.md.
#
#   bash bench/policy-scale.sh [subscriber counts...]     (default: 1000 10000)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SERVICES=${SERVICES:-1000}
COUNTS=("$@")
[ ${#COUNTS[@]} -gt 0 ] || COUNTS=(1000 10000)
command -v jq >/dev/null || { echo "jq is needed: apt-get install jq" >&2; exit 1; }
# 100 connections are few descriptors, but leave room.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cargo build --release -q -p outrigger-operator --bins --example stream_scale
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

for n in "${COUNTS[@]}"; do
  echo "== $n subscribers over $SERVICES Services" >&2
  timeout 180 target/release/examples/stream_scale --services "$SERVICES" --subscribers "$n" \
    --timeout 150 --json "$WORK/$n.json" >/dev/null
done

ms() { printf "%.0f" "$1"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }
TABLE="$WORK/table.md"
{
  echo "| subscribers | conns × streams | all first snapshots | edit of all 1,000 policies: p50 / p99 / max | got it | edit of one policy: p50 / p99 / max | got it / spurious | operator RSS peak | RSS after all closed (round 1 / last) | operator CPU: startup / all-edit / idle | bytes pushed by the all-edit |"
  echo "|---:|---:|---:|---|---:|---|---:|---:|---:|---:|---:|"
  for n in "${COUNTS[@]}"; do
    j="$WORK/$n.json"
    q() { jq -r "$1" "$j"; }
    printf "| %s | %s × %s | %s ms | %s / %s / %s ms | %s/%s | %s / %s / %s ms | %s/%s / %s | %s MiB | %s / %s MiB | %ss / %ss / %s%% | %s MB |\n" \
      "$(q .subscribers)" "$(q .connections)" "$(q .streams_per_connection)" \
      "$(ms "$(q .first_snapshots_ms)")" \
      "$(ms "$(q .all_services.p50_ms)")" "$(ms "$(q .all_services.p99_ms)")" "$(ms "$(q .all_services.max_ms)")" \
      "$(q .all_services.received)" "$(q .all_services.expected)" \
      "$(ms "$(q .one_service.p50_ms)")" "$(ms "$(q .one_service.p99_ms)")" "$(ms "$(q .one_service.max_ms)")" \
      "$(q .one_service.received)" "$(q .one_service.expected)" "$(q .one_service.spurious)" \
      "$(mib "$(q .rss_peak_kib)")" "$(mib "$(q ".rounds[0].rss_after_close_kib")")" "$(mib "$(q ".rounds[-1].rss_after_close_kib")")" \
      "$(q .startup_cpu_s)" "$(q .all_services.operator_cpu_s)" "$(printf "%.1f" "$(q .idle_cpu_percent)")" \
      "$(awk -v b="$(q .all_services.push_bytes)" 'BEGIN { printf "%.1f", b / 1e6 }')"
  done
} > "$TABLE"
cat "$TABLE"

# ---- BENCHMARKS.md: replace (or append) this section only
SECTION="$WORK/section.md"
{
  echo "## Policy distribution at scale"
  echo
  echo "The operator in local mode (\`--manifests-poll=50ms --heartbeat=5s\`) with"
  echo "$SERVICES Services in one namespace, each with an EndpointSlice of 3 endpoints"
  echo "and a ResiliencePolicy (\`retry: {attempts: 2}\`). Simulated proxies open the"
  echo "watch streams round-robin over the Services as HTTP/2 streams, 100 per"
  echo "connection (one connection = one proxy), and acknowledge every snapshot."
  echo "Propagation runs from the \`rename\` of the edited policy file into the"
  echo "directory to a stream receiving the new snapshot, so it includes the"
  echo "manifest poll (0-50 ms), re-reading and compiling every file, and the"
  echo "client parsing the line. \"spurious\": streams of other Services that"
  echo "received a snapshot after the one-policy edit (should be 0). RSS after all"
  echo "closed: every stream closed, gauges back to 0; later rounds reopen all streams"
  echo "with fresh proxy ids (like restarted pods) and close them again; 3 rounds."
  echo "Operator CPU from /proc (10 ms ticks); idle: % of one core over 6 s of open"
  echo "streams with nothing changing. One run per row; client and operator share"
  echo "the machine."
  echo
  cat "$TABLE"
  echo
  echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(date -u +%F)."
  echo
  echo "Command: \`bash bench/policy-scale.sh ${COUNTS[*]}\`"
  echo "(one run: \`target/release/examples/stream_scale --services $SERVICES --subscribers N\`;"
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
