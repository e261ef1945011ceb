#!/usr/bin/env bash
# tests/app/repl_pipe.sh -- issue 15's REPL items, driven through a pipe
# (`braid -i`): plain tables print on one line ({1, 2, x = 3}, braid.stats()
# as a record), with caps on size, depth and cycles; a background task's
# error report waits for the command's output and comes before the next
# prompt.  (Completion needs a terminal: tests/app/repl_pty.py.)
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
unset LUA_INIT LUA_INIT_5_4
fails=0
has() {  # has OUTPUT LITERAL WHAT
  case "$1" in *"$2"*) echo "ok - $3";; *) echo "FAIL - $3: no '$2' in:"; printf '%s\n' "$1" | sed 's/^/  | /'; fails=$((fails + 1));; esac
}
hasnot() {
  case "$1" in *"$2"*) echo "FAIL - $3: '$2' in:"; printf '%s\n' "$1" | sed 's/^/  | /'; fails=$((fails + 1));; *) echo "ok - $3";; esac
}

# Tables.  Each result follows the prompt "> " it answers.
out=$(printf '%s\n' \
  '{1, 2, x = 3}' \
  'braid.stats()' \
  '{}' \
  '{"a\nb", {1, {2, {3, {4}}}}, [true] = 1, ["end"] = 2, [1.5] = 3, y = false}' \
  't = {} t.self = t return t' \
  'local b = {} for i = 1, 100 do b[i] = i end return b' \
  'setmetatable({}, {__tostring = function() return "custom" end})' \
  '"str", {1}' \
  '{{id = 1, name = "a"}}' \
  | timeout 20 "$B" -i 2>&1)
has "$out" "> {1, 2, x = 3}" "an array with a field prints as {1, 2, x = 3}"
stats=$(printf '%s\n' "$out" | grep -o '{blocked = [^}]*}' | head -1)
has "$stats" "workers = " "braid.stats() prints its fields"
has "$stats" "spawned = 0" "braid.stats() prints its values"
hasnot "$out" "table: 0x" "no table prints as table: 0x..."
has "$out" "> {}" "an empty table prints as {}"
has "$out" '> {"a\nb", {1, {2, {...}}}, [1.5] = 3, ["end"] = 2, y = false, [true] = 1}' \
  "strings quoted, depth capped, keys sorted (numbers, strings, others), keywords bracketed"
has "$out" "> {self = <cycle>}" "a cycle prints as <cycle>"
has "$out" "28, 29, 30, ...}" "a long array is cut after 30 items"
hasnot "$out" "31, 32" "nothing past the cut"
has "$out" "> custom" "a table with __tostring prints with it"
has "$out" "$(printf '> str\t{1}')" "several results: tab-separated, strings raw at the top"
has "$out" "$(printf 'id  name\n--  ----\n 1  a')" "an array of records is still an aligned table"

# A background task fails while the next command prints: its report comes
# after that command's output, before the next prompt (both streams into
# one pipe, in order), and the session goes on.
out=$(printf '%s\n' \
  'c = braid.chan()' \
  'local _ = braid.go(function(ch) ch:recv() error("bg boom", 0) end, c)' \
  'collectgarbage() collectgarbage() c:send(1) for i = 1, 3 do braid.sleep(0.05) print("line", i) end' \
  '=40 + 2' \
  | timeout 20 "$B" -i 2>&1); rc=$?
want=$(printf 'line\t1\nline\t2\nline\t3\nbraid: task ')
has "$out" "$want" "the lines print together, the report after them"
has "$out" "failed and nobody awaited it: bg boom
> 42" "the report comes before the next prompt, and the session goes on"
[ "$rc" = 1 ] && echo "ok - the unawaited error still sets the exit status" \
  || { echo "FAIL - exit status $rc, want 1"; fails=$((fails + 1)); }

exit $((fails > 0))
