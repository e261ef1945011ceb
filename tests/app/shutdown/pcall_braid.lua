-- expect: 0
-- repeat: 12
-- A task that swallows its cancellation in pcall while calling braid's own
-- C functions in a loop: its worker, left running at exit, must not crash
-- the process on its way out (lua5.4 dlcloses braid.so after the runtime
-- stops: braid.so is linked -z nodelete; without it 2 runs in 10 crashed).
local braid = require "braid"
local H = dofile(arg[0]:match("^(.*)/") .. "/helpers.lua")
local started = braid.chan(1)
braid.go(function()
  started:send(true)
  while true do
    pcall(function() for _ = 1, 100 do braid.now() braid.stats() braid.tasks() end end)
  end
end)
assert(started:recv(20))
H.ready()
