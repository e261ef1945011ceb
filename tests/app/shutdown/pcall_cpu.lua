-- expect: 0
-- A task that swallows its cancellation in pcall and computes on (issue 16
-- part 3): exit detaches its worker after the grace period.
local braid = require "braid"
local H = dofile(arg[0]:match("^(.*)/") .. "/helpers.lua")
local started = braid.chan(1)
braid.go(function()
  started:send(true)
  while true do
    pcall(function() local x = 0 for i = 1, 1e5 do x = x + i end end)
  end
end)
assert(started:recv(20))
H.ready()
