#!/usr/bin/env bash
# Connection churn (issue 10, the harness's `hs-1k-*` cells): a new connection per request,
# `wrk -t1 -c50 -H 'Connection: close'` on /1k.bin, interleaved rounds (the order rotates) of:
#   nginx    nginx proxy_cache (the shared harness's conf/edge.nginx.conf, 2 workers), a HIT
#   node     dist/bench/hit-ceiling.js: node:http's (node:https's) own fixed response
#   verge    Verge, one process, access log off, the object cached (a fast-path HIT)
#   verge-b  with VERGE_B=/other/checkout: that checkout's build, the same way (an A/B)
# SCHEME=https: the same over TLS (HTTP/1.1 by ALPN, a P-256 certificate made here, nginx's
# TLS port with its harness settings: session cache and tickets on).
# Per cell: req/s, the server's CPU per request (utime+stime from /proc; nginx: master and
# workers summed), wrk's p99; for the Node servers also the bytes allocated and promoted and the
# GC pause per request (--trace-gc-nvp, as bench/hit-ab.sh). Then the medians of the rounds and
# the ratios to nginx and to node. On a shared machine only ratios within one run mean anything.
# KEEP=/some/dir keeps the servers' logs (the GC traces). Every process started here is stopped
# by its PID.
#   N=5 D=5 PORT_BASE=29700 [SCHEME=https] [VERGE_B=/path/to/checkout] bench/churn.sh
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
conf="$here/../../shared/bench/conf/edge.nginx.conf"
[[ -f "$conf" ]] || conf=/work/shared/bench/conf/edge.nginx.conf
N=${N:-5}; D=${D:-5}; base=${PORT_BASE:-29700}; SCHEME=${SCHEME:-http}; VERGE_B=${VERGE_B:-}
dir="$(mktemp -d -t verge-churn.XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  [[ -n ${KEEP:-} ]] && mkdir -p "$KEEP" && cp "$dir"/*.log "$KEEP/" 2>/dev/null
  [[ -f "$dir/edge/nginx.pid" ]] && kill "$(cat "$dir/edge/nginx.pid" 2>/dev/null)" 2>/dev/null
  sleep 0.5; rm -rf "$dir"
}
trap cleanup EXIT
ngx=$((base + 81)); ngxtls=$((base + 43))
for p in $((base + 1)) $((base + 2)) $((base + 91)) $((base + 93)) $ngx $ngxtls $((base + 85)) $((base + 86)); do
  if [[ -n $(ss -ltnH "sport = :$p") ]]; then echo "port $p is in use: choose another PORT_BASE" >&2; exit 1; fi
done
mkdir -p "$dir/edge/tmp" "$dir/tls" "$dir/conf"
# nginx workers run as nobody when started as root: they must reach the cache directory
chmod 755 "$dir"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$dir/key.pem" \
  -out "$dir/cert.pem" -days 2 -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" 2>/dev/null
cp "$dir/key.pem" "$dir/cert.pem" "$dir/tls/"
sed -e "s#@RUN@#$dir#g" -e "s#@P_ORIGIN@#$((base + 91))#g" -e "s#@P_NGX@#$ngx#g" -e "s#@P_TLS@#$ngxtls#g" \
  -e "s#@P_PROXY@#$((base + 85))#g" -e "s#@P_MISS@#$((base + 86))#g" "$conf" >"$dir/conf/edge.nginx.conf"
# the origin (plain HTTP), then node's own fixed response in the measured scheme
PORT=$((base + 91)) node "$here/../dist/bench/hit-ceiling.js" & pids+=($!)
if [[ $SCHEME == https ]]; then
  TLS_CERT="$dir/cert.pem" TLS_KEY="$dir/key.pem" PORT=$((base + 93)) \
    node --trace-gc-nvp "$here/../dist/bench/hit-ceiling.js" >"$dir/node.log" 2>&1 & pids+=($!)
  nodep=$!; nodeport=$((base + 93)); ngxport=$ngxtls
else
  PORT=$((base + 93)) node --trace-gc-nvp "$here/../dist/bench/hit-ceiling.js" >"$dir/node.log" 2>&1 & pids+=($!)
  nodep=$!; nodeport=$((base + 93)); ngxport=$ngx
fi
nginx -p "$dir/edge" -e "$dir/edge/error.log" -c "$dir/conf/edge.nginx.conf" -g 'daemon off;' & pids+=($!)
ngxp=$!
# shellcheck source=bench/hit-verge.sh
VERGE_NODE_OPTS=--trace-gc-nvp
source "$here/hit-verge.sh"
start_verge "$here/.." $((base + 1)) verge; vp=$started
names=(nginx node verge); ports=("$ngxport" "$nodeport" $((base + 1))); spids=("$ngxp" "$nodep" "$vp")
logs=("" "$dir/node.log" "$dir/verge.log")
if [[ -n $VERGE_B ]]; then
  start_verge "$VERGE_B" $((base + 2)) verge-b; vb=$started
  names+=(verge-b); ports+=($((base + 2))); spids+=("$vb"); logs+=("$dir/verge-b.log")
fi
for _ in $(seq 50); do curl -sk -o /dev/null "$SCHEME://127.0.0.1:$nodeport/1k.bin" && break; sleep 0.2; done
for _ in 1 2; do curl -sk -o /dev/null "$SCHEME://127.0.0.1:$ngxport/1k.bin"; done
tck=$(getconf CLK_TCK)
cpu() { # a process and its children (nginx's workers): utime+stime in ticks
  local t=0 p
  for p in "$1" $(pgrep -P "$1"); do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done
  echo "$t"
}
gc() { # log file, first line, requests: KB allocated, KB promoted and GC us per request
  tail -n +"$2" "$1" | grep -o "gc=[a-z]*\|pause=[0-9.]*\|allocated=[0-9]*\|promoted=[0-9]*" | awk -F= -v n="$3" \
    '$1=="pause"{p=$2} $1=="gc"{pt+=p} $1=="allocated"{a+=$2} $1=="promoted"{pr+=$2}
     END{printf "%.2f %.3f %.1f", a/n/1024, pr/n/1024, pt*1000/n}'
}
cell() { # index
  local name=${names[$1]} port=${ports[$1]} pid=${spids[$1]} log=${logs[$1]} c0 c1 out n rps us p99 l0=1 g="- - -"
  [[ -n $log ]] && l0=$(($(wc -l <"$log") + 1))
  c0=$(cpu "$pid")
  out=$(timeout $((D + 20)) wrk -t1 -c50 -d"${D}s" --latency -H 'Connection: close' "$SCHEME://127.0.0.1:$port/1k.bin")
  c1=$(cpu "$pid")
  n=$(awk '/requests in/{print $1}' <<<"$out")
  rps=$(awk '/Requests\/sec/{printf "%.0f", $2}' <<<"$out")
  us=$(awk -v d=$((c1 - c0)) -v n="$n" -v t="$tck" 'BEGIN{printf "%.1f", d * 1e6 / t / n}')
  p99=$(awk '/ 99%/{v = $2; if (v ~ /us$/) v = v / 1000; else if (v ~ /ms$/) v = v + 0; else v = v * 1000; printf "%.2f", v}' <<<"$out")
  [[ -n $log ]] && g=$(gc "$log" "$l0" "$n")
  # non-2xx answers or socket errors make a cell meaningless: say so
  grep -q 'Non-2xx\|Socket errors' <<<"$out" && echo && grep 'Non-2xx\|Socket errors' <<<"$out" | sed "s/^/  $name: /"
  echo "$name $rps $us $p99 $g" >>"$dir/cells"
  printf '  %-7s %6s req/s %6s us/req p99 %6s ms' "$name" "$rps" "$us" "$p99"
  [[ -n $log ]] && printf ' (%s KB alloc, %s KB promoted, %s us GC /req)' $g
}
echo "scheme $SCHEME, new connection per request, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for p in "${ports[@]}"; do wrk -t1 -c50 -d1s -H 'Connection: close' "$SCHEME://127.0.0.1:$p/1k.bin" >/dev/null; done
for i in $(seq "$N"); do
  echo "round $i"
  k=${#names[@]}
  for ((j = 0; j < k; j++)); do cell $(((i - 1 + j) % k)); echo; done
done
echo "load average $(cut -d' ' -f1-3 /proc/loadavg)"
awk "$(<"$here/median.awk")"'
  { if (!($1 in r)) order[++k] = $1; r[$1] = r[$1] " " $2; u[$1] = u[$1] " " $3; q[$1] = q[$1] " " $4
    al[$1] = al[$1] " " $5; pr[$1] = pr[$1] " " $6; g[$1] = g[$1] " " $7 }
  END {
    printf "%-8s %8s %8s %8s %9s %9s %7s %8s %8s\n", "median", "req/s", "us/req", "p99 ms", "KB alloc", "KB promo", "GC us", "x nginx", "x node"
    for (i = 1; i <= k; i++) { s = order[i]
      printf "%-8s %8d %8.1f %8.2f %9s %9s %7s %8.2f %8.2f\n", s, med(r[s]), med(u[s]), med(q[s]),
        al[s] ~ /-/ ? "-" : sprintf("%.2f", med(al[s])), pr[s] ~ /-/ ? "-" : sprintf("%.3f", med(pr[s])),
        g[s] ~ /-/ ? "-" : sprintf("%.1f", med(g[s])), med(r[s]) / med(r["nginx"]), med(r[s]) / med(r["node"]) }
  }' "$dir/cells"
