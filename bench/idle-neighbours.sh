#!/usr/bin/env bash
# Does an idle Verge cost its neighbours tail latency? nginx proxy_pass and the bare relay
# (bench/passthru.sh's, 1 KiB, wrk -t1 -c50 -d4s --latency) measured with no neighbours, with six
# idle `verge serve` edges of this checkout, and with six of another build ($VERGE_B, a checkout
# with dist/ built), the three conditions rotated round by round; prints each cell's p99 in ms,
# then every idle edge's CPU time and wake-ups (voluntary context switches) over 30 s.
#   npm run build && VERGE_B=/work/wt/base R=6 bench/idle-neighbours.sh
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
R=${R:-4}
: "${VERGE_B:?VERGE_B=/path/to/another/checkout (built)}"
dir="$(mktemp -d -t verge-idle.XXXXXX)"
npids=()
stop_n() { # a bare `wait` would wait for the held servers too
  ((${#npids[@]})) || return 0
  for p in "${npids[@]}"; do kill "$p" 2>/dev/null; done
  wait "${npids[@]}" 2>/dev/null
  npids=()
}
trap 'stop_n; kill "$hold" 2>/dev/null; wait "$hold" 2>/dev/null; rm -rf "$dir"' EXIT
HOLD=3600 ONLY="nginx netpass" "$here/passthru.sh" >"$dir/hold.log" 2>&1 &
hold=$!
for _ in $(seq 200); do grep -q "^netpass port" "$dir/hold.log" && break; sleep 0.5; done
ngx=$(awk '/^nginx port/{print $3}' "$dir/hold.log")
net=$(awk '/^netpass port/{print $3}' "$dir/hold.log")
[[ -n "$ngx" && -n "$net" ]] || { cat "$dir/hold.log" >&2; exit 1; }
for i in 1 2 3 4 5 6; do
  cat >"$dir/c$i.yaml" <<YAML
edge:
  workers: 1
  admin: { listen: "127.0.0.1:0" }
  http: { listen: ["127.0.0.1:0"] }
  https: { listen: [] }
log: { access: "off" }
sites:
  - name: "127.0.0.1"
    origin:
      servers: [{ host: 127.0.0.1, port: 9 }]
YAML
done
start_n() { # checkout
  for i in 1 2 3 4 5 6; do node "$1/dist/src/cli/main.js" serve --config "$dir/c$i.yaml" >/dev/null 2>&1 & npids+=($!); done
  sleep 6
}
p99() { wrk -t1 -c50 -d4s --latency "$1" | awk '$1 == "99%" { v = $2
  if (v ~ /us$/) { sub(/us/, "", v); v /= 1000 } else if (v ~ /ms$/) sub(/ms/, "", v); else { sub(/s/, "", v); v *= 1000 }
  print v }'; }
for u in "$ngx" "$net"; do wrk -t1 -c50 -d2s "http://127.0.0.1:$u/1k.bin" >/dev/null; done
conds=(none this other)
for r in $(seq "$R"); do
  for k in 0 1 2; do
    c=${conds[$(((k + r) % 3))]}
    case $c in this) start_n "$here/.." ;; other) start_n "$VERGE_B" ;; none) sleep 6 ;; esac
    echo "round $r $c nginx_p99_ms $(p99 "http://127.0.0.1:$ngx/1k.bin") relay_p99_ms $(p99 "http://127.0.0.1:$net/1k.bin")"
    stop_n
  done
done
# the idle edges' own cost: CPU ticks and wake-ups of each serving process over 30 s
vcs() { cat /proc/"$1"/task/*/status | awk '/^voluntary_ctxt_switches/ { s += $2 } END { print s }'; }
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
start_n "$here/.."
start_n "$VERGE_B"
kids=()
for p in "${npids[@]}"; do kids+=("$(pgrep -P "$p" | head -1)"); done
declare -A t0 v0
for k in "${kids[@]}"; do t0[$k]=$(ticks "$k"); v0[$k]=$(vcs "$k"); done
sleep 30
tck=$(getconf CLK_TCK)
i=0
for k in "${kids[@]}"; do
  i=$((i + 1))
  echo "idle $([[ $i -le 6 ]] && echo this || echo other) cpu_ms_30s $((($(ticks "$k") - t0[$k]) * 1000 / tck)) wakeups_30s $(($(vcs "$k") - v0[$k]))"
done
