#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ (cargo fuzz, libFuzzer) for a bounded time and fails
# if any of them finds a crash, a panic, a failed assertion or an input slower than
# FUZZ_TIMEOUT seconds.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]     default 20; 0 skips fuzzing altogether
#
# FUZZ_TARGETS="pdu request" limits the run to some targets; FUZZ_SANITIZER=address builds
# with AddressSanitizer (slower to build and run; kairan forbids unsafe code, so the
# default is none); FUZZ_JOBS=N runs N processes per target (libFuzzer's -fork);
# FUZZ_TARGET_DIR puts the instrumented build elsewhere than fuzz/target (a directory that
# outlives a fresh clone spares the cold build, most of this script's time).
#
# The committed seeds (fuzz/corpus/TARGET) are read, never written: what libFuzzer finds
# goes to fuzz/target/corpus/TARGET, kept between runs on this machine so later runs
# start from it. A crashing input is saved under fuzz/artifacts/TARGET/; reproduce it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run -s none --codegen-units 16 TARGET fuzz/artifacts/TARGET/crash-...
# (from fuzz/), then add it to the seeds and a regression test beside the code.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${1:-20}"
if [ "$seconds" = 0 ]; then
  echo "fuzz.sh: skipped (0 seconds per target)"
  exit 0
fi
timeout_secs="${FUZZ_TIMEOUT:-10}"

# cargo fuzz passes nightly-only flags to rustc (-Zsanitizer, sancov passes); this machine
# has one stable toolchain, which accepts them with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi

# The same flags for build and run, so that `run` finds the build up to date. 16 codegen
# units instead of cargo fuzz's 1: the cold instrumented build of the homeserver's whole
# dependency tree takes several times longer with 1, for a modest gain in executions/s.
flags=(--sanitizer "${FUZZ_SANITIZER:-none}" --codegen-units 16)
if [ -n "${FUZZ_TARGET_DIR:-}" ]; then
  flags+=(--target-dir "$FUZZ_TARGET_DIR")
fi

start=$SECONDS
cargo fuzz build "${flags[@]}"
echo "fuzz.sh: built in $((SECONDS - start)) s"

read -r -a targets <<<"${FUZZ_TARGETS:-$(cargo fuzz list | tr '\n' ' ')}"
mkdir -p target/fuzz-logs
failed=()
for t in "${targets[@]}"; do
  mkdir -p "target/corpus/$t"
  log="target/fuzz-logs/$t.log"
  started=$SECONDS
  # The first corpus directory is where libFuzzer writes new inputs; the seeds come second.
  if cargo fuzz run "${flags[@]}" "$t" "target/corpus/$t" "corpus/$t" -- \
    -max_total_time="$seconds" -timeout="$timeout_secs" -rss_limit_mb=2048 \
    ${FUZZ_JOBS:+-fork="$FUZZ_JOBS"} -print_final_stats=1 >"$log" 2>&1; then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -n1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n1)
    echo "fuzz.sh: $t: ok, ${runs:-?} inputs in $((SECONDS - started)) s (${cov:-cov: ?})"
    # Panics that kairan caught, reported rather than crashing only with
    # KAIRAN_FUZZ_LENIENT_PANICS=1 (by default each one is a crash).
    grep -h '^request: panic at' "$log" | sed 's/^/fuzz.sh:   caught /' || true
  else
    echo "fuzz.sh: $t: FAILED after $((SECONDS - started)) s; the end of $PWD/$log:" >&2
    tail -n 40 "$log" >&2
    failed+=("$t")
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz.sh: crashes in: ${failed[*]} (inputs under $PWD/artifacts/)" >&2
  exit 1
fi
echo "fuzz.sh: every target ran ${seconds} s without a crash ($((SECONDS - start)) s in all)"
