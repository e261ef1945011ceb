-- braid.pmap: parallel map (API.md, "Parallel map and pools").
--
--   braid.pmap(items, fn [, opts]) -> results
--
-- Design notes
--
-- Per-item costs dominate a naive pmap (a task or a message per item costs
-- microseconds; `x * 2` costs nanoseconds), so items are dealt in chunks.
-- The chunks are sized by guided self-scheduling: each is about
-- remaining / (4 * workers) items (at least opts.chunk_min, 1), so the
-- first chunks are large (few messages for tiny items) and the last ones
-- small (a slow item at the end does not leave the other workers idle).
-- Every chunk goes, before any worker starts, into one buffered channel
-- that is then closed; `workers` tasks pull chunks from it until it is
-- drained.  Each worker task receives `fn` once, as its argument: `fn` is
-- copied once per worker, never per item.  A worker sends its results
-- back in few messages (when the work is drained, or every 4096 items),
-- so the caller is not woken once per chunk; an error goes at once.
--
-- Each item is encoded once on its way to a worker and its result once on
-- the way back.  The first error stops everything: the caller cancels
-- every worker (a worker that computes stops at its next preemption
-- point) and raises "braid.pmap: item <i>: <error>".  If the caller
-- itself is cancelled while it waits, the workers are cancelled too.
local braid = require "braid"
local H = require "braid.handle"

local M = {}

local ceil, min, max = math.ceil, math.min, math.max

-- Splits 1..n into chunks: an array of {first, last}.
function M.chunks(n, workers, fixed, lo)
  local out = {}
  local first = 1
  lo = lo or 1
  while first <= n do
    local size = fixed or max(lo, ceil((n - first + 1) / (4 * workers)))
    local last = min(n, first + size - 1)
    out[#out + 1] = { first, last }
    first = last + 1
  end
  return out
end

-- Sends a worker's finished chunks; on a result that cannot travel sends
-- the error for its item instead and returns false.
local function send_done(results, done)
  local sent, e = pcall(results.send, results, done)
  if sent then return true end
  -- A result that cannot travel: find which, and report it.
  for _, d in ipairs(done) do
    for j = 1, d[2] do
      if not pcall(braid._roundtrip, d[3][j]) then
        results:send({ err = e, index = d[1] + j - 1 })
        return false
      end
    end
  end
  results:send({ err = e, index = done[1] and done[1][1] or 1 })
  return false
end

-- The worker task: pulls chunks {first, count, items} from work (filled
-- and closed before the workers start) until it is drained, and sends its
-- results as {{first, count, results}, ...}: when it is done, or every
-- 4096 items so that the caller merges while the workers compute.  On an
-- error it sends {err = e, index = i} at once.  So the waiting caller is
-- woken about once per worker for large items, not once per chunk.
local function worker(fn, work, results)
  local done, held = {}, 0
  while true do
    local c = work:try_recv()
    if c == nil then break end
    local first, count, xs = c[1], c[2], c[3]
    local out, k = {}, 0
    local ok, err = pcall(function()
      for j = 1, count do
        k = j
        out[j] = fn(xs[j])
      end
    end)
    if not ok then
      results:send({ err = H.travels(err), index = first + k - 1 })
      return
    end
    done[#done + 1] = { first, count, out }
    held = held + count
    if held >= 4096 then                -- many small items: let the caller merge meanwhile
      if not send_done(results, done) then return end
      done, held = {}, 0
    end
  end
  send_done(results, done)
end

-- braid.pmap(items, fn [, opts]): results[i] = fn(items[i]) (its first
-- value).  opts.workers bounds the tasks (default: the worker threads);
-- opts.chunk fixes the chunk size.
function M.pmap(items, fn, opts)
  H.checktype(items, 1, "braid.pmap", "table")
  H.checktype(fn, 2, "braid.pmap", "function")
  opts = H.checkopt(opts, 3, "braid.pmap")
  local n = items.n or #items
  if n == 0 then return {} end
  local workers = opts.workers
  if workers == nil then
    workers = H.workers()
  else
    H.argcheck(type(workers) == "number" and workers >= 1 and workers % 1 == 0, 3, "braid.pmap",
      "opts.workers must be a positive integer")
  end
  local fixed = opts.chunk
  if fixed ~= nil then
    H.argcheck(type(fixed) == "number" and fixed >= 1 and fixed % 1 == 0, 3, "braid.pmap",
      "opts.chunk must be a positive integer")
  end
  local chunks = M.chunks(n, workers, fixed)
  local nchunks = #chunks
  if workers > nchunks then workers = nchunks end

  local work = braid.chan(nchunks)
  local move = table.move
  for c = 1, nchunks do
    local first, last = chunks[c][1], chunks[c][2]
    work:send({ first, last - first + 1, move(items, first, last, 1, {}) })
  end
  work:close()
  local results = braid.chan(math.huge)
  local tasks = {}
  for w = 1, workers do
    tasks[w] = braid.spawn({ name = "braid.pmap" }, worker, fn, work, results)
  end

  local out = {}
  local ok, err = pcall(function()
    local got = 0
    while got < nchunks do
      local r = results:recv()
      if r.err ~= nil then
        return { r.index, r.err }
      end
      for _, d in ipairs(r) do
        local first, res = d[1], d[3]
        for j = 1, d[2] do out[first + j - 1] = res[j] end
        got = got + 1
      end
    end
  end)
  if not ok or err ~= nil then
    for w = 1, #tasks do tasks[w]:cancel() end
    if not ok then error(err, 0) end
    error(("braid.pmap: item %d: %s"):format(err[1], H.errtext(err[2])), 0)
  end
  return out
end

return M
