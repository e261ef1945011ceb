-- pool_spec.lua: API.md "Parallel map and pools": braid.pool.
local braid = require "braid"

local T = 5

local function range(n)
  local t = {}
  for i = 1, n do t[i] = i end
  return t
end

local function eventually(pred)
  local deadline = braid.now() + T
  while braid.now() < deadline do
    if pred() then return true end
    braid.sleep(0.005)
  end
  return pred()
end

describe("braid.pool", function()
  it("runs fn(ctx, ...) on a worker and returns a future of its values", function()
    local p = braid.pool(2, function(i) return { token = "tok" .. i } end)
    local f = p:submit(function(ctx, a, b) return ctx.token:sub(1, 3), a + b end, 2, 3)
    local ok, tok, sum = f:wait(T)
    assert.is_true(ok)
    assert.are.equal("tok", tok)
    assert.are.equal(5, sum)
    assert.is_true(p:close(T))
  end)

  it("calls init(i) once per worker and keeps each context for the pool's life", function()
    local inits = braid.chan(math.huge)
    local p = braid.pool(4, function(i)
      inits:send(i)
      return { id = i, uses = 0 }
    end)
    -- The context is the worker's own table: mutations persist across jobs.
    local fs = {}
    for k = 1, 40 do
      fs[k] = p:submit(function(ctx)
        ctx.uses = ctx.uses + 1
        braid.sleep(0.001)
        return ctx.id, ctx.uses
      end)
    end
    local max_uses = {}
    for k = 1, 40 do
      local ok, id, uses = fs[k]:wait(T)
      assert.is_true(ok)
      max_uses[id] = math.max(max_uses[id] or 0, uses)
    end
    local total = 0
    for _, u in pairs(max_uses) do total = total + u end
    assert.are.equal(40, total)               -- every job counted in its worker's ctx
    local seen = {}
    while true do
      local i = inits:try_recv()
      if i == nil then break end
      assert.is_nil(seen[i])
      seen[i] = true
    end
    assert.are.same({ true, true, true, true }, seen)
    p:close(T)
  end)

  it("bounds concurrency to n workers", function()
    local active = braid.chan(math.huge)
    local p = braid.pool(3, function(i) return i end)
    -- Each job reports +1 at its start and -1 at its end.
    local fs = {}
    for k = 1, 12 do
      fs[k] = p:submit(function(ctx, active)
        active:send(1)
        braid.sleep(0.01)
        active:send(-1)
      end, active)
    end
    for k = 1, 12 do assert.is_true((fs[k]:wait(T))) end
    local cur, peak = 0, 0
    while true do
      local d = active:try_recv()
      if d == nil then break end
      cur = cur + d
      peak = math.max(peak, cur)
    end
    assert.are.equal(0, cur)
    assert.is_true(peak <= 3, "peak " .. peak)
    assert.is_true(peak >= 2, "peak " .. peak)
    p:close(T)
  end)

  it("a job's error rejects its future and the worker keeps its context", function()
    local p = braid.pool(1, function() return { n = 0 } end)
    local f1 = p:submit(function(ctx) ctx.n = ctx.n + 1; error("job failed", 0) end)
    local ok, err = f1:wait(T)
    assert.is_false(ok)
    assert.are.equal("job failed", err)
    local ok2, n = p:submit(function(ctx) ctx.n = ctx.n + 1; return ctx.n end):wait(T)
    assert.is_true(ok2)
    assert.are.equal(2, n)
    p:close(T)
  end)

  it("has a bounded queue: submit blocks when it is full (backpressure)", function()
    local gate = braid.chan()
    local p = braid.pool(1, nil, { queue = 2 })
    p:submit(function(_, gate) gate:recv() end, gate)     -- occupies the worker
    assert.is_true(eventually(function() return p:stats().running == 1 end))
    p:submit(function() end)
    p:submit(function() end)                               -- queue full now
    local blocked = braid.go(function(p) p:submit(function() end); return "submitted" end, p)
    local ok, err = blocked:wait(0.1)
    assert.is_false(ok)
    assert.are.equal("timeout", err)
    gate:send(true)                                        -- let the worker go on
    local ok2, v = blocked:wait(T)
    assert.is_true(ok2)
    assert.are.equal("submitted", v)
    p:close(T)
  end)

  it("map returns fn(ctx, item) for each item, in order", function()
    local p = braid.pool(3, function(i) return 100 * i end)
    local r = p:map(range(50), function(ctx, x) return x * 2 end)
    assert.are.equal(50, #r)
    for i = 1, 50 do assert.are.equal(2 * i, r[i]) end
    -- every context was one of the workers'
    local ctxs = p:map(range(30), function(ctx) braid.sleep(0.001) return ctx end)
    for i = 1, 30 do
      assert.is_true(ctxs[i] == 100 or ctxs[i] == 200 or ctxs[i] == 300)
    end
    p:close(T)
  end)

  it("map raises the first failing item as 'braid.pool: item <i>: <error>'", function()
    local p = braid.pool(2)
    assert.has_error(function()
      p:map(range(20), function(_, x)
        if x == 13 then error("unlucky", 0) end
        return x
      end)
    end, "braid.pool: item 13: unlucky")
    -- the pool still works
    assert.are.same({ 1, 2 }, p:map({ 1, 2 }, function(_, x) return x end))
    p:close(T)
  end)

  it("close drains the queue, then runs terminate(ctx) in each worker", function()
    local log = braid.chan(math.huge)
    local p = braid.pool(2, function(i) return "ctx" .. i end, {
      terminate = function(ctx) log:send("terminate " .. ctx) end,
    })
    local fs = {}
    for k = 1, 10 do
      fs[k] = p:submit(function(ctx, k, log)
        braid.sleep(0.005)
        log:send("job " .. k)
        return k
      end, k, log)
    end
    assert.is_true(p:close(T))
    for k = 1, 10 do
      local ok, v = fs[k]:wait(0)
      assert.is_true(ok)
      assert.are.equal(k, v)
    end
    local jobs, terms, jobs_before_term = 0, {}, nil
    while true do
      local line = log:try_recv()
      if line == nil then break end
      if line:match("^job") then
        jobs = jobs + 1
      else
        terms[#terms + 1] = line
        jobs_before_term = jobs_before_term or jobs
      end
    end
    assert.are.equal(10, jobs)
    table.sort(terms)
    assert.are.same({ "terminate ctx1", "terminate ctx2" }, terms)
    -- a worker terminates once the queue is drained: only the other
    -- worker's last job may still be running then
    assert.is_true(jobs_before_term >= 9, "jobs before terminate: " .. jobs_before_term)
  end)

  it("submit after close raises 'braid.pool: closed'", function()
    local p = braid.pool(1)
    assert.is_true(p:close(T))
    assert.has_error(function() p:submit(function() end) end, "braid.pool: closed")
    assert.is_true(p:close(T))                 -- idempotent
  end)

  it("close(timeout) returns false, 'timeout' and cancels stuck workers", function()
    local p = braid.pool(1)
    local f = p:submit(function() braid.sleep(30) end)
    assert.is_true(eventually(function() return p:stats().running == 1 end))
    local ok, err = p:close(0.05)
    assert.is_false(ok)
    assert.are.equal("timeout", err)
    -- the job's task was cancelled at its sleep: its future settles
    local ok2, err2 = f:wait(T)
    assert.is_false(ok2)
    assert.are.equal("cancelled", err2)
  end)

  it("a failing init breaks the pool: queued and later submits fail with its error", function()
    local gate = braid.chan()
    local p = braid.pool(1, function() gate:recv(); error("no token", 0) end)
    local f = p:submit(function() return 1 end)
    gate:send(true)
    local ok, err = f:wait(T)
    assert.is_false(ok)
    assert.are.equal("no token", err)
    assert.has_error(function() p:submit(function() end) end, "no token")
  end)

  it("skips a job whose future was cancelled before it started", function()
    local gate = braid.chan()
    local ran = braid.chan(math.huge)
    local p = braid.pool(1)
    p:submit(function(_, gate) gate:recv() end, gate)
    local f = p:submit(function(_, ran) ran:send(true) end, ran)
    f:cancel()
    gate:send(true)
    assert.is_true(p:close(T))
    assert.are.equal(0, #ran)
    assert.are.equal("cancelled", f:status())
  end)

  it("stats counts submitted, queued, running, completed and failed", function()
    local gate = braid.chan()
    local p = braid.pool(2)
    p:submit(function() end):wait(T)
    p:submit(function() error("x") end):wait(T)
    local g1 = p:submit(function(_, gate) gate:recv() end, gate)
    local g2 = p:submit(function(_, gate) gate:recv() end, gate)
    p:submit(function() end)
    assert.is_true(eventually(function() return p:stats().running == 2 end))
    local st = p:stats()
    assert.are.equal(2, st.workers)
    assert.are.equal(5, st.submitted)
    assert.are.equal(1, st.queued)
    assert.are.equal(2, st.running)
    assert.are.equal(1, st.completed)
    assert.are.equal(1, st.failed)
    assert.is_false(st.closed)
    gate:send(true); gate:send(true)
    assert.is_true(p:close(T))
    st = p:stats()
    assert.are.equal(0, st.queued)
    assert.are.equal(0, st.running)
    assert.are.equal(4, st.completed)
    assert.is_true(st.closed)
  end)

  it("tostring gives braid.pool#<id> and a short state", function()
    local p = braid.pool(3)
    assert.is_truthy(tostring(p):match("^braid%.pool#%d+ %(3 workers, 0 queued%)$"), tostring(p))
    p:close(T)
    assert.is_truthy(tostring(p):match("^braid%.pool#%d+ %(closed%)$"), tostring(p))
  end)

  it("works when passed to a task, and the copy is the same pool", function()
    local p = braid.pool(2, function(i) return "w" .. i end)
    local f = braid.go(function(p)
      local ctx = p:submit(function(ctx) return ctx end):await()
      local r = p:map({ 1, 2, 3 }, function(_, x) return x * x end)
      return ctx, r, tostring(p), p:stats().submitted
    end, p)
    local ok, ctx, r, s, submitted = f:wait(T)
    assert.is_true(ok, ctx)
    assert.is_truthy(ctx == "w1" or ctx == "w2")
    assert.are.same({ 1, 4, 9 }, r)
    assert.are.equal(tostring(p):match("^braid%.pool#%d+"), s:match("^braid%.pool#%d+"))
    assert.is_true(p:stats().submitted >= 2)  -- the task's submits went to this pool
    assert.is_true(submitted >= 2)
    -- and captured as an upvalue, or sent over a channel
    local ch = braid.chan(1)
    ch:send(p)
    local copy = ch:recv(T)
    assert.are.equal("w", copy:submit(function(ctx) return ctx:sub(1, 1) end):await(T))
    assert.are.equal(tostring(p):match("^braid%.pool#%d+"), tostring(copy):match("^braid%.pool#%d+"))
    p:close(T)
  end)

  it("raises on bad arguments", function()
    assert.has_error(function() braid.pool(0) end,
      "bad argument #1 to 'braid.pool' (positive integer expected, got number)")
    assert.has_error(function() braid.pool(1, 42) end,
      "bad argument #2 to 'braid.pool' (function expected, got number)")
    local p = braid.pool(1)
    assert.has_error(function() p:submit(42) end,
      "bad argument #1 to 'pool:submit' (function expected, got number)")
    assert.has_error(function() p.submit({}, print) end,
      "calling 'pool:submit' on bad self (braid.pool expected, got table)")
    p:close(T)
  end)
end)
