-- bench/pmap.lua: braid.pmap against a sequential loop in the same run.
--
--   LUA_PATH='lua/?.lua;;' LUA_CPATH='build/?.so;;' lua5.4 bench/pmap.lua [rounds]
--
-- 1. 10 000 tiny items (x * 2): per-item overhead of pmap,
--    (pmap time - loop time) / items; target < 1 us.
-- 2. 64 CPU-bound items on 2 workers: speedup over the loop; target >= 1.9.
-- Each figure is the median of `rounds` runs (default 15), the loop and
-- pmap measured in alternation; the speedup is the median of the
-- per-round ratios.
local braid = require "braid"

local rounds = tonumber(arg and arg[1]) or 15

package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
local median = require("benchlib").median

local function time(f)
  local t0 = braid.now()
  f()
  return braid.now() - t0
end

-- Median times of a and b, measured in alternation so that a change in
-- the machine's load hits both alike.
-- Also returns the median of the per-round ratios a/b (the two runs of a
-- round are adjacent in time: the same machine load).
local function measure(a, b)
  a(); b()                              -- warm up (starts the runtime, caches)
  local ta, tb, ratio = {}, {}, {}
  for i = 1, rounds do
    ta[i] = time(a)
    tb[i] = time(b)
    ratio[i] = ta[i] / tb[i]
  end
  return median(ta), median(tb), median(ratio)
end

-- 1. tiny items
local N = 10000
local items = {}
for i = 1, N do items[i] = i end
local function double(x) return x * 2 end

local seq_tiny, par_tiny = measure(function()
  local out = {}
  for i = 1, N do out[i] = double(items[i]) end
  assert(out[N] == 2 * N)
end, function()
  local out = braid.pmap(items, double)
  assert(out[N] == 2 * N)
end)
local overhead_us = (par_tiny - seq_tiny) / N * 1e6
print(("pmap %d tiny items (x*2), %d workers: loop %.3f ms, pmap %.3f ms, "
  .. "per-item overhead %.3f us (target < 1 us) %s"):format(
  N, braid.stats().workers, seq_tiny * 1e3, par_tiny * 1e3, overhead_us,
  overhead_us < 1 and "OK" or "MISSED"))

-- 2. CPU-bound items
local M = 64
local function work(seed)
  local x = seed
  for _ = 1, 200000 do x = (x * 1103515245 + 12345) % 2147483648 end
  return x
end
local cpu_items = {}
for i = 1, M do cpu_items[i] = i end

-- Also the process CPU time per pmap run: CPU / wall is the number of
-- cores pmap actually got (about 1 on a machine busy with other work).
local cpu_used, cpu_wall = {}, {}
local seq_cpu, par_cpu, speedup = measure(function()
  local out = {}
  for i = 1, M do out[i] = work(cpu_items[i]) end
end, function()
  local c0, t0 = os.clock(), braid.now()
  braid.pmap(cpu_items, work, { workers = 2 })
  cpu_used[#cpu_used + 1] = os.clock() - c0
  cpu_wall[#cpu_wall + 1] = braid.now() - t0
end)
local cores = {}
for i = 1, #cpu_used do cores[i] = cpu_used[i] / cpu_wall[i] end

print(("pmap %d CPU-bound items (%.2f ms each), 2 workers: loop %.1f ms, pmap %.1f ms, "
  .. "speedup (median of per-round ratios) %.2fx (target >= 1.9x) %s"):format(
  M, seq_cpu / M * 1e3, seq_cpu * 1e3, par_cpu * 1e3, speedup,
  speedup >= 1.9 and "OK" or "MISSED"))
print(("  cores pmap got (process CPU time / wall time): median %.2f, best %.2f"):format(
  median(cores), math.max(table.unpack(cores))))
