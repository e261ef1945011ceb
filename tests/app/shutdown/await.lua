-- expect: 0
-- valgrind
-- A task awaiting a future nobody settles, one awaiting another task.
local braid = require "braid"
local H = dofile(arg[0]:match("^(.*)/") .. "/helpers.lua")
local f = braid.future()
local g = braid.go(function() return f:await() end)
braid.go(function() return g:await() end)
H.all_in(2, "blocked")
H.ready()
