#!/usr/bin/env bash
# 1 KiB cache HITs, HTTP/1.1 and HTTPS/1.1, nginx proxy_cache (the shared harness's own
# ../shared/bench/conf/edge.nginx.conf, 2 workers) beside Verge (one process, access log off),
# both in front of dist/bench/hit-ceiling.js; interleaved rounds of `wrk -t1 -c50 -d${D}s`, medians
# and Verge/nginx ratios within the run (on a shared machine only those mean anything). A short
# stand-in for the lead's run of ../shared/bench/run.sh, which this does not replace. Every process
# started here is stopped by its PID. Each cell also reports the server's CPU per request (utime +
# stime of nginx's master and workers, of Verge's supervisor and serving process, from /proc).
# TLS_ONLY=1: the HTTPS cells only. VERGE_B=/other/checkout: that build's HTTPS port as one more
# cell (verge-b-tls), for an A/B beside nginx. The order of the cells rotates each round.
#   N=3 D=5 PORT_BASE=38700 [TLS_ONLY=1] [VERGE_B=/path] bench/hit-vs-nginx.sh
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
conf="$here/../../shared/bench/conf/edge.nginx.conf"
[[ -f "$conf" ]] || conf=/work/shared/bench/conf/edge.nginx.conf
N=${N:-3}; D=${D:-5}; base=${PORT_BASE:-38700}; VERGE_B=${VERGE_B:-}
run="$(mktemp -d -t verge-ngx.XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  [[ -f "$run/edge/nginx.pid" ]] && kill "$(cat "$run/edge/nginx.pid" 2>/dev/null)" 2>/dev/null
  sleep 0.5; rm -rf "$run"
}
trap cleanup EXIT
mkdir -p "$run/edge/tmp" "$run/tls" "$run/conf"
# nginx workers run as nobody when started as root: they must reach the cache directory
chmod 755 "$run"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$run/tls/key.pem" \
  -out "$run/tls/cert.pem" -days 2 -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" 2>/dev/null
origin=$((base + 80)); ngx=$((base + 81)); ngxtls=$((base + 43)); vh=$((base + 1)); vs=$((base + 2))
sed -e "s#@RUN@#$run#g" -e "s#@P_ORIGIN@#$origin#g" -e "s#@P_NGX@#$ngx#g" -e "s#@P_TLS@#$ngxtls#g" \
  -e "s#@P_PROXY@#$((base + 85))#g" -e "s#@P_MISS@#$((base + 86))#g" "$conf" > "$run/conf/edge.nginx.conf"
PORT=$origin node "$here/../dist/bench/hit-ceiling.js" & pids+=($!)
nginx -p "$run/edge" -e "$run/edge/error.log" -c "$run/conf/edge.nginx.conf" -g 'daemon off;' & pids+=($!)
cat > "$run/v.yaml" <<YAML
edge:
  workers: 1
  admin: { listen: "127.0.0.1:0" }
  http: { listen: ["127.0.0.1:$vh"] }
  https: { listen: ["127.0.0.1:$vs"], defaultSite: "127.0.0.1" }
log: { access: "off" }
sites:
  - name: "127.0.0.1"
    tls: { cert: "$run/tls/cert.pem", key: "$run/tls/key.pem" }
    origin:
      servers: [{ host: 127.0.0.1, port: $origin }]
YAML
node "$here/../dist/src/cli/main.js" serve --config "$run/v.yaml" >"$run/v.log" 2>&1 & pids+=($!)
vpid=$!; npid=${pids[1]}
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$vh/1k.bin" && break; sleep 0.2; done
# cells: name url pid (the process whose CPU, with its children's, is the cell's)
cells=("nginx http://127.0.0.1:$ngx/1k.bin $npid" "verge http://127.0.0.1:$vh/1k.bin $vpid"
  "nginx-tls https://127.0.0.1:$ngxtls/1k.bin $npid" "verge-tls https://127.0.0.1:$vs/1k.bin $vpid")
[[ -n "${TLS_ONLY:-}" ]] && cells=("${cells[@]:2}")
if [[ -n $VERGE_B ]]; then
  sed -e "s#127.0.0.1:$vh#127.0.0.1:$((base + 3))#; s#127.0.0.1:$vs#127.0.0.1:$((base + 4))#" "$run/v.yaml" >"$run/vb.yaml"
  node "$VERGE_B/dist/src/cli/main.js" serve --config "$run/vb.yaml" >"$run/vb.log" 2>&1 & pids+=($!)
  cells+=("verge-b-tls https://127.0.0.1:$((base + 4))/1k.bin $!")
  for _ in $(seq 100); do curl -sk -o /dev/null "https://127.0.0.1:$((base + 4))/1k.bin" && break; sleep 0.2; done
fi
cpu() { local p; for p in "$1" $(pgrep -P "$1"); do awk '{print $14 + $15}' "/proc/$p/stat"; done | awk '{t += $1} END {print t}'; }
tck=$(getconf CLK_TCK)
echo "load average $(cut -d' ' -f1-3 /proc/loadavg)"
for c in "${cells[@]}"; do
  read -r _ url _ <<<"$c"
  for _ in 1 2; do curl -sk -o /dev/null "$url"; done
  wrk -t1 -c50 -d1s "$url" >/dev/null
done
for i in $(seq "$N"); do
  printf 'round %s' "$i"
  k=${#cells[@]}
  for ((j = 0; j < k; j++)); do
    read -r name url pid <<<"${cells[$(((i - 1 + j) % k))]}"
    c0=$(cpu "$pid")
    out=$(timeout $((D + 20)) wrk -t1 -c50 -d"${D}s" --latency "$url")
    c1=$(cpu "$pid")
    [[ -n "${DEBUG:-}" ]] && echo "$out"
    rps=$(awk '/Requests\/sec/{printf "%.0f", $2}' <<<"$out")
    n=$(awk '/requests in/{print $1}' <<<"$out")
    us=$(awk -v d=$((c1 - c0)) -v n="$n" -v t="$tck" 'BEGIN{printf "%.1f", d * 1e6 / t / n}')
    p99=$(awk '$1=="99%"{print $2}' <<<"$out")
    echo "$name $rps $p99 $us" >>"$run/cells"
    printf '  %-11s %6s req/s %5s us/req p99 %s' "$name" "$rps" "$us" "$p99"
  done
  echo
done
echo "load average $(cut -d' ' -f1-3 /proc/loadavg)"
awk "$(<"$here/median.awk")"'
  { r[$1] = r[$1] " " $2; u[$1] = u[$1] " " $4 }
  END {
    for (k in r) printf "%-11s median %6d req/s %5.1f us/req\n", k, med(r[k]), med(u[k])
    if ("nginx" in r) printf "verge/nginx HTTP/1.1: req/s %.2f\n", med(r["verge"]) / med(r["nginx"])
    printf "verge/nginx HTTPS/1.1: req/s %.2f, CPU/req %.2f\n", med(r["verge-tls"]) / med(r["nginx-tls"]), med(u["verge-tls"]) / med(u["nginx-tls"])
    if ("verge-b-tls" in r) printf "verge-b/nginx HTTPS/1.1: req/s %.2f, CPU/req %.2f; verge/verge-b CPU/req %.2f\n", med(r["verge-b-tls"]) / med(r["nginx-tls"]), med(u["verge-b-tls"]) / med(u["nginx-tls"]), med(u["verge-tls"]) / med(u["verge-b-tls"])
  }' "$run/cells"
