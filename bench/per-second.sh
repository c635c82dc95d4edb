#!/usr/bin/env bash
# Per-second CPU cost of one serving process under a steady load: what a 4-second harness cell
# averages away. Runs `wrk -t1 -c50` against URL for SECS seconds and, with `perf stat -I 1000` on
# PID (all its threads), prints one line a second: requests answered (counted as the process's
# syscalls named by EV, one per answer: `writev` for an HTTP/1.1 answer of head and body), CPU
# microseconds per answer, and the process's user/system split from /proc. CALIB=1 also runs a
# low-duty calibration beside it (bench/calib-loop.ts: a fixed register loop and a fixed walk over
# 32 MiB, 10 times a second), whose CPU time per loop says whether the machine itself got slower
# in that second.
#   HOLD=600 ONLY=verge bench/passthru.sh &   # prints the serving process's pid ("children" of verge)
#   bench/per-second.sh http://127.0.0.1:27003/1k.bin PID 30
# WRKPIN="taskset -c 1" runs wrk pinned. Needs perf (linux-perf) and wrk.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
url=$1 pid=$2 secs=${3:-30}
ev=${EV:-syscalls:sys_enter_writev}
out="$(mktemp -d -t verge-persec.XXXXXX)"
trap 'rm -rf "$out"' EXIT
if [[ -n "${CALIB:-}" ]]; then node "$here/../dist/bench/calib-loop.js" $((secs + 1)) >"$out/calib" & fi
# shellcheck disable=SC2086 # WRKPIN is a command prefix
${WRKPIN:-} wrk -t1 -c50 -d$((secs + 2))s "$url" >"$out/wrk" &
sleep 1
(for _ in $(seq $((secs + 1))); do awk '{print $14, $15}' "/proc/$pid/stat"; sleep 1; done) >"$out/ticks" &
perf stat -I 1000 -x, -e "task-clock,$ev" -p "$pid" sleep "$secs" 2>"$out/perf"
wait
awk -F, -v ev="$ev" '$4 == "task-clock" {t = $2} $4 == ev {printf "%.0f %.1f\n", $2, ($2 > 0 ? t * 1000 / $2 : 0)}' \
  "$out/perf" | head -n "$secs" >"$out/rate"
awk 'NR > 1 {u = $1 - pu; s = $2 - ps; printf "%d%%\n", (u + s > 0 ? 100 * u / (u + s) : 0)} {pu = $1; ps = $2}' \
  "$out/ticks" >"$out/split"
[[ -f "$out/calib" ]] && tr '|' '\n' <"$out/calib" | head -n "$secs" >"$out/calib.lines" || : >"$out/calib.lines"
echo "second  answers/s  CPU us/answer  user share  calibration us (register/memory)"
paste -d' ' "$out/rate" "$out/split" "$out/calib.lines" |
  awk '{printf "%6d %10s %14s %11s  %s\n", NR, $1, $2, $3, $4}'
