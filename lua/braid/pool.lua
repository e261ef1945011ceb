-- braid.pool: long-lived workers holding a context (API.md, "Parallel map
-- and pools").
--
--   braid.pool(n, init [, opts]) -> pool
--   pool:submit(fn, ...) -> future      fn(ctx, ...) on the first free worker
--   pool:map(items, fn) -> results      fn(ctx, item), bounded by the pool
--   pool:close([timeout]) -> true | false, "timeout"
--   pool:stats() -> {workers, queued, running, submitted, completed, failed, closed}
--
-- Design notes
--
-- n worker tasks each call init(i) once and keep its result, the context,
-- in a local for their whole life: the context never leaves its task (an
-- API token, a connection).  Jobs travel through one bounded channel (the
-- queue, opts.queue = 64 jobs) as {fn, future, args}; a full queue blocks
-- submit (backpressure).  A worker runs fn(ctx, ...) under pcall and
-- settles the job's future.  A job whose future was cancelled before a
-- worker took it is skipped.
--
-- close() closes the queue: the workers drain what is queued, then call
-- opts.terminate(ctx) and end; close waits for that (up to timeout, then
-- cancels the workers and returns false, "timeout").
--
-- If init raises in any worker, the pool is broken: the queue is closed,
-- the queued jobs are rejected with init's error, and submit raises it.
--
-- The handle is a table of channels and futures (see braid.handle), so it
-- works in any task it is passed to.  The counters of stats() are
-- channels used as shared counters: a one-slot "slide" channel counts in
-- stats().sent every value sent to it and holds at most one.  A worker
-- counts a job before settling its future, so whoever sees the future
-- settled sees it counted.
local braid = require "braid"
local H = require "braid.handle"
local chunks_of = require("braid.pmap").chunks

local M = {}

local DEFAULT_QUEUE = 64

local function state(p)
  local st = p.q:stats()
  if st.closed then return "closed" end
  return ("%d workers, %d queued"):format(p.n, st.len)
end

H.kind(M, "pool", { "submit", "map", "close", "stats" }, state)

local function worker(i, init, terminate, q, done, failed, broken)
  local ok, ctx = pcall(init, i)
  if not ok then
    ctx = H.travels(ctx)
    broken:reject(ctx)
    q:close()
    while true do
      local job = q:try_recv()
      if job == nil then break end
      job[2]:reject(ctx)
      failed:try_send(true)
    end
    return
  end
  local pack, unpack = table.pack, table.unpack
  while true do
    local job = q:recv()
    if job == nil then break end
    local f, args = job[2], job[3]
    if f:status() == "pending" then
      local r = pack(pcall(job[1], ctx, unpack(args, 1, args.n)))
      -- Count before settling, so that whoever sees the future settled
      -- sees it counted too.
      if r[1] then
        done:try_send(true)
        local sent, e = pcall(f.resolve, f, unpack(r, 2, r.n))
        if not sent then f:reject(e) end   -- results that cannot travel
      else
        failed:try_send(true)
        f:reject(H.travels(r[2]))
      end
    else
      failed:try_send(true)                -- cancelled before it started
    end
  end
  if terminate then pcall(terminate, ctx) end
end

-- braid.pool(n, init [, opts]): opts.queue (64), opts.terminate(ctx),
-- opts.name (task names).
function M.new(n, init, opts)
  H.argcheck(type(n) == "number" and n >= 1 and n % 1 == 0, 1, "braid.pool",
    "positive integer expected, got " .. H.typename(n))
  if init ~= nil then H.checktype(init, 2, "braid.pool", "function") end
  opts = H.checkopt(opts, 3, "braid.pool")
  local qcap = opts.queue or DEFAULT_QUEUE
  H.argcheck(type(qcap) == "number" and qcap >= 1 and (qcap == math.huge or qcap % 1 == 0), 3,
    "braid.pool", "opts.queue must be a positive integer")
  if opts.terminate ~= nil then H.checktype(opts.terminate, 3, "braid.pool", "function") end
  init = init or function(i) return i end
  local q = braid.chan(qcap)
  local p = {
    n = n,
    q = q,
    done = braid.chan(1, "slide"),
    failed = braid.chan(1, "slide"),
    broken = braid.future(),
    tasks = {},
  }
  local id = H.id(q)
  local name = opts.name or ("braid.pool#" .. id)
  for i = 1, n do
    p.tasks[i] = braid.spawn({ name = name .. "/" .. i }, worker, i, init, opts.terminate, q,
      p.done, p.failed, p.broken)
  end
  return H.new(M, p, id)
end

local function closed_error(p)
  local ok, err = p.broken:wait(0)
  if not ok and err ~= "timeout" then error(err, 0) end
  error("braid.pool: closed", 0)
end

function M.submit(p, fn, ...)
  p = H.check(M, p, "pool:submit")
  H.checktype(fn, 1, "pool:submit", "function")
  local f = braid.future()
  local ok = p.q:send({ fn, f, H.pack(...) })
  if not ok then closed_error(p) end
  return f
end

-- Runs one chunk of a map in a worker.
local function run_chunk(ctx, fn, first, count, xs)
  local out = {}
  for j = 1, count do
    local ok, r = pcall(fn, ctx, xs[j])
    if not ok then
      error({ braid_pool_item = first + j - 1, err = H.travels(r) }, 0)
    end
    out[j] = r
  end
  return out
end

function M.map(p, items, fn)
  p = H.check(M, p, "pool:map")
  H.checktype(items, 1, "pool:map", "table")
  H.checktype(fn, 2, "pool:map", "function")
  local n = items.n or #items
  local out = {}
  if n == 0 then return out end
  local chunks = chunks_of(n, p.n)
  local futs = {}
  local move = table.move
  for c = 1, #chunks do
    local first, last = chunks[c][1], chunks[c][2]
    local f = braid.future()
    local ok = p.q:send({ run_chunk, f,
      { fn, first, last - first + 1, move(items, first, last, 1, {}), n = 4 } })
    if not ok then
      for k = 1, c - 1 do futs[k]:cancel() end
      closed_error(p)
    end
    futs[c] = f
  end
  for c = 1, #chunks do
    local waited, ok, r = pcall(futs[c].wait, futs[c])
    if not waited then                    -- the caller was cancelled
      for k = c, #chunks do futs[k]:cancel() end
      error(ok, 0)
    end
    if not ok then
      for k = c + 1, #chunks do futs[k]:cancel() end
      if type(r) == "table" and r.braid_pool_item then
        error(("braid.pool: item %d: %s"):format(r.braid_pool_item, H.errtext(r.err)), 0)
      end
      error(r, 0)
    end
    local first = chunks[c][1]
    for j = 1, chunks[c][2] - first + 1 do out[first + j - 1] = r[j] end
  end
  return out
end

function M.close(p, timeout)
  p = H.check(M, p, "pool:close")
  H.argcheck(timeout == nil or (type(timeout) == "number" and timeout >= 0), 1, "pool:close",
    "timeout must be a number >= 0")
  p.q:close()
  local deadline = timeout and braid.now() + timeout
  for i = 1, #p.tasks do
    local left = deadline and math.max(0, deadline - braid.now())
    local ok, err = p.tasks[i]:wait(left)
    if not ok and err == "timeout" then
      for k = 1, #p.tasks do p.tasks[k]:cancel() end
      return false, "timeout"
    end
  end
  return true
end

function M.stats(p)
  p = H.check(M, p, "pool:stats")
  local qs = p.q:stats()
  local done, failed = p.done:stats().sent, p.failed:stats().sent
  return {
    workers = p.n,
    queued = qs.len,
    submitted = qs.sent,
    running = math.max(0, qs.received - done - failed),
    completed = done,
    failed = failed,
    closed = qs.closed,
  }
end

return M
