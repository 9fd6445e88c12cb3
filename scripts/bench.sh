#!/usr/bin/env bash
# Benchmarks kairan against Synapse on this machine (issue 7; results in docs/benchmarks.md).
#
#   bash scripts/bench.sh                 # every scenario at issue 7's sizes (an hour or more)
#   bash scripts/bench.sh --quick         # small sizes, a few minutes: checks the harness
#   bash scripts/bench.sh --targets kairan-sqlite,synapse --scenarios send,fanout --send-secs 10
#
# Arguments go to kairan-bench (`--help` lists every size). It runs kairan on SQLite,
# kairan on PostgreSQL and Synapse on PostgreSQL one after the other, a fresh server and
# database per scenario, and prints one markdown table, also written to
# target/bench/results-<UTC time>.md unless --out is given.
#
# Needs: PostgreSQL on 127.0.0.1:5432 with a trusting `postgres` user (as scripts/test.sh),
# psql, python3 with venv, and PyPI through pip for the first Synapse install.
set -euo pipefail
cd "$(dirname "$0")/.."

# Synapse from PyPI in the venv the interop tests use, plus its `postgres` extra
# (psycopg2), since the benchmark runs Synapse on PostgreSQL as its docs recommend.
bash scripts/synapse-venv.sh
VENV="${KAIRAN_SYNAPSE_VENV:-target/synapse-venv}"
if ! "$VENV/bin/python" -c 'import psycopg2' 2>/dev/null; then
  version=$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("matrix-synapse"))')
  echo "bench: installing matrix-synapse[postgres]==$version (psycopg2) into $VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "matrix-synapse[postgres]==$version"
fi

# The server in its release build. The benchmark client is built in the dev profile by
# default, where its dependencies (tokio, hyper, reqwest, serde_json) are optimised
# (`[profile.dev.package."*"] opt-level = 1`); BENCH_PROFILE=release builds it fully
# optimised too, at the cost of a release build of kairan-tests' dependencies.
cargo build --release -p kairan-homeserver
profile="${BENCH_PROFILE:-dev}"
if [[ "$profile" == release ]]; then
  cargo build --release -p kairan-bench
  bench=target/release/kairan-bench
else
  cargo build -p kairan-bench
  bench=target/debug/kairan-bench
fi

# A thousand long-polling clients need a thousand sockets on each side.
ulimit -n "$(ulimit -Hn)"

out=()
if [[ " $* " != *" --out "* ]]; then
  mkdir -p target/bench
  out=(--out "target/bench/results-$(date -u +%Y%m%dT%H%M%SZ).md")
fi
export KAIRAN_HOMESERVER_BIN="${KAIRAN_HOMESERVER_BIN:-$PWD/target/release/kairan-homeserver}"
exec "$bench" "${out[@]}" "$@"
