-- braid.natswork: braid.nats.worklist (API.md, "Many processes and
-- machines"): a worklist whose items travel through a JetStream work queue.
--
--   braid.nats.worklist(nc, name, seeds, fn [, opts]) -> results   (coordinator)
--   braid.nats.worklist(nc, name, nil, fn [, opts])   -> count     (helper)
--
-- opts.workers (tasks running fn here; default 4), opts.key(item) -> key,
-- opts.ack_wait (30 s), opts.duplicates (the de-dup window, 3600 s),
-- opts.memory (memory storage), opts.timeout (a helper gives up waiting
-- for a coordinator after that many idle seconds; default forever).
--
-- Protocol (exact completion across processes)
--
-- Stream BRAIDWL_<name>, subject braid.wl.<name>.items, retention
-- WorkQueue, one durable pull consumer "workers" with explicit acks and
-- opts.ack_wait, shared by every process.  An item message is JSON
-- {run=, item=}; run is the coordinator's random run id, so items left by
-- an earlier run are recognised and dropped.  Every item is published as a
-- NATS request to the stream subject with a Nats-Msg-Id header; JetStream
-- answers with a PubAck {seq=, duplicate=} where seq is the stream
-- sequence of the item (the original's, for a duplicate).  The Msg-Id is
-- run..":k:"..key(item) with opts.key (so equal keys are stored once,
-- across processes, within the duplicates window), else
-- run..":s:"..i for seed i and run..":p:"..parent_seq..":"..k for the
-- k-th push of an item, so that an item run twice (redelivered) pushes
-- the same messages again, not new ones.
--
-- The coordinator serves braid.wl.<name>.report.  A worker, after fn
-- returns, sends {run, seq, pushed = {seqs of its pushes}, result | err}
-- as a request and acks the item only once the coordinator answered (it
-- retries a lost report; the coordinator ignores a second report of a
-- seq).  The coordinator keeps known = the set of item seqs it has heard
-- of (the seeds' PubAcks, every report's pushed list and seq) and done =
-- the set reported; the work is finished when |known| == |done|.  That
-- cannot happen early: every item in the stream was pushed by an item
-- whose report lists it before that item counts as done.  A process
-- killed while holding items never acked them: JetStream delivers them
-- again after ack_wait, and the re-run's pushes are duplicates of the
-- first run's (same Msg-Ids, same seqs).  When finished, the coordinator
-- publishes {run, done=true} on braid.wl.<name>.ctl; helpers also ask
-- braid.wl.<name>.status while idle, and stop when the coordinator they
-- saw answers "done" or has gone.
local braid = require "braid"
local H = require "braid.handle"

local M = {}
local cjson

local function subjects(name)
  local base = "braid.wl." .. name
  return {
    stream = "BRAIDWL_" .. name:gsub("[^%w_-]", "_"),
    items = base .. ".items",
    report = base .. ".report",
    status = base .. ".status",
    ctl = base .. ".ctl",
  }
end

local function setup(nc, s, opts)
  return nc:_js_pull(s.stream, s.items, "workers", opts.ack_wait or 30, opts.duplicates or 3600,
    opts.memory and true or false)
end

-- Publishes one item; returns its stream seq.
local function put(nc, s, run, item, msgid)
  cjson = cjson or require "cjson"
  local data = cjson.encode({ run = run, item = item })
  for _ = 1, 20 do
    local ack, err = nc:_req(s.items, data, true, { ["Nats-Msg-Id"] = msgid })
    if ack then
      local ok, r = ack:wait(5)
      if ok then
        local body = r
        if type(body) == "string" then
          local dec_ok, t = pcall(cjson.decode, body)
          if dec_ok and type(t) == "table" and t.seq then return math.tointeger(t.seq) or t.seq end
          if dec_ok and type(t) == "table" and t.error then
            error("braid.nats.worklist: jetstream: " .. tostring(t.error.description), 0)
          end
        end
      else
        nc:_forget(err)
      end
    end
    braid.sleep(0.1)
  end
  error("braid.nats.worklist: could not publish an item", 0)
end

local function worker(nc, s, ch, pull_id, fn, key, done_count)
  local did = 0
  for m in ch:iter() do
    local d = m.data
    if type(d) ~= "table" or d.run == nil then
      nc:_js_ack(pull_id, m.id)
    else
      local run, seq = d.run, m.seq
      local pushed, k = {}, 0
      local function push(x)
        if x == nil then error("bad argument #1 to 'push' (a value expected, got nil)", 2) end
        k = k + 1
        local id
        if key then id = run .. ":k:" .. tostring(key(x)) else id = run .. ":p:" .. seq .. ":" .. k end
        pushed[#pushed + 1] = put(nc, s, run, x, id)
      end
      local ok, r = pcall(fn, d.item, push)
      local report = { run = run, seq = seq, pushed = pushed }
      if ok then report.result = r else report.err = H.errtext(r) end
      local answer
      for _ = 1, 50 do
        local a, e = nc:request(s.report, report, 5)
        if a then answer = a break end
        if e == "no responders" then answer = "gone" break end
      end
      if answer == "ok" then did = did + 1 end
      nc:_js_ack(pull_id, m.id)
    end
  end
  done_count:send(did)
end

local function start_workers(nc, s, opts, fn)
  local ch, pull_id = braid.blocking(setup, nc, s, opts):await()
  if not ch then error("braid.nats.worklist: " .. tostring(pull_id), 0) end
  local n = opts.workers or 4
  local counts = braid.chan(math.huge)
  for _ = 1, n do
    braid.spawn({ name = "nats.worklist " .. s.items }, worker, nc, s, ch, pull_id, fn, opts.key, counts)
  end
  return pull_id, counts, n
end

local function finish(nc, pull_id, counts, n)
  nc:_js_stop(pull_id)
  local total = 0
  for _ = 1, n do total = total + counts:recv() end
  return total
end

local function run_id()
  local f = io.open("/dev/urandom", "rb")
  local b = f and f:read(8) or tostring(os.time() .. math.random())
  if f then f:close() end
  return (b:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

local function coordinator(nc, s, seeds, fn, opts)
  local run = run_id()
  local finished = braid.future()
  local results = braid.chan(math.huge)
  -- The counters live in the one task that serves the reports (workers =
  -- 1: reports are handled one at a time).  The seeds' seqs reach it as a
  -- report of their own ({run, seeds}), so the count cannot finish before
  -- the seeds are known.
  local known, nknown, ndone, done, seeded = {}, 0, 0, {}, false
  local report_svc = nc:serve(s.report, function(r)
    if type(r) ~= "table" or r.run ~= run then return "stale" end
    local function learn(seq)
      if not known[seq] then known[seq] = true; nknown = nknown + 1 end
    end
    if r.seeds then
      for _, q in ipairs(r.seeds) do learn(q) end
      seeded = true
    else
      local seq = r.seq
      if done[seq] then return "dup" end
      for _, p in ipairs(r.pushed or {}) do learn(p) end
      learn(seq)
      done[seq] = true
      ndone = ndone + 1
      if r.err ~= nil then
        finished:reject("braid.nats.worklist: " .. tostring(r.err))
      elseif r.result ~= nil then
        results:send(r.result)
      end
    end
    if seeded and ndone == nknown then finished:resolve(true) end
    return "ok"
  end, { workers = 1, queue = false })
  local status_svc = nc:serve(s.status, function()
    return { run = run, done = finished:status() ~= "pending" }
  end, { workers = 1, queue = false })
  local pull_id, counts, n = start_workers(nc, s, opts, fn)
  local seqs = {}
  for i, item in ipairs(seeds) do
    local id = opts.key and (run .. ":k:" .. tostring(opts.key(item))) or (run .. ":s:" .. i)
    seqs[#seqs + 1] = put(nc, s, run, item, id)
  end
  for _ = 1, 50 do
    if nc:request(s.report, { run = run, seeds = seqs }, 5) then break end
  end
  -- Waited in slices: the runtime's deadlock check cannot see nats.c's
  -- threads, which settle this future through the reports.
  local ok, err
  repeat ok, err = finished:wait(1) until ok or err ~= "timeout"
  nc:publish(s.ctl, { run = run, done = true })
  finish(nc, pull_id, counts, n)
  report_svc:stop(5)
  status_svc:stop(5)
  if not ok then error(err, 0) end
  local out = {}
  while true do
    local v = results:try_recv()
    if v == nil then break end
    out[#out + 1] = v
  end
  return out
end

local function helper(nc, s, fn, opts)
  local ctl = nc:subscribe(s.ctl)
  local pull_id, counts, n = start_workers(nc, s, opts, fn)
  local seen_run, idle = nil, 0
  while true do
    local m = ctl:recv(1)
    if m and type(m.data) == "table" and m.data.done and (seen_run == nil or m.data.run == seen_run) then
      break
    end
    local st, e = nc:request(s.status, "?", 2)
    if type(st) == "table" then
      seen_run, idle = st.run, 0
      if st.done then break end
    elseif e == "no responders" and seen_run then
      break                               -- the coordinator we saw has gone
    else
      idle = idle + 1
      if opts.timeout and idle > opts.timeout then break end
    end
  end
  nc:unsubscribe(ctl)
  return finish(nc, pull_id, counts, n)
end

function M.worklist(nc, name, seeds, fn, opts)
  if tostring(nc):match("^braid%.nats#") == nil then
    error(("bad argument #1 to 'braid.nats.worklist' (braid.nats expected, got %s)"):format(H.typename(nc)), 2)
  end
  H.checktype(name, 2, "braid.nats.worklist", "string")
  if seeds ~= nil then H.checktype(seeds, 3, "braid.nats.worklist", "table") end
  H.checktype(fn, 4, "braid.nats.worklist", "function")
  opts = H.checkopt(opts, 5, "braid.nats.worklist")
  local s = subjects(name)
  if seeds then return coordinator(nc, s, seeds, fn, opts) end
  return helper(nc, s, fn, opts)
end

return M
