#!/usr/bin/env bash
# Schema-driven bad input against the Client-Server API (issue 14): schemathesis generates
# requests from the spec's OpenAPI (../shared/spec/client-server.json), valid and invalid,
# for every operation except those that end the session or the account, and sends them
# with a valid token to a real kairan-homeserver (the debug binary). Fails on any 5xx and
# on "panicked" in the server's log. The driver is scripts/schemathesis/run.py.
#
# Usage: bash scripts/schemathesis.sh [ST_RUN_ARGS...]
#   e.g. bash scripts/schemathesis.sh --include-operation-id login
# Environment:
#   KAIRAN_FUZZ_EXAMPLES  test cases per operation and phase (default 20: about a minute
#                         on 2 cores)
#   KAIRAN_FUZZ_SEED      schemathesis's random seed (default 14: the same run every time;
#                         change it to explore)
#   KAIRAN_HOMESERVER_BIN the server binary (default target/debug/kairan-homeserver, built
#                         when missing)
#   KAIRAN_SPEC_DIR       the spec folder (default ../shared/spec)
#
# Needs python3 with venv and PyPI through pip the first time (schemathesis goes into
# target/schemathesis-venv). As root, the server and schemathesis run in a network
# namespace of their own with loopback only: fuzzed pusher URLs and server names can then
# reach nothing but the server under test.
set -euo pipefail
cd "$(dirname "$0")/.."

# The version this script and its hooks were written against.
SCHEMATHESIS_VERSION="4.32.5"
VENV="target/schemathesis-venv"
BIN="${KAIRAN_HOMESERVER_BIN:-target/debug/kairan-homeserver}"
SPEC="${KAIRAN_SPEC_DIR:-../shared/spec}/client-server.json"
WORK="target/schemathesis"

installed_version() {
  "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("schemathesis"))' 2>/dev/null || true
}

if [[ ! -x "$VENV/bin/st" || "$(installed_version)" != "$SCHEMATHESIS_VERSION" ]]; then
  echo "schemathesis: installing schemathesis==$SCHEMATHESIS_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
if [[ ! -f "$SPEC" ]]; then
  echo "schemathesis: the spec is not at $SPEC (set KAIRAN_SPEC_DIR)" >&2
  exit 1
fi
if [[ ! -x "$BIN" ]]; then
  cargo build -p kairan-homeserver --bin kairan-homeserver
fi

rm -rf "$WORK"
mkdir -p "$WORK"
run=(
  "$VENV/bin/python" scripts/schemathesis/run.py
  --binary "$BIN" --spec "$SPEC" --workdir "$WORK" --st "$VENV/bin/st"
  --examples "${KAIRAN_FUZZ_EXAMPLES:-20}" --seed "${KAIRAN_FUZZ_SEED:-14}"
  -- "$@"
)
started=$(date +%s)
status=0
if [[ $(id -u) == 0 ]] && command -v unshare >/dev/null && command -v ip >/dev/null && unshare --net true 2>/dev/null; then
  unshare --net -- bash -c 'ip link set lo up && exec "$@"' netns "${run[@]}" || status=$?
else
  echo "schemathesis: no network namespace (needs root and unshare); the server keeps the machine's network" >&2
  "${run[@]}" || status=$?
fi
echo "schemathesis: $(( $(date +%s) - started )) s in all"
exit "$status"
