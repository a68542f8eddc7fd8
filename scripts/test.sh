#!/usr/bin/env bash
# Runs every suite, then prints the closing line CI reads: "N passed, N failed, N skipped".
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p test-results
npx tsc --noEmit -p tsconfig.json || { echo "typecheck failed"; echo "0 passed, 1 failed"; exit 1; }
# The layer rule (.dependency-cruiser.cjs): the domain imports nothing outside itself, nothing inward knows http.
npx depcruise src projections --config .dependency-cruiser.cjs --output-type err || { echo "dependency rule broken"; echo "0 passed, 1 failed"; exit 1; }
# The crash test runs the built server as a child process.
npm run build --silent || { echo "build failed"; echo "0 passed, 1 failed"; exit 1; }
# Everything the tests write in the temporary directory (servers' data dirs, ledgers, playbook runs) goes under one
# directory per run, removed at the end; DUFFY_KEEP_TEST_TMP=1 keeps it to look into a failure.
base_tmp="${TMPDIR:-/tmp}"
TMPDIR="$(mktemp -d "$base_tmp/duffy-test-run-XXXXXX")" || { echo "can't create a temporary directory in $base_tmp"; echo "0 passed, 1 failed"; exit 1; }
export TMPDIR
if [ -n "${DUFFY_KEEP_TEST_TMP:-}" ]; then echo "temporary files kept in $TMPDIR"; else trap 'rm -rf "$TMPDIR"' EXIT; fi
NODE_OPTIONS=--experimental-vm-modules npx jest --runInBand --cacheDirectory "$base_tmp/jest-duffy" --json --outputFile=test-results/jest.json "$@" 2>&1
status=$?
node -e '
  const r = JSON.parse(require("fs").readFileSync("test-results/jest.json", "utf8"));
  const broken = r.numRuntimeErrorTestSuites || 0;
  console.log(`${r.numPassedTests} passed, ${r.numFailedTests + broken} failed, ${r.numPendingTests} skipped`);
' || { echo "0 passed, 1 failed"; exit 1; }
exit $status
