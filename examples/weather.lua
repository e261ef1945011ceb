-- weather.lua -- the core of a weather service for US states.
--
--   braid examples/weather.lua
--   lua5.4 examples/weather.lua        (braid.so on LUA_CPATH)
--
-- Clients ask for the weather of a state; the service looks up every city
-- of the state on OpenWeatherMap (simulated by fake_owm.lua, beside this
-- file: 10-30 ms per lookup) and answers with the state's min, max and
-- mean temperature.
--
--   braid.pmap      the cities of a state are looked up in parallel, at
--                   most 20 at once (a polite client)
--   braid.memo      concurrent requests for the same state share one
--                   lookup (single flight), and the result is kept 10 min
--   braid.broker    each state's fresh report is published on
--                   "weather.<state>"; a dashboard subscribes to
--                   "weather.*" and, with ch:map, keeps only temperatures
--   braid.server    a per-IP request counter; every request calls it with
--                   a timeout, so a stuck counter cannot stall the service
--   braid.group     the requests run concurrently, results in order
--
-- The output is deterministic except the line starting with "elapsed:".

-- Modules beside this script; set before braid starts its workers, which
-- copy package.path.
local script_dir = (arg and arg[0] or ""):match("^(.*[/\\])") or "./"
package.path = script_dir .. "?.lua;" .. package.path

local braid = require "braid"
local owm = require "fake_owm"

local t0 = braid.now()

-- Fifteen requests: twelve at once, then three more later.
local FIRST = {
  { ip = "198.51.100.7", state = "CA" },  { ip = "203.0.113.42", state = "TX" },
  { ip = "198.51.100.7", state = "CA" },  { ip = "192.0.2.15", state = "NY" },
  { ip = "203.0.113.42", state = "CA" },  { ip = "192.0.2.15", state = "WA" },
  { ip = "198.51.100.23", state = "TX" }, { ip = "198.51.100.7", state = "NY" },
  { ip = "203.0.113.99", state = "CA" },  { ip = "192.0.2.15", state = "TX" },
  { ip = "198.51.100.23", state = "WA" }, { ip = "203.0.113.99", state = "CA" },
}
local LATER = {
  { ip = "198.51.100.7", state = "TX" }, { ip = "203.0.113.99", state = "WA" },
  { ip = "192.0.2.15", state = "CA" },
}

local api = owm.new()
local updates = braid.broker()

-- The per-IP request counter.  "audit" stands for a slow administrative
-- request (it holds the server for `audit` seconds).
local counter = braid.server({
  init = function() return { by_ip = {} } end,
  call = function(st, req)
    if req.hit then
      st.by_ip[req.hit] = (st.by_ip[req.hit] or 0) + 1
      return st.by_ip[req.hit], st
    elseif req.audit then
      braid.sleep(req.audit)
      return "audited", st
    else
      return st.by_ip, st
    end
  end,
})

-- A state's weather: every city at once (at most 20 lookups in flight),
-- then the report goes to the subscribers and the summary to the callers.
local states = braid.memo(function(state)
  local cities = owm.cities(state) or error("unknown state " .. state, 0)
  local results = braid.pmap(cities, function(city)
    return owm.weather(api, city, state)
  end, { workers = 20 })
  local report, min, max, sum = { state = state, cities = {} }, math.huge, -math.huge, 0
  for i, r in ipairs(results) do
    local t = r.main.temp
    report.cities[i] = { name = r.name, temp = t, humidity = r.main.humidity,
                         conditions = r.weather[1].main }
    min, max, sum = math.min(min, t), math.max(max, t), sum + t
  end
  updates:publish("weather." .. state, report)
  return { cities = #results, min = min, max = max, mean = sum / #results }
end, { ttl = 600 })

-- One client request.  The counter is asked with a timeout: if it does
-- not answer in time the request is served anyway (fail open).
local function handle(req)
  pcall(counter.call, counter, { hit = req.ip }, { timeout = 0.5 })
  local ok, summary = pcall(states.get, states, req.state)
  if not ok then return { status = 502, error = summary } end
  return { status = 200, summary = summary }
end

-- The dashboard: temperatures only, whatever the state.
local sub = updates:subscribe("weather.*")
local temps = sub:map(function(report)
  local t = {}
  for i, c in ipairs(report.cities) do t[i] = c.temp end
  return { state = report.state, temps = t }
end)
local dashboard = braid.go(function()
  local seen = {}
  for u in temps:iter() do seen[#seen + 1] = u end
  return seen
end)

local function serve(requests)
  local g = braid.group()
  for _, req in ipairs(requests) do g:go(handle, req) end
  return g:wait()
end

local replies = serve(FIRST)
for _, r in ipairs(serve(LATER)) do replies[#replies + 1] = r end
local all = {}
for _, req in ipairs(FIRST) do all[#all + 1] = req end
for _, req in ipairs(LATER) do all[#all + 1] = req end

print(("Weather service: %d requests at once, then %d more, for 4 states")
  :format(#FIRST, #LATER))
print()
print(" #  ip              state  status  cities  min F  max F  mean F")
for i, req in ipairs(all) do
  local r = replies[i]
  if r.status == 200 then
    local s = r.summary
    print(("%2d  %-14s  %-5s  %6d  %6d  %5.1f  %5.1f  %6.1f")
      :format(i, req.ip, req.state, r.status, s.cities, s.min, s.max, s.mean))
  else
    print(("%2d  %-14s  %-5s  %6d  %s"):format(i, req.ip, req.state, r.status, r.error))
  end
end
print()

local st = owm.stats(api)
local names = {}
for s in pairs(st.by_state) do names[#names + 1] = s end
table.sort(names)
local parts, peaks, bounded = {}, {}, true
for _, s in ipairs(names) do
  parts[#parts + 1] = s .. " " .. st.by_state[s]
  peaks[#peaks + 1] = s .. " " .. st.peak[s]
  bounded = bounded and st.peak[s] <= 20
end
print(("OpenWeatherMap: %d lookups (%s), %s")
  :format(st.lookups, table.concat(parts, ", "),
          bounded and "never more than 20 of one state at once"
                  or "MORE THAN 20 OF ONE STATE AT ONCE"))

local ms = states:stats()
print(("memo: %d state lookups for %d requests; %d requests shared a lookup or its cached result")
  :format(ms.misses, #all, ms.hits))

updates:unsubscribe(sub)        -- closes sub; temps closes once drained
local seen = dashboard:await()
table.sort(seen, function(a, b) return a.state < b.state end)
local bs = updates:stats()
print(("broker: %d updates published, %d delivered, %d dropped; the dashboard saw:")
  :format(bs.published, bs.delivered, bs.dropped))
for _, u in ipairs(seen) do
  local min, max = math.huge, -math.huge
  for _, t in ipairs(u.temps) do min, max = math.min(min, t), math.max(max, t) end
  print(("  weather.%s  %2d temperatures  %5.1f .. %5.1f F"):format(u.state, #u.temps, min, max))
end

-- A call that takes longer than its timeout: the caller gets "timeout",
-- the server finishes the audit and goes on serving.
local ok, err = pcall(counter.call, counter, { audit = 0.2 }, { timeout = 0.05 })
print(("counter: an audit of 0.2 s called with timeout = 0.05 -> %s")
  :format(ok and "answered" or tostring(err)))
local by_ip = counter:call({ totals = true }, { timeout = 2 })
local ips = {}
for ip in pairs(by_ip) do ips[#ips + 1] = ip end
table.sort(ips)
for i, ip in ipairs(ips) do ips[i] = ip .. " " .. by_ip[ip] end
print("counter: requests per IP: " .. table.concat(ips, ", "))

print(("elapsed: %.2f s; peak lookups in flight per state: %s")
  :format(braid.now() - t0, table.concat(peaks, ", ")))
counter:stop()
owm.close(api)
if not bounded then os.exit(1) end
