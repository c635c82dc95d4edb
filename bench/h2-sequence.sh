#!/usr/bin/env bash
# Does what a serving process handled before its HTTP/2 cell make that cell costlier? (docs/benchmarks.md,
# issue 10 "h2c"). In the shared harness ONE Verge process (start-verge.sh's VERGE_HTTPS) serves
# `tls-1k` (wrk -c50 keep-alive HTTPS/1.1), `hs-1k` (wrk -c50 with `Connection: close`: a TLS
# handshake per request) and `h2-1k` (h2load -c10 -m5) in every round, with idle gaps between;
# node:http2's ceiling process serves only its h2 cell. Here, in rounds, interleaved:
#   vpre   a Verge serving process that gets the PRE loads (each PRE_DUR s) before each h2 cell
#   v      a second Verge serving process, same build, h2 cells only
#   ceil   the harness's ceiling (../shared/bench/node/ceiling.js MODE=h2), h2 cells only
#   cpre   a second ceiling process that gets the PRE loads too
#   gpre g the same as vpre and v with G_EXTRA added to their node flags (an A/B of a flag)
#   bpre b the same as vpre and v from another build, BASE=<dir with dist/ and node_modules/>
# Each round: the PRE loads on every *pre cell, then IDLE s, then each cell's h2 load in CELLS order
# (ROTATE=1: the h2 cells' order rotates each round), `h2load -t1 -c10 -m5 -D $DUR --warm-up-time=1`
# on /1k.bin, as the harness runs it. Verge is started as users start it (`node main.js serve
# --config`, which forks the serving process with the supervisor's flags) with start-verge.sh's
# configuration (one site, cache on, HTTP and HTTPS on one process, access log off); every process
# runs under `node --trace-gc-nvp`. Per h2 cell: req/s, p99, CPU per request (utime+stime of the
# serving process over the measured seconds, /proc), and from the GC trace over the same seconds:
# scavenges and their pause per 1,000 requests, mark-compacts (count and pause), bytes promoted per
# request, and the heap (V8's total_size_after, MB) at the last GC before the window.
#   PRE="hs" (default) or any of: h1 h1big tls hs (h1 = wrk -c50 on the plain port, Verge cells only;
#   h1big = the same on /100k.bin, the origin's 100 KiB object, as the harness's h1-100k cell;
#   tls = wrk -c50 keep-alive HTTPS; hs = wrk -c50 Connection: close HTTPS; the others on /1k.bin)
#   GAPS="s1 s2 ..." (optional): idle seconds before each PRE load, in order (the harness's other
#   systems' cells between Verge's: ~7 s a cell), e.g. PRE="h1 h1big tls hs" GAPS="21 49 35 14"
#   IDLE=14; the first gap comes after the previous round's h2 cells. Each PRE load prints its GCs.
#   PSR=1: print where the serving process and h2load ran (CPU numbers, 4 samples a window)
#   N=5 DUR=4 PRE_DUR=4 IDLE=10 PORT_BASE=24000 CELLS="vpre v ceil" [ROOT=<dir with dist/>]
#   [EXTRA="<more node flags for every process>"] [KEEP=dir: keep the GC logs there] bench/h2-sequence.sh
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
N=${N:-5}; DUR=${DUR:-4}; PRE_DUR=${PRE_DUR:-4}; IDLE=${IDLE:-10}; p=${PORT_BASE:-24000}
root=${ROOT:-$here/..}
read -r -a cells <<<"${CELLS:-vpre v ceil}"
read -r -a pre <<<"${PRE:-hs}"
read -r -a gaps <<<"${GAPS:-}"
d=$(mktemp -d -t verge-h2seq.XXXXXX)
pids=()
cleanup() {
  for x in "${pids[@]}"; do kill -INT "$x" 2>/dev/null; done
  wait 2>/dev/null
  [[ -n "${KEEP:-}" ]] && mkdir -p "$KEEP" && cp "$d"/*.gc "$d/cells" "$KEEP/" 2>/dev/null
  rm -rf "$d"
}
trap cleanup EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$d/key.pem" \
  -out "$d/cert.pem" -days 2 -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1" 2>/dev/null
ceiling=${CEILING_JS:-$here/../../shared/bench/node/ceiling.js}
[[ -f "$ceiling" ]] || ceiling=$here/../../../shared/bench/node/ceiling.js
[[ -f "$ceiling" ]] || { echo "ceiling.js not found: set CEILING_JS"; exit 1; }
PORT=$((p + 91)) node "$here/../dist/bench/hit-ceiling.js" & pids+=($!)
declare -A hport sport pidof
i=0
for c in "${cells[@]}"; do
  hp=$((p + 10 * i + 1)); tp=$((p + 10 * i + 2)); i=$((i + 1))
  case "$c" in
    vpre | v | gpre | g | bpre | b)
      cat >"$d/$c.yaml" <<YAML
edge:
  workers: 1
  fastPath: true
  admin: { listen: "127.0.0.1:0" }
  http: { listen: ["127.0.0.1:$hp"] }
  https: { listen: ["127.0.0.1:$tp"], defaultSite: "127.0.0.1" }
log: { access: "off" }
sites:
  - name: "127.0.0.1"
    aliases: [localhost]
    tls: { cert: "$d/cert.pem", key: "$d/key.pem" }
    origin:
      servers: [{ host: 127.0.0.1, port: $((p + 91)) }]
    cache: { enabled: true }
YAML
      # shellcheck disable=SC2086 # EXTRA is a list of flags; the supervisor hands its node flags on
      extra=${EXTRA:-}; [[ $c == g* ]] && extra="$extra ${G_EXTRA:-}"
      r=$root; [[ $c == b* ]] && r=${BASE:?cells bpre and b need BASE=<dir with dist/ and node_modules/>}
      # shellcheck disable=SC2086
      node --trace-gc-nvp $extra "$r/dist/src/cli/main.js" serve --config "$d/$c.yaml" >"$d/$c.gc" 2>&1 & pids+=($!)
      ;;
    ceil | cpre)
      # shellcheck disable=SC2086
      MODE=h2 PORT=$tp TLS_KEY="$d/key.pem" TLS_CERT="$d/cert.pem" node --trace-gc-nvp ${EXTRA:-} "$ceiling" >"$d/$c.gc" 2>&1 & pids+=($!)
      ;;
    *) echo "unknown cell $c"; exit 1 ;;
  esac
  hport[$c]=$hp; sport[$c]=$tp
done
for c in "${cells[@]}"; do
  for _ in $(seq 100); do curl -sk -o /dev/null "https://127.0.0.1:${sport[$c]}/1k.bin" && break; sleep 0.2; done
  # the serving process: the one listening (Verge's worker, or the ceiling itself)
  pidof[$c]=$(ss -ltnpH "sport = :${sport[$c]}" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
  [[ -n "${pidof[$c]}" ]] || { echo "$c did not start:"; cat "$d/$c.gc"; exit 1; }
done
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
rss() { awk '/^VmRSS/{printf "%.0f", $2 / 1024}' "/proc/$1/status"; }
tck=$(getconf CLK_TCK)
preload() {  # cell
  local c=$1 k j=0
  for k in "${pre[@]}"; do
    # the idle gap before this load (GAPS: one per PRE load, the harness's other cells in between)
    [[ -n "${gaps[$j]:-}" ]] && sleep "${gaps[$j]}"
    j=$((j + 1))
    local pid=${pidof[$c]} l0 l1 gs gsp gm gmp gpr
    l0=$(wc -l <"$d/$c.gc")
    case "$k" in
      h1) [[ $c == [vgb]pre ]] && timeout 20 wrk -t1 -c50 -d"${PRE_DUR}s" "http://127.0.0.1:${hport[$c]}/1k.bin" >/dev/null ;;
      h1big) [[ $c == [vgb]pre ]] && timeout 20 wrk -t1 -c50 -d"${PRE_DUR}s" "http://127.0.0.1:${hport[$c]}/100k.bin" >/dev/null ;;
      tls) timeout 20 wrk -t1 -c50 -d"${PRE_DUR}s" "https://127.0.0.1:${sport[$c]}/1k.bin" >/dev/null ;;
      hs) timeout 20 wrk -t1 -c50 -d"${PRE_DUR}s" -H 'Connection: close' "https://127.0.0.1:${sport[$c]}/1k.bin" >"$d/hs.out" ;;
      *) echo "unknown PRE load $k"; exit 1 ;;
    esac
    # what this load left: its GCs (scavenges, pause ms, mark-compacts, pause ms, promoted MB)
    # and the heap after it (V8's total_size_after at its last GC, MB)
    l1=$(wc -l <"$d/$c.gc")
    read -r gs gsp gm gmp gpr <<<"$(gcsum "$d/$c.gc" "$l0" "$l1" "$pid")"
    printf '    %s %s: scav %s (%s ms) mc %s (%s ms) prom %s MB heap %s MB rss %s MB\n' "$c" "$k" "$gs" "$gsp" "$gm" \
      "$gmp" "$(awk -v b="$gpr" 'BEGIN{printf "%.1f", b / 1048576}')" "$(heapmb "$d/$c.gc" "$l1" "$pid")" "$(rss "$pid")"
  done
}
gcsum() {  # log from-line to-line pid: the GC trace between two line counts, this process's lines
  sed -n "$(($2 + 1)),$3p" "$1" | grep "^\[$4:" | grep 'gc=' | awk '
    { for (i = 1; i <= NF; i++) { split($i, a, "="); v[a[1]] = a[2] }
      if (v["gc"] == "s") { s++; sp += v["pause"] } else { m++; mp += v["pause"] }
      pr += v["promoted"] }
    END { printf "%d %.1f %d %.1f %d", s, sp, m, mp, pr }'
}
heapmb() {  # log to-line pid: V8 total_size_after at the last GC before that line, MB
  head -n "$2" "$1" | grep "^\[$3:" | grep -o 'total_size_after=[0-9]*' | tail -1 | awk -F= '{printf "%.0f", $2 / 1048576}'
}
h2cell() {  # cell
  local c=$1 pid=${pidof[$1]} l0 l1 c0 c1 out n rps us lat g h r
  h=$(heapmb "$d/$c.gc" "$(wc -l <"$d/$c.gc")" "$pid")
  r=$(rss "$pid")
  timeout 30 h2load -D "$DUR" --warm-up-time=1 -c10 -m5 -t1 --log-file="$d/reqlog" "https://127.0.0.1:${sport[$c]}/1k.bin" >"$d/out" &
  local lp=$!
  sleep 1
  l0=$(wc -l <"$d/$c.gc"); c0=$(cpu "$pid")
  # where the serving process and h2load ran (CPU numbers, 4 samples 0.5 s apart): PSR=1 only
  local where=""
  if [[ "${PSR:-0}" == 1 ]]; then
    for _ in 1 2 3 4; do
      sleep 0.5
      where="$where $(ps -o psr= -p "$pid" | tr -d ' ')/$(ps -o psr= -p "$(pgrep -P "$lp" h2load || echo "$lp")" | tr -d ' ')"
    done
  fi
  wait "$lp"
  c1=$(cpu "$pid"); l1=$(wc -l <"$d/$c.gc")
  out=$(cat "$d/out")
  n=$(awk '/^requests:/{print $8}' <<<"$out")
  rps=$(awk '/^finished in/{gsub(",", "", $4); printf "%.0f", $4}' <<<"$out")
  if [[ -z "$n" || "$n" == 0 ]]; then echo " $c: h2load failed: $out"; return; fi
  us=$(awk -v dd=$((c1 - c0)) -v n="$n" -v t="$tck" 'BEGIN{printf "%.1f", dd * 1e6 / t / n}')
  lat=$(awk '{print $3}' "$d/reqlog" | sort -n | awk '{a[NR] = $1} END {if (NR) printf "%.2f", a[int(NR * 0.99)] / 1000; else print 0}')
  # scavenges, their pause ms, other GCs (mark-compacts), their pause ms, promoted bytes
  read -r gs gsp gm gmp gpr <<<"$(gcsum "$d/$c.gc" "$l0" "$l1" "$pid")"
  awk -v c="$c" -v r="$round" -v rps="$rps" -v us="$us" -v lat="$lat" -v n="$n" -v gs="$gs" -v gsp="$gsp" \
    -v gm="$gm" -v gmp="$gmp" -v gpr="$gpr" -v h="$h" -v rss="$r" 'BEGIN {
      printf "%s %s %s %s %s %.2f %.2f %d %.1f %.0f %s %s\n", r, c, rps, us, lat, gs * 1000 / n, gsp * 1000 / n, gm, gmp, gpr / n, h, rss }' >>"$d/cells"
  printf '  %s %s req/s %s us/req p99 %s ms | scav %s (%s ms) mc %s (%s ms) prom %s B/req | heap %s MB rss %s MB\n' \
    "$c" "$rps" "$us" "$lat" "$gs" "$gsp" "$gm" "$gmp" "$((gpr / n))" "$h" "$r"
  [[ -n "$where" ]] && echo "    cpu of $c/h2load:$where"
}
# warm-up (JIT), as the harness's warm-up pass: every cell's h2 load, no handshake cell
for c in "${cells[@]}"; do timeout 20 h2load -n 20000 -c10 -m5 -t1 "https://127.0.0.1:${sport[$c]}/1k.bin" >/dev/null; done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); PRE=${pre[*]} PRE_DUR=$PRE_DUR IDLE=$IDLE DUR=$DUR"
order=("${cells[@]}")
for round in $(seq "$N"); do
  echo "round $round (load $(cut -d' ' -f1 /proc/loadavg))"
  for c in "${cells[@]}"; do
    [[ $c == *pre ]] || continue
    local_rss0=$(rss "${pidof[$c]}")
    preload "$c"
    printf '  %s pre: %s, rss %s -> %s MB' "$c" "${pre[*]}" "$local_rss0" "$(rss "${pidof[$c]}")"
    [[ -f "$d/hs.out" ]] && printf ', hs %s req/s' "$(awk '/^Requests\/sec/{printf "%.0f", $2}' "$d/hs.out")"
    echo
  done
  sleep "$IDLE"
  for c in "${order[@]}"; do h2cell "$c"; done
  [[ "${ROTATE:-0}" == 1 ]] && order=("${order[@]:1}" "${order[0]}")
done
awk -v order="${cells[*]}" "$(<"$here/median.awk")"'
  { for (f = 3; f <= 12; f++) v[$2, f] = v[$2, f] " " $f }
  END {
    k = split(order, c, " ")
    printf "%-5s %8s %7s %7s %8s %8s %5s %8s %8s %5s %5s %7s %7s\n", "cell", "req/s", "us/req", "p99", "scav/1k", "scus/req", "mc", "mc ms", "promB/r", "heap", "rss", "req/s x", "CPU x"
    for (i = 1; i <= k; i++) {
      for (f = 3; f <= 12; f++) m[f] = med(v[c[i], f])
      if (i == 1) { r0 = m[3]; u0 = m[4] }
      printf "%-5s %8d %7.1f %7.2f %8.2f %8.2f %5.1f %8.1f %8.0f %5d %5d %7.2f %7.2f\n", c[i], m[3], m[4], m[5], m[6], m[7], m[8], m[9], m[10], m[11], m[12], m[3] / r0, m[4] / u0
    }
    printf "(medians of %s rounds; ratios against %s)\n", NR / k, c[1]
  }' "$d/cells"
