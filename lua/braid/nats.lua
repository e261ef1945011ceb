-- braid.nats: channels, services and worklists across processes and
-- machines, through a NATS server (API.md, "Many processes and machines").
--
--   braid.nats.connect(url [, opts]) -> nc | nil, err
--   nc:publish(subject, v [, reply])
--   nc:subscribe(subject [, opts]) -> chan of {subject=, data=, reply=, headers=}
--   nc:request(subject, v [, timeout]) -> data | nil, "timeout"|"no responders"
--   nc:serve(subject, handler [, opts]) -> service;  service:stop()
--   braid.nats.worklist(nc, name, seeds, fn [, opts]) -> results | count
--   nc:close(), nc:stats(), nc:flush([timeout]), nc:unsubscribe(chan)
--
-- Design notes
--
-- The connection is a C handle (bindings/lnats.c: its design notes say how
-- nats.c's threads hand messages to braid channels and futures).  This
-- file holds what is easier in Lua: the payload convention (a string
-- travels as it is; any other value as JSON, lua-cjson, with the header
-- content-type: application/json; the C side decodes JSON on receipt),
-- option checks, request's wait, and serve's worker tasks.
--
-- Blocking nats.c calls never hold a worker for long: connect (bounded by
-- opts.timeout, default 2 s, but a reconnecting connect can take longer)
-- runs on a braid.blocking thread; publish only appends to nats.c's
-- buffer (its flusher thread writes); request waits on a braid future that
-- the reply's callback settles, so only the calling task parks.
local braid = require "braid"
local H = require "braid.handle"

local M = {}
local conn = {}                 -- methods of a connection written in Lua
M._conn_methods = conn

local cjson
local POLICY = { block = 0, drop = 1, slide = 2 }
local DEFAULT_BUFFER, DEFAULT_POLICY = 64, "slide"

-- v -> bytes, is_json
local function encode(v, n, fname)
  if type(v) == "string" then return v, false end
  if v == nil then
    error(("bad argument #%d to '%s' (value expected, got nil)"):format(n, fname), 3)
  end
  cjson = cjson or require "cjson"
  local ok, s = pcall(cjson.encode, v)
  if not ok then
    error(("bad argument #%d to '%s' (cannot encode as JSON: %s)"):format(n, fname, tostring(s)), 3)
  end
  return s, true
end
M._encode = encode

local function checksubject(s, n, fname)
  if type(s) ~= "string" or s == "" or s:find("[%s]") then
    error(("bad argument #%d to '%s' (subject must be a non-empty string without spaces, got %s)")
      :format(n, fname, type(s) == "string" and ("'" .. s .. "'") or H.typename(s)), 3)
  end
end

local function connect_blocking(url, name, max_reconnect, reconnect_wait, timeout)
  return require("braid")._nats.connect(url, name, max_reconnect, reconnect_wait, timeout)
end

function M.connect(url, opts)
  H.checktype(url, 1, "braid.nats.connect", "string")
  opts = H.checkopt(opts, 2, "braid.nats.connect")
  local function num(k)
    local v = opts[k]
    if v ~= nil and type(v) ~= "number" then
      error(("bad argument #2 to 'braid.nats.connect' (opts.%s must be a number)"):format(k), 3)
    end
    return v
  end
  local name = opts.name
  if name ~= nil then H.checktype(name, 2, "braid.nats.connect", "string") end
  local mr = num("max_reconnect")
  if mr == math.huge then mr = -1 end    -- nats.c: -1 is forever
  if mr ~= nil then mr = math.floor(mr) end
  return braid.blocking(connect_blocking, url, name, mr, num("reconnect_wait"), num("timeout")):await()
end

-- nc:publish is bindings/lnats.c's (a string goes straight to nats.c);
-- it calls this for any other value.
function conn._publish(nc, subject, v, reply)
  checksubject(subject, 1, "nc:publish")
  if reply ~= nil then checksubject(reply, 3, "nc:publish") end
  local data, json = encode(v, 2, "nc:publish")
  return nc:_pub(subject, data, reply, json)
end

local function chanopts(opts, fname)
  local buffer = opts.buffer
  if buffer == nil then buffer = DEFAULT_BUFFER end
  H.argcheck(type(buffer) == "number" and buffer >= 1 and (buffer == math.huge or buffer % 1 == 0),
    2, fname, "opts.buffer must be a positive integer or math.huge", 3)
  local policy = opts.policy or DEFAULT_POLICY
  H.argcheck(POLICY[policy] ~= nil, 2, fname,
    "opts.policy must be \"block\", \"drop\" or \"slide\"", 3)
  return buffer, POLICY[policy]
end

function conn.subscribe(nc, subject, opts)
  checksubject(subject, 1, "nc:subscribe")
  opts = H.checkopt(opts, 2, "nc:subscribe")
  if opts.queue ~= nil then checksubject(opts.queue, 2, "nc:subscribe") end
  local buffer, policy = chanopts(opts, "nc:subscribe")
  return nc:_sub(subject, opts.queue, buffer, policy)
end

-- Unsubscribes at once (closing the channel unsubscribes at the next
-- message that arrives for it).
function conn.unsubscribe(nc, ch)
  return nc:_unsub(H.checkchan(ch, 1, "nc:unsubscribe"))
end

function conn.request(nc, subject, v, timeout)
  checksubject(subject, 1, "nc:request")
  local data, json = encode(v, 2, "nc:request")
  if timeout ~= nil and type(timeout) ~= "number" then
    error(("bad argument #3 to 'nc:request' (number expected, got %s)"):format(H.typename(timeout)), 2)
  end
  local f, err, token = nc:_req(subject, data, json)
  if f == nil then
    nc:_forget(token)
    return nil, err
  end
  -- No timeout: waited in slices of 60 s (a pending request counts as a
  -- runtime job, so the main thread's deadlock check waits for it anyway).
  local ok, settled, e
  repeat
    ok, settled, e = pcall(f.wait, f, timeout or 60)
  until timeout or not ok or settled or e ~= "timeout"
  if not ok then                         -- the task was cancelled
    nc:_forget(err)
    error(settled, 0)
  end
  if settled ~= true then
    nc:_forget(err)
    if e == "timeout" then return nil, "timeout" end
    error(e, 0)
  end
  return f:await()
end

-- serve: opts.workers tasks read one queue-group subscription (policy
-- "block": requests wait in the channel, and beyond it in nats.c's pending
-- queue, rather than being dropped).  A handler that raises answers with
-- the NATS micro services' error reply (headers Nats-Service-Error: the
-- message, Nats-Service-Error-Code: 500; an empty payload), which
-- nc:request returns as nil, "handler error: <message>"; the error is also
-- written to stderr.
local function error_reply(nc, reply, msg)
  -- a header value is one line
  msg = tostring(msg):gsub("[\r\n]+", " "):sub(1, 1024)
  return pcall(nc._pub, nc, reply, "", nil, false,
    { ["Nats-Service-Error"] = msg, ["Nats-Service-Error-Code"] = "500" })
end

local function serve_worker(nc, ch, handler, subject)
  for m in ch:iter() do
    local ok, r = pcall(handler, m.data, m)
    if not ok then
      io.stderr:write(("braid.nats: serve '%s': handler error: %s\n"):format(subject, tostring(r)))
      if m.reply then error_reply(nc, m.reply, r) end
    elseif m.reply then
      if r == nil then r = "" end
      local sent, e = pcall(nc.publish, nc, m.reply, r)
      if not sent then
        io.stderr:write(("braid.nats: serve '%s': reply: %s\n"):format(subject, tostring(e)))
        error_reply(nc, m.reply, e)
      end
    end
  end
end

function conn.serve(nc, subject, handler, opts)
  checksubject(subject, 1, "nc:serve")
  H.checktype(handler, 2, "nc:serve", "function")
  opts = H.checkopt(opts, 3, "nc:serve")
  local workers = opts.workers or 16
  H.argcheck(type(workers) == "number" and workers >= 1 and workers % 1 == 0, 3, "nc:serve",
    "opts.workers must be a positive integer")
  local queue = opts.queue
  if queue == nil then queue = subject end
  if queue ~= false then checksubject(queue, 3, "nc:serve") else queue = nil end
  local buffer = opts.buffer or 64
  local ch = nc:_sub(subject, queue, buffer, POLICY.block)
  local done = {}
  for i = 1, workers do
    done[i] = braid.spawn({ name = "nats.serve " .. subject }, serve_worker, nc, ch, handler, subject)
  end
  return require("braid.natsservice").new(nc, ch, subject, queue, done)
end

-- Joins the worklist module's functions (lua/braid/natswork.lua).
function M.worklist(...)
  return require("braid.natswork").worklist(...)
end

return M
