-- expect: 0
-- valgrind
-- Tasks blocked in recv on an unbuffered, a buffered and an unbounded channel.
local braid = require "braid"
local H = dofile(arg[0]:match("^(.*)/") .. "/helpers.lua")
for _, cap in ipairs({ 0, 4, math.huge }) do
  local ch = braid.chan(cap)
  braid.go(function() return ch:recv() end)
end
H.all_in(3, "blocked")
H.ready()
