-- cancel_spec.lua -- issue 16's reproductions: a value is never lost nor
-- delivered behind a "cancelled" send when a cancel races a hand-off, and
-- exit does not hang on a task that swallows its cancellation.
local braid = require "braid"

local function run_script(src)
  local path = os.tmpname()
  local fh = assert(io.open(path, "w"))
  fh:write(src)
  fh:close()
  local p = assert(io.popen(("LUA_CPATH=%q LUA_PATH=%q timeout 20 lua5.4 %q 2>&1; echo \"rc=$?\"")
    :format(package.cpath, package.path, path)))
  local out = p:read("a")
  p:close()
  os.remove(path)
  return out
end

describe("cancellation racing a hand-off", function()
  it("never loses a value a receiver was handed (capacity 0 and 1)", function()
    for _, cap in ipairs({ 0, 1 }) do
      local lost, delivered = 0, 0
      -- 300 rounds, and more (bounded) until one send went through: on a
      -- loaded machine every cancel may land before the send.
      local i = 0
      while i < 300 or (delivered == 0 and i < 3000) do
        i = i + 1
        local ch = braid.chan(cap)
        local r = braid.go(function(c)
          local ok, v = pcall(c.recv, c)
          return ok and v or "cancelled"
        end, ch)
        braid.sleep(0.0002)
        local s = braid.go(function(c)
          local ok, a = pcall(c.send, c, 42, 0.01)
          return ok and a
        end, ch)
        for _ = 1, i % 50 do end
        r:cancel()
        local _, sent = s:wait(5)
        local _, got = r:wait(5)
        if sent == true then
          if got == 42 or ch:try_recv() == 42 then delivered = delivered + 1 else lost = lost + 1 end
        end
      end
      assert.are.equal(0, lost, "capacity " .. cap .. ": values lost")
      assert.is_true(delivered > 0, "capacity " .. cap .. ": no send went through")
    end
  end)

  it("a send that raised 'cancelled' delivered nothing", function()
    local wrong = 0
    for i = 1, 300 do
      local ch = braid.chan(0)
      local s = braid.go(function(c)
        local ok, err = pcall(c.send, c, i)
        return ok and "sent" or err
      end, ch)
      braid.sleep(0.0002)
      local r = braid.go(function(c) return c:recv(0.01) end, ch)
      for _ = 1, i % 50 do end
      s:cancel()
      local _, how = s:wait(5)
      local _, got = r:wait(5)
      if how ~= "sent" and got == i then wrong = wrong + 1 end
      if how == "sent" and got ~= i then wrong = wrong + 1 end
    end
    assert.are.equal(0, wrong)
  end)
end)

describe("exit", function()
  it("does not hang on a task that swallows its cancellation", function()
    local out = run_script([[
      local braid = require "braid"
      local f = braid.go(function()
        while true do
          pcall(function() local x = 0 for i = 1, 1e5 do x = x + i end end)
        end
      end)
      braid.sleep(0.1)
      print("exit", f:status())
    ]])
    assert.matches("exit%s+pending", out)
    assert.matches("rc=0", out, 1, true)
  end)

  it("does not hang on a task looping on pcall(braid.sleep, 1)", function()
    local out = run_script([[
      local braid = require "braid"
      braid.go(function() while true do pcall(braid.sleep, 1) end end)
      braid.sleep(0.05)
      print("done")
    ]])
    assert.matches("done", out, 1, true)
    assert.matches("rc=0", out, 1, true)
  end)
end)
