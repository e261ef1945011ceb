#!/usr/bin/env bash
# scripts/nats_fixture.sh start|stop DIR -- a nats-server for the specs of a
# sanitizer pass (ctest FIXTURES_SETUP / FIXTURES_CLEANUP), where the
# preloaded sanitizer runtime keeps io.popen from starting one.
#   start: nats-server on 127.0.0.1, a free port (-p -1), JetStream in
#          DIR/js; writes DIR/url and DIR/pid once it is ready (10 s bound).
#   stop:  stops the PID in DIR/pid (TERM, then KILL after 5 s).
set -eu
cmd=${1:?start|stop}
dir=${2:?DIR}
bin=${NATS_SERVER:-}
if [ -z "$bin" ]; then
  for p in /usr/sbin/nats-server /usr/bin/nats-server /usr/local/bin/nats-server; do
    if [ -x "$p" ]; then bin=$p; break; fi
  done
fi
case "$cmd" in
  start)
    rm -rf "$dir"
    mkdir -p "$dir"
    if [ -z "$bin" ]; then
      echo "nats_fixture: nats-server not found (the spec skips)"
      exit 0
    fi
    env -u LD_PRELOAD "$bin" -a 127.0.0.1 -p -1 -js -sd "$dir/js" > "$dir/server.log" 2>&1 &
    pid=$!
    echo "$pid" > "$dir/pid"
    for _ in $(seq 1 200); do
      if grep -q "Server is ready" "$dir/server.log" 2>/dev/null; then
        port=$(sed -n 's/.*Listening for client connections on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$dir/server.log" | head -1)
        echo "nats://127.0.0.1:$port" > "$dir/url"
        echo "nats_fixture: nats-server $pid on port $port"
        exit 0
      fi
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.05
    done
    cat "$dir/server.log" >&2 || true
    kill -9 "$pid" 2>/dev/null || true
    exit 1
    ;;
  stop)
    [ -f "$dir/pid" ] || exit 0
    pid=$(cat "$dir/pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || { rm -rf "$dir"; exit 0; }
      sleep 0.05
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -rf "$dir"
    ;;
  *) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
