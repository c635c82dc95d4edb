#!/usr/bin/env bash
# Starts Verge for ../shared/bench/run.sh (EXTRA_START): one site in front of the benchmark's
# origin on 127.0.0.1:$ORIGIN_PORT, HTTP on $VERGE_HTTP (default 18100) and HTTPS on $VERGE_HTTPS
# (default 18101) with the benchmark's certificate ($TLS_CERT/$TLS_KEY, for 127.0.0.1).
# Runs in the foreground, as run.sh requires.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="$(mktemp -d -t verge-bench.XXXXXX)"
cat > "$dir/verge.yaml" <<YAML
edge:
  http: { listen: ["127.0.0.1:${VERGE_HTTP:-18100}"] }
  https: { listen: ["127.0.0.1:${VERGE_HTTPS:-18101}"], defaultSite: "127.0.0.1" }
log: { access: "${VERGE_ACCESS_LOG:-off}" }
sites:
  - name: "127.0.0.1"
    aliases: [localhost]
    tls: { cert: "${TLS_CERT}", key: "${TLS_KEY}" }
    origin:
      servers: [{ host: 127.0.0.1, port: ${ORIGIN_PORT} }]
YAML
exec node "$here/../dist/src/cli/main.js" serve --config "$dir/verge.yaml"
