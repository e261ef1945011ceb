-- fake_owm.lua -- a simulated OpenWeatherMap for examples/weather.lua.
--
--   local owm = require "fake_owm"
--   owm.cities("CA")                     --> {"Los Angeles", "San Diego", ...}
--   local api = owm.new()                -- starts the API (a braid.server)
--   owm.weather(api, "Fresno", "CA")     -- like GET /data/2.5/weather?q=Fresno,CA,US&units=imperial
--   --> { name = "Fresno", main = { temp = 88.4, humidity = 31 }, weather = { { main = "Clear" } } }
--   owm.stats(api)    --> { lookups, by_state = {CA = 28, ...}, peak = {CA = 20, ...} }
--   owm.close(api)
--   owm.expected(states)                 -- the numbers, computed sequentially
--
-- Design notes
--
-- The weather is a pure function of the city's name (a hash), so it is the
-- same in every task and every run.  Each lookup sleeps 10-30 ms (the
-- network).  The counters -- lookups per state, and how many lookups of a
-- state are in flight at once -- are shared by every task, so they live in
-- one braid.server; a lookup reports its start and its end to it with
-- calls (not casts) so that, for each task, the server sees start and end
-- in order.  The server's count of lookups in flight therefore never
-- exceeds the number of tasks doing lookups: its peak shows the bound of
-- the braid.pmap that made them.
--
-- This file does not require braid at load time: cities() and expected()
-- run under a plain lua5.4.
local M = {}

local CITIES = {
  CA = { "Los Angeles", "San Diego", "San Jose", "San Francisco", "Fresno", "Sacramento",
         "Long Beach", "Oakland", "Bakersfield", "Anaheim", "Santa Ana", "Riverside",
         "Stockton", "Irvine", "Chula Vista", "Fremont", "San Bernardino", "Modesto",
         "Fontana", "Moreno Valley", "Santa Clarita", "Glendale", "Huntington Beach",
         "Santa Rosa", "Oceanside", "Rancho Cucamonga", "Ontario", "Elk Grove" },
  TX = { "Houston", "San Antonio", "Dallas", "Austin", "Fort Worth", "El Paso", "Arlington",
         "Corpus Christi", "Plano", "Lubbock", "Laredo", "Irving", "Garland", "Frisco",
         "McKinney", "Amarillo", "Grand Prairie", "Brownsville", "Killeen", "Pasadena",
         "Mesquite", "McAllen", "Denton", "Waco", "Midland" },
  NY = { "New York", "Buffalo", "Yonkers", "Rochester", "Syracuse", "Albany", "New Rochelle",
         "Mount Vernon", "Schenectady", "Utica", "White Plains", "Troy", "Niagara Falls",
         "Binghamton", "Rome", "Ithaca" },
  WA = { "Seattle", "Spokane", "Tacoma", "Vancouver", "Bellevue", "Kent", "Everett", "Renton",
         "Spokane Valley", "Federal Way", "Yakima", "Kirkland", "Bellingham", "Olympia" },
}

-- Typical temperature of each state today, in tenths of a degree F.
local BASE = { CA = 740, TX = 890, NY = 610, WA = 560 }
local CONDITIONS = { "Clear", "Clouds", "Clouds", "Rain", "Clear", "Mist" }

M.LATENCY = { 0.010, 0.030 }

-- The cities of a state (a new array), or nil for a state it does not know.
function M.cities(state)
  local list = CITIES[state]
  if not list then return nil end
  return table.move(list, 1, #list, 1, {})
end

-- A 32-bit FNV-1a hash of a string.
local function hash(s)
  local h = 2166136261
  for i = 1, #s do h = ((h ~ s:byte(i)) * 16777619) & 0xffffffff end
  return h
end

-- The weather of a city, as OpenWeatherMap's JSON (units=imperial).
function M.answer(city, state)
  local h = hash(city .. "," .. state)
  local tenths = BASE[state] + h % 241 - 120          -- base +- 12 F
  return {
    name = city,
    main = { temp = tenths / 10, humidity = 20 + (h >> 8) % 70 },
    weather = { { main = CONDITIONS[1 + (h >> 16) % #CONDITIONS] } },
  }
end

-- Starts the API: a server counting lookups; returns {server = ...}.
function M.new()
  local braid = require "braid"
  local srv = braid.server({
    name = "fake_owm",
    init = function() return { lookups = 0, by_state = {}, inflight = {}, peak = {} } end,
    call = function(st, req)
      if req.op == "start" then
        local s = req.state
        st.lookups = st.lookups + 1
        st.by_state[s] = (st.by_state[s] or 0) + 1
        st.inflight[s] = (st.inflight[s] or 0) + 1
        if st.inflight[s] > (st.peak[s] or 0) then st.peak[s] = st.inflight[s] end
      elseif req.op == "end" then
        st.inflight[req.state] = st.inflight[req.state] - 1
      elseif req.op == "stats" then
        return { lookups = st.lookups, by_state = st.by_state, peak = st.peak }, st
      end
      return true, st
    end,
  })
  return { server = srv }
end

-- One lookup: blocks the calling task 10-30 ms.  Raises for an unknown
-- city (OpenWeatherMap's 404).
function M.weather(api, city, state)
  local braid = require "braid"
  if not BASE[state] then error("404 city not found: " .. city .. "," .. state, 0) end
  api.server:call({ op = "start", state = state })
  local lo, hi = M.LATENCY[1], M.LATENCY[2]
  braid.sleep(lo + (hi - lo) * (hash(city) % 1000) / 1000)
  api.server:call({ op = "end", state = state })
  return M.answer(city, state)
end

function M.stats(api) return api.server:call({ op = "stats" }) end
function M.close(api) api.server:stop() end

-- Sequentially, per state: {cities, min, max, mean} of the temperatures.
function M.expected(states)
  local out = {}
  for _, s in ipairs(states) do
    local min, max, sum, n = math.huge, -math.huge, 0, 0
    for _, city in ipairs(CITIES[s]) do
      local t = M.answer(city, s).main.temp
      min, max, sum, n = math.min(min, t), math.max(max, t), sum + t, n + 1
    end
    out[s] = { cities = n, min = min, max = max, mean = sum / n }
  end
  return out
end

return M
