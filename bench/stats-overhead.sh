#!/usr/bin/env bash
# Cost of the traffic statistics on the request path (docs/stats.md): cache HITs of /1k.bin
# through `verge serve --data` of two builds, A (e.g. main before the statistics) and B (this
# checkout), round by round (A B, A B, ...) on one origin, each cell with the server's CPU time
# per request (utime+stime from /proc). Ratios are only meaningful within a round on a noisy
# machine. Load generator: autocannon (npm), given as AUTOCANNON=path/to/autocannon.
#   A=/tmp/base/dist/src/cli/main.js B=dist/src/cli/main.js AUTOCANNON=... N=2 D=10 \
#     bench/stats-overhead.sh
set -euo pipefail
N=${N:-2}
D=${D:-10}
C=${C:-50}
: "${A:?path of build A's dist/src/cli/main.js}" "${B:?path of build B's dist/src/cli/main.js}"
: "${AUTOCANNON:?path of the autocannon executable}"
dir="$(mktemp -d -t verge-stats-bench.XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
origin_port=$(free_port)
node -e '
  const body = Buffer.alloc(1024, 120);
  require("http").createServer((req, res) => {
    res.writeHead(200, { "content-type": "application/octet-stream", "cache-control": "public, max-age=3600" });
    res.end(body);
  }).listen(Number(process.argv[1]), "127.0.0.1");' "$origin_port" &
pids+=($!)
start() {  # name cli: appends "port:pid" to cells
  local name=$1 cli=$2 port admin
  port=$(free_port)
  admin=$(free_port)
  mkdir -p "$dir/$name"
  cat > "$dir/$name.yaml" <<YAML
edge:
  admin: { listen: "127.0.0.1:$admin" }
  http: { listen: ["127.0.0.1:$port"] }
  https: { listen: [] }
log: { access: "off" }
sites:
  - name: "127.0.0.1"
    origin:
      servers: [{ host: 127.0.0.1, port: $origin_port }]
YAML
  node "$cli" config import "$dir/$name.yaml" --data "$dir/$name" > /dev/null
  node "$cli" serve --data "$dir/$name" > "$dir/$name.log" 2>&1 &
  pids+=($!)
  local _
  for _ in $(seq 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:$port/1k.bin" 2>/dev/null && break
    sleep 0.2
  done
  # the process that serves (serve runs a supervising primary and one serving child)
  local pid
  pid=$(ss -ltnpH "sport = :$port" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
  cells+=("$port:$pid")
}
cells=()
start A "$A"
start B "$B"
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
tck=$(getconf CLK_TCK)
for i in $(seq "$N"); do
  line="round $i"
  for idx in 0 1; do
    c=${cells[$idx]}
    port=${c%%:*}
    pid=${c##*:}
    c0=$(cpu "$pid")
    out=$("$AUTOCANNON" -j -c "$C" -d "$D" "http://127.0.0.1:$port/1k.bin" 2>/dev/null)
    c1=$(cpu "$pid")
    n=$(node -e 'const r=JSON.parse(process.argv[1]);console.log(r.requests.total, r.non2xx, Math.round(r.requests.average), r.latency.p99)' "$out")
    read -r total non2xx rps p99 <<<"$n"
    us=$(awk -v d=$((c1 - c0)) -v n="$total" -v t="$tck" 'BEGIN{printf "%.1f", d * 1e6 / t / n}')
    line+="  $([[ $idx == 0 ]] && echo A || echo B) ${rps} req/s ${us} us/req p99 ${p99} ms non2xx ${non2xx}"
  done
  echo "$line"
done
