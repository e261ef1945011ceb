#!/usr/bin/env bash
# tests/app/exports.sh -- braid exports its documented API and nothing else.
#
# The library is built with -fvisibility=hidden; the public functions carry
# BRAID_API (include/braid.h, include/braid_errno.h).  This test checks:
#
#   1. the list below is exactly the BRAID_API functions the public headers
#      declare (a function added to braid.h must be added here, on purpose);
#   2. `nm -D --defined-only braid.so` is exactly that list: no internal
#      braid__* (or core braid_chan_new, ...) symbol leaks, and no public
#      one is lost;
#   3. in the static archives (libbraid_core.a, libbraid_bindings.a) every
#      defined global symbol of default visibility is in the list, so that a
#      host linking them into its own shared object exports no internals.
#
# Env (set by ctest): BRAID_BUILD (the build dir), BRAID_SRC.
# Prints "ok - ..." / "FAIL - ..." per check; exits 1 if any failed.
set -u

here=$(cd "$(dirname "$0")" && pwd)
BRAID_SRC=${BRAID_SRC:-$(cd "$here/../.." && pwd)}
BUILD=${BRAID_BUILD:-$BRAID_SRC/build}

# The documented names: include/braid.h and include/braid_errno.h.
expected='
braid_array_push
braid_call_cancelled
braid_call_error
braid_call_name
braid_call_return
braid_chan_close_value
braid_chan_create
braid_chan_is_closed
braid_chan_len
braid_chan_recv_value
braid_chan_ref
braid_chan_send_value
braid_chan_unref
braid_check_chan
braid_check_future
braid_config_init
braid_deadline_after
braid_err_name
braid_future_await_values
braid_future_cancel
braid_future_create
braid_future_ref
braid_future_reject_value
braid_future_resolve_values
braid_future_unref
braid_interrupt
braid_interrupt_clear
braid_map_get
braid_map_set
braid_native_register
braid_push_chan
braid_push_future
braid_runtime_free
braid_runtime_new
braid_runtime_open
braid_strerror
braid_value_clear
braid_value_copy
braid_value_init_array
braid_value_init_boolean
braid_value_init_chan
braid_value_init_cstring
braid_value_init_future
braid_value_init_integer
braid_value_init_map
braid_value_init_nil
braid_value_init_number
braid_value_init_string
luaopen_braid
'

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
ok()   { echo "ok - $1"; }
fail() { echo "FAIL - $1"; failures=$((failures + 1)); }

echo "$expected" | grep -v '^$' | LC_ALL=C sort -u >"$tmp/expected"

# 1. The list is the headers' BRAID_API declarations.
for h in braid.h braid_errno.h; do
  [ -f "$BRAID_SRC/include/$h" ] || { fail "include/$h exists"; exit 1; }
done
# The first identifier followed by '(' on a BRAID_API line is the function.
cat "$BRAID_SRC/include/braid.h" "$BRAID_SRC/include/braid_errno.h" |
  grep -E '^BRAID_API ' | sed -E 's/^([^(]*[^A-Za-z0-9_(])?([A-Za-z_][A-Za-z0-9_]*)\(.*/\2/' |
  LC_ALL=C sort -u >"$tmp/declared"
if [ "$(wc -l <"$tmp/declared")" -lt 40 ]; then
  fail "found the BRAID_API declarations in include/ (only $(wc -l <"$tmp/declared"))"
elif diff -u "$tmp/expected" "$tmp/declared" >"$tmp/d1"; then
  ok "the list is the $(wc -l <"$tmp/declared") BRAID_API functions of include/"
else
  fail "the list and include/'s BRAID_API declarations differ (- list, + headers)"
  sed 's/^/  | /' "$tmp/d1"
fi

# 2. braid.so exports exactly the list.  (Never the sanitize-* trees' copy.)
so="$BUILD/braid.so"
if [ ! -f "$so" ]; then
  fail "$so exists"
else
  nm -D --defined-only "$so" | awk 'NF >= 3 { print $3 }' | sed 's/@.*//' |
    LC_ALL=C sort -u >"$tmp/exported"
  if diff -u "$tmp/expected" "$tmp/exported" >"$tmp/d2"; then
    ok "braid.so exports exactly the $(wc -l <"$tmp/exported") documented names"
  else
    fail "braid.so's dynamic symbols differ from the list (- missing, + leaked)"
    sed 's/^/  | /' "$tmp/d2"
  fi
fi

# 3. The static archives: defined GLOBAL/WEAK symbols of DEFAULT visibility.
for lib in libbraid_core.a libbraid_bindings.a; do
  a="$BUILD/$lib"
  if [ ! -f "$a" ]; then
    fail "$a exists"
    continue
  fi
  # readelf -sW: Num: Value Size Type Bind Vis Ndx Name
  readelf -sW "$a" 2>/dev/null |
    awk '$5 == "GLOBAL" || $5 == "WEAK" { if ($6 == "DEFAULT" && $7 != "UND") print $8 }' |
    sed 's/@.*//' | LC_ALL=C sort -u >"$tmp/visible.$lib"
  LC_ALL=C comm -23 "$tmp/visible.$lib" "$tmp/expected" >"$tmp/leak.$lib"
  if [ ! -s "$tmp/visible.$lib" ]; then
    fail "$lib has default-visibility symbols to check (readelf found none)"
  elif [ -s "$tmp/leak.$lib" ]; then
    fail "$lib: symbols of default visibility that are not in the list"
    sed 's/^/  | /' "$tmp/leak.$lib"
  else
    ok "$lib: its $(wc -l <"$tmp/visible.$lib") default-visibility symbols are all documented"
  fi
done

[ "$failures" -eq 0 ] || { echo "$failures check(s) failed"; exit 1; }
echo "all exports checks passed"
