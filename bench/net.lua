-- bench/net.lua: echo round trips against braid.net and its peers.  The
-- load generator (bench/net_load.c, built as <build>/bench_net_load) opens
-- 100 connections to an echo server on a free loopback port and bounces
-- 64-byte messages for a bounded time; it reports round trips/s and the
-- p99 round trip.  Servers, each its own process, stopped by PID:
--
--   braid.net     bench/peers/echo_braid.lua (a task per connection)
--   Go            bench/peers/echo.go (a goroutine per connection)
--   luv           bench/peers/echo_luv.lua (libuv's loop, one thread)
--   LuaSocket     bench/peers/echo_socket.lua (socket.select + coroutines)
--
-- A peer that is not installed (scripts/bench-deps.sh installs them) is
-- skipped.  Each figure is the median of ROUNDS runs; the rounds go round
-- the servers in turn so that a noisy moment hits all of them alike.
--
--   build/braid bench/net.lua [seconds=10] [build-dir=build] [rounds=3]
local secs = tonumber(arg and arg[1]) or 10
local build = (arg and arg[2]) or os.getenv("BRAID_BUILD") or "build"
local rounds = tonumber(arg and arg[3]) or 3
local load = build .. "/bench_net_load"
local CONNS, BYTES = 100, 64

local function sh_ok(cmd) return os.execute(cmd .. " >/dev/null 2>&1") == true end

package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
local median = require("benchlib").median

-- Starts cmd (which prints its address first), returns addr, pid, pipe.
local function start(cmd)
  local p = assert(io.popen("exec sh -c 'echo $$; exec " .. cmd .. "'"))
  local pid = tonumber(p:read("l"))
  local addr = p:read("l")
  if not pid or not addr or not addr:match(":%d+$") then
    if pid then os.execute("kill " .. pid .. " 2>/dev/null") end
    p:close()
    return nil
  end
  return addr, pid, p
end

local function stop(pid, p)
  os.execute("kill " .. pid .. " 2>/dev/null")
  p:close()
end

local function run_load(addr)
  local p = assert(io.popen(("%s %s %d %d %s 2>&1"):format(load, addr, CONNS, BYTES, secs)))
  local out = p:read("a")
  p:close()
  local rps, p99 = out:match("([%d.]+) round trips/s, p99 ([%d.]+) us")
  return tonumber(rps), tonumber(p99), out:gsub("\n$", "")
end

local braid_cmd
if sh_ok("test -x " .. build .. "/braid") then
  braid_cmd = build .. "/braid"
else
  braid_cmd = "lua5.4"     -- with LUA_CPATH pointing at braid.so
end

local servers = {
  { name = "braid.net", cmd = braid_cmd .. " bench/peers/echo_braid.lua" },
  { name = "Go", go = "bench/peers/echo.go" },
  { name = "luv", cmd = "lua5.4 bench/peers/echo_luv.lua", need = "luv" },
  { name = "LuaSocket", cmd = "lua5.4 bench/peers/echo_socket.lua", need = "socket" },
}

local tmp = {}
for _, s in ipairs(servers) do
  if s.go then
    if sh_ok("command -v go") then
      local exe = os.tmpname()
      tmp[#tmp + 1] = exe
      if sh_ok(("go build -o %s %s"):format(exe, s.go)) then s.cmd = exe
      else s.skip = "go build failed" end
    else
      s.skip = "no go toolchain (scripts/bench-deps.sh)"
    end
  elseif s.need and not sh_ok(("lua5.4 -e 'require\"%s\"'"):format(s.need)) then
    s.skip = "lua5.4 cannot require " .. s.need .. " (scripts/bench-deps.sh)"
  end
  s.rps, s.p99 = {}, {}
end

print(("echo: %d connections, %d-byte messages, %g s per run, median of %d runs")
      :format(CONNS, BYTES, secs, rounds))
for round = 1, rounds do
  local this = {}
  for _, s in ipairs(servers) do
    if not s.skip then
      local addr, pid, p = start(s.cmd)
      if not addr then
        s.skip = "did not start"
      else
        local rps, p99, out = run_load(addr)
        stop(pid, p)
        if rps then
          s.rps[#s.rps + 1], s.p99[#s.p99 + 1] = rps, p99
          this[s.name] = rps
          print(("  round %d %-10s %s"):format(round, s.name, out))
        else
          print(("  round %d %-10s failed: %s"):format(round, s.name, out))
        end
      end
    end
  end
  -- This round's ratios to Go (the servers ran minutes apart at most).
  for _, s in ipairs(servers) do
    if this[s.name] and this.Go then
      s.ratios = s.ratios or {}
      s.ratios[#s.ratios + 1] = this[s.name] / this.Go
    end
  end
end
for _, f in ipairs(tmp) do os.remove(f) end

local go_rps
for _, s in ipairs(servers) do
  if s.name == "Go" then go_rps = median(s.rps) end
end
print("")
print("| echo server | round trips/s | p99 | vs Go (medians) | vs Go (median of per-round ratios) |")
print("|---|---:|---:|---:|---:|")
for _, s in ipairs(servers) do
  local rps, p99 = median(s.rps), median(s.p99)
  if rps then
    local r = s.ratios and median(s.ratios)
    print(("| %s | %.0f | %.2f ms | %s | %s |"):format(s.name, rps, p99 / 1000,
      go_rps and ("%.2fx"):format(rps / go_rps) or "-", r and ("%.2fx"):format(r) or "-"))
  else
    print(("| %s | skipped: %s | | | |"):format(s.name, s.skip or "no run"))
  end
end
