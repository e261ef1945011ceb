#!/usr/bin/env bash
# tests/examples/weather_server.sh -- end-to-end test of examples/weather_server.lua.
#
# Starts the service on a free loopback port (with its in-process
# fake_owm_server) and checks, with curl and a braid.http client:
#   GET /weather?q=CA: 200, Content-Type: application/json; charset=utf-8,
#   Access-Control-Allow-Origin: * and the other Access-Control-Allow-*
#   headers, a JSON body that cjson decodes to CA's cities with fake_owm's
#   temperatures (in fake_owm's order); a WebSocket on /updates?q=NY&show=temp
#   gets NY's update only, in the temp view; the 51st /weather call from one
#   IP gets 429.  The server is stopped by closing its stdin, then by PID.
#
# Without braid.net (a build before it) the same checks run in one process
# over the in-memory transport of tests/lua/fakenet.lua, without curl.
set -u
here=$(cd "$(dirname "$0")" && pwd)
BRAID_SRC=${BRAID_SRC:-$(cd "$here/../.." && pwd)}
BRAID_LUA=${BRAID_LUA:-lua5.4}
example=${BRAID_EXAMPLE:-$BRAID_SRC/examples/weather_server.lua}
runner=${BRAID_BIN:-}
[ -x "$runner" ] || runner=$BRAID_LUA
export LUA_PATH="$BRAID_SRC/examples/?.lua;$BRAID_SRC/lua/?.lua;${LUA_PATH:-;;}"
tmp=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; exec 3>&- 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
failures=0
ok()   { echo "ok - $*"; }
fail() { echo "FAIL - $*"; failures=$((failures + 1)); }

cat > "$tmp/check.lua" <<'LUA'
local cjson, owm = require "cjson", require "fake_owm"
local body, addr, part, owm_url = arg[1] ~= "" and io.open(arg[1]):read("a"), arg[2], arg[3], arg[4]
local failures = 0
local function check(c, what) print((c and "ok - " or "FAIL - ") .. what); if not c then failures = failures + 1 end end
if part == "inproc" then
  -- No sockets in this build: the same service over the in-memory
  -- transport of tests/lua/fakenet.lua, headers checked through braid.http.
  local braid = require "braid"
  braid.http._set_test_transport(require("tests.lua.fakenet").new())
  local fake = assert(require("fake_owm_server").start("127.0.0.1:0", {}))
  local srv = assert(require("weather_server").start({ addr = "127.0.0.1:0",
    owm = "http://" .. fake:addr(), key = "demo-key" }))
  addr, owm_url = srv:addr(), "http://" .. fake:addr()
  local r = assert(braid.http.get("http://" .. addr .. "/weather?q=CA"))
  check(r.status == 200, "GET /weather?q=CA: 200")
  check(r.headers["content-type"] == "application/json; charset=utf-8", "Content-Type")
  check(r.headers["access-control-allow-origin"] == "*", "Access-Control-Allow-Origin: *")
  check(r.headers["access-control-allow-methods"] and r.headers["access-control-allow-headers"],
    "Access-Control-Allow-Methods/-Headers")
  body, part = r.body, "both"
end
if part == "body" or part == "both" then
  local rows = cjson.decode(body)
  local want = owm.cities("CA")
  local good = #rows == #want
  for i, c in ipairs(want) do
    local r = rows[i] or {}
    if r.name ~= c or r.temp ~= owm.answer(c, "CA").main.temp then good = false end
  end
  check(good, "the JSON array has CA's " .. #want .. " cities with their temperatures")
end
if part ~= "body" then
  local braid = require "braid"
  local http = braid.http
  local ws = assert(http.websocket("ws://" .. addr .. "/updates?q=NY&show=temp"))
  local hello = cjson.decode((assert(ws:recv(10))))   -- the subscription is in place
  check(hello.subscribed == true and hello.state == "NY", "the WebSocket says it subscribed to NY")
  assert(http.get("http://" .. addr .. "/weather?q=TX"))
  local r = assert(http.get("http://" .. addr .. "/weather?q=NY"))
  check(r.status == 200, "GET NY: 200")
  local msg = ws:recv(10)
  local u = msg and cjson.decode(msg) or {}
  check(u.state == "NY" and u.show == "temp", "the WebSocket got NY's update (not TX's), temp view")
  local only = #(u.cities or {}) == #owm.cities("NY")
  for _, c in ipairs(u.cities or {}) do
    if c.wind ~= nil or c.icon ~= nil or c.temp ~= owm.answer(c.name, "NY").main.temp then only = false end
  end
  check(only, "the temp view carries names and temperatures only")
  check(ws:recv(0.5) == nil, "no other update arrived")
  ws:close()
  -- calls so far from 127.0.0.1: curl CA, TX, NY = 3; 47 more are fine, the 51st is not
  local statuses = {}
  for _ = 4, 51 do statuses[#statuses + 1] = assert(http.get("http://" .. addr .. "/weather?q=CA")).status end
  local fine = true
  for i = 1, 47 do if statuses[i] ~= 200 then fine = false end end
  check(fine, "calls 4..50 from one IP: 200")
  check(statuses[48] == 429, "call 51 from one IP: 429 (got " .. tostring(statuses[48]) .. ")")
  local st = cjson.decode(assert(http.get(owm_url .. "/stats")).body)
  local by, peak = st.by_state, st.peak
  check(by.CA == #owm.cities("CA") and by.TX == #owm.cities("TX") and by.NY == #owm.cities("NY"),
    "memo: each city of CA, TX, NY fetched once for 50 requests")
  check(peak.CA <= 20 and peak.TX <= 20 and peak.CA > 1,
    "pmap: at most 20 lookups of a state at once, and more than one (CA peak " .. tostring(peak.CA) .. ")")
end
os.exit(failures == 0 and 0 or 1)
LUA
if ! "$BRAID_LUA" -e 'local b = require "braid"; os.exit(b.net and 0 or 1)'; then
  if "$BRAID_LUA" -e 'package.path = "'"$BRAID_SRC"'/examples/?.lua;" .. package.path
      local m = require "weather_server"; assert(m.start and m.VIEWS.temp)'; then
    ok "weather_server.lua loads as a module"
  else
    fail "weather_server.lua does not load"
  fi
  echo "ok - # this braid has no braid.net: the service runs in-process over tests/lua/fakenet.lua"
  (cd "$BRAID_SRC" && timeout 60 "$BRAID_LUA" "$tmp/check.lua" "" "" inproc) || failures=$((failures + 1))
  echo "$failures failure(s)"; [ "$failures" -eq 0 ]; exit
fi

mkfifo "$tmp/in"
"$runner" "$example" --port 0 < "$tmp/in" > "$tmp/out" 2> "$tmp/err" &
pid=$!
exec 3> "$tmp/in"           # holds the server's stdin open
addr=
for _ in $(seq 1 100); do
  addr=$(sed -n 's|^weather service on http://\([0-9.:]*\) .*|\1|p' "$tmp/out")
  [ -n "$addr" ] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$addr" ]; then
  fail "the service did not start"; sed 's/^/  | /' "$tmp/out" "$tmp/err"; exit 1
fi
ok "the service listens on $addr"

curl -s -D "$tmp/headers" -o "$tmp/body" --max-time 20 "http://$addr/weather?q=CA"
tr -d '\r' < "$tmp/headers" > "$tmp/h"
grep -q '^HTTP/1.1 200 OK$' "$tmp/h" && ok "curl: 200 OK" || { fail "curl: status"; cat "$tmp/h"; }
grep -qi '^content-type: application/json; charset=utf-8$' "$tmp/h" && ok "curl: Content-Type" || fail "curl: Content-Type"
grep -qi '^access-control-allow-origin: \*$' "$tmp/h" && ok "curl: Access-Control-Allow-Origin: *" || fail "curl: ACAO"
grep -qi '^access-control-allow-methods: ' "$tmp/h" && grep -qi '^access-control-allow-headers: ' "$tmp/h" \
  && ok "curl: Access-Control-Allow-Methods/-Headers" || fail "curl: Access-Control-Allow-*"

"$BRAID_LUA" "$tmp/check.lua" "$tmp/body" "$addr" body || failures=$((failures + 1))
owm=$(sed -n 's|^weather service on .* (OpenWeatherMap: \(.*\))$|\1|p' "$tmp/out")
timeout 60 "$BRAID_LUA" "$tmp/check.lua" "$tmp/body" "$addr" live "$owm" || failures=$((failures + 1))

exec 3>&-                    # EOF on stdin: the service closes
for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$pid" 2>/dev/null; then fail "the service did not stop on EOF"; else ok "the service stopped on EOF"; pid=; fi
if grep -v '^$' "$tmp/err" | grep -q .; then fail "stderr:"; sed 's/^/  | /' "$tmp/err" | head; fi
echo "$failures failure(s)"
[ "$failures" -eq 0 ]
