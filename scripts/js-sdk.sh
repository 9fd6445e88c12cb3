#!/usr/bin/env bash
# Installs matrix-js-sdk with its Rust crypto, the third-party client of the js-sdk
# interoperability tests (tests/tests/e2e/federation_js_sdk.rs), into tests/js/node_modules,
# exactly as tests/js/package-lock.json pins it (npm ci, from the npm registry).
#
# Idempotent: when node_modules was installed from the current lockfile it only checks that
# and returns at once, so scripts/test.sh calls it on every run. Needs Node.js 20 or later and
# npm. matrix-js-sdk 43 declares Node 22; on Node 20 npm warns about the engine, and the
# driver (tests/js/conversation.mjs) shims the one missing feature.
set -euo pipefail
cd "$(dirname "$0")/../tests/js"

MIN_NODE_MAJOR=20
# Written after a successful install: the lockfile's hash, so that a changed lockfile (or an
# interrupted install, which leaves no stamp) means installing again.
STAMP="node_modules/.kairan-lockfile.sha256"

for tool in node npm; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "js-sdk: $tool is missing; install Node.js $MIN_NODE_MAJOR or later (with npm) to run the js-sdk interop tests" >&2
    exit 1
  fi
done
major="$(node -p 'process.versions.node.split(".")[0]')"
if (( major < MIN_NODE_MAJOR )); then
  echo "js-sdk: Node.js $(node --version) is too old; the js-sdk interop tests need $MIN_NODE_MAJOR or later" >&2
  exit 1
fi

want="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" && -f node_modules/matrix-js-sdk/package.json ]]; then
  echo "js-sdk: matrix-js-sdk $(node -p 'require("./node_modules/matrix-js-sdk/package.json").version') already in tests/js/node_modules"
  exit 0
fi

started=$(date +%s)
echo "js-sdk: installing tests/js/package-lock.json with npm ci"
npm ci --no-audit --no-fund --loglevel=error
for package in matrix-js-sdk @matrix-org/matrix-sdk-crypto-wasm; do
  if [[ ! -f "node_modules/$package/package.json" ]]; then
    echo "js-sdk: npm ci finished but $package is not in tests/js/node_modules" >&2
    exit 1
  fi
done
echo "$want" > "$STAMP"
echo "js-sdk: matrix-js-sdk $(node -p 'require("./node_modules/matrix-js-sdk/package.json").version') installed in tests/js/node_modules in $(( $(date +%s) - started )) s"
