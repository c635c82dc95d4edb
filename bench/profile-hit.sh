#!/usr/bin/env bash
# CPU profile of the 1 KiB HIT path (docs/benchmarks.md): Verge with edge.fastPath true and false
# in turn, one process, access log off, in front of dist/bench/hit-ceiling.js as the origin; wrk
# -t1 -c50 for D seconds each; prints the top frames of the serving process (self time, load run
# only). One worker (edge.workers: 1): the default is one per core, and the profile would be of
# whichever worker took more connections. CLOSE=1: a new connection per request (wrk -H
# 'Connection: close', bench/churn.sh's load). SCHEME=https: the same over TLS (HTTP/1.1 by ALPN,
# a P-256 certificate made here). PASS=1: the site's cache off, so every request is a
# pass-through (the fast pass-through with edge.fastPath true). Every process started here is
# stopped by its PID.
#   D=5 TOP=10 PORT_BASE=38300 [FAST="true false"] [CLOSE=1] [SCHEME=https] [PASS=1] bench/profile-hit.sh
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
D=${D:-5}; TOP=${TOP:-10}; base=${PORT_BASE:-38300}; FAST=${FAST:-true false}; SCHEME=${SCHEME:-http}
hdr=(); [[ -n ${CLOSE:-} ]] && hdr=(-H 'Connection: close')
dir="$(mktemp -d -t verge-prof.XXXXXX)"
PORT=$((base + 91)) node "$here/../dist/bench/hit-ceiling.js" & origin=$!
trap 'kill $origin 2>/dev/null; tail -5 "$dir"/v-*.log 2>/dev/null' EXIT
listen="http: { listen: [\"127.0.0.1:$((base + 1))\"] }
  https: { listen: [] }" tls=""
if [[ $SCHEME == https ]]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$dir/key.pem" \
    -out "$dir/cert.pem" -days 2 -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1" 2>/dev/null
  listen="http: { listen: [] }
  https: { listen: [\"127.0.0.1:$((base + 1))\"], defaultSite: \"127.0.0.1\" }"
  tls="    tls: { cert: \"$dir/cert.pem\", key: \"$dir/key.pem\" }"
fi
cache=""; [[ -n ${PASS:-} ]] && cache="    cache: { enabled: false }"
for fast in $FAST; do
  cat > "$dir/v-$fast.yaml" <<YAML
edge:
  workers: 1
  fastPath: $fast
  admin: { listen: "127.0.0.1:0" }
  $listen
log: { access: "off" }
sites:
  - name: "127.0.0.1"
$tls
    origin:
      servers: [{ host: 127.0.0.1, port: $((base + 91)) }]
$cache
YAML
  mkdir -p "$dir/prof-$fast"
  node --cpu-prof --cpu-prof-dir="$dir/prof-$fast" "$here/../dist/src/cli/main.js" serve --config "$dir/v-$fast.yaml" >"$dir/v-$fast.log" 2>&1 & v=$!
  for _ in $(seq 100); do curl -sk -o /dev/null "$SCHEME://127.0.0.1:$((base + 1))/1k.bin" && break; sleep 0.2; done
  curl -sk -o /dev/null "$SCHEME://127.0.0.1:$((base + 1))/1k.bin"
  echo "== edge.fastPath: $fast"
  timeout $((D + 20)) wrk -t1 -c50 -d"${D}s" --latency "${hdr[@]}" "$SCHEME://127.0.0.1:$((base + 1))/1k.bin" | grep -E 'Requests/sec|99%'
  kill -INT $v; wait $v || true
  # the serving process is the child: the larger of the two profiles
  prof=$(ls -S "$dir/prof-$fast"/*.cpuprofile | head -1)
  node "$here/../dist/bench/profile-top.js" "$prof" "$TOP"
  [[ -n ${KEEP:-} ]] && cp "$prof" "$KEEP-$fast.cpuprofile"
done
rm -rf "$dir"
