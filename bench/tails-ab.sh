#!/usr/bin/env bash
# Concurrent A/B of the latency tail of two Verge builds (or one build with two sets of node
# options: VERGE_B=. VERGE_B_NODE_OPTS=...): both serve at once (bench/passthru.sh HOLD mode) and
# each gets its own wrk -t1 -c50 with bench/wrk-tail.lua at the same time, so both see the same
# contention on a shared machine. Per round and build: req/s, p50, p99, p99.9 and the serving
# processes' CPU per request (utime+stime from /proc); then the medians of the rounds and B/A.
#   npm run build && VERGE_B=/path/to/base bench/tails-ab.sh [size=100k] [rounds=5] [secs=4]
# VERGE_CACHE=true measures HIT cells (the object cached by the warm-up) instead of pass-through;
# VERGE_WORKERS, VERGE_NODE_OPTS, VERGE_B_NODE_OPTS as in bench/passthru.sh.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
size=${1:-100k} R=${2:-5} D=${3:-4}
: "${VERGE_B:?VERGE_B=/path/to/the/other/checkout (with its dist/ built)}"
out="$(mktemp -t verge-tails-ab.XXXXXX)"
SIZES=$size ONLY="verge verge-b" HOLD=$(((D + 2) * R + 15)) "$here/passthru.sh" >"$out" 2>&1 &
hold=$!
for _ in $(seq 200); do grep -q "^verge-b port" "$out" 2>/dev/null && break; sleep 0.5; done
grep -q "^verge-b port" "$out" || { cat "$out" >&2; exit 1; }
pa=$(awk '/^verge port/{print $3}' "$out") ka=$(awk '/^verge port/{print $5}' "$out")
pb=$(awk '/^verge-b port/{print $3}' "$out") kb=$(awk '/^verge-b port/{print $5}' "$out")
cpu() { cat "/proc/$1/stat" $(pgrep -P "$1" | sed 's|.*|/proc/&/stat|') 2>/dev/null | awk '{s += $14 + $15} END {print s}'; }
tck=$(getconf CLK_TCK)
wa=$(mktemp) wb=$(mktemp) res=$(mktemp)
both() { # secs
  wrk -t1 -c50 -d"$1s" -s "$here/wrk-tail.lua" "http://127.0.0.1:$pa/$size.bin" >"$wa" &
  local w=$!
  wrk -t1 -c50 -d"$1s" -s "$here/wrk-tail.lua" "http://127.0.0.1:$pb/$size.bin" >"$wb"
  wait "$w"
}
row() { # wrk output, cpu ticks -> "rps p50 p99 p999 us"
  local n rps
  n=$(awk '/requests in/{print $1}' "$1")
  rps=$(awk '/Requests\/sec/{printf "%.0f", $2}' "$1")
  grep '^tail' "$1" | tr '=' ' ' | awk -v rps="$rps" -v c="$2" -v n="$n" -v t="$tck" \
    '{printf "%s %s %s %s %.1f", rps, $3, $7, $9, c * 1e6 / t / n}'
}
both 2 # warm-up (and, with VERGE_CACHE=true, the object cached)
for r in $(seq "$R"); do
  ca=$(cpu "$ka") cb=$(cpu "$kb")
  both "$D"
  ca2=$(cpu "$ka") cb2=$(cpu "$kb")
  a=$(row "$wa" $((ca2 - ca))) b=$(row "$wb" $((cb2 - cb)))
  echo "$a $b" >>"$res"
  echo "round $r $size  a: $a  b: $b   (req/s p50 p99 p99.9 ms, us/req)"
done
med() { sort -n | awk '{v[NR]=$1} END{print v[int((NR+1)/2)]}'; }
line=""
for i in 1 2 3 4 5 6 7 8 9 10; do line="$line $(awk -v i=$i '{print $i}' "$res" | med)"; done
read -r a1 a2 a3 a4 a5 b1 b2 b3 b4 b5 <<<"$line"
echo "medians of $R rounds, $size: a $a1 req/s p50 $a2 p99 $a3 p99.9 $a4 ms $a5 us/req | b $b1 req/s p50 $b2 p99 $b3 p99.9 $b4 ms $b5 us/req"
awk -v a1="$a1" -v b1="$b1" -v a3="$a3" -v b3="$b3" -v a5="$a5" -v b5="$b5" \
  'BEGIN{printf "b/a: req/s %.2f  p99 %.2f  CPU per request %.2f\n", b1 / a1, b3 / a3, b5 / a5}'
for c in $(pgrep -P "$hold"); do [[ $(cat "/proc/$c/comm" 2>/dev/null) == sleep ]] && kill "$c"; done
wait "$hold" 2>/dev/null || true
rm -f "$out" "$wa" "$wb" "$res"
