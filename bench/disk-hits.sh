#!/usr/bin/env bash
# Large cache HITs served by the disk tier (docs/decisions.md, "Disk-tier hits from their files"):
# nginx proxy_cache (2 workers, sendfile on) beside Verge (one process, a 4 MiB memory tier so
# nothing over promoteMaxSize leaves the disk tier, access log off), both in front of one nginx
# serving random 16 MiB and 4 MiB files; each cache is filled and hit once before measuring, so
# Verge's entries are ones it wrote (checked, sent with sendfile). Interleaved rounds of
# `wrk -t1 -c8 -d${D}s --latency`, medians and ratios to nginx within the run; VERGE_B=/other/checkout
# adds that build as verge-b. Every process started here is stopped by its PID.
#   npm run build && N=5 D=4 PORT_BASE=29300 [VERGE_B=/path] bench/disk-hits.sh
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
N=${N:-5}; D=${D:-4}; base=${PORT_BASE:-29300}; VERGE_B=${VERGE_B:-}
run="$(mktemp -d -t verge-disk.XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  [[ -f "$run/nginx.pid" ]] && kill "$(cat "$run/nginx.pid" 2>/dev/null)" 2>/dev/null
  sleep 0.5; rm -rf "$run"
}
trap cleanup EXIT
origin=$base; ngx=$((base + 1)); va=$((base + 2)); vb=$((base + 3))
for p in $origin $ngx $va $vb; do
  if [[ -n $(ss -ltnH "sport = :$p") ]]; then echo "port $p is in use: choose another PORT_BASE" >&2; exit 1; fi
done
mkdir -p "$run/www" "$run/ngxcache" "$run/va" "$run/vb"
# nginx workers run as nobody when started as root: they must reach the files and the cache
chmod 755 "$run"
head -c $((16 * 1024 * 1024)) /dev/urandom > "$run/www/16m.bin"
head -c $((4 * 1024 * 1024)) /dev/urandom > "$run/www/4m.bin"
chmod -R a+rX "$run/www"
cat > "$run/nginx.conf" <<CONF
worker_processes 2; pid $run/nginx.pid; error_log $run/error.log; daemon on;
events { worker_connections 4096; }
http {
  access_log off; sendfile on; keepalive_requests 1000000;
  proxy_cache_path $run/ngxcache levels=1:2 keys_zone=disk:16m max_size=2g inactive=1h use_temp_path=off;
  server { listen 127.0.0.1:$origin; root $run/www; location / { add_header Cache-Control "public, max-age=3600"; } }
  server {
    listen 127.0.0.1:$ngx;
    location / {
      proxy_pass http://127.0.0.1:$origin; proxy_cache disk; proxy_http_version 1.1;
      proxy_set_header Connection ""; proxy_cache_valid 200 1h;
    }
  }
}
CONF
nginx -c "$run/nginx.conf" -p "$run" || exit 1
config() {  # port cache-dir
  cat <<YAML
edge:
  workers: 1
  admin: { listen: "127.0.0.1:0" }
  http: { listen: ["127.0.0.1:$1"] }
  https: { listen: [] }
  cache: { memory: 4MiB, disk: { path: $2, size: 2GiB } }
log: { access: "off" }
sites:
  - name: "127.0.0.1"
    origin:
      servers: [{ host: 127.0.0.1, port: $origin }]
YAML
}
config $va "$run/va" > "$run/va.yaml"
node "$here/../dist/src/cli/main.js" serve --config "$run/va.yaml" >"$run/va.log" 2>&1 & pids+=($!)
systems=("nginx:$ngx" "verge:$va")
if [[ -n $VERGE_B ]]; then
  config $vb "$run/vb" > "$run/vb.yaml"
  node "$VERGE_B/dist/src/cli/main.js" serve --config "$run/vb.yaml" >"$run/vb.log" 2>&1 & pids+=($!)
  systems+=("verge-b:$vb")
fi
for s in "${systems[@]}"; do
  port=${s#*:}
  for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/4m.bin" && break; sleep 0.2; done
  for obj in 16m 4m; do
    want=$(md5sum < "$run/www/$obj.bin")
    for _ in 1 2; do
      got=$(curl -s "http://127.0.0.1:$port/$obj.bin" | md5sum)
      [[ $got == "$want" ]] || { echo "${s%%:*} $obj: wrong bytes" >&2; exit 1; }
    done
  done
done
out="$run/results"
for r in $(seq "$N"); do
  for s in "${systems[@]}"; do
    for obj in 16m 4m; do
      line=$(wrk -t1 -c8 -d"${D}s" --latency "http://127.0.0.1:${s#*:}/$obj.bin" |
        awk '/Requests\/sec/{r=$2} / 99%/{p=$2} END{print r, p}')
      echo "round $r  ${s%%:*} $obj  $line"
      echo "${s%%:*} $obj $line" >> "$out"
    done
  done
done
echo "medians of the rounds (req/s, p99) and req/s x nginx:"
for obj in 16m 4m; do
  ngx_med=$(awk -v o=$obj '$1=="nginx" && $2==o {print $3}' "$out" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
  for s in "${systems[@]}"; do
    n=${s%%:*}
    # wrk's p99 is "850.00us", "44.27ms" or "1.20s": in ms, then the median of each column
    rs=$(awk -v o=$obj -v n=$n '$1==n && $2==o {print $3}' "$out" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
    ps=$(awk -v o=$obj -v n=$n '$1==n && $2==o {v=$4; m=1; if (v ~ /us$/) m=0.001; else if (v ~ /ms$/) m=1; else if (v ~ /s$/) m=1000; gsub(/[a-z]+$/, "", v); print v*m}' "$out" |
      sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
    awk -v n=$n -v o=$obj -v r="$rs" -v p="$ps" -v g="$ngx_med" 'BEGIN{printf "%-8s %-4s %9.1f req/s  p99 %7.2f ms  x%.2f\n", n, o, r, p, r/g}'
  done
done
