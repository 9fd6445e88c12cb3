#!/usr/bin/env bash
# A whole prefecture on one machine (issue 13; figures in docs/benchmarks.md): the
# prefecture's server and N municipal servers as federating kairan-homeserver processes on
# loopback (TLS with the test CA), a governor and N mayors in one encrypted and one
# unencrypted room, traffic from every server at once, municipal servers SIGKILLed and
# restarted at random. Prints per server: messages missing, sends refused, room state
# against the prefecture's, forward extremities, time to converge, resident memory; exits
# non-zero if a must-be check fails.
#
#   bash scripts/prefecture.sh                                  # 41 servers (the default size)
#   bash scripts/prefecture.sh --servers 11 --messages 300 --kills 4 --seed 7
#   bash scripts/prefecture.sh --help                           # every flag, each with its default
#
# Flags go to the `prefecture` binary of kairan-tests (tests/src/bin/prefecture.rs).
# KAIRAN_HOMESERVER_BIN picks another server binary (e.g. target/release/kairan-homeserver);
# KAIRAN_TEST_KEEP_DIR=1 keeps every server's directory (config, database, logs).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --workspace --bins
export KAIRAN_HOMESERVER_BIN="${KAIRAN_HOMESERVER_BIN:-$PWD/target/debug/kairan-homeserver}"
# Each server holds a connection to each other one, and the driver several to each server.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec target/debug/prefecture "$@"
