-- expect: 0
-- valgrind
-- Tasks blocked in send (rendezvous, and a full buffer holding values).
local braid = require "braid"
local H = dofile(arg[0]:match("^(.*)/") .. "/helpers.lua")
local rv, full = braid.chan(), braid.chan(2)
assert(full:try_send({ "buffered", string.rep("b", 4000) }))
assert(full:try_send({ "buffered", 2 }))
braid.go(function() return rv:send({ payload = string.rep("x", 4000) }) end)
braid.go(function() return full:send({ payload = string.rep("y", 4000) }) end)
H.all_in(2, "blocked")
H.ready()
