-- bench/peers/echo_luv.lua: the echo server of bench/net.lua on luv
-- (libuv's event loop, one thread, Debian's lua-luv).  Prints its address,
-- then serves until killed.
--
--   lua5.4 bench/peers/echo_luv.lua [port]
local uv = require "luv"

local server = uv.new_tcp()
assert(server:bind("127.0.0.1", tonumber(arg and arg[1]) or 0))
assert(server:listen(1024, function(err)
  if err then return end
  local c = uv.new_tcp()
  if not server:accept(c) then c:close() return end
  c:nodelay(true)
  c:read_start(function(rerr, data)
    if rerr or not data then
      c:close()
      return
    end
    c:write(data)
  end)
end))
local a = server:getsockname()
print(a.ip .. ":" .. a.port)
io.stdout:flush()
uv.run()
