#!/usr/bin/env bash
# Builds Verge's optional native module, native/build/Release/zerocopy.node (zero-copy sends of
# large hits: src/core/zerocopy.ts). `npm ci` runs this as the package's install script. Verge
# works without the module (large hits are then copied), so a failed build warns and exits 0.
set -u
cd "$(dirname "$0")/.."
[ "$(uname -s)" = Linux ] || exit 0
if ! command -v node-gyp >/dev/null 2>&1; then
  echo "verge: node-gyp not found; the zero-copy module is not built (run this through npm: npm run build:native)" >&2
  exit 0
fi
args=()
# Node's own headers, when they are installed beside it (NodeSource's and Debian's packages do),
# spare node-gyp a download from nodejs.org.
prefix=$(dirname "$(dirname "$(node -p process.execPath)")")
if [ -z "${npm_config_nodedir:-}" ] && [ -f "$prefix/include/node/node_api.h" ]; then
  args+=("--nodedir=$prefix")
fi
log=$(mktemp)
if node-gyp rebuild --directory native "${args[@]}" >"$log" 2>&1; then
  rm -f "$log"
  exit 0
fi
tail -n 15 "$log" >&2
rm -f "$log"
echo "verge: the zero-copy module did not build (it needs python3, make and a C compiler: apt-get install python3 make gcc); Verge runs without it and copies large hits" >&2
exit 0
