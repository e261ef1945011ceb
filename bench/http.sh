#!/usr/bin/env bash
# bench/http.sh -- hello-world HTTP requests/s and p99 latency with wrk
# (-t1 -c100, keep-alive) against
#
#   braid.http   bench/http_hello.lua, on 2 workers (the default on 2 cores)
#   nginx+Lua    nginx-light + libnginx-mod-http-lua, content_by_lua_block,
#                2 worker processes (OpenResty's model)
#   Go net/http  bench/peers/http_hello.go (GOMAXPROCS = the cores)
#   lua-http     bench/peers/http_hello_luahttp.lua: lua-http (cqueues),
#                one process, on Debian's 5.3/5.2 module paths
#
# and, each round, braid's weather service (examples/weather_server.lua,
# its fake OpenWeatherMap in the same process, the per-IP limit lifted)
# on GET /weather?q=CA with a warm memo, beside braid's hello-world of the
# same round (issue 12's target: within 2x).
#
# Every server listens on a free 127.0.0.1 port, runs for bounded time and
# is stopped by its PID.  Each figure is the median of ROUNDS runs; the
# rounds go round the servers in turn.  A peer that is not installed
# (scripts/bench-deps.sh installs them) is skipped.
#
#   bash bench/http.sh [build-dir=build]      (BENCH_SECS=10 BENCH_ROUNDS=3)
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-build}
case "$build" in /*) ;; *) build="$root/$build" ;; esac
cd "$root"
secs=${BENCH_SECS:-10}
rounds=${BENCH_ROUNDS:-3}

if ! command -v wrk >/dev/null 2>&1; then
  echo "bench/http.sh: skipped (no wrk; scripts/bench-deps.sh installs it)"
  exit 0
fi

tmp=$(mktemp -d)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  rm -rf "$tmp"
}
trap cleanup EXIT

# A free loopback port (the kernel's pick, released again at once).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Waits (at most 10 s) until the server at $1 answers; 0 when it does.
wait_http() {
  local i
  for i in $(seq 100); do
    [ "$(curl -sf --max-time 1 "http://$1/")" = "Hello, world!" ] && return 0
    sleep 0.1
  done
  return 1
}

# Runs "$@" in the background; its first line of output is its address.
# Sets addr and pid.
start_printing() {
  local out="$tmp/out.$RANDOM"
  "$@" >"$out" 2>"$out.err" &
  pid=$!
  pids+=("$pid")
  addr=""
  local i
  for i in $(seq 100); do
    addr=$(head -n1 "$out" 2>/dev/null)
    [ -n "$addr" ] && break
    sleep 0.1
  done
  [ -n "$addr" ] && wait_http "$addr"
}

start_nginx() {
  local port dir="$tmp/nginx"
  port=$(free_port) || return 1
  mkdir -p "$dir/logs"
  cat >"$dir/nginx.conf" <<NGINX
daemon off;
master_process on;
worker_processes 2;
pid $dir/nginx.pid;
error_log $dir/logs/error.log;
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  server {
    listen 127.0.0.1:$port;
    location / {
      default_type text/plain;
      content_by_lua_block { ngx.print("Hello, world!\n") }
    }
  }
}
NGINX
  nginx -p "$dir" -e "$dir/logs/error.log" -c "$dir/nginx.conf" 2>"$dir/stderr" &
  pid=$!
  pids+=("$pid")
  addr="127.0.0.1:$port"
  wait_http "$addr"
}

stop() {
  kill "$1" 2>/dev/null
  wait "$1" 2>/dev/null
  local p keep=()
  for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  pids=("${keep[@]}")
}

# wrk against $1 (path $2, default /); prints "requests/s p99-in-ms".
run_wrk() {
  wrk -t1 -c100 -d"${secs}s" --latency "http://$1${2:-/}" 2>&1 | awk '
    /Requests\/sec:/ { rps = $2 }
    $1 == "99%" {
      v = $2
      if (v ~ /us$/) { sub(/us$/, "", v); p = v / 1000 }
      else if (v ~ /ms$/) { sub(/ms$/, "", v); p = v }
      else if (v ~ /s$/) { sub(/s$/, "", v); p = v * 1000 }
    }
    END { if (rps != "") printf "%s %s\n", rps, p }'
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) exit; if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

names=("braid.http" "nginx+Lua" "Go net/http" "lua-http")
declare -A skip results_rps results_p99

if [ -x "$build/braid" ]; then braid=("$build/braid")
else braid=(env LUA_CPATH="$build/?.so;;" lua5.4); fi

goexe="$tmp/http_hello_go"
if ! command -v go >/dev/null 2>&1; then skip["Go net/http"]="no go toolchain"
elif ! go build -o "$goexe" bench/peers/http_hello.go 2>"$tmp/go.err"; then skip["Go net/http"]="go build failed"; fi
luahttp_path="/usr/share/lua/5.3/?.lua;/usr/share/lua/5.3/?/init.lua;/usr/share/lua/5.2/?.lua;/usr/share/lua/5.2/?/init.lua;;"
if ! LUA_PATH="$luahttp_path" lua5.4 -e 'require "http.server"' >/dev/null 2>&1; then
  skip["lua-http"]="no lua-http (Debian lua-http + lua-cqueues)"
fi
if ! command -v nginx >/dev/null 2>&1 || [ ! -f /usr/lib/nginx/modules/ngx_http_lua_module.so ]; then
  skip["nginx+Lua"]="no nginx-light + libnginx-mod-http-lua"
fi

echo "http: wrk -t1 -c100 -d${secs}s, hello world (14-byte body), median of $rounds runs"
declare -A ratios_go ratios_ngx
weather_rps="" weather_p99="" weather_ratio=""
for round in $(seq "$rounds"); do
  declare -A this=()
  for name in "${names[@]}"; do
    [ -n "${skip[$name]:-}" ] && continue
    ok=0
    case "$name" in
      braid.http) start_printing "${braid[@]}" bench/http_hello.lua 127.0.0.1:0 && ok=1 ;;
      nginx+Lua) start_nginx && ok=1 ;;
      "Go net/http") start_printing "$goexe" 127.0.0.1:0 && ok=1 ;;
      lua-http) start_printing env LUA_PATH="$luahttp_path" lua5.4 bench/peers/http_hello_luahttp.lua && ok=1 ;;
    esac
    if [ "$ok" = 1 ]; then
      r=$(run_wrk "$addr")
    else
      r=""
    fi
    stop "$pid"
    if [ -z "$r" ]; then
      echo "  round $round $name: failed to start or to measure"
      [ "$name" = nginx+Lua ] && cat "$tmp/nginx/logs/error.log" 2>/dev/null | tail -3
      continue
    fi
    echo "  round $round $name: $(echo "$r" | awk '{ printf "%.0f requests/s, p99 %.2f ms", $1, $2 }')"
    results_rps[$name]+="${r%% *} "
    results_p99[$name]+="${r##* } "
    this[$name]=${r%% *}
  done
  # The weather service, beside this round's braid hello-world.
  wport=$(free_port)
  if [ -n "$wport" ] && [ -n "${this[braid.http]:-}" ]; then
    # It serves until its stdin closes: a FIFO this shell holds open.
    [ -p "$tmp/weather.in" ] || { mkfifo "$tmp/weather.in"; exec 9<>"$tmp/weather.in"; }
    "${braid[@]}" examples/weather_server.lua --port "$wport" --limit 1000000000 \
      <"$tmp/weather.in" >"$tmp/weather.out" 2>"$tmp/weather.err" &
    wpid=$!
    pids+=("$wpid")
    wok=0
    for i in $(seq 100); do       # the first answer also warms the memo
      curl -sf --max-time 2 "http://127.0.0.1:$wport/weather?q=CA" >/dev/null && { wok=1; break; }
      sleep 0.1
    done
    w=""
    [ "$wok" = 1 ] && w=$(run_wrk "127.0.0.1:$wport" "/weather?q=CA")
    stop "$wpid"
    if [ -n "$w" ]; then
      echo "  round $round braid weather: $(echo "$w" | awk '{ printf "%.0f requests/s, p99 %.2f ms", $1, $2 }')"
      weather_rps+="${w%% *} "
      weather_p99+="${w##* } "
      weather_ratio+="$(awk -v a="${w%% *}" -v b="${this[braid.http]}" 'BEGIN { print b / a }') "
    else
      echo "  round $round braid weather: failed to start or to measure"
      tail -3 "$tmp/weather.err"
    fi
  fi
  # This round's ratios (the servers ran within a minute of each other).
  for name in "${names[@]}"; do
    [ -n "${this[$name]:-}" ] || continue
    [ -n "${this[Go net/http]:-}" ] &&
      ratios_go[$name]+="$(awk -v a="${this[$name]}" -v b="${this[Go net/http]}" 'BEGIN { print a / b }') "
    [ -n "${this[nginx+Lua]:-}" ] &&
      ratios_ngx[$name]+="$(awk -v a="${this[$name]}" -v b="${this[nginx+Lua]}" 'BEGIN { print a / b }') "
  done
  unset this
done

go=$(echo "${results_rps[Go net/http]:-}" | tr ' ' '\n' | grep . | median)
ngx=$(echo "${results_rps[nginx+Lua]:-}" | tr ' ' '\n' | grep . | median)
echo
echo "| server | requests/s | p99 | vs Go | vs nginx+Lua | per-round ratios: vs Go, vs nginx+Lua |"
echo "|---|---:|---:|---:|---:|---:|"
for name in "${names[@]}"; do
  if [ -n "${skip[$name]:-}" ] || [ -z "${results_rps[$name]:-}" ]; then
    echo "| $name | skipped: ${skip[$name]:-no run} | | | | |"
    continue
  fi
  rps=$(echo "${results_rps[$name]}" | tr ' ' '\n' | grep . | median)
  p99=$(echo "${results_p99[$name]}" | tr ' ' '\n' | grep . | median)
  rg=$(echo "${ratios_go[$name]:-}" | tr ' ' '\n' | grep . | median)
  rx=$(echo "${ratios_ngx[$name]:-}" | tr ' ' '\n' | grep . | median)
  awk -v n="$name" -v r="$rps" -v p="$p99" -v g="${go:-}" -v x="${ngx:-}" -v rg="${rg:-}" -v rx="${rx:-}" 'BEGIN {
    printf "| %s | %.0f | %.2f ms | %s | %s | %s, %s |\n", n, r, p,
      (g != "" ? sprintf("%.2fx", r / g) : "-"), (x != "" ? sprintf("%.2fx", r / x) : "-"),
      (rg != "" ? sprintf("%.2fx", rg) : "-"), (rx != "" ? sprintf("%.2fx", rx) : "-") }'
done
if [ -n "$weather_rps" ]; then
  wr=$(echo "$weather_rps" | tr ' ' '\n' | grep . | median)
  wp=$(echo "$weather_p99" | tr ' ' '\n' | grep . | median)
  wx=$(echo "$weather_ratio" | tr ' ' '\n' | grep . | median)
  echo
  awk -v r="$wr" -v p="$wp" -v x="$wx" 'BEGIN {
    printf "braid weather service, GET /weather?q=CA (warm memo): %.0f requests/s, p99 %.2f ms; hello-world is %.2fx that (per-round median; target <= 2x)\n", r, p, x }'
fi
