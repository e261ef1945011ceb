#!/usr/bin/env bash
# tests/app/repl.sh -- the REPL under a pseudo-terminal: auto-print of
# expressions and =expr, multi-line input, errors that do not end the
# session, Ctrl-C on a blocked braid call, on computing Lua code and at the
# prompt, deadlock detection, table printing, history.  The driver is
# tests/app/repl_pty.py (python3's pty module).
#
# Env (set by ctest): BRAID_BIN (the braid executable), BRAID_SRC.
# Prints "ok - ..." / "FAIL - ..." per check; exits 1 if any failed.
set -u

here=$(cd "$(dirname "$0")" && pwd)
BRAID_SRC=${BRAID_SRC:-$(cd "$here/../.." && pwd)}
B=${BRAID_BIN:-${BRAID_BUILD:-$BRAID_SRC/build}/braid}
if [ ! -x "$B" ]; then
  echo "FAIL - no braid executable at $B (set BRAID_BIN)"
  exit 1
fi
if ! command -v python3 >/dev/null; then
  echo "FAIL - python3 is needed to drive the REPL under a pty"
  exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
unset LUA_INIT LUA_INIT_5_4
# HOME: a fresh ~/.braid_history that the driver checks afterwards.
HOME="$tmp" timeout 25 python3 "$BRAID_SRC/tests/app/repl_pty.py" "$B"
rc=$?
if [ "$rc" -eq 124 ]; then echo "FAIL - the REPL test did not finish in 25 s"; fi
[ "$rc" -eq 0 ]
