-- expect: 0
-- A task awaiting a braid.blocking job stuck in a C call (opening a FIFO
-- that no one writes): the job's thread is left behind at exit.
local braid = require "braid"
local H = dofile(arg[0]:match("^(.*)/") .. "/helpers.lua")
local fifo = assert(os.getenv("SHUTDOWN_FIFO"), "SHUTDOWN_FIFO not set")
braid.go(function()
  return braid.blocking(function(p)
    local fh = io.open(p, "r")
    return fh and fh:read("a")
  end, fifo):await()
end)
H.all_in(1, "blocked")
H.wait_tasks(function() return braid.stats().blocking_jobs >= 1 end, "a blocking job")
braid.sleep(0.05)                -- the job reaches its open()
H.ready()
