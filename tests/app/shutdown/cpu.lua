-- expect: 0
-- valgrind
-- A task computing (no blocking call): the shutdown's cancellation stops it
-- at its next instruction.
local braid = require "braid"
local H = dofile(arg[0]:match("^(.*)/") .. "/helpers.lua")
local started = braid.chan(1)
braid.go(function()
  started:send(true)
  local x = 0
  while true do x = x + 1 end
end)
assert(started:recv(20))
H.ready()
