-- expect: 0
-- A task that catches "cancelled" (the script cancels it) and keeps
-- computing, never blocking again.
local braid = require "braid"
local H = dofile(arg[0]:match("^(.*)/") .. "/helpers.lua")
local caught = braid.chan(1)
local f = braid.go(function()
  local ok, err = pcall(braid.sleep, 3600)
  -- try_send does not block, so it does not raise the cancellation again.
  caught:try_send(tostring(ok) .. " " .. tostring(err))
  local x = 0
  while true do x = x + 1 end
end)
H.all_in(1, "sleeping")
f:cancel()
assert(caught:recv(20) == "false cancelled")
assert(f:status() == "pending")
H.ready()
