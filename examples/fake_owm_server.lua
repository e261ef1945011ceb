-- fake_owm_server.lua -- an OpenWeatherMap-shaped HTTP API on loopback,
-- for examples/weather_server.lua.
--
--   braid examples/fake_owm_server.lua [--port N] [--key KEY] [--rate R]
--   local fake = require "fake_owm_server"
--   local srv, api = fake.start("127.0.0.1:0", { key = "k", rate = 200 })
--
-- GET /data/2.5/weather?q=<city>,<state>,US&units=imperial&appid=<key>
--   200  {"name":..., "main":{"temp":..,"humidity":..}, "wind":{"speed":..},
--         "weather":[{"main":..,"icon":..}], "cod":200}
--   401  wrong or missing appid        404  unknown city
--   429  the API spent its rate (a token bucket: `rate` requests/s, burst
--        `rate`), with Retry-After: 1
-- GET /stats -> {"lookups":N,"by_state":{..},"peak":{..}} (lookups of a state
--   in flight at once, as fake_owm.lua counts them)
--
-- The data is fake_owm.lua's (beside this file): the weather is a pure
-- function of the city's name; each lookup sleeps 10-30 ms (the network).
local script_dir = (arg and arg[0] or ""):match("^(.*[/\\])") or "./"
if not package.path:find(script_dir .. "?.lua", 1, true) then
  package.path = script_dir .. "?.lua;" .. package.path
end

local braid = require "braid"
local owm = require "fake_owm"

local M = {}

local ICONS = { Clear = "01d", Clouds = "03d", Rain = "10d", Mist = "50d" }

-- The JSON body of one city's weather (fake_owm's answer plus wind, icon).
function M.body(city, state)
  local a = owm.answer(city, state)
  local h = 0
  for i = 1, #city do h = (h * 31 + city:byte(i)) % 1000 end
  a.wind = { speed = h % 250 / 10 }
  a.weather[1].icon = ICONS[a.weather[1].main] or "01d"
  a.cod = 200
  return a
end

-- Starts the API on addr; returns the braid.http server and the counters
-- (fake_owm's api, for owm.stats).
function M.start(addr, opts)
  opts = opts or {}
  local key = opts.key or "demo-key"
  local api = owm.new()
  -- The rate limit: a token bucket of `rate` calls a second (burst `rate`)
  -- in a braid.server, stopped by M.stop.
  local rate = opts.rate or 400
  local lim = braid.server({
    init = function() return { tokens = rate, t = braid.now() } end,
    call = function(st)
      local now = require("braid").now()
      st.tokens = math.min(rate, st.tokens + (now - st.t) * rate)
      st.t = now
      if st.tokens < 1 then return false, st end
      st.tokens = st.tokens - 1
      return true, st
    end,
  })
  api.rate = lim
  local json = { ["Content-Type"] = "application/json; charset=utf-8" }
  local srv, err = braid.http.serve(addr, function(req)
    local cj = require "cjson"
    if req.path == "/stats" then return 200, json, cj.encode(require("fake_owm").stats(api)) end
    if req.path ~= "/data/2.5/weather" then
      return 404, json, cj.encode({ cod = "404", message = "not found" })
    end
    if req.query.appid ~= key then
      return 401, json, cj.encode({ cod = 401, message = "Invalid API key." })
    end
    if not lim:call(true) then
      return 429, { ["Content-Type"] = json["Content-Type"], ["Retry-After"] = "1" },
        cj.encode({ cod = 429, message = "rate limit exceeded" })
    end
    local city, state = (req.query.q or ""):match("^([^,]+),(%u%u)")
    local fake = require "fake_owm"
    local known = false
    for _, c in ipairs(state and fake.cities(state) or {}) do
      if c == city then known = true break end
    end
    if not known then
      return 404, json, cj.encode({ cod = "404", message = "city not found" })
    end
    fake.weather(api, city, state)          -- counts, sleeps 10-30 ms
    return 200, json, cj.encode(require("fake_owm_server").body(city, state))
  end)
  if not srv then return nil, err end
  return srv, api
end

-- Stops what start started.
function M.stop(srv, api)
  srv:close(1)
  api.rate:stop()
  owm.close(api)
end

-- As a script: serve until stdin closes (or the process is killed).
local function main(argv)
  local port, key, rate = 0, nil, nil
  local i = 1
  while i <= #argv do
    local a = argv[i]
    if a == "--port" then port = tonumber(argv[i + 1]); i = i + 1
    elseif a == "--key" then key = argv[i + 1]; i = i + 1
    elseif a == "--rate" then rate = tonumber(argv[i + 1]); i = i + 1
    else io.stderr:write("usage: fake_owm_server.lua [--port N] [--key KEY] [--rate R]\n"); os.exit(2) end
    i = i + 1
  end
  local srv, api = assert(M.start("127.0.0.1:" .. port, { key = key, rate = rate }))
  print("fake OpenWeatherMap on http://" .. srv:addr())
  io.stdout:flush()
  braid.blocking(function() return io.read("a") end):await()
  M.stop(srv, api)
end

if arg and arg[0] and arg[0]:match("fake_owm_server%.lua$") and ... ~= "fake_owm_server" then
  main(arg)
end
package.loaded["fake_owm_server"] = M
return M
