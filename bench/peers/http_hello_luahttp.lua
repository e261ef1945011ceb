-- bench/peers/http_hello_luahttp.lua: lua-http's (cqueues) hello-world
-- server for bench/http.sh, the same answer as bench/http_hello.lua.
-- Prints its address, then serves until killed.
--
--   lua5.4 bench/peers/http_hello_luahttp.lua
--
-- Debian's lua-http is packaged for Lua 5.1-5.3 only (pure Lua, run here
-- on 5.4 through the 5.3 and 5.2 module paths that bench/http.sh sets);
-- lua-cqueues ships a 5.4 build.  One process, one thread: that is how
-- lua-http serves.
local server = require "http.server"
local headers = require "http.headers"

local BODY = "Hello, world!\n"
local s = assert(server.listen {
  host = "127.0.0.1", port = 0,
  onstream = function(_, stream)
    stream:get_headers()
    local h = headers.new()
    h:append(":status", "200")
    h:append("content-type", "text/plain")
    h:append("content-length", tostring(#BODY))
    stream:write_headers(h, false)
    stream:write_chunk(BODY, true)
  end,
})
assert(s:listen())
local _, host, port = s:localname()
print(host .. ":" .. port)
io.stdout:flush()
assert(s:loop())
