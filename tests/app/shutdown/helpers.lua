-- helpers.lua -- shared by the shutdown matrix variants (tests/app/shutdown.sh).
-- A variant sets its tasks up, waits (bounded) until they are where it
-- wants them, prints READY (the driver times the exit from that line) and
-- then ends the way it is named after.
local braid = require "braid"

local H = {}

-- Waits until pred(braid.tasks()) is true; raises after about 20 s.
function H.wait_tasks(pred, what)
  local t_end = braid.now() + 20
  while braid.now() < t_end do
    if pred(braid.tasks()) then return end
    braid.sleep(0.005)
  end
  error("shutdown variant: never " .. what, 2)
end

-- Waits until there are exactly n live tasks, each in one of the states
-- given ("blocked", "sleeping", ...).
function H.all_in(n, ...)
  local ok = {}
  for i = 1, select("#", ...) do ok[select(i, ...)] = true end
  H.wait_tasks(function(ts)
    if #ts ~= n then return false end
    for _, t in ipairs(ts) do if not ok[t.state] then return false end end
    return true
  end, ("%d tasks %s"):format(n, table.concat({ ... }, "/")))
end

function H.ready()
  io.stdout:write("READY\n")
  io.stdout:flush()
end

return H
