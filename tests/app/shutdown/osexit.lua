-- expect: 3
-- os.exit(3) from a task while others are blocked: the process exits 3.
local braid = require "braid"
local H = dofile(arg[0]:match("^(.*)/") .. "/helpers.lua")
local ch = braid.chan()
for _ = 1, 3 do braid.go(function() return ch:recv() end) end
H.all_in(3, "blocked")
H.ready()
braid.go(function() os.exit(3) end)
braid.sleep(20)
error("os.exit from a task did not exit")
