#!/usr/bin/env bash
# The HTTP/2 hit path's gap to node:http2's own ceiling, interleaved (docs/benchmarks.md, issue 10
# "HTTP/2 hit fast path"): three servers side by side, round by round, each cell
# `h2load -n $REQS -c50 -m10 -t1 https://127.0.0.1:PORT/1k.bin` (at most 20 s):
#   h2     dist/bench/h2-ceiling.js: node:http2 (allowHTTP1, compat API), fixed response, the
#          same 12 fields as a Verge HIT
#   fast   Verge, one process, access log off, the object already cached, edge.fastPath: true
#   slow   the same with edge.fastPath: false (every HTTP/2 hit through the compat layer and
#          the handler: the path before src/edge/fast-h2.ts)
# The origin is dist/bench/hit-ceiling.js on plain HTTP. A certificate for 127.0.0.1 is made
# here with openssl. Prints each cell (req/s and the server's CPU per request, utime+stime from
# /proc) and then the medians and the ratios; on a shared machine only ratios within one run mean
# anything. PROFILE=1: instead, one h2load run against each Verge under node --cpu-prof and the
# top frames (self time) of each. Every process started here is stopped by its PID.
#   N=5 REQS=200000 PORT_BASE=38500 [H2_CONNS=50 H2_STREAMS=10] [PROFILE=1 TOP=10] bench/h2-gap.sh
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
N=${N:-5}; REQS=${REQS:-200000}; base=${PORT_BASE:-38500}; TOP=${TOP:-10}
# H2_CONNS x H2_STREAMS: the load's shape (the shared harness runs 10 x 5)
C=${H2_CONNS:-50}; M=${H2_STREAMS:-10}
dir="$(mktemp -d -t verge-h2gap.XXXXXX)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null; done; sleep 0.5; rm -rf "$dir"; }
trap cleanup EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$dir/key.pem" \
  -out "$dir/cert.pem" -days 2 -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1" 2>/dev/null
PORT=$((base + 91)) node "$here/../dist/bench/hit-ceiling.js" & pids+=($!)
PORT=$((base + 92)) TLS_KEY="$dir/key.pem" TLS_CERT="$dir/cert.pem" node "$here/../dist/bench/h2-ceiling.js" & pids+=($!); h2=$!
config() {  # name http-port https-port fastPath
  cat > "$dir/$1.yaml" <<YAML
edge:
  workers: 1
  fastPath: $4
  admin: { listen: "127.0.0.1:0" }
  http: { listen: ["127.0.0.1:$2"] }
  https: { listen: ["127.0.0.1:$3"], defaultSite: "127.0.0.1" }
log: { access: "off" }
sites:
  - name: "127.0.0.1"
    tls: { cert: "$dir/cert.pem", key: "$dir/key.pem" }
    origin:
      servers: [{ host: 127.0.0.1, port: $((base + 91)) }]
YAML
}
config fast $((base + 1)) $((base + 2)) true
config slow $((base + 3)) $((base + 4)) false
prof=()
[[ "${PROFILE:-0}" == 1 ]] && prof=(--cpu-prof)
start() {  # name http-port https-port -> sets $pid to the serving process
  mkdir -p "$dir/prof-$1"
  node "${prof[@]}" ${prof:+--cpu-prof-dir="$dir/prof-$1"} "$here/../dist/src/cli/main.js" serve --config "$dir/$1.yaml" >"$dir/$1.log" 2>&1 & pids+=($!)
  for _ in $(seq 100); do curl -sk -o /dev/null "https://127.0.0.1:$3/1k.bin" && break; sleep 0.2; done
  curl -sk -o /dev/null "https://127.0.0.1:$3/1k.bin"
  pid=$(ss -ltnpH "sport = :$3" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
  [[ -n "$pid" ]] || { echo "verge $1 did not start:"; cat "$dir/$1.log"; exit 1; }
}
start fast $((base + 1)) $((base + 2)); fast=$pid
start slow $((base + 3)) $((base + 4)); slow=$pid
for _ in $(seq 50); do curl -sk -o /dev/null "https://127.0.0.1:$((base + 92))/1k.bin" && break; sleep 0.2; done
load() { timeout 20 h2load -n "$REQS" -c"$C" -m"$M" -t1 "https://127.0.0.1:$1/1k.bin"; }
if [[ "${PROFILE:-0}" == 1 ]]; then
  for v in fast slow; do
    port=$((base + 2)); [[ $v == slow ]] && port=$((base + 4))
    echo "== edge.fastPath: $([[ $v == fast ]] && echo true || echo false)"
    load "$port" | grep -E 'finished in|requests:'
  done
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null; done
  wait 2>/dev/null
  # the serving children write their profiles as they exit, after their parents
  for _ in $(seq 50); do kill -0 "$fast" 2>/dev/null || kill -0 "$slow" 2>/dev/null || break; sleep 0.2; done
  ls -l "$dir"/prof-* >&2
  for v in fast slow; do
    echo "== top $TOP, edge.fastPath: $([[ $v == fast ]] && echo true || echo false)"
    # the serving process is the child: the larger of the two profiles
    node "$here/../dist/bench/profile-top.js" "$(ls -S "$dir/prof-$v"/*.cpuprofile | head -1)" "$TOP"
  done
  pids=()
  exit 0
fi
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
tck=$(getconf CLK_TCK)
cell() {  # name port pid
  local c0 c1 out n rps us
  c0=$(cpu "$3")
  out=$(load "$2")
  c1=$(cpu "$3")
  n=$(awk '/^requests:/{print $8}' <<<"$out")
  rps=$(awk '/^finished in/{gsub(",", "", $4); printf "%.0f", $4}' <<<"$out")
  if [[ -z "$n" || "$n" == 0 ]]; then echo " $1: h2load failed: $out"; return; fi
  us=$(awk -v d=$((c1 - c0)) -v n="$n" -v t="$tck" 'BEGIN{printf "%.1f", d * 1e6 / t / n}')
  echo "$1 $rps $us" >>"$dir/cells"
  printf '  %-4s %6s req/s %6s us/req' "$1" "$rps" "$us"
}
# warm-up (JIT) pass, not counted
for p in $((base + 92)) $((base + 2)) $((base + 4)); do timeout 20 h2load -n 20000 -c50 -m10 -t1 "https://127.0.0.1:$p/1k.bin" >/dev/null; done
for i in $(seq "$N"); do
  printf 'round %s' "$i"
  cell h2 $((base + 92)) "$h2"
  cell fast $((base + 2)) "$fast"
  cell slow $((base + 4)) "$slow"
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
    printf "median req/s: h2 %d, fast %d, slow %d\n", mr["h2"], mr["fast"], mr["slow"]
    printf "median us/req: h2 %.1f, fast %.1f, slow %.1f\n", mu["h2"], mu["fast"], mu["slow"]
    printf "req/s ratios: fast/h2 %.2f, slow/h2 %.2f, fast/slow %.2f\n", mr["fast"] / mr["h2"], mr["slow"] / mr["h2"], mr["fast"] / mr["slow"]
    printf "CPU/req ratios: fast/h2 %.2f, slow/h2 %.2f, fast/slow %.2f\n", mu["fast"] / mu["h2"], mu["slow"] / mu["h2"], mu["fast"] / mu["slow"]
  }' "$dir/cells"
