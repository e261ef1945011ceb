-- bench/net_idle.lua: what an idle connection costs a braid.net server.
-- The server accepts N loopback connections, each served by a task blocked
-- in conn:read("l"); a second process (this script, "client" mode) opens
-- them and holds them.  Reported: the server's resident memory added per
-- connection (KiB), which includes the connection handle, its read-ahead
-- buffer and the task, and not the kernel's socket buffers (they are not in
-- the process's RSS).  Target (issue 11): <= 4 KiB.
--
--   lua5.4 bench/net_idle.lua [n=10000]     (LUA_CPATH must find braid.so)
local braid = require "braid"
local net = braid.net

local function rss()
  local f = assert(io.open("/proc/self/status"))
  local s = f:read("a")
  f:close()
  return tonumber(s:match("VmRSS:%s*(%d+)"))
end

if arg[1] == "client" then
  local addr, n = arg[2], tonumber(arg[3])
  local conns = {}
  for i = 1, n do conns[i] = assert(net.connect(addr)) end
  io.write("ready\n")
  io.flush()
  -- The server closes every connection when it has measured.
  for i = 1, n do conns[i]:read("a", 60) end
  os.exit(0)
end

local n = tonumber(arg[1]) or 10000
local l = assert(net.listen("127.0.0.1:0"))
-- The acceptor passes each connection back here too, to close at the end.
local accepted, served = braid.chan(math.huge), braid.chan(math.huge)
local acceptor = braid.go(function()
  for _ = 1, n do
    local c = assert(l:accept(60))
    accepted:send(c)
    braid.go(function(c) c:read("l", 120); served:send(true) end, c)
  end
end)
-- Warm up: every shard opened, the first allocations made.
for _ = 1, 64 do braid.go(function() return 1 end):await() end
collectgarbage()
collectgarbage()
local r0 = rss()
local exe = arg[-1] or "lua5.4"
local client = assert(io.popen(string.format("%q %q client %s %d", exe, arg[0], l:addr(), n)))
assert(client:read("l") == "ready", "client did not connect")
acceptor:await()
local t_end = braid.now() + 60
while braid.stats().blocked < n and braid.now() < t_end do braid.sleep(0.01) end
local blocked = braid.stats().blocked
local kib = (rss() - r0) / n
for _ = 1, n do accepted:recv():close() end
for _ = 1, n do served:recv(60) end
client:close()
l:close()
print(string.format("braid.net: %d idle connections (%d tasks blocked in read): %.2f KiB each (target <= 4)",
  n, blocked, kib))
