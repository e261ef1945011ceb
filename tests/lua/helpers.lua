-- tests/lua/helpers.lua: what the runtime specs share.
--   local H = require "tests.lua.helpers"   (specs run from the source dir)
local braid = require "braid"

local M = {}

-- "braid.chan#12" from tostring(h) (which may add a short state).
function M.handle_id(h)
  return (tostring(h):match("^(braid%.%a+#%d+)"))
end

-- A Lua pattern matching exactly handle h's id (so #1 does not match #12).
function M.id_pattern(h)
  return M.handle_id(h):gsub("%.", "%%.") .. "%f[%D]"
end

-- Polls pred() until it holds or `timeout` seconds (default 5) pass;
-- returns pred().
function M.wait_until(pred, timeout)
  local deadline = braid.now() + (timeout or 5)
  while braid.now() < deadline do
    if pred() then return true end
    braid.sleep(0.005)
  end
  return pred() and true or false
end

return M
