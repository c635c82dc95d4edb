#!/usr/bin/env bash
# The hit path's gap to the runtime's ceilings, interleaved (docs/benchmarks.md, issue 10 "perf3"):
# three servers side by side, round by round, `wrk -t1 -c50 -d${D}s` of /1k.bin each:
#   net   dist/bench/net-ceiling.js: a bare socket loop answering from one prebuilt buffer
#   http  dist/bench/hit-ceiling.js: node:http's fixed response, the same 12 fields (also the origin)
#   verge Verge, one process, access log off, the object already cached (a fast-path HIT)
# Prints each cell (req/s and the server's CPU per request, utime+stime from /proc) and then the
# medians and the ratios verge/net, verge/http, http/net; on a shared machine only ratios within
# one run mean anything. Every process started here is stopped by its PID.
#   N=3 D=5 PORT_BASE=38300 [SCHEME=https] [VERGE_ARGS=...] bench/hit-gap.sh
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
N=${N:-3}; D=${D:-5}; base=${PORT_BASE:-38300}
dir="$(mktemp -d -t verge-gap.XXXXXX)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$dir"; }
trap cleanup EXIT
PORT=$((base + 91)) node "$here/../dist/bench/hit-ceiling.js" & pids+=($!); http=$!
PORT=$((base + 92)) node "$here/../dist/bench/net-ceiling.js" & pids+=($!); netp=$!
cat > "$dir/v.yaml" <<YAML
edge:
  workers: 1
  admin: { listen: "127.0.0.1:0" }
  http: { listen: ["127.0.0.1:$((base + 1))"] }
  https: { listen: [] }
log: { access: "off" }
sites:
  - name: "127.0.0.1"
    origin:
      servers: [{ host: 127.0.0.1, port: $((base + 91)) }]
YAML
node "$here/../dist/src/cli/main.js" serve --config "$dir/v.yaml" >"$dir/v.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$((base + 1))/1k.bin" && break; sleep 0.2; done
curl -s -o /dev/null "http://127.0.0.1:$((base + 1))/1k.bin"
# the serving process: the one listening on the Verge port
verge=$(ss -ltnpH "sport = :$((base + 1))" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
[[ -n "$verge" ]] || { echo "verge did not start:"; cat "$dir/v.log"; exit 1; }
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
tck=$(getconf CLK_TCK)
cell() {  # name port pid
  local c0 c1 out n rps us
  c0=$(cpu "$3")
  out=$(timeout $((D + 20)) wrk -t1 -c50 -d"${D}s" --latency "http://127.0.0.1:$2/1k.bin")
  c1=$(cpu "$3")
  n=$(awk '/requests in/{print $1}' <<<"$out")
  rps=$(awk '/Requests\/sec/{printf "%.0f", $2}' <<<"$out")
  us=$(awk -v d=$((c1 - c0)) -v n="$n" -v t="$tck" 'BEGIN{printf "%.1f", d * 1e6 / t / n}')
  echo "$1 $rps $us" >>"$dir/cells"
  printf '  %-5s %6s req/s %6s us/req' "$1" "$rps" "$us"
}
# warm-up (JIT) pass, not counted
for p in $((base + 92)) $((base + 91)) $((base + 1)); do wrk -t1 -c50 -d1s "http://127.0.0.1:$p/1k.bin" >/dev/null; done
for i in $(seq "$N"); do
  printf 'round %s' "$i"
  cell net $((base + 92)) "$netp"
  cell http $((base + 91)) "$http"
  cell verge $((base + 1)) "$verge"
  echo
done
awk '
  { r[$1] = r[$1] " " $2; u[$1] = u[$1] " " $3 }
  function med(s,   a, n, i, j, t) {
    n = split(s, a, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  END {
    for (k in r) { mr[k] = med(r[k]); mu[k] = med(u[k]) }
    printf "median req/s: net %d, http %d, verge %d\n", mr["net"], mr["http"], mr["verge"]
    printf "median us/req: net %.1f, http %.1f, verge %.1f\n", mu["net"], mu["http"], mu["verge"]
    printf "req/s ratios: verge/net %.2f, verge/http %.2f, http/net %.2f\n", mr["verge"] / mr["net"], mr["verge"] / mr["http"], mr["http"] / mr["net"]
    printf "CPU/req ratios: verge/net %.2f, verge/http %.2f, http/net %.2f\n", mu["verge"] / mu["net"], mu["verge"] / mu["http"], mu["http"] / mu["net"]
  }' "$dir/cells"
