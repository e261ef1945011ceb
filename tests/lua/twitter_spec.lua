-- twitter_spec.lua: the essay's "Twitter analyzer", as a test of the
-- patterns working together.
--
-- For one user, count how many unique users could have seen each of their
-- tweets: the user's followers plus the followers of everyone who
-- retweeted it.  The API is simulated: deterministic data from a seed,
-- latency per call, pagination (max_id for the timeline, cursors for
-- retweeters and followers), and a rate limit per token, enforced by the
-- API (a braid.server), that answers "429" when exceeded.
--
-- The analyzer: a braid.pool of N token workers, each holding its own
-- braid.limiter and pausing itself before the limit; braid.worklist for
-- pagination and fan-out, with the user's own followers fetched at once
-- (without waiting for the timeline), users already fetched de-duplicated
-- by key, and completion detected exactly (no sleeps, no polling).  The
-- counts are checked against a direct computation from the generator.
local braid = require "braid"

local T = 30

-- ---------------------------------------------------------------------
-- The data (pure functions of the seed: the same in every task)

local SEED = 20240611
local USERS = 300            -- user ids 1..USERS; the analyzed user is 1
local TWEETS = 30            -- the user's tweets: ids 1001..1030
local TIMELINE_PAGE, RETWEETERS_PAGE, FOLLOWERS_PAGE = 10, 20, 50

local function hash(a, b)
  local h = (a * 1103515245 + b * 12345 + SEED) & 0xffffffff
  h = (h ~ (h >> 13)) * 2654435761 & 0xffffffff
  return h ~ (h >> 16)
end

-- distinct pseudo-random ids in lo..hi, up to count of them, in a fixed order
local function pick(tag, key, count, lo, hi, except)
  local out, seen = {}, {}
  for k = 1, count do
    local id = lo + hash(key * 7 + tag, k) % (hi - lo + 1)
    if not seen[id] and id ~= except then
      seen[id] = true
      out[#out + 1] = id
    end
  end
  return out
end

local function tweets_of(user)      -- newest first
  local out = {}
  if user ~= 1 then return out end
  for i = TWEETS, 1, -1 do out[#out + 1] = 1000 + i end
  return out
end

local function retweeters_of(tweet)
  return pick(1, tweet, hash(tweet, 1) % 41, 2, USERS)
end

local function followers_of(user)
  return pick(2, user, hash(user, 2) % 120, 1, USERS, user)
end

-- One page of a listing: items[first .. first + size - 1]; next cursor or nil.
local function page(list, first, size)
  local items = {}
  for i = first, math.min(#list, first + size - 1) do items[#items + 1] = list[i] end
  local nxt = first + size <= #list and first + size or nil
  return items, nxt
end

-- ---------------------------------------------------------------------
-- The simulated API

local LATENCY = 0.003        -- seconds per call
local LIMIT, WINDOW = 40, 0.25   -- per token: at most 40 calls in any 0.25 s

-- The API's front door: a server that counts calls and enforces the rate
-- limit per token over a sliding window.
local function api_server()
  return braid.server({
    init = function() return { times = {}, calls = 0, rejected = 0, by_kind = {} } end,
    call = function(st, req)
      if req == "stats" then
        return { calls = st.calls, rejected = st.rejected, by_kind = st.by_kind }, st
      end
      local now = braid.now()
      local times = st.times[req.token] or {}
      local recent = {}
      for _, t in ipairs(times) do
        if now - t < WINDOW then recent[#recent + 1] = t end
      end
      if #recent >= LIMIT then
        st.rejected = st.rejected + 1
        st.times[req.token] = recent
        return "429", st
      end
      recent[#recent + 1] = now
      st.times[req.token] = recent
      st.calls = st.calls + 1
      st.by_kind[req.kind] = (st.by_kind[req.kind] or 0) + 1
      return "200", st
    end,
  })
end

-- One API call from a token worker: latency, the rate-limit verdict, then
-- the page.  Item kinds: timeline {user, max_id}, retweeters {tweet,
-- cursor}, followers {user, cursor}.
local function api_call(api, token, item)
  braid.sleep(LATENCY)
  local status = api:call({ token = token, kind = item.kind })
  if status ~= "200" then return { status = status } end
  if item.kind == "timeline" then
    local all = tweets_of(item.user)
    local first = 1
    if item.max_id then
      first = #all + 1
      for i, id in ipairs(all) do if id <= item.max_id then first = i; break end end
    end
    local items, nxt = page(all, first, TIMELINE_PAGE)
    return { status = status, items = items, next_max_id = nxt and all[nxt] or nil }
  elseif item.kind == "retweeters" then
    local items, nxt = page(retweeters_of(item.tweet), item.cursor, RETWEETERS_PAGE)
    return { status = status, items = items, next_cursor = nxt }
  else
    local items, nxt = page(followers_of(item.user), item.cursor, FOLLOWERS_PAGE)
    return { status = status, items = items, next_cursor = nxt }
  end
end

-- ---------------------------------------------------------------------
-- The analyzer

local function analyze(user, ntokens, api)
  -- Each token worker keeps its token and its own limiter, set a little
  -- under the API's limit: at most burst + rate * WINDOW = 4 + 28 = 32
  -- calls in a window, against 40 allowed (margin for timing jitter).
  local pool = braid.pool(ntokens, function(i)
    return { token = "token" .. i,
             limiter = braid.limiter({ rate = 28, per = WINDOW, burst = 4 }) }
  end)
  local function fetch(item)
    local r = pool:submit(function(ctx, api, item)
      ctx.limiter:take()                 -- pause before the limit
      return api_call(api, ctx.token, item)
    end, api, item):await()
    if r.status ~= "200" then error("API answered " .. r.status, 0) end
    return r
  end
  local seeds = {
    { kind = "timeline", user = user },
    { kind = "followers", user = user, cursor = 1 },   -- at once, not after the timeline
  }
  local records = braid.worklist(seeds, function(item, push)
    local r = fetch(item)
    if item.kind == "timeline" then
      for _, t in ipairs(r.items) do push({ kind = "retweeters", tweet = t, cursor = 1 }) end
      if r.next_max_id then push({ kind = "timeline", user = item.user, max_id = r.next_max_id }) end
      return { kind = "tweets", items = r.items }
    elseif item.kind == "retweeters" then
      for _, u in ipairs(r.items) do push({ kind = "followers", user = u, cursor = 1 }) end
      if r.next_cursor then push({ kind = "retweeters", tweet = item.tweet, cursor = r.next_cursor }) end
      return { kind = "retweeters", tweet = item.tweet, users = r.items }
    else
      if r.next_cursor then push({ kind = "followers", user = item.user, cursor = r.next_cursor }) end
      return { kind = "followers", user = item.user, users = r.items }
    end
  end, {
    workers = 4 * ntokens,
    key = function(it)
      return table.concat({ it.kind, it.user or it.tweet, it.cursor or it.max_id or 0 }, ":")
    end,
  })
  assert(pool:close(T))

  -- The reducer.
  local tweets, retweeters, followers = {}, {}, {}
  for _, rec in ipairs(records) do
    if rec.kind == "tweets" then
      for _, t in ipairs(rec.items) do tweets[#tweets + 1] = t end
    elseif rec.kind == "retweeters" then
      local l = retweeters[rec.tweet] or {}
      for _, u in ipairs(rec.users) do l[#l + 1] = u end
      retweeters[rec.tweet] = l
    else
      local l = followers[rec.user] or {}
      for _, u in ipairs(rec.users) do l[#l + 1] = u end
      followers[rec.user] = l
    end
  end
  local reach = {}
  for _, t in ipairs(tweets) do
    local seen, n = {}, 0
    local function add(list)
      for _, u in ipairs(list or {}) do
        if not seen[u] then seen[u] = true; n = n + 1 end
      end
    end
    add(followers[user])
    for _, r in ipairs(retweeters[t] or {}) do add(followers[r]) end
    reach[t] = { retweeters = #(retweeters[t] or {}), reach = n }
  end
  return reach, #tweets
end

-- The same numbers straight from the generator, and the number of pages.
local function expected()
  local reach, pages = {}, { timeline = 0, retweeters = 0, followers = 0 }
  local function npages(n, size) return math.max(1, math.ceil(n / size)) end
  pages.timeline = npages(#tweets_of(1), TIMELINE_PAGE)
  local fetched = { [1] = true }
  pages.followers = npages(#followers_of(1), FOLLOWERS_PAGE)
  for _, t in ipairs(tweets_of(1)) do
    local rts = retweeters_of(t)
    pages.retweeters = pages.retweeters + npages(#rts, RETWEETERS_PAGE)
    local seen, n = {}, 0
    for _, list in ipairs({ followers_of(1) }) do
      for _, u in ipairs(list) do if not seen[u] then seen[u] = true; n = n + 1 end end
    end
    for _, r in ipairs(rts) do
      if not fetched[r] then
        fetched[r] = true
        pages.followers = pages.followers + npages(#followers_of(r), FOLLOWERS_PAGE)
      end
      for _, u in ipairs(followers_of(r)) do
        if not seen[u] then seen[u] = true; n = n + 1 end
      end
    end
    reach[t] = { retweeters = #rts, reach = n }
  end
  return reach, pages
end

describe("the Twitter analyzer", function()
  local want, pages = expected()

  it("the simulated data is non-trivial", function()
    local total = pages.timeline + pages.retweeters + pages.followers
    assert.is_true(total > 100, "pages " .. total)
    local multi = 0
    for _, t in ipairs(tweets_of(1)) do
      if #retweeters_of(t) > RETWEETERS_PAGE then multi = multi + 1 end
    end
    assert.is_true(multi > 0)
  end)

  it("the API enforces its rate limit with '429'", function()
    local api = api_server()
    local answers = {}
    for _ = 1, LIMIT + 5 do
      local s = api:call({ token = "greedy", kind = "timeline" }, { timeout = T })
      answers[s] = (answers[s] or 0) + 1
    end
    assert.are.equal(LIMIT, answers["200"])
    assert.are.equal(5, answers["429"])
    api:stop()
  end)

  it("counts the unique reach of every tweet, with 4 tokens and no 429", function()
    local api = api_server()
    local t0 = braid.now()
    local reach, ntweets = analyze(1, 4, api)
    local elapsed4 = braid.now() - t0
    assert.are.equal(TWEETS, ntweets)
    assert.are.same(want, reach)
    local st = api:call("stats")
    assert.are.equal(0, st.rejected)
    -- every page fetched exactly once: de-duplication and exact completion
    assert.are.same(pages, st.by_kind)
    assert.are.equal(pages.timeline + pages.retweeters + pages.followers, st.calls)
    api:stop()

    -- The same run with one token: the same numbers, about 4x slower.
    local api1 = api_server()
    t0 = braid.now()
    local reach1 = analyze(1, 1, api1)
    local elapsed1 = braid.now() - t0
    assert.are.same(want, reach1)
    assert.are.equal(0, api1:call("stats").rejected)
    api1:stop()
    local speedup = elapsed1 / elapsed4
    if os.getenv("TWITTER_VERBOSE") then print(("\npages %d, 4 tokens %.2f s, 1 token %.2f s"):format(st.calls, elapsed4, elapsed1)) end
    assert.is_true(speedup >= 2.5, ("speedup %.2f (%.2f s vs %.2f s)"):format(speedup, elapsed1, elapsed4))
  end)
end)
