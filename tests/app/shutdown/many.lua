-- expect: 0
-- valgrind
-- 1000 tasks at once in recv, send, select, sleep and await.
local braid = require "braid"
local H = dofile(arg[0]:match("^(.*)/") .. "/helpers.lua")
local a, b, f = braid.chan(), braid.chan(8), braid.future()
for i = 1, 8 do assert(b:try_send(i)) end
for i = 1, 1000 do
  local k = i % 5
  braid.go(function()
    if k == 0 then return a:recv()
    elseif k == 1 then return b:send({ i })
    elseif k == 2 then return braid.select({ a, { b, i }, f, braid.after(3600) })
    elseif k == 3 then return braid.sleep(3600)
    else return f:await() end
  end)
end
H.all_in(1000, "blocked", "sleeping")
H.ready()
