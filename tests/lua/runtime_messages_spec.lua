-- runtime_messages_spec.lua: issue 15's messages built in bindings/lruntime.c:
-- the deadlock error names the tasks that hold it up.
local braid = require "braid"

describe("deadlock message", function()
  it("names the tasks that hold it up and what each waits on", function()
    local a, b = braid.chan(), braid.chan()
    braid.spawn({ name = "stuck-producer" }, function() a:send(1) end)
    local blocked = false
    for _ = 1, 1000 do
      for _, t in ipairs(braid.tasks()) do
        if t.name == "stuck-producer" and t.state == "blocked" then blocked = true end
      end
      if blocked then break end
      braid.sleep(0.01)
    end
    assert.is_true(blocked)
    local ok, err = pcall(b.recv, b)
    assert.is_false(ok)
    assert.matches("^braid: deadlock: recv " .. tostring(b):match("braid%.chan#%d+"), err)
    assert.matches("stuck-producer", err, 1, true)
    assert.matches("send " .. tostring(a):match("braid%.chan#%d+"), err, 1, true)
    a:close()
  end)
end)
