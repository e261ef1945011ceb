-- nats_spec.lua: API.md "Many processes and machines (braid.nats)", against
-- a nats-server of the spec's own (tests/lua/nats_helpers.lua).
local braid = require "braid"
local N = require "tests.lua.nats_helpers"

if not N.available() then
  describe("braid.nats", function()
    it("is skipped: " .. N.BIN .. " not found (Debian package nats-server)", function() end)
  end)
  return
end

local srv
-- Tests that start other processes (a nats.c peer, a second braid, a
-- server restart) need io.popen; a sanitizer pass cannot (its server
-- comes from a ctest fixture, scripts/nats_fixture.sh): they are pending
-- there.
local SPAWN = N.can_spawn()
local it_spawn = SPAWN and it or pending

local function connect(opts)
  local nc = assert(braid.nats.connect(srv.url, opts))
  return nc
end

-- A request from outside braid (nats.c): tests/nats/nats_peer.c.
local function peer(...)
  local args = { ... }
  for i = 1, #args do args[i] = "'" .. tostring(args[i]):gsub("'", "'\\''") .. "'" end
  local build = os.getenv("BRAID_BUILD") or "build"
  local p = assert(io.popen("env -u LD_PRELOAD " .. build .. "/nats_peer " .. srv.url .. " " .. table.concat(args, " ")))
  local out = p:read("a")
  local _, _, code = p:close()
  return out, code
end

describe("braid.nats", function()
  setup(function()
    srv = assert(N.start())
  end)

  teardown(function()
    if srv then srv:stop() end
  end)

  it("connects, and reports a refused connection as nil, err", function()
    local nc = connect({ name = "spec" })
    assert.matches("^braid%.nats#%d+", tostring(nc))
    assert.equals("connected", nc:stats().state)
    nc:close()
    assert.matches("closed", tostring(nc))
    -- port 1 on loopback: nothing listens there
    local none, err = braid.nats.connect("nats://127.0.0.1:1", { timeout = 1, max_reconnect = 0 })
    assert.is_nil(none)
    assert.is_string(err)
  end)

  it("publishes and subscribes: strings as they are, with subject and reply", function()
    local nc = connect()
    local ch = nc:subscribe("greet")
    nc:publish("greet", "hello\0binary")
    nc:publish("greet", "again", "my.inbox")
    local m = assert(ch:recv(5))
    assert.equals("greet", m.subject)
    assert.equals("hello\0binary", m.data)
    assert.is_nil(m.reply)
    local m2 = assert(ch:recv(5))
    assert.equals("again", m2.data)
    assert.equals("my.inbox", m2.reply)
    nc:close()
  end)

  it("matches NATS wildcards: a.* one token, a.> the rest", function()
    local nc = connect()
    local one, rest = nc:subscribe("w.*"), nc:subscribe("w.>")
    nc:publish("w.x", "1")
    nc:publish("w.x.y", "2")
    nc:publish("other", "3")
    nc:publish("w.end", "4")
    assert.equals("w.x", one:recv(5).subject)
    assert.equals("w.end", one:recv(5).subject)
    assert.same({ "w.x", "w.x.y", "w.end" },
      { rest:recv(5).subject, rest:recv(5).subject, rest:recv(5).subject })
    assert.same({ nil, "timeout" }, { one:recv(0.2) })
    nc:close()
  end)

  it("queue groups give each message to one member", function()
    local nc, nc2 = connect(), connect()
    local a = nc:subscribe("q.work", { queue = "g", buffer = 1000 })
    local b = nc2:subscribe("q.work", { queue = "g", buffer = 1000 })
    local all = nc:subscribe("q.work", { buffer = 1000 })
    -- the server has every subscription before the first message
    nc:flush(5); nc2:flush(5)
    local pub = connect()
    for i = 1, 200 do pub:publish("q.work", tostring(i)) end
    pub:flush()
    local seen = {}
    for _ = 1, 200 do seen[#seen + 1] = assert(all:recv(5)).data end
    assert.equals(200, #seen)
    local got, count = {}, 0
    for _, ch in ipairs({ a, b }) do
      while true do
        local m = ch:recv(0.5)
        if not m then break end
        assert.is_nil(got[m.data], "delivered twice: " .. m.data)
        got[m.data] = true
        count = count + 1
      end
    end
    assert.equals(200, count)
    assert.is_true(a:stats().received > 0)
    assert.is_true(b:stats().received > 0)
    for _, c in ipairs({ nc, nc2, pub }) do c:close() end
  end)

  it("a slow subscriber loses values (counted) and never stalls the others", function()
    local nc = connect()
    local slow = nc:subscribe("firehose", { buffer = 4 })            -- never read
    local fast = nc:subscribe("firehose", { buffer = 8, policy = "block" })
    local got = braid.go(function()
      local n = 0
      for _ = 1, 500 do
        if not fast:recv(10) then break end
        n = n + 1
      end
      return n
    end)
    for i = 1, 500 do nc:publish("firehose", tostring(i)) end
    assert.equals(500, got:await(30))
    -- nats.c delivers to each subscription on its own thread: slow's may
    -- still be behind fast's here (a loaded machine), so wait for it
    -- (bounded) before counting.
    local deadline = braid.now() + 20
    while slow:stats().dropped < 496 and braid.now() < deadline do braid.sleep(0.01) end
    assert.equals(4, #slow)
    assert.equals(496, slow:stats().dropped)
    assert.equals(496, nc:stats().dropped)
    -- slide keeps the newest
    assert.equals("497", slow:recv().data)
    nc:close()
  end)

  it("sends other values as JSON with the header, decoded on receipt", function()
    local nc = connect()
    local ch = nc:subscribe("json")
    local v = { name = "ada", n = 3, pi = 1.5, list = { 1, 2, { deep = true } }, ok = false }
    nc:publish("json", v)
    local m = assert(ch:recv(5))
    assert.equals("application/json", m.headers["content-type"])
    assert.same(v, m.data)
    assert.equals("integer", math.type(m.data.n))
    nc:publish("json", 42)
    assert.equals(42, ch:recv(5).data)
    assert.has_error(function() nc:publish("json", { f = print }) end)
    assert.has_error(function() nc:publish("json", nil) end)
    nc:close()
  end)

  it("request/reply, timeout and no responders", function()
    local nc = connect()
    local svc = nc:serve("echo", function(data, msg)
      return { echoed = data, subject = msg.subject }
    end, { workers = 2 })
    local r = nc:request("echo", "ping", 5)
    assert.same({ echoed = "ping", subject = "echo" }, r)
    assert.same({ echoed = { a = { 1, 2 } }, subject = "echo" }, nc:request("echo", { a = { 1, 2 } }, 5))
    -- a subscriber that never answers: timeout
    local mute = nc:subscribe("mute")
    assert.same({ nil, "timeout" }, { nc:request("mute", "x", 0.3) })
    assert.is_not_nil(mute:recv(1))
    -- nobody subscribed: the server says so at once (503)
    assert.same({ nil, "no responders" }, { nc:request("nobody.here", "x", 5) })
    assert.is_true(svc:stop(5))
    assert.same({ nil, "no responders" }, { nc:request("echo", "x", 5) })
    nc:close()
  end)

  it("a handler that raises answers with an error reply, not a timeout", function()
    local nc = connect()
    local svc = nc:serve("fragile", function(d)
      if d == "boom" then error("boom\nsecond line", 0) end
      return d
    end, { workers = 1 })
    nc:flush()
    -- a 60 s timeout: only an error reply can end this call with "handler error"
    local r, err = nc:request("fragile", "boom", 60)
    assert.is_nil(r)
    assert.equals("handler error: boom second line", err)
    -- the service goes on
    assert.equals("fine", nc:request("fragile", "fine", 10))
    -- on the wire: the NATS micro services' error headers, empty payload
    local inbox = nc:subscribe("my.reply.box")
    nc:flush()
    nc:publish("fragile", "boom", "my.reply.box")
    local m = assert(inbox:recv(10))
    assert.equals("", m.data)
    assert.equals("boom second line", m.headers["nats-service-error"])
    assert.equals("500", m.headers["nats-service-error-code"])
    assert.is_true(svc:stop(5))
    nc:close()
  end)

  it_spawn("the main thread waiting on a subscription is not a deadlock (nats.c's threads count)", function()
    local nc = connect()
    local ch = nc:subscribe("late.news")
    nc:flush()
    -- another process publishes 200 ms from now; no task, no timer here
    local build = os.getenv("BRAID_BUILD") or "build"
    -- Published every 0.2 s for up to 20 s: one peer that fails to start or
    -- to connect on a loaded machine must not leave this wait (it has no
    -- timeout, on purpose) hanging; the first that arrives ends it.
    -- The loop stops once this test has its message (a flag file).
    local flag = os.tmpname()
    os.remove(flag)
    os.execute(("(for i in $(seq 100); do [ -e %s ] && break; sleep 0.2; " ..
                "env -u LD_PRELOAD %s/nats_peer %s publish late.news hello; done; rm -f %s) >/dev/null 2>&1 &")
      :format(flag, build, srv.url, flag))
    local ok, m = pcall(ch.recv, ch)        -- no timeout
    local f = io.open(flag, "w")
    if f then f:close() end
    assert.is_true(ok, tostring(m))
    assert.equals("hello", m.data)
    nc:close()
    -- closed: nothing can deliver any more, and the check sees it
    local quiet = braid.chan()
    local ok2, err = pcall(quiet.recv, quiet)
    assert.is_false(ok2)
    assert.matches("deadlock", err)
  end)

  it("a request parks only its task; the connection works from tasks on any worker", function()
    local nc = connect()
    local svc = nc:serve("slow", function(d) braid.sleep(0.3) return d end, { workers = 1 })
    local f = braid.go(function() return nc:request("slow", "late", 10) end)
    -- meanwhile other tasks publish and request on the same handle
    local sub = nc:subscribe("many", { buffer = 1000 })
    local r = braid.pmap({ 1, 2, 3, 4, 5, 6, 7, 8 }, function(i)
      nc:publish("many", tostring(i))
      return i
    end)
    assert.equals(8, #r)
    for _ = 1, 8 do assert.is_not_nil(sub:recv(5)) end
    assert.equals("pending", f:status())
    assert.equals("late", f:await(10))
    svc:stop(5)
    nc:close()
  end)

  it("serve runs handlers in at most opts.workers tasks at a time", function()
    local nc = connect()
    local ctr = N.counter()
    local svc = nc:serve("bounded", function(d)
      N.enter(ctr)
      braid.sleep(0.2)
      N.leave(ctr)
      return d
    end, { workers = 3 })
    local fs = {}
    for i = 1, 12 do fs[i] = braid.go(function() return nc:request("bounded", tostring(i), 30) end) end
    for i = 1, 12 do assert.equals(tostring(i), fs[i]:await(60)) end
    assert.equals(3, N.peak(ctr))
    assert.equals(12, svc:stats().served)
    svc:stop(5)
    nc:close()
  end)

  it("queue-group services spread requests over every member", function()
    local a, b = connect(), connect()
    local sa = a:serve("spread", function() return "a" end, { workers = 1 })
    local sb = b:serve("spread", function() return "b" end, { workers = 1 })
    a:flush(5); b:flush(5)
    local client = connect()
    local seen = { a = 0, b = 0 }
    for _ = 1, 60 do
      local r = assert(client:request("spread", "x", 5))
      seen[r] = seen[r] + 1
    end
    assert.equals(60, seen.a + seen.b)
    assert.is_true(seen.a > 0 and seen.b > 0)
    sa:stop(5); sb:stop(5)
    a:close(); b:close(); client:close()
  end)

  it_spawn("serves a plain nats.c client (no braid), strings and JSON", function()
    local nc = connect()
    local svc = nc:serve("svc.upper", function(d)
      if type(d) == "table" then return { n = d.n + 1 } end
      return d:upper()
    end)
    nc:flush()
    local out, code = peer("request", "svc.upper", "shout", 5000)
    assert.equals(0, code)
    assert.equals("-\nSHOUT", out)
    out, code = peer("request", "svc.upper", '{"n":41}', 5000)
    assert.equals(0, code)
    local ct, body = out:match("^(.-)\n(.*)$")
    assert.equals("application/json", ct)
    assert.same({ n = 42 }, require("cjson").decode(body))
    local _, code3 = peer("request", "svc.nobody", "x", 2000)
    assert.equals(3, code3)
    svc:stop(5)
    nc:close()
  end)

  it_spawn("reconnects after a server restart and keeps its subscriptions", function()
    local nc = connect({ reconnect_wait = 0.1, max_reconnect = 200 })
    local ch = nc:subscribe("survive")
    local svc = nc:serve("still", function(d) return d .. "!" end, { workers = 1 })
    nc:flush(5)
    nc:publish("survive", "before")
    assert.equals("before", ch:recv(5).data)
    srv:restart()
    local deadline = braid.now() + 20
    while nc:stats().reconnects < 1 and braid.now() < deadline do braid.sleep(0.05) end
    assert.is_true(nc:stats().reconnects >= 1)
    while nc:stats().state ~= "connected" and braid.now() < deadline do braid.sleep(0.05) end
    nc:flush(5)
    nc:publish("survive", "after")
    assert.equals("after", ch:recv(10).data)
    local other = connect()
    assert.equals("hi!", other:request("still", "hi", 10))
    svc:stop(5)
    other:close()
    nc:close()
  end)
  describe("worklist", function()
    local function spawn(name, mode, out)
      -- The second process finds braid.so where this one did.
      local cmd = ("LUA_CPATH='%s' LUA_PATH='%s' %s tests/lua/nats_worklist_helper.lua %s %s %s %s > %s.log 2>&1 & echo $!")
        :format(package.cpath, package.path, os.getenv("BRAID_LUA") or "lua5.4", srv.url, name, mode, out, out)
      return assert(tonumber(N.sh(cmd):match("%d+")))
    end
    local function wait_gone(pid, t)
      local deadline = braid.now() + t
      while N.alive(pid) and braid.now() < deadline do braid.sleep(0.05) end
      return not N.alive(pid)
    end
    local function readfile(p)
      local f = io.open(p, "r")
      if not f then return nil end
      local s = f:read("a")
      f:close()
      return s
    end

    it_spawn("shares the work with a second process: exact results, keys de-duplicated", function()
      local out = srv.dir .. "/helper_tree.out"
      local pid = spawn("tree", "tree", out)
      local nc = connect()
      local r = braid.nats.worklist(nc, "tree", { 1 }, function(x, push)
        if x < 40 then push(x + 1); push(x + 2) end
        braid.sleep(0.02)
        return x
      end, { workers = 2, ack_wait = 1, key = function(x) return x end })
      table.sort(r)
      local want = {}
      for i = 1, 41 do want[i] = i end
      assert.same(want, r)
      assert.is_true(wait_gone(pid, 20), "the helper did not finish")
      local did = tonumber(readfile(out))
      assert.is_number(did, readfile(out .. ".log"))
      assert.is_true(did > 0 and did < 41, "helper did " .. tostring(did))
      nc:close()
    end)

    it_spawn("delivers again the items of a helper killed with SIGKILL", function()
      local nc = connect()
      local took = nc:subscribe("wl.took", { buffer = 100 })
      nc:flush()
      local out = srv.dir .. "/helper_stuck.out"
      local pid = spawn("kill", "stuck", out)
      local seeds = {}
      for i = 1, 20 do seeds[i] = i end
      local f = braid.go(function()
        return braid.nats.worklist(nc, "kill", seeds, function(x)
          braid.sleep(0.05)
          return x * 10
        end, { workers = 2, ack_wait = 1, key = function(x) return x end })
      end)
      local m = took:recv(20)
      assert.is_not_nil(m, "the helper took no item")
      os.execute("kill -9 " .. pid)
      assert.is_true(wait_gone(pid, 5))
      local r = f:await(60)
      table.sort(r)
      local want = {}
      for i = 1, 20 do want[i] = i * 10 end
      assert.same(want, r)
      assert.is_nil(readfile(out))          -- it never finished
      nc:close()
    end)
  end)
end)
