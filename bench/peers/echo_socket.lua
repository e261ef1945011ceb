-- bench/peers/echo_socket.lua: the echo server of bench/net.lua the usual
-- Lua way: LuaSocket (Debian's lua-socket), non-blocking sockets, a
-- coroutine per connection and one socket.select loop (what copas does),
-- one thread.  Prints its address, then serves until killed.
--
--   lua5.4 bench/peers/echo_socket.lua [port]
local socket = require "socket"

local srv = assert(socket.bind("127.0.0.1", tonumber(arg and arg[1]) or 0, 1024))
srv:settimeout(0)

-- A connection's coroutine yields "r" to wait until readable, "w" until
-- writable, and returns when the peer closes.
local function serve(c)
  while true do
    local data, err, partial = c:receive(65536)
    local s = data or partial
    if s and #s > 0 then
      local i = 1
      while i <= #s do
        local last, serr, lastpart = c:send(s, i)
        if last then
          i = last + 1
        elseif serr == "closed" then
          return
        else
          i = lastpart + 1
          coroutine.yield("w")
        end
      end
    elseif err == "closed" then
      return
    else
      coroutine.yield("r")
    end
  end
end

local co = {}                 -- socket -> coroutine
local want = {}               -- socket -> "r" | "w"
local function resume(c)
  local ok, w = coroutine.resume(co[c], c)
  if not ok or coroutine.status(co[c]) == "dead" then
    c:close()
    co[c], want[c] = nil, nil
  else
    want[c] = w
  end
end

local ip, port = srv:getsockname()
print(ip .. ":" .. port)
io.stdout:flush()
while true do
  local rs, ws = { srv }, {}
  for c, w in pairs(want) do
    if w == "r" then rs[#rs + 1] = c else ws[#ws + 1] = c end
  end
  local readable, writable = socket.select(rs, ws)
  for _, c in ipairs(readable) do
    if c == srv then
      while true do
        local nc = srv:accept()
        if not nc then break end
        nc:settimeout(0)
        nc:setoption("tcp-nodelay", true)
        co[nc] = coroutine.create(serve)
        resume(nc)
      end
    elseif co[c] then
      resume(c)
    end
  end
  for _, c in ipairs(writable) do
    if co[c] then resume(c) end
  end
end
