-- expect: 0
-- valgrind
-- Tasks sleeping for an hour.
local braid = require "braid"
local H = dofile(arg[0]:match("^(.*)/") .. "/helpers.lua")
for i = 1, 10 do braid.go(function() braid.sleep(3600 + i) end) end
H.all_in(10, "sleeping")
H.ready()
