-- bench/net.lua: braid.net's echo server under bench_net_load (100
-- connections, 64-byte messages, a bounded run), and, when they are
-- installed, the same server in Go (bench/peers/echo.go), luv and
-- LuaSocket for comparison.
--
--   LUA_PATH='lua/?.lua;;' LUA_CPATH='build/?.so;;' lua5.4 bench/net.lua [seconds] [build-dir]
local braid = require "braid"
local net = require "braid.net"

local secs = tonumber(arg and arg[1]) or 10
local build = (arg and arg[2]) or os.getenv("BRAID_BUILD") or "build"
local load = build .. "/bench_net_load"
local CONNS, BYTES = 100, 64

local function run_load(addr)
  local p = assert(io.popen(("%s %s %d %d %s 2>&1"):format(load, addr, CONNS, BYTES, secs)))
  local out = p:read("a")
  p:close()
  return out:gsub("\n$", "")
end

-- braid: one task per connection.
local l = assert(net.listen("127.0.0.1:0", { backlog = 1024 }))
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
print("braid.net echo: " .. run_load(l:addr()))
l:close()

-- Go, when a go toolchain is installed (apt-get install golang-go).
if os.execute("command -v go >/dev/null 2>&1") then
  local exe = os.tmpname()
  if os.execute(("go build -o %s bench/peers/echo.go 2>/dev/null"):format(exe)) then
    local p = io.popen(exe .. " 127.0.0.1:0")
    local addr, pid = p:read("l"), p:read("n")
    print("Go echo:        " .. run_load(addr))
    if pid then os.execute("kill " .. math.tointeger(pid)) end
    p:close()
  end
  os.remove(exe)
else
  print("Go echo:        skipped (no go toolchain)")
end
