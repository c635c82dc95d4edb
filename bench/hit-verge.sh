# Sourced by bench/hit-gap.sh and bench/hit-ab.sh: start_verge ROOT PORT NAME starts one Verge
# build serving the 1 KiB HIT cell (one worker, access log off, the origin on $base + 91, the
# certificate in $dir for SCHEME=https). Reads $dir, $base, $SCHEME, VERGE_NODE_OPTS (node
# options, e.g. --trace-gc-nvp) and VERGE_WORKERS (edge.workers, default 1; with more, $started
# is the supervisor and the caller sums its children's CPU); appends to the caller's pids array.
# start one Verge build (its checkout root) listening on port $2, its config named $3; sets
# $started to the serving process (the supervisor goes into pids: no command substitution, whose
# subshell would keep pids+= from reaching cleanup)
start_verge() {
  local root=$1 port=$2 name=$3
  local listen="http: { listen: [\"127.0.0.1:$port\"] }
  https: { listen: [] }" tls=""
  if [[ $SCHEME == https ]]; then
    listen="http: { listen: [] }
  https: { listen: [\"127.0.0.1:$port\"], defaultSite: \"127.0.0.1\" }"
    tls="    tls: { cert: \"$dir/cert.pem\", key: \"$dir/key.pem\" }"
  fi
  cat > "$dir/$name.yaml" <<YAML
edge:
  workers: ${VERGE_WORKERS:-1}
  admin: { listen: "127.0.0.1:0" }
  $listen
log: { access: "off" }
sites:
  - name: "127.0.0.1"
$tls
    origin:
      servers: [{ host: 127.0.0.1, port: $((base + 91)) }]
YAML
  # shellcheck disable=SC2086 # VERGE_NODE_OPTS is a list of options
  node ${VERGE_NODE_OPTS:-} "$root/dist/src/cli/main.js" serve --config "$dir/$name.yaml" >"$dir/$name.log" 2>&1 & pids+=($!)
  for _ in $(seq 100); do curl -sk -o /dev/null "$SCHEME://127.0.0.1:$port/1k.bin" && break; sleep 0.2; done
  curl -sk -o /dev/null "$SCHEME://127.0.0.1:$port/1k.bin"
  # the serving process: the one listening on the port
  local pid
  # a port still held by another process is a start failure, not a cell measured on the wrong server
  pid=$(ss -ltnpH "sport = :$port" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
  [[ -n "$pid" ]] || { echo "verge ($root) did not start:" >&2; cat "$dir/$name.log" >&2; exit 1; }
  started=$pid
  # several workers: the supervisor (the process started here), whose children serve
  if [[ ${VERGE_WORKERS:-1} -gt 1 ]]; then started=${pids[-1]}; fi
}
