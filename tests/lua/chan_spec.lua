-- chan_spec.lua: API.md "Channels" (and the channel parts of "Conventions").
--
-- Every blocking call on the main thread has a timeout so a broken runtime
-- fails a test instead of hanging.  Timing checks are lower bounds only.
local braid = require "braid"
local H = require "tests.lua.helpers"
local handle_id, id_pattern, wait_until = H.handle_id, H.id_pattern, H.wait_until

local pack = table.pack

-- How many tasks braid.tasks() shows waiting on handle h.
local function waiting_on(h)
  local pat, n = id_pattern(h), 0
  for _, row in ipairs(braid.tasks()) do
    if type(row.waiting_on) == "string" and row.waiting_on:find(pat) then n = n + 1 end
  end
  return n
end

-- Best effort: give n tasks time to block on h.  Does not assert (the specs
-- of braid.tasks() do); falls back to a short sleep.
local function settle_on(h, n)
  n = n or 1
  if not wait_until(function() return waiting_on(h) >= n end, 2) then braid.sleep(0.1) end
end

describe("braid.chan", function()
  it("returns a handle whose tostring matches braid.chan#<id>", function()
    local ch = braid.chan()
    assert.equal("userdata", type(ch))
    assert.truthy(tostring(ch):match("^braid%.chan#%d+"))
    assert.are_not.equal(handle_id(ch), handle_id(braid.chan()))
  end)

  it("raises on a bad capacity or policy", function()
    assert.has_error(function() braid.chan(-1) end)
    assert.has_error(function() braid.chan(2, "bogus") end)
    assert.has_error(function() braid.chan("big") end)
  end)

  describe("rendezvous (cap 0)", function()
    it("is the default and reports cap() == 0", function()
      assert.equal(0, braid.chan():cap())
      assert.equal(0, braid.chan(0):cap())
    end)

    it("hands a value from a task to the main thread", function()
      local ch = braid.chan()
      local f = braid.go(function() return ch:send("hello") end)
      assert.equal("hello", ch:recv(10))
      assert.is_true(f:await(10))
    end)

    it("hands a value from the main thread to a task", function()
      local ch = braid.chan()
      local f = braid.go(function() return ch:recv() end)
      assert.is_true(ch:send({ k = "v" }, 10))
      assert.same({ k = "v" }, f:await(10))
    end)

    it("blocks the sender until a receiver takes the value", function()
      local ch = braid.chan()
      local f = braid.go(function() braid.sleep(0.1); return ch:recv() end)
      local t0 = braid.now()
      assert.is_true(ch:send(1, 10))
      assert.is_true(braid.now() - t0 >= 0.1 - 1e-3)
      assert.equal(1, f:await(10))
    end)

    it("never buffers: #ch stays 0", function()
      local ch = braid.chan()
      assert.same({ false, "full", n = 2 }, pack(ch:try_send(1)))
      assert.equal(0, #ch)
      assert.same({ nil, "empty", n = 2 }, pack(ch:try_recv()))
    end)

    it("returns false, 'timeout' from send with no receiver", function()
      local ch = braid.chan()
      local t0 = braid.now()
      assert.same({ false, "timeout", n = 2 }, pack(ch:send(1, 0.05)))
      assert.is_true(braid.now() - t0 >= 0.05 - 1e-3)
    end)

    it("completes send(v, 0) and try_send when a receiver is waiting", function()
      local ch = braid.chan()
      local f = braid.go(function() return ch:recv() end)
      settle_on(ch)
      assert.is_true(ch:send("now", 0))
      assert.equal("now", f:await(10))
      local g = braid.go(function() return ch:recv() end)
      settle_on(ch)
      assert.is_true(ch:try_send("try"))
      assert.equal("try", g:await(10))
    end)

    it("completes recv(0) and try_recv when a sender is waiting", function()
      local ch = braid.chan()
      local f = braid.go(function() return ch:send("a") end)
      settle_on(ch)
      assert.equal("a", ch:recv(0))
      assert.is_true(f:await(10))
      local g = braid.go(function() return ch:send("b") end)
      settle_on(ch)
      assert.equal("b", ch:try_recv())
      assert.is_true(g:await(10))
    end)

    it("passes values between two tasks", function()
      local ch = braid.chan()
      local p = braid.go(function() for i = 1, 100 do ch:send(i) end end)
      local c = braid.go(function()
        local sum = 0
        for _ = 1, 100 do sum = sum + ch:recv() end
        return sum
      end)
      assert.equal(5050, c:await(10))
      p:await(10)
    end)
  end)

  describe("buffered", function()
    it("reports its capacity", function()
      assert.equal(3, braid.chan(3):cap())
    end)

    it("is FIFO", function()
      local ch = braid.chan(3)
      assert.is_true(ch:send(1))
      assert.is_true(ch:send(2))
      assert.is_true(ch:send(3))
      assert.equal(3, #ch)
      assert.equal(1, ch:recv(5))
      assert.equal(2, ch:recv(5))
      assert.equal(3, ch:recv(5))
      assert.equal(0, #ch)
    end)

    it("keeps FIFO order across a task", function()
      local ch = braid.chan(8)
      local f = braid.go(function() for i = 1, 1000 do ch:send(i) end end)
      for i = 1, 1000 do assert.equal(i, ch:recv(10)) end
      f:await(10)
    end)

    it("returns false, 'full' from try_send when full", function()
      local ch = braid.chan(1)
      assert.is_true(ch:try_send("a"))
      assert.same({ false, "full", n = 2 }, pack(ch:try_send("b")))
      assert.equal(1, #ch)
    end)

    it("returns false, 'timeout' from send after the deadline when full", function()
      local ch = braid.chan(1)
      ch:send("a")
      local t0 = braid.now()
      assert.same({ false, "timeout", n = 2 }, pack(ch:send("b", 0.05)))
      assert.is_true(braid.now() - t0 >= 0.05 - 1e-3)
      assert.equal(1, #ch)
      assert.equal("a", ch:recv(5))
    end)

    it("returns false, 'timeout' at once from send(v, 0) when full", function()
      local ch = braid.chan(1)
      ch:send("a")
      assert.same({ false, "timeout", n = 2 }, pack(ch:send("b", 0)))
      assert.equal(1, #ch)
    end)

    it("completes a blocked send once room is made", function()
      local ch = braid.chan(1)
      ch:send("a")
      local f = braid.go(function() braid.sleep(0.05); return ch:recv() end)
      assert.is_true(ch:send("b", 10))
      assert.equal("a", f:await(10))
      assert.equal("b", ch:recv(5))
    end)
  end)

  describe("unbounded (math.huge)", function()
    it("reports cap() == math.huge", function()
      assert.equal(math.huge, braid.chan(math.huge):cap())
    end)

    it("never blocks a sender and stays FIFO", function()
      local ch = braid.chan(math.huge)
      for i = 1, 10000 do assert(ch:try_send(i) == true) end
      assert.is_true(ch:send(10001, 0))
      assert.equal(10001, #ch)
      for i = 1, 10001 do assert(ch:recv(0) == i) end
      assert.equal(0, #ch)
    end)
  end)

  describe("recv", function()
    it("returns nil, 'timeout' after the deadline", function()
      local ch = braid.chan(1)
      local t0 = braid.now()
      assert.same({ nil, "timeout", n = 2 }, pack(ch:recv(0.05)))
      assert.is_true(braid.now() - t0 >= 0.05 - 1e-3)
    end)

    it("returns nil, 'timeout' at once with timeout 0", function()
      assert.same({ nil, "timeout", n = 2 }, pack(braid.chan(1):recv(0)))
      assert.same({ nil, "timeout", n = 2 }, pack(braid.chan():recv(0)))
    end)

    it("returns nil, 'timeout' inside a task", function()
      local ch = braid.chan()
      local f = braid.go(function() return ch:recv(0.05) end)
      assert.same({ true, nil, "timeout", n = 3 }, pack(f:wait(10)))
    end)

    it("times a blocked send out inside a task, and never delivers it after", function()
      local ch = braid.chan()
      local f = braid.go(function()
        local ok, why = ch:send({ "late" }, 0.05)
        local ok0, why0 = ch:send({ "now" }, 0)       -- zero: a try only
        return ok, why, ok0, why0
      end)
      assert.same({ true, false, "timeout", false, "timeout", n = 5 }, pack(f:wait(10)))
      assert.same({ nil, "timeout", n = 2 }, pack(ch:recv(0.05)))
      -- A zero timeout completes at once when a receiver waits.
      local got = braid.chan(1)
      local r = braid.go(function() got:send(ch:recv(10)) end)
      local sent = braid.go(function()
        for _ = 1, 1000 do
          if ch:send("zero", 0) then return true end
          braid.sleep(0.001)                           -- the receiver is not there yet
        end
        return false
      end)
      assert.is_true(sent:await())
      assert.equal("zero", got:recv(10))
      r:await()
      -- Blocked sends in a task, with and without a timeout, complete when
      -- a receiver comes, in order.
      local g = braid.go(function()
        for i = 1, 3 do assert(ch:send({ i }, 10)) end
        for i = 4, 6 do assert(ch:send({ i })) end
        return "sent"
      end)
      for i = 1, 6 do assert.same({ i }, ch:recv(10)) end
      assert.equal("sent", g:await())
    end)

    it("blocks the thread, not the task, where a task cannot yield", function()
      -- A table.sort comparator cannot yield: a send there waits on the
      -- worker's OS thread until the receiver (the main thread) comes.
      local ch = braid.chan()
      local f = braid.go(function()
        local t = { 3, 1, 2 }
        local sent = 0
        table.sort(t, function(a, b)
          if sent == 0 then sent = 1; assert(ch:send("from a comparator")) end
          return a < b
        end)
        return t[1], t[2], t[3], sent
      end)
      assert.equal("from a comparator", ch:recv(10))
      assert.same({ true, 1, 2, 3, 1, n = 5 }, pack(f:wait(10)))
    end)

    it("returns false as a value", function()
      local ch = braid.chan(1)
      ch:send(false)
      assert.same({ false, n = 1 }, pack(ch:recv(5)))
    end)

    it("waits forever without a timeout until a value arrives", function()
      local ch = braid.chan()
      braid.go(function() braid.sleep(0.1); ch:send("x") end)
      assert.equal("x", ch:recv())
    end)
  end)

  describe("try_recv", function()
    it("returns nil, 'empty' on an empty open channel", function()
      assert.same({ nil, "empty", n = 2 }, pack(braid.chan(2):try_recv()))
    end)

    it("returns nil, 'closed' on a drained closed channel", function()
      local ch = braid.chan(2)
      ch:close()
      assert.same({ nil, "closed", n = 2 }, pack(ch:try_recv()))
    end)

    it("returns a buffered value", function()
      local ch = braid.chan(2)
      ch:send(7)
      assert.same({ 7, n = 1 }, pack(ch:try_recv()))
    end)
  end)

  describe("timeouts", function()
    it("accept integer seconds", function()
      local ch = braid.chan()
      braid.go(function() ch:send("int") end)
      assert.equal("int", ch:recv(5))
    end)

    it("raise for a non-number timeout", function()
      local ch = braid.chan(1)
      assert.has_error(function() ch:recv("soon") end)
      assert.has_error(function() ch:send(1, "soon") end)
      assert.equal(0, #ch)
    end)
  end)

  describe("send", function()
    it("raises an error mentioning nil for send(nil)", function()
      local ch = braid.chan(1)
      local ok, err = pcall(ch.send, ch, nil)
      assert.is_false(ok)
      assert.truthy(tostring(err):find("nil", 1, true), err)
      assert.equal(0, #ch)
    end)

    it("raises a qualified bad-argument error for send(nil) and try_send(nil)", function()
      local ch = braid.chan(1)
      local ok, err = pcall(ch.send, ch, nil)
      assert.is_false(ok)
      assert.truthy(tostring(err):match("^bad argument #1 to 'chan:send' %(nil is never"), err)
      ok, err = pcall(ch.try_send, ch, nil)
      assert.is_false(ok)
      assert.truthy(tostring(err):match("^bad argument #1 to 'chan:try_send' %(nil is never"), err)
      assert.truthy(tostring(err):find("nil", 1, true), err)
      assert.equal(0, #ch)
      assert.equal(0, ch:stats().sent)
    end)

    it("raises for send() without a value", function()
      local ch = braid.chan(1)
      assert.has_error(function() ch:send() end)
      assert.equal(0, #ch)
    end)
  end)

  describe("drop policy", function()
    it("returns true for a send to a full channel and drops the new value", function()
      local ch = braid.chan(2, "drop")
      for i = 1, 4 do assert.is_true(ch:send(i)) end
      assert.is_true(ch:send(5, 0))
      assert.equal(2, #ch)
      assert.equal(1, ch:recv(5))
      assert.equal(2, ch:recv(5))
      assert.same({ nil, "empty", n = 2 }, pack(ch:try_recv()))
    end)

    it("counts the losses in stats().dropped", function()
      local ch = braid.chan(2, "drop")
      for i = 1, 5 do ch:send(i) end
      local s = ch:stats()
      assert.equal(3, s.dropped)
      assert.equal(2, s.sent)
      assert.equal(0, s.received)
      ch:recv(5)
      assert.equal(1, ch:stats().received)
    end)
  end)

  describe("slide policy", function()
    it("returns true for a send to a full channel and drops the oldest value", function()
      local ch = braid.chan(2, "slide")
      for i = 1, 4 do assert.is_true(ch:send(i)) end
      assert.is_true(ch:send(5, 0))
      assert.equal(2, #ch)
      assert.equal(4, ch:recv(5))
      assert.equal(5, ch:recv(5))
      assert.same({ nil, "empty", n = 2 }, pack(ch:try_recv()))
    end)

    it("counts the losses in stats().dropped", function()
      local ch = braid.chan(2, "slide")
      for i = 1, 5 do ch:send(i) end
      local s = ch:stats()
      assert.equal(3, s.dropped)
      assert.equal(5, s.sent)
      assert.equal(0, s.received)
    end)
  end)

  describe("close", function()
    it("is idempotent", function()
      local ch = braid.chan(1)
      assert.is_false(ch:is_closed())
      ch:close()
      ch:close()
      ch:close("late error")
      assert.is_true(ch:is_closed())
      assert.same({ nil, "closed", n = 2 }, pack(ch:recv(1)))
    end)

    it("makes send and try_send return false, 'closed'", function()
      local ch = braid.chan(4)
      ch:close()
      assert.same({ false, "closed", n = 2 }, pack(ch:send(1)))
      assert.same({ false, "closed", n = 2 }, pack(ch:send(1, 0)))
      assert.same({ false, "closed", n = 2 }, pack(ch:try_send(1)))
      assert.equal(0, #ch)
    end)

    it("makes recv return nil, 'closed' (also with timeout 0)", function()
      local ch = braid.chan()
      ch:close()
      assert.same({ nil, "closed", n = 2 }, pack(ch:recv()))
      assert.same({ nil, "closed", n = 2 }, pack(ch:recv(0)))
      assert.same({ nil, "closed", n = 2 }, pack(ch:try_recv()))
    end)

    it("still delivers buffered values, then returns nil, 'closed'", function()
      local ch = braid.chan(3)
      ch:send(1); ch:send(2)
      ch:close()
      assert.equal(1, ch:recv(5))
      assert.equal(2, ch:try_recv())
      assert.same({ nil, "closed", n = 2 }, pack(ch:recv(5)))
    end)

    it("with err: delivers buffered values, then recv returns nil, err", function()
      local ch = braid.chan(3)
      ch:send(1); ch:send(2)
      ch:close("boom")
      assert.is_true(ch:is_closed())
      assert.equal(1, ch:recv(5))
      assert.equal(2, ch:recv(5))
      assert.same({ nil, "boom", n = 2 }, pack(ch:recv(5)))
      assert.same({ nil, "boom", n = 2 }, pack(ch:recv(0)))
      assert.same({ false, "closed", n = 2 }, pack(ch:send(3)))
    end)

    it("delivers a table close error as a copy", function()
      local ch = braid.chan()
      ch:close({ code = 7 })
      local v, err = ch:recv(5)
      assert.is_nil(v)
      assert.is_table(err)
      assert.equal(7, err.code)
    end)

    it("gives blocked senders false, 'closed'", function()
      local ch = braid.chan()
      local fs = {}
      for i = 1, 3 do fs[i] = braid.go(function() return ch:send(i) end) end
      settle_on(ch, 3)
      ch:close()
      for i = 1, 3 do
        assert.same({ true, false, "closed", n = 3 }, pack(fs[i]:wait(10)))
      end
    end)

    it("gives blocked senders on a full buffered channel false, 'closed'", function()
      local ch = braid.chan(1)
      ch:send("kept")
      local f = braid.go(function() return ch:send("lost") end)
      settle_on(ch)
      ch:close()
      assert.same({ true, false, "closed", n = 3 }, pack(f:wait(10)))
      assert.equal("kept", ch:recv(5))
      assert.same({ nil, "closed", n = 2 }, pack(ch:recv(5)))
    end)

    it("gives blocked receivers nil, 'closed'", function()
      local ch = braid.chan()
      local fs = {}
      for i = 1, 3 do fs[i] = braid.go(function() return ch:recv() end) end
      settle_on(ch, 3)
      ch:close()
      for i = 1, 3 do
        assert.same({ true, nil, "closed", n = 3 }, pack(fs[i]:wait(10)))
      end
    end)

    it("gives blocked receivers nil, err after close(err)", function()
      local ch = braid.chan()
      local f = braid.go(function() return ch:recv() end)
      settle_on(ch)
      ch:close("shutdown")
      assert.same({ true, nil, "shutdown", n = 3 }, pack(f:wait(10)))
    end)

    it("wakes the main thread blocked in recv", function()
      local ch = braid.chan()
      braid.go(function() braid.sleep(0.05); ch:close() end)
      assert.same({ nil, "closed", n = 2 }, pack(ch:recv(10)))
    end)

    it("wakes the main thread blocked in send", function()
      local ch = braid.chan()
      braid.go(function() braid.sleep(0.05); ch:close() end)
      assert.same({ false, "closed", n = 2 }, pack(ch:send(1, 10)))
    end)
  end)

  describe("iter", function()
    it("yields buffered values until closed", function()
      local ch = braid.chan(8)
      for i = 1, 5 do ch:send(i) end
      ch:close()
      local got = {}
      for v in ch:iter() do got[#got + 1] = v end
      assert.same({ 1, 2, 3, 4, 5 }, got)
    end)

    it("follows a producer task until it closes the channel", function()
      local ch = braid.chan()
      braid.go(function()
        for i = 1, 100 do ch:send(i) end
        ch:close()
      end)
      local got = {}
      for v in ch:iter(10) do got[#got + 1] = v end
      assert.equal(100, #got)
      for i = 1, 100 do assert.equal(i, got[i]) end
    end)

    it("works inside a task", function()
      local ch = braid.chan(4)
      local f = braid.go(function()
        local sum = 0
        for v in ch:iter() do sum = sum + v end
        return sum
      end)
      for i = 1, 10 do ch:send(i, 10) end
      ch:close()
      assert.equal(55, f:await(10))
    end)

    it("raises the close error once drained", function()
      local ch = braid.chan(2)
      ch:send("a")
      ch:close("bad")
      local got = {}
      local ok, err = pcall(function()
        for v in ch:iter() do got[#got + 1] = v end
      end)
      assert.is_false(ok)
      assert.equal("bad", err)
      assert.same({ "a" }, got)
    end)
  end)

  describe("length, capacity, state", function()
    it("reports #ch as the number of buffered values", function()
      local ch = braid.chan(5)
      assert.equal(0, #ch)
      ch:send("a"); ch:send("b")
      assert.equal(2, #ch)
      ch:recv(5)
      assert.equal(1, #ch)
    end)

    it("reports is_closed", function()
      local ch = braid.chan()
      assert.is_false(ch:is_closed())
      ch:close()
      assert.is_true(ch:is_closed())
    end)
  end)

  describe("stats", function()
    it("counts sent, received and dropped exactly", function()
      local ch = braid.chan(10)
      assert.same({ sent = 0, received = 0, dropped = 0 },
        { sent = ch:stats().sent, received = ch:stats().received, dropped = ch:stats().dropped })
      for i = 1, 5 do ch:send(i) end
      for _ = 1, 3 do ch:recv(5) end
      ch:try_recv()
      local s = ch:stats()
      assert.equal(5, s.sent)
      assert.equal(4, s.received)
      assert.equal(0, s.dropped)
    end)

    it("does not count failed sends", function()
      local ch = braid.chan(1)
      ch:send(1)
      ch:try_send(2)
      ch:send(3, 0)
      ch:send(4, 0.01)
      ch:close()
      ch:send(5)
      local s = ch:stats()
      assert.equal(1, s.sent)
      assert.equal(0, s.dropped)
    end)

    it("counts rendezvous hand-offs", function()
      local ch = braid.chan()
      local f = braid.go(function() for i = 1, 10 do ch:send(i) end end)
      for _ = 1, 10 do ch:recv(10) end
      f:await(10)
      local s = ch:stats()
      assert.equal(10, s.sent)
      assert.equal(10, s.received)
    end)
  end)

  describe("handles", function()
    it("sent over a channel refer to the same channel", function()
      local carrier, target = braid.chan(1), braid.chan(4)
      carrier:send(target)
      local copy = carrier:recv(5)
      assert.equal(handle_id(target), handle_id(copy))
      copy:send("through the copy")
      assert.equal("through the copy", target:recv(5))
      target:send("through the original")
      assert.equal("through the original", copy:recv(5))
      copy:close()
      assert.is_true(target:is_closed())
    end)

    it("passed to a task refer to the same channel", function()
      local reply = braid.chan()
      local f = braid.go(function(r) r:send("pong") end, reply)
      assert.equal("pong", reply:recv(10))
      f:await(10)
    end)

    it("received from a task refer to the channel it made", function()
      local carrier = braid.chan()
      local f = braid.go(function()
        local mine = braid.chan(1)
        carrier:send(mine)
        return mine:recv()
      end)
      local theirs = carrier:recv(10)
      theirs:send("hello")
      assert.equal("hello", f:await(10))
    end)
  end)

  describe("concurrency", function()
    it("delivers every value exactly once from many senders to one receiver", function()
      local N, M = 8, 500
      local ch = braid.chan(16)
      local fs = {}
      for s = 1, N do
        fs[s] = braid.go(function()
          for k = 1, M do ch:send(s * 100000 + k) end
          return true
        end)
      end
      local seen, count = {}, 0
      for _ = 1, N * M do
        local v = ch:recv(10)
        assert(v ~= nil, "recv timed out")
        assert(seen[v] == nil, "duplicate value " .. tostring(v))
        seen[v] = true
        count = count + 1
      end
      for s = 1, N do assert.is_true(fs[s]:await(10)) end
      assert.equal(N * M, count)
      for s = 1, N do for k = 1, M do assert(seen[s * 100000 + k], "missing value") end end
      assert.same({ nil, "empty", n = 2 }, pack(ch:try_recv()))
    end)

    it("delivers every value exactly once with many senders and receivers", function()
      local N, M, R = 6, 400, 4
      for _, cap in ipairs({ 0, 3, math.huge }) do
        local ch = braid.chan(cap)
        local senders, receivers = {}, {}
        for r = 1, R do
          receivers[r] = braid.go(function()
            local got = {}
            for v in ch:iter() do got[#got + 1] = v end
            return got
          end)
        end
        for s = 1, N do
          senders[s] = braid.go(function()
            for k = 1, M do ch:send(s * 100000 + k) end
          end)
        end
        for s = 1, N do senders[s]:await(30) end
        ch:close()
        local seen, count = {}, 0
        for r = 1, R do
          for _, v in ipairs(receivers[r]:await(30)) do
            assert(seen[v] == nil, "duplicate value " .. v)
            seen[v] = true
            count = count + 1
          end
        end
        assert.equal(N * M, count)
        local st = ch:stats()
        assert.equal(N * M, st.sent)
        assert.equal(N * M, st.received)
      end
    end)
  end)
end)
