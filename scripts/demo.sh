#!/usr/bin/env bash
# scripts/demo.sh -- run the best demo the current tree can run.
#
# usage: scripts/demo.sh [build-dir]     (default: build)
#
# In order of preference:
#   1. <build>/braid examples/twitter_analyzer.lua
#   2. lua5.4 examples/twitter_analyzer.lua, with <build>/braid.so and lua/
#   3. <build>/core_demo                       (from examples/core_demo.c)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-build}
case "$build" in /*) ;; *) build="$root/$build" ;; esac
cd "$root"

example=examples/twitter_analyzer.lua

# The source lua/ and the build's braid.so come first, for either runner.
export LUA_PATH="$root/lua/?.lua;$root/lua/?/init.lua;${LUA_PATH:-;}"
export LUA_CPATH="$build/?.so;${LUA_CPATH:-;}"

if [ -x "$build/braid" ] && [ -f "$example" ]; then
  exec "$build/braid" "$example"
fi
if [ -f "$build/braid.so" ] && [ -f "$example" ] && command -v lua5.4 >/dev/null; then
  exec lua5.4 "$example"
fi
if [ -x "$build/core_demo" ]; then
  exec "$build/core_demo"
fi

echo "demo: nothing to run yet: need $build/braid or $build/braid.so plus" \
     "$example, or $build/core_demo (examples/core_demo.c)" >&2
exit 1
