-- bench/peers/echo_braid.lua: braid.net's echo server for bench/net.lua, a
-- task per connection.  Prints its address, then serves until killed.
--
--   build/braid bench/peers/echo_braid.lua [127.0.0.1:0]
local braid = require "braid"
local net = require "braid.net"

local l = assert(net.listen(arg and arg[1] or "127.0.0.1:0", { backlog = 1024 }))
braid.go(function()
  while true do
    local c = l:accept()
    if not c then return end
    braid.go(function()
      while true do
        local s = c:read_some(65536)
        if not s or not c:write(s) then break end
      end
      c:close()
    end)
  end
end)
print(l:addr())
io.stdout:flush()
while true do braid.sleep(3600) end
