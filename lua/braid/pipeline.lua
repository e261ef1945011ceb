-- braid.pipeline: channel pipelines (API.md, "Channel pipelines").
--
--   ch:map(fn [, opts]), ch:filter(pred [, opts]), ch:take(n),
--   ch:batch(n [, timeout]), braid.merge(chans), braid.tee(ch, n [, opts]),
--   braid.pipeline(n, fn, from [, opts]), braid.from(array),
--   braid.collect(ch)
--
-- Design notes
--
-- Every stage is one or more tasks between an input and an output channel.
-- Three rules make a chain of stages behave as one:
--
--   * Closing flows downstream: when the input closes, the output closes,
--     with the input's close error if it had one.
--   * A stage function that raises closes the output with that error
--     (receivers see `nil, err`), and the stage reads its input no
--     further: it closes the input, so the stages upstream stop too.
--   * A consumer that stops early closes its input: a stage whose send
--     finds its output closed closes its own input and ends, and so on up
--     the chain, so no task stays blocked forever.  take(n) is such a
--     consumer: after n values it closes its input.  (A stage notices a
--     closed output when it next sends, as in Go: a stage blocked reading
--     an input that never delivers again stays blocked.)
--
-- braid.collect raises a close error (a stage's failure) rather than
-- returning a partial array, like f:await raises a rejection.
--
-- A function result of nil is not a channel value: map and pipeline skip
-- it (so `fn` can also filter).
--
-- The stage tasks receive their function once, as a task argument; the
-- task bodies below use only their arguments, `braid` and the standard
-- library, so that they transfer cheaply (module upvalues travel by name).
local braid = require "braid"
local H = require "braid.handle"

local M = {}

local DEFAULT_TEE_BUFFER = 64

local function bufsize(opts, fname, n)
  local b = opts.buffer
  if b == nil then return 0 end
  if type(b) ~= "number" or (b ~= math.huge and (b < 0 or b % 1 ~= 0)) then
    error(("bad argument #%d to '%s' (opts.buffer must be a non-negative integer or math.huge)")
      :format(n, fname), 3)
  end
  return b
end

-- Closes out like a closed input: with its error, if any ("closed" is no
-- error).
local function close_like(out, err)
  if err == nil or err == "closed" then out:close() else out:close(err) end
end
M._close_like = close_like

-- The task of map and filter.  keep(fn, v) -> value to send or nil.
local function filter_map_task(inp, out, fn, is_filter)
  while true do
    local v, err = inp:recv()
    if v == nil then
      if err == nil or err == "closed" then out:close() else out:close(err) end
      return
    end
    local ok, r = pcall(fn, v)
    if not ok then
      out:close(H.travels(r))
      inp:close()
      return
    end
    local keep
    if is_filter then
      keep = r and true or false
      r = v
    else
      keep = r ~= nil
    end
    if keep then
      local sent, serr = pcall(out.send, out, r)
      if not sent then          -- r cannot travel: the stage fails with that
        out:close(serr)
        inp:close()
        return
      elseif not serr then      -- the consumer closed the output
        inp:close()
        return
      end
    end
  end
end

local function stage(fname, ch, fn, opts, is_filter)
  H.checkchan(ch, 0, fname, 3)
  if type(fn) ~= "function" then
    error(("bad argument #1 to '%s' (function expected, got %s)"):format(fname, H.typename(fn)), 3)
  end
  opts = H.checkopt(opts, 2, fname, 3)
  local workers = opts.workers
  if workers ~= nil and workers ~= 1 then
    H.argcheck(type(workers) == "number" and workers >= 1 and workers % 1 == 0, 2, fname,
      "opts.workers must be a positive integer", 3)
    if is_filter then
      local pred = fn
      fn = function(v) if pred(v) then return v end end
    end
    return M.pipeline(workers, fn, ch, opts)
  end
  local out = braid.chan(bufsize(opts, fname, 2))
  braid.spawn({ name = "braid." .. fname:match("[^:]*$") }, filter_map_task, ch, out, fn, is_filter)
  return out
end

-- ch:map(fn [, opts]) -> chan of fn(v); opts.buffer (0), opts.workers (1:
-- with more, a braid.pipeline, ordered unless opts.ordered == false).
function M.map(ch, fn, opts)
  return stage("chan:map", ch, fn, opts, false)
end

-- ch:filter(pred [, opts]) -> chan of the values v for which pred(v) holds.
function M.filter(ch, pred, opts)
  return stage("chan:filter", ch, pred, opts, true)
end

-- ch:take(n) -> chan of the first n values; then closes the output and
-- the input (take is a consumer that stops early).
function M.take(ch, n)
  H.checkchan(ch, 0, "chan:take")
  H.argcheck(type(n) == "number" and n >= 0 and n % 1 == 0, 1, "chan:take",
    "non-negative integer expected, got " .. H.typename(n))
  local out = braid.chan()
  braid.spawn({ name = "braid.take" }, function(inp, out, n)
    for _ = 1, n do
      local v, err = inp:recv()
      if v == nil then
        if err == nil or err == "closed" then out:close() else out:close(err) end
        return
      end
      if not out:send(v) then break end
    end
    out:close()
    inp:close()
  end, ch, out, n)
  return out
end

-- ch:batch(n [, timeout]) -> chan of arrays of up to n values.  A batch is
-- delivered when it holds n values, when timeout seconds have passed since
-- its first value, or (a last partial batch) when the input closes.
function M.batch(ch, n, timeout)
  H.checkchan(ch, 0, "chan:batch")
  H.argcheck(type(n) == "number" and n >= 1 and n % 1 == 0, 1, "chan:batch",
    "positive integer expected, got " .. H.typename(n))
  H.argcheck(timeout == nil or (type(timeout) == "number" and timeout >= 0), 2, "chan:batch",
    "timeout must be a number >= 0")
  local out = braid.chan()
  braid.spawn({ name = "braid.batch" }, function(inp, out, n, timeout)
    local buf, deadline = {}, nil
    while true do
      local v, err
      if #buf > 0 and timeout then
        local left = deadline - braid.now()
        if left < 0 then left = 0 end
        v, err = inp:recv(left)
      else
        v, err = inp:recv()
      end
      if v == nil then
        if err == "timeout" then
          if not out:send(buf) then inp:close(); return end
          buf = {}
        else
          if #buf > 0 and not out:send(buf) then inp:close(); return end
          if err == nil or err == "closed" then out:close() else out:close(err) end
          return
        end
      else
        buf[#buf + 1] = v
        if #buf == 1 and timeout then deadline = braid.now() + timeout end
        if #buf >= n then
          if not out:send(buf) then inp:close(); return end
          buf = {}
        end
      end
    end
  end, ch, out, n, timeout)
  return out
end

-- braid.merge(chans [, opts]) -> chan: fan-in; each input's order is kept;
-- closes when every input has closed (with the first close error seen).
function M.merge(chans, opts)
  H.checktype(chans, 1, "braid.merge", "table")
  for i = 1, #chans do
    if not H.is(chans[i], "chan") then
      error(("bad argument #1 to 'braid.merge' (element %d is not a braid.chan)"):format(i), 2)
    end
  end
  opts = H.checkopt(opts, 2, "braid.merge")
  local out = braid.chan(bufsize(opts, "braid.merge", 2))
  braid.spawn({ name = "braid.merge" }, function(chans, out)
    local open = {}
    for i = 1, #chans do open[i] = chans[i] end
    local first_err
    while #open > 0 do
      local i, v, err = braid.select(open)
      if v == nil then
        if err ~= nil and err ~= "closed" and first_err == nil then first_err = err end
        table.remove(open, i)
      elseif not out:send(v) then
        for k = 1, #open do open[k]:close() end
        return
      end
    end
    if first_err == nil then out:close() else out:close(first_err) end
  end, chans, out)
  return out
end

-- braid.tee(ch, n [, opts]) -> n chans: every value of ch to each output.
-- A value goes to every open output before the next is read, so the
-- slowest consumer paces the others once its buffer (opts.buffer, 64) is
-- full.  An output closed by its consumer is left out; when all are
-- closed, tee closes ch (at the next value it reads: like every stage, it
-- notices a closed output when it sends).
function M.tee(ch, n, opts)
  H.checkchan(ch, 1, "braid.tee")
  H.argcheck(type(n) == "number" and n >= 1 and n % 1 == 0, 2, "braid.tee",
    "positive integer expected, got " .. H.typename(n))
  opts = H.checkopt(opts, 3, "braid.tee")
  local cap = opts.buffer == nil and DEFAULT_TEE_BUFFER or bufsize(opts, "braid.tee", 3)
  local outs = {}
  for i = 1, n do outs[i] = braid.chan(cap) end
  braid.spawn({ name = "braid.tee" }, function(inp, outs)
    local open = {}
    for i = 1, #outs do open[i] = outs[i] end
    while true do
      local v, err = inp:recv()
      if v == nil then
        for i = 1, #open do
          if err == nil or err == "closed" then open[i]:close() else open[i]:close(err) end
        end
        return
      end
      -- Send v to every open output, whichever is ready first.
      local pending = {}
      for i = 1, #open do pending[i] = { open[i], v } end
      local still = {}
      while #pending > 0 do
        local i, ok = braid.select(pending)
        if ok then still[#still + 1] = pending[i][1] end
        table.remove(pending, i)
      end
      open = still
      if #open == 0 then inp:close(); return end
    end
  end, ch, outs)
  return table.unpack(outs, 1, n)
end

-- The worker of an ordered pipeline: jobs are {value, future}.
local function ordered_worker(jobs, inp, fn)
  while true do
    local job = jobs:recv()
    if job == nil then return end
    local f = job[2]
    if f:status() == "pending" then
      local ok, r = pcall(fn, job[1])
      if ok then
        if r == nil then f:resolve() else
          local sent, e = pcall(f.resolve, f, r)
          if not sent then f:reject(e); inp:close() end
        end
      else
        f:reject(H.travels(r))
        inp:close()               -- read the input no further
      end
    end
  end
end

-- braid.pipeline(n, fn, from [, opts]) -> chan: n tasks call fn on the
-- values of from; the output keeps the input order unless opts.ordered ==
-- false.  opts.buffer: capacity of the output (0).
function M.pipeline(n, fn, from, opts)
  H.argcheck(type(n) == "number" and n >= 1 and n % 1 == 0, 1, "braid.pipeline",
    "positive integer expected, got " .. H.typename(n))
  H.checktype(fn, 2, "braid.pipeline", "function")
  H.checkchan(from, 3, "braid.pipeline")
  opts = H.checkopt(opts, 4, "braid.pipeline")
  local out = braid.chan(bufsize(opts, "braid.pipeline", 4))
  if opts.ordered == false then
    -- Each worker reads the input and sends straight to the output; the
    -- last one to finish closes the output.
    local exits = braid.chan(n)
    for _ = 1, n do
      braid.spawn({ name = "braid.pipeline" }, function(inp, out, fn, exits)
        local why = "closed"
        while true do
          local v, err = inp:recv()
          if v == nil then why = err; break end
          local ok, r = pcall(fn, v)
          if not ok then
            out:close(H.travels(r))
            inp:close()
            why = "closed"
            break
          end
          if r ~= nil then
            local sent, e = pcall(out.send, out, r)
            if not sent then out:close(e); inp:close(); break end
            if not e then inp:close(); break end
          end
        end
        exits:try_send(why == nil and "closed" or why)
      end, from, out, fn, exits)
    end
    braid.spawn({ name = "braid.pipeline" }, function(exits, out, n)
      local first
      for _ = 1, n do
        local why = exits:recv()
        if why ~= "closed" and first == nil then first = why end
      end
      if first == nil then out:close() else out:close(first) end
    end, exits, out, n)
    return out
  end
  -- Ordered: a dispatcher gives each value a future, queued in input order
  -- on `order` (at most 2n in flight), and hands {value, future} to the
  -- workers; the collector awaits the futures in order.
  local jobs = braid.chan(n)
  local order = braid.chan(2 * n)
  braid.spawn({ name = "braid.pipeline" }, function(inp, jobs, order)
    while true do
      local v, err = inp:recv()
      if v == nil then
        jobs:close()
        if err == nil or err == "closed" then order:close() else order:close(err) end
        return
      end
      local f = braid.future()
      if not order:send(f) or not jobs:send({ v, f }) then
        jobs:close()
        order:close()
        inp:close()
        return
      end
    end
  end, from, jobs, order)
  for _ = 1, n do
    braid.spawn({ name = "braid.pipeline" }, ordered_worker, jobs, from, fn)
  end
  braid.spawn({ name = "braid.pipeline" }, function(order, out, inp, jobs)
    while true do
      local f, err = order:recv()
      if f == nil then
        if err == nil or err == "closed" then out:close() else out:close(err) end
        return
      end
      local ok, r = f:wait()
      local stop = false
      if not ok then
        out:close(r)
        stop = true
      elseif r ~= nil and not out:send(r) then
        stop = true                    -- the consumer closed the output
      end
      if stop then
        inp:close()
        order:close()
        while true do                  -- let the rest go undone
          local g = order:try_recv()
          if g == nil then break end
          g:cancel()
        end
        return
      end
    end
  end, order, out, from, jobs)
  return out
end

-- braid.from(array) -> chan holding the array's values, closed.
function M.from(array)
  H.checktype(array, 1, "braid.from", "table")
  local n = array.n or #array
  local count = 0
  for i = 1, n do if array[i] ~= nil then count = count + 1 end end
  local ch = braid.chan(count)
  for i = 1, n do
    local v = array[i]
    if v ~= nil then ch:send(v) end
  end
  ch:close()
  return ch
end

-- braid.collect(ch [, timeout]) -> array of every value until ch closes.
-- A close error is raised (the values read so far are lost with it);
-- with timeout (seconds for the whole collection) returns
-- `nil, "timeout"` when it passes.
function M.collect(ch, timeout)
  H.checkchan(ch, 1, "braid.collect")
  local deadline = timeout and braid.now() + timeout
  local out, n = {}, 0
  while true do
    local v, err
    if deadline then
      local left = deadline - braid.now()
      v, err = ch:recv(left > 0 and left or 0)
    else
      v, err = ch:recv()
    end
    if v == nil then
      if err == "timeout" then return nil, "timeout" end
      if err ~= nil and err ~= "closed" then error(err, 0) end
      return out
    end
    n = n + 1
    out[n] = v
  end
end

return M
