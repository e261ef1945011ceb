-- expect: 0
-- valgrind
-- Tasks blocked in select over a receive, a send of a large value, a
-- future and a braid.after timer (issue 16 saw memory lost here).
local braid = require "braid"
local H = dofile(arg[0]:match("^(.*)/") .. "/helpers.lua")
local a, b, f = braid.chan(), braid.chan(), braid.future()
for i = 1, 20 do
  braid.go(function()
    return braid.select({ a, { b, string.rep("v", 1000) .. i }, f, braid.after(3600) })
  end)
end
H.all_in(20, "blocked")
H.ready()
