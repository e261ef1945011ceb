-- tests/lua/fakenet.lua: an in-memory transport with braid.net's surface
-- (listen/accept/connect, conn:read_some/write/close/peer/_busy), built on
-- channels, for testing braid.http's protocol logic without sockets:
--   braid.http._net = require("tests.lua.fakenet").new()
-- Every object is a plain table of closures over channels, so copies sent
-- to other tasks share the same pipes.
local braid = require "braid"

local M = {}

local function mkconn(inch, outch, peer, me)
  local buf = { s = "" }
  local busy = braid.chan(1)    -- conn:_busy: shared by every copy
  local c = {}
  function c._busy(_, flag)
    if flag == true then busy:try_send(true) return true end
    if flag == false then busy:try_recv() return false end
    local v = busy:try_recv()               -- a look: take it and put it back
    if v then busy:try_send(v) end
    return v ~= nil
  end
  function c.read_some(_, max, timeout)
    if buf.s == "" then
      local v, err = inch:recv(timeout)
      if v == nil then return nil, err end
      buf.s = v
    end
    max = max or 65536
    local out = buf.s:sub(1, max)
    buf.s = buf.s:sub(max + 1)
    return out
  end
  function c.write(_, s)
    if s == "" then return true end
    local ok, err = outch:send(s)
    if not ok then return nil, err end
    return true
  end
  function c.close() inch:close(); outch:close() end
  function c.shutdown() outch:close() end
  function c.peer() return peer end
  function c.addr() return me end
  return c
end

function M.new()
  -- addr -> channel of server-side conns, registered process-wide so that
  -- copies of this table in other states find listeners made later.
  local function registry(addr)
    return braid._http.shared("fakenet " .. addr, braid.chan(math.huge))
  end
  local net, nport, nconn = {}, math.random(1 << 40) * 1000, 0   -- unique per instance
  function net.listen(addr)
    nport = nport + 1
    local a = addr:gsub(":0$", ":" .. nport)
    local ch = registry(a)
    local l = {}
    function l.accept(_, timeout) return ch:recv(timeout) end
    function l.addr() return a end
    function l.close() ch:close() end
    return l
  end
  function net.connect(addr)
    local ch = registry(addr)
    if ch:is_closed() then return nil, "refused" end
    nconn = nconn + 1
    local a2b, b2a = braid.chan(math.huge), braid.chan(math.huge)
    local peer = "127.0.0.1:" .. (50000 + nconn)
    local client = mkconn(b2a, a2b, addr, peer)
    local server = mkconn(a2b, b2a, peer, addr)
    if not ch:send(server) then return nil, "refused" end
    return client
  end
  -- A raw client connection (for hand-written requests).
  net.raw = net.connect
  return net
end

return M
