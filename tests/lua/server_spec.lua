-- server_spec.lua: API.md "Request/reply servers": braid.server.
local braid = require "braid"

local T = 5

-- A counter server: state is a number; calls "get", {add = n}, "slow",
-- "fail"; casts {add = n}.
local function counter(start, log)
  return braid.server({
    init = function(n, log)
      return { n = n, log = log }
    end,
    call = function(st, req, from)
      if req == "get" then return st.n, st end
      if req == "fail" then error("handler broke", 0) end
      if type(req) == "table" and req.add then
        st.n = st.n + req.add
        return st.n, st
      end
      if type(req) == "table" and req.sleep then
        braid.sleep(req.sleep)
        return "slept", st
      end
      return "unknown", st
    end,
    cast = function(st, msg)
      st.n = st.n + msg.add
      return st
    end,
    terminate = function(st, reason)
      if st.log then st.log:send({ "terminate", reason, st.n }) end
    end,
  }, start, log)
end

describe("braid.server", function()
  it("returns at once; init runs in the server task before any call", function()
    local t0 = braid.now()
    local inited = braid.chan(1)
    local srv = braid.server({
      init = function()
        braid.sleep(0.1)
        inited:send(true)
        return { id = (braid.self()) }
      end,
      call = function(st, req) return st.id, st end,
    })
    -- Returned before init finished (no wall-clock bound: sanitizer builds
    -- and busy machines are slow).
    assert.are.same({ nil, "empty" }, { inited:try_recv() })
    local id = srv:call("who")
    assert.is_true(braid.now() - t0 >= 0.09)
    assert.are.equal("number", type(id))       -- init ran in a task
    srv:stop()
  end)

  it("call returns the reply and keeps the new state", function()
    local srv = counter(10)
    assert.are.equal(10, srv:call("get"))
    assert.are.equal(15, srv:call({ add = 5 }))
    assert.are.equal(15, srv:call("get"))
    srv:stop()
  end)

  it("casts change the state, in order", function()
    local srv = counter(0)
    for i = 1, 100 do assert.is_true(srv:cast({ add = i })) end
    -- casts and calls travel separately: wait until all casts are in
    local deadline = braid.now() + T
    while srv:call("get") ~= 5050 and braid.now() < deadline do braid.sleep(0.005) end
    assert.are.equal(5050, srv:call("get"))
    srv:stop()
  end)

  it("serves calls one at a time; the state is never shared", function()
    local srv = counter(0)
    local fs = {}
    for i = 1, 4 do
      fs[i] = braid.go(function(srv)
        for _ = 1, 250 do srv:call({ add = 1 }) end
        return true
      end, srv)
    end
    for i = 1, 4 do assert.is_true(fs[i]:await(T)) end
    assert.are.equal(1000, srv:call("get"))
    srv:stop()
  end)

  it("call raises 'timeout' after opts.timeout and the late reply is dropped", function()
    local srv = counter(1)
    local t0 = braid.now()
    assert.has_error(function() srv:call({ sleep = 0.2 }, { timeout = 0.05 }) end, "timeout")
    local waited = braid.now() - t0
    assert.is_true(waited >= 0.04, "waited " .. waited)   -- no upper bound: loaded machines are slow
    -- the server goes on; the next reply is this call's, not the late one
    assert.are.equal(1, srv:call("get"))
    srv:stop()
  end)

  it("call's timeout defaults to 5 s", function()
    local srv = counter(1)
    local t0 = braid.now()
    assert.has_error(function() srv:call({ sleep = 7 }) end, "timeout")
    local waited = braid.now() - t0
    assert.is_true(waited >= 4.9 and waited < 6.5, "waited " .. waited)
    srv:stop(nil, 0.01)
  end)

  it("serves 'high' priority calls first", function()
    local order = braid.chan(math.huge)
    local gate = braid.chan()
    local srv = braid.server({
      call = function(st, req)
        if req == "block" then gate:recv() else order:send(req) end
        return req, st
      end,
    })
    local blocker = braid.go(function(srv) return srv:call("block") end, srv)
    braid.sleep(0.02)                         -- the server is busy now
    local fs = {}
    for i = 1, 3 do
      fs[#fs + 1] = braid.go(function(srv, i) return srv:call("normal" .. i) end, srv, i)
      braid.sleep(0.01)                       -- queue in this order
    end
    fs[#fs + 1] = braid.go(function(srv) return srv:call("HIGH", { priority = "high" }) end, srv)
    braid.sleep(0.02)
    gate:send(true)
    assert.are.equal("block", blocker:await(T))
    for i = 1, #fs do fs[i]:await(T) end
    assert.are.same({ "HIGH", "normal1", "normal2", "normal3" },
      { order:recv(T), order:recv(T), order:recv(T), order:recv(T) })
    srv:stop()
  end)

  it("noreply: the handler answers later with from:reply", function()
    local srv = braid.server({
      init = function() return { waiting = {} } end,
      call = function(st, req, from)
        if req == "wait" then
          st.waiting[#st.waiting + 1] = from
          return braid.noreply, st
        elseif req == "release" then
          for _, f in ipairs(st.waiting) do f:reply("released") end
          local n = #st.waiting
          st.waiting = {}
          return n, st
        elseif req == "async" then
          -- answer from another task: from travels
          braid.go(function(from) braid.sleep(0.01); from:reply("from a task") end, from)
          return braid.noreply, st
        end
      end,
    })
    local w1 = braid.go(function(srv) return srv:call("wait") end, srv)
    local w2 = braid.go(function(srv) return srv:call("wait") end, srv)
    braid.sleep(0.05)
    assert.are.equal("pending", w1:status())
    assert.are.equal(2, srv:call("release"))
    assert.are.equal("released", w1:await(T))
    assert.are.equal("released", w2:await(T))
    assert.are.equal("from a task", srv:call("async"))
    srv:stop()
  end)

  it("from:reply to a caller that timed out returns false (dropped)", function()
    local froms = braid.chan(1)
    local srv = braid.server({
      call = function(st, req, from)
        froms:send(from)
        return braid.noreply, st
      end,
    })
    assert.has_error(function() srv:call("x", { timeout = 0.02 }) end, "timeout")
    local from = froms:recv(T)
    assert.is_false(from:reply("too late"))
    srv:stop()
  end)

  it("a handler error stops the server; pending and later calls raise it", function()
    local log = braid.chan(math.huge)
    local srv = counter(7, log)
    local slow = braid.go(function(srv) return srv:call({ sleep = 0.05 }) end, srv)
    braid.sleep(0.01)
    local failing = braid.go(function(srv) return srv:call("fail") end, srv)
    braid.sleep(0.01)
    local pending = braid.go(function(srv) return srv:call("get") end, srv)
    assert.are.equal("slept", slow:await(T))
    local ok, err = failing:wait(T)
    assert.is_false(ok)
    assert.are.equal("handler broke", err)
    ok, err = pending:wait(T)
    assert.is_false(ok)
    assert.are.equal("handler broke", err)
    assert.has_error(function() srv:call("get") end, "handler broke")
    assert.are.same({ "terminate", "handler broke", 7 }, log:recv(T))
    assert.are.equal("failed", srv:status())
    local ok2, e2 = srv:cast({ add = 1 })
    assert.is_false(ok2)
    assert.are.equal("closed", e2)
  end)

  it("a cast handler error stops the server too", function()
    local srv = braid.server({
      call = function(st) return "ok", st end,
      cast = function(st, msg) error("bad cast: " .. msg, 0) end,
    })
    srv:cast("x")
    local deadline = braid.now() + T
    while srv:status() == "running" and braid.now() < deadline do braid.sleep(0.005) end
    assert.has_error(function() srv:call("anything") end, "bad cast: x")
  end)

  it("an init error fails every call with it", function()
    local srv = braid.server({
      init = function() braid.sleep(0.02); error("cannot connect", 0) end,
      call = function(st) return "never", st end,
    })
    assert.has_error(function() srv:call("a") end, "cannot connect")
    assert.has_error(function() srv:call("b") end, "cannot connect")
  end)

  it("stop runs terminate(state, reason); later calls raise", function()
    local log = braid.chan(math.huge)
    local srv = counter(3, log)
    assert.are.equal(4, srv:call({ add = 1 }))
    assert.is_true(srv:stop("shutdown"))
    assert.are.same({ "terminate", "shutdown", 4 }, log:recv(T))
    assert.has_error(function() srv:call("get") end, "braid.server: stopped")
    assert.are.equal("stopped", srv:status())
    assert.is_true(srv:stop())                -- idempotent
  end)

  it("stop's reason defaults to 'normal'; queued requests are served first", function()
    local log = braid.chan(math.huge)
    local srv = counter(0, log)
    local busy = braid.go(function(srv) return srv:call({ sleep = 0.05 }) end, srv)
    braid.sleep(0.01)
    local queued = braid.go(function(srv) return srv:call({ add = 2 }) end, srv)
    braid.sleep(0.01)
    assert.is_true(srv:stop())
    assert.are.equal("slept", busy:await(T))
    assert.are.equal(2, queued:await(T))
    assert.are.same({ "terminate", "normal", 2 }, log:recv(T))
  end)

  it("stop(reason, timeout) returns false, 'timeout' when the server is stuck", function()
    local srv = counter(0)
    braid.go(function(srv) pcall(srv.call, srv, { sleep = 10 }, { timeout = 10 }) end, srv)
    braid.sleep(0.02)
    local ok, err = srv:stop("now", 0.05)
    assert.is_false(ok)
    assert.are.equal("timeout", err)
    local deadline = braid.now() + T
    while srv:status() == "stopping" and braid.now() < deadline do braid.sleep(0.005) end
    assert.are.equal("failed", srv:status())     -- cancelled
  end)

  it("a handler may stop its own server", function()
    local srv
    srv = braid.server({
      init = function() return 0 end,
      call = function(st, req, from)
        if req == "quit" then
          -- the handle reaches the server through the call
          return "bye", st
        end
        return st, st
      end,
      cast = function(st, srv)
        srv:stop("self")
        return st
      end,
    })
    srv:cast(srv)
    local deadline = braid.now() + T
    while srv:status() ~= "stopped" and braid.now() < deadline do braid.sleep(0.005) end
    assert.are.equal("stopped", srv:status())
  end)

  it("a slow caller never blocks the server", function()
    local srv = counter(0)
    -- 20 callers that give up at once; the server still answers everyone
    for _ = 1, 20 do
      braid.go(function(srv) pcall(srv.call, srv, { sleep = 0.001 }, { timeout = 0 }) end, srv)
    end
    assert.are.equal(0, srv:call("get"))
    srv:stop()
  end)

  it("the handle works in any task and tostring shows the state", function()
    local srv = counter(0)
    assert.is_truthy(tostring(srv):match("^braid%.server#%d+ %(running%)$"), tostring(srv))
    local f = braid.go(function(srv)
      srv:call({ add = 40 })
      return tostring(srv)
    end, srv)
    local s = f:await(T)
    assert.are.equal(tostring(srv), s)
    assert.are.equal(40, srv:call("get"))
    srv:stop()
    assert.is_truthy(tostring(srv):match("^braid%.server#%d+ %(stopped%)$"), tostring(srv))
  end)

  it("raises on bad arguments", function()
    assert.has_error(function() braid.server(42) end,
      "bad argument #1 to 'braid.server' (table expected, got number)")
    assert.has_error(function() braid.server({ call = 1 }) end,
      "bad argument #1 to 'braid.server' (spec.call must be a function)")
    local srv = counter(0)
    assert.has_error(function() srv:call("get", { priority = "urgent" }) end,
      "bad argument #2 to 'server:call' (opts.priority must be 'high' or 'normal')")
    assert.has_error(function() srv:cast(nil) end,
      "bad argument #1 to 'server:cast' (a message expected, got nil)")
    srv:stop()
  end)
end)
