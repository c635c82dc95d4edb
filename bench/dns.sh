#!/usr/bin/env bash
# Queries per second of Verge's authoritative DNS beside NSD (Debian) serving the same zone (the
# master file `verge dns zone` prints), both loaded by dnsperf (Debian) with the same query file,
# on 127.0.0.1 only. Each server runs as one process (NSD server-count 1; Verge is one Node.js
# process); rate limiting is off in both. Runs are interleaved (Verge, NSD, Verge, NSD, ...) and
# each is D seconds (default 10, at most 20). Not a test: run by hand, report in docs/benchmarks.md.
#   bench/dns.sh                 # 2 rounds of 10 s each
#   N=3 D=15 SITES=1000 bench/dns.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-2}
D=${D:-10}
C=${C:-20}
SITES=${SITES:-200}
EDGES=${EDGES:-8}
[ "$D" -le 20 ] || { echo "dns.sh: D is at most 20 seconds (shared machine)" >&2; exit 2; }
bash scripts/install-test-deps.sh nsd dnsperf
[ -n "${SKIP_BUILD:-}" ] || npm run build --silent
tmp=$(mktemp -d -t verge-dns-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # NSD writes its state files while it exits: remove the directory once both are gone
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
vport=$(free_port)
nport=$(free_port)
node dist/bench/dns-setup.js "$tmp" "$vport" "$SITES" "$EDGES"
node dist/src/cli/main.js dns zone --data "$tmp" >"$tmp/zone.txt"

cat >"$tmp/nsd.conf" <<CONF
server:
  ip-address: 127.0.0.1@$nport
  username: ""
  chroot: ""
  zonesdir: "$tmp"
  zonelistfile: "$tmp/zone.list"
  database: ""
  pidfile: "$tmp/nsd.pid"
  xfrdfile: "$tmp/xfrd.state"
  xfrdir: "$tmp"
  server-count: 1
  verbosity: 0
  do-ip6: no
  rrl-ratelimit: 0
remote-control:
  control-enable: no
zone:
  name: "cdn.bench.example"
  zonefile: "zone.txt"
CONF
/usr/sbin/nsd -d -c "$tmp/nsd.conf" >"$tmp/nsd.log" 2>&1 &
pids+=($!)
VERGE_LOG_LEVEL=warn node dist/src/cli/main.js dns --data "$tmp" >"$tmp/verge.log" 2>&1 &
vpid=$!
pids+=($vpid)
for port in "$vport" "$nport"; do
  for _ in $(seq 100); do
    dig +short +time=1 +tries=1 @127.0.0.1 -p "$port" cdn.bench.example SOA >/dev/null 2>&1 && break
    sleep 0.1
  done
done
# both must give the same answer for a site name (NSD lists every edge; Verge picks 4 of them)
echo "verge: $(dig +short @127.0.0.1 -p "$vport" www-site1-example.cdn.bench.example A | sort | tr '\n' ' ')"
echo "nsd:   $(dig +short @127.0.0.1 -p "$nport" www-site1-example.cdn.bench.example A | sort | tr '\n' ' ')"

run() {
  dnsperf -s 127.0.0.1 -p "$1" -d "$tmp/queries.txt" -l "$D" -c "$C" -T 1 -q 500 2>&1 |
    awk '/Queries per second/{q=$4} /Queries lost/{l=$4} END{printf "%.0f q/s, lost %s", q, l}'
}
echo "dnsperf -l $D -c $C -T 1 -q 500, $SITES sites, $EDGES edges, $(wc -l <"$tmp/queries.txt") queries in the file"
for i in $(seq "$N"); do
  v=$(run "$vport")
  n=$(run "$nport")
  ratio=$(awk -v v="${v%% *}" -v n="${n%% *}" 'BEGIN{printf "%.2f", v / n}')
  echo "round $i  verge ${v}  nsd ${n}  verge/nsd ${ratio}"
done
echo "verge RSS: $(awk '/VmHWM/{print $2, $3}' /proc/$vpid/status) peak"
