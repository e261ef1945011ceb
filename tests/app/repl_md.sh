#!/usr/bin/env bash
# tests/app/repl_md.sh -- replays the transcript examples/repl.md through
# the braid REPL under a pseudo-terminal (driver: tests/app/repl_md.py) and
# checks every answer.  The format is described at the top of repl.md.
#
# Env (set by ctest): BRAID_BIN (the braid executable), BRAID_SRC.
# Prints "ok - ..." / "FAIL - ..." per step; exits 1 if any failed.
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
# HOME: a fresh ~/.braid_history, not the user's.
HOME="$tmp" timeout 60 python3 "$here/repl_md.py" "$B" "$BRAID_SRC/examples/repl.md"
rc=$?
if [ "$rc" -eq 124 ]; then echo "FAIL - the replay did not finish in 60 s"; fi
[ "$rc" -eq 0 ]
