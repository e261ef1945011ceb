-- bench/benchlib.lua: what the benchmarks in bench/ share.  A script loads
-- it from its own folder:
--
--   package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
--   local median = require("benchlib").median
local M = {}

-- The median of the numbers in t, which is left as it is (callers pair
-- runs by index afterwards); nil for an empty t.
function M.median(t)
  local s = {}
  for i = 1, #t do s[i] = t[i] end
  table.sort(s)
  local n = #s
  if n == 0 then return nil end
  if n % 2 == 1 then return s[(n + 1) // 2] end
  return (s[n // 2] + s[n // 2 + 1]) / 2
end

return M
