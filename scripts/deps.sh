#!/usr/bin/env bash
# scripts/deps.sh -- install the Debian packages braid needs to build and test.
#
# Idempotent: when every package is already installed it only runs one
# dpkg-query per package and prints nothing.  Otherwise it runs
# `apt-get update` and installs the missing ones (through sudo when not
# root).  Exits non-zero when anything fails or a package is still missing.
#
# Set BRAID_SKIP_DEPS=1 to skip the check entirely (e.g. on a non-Debian
# machine where you installed the equivalents yourself).
set -euo pipefail

# Keep this the one list of system packages (CI starts from a bare Debian 12
# with only gcc/make/cmake/clang).  lua5.4 + lua-busted run tests/lua;
# pkg-config lets CMake find Lua through lua5.4.pc; libclang-rt-14-dev holds
# clang's sanitizer runtimes (gcc's come with gcc); tmux drives the REPL in
# tests/app; libhttp-parser-dev and libwslay-dev parse HTTP/1.1 and frame
# WebSocket for braid.http; libnats-dev and nats-server are braid.nats and
# the server its tests start; openssl makes the TLS tests' certificates;
# curl is the HTTP tests' independent client; lua-check is luacheck;
# luarocks installs the rockspec in a test.
PACKAGES="liblua5.4-dev lua5.4 lua-busted lua-cjson libreadline-dev libssl-dev pkg-config clang libclang-rt-14-dev valgrind tmux libhttp-parser-dev libwslay-dev libnats-dev nats-server openssl curl lua-check luarocks"

if [ "${BRAID_SKIP_DEPS:-0}" = 1 ]; then
  exit 0
fi

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "deps.sh: dpkg-query not found: this script only knows Debian." >&2
  echo "deps.sh: install the equivalents of: $PACKAGES" >&2
  echo "deps.sh: then rerun with BRAID_SKIP_DEPS=1" >&2
  exit 1
fi

installed() {
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

missing_packages() {
  local p missing=""
  for p in $PACKAGES; do
    installed "$p" || missing="$missing $p"
  done
  echo "${missing# }"
}

missing=$(missing_packages)
[ -z "$missing" ] && exit 0

echo "deps.sh: installing missing packages: $missing"
if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  echo "deps.sh: not root and sudo is not available; install as root: $missing" >&2
  exit 1
fi

"${SUDO[@]}" apt-get update
# shellcheck disable=SC2086  # $missing is a space-separated list on purpose
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y --no-install-recommends $missing

still=$(missing_packages)
if [ -n "$still" ]; then
  echo "deps.sh: still missing after apt-get install: $still" >&2
  exit 1
fi
