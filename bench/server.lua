-- bench/server.lua: braid.server call round trips per second from 4
-- client tasks, against a bare request/reply loop (a task that receives
-- {req, future} on a channel and resolves the future) in the same run.
--
--   LUA_PATH='lua/?.lua;;' LUA_CPATH='build/?.so;;' lua5.4 bench/server.lua [rounds]
--
-- Each figure is the median of `rounds` runs (default 9) of CLIENTS tasks
-- making CALLS calls each.
local braid = require "braid"

local rounds = tonumber(arg and arg[1]) or 9
local CLIENTS, CALLS = 4, 2000

package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
local median = require("benchlib").median

-- Starts CLIENTS tasks running client(target, CALLS); returns calls/s.
local function drive(target, client)
  local t0 = braid.now()
  local fs = {}
  for i = 1, CLIENTS do fs[i] = braid.go(client, target, CALLS) end
  for i = 1, CLIENTS do assert(fs[i]:await() == CALLS) end
  return CLIENTS * CALLS / (braid.now() - t0)
end

local function run_server()
  local srv = braid.server({
    init = function() return 0 end,
    call = function(n, req) return req + 1, n + 1 end,
  })
  local rate = drive(srv, function(srv, calls)
    local ok = 0
    for i = 1, calls do if srv:call(i) == i + 1 then ok = ok + 1 end end
    return ok
  end)
  srv:stop()
  return rate
end

local function run_bare()
  local reqs = braid.chan(math.huge)
  local server = braid.go(function(reqs)
    local n = 0
    for m in reqs:iter() do
      n = n + 1
      m[2]:resolve(m[1] + 1)
    end
    return n
  end, reqs)
  local rate = drive(reqs, function(reqs, calls)
    local ok = 0
    for i = 1, calls do
      local f = braid.future()
      reqs:send({ i, f })
      if f:await(5) == i + 1 then ok = ok + 1 end
    end
    return ok
  end)
  reqs:close()
  server:await()
  return rate
end

run_server()                            -- warm up
local bare, srv = {}, {}
for r = 1, rounds do
  bare[r] = run_bare()
  srv[r] = run_server()
end
local m_bare, m_srv = median(bare), median(srv)
print(("server: %d client tasks x %d calls, median of %d runs"):format(CLIENTS, CALLS, rounds))
print(("  bare channel + future loop: %8.0f round trips/s (%.1f us each)"):format(m_bare, 1e6 / m_bare))
print(("  braid.server call:          %8.0f round trips/s (%.1f us each), %.2fx the bare loop"):format(
  m_srv, 1e6 / m_srv, m_srv / m_bare))
