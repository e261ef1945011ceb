-- net_spec.lua: API.md "Network (`braid.net`)".  Loopback and temporary
-- Unix paths only; every port is picked by the kernel (port 0).
local braid = require "braid"
local net = require "braid.net"
local H = require "tests.lua.helpers"

local T = 10
-- Sanitizer runs shrink the big counts (BRAID_NET_SCALE=0.05).
local SCALE = tonumber(os.getenv("BRAID_NET_SCALE")) or 1
local function scaled(n) return math.max(10, math.floor(n * SCALE)) end

-- An echo server on a free loopback port: echoes whatever arrives until the
-- peer closes.  Returns the listener (closing it stops the server).
local function echo_server(addr)
  local l = assert(net.listen(addr or "127.0.0.1:0"))
  braid.go(function()
    while true do
      local c = l:accept()
      if not c then return end
      braid.go(function()
        while true do
          local s = c:read_some(65536, T)
          if not s then break end
          if not c:write(s, T) then break end
        end
        c:close()
      end)
    end
  end)
  return l
end

local function fd_count()
  local n = 0
  local p = io.popen("ls /proc/" .. braid_pid() .. "/fd")
  for _ in p:lines() do n = n + 1 end
  p:close()
  return n
end

function braid_pid()
  local f = assert(io.open("/proc/self/stat"))
  local pid = f:read("n")
  f:close()
  return pid
end

describe("braid.net", function()
  it("is braid.net and require 'braid.net'", function()
    assert.equal(braid.net, net)
    assert.is_function(net.listen)
    assert.is_function(net.connect)
  end)

  it("listens on a free port and reports it", function()
    local l = assert(net.listen("127.0.0.1:0"))
    assert.truthy(tostring(l):match("^braid%.listener#%d+"))
    local port = tonumber(l:addr():match("^127%.0%.0%.1:(%d+)$"))
    assert.truthy(port and port > 0)
    -- The same address is in use now.
    local l2, err = net.listen(l:addr())
    assert.is_nil(l2)
    assert.is_string(err)
    l:close()
  end)

  it("echoes lines, counts and read_some", function()
    local l = echo_server()
    local c = assert(net.connect(l:addr()))
    assert.truthy(tostring(c):match("^braid%.conn#%d+"))
    assert.equal(l:addr(), c:peer())
    assert.truthy(c:addr():match("^127%.0%.0%.1:%d+$"))
    assert.is_true(c:write("one\r\ntwo\nthree"))
    assert.equal("one", c:read("l", T))
    assert.equal("two\n", c:read("L", T))
    assert.equal("thr", c:read(3, T))
    assert.equal("ee", c:read(2, T))
    assert.is_true(c:write("xyz"))
    local got = ""
    while #got < 3 do got = got .. assert(c:read_some(2, T)) end
    assert.equal("xyz", got)
    c:close()
    l:close()
  end)

  it("a read that times out consumes nothing", function()
    local l = assert(net.listen("127.0.0.1:0"))
    local peer = braid.chan(1)
    local go = braid.chan()
    braid.go(function()
      local c = assert(l:accept(T))
      peer:send(true)
      c:write("par")
      go:recv(T)
      c:write("tial\nrest")
      go:recv(T)
      c:close()
    end)
    local c = assert(net.connect(l:addr()))
    assert.is_true(peer:recv(T))
    local s, err = c:read("l", 0.05)
    assert.is_nil(s)
    assert.equal("timeout", err)
    s, err = c:read(10, 0.05)
    assert.is_nil(s)
    assert.equal("timeout", err)
    go:send(true)
    assert.equal("partial", c:read("l", T))
    go:send(true)
    -- EOF: "a" returns what is left, then reads report closed.
    assert.equal("rest", c:read("a", T))
    local s2, e2 = c:read("l", T)
    assert.is_nil(s2)
    assert.equal("closed", e2)
    c:close()
    l:close()
  end)

  it("reads n bytes, fewer only at EOF", function()
    local l = assert(net.listen("127.0.0.1:0"))
    braid.go(function()
      local c = assert(l:accept(T))
      for i = 1, 5 do c:write(tostring(i)); braid.sleep(0.002) end
      c:shutdown()
      c:read("a", T)
      c:close()
    end)
    local c = assert(net.connect(l:addr()))
    assert.equal("1234", c:read(4, T))
    assert.equal("5", c:read(4, T))
    local s, err = c:read(1, T)
    assert.is_nil(s)
    assert.equal("closed", err)
    c:close()
    l:close()
  end)

  it("reports refused, dns failures and raises on malformed addresses", function()
    local l = assert(net.listen("127.0.0.1:0"))
    local addr = l:addr()
    l:close()
    local c, err = net.connect(addr)
    assert.is_nil(c)
    assert.equal("refused", err)
    c, err = net.connect("no-such-host.invalid:80", { timeout = T })
    assert.is_nil(c)
    assert.truthy(err:match("^dns: "), err)
    for _, bad in ipairs({ "nope", "127.0.0.1:", "127.0.0.1:99999", ":80", "::1:80", "[::1:80", "unix:" }) do
      local ok, msg = pcall(net.connect, bad)
      assert.is_false(ok)
      assert.truthy(msg:find("bad argument #1 to 'braid.net.connect'", 1, true), msg)
    end
    local ok, msg = pcall(net.listen, "x")
    assert.is_false(ok)
    assert.truthy(msg:find("bad argument #1 to 'braid.net.listen'", 1, true), msg)
  end)

  it("accept times out and close wakes blocked accepts", function()
    local l = assert(net.listen("127.0.0.1:0"))
    local c, err = l:accept(0.02)
    assert.is_nil(c)
    assert.equal("timeout", err)
    local res = braid.chan(2)
    local started = braid.chan(2)
    for _ = 1, 2 do
      braid.go(function()
        started:send(true)
        res:send(select(2, l:accept()))
      end)
    end
    started:recv(T); started:recv(T)
    assert.truthy(H.wait_until(function()
      local n = 0
      for _, t in ipairs(braid.tasks()) do
        if (t.waiting_on or ""):match("^accept " .. H.id_pattern(l)) then n = n + 1 end
      end
      return n == 2
    end, T))
    l:close()
    assert.equal("closed", res:recv(T))
    assert.equal("closed", res:recv(T))
  end)

  it("close wakes blocked readers and writers; tasks() shows the wait", function()
    local l = assert(net.listen("127.0.0.1:0"))
    local sc = braid.chan(1)
    braid.go(function() sc:send((assert(l:accept(T)))) end)
    local c = assert(net.connect(l:addr()))
    local s = sc:recv(T)
    local res = braid.chan(3)
    for _ = 1, 2 do
      braid.go(function() res:send(select(2, c:read("l"))) end)
    end
    assert.truthy(H.wait_until(function()
      for _, t in ipairs(braid.tasks()) do
        if (t.waiting_on or ""):match("^read " .. H.id_pattern(c)) then return true end
      end
      return false
    end, T))
    -- A writer blocked on a full socket (the peer never reads).
    braid.go(function()
      local big = string.rep("x", 1 << 20)
      local ok, err
      for _ = 1, 64 do
        ok, err = c:write(big)
        if not ok then break end
      end
      res:send(err)
    end)
    assert.truthy(H.wait_until(function()
      for _, t in ipairs(braid.tasks()) do
        if (t.waiting_on or ""):match("^write " .. H.id_pattern(c)) then return true end
      end
      return false
    end, T))
    c:close()
    assert.equal("closed", res:recv(T))
    assert.equal("closed", res:recv(T))
    assert.equal("closed", res:recv(T))
    s:close()
    l:close()
  end)

  it("two readers take turns whole reads", function()
    local l = assert(net.listen("127.0.0.1:0"))
    local N = 200
    local go = braid.chan()
    braid.go(function()
      local c = assert(l:accept(T))
      go:recv(T)
      -- Lines arrive in small pieces: a reader must never see half a line.
      for i = 1, N do
        local line = ("line-%04d-%s\n"):format(i, ("z"):rep(i % 37))
        for k = 1, #line, 5 do c:write(line:sub(k, k + 4)) end
      end
      c:close()
    end)
    local c = assert(net.connect(l:addr()))
    local got = braid.chan(math.huge)
    local done = braid.chan(2)
    for _ = 1, 2 do
      braid.go(function()
        while true do
          local s = c:read("l", T)
          if not s then break end
          got:send(s)
        end
        done:send(true)
      end)
    end
    go:send(true)
    done:recv(T); done:recv(T)
    local seen = {}
    for _ = 1, N do
      local s = got:recv(0)
      local i, z = s:match("^line%-(%d+)%-(z*)$")
      assert.truthy(i, s)
      i = tonumber(i)
      assert.equal(i % 37, #z)
      assert.is_nil(seen[i])
      seen[i] = true
    end
    assert.is_nil((got:recv(0)))
    c:close()
    l:close()
  end)

  local function waits_on(c, op, n)
    return H.wait_until(function()
      local k = 0
      for _, t in ipairs(braid.tasks()) do
        if (t.waiting_on or ""):match("^" .. op .. " " .. H.id_pattern(c)) then k = k + 1 end
      end
      return k >= (n or 1)
    end, T)
  end

  it("a reader cancelled while it holds the read token gives it back", function()
    local l = assert(net.listen("127.0.0.1:0"))
    local sc = braid.chan(1)
    braid.go(function() sc:send((assert(l:accept(T)))) end)
    local c = assert(net.connect(l:addr()))
    local s = sc:recv(T)
    -- A holds the token and waits on the socket (a partial line is in the
    -- read-ahead); B waits for the token.  Both are cancelled, A raising
    -- through the runtime, B catching it with pcall.
    assert(s:write("par"))
    local a = braid.go(function() return c:read("l") end)
    assert.truthy(waits_on(c, "read", 1))
    local b = braid.go(function()
      local ok, err = pcall(c.read, c, "l")
      return ok, err
    end)
    assert.truthy(waits_on(c, "read", 2))
    a:cancel()
    local ok, err = a:wait(T)
    assert.is_false(ok)
    assert.equal("cancelled", err)
    b:cancel()
    local wok, pok, perr = b:wait(T)
    assert.is_true(wok)
    assert.is_false(pok)
    assert.equal("cancelled", perr)
    -- Another task reads the same socket: the token is free, and the bytes
    -- A had buffered are still there.
    assert(s:write("tial\n"))
    local got = braid.go(function() return c:read("l", T) end)
    assert.equal("partial", got:await(T))
    -- The same from the main thread (no task), twice.
    assert(s:write("x\ny\n"))
    assert.equal("x", c:read("l", T))
    assert.equal("y", c:read("l", T))
    c:close()
    s:close()
    l:close()
  end)

  it("a writer cancelled mid-write gives the write token back", function()
    local l = assert(net.listen("127.0.0.1:0"))
    local sc = braid.chan(1)
    braid.go(function() sc:send((assert(l:accept(T)))) end)
    local c = assert(net.connect(l:addr()))
    local s = sc:recv(T)
    -- The peer does not read yet: the writer fills the socket and waits.
    local w = braid.go(function() return c:write(string.rep("x", 32 << 20)) end)
    assert.truthy(waits_on(c, "write", 1))
    w:cancel()
    local ok, err = w:wait(T)
    assert.is_false(ok)
    assert.equal("cancelled", err)
    -- Drain, then a second writer's line gets through.
    local reader = braid.go(function()
      local seen = ""
      while true do
        local chunk = s:read_some(65536, T)
        if not chunk then return nil, "eof before the tail" end
        seen = (seen .. chunk):sub(-16)
        if seen:find("TAIL\n$") then return true end
      end
    end)
    local w2 = braid.go(function() return c:write("TAIL\n", T) end)
    assert.is_true(w2:await(T))
    assert.is_true(reader:await(T))
    c:close()
    s:close()
    l:close()
  end)

  it("resolves host names on the job pool", function()
    local l = echo_server()
    local port = l:addr():match(":(%d+)$")
    local fs = {}
    for i = 1, 4 do
      fs[i] = braid.go(function()
        local c = assert(net.connect("localhost:" .. port, { timeout = T }))
        assert(c:write("hi\n"))
        local r = c:read("l", T)
        c:close()
        return r
      end)
    end
    for i = 1, 4 do assert.equal("hi", fs[i]:await(T)) end
    -- The lookups ran on the pool braid.blocking uses (not a thread each).
    assert.truthy(braid.stats().blocking_threads >= 1)
    l:close()
  end)

  it("one task reads while another writes (full duplex)", function()
    local l = echo_server()
    local c = assert(net.connect(l:addr()))
    local N, size = 200, 4096
    local chunk = ("d"):rep(size)
    local w = braid.go(function()
      for _ = 1, N do assert(c:write(chunk, T)) end
      return true
    end)
    local r = braid.go(function()
      local n = 0
      while n < N * size do
        local s = assert(c:read_some(65536, T))
        n = n + #s
      end
      return n
    end)
    assert.is_true(w:await(T))
    assert.equal(N * size, r:await(T))
    c:close()
    l:close()
  end)

  it("passes a connection to another task over a channel", function()
    local l = echo_server()
    local ch = braid.chan(1)
    local f = braid.go(function()
      local c = ch:recv(T)
      assert(c:write("via channel\n"))
      local s = c:read("l", T)
      c:close()
      return s, tostring(c)
    end)
    local c = assert(net.connect(l:addr()))
    ch:send(c)
    local s, name = f:await(T)
    assert.equal("via channel", s)
    assert.equal(H.handle_id(c), H.handle_id(name))
    local r, err = c:read("l", T)
    assert.is_nil(r)
    assert.equal("closed", err)
    l:close()
  end)

  it("works over unix sockets", function()
    local path = os.tmpname()
    os.remove(path)
    local l = echo_server("unix:" .. path)
    assert.equal("unix:" .. path, l:addr())
    local c = assert(net.connect("unix:" .. path))
    assert(c:write("over unix\n"))
    assert.equal("over unix", c:read("l", T))
    c:close()
    l:close()
    os.remove(path)
  end)

  it("works over IPv6 loopback", function()
    local l = net.listen("[::1]:0")
    if not l then
      pending("::1 is not available here")
      return
    end
    assert.truthy(l:addr():match("^%[::1%]:%d+$"))
    l:close()
    l = echo_server("[::1]:0")
    local c = assert(net.connect(l:addr()))
    assert(c:write("six\n"))
    assert.equal("six", c:read("l", T))
    c:close()
    l:close()
  end)

  it("echoes over 1000 concurrent connections", function()
    local l = echo_server()
    local addr = l:addr()
    local N = scaled(1000)
    local ok = braid.chan(N)
    for i = 1, N do
      braid.go(function()
        local c, err = net.connect(addr, { timeout = 30 })
        if not c then ok:send(err); return end
        local msg = ("msg %d\n"):format(i)
        c:write(msg)
        local s = c:read("L", 30)
        c:close()
        ok:send(s == msg)
      end)
    end
    local good = 0
    for _ = 1, N do
      if ok:recv(60) == true then good = good + 1 end
    end
    assert.equal(N, good)
    l:close()
  end)

  it("10 000 sequential connections leak no fd", function()
    local l = echo_server()
    local addr = l:addr()
    local function once()
      local c = assert(net.connect(addr))
      assert(c:write("p"))
      assert.equal("p", c:read(1, T))
      c:close()
    end
    once()
    collectgarbage()
    local before = fd_count()
    for _ = 1, scaled(10000) do once() end
    -- The server side closes its ends after seeing EOF: let it finish.
    assert.truthy(H.wait_until(function()
      collectgarbage()
      return fd_count() <= before
    end, 20))
    l:close()
  end)

  it("closing the runtime with blocked socket tasks closes every fd and returns", function()
    local code = [[
      package.cpath = os.getenv("BRAID_TEST_CPATH") .. ";" .. package.cpath
      local braid = require "braid"
      local net = require "braid.net"
      local l = assert(net.listen("127.0.0.1:0"))
      local c = assert(net.connect(l:addr()))
      local s = assert(l:accept(5))
      for _ = 1, 3 do braid.go(function() c:read("l") end) end
      braid.go(function() l:accept() end)
      braid.sleep(0.1)
      print("blocked")
    ]]
    local cpath = package.cpath:match("^[^;]+")
    local p = io.popen("BRAID_TEST_CPATH='" .. cpath .. "' timeout 30 lua5.4 -e '" ..
                       code:gsub("'", "'\\''") .. "' 2>&1; echo rc=$?")
    local out = p:read("a")
    p:close()
    assert.truthy(out:match("blocked"), out)
    assert.truthy(out:match("rc=0"), out)
  end)

  describe("TLS", function()
    local dir
    local function sh(cmd)
      local ok = os.execute(cmd .. " >/dev/null 2>&1")
      assert.truthy(ok, cmd)
    end
    setup(function()
      dir = os.tmpname()
      os.remove(dir)
      sh("mkdir -p " .. dir)
      -- A CA made here, and a server certificate for localhost/127.0.0.1.
      sh(("cd %s && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem " ..
          "-days 2 -subj /CN=braid-test-ca"):format(dir))
      sh(("cd %s && openssl req -newkey rsa:2048 -nodes -keyout srv.key -out srv.csr " ..
          "-subj /CN=localhost"):format(dir))
      local f = assert(io.open(dir .. "/ext.cnf", "w"))
      f:write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
      f:close()
      sh(("cd %s && openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial " ..
          "-out srv.pem -days 2 -extfile ext.cnf"):format(dir))
    end)
    teardown(function()
      if dir then os.execute("rm -rf " .. dir) end
    end)

    local function tls_echo()
      local l = assert(net.listen("127.0.0.1:0",
        { tls = { cert = dir .. "/srv.pem", key = dir .. "/srv.key" } }))
      braid.go(function()
        while true do
          local c = l:accept()
          if not c then return end
          braid.go(function()
            while true do
              local s = c:read_some(65536, T)
              if not s then break end
              if not c:write(s, T) then break end
            end
            c:close()
          end)
        end
      end)
      return l
    end

    it("echoes over TLS with a verified certificate (host name and IP)", function()
      local l = tls_echo()
      local port = l:addr():match(":(%d+)$")
      local c = assert(net.connect("localhost:" .. port,
        { timeout = T, tls = { cafile = dir .. "/ca.pem" } }))
      assert(c:write("secret line\n" .. ("b"):rep(100000) .. "\n"))
      assert.equal("secret line", c:read("l", T))
      assert.equal(100000, #c:read("l", T))
      c:close()
      c = assert(net.connect(l:addr(), { timeout = T, tls = { cafile = dir .. "/ca.pem" } }))
      assert(c:write("by ip\n"))
      assert.equal("by ip", c:read("l", T))
      c:close()
      l:close()
    end)

    it("a client that stalls its handshake does not hold up accept", function()
      local l = tls_echo()
      -- TCP only: the server's handshake waits for a ClientHello that never
      -- comes.
      local stalled = assert(net.connect(l:addr(), { timeout = T }))
      assert.truthy(H.wait_until(function()
        for _, t in ipairs(braid.tasks()) do
          if (t.waiting_on or ""):match("^read ") then return true end
        end
        return false
      end, T))
      -- A second client completes its handshake and is echoed meanwhile.
      for _ = 1, 2 do
        local c = assert(net.connect(l:addr(), { timeout = T, tls = { cafile = dir .. "/ca.pem" } }))
        assert(c:write("second\n", T))
        assert.equal("second", c:read("l", T))
        c:close()
      end
      -- The stalled one gets no bytes (the server sent no handshake reply
      -- before a ClientHello); closing it ends its server task.
      assert.is_nil((stalled:read_some(100, 0.05)))
      stalled:close()
      l:close()
    end)

    it("fails verification against the system store and on a wrong name", function()
      local l = tls_echo()
      local port = l:addr():match(":(%d+)$")
      local c, err = net.connect(l:addr(), { timeout = T, tls = true })
      assert.is_nil(c)
      assert.truthy(err:match("^tls: certificate verify failed"), err)
      c, err = net.connect("localhost:" .. port,
        { timeout = T, tls = { cafile = dir .. "/ca.pem", servername = "other.example" } })
      assert.is_nil(c)
      assert.truthy(err:match("^tls:"), err)
      -- verify = false accepts it.
      c = assert(net.connect(l:addr(), { timeout = T, tls = { verify = false } }))
      assert(c:write("x\n"))
      assert.equal("x", c:read("l", T))
      c:close()
      l:close()
    end)
  end)
end)
