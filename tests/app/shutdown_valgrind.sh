#!/usr/bin/env bash
# tests/app/shutdown_valgrind.sh -- issue 16: the shutdown variants that end
# normally (tests/app/shutdown/*.lua marked "-- valgrind": tasks blocked in
# recv, send, select, sleep, await, a socket read, computing, pending
# braid.after timers, ...) lose no memory: valgrind's memcheck finds no
# error and nothing "definitely lost".  Run under the braid interpreter (it
# links braid statically, so the reports name braid's functions; lua5.4
# unloads braid.so before valgrind reports), plus two under lua5.4.
#
# Slow (valgrind), so not labelled for the sanitizer passes (it is label
# app + valgrind); skipped in a sanitizer build, where valgrind cannot run.
# SHUTDOWN_ONLY=<regex> runs only the matching variants.
set -u

here=$(cd "$(dirname "$0")" && pwd)
BRAID_SRC=${BRAID_SRC:-$(cd "$here/../.." && pwd)}
B=${BRAID_BIN:-${BRAID_BUILD:-$BRAID_SRC/build}/braid}
L=${BRAID_LUA:-lua5.4}
export LUA_PATH="${BRAID_LUA_PATH:-$BRAID_SRC/lua/?.lua;$BRAID_SRC/lua/?/init.lua};;"
export LUA_CPATH="${BRAID_LUA_CPATH:-${BRAID_BUILD:-$BRAID_SRC/build}/?.so};;"
if [ -n "${BRAID_SANITIZE:-}" ]; then
  echo "skip - a sanitizer build ($BRAID_SANITIZE): valgrind does not run over it"
  exit 0
fi
if ! command -v valgrind >/dev/null; then
  echo "FAIL - valgrind not found (scripts/deps.sh installs it)"
  exit 1
fi
if [ ! -x "$B" ]; then
  echo "FAIL - no braid executable at $B (set BRAID_BIN)"
  exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0 runs=0

vg() {
  local label=$1 f=$2
  shift 2
  local name log
  name=$(basename "$f" .lua)
  log="$tmp/$name.$label.vg"
  timeout -k 5 240 valgrind -q --leak-check=full --errors-for-leak-kinds=definite \
    --error-exitcode=9 --fair-sched=yes "$@" "$f" >"$tmp/out" 2>"$log"
  local rc=$?
  runs=$((runs + 1))
  if [ "$rc" = 0 ] && grep -q '^READY$' "$tmp/out"; then
    echo "ok - $name ($label): no error, nothing definitely lost"
  else
    echo "FAIL - $name ($label): status $rc"
    sed -n '1,80p' "$log"
    fails=$((fails + 1))
  fi
}

for f in "$here"/shutdown/*.lua; do
  name=$(basename "$f" .lua)
  grep -q '^-- valgrind$' "$f" || continue
  if [ -n "${SHUTDOWN_ONLY:-}" ] && ! [[ $name =~ $SHUTDOWN_ONLY ]]; then continue; fi
  vg braid "$f" "$B"
  case "$name" in select|after) vg lua5.4 "$f" "$L" ;; esac
done

echo "$runs runs under valgrind, $fails failures"
[ "$runs" -gt 0 ] || exit 1
exit $((fails > 0))
