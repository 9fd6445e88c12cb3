#!/usr/bin/env bash
# Runs every test of the workspace: unit tests, storage tests on SQLite and
# PostgreSQL, and end-to-end tests over real kairan-homeserver processes.
#
# Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth) or KAIRAN_TEST_PG_URL.
# Needs python3 (with venv) and PyPI through pip the first time, for Synapse and schemathesis.
set -euo pipefail
cd "$(dirname "$0")/.."

# Start the local PostgreSQL if this machine has one that is stopped.
if ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
fi

if ! command -v cargo-nextest >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi

# The end-to-end tests run the server binary; build it once, beside the tests.
cargo build --workspace --bins
# The fuzz targets (fuzz/, scripts/fuzz.sh) for FUZZ_SECONDS each (default 20; 0 skips
# them), on a full run only. Before the tests, so that nextest's summary stays the last thing
# printed; a crash fails the run when the script exits, after the tests have run.
fuzz_status=0
if [[ $# -eq 0 ]]; then
  bash scripts/fuzz.sh "${FUZZ_SECONDS:-20}" || fuzz_status=$?
fi
trap 'rc=$?; if [[ $rc -eq 0 && $fuzz_status -ne 0 ]]; then echo "test.sh: scripts/fuzz.sh failed (exit $fuzz_status; its report is above the tests)" >&2; exit "$fuzz_status"; fi' EXIT
# The federation interop tests run Synapse from a venv (target/synapse-venv); install it
# when missing (about 20 s from PyPI), check it otherwise. If that fails, every other test
# still runs and the interop tests fail, each saying Synapse is missing.
bash scripts/synapse-venv.sh || echo "test.sh: Synapse could not be installed; the federation_synapse tests will fail" >&2
# matrix-js-sdk (Rust crypto) from the npm registry into tests/js/node_modules, for the js-sdk
# interop tests; same pattern: if it fails, those tests fail, each naming scripts/js-sdk.sh.
bash scripts/js-sdk.sh || echo "test.sh: matrix-js-sdk could not be installed; the federation_js_sdk tests will fail" >&2
# Schema-driven bad input over the whole Client-Server API (about a minute): no 5xx, no
# panic. Only on a full run (no nextest arguments), and before nextest so that nextest's
# summary stays the last thing printed; its failure fails the run once nextest is done.
schemathesis_status=0
if [[ $# -eq 0 ]]; then
  bash scripts/schemathesis.sh || schemathesis_status=$?
fi
cargo nextest run --workspace --profile "${NEXTEST_PROFILE:-default}" "$@"
if [[ $schemathesis_status -ne 0 ]]; then
  echo "test.sh: scripts/schemathesis.sh failed (exit $schemathesis_status; its report is above the tests, files in target/schemathesis)" >&2
  exit "$schemathesis_status"
fi
