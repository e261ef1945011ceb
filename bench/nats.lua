-- bench/nats.lua -- braid.nats against nats.c (bench/nats_ref.c) in one
-- run: request/reply round trips (a braid task calling a braid service on
-- another connection) and publish throughput of 100-byte strings to one
-- subscriber, through a nats-server of its own (127.0.0.1, free port).
-- The machine is shared and noisy: the C and braid phases alternate REPS
-- times (default 3) and the medians are compared.
--
--   lua5.4 bench/nats.lua [build-dir [reps]]   (from the source dir; LUA_CPATH
--                                               pointing at build-dir's braid.so)
local braid = require "braid"
local N = require "tests.lua.nats_helpers"

local build = arg[1] or "build"
local REPS = tonumber(arg[2] or 3)
local ROUNDS, MSGS = 3000, 200000

package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
local median = require("benchlib").median

local function c_phase(url)
  local ref = N.sh(("env -u LD_PRELOAD %s/bench_nats_ref %s %d %d"):format(build, url, ROUNDS, MSGS))
  return tonumber(ref:match("rr_per_s (%d+)")), tonumber(ref:match("pub_per_s (%d+)"))
end

local function braid_phase(url)
  local a = assert(braid.nats.connect(url))
  local b = assert(braid.nats.connect(url))
  local svc = b:serve("bench.echo", function(d) return d end, { workers = 1 })
  b:flush()
  local rr = braid.go(function()
    local t0 = braid.now()
    for _ = 1, ROUNDS do assert(a:request("bench.echo", "ping", 5)) end
    return ROUNDS / (braid.now() - t0)
  end):await()
  svc:stop(5)

  -- Unbounded, as nats_ref.c's subscription (no pending limit): nothing
  -- is dropped, the figure is the rate at which the subscriber takes them.
  local sub = b:subscribe("bench.pub", { buffer = math.huge })
  b:flush()
  local counter = braid.go(function()
    local n, last = 0, braid.now()
    while n < MSGS do
      if not sub:recv(5) then break end
      n = n + 1
      -- The clock every 1024 messages and at the last (nats_ref.c polls
      -- its counter every millisecond): not a clock read per message.
      if n & 1023 == 0 or n == MSGS then last = braid.now() end
    end
    return n, last
  end)
  local payload = ("x"):rep(100)
  local t0 = braid.now()
  for _ = 1, MSGS do a:publish("bench.pub", payload) end
  a:flush()
  local got, last = counter:await()
  a:close(); b:close()
  return rr, got / (last - t0), got
end

local srv = assert(N.start())
local ok, err = pcall(function()
  local c_rr, c_pub, b_rr, b_pub = {}, {}, {}, {}
  for i = 1, REPS do
    c_rr[i], c_pub[i] = c_phase(srv.url)
    local got
    b_rr[i], b_pub[i], got = braid_phase(srv.url)
    print(("rep %d: rr braid %6.0f/s nats.c %6.0f/s   pub braid %7.0f/s nats.c %7.0f/s (%d/%d received)")
      :format(i, b_rr[i], c_rr[i] or 0, b_pub[i], c_pub[i] or 0, got, MSGS))
  end
  local mr, mcr, mp, mcp = median(b_rr), median(c_rr), median(b_pub), median(c_pub)
  print(("request/reply round trips: braid %8.0f/s   nats.c %8.0f/s   ratio %.2fx (medians of %d)")
    :format(mr, mcr, mr / mcr, REPS))
  print(("publish 100-byte strings:  braid %8.0f/s   nats.c %8.0f/s   ratio %.2fx (medians of %d)")
    :format(mp, mcp, mp / mcp, REPS))
end)
srv:stop()
if not ok then error(err, 0) end
