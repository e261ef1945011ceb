-- expect: 0
-- valgrind
-- Tasks blocked in accept and in reads on both ends of a local connection.
local braid = require "braid"
local H = dofile(arg[0]:match("^(.*)/") .. "/helpers.lua")
local l = assert(braid.net.listen("127.0.0.1:0"))
local l2 = assert(braid.net.listen("127.0.0.1:0"))
local addr = l:addr()
braid.go(function() local c = assert(l:accept()) return c:read("l") end)
braid.go(function() local c = assert(braid.net.connect(addr)) return c:read(10) end)
braid.go(function() return l2:accept() end)
H.all_in(3, "blocked")
H.wait_tasks(function(ts)
  local reads = 0
  for _, t in ipairs(ts) do if (t.waiting_on or ""):match("^read") then reads = reads + 1 end end
  return reads == 2
end, "two reads")
H.ready()
