-- braid.limiter: a token bucket shared by every task holding the handle
-- (API.md, "Parallel map and pools").
--
--   braid.limiter{rate = R, per = S [, burst = B]} -> lim
--   lim:take([n [, timeout]]) -> true | false, "timeout"
--   lim:try_take([n]) -> true | false, "empty"
--   lim:stats() -> {rate, per, burst, available, taken}
--
-- Design notes
--
-- The bucket is a channel of tokens with capacity B (the burst), created
-- full.  Taking a token is receiving one, so a task that waits for tokens
-- is blocked in recv: it never spins, and waiting takers are served first
-- come, first served (the channel's receive queue).  A refill task owns the
-- clock: it adds a token every per/rate seconds (several at once after a
-- long sleep), computed from the time of the last token rather than by
-- accumulating sleeps, so the rate does not drift.
--
-- A full bucket must cost nothing and accrue nothing.  When an insert
-- finds the bucket full, the refill task blocks on a second channel,
-- `room` (capacity 1, policy "drop"), on which every take leaves a
-- notification; it wakes on the first take after that, and the next token
-- is then due per/rate seconds later, exactly as in a token bucket that
-- stops accruing while full.  Notifications left while the bucket was not
-- full are drained before each round of inserts, so they cause no
-- spurious early token.
--
-- take(n) receives n tokens one by one (n may exceed the burst); when the
-- timeout passes first, the tokens already received are put back (those
-- that no longer fit are dropped, the bucket being full then anyway).
--
-- The refill task lives as long as the process (blocked while the bucket
-- is full, which costs nothing).
local braid = require "braid"
local H = require "braid.handle"

local M = {}

local function state(l)
  return ("%g per %gs, %d/%d available"):format(l.rate, l.per, #l.tokens, l.burst)
end

H.kind(M, "limiter", { "take", "try_take", "stats" }, state)

local function refill(tokens, room, interval, burst)
  local now = braid.now
  local last = now()                  -- when the last token was due
  while true do
    local due = math.floor((now() - last) / interval)
    if due < 1 then
      braid.sleep(last + interval - now())
    else
      if due > burst then due = burst end
      while room:try_recv() ~= nil do end   -- stale notifications
      local full = false
      for _ = 1, due do
        if not tokens:try_send(true) then full = true; break end
      end
      if full then
        -- Wait for a taker to make room; accrual restarts then.
        if room:recv() == nil then return end
        last = now()
      else
        last = last + due * interval
      end
    end
  end
end

function M.new(opts)
  H.checktype(opts, 1, "braid.limiter", "table")
  local rate, per = opts.rate, opts.per or 1
  H.argcheck(type(rate) == "number" and rate > 0, 1, "braid.limiter", "opts.rate must be a number > 0")
  H.argcheck(type(per) == "number" and per > 0, 1, "braid.limiter", "opts.per must be a number > 0")
  local burst = opts.burst or math.max(1, math.floor(rate))
  H.argcheck(type(burst) == "number" and burst >= 1 and burst % 1 == 0, 1, "braid.limiter",
    "opts.burst must be a positive integer")
  local tokens = braid.chan(burst)
  for _ = 1, burst do tokens:send(true) end
  local l = {
    rate = rate,
    per = per,
    burst = burst,
    tokens = tokens,
    room = braid.chan(1, "drop"),
  }
  local id = H.id(tokens)
  braid.spawn({ name = "braid.limiter#" .. id }, refill, tokens, l.room, per / rate, burst)
  return H.new(M, l, id)
end

local function checkn(n, fname)
  if n == nil then return 1 end
  H.argcheck(type(n) == "number" and n >= 0 and n % 1 == 0, 1, fname,
    "non-negative integer expected, got " .. H.typename(n), 3)
  return n
end

local function give_back(tokens, k)
  for _ = 1, k do
    if not tokens:try_send(true) then return end
  end
end

function M.take(l, n, timeout)
  l = H.check(M, l, "limiter:take")
  n = checkn(n, "limiter:take")
  H.argcheck(timeout == nil or (type(timeout) == "number" and timeout >= 0), 2, "limiter:take",
    "timeout must be a number >= 0")
  local tokens = l.tokens
  local deadline = timeout and braid.now() + timeout
  for k = 1, n do
    local v, err
    if deadline then
      local left = deadline - braid.now()
      v, err = tokens:recv(left > 0 and left or 0)
    else
      v, err = tokens:recv()
    end
    if v == nil then
      give_back(tokens, k - 1)
      return false, err
    end
    l.room:try_send(true)
  end
  return true
end

function M.try_take(l, n)
  l = H.check(M, l, "limiter:try_take")
  n = checkn(n, "limiter:try_take")
  local tokens = l.tokens
  for k = 1, n do
    if tokens:try_recv() == nil then
      give_back(tokens, k - 1)
      return false, "empty"
    end
    l.room:try_send(true)
  end
  return true
end

function M.stats(l)
  l = H.check(M, l, "limiter:stats")
  local st = l.tokens:stats()
  return {
    rate = l.rate,
    per = l.per,
    burst = l.burst,
    available = st.len,
    taken = st.received,
  }
end

return M
