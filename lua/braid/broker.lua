-- braid.broker: topic-based publish/subscribe (API.md, "Pub/sub").
--
--   braid.broker([opts]) -> b          opts.buffer (64), opts.policy ("slide")
--   b:subscribe(pattern [, opts]) -> chan
--   b:publish(topic, v) -> n
--   b:unsubscribe(ch)
--   b:stats() -> {published, delivered, dropped, subscriptions = {{pattern, buffered, dropped}, ...}}
--
-- Patterns are dot-separated tokens: a topic ("a.b"), `*` for exactly one
-- token ("a.*" matches "a.b", not "a" nor "a.b.c"), and `>` as the last
-- token for one or more tokens ("a.>" matches "a.b" and "a.b.c", not "a").
--
-- Design notes
--
-- Each subscription is a channel with its own buffer and policy.  With
-- the default "slide" (or "drop") a full subscription loses a value
-- instead of blocking, so a subscriber that never reads never slows
-- publish; its losses are counted by the channel (stats().dropped).  A
-- subscription with policy "block" makes publish wait for it.
--
-- The registry (the list of subscriptions) is shared by every copy of the
-- handle: it lives in a one-slot channel, taken out (recv) to be changed
-- and put back (try_send, which cannot fail then and does not raise even
-- in a cancelled task).  Publishers do not take it at every publish: each
-- state caches a copy of it with the list of subscriptions per topic, and
-- the registry carries a "generation" future that is resolved when the
-- registry changes; a publisher checks gen:status() (one C call) and
-- reloads only then.  So publish costs one send per matching subscription
-- plus one counter send, and never touches a lock shared with other
-- publishers apart from the channels themselves.
--
-- The value is encoded once per matching subscription: the Lua API has no
-- way to send one encoded message to several channels (a C fan-out, which
-- core/'s messages are designed for, would make that one encode).
--
-- ch:close() unsubscribes too: a publish that finds a subscription closed
-- removes it from the registry.  Counters: published is a one-slot "slide"
-- channel used as a shared counter (its stats().sent); delivered and
-- dropped sum the subscriptions' channel counters (values that entered
-- them, and values they lost), including those of removed subscriptions.
local braid = require "braid"
local H = require "braid.handle"

local M = {}

local DEFAULT_BUFFER, DEFAULT_POLICY = 64, "slide"
local MAX_TOPICS = 4096                -- cached topic -> subscriptions entries

-- Per state: handle -> {gen, subs, match}.  Weak: never transferred.
local caches = setmetatable({}, { __mode = "k" })

local function tokens(s)
  local t = {}
  for tok in (s .. "."):gmatch("([^.]*)%.") do t[#t + 1] = tok end
  return t
end

local function check_pattern(p, fname)
  if type(p) ~= "string" or p == "" then
    error(("bad argument #1 to '%s' (pattern must be a non-empty string)"):format(fname), 3)
  end
  local t = tokens(p)
  for i = 1, #t do
    local tok = t[i]
    if tok == "" or (tok == ">" and i ~= #t)
        or (tok ~= "*" and tok ~= ">" and tok:find("[*>]")) then
      error(("bad argument #1 to '%s' (invalid pattern '%s')"):format(fname, p), 3)
    end
  end
  return t
end

local function check_topic(topic)
  if type(topic) ~= "string" or topic == "" then
    error("bad argument #1 to 'broker:publish' (topic must be a non-empty string)", 3)
  end
  if topic:find("[*>]") or topic:find("^%.") or topic:find("%.$") or topic:find("%.%.") then
    error(("bad argument #1 to 'broker:publish' (invalid topic '%s')"):format(topic), 3)
  end
end

local function matches(pt, tt)
  for i = 1, #pt do
    local p = pt[i]
    if p == ">" then return #tt >= i end
    local t = tt[i]
    if t == nil or (p ~= "*" and p ~= t) then return false end
  end
  return #tt == #pt
end
M._matches = function(pattern, topic) return matches(tokens(pattern), tokens(topic)) end

-- Counts the open subscriptions: one closed with ch:close() (or by a view
-- such as ch:map that closed its input) is still in the registry until the
-- next publish or unsubscribe sweeps it, but no longer counts.
local function open_count(subs)
  local n = 0
  for i = 1, #subs do
    if not subs[i].ch:is_closed() then n = n + 1 end
  end
  return n
end

local function state(b)
  local r = b.reg:try_recv()         -- never blocks: tostring must not
  if r ~= nil then
    b.reg:try_send(r)
    return open_count(r.subs) .. " subscriptions"
  end
  local c = caches[b]
  return c and open_count(c.subs) .. " subscriptions" or ""
end

H.kind(M, "broker", { "subscribe", "publish", "unsubscribe", "stats" }, state)

function M.new(opts)
  opts = H.checkopt(opts, 1, "braid.broker")
  local buffer = opts.buffer or DEFAULT_BUFFER
  local policy = opts.policy or DEFAULT_POLICY
  H.argcheck(type(buffer) == "number" and buffer >= 0 and (buffer == math.huge or buffer % 1 == 0),
    1, "braid.broker", "opts.buffer must be a non-negative integer or math.huge")
  H.argcheck(policy == "block" or policy == "drop" or policy == "slide", 1, "braid.broker",
    "opts.policy must be 'block', 'drop' or 'slide'")
  local reg = braid.chan(1)
  reg:send({ subs = {}, gen = braid.future(), removed_sent = 0, removed_dropped = 0 })
  local id = H.id(reg)
  return H.new(M, { reg = reg, published = braid.chan(1, "slide"), buffer = buffer,
                    policy = policy }, id)
end

-- Takes the registry, lets change(r) modify it, puts it back and bumps
-- the generation when change returns true.
local function update(b, change)
  local r = b.reg:recv()
  local ok, changed = pcall(change, r)
  local old
  if ok and changed then
    old = r.gen
    r.gen = braid.future()
  end
  b.reg:try_send(r)
  if old then old:resolve(true) end
  if not ok then error(changed, 0) end
end

local function snapshot(b)
  local r = b.reg:recv()
  b.reg:try_send(r)
  return r
end

local function cache(b)
  local c = caches[b]
  if c == nil or c.gen:status() ~= "pending" then
    local r = snapshot(b)
    c = { gen = r.gen, subs = r.subs, match = {}, nmatch = 0 }
    for i = 1, #c.subs do c.subs[i].toks = tokens(c.subs[i].pattern) end
    caches[b] = c
  end
  return c
end

function M.subscribe(b, pattern, opts)
  b = H.check(M, b, "broker:subscribe")
  check_pattern(pattern, "broker:subscribe")
  opts = H.checkopt(opts, 2, "broker:subscribe")
  local buffer = opts.buffer or b.buffer
  local policy = opts.policy or b.policy
  H.argcheck(type(buffer) == "number" and buffer >= 0 and (buffer == math.huge or buffer % 1 == 0),
    2, "broker:subscribe", "opts.buffer must be a non-negative integer or math.huge")
  H.argcheck(policy == "block" or policy == "drop" or policy == "slide", 2, "broker:subscribe",
    "opts.policy must be 'block', 'drop' or 'slide'")
  local ch = braid.chan(buffer, policy)
  update(b, function(r)
    r.subs[#r.subs + 1] = { pattern = pattern, ch = ch }
    return true
  end)
  return ch
end

-- Removes the subscriptions on channel ch (and those closed, while at it).
local function remove(b, ch)
  update(b, function(r)
    local keep, changed = {}, false
    for i = 1, #r.subs do
      local s = r.subs[i]
      if s.ch == ch or s.ch:is_closed() then
        local st = s.ch:stats()
        r.removed_sent = r.removed_sent + st.sent
        r.removed_dropped = r.removed_dropped + st.dropped
        changed = true
      else
        keep[#keep + 1] = s
      end
    end
    r.subs = keep
    return changed
  end)
end

function M.unsubscribe(b, ch)
  b = H.check(M, b, "broker:unsubscribe")
  H.checkchan(ch, 1, "broker:unsubscribe")
  ch:close()
  remove(b, ch)
end

function M.publish(b, topic, v)
  b = H.check(M, b, "broker:publish")
  local c = cache(b)
  local list = c.match[topic]
  if list == nil then
    check_topic(topic)
    local tt = tokens(topic)
    list = {}
    for i = 1, #c.subs do
      local s = c.subs[i]
      if matches(s.toks, tt) then list[#list + 1] = s.ch end
    end
    if c.nmatch >= MAX_TOPICS then c.match, c.nmatch = {}, 0 end
    c.match[topic] = list
    c.nmatch = c.nmatch + 1
  end
  if v == nil then error("bad argument #2 to 'broker:publish' (a value expected, got nil)", 2) end
  local n, closed = 0, nil
  for i = 1, #list do
    local ch = list[i]
    if ch:send(v) then
      n = n + 1
    else
      closed = ch
    end
  end
  b.published:try_send(true)
  if closed then remove(b, closed) end
  return n
end

function M.stats(b)
  b = H.check(M, b, "broker:stats")
  local r = snapshot(b)
  local delivered, dropped = r.removed_sent, r.removed_dropped
  local subs = {}
  for i = 1, #r.subs do
    local s = r.subs[i]
    local st = s.ch:stats()
    delivered = delivered + st.sent
    dropped = dropped + st.dropped
    if not st.closed then
      subs[#subs + 1] = { pattern = s.pattern, buffered = st.len, dropped = st.dropped }
    end
  end
  return {
    published = b.published:stats().sent,
    delivered = delivered,
    dropped = dropped,
    subscriptions = subs,
  }
end

return M
