-- twitter_analyzer.lua -- how many unique users could have seen each tweet?
--
--   braid examples/twitter_analyzer.lua [--user U] [--tokens N] [--once] [--http]
--   lua5.4 examples/twitter_analyzer.lua ...     (braid.so on LUA_CPATH)
--
-- For one user, count the unique users who could have seen each of their
-- tweets: the user's followers plus the followers of everyone who
-- retweeted it.  The Twitter API is simulated (fake_twitter.lua, beside
-- this file): every call takes a few milliseconds, listings come in pages,
-- and each API token may make at most `limit` calls per `window` seconds,
-- after which the API answers 429.
--
-- The crawl has four stages, which overlap in time:
--
--   timeline reader    pages of the user's tweets (max_id pagination)
--   retweeters reader  pages of each tweet's retweeters (cursors)
--   followers reader   pages of each retweeter's followers (cursors)
--   final reducer      the unique reach of every tweet
--
-- braid.worklist runs the first three: each page is an item, and reading
-- it pushes the items it leads to (the next page, the next stage).  The
-- user's own followers are a seed beside the timeline, so they are
-- fetched at once rather than after it; the worklist's key drops items
-- already seen (a user who retweeted five tweets is fetched once); and the
-- worklist knows exactly when everything pushed has been done, so there
-- is no sleep, timeout or polling to detect the end.
--
-- Every API call goes through a braid.pool of N token workers.  Each
-- worker holds its own token and its own braid.limiter, set below the
-- API's limit, and takes a limiter token before each call: it pauses
-- itself before the limit instead of hitting it, so the API never answers
-- 429.  More tokens, more calls per second: the script runs the crawl
-- with N tokens, then with one, and prints the speedup.
--
-- When braid has sockets (braid.net), or with --http, the API is a real
-- HTTP server on loopback (fake_twitter.serve: bearer tokens, 429 with
-- x-rate-limit-reset, max_id and cursor pagination) and every call is a
-- braid.http request; without, the workers call fake_twitter.get in
-- process.  The answer is the same either way.
--
-- Output: the table and the totals are deterministic; the lines starting
-- with "elapsed:" and "speedup:" are timings.  A progress line is drawn on
-- stderr when it is a terminal (BRAID_PROGRESS=0 or 1 forces it).

-- Modules beside this script; set before braid starts its workers, which
-- copy package.path.
local script_dir = (arg and arg[0] or ""):match("^(.*[/\\])") or "./"
package.path = script_dir .. "?.lua;" .. package.path

local braid = require "braid"
local twitter = require "fake_twitter"

local USAGE = "usage: twitter_analyzer.lua [--user U] [--tokens N] [--once] [--http]"

local opts = { user = 1, tokens = 4, once = false, http = braid.net ~= nil }
do
  local i = 1
  while arg and arg[i] do
    local a = arg[i]
    if a == "--once" then
      opts.once = true
    elseif a == "--http" then
      opts.http = true
    elseif (a == "--user" or a == "--tokens") and tonumber(arg[i + 1]) then
      opts[a:sub(3)] = math.tointeger(tonumber(arg[i + 1])) or error(USAGE, 0)
      i = i + 1
    else
      io.stderr:write(USAGE, "\n")
      os.exit(2)
    end
    i = i + 1
  end
end

-- Is stderr a terminal?  Lua cannot ask isatty(), but a shell started by
-- os.execute inherits our stderr and can.
local function progress_wanted()
  local force = os.getenv("BRAID_PROGRESS")
  if force then return force ~= "0" end
  local term = os.getenv("TERM")
  if not term or term == "dumb" then return false end
  return os.execute("[ -t 2 ]") == true
end

-- ---------------------------------------------------------------------
-- The crawl

-- Draws "pages read so far" on stderr, from one event per page read.
local function draw_progress(events, ntokens)
  local n = { timeline = 0, retweeters = 0, followers = 0 }
  local t0, drawn = braid.now(), -1
  for stage in events:iter() do
    n[stage] = n[stage] + 1
    local now = braid.now()
    if now - drawn >= 0.05 then
      drawn = now
      io.stderr:write(("\r  %d token%s: %3d timeline, %3d retweeters, %3d followers pages  %4.1f s ")
        :format(ntokens, ntokens == 1 and " " or "s", n.timeline, n.retweeters, n.followers,
                now - t0))
    end
  end
  io.stderr:write("\r", (" "):rep(78), "\r")
end

-- Crawls and reduces; returns the rows {id, retweeters, reach} (newest
-- tweet first) and the reach of all the tweets together.
local function analyze(api, base, user, ntokens, show)
  local cfg = api.cfg
  -- Each token's limiter: at most burst + rate = 6 + 36 = 42 calls in any
  -- window, against the 50 allowed (room for scheduling jitter).
  local rate = math.max(1, math.floor(cfg.limit * 0.72))
  local burst = math.max(1, math.floor(cfg.limit * 0.12))
  local pool = braid.pool(ntokens, function(i)
    return { token = "token-" .. i,
             limiter = braid.limiter({ rate = rate, per = cfg.window, burst = burst }) }
  end, { name = "token" })

  -- One API call on the first free token.  The limiter pauses the worker
  -- before the limit; were a 429 to come anyway, it waits for the window
  -- and retries (the API counts it, and the summary shows it).
  local function fetch(endpoint, params)
    return pool:submit(function(ctx, api, base, endpoint, params)
      while true do
        ctx.limiter:take()
        local r
        if base then
          r = twitter.http_get(base, ctx.token, endpoint, params)
        else
          r = twitter.get(api, ctx.token, endpoint, params)
        end
        if r.status ~= 429 then
          if r.status ~= 200 then error(endpoint .. ": " .. r.status .. " " .. r.error, 0) end
          return r
        end
        braid.sleep(r.reset)
      end
    end, api, base, endpoint, params):await()
  end

  local events = show and braid.chan(math.huge)
  local stages = {}

  function stages.timeline(item, push)
    local r = fetch("statuses/user_timeline",
      { user_id = item.user, count = cfg.timeline_page, max_id = item.max_id })
    if r.next_max_id then
      push({ stage = "timeline", user = item.user, max_id = r.next_max_id })
    end
    for _, t in ipairs(r.tweets) do
      if t.retweet_count > 0 then push({ stage = "retweeters", tweet = t.id, cursor = -1 }) end
    end
    return { tweets = r.tweets }
  end

  function stages.retweeters(item, push)
    local r = fetch("statuses/retweeters/ids", { id = item.tweet, cursor = item.cursor })
    if r.next_cursor ~= 0 then
      push({ stage = "retweeters", tweet = item.tweet, cursor = r.next_cursor })
    end
    for _, u in ipairs(r.ids) do push({ stage = "followers", user = u, cursor = -1 }) end
    return { tweet = item.tweet, retweeters = r.ids }
  end

  function stages.followers(item, push)
    local r = fetch("followers/ids", { user_id = item.user, cursor = item.cursor })
    if r.next_cursor ~= 0 then
      push({ stage = "followers", user = item.user, cursor = r.next_cursor })
    end
    return { user = item.user, followers = r.ids }
  end

  local printer = show and braid.go(draw_progress, events, ntokens)
  local records = braid.worklist({
    { stage = "timeline", user = user },
    { stage = "followers", user = user, cursor = -1 },   -- early: no need to wait for tweets
  }, function(item, push)
    local rec = stages[item.stage](item, push)
    if events then events:send(item.stage) end
    return rec
  end, {
    workers = 4 * ntokens,   -- enough requests queued to keep every token busy
    key = function(item)     -- one fetch per page: retweeters seen before are dropped
      return ("%s:%d:%s"):format(item.stage, item.user or item.tweet,
        item.cursor or item.max_id or "first")
    end,
  })
  pool:close()
  if printer then events:close(); printer:await() end

  -- The final reducer.
  local tweets, retweeters, followers = {}, {}, {}
  local function append(t, k, list)
    local l = t[k] or {}
    table.move(list, 1, #list, #l + 1, l)
    t[k] = l
  end
  for _, rec in ipairs(records) do
    if rec.tweets then
      for _, t in ipairs(rec.tweets) do tweets[#tweets + 1] = t.id end
    elseif rec.tweet then
      append(retweeters, rec.tweet, rec.retweeters)
    else
      append(followers, rec.user, rec.followers)
    end
  end
  table.sort(tweets, function(a, b) return a > b end)
  local rows, everyone, reach_all = {}, {}, 0
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
    rows[#rows + 1] = { id = t, retweeters = #rts, reach = n }
  end
  return rows, reach_all
end

-- One run against a fresh API: the results, the API's counters, seconds.
local function run(ntokens, show)
  local api = twitter.new()
  local srv = opts.http and assert(twitter.serve(api, "127.0.0.1:0"))
  local t0 = braid.now()
  local rows, reach = analyze(api, srv and "http://" .. srv:addr(), opts.user, ntokens, show)
  local elapsed = braid.now() - t0
  if srv then srv:close(1) end
  local stats = twitter.stats(api)
  twitter.close(api)
  return { rows = rows, reach = reach, stats = stats, elapsed = elapsed, cfg = api.cfg }
end

local show = progress_wanted()
local cfg = twitter.config()
print(("Twitter analyzer: user %d, %d tokens, the API allows %d calls per %g s per token")
  :format(opts.user, opts.tokens, cfg.limit, cfg.window))
local main = run(opts.tokens, show)

print()
print("   tweet  retweeters  unique reach")
local retweets = 0
for _, r in ipairs(main.rows) do
  print(("%8d  %10d  %12d"):format(r.id, r.retweeters, r.reach))
  retweets = retweets + r.retweeters
end
print()
print(("total: %d tweets, %d retweets, %d unique users reached by any tweet")
  :format(#main.rows, retweets, main.reach))
local by = main.stats.by_endpoint
print(("API calls: %d (timeline %d, retweeters %d, followers %d), 429 answers: %d")
  :format(main.stats.calls, by["statuses/user_timeline"] or 0, by["statuses/retweeters/ids"] or 0,
          by["followers/ids"] or 0, main.stats.rejected))

if opts.once or opts.tokens == 1 then
  print(("elapsed: %.2f s with %d token%s"):format(main.elapsed, opts.tokens,
    opts.tokens == 1 and "" or "s"))
else
  local one = run(1, show)
  local same = #one.rows == #main.rows and one.reach == main.reach
  for i, r in ipairs(main.rows) do
    local o = one.rows[i]
    same = same and o.id == r.id and o.retweeters == r.retweeters and o.reach == r.reach
  end
  print(("with 1 token: %s answer, %d API calls, 429 answers: %d")
    :format(same and "the same" or "A DIFFERENT", one.stats.calls, one.stats.rejected))
  print(("elapsed: %.2f s with %d tokens, %.2f s with 1 token")
    :format(main.elapsed, opts.tokens, one.elapsed))
  print(("speedup: %.1fx with %d tokens"):format(one.elapsed / main.elapsed, opts.tokens))
  if not same then os.exit(1) end
end
