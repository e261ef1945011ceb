-- expect: 1
-- An error in the main chunk while tasks are blocked, sleeping and
-- computing: the host reports it and exits 1.
local braid = require "braid"
local H = dofile(arg[0]:match("^(.*)/") .. "/helpers.lua")
local ch = braid.chan()
braid.go(function() return ch:recv() end)
braid.go(function() braid.sleep(3600) end)
local started = braid.chan(1)
braid.go(function() started:send(true) local x = 0 while true do x = x + 1 end end)
assert(started:recv(20))
H.ready()
error("boom in the main chunk")
