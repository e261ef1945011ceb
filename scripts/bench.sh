#!/usr/bin/env bash
# scripts/bench.sh -- run every benchmark of a build.
#
# usage: scripts/bench.sh [build-dir]     (default: build)
#
# Runs each <build>/bench_* executable (from bench/*.c), then each
# bench/*.lua with <build>/braid, or with lua5.4 and <build>/braid.so, then
# each bench/*.sh (with the build dir as its argument).
# Exits non-zero if any benchmark fails; runs all of them regardless.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-build}
case "$build" in /*) ;; *) build="$root/$build" ;; esac
cd "$root"

export LUA_PATH="$root/lua/?.lua;$root/lua/?/init.lua;${LUA_PATH:-;}"
export LUA_CPATH="$build/?.so;${LUA_CPATH:-;}"

failed=0 ran=0
for exe in "$build"/bench_*; do
  [ -f "$exe" ] && [ -x "$exe" ] || continue
  echo "== $(basename "$exe")"
  "$exe" || { echo "!! $(basename "$exe") failed ($?)" >&2; failed=1; }
  ran=$((ran + 1))
done

for script in bench/*.lua; do
  [ -f "$script" ] || continue
  if [ -x "$build/braid" ]; then
    runner=("$build/braid")
  elif [ -f "$build/braid.so" ] && command -v lua5.4 >/dev/null; then
    runner=(lua5.4)
  else
    echo "!! $script: needs $build/braid or $build/braid.so" >&2
    failed=1
    continue
  fi
  echo "== $script"
  "${runner[@]}" "$script" || { echo "!! $script failed ($?)" >&2; failed=1; }
  ran=$((ran + 1))
done

# Shell benchmarks (bench/http.sh: wrk against servers it starts).
for script in bench/*.sh; do
  [ -f "$script" ] || continue
  echo "== $script"
  bash "$script" "$build" || { echo "!! $script failed ($?)" >&2; failed=1; }
  ran=$((ran + 1))
done

[ "$ran" -gt 0 ] || echo "bench: no benchmarks yet (bench/*.c, bench/*.lua)"
exit "$failed"
