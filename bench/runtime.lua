-- bench/runtime.lua -- braid's runtime figures (issue 14), each beside a
-- plain-C baseline measured in the same run (bench/runtime_ref.c, built as
-- bench_runtime_ref next to braid.so).
--
--   lua5.4 bench/runtime.lua            (LUA_CPATH must find braid.so)
--   braid bench/runtime.lua
--   make bench                          (runs it with the others)
--
-- Sizes are the issue's: 200 000 ints through a channel of capacity 1024;
-- 100 000 small tables; 50 000 round trips; 20 000 sequential spawn+await
-- from the main thread; 100 000 tasks blocked in recv; 64 CPU items.
-- Every case runs in a fresh process (braid.config differs per case), REPS
-- times (env BRAID_BENCH_REPS, default 3), braid and C (or the plain-Lua
-- baseline) interleaved so that the machine's noise hits both; the median
-- is printed.  "vs C" is braid's speed over C's: above 1 braid is faster.
local REPS = tonumber(os.getenv("BRAID_BENCH_REPS") or "3")
local QUICK = os.getenv("BRAID_BENCH_QUICK") ~= nil
local case = arg and arg[1]

package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
local median = require("benchlib").median

local SCALE = QUICK and 10 or 1
local N_INT, N_TAB, N_RT, N_SPAWN, N_MEM = 200000 // SCALE, 100000 // SCALE, 50000 // SCALE,
  20000 // SCALE, 100000 // SCALE

local cases = {}

-- Plain Lua baseline for CPU work: the same loop, no braid.
local function spin(n)
  local x = 0
  for i = 1, n do x = x + i % 7 end
  return x
end

function cases.ints(braid)
  braid.config{workers = 2}
  local ch, n = braid.chan(1024), N_INT
  local t0 = braid.now()
  local p = braid.go(function() for i = 1, n do ch:send(i) end return true end)
  local c = braid.go(function() local s = 0 for _ = 1, n do s = s + ch:recv() end return s end)
  assert(c:await() == n * (n + 1) // 2); assert(p:await())
  return n / (braid.now() - t0)
end

function cases.tables(braid)
  braid.config{workers = 2}
  local ch, n = braid.chan(1024), N_TAB
  local t0 = braid.now()
  local p = braid.go(function()
    for i = 1, n do ch:send({id = i, name = "San Francisco", temp = 288.9, tags = {"a", "b"}}) end
    return true
  end)
  local c = braid.go(function()
    local s = 0
    for _ = 1, n do
      local m = ch:recv()
      assert(m.name == "San Francisco" and m.temp == 288.9 and m.tags[2] == "b")
      s = s + m.id
    end
    return s
  end)
  assert(c:await() == n * (n + 1) // 2); assert(p:await())
  return n / (braid.now() - t0)
end

local function pingpong(braid, workers)
  braid.config{workers = workers}
  local ab, ba, m = braid.chan(), braid.chan(), N_RT
  local t0 = braid.now()
  local a = braid.go(function()
    for i = 1, m do ab:send(i); assert(ba:recv() == i) end
    return braid.now()
  end)
  local b = braid.go(function() for _ = 1, m do ba:send(ab:recv()) end end)
  local t1 = a:await(); b:await()
  return (t1 - t0) / m * 1e6
end
function cases.pingpong_across(braid) return pingpong(braid, 2) end
function cases.pingpong_same(braid) return pingpong(braid, 1) end

function cases.spawn_main(braid)
  braid.config{workers = 2}
  local m = N_SPAWN
  local t0 = braid.now()
  for _ = 1, m do assert(braid.go(function() return 42 end):await() == 42) end
  return (braid.now() - t0) / m * 1e6
end

function cases.memory(braid)
  braid.config{workers = 2}
  local function rss()
    local f = assert(io.open("/proc/self/status"))
    local s = f:read("a"); f:close()
    return tonumber(s:match("VmRSS:%s*(%d+)"))
  end
  local m = N_MEM
  local ch = braid.chan()
  local warm = {}
  for i = 1, 64 do warm[i] = braid.go(function() return 1 end) end   -- every shard opened
  for i = 1, 64 do warm[i]:await() end
  collectgarbage(); collectgarbage()
  local r0 = rss()
  local fs = {}
  for i = 1, m do fs[i] = braid.go(function() return ch:recv() end) end
  while braid.stats().blocked < m do braid.sleep(0.01) end
  local kib = (rss() - r0) / m
  ch:close()
  for i = 1, m do fs[i]:wait() end
  return kib
end

local CPU = QUICK and 2e5 or 2e6
function cases.cpu_seq() -- plain Lua: 64 items one after another
  local t0 = os.clock()
  local s = 0
  for i = 1, 64 do s = s + spin(CPU) end
  return os.clock() - t0
end

-- The machine's own ceiling: two plain Lua processes, 32 items each, at
-- once (no braid at all).  A shared VM's two vCPUs rarely give 2.0x.
function cases.cpu_two_procs()
  local exe, script = arg[-1] or "lua5.4", arg[0]
  local now = function()
    local p = io.popen("date +%s.%N"); local v = tonumber(p:read("a")); p:close(); return v
  end
  local start = now()
  local a = io.popen(string.format("%q %q cpu_half", exe, script))
  local b = io.popen(string.format("%q %q cpu_half", exe, script))
  a:read("a"); b:read("a"); a:close(); b:close()
  return now() - start
end

function cases.cpu_half()
  local s = 0
  for i = 1, 32 do s = s + spin(CPU) end
  return s
end

function cases.cpu_par(braid)
  braid.config{workers = 2}
  local items = {}
  for i = 1, 64 do items[i] = CPU end
  local t0 = braid.now()
  local r = braid.pmap(items, spin)
  assert(#r == 64)
  return braid.now() - t0
end

function cases.loop_plain()
  local t0 = os.clock(); spin(CPU * 20); return os.clock() - t0
end

function cases.loop_task(braid)
  braid.config{workers = 1}
  return braid.go(function(n)
    local t0 = os.clock(); spin(n); return os.clock() - t0
  end, CPU * 20):await()
end

if case then
  local braid = require "braid"
  io.write(string.format("%.6f\n", cases[case](braid)))
  os.exit(0)
end

-- The driver: run each case REPS times in fresh processes, braid and its
-- C baseline interleaved.
local exe = arg[-1] or "lua5.4"
local script = arg[0]

-- bench_runtime_ref sits in the build directory, next to braid.so (or to
-- the braid binary running this script); never a sanitizer tree's.
local function find_ref()
  local dirs = {}
  if exe:match("/braid$") then dirs[#dirs + 1] = exe:match("^(.*)/braid$") end
  for tmpl in package.cpath:gmatch("[^;]+") do
    local d = tmpl:match("^(.*)/%?%.so$")
    if d and not d:match("sanitize") then dirs[#dirs + 1] = d end
  end
  for _, d in ipairs(dirs) do
    local path = d .. "/bench_runtime_ref"
    local f = io.open(path)
    if f then f:close(); return path end
  end
end
local REF = os.getenv("BRAID_BENCH_REF") or find_ref()

local function once(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  p:close()
  return assert(tonumber(out), cmd .. " printed: " .. out)
end

-- Runs braid case `name` and, if given, the C mode `ref`, REPS times each.
local function run(name, ref)
  local vals, refs = {}, {}
  for _ = 1, REPS do
    vals[#vals + 1] = once(string.format("%q %q %s", exe, script, name))
    if ref and REF then refs[#refs + 1] = once(string.format("%q %s", REF, ref)) end
  end
  return median(vals), #refs > 0 and median(refs) or nil
end

-- Runs the braid cases named, in turn, REPS rounds; returns their medians
-- (for rows whose baseline is another case of this script).
local function run_each(...)
  local names, vals = { ... }, {}
  for i = 1, #names do vals[i] = {} end
  for _ = 1, REPS do
    for i, name in ipairs(names) do
      vals[i][#vals[i] + 1] = once(string.format("%q %q %s", exe, script, name))
    end
  end
  local out = {}
  for i = 1, #names do out[i] = median(vals[i]) end
  return table.unpack(out)
end

local function fmt(v)
  if v == nil then return "-" end
  if v >= 1e6 then return string.format("%.2f M", v / 1e6) end
  if v >= 1e4 then return string.format("%.0f k", v / 1e3) end
  return string.format("%.3g", v)
end

local results = {}
-- higher: whether a larger figure is better.  ratio: braid's speed over C's.
local function row(what, unit, value, base, higher, target, ok)
  local ratio = base and (higher and value / base or base / value) or nil
  print(string.format("%-50s %10s %-9s %10s %8s  %-9s %s", what, fmt(value), unit, fmt(base),
    ratio and string.format("%.2fx", ratio) or "-", target, ok and "ok" or "MISSED"))
  results[#results + 1] = ok
end

print(string.format("braid runtime benchmark (median of %d runs each%s; C baseline: %s)", REPS,
  QUICK and ", QUICK sizes: not comparable" or "", REF or "not found, build bench_runtime_ref"))
print(string.format("%-50s %10s %-9s %10s %8s  %-9s %s", "workload", "braid", "unit", "plain C",
  "vs C", "target", ""))
local v, b = run("ints", "ints")
row("small ints one-way across tasks (cap 1024)", "msg/s", v, b, true, ">= 7 M", v >= 7e6)
v, b = run("tables", "tables")
row("small tables {id,name,temp,tags} one-way", "msg/s", v, b, true, ">= 1.5 M", v >= 1.5e6)
v, b = run("pingpong_across", "pingpong")
row("ping-pong round trip, 2 workers", "us", v, b, false, "<= 0.6", v <= 0.6)
v, b = run("pingpong_same", "pingpong")
row("ping-pong round trip, one worker", "us", v, b, false, "<= 0.3", v <= 0.3)
v, b = run("spawn_main", "spawn")
row("spawn + await a trivial task from the main thread", "us", v, b, false, "<= 2", v <= 2)
v, b = run("memory", "memory")
row("memory per blocked task (" .. N_MEM .. " tasks; C: per thread)", "KiB", v, b, false,
  "<= 1.5", v <= 1.5)
local seq, par, two = run_each("cpu_seq", "cpu_par", "cpu_two_procs")
print(string.format("%-50s %10s %-9s %10s %8s  %-9s %s", "pmap of 64 CPU items, 2 workers: speedup",
  string.format("%.2fx", seq / par), "", string.format("%.2fx", seq / two), "", ">= 1.95x",
  seq / par >= 1.95 and "ok" or "MISSED"))
print("  (plain C column here: two plain lua5.4 processes at once, this machine's ceiling)")
local lp, lt = run_each("loop_plain", "loop_task")
print(string.format("%-50s %10s %-9s %10s %8s  %-9s %s", "CPU loop in a task vs plain lua5.4",
  string.format("%.3f", lt / lp), "x plain", "", "", "<= 1.03", lt / lp <= 1.03 and "ok" or "MISSED"))
