-- braid.memo: single-flight memoisation shared by every task holding the
-- handle (API.md, "Parallel map and pools").
--
--   braid.memo(fn [, opts]) -> memo      opts.ttl: seconds to keep a result
--   memo:get(key [, timeout]) -> fn(key)'s values (raises its error)
--   memo:forget(key)                     drops a cached result
--   memo:stats() -> {size, hits, misses, running}
--
-- Design notes
--
-- One server task owns the cache, so every copy of the handle sees the
-- same cache.  The cache maps a key to the future of the one task that
-- computes fn(key).  get sends {key, reply} to the server; the server
-- answers with that future, starting the task on a miss; every getter then
-- awaits the same future.  So 50 concurrent gets of one key run fn once
-- and all receive its result (the values are decoded by each getter).
--
-- The computation task reports its end to the server; the server stamps
-- the entry then, so opts.ttl counts from when the result was ready, and a
-- running computation never expires (no second flight).  A failed
-- computation is not cached: its getters all receive the error, the next
-- get runs fn again.  Keys are compared after transfer, so they should be
-- strings, numbers or booleans (a table key arrives as a new table).
--
-- The server task lives as long as the process (blocked in recv while idle).
local braid = require "braid"
local H = require "braid.handle"

local M = {}

local function state(m)
  return m.req:is_closed() and "closed" or ""
end

H.kind(M, "memo", { "get", "forget", "stats" }, state)

local function compute(fn, key, req, gen)
  local r = table.pack(pcall(fn, key))
  req:try_send({ done = key, gen = gen, ok = r[1] })
  if not r[1] then error(r[2], 0) end
  return table.unpack(r, 2, r.n)
end

local function server(fn, ttl, req)
  local cache, size = {}, 0
  local hits, misses, running, gen = 0, 0, 0, 0
  local now = braid.now
  while true do
    local m = req:recv()
    if m == nil then return end
    if m.get ~= nil then
      local key = m.get
      local e = cache[key]
      if e and e.done_at then
        if not e.ok or (ttl and now() - e.done_at >= ttl) then
          cache[key] = nil
          size = size - 1
          e = nil
        end
      end
      if e then
        hits = hits + 1
      else
        misses = misses + 1
        running = running + 1
        gen = gen + 1
        e = { f = braid.spawn({ name = "braid.memo" }, compute, fn, key, req, gen), gen = gen }
        cache[key] = e
        size = size + 1
      end
      m.reply:resolve(e.f)
    elseif m.done ~= nil then
      running = running - 1
      local e = cache[m.done]
      if e and e.gen == m.gen then
        e.done_at = now()
        e.ok = m.ok
        if not m.ok then cache[m.done] = nil; size = size - 1 end
      end
    elseif m.forget ~= nil then
      local e = cache[m.forget]
      if e then cache[m.forget] = nil; size = size - 1 end
    elseif m.stats then
      m.reply:resolve({ size = size, hits = hits, misses = misses, running = running })
    end
  end
end

function M.new(fn, opts)
  H.checktype(fn, 1, "braid.memo", "function")
  opts = H.checkopt(opts, 2, "braid.memo")
  local ttl = opts.ttl
  H.argcheck(ttl == nil or (type(ttl) == "number" and ttl >= 0), 2, "braid.memo",
    "opts.ttl must be a number >= 0")
  local req = braid.chan(math.huge)
  local id = H.id(req)
  local m = { req = req }
  m.task = braid.spawn({ name = "braid.memo#" .. id }, server, fn, ttl, req)
  return H.new(M, m, id)
end

local function ask(m, msg, timeout)
  local reply = braid.future()
  msg.reply = reply
  m.req:send(msg)
  local ok, v = reply:wait(timeout)
  if not ok then
    if v == "timeout" then reply:cancel() end
    error(v, 0)
  end
  return v
end

function M.get(m, key, timeout)
  m = H.check(M, m, "memo:get")
  if key == nil then error("bad argument #1 to 'memo:get' (a key expected, got nil)", 2) end
  H.argcheck(timeout == nil or (type(timeout) == "number" and timeout >= 0), 2, "memo:get",
    "timeout must be a number >= 0")
  local deadline = timeout and braid.now() + timeout
  local f = ask(m, { get = key }, timeout)
  local r = table.pack(f:wait(deadline and math.max(0, deadline - braid.now())))
  if not r[1] then error(r[2], 0) end
  return table.unpack(r, 2, r.n)
end

function M.forget(m, key)
  m = H.check(M, m, "memo:forget")
  if key == nil then error("bad argument #1 to 'memo:forget' (a key expected, got nil)", 2) end
  m.req:send({ forget = key })
end

function M.stats(m)
  m = H.check(M, m, "memo:stats")
  return ask(m, { stats = true })
end

return M
