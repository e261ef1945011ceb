#!/usr/bin/env bash
# tests/app/rockspec.sh -- issue 15: `luarocks make` of
# rockspecs/braid-scm-1.rockspec (build.type "cmake") from a copy of the
# checkout into a temporary LuaRocks tree, offline (Debian's luarocks, a
# local empty server), then require "braid" from that tree with a stock
# lua5.4 and run a task, and the tree's braid interpreter.
#
# Env (set by ctest): BRAID_SRC, BRAID_LUA (lua5.4).
# Prints "ok - ..." / "FAIL - ..." per check; exits 1 if any failed.
set -u

here=$(cd "$(dirname "$0")" && pwd)
BRAID_SRC=${BRAID_SRC:-$(cd "$here/../.." && pwd)}
LUA=${BRAID_LUA:-lua5.4}
if ! command -v luarocks >/dev/null; then
  echo "FAIL - luarocks is not installed (scripts/deps.sh)"
  exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
ok()   { echo "ok - $1"; }
fail() { echo "FAIL - $1"; failures=$((failures + 1)); }

# A copy of the sources: luarocks builds in <src>/build.luarocks, and the
# checkout must stay as it was.
mkdir -p "$tmp/src" "$tmp/noserver"
tar -C "$BRAID_SRC" --exclude='./build*' --exclude='./.git' --exclude='./cmake-build-*' -cf - . \
  | tar -C "$tmp/src" -xf -
tree="$tmp/tree"
# HOME: no user config or cache; --only-server: a local empty directory, so
# that nothing is fetched (lua itself is the only dependency).
if ! (cd "$tmp/src" && HOME="$tmp" luarocks --lua-version 5.4 --tree "$tree" \
        --only-server="$tmp/noserver" make rockspecs/braid-scm-1.rockspec) >"$tmp/make.log" 2>&1; then
  fail "luarocks make rockspecs/braid-scm-1.rockspec"
  tail -30 "$tmp/make.log" | sed 's/^/  | /'
  exit 1
fi
ok "luarocks make into a temporary tree"

[ -f "$tree/lib/lua/5.4/braid.so" ] && ok "braid.so in the tree's lib/lua/5.4" \
  || fail "no $tree/lib/lua/5.4/braid.so"
[ -f "$tree/share/lua/5.4/braid/pmap.lua" ] && ok "braid/*.lua in the tree's share/lua/5.4" \
  || fail "no $tree/share/lua/5.4/braid/pmap.lua"
ls "$tree/lib/lua/5.4" | grep -q '\.a$' && fail "static libraries landed among the Lua modules" \
  || ok "no C-host files among the Lua modules"
(HOME="$tmp" luarocks --lua-version 5.4 --tree "$tree" list 2>/dev/null | grep -q '^braid') \
  && ok "luarocks lists braid in the tree" || fail "luarocks list does not show braid"

# require from the tree, with the paths luarocks gives, from elsewhere.
paths=$(HOME="$tmp" luarocks --lua-version 5.4 --tree "$tree" path)
out=$(cd "$tmp" && eval "$paths" && unset LUA_INIT LUA_INIT_5_4 && "$LUA" -e '
  local braid = require "braid"
  local where = package.searchpath("braid", package.cpath)
  local f = braid.go(function(x) return x * 2 end, 21)
  print(where, f:await(), braid.pmap({1, 2, 3}, function(x) return x + 1 end)[3])' 2>&1)
case "$out" in
  "$tree/lib/lua/5.4/braid.so	42	4") ok "require \"braid\" from the tree runs tasks ($out)";;
  *) fail "require from the tree: $out";;
esac

out=$(cd "$tmp" && "$tree/bin/braid" -e 'print(braid.go(function() return "ran" end):await())' 2>&1)
[ "$out" = ran ] && ok "the tree's braid interpreter runs a task" || fail "bin/braid: $out"

exit $((failures > 0))
