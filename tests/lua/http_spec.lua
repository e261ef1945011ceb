-- http_spec.lua: API.md "HTTP and WebSocket (braid.http)": server and
-- client against each other.  Runs over braid.net on loopback when this
-- build has it, and always over the in-memory transport of
-- tests/lua/fakenet.lua (the same protocol code, no sockets).
local braid = require "braid"
local http = braid.http

local transports = { { name = "fakenet", net = function() return require("tests.lua.fakenet").new() end } }
if braid.net then
  table.insert(transports, 1, { name = "braid.net", net = function() return nil end })
end

-- every wait in here is bounded by this many seconds (more under sanitizers)
local T = (os.getenv("BRAID_SANITIZE") or "") ~= "" and 40 or 10
local wait_until = require("tests.lua.helpers").wait_until

-- stats() counters are casts to the server's ctl task: they may trail the
-- responses by a moment.
local function stats_reach(srv, field, n)
  wait_until(function() return srv:stats()[field] >= n end, T)
  return srv:stats()
end

for _, tr in ipairs(transports) do
describe("braid.http over " .. tr.name, function()
  local net
  before_each(function()
    http._net = tr.net()
    net = http._net or braid.net
  end)
  after_each(function() http._net = nil end)

  -- A raw client: write bytes, read the reply until the server closes or
  -- `want` (a Lua pattern) shows up.
  local function raw(addr, bytes, want)
    local c = assert(net.connect(addr))
    if bytes then assert(c:write(bytes)) end
    local got, deadline = {}, braid.now() + T
    while braid.now() < deadline do
      local s = c:read_some(65536, deadline - braid.now())
      if not s then break end
      got[#got + 1] = s
      if want and table.concat(got):find(want) then break end
    end
    return table.concat(got), c
  end

  local function echo(req)
    local hs = {}
    for k, v in pairs(req.headers) do hs[#hs + 1] = k .. "=" .. v end
    table.sort(hs)
    local q = {}
    for k, v in pairs(req.query) do q[#q + 1] = k .. "=" .. v end
    table.sort(q)
    return 200, { ["Content-Type"] = "text/plain", ["X-Method"] = req.method },
      table.concat({ req.method, req.path, table.concat(q, "&"), table.concat(hs, ";"), req.body,
                     tostring(req.remote and req.remote:match("^.+:%d+$") ~= nil) }, "|")
  end

  it("serves GET and POST: decoded query, lower-case headers, body, remote", function()
    local srv = assert(http.serve("127.0.0.1:0", echo))
    assert.matches("^127%.0%.0%.1:%d+$", srv:addr())
    assert.matches("^braid%.http#%d+", tostring(srv))
    local base = "http://" .. srv:addr()
    local r = assert(http.get(base .. "/a/b?q=C%41&sp=a+b&e=", { headers = { ["X-Custom-Thing"] = "v1" } }))
    assert.are.equal(200, r.status)
    assert.are.equal("text/plain", r.headers["content-type"])
    assert.are.equal("GET", r.headers["x-method"])
    local f = {}
    for part in (r.body .. "|"):gmatch("([^|]*)|") do f[#f + 1] = part end
    assert.are.equal("GET", f[1])
    assert.are.equal("/a/b", f[2])
    assert.are.equal("e=&q=CA&sp=a b", f[3])
    assert.matches("x%-custom%-thing=v1", f[4])
    assert.are.equal("true", f[6])
    r = assert(http.request({ method = "POST", url = base .. "/p", body = ("x"):rep(100000) }))
    assert.matches("^POST|/p||.*|" .. ("x"):rep(100000) .. "|true$", r.body)
    srv:close(1)
  end)

  it("keeps connections alive: many requests, one connection", function()
    local srv = assert(http.serve("127.0.0.1:0", function() return 200, nil, "ok" end))
    for _ = 1, 5 do
      assert.are.equal("ok", assert(http.get("http://" .. srv:addr() .. "/")).body)
    end
    stats_reach(srv, "requests", 5)
    wait_until(function() return srv:stats().active == 0 end, T)
    local st = srv:stats()
    assert.are.equal(5, st.requests)
    assert.are.equal(1, st.connections)
    assert.are.equal(0, st.active)
    srv:close(1)
  end)

  it("answers pipelined requests in order and honours Connection: close", function()
    local srv = assert(http.serve("127.0.0.1:0", function(req) return 200, nil, req.path end))
    local out = raw(srv:addr(), "GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n" ..
      "GET /3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    local bodies = {}
    for b in out:gmatch("\r\n\r\n(/%d)") do bodies[#bodies + 1] = b end
    assert.are.same({ "/1", "/2", "/3" }, bodies)
    assert.matches("\r\nConnection: close\r\n", out)
    srv:close(1)
  end)

  it("streams chunked responses and reads chunked request bodies", function()
    local srv = assert(http.serve("127.0.0.1:0", function(req)
      if req.path == "/up" then return 200, nil, "got " .. req.body end
      local w = req:stream(200, { ["content-type"] = "text/plain" })
      for i = 1, 3 do assert(w:write("part" .. i .. ";")) end
      w:close()
    end))
    local r = assert(http.get("http://" .. srv:addr() .. "/s"))
    assert.are.equal("part1;part2;part3;", r.body)
    assert.are.equal("chunked", r.headers["transfer-encoding"])
    local out = raw(srv:addr(), "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n" ..
      "Connection: close\r\n\r\n4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n")
    assert.matches("\r\n\r\ngot abcdefg$", out)
    srv:close(1)
  end)

  it("a big answer to a client that reads late arrives whole, after a long header block", function()
    -- More than the socket takes at once: the answer's first sendmsg is
    -- partial and the rest waits in the write step, token held.
    local big = {}
    for i = 1, 500000 do big[i] = string.format("%07d\n", i) end
    big = table.concat(big)                      -- 4 000 000 bytes
    local long = ("v"):rep(3000)                 -- a head over 1 KiB
    local srv = assert(http.serve("127.0.0.1:0", function(req)
      if req.path == "/small" then return 200, nil, "after" end
      return 200, { ["x-long"] = long, ["content-type"] = "text/plain" }, big
    end))
    local c = assert(net.connect(srv:addr()))
    assert(c:write("GET /big HTTP/1.1\r\nHost: x\r\n\r\nGET /small HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
    braid.sleep(0.3)                             -- the server's socket fills meanwhile
    local parts = {}
    while true do
      local s = c:read_some(65536, T)
      if not s then break end
      parts[#parts + 1] = s
    end
    c:close()
    local out = table.concat(parts)
    local h1, b1, rest = out:match("^(HTTP/1.1 200 OK\r\n.-\r\n\r\n)(.-)(HTTP/1.1 200 OK\r\n.*)$")
    assert.truthy(h1, "two answers")
    assert.matches("\r\nx%-long: " .. long .. "\r\n", h1)
    assert.matches("\r\nContent%-Length: 4000000\r\n", h1)
    assert.are.equal(#big, #b1)
    assert.is_true(b1 == big)
    assert.matches("\r\n\r\nafter$", rest)
    srv:close(1)
  end)

  it("answers Expect: 100-continue before the body is sent", function()
    local srv = assert(http.serve("127.0.0.1:0", function(req) return 200, nil, "got " .. req.body end))
    local c = assert(net.connect(srv:addr()))
    assert(c:write("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"))
    assert.are.equal("HTTP/1.1 100 Continue\r\n\r\n", c:read_some(65536, T))
    assert(c:write("hello"))
    local out = ""
    while not out:find("got hello", 1, true) do
      local s = c:read_some(65536, T)
      if not s then break end
      out = out .. s
    end
    assert.matches("^HTTP/1.1 200 OK\r\n.*got hello$", out)
    c:close()
    srv:close(1)
  end)

  it("answers malformed requests 400, oversized headers 431, bodies 413", function()
    local srv = assert(http.serve("127.0.0.1:0", function() return 200, nil, "fine" end,
      { max_body = 1000 }))
    local out = raw(srv:addr(), "BLAH\r\n\r\n")
    assert.matches("^HTTP/1.1 400 ", out)
    out = raw(srv:addr(), "GET / HTTP/1.1\r\nX-Big: " .. ("a"):rep(70000) .. "\r\n\r\n")
    assert.matches("^HTTP/1.1 431 ", out)
    out = raw(srv:addr(), "POST / HTTP/1.1\r\nContent-Length: 1001\r\n\r\n")
    assert.matches("^HTTP/1.1 413 ", out)
    local r = assert(http.request({ method = "POST", url = "http://" .. srv:addr() .. "/", body = ("b"):rep(1000) }))
    assert.are.equal(200, r.status)
    r = assert(http.request({ method = "POST", url = "http://" .. srv:addr() .. "/", body = ("b"):rep(1001) }))
    assert.are.equal(413, r.status)
    assert.are.equal(0, srv:stats().errors)
    srv:close(1)
  end)

  it("disconnects a client that stalls mid-header; others are still served", function()
    local srv = assert(http.serve("127.0.0.1:0", function() return 200, nil, "served" end,
      { header_timeout = 0.5 }))
    local slow = assert(net.connect(srv:addr()))
    assert(slow:write("GET / HTTP/1.1\r\nHost: x\r\nX-Slow: "))
    -- while it stalls, other clients get answers
    for _ = 1, 3 do
      assert.are.equal("served", assert(http.get("http://" .. srv:addr() .. "/", { timeout = T })).body)
    end
    local s, err = slow:read_some(100, T)     -- the server gives up on it
    assert.is_nil(s)
    assert.are.equal("closed", err)
    srv:close(1)
  end)

  it("a handler that raises gets 500 without the error text; the server goes on", function()
    local srv = assert(http.serve("127.0.0.1:0", function(req)
      if req.path == "/boom" then error("secret detail 42") end
      return 200, nil, "alive"
    end))
    local r = assert(http.get("http://" .. srv:addr() .. "/boom"))
    assert.are.equal(500, r.status)
    assert.is_nil(r.body:find("secret", 1, true))
    assert.are.equal("alive", assert(http.get("http://" .. srv:addr() .. "/")).body)
    local st = stats_reach(srv, "requests", 2)
    assert.are.equal(1, st.errors)
    assert.are.equal(2, st.requests)
    srv:close(1)
  end)

  it("204 and 304 carry no body; HEAD gets the headers only", function()
    local srv = assert(http.serve("127.0.0.1:0", function(req)
      if req.path == "/204" then return 204, nil, "ignored" end
      return 200, { ["x-len"] = "5" }, "hello"
    end))
    local r = assert(http.get("http://" .. srv:addr() .. "/204"))
    assert.are.equal(204, r.status)
    assert.are.equal("", r.body)
    assert.is_nil(r.headers["content-length"])
    r = assert(http.request({ method = "HEAD", url = "http://" .. srv:addr() .. "/" }))
    assert.are.equal(200, r.status)
    assert.are.equal("5", r.headers["content-length"])
    assert.are.equal("", r.body)
    -- and the kept-alive connection is still in step
    assert.are.equal("hello", assert(http.get("http://" .. srv:addr() .. "/")).body)
    srv:close(1)
  end)

  it("a handler that returns no status is a 500 too", function()
    local srv = assert(http.serve("127.0.0.1:0", function() return "oops" end))
    assert.are.equal(500, assert(http.get("http://" .. srv:addr() .. "/")).status)
    srv:close(1)
  end)

  it("a handler header that would split the response is a 500, counted and finished", function()
    local srv = assert(http.serve("127.0.0.1:0", function()
      return 200, { ["x-a"] = "1\r\nInjected: yes" }, "hi"
    end))
    local r = assert(http.get("http://" .. srv:addr() .. "/"))
    assert.are.equal(500, r.status)
    assert.is_nil(r.headers.injected)
    local st = stats_reach(srv, "errors", 1)
    wait_until(function() return srv:stats().active == 0 end, T)
    assert.are.equal(0, srv:stats().active)
    assert.are.equal(1, st.errors)
    srv:close(1)
  end)

  it("follows up to 5 redirects; redirect=false returns the 3xx", function()
    local srv = assert(http.serve("127.0.0.1:0", function(req)
      local n = tonumber(req.path:match("^/r/(%d+)$"))
      if n and n > 0 then return 302, { location = "/r/" .. (n - 1) } end
      if req.path == "/loop" then return 301, { location = "/loop" } end
      return 200, nil, "landed " .. req.path
    end))
    local base = "http://" .. srv:addr()
    assert.are.equal("landed /r/0", assert(http.get(base .. "/r/5")).body)
    local r = assert(http.get(base .. "/r/2", { redirect = false }))
    assert.are.equal(302, r.status)
    assert.are.equal("/r/1", r.headers.location)
    local none, err = http.get(base .. "/r/6")
    assert.is_nil(none)
    assert.are.equal("too many redirects", err)
    assert.is_nil((http.get(base .. "/loop")))
    srv:close(1)
  end)

  it("close(timeout) waits for requests in flight, then stops accepting", function()
    local entered, release = braid.chan(1), braid.chan(1)
    local srv = assert(http.serve("127.0.0.1:0", function()
      entered:send(true)
      release:recv(T)
      return 200, nil, "finished"
    end))
    local addr = srv:addr()
    local f = braid.go(function(n, a, t)
      braid.http._net = n
      return braid.http.get("http://" .. a .. "/", { timeout = t })
    end, http._net, addr, T)
    assert.is_true(entered:recv(T))
    local closed = braid.go(function(s, t) return s:close(t) end, srv, T)
    braid.sleep(0.2)
    assert.are.equal("pending", closed:status())   -- still waiting for the request
    release:send(true)
    local r = f:await(T)
    assert.are.equal("finished", r.body)
    assert.is_true(closed:await(T))
    assert.is_nil((http.get("http://" .. addr .. "/", { timeout = 2 })))
  end)

  it("max_connections bounds the connections served at once", function()
    local inside, peak, release = braid.chan(math.huge), 0, braid.chan(math.huge)
    local srv = assert(http.serve("127.0.0.1:0", function()
      inside:send(1)
      release:recv(T)
      inside:send(-1)
      return 200, nil, "ok"
    end, { max_connections = 2 }))
    local fs = {}
    for i = 1, 4 do
      fs[i] = braid.go(function(n, a, t)
        braid.http._net = n
        local r = assert(braid.http.get("http://" .. a .. "/", { timeout = t, headers = { connection = "close" } }))
        return r.status
      end, http._net, srv:addr(), T)
    end
    local now = 0
    for _ = 1, 2 do now = now + inside:recv(T); peak = math.max(peak, now) end
    assert.are.equal(nil, (inside:recv(0.3)))   -- a third is not let in
    for _ = 1, 4 do release:send(true) end
    for i = 1, 4 do assert.are.equal(200, fs[i]:await(T)) end
    assert.are.equal(2, peak)
    srv:close(1)
  end)

  it("serves many concurrent clients from tasks (shared client pool)", function()
    local srv = assert(http.serve("127.0.0.1:0", function(req) return 200, nil, req.query.i end))
    local items = {}
    for i = 1, 40 do items[i] = i end
    local n, addr = http._net, srv:addr()
    local out = braid.pmap(items, function(i)
      braid.http._net = n
      local r = assert(braid.http.get("http://" .. addr .. "/?i=" .. i, { timeout = T }))
      return tonumber(r.body)
    end, { workers = 8 })
    assert.are.same(items, out)
    srv:close(1)
  end)

  it("checks its arguments", function()
    assert.has_error(function() http.serve(1, function() end) end,
      "bad argument #1 to 'braid.http.serve' (string expected, got number)")
    assert.has_error(function() http.serve("127.0.0.1:0", 1) end,
      "bad argument #2 to 'braid.http.serve' (function expected, got number)")
    assert.has_error(function() http.request("x") end,
      "bad argument #1 to 'braid.http.request' (table expected, got string)")
    assert.has_error(function() http.get(nil) end,
      "bad argument #1 to 'braid.http.get' (string expected, got nil)")
  end)
end)
end

-- Against curl (Debian's), over real sockets: only with braid.net, and not
-- under TSan (io.popen returns nothing in a lua5.4 with libtsan preloaded).
if braid.net and os.getenv("BRAID_SANITIZE") ~= "thread" then
describe("braid.http against curl", function()
  local function sh(cmd)
    -- curl must not inherit a sanitizer runtime preloaded into lua5.4
    local f = assert(io.popen("unset LD_PRELOAD; " .. cmd .. " 2>&1"))
    local out = f:read("a")
    f:close()
    return out
  end
  local srv
  before_each(function()
    http._net = nil
    srv = assert(http.serve("127.0.0.1:0", function(req)
      if req.path == "/stream" then
        local w = req:stream(200, { ["Content-Type"] = "text/plain" })
        for i = 1, 3 do w:write("chunk" .. i .. "\n") end
        w:close()
        return
      end
      return 200, { ["Content-Type"] = "text/plain", ["X-Echo"] = req.headers["x-test"] or "-" },
        req.method .. " " .. req.path .. " " .. (req.query.q or "") .. " " .. req.body
    end))
  end)
  after_each(function() srv:close(1) end)

  it("serves curl: status, headers, query, POST body", function()
    local out = sh("curl -s -i --max-time 30 -H 'X-Test: hi' 'http://" .. srv:addr() .. "/p?q=a%20b'")
    assert.matches("^HTTP/1.1 200 OK\r\n", out)
    assert.matches("\r\nX%-Echo: hi\r\n", out)
    assert.matches("\r\n\r\nGET /p a b $", out)
    out = sh("curl -s --max-time 30 --data-binary 'x=1&y=2' 'http://" .. srv:addr() .. "/post'")
    assert.are.equal("POST /post  x=1&y=2", out)
  end)

  it("streams chunked responses to curl", function()
    local out = sh("curl -s -i --max-time 30 'http://" .. srv:addr() .. "/stream'")
    assert.matches("[Tt]ransfer%-[Ee]ncoding: chunked", out)
    assert.matches("\r\n\r\nchunk1\nchunk2\nchunk3\n$", out)
  end)

  it("keeps curl's connection alive (curl -v says Re-using)", function()
    local base = "http://" .. srv:addr()
    local out = sh("curl -s -v --max-time 30 " .. base .. "/1 " .. base .. "/2 " .. base .. "/3")
    for i = 1, 3 do assert.is_truthy(out:find("GET /" .. i .. "  ", 1, true)) end
    assert.matches("Re%-using", out)
    local st = stats_reach(srv, "requests", 3)
    assert.are.equal(1, st.connections)
  end)

  it("https:// through braid.net's TLS (openssl s_server, a self-signed cert)", function()
    local dir = sh("mktemp -d"):gsub("%s+$", "")
    sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout " .. dir .. "/key.pem -out " .. dir ..
       "/cert.pem -days 1 -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1")
    local l = assert(braid.net.listen("127.0.0.1:0"))
    local port = l:addr():match(":(%d+)$")
    l:close()
    local pid = sh("(timeout 20 openssl s_server -quiet -accept 127.0.0.1:" .. port .. " -www -cert " ..
      dir .. "/cert.pem -key " .. dir .. "/key.pem > /dev/null 2>&1 & echo $!)"):match("%d+")
    local r, err
    for _ = 1, 50 do              -- until s_server listens
      r, err = http.get("https://127.0.0.1:" .. port .. "/", { cafile = dir .. "/cert.pem", timeout = 5 })
      if r or not tostring(err):find("refused") then break end
      braid.sleep(0.1)
    end
    local r2, err2 = http.get("https://127.0.0.1:" .. port .. "/", { timeout = 5 })
    sh("kill " .. pid .. "; rm -rf " .. dir)
    assert.are.equal(200, r and r.status, tostring(err))
    assert.matches("s_server", r.body)
    assert.is_nil(r2)
    assert.matches("^tls: ", err2)
  end)

  it("curl's chunked upload is decoded", function()
    local out = sh("printf 'abc' | curl -s --max-time 30 -H 'Transfer-Encoding: chunked' --data-binary @- 'http://"
      .. srv:addr() .. "/up'")
    assert.are.equal("POST /up  abc", out)
  end)
end)
end

