#!/usr/bin/env bash
# The HTTP/2 hit path's gap to node:http2's own ceilings, interleaved (docs/benchmarks.md, issue 10
# "HTTP/2 hit fast path" and "HTTP/2 fields"): the servers named in CELLS side by side, round by
# round, each cell `h2load -n $REQS -c$H2_CONNS -m$H2_STREAMS -t1 https://127.0.0.1:PORT/1k.bin`
# (at most 20 s). Cells:
#   ceil   the shared harness's own ceiling (../shared/bench/node/ceiling.js MODE=h2, or CEILING_JS):
#          node:http2 compat API, 3 fields plus Date
#   h2     dist/bench/h2-ceiling.js: node:http2 (allowHTTP1, compat API), fixed response, the same
#          12 fields as a Verge HIT
#   c3 c12 s3 s12   dist/bench/h2-ceiling.js variants in ONE process (compat/stream API x the
#          harness's 3 fields / Verge's 12): where the gap to `ceil` is, fields or API
#   fast   Verge, one process, access log off, the object already cached, edge.fastPath: true
#   slow   the same with edge.fastPath: false (every HTTP/2 hit through the compat layer and the
#          handler: the path before src/edge/fast-h2.ts)
#   base   Verge from another build (BASE=/tmp/x, holding dist/ and node_modules/, e.g. main's),
#          edge.fastPath: true: an A/B of two builds in the same rounds
# The origin is dist/bench/hit-ceiling.js on plain HTTP. A certificate for 127.0.0.1 is made here
# with openssl. Prints each cell (req/s, the server's CPU per request, utime+stime from /proc, and
# the HEADERS bytes per response h2load received, i.e. after HPACK, and the p99 latency from
# h2load's --log-file) and then the medians and the
# ratios of each cell to the first one in CELLS; on a shared machine only ratios within one run mean
# anything. PROFILE=1: instead, one h2load run against each Verge cell under node --cpu-prof and
# the top frames (self time) of each. Every process started here is stopped by its PID.
#   (PORT_BASE: above the ephemeral range, 32768-60999 here, or a load's client ports can hold the
#   cells' ports: EADDRINUSE at start on a busy machine; 61300 works)
#   N=5 REQS=200000 PORT_BASE=38500 [H2_CONNS=50 H2_STREAMS=10] [CELLS="h2 fast slow"]
#   [BASE=/tmp/main-build] [PROFILE=1 TOP=10] bench/h2-gap.sh
# The shared harness's load: H2_CONNS=10 H2_STREAMS=5 CELLS="ceil fast base" BASE=...
# and its pattern: DUR=4 (each cell `h2load -D 4 --warm-up-time=1` instead of -n $REQS, the CPU
# read over the measured 4 s only) and IDLE=S (S seconds with no load before each cell, as the
# harness leaves each process idle while it measures the other servers' cells)
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
N=${N:-5}; REQS=${REQS:-200000}; base=${PORT_BASE:-38500}; TOP=${TOP:-10}
# H2_CONNS x H2_STREAMS: the load's shape (the shared harness runs 10 x 5)
C=${H2_CONNS:-50}; M=${H2_STREAMS:-10}
read -r -a cells <<<"${CELLS:-h2 fast slow}"
has() { [[ " ${cells[*]} " == *" $1 "* ]]; }
dir="$(mktemp -d -t verge-h2gap.XXXXXX)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null; done; sleep 0.5; rm -rf "$dir"; }
trap cleanup EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$dir/key.pem" \
  -out "$dir/cert.pem" -days 2 -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1" 2>/dev/null
PORT=$((base + 91)) node "$here/../dist/bench/hit-ceiling.js" & pids+=($!)
declare -A port pidof
wait_up() { for _ in $(seq 100); do curl -sk -o /dev/null "https://127.0.0.1:$1/1k.bin" && return; sleep 0.2; done; }
# the node:http2 variants: one process, one port each
variants=()
for v in h2 c3 c12 s3 s12; do has "$v" && variants+=("$v"); done
if ((${#variants[@]})); then
  VARIANTS="${variants[*]}" PORT=$((base + 70)) TLS_KEY="$dir/key.pem" TLS_CERT="$dir/cert.pem" \
    node "$here/../dist/bench/h2-ceiling.js" & pids+=($!)
  i=0; for v in "${variants[@]}"; do port[$v]=$((base + 70 + i)); pidof[$v]=$!; i=$((i + 1)); done
fi
if has ceil; then
  ceiling=${CEILING_JS:-}
  for c in "$here/../../shared/bench/node/ceiling.js" "$here/../../../shared/bench/node/ceiling.js"; do
    [[ -z "$ceiling" && -f "$c" ]] && ceiling=$c
  done
  [[ -f "$ceiling" ]] || { echo "ceiling.js not found: set CEILING_JS"; exit 1; }
  MODE=h2 PORT=$((base + 80)) TLS_KEY="$dir/key.pem" TLS_CERT="$dir/cert.pem" node "$ceiling" & pids+=($!)
  port[ceil]=$((base + 80)); pidof[ceil]=$!
fi
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
prof=()
[[ "${PROFILE:-0}" == 1 ]] && prof=(--cpu-prof)
start() {  # name http-port https-port fastPath dist-root
  config "$1" "$2" "$3" "$4"
  mkdir -p "$dir/prof-$1"
  node "${prof[@]}" ${prof:+--cpu-prof-dir="$dir/prof-$1"} "$5/dist/src/cli/main.js" serve --config "$dir/$1.yaml" >"$dir/$1.log" 2>&1 & pids+=($!)
  wait_up "$3"
  curl -sk -o /dev/null "https://127.0.0.1:$3/1k.bin"
  local pid
  pid=$(ss -ltnpH "sport = :$3" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
  [[ -n "$pid" ]] || { echo "verge $1 did not start:"; cat "$dir/$1.log"; exit 1; }
  port[$1]=$3; pidof[$1]=$pid
}
verges=()
# FAST=<dir with dist/ and node_modules/>: the `fast` cell from another build than this tree's
has fast && { start fast $((base + 1)) $((base + 2)) true "${FAST:-$here/..}"; verges+=(fast); }
has slow && { start slow $((base + 3)) $((base + 4)) false "$here/.."; verges+=(slow); }
if has base; then
  [[ -f "${BASE:-}/dist/src/cli/main.js" ]] || { echo "cell base needs BASE=<dir with dist/ and node_modules/>"; exit 1; }
  start base $((base + 5)) $((base + 6)) true "$BASE"; verges+=(base)
fi
for c in "${cells[@]}"; do [[ -n "${port[$c]:-}" ]] || { echo "unknown cell $c"; exit 1; }; wait_up "${port[$c]}"; done
# each request's latency (h2load --log-file, as the shared harness runs it): the p99 column
DUR=${DUR:-}; IDLE=${IDLE:-0}; WARM=1
load() {
  if [[ -n "$DUR" ]]; then
    timeout 30 h2load -D "$DUR" --warm-up-time="$WARM" -c"$C" -m"$M" -t1 --log-file="$dir/reqlog" "https://127.0.0.1:$1/1k.bin"
  else
    timeout 20 h2load -n "$REQS" -c"$C" -m"$M" -t1 --log-file="$dir/reqlog" "https://127.0.0.1:$1/1k.bin"
  fi
}
p99() { awk '{print $3}' "$dir/reqlog" | sort -n | awk '{a[NR] = $1} END {if (NR) printf "%.2f", a[int(NR * 0.99)] / 1000; else print 0}'; }
if [[ "${PROFILE:-0}" == 1 ]]; then
  for v in "${verges[@]}"; do
    echo "== $v"
    load "${port[$v]}" | grep -E 'finished in|requests:'
  done
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null; done
  wait 2>/dev/null
  # the serving children write their profiles as they exit, after their parents
  for _ in $(seq 50); do
    alive=0; for v in "${verges[@]}"; do kill -0 "${pidof[$v]}" 2>/dev/null && alive=1; done
    ((alive)) || break; sleep 0.2
  done
  for v in "${verges[@]}"; do
    echo "== top $TOP, $v"
    # the serving process is the child: the larger of the two profiles
    node "$here/../dist/bench/profile-top.js" "$(ls -S "$dir/prof-$v"/*.cpuprofile | head -1)" "$TOP"
  done
  pids=()
  exit 0
fi
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
tck=$(getconf CLK_TCK)
cell() {  # name port pid
  local c0 c1 out n rps us hb lat
  ((IDLE > 0)) && sleep "$IDLE"
  if [[ -n "$DUR" ]]; then
    # the CPU over the measured seconds only (h2load counts no request of its warm-up)
    load "$2" >"$dir/out" &
    local lp=$!
    sleep "$WARM"
    c0=$(cpu "$3")
    wait "$lp"
    c1=$(cpu "$3")
    out=$(cat "$dir/out")
  else
    c0=$(cpu "$3")
    out=$(load "$2")
    c1=$(cpu "$3")
  fi
  n=$(awk '/^requests:/{print $8}' <<<"$out")
  rps=$(awk '/^finished in/{gsub(",", "", $4); printf "%.0f", $4}' <<<"$out")
  if [[ -z "$n" || "$n" == 0 ]]; then echo " $1: h2load failed: $out"; return; fi
  us=$(awk -v d=$((c1 - c0)) -v n="$n" -v t="$tck" 'BEGIN{printf "%.1f", d * 1e6 / t / n}')
  # "traffic: ... total, 1.20MB (1260000) headers (space savings ...)"
  hb=$(awk -v n="$n" '/^traffic:/{gsub(/[()]/, "", $6); printf "%.1f", $6 / n}' <<<"$out")
  lat=$(p99)
  echo "$1 $rps $us $hb $lat" >>"$dir/cells"
  printf '  %-4s %6s req/s %6s us/req %5s B/hdr %6s ms p99' "$1" "$rps" "$us" "$hb" "$lat"
}
# PRELOAD=S: before the warm-up, S seconds of wrk -t1 -c50 over HTTP/1.1 on each Verge cell's plain
# port and then its TLS port (/1k.bin), as the shared harness's Verge process serves
# every H1 and TLS cell before its h2 cells; PRELOAD_CELLS limits it to some cells (default: every
# Verge cell and `ceil`, whose harness process serves the HTTPS/1.1 ceiling cells)
if [[ -n "${PRELOAD:-}" ]]; then
  for c in ${PRELOAD_CELLS:-${verges[*]} ceil}; do
    has "$c" || continue
    for obj in 1k; do
      if [[ "$c" != ceil ]]; then
        timeout 20 wrk -t1 -c50 -d"${PRELOAD}s" "http://127.0.0.1:$((port[$c] - 1))/$obj.bin" >/dev/null
      fi
      timeout 20 wrk -t1 -c50 -d"${PRELOAD}s" "https://127.0.0.1:${port[$c]}/$obj.bin" >/dev/null
    done
    echo "preloaded $c"
  done
fi
# warm-up (JIT) pass, not counted
for c in "${cells[@]}"; do timeout 20 h2load -n 20000 -c"$C" -m"$M" -t1 "https://127.0.0.1:${port[$c]}/1k.bin" >/dev/null; done
for i in $(seq "$N"); do
  printf 'round %s' "$i"
  for c in "${cells[@]}"; do cell "$c" "${port[$c]}" "${pidof[$c]}"; done
  echo
done
awk -v order="${cells[*]}" "$(<"$here/median.awk")"'
  { r[$1] = r[$1] " " $2; u[$1] = u[$1] " " $3; h[$1] = h[$1] " " $4; l[$1] = l[$1] " " $5 }
  END {
    k = split(order, c, " ")
    printf "%-5s %9s %9s %9s %8s %10s %10s\n", "cell", "req/s", "us/req", "B/hdr", "p99 ms", "req/s x", "CPU/req x"
    for (i = 1; i <= k; i++) {
      if (!(c[i] in r)) continue
      mr = med(r[c[i]]); mu = med(u[c[i]]); mh = med(h[c[i]]); ml = med(l[c[i]])
      if (i == 1) { r0 = mr; u0 = mu }
      printf "%-5s %9d %9.1f %9.1f %8.2f %10.2f %10.2f\n", c[i], mr, mu, mh, ml, mr / r0, mu / u0
    }
    printf "(medians of each cell; ratios against %s)\n", c[1]
  }' "$dir/cells"
