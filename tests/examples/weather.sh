#!/usr/bin/env bash
# tests/examples/weather.sh -- smoke test of examples/weather.lua.
#
# Runs the example with the braid interpreter and with lua5.4 + braid.so
# and checks its output against fake_owm.expected(), computed sequentially:
# every row's min/max/mean for its state, the lookups per state (each state
# looked up once however many requests asked at once: memo), the memo and
# broker counters, the dashboard's temperatures, the call that times out,
# the per-IP counts (recounted from the rows), and that the output, the
# "elapsed:" line aside, is the same for both runners.
#
# Env (set by ctest): BRAID_SRC, BRAID_BIN, BRAID_LUA, LUA_PATH, LUA_CPATH,
# BRAID_EXAMPLE.  Prints "ok - ..." / "FAIL - ..."; exits 1 if any failed.
set -u

here=$(cd "$(dirname "$0")" && pwd)
BRAID_SRC=${BRAID_SRC:-$(cd "$here/../.." && pwd)}
BRAID_LUA=${BRAID_LUA:-lua5.4}
example=${BRAID_EXAMPLE:-$BRAID_SRC/examples/weather.lua}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
ok()   { echo "ok - $*"; }
fail() { echo "FAIL - $*"; failures=$((failures + 1)); }

# The checker: reads the output on stdin, prints ok/FAIL lines.
cat > "$tmp/check.lua" <<'LUA'
local owm = require "fake_owm"
local name = arg[1]
local out = io.read("a")
local failures = 0
local function check(cond, what)
  print((cond and "ok - " or "FAIL - ") .. name .. ": " .. what)
  if not cond then failures = failures + 1 end
end
local want = owm.expected({ "CA", "NY", "TX", "WA" })

local rows, per_ip, row_ok = 0, {}, true
for i, ip, state, cities, min, max, mean in
    out:gmatch("\n *(%d+)  (%S+) +(%u%u) +200 +(%d+) +([%d.]+) +([%d.]+) +([%d.]+)") do
  rows = rows + 1
  local w = want[state]
  local got = ("%d %.1f %.1f %.1f"):format(cities, min, max, mean)
  local exp = ("%d %.1f %.1f %.1f"):format(w.cities, w.min, w.max, w.mean)
  if got ~= exp then
    row_ok = false
    print(("  row %s (%s): got %s, want %s"):format(i, state, got, exp))
  end
  per_ip[ip] = (per_ip[ip] or 0) + 1
end
check(rows == 15, "15 rows with status 200 (got " .. rows .. ")")
check(row_ok, "every row's cities/min/max/mean equal the sequential reference")

local lookups = want.CA.cities + want.NY.cities + want.TX.cities + want.WA.cities
local line = ("OpenWeatherMap: %d lookups (CA %d, NY %d, TX %d, WA %d), never more than 20 of one state at once")
  :format(lookups, want.CA.cities, want.NY.cities, want.TX.cities, want.WA.cities)
check(out:find(line, 1, true), "one lookup per city of each state, at most 20 at once: " .. line)
check(out:find("memo: 4 state lookups for 15 requests; 11 requests shared", 1, true),
  "memo: 4 lookups, 11 shared")
check(out:find("broker: 4 updates published, 4 delivered, 0 dropped", 1, true),
  "broker: 4 published, 4 delivered, 0 dropped")
local dash = true
for _, s in ipairs({ "CA", "NY", "TX", "WA" }) do
  local w = want[s]
  local l = ("  weather.%s  %2d temperatures  %5.1f .. %5.1f F"):format(s, w.cities, w.min, w.max)
  if not out:find(l, 1, true) then dash = false; print("  missing: " .. l) end
end
check(dash, "the dashboard got temperatures only, per state")
check(out:find("called with timeout = 0.05 -> timeout\n", 1, true), "the slow call timed out")
local ips = {}
for ip, n in pairs(per_ip) do ips[#ips + 1] = ip .. " " .. n end
table.sort(ips)
check(out:find("counter: requests per IP: " .. table.concat(ips, ", ") .. "\n", 1, true),
  "per-IP counts: " .. table.concat(ips, ", "))
check(out:find("\nelapsed: [%d.]+ s"), "an elapsed line")
os.exit(failures == 0 and 0 or 1)
LUA

check_run() {   # check_run <name> <command...>
  local name=$1; shift
  timeout 25 "$@" "$example" > "$tmp/$name.out" 2> "$tmp/$name.err"
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    fail "$name: exit status $rc"; sed 's/^/  | /' "$tmp/$name.out" "$tmp/$name.err" | tail -20
    return
  fi
  ok "$name: exit status 0"
  LUA_PATH="$BRAID_SRC/examples/?.lua;;" "$BRAID_LUA" "$tmp/check.lua" "$name" \
    < "$tmp/$name.out" || { failures=$((failures + 1)); sed 's/^/  | /' "$tmp/$name.out"; }
  grep '^elapsed:' "$tmp/$name.out" | sed 's/^/  # /'
  if [ -s "$tmp/$name.err" ]; then
    fail "$name: unexpected stderr"; sed 's/^/  | /' "$tmp/$name.err" | head -10
  fi
  grep -v '^elapsed:' "$tmp/$name.out" > "$tmp/$name.det"
}

ran=()
if [ -n "${BRAID_BIN:-}" ] && [ -x "$BRAID_BIN" ]; then
  check_run braid "$BRAID_BIN"; ran+=(braid)
else
  echo "ok - # skip the braid interpreter: no BRAID_BIN"
fi
if command -v "$BRAID_LUA" > /dev/null && [ -n "${LUA_CPATH:-}" ]; then
  check_run lua5.4 "$BRAID_LUA"; ran+=(lua5.4)
else
  echo "ok - # skip lua5.4: no $BRAID_LUA or no LUA_CPATH"
fi
if [ "${#ran[@]}" -eq 2 ] && [ -f "$tmp/braid.det" ] && [ -f "$tmp/lua5.4.det" ]; then
  if diff -u "$tmp/braid.det" "$tmp/lua5.4.det" > "$tmp/diff"; then
    ok "the same output under braid and lua5.4"
  else
    fail "braid and lua5.4 outputs differ"; sed 's/^/  | /' "$tmp/diff" | head -30
  fi
fi

echo "$failures failure(s)"
[ "$failures" -eq 0 ]
