-- bench/nats.lua -- braid.nats against nats.c (bench/nats_ref.c), one run:
-- request/reply round trips (a braid task calling a braid service on
-- another connection) and publish throughput of 100-byte strings to one
-- subscriber, through a nats-server of its own (127.0.0.1, free port).
--
--   lua5.4 bench/nats.lua [build-dir]      (from the source dir; LUA_CPATH
--                                           pointing at build-dir's braid.so)
local braid = require "braid"
local N = require "tests.lua.nats_helpers"

local build = arg[1] or "build"
local ROUNDS, MSGS = 5000, 200000
local srv = assert(N.start())
local ok, err = pcall(function()
  local ref = N.sh(("env -u LD_PRELOAD %s/bench_nats_ref %s %d %d"):format(build, srv.url, ROUNDS, MSGS))
  local c_rr = tonumber(ref:match("rr_per_s (%d+)"))
  local c_pub = tonumber(ref:match("pub_per_s (%d+)"))

  local a = assert(braid.nats.connect(srv.url))
  local b = assert(braid.nats.connect(srv.url))
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
      last = braid.now()
    end
    return n, last
  end)
  local payload = ("x"):rep(100)
  local t0 = braid.now()
  for _ = 1, MSGS do a:publish("bench.pub", payload) end
  a:flush()
  local got, last = counter:await()
  local pub = got / (last - t0)

  print(("request/reply round trips: braid %8.0f/s   nats.c %8.0f/s   ratio %.2fx")
    :format(rr, c_rr or 0, c_rr and rr / c_rr or 0))
  print(("publish 100-byte strings:  braid %8.0f/s   nats.c %8.0f/s   ratio %.2fx (%d/%d received)")
    :format(pub, c_pub or 0, c_pub and pub / c_pub or 0, got, MSGS))
  a:close(); b:close()
end)
srv:stop()
if not ok then error(err, 0) end
