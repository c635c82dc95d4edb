#!/usr/bin/env bash
# Interleaved wrk runs of cache HITs of /1k.bin on up to three servers already running, round by
# round (A B C, A B C, ...), each cell with the server's CPU time per request (utime+stime from
# /proc, so it needs the server's PID). Ratios are only meaningful within one round on a noisy
# machine. Example (docs/benchmarks.md, 2026-11-28 16:00):
#   A="28302:$PID_BEFORE" B="28300:$PID_AFTER" C="28391:$PID_CEILING" N=5 D=5 bench/hit-ab.sh
# where 28391 is dist/bench/hit-ceiling.js. Prints one line per round.
set -euo pipefail
N=${N:-3}
D=${D:-5}
cells=()
for v in A B C; do [[ -n "${!v:-}" ]] && cells+=("${!v}"); done
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
tck=$(getconf CLK_TCK)
for i in $(seq "$N"); do
  line="round $i"
  for c in "${cells[@]}"; do
    port=${c%%:*}
    pid=${c##*:}
    c0=$(cpu "$pid")
    out=$(wrk -t1 -c50 -d"${D}s" "http://127.0.0.1:$port/1k.bin")
    c1=$(cpu "$pid")
    n=$(awk '/requests in/{print $1}' <<<"$out")
    rps=$(awk '/Requests\/sec/{printf "%.0f", $2}' <<<"$out")
    us=$(awk -v d=$((c1 - c0)) -v n="$n" -v t="$tck" 'BEGIN{printf "%.1f", d * 1e6 / t / n}')
    line+="  :$port ${rps} req/s ${us} us/req"
  done
  echo "$line"
done
