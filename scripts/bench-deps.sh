#!/usr/bin/env bash
# scripts/bench-deps.sh -- install the Debian packages the benchmarks compare
# braid with.  Only `make bench` runs this (never `make test` or deps.sh):
# the peers are not needed to build or test braid.
#
#   golang-go                     the Go echo and net/http peers
#   wrk                           the HTTP load generator of bench/http.sh
#   nginx-light libnginx-mod-http-lua   nginx + Lua (content_by_lua_block)
#   lua-luv lua-socket            the luv and LuaSocket echo peers
#   lua-http                      lua-http (cqueues), a Lua HTTP server peer
#   hyperfine                     timing of whole commands
#
# Idempotent: when every package is present it runs one dpkg-query per
# package and prints nothing.  Set BRAID_SKIP_BENCH_DEPS=1 to skip it; a
# benchmark whose peer is missing says "skipped" instead of failing.
set -euo pipefail

PACKAGES="golang-go wrk nginx-light libnginx-mod-http-lua lua-luv lua-socket lua-http hyperfine"

[ "${BRAID_SKIP_BENCH_DEPS:-0}" = 1 ] && exit 0

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "bench-deps.sh: not Debian; install the equivalents of: $PACKAGES" >&2
  exit 0
fi

installed() {
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

missing=""
for p in $PACKAGES; do
  installed "$p" || missing="$missing $p"
done
missing=${missing# }
[ -z "$missing" ] && exit 0

echo "bench-deps.sh: installing missing packages: $missing"
if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  echo "bench-deps.sh: not root and no sudo; install as root: $missing" >&2
  exit 1
fi

# nginx's package starts a service on port 80 when installed; a benchmark
# starts its own nginx on a free loopback port, so keep the service off.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null
  "${SUDO[@]}" chmod +x /usr/sbin/policy-rc.d
  trap '"${SUDO[@]}" rm -f /usr/sbin/policy-rc.d' EXIT
fi

"${SUDO[@]}" apt-get update
# shellcheck disable=SC2086  # a space-separated list on purpose
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y --no-install-recommends $missing

still=""
for p in $missing; do
  installed "$p" || still="$still $p"
done
if [ -n "$still" ]; then
  echo "bench-deps.sh: still missing after apt-get install:$still" >&2
  exit 1
fi
