-- stress_accounting_spec.lua -- runs tests/stress/accounting.lua (issue 16:
-- randomized tasks, channels of every capacity and policy, sends, receives,
-- selects, try-ops, iter, closes with and without errors, cancels; every
-- value accounted for: accepted = received + drained + dropped).  About
-- 20 s here, 8 s under ThreadSanitizer (label tsan); `make soak` runs it
-- for 10 minutes.  BRAID_STRESS_SECONDS / BRAID_STRESS_SEED override the
-- length and the seed (printed by every run).
local braid = require "braid"
local stress = dofile("tests/stress/accounting.lua")

local tsan = os.getenv("BRAID_SANITIZE") == "thread"
local sanitized = (os.getenv("BRAID_SANITIZE") or "") ~= ""

describe("stress with exact accounting (issue 16)", function()
  if not sanitized then
    it("catches a lost, a duplicated and a phantom value (the check can fail)", function()
      for _, inj in ipairs({ "lose", "duplicate", "phantom" }) do
        local ok, rep = stress.run({ seconds = 0.6, round_seconds = 0.6, seed = 7, inject = inj,
                                     traders = 30, victims = 10, quiet = true })
        assert.is_false(ok, inj .. " went unnoticed")
        local want = ({ lose = "not seen", duplicate = "received twice",
                        phantom = "its send did not deliver" })[inj]
        assert.truthy(rep.problems[1]:find(want, 1, true), rep.problems[1])
      end
    end)
  end

  it("accounts for every value", function()
    local seconds = tonumber(os.getenv("BRAID_STRESS_SECONDS") or "") or (tsan and 8 or 20)
    local ok, rep = stress.run({
      seconds = seconds,
      seed = tonumber(os.getenv("BRAID_STRESS_SEED") or ""),
      traders = tsan and 60 or 200,
      victims = tsan and 30 or 100,
    })
    assert(ok, "seed " .. rep.seed .. ":\n" .. table.concat(rep.problems, "\n"))
    -- It did what it says (floors, not speed targets).
    assert.is_true(rep.rounds >= 1)
    assert.is_true(rep.accepted > 1000, "only " .. rep.accepted .. " values accepted")
    assert.is_true(rep.cancels > 0 and rep.closes > 0)
    assert.is_true(rep.received > 0 and rep.dropped > 0)
    for _, kind in ipairs({ "send", "recv", "try_send", "try_recv", "select", "iter" }) do
      assert.is_true((rep.kinds[kind] or 0) > 0, "no " .. kind)
    end
    assert.same({}, braid.tasks())
  end)
end)
