-- future_spec.lua: API.md "Futures".
--
-- Every blocking call on the main thread has a timeout so a broken runtime
-- fails a test instead of hanging.  Timing checks are lower bounds only.
local braid = require "braid"

local pack = table.pack

local function id_pattern(h)
  return (tostring(h):match("^(braid%.%a+#%d+)")):gsub("%.", "%%.") .. "%f[%D]"
end

local function wait_until(pred, timeout)
  local deadline = braid.now() + (timeout or 5)
  while braid.now() < deadline do
    if pred() then return true end
    braid.sleep(0.005)
  end
  return pred() and true or false
end

-- Best effort: give n tasks time to block on h (does not assert).
local function settle_on(h, n)
  n = n or 1
  local pat = id_pattern(h)
  local ok = wait_until(function()
    local k = 0
    for _, row in ipairs(braid.tasks()) do
      if type(row.waiting_on) == "string" and row.waiting_on:find(pat) then k = k + 1 end
    end
    return k >= n
  end, 2)
  if not ok then braid.sleep(0.1) end
end

-- A future rejected with err, and one resolved with the values.
local function rejected(err)
  local f = braid.future()
  f:reject(err)
  return f
end

local function resolved(...)
  local f = braid.future()
  f:resolve(...)
  return f
end

describe("braid.future", function()
  it("returns a handle whose tostring matches braid.future#<id>", function()
    local f = braid.future()
    assert.equal("userdata", type(f))
    assert.truthy(tostring(f):match("^braid%.future#%d+"))
    assert.truthy(tostring(braid.go(function() end)):match("^braid%.future#%d+"))
  end)

  it("starts 'pending'", function()
    assert.equal("pending", braid.future():status())
  end)

  describe("resolve and reject", function()
    it("lets the first resolve win; later settles return false", function()
      local f = braid.future()
      assert.is_true(f:resolve(1, 2))
      assert.is_false(f:resolve(3))
      assert.is_false(f:reject("late"))
      assert.equal("resolved", f:status())
      assert.same({ 1, 2, n = 2 }, pack(f:await(5)))
    end)

    it("lets the first reject win; later settles return false", function()
      local f = braid.future()
      assert.is_true(f:reject("boom"))
      assert.is_false(f:resolve(1))
      assert.is_false(f:reject("again"))
      assert.equal("rejected", f:status())
      assert.same({ false, "boom", n = 2 }, pack(f:wait(5)))
    end)

    it("lets exactly one of many racing tasks settle", function()
      local f = braid.future()
      local fs = {}
      for i = 1, 16 do
        fs[i] = braid.go(function()
          if i % 2 == 0 then return (f:resolve(i)) end
          return (f:reject("task " .. i))
        end)
      end
      local winners = 0
      for i = 1, 16 do
        if fs[i]:await(10) then winners = winners + 1 end
      end
      assert.equal(1, winners)
      assert.truthy(f:status() == "resolved" or f:status() == "rejected")
    end)

    it("can be settled by a task holding the handle", function()
      local f = braid.future()
      braid.go(function(fut) braid.sleep(0.05); fut:resolve("from task") end, f)
      assert.equal("from task", f:await(10))
    end)
  end)

  describe("handles", function()
    it("sent to a task refer to the same future", function()
      local f = braid.future()
      local carrier = braid.chan(1)
      carrier:send(f)
      local copy = carrier:recv(5)
      assert.equal(tostring(f):match("^braid%.future#%d+"), tostring(copy):match("^braid%.future#%d+"))
      copy:resolve("via copy")
      assert.equal("via copy", f:await(5))
      assert.is_false(f:resolve("again"))
    end)

    it("refuses an untransferable value and stays pending", function()
      local f = braid.future()
      local ok, err = pcall(f.resolve, f, 1, coroutine.create(print))
      assert.is_false(ok)
      assert.truthy(tostring(err):match("^braid: cannot transfer thread at "), err)
      assert.equal("pending", f:status())
      assert.is_true(f:resolve("fine"))
    end)

    it("resolves with no values", function()
      local f = braid.future()
      f:resolve()
      assert.equal(0, select("#", f:await(5)))
      assert.same({ true, n = 1 }, pack(f:wait(5)))
    end)
  end)

  describe("await", function()
    it("returns all the values, nil holes included", function()
      local f = resolved(1, nil, "three", nil)
      assert.same({ 1, nil, "three", nil, n = 4 }, pack(f:await(5)))
    end)

    it("returns the values of a task", function()
      local f = braid.go(function() return "a", { b = true }, 3 end)
      assert.same({ "a", { b = true }, 3, n = 3 }, pack(f:await(10)))
    end)

    it("returns the values again on every call", function()
      local f = resolved("same")
      assert.equal("same", f:await(5))
      assert.equal("same", f:await(5))
      assert.equal("same", f:await())
    end)

    it("raises 'timeout' when the timeout passes", function()
      local f = braid.future()
      local t0 = braid.now()
      local ok, err = pcall(f.await, f, 0.05)
      assert.is_false(ok)
      assert.truthy(tostring(err):match("timeout"), err)
      assert.is_true(braid.now() - t0 >= 0.05 - 1e-3)
      assert.equal("pending", f:status())
    end)

    it("raises 'timeout' at once with timeout 0", function()
      local f = braid.future()
      local ok, err = pcall(f.await, f, 0)
      assert.is_false(ok)
      assert.truthy(tostring(err):match("timeout"), err)
    end)

    it("raises the rejection error", function()
      local f = rejected("boom")
      local ok, err = pcall(f.await, f, 5)
      assert.is_false(ok)
      assert.equal("boom", tostring(err):sub(1, 4))
    end)

    it("raises a task's error with the remote traceback appended", function()
      local f = braid.go(function() error("task failed", 0) end)
      local ok, err = pcall(f.await, f, 10)
      assert.is_false(ok)
      assert.equal("task failed", err:sub(1, #"task failed"))
      assert.truthy(err:find("stack traceback", 1, true), err)
    end)

    it("raises 'cancelled' for a cancelled task", function()
      local ch = braid.chan()
      local f = braid.go(function() return ch:recv() end)
      settle_on(ch)
      f:cancel()
      local ok, err = pcall(f.await, f, 10)
      assert.is_false(ok)
      assert.truthy(tostring(err):match("cancelled"), err)
    end)

    it("blocks only the awaiting task", function()
      local f = braid.future()
      local waiter = braid.go(function() return f:await() end)
      assert.equal("free", braid.go(function() return "free" end):await(10))
      f:resolve("late")
      assert.equal("late", waiter:await(10))
    end)
  end)

  describe("wait", function()
    it("returns true and the values when resolved", function()
      assert.same({ true, 1, nil, 3, n = 4 }, pack(resolved(1, nil, 3):wait(5)))
      assert.same({ true, "x", n = 2 }, pack(resolved("x"):wait()))
    end)

    it("returns false, err when rejected", function()
      assert.same({ false, "bad", n = 2 }, pack(rejected("bad"):wait(5)))
    end)

    it("returns false, 'timeout' when still pending", function()
      local f = braid.future()
      local t0 = braid.now()
      assert.same({ false, "timeout", n = 2 }, pack(f:wait(0.05)))
      assert.is_true(braid.now() - t0 >= 0.05 - 1e-3)
      assert.same({ false, "timeout", n = 2 }, pack(f:wait(0)))
    end)

    it("returns at once with timeout 0 when settled", function()
      assert.same({ true, "now", n = 2 }, pack(resolved("now"):wait(0)))
    end)

    it("returns false, 'cancelled' for a cancelled task", function()
      local f = braid.go(function() braid.sleep(30) end)
      braid.sleep(0.02)
      f:cancel()
      assert.same({ false, "cancelled", n = 2 }, pack(f:wait(10)))
    end)

    it("works inside a task", function()
      local f = braid.future()
      local t = braid.go(function()
        local a = pack(f:wait(0.02))
        local b = pack(f:wait(10))
        return a[1], a[2], b[1], b[2]
      end)
      braid.sleep(0.1)
      f:resolve("v")
      assert.same({ false, "timeout", true, "v", n = 4 }, pack(t:await(10)))
    end)
  end)

  describe("status", function()
    it("reports 'pending', 'resolved', 'rejected' and 'cancelled'", function()
      local ch = braid.chan()
      local p = braid.go(function() return ch:recv() end)
      assert.equal("pending", p:status())
      local ok = braid.go(function() return 1 end)
      ok:await(10)
      assert.equal("resolved", ok:status())
      local bad = braid.go(function() error("x") end)
      bad:wait(10)
      assert.equal("rejected", bad:status())
      settle_on(ch)
      p:cancel()
      p:wait(10)
      assert.equal("cancelled", p:status())
    end)
  end)

  describe("cancel", function()
    it("changes nothing on a resolved future", function()
      local f = resolved("kept")
      f:cancel()
      assert.equal("resolved", f:status())
      assert.equal("kept", f:await(5))
      local t = braid.go(function() return "task kept" end)
      t:await(10)
      t:cancel()
      assert.equal("resolved", t:status())
      assert.equal("task kept", t:await(5))
    end)

    it("changes nothing on a rejected future", function()
      local f = rejected("still bad")
      f:cancel()
      assert.equal("rejected", f:status())
      assert.same({ false, "still bad", n = 2 }, pack(f:wait(5)))
    end)

    it("wakes a task blocked in recv", function()
      local ch = braid.chan()
      local f = braid.go(function() return ch:recv() end)
      settle_on(ch)
      f:cancel()
      assert.same({ false, "cancelled", n = 2 }, pack(f:wait(10)))
      assert.equal("cancelled", f:status())
    end)

    it("wakes a task blocked in await", function()
      local never = braid.future()
      local f = braid.go(function() return never:await() end)
      settle_on(never)
      f:cancel()
      assert.same({ false, "cancelled", n = 2 }, pack(f:wait(10)))
      assert.equal("pending", never:status())
    end)
  end)

  describe("many waiters", function()
    it("gives the values to every one of 10 awaiting tasks", function()
      local f = braid.future()
      local ws = {}
      for i = 1, 10 do ws[i] = braid.go(function() return f:await() end) end
      settle_on(f, 10)
      f:resolve("shared", 2)
      for i = 1, 10 do assert.same({ "shared", 2, n = 2 }, pack(ws[i]:await(10))) end
    end)

    it("gives the error to every waiter", function()
      local f = braid.future()
      local ws = {}
      for i = 1, 10 do ws[i] = braid.go(function() return f:wait() end) end
      settle_on(f, 10)
      f:reject("all fail")
      for i = 1, 10 do assert.same({ false, "all fail", n = 2 }, pack(ws[i]:await(10))) end
    end)
  end)

  describe("map", function()
    it("runs fn on the values and resolves with its results", function()
      local f = braid.go(function() return 2, 3 end)
      local g = f:map(function(a, b) return a * b, a + b end)
      assert.truthy(tostring(g):match("^braid%.future#%d+"))
      assert.same({ 6, 5, n = 2 }, pack(g:await(10)))
    end)

    it("waits for a pending future", function()
      local f = braid.future()
      local g = f:map(function(s) return s .. "!" end)
      assert.equal("pending", g:status())
      f:resolve("hi")
      assert.equal("hi!", g:await(10))
    end)

    it("passes a rejection through unchanged without calling fn", function()
      local called = braid.chan(1)
      local f = rejected("boom")
      local g = f:map(function() called:send(true); return "mapped" end)
      assert.same({ false, "boom", n = 2 }, pack(g:wait(10)))
      assert.equal("rejected", g:status())
      assert.same({ nil, "empty", n = 2 }, pack(called:try_recv()))
    end)

    it("passes a task's error through unchanged", function()
      local f = braid.go(function() error("original", 0) end)
      local _, err = f:wait(10)
      local _, err2 = f:map(function() return 1 end):wait(10)
      assert.equal(err, err2)
    end)

    it("rejects when fn raises", function()
      local g = resolved(1):map(function() error("in map", 0) end)
      local ok, err = g:wait(10)
      assert.is_false(ok)
      assert.equal("in map", tostring(err):sub(1, 6))
    end)

    it("chains", function()
      local g = resolved(1):map(function(x) return x + 1 end):map(function(x) return x * 10 end)
      assert.equal(20, g:await(10))
    end)
  end)

  describe("catch", function()
    it("passes resolved values through unchanged without calling fn", function()
      local called = braid.chan(1)
      local g = resolved(1, nil, 3):catch(function() called:send(true); return "caught" end)
      assert.truthy(tostring(g):match("^braid%.future#%d+"))
      assert.same({ 1, nil, 3, n = 3 }, pack(g:await(10)))
      assert.same({ nil, "empty", n = 2 }, pack(called:try_recv()))
    end)

    it("maps an error to fn's results", function()
      local g = rejected("boom"):catch(function(e) return "handled: " .. e, 2 end)
      assert.same({ "handled: boom", 2, n = 2 }, pack(g:await(10)))
      assert.equal("resolved", g:status())
    end)

    it("maps a task's error", function()
      local g = braid.go(function() error("task err", 0) end):catch(function(e)
        return type(e), e:sub(1, 8)
      end)
      assert.same({ "string", "task err", n = 2 }, pack(g:await(10)))
    end)

    it("rejects when fn raises", function()
      local g = rejected("first"):catch(function() error("second", 0) end)
      local ok, err = g:wait(10)
      assert.is_false(ok)
      assert.equal("second", tostring(err):sub(1, 6))
    end)
  end)

  describe("braid.all", function()
    it("resolves to an array of each future's first value, in order", function()
      local slow = braid.go(function() braid.sleep(0.05); return "a", "ignored" end)
      local fast = braid.go(function() return "b" end)
      local r = braid.all({ slow, fast, resolved("c", "ignored") })
      assert.truthy(tostring(r):match("^braid%.future#%d+"))
      assert.same({ "a", "b", "c" }, r:await(10))
    end)

    it("rejects on the first rejection without waiting for the rest", function()
      local never = braid.future()
      local bad = braid.future()
      local r = braid.all({ never, bad })
      bad:reject("bad")
      assert.same({ false, "bad", n = 2 }, pack(r:wait(10)))
      assert.equal("pending", never:status())
    end)

    it("rejects with a task's error", function()
      local r = braid.all({ resolved(1), braid.go(function() error("task bad", 0) end) })
      local ok, err = r:wait(10)
      assert.is_false(ok)
      assert.equal("task bad", tostring(err):sub(1, 8))
    end)
  end)

  describe("braid.any", function()
    it("resolves with the first future to resolve", function()
      local never = braid.future()
      local later = braid.future()
      local r = braid.any({ rejected("no"), never, later })
      braid.go(function() braid.sleep(0.05); later:resolve("two", 2) end)
      assert.same({ "two", 2, n = 2 }, pack(r:await(10)))
    end)

    it("ignores rejections while one may still resolve", function()
      local pending = braid.future()
      local r = braid.any({ rejected("e1"), pending, rejected("e2") })
      assert.same({ false, "timeout", n = 2 }, pack(r:wait(0.2)))
      assert.equal("pending", r:status())
      pending:resolve("late")
      assert.equal("late", r:await(10))
    end)

    it("rejects only when all reject", function()
      local r = braid.any({ rejected("e1"), rejected("e2"), rejected("e3") })
      local ok, err = r:wait(10)
      assert.is_false(ok)
      assert.is_not_nil(err)
      assert.equal("rejected", r:status())
    end)
  end)

  describe("braid.race", function()
    it("resolves like the first to settle", function()
      local never = braid.future()
      local r = braid.race({ never, resolved("first") })
      assert.equal("first", r:await(10))
    end)

    it("rejects like the first to settle", function()
      local never = braid.future()
      local r = braid.race({ never, rejected("fast failure") })
      assert.same({ false, "fast failure", n = 2 }, pack(r:wait(10)))
    end)

    it("is not changed by later settles", function()
      local a, b = braid.future(), braid.future()
      local r = braid.race({ a, b })
      b:resolve("b first")
      assert.equal("b first", r:await(10))
      a:reject("a later")
      assert.equal("resolved", r:status())
      assert.equal("b first", r:await(10))
    end)

    it("races task futures", function()
      local slow = braid.go(function() braid.sleep(5); return "slow" end)
      local fast = braid.go(function() braid.sleep(0.02); return "fast" end)
      assert.equal("fast", braid.race({ slow, fast }):await(10))
      slow:cancel()
    end)
  end)
end)
