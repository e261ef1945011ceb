-- tests/lua/nats_worklist_helper.lua URL NAME MODE OUT: a helper process
-- of braid.nats.worklist for nats_spec.lua.
--   MODE "tree":  fn(x) pushes x+1 and x+2 while x < 40 (keys dedupe)
--   MODE "stuck": fn announces the item on wl.took, then sleeps (to be
--                 killed with SIGKILL while it holds items)
-- Writes the number of items it did to OUT.
local braid = require "braid"
local url, name, mode, out = arg[1], arg[2], arg[3], arg[4]
local nc = assert(braid.nats.connect(url))
local fn
if mode == "tree" then
  fn = function(x, push)
    if x < 40 then push(x + 1); push(x + 2) end
    braid.sleep(0.02)
    return x
  end
else
  fn = function(x)
    nc:publish("wl.took", tostring(x))
    braid.sleep(120)
    return x
  end
end
local n = braid.nats.worklist(nc, name, nil, fn,
  { workers = 2, ack_wait = 1, key = function(x) return x end, timeout = 60 })
local f = assert(io.open(out, "w"))
f:write(tostring(n))
f:close()
nc:close()
