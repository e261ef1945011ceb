#!/usr/bin/env bash
# tests/examples/twitter_analyzer.sh -- smoke test of examples/twitter_analyzer.lua.
#
# Runs the analyzer with the braid interpreter and with lua5.4 + braid.so,
# and compares its output, timing lines aside, with the answer that
# fake_twitter.expected() computes sequentially from the generator (no
# pages, no tasks): every tweet's retweeters and unique reach, the totals,
# the exact number of API calls per endpoint (each page fetched once: the
# de-duplication and the completion are exact), no 429, and the same
# answer with one token.  The speedup is reported, not asserted.
#
# Env (set by ctest): BRAID_SRC, BRAID_BIN, BRAID_LUA, LUA_PATH, LUA_CPATH,
# BRAID_EXAMPLE.  Prints "ok - ..." / "FAIL - ..."; exits 1 if any failed.
set -u

here=$(cd "$(dirname "$0")" && pwd)
BRAID_SRC=${BRAID_SRC:-$(cd "$here/../.." && pwd)}
BRAID_LUA=${BRAID_LUA:-lua5.4}
example=${BRAID_EXAMPLE:-$BRAID_SRC/examples/twitter_analyzer.lua}
export BRAID_PROGRESS=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
ok()   { echo "ok - $*"; }
fail() { echo "FAIL - $*"; failures=$((failures + 1)); }

# The expected output, in the analyzer's format, from the reference.
LUA_PATH="$BRAID_SRC/examples/?.lua;;" "$BRAID_LUA" - > "$tmp/expected" <<'LUA' || { echo "FAIL - the reference did not run"; exit 1; }
local twitter = require "fake_twitter"
local cfg = twitter.config()
local e = twitter.expected(cfg, 1)
print(("Twitter analyzer: user 1, 4 tokens, the API allows %d calls per %g s per token")
  :format(cfg.limit, cfg.window))
print()
print("   tweet  retweeters  unique reach")
for _, r in ipairs(e.tweets) do print(("%8d  %10d  %12d"):format(r.id, r.retweeters, r.reach)) end
print()
print(("total: %d tweets, %d retweets, %d unique users reached by any tweet")
  :format(#e.tweets, e.retweets, e.reach))
local c = e.calls
print(("API calls: %d (timeline %d, retweeters %d, followers %d), 429 answers: 0")
  :format(c.total, c["statuses/user_timeline"], c["statuses/retweeters/ids"], c["followers/ids"]))
print(("with 1 token: the same answer, %d API calls, 429 answers: 0"):format(c.total))
LUA
if [ "$(wc -l < "$tmp/expected")" -lt 20 ]; then
  fail "the reference output is too short"; cat "$tmp/expected"
fi

extra_args=()   # arguments after the script
check_run() {   # check_run <name> <command...>
  local name=$1; shift
  local t0 rc secs
  t0=$(date +%s.%N)
  timeout 25 "$@" "$example" ${extra_args[@]+"${extra_args[@]}"} > "$tmp/out" 2> "$tmp/err"
  rc=$?
  secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  if [ "$rc" -ne 0 ]; then
    fail "$name: exit status $rc"; sed 's/^/  | /' "$tmp/out" "$tmp/err" | tail -20; return
  fi
  ok "$name: exit status 0 (${secs} s)"
  grep -v -e '^elapsed:' -e '^speedup:' "$tmp/out" > "$tmp/det"
  if diff -u "$tmp/expected" "$tmp/det" > "$tmp/diff"; then
    ok "$name: table, totals and API call counts equal the sequential reference"
  else
    fail "$name: output differs from the reference"; sed 's/^/  | /' "$tmp/diff" | head -40
  fi
  grep '^elapsed:' "$tmp/out" | sed 's/^/  # /'
  local speedup
  speedup=$(sed -n 's/^speedup: \([0-9.]*\)x with 4 tokens$/\1/p' "$tmp/out")
  if [ -z "$speedup" ]; then
    fail "$name: no 'speedup: <x>x with 4 tokens' line"
  else
    # Printed, not asserted: speed targets live in benchmarks, and a shared
    # machine makes any timing bound flaky.
    ok "$name: speedup line present (${speedup}x with 4 tokens)"
  fi
  if [ -s "$tmp/err" ]; then
    fail "$name: unexpected stderr"; sed 's/^/  | /' "$tmp/err" | head -10
  fi
}

if [ -n "${BRAID_BIN:-}" ] && [ -x "$BRAID_BIN" ]; then
  check_run "braid" "$BRAID_BIN"
else
  echo "ok - # skip the braid interpreter: no BRAID_BIN"
fi
if command -v "$BRAID_LUA" > /dev/null && [ -n "${LUA_CPATH:-}" ]; then
  check_run "lua5.4" "$BRAID_LUA"
else
  echo "ok - # skip lua5.4: no $BRAID_LUA or no LUA_CPATH"
fi

# Over HTTP (fake_twitter.serve + braid.http): real loopback sockets when
# braid has braid.net, else braid.http over tests/lua/fakenet.lua.
if command -v "$BRAID_LUA" > /dev/null && [ -n "${LUA_CPATH:-}" ]; then
  extra_args=(--http)
  if "$BRAID_LUA" -e 'os.exit(require("braid").net and 0 or 1)'; then
    check_run "lua5.4 over HTTP" "$BRAID_LUA"
  else
    pushd "$BRAID_SRC" > /dev/null || exit 1
    check_run "lua5.4 over HTTP (in-memory transport)" "$BRAID_LUA" -e \
      'require("braid").http._set_test_transport(require("tests.lua.fakenet").new())'
    popd > /dev/null || exit 1
  fi
  extra_args=()
fi

echo "$failures failure(s)"
[ "$failures" -eq 0 ]
