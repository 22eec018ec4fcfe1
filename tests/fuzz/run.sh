#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz / libFuzzer) of what Outrigger reads
# from outside: policy files, a connection's first bytes, the policy stream,
# and AdmissionReviews. Each target runs for SECONDS (default 60), starting
# from its committed corpus (tests/fuzz/corpus/TARGET: seeds and every input
# that once found a bug); new inputs go to a scratch directory, so the
# committed corpus only changes by hand (`cargo fuzz cmin`, see README).
# A crash fails the run and leaves the input in tests/fuzz/artifacts/TARGET/.
#
# cargo fuzz needs nightly features: on the stable toolchain RUSTC_BOOTSTRAP=1
# enables them for this build only (its own workspace and target directory).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
FUZZ="$ROOT/tests/fuzz"
SECONDS_EACH=${1:-${OUTRIGGER_FUZZ_SECONDS:-60}}
TARGETS=(policy_documents protocol_detection stream_decoder admission_review)

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "cargo-fuzz is not installed: run bash tests/setup.sh (or cargo install --locked cargo-fuzz)" >&2
  exit 1
fi

export RUSTC_BOOTSTRAP=1
# No sanitizer: the workspace forbids unsafe code, and without ASan the
# targets run several times faster; debug assertions catch overflows.
FLAGS=(--fuzz-dir "$FUZZ" --sanitizer none --debug-assertions)
cd "$ROOT"
echo "== cargo fuzz build"
cargo fuzz build "${FLAGS[@]}"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=0
for target in "${TARGETS[@]}"; do
  mkdir -p "$scratch/$target"
  echo "== fuzz $target for ${SECONDS_EACH}s"
  if timeout --kill-after=30 $((SECONDS_EACH + 120)) \
       cargo fuzz run "${FLAGS[@]}" "$target" "$scratch/$target" "$FUZZ/corpus/$target" -- \
       -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
       >"$scratch/$target.log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$scratch/$target.log" | tail -n1)
    echo "ok   $target: ${runs:-?} inputs, no crash"
  else
    failed=$((failed + 1))
    echo "FAIL $target"
    # The panic or libFuzzer's verdict, else (a build error, a kill) the end.
    grep -E "panicked|ERROR|SUMMARY|Test unit written" "$scratch/$target.log" | head -n 20 \
      || tail -n 30 "$scratch/$target.log"
  fi
done
echo "fuzz: $(( ${#TARGETS[@]} - failed )) passed, $failed failed"
[ "$failed" -eq 0 ]
