-- handles_spec.lua: API.md "Conventions": every handle is a userdata that
-- can be sent over channels, passed to a task or captured, all copies
-- referring to the same object; tostring gives braid.<kind>#<id>.
local braid = require "braid"

local T = 10

local makers = {
  pool = function() return braid.pool(1, function(i) return i end) end,
  limiter = function() return braid.limiter({ rate = 100, per = 1 }) end,
  memo = function() return braid.memo(function(k) return k end) end,
  group = function() return braid.group() end,
  broker = function() return braid.broker() end,
  server = function()
    return braid.server({ init = function() return 0 end, call = function(s, r) return r, s end })
  end,
}

describe("braid handles", function()
  for kind, make in pairs(makers) do
    it(kind .. " is a userdata whose tostring is braid." .. kind .. "#<id>", function()
      local h = make()
      assert.equal("userdata", type(h))
      assert.truthy(tostring(h):match("^braid%." .. kind .. "#%d+"), tostring(h))
    end)

    it(kind .. " sent to a task is the same object there", function()
      local h = make()
      local ch = braid.chan(1)
      ch:send(h)
      local back = ch:recv(T)
      assert.is_true(back == h)
      local f = braid.go(function(x) return type(x), tostring(x), x == h end, h)
      local ty, str, same = f:await(T)
      assert.equal("userdata", ty)
      assert.equal(tostring(h):match("^[^ ]+"), str:match("^[^ ]+"))
      assert.is_true(same)
    end)

    it(kind .. " is read-only", function()
      local h = make()
      local ok, err = pcall(function() h.field = 1 end)
      assert.is_false(ok)
      assert.truthy(tostring(err):find("braid: a braid." .. kind .. " handle cannot be modified", 1, true), err)
    end)
  end

  it("works through a copy: a pool captured by a task runs the task's jobs", function()
    local p = braid.pool(2, function(i) return { token = i } end)
    local f = braid.go(function()
      local seen = {}
      for i = 1, 4 do seen[#seen + 1] = p:submit(function(ctx, x) return x * 10 end, i):await() end
      return table.concat(seen, ",")
    end)
    assert.equal("10,20,30,40", f:await(T))
    p:close()
  end)
end)
