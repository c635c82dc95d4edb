#!/usr/bin/env bash
# Pass-through (cache off) benchmark, self-contained and short enough for a shared machine:
# an nginx origin serving static 1 KiB and 100 KiB files (the shared harness's origin config:
# 2 workers, sendfile, tcp_nopush, tcp_nodelay), and in front of it
#   nginx   nginx proxy_pass, no cache, keep-alive upstream (the shared harness's proxy)
#   min     bench/min-proxy.ts (node:http + one undici Pool: the floor of a Node.js proxy)
#   netpass bench/net-proxy.ts (a bare TCP relay, one origin connection per visitor connection,
#           nothing parsed: the least CPU a Node.js process spends per relayed exchange)
#   verge   Verge with cache.enabled: false (this checkout's dist/)
#   verge-b optional: a second Verge build to compare with (VERGE_B=/path/to/other/checkout)
# wrk -t1 -c50 -d${D}s on 127.0.0.1, the cells interleaved round by round (every system once per
# size in each round), N rounds; prints each cell and then the medians with the ratios of the
# same run, plus each Node process's CPU time per request (utime+stime from /proc).
#   npm run build && bench/passthru.sh              (N=3 D=5; ONLY='verge min' picks systems)
# HOLD=secs: start everything, print ports and pids, wait, stop (for strace or perf by hand).
# VERGE_WORKERS: edge.workers (default 1); VERGE_EXTRA: YAML lines added under edge:; VERGE_NODE_OPTS, MIN_NODE_OPTS: node options (--cpu-prof);
# VERGE_B_NODE_OPTS: verge-b's node options (default VERGE_NODE_OPTS), so VERGE_B=. compares options.
# VERGE_CACHE=true: the Verge cells cache (HIT cells after the warm-up) instead of passing through.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
N=${N:-3}
D=${D:-5}
# below the ephemeral range (32768-60999), where outgoing connections would collide
BASE=${PORT_BASE:-$((21000 + RANDOM % 9000))}
P_ORIGIN=$BASE P_NGX=$((BASE + 1)) P_MIN=$((BASE + 2)) P_VERGE=$((BASE + 3)) P_VERGE_B=$((BASE + 4)) P_NETPASS=$((BASE + 8))
ONLY=${ONLY:-nginx min verge${VERGE_B:+ verge-b}}
SIZES=${SIZES:-1k 100k}
dir="$(mktemp -d -t verge-passthru.XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
chmod 755 "$dir" # nginx workers run as an unprivileged user when started by root
mkdir -p "$dir/www" "$dir/origin" "$dir/proxy"
head -c 1024 /dev/urandom >"$dir/www/1k.bin"
head -c 102400 /dev/urandom >"$dir/www/100k.bin"
common='events { worker_connections 4096; }'
temps() { for t in client_body proxy fastcgi uwsgi scgi; do echo "${t}_temp_path $1/tmp;"; done; }
cat >"$dir/origin/nginx.conf" <<EOF
worker_processes 2; pid $dir/origin/nginx.pid; error_log $dir/origin/error.log warn; $common
http { access_log off; sendfile on; tcp_nopush on; tcp_nodelay on; keepalive_timeout 65s;
  keepalive_requests 1000000; open_file_cache max=1000 inactive=60s; etag on;
  types { application/octet-stream bin; } default_type application/octet-stream; $(temps "$dir/origin")
  server { listen 127.0.0.1:$P_ORIGIN backlog=4096; root $dir/www;
    location / { add_header Cache-Control "public, max-age=3600" always; } } }
EOF
cat >"$dir/proxy/nginx.conf" <<EOF
worker_processes 2; pid $dir/proxy/nginx.pid; error_log $dir/proxy/error.log warn; $common
http { access_log off; $(temps "$dir/proxy")
  upstream origin { server 127.0.0.1:$P_ORIGIN; keepalive 64; }
  server { listen 127.0.0.1:$P_NGX backlog=4096;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
EOF
mkdir -p "$dir/origin/tmp" "$dir/proxy/tmp"
verge_config() { # port
  cat <<YAML
edge:
  workers: ${VERGE_WORKERS:-1}
  admin: { listen: "127.0.0.1:0" }
  http: { listen: ["127.0.0.1:$1"] }
  https: { listen: [] }
${VERGE_EXTRA:-}
log: { access: "off" }
sites:
  - name: "127.0.0.1"
    aliases: [localhost]
    origin:
      servers: [{ host: 127.0.0.1, port: $P_ORIGIN }]
    cache: { enabled: ${VERGE_CACHE:-false} }
YAML
}
/usr/sbin/nginx -p "$dir/origin" -c "$dir/origin/nginx.conf" -e "$dir/origin/error.log" -g 'daemon off;' &
pids+=($!)
declare -A port pid
has() { [[ " $ONLY " == *" $1 "* ]]; }
if has nginx; then
  /usr/sbin/nginx -p "$dir/proxy" -c "$dir/proxy/nginx.conf" -e "$dir/proxy/error.log" -g 'daemon off;' &
  pids+=($!) port[nginx]=$P_NGX pid[nginx]=$!
fi
if has min; then
  ORIGIN_PORT=$P_ORIGIN MIN_PROXY_PORT=$P_MIN node ${MIN_NODE_OPTS:-} "$here/../dist/bench/min-proxy.js" &
  pids+=($!) port[min]=$P_MIN pid[min]=$!
fi
if has netpass; then
  ORIGIN_PORT=$P_ORIGIN PORT=$P_NETPASS node ${MIN_NODE_OPTS:-} "$here/../dist/bench/net-proxy.js" &
  pids+=($!) port[netpass]=$P_NETPASS pid[netpass]=$!
fi
if has verge; then
  verge_config "$P_VERGE" >"$dir/verge.yaml"
  node ${VERGE_NODE_OPTS:-} "$here/../dist/src/cli/main.js" serve --config "$dir/verge.yaml" >"$dir/verge.log" 2>&1 &
  pids+=($!) port[verge]=$P_VERGE pid[verge]=$!
fi
if has verge-b; then
  verge_config "$P_VERGE_B" >"$dir/verge-b.yaml"
  node ${VERGE_B_NODE_OPTS-${VERGE_NODE_OPTS:-}} "$VERGE_B/dist/src/cli/main.js" serve --config "$dir/verge-b.yaml" >"$dir/verge-b.log" 2>&1 &
  pids+=($!) port[verge-b]=$P_VERGE_B pid[verge-b]=$!
fi
for s in $ONLY; do
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:${port[$s]}/1k.bin" && break; sleep 0.1; done
  curl -sf -o /dev/null "http://127.0.0.1:${port[$s]}/100k.bin" || { echo "$s is not answering" >&2; cat "$dir"/*/error.log "$dir"/*.log >&2; exit 1; }
done
# CPU ticks of a process and its children (Verge serves from a worker forked by its primary)
cpu() { cat "/proc/$1/stat" $(pgrep -P "$1" | sed 's|.*|/proc/&/stat|') 2>/dev/null | awk '{s += $14 + $15} END {print s}'; }
tck=$(getconf CLK_TCK)
if [[ -n "${HOLD:-}" ]]; then # keep the servers up for HOLD seconds (strace, perf), measure nothing
  echo "dir $dir"
  for s in $ONLY; do echo "$s port ${port[$s]} pid ${pid[$s]} children $(pgrep -P "${pid[$s]}" | tr '\n' ' ')"; done
  sleep "$HOLD"
  exit 0
fi
# warm-up (JIT, connections), not counted
for s in $ONLY; do for obj in $SIZES; do wrk -t1 -c50 -d2s "http://127.0.0.1:${port[$s]}/$obj.bin" >/dev/null; done; done
res="$dir/results"
: >"$res"
for r in $(seq "$N"); do
  for obj in $SIZES; do
    for s in $ONLY; do
      c0=$(cpu "${pid[$s]}")
      out=$(wrk -t1 -c50 -d"${D}s" --latency "http://127.0.0.1:${port[$s]}/$obj.bin")
      c1=$(cpu "${pid[$s]}")
      n=$(awk '/requests in/{print $1}' <<<"$out")
      rps=$(awk '/Requests\/sec/{printf "%.0f", $2}' <<<"$out")
      p99=$(awk '$1=="99%"{v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) sub(/ms/,"",v); else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; printf "%.2f", v}' <<<"$out")
      errs=$(awk '/Non-2xx|Socket errors/{printf "%s ", $0}' <<<"$out")
      # nginx runs 2 workers under a master: its master's CPU says nothing, leave it out
      us=$([[ $s == nginx ]] && echo - || awk -v d=$((c1 - c0)) -v n="$n" -v t="$tck" 'BEGIN{printf "%.1f", d * 1e6 / t / n}')
      echo "round $r $obj $s ${rps} req/s p99 ${p99} ms ${us} us/req ${errs}"
      echo "$obj $s $rps $p99 $us" >>"$res"
    done
  done
done
echo "medians of $N rounds (wrk -t1 -c50 -d${D}s; shared machine: compare within this run only)"
for obj in $SIZES; do
  for s in $ONLY; do
    awk -v o="$obj" -v s="$s" '$1==o && $2==s' "$res" | sort -n -k3 | awk '{r[NR]=$3} END{print r[int((NR+1)/2)]}' >"$dir/m_rps"
    rps=$(cat "$dir/m_rps")
    p99=$(awk -v o="$obj" -v s="$s" '$1==o && $2==s{print $4}' "$res" | sort -n | awk '{v[NR]=$1} END{print v[int((NR+1)/2)]}')
    us=$(awk -v o="$obj" -v s="$s" '$1==o && $2==s{print $5}' "$res" | sort -n | awk '{v[NR]=$1} END{print v[int((NR+1)/2)]}')
    echo "$obj $s $rps $p99 $us" >>"$dir/medians"
  done
done
awk '{m[$1" "$2]=$3} {rows[NR]=$0}
  END { for (i = 1; i <= NR; i++) { split(rows[i], f, " ");
    line = sprintf("%-5s %-8s %7d req/s  p99 %8s ms  %6s us/req", f[1], f[2], f[3], f[4], f[5]);
    if (m[f[1]" min"] > 0) line = line sprintf("  x min %.2f", f[3] / m[f[1]" min"]);
    if (m[f[1]" nginx"] > 0) line = line sprintf("  x nginx %.2f", f[3] / m[f[1]" nginx"]);
    print line } }' "$dir/medians"
