#!/usr/bin/env bash
# bench/http_callgrind.sh -- user-space instructions per hello-world request
# over real sockets: bench/http_hello.lua under callgrind on a free
# 127.0.0.1 port, wrk -t1 -c10 for 2 s of warm-up, the counters zeroed,
# wrk for SECS more, the counters dumped; prints total instructions
# divided by the requests wrk completed.  Every instruction of the
# server's threads counts (parsing, the handler, the answer, the
# scheduler, the netpoller, idle spinning), none of the kernel's.
#
#   bash bench/http_callgrind.sh [build-dir=build]     (SECS=5)
#
# Under valgrind the server's threads run one at a time, so the figure is
# for comparing builds (run two builds in turn), not a time.  LUALIB=dir
# puts a liblua5.4.so.0 built with symbols first on the library path, for
# a per-function breakdown (callgrind_annotate on the kept file, named in
# the output); the total does not depend on it.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-build}
case "$build" in /*) ;; *) build="$root/$build" ;; esac
secs=${SECS:-5}
for t in valgrind callgrind_control callgrind_annotate wrk curl; do
  command -v "$t" >/dev/null 2>&1 || { echo "bench/http_callgrind.sh: skipped (no $t)"; exit 0; }
done

tmp=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
cd "$root"
LD_LIBRARY_PATH=${LUALIB:-} valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.%p" \
  "$build/braid" bench/http_hello.lua "127.0.0.1:$port" >"$tmp/out" 2>"$tmp/err" &
pid=$!
up=0
for _ in $(seq 300); do
  curl -sf --max-time 2 "http://127.0.0.1:$port/" >/dev/null && { up=1; break; }
  sleep 0.2
done
[ "$up" = 1 ] || { echo "bench/http_callgrind.sh: the server did not start"; tail -3 "$tmp/err"; exit 1; }
wrk -t1 -c10 -d2s "http://127.0.0.1:$port/" >/dev/null
callgrind_control -z "$pid" >/dev/null 2>&1
out=$(wrk -t1 -c10 -d"${secs}s" "http://127.0.0.1:$port/")
callgrind_control -d "$pid" >/dev/null 2>&1
sleep 0.5
reqs=$(echo "$out" | awk '/requests in/ { print $1 }')
f=$(ls -t "$tmp"/cg.* | head -n1)
ir=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
if [ -z "$reqs" ] || [ -z "$ir" ] || [ "$reqs" -eq 0 ]; then
  echo "bench/http_callgrind.sh: no measurement"
  exit 1
fi
keep="${TMPDIR:-/tmp}/braid-http-callgrind.out"
cp "$f" "$keep"
echo "braid.http over sockets under callgrind: $reqs requests, $((ir / reqs)) instructions per request (profile: $keep)"
