#!/usr/bin/env bash
# tests/app/cli.sh -- the braid interpreter's command line: options, the
# 'arg' table, scripts from files and stdin, LUA_INIT, errors and exit
# status, signals.  The reference is lua5.4's own behaviour.
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

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1
unset LUA_INIT LUA_INIT_5_4 LUA_PATH LUA_PATH_5_4 LUA_CPATH LUA_CPATH_5_4

failures=0
ok()   { echo "ok - $1"; }
fail() {
  echo "FAIL - $1"
  echo "  rc=$rc"
  echo "  stdout: $(printf '%s' "$out" | head -c 1500 | sed 's/^/  | /')"
  echo "  stderr: $(printf '%s' "$err" | head -c 1500 | sed 's/^/  | /')"
  failures=$((failures + 1))
}

# run [stdin-text] -- cmd...: runs cmd with a 10 s limit; sets out, err, rc.
run() {
  local input=""
  if [ "$1" != "--" ]; then input=$1; shift; fi
  shift                                  # the --
  printf '%s' "$input" | timeout 10 "$@" >"$tmp/out" 2>"$tmp/err"
  rc=$?
  out=$(cat "$tmp/out")
  err=$(cat "$tmp/err")
}

# expect <what> <rc> <stdout-exact|-> [stderr-regex]
expect() {
  local what=$1 want_rc=$2 want_out=$3 want_err=${4:-}
  if [ "$rc" != "$want_rc" ]; then fail "$what (exit status $rc, want $want_rc)"; return; fi
  if [ "$want_out" != "-" ] && [ "$out" != "$want_out" ]; then
    fail "$what (stdout, want '$want_out')"; return
  fi
  if [ -n "$want_err" ] && ! printf '%s' "$err" | grep -Eq -- "$want_err"; then
    fail "$what (stderr, want /$want_err/)"; return
  fi
  ok "$what"
}

# --- version ----------------------------------------------------------------
run -- "$B" -v
expect "-v exits 0" 0 -
run -- "$B" -e 'io.write(braid.version)'
version=$out
run -- "$B" -v
if printf '%s' "$out" | grep -Eq "^braid $version .*Lua 5\.4\.[0-9]+ +Copyright"; then
  ok "-v prints braid's version ($version) and Lua's"
else
  fail "-v prints braid's version ($version) and Lua's"
fi

# --- braid preloaded ---------------------------------------------------------
run -- "$B" -e 'print(type(braid), require "braid" == braid, package.loaded.braid == braid)'
expect "braid is a global table and require 'braid' returns it" 0 "table	true	true"
run -- "$B" -E -e 'print(require("braid") == braid)'
expect "braid is preloaded under -E too" 0 "true"
run -- "$B" -e 'local c = braid.chan(1); c:send(41); print(c:recv() + 1)'
expect "braid works from -e" 0 "42"

# --- -e, -l, -W, -i ------------------------------------------------------------
run -- "$B" -e 'x = 1' -e 'print(x + 1)'
expect "-e runs in order" 0 "2"
run -- "$B" -e'print("glued")'
expect "-e with its argument glued" 0 "glued"
mkdir -p "$tmp/mods"
printf 'return { answer = 42 }\n' > "$tmp/mods/mymod.lua"
run -- env LUA_PATH="$tmp/mods/?.lua" "$B" -l mymod -e 'print(mymod.answer)'
expect "-l mod requires into global mod (LUA_PATH honoured)" 0 "42"
run -- env LUA_PATH="$tmp/mods/?.lua" "$B" -l m=mymod -e 'print(m.answer, mymod)'
expect "-l g=mod requires mod into global g" 0 "42	nil"
run -- env LUA_PATH="$tmp/mods/?.lua" "$B" -E -l mymod -e ''
expect "-E ignores LUA_PATH" 1 "" "module 'mymod' not found"
run -- "$B" -l nosuchmod_xyz
expect "-l with a missing module exits 1" 1 "" "module 'nosuchmod_xyz' not found"
run -- "$B" -W -e 'warn("hello")'
expect "-W turns warnings on" 0 "" "Lua warning: hello"
run -- "$B" -e 'warn("hello")'
expect "warnings are off without -W" 0 ""
run "1+1
=2+3
for i = 1, 2 do
print(i)
end
error('oops')
print('after')
" -- "$B" -i
if printf '%s' "$out" | grep -q "^braid $version" &&
   printf '%s\n' "$out" | grep -q '2$' && printf '%s\n' "$out" | grep -q '5$' &&
   printf '%s\n' "$out" | grep -q 'after' &&
   printf '%s' "$err" | grep -q 'oops' && [ "$rc" = 0 ]; then
  ok "-i with piped input: banner, auto-print, multi-line, errors go on"
else
  fail "-i with piped input: banner, auto-print, multi-line, errors go on"
fi

# --- scripts, arg, stdin -----------------------------------------------------------
cat > "$tmp/args.lua" <<'EOF'
print(#arg, arg[0], arg[1], arg[2], arg[-1], arg[-2], select('#', ...), ...)
EOF
run -- "$B" -e 'x=1' "$tmp/args.lua" a b
expect "script gets arg with negative indices and ..." 0 \
  "2	$tmp/args.lua	a	b	x=1	-e	2	a	b"
run -- "$B" -- "$tmp/args.lua" a
expect "-- stops options" 0 "1	$tmp/args.lua	a	nil	--	$B	1	a"
run 'print("stdin", arg[0], ...)' -- "$B" - a b
expect "- runs stdin with arguments" 0 "stdin	-	a	b"
run 'print(40 + 2)' -- "$B"
expect "no script and stdin not a terminal: stdin runs as a script" 0 "42"
run -- "$B" -e 'print(arg[0], arg[1], #arg)'
expect "arg without a script: the interpreter at 0, options after (as lua5.4)" 0 "$B	-e	2"
printf 'return ...' > "$tmp/ret.lua"
run -- "$B" "$tmp/ret.lua" 1 2
expect "a script's return values are ignored" 0 ""

# --- LUA_INIT --------------------------------------------------------------
run -- env LUA_INIT='print("init")' "$B" -e 'print("main")'
expect "LUA_INIT runs first" 0 "init
main"
run -- env LUA_INIT='print("init")' LUA_INIT_5_4='print("init54")' "$B" -e ''
expect "LUA_INIT_5_4 wins over LUA_INIT" 0 "init54"
printf 'print("from file", braid ~= nil)\n' > "$tmp/init.lua"
run -- env LUA_INIT="@$tmp/init.lua" "$B" -e ''
expect "LUA_INIT=@file runs the file (braid already loaded)" 0 "from file	true"
run -- env LUA_INIT='print("init")' "$B" -E -e 'print("main")'
expect "-E ignores LUA_INIT" 0 "main"
run -- env LUA_INIT='error("bad init")' "$B" -e 'print("main")'
expect "an error in LUA_INIT exits 1 before the rest" 1 "" "bad init"

# --- errors and exit status ----------------------------------------------------
run -- "$B" -e 'error("boom")'
expect "uncaught error: exit 1, message and traceback" 1 "" \
  "^$B: \(command line\):1: boom"
if printf '%s' "$err" | grep -q "stack traceback:" &&
   printf '%s' "$err" | grep -q "in function 'error'"; then
  ok "the traceback names the frames"
else
  fail "the traceback names the frames"
fi
cat > "$tmp/nested.lua" <<'EOF'
local function inner() local t = nil; return t.field end
local function outer() return inner() + 1 end
outer()
EOF
run -- "$B" "$tmp/nested.lua"
expect "error in a script: exit 1, traceback through the functions" 1 "" \
  "nested.lua:1: attempt to index a nil value"
if printf '%s' "$err" | grep -q "in local 'inner'\|in upvalue 'inner'\|in function 'inner'" &&
   printf '%s' "$err" | grep -q "nested.lua:3: in main chunk"; then
  ok "the traceback shows inner, outer and the main chunk"
else
  fail "the traceback shows inner, outer and the main chunk"
fi
run -- "$B" -e 'error({})'
expect "a table error object" 1 "" "\(error object is a table value\)"
run -- "$B" -e 'error(setmetatable({}, {__tostring = function() return "custom" end}))'
expect "an error object with __tostring" 1 "" "custom"
run -- "$B" -e 'x = = 1'
expect "syntax error in -e exits 1" 1 "" "unexpected symbol"
printf 'for\n' > "$tmp/bad.lua"
run -- "$B" "$tmp/bad.lua"
expect "syntax error in a script exits 1" 1 "" "bad.lua:"
run -- "$B" "$tmp/no-such-file.lua"
expect "missing script exits 1" 1 "" "cannot open .*no-such-file.lua"
run -- "$B" -x
expect "unknown option: exit 1 and usage" 1 "" "unrecognized option '-x'"
printf '%s' "$err" | grep -q "usage: .* \[options\] \[script \[args\]\]" &&
  ok "usage lists the options" || fail "usage lists the options"
run -- "$B" -e
expect "-e without its argument" 1 "" "'-e' needs argument"
run -- "$B" -l
expect "-l without its argument" 1 "" "'-l' needs argument"
run -- "$B" -vx
expect "-v with extra characters is an error" 1 "" "unrecognized option '-vx'"
run -- "$B" -e 'os.exit(3)'
expect "os.exit(3) exits 3" 3 ""
run -- "$B" -e 'os.exit(false)'
expect "os.exit(false) exits 1" 1 ""
run -- "$B" -e 'os.exit(true, true)'
expect "os.exit(true, true) closes the state and exits 0" 0 ""

# --- braid behaviour at the command line ---------------------------------------
run -- "$B" -e 'braid.chan():recv()'
expect "deadlock on the main thread raises instead of hanging" 1 "" "braid: deadlock"
start=$(date +%s%N)
run -- "$B" -e 'braid.go(function() braid.sleep(100) end); braid.sleep(0.05); print("done")'
ms=$(( ($(date +%s%N) - start) / 1000000 ))
if [ "$rc" = 0 ] && [ "$out" = "done" ] && [ "$ms" -lt 5000 ]; then
  ok "exit does not wait for a sleeping task (${ms} ms)"
else
  fail "exit does not wait for a sleeping task (${ms} ms)"
fi
start=$(date +%s%N)
run -- "$B" -e 'local c = braid.chan(); braid.go(function() c:recv() end); print("done")'
ms=$(( ($(date +%s%N) - start) / 1000000 ))
if [ "$rc" = 0 ] && [ "$out" = "done" ] && [ "$ms" -lt 5000 ]; then
  ok "exit does not wait for a blocked task (${ms} ms)"
else
  fail "exit does not wait for a blocked task (${ms} ms)"
fi

# SIGINT: a blocked braid call raises "braid: interrupted", Lua code stops
# with "interrupted!"; either way the script exits 1 promptly.
sigint_check() {  # <what> <want-stderr-regex> <braid args...>
  local what=$1 want=$2
  shift 2
  "$B" "$@" >"$tmp/out" 2>"$tmp/err" &
  local pid=$! i
  sleep 0.5
  kill -INT "$pid"
  for i in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid"
    wait "$pid"
    out=$(cat "$tmp/out"); err=$(cat "$tmp/err"); rc=timeout
    fail "$what (still running 5 s after SIGINT)"
    return
  fi
  wait "$pid"
  rc=$?
  out=$(cat "$tmp/out")
  err=$(cat "$tmp/err")
  expect "$what" 1 "" "$want"
}
sigint_check "SIGINT interrupts a blocked braid.sleep: exit 1, 'braid: interrupted'" \
  "braid: interrupted" -e 'braid.sleep(100)'
sigint_check "SIGINT interrupts a blocked recv" \
  "braid: interrupted" -e 'local c = braid.chan(); braid.go(function() braid.sleep(100); c:send(1) end); c:recv()'
sigint_check "SIGINT stops computing Lua code with 'interrupted!'" \
  "interrupted!" -e 'while true do end'

echo "$failures failure(s)"
[ "$failures" -eq 0 ]
