-- http_wire_spec.lua: the C half of braid.http (bindings/lhttp.c):
-- http-parser as an incremental parser, wslay as a WebSocket framer.
local braid = require "braid"
local H = braid._http

local function feed_split(p, s, sizes)
  local msgs, i, k = {}, 1, 1
  while i <= #s do
    local n = sizes[(k - 1) % #sizes + 1]
    local got, st, why = p:feed(s:sub(i, i + n - 1))
    for _, m in ipairs(got) do msgs[#msgs + 1] = m end
    if st then return msgs, st, why end
    i, k = i + n, k + 1
  end
  return msgs
end

describe("braid._http.parser", function()
  local two = "GET /a/b?x=1&y=a+b HTTP/1.1\r\nHost: h\r\nX-Multi: 1\r\nX-MULTI: 2\r\n\r\n" ..
              "POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" ..
              "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"

  it("returns pipelined requests whatever the split points", function()
    for _, sizes in ipairs({ { #two }, { 1 }, { 2, 7, 3 }, { 13 } }) do
      local msgs, st = feed_split(H.parser("request"), two, sizes)
      assert.is_nil(st)
      assert.are.equal(2, #msgs)
      local a, b = msgs[1], msgs[2]
      assert.are.equal("GET", a.method)
      assert.are.equal("/a/b", a.path)
      assert.are.equal("x=1&y=a+b", a.rawquery)
      assert.are.equal("h", a.headers.host)
      assert.are.equal("1, 2", a.headers["x-multi"])
      assert.are.equal("", a.body)
      assert.is_true(a.keep_alive)
      assert.is_false(a.upgrade)
      assert.are.equal("POST", b.method)
      assert.are.equal("abcde", b.body)   -- chunked, decoded
      assert.is_true(b.chunked)
    end
  end)

  it("reports keep-alive per HTTP version and Connection", function()
    local m = H.parser("request"):feed("GET / HTTP/1.0\r\n\r\n")
    assert.is_false(m[1].keep_alive)
    m = H.parser("request"):feed("GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert.is_false(m[1].keep_alive)
    m = H.parser("request"):feed("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert.is_true(m[1].keep_alive)
  end)

  it("tells where it is: idle, head, body", function()
    local p = H.parser("request")
    assert.are.equal("idle", p:state())
    p:feed("GET / HT")
    assert.are.equal("head", p:state())
    p:feed("TP/1.1\r\nContent-Length: 4\r\n\r\nab")
    assert.are.equal("body", p:state())
    local m = p:feed("cd")
    assert.are.equal("abcd", m[1].body)
    assert.are.equal("idle", p:state())
  end)

  it("malformed input -> 400, and the parser stays failed", function()
    local p = H.parser("request")
    local m, st, why = p:feed("NOT A REQUEST\r\n\r\n")
    assert.are.same({}, m)
    assert.are.equal(400, st)
    assert.is_string(why)
    assert.are.equal(400, select(2, p:feed("GET / HTTP/1.1\r\n\r\n")))
    assert.are.equal("error", p:state())
  end)

  it("oversized headers -> 431, also when they arrive a byte at a time", function()
    local big = "GET / HTTP/1.1\r\nX-Big: " .. ("a"):rep(300) .. "\r\n\r\n"
    local _, st = H.parser("request", 256):feed(big)
    assert.are.equal(431, st)
    local _, st2 = feed_split(H.parser("request", 256), big, { 1 })
    assert.are.equal(431, st2)
    -- the same request under a larger limit is fine
    local m = H.parser("request", 1024):feed(big)
    assert.are.equal(300, #m[1].headers["x-big"])
  end)

  it("oversized bodies -> 413, declared or chunked", function()
    local p = H.parser("request", 4096, 10)
    local _, st = p:feed("POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n")
    assert.are.equal(413, st)
    local chunked = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" ..
                    "6\r\nabcdef\r\n6\r\nghijkl\r\n0\r\n\r\n"
    local _, st2 = feed_split(H.parser("request", 4096, 10), chunked, { 5 })
    assert.are.equal(413, st2)
    local m = H.parser("request", 4096, 12):feed(chunked)
    assert.are.equal("abcdefghijkl", m[1].body)
  end)

  it("stops at an upgrade and hands back the bytes after it", function()
    local m, st, _, rest = H.parser("request"):feed(
      "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\129\0")
    assert.is_nil(st)
    assert.is_true(m[1].upgrade)
    assert.are.equal("\129\0", rest)
  end)

  it("parses responses: status, Content-Length, chunked, until-close, HEAD", function()
    local p = H.parser("response")
    local m = p:feed("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi" ..
                     "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n")
    assert.are.equal(2, #m)
    assert.are.equal(200, m[1].status)
    assert.are.equal("hi", m[1].body)
    assert.are.equal(404, m[2].status)
    assert.are.equal("x", m[2].body)
    local q = H.parser("response")
    assert.are.same({}, q:feed("HTTP/1.0 200 OK\r\n\r\nuntil "))
    q:feed("close")
    local e = q:feed(nil)
    assert.are.equal("until close", e[1].body)
    local h = H.parser("response")
    h:no_body()
    local hm = h:feed("HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n")
    assert.are.equal(1, #hm)
    assert.are.equal("", hm[1].body)
  end)
end)

describe("braid._http websocket framer", function()
  it("computes Sec-WebSocket-Accept as RFC 6455 shows", function()
    assert.are.equal("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", H.ws_accept("dGhlIHNhbXBsZSBub25jZQ=="))
    local k = H.ws_key()
    assert.are.equal(24, #k)
    assert.are_not.equal(k, H.ws_key())
  end)

  local function pair()
    return H.ws("client"), H.ws("server")
  end

  it("client frames are masked, server frames are not; messages cross", function()
    local c, s = pair()
    assert.is_true(c:send("text", "hello"))
    local out = c:output()
    assert.are.equal(0x80, out:byte(2) & 0x80)
    local m = s:feed(out)
    assert.are.same({ { kind = "text", data = "hello" } }, m)
    s:send("binary", "\0\1\2")
    local back = s:output()
    assert.are.equal(0, back:byte(2) & 0x80)
    assert.are.same({ { kind = "binary", data = "\0\1\2" } }, c:feed(back))
  end)

  it("answers a ping with a pong", function()
    local c, s = pair()
    c:send("ping", "p1")
    local got = s:feed(c:output())
    assert.are.equal("ping", got[1].kind)
    local m = c:feed(s:output())
    assert.are.same({ { kind = "pong", data = "p1" } }, m)
  end)

  it("carries close codes both ways", function()
    local c, s = pair()
    c:close(4001, "bye")
    local m = s:feed(c:output())
    assert.are.equal("close", m[1].kind)
    assert.are.equal(4001, m[1].code)
    assert.are.equal("bye", m[1].data)
    local back = c:feed(s:output())     -- wslay replies to a close
    assert.are.equal("close", back[1].kind)
    assert.are.equal(4001, back[1].code)
    local _, _, received, sent = c:status()
    assert.is_true(received)
    assert.is_true(sent)
    assert.are.same({ nil, "closed" }, { c:send("text", "late") })
  end)

  -- A masked client frame with mask key 0 (the payload is unchanged).
  local function frame(fin, op, payload)
    return string.char((fin and 0x80 or 0) | op, 0x80 | #payload) .. "\0\0\0\0" .. payload
  end

  it("reassembles fragmented messages, with a ping between fragments", function()
    local s = H.ws("server")
    local bytes = frame(false, 1, "hel") .. frame(true, 9, "mid") ..
                  frame(false, 0, "lo ") .. frame(true, 0, "world")
    local msgs = {}
    for i = 1, #bytes, 3 do                  -- and split at odd places
      for _, m in ipairs(s:feed(bytes:sub(i, i + 2))) do msgs[#msgs + 1] = m end
    end
    assert.are.same({ { kind = "ping", data = "mid" }, { kind = "text", data = "hello world" } }, msgs)
    local c = H.ws("client")
    assert.are.same({ { kind = "pong", data = "mid" } }, c:feed(s:output()))
  end)

  it("rejects unmasked client frames (protocol error)", function()
    local s = H.ws("server")
    local _, err = s:feed("\129\2hi")
    assert.are.equal("protocol", err)
    local c = H.ws("client")
    -- the server sent a close 1002 (protocol error)
    local m = c:feed(s:output())
    assert.are.equal(1002, m[1].code)
  end)
end)

-- The server's answers have a C fast path (braid._http.answer) for string
-- names and values, and http.lua's own (answer_lua) for the rest; both must
-- write the same bytes, and the C one must step aside (return nothing) for
-- everything it does not format.
describe("braid._http.answer against http.lua's answer", function()
  local lua_answer = require("braid.http")._answer_lua
  local SL = "HTTP/1.1 200 OK\r\n"
  local function same_date(s) return (s:gsub("\r\nDate: [^\r]+", "\r\nDate: D")) end
  local cases = {
    { nil, nil },
    { {}, "body" },
    { { ["content-type"] = "text/plain" }, "hello" },
    { { b = "2", a = "1", C = "3", ["x-long-name"] = ("v"):rep(300) }, ("z"):rep(5000) },
    { { date = "mine", ["CONTENT-length"] = "7" }, "1234567" },   -- overrides, any case
    { { connection = "upgrade" }, "" },
  }
  it("writes what the Lua path writes, defaults skipped when set in any case", function()
    for i, c in ipairs(cases) do
      for _, v in ipairs({ { true, "1.1" }, { false, "1.1" }, { true, "1.0" } }) do
        for _, is_head in ipairs({ false, true }) do
          local fast = H.answer(200, c[1], c[2], is_head, v[1], v[2], SL)
          assert.is_string(fast, "case " .. i)
          assert.are.equal(same_date(lua_answer(200, v[1], v[2], c[1], c[2], is_head)),
                           same_date(fast), "case " .. i)
        end
      end
    end
    local fast = H.answer(204, { a = "1" }, "x", false, true, "1.1", "HTTP/1.1 204 No Content\r\n")
    assert.are.equal(same_date(lua_answer(204, true, "1.1", { a = "1" }, "x", false)), same_date(fast))
  end)

  it("steps aside for numbers, lists, non-string keys, metatables and an uncached status line", function()
    assert.are.equal(0, select("#", H.answer(200, { n = 1 }, nil, false, true, "1.1", SL)))
    assert.are.equal(0, select("#", H.answer(200, { ["set-cookie"] = { "a=1", "b=2" } }, nil, false, true, "1.1", SL)))
    assert.are.equal(0, select("#", H.answer(200, { [1] = "x" }, nil, false, true, "1.1", SL)))
    assert.are.equal(0, select("#", H.answer(200, setmetatable({}, { __index = { a = "1" } }), nil,
                                             false, true, "1.1", SL)))
    assert.are.equal(0, select("#", H.answer(299, nil, nil, false, true, "1.1", nil)))
    -- and the Lua path formats them
    assert.truthy(lua_answer(200, true, "1.1", { n = 1 }, nil, false):find("\r\nn: 1\r\n", 1, true))
    assert.truthy(lua_answer(299, true, "1.1", nil, nil, false):find("^HTTP/1.1 299 Status\r\n"))
  end)

  it("refuses a header that would split the message, in http.lua's words", function()
    for _, h in ipairs({ { ["x\r\ny"] = "1" }, { ["a:b"] = "1" }, { a = "1\r\nInjected: yes" } }) do
      local ok1, e1 = pcall(H.answer, 200, h, nil, false, true, "1.1", SL)
      local ok2, e2 = pcall(lua_answer, 200, true, "1.1", h, nil, false)
      assert.is_false(ok1)
      assert.is_false(ok2)
      assert.are.equal(e2, e1)
    end
  end)
end)

-- braid._http.answer: the server's whole response from a handler's
-- results (http.lua's simple() for string headers).
describe("braid._http.answer", function()
  local SL = "HTTP/1.1 200 OK\r\n"
  local function split(s)                    -- head lines (after the status), body
    local head, body = s:match("^(.-)\r\n\r\n(.*)$")
    local lines = {}
    for l in head:gmatch("[^\r\n]+") do lines[#lines + 1] = l end
    return lines, body
  end

  it("adds Date, Content-Length and Connection unless the handler set them", function()
    local lines, body = split(H.answer(200, { ["x-a"] = "1" }, "hello", false, true, "1.1", SL))
    assert.are.equal("HTTP/1.1 200 OK", lines[1])
    assert.are.equal("x-a: 1", lines[2])
    assert.truthy(lines[3]:match("^Date: %a%a%a, %d%d %a%a%a %d%d%d%d %d%d:%d%d:%d%d GMT$"))
    assert.are.equal("Content-Length: 5", lines[4])
    assert.is_nil(lines[5])                  -- keep-alive is HTTP/1.1's default
    assert.are.equal("hello", body)
    lines = split(H.answer(200, nil, "", false, false, "1.1", SL))
    assert.are.equal("Content-Length: 0", lines[3])
    assert.are.equal("Connection: close", lines[4])
    lines = split(H.answer(200, nil, "x", false, true, "1.0", SL))
    assert.are.equal("Connection: keep-alive", lines[4])
    lines = split(H.answer(200, { DATE = "d", ["content-LENGTH"] = "9", connection = "x" }, "x",
                           false, false, "1.1", SL))
    assert.are.same({ "HTTP/1.1 200 OK", "DATE: d", "connection: x", "content-LENGTH: 9" }, lines)
  end)

  it("sends no body for HEAD, and neither body nor length for 1xx, 204 and 304", function()
    local lines, body = split(H.answer(200, nil, "hello", true, true, "1.1", SL))
    assert.are.equal("Content-Length: 5", lines[3])
    assert.are.equal("", body)
    for _, st in ipairs({ 101, 204, 304 }) do
      local s = H.answer(st, nil, "hello", false, true, "1.1", "HTTP/1.1 " .. st .. " X\r\n")
      assert.is_nil(s:find("Content-Length", 1, true))
      assert.are.equal("", s:match("\r\n\r\n(.*)$"))
    end
  end)

  it("names a handler result of the wrong type; steps aside for what http.lua formats", function()
    assert.are.same({ false, "handler returned nil as the status" }, { H.answer(nil, nil, nil) })
    assert.are.same({ false, "handler returned 200.0 as the status" }, { H.answer(200.0, nil, nil) })
    assert.are.same({ false, "handler returned 99 as the status" }, { H.answer(99, nil, nil) })
    assert.are.same({ false, "handler returned a string as the headers" }, { H.answer(200, "x", nil) })
    assert.are.same({ false, "handler returned a number as the body" }, { H.answer(200, nil, 5) })
    assert.are.equal(0, select("#", H.answer(200, nil, "x", false, true, "1.1", nil)))   -- no line
    assert.are.equal(0, select("#", H.answer(200, { n = 1 }, "x", false, true, "1.1", SL)))
    assert.has_error(function() H.answer(200, { ["a\r\nb"] = "1" }, "x", false, true, "1.1", SL) end,
                     "braid.http: bad header a\r\nb")
  end)
end)

describe("braid._http.parser feed's last two results", function()
  it("say what p:expect_continue() and p:state() would", function()
    local p = H.parser("request")
    local msgs, st, why, rest, expect, state = p:feed("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert.are.equal(1, #msgs)
    assert.is_nil(st); assert.is_nil(why); assert.is_nil(rest)
    assert.is_false(expect)
    assert.are.equal("idle", state)
    assert.are.equal(p:state(), state)
    local _
    _, _, _, _, expect, state = p:feed("POST /u HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
    assert.is_true(expect)
    assert.are.equal("body", state)
    assert.is_false(p:expect_continue())          -- true once, and feed took it
    _, _, _, _, expect, state = p:feed("abcGET / HTTP/1.1\r\n")
    assert.is_false(expect)
    assert.are.equal("head", state)
    local _, st2, _, _, _, state2 = p:feed("\0bad\r\n\r\n")
    assert.are.equal(400, st2)
    assert.are.equal("error", state2)
  end)
end)
