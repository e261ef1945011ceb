-- expect: 0
-- valgrind
-- A task looping on pcall(braid.sleep, 1), swallowing every cancellation.
local braid = require "braid"
local H = dofile(arg[0]:match("^(.*)/") .. "/helpers.lua")
braid.go(function() while true do pcall(braid.sleep, 1) end end)
H.all_in(1, "sleeping")
H.ready()
