-- select_spec.lua: API.md "Select".
--
-- braid.select(cases, opts) -> i, v, err.  Every blocking call on the main
-- thread has a timeout or something that surely fires, so a broken runtime
-- fails a test instead of hanging.  Timing checks are lower bounds only.
local braid = require "braid"
local H = require "tests.lua.helpers"
local handle_id, id_pattern, wait_until = H.handle_id, H.id_pattern, H.wait_until

local pack = table.pack

-- Best effort: give a task time to block on h, or in a select (does not
-- assert; the braid.tasks() test below does).
local function settle_on(h)
  local pat = id_pattern(h)
  local ok = wait_until(function()
    for _, row in ipairs(braid.tasks()) do
      local w = row.waiting_on
      if type(w) == "string" and (w:find(pat) or w:match("^select")) then return true end
    end
    return false
  end, 2)
  if not ok then braid.sleep(0.1) end
end

describe("braid.select", function()
  describe("receive cases", function()
    it("returns the index and value of the ready channel", function()
      local a, b = braid.chan(1), braid.chan(1)
      b:send("x")
      assert.same({ 2, "x", n = 2 }, pack(braid.select({ a, b }, { timeout = 5 })))
      assert.equal(0, #b)
    end)

    it("waits for a value sent later by a task", function()
      local a, b = braid.chan(), braid.chan()
      braid.go(function() braid.sleep(0.05); a:send("late") end)
      local i, v, err = braid.select({ a, b }, { timeout = 10 })
      assert.equal(1, i)
      assert.equal("late", v)
      assert.is_nil(err)
    end)

    it("receives from a sender blocked on a rendezvous channel", function()
      local ch = braid.chan()
      local f = braid.go(function() return ch:send(99) end)
      settle_on(ch)
      local i, v = braid.select({ braid.chan(), ch }, { timeout = 10 })
      assert.equal(2, i)
      assert.equal(99, v)
      assert.is_true(f:await(10))
    end)

    it("delivers false as a value", function()
      local ch = braid.chan(1)
      ch:send(false)
      assert.same({ 1, false, n = 2 }, pack(braid.select({ ch }, { timeout = 5 })))
    end)

    it("takes exactly one value per select", function()
      local a, b = braid.chan(2), braid.chan(2)
      a:send(1); b:send(2)
      braid.select({ a, b }, { timeout = 5 })
      assert.equal(1, #a + #b)
    end)
  end)

  describe("send cases", function()
    it("returns i, true for {ch, v} and delivers v", function()
      local ch = braid.chan(1)
      assert.same({ 1, true, n = 2 }, pack(braid.select({ { ch, 42 } }, { timeout = 5 })))
      assert.equal(42, ch:recv(5))
    end)

    it("fires the send case when only it is ready", function()
      local full, empty, out = braid.chan(1), braid.chan(1), braid.chan(1)
      full:send("x")
      local i, v = braid.select({ { full, "no room" }, empty, { out, "sent" } }, { timeout = 5 })
      assert.equal(3, i)
      assert.is_true(v)
      assert.equal("sent", out:recv(5))
      assert.equal(1, #full)
    end)

    it("hands a value to a task blocked in recv", function()
      local ch = braid.chan()
      local f = braid.go(function() return ch:recv() end)
      settle_on(ch)
      assert.same({ 1, true, n = 2 }, pack(braid.select({ { ch, { t = 1 } } }, { timeout = 10 })))
      assert.same({ t = 1 }, f:await(10))
    end)

    it("pairs with a task's select on a rendezvous channel", function()
      local ch = braid.chan()
      local f = braid.go(function() return braid.select({ braid.chan(), ch }) end)
      settle_on(ch)
      assert.same({ 1, true, n = 2 }, pack(braid.select({ { ch, "paired" } }, { timeout = 10 })))
      assert.same({ 2, "paired", n = 2 }, pack(f:await(10)))
    end)

    it("does not deliver the value of a send case that did not fire", function()
      local ready, other = braid.chan(1), braid.chan(1)
      ready:send("r")
      other:send("occupied")
      local i = braid.select({ ready, { other, "should not arrive" } }, { timeout = 5 })
      assert.equal(1, i)
      assert.equal("occupied", other:recv(5))
      assert.same({ nil, "empty", n = 2 }, pack(other:try_recv()))
    end)

    it("returns i, false, 'closed' for a send case on a closed channel", function()
      local ch = braid.chan(1)
      ch:close()
      assert.same({ 1, false, "closed", n = 3 }, pack(braid.select({ { ch, 1 } }, { timeout = 5 })))
      local other = braid.chan()
      assert.same({ 2, false, "closed", n = 3 },
        pack(braid.select({ other, { ch, 1 } }, { timeout = 5 })))
    end)

    it("fires a blocked send case when the channel is closed", function()
      local ch = braid.chan()
      braid.go(function() braid.sleep(0.05); ch:close() end)
      assert.same({ 1, false, "closed", n = 3 }, pack(braid.select({ { ch, 1 } }, { timeout = 10 })))
    end)
  end)

  describe("future cases", function()
    it("fires for a settled future with its value", function()
      local f = braid.future()
      f:resolve("done")
      local i, v = braid.select({ braid.chan(), f }, { timeout = 5 })
      assert.equal(2, i)
      assert.equal("done", v)
    end)

    it("waits for a task's future", function()
      local f = braid.go(function() braid.sleep(0.05); return "result" end)
      local i, v = braid.select({ braid.chan(), f }, { timeout = 10 })
      assert.equal(2, i)
      assert.equal("result", v)
    end)

    it("fires for a future resolved later by a task", function()
      local f = braid.future()
      braid.go(function() braid.sleep(0.05); f:resolve(7) end)
      assert.same({ 1, 7, n = 2 }, pack(braid.select({ f }, { timeout = 10 })))
    end)

    it("fires for a rejected future", function()
      local f = braid.future()
      f:reject("nope")
      local i = braid.select({ braid.chan(), f }, { timeout = 5 })
      assert.equal(2, i)
    end)

    it("does not consume the future: it can be awaited after", function()
      local f = braid.future()
      f:resolve(1, 2)
      braid.select({ f }, { timeout = 5 })
      assert.same({ 1, 2, n = 2 }, pack(f:await(5)))
    end)
  end)

  describe("timeout", function()
    it("returns nil, nil, 'timeout' when nothing fires in time", function()
      local t0 = braid.now()
      assert.same({ nil, nil, "timeout", n = 3 },
        pack(braid.select({ braid.chan(), braid.chan(1) }, { timeout = 0.05 })))
      assert.is_true(braid.now() - t0 >= 0.05 - 1e-3)
    end)

    it("returns the ready case rather than the timeout", function()
      local ch = braid.chan(1)
      ch:send("v")
      assert.same({ 1, "v", n = 2 }, pack(braid.select({ ch }, { timeout = 0 })))
    end)

    it("returns nil, nil, 'timeout' at once for timeout 0", function()
      assert.same({ nil, nil, "timeout", n = 3 }, pack(braid.select({ braid.chan() }, { timeout = 0 })))
    end)

    it("times out a blocked send case and delivers nothing", function()
      local ch = braid.chan()
      assert.same({ nil, nil, "timeout", n = 3 }, pack(braid.select({ { ch, 1 } }, { timeout = 0.05 })))
      assert.same({ nil, "timeout", n = 2 }, pack(ch:recv(0)))
    end)
  end)

  describe("default", function()
    it("returns nil, nil, 'empty' at once when nothing is ready", function()
      -- Blocking instead would raise the deadlock error on this thread.
      assert.same({ nil, nil, "empty", n = 3 },
        pack(braid.select({ braid.chan(), { braid.chan(), 1 } }, { default = true })))
    end)

    it("returns a ready case instead", function()
      local ch = braid.chan(1)
      ch:send("ready")
      assert.same({ 1, "ready", n = 2 }, pack(braid.select({ ch }, { default = true })))
    end)

    it("returns nil, nil, 'empty' for a pending future", function()
      assert.same({ nil, nil, "empty", n = 3 }, pack(braid.select({ braid.future() }, { default = true })))
    end)
  end)

  describe("closed channels", function()
    it("returns i, nil, 'closed' for a receive case on a closed channel", function()
      local a, b = braid.chan(), braid.chan()
      b:close()
      assert.same({ 2, nil, "closed", n = 3 }, pack(braid.select({ a, b }, { timeout = 5 })))
    end)

    it("returns i, nil, err after close(err)", function()
      local ch = braid.chan()
      ch:close("broken pipe")
      assert.same({ 1, nil, "broken pipe", n = 3 }, pack(braid.select({ ch }, { timeout = 5 })))
    end)

    it("delivers buffered values of a closed channel first", function()
      local ch = braid.chan(2)
      ch:send("last words")
      ch:close()
      assert.same({ 1, "last words", n = 2 }, pack(braid.select({ ch }, { timeout = 5 })))
      assert.same({ 1, nil, "closed", n = 3 }, pack(braid.select({ ch }, { timeout = 5 })))
    end)

    it("wakes a blocked select when the channel closes", function()
      local ch = braid.chan()
      braid.go(function() braid.sleep(0.05); ch:close() end)
      assert.same({ 1, nil, "closed", n = 3 }, pack(braid.select({ ch }, { timeout = 10 })))
    end)
  end)

  describe("fairness", function()
    it("chooses uniformly among ready cases", function()
      local a, b = braid.chan(math.huge), braid.chan(math.huge)
      a:send(1); b:send(2)
      local count = { 0, 0 }
      for _ = 1, 2000 do
        local i = braid.select({ a, b }, { timeout = 5 })
        count[i] = count[i] + 1
        ;({ a, b })[i]:send(i)   -- keep both always ready
      end
      assert.is_true(count[1] >= 700 and count[1] <= 1300, "case 1 chosen " .. count[1] .. " times")
      assert.is_true(count[2] >= 700 and count[2] <= 1300, "case 2 chosen " .. count[2] .. " times")
    end)

    it("chooses uniformly between a ready send and a ready receive", function()
      local a, b = braid.chan(math.huge), braid.chan(math.huge)
      a:send(1)
      local count = { 0, 0 }
      for _ = 1, 2000 do
        local i = braid.select({ a, { b, 0 } }, { timeout = 5 })
        count[i] = count[i] + 1
        if i == 1 then a:send(1) end
      end
      assert.is_true(count[1] >= 700 and count[1] <= 1300, "case 1 chosen " .. count[1] .. " times")
      assert.equal(count[2], #b)
    end)
  end)

  describe("braid.after", function()
    it("delivers one value after s, then is closed", function()
      local t0 = braid.now()
      local ch = braid.after(0.05)
      assert.truthy(tostring(ch):match("^braid%.chan#%d+"))
      local v = ch:recv(10)
      assert.is_not_nil(v)
      assert.is_true(braid.now() - t0 >= 0.05 - 1e-3)
      assert.same({ nil, "closed", n = 2 }, pack(ch:recv(10)))
    end)

    it("fires as a select case", function()
      local t0 = braid.now()
      local i = braid.select({ braid.chan(), braid.after(0.05) }, { timeout = 10 })
      assert.equal(2, i)
      assert.is_true(braid.now() - t0 >= 0.05 - 1e-3)
    end)

    it("loses to a case that is ready first", function()
      local ch = braid.chan()
      braid.go(function() ch:send("first") end)
      local i, v = braid.select({ ch, braid.after(1) }, { timeout = 10 })
      assert.equal(1, i)
      assert.equal("first", v)
    end)
  end)

  describe("inside tasks", function()
    it("receives in a task", function()
      local a, b = braid.chan(), braid.chan()
      local f = braid.go(function() return braid.select({ a, b }) end)
      settle_on(b)
      b:send("to b", 10)
      assert.same({ 2, "to b", n = 2 }, pack(f:await(10)))
    end)

    it("times out in a task", function()
      local f = braid.go(function() return braid.select({ braid.chan() }, { timeout = 0.05 }) end)
      assert.same({ nil, nil, "timeout", n = 3 }, pack(f:await(10)))
    end)

    it("returns 'empty' with default in a task", function()
      local f = braid.go(function() return braid.select({ braid.chan() }, { default = true }) end)
      assert.same({ nil, nil, "empty", n = 3 }, pack(f:await(10)))
    end)

    it("sends in a task", function()
      local ch = braid.chan()
      local f = braid.go(function() return braid.select({ { ch, "from task" } }) end)
      assert.equal("from task", ch:recv(10))
      assert.same({ 1, true, n = 2 }, pack(f:await(10)))
    end)

    it("waits on braid.after and a future in a task", function()
      local f = braid.go(function()
        local never = braid.future()
        return braid.select({ never, braid.after(0.05) })
      end)
      local i = f:await(10)
      assert.equal(2, i)
    end)

    it("delivers each value to exactly one of many selecting tasks", function()
      local a, b = braid.chan(), braid.chan()
      local fs = {}
      for t = 1, 8 do
        fs[t] = braid.go(function()
          local got = {}
          while true do
            local i, v = braid.select({ a, b })
            if v == nil then break end
            got[#got + 1] = v
          end
          return got
        end)
      end
      for k = 1, 500 do
        local ch = (k % 2 == 0) and a or b
        assert(ch:send(k, 10) == true)
      end
      a:close(); b:close()
      local seen, n = {}, 0
      for t = 1, 8 do
        for _, v in ipairs(fs[t]:await(10)) do
          assert(seen[v] == nil, "duplicate " .. v)
          seen[v] = true
          n = n + 1
        end
      end
      assert.equal(500, n)
    end)
  end)

  describe("braid.tasks", function()
    it("shows a task in select as 'blocked', waiting_on naming select and a handle", function()
      local a, b = braid.chan(), braid.chan()
      local f = braid.go(function() return braid.select({ a, b }) end)
      local row
      wait_until(function()
        for _, r in ipairs(braid.tasks()) do
          if type(r.waiting_on) == "string" and r.waiting_on:match("^select") then row = r; return true end
        end
        return false
      end, 5)
      assert.is_table(row)
      assert.equal("blocked", row.state)
      assert.truthy(row.waiting_on:find(id_pattern(a)) or row.waiting_on:find(id_pattern(b)), row.waiting_on)
      a:close()
      f:wait(10)
    end)
  end)

  describe("with no cases", function()
    it("reports a deadlock on the main thread", function()
      local ok, err = pcall(braid.select, {})
      assert.is_false(ok)
      assert.truthy(tostring(err):match("^braid: deadlock"), err)
    end)
  end)
end)
