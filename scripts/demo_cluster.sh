#!/usr/bin/env bash
# scripts/demo_cluster.sh -- what `make demo-cluster` runs: the Twitter
# analyzer as one coordinator and two helper processes sharing the crawl
# through a NATS server (examples/twitter_cluster.lua): braid.nats.worklist
# for the pages, a queue-group service for the token pool.  Then the same
# again while one helper is killed (SIGKILL) halfway: the same answer.
#
# usage: scripts/demo_cluster.sh [build-dir [times [reps]]]   (default: build)
#   times: instead, the crawl's time with 1, 2 and 3 processes (each with
#   its own tokens), the median of reps runs (default 3) each: the table of
#   README's NATS section.
# nats-server listens on 127.0.0.1, on a port it picks (-p -1), with
# JetStream in a temp dir; it is stopped by its PID on exit.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-build}
mode=${2:-demo}
reps=${3:-3}
case "$build" in /*) ;; *) build="$root/$build" ;; esac
cd "$root"
export LUA_PATH="$root/lua/?.lua;$root/lua/?/init.lua;${LUA_PATH:-;}"
export LUA_CPATH="$build/?.so;${LUA_CPATH:-;}"
lua=${BRAID_LUA:-lua5.4}
server=$(command -v nats-server || ls /usr/sbin/nats-server 2>/dev/null || true)
if [ -z "$server" ]; then
  echo "demo-cluster: nats-server not found (Debian package nats-server)" >&2
  exit 1
fi

tmp=$(mktemp -d /tmp/braid-cluster-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  [ -n "${srv:-}" ] && kill "$srv" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

env -u LD_PRELOAD "$server" -a 127.0.0.1 -p -1 -js -sd "$tmp/js" > "$tmp/server.log" 2>&1 &
srv=$!
port=
for _ in $(seq 100); do
  if grep -q "Server is ready" "$tmp/server.log" 2>/dev/null; then
    port=$(sed -n 's/.*Listening for client connections on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$tmp/server.log" | head -1)
    break
  fi
  sleep 0.05
done
[ -n "$port" ] || { echo "demo-cluster: nats-server did not start" >&2; cat "$tmp/server.log" >&2; exit 1; }
url="nats://127.0.0.1:$port"
echo "nats-server on $url"

run() {  # run NAME KILL_AFTER(s or "") -> prints the coordinator's output
  local name=$1 kill_after=$2
  pids=()
  "$lua" examples/twitter_cluster.lua "$url" helper --name "$name" 2> "$tmp/$name.h1" &
  pids+=($!)
  "$lua" examples/twitter_cluster.lua "$url" helper --name "$name" 2> "$tmp/$name.h2" &
  pids+=($!)
  sleep 0.3
  if [ -n "$kill_after" ]; then
    ( sleep "$kill_after"; kill -9 "${pids[0]}" 2>/dev/null && echo "(killed helper ${pids[0]} with SIGKILL after ${kill_after} s)" >&2 ) &
  fi
  DEMO_PROCESSES=$([ -n "$kill_after" ] && echo 2 || echo 3) \
    timeout 120 "$lua" examples/twitter_cluster.lua "$url" coordinator --name "$name" | tee "$tmp/$name.out"
  wait "${pids[1]}" 2>/dev/null || true
  wait "${pids[0]}" 2>/dev/null || true
}

if [ "$mode" = times ]; then
  echo "processes  crawl time (s, median of $reps)  runs"
  for procs in 1 2 3; do
    runs=()
    for r in $(seq "$reps"); do
      name="t${procs}r${r}"
      pids=()
      for _ in $(seq 2 "$procs"); do
        "$lua" examples/twitter_cluster.lua "$url" helper --name "$name" 2> /dev/null &
        pids+=($!)
      done
      [ "$procs" -gt 1 ] && sleep 0.3
      t=$(DEMO_PROCESSES=$procs timeout 120 "$lua" examples/twitter_cluster.lua "$url" coordinator --name "$name" \
          | sed -n 's/^elapsed: \([0-9.]*\) s$/\1/p')
      for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
      runs+=("${t:-?}")
    done
    med=$(printf '%s\n' "${runs[@]}" | sort -n | sed -n "$(( (reps + 1) / 2 ))p")
    printf '%9d  %28s  %s\n' "$procs" "$med" "${runs[*]}"
  done
  exit 0
fi

echo "== 1 coordinator + 2 helpers"
run first ""
echo
echo "== again, one helper killed halfway"
run second 0.25
echo
if diff <(sed -n '1,/^total:/p' "$tmp/first.out") <(sed -n '1,/^total:/p' "$tmp/second.out") > /dev/null; then
  echo "the same answer with a helper killed: yes"
else
  echo "the same answer with a helper killed: NO"
  exit 1
fi
