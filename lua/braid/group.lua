-- braid.group: structured concurrency (API.md, "Structured concurrency").
--
--   braid.group([opts]) -> g
--   g:go(fn, ...) -> future              a member task
--   g:wait([timeout]) -> results         each member's first value, in g:go order
--   g:cancel()                           cancels every member
--
-- wait waits for every member, including those added while it waits
-- (members may call g:go themselves).  The first error cancels the other
-- members (at their next blocking call or preemption point), and wait
-- raises it once they have all ended; after g:cancel() wait raises
-- "cancelled".  A member added after a failure is cancelled at once.
-- wait raises "timeout" when timeout seconds pass first (the group goes
-- on).
--
-- Design notes
--
-- The group's state (members, results, the first error, the waiters) is
-- owned by a supervisor task, so that every copy of the handle, in any
-- task, sees one group.  Members report their end to it on the control
-- channel (unbounded, so a report never blocks, even from a cancelled
-- task); g:go and g:wait send it requests on the same channel.  Each
-- member is named by a key (the id of a fresh future made by g:go), since
-- a member may report before g:go's request has arrived.
--
-- A group must not cost a task forever (a server makes one per request),
-- so the supervisor ends whenever it is idle (no member running, no
-- waiter): it puts the state into the `lease` channel (capacity 1) and
-- leaves.  Whoever sends a request then takes the state out of the lease
-- with try_recv and, if it got it, starts a new supervisor with it.  A
-- supervisor that is leaving checks the control channel after returning
-- the lease and takes the lease back if something arrived; if a sender
-- took it first, that sender's new supervisor serves the message.  So
-- exactly one task holds the state at a time, and no request is left
-- without a supervisor.
local braid = require "braid"
local H = require "braid.handle"

local M = {}

local function state(g)
  return ""
end

H.kind(M, "group", { "go", "wait", "cancel" }, state)

local function new_state()
  return { n = 0, results = {}, failed = false, err = nil,
           pend = {}, futs = {}, early = {}, npend = 0, nearly = 0, waiters = {} }
end

local function cancel_all(st)
  for _, f in pairs(st.futs) do f:cancel() end
end

local function settle(st, idx, ok, v)
  if ok then
    st.results[idx] = v
  elseif not st.failed then
    st.failed = true
    st.err = v
    cancel_all(st)
  end
end

local function handle(st, m)
  local op = m.op
  if op == "add" then
    st.n = st.n + 1
    local idx, e = st.n, st.early[m.key]
    if e then
      st.early[m.key] = nil
      st.nearly = st.nearly - 1
      m.f:wait()                        -- it has reported: it is ending
      settle(st, idx, e.ok, e.v)
    else
      st.pend[m.key] = idx
      st.futs[m.key] = m.f
      st.npend = st.npend + 1
      if st.failed then m.f:cancel() end
    end
  elseif op == "done" then
    local idx = st.pend[m.key]
    if idx then
      -- The member reports just before its task ends: wait for its future
      -- to settle (a moment), so that when wait returns every member's
      -- future has settled.
      st.futs[m.key]:wait()
      st.pend[m.key] = nil
      st.futs[m.key] = nil
      st.npend = st.npend - 1
      settle(st, idx, m.ok, m.v)
    else
      st.early[m.key] = { ok = m.ok, v = m.v }
      st.nearly = st.nearly + 1
    end
  elseif op == "wait" then
    st.waiters[#st.waiters + 1] = m.reply
  elseif op == "cancel" then
    if not st.failed then
      st.failed = true
      st.err = "cancelled"
    end
    cancel_all(st)
  end
  if st.npend == 0 and st.nearly == 0 and #st.waiters > 0 then
    for i = 1, #st.waiters do
      local w = st.waiters[i]
      if st.failed then w:reject(st.err) else w:resolve(st.results) end
    end
    st.waiters = {}
  end
end

-- The supervisor task.
function M._supervisor(ctl, lease, st)
  while true do
    if st.npend == 0 and st.nearly == 0 and #st.waiters == 0 then
      lease:try_send(st)
      if #ctl == 0 then return end
      st = lease:try_recv()
      if st == nil then return end      -- a sender took it: its supervisor serves
    end
    local m = ctl:recv()
    if m == nil then return end
    handle(st, m)
  end
end

-- Sends m to the supervisor, starting one if none runs.
function M._send(ctl, lease, m)
  if m ~= nil then ctl:try_send(m) end
  local st = lease:try_recv()
  if st ~= nil then
    braid.spawn({ name = "braid.group" }, M._supervisor, ctl, lease, st)
  end
end

function M.new(opts)
  opts = H.checkopt(opts, 1, "braid.group")
  local ctl = braid.chan(math.huge)
  local lease = braid.chan(1)
  lease:send(new_state())
  local id = H.id(ctl)
  return H.new(M, { ctl = ctl, lease = lease, name = opts.name or ("braid.group#" .. id) }, id)
end

local function member(ctl, lease, key, fn, ...)
  local r = table.pack(pcall(fn, ...))
  local ok, v = r[1], r[2]
  if not ok then v = H.travels(v) end
  if not pcall(ctl.try_send, ctl, { op = "done", key = key, ok = ok, v = v }) then
    -- The first value cannot travel: the task fails with that below.
    local _, e = pcall(braid._roundtrip, v)
    ctl:try_send({ op = "done", key = key, ok = false, v = e })
  end
  M._send(ctl, lease, nil)
  if not r[1] then error(r[2], 0) end
  return table.unpack(r, 2, r.n)
end

function M.go(g, fn, ...)
  g = H.check(M, g, "group:go")
  H.checktype(fn, 1, "group:go", "function")
  local key = H.id(braid.future())
  local f = braid.spawn({ name = g.name }, member, g.ctl, g.lease, key, fn, ...)
  f:wait(0)    -- marks it observed: the group reports a member's error (wait)
  M._send(g.ctl, g.lease, { op = "add", key = key, f = f })
  return f
end

function M.wait(g, timeout)
  g = H.check(M, g, "group:wait")
  H.argcheck(timeout == nil or (type(timeout) == "number" and timeout >= 0), 1, "group:wait",
    "timeout must be a number >= 0")
  local reply = braid.future()
  M._send(g.ctl, g.lease, { op = "wait", reply = reply })
  local ok, v = reply:wait(timeout)
  if not ok then
    if v == "timeout" then reply:cancel() end
    error(v, 0)
  end
  return v
end

function M.cancel(g)
  g = H.check(M, g, "group:cancel")
  M._send(g.ctl, g.lease, { op = "cancel" })
end

return M
