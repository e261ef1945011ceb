-- fake_twitter.lua -- a simulated Twitter API for the braid examples.
--
--   local twitter = require "fake_twitter"
--   local api = twitter.new{ seed = 7 }            -- starts the API (a braid.server)
--   local r = twitter.get(api, "token-1", "followers/ids", { user_id = 1, cursor = -1 })
--   --> { status = 200, ids = {...}, next_cursor = 50 }   (0: no more pages)
--   twitter.stats(api)  --> { calls, ok, rejected, by_endpoint = {...} }
--   twitter.close(api)
--   twitter.expected(cfg, user_id)   -- the answer, computed sequentially
--
-- Endpoints (Twitter's v1.1 names; page sizes shrunk so that pagination
-- happens at this small scale):
--
--   statuses/user_timeline   {user_id, count, max_id}  -> tweets, next_max_id
--                              tweets newest first, each {id, retweet_count};
--                              max_id: only tweets with id <= max_id;
--                              next_max_id is nil on the last page
--   statuses/retweeters/ids  {id, cursor}              -> ids, next_cursor
--   followers/ids            {user_id, cursor}         -> ids, next_cursor
--                              cursor -1 is the first page, next_cursor 0
--                              means there is no next page (Twitter's rule)
--
-- Every call costs some milliseconds (braid.sleep) and counts against the
-- token's rate limit: at most cfg.limit calls in any cfg.window seconds
-- per token.  A call over the limit is answered {status = 429, reset = s}
-- at once, with no data.
--
-- Design notes
--
-- The data is a pure function of the seed: users 1..cfg.users, each with
-- a timeline, followers, and retweeters for every tweet, all derived by
-- hashing (no math.random, whose state would be per Lua state).  So any
-- task, on any worker, regenerates exactly the same world from the small
-- cfg table it was given: only cfg travels, never the data.
--
-- What is mutable -- the rate-limit window of each token and the call
-- counters -- must be shared by every task that calls the API, and tasks
-- share no Lua memory.  So it lives in one braid.server (the API's "front
-- door"): each call asks it for a verdict, which also counts the call.
-- The value returned by new() is a plain table {cfg, server}; it can be
-- passed to tasks, and every copy talks to the same server.  The functions
-- of this module take it as their first argument (a copied table has no
-- metatable, so no methods).
--
-- This file does not require braid at load time: expected() and the data
-- functions run under a plain lua5.4 (the smoke tests use that).
local M = {}

M.defaults = {
  seed = 20240611,
  users = 10000,              -- user ids 1..users
  limit = 50,                 -- calls per token ...
  window = 0.25,              -- ... in any window of this many seconds
  latency = { 0.002, 0.006 }, -- seconds per call, min and max
  timeline_page = 10,         -- tweets per page (the most `count` may ask)
  retweeters_page = 20,       -- ids per page
  followers_page = 100,       -- ids per page
}

-- cfg: the defaults, overridden by opts.
function M.config(opts)
  local cfg = {}
  for k, v in pairs(M.defaults) do cfg[k] = v end
  for k, v in pairs(opts or {}) do cfg[k] = v end
  return cfg
end

-- ---------------------------------------------------------------------
-- The world: pure functions of cfg

-- A 32-bit hash of (seed, a, b).
local function hash(seed, a, b)
  local h = (seed ~ (a * 0x9E3779B1) ~ (b * 0x85EBCA77)) & 0xffffffff
  h = ((h ~ (h >> 16)) * 0x7feb352d) & 0xffffffff
  h = ((h ~ (h >> 15)) * 0x846ca68b) & 0xffffffff
  return h ~ (h >> 16)
end

local function unit(seed, a, b) return hash(seed, a, b) / 4294967296.0 end

-- Tags keep the hash streams of different facts apart.
local T_NTWEETS, T_NFOLLOWERS, T_FOLLOWER, T_NRT, T_RT, T_RTSRC = 1, 2, 3, 4, 5, 6

-- Up to `count` distinct ids in 1..cfg.users, never `except`, in a fixed
-- pseudo-random order.
local function pick(cfg, tag, key, count, except, from)
  local out, seen = {}, {}
  for k = 1, count do
    local id
    if from then
      -- mostly from `from` (retweeters are mostly followers), else anyone
      if #from > 0 and unit(cfg.seed, T_RTSRC * 1000003 + key, k) < 0.8 then
        id = from[1 + hash(cfg.seed, tag * 1000003 + key, k) % #from]
      else
        id = 1 + hash(cfg.seed, tag * 1000003 + key, -k) % cfg.users
      end
    else
      id = 1 + hash(cfg.seed, tag * 1000003 + key, k) % cfg.users
    end
    if not seen[id] and id ~= except then
      seen[id] = true
      out[#out + 1] = id
    end
  end
  return out
end

local function valid_user(cfg, u)
  return math.type(u) == "integer" and u >= 1 and u <= cfg.users
end

-- The followers of user u (a few have many, most have few).
function M.followers_of(cfg, u)
  local n = 3 + math.floor(unit(cfg.seed, T_NFOLLOWERS, u) ^ 3 * 260)
  if u == 1 then n = 130 end          -- the demo's user is well followed
  return pick(cfg, T_FOLLOWER, u, n, u)
end

local function ntweets(cfg, u)
  if u == 1 then return 24 end       -- the demo's user: three pages
  return 10 + hash(cfg.seed, T_NTWEETS, u) % 31
end

-- The tweet ids of user u, newest (largest id) first.  Ids are
-- u * 1000 + k for u's k-th tweet, so they grow with time like Twitter's.
function M.tweets_of(cfg, u)
  local n = ntweets(cfg, u)
  local out = {}
  for k = n, 1, -1 do out[#out + 1] = u * 1000 + k end
  return out
end

local function author_of(cfg, tweet)
  local u, k = tweet // 1000, tweet % 1000
  if not valid_user(cfg, u) or k < 1 then return nil end
  if k > ntweets(cfg, u) then return nil end
  return u
end

-- The users who retweeted a tweet: mostly the author's followers.
function M.retweeters_of(cfg, tweet)
  local author = author_of(cfg, tweet)
  if not author then return {} end
  local r = unit(cfg.seed, T_NRT, tweet)
  local n = r < 0.15 and 0 or math.floor(r ^ 2 * 36)
  return pick(cfg, T_RT, tweet, n, author, M.followers_of(cfg, author))
end

-- One page of a list: list[first .. first + size - 1] and the next
-- offset (0 when this page is the last).
local function slice(list, first, size)
  local items = {}
  for i = first, math.min(#list, first + size - 1) do items[#items + 1] = list[i] end
  return items, (first + size <= #list) and first + size or 0
end

-- The answer of an endpoint, without latency or rate limit.
function M.answer(cfg, endpoint, p)
  p = p or {}
  if endpoint == "statuses/user_timeline" then
    if not valid_user(cfg, p.user_id) then return { status = 404, error = "no such user" } end
    local size = math.min(p.count or cfg.timeline_page, cfg.timeline_page)
    local all, tweets = M.tweets_of(cfg, p.user_id), {}
    for _, id in ipairs(all) do
      if p.max_id == nil or id <= p.max_id then
        if #tweets == size then
          return { status = 200, tweets = tweets, next_max_id = id }
        end
        tweets[#tweets + 1] = { id = id, retweet_count = #M.retweeters_of(cfg, id) }
      end
    end
    return { status = 200, tweets = tweets }
  end
  local list, size
  if endpoint == "statuses/retweeters/ids" then
    if not author_of(cfg, p.id) then return { status = 404, error = "no such tweet" } end
    list, size = M.retweeters_of(cfg, p.id), cfg.retweeters_page
  elseif endpoint == "followers/ids" then
    if not valid_user(cfg, p.user_id) then return { status = 404, error = "no such user" } end
    list, size = M.followers_of(cfg, p.user_id), cfg.followers_page
  else
    return { status = 404, error = "no such endpoint: " .. tostring(endpoint) }
  end
  local cursor = p.cursor or -1
  if cursor == -1 then cursor = 1 end
  if math.type(cursor) ~= "integer" or cursor < 1 then
    return { status = 400, error = "bad cursor" }
  end
  local ids, next_cursor = slice(list, cursor, size)
  return { status = 200, ids = ids, next_cursor = next_cursor }
end

-- ---------------------------------------------------------------------
-- The API: a server holding the rate-limit windows and the counters

-- The front door's state: per token, the times of its calls in the last
-- window (a queue: t[first..last]).
local function front_door(cfg)
  local braid = require "braid"
  return braid.server({
    name = "fake_twitter",
    init = function()
      return { tokens = {}, calls = 0, ok = 0, rejected = 0, by_endpoint = {} }
    end,
    call = function(st, req)
      if req == "stats" then
        local by = {}
        for k, v in pairs(st.by_endpoint) do by[k] = v end
        return { calls = st.calls, ok = st.ok, rejected = st.rejected, by_endpoint = by }, st
      end
      local now = braid.now()
      local q = st.tokens[req.token]
      if q == nil then
        q = { first = 1, last = 0 }
        st.tokens[req.token] = q
      end
      while q.first <= q.last and now - q[q.first] >= cfg.window do
        q[q.first] = nil
        q.first = q.first + 1
      end
      st.calls = st.calls + 1
      if q.last - q.first + 1 >= cfg.limit then
        st.rejected = st.rejected + 1
        return { status = 429, reset = q[q.first] + cfg.window - now }, st
      end
      q.last = q.last + 1
      q[q.last] = now
      st.ok = st.ok + 1
      st.by_endpoint[req.endpoint] = (st.by_endpoint[req.endpoint] or 0) + 1
      return { status = 200 }, st
    end,
  })
end

-- Starts an API; returns the handle {cfg = cfg, server = server}.
function M.new(opts)
  local cfg = M.config(opts)
  return { cfg = cfg, server = front_door(cfg) }
end

-- The latency of a request: the same request always costs the same.
local function latency(cfg, endpoint, p)
  local lo, hi = cfg.latency[1], cfg.latency[2]
  local key = (p.user_id or p.id or 0) * 7 + #endpoint
  return lo + (hi - lo) * unit(cfg.seed, key, p.cursor or p.max_id or 0)
end

-- One API call with token `token`: the response table (status 200, 429,
-- 400 or 404).  Blocks the calling task for the call's latency.
function M.get(api, token, endpoint, params)
  local braid = require "braid"
  params = params or {}
  local verdict = api.server:call({ token = token, endpoint = endpoint }, { timeout = 30 })
  if verdict.status ~= 200 then
    braid.sleep(api.cfg.latency[1])
    return verdict
  end
  braid.sleep(latency(api.cfg, endpoint, params))
  return M.answer(api.cfg, endpoint, params)
end

-- The API's counters: calls (all), ok, rejected (429), by_endpoint (ok
-- calls per endpoint).
function M.stats(api)
  return api.server:call("stats")
end

function M.close(api)
  api.server:stop()
end

-- ---------------------------------------------------------------------
-- The reference answer, sequential, straight from the data

-- For user u: each tweet's retweeter count and unique reach (u's
-- followers plus the followers of every retweeter, u excluded), the
-- reach of all tweets together, and the number of calls per endpoint that
-- a crawl fetching every page once needs.
function M.expected(cfg, u)
  cfg = M.config(cfg)
  local function pages(n, size) return math.max(1, (n + size - 1) // size) end
  local tweets = M.tweets_of(cfg, u)
  local calls = {
    ["statuses/user_timeline"] = pages(#tweets, cfg.timeline_page),
    ["statuses/retweeters/ids"] = 0,
    ["followers/ids"] = 0,
  }
  local fetched = {}
  local function followers(v)
    local f = M.followers_of(cfg, v)
    if not fetched[v] then
      fetched[v] = true
      calls["followers/ids"] = calls["followers/ids"] + pages(#f, cfg.followers_page)
    end
    return f
  end
  local own = followers(u)
  local rows, all, nall, retweets = {}, {}, 0, 0
  for _, t in ipairs(tweets) do
    local rts = M.retweeters_of(cfg, t)
    if #rts > 0 then   -- a tweet with no retweets needs no retweeters call
      calls["statuses/retweeters/ids"] = calls["statuses/retweeters/ids"]
        + pages(#rts, cfg.retweeters_page)
    end
    retweets = retweets + #rts
    local seen, n = { [u] = true }, 0
    local function add(list)
      for _, v in ipairs(list) do
        if not seen[v] then seen[v] = true; n = n + 1 end
        if v ~= u and not all[v] then all[v] = true; nall = nall + 1 end
      end
    end
    add(own)
    for _, r in ipairs(rts) do add(followers(r)) end
    rows[#rows + 1] = { id = t, retweeters = #rts, reach = n }
  end
  local total = 0
  for _, n in pairs(calls) do total = total + n end
  calls.total = total
  return { user = u, tweets = rows, retweets = retweets, reach = nall, calls = calls }
end

-- The API over HTTP (braid.http), as twitter_analyzer.lua calls it when
-- braid has sockets (or with --http):
--   GET /1.1/<endpoint>.json?<params>   Authorization: Bearer <token>
--   200 and the response table as JSON; 401 without a bearer token;
--   429 when the token overspent its window, with x-rate-limit-reset: the
--   seconds until its window frees a call (a fraction: windows here are
--   a quarter second); 400/404 as M.get answers them.
-- Pagination is M.get's: max_id for timelines, cursor for id lists.
function M.serve(api, addr)
  local braid = require "braid"
  return braid.http.serve(addr or "127.0.0.1:0", function(req)
    local cj, tw = require "cjson", require "fake_twitter"
    local json = { ["content-type"] = "application/json; charset=utf-8" }
    local endpoint = req.path:match("^/1%.1/(.+)%.json$")
    if not endpoint then return 404, json, '{"errors":[{"message":"not found"}]}' end
    local token = (req.headers.authorization or ""):match("^Bearer%s+(%S+)$")
    if not token then return 401, json, '{"errors":[{"message":"bearer token required"}]}' end
    local p = {}
    for k, v in pairs(req.query) do p[k] = math.tointeger(tonumber(v)) or tonumber(v) or v end
    local r = tw.get(api, token, endpoint, p)
    if r.status == 429 then
      json["x-rate-limit-reset"] = ("%.3f"):format(r.reset)
      return 429, json, '{"errors":[{"code":88,"message":"Rate limit exceeded"}]}'
    end
    return r.status, json, cj.encode(r)
  end)
end

-- One call over HTTP: the same table as M.get (JSON numbers come back as
-- Lua numbers; integral ones are made integers again).
function M.http_get(base, token, endpoint, params)
  local http = require("braid").http
  local url = base .. "/1.1/" .. endpoint .. ".json"
  local qs = http.encode_query(params or {})
  if qs ~= "" then url = url .. "?" .. qs end
  local r, err = http.get(url, { headers = { authorization = "Bearer " .. token }, timeout = 30 })
  if not r then return { status = 599, error = tostring(err) } end
  if r.status == 429 then
    return { status = 429, reset = tonumber(r.headers["x-rate-limit-reset"]) or 1 }
  end
  local function ints(v)
    if type(v) == "table" then
      for k, x in pairs(v) do v[k] = ints(x) end
      return v
    end
    return math.type(v) == "float" and math.tointeger(v) or v
  end
  local t = ints(require("cjson").decode(r.body))
  t.status = r.status
  return t
end

return M
