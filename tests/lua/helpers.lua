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

-- Runs a script in a fresh lua5.4 with this braid.so (its own
-- braid.config); returns its stdout and stderr merged.
function M.run_script(src)
  local path = os.tmpname()
  local fh = assert(io.open(path, "w"))
  fh:write(src)
  fh:close()
  local cmd = ("LUA_CPATH=%q LUA_PATH=%q lua5.4 %q 2>&1"):format(package.cpath, package.path, path)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  p:close()
  os.remove(path)
  return out
end

return M
