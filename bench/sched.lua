-- bench/sched.lua -- the scheduler's figures (issue 10), each beside a
-- baseline measured in the same run.
--
--   LUA_CPATH="$PWD/build/?.so;;" lua5.4 bench/sched.lua
--
-- Every case runs in a fresh process (braid.config differs per case),
-- REPS times (env BRAID_BENCH_REPS, default 3); medians are printed.
--
--   started   8 tasks that one task starts, each first blocked on a channel
--             and then CPU-bound: time sequential / time with 2 workers
--   pmap      braid.pmap of 64 CPU-bound items: sequential / parallel
--   stuck     worst lateness of a 10 ms heartbeat while 3 tasks sit 1 s in
--             a C call (os.execute("sleep 1")), 2 workers
--   idle      CPU used by an idle process with 100 blocked tasks, over 2 s
--             (every thread's schedstat), as a % of one core
--   pingpong  round trip between two tasks (one-way ints over capacity-0
--             channels), us
--   light     CPU while a task wakes every 0.5 ms (a timer) and sends to
--             another task, as a % of one core
--   timer_*   time per braid.sleep(0.0002) in a task (workers idle: the
--             poller's timeout decides) and on the main thread, ms
local REPS = tonumber(os.getenv("BRAID_BENCH_REPS") or "3")
local case = arg and arg[1]

package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
local median = require("benchlib").median

local function spin(n)
  local x = 0
  for i = 1, n do x = x + i % 7 end
  return x
end

local WORK = 6000000

local cases = {}

function cases.started(braid)
  braid.config{workers = 2}
  -- sequential baseline, same process, no tasks
  local t0 = braid.now()
  for _ = 1, 8 do spin(WORK) end
  local seq = braid.now() - t0
  t0 = braid.now()
  local f = braid.go(function(n, work)
    local chans, futs = {}, {}
    for i = 1, n do
      local ch = braid.chan()
      chans[i] = ch
      futs[i] = braid.go(function(c, w)
        c:recv()
        local x = 0
        for k = 1, w do x = x + k % 7 end
        return x
      end, ch, work)
    end
    for i = 1, n do chans[i]:send(true) end
    for i = 1, n do futs[i]:await() end
  end, 8, WORK)
  f:await()
  local par = braid.now() - t0
  return seq / par
end

function cases.pmap(braid)
  braid.config{workers = 2}
  local items = {}
  for i = 1, 64 do items[i] = WORK // 8 end
  local t0 = braid.now()
  for i = 1, 64 do spin(items[i]) end
  local seq = braid.now() - t0
  t0 = braid.now()
  braid.pmap(items, spin)
  return seq / (braid.now() - t0)
end

function cases.stuck(braid)
  braid.config{workers = 2}
  local hb = braid.go(function()
    local worst = 0
    local t_end = braid.now() + 1.6
    while braid.now() < t_end do
      local t0 = braid.now()
      braid.sleep(0.01)
      local late = braid.now() - t0 - 0.01
      if late > worst then worst = late end
    end
    return worst
  end)
  braid.sleep(0.1)
  local stuck = {}
  for i = 1, 3 do stuck[i] = braid.go(function() os.execute("sleep 1") end) end
  local worst = hb:await()
  for i = 1, 3 do stuck[i]:await() end
  return worst * 1000
end

-- CPU time of the given threads of this process, in seconds, at
-- nanosecond resolution (/proc/<pid>/task/<tid>/schedstat; /proc/self/stat
-- counts 10 ms ticks, too coarse for a fraction of a percent).  The thread
-- list is read once, before the measurement (a popen forks the process).
local function thread_files()
  local f = io.open("/proc/self/stat")
  local pid = f:read("a"):match("^(%d+)")
  f:close()
  local files = {}
  local p = io.popen("ls /proc/" .. pid .. "/task")
  for tid in p:lines() do files[#files + 1] = "/proc/" .. pid .. "/task/" .. tid .. "/schedstat" end
  p:close()
  return files
end

local function cpu_seconds(files)
  local total = 0
  for _, name in ipairs(files) do
    local f = io.open(name)
    if f then
      total = total + tonumber(f:read("l"):match("^(%d+)"))
      f:close()
    end
  end
  return total / 1e9
end

function cases.idle(braid)
  braid.config{workers = 2}
  local ch = braid.chan()
  for _ = 1, 100 do braid.go(function(c) c:recv() end, ch) end
  braid.sleep(0.3)
  local files = thread_files()
  local c0, t0 = cpu_seconds(files), braid.now()
  braid.sleep(2)
  local used = cpu_seconds(files) - c0
  local pct = used / (braid.now() - t0) * 100
  ch:close()
  return pct
end

-- CPU used while a task wakes every 0.5 ms (a timer) and sends to a task
-- on another shard: the partner's wake-up is wasted, and a spin that grew
-- after such wake-ups must not turn light load into busy CPU (design
-- notes of core/sched.c, "Wasted wake-ups"), as a % of one core.
function cases.light(braid)
  braid.config{workers = 2}
  local ch = braid.chan()
  local n = 1000
  braid.go(function() end):await()            -- the workers exist before they are listed
  braid.sleep(0.05)
  local files = thread_files()
  local c0, t0 = cpu_seconds(files), braid.now()
  local p = braid.go(function() for i = 1, n do braid.sleep(0.0005); ch:send(i) end end)
  local c = braid.go(function() for _ = 1, n do ch:recv() end end)
  c:await(); p:await()
  return (cpu_seconds(files) - c0) / (braid.now() - t0) * 100
end

-- How long braid.sleep(0.0002) takes in a task while every worker is idle
-- (the poller's timeout decides), per call, in ms; the same sleep on the
-- main thread (a futex wait with a nanosecond timeout) is the baseline row.
local function sleeps(braid, n, d)
  local t0 = braid.now()
  for _ = 1, n do braid.sleep(d) end
  return (braid.now() - t0) / n * 1000
end

function cases.timer_task(braid)
  braid.config{workers = 2}
  return braid.go(sleeps, braid, 200, 0.0002):await()
end

function cases.timer_main(braid)
  braid.config{workers = 2}
  return sleeps(braid, 200, 0.0002)
end

function cases.pingpong(braid)
  braid.config{workers = 2}
  local N = 50000
  local a, b = braid.chan(), braid.chan()
  local echo = braid.go(function() for v in a:iter() do b:send(v) end end)
  local t0 = braid.now()
  local f = braid.go(function(n)
    for i = 1, n do a:send(i); b:recv() end
    a:close()
  end, N)
  f:await()
  echo:await()
  return (braid.now() - t0) / N * 1e6
end

if case then
  package.cpath = os.getenv("LUA_CPATH") or package.cpath
  local braid = require "braid"
  io.write(string.format("%.6f\n", cases[case](braid)))
  os.exit(0)
end

local lua = arg[-1] or "lua5.4"
local self = arg[0]
local function run(name)
  local vals = {}
  for _ = 1, REPS do
    local p = io.popen(string.format("%q %q %s", lua, self, name))
    local out = p:read("a")
    p:close()
    vals[#vals + 1] = tonumber(out:match("[%d%.]+")) or 0 / 0
  end
  return median(vals)
end

local rows = {
  { "started", "8 tasks started by one task, then CPU-bound: speedup on 2 workers", "x", ">= 1.8" },
  { "pmap", "braid.pmap of 64 CPU-bound items: speedup on 2 workers", "x", ">= 1.9" },
  { "stuck", "worst lateness of a 10 ms heartbeat, 3 tasks 1 s in C", "ms", "<= 50" },
  { "idle", "CPU of an idle process with 100 blocked tasks", "% of a core", "<= 0.2" },
  { "pingpong", "ping-pong round trip across tasks", "us", "no worse than 1.6" },
  { "light", "CPU while a task wakes every 0.5 ms and wakes another", "% of a core", "low" },
  { "timer_task", "braid.sleep(0.0002) in a task, workers idle: time per call", "ms", "near 0.2" },
  { "timer_main", "the same sleep on the main thread (baseline)", "ms", "" },
}
print(string.format("bench/sched.lua: medians of %d runs each (fresh process per run)", REPS))
for _, r in ipairs(rows) do
  print(string.format("  %-66s %9.3f %-12s target %s", r[2], run(r[1]), r[3], r[4]))
end
