#!/usr/bin/env bash
# The hit path's gap to the runtime's ceilings, interleaved (docs/benchmarks.md, issue 10 "perf3"
# and "hitplan"): the servers side by side, round by round, `wrk -t1 -c50 -d${D}s` of /1k.bin each:
#   net    dist/bench/net-ceiling.js: a bare socket loop answering from one prebuilt buffer
#   http   dist/bench/hit-ceiling.js: node:http's fixed response, the same 12 fields (also the origin)
#   verge  Verge, one process, access log off, the object already cached (a fast-path HIT)
#   verge-b  with VERGE_B=/other/checkout: that checkout's build, the same way (an A/B)
#   net-u  with NETU=1: the bare loop reading into one shared buffer (net-ceiling.ts SHARED=1)
# SCHEME=https: the same over TLS (HTTP/1.1 by ALPN, a P-256 certificate made here): `net` is
# then the bare `tls` loop, `http` node:https's fixed response, Verge's HTTPS port.
# Prints each cell (req/s, the server's CPU per request, utime+stime from /proc, and wrk's p99)
# and then the medians (p99 too: the bare loop's p99 under the same load says how much of a tail
# is queueing in one thread) and the ratios verge/net, verge/http, http/net; on a shared machine only ratios within
# one run mean anything. Every process started here is stopped by its PID.
#   N=3 D=5 PORT_BASE=38300 [SCHEME=https] [VERGE_B=/path/to/checkout] [NETU=1] bench/hit-gap.sh
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
N=${N:-3}; D=${D:-5}; base=${PORT_BASE:-38300}; SCHEME=${SCHEME:-http}; VERGE_B=${VERGE_B:-}; NETU=${NETU:-}
dir="$(mktemp -d -t verge-gap.XXXXXX)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$dir"; }
trap cleanup EXIT
for p in $((base + 1)) $((base + 2)) $((base + 91)) $((base + 92)) $((base + 93)) $((base + 94)); do
  if [[ -n $(ss -ltnH "sport = :$p") ]]; then echo "port $p is in use: choose another PORT_BASE" >&2; exit 1; fi
done
tlsenv=()
if [[ $SCHEME == https ]]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$dir/key.pem" \
    -out "$dir/cert.pem" -days 2 -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1" 2>/dev/null
  tlsenv=(TLS_CERT="$dir/cert.pem" TLS_KEY="$dir/key.pem")
fi
# the origin (always plain HTTP), then the two ceilings in the measured scheme
PORT=$((base + 91)) node "$here/../dist/bench/hit-ceiling.js" & pids+=($!)
if [[ $SCHEME == https ]]; then
  env "${tlsenv[@]}" PORT=$((base + 93)) node "$here/../dist/bench/hit-ceiling.js" & pids+=($!); http=$!; httpport=$((base + 93))
else
  http=${pids[0]}; httpport=$((base + 91))
fi
env "${tlsenv[@]}" PORT=$((base + 92)) node "$here/../dist/bench/net-ceiling.js" & pids+=($!); netp=$!
# shellcheck source=bench/hit-verge.sh
source "$here/hit-verge.sh"
start_verge "$here/.." $((base + 1)) v; verge=$started
names=(net http verge); ports=($((base + 92)) "$httpport" $((base + 1))); spids=("$netp" "$http" "$verge")
if [[ -n $VERGE_B ]]; then
  start_verge "$VERGE_B" $((base + 2)) vb; vb=$started
  names+=(verge-b); ports+=($((base + 2))); spids+=("$vb")
fi
if [[ -n $NETU ]]; then
  env "${tlsenv[@]}" SHARED=1 PORT=$((base + 94)) node "$here/../dist/bench/net-ceiling.js" & pids+=($!)
  names+=(net-u); ports+=($((base + 94))); spids+=("$!")
  sleep 0.5
fi
cpu() { local p; for p in "$1" $(pgrep -P "$1"); do awk '{print $14 + $15}' "/proc/$p/stat"; done | awk '{t += $1} END {print t}'; }
tck=$(getconf CLK_TCK)
cell() {  # name port pid
  local c0 c1 out n rps us p99
  c0=$(cpu "$3")
  out=$(timeout $((D + 20)) wrk -t1 -c50 -d"${D}s" --latency "$SCHEME://127.0.0.1:$2/1k.bin")
  c1=$(cpu "$3")
  n=$(awk '/requests in/{print $1}' <<<"$out")
  rps=$(awk '/Requests\/sec/{printf "%.0f", $2}' <<<"$out")
  us=$(awk -v d=$((c1 - c0)) -v n="$n" -v t="$tck" 'BEGIN{printf "%.1f", d * 1e6 / t / n}')
  # wrk's p99 in ms (it prints us, ms or s)
  p99=$(awk '/ 99%/{v = $2; if (v ~ /us$/) v = v / 1000; else if (v ~ /ms$/) v = v + 0; else v = v * 1000; printf "%.2f", v}' <<<"$out")
  echo "$1 $rps $us $p99" >>"$dir/cells"
  printf '  %-7s %6s req/s %6s us/req p99 %6s ms' "$1" "$rps" "$us" "$p99"
}
echo "scheme $SCHEME, load average $(cut -d' ' -f1-3 /proc/loadavg)"
# warm-up (JIT) pass, not counted
for p in "${ports[@]}"; do wrk -t1 -c50 -d1s "$SCHEME://127.0.0.1:$p/1k.bin" >/dev/null; done
for i in $(seq "$N"); do
  printf 'round %s' "$i"
  # the order rotates each round: which server runs first in a round mattered (docs/benchmarks.md)
  k=${#names[@]}
  for ((j = 0; j < k; j++)); do
    x=$(((i - 1 + j) % k))
    cell "${names[$x]}" "${ports[$x]}" "${spids[$x]}"
  done
  echo
done
echo "load average $(cut -d' ' -f1-3 /proc/loadavg)"
awk "$(<"$here/median.awk")"'
  { r[$1] = r[$1] " " $2; u[$1] = u[$1] " " $3; q[$1] = q[$1] " " $4 }
  END {
    for (k in r) { mr[k] = med(r[k]); mu[k] = med(u[k]); mq[k] = med(q[k]) }
    printf "median req/s: net %d, http %d, verge %d", mr["net"], mr["http"], mr["verge"]
    if ("verge-b" in r) printf ", verge-b %d", mr["verge-b"]
    if ("net-u" in r) printf ", net-u %d", mr["net-u"]
    printf "\nmedian us/req: net %.1f, http %.1f, verge %.1f", mu["net"], mu["http"], mu["verge"]
    if ("verge-b" in r) printf ", verge-b %.1f", mu["verge-b"]
    if ("net-u" in r) printf ", net-u %.1f", mu["net-u"]
    printf "\nmedian p99 ms: net %.2f, http %.2f, verge %.2f", mq["net"], mq["http"], mq["verge"]
    if ("verge-b" in r) printf ", verge-b %.2f", mq["verge-b"]
    if ("net-u" in r) printf ", net-u %.2f", mq["net-u"]
    printf "\nreq/s ratios: verge/net %.2f, verge/http %.2f, http/net %.2f\n", mr["verge"] / mr["net"], mr["verge"] / mr["http"], mr["http"] / mr["net"]
    printf "CPU/req ratios: verge/net %.2f, verge/http %.2f, http/net %.2f\n", mu["verge"] / mu["net"], mu["verge"] / mu["http"], mu["http"] / mu["net"]
    if ("verge-b" in r) printf "verge vs verge-b: req/s %.2f, CPU/req %.2f\n", mr["verge"] / mr["verge-b"], mu["verge"] / mu["verge-b"]
    if ("net-u" in r) printf "CPU/req net-u/net %.2f, verge/net-u %.2f\n", mu["net-u"] / mu["net"], mu["verge"] / mu["net-u"]
  }' "$dir/cells"
