#!/usr/bin/env bash
# Installs the Debian packages that Verge's tests need (real nginx origins and the like), so a
# fresh machine or CI run can pass without anything installed by hand.
#
#   scripts/install-test-deps.sh            # default set: nginx pebble curl logrotate strace chromium etcd-server
#                                           #   bind9-dnsutils unbound nsd
#   scripts/install-test-deps.sh nginx ...  # only the named packages
#   scripts/install-test-deps.sh nsd dnsperf  # what bench/dns.sh needs
#
# Only packages that are missing get installed; with everything present it prints nothing and
# does not touch apt. Package services are kept from starting: the tests run their own
# instances on loopback ports, and a system nginx would squat on port 80 for nothing.
set -euo pipefail

prog="install-test-deps"
if [ "$#" -eq 0 ]; then
  set -- nginx pebble curl logrotate strace chromium etcd-server bind9-dnsutils unbound nsd
fi

# A file each package must provide, beyond dpkg saying it is installed: catches a package whose
# files were removed by hand, and documents what the tests actually call.
binary_for() {
  case "$1" in
    nginx) echo /usr/sbin/nginx ;;
    # pebble ships no service; the ACME tests start it (and pebble-challtestsrv) themselves
    pebble) echo /usr/bin/pebble ;;
    # docs/deploy.md's log rotation, run against a real edge (test/deploy-docs.test.ts)
    logrotate) echo /usr/sbin/logrotate ;;
    # test/docs-commands.test.ts runs the README's curl line
    curl) echo /usr/bin/curl ;;
    # durability tests watch fdatasync/fsync calls of a real edge (test/helpers/strace.ts)
    strace) echo /usr/bin/strace ;;
    # the console's browser tests drive Debian's Chromium with playwright-core (test/console.test.ts)
    chromium) echo /usr/bin/chromium ;;
    # the etcd ConfigStore's conformance suite and the HA tests start their own etcd members on
    # loopback ports (test/helpers/etcd.ts); the packaged service must not run
    etcd-server) echo /usr/bin/etcd ;;
    # dig: the DNS tests ask Verge's authoritative server with it (test/dns-dig.test.ts)
    bind9-dnsutils) echo /usr/bin/dig ;;
    # a real recursive resolver with stub zones pointing at Verge (test/dns-resolver.test.ts)
    unbound) echo /usr/sbin/unbound ;;
    # the customer's DNS host in the DNS tests, and the reference server of bench/dns.sh
    nsd) echo /usr/sbin/nsd ;;
    # bench/dns.sh only: the load tool
    dnsperf) echo /usr/bin/dnsperf ;;
    *) echo "" ;;
  esac
}

# The pid file of the service a package's maintainer scripts would start, if any.
pidfile_for() {
  case "$1" in
    nginx) echo /run/nginx.pid ;;
    # both would take port 53 for nothing; the tests and the benchmark run their own instances
    unbound) echo /run/unbound.pid ;;
    nsd) echo /run/nsd/nsd.pid ;;
    *) echo "" ;;
  esac
}

is_installed() {
  local status
  status="$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)"
  [ "$status" = "installed" ] || return 1
  local bin
  bin="$(binary_for "$1")"
  [ -z "$bin" ] || [ -x "$bin" ]
}

missing=()
for pkg in "$@"; do
  if ! is_installed "$pkg"; then
    missing+=("$pkg")
  fi
done
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "$prog: missing ${missing[*]}; run this script as root to install them" >&2
  exit 1
fi

log="$(mktemp -t install-test-deps.XXXXXX)"
created_policy=""
cleanup() {
  if [ -n "$created_policy" ]; then
    rm -f /usr/sbin/policy-rc.d
  fi
  rm -f "$log"
}
trap cleanup EXIT

# invoke-rc.d consults policy-rc.d before starting any service; 101 means "action forbidden".
# An existing one belongs to someone else (the image, or a concurrent installer): leave it be.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod 0755 /usr/sbin/policy-rc.d
  created_policy=1
fi

# Another apt/dpkg run (an image build step, a parallel setup script) may hold the locks. apt's
# own Lock::Timeout covers the dpkg lock; the retry loop also covers the lists lock taken by
# 'apt-get update' and errors that come from losing a race between the two.
export DEBIAN_FRONTEND=noninteractive
apt_run() {
  local tries=0
  while true; do
    if apt-get -o DPkg::Lock::Timeout=600 "$@" >"$log" 2>&1; then
      return 0
    fi
    if grep -qiE 'could not get lock|unable to acquire the dpkg|unable to lock' "$log" && [ "$tries" -lt 120 ]; then
      tries=$((tries + 1))
      sleep 5
      continue
    fi
    echo "$prog: apt-get $* failed:" >&2
    cat "$log" >&2
    return 1
  done
}

# An install interrupted earlier (a killed apt-get) leaves packages unpacked but not configured,
# and apt-get refuses to install anything until they are: finish that first (services stay off,
# see policy-rc.d above).
if [ -n "$(dpkg --audit 2>/dev/null)" ]; then
  echo "$prog: finishing an interrupted install first (dpkg --configure -a)"
  tries=0
  until dpkg --configure -a >"$log" 2>&1; do
    if grep -qiE 'lock' "$log" && [ "$tries" -lt 120 ]; then
      tries=$((tries + 1))
      sleep 5
      continue
    fi
    echo "$prog: dpkg --configure -a failed:" >&2
    cat "$log" >&2
    exit 1
  done
fi

echo "$prog: installing ${missing[*]}"
apt_run update
reinstall=()
for pkg in "${missing[@]}"; do
  # dpkg thinks it is installed but its binary is gone: a plain install would be a no-op.
  if dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null | grep -qx installed; then
    reinstall=(--reinstall)
  fi
done
apt_run install -y --no-install-recommends "${reinstall[@]}" "${missing[@]}"

# A service may have started anyway (a policy-rc.d removed by whoever owned it mid-install, or
# a package that bypasses invoke-rc.d). Stop exactly that instance through its pid file; the
# init system's 'service stop' may not exist in a container and could hit other instances.
for pkg in "${missing[@]}"; do
  pidfile="$(pidfile_for "$pkg")"
  [ -n "$pidfile" ] && [ -s "$pidfile" ] || continue
  pid="$(tr -dc '0-9' <"$pidfile")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || continue
  # A stale pid file may name an unrelated process that reused the pid.
  if [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" != "$pkg" ]; then
    continue
  fi
  echo "$prog: stopping the $pkg service that started during install (pid $pid)"
  kill -QUIT "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
done

for pkg in "${missing[@]}"; do
  if ! is_installed "$pkg"; then
    echo "$prog: $pkg still missing after install" >&2
    exit 1
  fi
done
echo "$prog: installed ${missing[*]}"
