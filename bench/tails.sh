#!/usr/bin/env bash
# Where the latency tail comes from, per cell (issue 10: p99 within 1.5x of nginx's). Starts the
# pass-through set of bench/passthru.sh (HOLD mode: nginx origin, nginx proxy_pass, min-proxy,
# Verge with cache off, optional Verge-b) plus the bare `net` loop answering the same size from
# memory (bench/net-ceiling.ts: no HTTP machinery, one event loop: what queueing alone costs) and
# Verge with its cache on (`hit`: the object cached by the warm-up). Every Node process runs with
# bench/loop-delay.ts preloaded (event-loop delay and GC pauses per second on stderr). Then, per
# round, size and system (order rotated each round): wrk -t1 -c50 -d${D}s with bench/wrk-tail.lua,
# printing p50/p90/p99/p99.9/max, the percentile curve p90..p99.9 and, from the serving process's
# lines during that run, the worst second's loop-delay p99 and max, GC count, total and longest
# pause, and CPU per request.
#   npm run build && SIZES="1k 100k" N=5 D=4 bench/tails.sh
# ONLY picks systems (default "nginx net min verge hit", plus verge-b with VERGE_B; `netpass`,
# bench/net-proxy.ts, the bare TCP relay, on request); VERGE_WORKERS
# as in passthru.sh (applies to verge, verge-b and hit); VERGE_NODE_OPTS adds node options.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
N=${N:-3}
D=${D:-4}
SIZES=${SIZES:-1k 100k}
ONLY=${ONLY:-nginx net min verge hit${VERGE_B:+ verge-b}}
BASE=${PORT_BASE:-$((21000 + RANDOM % 9000))}
P_NET=$((BASE + 5)) P_NET100=$((BASE + 6)) P_HIT=$((BASE + 7))
pre="--import $here/../dist/bench/loop-delay.js"
has() { [[ " $ONLY " == *" $1 "* ]]; }
pt=""
for s in nginx min netpass verge verge-b; do has "$s" && pt="$pt $s"; done
out="$(mktemp -t verge-tails.XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # passthru.sh stops its servers once its `sleep $HOLD` ends: end that sleep now
  for c in $(pgrep -P "$hold" 2>/dev/null); do
    [[ $(cat "/proc/$c/comm" 2>/dev/null) == sleep ]] && kill "$c" 2>/dev/null
  done
  wait 2>/dev/null || true
  rm -f "$out"
}
trap cleanup EXIT
# the pass-through set (and the origin, always), held for the whole run
hold=0
PORT_BASE=$BASE ONLY="${pt# }" SIZES="$SIZES" HOLD=3600 \
  VERGE_NODE_OPTS="$pre ${VERGE_NODE_OPTS:-}" MIN_NODE_OPTS="$pre" "$here/passthru.sh" >"$out" 2>&1 &
hold=$!
last=${pt##* }
for _ in $(seq 300); do grep -q "^$last port" "$out" 2>/dev/null && break; sleep 0.3; done
grep -q "^$last port" "$out" || { cat "$out" >&2; exit 1; }
d=$(awk '/^dir/{print $2}' "$out")
declare -A port pid log
for s in $pt; do
  port[$s]=$(awk -v s="$s" '$1==s && $2=="port"{print $3}' "$out")
  pid[$s]=$(awk -v s="$s" '$1==s && $2=="port"{print $5}' "$out")
  log[$s]=$out
done
[[ -n "${pid[verge]:-}" ]] && log[verge]=$d/verge.log
[[ -n "${pid[verge-b]:-}" ]] && log[verge-b]=$d/verge-b.log
if has net; then
  for obj in $SIZES; do
    bytes=$([[ $obj == 100k ]] && echo 102400 || echo 1024)
    p=$([[ $obj == 100k ]] && echo "$P_NET100" || echo "$P_NET")
    PORT=$p BODY_BYTES=$bytes node $pre "$here/../dist/bench/net-ceiling.js" 2>>"$d/net-$obj.log" &
    pids+=($!) port[net-$obj]=$p pid[net-$obj]=$! log[net-$obj]=$d/net-$obj.log
  done
fi
if has hit; then
  cat >"$d/hit.yaml" <<YAML
edge:
  workers: ${VERGE_WORKERS:-1}
  admin: { listen: "127.0.0.1:0" }
  http: { listen: ["127.0.0.1:$P_HIT"] }
  https: { listen: [] }
log: { access: "off" }
sites:
  - name: "127.0.0.1"
    aliases: [localhost]
    origin:
      servers: [{ host: 127.0.0.1, port: $BASE }]
YAML
  node $pre ${VERGE_NODE_OPTS:-} "$here/../dist/src/cli/main.js" serve --config "$d/hit.yaml" >"$d/hit.log" 2>&1 &
  pids+=($!) port[hit]=$P_HIT pid[hit]=$! log[hit]=$d/hit.log
fi
url() { # system size
  if [[ $1 == net ]]; then echo "http://127.0.0.1:${port[net-$2]}/"; else echo "http://127.0.0.1:${port[$1]}/$2.bin"; fi
}
key() { [[ $1 == net ]] && echo "net-$2" || echo "$1"; }
for s in $ONLY; do
  for obj in $SIZES; do
    for _ in $(seq 100); do curl -sf -o /dev/null "$(url "$s" "$obj")" && break; sleep 0.1; done
    curl -sf -o /dev/null "$(url "$s" "$obj")" || { echo "$s is not answering $obj" >&2; exit 1; }
  done
done
cpu() { cat "/proc/$1/stat" $(pgrep -P "$1" | sed 's|.*|/proc/&/stat|') 2>/dev/null | awk '{s += $14 + $15} END {print s}'; }
tck=$(getconf CLK_TCK)
for s in $ONLY; do for obj in $SIZES; do wrk -t1 -c50 -d2s "$(url "$s" "$obj")" >/dev/null; done; done
read -r -a order <<<"$ONLY"
for r in $(seq "$N"); do
  for obj in $SIZES; do
    for i in "${!order[@]}"; do
      s=${order[$(((i + r) % ${#order[@]}))]}
      k=$(key "$s" "$obj")
      l0=$(wc -l <"${log[$k]}")
      c0=$(cpu "${pid[$k]}")
      o=$(wrk -t1 -c50 -d"${D}s" -s "$here/wrk-tail.lua" "$(url "$s" "$obj")")
      c1=$(cpu "${pid[$k]}")
      n=$(awk '/requests in/{print $1}' <<<"$o")
      rps=$(awk '/Requests\/sec/{printf "%.0f", $2}' <<<"$o")
      us=$([[ $s == nginx ]] && echo - || awk -v c=$((c1 - c0)) -v n="$n" -v t="$tck" 'BEGIN{printf "%.1f", c * 1e6 / t / n}')
      # the serving processes' loop-delay lines written during this run (the process and its
      # workers; the worst second is shown); nginx has none
      lp=$(echo "${pid[$k]}" $(pgrep -P "${pid[$k]}") | tr ' ' '|' | sed 's/|/\\|/g')
      ld=$(tail -n +$((l0 + 1)) "${log[$k]}" | { grep "^loopdelay pid=\($lp\) " || true; } | tr '=' ' ' | awk '
        { for (i = 2; i < NF; i += 2) v[$i] = $(i + 1)
          if (v["p99"] + 0 > p99) p99 = v["p99"] + 0; if (v["max"] + 0 > mx) mx = v["max"] + 0
          gc += v["gc"]; gcms += v["gcms"]; if (v["gcmax"] + 0 > gcmax) gcmax = v["gcmax"] + 0
          minor += v["minor"]; major += v["major"] }
        END { printf "loop p99 %.1f max %.1f ms, gc %d pauses (%d minor, %d major) %.0f ms, longest %.1f", p99, mx, gc, minor, major, gcms, gcmax }')
      [[ $s == nginx ]] && ld="no event loop"
      echo "round $r $obj $s $rps req/s $us us/req | $(grep '^tail' <<<"$o" | cut -d' ' -f2-) | $ld"
      echo "         curve p90..p99.9: $(grep '^curve' <<<"$o" | cut -d' ' -f2-)"
    done
  done
done
