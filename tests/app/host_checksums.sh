#!/usr/bin/env bash
# tests/app/host_checksums.sh -- the example C host (examples/host/):
# braid_host DIR must print exactly what sha256sum prints for every regular
# file under DIR, sorted by path, for a generated tree of a few hundred
# files (empty, small, larger than the host's 64 KiB read buffer, names
# with spaces, a backslash and a newline, a symbolic link that is not
# followed).  Also: one native thread gives the same output, a missing
# directory and a missing file fail cleanly, a bad command line is a usage
# error.
#
# Env (set by ctest): BRAID_BUILD (the build dir holding braid_host),
# BRAID_SRC.  Prints "ok - ..." / "FAIL - ..."; exits 1 if any failed.
set -u

here=$(cd "$(dirname "$0")" && pwd)
BRAID_SRC=${BRAID_SRC:-$(cd "$here/../.." && pwd)}
BUILD=${BRAID_BUILD:-$BRAID_SRC/build}
H=$(cd "$BUILD" 2>/dev/null && pwd)/braid_host
if [ ! -x "$H" ]; then
  echo "FAIL - no braid_host at $H (it needs OpenSSL's libcrypto: libssl-dev)"
  exit 1
fi
command -v sha256sum >/dev/null || { echo "FAIL - no sha256sum"; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
ok()   { echo "ok - $1"; }
fail() { echo "FAIL - $1"; failures=$((failures + 1)); }

# The tree: 300 files in 10 directories (some nested), sizes from 0 to
# about 300 KiB, plus the awkward names.
tree=$tmp/tree
for d in $(seq 0 9); do
  sub=$tree/d$d
  [ $((d % 3)) -eq 0 ] && sub=$tree/d$d/nested/deeper
  mkdir -p "$sub"
  for f in $(seq 0 29); do
    n=$(( (d * 30 + f) * 997 % 300000 ))
    head -c "$n" /dev/urandom > "$sub/file $f.bin"
  done
done
: > "$tree/empty"
printf 'back' > "$tree/back\\slash"
printf 'new' > "$tree/new
line"
ln -s d0 "$tree/link-to-d0"
ln -s "file 0.bin" "$tree/d1/link-to-file"
count=$(find "$tree" -type f -printf x | wc -c)
[ "$count" -ge 300 ] && ok "generated $count files" || fail "generated only $count files"

(cd "$tmp" && find tree -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) > "$tmp/expected"

(cd "$tmp" && "$H" tree > "$tmp/got" 2> "$tmp/err"); rc=$?
if [ "$rc" = 0 ] && cmp -s "$tmp/got" "$tmp/expected"; then
  ok "braid_host DIR matches sha256sum ($(wc -l < "$tmp/got") lines)"
else
  fail "braid_host DIR (rc=$rc) differs from sha256sum"
  diff "$tmp/got" "$tmp/expected" | head -20
  head -5 "$tmp/err"
fi
[ -s "$tmp/err" ] && fail "stderr not empty: $(head -3 "$tmp/err")" || ok "nothing on stderr"

# sha256sum -c accepts the output as its own.
if (cd "$tmp" && sha256sum --quiet -c got) > "$tmp/check" 2>&1; then
  ok "sha256sum -c verifies the output"
else
  fail "sha256sum -c: $(head -3 "$tmp/check")"
fi

# One native thread: same output.
(cd "$tmp" && BRAID_HOST_THREADS=1 "$H" tree) > "$tmp/got1" 2>&1
cmp -s "$tmp/got1" "$tmp/expected" && ok "one native thread gives the same output" \
  || fail "one native thread: output differs"

# A directory given with a trailing slash, and by absolute path.
(cd "$tmp" && find "$tmp/tree/" -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) > "$tmp/expected_abs"
"$H" "$tmp/tree/" > "$tmp/got_abs" 2>&1
cmp -s "$tmp/got_abs" "$tmp/expected_abs" && ok "absolute path with a trailing slash" \
  || fail "absolute path with a trailing slash: output differs"

# Failures.
"$H" "$tmp/nonexistent" > "$tmp/o" 2> "$tmp/e"; rc=$?
if [ "$rc" = 1 ] && grep -q "nonexistent: No such file or directory" "$tmp/e"; then
  ok "a missing directory: status 1 and the reason"
else
  fail "a missing directory: rc=$rc, stderr: $(head -3 "$tmp/e")"
fi
cat > "$tmp/missing.lua" <<'LUA'
local braid = require "braid"
local ok, err = braid.native.sha256_file(arg[1] .. "/no such file"):wait()
assert(ok == false and err:find("no such file: No such file or directory", 1, true), err)
local ok2, err2 = pcall(function() return braid.native.sha256_file():await() end)
assert(not ok2 and err2:find("a path (string) expected", 1, true), err2)
local ok3, err3 = pcall(function() return braid.native.not_registered() end)
assert(not ok3 and err3:find("braid: no native function 'not_registered' %(registered: .*sha256_file"), err3)
print("fine")
LUA
out=$("$H" -s "$tmp/missing.lua" "$tmp" 2>&1); rc=$?
[ "$rc" = 0 ] && [ "$out" = fine ] && ok "a missing file rejects with the reason" \
  || fail "a missing file: rc=$rc: $out"
"$H" > /dev/null 2>&1; rc=$?
[ "$rc" = 2 ] && ok "no argument: usage, status 2" || fail "no argument: rc=$rc"
"$H" a b > /dev/null 2>&1; rc=$?
[ "$rc" = 2 ] && ok "two arguments: usage, status 2" || fail "two arguments: rc=$rc"

[ "$failures" -eq 0 ] || { echo "$failures check(s) failed"; exit 1; }
echo "all checks passed"
