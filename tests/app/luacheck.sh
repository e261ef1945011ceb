#!/usr/bin/env bash
# tests/app/luacheck.sh -- issue 15: luacheck (Debian lua-check) is clean
# over lua/, examples/ and tests/lua/ with the project's .luacheckrc.
#
# Env (set by ctest): BRAID_SRC.
set -u
here=$(cd "$(dirname "$0")" && pwd)
BRAID_SRC=${BRAID_SRC:-$(cd "$here/../.." && pwd)}
if ! command -v luacheck >/dev/null 2>&1; then
  echo "FAIL - luacheck not installed (apt-get install lua-check)"
  exit 1
fi
cd "$BRAID_SRC" || exit 1
if luacheck --no-color --formatter plain --config .luacheckrc lua examples tests/lua; then
  echo "ok - luacheck clean over lua/ examples/ tests/lua/"
else
  echo "FAIL - luacheck warnings above"
  exit 1
fi
