#!/usr/bin/env bash
# The whole test suite, exactly as README.md and .ci/run run it: installs the Debian packages the
# tests need when missing, builds, and runs every test file with node's test runner.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
[ -d node_modules ] || npm ci --no-audit --no-fund
npm run build --silent
mapfile -t files < <(find dist/test -name '*.test.js' | sort)
# Tests are mostly waiting on sockets; run a few files at once even on 2 cores. A hung test, or
# test file, fails after 10 minutes (--test-timeout: node's runner applies it to each file too),
# and a file still running after 15 is ended by test/helpers/watchdog.ts (loaded into each file's
# process), so CI reports which one instead of running into its own time limit.
exec node --import ./dist/test/helpers/watchdog.js --test --test-concurrency="${TEST_CONCURRENCY:-3}" \
  --test-timeout="${TEST_TIMEOUT_MS:-600000}" "$@" "${files[@]}"
