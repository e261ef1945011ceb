#!/usr/bin/env bash
# bench/http_cpu.sh -- where braid.http's time goes under load: for
# bench/http_hello.lua on each worker count of BENCH_WORKERS (default
# "1 2"), one wrk -t1 -c100 run of BENCH_SECS (default 6) after a 2 s
# warm-up, BENCH_ROUNDS (default 2) rounds taking the counts in turn; per
# run it prints requests/s, p99, the server's user and system CPU per
# request (/proc/<pid>/stat), the machine's idle time (/proc/stat, in % of
# one CPU) and braid.stats()'s idle polls and wake-ups per second.  The
# load generator shares the machine, as in bench/http.sh.
#
#   bash bench/http_cpu.sh [build-dir=build]
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-build}
case "$build" in /*) ;; *) build="$root/$build" ;; esac
cd "$root"
secs=${BENCH_SECS:-6}
rounds=${BENCH_ROUNDS:-2}
counts=${BENCH_WORKERS:-"1 2"}

for t in wrk curl; do
  if ! command -v "$t" >/dev/null 2>&1; then
    echo "bench/http_cpu.sh: skipped (no $t; scripts/bench-deps.sh installs it)"
    exit 0
  fi
done

tmp=$(mktemp -d)
pid=""
cleanup() {
  [ -n "$pid" ] && { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; }
  rm -rf "$tmp"
}
trap cleanup EXIT

hz=$(getconf CLK_TCK)
# utime + stime of process $1, in clock ticks.
proc_ticks() { awk '{ print $14, $15 }' "/proc/$1/stat"; }
# Idle + iowait ticks of the whole machine.
idle_ticks() { awk '/^cpu / { print $5 + $6 }' /proc/stat; }

run() {
  local w=$1
  BRAID_BENCH_WORKERS=$w BRAID_BENCH_STATS=1 "$build/braid" bench/http_hello.lua 127.0.0.1:0 \
    >"$tmp/out" 2>"$tmp/err" &
  pid=$!
  local addr="" i
  for i in $(seq 100); do
    addr=$(head -n1 "$tmp/out" 2>/dev/null)
    [ -n "$addr" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$addr" ]; then
    echo "  workers=$w: the server did not start: $(cat "$tmp/err")"
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; pid=""
    return 1
  fi
  wrk -t1 -c100 -d2s "http://$addr/" >/dev/null 2>&1
  local s0 s1 u0 st0 u1 st1 i0 i1 out
  s0=$(curl -sf --max-time 2 "http://$addr/_stats")
  read -r u0 st0 < <(proc_ticks "$pid")
  i0=$(idle_ticks)
  out=$(wrk -t1 -c100 -d"${secs}s" --latency "http://$addr/" 2>&1)
  i1=$(idle_ticks)
  read -r u1 st1 < <(proc_ticks "$pid")
  s1=$(curl -sf --max-time 2 "http://$addr/_stats")
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; pid=""
  awk -v w="$w" -v secs="$secs" -v hz="$hz" -v u="$((u1 - u0))" -v st="$((st1 - st0))" \
      -v idle="$((i1 - i0))" -v s0="$s0" -v s1="$s1" '
    /Requests\/sec/ { rps = $2 }
    / 99%/ { p99 = $2 }
    END {
      split(s0, a, " "); split(s1, b, " ")
      n = rps * secs
      if (n <= 0) { print "  workers=" w ": no requests"; exit }
      if (s0 == "" || s1 == "") ps = "polls and wake-ups n/a (no /_stats answer)"
      else ps = sprintf("%.0f polls/s, %.0f wake-ups/s", (b[1] - a[1]) / secs, (b[2] - a[2]) / secs)
      printf "  workers=%s: %.0f requests/s, p99 %s, user %.2f us + system %.2f us per request, idle %.0f%% of a CPU, %s\n",
        w, rps, p99, u / hz / n * 1e6, st / hz / n * 1e6, idle / hz / secs * 100, ps
    }' <<<"$out"
}

echo "http_cpu: bench/http_hello.lua under wrk -t1 -c100 -d${secs}s, $rounds rounds"
for r in $(seq "$rounds"); do
  for w in $counts; do run "$w"; done
done
