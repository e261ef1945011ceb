-- limiter_spec.lua: API.md "Parallel map and pools": braid.limiter.
local braid = require "braid"

local T = 5

describe("braid.limiter", function()
  it("starts full: burst tokens at once, then the next waits", function()
    local lim = braid.limiter({ rate = 10, per = 1, burst = 3 })
    assert.is_true(lim:try_take())
    assert.is_true(lim:try_take(2))
    local ok, err = lim:try_take()
    assert.is_false(ok)
    assert.are.equal("empty", err)
  end)

  it("take waits for the next token at the rate", function()
    local lim = braid.limiter({ rate = 20, per = 1, burst = 1 })
    assert.is_true(lim:take())
    local t0 = braid.now()
    assert.is_true(lim:take())
    local waited = braid.now() - t0
    assert.is_true(waited >= 0.035, "waited " .. waited)   -- never early (no upper bound:
    assert.are.equal(2, lim:stats().taken)                 -- loaded machines are slow)
  end)

  it("keeps the rate over many takes", function()
    local lim = braid.limiter({ rate = 100, per = 1, burst = 1 })
    lim:take()
    local t0 = braid.now()
    for _ = 1, 30 do lim:take() end
    local took = braid.now() - t0
    -- 30 tokens at 100/s: at least 0.3 s (minus one tick)
    assert.is_true(took >= 0.27, "took " .. took)
    assert.are.equal(31, lim:stats().taken)
  end)

  it("take(n) takes n tokens; n may exceed the burst", function()
    local lim = braid.limiter({ rate = 50, per = 1, burst = 2 })
    local t0 = braid.now()
    assert.is_true(lim:take(5))
    local took = braid.now() - t0
    -- 2 at once, then 3 at 50/s: at least 0.06 s (minus one tick)
    assert.is_true(took >= 0.05, "took " .. took)
    local st = lim:stats()
    assert.are.equal(5, st.taken)
    assert.is_true(st.available < 1)
  end)

  it("take returns false, 'timeout' and gives the tokens back", function()
    local lim = braid.limiter({ rate = 1, per = 10, burst = 2 })
    local ok, err = lim:take(3, 0.05)
    assert.is_false(ok)
    assert.are.equal("timeout", err)
    assert.is_true(lim:try_take(2))       -- the 2 it had were returned
    ok, err = lim:take(1, 0)
    assert.is_false(ok)
    assert.are.equal("timeout", err)
  end)

  it("try_take(n) takes all or nothing", function()
    local lim = braid.limiter({ rate = 1, per = 10, burst = 3 })
    local ok, err = lim:try_take(4)
    assert.is_false(ok)
    assert.are.equal("empty", err)
    assert.is_true(lim:try_take(3))
  end)

  it("does not accrue beyond the burst while full", function()
    local lim = braid.limiter({ rate = 100, per = 1, burst = 2 })
    braid.sleep(0.1)                     -- 10 tokens' worth of time
    assert.is_true(lim:stats().available <= 2)
    assert.is_true(lim:try_take(2))
    assert.is_false((lim:try_take(1)))
    -- after the bucket stopped being full, tokens come again at the rate
    assert.is_true(lim:take(1, T))
    assert.are.equal(3, lim:stats().taken)
  end)

  it("is shared by every task holding it, and take suspends (never spins)", function()
    local lim = braid.limiter({ rate = 50, per = 1, burst = 5 })
    local t0 = braid.now()
    local fs = {}
    for i = 1, 4 do
      fs[i] = braid.go(function(lim)
        for _ = 1, 5 do lim:take() end
        return true
      end, lim)
    end
    -- While they wait, the takers are blocked in recv, not running.
    braid.sleep(0.05)
    local running = 0
    for _, row in ipairs(braid.tasks()) do
      if row.state == "running" then running = running + 1 end
    end
    assert.are.equal(0, running)
    for i = 1, 4 do assert.is_true(fs[i]:await(T)) end
    local took = braid.now() - t0
    -- 20 tokens: 5 at once, 15 at 50/s = at least 0.3 s, whoever takes them
    assert.is_true(took >= 0.27, "took " .. took)
    assert.are.equal(20, lim:stats().taken)
  end)

  it("tostring and stats", function()
    local lim = braid.limiter({ rate = 5, per = 2, burst = 4 })
    assert.is_truthy(tostring(lim):match("^braid%.limiter#%d+ %(5 per 2s, 4/4 available%)$"), tostring(lim))
    lim:take(3)
    local st = lim:stats()
    assert.are.equal(5, st.rate)
    assert.are.equal(2, st.per)
    assert.are.equal(4, st.burst)
    assert.are.equal(1, st.available)
    assert.are.equal(3, st.taken)
  end)

  it("burst defaults to the rate", function()
    local lim = braid.limiter({ rate = 3, per = 60 })
    assert.is_true(lim:try_take(3))
    assert.is_false((lim:try_take()))
  end)

  it("works when passed through a channel", function()
    local lim = braid.limiter({ rate = 1, per = 60, burst = 2 })
    local ch = braid.chan(1)
    ch:send(lim)
    local copy = ch:recv()
    assert.is_true(copy:try_take())
    assert.is_true(lim:try_take())
    assert.is_false((copy:try_take()))   -- one bucket
    assert.are.equal(tostring(lim):match("^braid%.limiter#%d+"), tostring(copy):match("^braid%.limiter#%d+"))
  end)

  it("raises on bad arguments", function()
    assert.has_error(function() braid.limiter() end,
      "bad argument #1 to 'braid.limiter' (table expected, got nil)")
    assert.has_error(function() braid.limiter({ rate = 0 }) end,
      "bad argument #1 to 'braid.limiter' (opts.rate must be a number > 0)")
    local lim = braid.limiter({ rate = 1 })
    assert.has_error(function() lim:take(-1) end,
      "bad argument #1 to 'limiter:take' (non-negative integer expected, got number)")
  end)
end)
