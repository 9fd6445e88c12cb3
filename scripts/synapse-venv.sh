#!/usr/bin/env bash
# Installs Synapse, the federation peer of the interoperability tests
# (tests/tests/e2e/federation_synapse.rs), into a Python virtual environment.
#
# The venv is target/synapse-venv unless KAIRAN_SYNAPSE_VENV names another directory;
# the tests find it the same way. Idempotent: when the pinned version is already
# installed it only checks that and returns at once, so scripts/test.sh calls it on
# every run. Needs python3 with the venv module and PyPI through pip.
set -euo pipefail
cd "$(dirname "$0")/.."

# The version the interoperability tests were written and checked against.
SYNAPSE_VERSION="1.163.2"
VENV="${KAIRAN_SYNAPSE_VENV:-target/synapse-venv}"

installed_version() {
  # The package metadata, not synapse.__version__, which appends the git state of the
  # current directory (this repository) when run inside a checkout.
  "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("matrix-synapse"))' 2>/dev/null || true
}

if [[ -x "$VENV/bin/python" && "$(installed_version)" == "$SYNAPSE_VERSION" ]]; then
  echo "synapse-venv: Synapse $SYNAPSE_VERSION already in $VENV"
  exit 0
fi

if ! command -v python3 >/dev/null 2>&1; then
  echo "synapse-venv: python3 is missing; install python3 and python3-venv to run the Synapse interop tests" >&2
  exit 1
fi

started=$(date +%s)
echo "synapse-venv: installing matrix-synapse==$SYNAPSE_VERSION into $VENV"
mkdir -p "$(dirname "$VENV")"
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "matrix-synapse==$SYNAPSE_VERSION"

got="$(installed_version)"
if [[ "$got" != "$SYNAPSE_VERSION" ]]; then
  echo "synapse-venv: expected Synapse $SYNAPSE_VERSION in $VENV, found '${got:-nothing}'" >&2
  exit 1
fi
echo "synapse-venv: Synapse $got installed in $VENV in $(( $(date +%s) - started )) s"
