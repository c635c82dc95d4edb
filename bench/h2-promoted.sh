#!/usr/bin/env bash
# What the HTTP/2 1 KiB hit promotes (docs/benchmarks.md, issue 10 "what an HTTP/2 hit promotes"):
# one serving process under `node --trace-gc-nvp`, a warm-up (h2load -n 20000), IDLE seconds
# without load, then one measured load, h2load -c10 -m5 -t1 on /1k.bin (the shared harness's
# shape): DUR=4 runs `h2load -D 4 --warm-up-time=1` and reads the GC trace and the CPU over the
# measured seconds only, else -n $REQS. Prints the scavenges per 1,000 requests, the other GCs,
# the bytes promoted per request (the trace's promoted=, summed), the GC pause per request and the
# process's CPU per request.
#   CELL=verge ROOT=<dir with dist/ and node_modules/> (default this tree) or CELL=ceil (the
#   shared harness's ../shared/bench/node/ceiling.js MODE=h2, or CEILING_JS)
#   PORT_BASE=24000 IDLE=20 DUR=4 [REQS=100000] [EXTRA="<more node flags>"] bench/h2-promoted.sh
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
p=${PORT_BASE:-24000}; reqs=${REQS:-100000}; cell=${CELL:-verge}; root=${ROOT:-$here/..}
d=$(mktemp -d -t verge-h2prom.XXXXXX)
pids=()
cleanup() { for x in "${pids[@]}"; do kill -INT "$x" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$d"; }
trap cleanup EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$d/key.pem" \
  -out "$d/cert.pem" -days 2 -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1" 2>/dev/null
# shellcheck disable=SC2086 # EXTRA is a list of flags
if [[ "$cell" == ceil ]]; then
  ceiling=${CEILING_JS:-$here/../../shared/bench/node/ceiling.js}
  [[ -f "$ceiling" ]] || ceiling=$here/../../../shared/bench/node/ceiling.js
  port=$((p + 80))
  MODE=h2 PORT=$port TLS_KEY="$d/key.pem" TLS_CERT="$d/cert.pem" node --trace-gc-nvp ${EXTRA:-} "$ceiling" >"$d/log" 2>&1 & pids+=($!)
else
  PORT=$((p + 91)) node "$here/../dist/bench/hit-ceiling.js" & pids+=($!)
  port=$((p + 2))
  cat >"$d/c.yaml" <<YAML
edge:
  workers: 1
  fastPath: true
  admin: { listen: "127.0.0.1:0" }
  http: { listen: ["127.0.0.1:$((p + 1))"] }
  https: { listen: ["127.0.0.1:$port"], defaultSite: "127.0.0.1" }
log: { access: "off" }
sites:
  - name: "127.0.0.1"
    tls: { cert: "$d/cert.pem", key: "$d/key.pem" }
    origin:
      servers: [{ host: 127.0.0.1, port: $((p + 91)) }]
YAML
  # the flag on the command line: the supervisor gives its own node flags to the serving process
  node --trace-gc-nvp ${EXTRA:-} "$root/dist/src/cli/main.js" serve --config "$d/c.yaml" >"$d/log" 2>&1 & pids+=($!)
fi
url="https://127.0.0.1:$port/1k.bin"
for _ in $(seq 100); do curl -sk -o /dev/null "$url" && break; sleep 0.2; done
# the serving process: the one listening (Verge's worker, or the ceiling itself)
pid=$(ss -ltnpH "sport = :$port" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
[[ -n "$pid" ]] || { echo "no server on $port:"; cat "$d/log"; exit 1; }
cpu() { awk '{print $14+$15}' "/proc/$pid/stat"; }
timeout 20 h2load -n 20000 -c10 -m5 -t1 "$url" >/dev/null
sleep "${IDLE:-0}"
if [[ -n "${DUR:-}" ]]; then
  timeout 30 h2load -D "$DUR" --warm-up-time=1 -c10 -m5 -t1 "$url" >"$d/out" & lp=$!
  sleep 1; l0=$(wc -l <"$d/log"); c0=$(cpu)
  wait "$lp"; out=$(cat "$d/out")
else
  l0=$(wc -l <"$d/log"); c0=$(cpu)
  out=$(timeout 30 h2load -n "$reqs" -c10 -m5 -t1 "$url")
fi
c1=$(cpu)
sleep 0.3
n=$(awk '/^requests:/{print $8}' <<<"$out")
tail -n +$((l0 + 1)) "$d/log" | grep "^\[$pid:" | grep 'gc=' | awk -v n="$n" -v cpu=$((c1 - c0)) -v t="$(getconf CLK_TCK)" -v c="$cell" '
  { for (i = 1; i <= NF; i++) { split($i, a, "="); if (a[1] == "promoted") p += a[2]; if (a[1] == "pause") ps += a[2]
      if (a[1] == "gc" && a[2] == "s") k++; if (a[1] == "gc" && a[2] != "s") m++ } }
  END { printf "%s reqs %d scavenges/1k %.2f other-gc %d promoted-B/req %.0f gc-pause-us/req %.2f cpu-us/req %.1f\n",
          c, n, k * 1000 / n, m, p / n, ps * 1000 / n, cpu * 1e6 / t / n }'
