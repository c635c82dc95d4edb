#!/usr/bin/env bash
# Starts Verge for ../shared/bench/run.sh (EXTRA_START): one site in front of the benchmark's
# origin on 127.0.0.1:$ORIGIN_PORT, with the benchmark's certificate ($TLS_CERT/$TLS_KEY, for
# 127.0.0.1). Runs in the foreground, as run.sh requires; run.sh stops the descendants too.
#   VERGE_HTTP / VERGE_HTTPS (18100 / 18101)   caching edge, one process
#   VERGE_PASS_HTTP / VERGE_PASS_HTTPS         optional: caching off (pure pass-through, to
#                                              compare with nginx proxy_pass); VERGE_PASS_WORKERS
#                                              sets its edge.workers (default 1)
#   VERGE_W2_HTTP / VERGE_W2_HTTPS             optional: caching edge with edge.workers: 2
#   VERGE_PASS_W2_HTTP                         optional: caching off with edge.workers: 2 (the
#                                              best pass-through configuration against nginx's 2 workers)
#   VERGE_NOFAST_HTTP                          optional: caching edge, one process, edge.fastPath: false
#                                              (every hit through node:http, as before the fast path)
#   MIN_PROXY_PORT                             optional: bench/min-proxy.ts, the bare
#                                              node:http + undici floor of any Node.js proxy
#   NETPASS_PORT                               optional: bench/net-proxy.ts, a bare TCP relay
#                                              (nothing parsed): the least a Node.js relay costs
#   VERGE_NODE_OPTS                            optional: node options of the caching edge
#                                              (VERGE_HTTP/HTTPS; its worker inherits them), such
#                                              as --trace-gc (node refuses it in NODE_OPTIONS)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="$(mktemp -d -t verge-bench.XXXXXX)"
config() {  # http-port https-port cache-enabled workers [fastPath]
  local https="[]"
  [[ "$2" != 0 ]] && https="[\"127.0.0.1:$2\"], defaultSite: \"127.0.0.1\""
  cat <<YAML
edge:
  workers: $4
  fastPath: ${5:-true}
  admin: { listen: "127.0.0.1:0" }
  http: { listen: ["127.0.0.1:$1"] }
  https: { listen: $https }
log: { access: "${VERGE_ACCESS_LOG:-off}" }
sites:
  - name: "127.0.0.1"
    aliases: [localhost]
    tls: { cert: "${TLS_CERT}", key: "${TLS_KEY}" }
    origin:
      servers: [{ host: 127.0.0.1, port: ${ORIGIN_PORT} }]
    cache: { enabled: $3 }
YAML
}
cli="$here/../dist/src/cli/main.js"
if [[ -n "${VERGE_PASS_HTTP:-}" ]]; then
  config "$VERGE_PASS_HTTP" "${VERGE_PASS_HTTPS:-0}" false "${VERGE_PASS_WORKERS:-1}" > "$dir/pass.yaml"
  node "$cli" serve --config "$dir/pass.yaml" &
fi
if [[ -n "${VERGE_W2_HTTP:-}" ]]; then
  config "$VERGE_W2_HTTP" "${VERGE_W2_HTTPS:-0}" true 2 > "$dir/w2.yaml"
  node "$cli" serve --config "$dir/w2.yaml" &
fi
if [[ -n "${VERGE_PASS_W2_HTTP:-}" ]]; then
  config "$VERGE_PASS_W2_HTTP" 0 false 2 > "$dir/pass-w2.yaml"
  node "$cli" serve --config "$dir/pass-w2.yaml" &
fi
if [[ -n "${VERGE_NOFAST_HTTP:-}" ]]; then
  config "$VERGE_NOFAST_HTTP" 0 true 1 false > "$dir/nofast.yaml"
  node "$cli" serve --config "$dir/nofast.yaml" &
fi
if [[ -n "${MIN_PROXY_PORT:-}" ]]; then
  node "$here/../dist/bench/min-proxy.js" &
fi
if [[ -n "${NETPASS_PORT:-}" ]]; then
  PORT=$NETPASS_PORT node "$here/../dist/bench/net-proxy.js" &
fi
config "${VERGE_HTTP:-18100}" "${VERGE_HTTPS:-18101}" true 1 > "$dir/verge.yaml"
# shellcheck disable=SC2086 # VERGE_NODE_OPTS is a list of node options
exec node ${VERGE_NODE_OPTS:-} "$cli" serve --config "$dir/verge.yaml"
