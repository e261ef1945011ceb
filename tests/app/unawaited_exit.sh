#!/usr/bin/env bash
# tests/app/unawaited_exit.sh -- issue 15: a task error nobody awaited is
# reported and makes the braid interpreter exit non-zero, as an uncaught
# error does; an error the script handled leaves the status at 0.
#
# Env (set by ctest): BRAID_BIN (the braid executable), BRAID_SRC.
set -u

here=$(cd "$(dirname "$0")" && pwd)
BRAID_SRC=${BRAID_SRC:-$(cd "$here/../.." && pwd)}
B=${BRAID_BIN:-${BRAID_BUILD:-$BRAID_SRC/build}/braid}
if [ ! -x "$B" ]; then
  echo "FAIL - no braid executable at $B (set BRAID_BIN)"
  exit 1
fi
fails=0
check() { if [ "$1" = "$2" ]; then echo "ok - $3"; else echo "FAIL - $3 (got '$1', want '$2')"; fails=$((fails + 1)); fi; }

# The task signals before it raises; the script waits until no task is left.
lost='local c = braid.chan(1)
braid.go(function() c:send(true) error("lost task", 0) end)
c:recv(10)
for _ = 1, 1000 do if #braid.tasks() == 0 then break end braid.sleep(0.01) end
braid.sleep(0.05)'
err=$("$B" -e "$lost" 2>&1 >/dev/null); rc=$?
check "$rc" 1 "an unawaited task error exits 1"
case "$err" in *"nobody awaited"*"lost task"*) echo "ok - it is reported";; *) echo "FAIL - no report: $err"; fails=$((fails + 1));; esac

"$B" -e 'local f = braid.go(function() error("seen", 0) end) assert(not f:wait(10))' 2>/dev/null; rc=$?
check "$rc" 0 "an awaited task error leaves the status at 0"

"$B" -e 'print(1)' >/dev/null 2>&1; rc=$?
check "$rc" 0 "a clean script exits 0"

exit $((fails > 0))
