-- group_spec.lua: API.md "Structured concurrency": braid.group.
local braid = require "braid"

local T = 5

describe("braid.group", function()
  it("wait returns each member's first value in g:go order", function()
    local g = braid.group()
    g:go(function() braid.sleep(0.03) return "slow", "ignored" end)
    g:go(function(a, b) return a + b end, 2, 3)
    g:go(function() braid.sleep(0.01) return { t = 1 } end)
    assert.are.same({ "slow", 5, { t = 1 } }, g:wait(T))
  end)

  it("wait of an empty group returns {}", function()
    assert.are.same({}, braid.group():wait(T))
  end)

  it("go returns the member's future", function()
    local g = braid.group()
    local f = g:go(function() return 42 end)
    assert.are.equal(42, f:await(T))
    assert.are.same({ 42 }, g:wait(T))
  end)

  it("the first error cancels the others and wait raises it", function()
    local g = braid.group()
    local progress = braid.chan(math.huge)
    local slow = g:go(function()
      for _ = 1, 200 do braid.sleep(0.01); progress:send(1) end
      return "finished"
    end)
    g:go(function() braid.sleep(0.02); error("member failed", 0) end)
    assert.has_error(function() g:wait(T) end, "member failed")
    -- cancelled, not finished: it had 200 sleeps (2 s) to go
    assert.are.equal("cancelled", slow:status())
    assert.is_true(#progress < 200)
    local n = #progress
    braid.sleep(0.05)
    assert.are.equal(n, #progress)
  end)

  it("wait waits for the cancelled members to end", function()
    local g = braid.group()
    local ended = braid.chan(math.huge)
    g:go(function()
      local ok, err = pcall(braid.sleep, 10)
      -- a cancelled task's blocking calls raise "cancelled": clean up with
      -- non-blocking ones
      ended:try_send(err)
    end)
    g:go(function() braid.sleep(0.01); error("boom", 0) end)
    assert.has_error(function() g:wait(T) end, "boom")
    assert.are.equal("cancelled", ended:try_recv())
  end)

  it("stops a computing member at a preemption point", function()
    local g = braid.group()
    local spinner = g:go(function()
      local stop = braid.now() + 3
      while braid.now() < stop do end
      return "spun"
    end)
    g:go(function() braid.sleep(0.05); error("stop it", 0) end)
    assert.has_error(function() g:wait(T) end, "stop it")
    -- stopped by the cancel at a preemption point, not by running out
    assert.are.equal("cancelled", spinner:status())
  end)

  it("g:cancel() cancels every member; wait raises 'cancelled'", function()
    local g = braid.group()
    local a = g:go(function() braid.sleep(10) end)
    local b = g:go(function() braid.sleep(10) end)
    braid.sleep(0.01)
    g:cancel()
    assert.has_error(function() g:wait(T) end, "cancelled")
    assert.are.equal("cancelled", a:status())
    assert.are.equal("cancelled", b:status())
  end)

  it("a member added after a failure is cancelled at once", function()
    local g = braid.group()
    g:go(function() error("early", 0) end)
    assert.has_error(function() g:wait(T) end, "early")
    local late = g:go(function() braid.sleep(10) return "late" end)
    local ok, err = late:wait(T)
    assert.is_false(ok)
    assert.are.equal("cancelled", err)
  end)

  it("members may add members; wait waits for them too", function()
    local g = braid.group()
    g:go(function(g)
      braid.sleep(0.01)
      g:go(function() braid.sleep(0.03) return "grandchild" end)
      return "child"
    end, g)
    local r = g:wait(T)
    assert.are.same({ "child", "grandchild" }, r)
  end)

  it("wait(timeout) raises 'timeout' and the group goes on", function()
    local g = braid.group()
    g:go(function() braid.sleep(0.2) return "done" end)
    assert.has_error(function() g:wait(0.02) end, "timeout")
    assert.are.same({ "done" }, g:wait(T))
  end)

  it("wait may be called again and from another task", function()
    local g = braid.group()
    g:go(function() return 1 end)
    g:go(function() return 2 end)
    assert.are.same({ 1, 2 }, g:wait(T))
    assert.are.same({ 1, 2 }, g:wait(T))
    local f = braid.go(function(g) return g:wait(5) end, g)
    assert.are.same({ 1, 2 }, f:await(T))
  end)

  it("costs no task while idle", function()
    local before = braid.stats().tasks
    local groups = {}
    for i = 1, 20 do
      local g = braid.group()
      g:go(function() return i end)
      g:wait(T)
      groups[i] = g
    end
    local deadline = braid.now() + T
    while braid.stats().tasks > before and braid.now() < deadline do braid.sleep(0.01) end
    -- (fewer is fine: a task of an earlier test may have ended meanwhile)
    assert.is_true(braid.stats().tasks <= before, braid.stats().tasks .. " > " .. before)
    -- and still works after its supervisor left
    groups[1]:go(function() return "again" end)
    assert.are.same({ 1, "again" }, groups[1]:wait(T))
  end)

  it("handles many members", function()
    local g = braid.group()
    for i = 1, 500 do g:go(function(i) return i * 2 end, i) end
    local r = g:wait(T)
    assert.are.equal(500, #r)
    for i = 1, 500 do assert.are.equal(2 * i, r[i]) end
  end)

  it("tostring gives braid.group#<id>", function()
    assert.is_truthy(tostring(braid.group()):match("^braid%.group#%d+$"))
  end)

  it("raises on bad arguments", function()
    local g = braid.group()
    assert.has_error(function() g:go(42) end,
      "bad argument #1 to 'group:go' (function expected, got number)")
    assert.has_error(function() g.wait(42) end,
      "calling 'group:wait' on bad self (braid.group expected, got number)")
  end)
end)
