-- memo_spec.lua: API.md "Parallel map and pools": braid.memo.
local braid = require "braid"

local T = 5

describe("braid.memo", function()
  it("get(key) returns fn(key) and caches it", function()
    local runs = braid.chan(math.huge)
    local m = braid.memo(function(k)
      runs:send(k)
      return k * k, "second"
    end)
    local v, s = m:get(7)
    assert.are.equal(49, v)
    assert.are.equal("second", s)
    assert.are.equal(49, m:get(7))
    assert.are.equal(9, m:get(3))
    assert.are.equal(2, #runs)
  end)

  it("runs fn once for 50 concurrent gets of one key; all get the result", function()
    local runs = braid.chan(math.huge)
    local m = braid.memo(function(k)
      runs:send(k)
      braid.sleep(0.05)
      return "value of " .. k
    end)
    local fs = {}
    for i = 1, 50 do
      fs[i] = braid.go(function(m) return m:get("hot") end, m)
    end
    for i = 1, 50 do
      local ok, v = fs[i]:wait(T)
      assert.is_true(ok, v)
      assert.are.equal("value of hot", v)
    end
    assert.are.equal(1, #runs)
    local st = m:stats()
    assert.are.equal(1, st.misses)
    assert.are.equal(49, st.hits)
    assert.are.equal(1, st.size)
  end)

  it("different keys run concurrently", function()
    -- Each run waits to be released: all 10 arrive only if all 10 runs are
    -- in flight at once (one after another, the second would never start).
    local arrive, release = braid.chan(math.huge), braid.chan()
    local m = braid.memo(function(k) arrive:send(k); release:recv(); return k end)
    local fs = {}
    for i = 1, 10 do fs[i] = braid.go(function(m, i) return m:get(i) end, m, i) end
    local seen = {}
    for _ = 1, 10 do
      local k = arrive:recv(T)
      assert.is_not_nil(k)
      seen[k] = true
    end
    for i = 1, 10 do assert.is_true(seen[i]) end
    release:close()                       -- recv returns at once from now on
    for i = 1, 10 do assert.are.equal(i, fs[i]:await(T)) end
  end)

  it("an error reaches every waiter and is not cached", function()
    local runs = braid.chan(math.huge)
    local m = braid.memo(function(k)
      runs:send(k)
      braid.sleep(0.02)
      if #runs == 1 then error("flaky", 0) end
      return "ok"
    end)
    local fs = {}
    for i = 1, 5 do fs[i] = braid.go(function(m) return m:get("k") end, m) end
    for i = 1, 5 do
      local ok, err = fs[i]:wait(T)
      assert.is_false(ok)
      assert.are.equal("flaky", err)
    end
    assert.are.equal("ok", m:get("k"))      -- runs again
    assert.are.equal(2, #runs)
  end)

  it("get raises fn's error", function()
    local m = braid.memo(function() error("no such user", 0) end)
    assert.has_error(function() m:get("u") end, "no such user")
  end)

  it("keeps results opts.ttl seconds after they were ready", function()
    local runs = braid.chan(math.huge)
    local m = braid.memo(function(k)
      runs:send(k)
      return #runs
    end, { ttl = 0.1 })
    assert.are.equal(1, m:get("a"))
    assert.are.equal(1, m:get("a"))
    braid.sleep(0.15)
    assert.are.equal(2, m:get("a"))
    assert.are.equal(2, m:get("a"))
  end)

  it("a running computation never expires (ttl shorter than fn)", function()
    local runs = braid.chan(math.huge)
    local m = braid.memo(function(k)
      runs:send(k)
      braid.sleep(0.1)
      return "done"
    end, { ttl = 0.01 })
    local f1 = braid.go(function(m) return m:get(1) end, m)
    braid.sleep(0.05)
    local f2 = braid.go(function(m) return m:get(1) end, m)
    assert.are.equal("done", f1:await(T))
    assert.are.equal("done", f2:await(T))
    assert.are.equal(1, #runs)
  end)

  it("forget drops a cached result", function()
    local runs = braid.chan(math.huge)
    local m = braid.memo(function(k) runs:send(k) return #runs end)
    assert.are.equal(1, m:get("x"))
    m:forget("x")
    assert.are.equal(2, m:get("x"))
  end)

  it("get(key, timeout) raises 'timeout'", function()
    local m = braid.memo(function() braid.sleep(1) return 1 end)
    assert.has_error(function() m:get("slow", 0.05) end, "timeout")
  end)

  it("tostring gives braid.memo#<id>", function()
    local m = braid.memo(function(k) return k end)
    assert.is_truthy(tostring(m):match("^braid%.memo#%d+$"), tostring(m))
  end)

  it("raises on bad arguments", function()
    assert.has_error(function() braid.memo(1) end,
      "bad argument #1 to 'braid.memo' (function expected, got number)")
    local m = braid.memo(function(k) return k end)
    assert.has_error(function() m:get(nil) end,
      "bad argument #1 to 'memo:get' (a key expected, got nil)")
  end)
end)
