-- runtime_spec.lua: API.md "Conventions", "Values that cross threads" and
-- "Runtime": go/spawn, sleep/yield/now/self, cancellation, task globals,
-- stats/tasks, deadlock detection, preemption, blocking, the value codec.
--
-- Every blocking call on the main thread has a generous timeout so that a
-- broken runtime fails a test instead of hanging the suite.  Timing checks
-- are lower bounds only.
local braid = require "braid"
local H = require "tests.lua.helpers"
local handle_id, id_pattern, wait_until = H.handle_id, H.id_pattern, H.wait_until

local pack, unpack = table.pack, table.unpack

-- Iterations of a call-free CPU loop (about 1 s of CPU here): its only
-- preemption points are the runtime's hooks.  Spinners stop by themselves
-- after it so that a lost cancellation fails a test instead of hanging the
-- process at exit.
local SPIN = 150000000

-- The braid.tasks() row whose waiting_on names handle h, if any.
local function row_waiting_on(h)
  local pat = id_pattern(h)
  for _, row in ipairs(braid.tasks()) do
    if type(row.waiting_on) == "string" and row.waiting_on:find(pat) then return row end
  end
end

-- Best effort: give a task time to block on h (does not assert; the tests of
-- braid.tasks() itself do).
local function settle_on(h)
  if not wait_until(function() return row_waiting_on(h) ~= nil end, 2) then
    braid.sleep(0.05)
  end
end

local function row_by_id(id)
  for _, row in ipairs(braid.tasks()) do
    if row.id == id then return row end
  end
end

-- Sends v through a buffered channel and returns what arrives.
local function via_chan(v)
  local ch = braid.chan(1)
  assert.is_true(ch:send(v, 5))
  local r = pack(ch:recv(5))
  assert.equal(1, r.n)
  return r[1]
end

-- Passes v to a task as an argument and returns the task's result.
local function via_task(v)
  return braid.go(function(x) return x end, v):await(10)
end

local function is_negative_zero(x)
  return x == 0 and 1 / x == -math.huge
end

-- These run first: deadlock detection needs every other task blocked and no
-- timer pending, which holds best at the start of the file.
describe("braid deadlock detection", function()
  it("raises 'braid: deadlock' naming the channel when main recvs with no possible sender", function()
    local ch = braid.chan()
    local ok, err = pcall(ch.recv, ch)
    assert.is_false(ok)
    assert.equal("string", type(err))
    assert.truthy(err:match("^braid: deadlock"), err)
    assert.truthy(err:find("recv " .. id_pattern(ch)), err)
  end)

  it("raises when every task is blocked too", function()
    local other = braid.chan()
    local f = braid.go(function() return other:recv() end)
    settle_on(other)
    local ch = braid.chan()
    local ok, err = pcall(ch.recv, ch)
    assert.is_false(ok)
    assert.truthy(tostring(err):match("^braid: deadlock"), err)
    assert.truthy(tostring(err):find("recv " .. id_pattern(ch)), err)
    other:close()
    assert.same({ true, nil, "closed", n = 3 }, pack(f:wait(10)))
  end)

  it("raises for an await on a future nobody can settle", function()
    local fut = braid.future()
    local ok, err = pcall(fut.await, fut)
    assert.is_false(ok)
    assert.truthy(tostring(err):match("^braid: deadlock"), err)
  end)

  it("does not fire while a sleeping task can still send", function()
    local ch = braid.chan()
    local f = braid.go(function() braid.sleep(0.2); return ch:send("late") end)
    assert.equal("late", ch:recv())
    assert.is_true(f:await(10))
  end)
end)

describe("braid.go", function()
  it("returns a future that resolves with the task's result", function()
    local f = braid.go(function() return 42 end)
    assert.truthy(tostring(f):match("^braid%.future#%d+"))
    assert.equal(42, f:await(10))
    assert.equal("resolved", f:status())
  end)

  it("passes arguments and returns multiple results", function()
    local f = braid.go(function(a, b, c) return c, b, a, a + c end, 1, "two", 3.5)
    assert.same({ 3.5, "two", 1, 4.5, n = 4 }, pack(f:await(10)))
  end)

  it("keeps nil holes in arguments and results", function()
    local f = braid.go(function(...)
      local n = select("#", ...)
      local a, b, c = ...
      return n, a, b, c, nil
    end, nil, 2, nil)
    assert.same({ 3, nil, 2, nil, nil, n = 5 }, pack(f:await(10)))
    assert.same({ true, 3, nil, 2, nil, nil, n = 6 }, pack(f:wait(10)))
  end)

  it("starts a task spawned without arguments with none (and with a nil one with one)", function()
    local f = braid.go(function(...) return select("#", ...) end)
    assert.equal(0, f:await(10))
    local g = braid.spawn({ name = "noargs" }, function(...) return select("#", ...), ... end)
    assert.same({ 0, n = 1 }, pack(g:await(10)))
    local h = braid.go(function(...) return select("#", ...) end, nil)
    assert.equal(1, h:await(10))
  end)

  it("resolves with no values when the task returns nothing", function()
    local f = braid.go(function() end)
    assert.equal(0, select("#", f:await(10)))
    assert.same({ true, n = 1 }, pack(f:wait(10)))
  end)

  it("raises the task's error with the remote traceback appended from await", function()
    local function deep_failure() error("boom", 0) end
    local f = braid.go(function() deep_failure(); return 1 end)
    local ok, err = pcall(f.await, f, 10)
    assert.is_false(ok)
    assert.equal("string", type(err))
    assert.equal("boom", err:sub(1, 4))
    assert.truthy(err:find("stack traceback", 1, true), err)
    assert.truthy(err:find("deep_failure", 1, true), err)
    assert.equal("rejected", f:status())
  end)

  it("keeps the position of an error raised with a level", function()
    local f = braid.go(function() error("kaput") end)
    local ok, err = pcall(f.await, f, 10)
    assert.is_false(ok)
    assert.truthy(err:match("^[^\n]*:%d+: kaput"), err)
  end)

  it("returns false, err from wait when the task fails", function()
    local f = braid.go(function() error("boom", 0) end)
    local r = pack(f:wait(10))
    assert.equal(2, r.n)
    assert.is_false(r[1])
    assert.equal("string", type(r[2]))
    assert.equal("boom", r[2]:sub(1, 4))
  end)

  it("settles with a non-string error value as a copy", function()
    local f = braid.go(function() error({ code = 42 }) end)
    local ok, err = f:wait(10)
    assert.is_false(ok)
    assert.is_table(err)
    assert.equal(42, err.code)
    local ok2, err2 = pcall(f.await, f, 10)
    assert.is_false(ok2)
    assert.is_table(err2)
    assert.equal(42, err2.code)
  end)

  it("runs many tasks", function()
    local fs = {}
    for i = 1, 200 do fs[i] = braid.go(function(x) return x * x end, i) end
    for i = 1, 200 do assert.equal(i * i, fs[i]:await(10)) end
  end)

  it("lets tasks spawn and await tasks", function()
    local f = braid.go(function(n)
      local inner = {}
      for i = 1, n do inner[i] = braid.go(function(x) return x + 1 end, i) end
      local sum = 0
      for i = 1, n do sum = sum + inner[i]:await() end
      return sum
    end, 10)
    assert.equal(65, f:await(10))
  end)

  it("raises a braid: error for a non-function", function()
    local ok, err = pcall(braid.go, 42)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("braid", 1, true) or tostring(err):find("bad argument", 1, true), err)
  end)
end)

describe("braid.spawn", function()
  it("runs fn with arguments and returns a future", function()
    local f = braid.spawn({ name = "adder" }, function(a, b) return a + b end, 2, 3)
    assert.equal(5, f:await(10))
  end)

  it("names the task for braid.self", function()
    local f = braid.spawn({ name = "spec-named" }, function()
      return braid.self()
    end)
    local id, name = f:await(10)
    assert.equal("number", type(id))
    assert.equal("integer", math.type(id))
    assert.equal("spec-named", name)
  end)
end)

describe("braid.config", function()
  it("raises a braid: error once the runtime has started", function()
    braid.go(function() end):await(10)
    local ok, err = pcall(braid.config, { workers = 1 })
    assert.is_false(ok)
    assert.truthy(tostring(err):match("^braid:"), err)
  end)
end)

describe("braid.sleep", function()
  it("suspends a task for at least the given time", function()
    local f = braid.go(function()
      local t0 = braid.now()
      braid.sleep(0.1)
      return braid.now() - t0
    end)
    assert.is_true(f:await(10) >= 0.1 - 1e-3)
  end)

  it("blocks the main thread for at least the given time", function()
    local t0 = braid.now()
    braid.sleep(0.1)
    assert.is_true(braid.now() - t0 >= 0.1 - 1e-3)
  end)

  it("returns at once for 0", function()
    braid.sleep(0)
    assert.equal("done", braid.go(function() braid.sleep(0); return "done" end):await(10))
  end)

  it("lets sleeping tasks overlap", function()
    local t0 = braid.now()
    local fs = {}
    for i = 1, 50 do fs[i] = braid.go(function() braid.sleep(0.2); return i end) end
    for i = 1, 50 do assert.equal(i, fs[i]:await(10)) end
    -- 50 sequential sleeps would take 10 s; allow a lot of slack.
    assert.is_true(braid.now() - t0 < 5)
  end)
end)

describe("braid.yield", function()
  it("returns to the task, which continues", function()
    local f = braid.go(function()
      local n = 0
      for _ = 1, 100 do braid.yield(); n = n + 1 end
      return n
    end)
    assert.equal(100, f:await(10))
  end)

  it("is harmless on the main thread", function()
    braid.yield()
  end)
end)

describe("braid.now", function()
  it("returns a number that never decreases", function()
    local prev = braid.now()
    assert.equal("number", type(prev))
    for _ = 1, 10000 do
      local t = braid.now()
      assert(t >= prev, "braid.now went backwards")
      prev = t
    end
  end)

  it("increases across a sleep", function()
    local t0 = braid.now()
    braid.sleep(0.05)
    local t1 = braid.now()
    assert.is_true(t1 > t0)
    assert.is_true(t1 - t0 >= 0.05 - 1e-3)
  end)

  it("agrees between the main thread and tasks", function()
    local t0 = braid.now()
    local t = braid.go(function() return braid.now() end):await(10)
    local t1 = braid.now()
    assert.is_true(t >= t0 and t <= t1)
  end)
end)

describe("braid.self", function()
  it("returns nil on the main thread", function()
    assert.is_nil(braid.self())
  end)

  it("returns the task's id inside a task, distinct per task", function()
    local a = braid.go(function() return braid.self() end):await(10)
    local b = braid.go(function() return braid.self() end):await(10)
    assert.equal("integer", math.type(a))
    assert.equal("integer", math.type(b))
    assert.are_not.equal(a, b)
  end)

  it("returns id and name inside spawn{name=...}", function()
    local id, name = braid.spawn({ name = "worker-1" }, function() return braid.self() end):await(10)
    assert.equal("integer", math.type(id))
    assert.equal("worker-1", name)
  end)
end)

describe("braid preemption", function()
  it("lets more CPU-bound tasks than workers all make progress", function()
    braid.go(function() end):await(10)
    local n = math.max(4, 2 * braid.stats().workers + 2)
    local progress = braid.chan(math.huge)
    local fs = {}
    for i = 1, n do
      fs[i] = braid.go(function()
        local t0 = braid.now()
        local last, x = t0, 0
        progress:send({ i, t0 })
        while true do
          for k = 1, 1000 do x = x + k % 7 end
          local t = braid.now()
          if t - last >= 0.05 then progress:send({ i, t }); last = t end
          if t - t0 >= 0.3 then return t0, t end
        end
      end)
    end
    local starts, ends = {}, {}
    for i = 1, n do
      local r = pack(fs[i]:wait(30))
      assert.is_true(r[1], r[2])
      starts[i], ends[i] = r[2], r[3]
    end
    local last_start, first_end = -math.huge, math.huge
    for i = 1, n do
      last_start = math.max(last_start, starts[i])
      first_end = math.min(first_end, ends[i])
    end
    -- Without preemption the first tasks would finish before the last ones
    -- start.
    assert.is_true(last_start < first_end,
      ("last start %.3f is not before first end %.3f"):format(last_start, first_end))
    -- Every task recorded its start and progress samples.
    local samples = {}
    while true do
      local p = progress:try_recv()
      if p == nil then break end
      samples[p[1]] = (samples[p[1]] or 0) + 1
    end
    for i = 1, n do assert.is_true((samples[i] or 0) >= 2, "task " .. i) end
  end)
end)

describe("braid preemption inside pcall", function()
  it("suspends tasks that spin inside pcall", function()
    local n = math.max(4, 2 * braid.stats().workers + 2)
    local fs = {}
    for i = 1, n do
      fs[i] = braid.go(function()
        local t0, t1 = braid.now(), nil
        assert(pcall(function()
          local x = 0
          while braid.now() - t0 < 0.3 do x = x + 1 end
          t1 = braid.now()
        end))
        return t0, t1
      end)
    end
    local last_start, first_end = -math.huge, math.huge
    for i = 1, n do
      local r = pack(fs[i]:wait(30))
      assert.is_true(r[1], r[2])
      last_start = math.max(last_start, r[2])
      first_end = math.min(first_end, r[3])
    end
    assert.is_true(last_start < first_end,
      ("last start %.3f is not before first end %.3f"):format(last_start, first_end))
  end)
end)

describe("braid.cancelled", function()
  it("is false on the main thread", function()
    assert.is_false(braid.cancelled())
  end)

  it("is false in a task nobody cancelled", function()
    assert.is_false(braid.go(function() return braid.cancelled() end):await(10))
  end)

  it("is true in a task after cancel", function()
    local ch, out = braid.chan(), braid.chan(4)
    local f = braid.go(function()
      local ok, err = pcall(function() return ch:recv() end)
      out:try_send({ ok = ok, err = tostring(err), cancelled = braid.cancelled() })
    end)
    settle_on(ch)
    f:cancel()
    local r = out:recv(10)
    assert.is_table(r)
    assert.is_false(r.ok)
    assert.truthy(r.err:match("cancelled"), r.err)
    assert.is_true(r.cancelled)
    f:wait(10)
  end)
end)

describe("braid cancellation", function()
  it("wakes a task blocked in recv; the future becomes 'cancelled'", function()
    local ch = braid.chan()
    local f = braid.go(function() return ch:recv() end)
    settle_on(ch)
    assert.equal("pending", f:status())
    f:cancel()
    assert.same({ false, "cancelled", n = 2 }, pack(f:wait(10)))
    assert.equal("cancelled", f:status())
  end)

  it("makes await raise 'cancelled'", function()
    local ch = braid.chan()
    local f = braid.go(function() return ch:recv() end)
    settle_on(ch)
    f:cancel()
    local ok, err = pcall(f.await, f, 10)
    assert.is_false(ok)
    assert.truthy(tostring(err):match("cancelled"), err)
  end)

  it("takes the cancelled receiver off the channel", function()
    local ch = braid.chan()
    local f = braid.go(function() return ch:recv() end)
    settle_on(ch)
    f:cancel()
    f:wait(10)
    -- No receiver is left, so a rendezvous send cannot complete.
    assert.same({ false, "full", n = 2 }, pack(ch:try_send(1)))
    assert.same({ false, "timeout", n = 2 }, pack(ch:send(1, 0.05)))
  end)

  it("wakes a sleeping task", function()
    local f = braid.go(function() braid.sleep(30); return "slept" end)
    braid.sleep(0.05)
    local t0 = braid.now()
    f:cancel()
    assert.same({ false, "cancelled", n = 2 }, pack(f:wait(10)))
    assert.is_true(braid.now() - t0 < 10)
  end)

  it("stops CPU-bound tasks that wait in the ready queue", function()
    local n = 2 * braid.stats().workers + 2
    local started = braid.chan(math.huge)
    local fs = {}
    for i = 1, n do
      fs[i] = braid.go(function()
        started:send(i)
        local x = 0
        for _ = 1, SPIN do x = x + 1 end
        return "not cancelled"
      end)
    end
    for _ = 1, n do assert.is_not_nil(started:recv(10)) end
    braid.sleep(0.05)
    for i = 1, n do fs[i]:cancel() end
    local outcomes = {}
    for i = 1, n do
      local ok, v = fs[i]:wait(10)
      outcomes[i] = tostring(ok) .. " " .. tostring(v)
    end
    for i = 1, n do assert.equal("false cancelled", outcomes[i], "task " .. i) end
  end)

  it("stops a CPU-bound task at a preemption point", function()
    local started = braid.chan(1)
    local f = braid.go(function()
      started:send(true)
      local x = 0
      for _ = 1, SPIN do x = x + 1 end
      return "not cancelled"
    end)
    assert.is_true(started:recv(10))
    f:cancel()
    assert.same({ false, "cancelled", n = 2 }, pack(f:wait(10)))
    assert.equal("cancelled", f:status())
  end)

  it("wakes a task blocked in send without delivering its value", function()
    local ch = braid.chan()
    local f = braid.go(function() return ch:send("never") end)
    settle_on(ch)
    f:cancel()
    assert.same({ false, "cancelled", n = 2 }, pack(f:wait(10)))
    assert.same({ nil, "timeout", n = 2 }, pack(ch:recv(0.05)))
  end)

  it("wakes a task blocked in select or await", function()
    local ch, never = braid.chan(), braid.future()
    local s = braid.go(function() return braid.select({ ch, never }) end)
    local a = braid.go(function() return never:await() end)
    settle_on(never)
    braid.sleep(0.05)
    s:cancel(); a:cancel()
    assert.same({ false, "cancelled", n = 2 }, pack(s:wait(10)))
    assert.same({ false, "cancelled", n = 2 }, pack(a:wait(10)))
    assert.equal("pending", never:status())
    assert.same({ false, "full", n = 2 }, pack(ch:try_send(1)))
  end)

  it("stops a CPU-bound task spinning inside pcall", function()
    local started = braid.chan(1)
    local f = braid.go(function()
      started:send(true)
      local ok, err = pcall(function()
        local x = 0
        for _ = 1, SPIN do x = x + 1 end
      end)
      return ok, tostring(err), braid.cancelled()
    end)
    assert.is_true(started:recv(10))
    braid.sleep(0.02)
    f:cancel()
    local r = pack(f:wait(10))
    if r[1] then
      -- The task caught the cancellation and returned.
      assert.is_false(r[2])
      assert.truthy(r[3]:match("cancelled"), r[3])
      assert.is_true(r[4])
    else
      assert.same({ false, "cancelled", n = 2 }, r)
    end
  end)

  it("changes nothing on a settled future", function()
    local f = braid.go(function() return "done" end)
    assert.equal("done", f:await(10))
    f:cancel()
    assert.equal("resolved", f:status())
    assert.equal("done", f:await(10))
  end)
end)

describe("braid preemption after cancellations", function()
  -- A task cancelled at a preemption point dies of an error raised in a
  -- hook; whatever runs next on that worker must still be preemptible.
  it("keeps preempting tasks after tasks were cancelled at preemption points", function()
    local w = braid.stats().workers
    do
      local started = braid.chan(math.huge)
      local fs = {}
      for i = 1, w do
        fs[i] = braid.go(function()
          started:send(i)
          local x = 0
          for _ = 1, SPIN do x = x + 1 end
          return "not cancelled"
        end)
      end
      for _ = 1, w do started:recv(10) end
      braid.sleep(0.02)
      for i = 1, w do fs[i]:cancel() end
      for i = 1, w do fs[i]:wait(10) end
    end
    local n = 2 * w + 2
    local fs = {}
    for i = 1, n do
      fs[i] = braid.go(function()
        local t0, x = braid.now(), 0
        while braid.now() - t0 < 0.3 do x = x + 1 end
        return t0, braid.now()
      end)
    end
    local last_start, first_end = -math.huge, math.huge
    for i = 1, n do
      local r = pack(fs[i]:wait(30))
      assert.is_true(r[1], r[2])
      last_start = math.max(last_start, r[2])
      first_end = math.min(first_end, r[3])
    end
    assert.is_true(last_start < first_end,
      ("last start %.3f is not before first end %.3f"):format(last_start, first_end))
  end)
end)

describe("braid task globals", function()
  it("keeps a task's global writes to that task", function()
    local f1 = braid.go(function()
      braid_spec_global = "task1"
      return braid_spec_global
    end)
    assert.equal("task1", f1:await(10))
    local f2 = braid.go(function() return braid_spec_global end)
    assert.is_nil(f2:await(10))
    assert.is_nil(braid_spec_global)
    assert.is_nil(rawget(_G, "braid_spec_global"))
  end)

  it("does not let concurrent tasks see each other's globals", function()
    local fs = {}
    for i = 1, 20 do
      fs[i] = braid.go(function(n)
        shared_name = n
        braid.sleep(0.01)
        braid.yield()
        return shared_name
      end, i)
    end
    for i = 1, 20 do assert.equal(i, fs[i]:await(10)) end
    assert.is_nil(rawget(_G, "shared_name"))
  end)

  it("does not let a task overwrite the standard library for others", function()
    assert.equal("string", braid.go(function() print = "clobbered"; return type(print) end):await(10))
    for _ = 1, 4 do
      assert.equal("function", braid.go(function() return type(print) end):await(10))
    end
    assert.equal("function", type(print))
  end)

  it("gives a task that starts without globals its own when functions arrive later", function()
    -- The task's function reads no globals (no _ENV upvalue): its globals
    -- table is made when the first function that has one arrives.
    local inbox, outbox = braid.chan(), braid.chan()
    local f = braid.go(function()
      local a = inbox:recv()
      local b = inbox:recv()
      a()
      outbox:send((b()))
      return true
    end)
    inbox:send(function() braid_spec_late_global = "mine" end)
    inbox:send(function() return braid_spec_late_global end)
    assert.equal("mine", outbox:recv(10))
    assert.is_true(f:await(10))
    assert.is_nil(rawget(_G, "braid_spec_late_global"))
    local g = braid.go(function() return braid_spec_late_global end)
    assert.is_nil(g:await(10))
  end)

  it("reads the standard library through the task's globals", function()
    local f = braid.go(function()
      return type(print), string.format("%03d", 7), math.floor(math.pi * 100),
        table.concat({ "a", "b" }, ","), type(os.time), type(coroutine.wrap), type(require)
    end)
    assert.same({ "function", "007", 314, "a,b", "function", "function", "function", n = 7 },
      pack(f:await(10)))
  end)
end)

describe("braid.stats", function()
  it("has the documented fields", function()
    braid.go(function() end):await(10)
    local s = braid.stats()
    for _, k in ipairs({ "workers", "tasks", "ready", "blocked", "spawned", "completed", "messages" }) do
      assert.equal("number", type(s[k]), k)
    end
    assert.is_true(s.workers >= 1)
  end)

  it("counts spawned and completed tasks and messages", function()
    local s0 = braid.stats()
    local ch = braid.chan(math.huge)
    local fs = {}
    for i = 1, 10 do fs[i] = braid.go(function(x) ch:send(x); return x end, i) end
    for i = 1, 10 do assert.equal(i, fs[i]:await(10)) end
    local s1 = braid.stats()
    assert.is_true(s1.spawned >= s0.spawned + 10)
    assert.is_true(s1.completed >= s0.completed + 10)
    assert.is_true(s1.messages > s0.messages)
  end)

  it("counts idle polls and wake-ups of parked workers", function()
    local s0 = braid.stats()
    assert.equal("number", type(s0.polls))
    assert.equal("number", type(s0.wakeups))
    for i = 1, 5 do
      braid.sleep(0.01)                 -- the workers park, one of them polling
      -- a wake-up for the spawn; the task's timer ends a poll (its deadline)
      assert.equal(i, braid.go(function(x) braid.sleep(0.005); return x end, i):await(10))
    end
    local s1 = braid.stats()
    assert.is_true(s1.polls > s0.polls, s1.polls .. " <= " .. s0.polls)
    assert.is_true(s1.wakeups > s0.wakeups, s1.wakeups .. " <= " .. s0.wakeups)
  end)

  it("counts live and blocked tasks", function()
    local ch = braid.chan()
    local fs = {}
    for i = 1, 3 do fs[i] = braid.go(function() return ch:recv() end) end
    assert.is_true(wait_until(function()
      local s = braid.stats()
      return s.blocked >= 3 and s.tasks >= 3
    end, 5))
    ch:close()
    for i = 1, 3 do fs[i]:wait(10) end
  end)
end)

describe("braid.tasks", function()
  it("shows a task blocked in recv as 'blocked', waiting on 'recv braid.chan#<id>'", function()
    local ch, idch = braid.chan(), braid.chan(1)
    local f = braid.spawn({ name = "spec-blocked" }, function()
      idch:send((braid.self()))
      return ch:recv()
    end)
    local id = idch:recv(10)
    assert.equal("integer", math.type(id))
    local row
    assert.is_true(wait_until(function()
      row = row_by_id(id)
      return row ~= nil and row.state == "blocked"
    end, 5))
    assert.equal(id, row.id)
    assert.equal("spec-blocked", row.name)
    assert.equal("blocked", row.state)
    assert.equal("recv " .. handle_id(ch), row.waiting_on)
    ch:close()
    f:wait(10)
  end)

  it("shows a sleeping task as 'sleeping'", function()
    local idch = braid.chan(1)
    local f = braid.spawn({ name = "spec-sleeper" }, function()
      idch:send((braid.self()))
      braid.sleep(30)
    end)
    local id = idch:recv(10)
    local row
    assert.is_true(wait_until(function()
      row = row_by_id(id)
      return row ~= nil and row.state == "sleeping"
    end, 5))
    assert.equal("spec-sleeper", row.name)
    assert.equal("sleeping", row.state)
    f:cancel()
    f:wait(10)
  end)

  it("drops a task once it has finished", function()
    local id = braid.go(function() return braid.self() end):await(10)
    assert.is_true(wait_until(function() return row_by_id(id) == nil end, 5))
  end)

  it("returns rows with id, name, state", function()
    local ch = braid.chan()
    local f = braid.go(function() return ch:recv() end)
    settle_on(ch)
    local rows = braid.tasks()
    assert.is_table(rows)
    assert.is_true(#rows >= 1)
    for _, row in ipairs(rows) do
      assert.equal("integer", math.type(row.id))
      assert.truthy(({ ready = true, running = true, blocked = true, sleeping = true })[row.state], row.state)
    end
    ch:close()
    f:wait(10)
  end)
end)

describe("braid.blocking", function()
  -- Under ThreadSanitizer a fork from a multi-threaded process (os.execute)
  -- crashes the child, so those builds block the thread by spinning instead.
  local tsan = os.getenv("BRAID_SANITIZE") == "thread"
  local function block_for(s)
    if not tsan then return os.execute("sleep " .. s) end
    local t0 = os.clock()
    while os.clock() - t0 < s do end
    return true, "exit", 0
  end

  it("runs fn with arguments and resolves with its results", function()
    local f = braid.blocking(function(a, b) return a .. b, #a end, "ab", "cd")
    assert.same({ "abcd", 2, n = 2 }, pack(f:await(10)))
  end)

  it("runs several blocking os.execute jobs", function()
    local fs = {}
    for i = 1, 4 do
      fs[i] = braid.blocking(function(k)
        local ok, how, code = block_for(0.2)
        return k, ok, how, code
      end, i)
    end
    for i = 1, 4 do
      assert.same({ i, true, "exit", 0, n = 4 }, pack(fs[i]:await(30)))
    end
  end)

  it("does not stop tasks from running while jobs block", function()
    local fs = {}
    for i = 1, 4 do fs[i] = braid.blocking(function() block_for(0.3); return "slow" end) end
    assert.equal("quick", braid.go(function() return "quick" end):await(10))
    for i = 1, 4 do assert.equal("slow", fs[i]:await(30)) end
  end)

  it("can be awaited from a task", function()
    local f = braid.go(function()
      return braid.blocking(function() block_for(0.05); return "from blocking" end):await()
    end)
    assert.equal("from blocking", f:await(10))
  end)

  it("rejects with the job's error", function()
    local f = braid.blocking(function() error("blocked boom", 0) end)
    local ok, err = f:wait(10)
    assert.is_false(ok)
    assert.equal("blocked boom", tostring(err):sub(1, #"blocked boom"))
  end)
end)

describe("braid values crossing threads", function()
  it("copies booleans, integers, floats and strings", function()
    for _, via in ipairs({ via_chan, via_task }) do
      assert.equal(true, via(true))
      assert.equal(false, via(false))
      assert.equal("integer", math.type(via(3)))
      assert.equal("float", math.type(via(3.0)))
      assert.equal(math.maxinteger, via(math.maxinteger))
      assert.equal(math.mininteger, via(math.mininteger))
      assert.equal((1 << 53) + 1, via((1 << 53) + 1))
      assert.equal(0.1, via(0.1))
      assert.equal(math.huge, via(math.huge))
      assert.equal(-math.huge, via(-math.huge))
      assert.equal("", via(""))
      assert.equal("hello", via("hello"))
    end
  end)

  it("keeps -0.0 and NaN", function()
    for _, via in ipairs({ via_chan, via_task }) do
      local z = via(-0.0)
      assert.equal("float", math.type(z))
      assert.is_true(is_negative_zero(z))
      local nan = via(0 / 0)
      assert.equal("float", math.type(nan))
      assert.is_true(nan ~= nan)
    end
  end)

  it("keeps the integer/float subtype inside tables", function()
    local t = via_task({ 1, 1.0, -0.0, 2 ^ 53, math.mininteger, [1.5] = "half", [10] = 10.0, f = 7 })
    assert.equal("integer", math.type(t[1]))
    assert.equal("float", math.type(t[2]))
    assert.is_true(is_negative_zero(t[3]))
    assert.equal("float", math.type(t[4]))
    assert.equal(2 ^ 53, t[4])
    assert.equal("integer", math.type(t[5]))
    assert.equal(math.mininteger, t[5])
    assert.equal("half", t[1.5])
    assert.equal("float", math.type(t[10]))
    assert.equal("integer", math.type(t.f))
  end)

  it("copies binary strings byte for byte", function()
    local bytes = {}
    for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
    local s = table.concat(bytes) .. "\0tail\0"
    local big = string.rep("\0\255x", 400000)
    for _, via in ipairs({ via_chan, via_task }) do
      assert.equal(s, via(s))
      assert.equal(big, via(big))
    end
  end)

  it("copies nested tables, keeping cycles and shared references", function()
    local shared = { v = 1 }
    local t = { a = shared, b = shared, list = { shared, { shared } }, [shared] = "as key" }
    t.self = t
    t.list.parent = t
    for _, via in ipairs({ via_chan, via_task }) do
      local r = via(t)
      assert.are_not.equal(t, r)
      assert.equal(r, r.self)
      assert.equal(r, r.list.parent)
      assert.equal(r.a, r.b)
      assert.equal(r.a, r.list[1])
      assert.equal(r.a, r.list[2][1])
      assert.equal(1, r.a.v)
      assert.equal("as key", r[r.a])
      assert.are_not.equal(shared, r.a)
    end
  end)

  it("makes a distinct copy on every transfer", function()
    local t = { 1 }
    local ch = braid.chan(2)
    ch:send(t); ch:send(t)
    local a, b = ch:recv(5), ch:recv(5)
    assert.are_not.equal(a, b)
    a[1] = 99
    assert.equal(1, b[1])
    assert.equal(1, t[1])
  end)

  it("does not copy metatables", function()
    local t = setmetatable({ x = 1 }, { __index = function() return "meta" end })
    local r = via_task(t)
    assert.is_nil(getmetatable(r))
    assert.equal(1, r.x)
    assert.is_nil(r.missing)
  end)

  it("copies a function with its upvalues by value", function()
    local a, b = 10, { x = 2 }
    local function f(y) return a + b.x + y end
    local g = via_chan(f)
    assert.equal(13, g(1))
    assert.equal(13, braid.go(function(h) return h(1) end, f):await(10))
    assert.equal(13, braid.go(function() return f(1) end):await(10))
  end)

  it("gives each copy of a closure its own upvalues", function()
    local n = 0
    local function inc() n = n + 1; return n end
    local copy = via_chan(inc)
    assert.equal(1, copy())
    assert.equal(2, copy())
    assert.equal(1, inc())
    -- The task gets a copy taken now (n == 1): it counts on from there
    -- without touching ours.
    assert.equal(2, braid.go(function() return inc() end):await(10))
    assert.equal(2, inc())
  end)

  it("copies recursive local functions", function()
    local function fib(k) if k < 2 then return k end return fib(k - 1) + fib(k - 2) end
    assert.equal(55, braid.go(function() return fib(10) end):await(10))
  end)

  it("rebinds _ENV of a function to the receiver's globals", function()
    local function uses_globals() spec_env_probe = "set"; return type(print), spec_env_probe end
    assert.same({ "function", "set", n = 2 }, pack(braid.go(uses_globals):await(10)))
    assert.is_nil(rawget(_G, "spec_env_probe"))
  end)

  it("sends the captured braid module by name", function()
    local f = braid.go(function()
      local ch = braid.chan(1)
      ch:send("inner")
      return type(braid.go), ch:recv(), braid.go(function() return 7 end):await()
    end)
    assert.same({ "function", "inner", 7, n = 3 }, pack(f:await(10)))
  end)

  it("sends loaded modules and their C functions by name", function()
    local S, sqrt, p, M = string, math.sqrt, print, math
    local f = braid.go(function(t)
      return t.s.rep("ab", 3), t.sqrt(16.0), t.p == print, t.s == string, S.upper("x"),
        sqrt(81), p == print, M == math, t.fmt("%d", 5)
    end, { s = string, sqrt = math.sqrt, p = print, fmt = string.format })
    assert.same({ "ababab", 4.0, true, true, "X", 9.0, true, true, "5", n = 9 }, pack(f:await(10)))
  end)

  it("sends a module table through a channel as the receiver's module", function()
    local r = via_chan({ string = string, sqrt = math.sqrt })
    assert.equal(string, r.string)
    assert.equal(math.sqrt, r.sqrt)
  end)

  it("keeps references shared between a table and a function's upvalue", function()
    local obj = { n = 1 }
    function obj.get() return obj.n end
    local r = via_chan(obj)
    r.n = 5
    assert.equal(5, r.get())
    assert.equal(1, obj.get())
  end)

  it("keeps a function referenced twice as one function", function()
    local function f() return 1 end
    local r = via_task({ f, f, g = f })
    assert.equal(r[1], r[2])
    assert.equal(r[1], r.g)
    assert.equal(1, r[1]())
  end)

  it("copies deeply nested tables", function()
    local root = {}
    local t = root
    for i = 1, 150 do t.next = { depth = i }; t = t.next end
    local r = via_task(root)
    local depth = 0
    while r.next do r = r.next; depth = r.depth end
    assert.equal(150, depth)
  end)

  it("copies a linked list of 10000 nodes (nesting has no documented limit)", function()
    local list
    for i = 1, 10000 do list = { value = i, next = list } end
    local r = via_chan(list)
    local n, sum = 0, 0
    while r do n = n + 1; sum = sum + r.value; r = r.next end
    assert.equal(10000, n)
    assert.equal(10000 * 10001 // 2, sum)
  end)

  it("copies big tables", function()
    local t = {}
    for i = 1, 100000 do t[i] = i end
    for i = 1, 1000 do t["k" .. i] = { i } end
    local r = via_chan(t)
    assert.equal(100000, #r)
    assert.equal(77777, r[77777])
    assert.equal(500, r.k500[1])
  end)

  it("rebinds _ENV of a function sent back to the main thread to the main globals", function()
    rawset(_G, "spec_main_marker", 7)
    local f = braid.go(function()
      return function() return spec_main_marker end
    end):await(10)
    assert.equal(7, f())
    rawset(_G, "spec_main_marker", nil)
  end)

  it("sends the captured cjson module by name", function()
    local ok, cjson = pcall(require, "cjson")
    if not ok then pending("cjson is not installed") return end
    local encode = cjson.encode
    local f = braid.go(function(t)
      return cjson.encode({ 1, 2 }), encode({ 3 }), t.json.decode("[4]")[1], package.loaded.cjson == cjson
    end, { json = cjson })
    assert.same({ "[1,2]", "[3]", 4, true, n = 4 }, pack(f:await(10)))
  end)

  it("keeps handles sent inside tables working", function()
    local out, done = braid.chan(1), braid.future()
    local f = braid.go(function(t)
      t.out:send(t.n * 2)
      t.done:resolve("ok", t.n)
      return tostring(t.out):match("^braid%.chan#%d+")
    end, { out = out, n = 21, done = done })
    assert.equal(42, out:recv(10))
    assert.same({ "ok", 21, n = 2 }, pack(done:await(10)))
    assert.equal(handle_id(out), f:await(10))
  end)

  it("keeps handles working when returned from a task", function()
    local f = braid.go(function()
      local ch = braid.chan(2)
      ch:send("from task")
      return ch, { nested = ch }
    end)
    local ch, t = f:await(10)
    assert.equal("from task", ch:recv(5))
    t.nested:send("again")
    assert.equal("again", ch:recv(5))
  end)
end)

describe("braid untransferable values", function()
  it("raises 'braid: cannot transfer userdata at args[2].conn' and spawns nothing", function()
    local ran = braid.chan(1)
    local s0 = braid.stats().spawned
    local ok, err = pcall(braid.go, function(c) c:send("ran") end, ran, { conn = io.stdout })
    assert.is_false(ok)
    assert.equal("braid: cannot transfer userdata (FILE*) at args[2].conn: open it inside the task, or pass a braid handle", err)
    braid.sleep(0.1)
    assert.same({ nil, "empty", n = 2 }, pack(ran:try_recv()))
    assert.equal(s0, braid.stats().spawned)
  end)

  it("raises for a task function that captures what cannot travel, and spawns nothing", function()
    local s0 = braid.stats().spawned
    local out = io.stdout
    local ok, err = pcall(braid.go, function() return out end)
    assert.is_false(ok)
    assert.truthy(err:find("braid: cannot transfer userdata (FILE*) at", 1, true), err)
    assert.truthy(err:find("upvalue 'out'", 1, true), err)
    assert.equal(s0, braid.stats().spawned)
    -- The encoder is fine afterwards.
    local n = 41
    assert.equal(42, braid.go(function() return n + 1 end):await(10))
  end)

  it("raises 'braid: cannot transfer thread at value' and sends nothing", function()
    local ch = braid.chan(4)
    ch:send("before")
    local ok, err = pcall(ch.send, ch, coroutine.create(print))
    assert.is_false(ok)
    assert.equal("braid: cannot transfer thread at value: a coroutine stays in the task that made it; send a channel instead", err)
    assert.equal(1, #ch)
    assert.equal(1, ch:stats().sent)
    assert.equal("before", ch:recv(5))
    assert.same({ nil, "empty", n = 2 }, pack(ch:try_recv()))
  end)

  it("names the path inside a sent table", function()
    local ch = braid.chan(4)
    local ok, err = pcall(ch.send, ch, { 1, { conn = io.stdout } })
    assert.is_false(ok)
    assert.equal("braid: cannot transfer userdata (FILE*) at value[2].conn: open it inside the task, or pass a braid handle", err)
    assert.equal(0, #ch)
    ok, err = pcall(ch.try_send, ch, { "ok", "fine", coroutine.create(print) })
    assert.is_false(ok)
    assert.equal("braid: cannot transfer thread at value[3]: a coroutine stays in the task that made it; send a channel instead", err)
    assert.equal(0, #ch)
    assert.equal(0, ch:stats().sent)
  end)

  it("names a captured variable as upvalue 'db'", function()
    local db = io.stdout
    local ok, err = pcall(braid.go, function() return db end)
    assert.is_false(ok)
    assert.equal("braid: cannot transfer userdata (FILE*) at upvalue 'db': open it inside the task, or pass a braid handle", err)
  end)

  it("refuses a foreign C function", function()
    local ch = braid.chan(1)
    local foreign = getmetatable(io.stdout).__gc
    local ok, err = pcall(ch.send, ch, foreign)
    assert.is_false(ok)
    assert.truthy(tostring(err):match("^braid: cannot transfer .*function at value: only"), err)
    assert.equal(0, #ch)
  end)

  it("refuses an untransferable result and rejects the task's future", function()
    local f = braid.go(function() return coroutine.create(print) end)
    local ok, err = f:wait(10)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("braid: cannot transfer thread", 1, true), err)
  end)
end)
