#!/usr/bin/env bash
# `npm start`: builds Verge (and its console), then runs it. Without arguments: the whole product
# on this machine (`verge serve --demo`: control plane, edge, console, demo origin); with arguments
# (`npm start -- serve --config verge.yaml`), that verge command.
set -euo pipefail
cd "$(dirname "$0")/.."
npm run build --silent
if [ "$#" -eq 0 ]; then
  set -- serve --demo
fi
exec node dist/src/cli/main.js "$@"
