#!/usr/bin/env bash
# Concurrent A/B of two Verge builds on the 1 KiB HIT (the fast path): both serve at the same time,
# one worker each, access log off, and each gets its own `wrk -t1 -c50` at the same time, so both
# see the same contention on a shared machine (sequential cells there move by 2x from one to the
# next: docs/benchmarks.md). Per round: each build's req/s, p99 and CPU per request of its serving
# process (utime+stime from /proc), and the ratio this build / VERGE_B; then the medians. Both run
# with --trace-gc-nvp: bytes allocated and promoted per request (which load does not move) and
# GC pause per request.
#   npm run build && VERGE_B=/path/to/other/checkout [SCHEME=https] [VERGE_WORKERS=2] N=7 D=4 PORT_BASE=28500 bench/hit-ab.sh
# VERGE_B=. VERGE_B_NODE_OPTS='--some-flag': this build against itself with B's extra node options.
# OBJ=100k: the 100 KiB HIT instead (bench/hit-ceiling.ts serves /100k.bin).
# (VERGE_WORKERS=2: CPU of both workers and the supervisor; the GC columns are then empty)
# PORT_BASE below the ephemeral range (/proc/sys/net/ipv4/ip_local_port_range): a port above it
# may be the local port of some connection on a busy machine, and the listen then fails.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
N=${N:-7}; D=${D:-4}; base=${PORT_BASE:-28500}; SCHEME=${SCHEME:-http}
: "${VERGE_B:?VERGE_B=/path/to/the/other/checkout (with its dist/ built)}"
dir="$(mktemp -d -t verge-hitab.XXXXXX)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$dir"; }
trap cleanup EXIT
for p in $((base + 1)) $((base + 2)) $((base + 91)); do
  if [[ -n $(ss -ltnH "sport = :$p") ]]; then echo "port $p is in use: choose another PORT_BASE" >&2; exit 1; fi
done
if [[ $SCHEME == https ]]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$dir/key.pem" \
    -out "$dir/cert.pem" -days 2 -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1" 2>/dev/null
fi
PORT=$((base + 91)) node "$here/../dist/bench/hit-ceiling.js" & pids+=($!)
# shellcheck source=bench/hit-verge.sh
VERGE_NODE_OPTS=--trace-gc-nvp
source "$here/hit-verge.sh"
start_verge "$here/.." $((base + 1)) a; ka=$started
# VERGE_B_NODE_OPTS: node options of B only, so that VERGE_B=. compares options of one build
VERGE_NODE_OPTS="--trace-gc-nvp ${VERGE_B_NODE_OPTS:-}"
start_verge "$VERGE_B" $((base + 2)) b; kb=$started
# utime+stime of the serving process, and of its children (VERGE_WORKERS > 1: the workers)
cpu() { local p; for p in "$1" $(pgrep -P "$1"); do awk '{print $14 + $15}' "/proc/$p/stat"; done | awk '{t += $1} END {print t}'; }
tck=$(getconf CLK_TCK)
both() { # secs: wrk on both at once
  wrk -t1 -c50 -d"$1s" --latency "$SCHEME://127.0.0.1:$((base + 1))/${OBJ:-1k}.bin" >"$dir/wa" &
  local w=$!
  wrk -t1 -c50 -d"$1s" --latency "$SCHEME://127.0.0.1:$((base + 2))/${OBJ:-1k}.bin" >"$dir/wb"
  wait "$w"
}
gc() { # log file, first line, requests: allocated, promoted and GC pause per request
  tail -n +"$2" "$1" | grep -o "gc=[a-z]*\|pause=[0-9.]*\|allocated=[0-9]*\|promoted=[0-9]*" | awk -F= -v n="$3" \
    '$1=="pause"{p=$2} $1=="gc"{pt+=p} $1=="allocated"{a+=$2} $1=="promoted"{pr+=$2}
     END{printf "%.0f B/req alloc %.1f B/req promoted %.2f us/req GC", a/n, pr/n, pt*1000/n}'
}
both 2 # warm-up (JIT)
echo "scheme $SCHEME, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$N"); do
  ca=$(cpu "$ka") cb=$(cpu "$kb") la=$(($(wc -l <"$dir/a.log") + 1)) lb=$(($(wc -l <"$dir/b.log") + 1))
  both "$D"
  ca2=$(cpu "$ka") cb2=$(cpu "$kb")
  na=$(awk '/requests in/{print $1}' "$dir/wa") nb=$(awk '/requests in/{print $1}' "$dir/wb")
  echo "  this: $(gc "$dir/a.log" "$la" "$na")   B: $(gc "$dir/b.log" "$lb" "$nb")"
  pa=$(awk '/ 99%/{print $2}' "$dir/wa") pb=$(awk '/ 99%/{print $2}' "$dir/wb")
  awk -v r="$r" -v na="$na" -v nb="$nb" -v da=$((ca2 - ca)) -v db=$((cb2 - cb)) -v t="$tck" -v d="$D" -v pa="$pa" -v pb="$pb" \
    'BEGIN{ua = da * 1e6 / t / na; ub = db * 1e6 / t / nb
      printf "round %s  this %6.0f req/s %5.1f us/req p99 %-8s  B %6.0f req/s %5.1f us/req p99 %-8s  CPU/req this/B %.3f\n", r, na / d, ua, pa, nb / d, ub, pb, ua / ub
      print ua, ub, na / nb >> "'"$dir/cells"'"}'
done
echo "load average $(cut -d' ' -f1-3 /proc/loadavg)"
awk 'function med(a, n,   i, j, t) { for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
       return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
  { n++; ua[n] = $1; ub[n] = $2; q[n] = $1 / $2; rq[n] = $3 }
  END { printf "median us/req: this %.1f, B %.1f; median of the per-round ratios this/B: CPU/req %.3f, req/s %.3f\n", med(ua, n), med(ub, n), med(q, n), med(rq, n) }' "$dir/cells"
