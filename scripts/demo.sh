#!/usr/bin/env bash
# scripts/demo.sh -- what `make demo` runs: the Twitter analyzer
# (examples/twitter_analyzer.lua), a four-stage crawl against a simulated,
# rate-limited Twitter API, with N tokens and then with one.
#
# usage: scripts/demo.sh [build-dir [analyzer options]]   (default: build)
#
# Runs <build>/braid examples/twitter_analyzer.lua, or, without the
# interpreter, lua5.4 with <build>/braid.so on LUA_CPATH.  The source lua/
# comes first on LUA_PATH for either.  The progress line goes to stderr
# when it is a terminal.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-build}
[ $# -gt 0 ] && shift
case "$build" in /*) ;; *) build="$root/$build" ;; esac
cd "$root"

example=examples/twitter_analyzer.lua
export LUA_PATH="$root/lua/?.lua;$root/lua/?/init.lua;${LUA_PATH:-;}"
export LUA_CPATH="$build/?.so;${LUA_CPATH:-;}"

if [ -x "$build/braid" ]; then
  runner=("$build/braid")
elif [ -f "$build/braid.so" ] && command -v lua5.4 >/dev/null; then
  runner=(lua5.4)
else
  echo "demo: nothing to run: need $build/braid, or $build/braid.so and lua5.4" \
       "(make build)" >&2
  exit 1
fi

"${runner[@]}" "$example" "$@"

echo
echo "This was $example (try --tokens 8). Next, the essay's weather service over"
echo "HTTP and WebSocket: build/braid examples/weather_server.lua (Ctrl-D stops it),"
echo "then in another terminal curl -i 'http://127.0.0.1:4912/weather?q=CA'; also"
echo "examples/weather.lua (the same patterns in one process) and examples/repl.md."
