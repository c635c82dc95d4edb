#!/usr/bin/env bash
# Concurrent A/B of two Verge builds on the pass-through path (cache off): both serve at the same
# time and each gets its own wrk -t1 -c50 at the same time, so both see the same contention on a
# shared machine (sequential cells there move by 2x from one to the next). Per round and build:
# requests, CPU per request of the serving worker (utime+stime from /proc), and from V8's
# --trace-gc-nvp lines: KB allocated, KB promoted to the old generation and GC pause per request.
#   npm run build && VERGE_B=/path/to/other/checkout bench/passthru-ab.sh [size=1k] [rounds=6] [secs=5]
# Uses bench/passthru.sh (HOLD mode) for the origin and both edges.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
size=${1:-1k} R=${2:-6} D=${3:-5}
: "${VERGE_B:?VERGE_B=/path/to/the/other/checkout (with its dist/ built)}"
out="$(mktemp -t verge-ab.XXXXXX)"
SIZES=$size ONLY="verge verge-b" HOLD=$(((D + 1) * R + 8)) VERGE_NODE_OPTS="--trace-gc-nvp" \
  "$here/passthru.sh" >"$out" 2>&1 &
hold=$!
for _ in $(seq 120); do grep -q "^verge-b port" "$out" 2>/dev/null && break; sleep 0.5; done
grep -q "^verge-b port" "$out" || { cat "$out" >&2; exit 1; }
d=$(awk '/^dir/{print $2}' "$out")
pa=$(awk '/^verge port/{print $3}' "$out") ka=$(awk '/^verge port/{print $7}' "$out")
pb=$(awk '/^verge-b port/{print $3}' "$out") kb=$(awk '/^verge-b port/{print $7}' "$out")
gc() { # requests: allocated, promoted and pause per request from --trace-gc-nvp lines on stdin
  grep -o "gc=[a-z]*\|pause=[0-9.]*\|allocated=[0-9]*\|promoted=[0-9]*" | awk -F= -v n="$1" \
    '$1=="pause"{p=$2} $1=="gc"{pt+=p} $1=="allocated"{a+=$2} $1=="promoted"{pr+=$2}
     END{printf "alloc %.1f KB/req promoted %.1f KB/req gc %.1f us/req", a/n/1000, pr/n/1000, pt*1000/n}'
}
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tck=$(getconf CLK_TCK)
both() { # secs: wrk on both at once, outputs in $d/wa $d/wb
  wrk -t1 -c50 -d"$1s" "http://127.0.0.1:$pa/$size.bin" >"$d/wa" &
  local w=$!
  wrk -t1 -c50 -d"$1s" "http://127.0.0.1:$pb/$size.bin" >"$d/wb"
  wait "$w"
}
both 2 # warm-up
for r in $(seq "$R"); do
  la=$(wc -l <"$d/verge.log") lb=$(wc -l <"$d/verge-b.log") ca=$(cpu "$ka") cb=$(cpu "$kb")
  both "$D"
  sleep 0.3
  ca2=$(cpu "$ka") cb2=$(cpu "$kb")
  na=$(awk '/requests in/{print $1}' "$d/wa") nb=$(awk '/requests in/{print $1}' "$d/wb")
  ua=$(awk -v c=$((ca2 - ca)) -v n="$na" -v t="$tck" 'BEGIN{printf "%.0f", c * 1e6 / t / n}')
  ub=$(awk -v c=$((cb2 - cb)) -v n="$nb" -v t="$tck" 'BEGIN{printf "%.0f", c * 1e6 / t / n}')
  echo "round $r $size a $na req $ua us/req $(tail -n +$((la + 1)) "$d/verge.log" | gc "$na")" \
    "| b $nb req $ub us/req $(tail -n +$((lb + 1)) "$d/verge-b.log" | gc "$nb")"
done
wait "$hold"
rm -f "$out"
