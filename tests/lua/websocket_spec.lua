-- websocket_spec.lua: API.md "HTTP and WebSocket": braid.http.upgrade on
-- the server, braid.http.websocket the client, ws:send/recv/close; plus a
-- raw client (braid._http's wslay framer on a bare connection) for pings,
-- masking and fragmented frames.  Over braid.net on loopback when this
-- build has it, and over tests/lua/fakenet.lua.
local braid = require "braid"
local http = braid.http

local transports = { { name = "fakenet", net = function() return require("tests.lua.fakenet").new() end } }
if braid.net then
  table.insert(transports, 1, { name = "braid.net", net = function() return nil end })
end

local T = 10

for _, tr in ipairs(transports) do
describe("braid.http websocket over " .. tr.name, function()
  local net, events, srv
  before_each(function()
    http._net = tr.net()
    net = http._net or braid.net
    events = braid.chan(math.huge)
    -- echo server: text and binary back as they came; "close-me" closes
    -- with 4002; the close code of a client close is reported on events.
    srv = assert(http.serve("127.0.0.1:0", function(req)
      if req.path ~= "/ws" then return 404, nil, "no" end
      local ws, err = http.upgrade(req)
      if not ws then events:send("upgrade failed: " .. tostring(err)); return end
      while true do
        local data, kind = ws:recv(T)
        if not data then
          events:send({ closed = kind, code = ws.close_code, reason = ws.close_reason })
          return
        end
        if data == "close-me" then ws:close(4002, "server bye"); events:send({ closed = "server" }); return end
        ws:send(data, kind)
      end
    end))
  end)
  after_each(function()
    srv:close(1)
    http._net = nil
  end)

  it("echoes text and binary messages", function()
    local ws = assert(http.websocket("ws://" .. srv:addr() .. "/ws"))
    assert.is_true(ws:send("hello"))
    assert.are.same({ "hello", "text" }, { ws:recv(T) })
    local bin = "\0\1\2\255" .. ("z"):rep(70000)
    assert.is_true(ws:send(bin, "binary"))
    assert.are.same({ bin, "binary" }, { ws:recv(T) })
    assert.are.same({ nil, "timeout" }, { ws:recv(0.05) })
    ws:close()
    local ev = events:recv(T)
    assert.are.equal("closed", ev.closed)
    assert.are.equal(1000, ev.code)
  end)

  it("passes close codes both ways", function()
    local ws = assert(http.websocket("ws://" .. srv:addr() .. "/ws"))
    ws:close(4001, "bye")
    local ev = events:recv(T)
    assert.are.equal(4001, ev.code)
    assert.are.equal("bye", ev.reason)
    local ws2 = assert(http.websocket("ws://" .. srv:addr() .. "/ws"))
    ws2:send("close-me")
    assert.are.same({ nil, "closed" }, { ws2:recv(T) })
    assert.are.equal(4002, ws2.close_code)
    assert.are.equal("server bye", ws2.close_reason)
    assert.are.same({ nil, "closed" }, { ws2:send("late") })
  end)

  it("answers pings with pongs (both ends)", function()
    local ws = assert(http.websocket("ws://" .. srv:addr() .. "/ws"))
    assert.is_true(ws:ping("are you there"))
    ws:send("after")
    assert.are.equal("after", ws:recv(T))
    assert.are.equal("are you there", ws.last_pong)
    ws:close()
  end)

  -- A raw client: handshake by hand, frames through the wslay framer or
  -- written by hand.
  local function rawws()
    local c = assert(net.connect(srv:addr()))
    local key = braid._http.ws_key()
    assert(c:write("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" ..
      "Sec-WebSocket-Key: " .. key .. "\r\nSec-WebSocket-Version: 13\r\n\r\n"))
    local p = braid._http.parser("response")
    while true do
      local s = assert(c:read_some(65536, T))
      local msgs, st, _, rest = p:feed(s)
      assert.is_nil(st)
      if msgs[1] then
        assert.are.equal(101, msgs[1].status)
        assert.are.equal(braid._http.ws_accept(key), msgs[1].headers["sec-websocket-accept"])
        return c, rest or ""
      end
    end
  end

  local function read_msgs(c, fr, n, pending)
    local got = {}
    if pending and pending ~= "" then
      for _, m in ipairs(fr:feed(pending)) do got[#got + 1] = m end
    end
    local deadline = braid.now() + T
    while #got < n and braid.now() < deadline do
      local s = c:read_some(65536, deadline - braid.now())
      if not s then break end
      for _, m in ipairs(fr:feed(s)) do got[#got + 1] = m end
    end
    return got
  end

  -- A masked frame with mask key 0 (payload unchanged), < 126 bytes.
  local function frame(fin, op, payload)
    return string.char((fin and 0x80 or 0) | op, 0x80 | #payload) .. "\0\0\0\0" .. payload
  end

  it("the server answers a raw ping with a pong carrying its data", function()
    local c, rest = rawws()
    local fr = braid._http.ws("client")
    fr:send("ping", "raw-ping")
    assert(c:write(fr:output()))
    local got = read_msgs(c, fr, 1, rest)
    assert.are.same({ kind = "pong", data = "raw-ping" }, got[1])
    c:close()
  end)

  it("reads a frame sent in the same write as the upgrade request", function()
    local c = assert(net.connect(srv:addr()))
    local key = braid._http.ws_key()
    local fr = braid._http.ws("client")
    fr:send("text", "early bird")
    -- Head and frame in one write: the server's parser stops at the end of
    -- the head and the frame's bytes must reach the WebSocket.
    assert(c:write("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" ..
      "Sec-WebSocket-Key: " .. key .. "\r\nSec-WebSocket-Version: 13\r\n\r\n" .. fr:output()))
    local p, rest = braid._http.parser("response"), nil
    while not rest do
      local s = assert(c:read_some(65536, T))
      local msgs, st, _, r = p:feed(s)
      assert.is_nil(st)
      if msgs[1] then
        assert.are.equal(101, msgs[1].status)
        rest = r or ""
      end
    end
    local got = read_msgs(c, fr, 1, rest)
    assert.are.same({ kind = "text", data = "early bird" }, got[1])   -- echoed
    c:close()
  end)

  it("reassembles fragmented messages (a ping between fragments)", function()
    local c, rest = rawws()
    local fr = braid._http.ws("client")
    assert(c:write(frame(false, 1, "frag") .. frame(true, 9, "mid")))
    braid.sleep(0.05)
    assert(c:write(frame(false, 0, "men") .. frame(true, 0, "ted")))
    local got = read_msgs(c, fr, 2, rest)
    assert.are.same({ { kind = "pong", data = "mid" }, { kind = "text", data = "fragmented" } }, got)
    c:close()
  end)

  it("an unmasked client frame is a protocol error: close 1002", function()
    local c, rest = rawws()
    local fr = braid._http.ws("client")
    assert(c:write("\129\2hi"))
    local got = read_msgs(c, fr, 1, rest)
    assert.are.equal("close", got[1].kind)
    assert.are.equal(1002, got[1].code)
    local ev = events:recv(T)
    assert.are.equal("protocol error", ev.closed)
    c:close()
  end)

  it("upgrade refuses a plain request; websocket() reports a failed handshake", function()
    local r = assert(http.get("http://" .. srv:addr() .. "/ws"))
    assert.matches("not a websocket request", events:recv(T))
    assert.are.equal(500, r.status)     -- the handler returned no status
    local ws, err = http.websocket("ws://" .. srv:addr() .. "/other")
    assert.is_nil(ws)
    assert.are.equal("handshake: status 404", err)
  end)
end)
end
