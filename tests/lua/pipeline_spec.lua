-- pipeline_spec.lua: API.md "Channel pipelines" (ch:map/filter/take/batch,
-- braid.merge, tee, pipeline, from, collect).
--
-- Every blocking call on the main thread has a timeout so that a broken
-- runtime fails a test instead of hanging.
local braid = require "braid"

local T = 5          -- seconds: the patience of every blocking call below

local function collect(ch)
  local out, err = braid.collect(ch, T)
  assert(out, "collect timed out")
  return out
end

-- Receives until closed; returns the values and the close reason.
local function drain(ch)
  local out = {}
  while true do
    local v, err = ch:recv(T)
    if v == nil then
      assert.are_not.equal("timeout", err)
      return out, err
    end
    out[#out + 1] = v
  end
end

local function range(n)
  local t = {}
  for i = 1, n do t[i] = i end
  return t
end

-- Waits until pred() holds (or 5 s).
local function eventually(pred)
  local deadline = braid.now() + T
  while braid.now() < deadline do
    if pred() then return true end
    braid.sleep(0.005)
  end
  return pred()
end

describe("braid.from and braid.collect", function()
  it("from gives a closed channel holding the array's values", function()
    local ch = braid.from({ 1, "two", { 3 } })
    assert.is_true(ch:is_closed())
    assert.are.equal(3, #ch)
    assert.are.same({ 1, "two", { 3 } }, collect(ch))
  end)

  it("from of an empty array is an empty closed channel", function()
    assert.are.same({}, collect(braid.from({})))
  end)

  it("collect raises the close error", function()
    local ch = braid.chan(2)
    ch:send(1)
    ch:close("boom")
    assert.has_error(function() braid.collect(ch) end, "boom")
  end)

  it("collect returns nil, 'timeout' when the channel stays open", function()
    local ch = braid.chan(1)
    ch:send(1)
    local out, err = braid.collect(ch, 0.05)
    assert.is_nil(out)
    assert.are.equal("timeout", err)
  end)

  it("raises on bad arguments", function()
    assert.has_error(function() braid.from(42) end,
      "bad argument #1 to 'braid.from' (table expected, got number)")
    assert.has_error(function() braid.collect({}) end,
      "bad argument #1 to 'braid.collect' (braid.chan expected, got table)")
  end)
end)

describe("ch:map", function()
  it("applies fn to every value, in order, and closes with the input", function()
    local out = braid.from(range(100)):map(function(x) return x * 2 end)
    local got = collect(out)
    assert.are.equal(100, #got)
    for i = 1, 100 do assert.are.equal(2 * i, got[i]) end
  end)

  it("skips nil results", function()
    local out = braid.from(range(6)):map(function(x) if x % 3 ~= 0 then return x end end)
    assert.are.same({ 1, 2, 4, 5 }, collect(out))
  end)

  it("passes the input's close error downstream", function()
    local ch = braid.chan(3)
    ch:send(1); ch:send(2)
    ch:close("upstream failed")
    local vals, err = drain(ch:map(function(x) return x + 10 end))
    assert.are.same({ 11, 12 }, vals)
    assert.are.equal("upstream failed", err)
  end)

  it("closes the output with fn's error and stops reading the input", function()
    local inp = braid.chan(10)
    for i = 1, 5 do inp:send(i) end
    local out = inp:map(function(x)
      if x == 3 then error("bad item 3", 0) end
      return x
    end)
    local vals, err = drain(out)
    assert.are.same({ 1, 2 }, vals)
    assert.are.equal("bad item 3", err)
    assert.is_true(eventually(function() return inp:is_closed() end))
    assert.are.equal(2, #inp)          -- 4 and 5 were never read
  end)

  it("closes with the tostring of an error value that cannot travel", function()
    local _, err = drain(braid.from({ 1 }):map(function() error(coroutine.create(print)) end))
    assert.is_truthy(tostring(err):match("^thread: "), tostring(err))
  end)

  it("chains: closing flows through every stage", function()
    local out = braid.from(range(10))
      :map(function(x) return x + 1 end)
      :filter(function(x) return x % 2 == 0 end)
      :map(function(x) return tostring(x) end)
    assert.are.same({ "2", "4", "6", "8", "10" }, collect(out))
  end)

  it("an early-stopping consumer closes its input and every stage upstream ends", function()
    local src = braid.chan()
    local producer = braid.go(function(src)
      local n = 0
      while src:send(n) do n = n + 1 end
      return n
    end, src)
    local doubled = src:map(function(x) return x * 2 end)
    local first = collect(doubled:take(3))
    assert.are.same({ 0, 2, 4 }, first)
    -- take closed `doubled`, map closed `src`, the producer's send failed.
    local ok, n = producer:wait(T)
    assert.is_true(ok)
    assert.is_true(n >= 3)
    assert.is_true(src:is_closed())
  end)

  it("runs in parallel with opts.workers, keeping the order", function()
    local out = braid.from(range(20)):map(function(x)
      braid.sleep(0.001 * (x % 3))
      return x * x
    end, { workers = 4 })
    local got = collect(out)
    for i = 1, 20 do assert.are.equal(i * i, got[i]) end
  end)

  it("on a future: f:map runs fn on its values", function()
    local f = braid.go(function() return 20 end)
    assert.are.equal(21, f:map(function(x) return x + 1 end):await(T))
  end)

  it("raises on a bad function", function()
    assert.has_error(function() braid.chan():map(42) end,
      "bad argument #1 to 'chan:map' (function expected, got number)")
  end)
end)

describe("ch:filter", function()
  it("keeps the values for which pred holds", function()
    local out = braid.from(range(10)):filter(function(x) return x > 7 end)
    assert.are.same({ 8, 9, 10 }, collect(out))
  end)

  it("keeps false values that pass", function()
    local out = braid.from({ false, true, false }):filter(function(x) return x == false end)
    assert.are.same({ false, false }, collect(out))
  end)

  it("closes the output with pred's error", function()
    local vals, err = drain(braid.from({ 1, 2, 3 }):filter(function(x)
      if x == 2 then error({ code = 42 }) end
      return true
    end))
    assert.are.same({ 1 }, vals)
    assert.are.same({ code = 42 }, err)
  end)
end)

describe("ch:take", function()
  it("delivers the first n values, then closes and closes its input", function()
    local inp = braid.from(range(10))
    local out = inp:take(4)
    assert.are.same({ 1, 2, 3, 4 }, collect(out))
    assert.is_true(eventually(function() return inp:is_closed() end))
  end)

  it("closes early when the input closes first", function()
    assert.are.same({ 1, 2 }, collect(braid.from({ 1, 2 }):take(5)))
  end)

  it("take(0) closes at once", function()
    assert.are.same({}, collect(braid.from({ 1 }):take(0)))
  end)

  it("stops a ticker", function()
    local t = braid.ticker(0.005)
    local got = collect(t:take(3))
    assert.are.equal(3, #got)
    assert.are.equal("number", type(got[1]))
    assert.is_true(eventually(function() return t:is_closed() end))
  end)
end)

describe("ch:batch", function()
  it("groups values into arrays of n, with a last partial batch", function()
    assert.are.same({ { 1, 2, 3 }, { 4, 5, 6 }, { 7 } }, collect(braid.from(range(7)):batch(3)))
  end)

  it("delivers a partial batch when the timeout passes", function()
    local inp = braid.chan()
    local out = inp:batch(10, 0.05)
    local gate = braid.chan()
    braid.go(function(inp, gate)
      inp:send(1); inp:send(2)
      gate:recv(T)                       -- 3 only once the partial batch was seen
      inp:send(3)
      inp:close()
    end, inp, gate)
    local t0 = braid.now()
    local first = out:recv(T)
    local waited = braid.now() - t0
    assert.are.same({ 1, 2 }, first)     -- flushed by its timeout, not by more values
    assert.is_true(waited >= 0.04, "waited " .. waited)
    gate:send(true)
    assert.are.same({ 3 }, out:recv(T))
    local v, err = out:recv(T)
    assert.is_nil(v)
    assert.are.equal("closed", err)
  end)

  it("passes a close error after the last batch", function()
    local ch = braid.chan(5)
    ch:send("a")
    ch:close("eof error")
    local vals, err = drain(ch:batch(2))
    assert.are.same({ { "a" } }, vals)
    assert.are.equal("eof error", err)
  end)
end)

describe("braid.merge", function()
  it("fans in every value, keeps each input's order, closes when all closed", function()
    local a, b, c = braid.chan(), braid.chan(), braid.chan()
    for _, spec in ipairs({ { a, "a" }, { b, "b" }, { c, "c" } }) do
      braid.go(function(ch, tag)
        for i = 1, 50 do ch:send(tag .. i) end
        ch:close()
      end, spec[1], spec[2])
    end
    local got = collect(braid.merge({ a, b, c }))
    assert.are.equal(150, #got)
    local next_of = { a = 1, b = 1, c = 1 }
    for _, v in ipairs(got) do
      local tag, i = v:match("^(%a)(%d+)$")
      assert.are.equal(next_of[tag], tonumber(i))
      next_of[tag] = next_of[tag] + 1
    end
  end)

  it("of no channels closes at once", function()
    assert.are.same({}, collect(braid.merge({})))
  end)

  it("closes with an input's close error once all have closed", function()
    local a = braid.chan(1)
    a:send(1)
    a:close("a broke")
    local vals, err = drain(braid.merge({ a, braid.from({ 2 }) }))
    table.sort(vals)
    assert.are.same({ 1, 2 }, vals)
    assert.are.equal("a broke", err)
  end)

  it("closes its inputs when its consumer closes the output", function()
    local a, b = braid.chan(), braid.chan()
    local m = braid.merge({ a, b })
    m:close()
    local f = braid.go(function(a) return a:send(1) end, a)
    local ok, sent = f:wait(T)
    assert.is_true(ok)
    -- either the merge task took the value before noticing, or a was closed
    assert.is_true(eventually(function() return a:is_closed() and b:is_closed() end))
  end)
end)

describe("braid.tee", function()
  it("gives every value to each output", function()
    local x, y, z = braid.tee(braid.from(range(20)), 3)
    assert.are.same(range(20), collect(x))
    assert.are.same(range(20), collect(y))
    assert.are.same(range(20), collect(z))
  end)

  it("paces on the slowest consumer once its buffer is full", function()
    local src = braid.chan()
    local sent = braid.chan(math.huge)
    braid.go(function(src, sent)
      for i = 1, 100 do
        if not src:send(i) then return end
        sent:send(i)
      end
      src:close()
    end, src, sent)
    local fast, slow = braid.tee(src, 2, { buffer = 4 })
    -- slow's buffer holds 4; the 5th value waits for slow, and so does fast
    for i = 1, 5 do assert.are.equal(i, fast:recv(T)) end
    local v, err = fast:recv(0.1)
    assert.is_nil(v)
    assert.are.equal("timeout", err)
    assert.is_true(#sent <= 6, "sent " .. #sent)
    for i = 1, 6 do assert.are.equal(i, slow:recv(T)) end
    assert.are.equal(6, fast:recv(T))
  end)

  it("passes the close error to every output", function()
    local ch = braid.chan(1)
    ch:send("v")
    ch:close("tee err")
    local a, b = braid.tee(ch, 2)
    local va, ea = drain(a)
    local vb, eb = drain(b)
    assert.are.same({ "v" }, va)
    assert.are.same({ "v" }, vb)
    assert.are.equal("tee err", ea)
    assert.are.equal("tee err", eb)
  end)

  it("drops a closed output and closes its input at the next value when all are closed", function()
    local src = braid.chan()
    local a, b = braid.tee(src, 2)
    a:close()
    local producer = braid.go(function(src)
      local i = 0
      while src:send(i) do i = i + 1 end
      return i
    end, src)
    assert.are.equal(0, b:recv(T))
    assert.are.equal(1, b:recv(T))
    b:close()
    local ok = producer:wait(T)
    assert.is_true(ok)
    assert.is_true(src:is_closed())
  end)
end)

describe("braid.pipeline", function()
  it("runs n calls in parallel and keeps the input order", function()
    -- Each call waits to be released: 8 arrive only if 8 run at once, and
    -- no 9th starts while they hold their places.
    local arrive, release = braid.chan(math.huge), braid.chan()
    local out = braid.pipeline(8, function(x)
      arrive:send(x)
      release:recv()
      return x * 10
    end, braid.from(range(16)))
    for _ = 1, 8 do assert.is_not_nil(arrive:recv(T)) end
    braid.sleep(0.05)
    assert.are.equal(0, #arrive)         -- at most n in flight
    release:close()
    local got = collect(out)
    for i = 1, 16 do assert.are.equal(i * 10, got[i]) end
    assert.are.equal(8, #arrive)         -- the other 8 ran after
  end)

  it("keeps the order when later items finish first", function()
    local out = braid.pipeline(4, function(x)
      braid.sleep((10 - x) * 0.005)
      return x
    end, braid.from(range(10)))
    assert.are.same(range(10), collect(out))
  end)

  it("with ordered = false delivers every result", function()
    local out = braid.pipeline(4, function(x)
      braid.sleep((10 - x) * 0.002)
      return x
    end, braid.from(range(10)), { ordered = false })
    local got = collect(out)
    table.sort(got)
    assert.are.same(range(10), got)
  end)

  it("closes the output with fn's error after the results before it", function()
    local inp = braid.from(range(50))
    local out = braid.pipeline(3, function(x)
      if x == 5 then error("item five", 0) end
      return x
    end, inp)
    local vals, err = drain(out)
    assert.are.same({ 1, 2, 3, 4 }, vals)
    assert.are.equal("item five", err)
    assert.is_true(eventually(function() return inp:is_closed() end))
  end)

  it("unordered: fn's error closes the output", function()
    local _, err = drain(braid.pipeline(2, function(x)
      if x == 3 then error("three", 0) end
      return x
    end, braid.from(range(10)), { ordered = false }))
    assert.are.equal("three", err)
  end)

  it("passes the input's close error", function()
    local ch = braid.chan(2)
    ch:send(1)
    ch:close("src err")
    local vals, err = drain(braid.pipeline(2, function(x) return x end, ch))
    assert.are.same({ 1 }, vals)
    assert.are.equal("src err", err)
  end)

  it("nothing hangs when the consumer stops early", function()
    local src = braid.chan()
    local producer = braid.go(function(src)
      local i = 0
      while src:send(i) do i = i + 1 end
      return true
    end, src)
    local out = braid.pipeline(4, function(x) return x end, src)
    assert.are.same({ 0, 1, 2 }, { out:recv(T), out:recv(T), out:recv(T) })
    out:close()
    local ok = producer:wait(T)
    assert.is_true(ok)
  end)

  it("raises on bad arguments", function()
    assert.has_error(function() braid.pipeline(0, print, braid.chan()) end,
      "bad argument #1 to 'braid.pipeline' (positive integer expected, got number)")
    assert.has_error(function() braid.pipeline(2, print, {}) end,
      "bad argument #3 to 'braid.pipeline' (braid.chan expected, got table)")
  end)
end)
