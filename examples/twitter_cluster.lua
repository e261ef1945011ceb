-- twitter_cluster.lua -- the Twitter analyzer (twitter_analyzer.lua) as
-- several processes sharing one crawl through a NATS server.
--
--   lua5.4 examples/twitter_cluster.lua URL coordinator [--user U] [--tokens N] [--name NAME]
--   lua5.4 examples/twitter_cluster.lua URL helper      [--tokens N] [--name NAME]
--
-- Every process runs the same stages.  The pages to read are the items of
-- braid.nats.worklist(nc, NAME, ...): the coordinator passes the seeds and
-- gets every page's record back, wherever it was read; helpers lend their
-- workers.  API calls go to the queue-group service "NAME.api": each
-- process serves it with its own tokens (a braid.pool of token workers,
-- each with its limiter, against its own copy of the simulated API, whose
-- answers depend only on the request), so a call is answered by whichever
-- process has a free token.  The coordinator prints the table of
-- twitter_analyzer.lua and, on "NAME.calls", collects how many API calls
-- each process made.
local script_dir = (arg and arg[0] or ""):match("^(.*[/\\])") or "./"
package.path = script_dir .. "?.lua;" .. package.path

local braid = require "braid"
local twitter = require "fake_twitter"

local url, role = arg[1], arg[2]
local opts = { user = 1, tokens = 2, name = "crawl" }
for i = 3, #arg, 2 do
  local k = (arg[i] or ""):match("^%-%-(%w+)$")
  if not k or arg[i + 1] == nil then
    io.stderr:write("usage: twitter_cluster.lua URL coordinator|helper [--user U] [--tokens N] [--name NAME]\n")
    os.exit(2)
  end
  opts[k] = tonumber(arg[i + 1]) and math.tointeger(tonumber(arg[i + 1])) or arg[i + 1]
end
local me = ("%s#%d"):format(role, tonumber(io.open("/proc/self/stat"):read("l"):match("^(%d+)")))

local nc = assert(braid.nats.connect(url, { name = me, reconnect_wait = 0.2 }))
local api = twitter.new()
local cfg = api.cfg
local rate = math.max(1, math.floor(cfg.limit * 0.72))
local burst = math.max(1, math.floor(cfg.limit * 0.12))
local pool = braid.pool(opts.tokens, function(i)
  return { token = "token-" .. i,
           limiter = braid.limiter({ rate = rate, per = cfg.window, burst = burst }) }
end, { name = "token" })

-- This process's share of the token service.
local svc = nc:serve(opts.name .. ".api", function(req)
  return pool:submit(function(ctx, api, endpoint, params)
    while true do
      ctx.limiter:take()
      local r = twitter.get(api, ctx.token, endpoint, params)
      if r.status ~= 429 then return r end
      braid.sleep(r.reset)
    end
  end, api, req.endpoint, req.params or {}):await()
end, { workers = 4 * opts.tokens })
nc:flush(5)

local function fetch(endpoint, params)
  for _ = 1, 10 do
    -- a short timeout: a call routed to a process that just died is retried
    local r = nc:request(opts.name .. ".api", { endpoint = endpoint, params = params }, 3)
    if r then
      if r.status ~= 200 then error(endpoint .. ": " .. tostring(r.status) .. " " .. tostring(r.error), 0) end
      return r
    end
    braid.sleep(0.1)       -- "no responders" while a process restarts
  end
  error(endpoint .. ": no answer", 0)
end

local stages = {}
function stages.timeline(item, push)
  local r = fetch("statuses/user_timeline",
    { user_id = item.user, count = cfg.timeline_page, max_id = item.max_id })
  if r.next_max_id then push({ stage = "timeline", user = item.user, max_id = r.next_max_id }) end
  local ids = {}
  for _, t in ipairs(r.tweets or {}) do
    ids[#ids + 1] = t.id
    if t.retweet_count > 0 then push({ stage = "retweeters", tweet = t.id, cursor = -1 }) end
  end
  return { tweets = ids }
end
function stages.retweeters(item, push)
  local r = fetch("statuses/retweeters/ids", { id = item.tweet, cursor = item.cursor })
  if r.next_cursor ~= 0 then push({ stage = "retweeters", tweet = item.tweet, cursor = r.next_cursor }) end
  for _, u in ipairs(r.ids or {}) do push({ stage = "followers", user = u, cursor = -1 }) end
  return { tweet = item.tweet, retweeters = r.ids or {} }
end
function stages.followers(item, push)
  local r = fetch("followers/ids", { user_id = item.user, cursor = item.cursor })
  if r.next_cursor ~= 0 then push({ stage = "followers", user = item.user, cursor = r.next_cursor }) end
  return { user = item.user, followers = r.ids or {} }
end

local function work(item, push) return stages[item.stage](item, push) end
local wopts = {
  workers = 4 * opts.tokens, ack_wait = 2,
  key = function(item)
    return ("%s:%d:%s"):format(item.stage, item.user or item.tweet, item.cursor or item.max_id or "first")
  end,
}

local function report_calls()
  nc:publish(opts.name .. ".calls", { who = me, calls = twitter.stats(api).calls })
  nc:flush(5)
end

if role == "helper" then
  local n = braid.nats.worklist(nc, opts.name, nil, work, wopts)
  report_calls()
  braid.sleep(1)            -- keep serving tokens while the others finish
  io.stderr:write(("%s: %d pages\n"):format(me, n))
  svc:stop(5)
  nc:close()
  os.exit(0)
end

-- The coordinator.
local calls = nc:subscribe(opts.name .. ".calls", { buffer = 100 })
local t0 = braid.now()
local records = braid.nats.worklist(nc, opts.name, {
  { stage = "timeline", user = opts.user },
  { stage = "followers", user = opts.user, cursor = -1 },
}, work, wopts)
local elapsed = braid.now() - t0
report_calls()

-- The final reducer (as twitter_analyzer.lua's).
local user = opts.user
local tweets, retweeters, followers = {}, {}, {}
local function append(t, k, list)
  local l = t[k] or {}
  table.move(list, 1, #list, #l + 1, l)
  t[k] = l
end
for _, rec in ipairs(records) do
  if rec.tweets then
    for _, t in ipairs(rec.tweets) do tweets[#tweets + 1] = t end
  elseif rec.tweet then
    append(retweeters, rec.tweet, rec.retweeters)
  else
    append(followers, rec.user, rec.followers)
  end
end
table.sort(tweets, function(a, b) return a > b end)
print("   tweet  retweeters  unique reach")
local everyone, reach_all, retweets = {}, 0, 0
for _, t in ipairs(tweets) do
  local seen, n = { [user] = true }, 0
  local function add(list)
    for _, u in ipairs(list or {}) do
      if not seen[u] then seen[u] = true; n = n + 1 end
      if u ~= user and not everyone[u] then everyone[u] = true; reach_all = reach_all + 1 end
    end
  end
  add(followers[user])
  local rts = retweeters[t] or {}
  for _, r in ipairs(rts) do add(followers[r]) end
  print(("%8d  %10d  %12d"):format(t, #rts, n))
  retweets = retweets + #rts
end
print()
print(("total: %d tweets, %d retweets, %d unique users reached by any tweet")
  :format(#tweets, retweets, reach_all))
local deadline = braid.now() + 3
local who = {}
while braid.now() < deadline do
  local m = calls:recv(0.5)
  if m then who[#who + 1] = m.data end
  if #who >= (tonumber(os.getenv("DEMO_PROCESSES") or "1") or 1) then break end
end
table.sort(who, function(a, b) return a.who < b.who end)
for _, w in ipairs(who) do print(("API calls by %-22s %d"):format(w.who, w.calls)) end
print(("elapsed: %.2f s"):format(elapsed))
svc:stop(5)
nc:close()
