#!/usr/bin/env bash
# Mutation testing (StrykerJS) of one module at a time, against only that module's test files:
#
#   npm run mutation -- certs          # or: bash scripts/mutation.sh certs
#   npm run mutation -- all            # every module, one after the other
#   VERGE_MUTATION_CONCURRENCY=1 npm run mutation -- store
#
# Modules (stryker.config.mjs): certs, purge, framing, store, policy, policy-store. Reports go to
# reports/mutation/MODULE.html and .json; docs/testing.md has the scores and explains every
# survivor. Not part of `npm test`: a module takes minutes, and the suite must stay quick.
set -euo pipefail
cd "$(dirname "$0")/.."
modules=(certs purge framing store policy policy-store)
if [ "$#" -ne 1 ]; then
  echo "usage: npm run mutation -- MODULE   (one of: ${modules[*]} all)" >&2
  exit 2
fi
if [ "$1" = all ]; then
  set -- "${modules[@]}"
fi
# The tests start real nginx and the like where they need them, as the suite does.
bash scripts/install-test-deps.sh
[ -d node_modules ] || npm ci --no-audit --no-fund
for m in "$@"; do
  echo "mutation: $m"
  VERGE_MUTATION_MODULE="$m" npx --no-install stryker run stryker.config.mjs
done
