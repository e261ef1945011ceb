-- weather_server.lua -- the essay's weather service as a real HTTP server.
--
--   braid examples/weather_server.lua [--port 4912] [--owm URL --key KEY] [--limit 50]
--   curl -i 'http://127.0.0.1:4912/weather?q=CA'
--   websocket: ws://127.0.0.1:4912/updates?q=CA&show=all|temp|wind|icon
--
-- GET /weather?q=<state> answers a JSON array with one object per city of
-- the state: {"name":..,"temp":..,"humidity":..,"wind":..,"weather":..,
-- "icon":..}, with Content-Type: application/json; charset=utf-8 and CORS
-- headers (Access-Control-Allow-Origin: *, -Methods, -Headers, -Max-Age).
--
--   braid.http.get  every city is fetched from an OpenWeatherMap-shaped
--                   API: by default examples/fake_owm_server.lua started
--                   in this process on loopback; --owm/--key point at the
--                   real one (https://api.openweathermap.org)
--   braid.pmap      the cities of a state are fetched 20 at a time
--   braid.memo      concurrent requests for one state share one lookup
--                   (single flight); kept 10 minutes
--   braid.server    a per-IP daily request counter: past --limit (50)
--                   requests a day, 429
--   braid.broker    every fresh lookup is published on "weather.<state>";
--                   /updates upgrades to a WebSocket that gets the
--                   state's updates through a ch:map view (show=temp: the
--                   temperatures, wind, icon, or all); its first message
--                   is {"state":..,"show":..,"subscribed":true}
local script_dir = (arg and arg[0] or ""):match("^(.*[/\\])") or "./"
if not package.path:find(script_dir .. "?.lua", 1, true) then
  package.path = script_dir .. "?.lua;" .. package.path
end

local braid = require "braid"

local M = {}

M.CORS = {
  ["Access-Control-Allow-Origin"] = "*",
  ["Access-Control-Allow-Methods"] = "GET, OPTIONS",
  ["Access-Control-Allow-Headers"] = "Content-Type",
  ["Access-Control-Max-Age"] = "86400",
}

-- The views of an update ({state=, cities={...}}) a WebSocket can ask for.
M.VIEWS = {
  all = function(u) return u end,
  temp = function(u)
    local t = {}
    for _, c in ipairs(u.cities) do t[#t + 1] = { name = c.name, temp = c.temp } end
    return { state = u.state, show = "temp", cities = t }
  end,
  wind = function(u)
    local t = {}
    for _, c in ipairs(u.cities) do t[#t + 1] = { name = c.name, wind = c.wind } end
    return { state = u.state, show = "wind", cities = t }
  end,
  icon = function(u)
    local t = {}
    for _, c in ipairs(u.cities) do t[#t + 1] = { name = c.name, icon = c.icon } end
    return { state = u.state, show = "icon", cities = t }
  end,
}

local function json_headers(extra)
  local h = { ["Content-Type"] = "application/json; charset=utf-8" }
  for k, v in pairs(M.CORS) do h[k] = v end
  for k, v in pairs(extra or {}) do h[k] = v end
  return h
end
M.json_headers = json_headers

-- Starts the service; opts: addr, owm (base URL), key, limit, ttl, workers.
-- Returns the braid.http server and {counter, memo, broker}.
function M.start(opts)
  local owm_url = assert(opts.owm, "opts.owm")
  local key = opts.key or "demo-key"
  local limit = opts.limit or 50
  local workers = opts.workers or 20
  local updates = braid.broker()

  local counter = braid.server({
    -- day: days since the epoch, UTC (os.time() // 86400; an integer
    -- compare per call, not a date to format).
    init = function() return { day = os.time() // 86400, by_ip = {} } end,
    call = function(st, ip)
      local day = os.time() // 86400
      if day ~= st.day then st.day, st.by_ip = day, {} end
      local n = (st.by_ip[ip] or 0) + 1
      st.by_ip[ip] = n
      return n, st
    end,
  })

  local memo = braid.memo(function(state)
    local cities = require("fake_owm").cities(state)
    if not cities then return false end
    local rows = braid.pmap(cities, function(city)
      local http = require("braid").http
      local url = owm_url .. "/data/2.5/weather?q=" .. http.escape(city .. "," .. state .. ",US") ..
        "&units=imperial&appid=" .. http.escape(key)
      for _ = 1, 5 do
        local r, err = http.get(url, { timeout = 10 })
        if not r then error("OpenWeatherMap: " .. tostring(err), 0) end
        if r.status == 200 then
          local w = require("cjson").decode(r.body)
          return { name = w.name, temp = w.main.temp, humidity = w.main.humidity,
                   wind = w.wind and w.wind.speed, weather = w.weather[1].main,
                   icon = w.weather[1].icon }
        elseif r.status == 429 then
          require("braid").sleep(tonumber(r.headers["retry-after"]) or 1)
        else
          error("OpenWeatherMap: " .. r.status .. " for " .. city, 0)
        end
      end
      error("OpenWeatherMap: still rate limited", 0)
    end, { workers = workers })
    updates:publish("weather." .. state, { state = state, cities = rows })
    -- What GET /weather answers, encoded once per lookup: a hit hands
    -- out one string (not the rows to decode and encode again).
    return require("cjson").encode(rows)
  end, { ttl = opts.ttl or 600 })
  local ok_headers = json_headers()       -- the same for every 200

  -- "1.2.3.4:5678" -> "1.2.3.4", "[::1]:5678" -> "::1" (a greedy match
  -- backtracks only over the port: a lazy one retries every split).
  local function client_ip(req)
    local r = req.remote
    local ip = r and r:match("^(.*):%d+$")
    return ip and (ip:match("^%[(.*)%]$") or ip) or r or "?"
  end

  local srv, err = braid.http.serve(opts.addr or "127.0.0.1:4912", function(req)
    local app = require "weather_server"
    local cj = require "cjson"
    local state = req.query.q and req.query.q:upper()
    if req.method == "OPTIONS" then return 204, app.CORS end
    if req.path == "/weather" then
      if not state then return 400, app.json_headers(), cj.encode({ error = "missing q" }) end
      local n = counter:call(client_ip(req))
      if n > limit then
        return 429, app.json_headers({ ["Retry-After"] = "86400" }),
          cj.encode({ error = "daily limit of " .. limit .. " requests reached" })
      end
      local body = memo:get(state)
      if not body then return 404, app.json_headers(), cj.encode({ error = "unknown state " .. state }) end
      return 200, ok_headers, body
    elseif req.path == "/updates" then
      local view = app.VIEWS[req.query.show or "all"]
      if not state or not view then
        return 400, app.json_headers(), cj.encode({ error = "q and show=all|temp|wind|icon" })
      end
      local ws, uerr = require("braid").http.upgrade(req)
      if not ws then return 400, app.json_headers(), cj.encode({ error = uerr }) end
      local sub = updates:subscribe("weather." .. state)
      local feed = req.query.show == "all" and sub or sub:map(view)
      -- First message: the subscription is in place (updates from now on).
      ws:send(cj.encode({ state = state, show = req.query.show or "all", subscribed = true }))
      while true do
        local v, ferr = feed:recv(0.2)
        if v ~= nil then
          if not ws:send(cj.encode(v)) then break end
        elseif ferr ~= "timeout" then
          break
        end
        local d, e = ws:recv(0)            -- notice the client going away
        if d == nil and e ~= "timeout" then break end
      end
      updates:unsubscribe(sub)
      return
    end
    return 404, app.json_headers(), cj.encode({ error = "not found" })
  end, opts.http)
  if not srv then return nil, err end
  return srv, { counter = counter, memo = memo, broker = updates }
end

local function main(argv)
  local o = { port = 4912 }
  local i = 1
  while i <= #argv do
    local a, v = argv[i], argv[i + 1]
    if a == "--port" then o.port = tonumber(v)
    elseif a == "--owm" then o.owm = v
    elseif a == "--key" then o.key = v
    elseif a == "--limit" then o.limit = tonumber(v)
    else
      io.stderr:write("usage: weather_server.lua [--port N] [--owm URL --key KEY] [--limit N]\n")
      os.exit(2)
    end
    i = i + 2
  end
  local fake, fake_api
  if not o.owm then
    fake, fake_api = assert(require("fake_owm_server").start("127.0.0.1:0", { key = "demo-key" }))
    o.owm, o.key = "http://" .. fake:addr(), "demo-key"
  end
  local srv, parts = assert(M.start({ addr = "127.0.0.1:" .. o.port, owm = o.owm, key = o.key, limit = o.limit }))
  print("weather service on http://" .. srv:addr() .. " (OpenWeatherMap: " .. o.owm .. ")")
  io.stdout:flush()
  braid.blocking(function() return io.read("a") end):await()   -- until stdin closes
  srv:close(2)
  parts.counter:stop()
  if fake then require("fake_owm_server").stop(fake, fake_api) end
end

package.loaded["weather_server"] = M
if arg and arg[0] and arg[0]:match("weather_server%.lua$") and ... ~= "weather_server" then
  main(arg)
end
return M
