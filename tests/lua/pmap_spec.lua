-- pmap_spec.lua: API.md "Parallel map and pools": braid.pmap.
local braid = require "braid"

local function range(n)
  local t = {}
  for i = 1, n do t[i] = i end
  return t
end

describe("braid.pmap", function()
  it("returns results[i] = fn(items[i]) in order", function()
    local r = braid.pmap(range(1000), function(x) return x * 2 end)
    assert.are.equal(1000, #r)
    for i = 1, 1000 do assert.are.equal(2 * i, r[i]) end
  end)

  it("returns {} for no items", function()
    assert.are.same({}, braid.pmap({}, function(x) return x end))
  end)

  it("keeps only fn's first value and leaves nil results as holes", function()
    local r = braid.pmap({ 1, 2, 3, 4 }, function(x)
      if x % 2 == 0 then return nil end
      return x, "extra"
    end)
    assert.are.equal(1, r[1])
    assert.is_nil(r[2])
    assert.are.equal(3, r[3])
    assert.is_nil(r[4])
  end)

  it("copies tables both ways", function()
    local items = { { name = "a", n = 1 }, { name = "b", n = 2 } }
    local r = braid.pmap(items, function(t)
      t.n = t.n * 10
      return t
    end)
    assert.are.same({ { name = "a", n = 10 }, { name = "b", n = 20 } }, r)
    assert.are.equal(1, items[1].n)     -- the caller's items are untouched
  end)

  it("calls fn with its upvalues copied", function()
    local factor, names = 3, { "zero", "one", "two" }
    local r = braid.pmap({ 1, 2 }, function(i) return names[i + 1] .. i * factor end)
    assert.are.same({ "one3", "two6" }, r)
  end)

  it("runs items in parallel on several workers", function()
    -- 8 items that each wait to be released, 8 workers: all 8 arrive
    -- only if all 8 run at once.  pmap blocks its caller: it runs in a task.
    local arrive, release = braid.chan(math.huge), braid.chan()
    local f = braid.go(function(items, arrive, release)
      return braid.pmap(items, function(x) arrive:send(x); release:recv(); return x end,
        { workers = 8, chunk = 1 })
    end, range(8), arrive, release)
    local seen = {}
    for _ = 1, 8 do
      local x = arrive:recv(5)
      assert.is_not_nil(x)
      seen[x] = true
    end
    for i = 1, 8 do assert.is_true(seen[i]) end
    release:close()
    assert.are.same(range(8), f:await(5))
  end)

  it("runs on at most opts.workers tasks", function()
    local seen = braid.chan(math.huge)
    braid.pmap(range(50), function(x)
      seen:send((braid.self()))
      return x
    end, { workers = 3 })
    local ids = {}
    local n = 0
    while true do
      local id = seen:try_recv()
      if id == nil then break end
      if not ids[id] then ids[id] = true; n = n + 1 end
    end
    assert.is_true(n >= 1 and n <= 3, "tasks: " .. n)
  end)

  it("deals items in chunks: few messages for many tiny items", function()
    local before = braid.stats().messages
    braid.pmap(range(10000), function(x) return x * 2 end, { workers = 2 })
    local used = braid.stats().messages - before
    assert.is_true(used < 500, "messages: " .. used)
  end)

  it("splits into shrinking chunks that cover every index once", function()
    local chunks = require("braid.pmap").chunks(1000, 4)
    local nextidx = 1
    local prev = math.huge
    for _, c in ipairs(chunks) do
      assert.are.equal(nextidx, c[1])
      assert.is_true(c[2] >= c[1])
      local size = c[2] - c[1] + 1
      assert.is_true(size <= prev)
      prev = size
      nextidx = c[2] + 1
    end
    assert.are.equal(1001, nextidx)
    assert.are.equal(1, chunks[#chunks][2] - chunks[#chunks][1] + 1)
  end)

  it("balances large items: one slow item does not serialise the rest", function()
    -- 41 items, 2 workers.  Item 1 does not finish until every item
    -- outside its own chunk is done: the other worker must take all the
    -- remaining chunks while item 1's worker is busy (chunks are taken as
    -- workers free up, not dealt half each; the first chunk is small).
    local chunks = require("braid.pmap").chunks(41, 2)
    local first_last = chunks[1][2]
    assert.is_true(first_last < 20, "first chunk 1.." .. first_last)
    local done = braid.chan(math.huge)
    local f = braid.go(function(items, done, others)
      return braid.pmap(items, function(x)
        if x == 1 then
          for _ = 1, others do assert(done:recv(5), "the other items did not go on") end
        else
          done:send(x)
        end
        return x
      end, { workers = 2 })
    end, range(41), done, 41 - first_last)
    assert.are.same(range(41), f:await(10))
  end)

  it("raises the first error as 'braid.pmap: item <i>: <error>'", function()
    assert.has_error(function()
      braid.pmap(range(100), function(x)
        if x == 37 then error("bad value", 0) end
        return x
      end)
    end, "braid.pmap: item 37: bad value")
  end)

  it("includes the position of a plain error()", function()
    local ok, err = pcall(braid.pmap, { 1 }, function(x) error("oops") end)
    assert.is_false(ok)
    assert.is_truthy(err:match("^braid%.pmap: item 1: .*pmap_spec%.lua:%d+: oops$"), err)
  end)

  it("shows a non-string error with tostring", function()
    local ok, err = pcall(braid.pmap, { 1, 2 }, function(x)
      if x == 2 then error(42) end
      return x
    end, { workers = 1 })
    assert.is_false(ok)
    assert.are.equal("braid.pmap: item 2: 42", err)
  end)

  it("reports an error value that cannot travel by its tostring", function()
    local ok, err = pcall(braid.pmap, { 1 }, function() error(coroutine.create(print)) end)
    assert.is_false(ok)
    assert.is_truthy(err:match("^braid%.pmap: item 1: thread: "), err)
  end)

  it("cancels the other workers after the first error", function()
    local progress = braid.chan(math.huge)
    local ok, err = pcall(braid.pmap, range(4), function(x)
      if x == 1 then error("first fails", 0) end
      for i = 1, 100 do
        braid.sleep(0.01)
        progress:send(x)
      end
      return x
    end, { workers = 4, chunk = 1 })
    assert.is_false(ok)
    assert.are.equal("braid.pmap: item 1: first fails", err)
    braid.sleep(0.1)
    local n = #progress
    braid.sleep(0.1)
    assert.are.equal(n, #progress)      -- nobody is still working
    assert.is_true(n < 300)
  end)

  it("stops computing workers at a preemption point when cancelled", function()
    local t0 = braid.now()
    local ok, err = pcall(braid.pmap, { 1, 2 }, function(x)
      if x == 1 then braid.sleep(0.05); error("stop", 0) end
      -- never blocks; bounded so that a runtime bug cannot eat a core
      -- for the rest of the run
      local stop = braid.now() + 3
      while braid.now() < stop do end
      return "spun to the end"
    end, { workers = 2, chunk = 1 })
    assert.is_false(ok)
    assert.are.equal("braid.pmap: item 1: stop", err)
    local deadline = braid.now() + 1.5
    while braid.stats().running > 0 and braid.now() < deadline do braid.sleep(0.01) end
    assert.are.equal(0, braid.stats().running)
  end)

  it("raises when a result cannot travel, naming its item", function()
    local ok, err = pcall(braid.pmap, { 1, 2, 3 }, function(x)
      if x == 3 then return coroutine.create(print) end
      return x
    end, { workers = 1 })
    assert.is_false(ok)
    assert.is_truthy(err:match("^braid%.pmap: item 3: braid: cannot transfer thread"), err)
  end)

  it("works inside a task", function()
    local f = braid.go(function()
      return braid.pmap({ 1, 2, 3 }, function(x) return x + 1 end)
    end)
    assert.are.same({ 2, 3, 4 }, f:await(5))
  end)

  it("nests", function()
    local r = braid.pmap({ 1, 2 }, function(x)
      local inner = braid.pmap({ x, x }, function(y) return y * 10 end)
      return inner[1] + inner[2]
    end)
    assert.are.same({ 20, 40 }, r)
  end)

  it("honours items.n", function()
    local r = braid.pmap({ n = 3, 1, nil, 3 }, function(x) return x == nil and "nil" or x end)
    assert.are.same({ 1, "nil", 3 }, r)
  end)

  it("raises on bad arguments", function()
    assert.has_error(function() braid.pmap(1, print) end,
      "bad argument #1 to 'braid.pmap' (table expected, got number)")
    assert.has_error(function() braid.pmap({}, 1) end,
      "bad argument #2 to 'braid.pmap' (function expected, got number)")
    assert.has_error(function() braid.pmap({ 1 }, print, { workers = 0 }) end,
      "bad argument #3 to 'braid.pmap' (opts.workers must be a positive integer)")
  end)
end)
