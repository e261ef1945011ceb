-- braid.server: request/reply servers with gen_server semantics (API.md,
-- "Request/reply servers").
--
--   local srv = braid.server({ init = ..., call = ..., cast = ..., terminate = ... }, ...)
--   srv:call(req [, {timeout = s, priority = "high"}]) -> reply
--   srv:cast(msg) -> true | false, "closed"
--   srv:stop([reason [, timeout]]) -> true | false, "timeout"
--   srv:status() -> "running" | "stopping" | "stopped" | "failed"
--   braid.noreply, from:reply(v)
--
-- Design notes
--
-- The server is one task that holds `state` in a local: it is never
-- copied.  Requests arrive on two unbounded channels: high-priority
-- calls, and the normal queue that carries both calls and casts.  One
-- queue for both is what keeps one sender's messages in the order it sent
-- them (as Erlang does between one sender and one process): after
-- "cast, cast, call", the call sees both casts.  Before each request the
-- server looks at the high-priority channel first, so a "high" call
-- waiting is served before any other request (it may overtake messages
-- queued earlier).  Only when both are empty does it block, in a select
-- on both; after a wakeup it still serves a high call that came in
-- meanwhile first.  A cast travels as {cast = msg}, a call as
-- {req = req, reply = future}.
--
-- A call carries a one-shot future for its reply, so a slow caller never
-- blocks the server (resolve does not wait for the reader).  A caller that
-- times out cancels that future, so a late reply (returned by the handler
-- or sent with from:reply) is dropped: resolve finds it settled.  `from`
-- is a small table {reply = method, _f = future}: it may be kept in the
-- state or sent to another task, and from:reply(v) answers from anywhere.
--
-- Channels are unbounded because a call must never block on a busy
-- server: the caller's timeout only starts after the request is queued.
--
-- Failure: if init or a handler raises (or the server task is cancelled),
-- the server settles `done` with the error first, then closes its
-- channels and rejects every queued call with the error.  A caller whose
-- send finds the channels closed reads the error from `done` and raises
-- it; a caller already waiting gets its reply future rejected.  So every
-- pending and later call raises that error.  terminate(state, err) runs
-- after a handler error.
--
-- stop(reason) closes the channels: calls made after it raise
-- "braid.server: stopped"; requests queued before it are still served
-- (the channels deliver their buffered values), then the server calls
-- terminate(state, reason) (reason defaults to "normal") and resolves
-- `done` with reason, which stop waits for (up to timeout; then it
-- cancels the server task and returns false, "timeout").
local braid = require "braid"
local H = require "braid.handle"

local M = {}

local DEFAULT_TIMEOUT = 5

M.noreply = setmetatable({}, {
  __name = "braid.noreply",
  __tostring = function() return "braid.noreply" end,
})

local function status(s)
  local st = s.done:status()
  if st == "resolved" then return "stopped" end
  if st ~= "pending" then return "failed" end
  if s.calls:is_closed() then return "stopping" end
  return "running"
end

H.kind(M, "server", { "call", "cast", "stop", "status" }, status)

-- from:reply(...): answers the call; false when it was already answered
-- or its caller gave up (timed out).
function M._reply(from, ...)
  if type(from) ~= "table" or from._f == nil then
    error("bad argument #1 to 'from:reply' (a call's from expected, got " .. H.typename(from) .. ")", 2)
  end
  local ok, r = pcall(from._f.resolve, from._f, ...)
  if not ok then
    from._f:reject(r)
    error(r, 2)
  end
  return r
end

local function from_reply(from, ...) return M._reply(from, ...) end

-- Moves every call queued on ch (casts are dropped) to the array out.
local function take_queued(ch, out)
  while true do
    local m = ch:try_recv()
    if m == nil then return end
    if type(m) == "table" and m.reply then out[#out + 1] = m end
  end
end

-- The server task.
local function serve(spec, hi, calls, ctl, done, tid, ...)
  local noreply = braid.noreply
  local pack = table.pack
  tid:resolve((braid.self()))
  local have_state, state = false, nil

  local travels = H.travels

  -- inhand: the requests taken but not answered (the call whose handler
  -- raised, or one taken alongside it); nil for init, a cast, a cancel.
  local function fail(err, inhand)
    err = travels(err)
    done:reject(err)
    hi:close()
    calls:close()
    local callers = {}
    for _, m in ipairs(inhand or {}) do
      if m.reply then callers[#callers + 1] = m end
    end
    take_queued(hi, callers)
    take_queued(calls, callers)
    -- When a caller gets the error it is theirs to handle, so `done` (an
    -- internal future) must not be reported at exit as an error nobody
    -- awaited.  It is marked observed before any caller is answered: a
    -- caller may exit the process as soon as it has the error.  A server
    -- that fails with no caller told (init, a cast) is still reported.
    if #callers > 0 then done:status() end
    for i = 1, #callers do callers[i].reply:reject(err) end
    if have_state and spec.terminate then pcall(spec.terminate, state, err) end
  end

  local ok, err = pcall(function(...)
    local r
    if spec.init then
      r = pack(pcall(spec.init, ...))
      if not r[1] then return fail(r[2]) end
      state = r[2]
    else
      state = ...                     -- no init: the first argument
    end
    have_state = true

    -- Serves one request; on a handler error returns false, err (a
    -- call's own caller is answered with the error here).
    local function process(m)
      if m.reply == nil then
        if spec.cast then
          local res = pack(pcall(spec.cast, state, m.cast))
          if not res[1] then return false, res[2] end
          state = res[2]
        end
        return true
      end
      local res
      if spec.call then
        res = pack(pcall(spec.call, state, m.req, { _f = m.reply, reply = from_reply }))
      else
        res = { false, "braid.server: no call handler" }
      end
      if not res[1] then
        return false, travels(res[2])   -- fail() answers the caller
      end
      state = res[3]
      if res[2] ~= noreply then
        local sent, e = pcall(m.reply.resolve, m.reply, res[2])
        if not sent then m.reply:reject(e) end
      end
      return true
    end

    -- Takes the next request without blocking: a high call first, then
    -- the normal queue (calls and casts in the order they were sent).
    -- Returns the request, or nil when both are empty.
    local open = { [hi] = true, [calls] = true }
    local function take(ch)
      if not open[ch] then return nil end
      local m, err = ch:try_recv()
      if m ~= nil then return m end
      if err == "closed" then open[ch] = nil end
      return nil
    end
    local function next_request()
      local m = take(hi)
      if m ~= nil then return m end
      return take(calls)
    end

    while true do
      local m = next_request()
      if m == nil then
        -- Idle: wait for any open channel.
        local cases = {}
        if open[hi] then cases[#cases + 1] = hi end
        if open[calls] then cases[#cases + 1] = calls end
        if #cases == 0 then break end
        local i, v = braid.select(cases)
        local ch = cases[i]
        if v == nil then
          open[ch] = nil              -- closed and drained
        else
          m = v
          if not rawequal(ch, hi) then
            local h = take(hi)        -- a high call that came in meanwhile goes first
            if h ~= nil then
              local okh, e = process(h)
              if not okh then return fail(e, { h, m }) end
            end
          end
        end
      end
      if m ~= nil then
        local okm, e = process(m)
        if not okm then return fail(e, { m }) end
      end
    end
    local reason = ctl:try_recv()
    if reason == nil then reason = "normal" end
    if spec.terminate then pcall(spec.terminate, state, reason) end
    done:resolve(reason)
  end, ...)
  if not ok then
    fail(err)                           -- cancelled, or an internal error
    if err == "cancelled" then error(err, 0) end
  end
end

function M.new(spec, ...)
  H.checktype(spec, 1, "braid.server", "table")
  for _, k in ipairs({ "init", "call", "cast", "terminate" }) do
    if spec[k] ~= nil and type(spec[k]) ~= "function" then
      error(("bad argument #1 to 'braid.server' (spec.%s must be a function)"):format(k), 2)
    end
  end
  local s = {
    hi = braid.chan(math.huge),
    calls = braid.chan(math.huge),
    ctl = braid.chan(math.huge),
    done = braid.future(),
    tid = braid.future(),
  }
  local id = H.id(s.calls)
  s.task = braid.spawn({ name = type(spec.name) == "string" and spec.name or ("braid.server#" .. id) },
    serve, spec, s.hi, s.calls, s.ctl, s.done, s.tid, ...)
  return H.new(M, s, id)
end

local function stopped_error(s)
  local ok, err = s.done:wait(0)
  if not ok and err ~= "timeout" then error(err, 0) end
  error("braid.server: stopped", 0)
end

function M.call(s, req, opts)
  s = H.check(M, s, "server:call")
  if req == nil then error("bad argument #1 to 'server:call' (a request expected, got nil)", 2) end
  opts = H.checkopt(opts, 2, "server:call")
  local timeout = opts.timeout
  if timeout == nil then timeout = DEFAULT_TIMEOUT end
  H.argcheck(type(timeout) == "number" and timeout >= 0, 2, "server:call",
    "opts.timeout must be a number >= 0")
  local prio = opts.priority
  H.argcheck(prio == nil or prio == "high" or prio == "normal", 2, "server:call",
    "opts.priority must be 'high' or 'normal'")
  if timeout == math.huge then timeout = nil end
  local reply = braid.future()
  local ch = prio == "high" and s.hi or s.calls
  if not ch:send({ req = req, reply = reply }) then stopped_error(s) end
  local r = table.pack(reply:wait(timeout))
  if not r[1] then
    if r[2] == "timeout" then reply:cancel() end
    error(r[2], 0)
  end
  return table.unpack(r, 2, r.n)
end

function M.cast(s, msg)
  s = H.check(M, s, "server:cast")
  if msg == nil then error("bad argument #1 to 'server:cast' (a message expected, got nil)", 2) end
  return s.calls:send({ cast = msg })
end

function M.stop(s, reason, timeout)
  s = H.check(M, s, "server:stop")
  H.argcheck(timeout == nil or (type(timeout) == "number" and timeout >= 0), 2, "server:stop",
    "timeout must be a number >= 0")
  if not s.calls:is_closed() then
    s.ctl:try_send(reason == nil and "normal" or reason)
    s.hi:close()
    s.calls:close()
  end
  -- The server stopping itself (from a handler) must not wait for itself.
  local ok, me = s.tid:wait(0)
  if ok and me == braid.self() then return true end
  local done, err = s.done:wait(timeout)
  if not done and err == "timeout" then
    s.task:cancel()
    return false, "timeout"
  end
  return true
end

function M.status(s)
  s = H.check(M, s, "server:status")
  return status(s)
end

return M
