-- expect: 0
-- valgrind
-- Pending braid.after timers, held by the main chunk and by a task's
-- select (issue 16 saw memory lost here), and tickers (one slow, one that
-- has ticked into its full channel).
local braid = require "braid"
local H = dofile(arg[0]:match("^(.*)/") .. "/helpers.lua")
local keep = {}
for i = 1, 100 do keep[i] = braid.after(3600 + i) end
keep.slow, keep.fast = braid.ticker(3600), braid.ticker(0.001)
assert(keep.fast:recv(20))
braid.go(function() return braid.select({ braid.after(7200) }) end)
H.all_in(1, "blocked")
H.ready()
