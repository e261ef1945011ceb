-- misuse_spec.lua: misuse raises in one form everywhere (issue 15 "Messages",
-- issue 16 part 4): Lua's own wording with the qualified name of the
-- function, `bad argument #1 to 'braid.sleep' (...)`, `'chan:recv'` for a
-- method (self not counted), `calling 'pool:submit' on bad self (...)`, or
-- a message starting `braid:` where no argument is to blame.
local braid = require "braid"

-- The message of the error f(...) raises (pcall'd directly: no position).
local function err_of(f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok)
  return tostring(err)
end

local function same(want, f, ...)
  assert.equal(want, err_of(f, ...))
end

describe("runtime misuse", function()
  it("names braid.sleep, braid.go, braid.spawn, braid.blocking", function()
    same("bad argument #1 to 'braid.sleep' (seconds must be >= 0)", braid.sleep, -1)
    same("bad argument #1 to 'braid.sleep' (seconds must be >= 0)", braid.sleep, 0 / 0)
    same("bad argument #1 to 'braid.sleep' (number expected, got string)", braid.sleep, "x")
    same("bad argument #1 to 'braid.go' (function expected, got nil)", braid.go, nil)
    same("bad argument #1 to 'braid.go' (function expected, got number)", braid.go, 42)
    same("bad argument #2 to 'braid.spawn' (function expected, got nil)", braid.spawn, {}, nil)
    same("bad argument #1 to 'braid.spawn' (table expected, got number)", braid.spawn, 1, print)
    same("bad argument #1 to 'braid.spawn' (opts.name must be a string)", braid.spawn, { name = 1 }, print)
    same("bad argument #1 to 'braid.blocking' (function expected, got nil)", braid.blocking, nil)
  end)

  it("names braid.config and the option", function()
    same("bad argument #1 to 'braid.config' (table expected, got nil)", braid.config, nil)
    same("bad argument #1 to 'braid.config' (workers must be between 1 and 1024)",
      braid.config, { workers = 0 })
    same("bad argument #1 to 'braid.config' (workers must be an integer)",
      braid.config, { workers = 1.5 })
    same("bad argument #1 to 'braid.config' (preempt_ms must be a number >= 1)",
      braid.config, { preempt_ms = "x" })
    same("bad argument #1 to 'braid.config' (unknown option 'wokers'; the options are workers, "
      .. "preempt_ms, blocking_threads, states, max_threads)", braid.config, { wokers = 2 })
  end)
end)

describe("channel misuse", function()
  it("names the method and counts arguments without self", function()
    local ch = braid.chan(1)
    same("bad argument #1 to 'chan:recv' (timeout must be >= 0)", ch.recv, ch, -1)
    same("bad argument #1 to 'chan:recv' (number expected, got string)", ch.recv, ch, "x")
    same("bad argument #1 to 'chan:recv' (timeout is NaN)", ch.recv, ch, 0 / 0)
    same("bad argument #2 to 'chan:send' (timeout must be >= 0)", ch.send, ch, 1, -1)
    same("bad argument #1 to 'chan:send' (nil is never a channel value: send false or a sentinel)",
      ch.send, ch, nil)
    same("bad argument #1 to 'chan:iter' (timeout must be >= 0)", ch.iter, ch, -1)
  end)

  it("has one rule for capacities: an integer 0..math.maxinteger or math.huge", function()
    local msg = "bad argument #1 to 'braid.chan' (capacity must be an integer from 0 to "
      .. "math.maxinteger, or math.huge)"
    assert.equal(2 ^ 62, braid.chan(2 ^ 62):cap())
    assert.equal(math.maxinteger, braid.chan(math.maxinteger):cap())
    assert.equal(math.huge, braid.chan(math.huge):cap())
    assert.equal(3, braid.chan(3.0):cap())
    same(msg, braid.chan, 2 ^ 63)         -- a float past math.maxinteger
    same(msg, braid.chan, -1)
    same(msg, braid.chan, 1.5)
    same(msg, braid.chan, 0 / 0)
    same(msg, braid.chan, -math.huge)
    same("bad argument #1 to 'braid.chan' (number expected, got string)", braid.chan, "x")
    same("bad argument #2 to 'braid.chan' (policy must be 'block', 'drop' or 'slide', got 'x')",
      braid.chan, 1, "x")
  end)

  it("blames select's options by name", function()
    local ch = braid.chan(1)
    same("bad argument #2 to 'braid.select' (opts.timeout must be a number, got string)",
      braid.select, { ch }, { timeout = "x" })
    same("bad argument #2 to 'braid.select' (opts.timeout must be >= 0)",
      braid.select, { ch }, { timeout = -1 })
    same("bad argument #2 to 'braid.select' (table expected, got number)", braid.select, { ch }, 1)
    same("bad argument #1 to 'braid.select' (table expected, got nil)", braid.select, nil)
    same("bad argument #1 to 'braid.select' (case 1: a channel, a future or {channel, value} expected)",
      braid.select, { 42 })
    same("bad argument #1 to 'braid.after' (seconds must be >= 0)", braid.after, -1)
    same("bad argument #1 to 'braid.ticker' (seconds must be > 0)", braid.ticker, 0)
  end)
end)

describe("future misuse", function()
  it("names future:reject, future:await, future:wait", function()
    local f = braid.future()
    same("bad argument #1 to 'future:reject' (an error value expected, got nil)", f.reject, f, nil)
    same("bad argument #1 to 'future:await' (timeout must be >= 0)", f.await, f, -1)
    same("bad argument #1 to 'future:wait' (number expected, got string)", f.wait, f, "x")
    assert.equal("pending", f:status())      -- none of it settled f
  end)
end)

describe("pattern layer misuse", function()
  it("qualifies functions and methods", function()
    same("bad argument #1 to 'braid.pmap' (table expected, got number)", braid.pmap, 1, print)
    same("bad argument #1 to 'braid.limiter' (table expected, got nil)", braid.limiter)
    local p = braid.pool(1)
    same("bad argument #1 to 'pool:submit' (function expected, got number)", p.submit, p, 42)
    same("calling 'pool:submit' on bad self (braid.pool expected, got table)", p.submit, {}, print)
    p:close()
    same("calling 'chan:take' on bad self (braid.chan expected, got number)",
      braid.chan().take, 1, 2)
    same("bad argument #1 to 'braid.all' (table of futures expected, got number)", braid.all, 1)
  end)

  it("srv:call(nil) raises, as send(nil) does", function()
    local srv = braid.server({ call = function(st, req) return req, st end })
    same("bad argument #1 to 'server:call' (a request expected, got nil)", srv.call, srv, nil)
    assert.equal(7, srv:call(7))
    srv:stop()
  end)
end)

describe("braid.native misuse", function()
  it("raises naming the function when no native has that name", function()
    local err = err_of(function() return braid.native.nosuch() end)
    -- lua5.4 runs this spec: no host registered any native.
    assert.matches("braid: no native function 'nosuch' (the host registered none)", err, 1, true)
  end)
end)
