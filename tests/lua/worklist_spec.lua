-- worklist_spec.lua: API.md "Parallel map and pools": braid.worklist.
local braid = require "braid"

local function sorted(t)
  table.sort(t)
  return t
end

describe("braid.worklist", function()
  it("returns fn's results for the seeds, in seed order", function()
    local r = braid.worklist({ 3, 1, 2 }, function(x) return x * 10 end)
    assert.are.same({ 30, 10, 20 }, r)
  end)

  it("returns {} for no seeds", function()
    assert.are.same({}, braid.worklist({}, function() error("never") end))
  end)

  it("drops nil results", function()
    local r = braid.worklist({ 1, 2, 3, 4 }, function(x) if x % 2 == 0 then return x end end)
    assert.are.same({ 2, 4 }, r)
  end)

  it("processes pushed items until nothing is queued or running (pagination)", function()
    -- 5 feeds of 7 pages each: fn gets a page and pushes the next.
    local seeds = {}
    for f = 1, 5 do seeds[f] = { feed = f, page = 1 } end
    local r = braid.worklist(seeds, function(item, push)
      braid.sleep(0.001)
      if item.page < 7 then push({ feed = item.feed, page = item.page + 1 }) end
      return item.feed * 100 + item.page
    end, { workers = 4 })
    assert.are.equal(35, #r)
    local expect = {}
    for f = 1, 5 do for p = 1, 7 do expect[#expect + 1] = f * 100 + p end end
    assert.are.same(expect, sorted(r))
  end)

  it("dedupes items by opts.key, seeds included (a crawl with cycles)", function()
    -- A graph with cycles: node n links to (2n) % 50 and (3n) % 50.
    local visits = braid.chan(math.huge)
    local r = braid.worklist({ 1, 1, 2 }, function(n, push, extra)
      visits:send(n)
      push((2 * n) % 50)
      push((3 * n) % 50)
      return n
    end, { key = function(n) return n end, workers = 3 })
    -- the nodes reachable from 1 and 2, computed sequentially
    local seen, order = {}, { 1, 2 }
    seen[1], seen[2] = true, true
    local i = 1
    while i <= #order do
      local n = order[i]
      for _, m in ipairs({ (2 * n) % 50, (3 * n) % 50 }) do
        if not seen[m] then seen[m] = true; order[#order + 1] = m end
      end
      i = i + 1
    end
    assert.are.same(sorted(order), sorted(r))
    assert.are.equal(#order, #visits)     -- each node processed exactly once
  end)

  it("completes exactly even when the last item pushes late", function()
    local r = braid.worklist({ 0 }, function(n, push)
      braid.sleep(0.02)                   -- the only item is running a long time
      if n < 3 then push(n + 1) end
      return n
    end, { workers = 2 })
    assert.are.same({ 0, 1, 2, 3 }, r)
  end)

  it("runs in parallel up to opts.workers", function()
    -- 8 items that wait to be released, 8 workers: all 8 arrive only if
    -- all run at once.  worklist blocks its caller: it runs in a task.
    local seeds = {}
    for i = 1, 8 do seeds[i] = i end
    local arrive, release = braid.chan(math.huge), braid.chan()
    local f = braid.go(function(seeds, arrive, release)
      return braid.worklist(seeds, function(x) arrive:send(x); release:recv(); return x end,
        { workers = 8 })
    end, seeds, arrive, release)
    for _ = 1, 8 do assert.is_not_nil(arrive:recv(5)) end
    release:close()
    assert.are.same(seeds, sorted(f:await(5)))
  end)

  it("raises the first error as 'braid.worklist: <error>' and cancels the rest", function()
    local progress = braid.chan(math.huge)
    local ok, err = pcall(braid.worklist, { 1, 2, 3 }, function(x, push)
      if x == 1 then braid.sleep(0.02); error("page 1 failed", 0) end
      for _ = 1, 100 do braid.sleep(0.005); progress:send(x) end
    end, { workers = 3 })
    assert.is_false(ok)
    assert.are.equal("braid.worklist: page 1 failed", err)
    braid.sleep(0.05)
    local n = #progress
    braid.sleep(0.05)
    assert.are.equal(n, #progress)
  end)

  it("push(nil) raises in fn", function()
    local ok, err = pcall(braid.worklist, { 1 }, function(x, push) push(nil) end)
    assert.is_false(ok)
    assert.is_truthy(err:find("bad argument #1 to 'push'", 1, true), err)
  end)

  it("works inside a task", function()
    local f = braid.go(function()
      return braid.worklist({ 1 }, function(x, push)
        if x < 5 then push(x + 1) end
        return x
      end)
    end)
    assert.are.same({ 1, 2, 3, 4, 5 }, f:await(5))
  end)

  it("raises on bad arguments", function()
    assert.has_error(function() braid.worklist(1, print) end,
      "bad argument #1 to 'braid.worklist' (table expected, got number)")
    assert.has_error(function() braid.worklist({}, print, { key = 1 }) end,
      "bad argument #3 to 'braid.worklist' (function expected, got number)")
  end)
end)
