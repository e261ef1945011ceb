-- newuser_spec.lua: issue 15, what a new user trips over.
local braid = require "braid"

describe("ch:iter", function()
  it("raises the close error after draining the buffer", function()
    local ch = braid.chan(4)
    ch:send(1); ch:send(2)
    ch:close("upstream died")
    local got = {}
    local ok, err = pcall(function()
      for v in ch:iter() do got[#got + 1] = v end
    end)
    assert.is_false(ok)
    assert.are.equal("upstream died", err)
    assert.are.same({ 1, 2 }, got)
  end)

  it("ends quietly after a plain close", function()
    local ch = braid.chan(4)
    ch:send(1); ch:send(2)
    ch:close()
    local got = {}
    for v in ch:iter() do got[#got + 1] = v end
    assert.are.same({ 1, 2 }, got)
  end)

  it("raises a pipeline stage's error at the end of the loop", function()
    local out = braid.from({ 1, 2, 3 }):map(function(x)
      if x == 3 then error("boom", 0) end
      return x
    end)
    local ok, err = pcall(function()
      for _ in out:iter(5) do end
    end)
    assert.is_false(ok)
    assert.matches("boom", tostring(err))
  end)

  it("raises the close error inside a task too", function()
    local ch = braid.chan(1)
    ch:close("bad input")
    local f = braid.go(function()
      local ok, err = pcall(function() for _ in ch:iter() do end end)
      return ok, err
    end)
    local ok, err = f:await(5)
    assert.is_false(ok)
    assert.are.equal("bad input", err)
  end)
end)

describe("tostring(broker)", function()
  it("stops counting a subscription closed with ch:close()", function()
    local b = braid.broker()
    local s1 = b:subscribe("a")
    b:subscribe("b")
    assert.matches("2 subscriptions", tostring(b))
    s1:close()
    assert.matches("1 subscriptions", tostring(b))
  end)

  it("stops counting a subscription that a :map view closed", function()
    local b = braid.broker()
    local s = b:subscribe("a")
    local view = s:map(function(x) return x end)
    assert.matches("1 subscriptions", tostring(b))
    s:close()
    assert.is_nil((view:recv(5)))
    assert.matches("0 subscriptions", tostring(b))
  end)
end)
