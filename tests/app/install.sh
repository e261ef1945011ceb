#!/usr/bin/env bash
# tests/app/install.sh -- `cmake --install` into a temporary prefix, then
# require "braid" from a stock lua5.4, the installed braid binary, braid.h,
# braid.pc (and a C host built with it), and a DESTDIR install into
# /usr/local (the layout Debian's lua5.4 searches by default).
#
# Env (set by ctest): BRAID_BUILD (the build dir), BRAID_SRC, BRAID_LUA
# (lua5.4), CMAKE (optional, else cmake from PATH).
# Prints "ok - ..." / "FAIL - ..." per check; exits 1 if any failed.
set -u

here=$(cd "$(dirname "$0")" && pwd)
BRAID_SRC=${BRAID_SRC:-$(cd "$here/../.." && pwd)}
BUILD=${BRAID_BUILD:-$BRAID_SRC/build}
LUA=${BRAID_LUA:-lua5.4}
CMAKE=${CMAKE:-cmake}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix="$tmp/prefix"

failures=0
ok()   { echo "ok - $1"; }
fail() { echo "FAIL - $1"; failures=$((failures + 1)); }
check_file() { [ -f "$1" ] && ok "installed $2" || fail "installed $2 (no $1)"; }

if ! "$CMAKE" --install "$BUILD" --prefix "$prefix" >"$tmp/install.log" 2>&1; then
  fail "cmake --install $BUILD --prefix $prefix"
  sed 's/^/  | /' "$tmp/install.log"
  exit 1
fi
ok "cmake --install into $prefix"
if [ ! -d "$prefix" ] || [ -z "$(find "$prefix" -type f | head -n 1)" ]; then
  fail "nothing was installed: does CMakeLists.txt include(cmake/install.cmake)?"
  exit 1
fi

cmod="$prefix/lib/lua/5.4"
lmod="$prefix/share/lua/5.4"
check_file "$cmod/braid.so" "braid.so into lib/lua/5.4"
check_file "$prefix/bin/braid" "the braid executable into bin/"
check_file "$prefix/include/braid.h" "braid.h into include/"
cmp -s "$prefix/include/braid.h" "$BRAID_SRC/include/braid.h" &&
  ok "the installed braid.h is include/braid.h" || fail "the installed braid.h is include/braid.h"
n=0
for f in "$BRAID_SRC"/lua/braid/*.lua; do
  [ -e "$f" ] || continue
  n=$((n + 1))
  cmp -s "$f" "$lmod/braid/$(basename "$f")" || fail "installed lua/braid/$(basename "$f")"
done
ok "lua/braid/*.lua ($n files) into share/lua/5.4/braid/"
pc=$(find "$prefix" -name braid.pc | head -n 1)
[ -n "$pc" ] && ok "braid.pc installed (${pc#$prefix/})" || fail "braid.pc installed"

# A stock lua5.4 finds the module through the prefix alone.
want_version=$("$BUILD/braid" -e 'io.write(braid.version)' 2>/dev/null)
got=$(cd "$tmp" && env -i PATH="$PATH" \
        LUA_CPATH="$cmod/?.so" LUA_PATH="$lmod/?.lua;$lmod/?/init.lua" \
        timeout 10 "$LUA" -e 'local b = require("braid"); print(b.version)' 2>&1)
[ -n "$want_version" ] && [ "$got" = "$want_version" ] &&
  ok "lua5.4 requires the installed braid (version $got)" ||
  fail "lua5.4 requires the installed braid (got '$got', want '$want_version')"
got=$(cd "$tmp" && env -i PATH="$PATH" LUA_CPATH="$cmod/?.so" LUA_PATH="$lmod/?.lua" \
        timeout 10 "$LUA" -e '
          local braid = require "braid"
          local f = braid.go(function(a, b) return a + b end, 40, 2)
          print(f:await())' 2>&1)
[ "$got" = "42" ] && ok "the installed module runs a task under lua5.4" ||
  fail "the installed module runs a task under lua5.4 (got '$got')"
bad=""
for f in "$lmod"/braid/*.lua; do
  [ -e "$f" ] || continue
  "$LUA" -e "assert(loadfile('$f'))" 2>/dev/null || bad="$bad $(basename "$f")"
done
[ -z "$bad" ] && ok "the installed braid/*.lua compile" || fail "the installed braid/*.lua compile:$bad"

got=$(cd "$tmp" && timeout 10 "$prefix/bin/braid" -e 'print(braid.version)' 2>&1)
[ "$got" = "$want_version" ] && ok "the installed braid executable runs" ||
  fail "the installed braid executable runs (got '$got')"

# pkg-config, and a C host built only from what pkg-config says.
if command -v pkg-config >/dev/null && [ -n "$pc" ]; then
  export PKG_CONFIG_PATH="$(dirname "$pc")"
  v=$(pkg-config --modversion braid 2>&1)
  [ "$v" = "$want_version" ] && ok "pkg-config --modversion braid = $v" ||
    fail "pkg-config --modversion braid (got '$v')"
  c=$(pkg-config --variable=INSTALL_CMOD braid)
  [ "$c" = "$cmod" ] && ok "braid.pc INSTALL_CMOD is where braid.so went" ||
    fail "braid.pc INSTALL_CMOD (got '$c', want '$cmod')"
  pkg-config --cflags braid | grep -q -- "-I$prefix/include" &&
    ok "pkg-config --cflags braid names the installed include dir" ||
    fail "pkg-config --cflags braid: $(pkg-config --cflags braid 2>&1)"
  if command -v cc >/dev/null; then
    cat > "$tmp/host.c" <<'HOST'
#include <stdio.h>
#include <lauxlib.h>
#include <lualib.h>
#include <braid.h>
int main(void) {
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  luaL_requiref(L, "braid", luaopen_braid, 1);
  lua_pop(L, 1);
  if (luaL_dostring(L, "print(braid.go(function(x) return x * 2 end, 21):await())")) {
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
    return 1;
  }
  lua_close(L);
  return 0;
}
HOST
    if cc -o "$tmp/host" "$tmp/host.c" $(pkg-config --cflags --libs braid) 2>"$tmp/cc.log"; then
      got=$(timeout 10 "$tmp/host" 2>&1)
      [ "$got" = "42" ] && ok "a C host built with pkg-config braid runs a task" ||
        fail "a C host built with pkg-config braid runs a task (got '$got')"
    else
      fail "a C host builds with \$(pkg-config --cflags --libs braid)"
      sed 's/^/  | /' "$tmp/cc.log"
    fi
  fi
  unset PKG_CONFIG_PATH
fi

# The default layout: prefix /usr/local, staged with DESTDIR.
if DESTDIR="$tmp/stage" "$CMAKE" --install "$BUILD" --prefix /usr/local >"$tmp/stage.log" 2>&1; then
  s="$tmp/stage/usr/local"
  [ -f "$s/lib/lua/5.4/braid.so" ] && [ -f "$s/bin/braid" ] && [ -f "$s/include/braid.h" ] &&
    ok "DESTDIR install with prefix /usr/local: lib/lua/5.4/braid.so, bin/braid, include/braid.h" ||
    fail "DESTDIR install with prefix /usr/local"
  spc=$(find "$s" -name braid.pc | head -n 1)
  [ -n "$spc" ] && grep -qx "prefix=/usr/local" "$spc" &&
    ok "braid.pc says prefix=/usr/local (not the DESTDIR)" ||
    fail "braid.pc says prefix=/usr/local"
  case ";$("$LUA" -e 'io.write(package.cpath)');" in
    *";/usr/local/lib/lua/5.4/?.so;"*) ok "/usr/local/lib/lua/5.4 is on lua5.4's default cpath" ;;
    *) fail "/usr/local/lib/lua/5.4 is on lua5.4's default cpath" ;;
  esac
else
  fail "DESTDIR install with prefix /usr/local"
  sed 's/^/  | /' "$tmp/stage.log"
fi

echo "$failures failure(s)"
[ "$failures" -eq 0 ]
