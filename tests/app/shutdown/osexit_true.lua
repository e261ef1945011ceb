-- expect: 0
-- os.exit(true) from a task exits 0, the main thread being blocked.
local braid = require "braid"
local H = dofile(arg[0]:match("^(.*)/") .. "/helpers.lua")
braid.go(function() braid.sleep(3600) end)
H.all_in(1, "sleeping")
H.ready()
braid.go(function() os.exit(true) end)
braid.sleep(20)
os.exit(7)
