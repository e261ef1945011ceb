-- newuser_spec.lua: issue 15, what a new user trips over.
local braid = require "braid"

describe("ch:iter", function()
  it("raises the close error after draining the buffer", function()
    local ch = braid.chan(4)
    ch:send(1); ch:send(2)
    ch:close("upstream died")
    local got = {}
    local ok, err = pcall(function()
      for v in ch:iter() do got[#got + 1] = v end
    end)
    assert.is_false(ok)
    assert.are.equal("upstream died", err)
    assert.are.same({ 1, 2 }, got)
  end)

  it("ends quietly after a plain close", function()
    local ch = braid.chan(4)
    ch:send(1); ch:send(2)
    ch:close()
    local got = {}
    for v in ch:iter() do got[#got + 1] = v end
    assert.are.same({ 1, 2 }, got)
  end)

  it("raises a pipeline stage's error at the end of the loop", function()
    local out = braid.from({ 1, 2, 3 }):map(function(x)
      if x == 3 then error("boom", 0) end
      return x
    end)
    local ok, err = pcall(function()
      for _ in out:iter(5) do end
    end)
    assert.is_false(ok)
    assert.matches("boom", tostring(err))
  end)

  it("raises the close error inside a task too", function()
    local ch = braid.chan(1)
    ch:close("bad input")
    local f = braid.go(function()
      local ok, err = pcall(function() for _ in ch:iter() do end end)
      return ok, err
    end)
    local ok, err = f:await(5)
    assert.is_false(ok)
    assert.are.equal("bad input", err)
  end)
end)

describe("tostring(broker)", function()
  it("stops counting a subscription closed with ch:close()", function()
    local b = braid.broker()
    local s1 = b:subscribe("a")
    b:subscribe("b")
    assert.matches("2 subscriptions", tostring(b))
    s1:close()
    assert.matches("1 subscriptions", tostring(b))
  end)

  it("stops counting a subscription that a :map view closed", function()
    local b = braid.broker()
    local s = b:subscribe("a")
    local view = s:map(function(x) return x end)
    assert.matches("1 subscriptions", tostring(b))
    s:close()
    assert.is_nil((view:recv(5)))
    assert.matches("0 subscriptions", tostring(b))
  end)
end)

describe("braid.server message order", function()
  local function counter()
    return braid.server({
      init = function() return 0 end,
      cast = function(n, d) return n + d end,
      call = function(n, req)
        if req == "get" then return n, n end
        return nil, n
      end,
    })
  end

  it("lets a call see the 100 casts its sender made before it (main thread)", function()
    local s = counter()
    for _ = 1, 100 do s:cast(1) end
    assert.are.equal(100, s:call("get", { timeout = 10 }))
    for _ = 1, 50 do s:cast(2) end
    assert.are.equal(200, s:call("get", { timeout = 10 }))
    s:stop(nil, 10)
  end)

  it("lets a call see the 100 casts its sender made before it (inside a task)", function()
    local s = counter()
    local f = braid.go(function()
      local seen = {}
      for round = 1, 5 do
        for _ = 1, 100 do s:cast(1) end
        seen[round] = s:call("get", { timeout = 10 })
      end
      return seen
    end)
    assert.are.same({ 100, 200, 300, 400, 500 }, f:await(30))
    s:stop(nil, 10)
  end)

  -- The callers are spawned only once the server is inside the "block"
  -- cast: a high-priority call sent before the server took "block" would
  -- rightly overtake it (it was flaky that way, about 1 run in 8).
  it("still serves a high-priority call before queued normal messages", function()
    local gate, inside = braid.chan(), braid.chan(1)
    local s = braid.server({
      init = function() return {} end,
      cast = function(log, m)
        if m == "block" then inside:send(true); gate:recv(10) end
        log[#log + 1] = m
        return log
      end,
      call = function(log, req)
        if req == "log" then return log, log end
        log[#log + 1] = req
        return true, log
      end,
    })
    s:cast("block")                -- the server waits on gate inside this cast
    assert.is_true(inside:recv(10))
    s:cast("c1")
    local normal = braid.spawn({ name = "caller-n1" },
      function() return s:call("n1", { timeout = 10 }) end)
    local high = braid.spawn({ name = "caller-h1" },
      function() return s:call("h1", { timeout = 10, priority = "high" }) end)
    -- Wait until both callers block on their replies, i.e. both calls are
    -- queued while the server is still inside the "block" cast.
    local queued = 0
    for _ = 1, 1000 do
      queued = 0
      for _, t in ipairs(braid.tasks()) do
        if (t.name == "caller-n1" or t.name == "caller-h1") and t.state == "blocked" then
          queued = queued + 1
        end
      end
      if queued == 2 then break end
      braid.sleep(0.01)
    end
    assert.are.equal(2, queued)
    gate:send(true, 10)
    assert.is_true(normal:await(10))
    assert.is_true(high:await(10))
    local log = s:call("log", { timeout = 10 })
    assert.are.same({ "block", "h1", "c1", "n1" }, log)
    s:stop(nil, 10)
  end)
end)

describe("errors nobody awaited", function()
  local run = require("tests.lua.helpers").run_script

  it("does not report a server call error the caller handled with pcall", function()
    local out = run([[
      local braid = require "braid"
      local s = braid.server({ init = function() return 0 end,
                               call = function() error("handler boom", 0) end })
      local ok, err = pcall(s.call, s, "x")
      print("caught", ok, err)
    ]])
    assert.matches("caught\tfalse\thandler boom", out, 1, true)
    assert.is_nil(out:find("nobody awaited", 1, true))
  end)

  it("does not report the losers of braid.race and braid.any", function()
    local out = run([[
      local braid = require "braid"
      local gate = braid.chan(2)
      local slow = braid.go(function() gate:recv(10); error("race loser", 0) end)
      local fast = braid.go(function() return 1 end)
      print("race", braid.race({ slow, fast }):await(10))
      local slow2 = braid.go(function() gate:recv(10); error("any loser", 0) end)
      local fast2 = braid.go(function() return 2 end)
      print("any", braid.any({ slow2, fast2 }):await(10))
      gate:send(true); gate:send(true)
      for _ = 1, 1000 do                -- the losers fail; nobody waits on them
        if #braid.tasks() == 0 then break end
        braid.sleep(0.01)
      end
      braid.sleep(0.05)
      slow, slow2 = nil, nil
      collectgarbage(); collectgarbage()
    ]])
    assert.matches("race\t1", out, 1, true)
    assert.matches("any\t2", out, 1, true)
    assert.is_nil(out:find("nobody awaited", 1, true))
  end)

  it("still reports a task error nobody could have seen", function()
    local out = run([[
      local braid = require "braid"
      local done = braid.chan(1)
      braid.go(function() done:send(true); error("lost task", 0) end)
      done:recv(10)
      for _ = 1, 1000 do
        if #braid.tasks() == 0 then break end
        braid.sleep(0.01)
      end
      braid.sleep(0.05)
    ]])
    assert.matches("nobody awaited", out, 1, true)
    assert.matches("lost task", out, 1, true)
  end)
end)

describe("transfer errors", function()
  it("say what the value is and what to do instead", function()
    local out = io.stdout
    local ok, err = pcall(braid.go, function() out:write("x") end)
    assert.is_false(ok)
    assert.are.equal("braid: cannot transfer userdata (FILE*) at upvalue 'out': "
      .. "open it inside the task, or pass a braid handle", err)
  end)
end)

describe("task globals hint", function()
  local HINT = "(tasks have their own globals: pass it as an argument or upvalue)"

  it("says tasks have their own globals when a global of the waiter is called", function()
    helper_for_newuser_spec = function() return 1 end   -- luacheck: ignore
    local f = braid.go(function() return helper_for_newuser_spec() end) -- luacheck: ignore
    local ok, err = f:wait(10)
    assert.is_false(ok)
    assert.matches("attempt to call a nil value (global 'helper_for_newuser_spec') " .. HINT, err, 1, true)
    -- await raises the same, with the remote traceback after the hint
    local ok2, err2 = pcall(f.await, f, 10)
    assert.is_false(ok2)
    assert.matches("(global 'helper_for_newuser_spec') " .. HINT .. "\n[remote]", err2, 1, true)
    helper_for_newuser_spec = nil  -- luacheck: ignore
  end)

  it("hints an indexed global too, and through braid.pmap", function()
    config_for_newuser_spec = { n = 1 }   -- luacheck: ignore
    local ok, err = braid.go(function() return config_for_newuser_spec.n end):wait(10) -- luacheck: ignore
    assert.is_false(ok)
    assert.matches("attempt to index a nil value (global 'config_for_newuser_spec') " .. HINT, err, 1, true)
    ok, err = pcall(braid.pmap, { 1 }, function() return config_for_newuser_spec.n end) -- luacheck: ignore
    assert.is_false(ok)
    assert.matches("^braid%.pmap: item 1: .*config_for_newuser_spec'%) %(tasks have their own globals", err)
    config_for_newuser_spec = nil  -- luacheck: ignore
  end)

  it("adds no hint for a name the waiter does not define", function()
    local f = braid.go(function() return no_such_global_anywhere() end) -- luacheck: ignore
    local ok, err = f:wait(10)
    assert.is_false(ok)
    assert.matches("attempt to call a nil value (global 'no_such_global_anywhere')", err, 1, true)
    assert.is_nil(err:find("tasks have their own globals", 1, true))
  end)

  it("leaves an error value that is not a string as it was", function()
    local ok, err = braid.go(function() error({ code = 7 }) end):wait(10)
    assert.is_false(ok)
    assert.are.same({ code = 7 }, err)
  end)
end)

describe("unobserved error report", function()
  local function run(src)
    local path = os.tmpname()
    local fh = assert(io.open(path, "w")); fh:write(src); fh:close()
    local p = assert(io.popen(("LUA_CPATH=%q LUA_PATH=%q lua5.4 %q 2>&1")
      :format(package.cpath, package.path, path)))
    local out = p:read("a"); p:close(); os.remove(path)
    return out
  end

  it("names the user's task", function()
    local out = run([[
      local braid = require "braid"
      local c = braid.chan(1)
      braid.spawn({ name = "fetcher" }, function() c:send(true) error("lost", 0) end)
      c:recv(10)
      for _ = 1, 1000 do if #braid.tasks() == 0 then break end braid.sleep(0.01) end
      braid.sleep(0.05)
    ]])
    assert.matches("braid: task 'fetcher' %(braid%.future#%d+%) failed and nobody awaited it: lost", out)
  end)

  it("names the task when the report comes from the future's last release", function()
    -- The script holds the handle while the task fails, so task_end cannot
    -- report; dropping the handle unobserved does, after the task is gone.
    local out = run([[
      local braid = require "braid"
      local f = braid.spawn({ name = "fetcher" }, function() error("lost late", 0) end)
      local g = braid.go(function() error("unnamed late", 0) end)
      for _ = 1, 1000 do if #braid.tasks() == 0 then break end braid.sleep(0.01) end
      print("tasks ended")
      io.stdout:flush()
      f, g = nil, nil
      collectgarbage(); collectgarbage()
      io.stderr:write("collected\n")
    ]])
    local ended = assert(out:find("tasks ended", 1, true), out)
    local named = out:find("braid: task 'fetcher' %(braid%.future#%d+%) failed and nobody awaited it: lost late")
    local unnamed = out:find("braid: task %d+ %(braid%.future#%d+%) failed and nobody awaited it: unnamed late")
    local collected = assert(out:find("collected", 1, true), out)
    assert.is_truthy(named, out)
    assert.is_truthy(unnamed, out)
    -- reported at the release, not at the task's end
    assert.is_true(ended < named and named < collected, out)
    assert.is_true(ended < unnamed and unnamed < collected, out)
  end)

  it("prints nothing for a failed task whose future was awaited", function()
    local out = run([[
      local braid = require "braid"
      local f = braid.spawn({ name = "fetcher" }, function() error("seen", 0) end)
      assert(f:wait(10) == false)
      f = nil
      collectgarbage(); collectgarbage()
    ]])
    assert.is_nil(out:find("nobody awaited", 1, true), out)
  end)

end)
