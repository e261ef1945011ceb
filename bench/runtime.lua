-- bench/runtime.lua -- braid's runtime figures (issue 3), each beside a
-- baseline measured in the same run.
--
--   lua5.4 bench/runtime.lua            (LUA_CPATH must find braid.so)
--   braid bench/runtime.lua
--
-- Every case runs in a fresh process (braid.config differs per case), REPS
-- times (env BRAID_BENCH_REPS, default 5); the median is printed.  Figures
-- the issue quotes for other libraries on this kind of machine are shown for
-- reference; they were not measured here.
local REPS = tonumber(os.getenv("BRAID_BENCH_REPS") or "5")
local QUICK = os.getenv("BRAID_BENCH_QUICK") ~= nil
local case = arg and arg[1]

local function median(t)
  table.sort(t)
  local n = #t
  if n % 2 == 1 then return t[(n + 1) // 2] end
  return (t[n // 2] + t[n // 2 + 1]) / 2
end

local N = QUICK and 20000 or 400000

local cases = {}

-- Plain Lua baseline for CPU work: the same loop, no braid.
local function spin(n)
  local x = 0
  for i = 1, n do x = x + i % 7 end
  return x
end

function cases.ints(braid)
  braid.config{workers = 2}
  local ch = braid.chan(128)
  local t0 = braid.now()
  local p = braid.go(function(n) for i = 1, n do ch:send(i) end ch:close() end, N)
  local c = braid.go(function() local k = 0 for _ in ch:iter() do k = k + 1 end return k end)
  p:await(); assert(c:await() == N)
  return N / (braid.now() - t0) / 1e6
end

function cases.tables(braid)
  braid.config{workers = 2}
  local ch = braid.chan(128)
  local n = N // 2
  local t0 = braid.now()
  local p = braid.go(function(n)
    for i = 1, n do ch:send({id = i, name = "San Francisco", temp = 288.9, tags = {"a", "b"}}) end
    ch:close()
  end, n)
  local c = braid.go(function() local k = 0 for v in ch:iter() do k = k + v.id - v.id + 1 end return k end)
  p:await(); assert(c:await() == n)
  return n / (braid.now() - t0) / 1e6
end

local function pingpong(braid, workers)
  braid.config{workers = workers}
  local a, b = braid.chan(), braid.chan()
  local m = N // 4
  local q = braid.go(function(m) for _ = 1, m do b:send(a:recv()) end end, m)
  local t0 = braid.now()
  local p = braid.go(function(m)
    local t0 = braid.now()
    for i = 1, m do a:send(i); b:recv() end
    return braid.now() - t0
  end, m)
  local dt = p:await(); q:await()
  return dt / m * 1e6
end
function cases.pingpong_same(braid) return pingpong(braid, 1) end
function cases.pingpong_across(braid) return pingpong(braid, 2) end

function cases.spawn(braid)
  braid.config{workers = 2}
  local m = N // 8
  return braid.go(function(m)
    local t0 = braid.now()
    for _ = 1, m do braid.go(function() return 1 end):await() end
    return (braid.now() - t0) / m * 1e6
  end, m):await()
end

function cases.spawn_main(braid)
  braid.config{workers = 2}
  local m = N // 20
  local t0 = braid.now()
  for _ = 1, m do braid.go(function() return 1 end):await() end
  return (braid.now() - t0) / m * 1e6
end

function cases.memory(braid)
  braid.config{workers = 2}
  local function rss()
    local f = assert(io.open("/proc/self/status"))
    local s = f:read("a"); f:close()
    return tonumber(s:match("VmRSS:%s*(%d+)"))
  end
  local m = QUICK and 10000 or 100000
  local ch = braid.chan()
  braid.go(function() end):await()
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
  local t0 = braid.now()
  local fs = {}
  for i = 1, 64 do fs[i] = braid.go(spin, CPU) end
  for i = 1, 64 do fs[i]:await() end
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

-- The driver: run each case REPS times in fresh processes.
local exe = arg[-1] or "lua5.4"
local script = arg[0]
local function run(name)
  local vals = {}
  for _ = 1, REPS do
    local p = assert(io.popen(string.format("%q %q %s", exe, script, name)))
    local out = p:read("a")
    p:close()
    vals[#vals + 1] = assert(tonumber(out), "case " .. name .. " printed: " .. out)
  end
  return median(vals)
end

local function row(what, value, unit, base, basename, target)
  print(string.format("%-44s %10.3f %-8s %10s %-22s %s", what, value, unit,
    base and string.format("%.2f", base) or "", basename or "", target or ""))
end

print(string.format("braid runtime benchmark (median of %d runs each, %s)", REPS, QUICK and "quick" or "full"))
print(string.format("%-44s %10s %-8s %10s %-22s %s", "figure", "braid", "unit", "ratio", "baseline", "target"))
local ints = run("ints")
row("small ints task->task across workers", ints, "M msg/s", ints / 1.1, "x luaproc 1.1 (quoted)", ">= 3")
local tabs = run("tables")
row("small tables task->task across workers", tabs, "M msg/s", tabs / 0.42, "x luaproc 0.42 (quoted)", ">= 1")
local pps = run("pingpong_same")
row("ping-pong round trip, one worker", pps, "us", 2.1 / pps, "x luaproc 2.1 (quoted)", "<= 0.5")
local ppa = run("pingpong_across")
row("ping-pong round trip, across workers", ppa, "us", 2.1 / ppa, "x luaproc 2.1 (quoted)", "<= 2")
local sp = run("spawn")
row("spawn + await, from a task", sp, "us", 17.6 / sp, "x luaproc 17.6 (quoted)", "<= 3")
local spm = run("spawn_main")
row("spawn + await, from the main thread", spm, "us", 17.6 / spm, "x luaproc 17.6 (quoted)", "")
local mem = run("memory")
row("memory per task blocked in recv", mem, "KiB", 13 / mem, "x luaproc 13 (quoted)", "<= 2")
local seq, par = run("cpu_seq"), run("cpu_par")
row("64 CPU-bound items, 2 workers", par, "s", seq / par, "x sequential lua5.4", ">= 1.9x")
local two = run("cpu_two_procs")
row("  the same 64 items as 2 plain lua5.4 processes", two, "s", seq / two, "x (this machine's ceiling)", "")
local lp, lt = run("loop_plain"), run("loop_task")
row("CPU loop in a task vs plain lua5.4", lt, "s", lt / lp, "x plain (1.0 = equal)", "<= 1.05x")
