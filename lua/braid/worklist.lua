-- braid.worklist: self-feeding parallel work (API.md, "Parallel map and
-- pools").
--
--   braid.worklist(seeds, fn [, opts]) -> results
--
-- fn(item, push) may call push(item) to add work (a next page, a link to
-- crawl); worklist returns when every item, pushed ones included, is done:
-- the array of fn's non-nil results, in the order the items were accepted
-- (the seeds first, in order; then pushed items as the coordinator
-- received them).  opts.workers (the worker threads) bounds the tasks
-- running fn; opts.key(item) -> key drops an item whose key was seen
-- before (seeds included).
--
-- Design notes
--
-- The caller is the coordinator.  It alone owns the seen-set and the count
-- of outstanding items (accepted but not finished: queued + running), so
-- completion is exact: the work is done when the count reaches 0, never
-- by a timeout or a guess.  Items go to the workers through an unbounded
-- channel as {seq, item}.  A worker reports on one unbounded channel, in
-- this order: each push as {push = item}, then {done = seq, result = r}.
-- Messages from one task on one channel keep their order, so the
-- coordinator has counted an item's pushes before the item's done, and the
-- count cannot reach 0 while a push is in flight.  Each worker task gets fn
-- once.  The first error cancels the workers and is raised as
-- "braid.worklist: <error>".
local braid = require "braid"
local H = require "braid.handle"

local M = {}

local function worker(fn, work, reports)
  local function push(item)
    if item == nil then
      error("bad argument #1 to 'push' (a value expected, got nil)", 2)
    end
    reports:send({ push = item })
  end
  while true do
    local job = work:recv()
    if job == nil then return end
    local ok, r = pcall(fn, job[2], push)
    if not ok then
      reports:send({ err = H.travels(r) })
      return
    end
    local sent, e = pcall(reports.send, reports, { done = job[1], result = r })
    if not sent then
      reports:send({ err = e })
      return
    end
  end
end

function M.worklist(seeds, fn, opts)
  H.checktype(seeds, 1, "braid.worklist", "table")
  H.checktype(fn, 2, "braid.worklist", "function")
  opts = H.checkopt(opts, 3, "braid.worklist")
  local key = opts.key
  if key ~= nil then H.checktype(key, 3, "braid.worklist", "function") end
  local workers = opts.workers
  if workers == nil then
    workers = H.workers()
  else
    H.argcheck(type(workers) == "number" and workers >= 1 and workers % 1 == 0, 3, "braid.worklist",
      "opts.workers must be a positive integer")
  end

  local work = braid.chan(math.huge)
  local reports = braid.chan(math.huge)
  local seen = {}
  local seq, outstanding = 0, 0
  local results = {}

  local function accept(item)
    if key then
      local k = key(item)
      if k ~= nil then
        if seen[k] then return end
        seen[k] = true
      end
    end
    seq = seq + 1
    outstanding = outstanding + 1
    work:send({ seq, item })
  end

  for i = 1, seeds.n or #seeds do
    if seeds[i] ~= nil then accept(seeds[i]) end
  end
  if outstanding == 0 then return {} end

  local tasks = {}
  local ok, err = pcall(function()
    for w = 1, workers do
      tasks[w] = braid.spawn({ name = "braid.worklist" }, worker, fn, work, reports)
    end
    while outstanding > 0 do
      local m = reports:recv()
      if m.err ~= nil then return m end
      if m.push ~= nil then
        accept(m.push)
      else
        outstanding = outstanding - 1
        if m.result ~= nil then results[m.done] = m.result end
      end
    end
  end)
  work:close()
  if not ok or err ~= nil then
    for w = 1, #tasks do tasks[w]:cancel() end
    if not ok then error(err, 0) end
    error("braid.worklist: " .. H.errtext(err.err), 0)
  end
  local out, n = {}, 0
  for i = 1, seq do
    if results[i] ~= nil then n = n + 1; out[n] = results[i] end
  end
  return out
end

return M
