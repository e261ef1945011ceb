-- bench/broker.lua: publish rate of braid.broker to 99 reading
-- subscribers, with and without a 100th that never reads, against a bare
-- loop of send to the same channels without the broker, all in one run.
--
--   LUA_PATH='lua/?.lua;;' LUA_CPATH='build/?.so;;' lua5.4 bench/broker.lua [rounds]
--
-- Target: the rate with the stuck subscriber within 10% of the rate
-- without it.  Two kinds of readers:
--   * blocking: `for v in ch:iter()`.  Each send that finds its reader
--     parked hands the value over and wakes a task on the other core, so
--     the rate depends on how often readers are parked: it varies 2-3x
--     from run to run on 2 cores, whatever the broker does (the spread is
--     printed).
--   * batching: drain with try_recv, then sleep 5 ms.  Sends then only
--     buffer (or slide), so the rate measures the fan-out itself.
-- Also: the rate when no subscriber reads at all (one encode and one
-- slide per subscription).  Each figure is the median of `rounds` runs
-- (default 15) of PUBS publishes from the main thread; the target ratio is
-- the median of per-round ratios (the two runs of a round are adjacent).
local braid = require "braid"

local rounds = tonumber(arg and arg[1]) or 15
local SUBS, PUBS = 100, 5000

package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
local median = require("benchlib").median

local function spread(t)
  local lo, hi = math.huge, 0
  for i = 1, #t do lo = math.min(lo, t[i]); hi = math.max(hi, t[i]) end
  return ("min %.0f, max %.0f"):format(lo, hi)
end

local function blocking_reader(ch)
  local n = 0
  for _ in ch:iter() do n = n + 1 end
  return n
end

local function batching_reader(ch)
  local n = 0
  while true do
    local v, err = ch:try_recv()
    if v ~= nil then
      n = n + 1
    elseif err == "closed" then
      return n
    else
      braid.sleep(0.005)
    end
  end
end

local msg = { id = 0, body = "a short message body" }

-- Publishes PUBS values to nreaders subscriptions read by `reader` tasks
-- plus `stuck` never read; returns publishes per second and the stats.
local function run_broker(reader, nreaders, stuck)
  local b = braid.broker({ buffer = 64, policy = "slide" })
  local chans, tasks = {}, {}
  for i = 1, nreaders + stuck do
    chans[i] = b:subscribe("bench.topic")
    if i <= nreaders then tasks[#tasks + 1] = braid.go(reader, chans[i]) end
  end
  collectgarbage("collect")
  local t0 = braid.now()
  for i = 1, PUBS do
    msg.id = i
    b:publish("bench.topic", msg)
  end
  local dt = braid.now() - t0
  for i = 1, #chans do b:unsubscribe(chans[i]) end
  for i = 1, #tasks do tasks[i]:await() end
  return PUBS / dt, b:stats()
end

-- The same fan-out as a bare loop of send, without the broker.
local function run_bare(reader, n)
  local chans, tasks = {}, {}
  for i = 1, n do
    chans[i] = braid.chan(64, "slide")
    tasks[i] = braid.go(reader, chans[i])
  end
  collectgarbage("collect")
  local t0 = braid.now()
  for i = 1, PUBS do
    msg.id = i
    for k = 1, n do chans[k]:send(msg) end
  end
  local dt = braid.now() - t0
  for i = 1, n do chans[i]:close() end
  for i = 1, n do tasks[i]:await() end
  return PUBS / dt
end

local function compare(name, reader)
  run_broker(reader, SUBS - 1, 0)       -- warm up
  local bare, clean, stuck = {}, {}, {}
  local last
  for r = 1, rounds do
    bare[r] = run_bare(reader, SUBS - 1)
    if r % 2 == 0 then                   -- alternate which goes first
      clean[r] = run_broker(reader, SUBS - 1, 0)
      stuck[r], last = run_broker(reader, SUBS - 1, 1)
    else
      stuck[r], last = run_broker(reader, SUBS - 1, 1)
      clean[r] = run_broker(reader, SUBS - 1, 0)
    end
  end
  local m_bare, m_clean, m_stuck = median(bare), median(clean), median(stuck)
  -- The two runs of a round are adjacent in time (same machine load):
  -- the figure is the median of the per-round ratios.
  local ratios = {}
  for r = 1, rounds do ratios[r] = stuck[r] / clean[r] end
  local ratio = median(ratios)
  print(("%s readers:"):format(name))
  print(("  bare send loop, %d chans:           %8.0f publishes/s (%.2f us per delivery; %s)"):format(
    SUBS - 1, m_bare, 1e6 / m_bare / (SUBS - 1), spread(bare)))
  print(("  broker, %d subscribers:             %8.0f publishes/s (%.2f us per delivery; %s), %.2fx the bare loop"):format(
    SUBS - 1, m_clean, 1e6 / m_clean / (SUBS - 1), spread(clean), m_clean / m_bare))
  print(("  the same + 1 that never reads:      %8.0f publishes/s (%s)"):format(m_stuck, spread(stuck)))
  print(("  rate with it / rate without it, median of the per-round ratios: %.3f (target >= 0.90) %s"):format(
    ratio, ratio >= 0.9 and "OK" or "MISSED"))
  print(("  (last run with it: published %d, delivered %d, dropped %d)"):format(
    last.published, last.delivered, last.dropped))
end

print(("broker: %d publishes of a small table to one topic, median of %d runs"):format(PUBS, rounds))
compare("blocking", blocking_reader)
compare("batching", batching_reader)
local idle = {}
for r = 1, rounds do idle[r] = run_broker(nil, 0, SUBS) end
local m_idle = median(idle)
print(("nobody reads, %d subscribers:          %8.0f publishes/s (%.2f us per delivery: encode + slide)"):format(
  SUBS, m_idle, 1e6 / m_idle / SUBS))
