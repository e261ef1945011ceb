-- bench/broker.lua: publish rate of braid.broker to 100 subscribers, with
-- and without one subscriber that never reads, and against a bare loop of
-- try_send to 100 channels (the floor: what the fan-out costs without the
-- broker), all in the same run.
--
--   LUA_PATH='lua/?.lua;;' LUA_CPATH='build/?.so;;' lua5.4 bench/broker.lua [rounds]
--
-- Target: the rate with the stuck subscriber within 10% of the rate
-- without it.  Each figure is the median of `rounds` runs (default 9) of
-- PUBS publishes from the main thread; the readers are tasks that drain
-- their subscription.
local braid = require "braid"

local rounds = tonumber(arg and arg[1]) or 9
local SUBS, PUBS = 100, 2000

local function median(t)
  table.sort(t)
  local n = #t
  if n % 2 == 1 then return t[(n + 1) // 2] end
  return (t[n // 2] + t[n // 2 + 1]) / 2
end

local function reader(ch)
  local n = 0
  for _ in ch:iter() do n = n + 1 end
  return n
end

-- One run: publishes PUBS values to SUBS subscriptions, `stuck` of which
-- are never read.  Returns publishes per second.
local function run_broker(stuck)
  local b = braid.broker({ buffer = 64, policy = "slide" })
  local chans, readers = {}, {}
  for i = 1, SUBS do
    chans[i] = b:subscribe("bench.topic")
    if i > stuck then readers[#readers + 1] = braid.go(reader, chans[i]) end
  end
  local msg = { id = 0, body = "a short message body" }
  local t0 = braid.now()
  for i = 1, PUBS do
    msg.id = i
    b:publish("bench.topic", msg)
  end
  local dt = braid.now() - t0
  for i = 1, SUBS do b:unsubscribe(chans[i]) end
  for i = 1, #readers do readers[i]:await() end
  return PUBS / dt, b:stats()
end

-- The floor: the same fan-out as a bare loop over the channels.
local function run_bare()
  local chans, readers = {}, {}
  for i = 1, SUBS do
    chans[i] = braid.chan(64, "slide")
    readers[i] = braid.go(reader, chans[i])
  end
  local msg = { id = 0, body = "a short message body" }
  local t0 = braid.now()
  for i = 1, PUBS do
    msg.id = i
    for k = 1, SUBS do chans[k]:send(msg) end
  end
  local dt = braid.now() - t0
  for i = 1, SUBS do chans[i]:close() end
  for i = 1, SUBS do readers[i]:await() end
  return PUBS / dt
end

run_broker(0)                            -- warm up
local bare, clean, stuck = {}, {}, {}
local last_stats
for r = 1, rounds do
  bare[r] = run_bare()
  clean[r] = run_broker(0)
  stuck[r], last_stats = run_broker(1)
end
local m_bare, m_clean, m_stuck = median(bare), median(clean), median(stuck)
print(("broker: %d subscribers, %d publishes, median of %d runs"):format(SUBS, PUBS, rounds))
print(("  bare loop of send to %d chans: %8.0f publishes/s (%.2f us per delivery)"):format(
  SUBS, m_bare, 1e6 / m_bare / SUBS))
print(("  broker, all reading:           %8.0f publishes/s (%.2f us per delivery), %.2fx the bare loop"):format(
  m_clean, 1e6 / m_clean / SUBS, m_clean / m_bare))
print(("  broker, one never reads:       %8.0f publishes/s, %.3f of the rate without it (target >= 0.90) %s"):format(
  m_stuck, m_stuck / m_clean, m_stuck / m_clean >= 0.9 and "OK" or "MISSED"))
print(("  last run with the stuck one: published %d, delivered %d, dropped %d"):format(
  last_stats.published, last_stats.delivered, last_stats.dropped))
