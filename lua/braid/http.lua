-- braid.http: HTTP/1.1 and WebSocket on braid.net (API.md "HTTP and
-- WebSocket").
--
-- Design notes
--
-- Parsing and framing are C (bindings/lhttp.c: http-parser and wslay);
-- this file does the I/O through braid.net, so every wait parks a task on
-- the netpoller.  The server is an accept-loop task and one task per
-- connection; that task reads, parses, runs handler(req) for each request
-- in order, writes the response and goes on while the connection is kept
-- alive.  Timers: header_timeout runs from a request's first byte (for the
-- first request, from the accept) to the end of its head; idle_timeout
-- bounds every other wait for the client.  max_connections is a channel
-- used as a semaphore by the accept loop.  The request counters of
-- stats() are C counters (braid._http.stats) that every connection task
-- adds to without a message; the table of open connections and the
-- "closing" flag live in one braid.server task (ctl) that connection
-- tasks cast to once when they open and once when they end.  Graceful
-- close closes idle connections at once (conn:_busy() tells them), and
-- busy ones close themselves when their request is answered.
-- The server handle is a box (braid.handle), so it can be passed to and
-- used from any task.
--
-- The client keeps, per scheme://host:port, a channel of idle connections
-- registered process-wide (braid._http.shared), so the tasks of every
-- worker share one pool.  A request on a reused connection that the peer
-- closed before answering is retried once on a fresh one.
local braid = require "braid"
local H = require "braid.handle"
local C = braid._http

local M = {}
H.kind(M, "http", { "addr", "close", "stats" }, function(s)
  return s.ctl and (s.closing:is_closed() and "closed" or s.addr_s) or ""
end)

local type, tostring, tonumber, pairs, ipairs = type, tostring, tonumber, pairs, ipairs
local concat, fmt = table.concat, string.format

local REASONS = {
  [100] = "Continue", [101] = "Switching Protocols", [200] = "OK", [201] = "Created",
  [202] = "Accepted", [204] = "No Content", [206] = "Partial Content",
  [301] = "Moved Permanently", [302] = "Found", [303] = "See Other", [304] = "Not Modified",
  [307] = "Temporary Redirect", [308] = "Permanent Redirect", [400] = "Bad Request",
  [401] = "Unauthorized", [403] = "Forbidden", [404] = "Not Found",
  [405] = "Method Not Allowed", [408] = "Request Timeout", [409] = "Conflict",
  [410] = "Gone", [411] = "Length Required", [413] = "Content Too Large",
  [414] = "URI Too Long", [415] = "Unsupported Media Type", [426] = "Upgrade Required",
  [429] = "Too Many Requests", [431] = "Request Header Fields Too Large",
  [500] = "Internal Server Error", [501] = "Not Implemented", [502] = "Bad Gateway",
  [503] = "Service Unavailable", [504] = "Gateway Timeout",
}
M.reasons = REASONS

-- The transport: braid.net.  Tests may set M._net (this state only) or,
-- in a build without braid.net, M._set_test_transport(t) for every state
-- of the process (a shared future resolved with t).
local function net()
  local n = M._net or braid.net
  if not n then
    local f = C.shared("braid.http.test_transport", braid.future())
    if f:status() == "resolved" then
      n = f:await()
      M._net = n
    end
  end
  if not n then error("braid: braid.http needs braid.net, which this build lacks", 3) end
  return n
end

function M._set_test_transport(t)
  C.shared("braid.http.test_transport", braid.future()):resolve(t)
end

-- ---------------------------------------------------------------------------
-- URLs and queries
-- ---------------------------------------------------------------------------

local function unescape(s)
  if not s:find("[%%+]") then return s end      -- the common case: nothing to do
  s = s:gsub("+", " ")
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end
M.unescape = unescape

function M.escape(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c) return fmt("%%%02X", c:byte()) end))
end

-- "a=1&b=x+y&c=%41" -> {a="1", b="x y", c="A"}; the first of repeated keys.
function M.decode_query(q)
  local t = {}
  if not q or q == "" then return t end
  for part in q:gmatch("[^&;]+") do
    local k, v = part:match("^([^=]*)=(.*)$")
    if not k then k, v = part, "" end
    k = unescape(k)
    if t[k] == nil then t[k] = unescape(v) end
  end
  return t
end

-- A table of parameters -> "a=1&b=x%20y" (keys sorted).
function M.encode_query(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  for i, k in ipairs(keys) do keys[i] = M.escape(k) .. "=" .. M.escape(t[k]) end
  return concat(keys, "&")
end

local DEFAULT_PORT = { http = 80, https = 443, ws = 80, wss = 443 }

-- url -> {scheme, host, port, target, tls, hostport (for connect), hosthdr}
function M.parse_url(url)
  local scheme, rest = url:match("^(%a[%w+.-]*)://(.*)$")
  if not scheme then return nil, "bad url: " .. url end
  scheme = scheme:lower()
  local dport = DEFAULT_PORT[scheme]
  if not dport then return nil, "unsupported scheme: " .. scheme end
  local authority = rest:match("^[^/?#]*")
  local target = rest:sub(#authority + 1):gsub("#.*$", "")
  if target == "" then target = "/" elseif target:sub(1, 1) == "?" then target = "/" .. target end
  authority = authority:gsub("^.*@", "")    -- no userinfo
  local host, port = authority:match("^%[([^%]]+)%]:?(%d*)$")
  local v6 = host ~= nil
  if not host then host, port = authority:match("^([^:]+):?(%d*)$") end
  if not host or host == "" then return nil, "bad url: " .. url end
  port = tonumber(port) or dport
  local h = v6 and "[" .. host .. "]" or host
  return {
    scheme = scheme, host = host, port = port, target = target,
    tls = scheme == "https" or scheme == "wss",
    hostport = h .. ":" .. port,
    hosthdr = port == dport and h or h .. ":" .. port,
  }
end

-- Resolves a Location against the URL it came from.
local function resolve(base, loc)
  if loc:match("^%a[%w+.-]*://") then return loc end
  local u = M.parse_url(base)
  local origin = u.scheme .. "://" .. u.hosthdr
  if loc:sub(1, 2) == "//" then return u.scheme .. ":" .. loc end
  if loc:sub(1, 1) == "/" then return origin .. loc end
  local dir = u.target:gsub("[?#].*$", ""):gsub("[^/]*$", "")
  return origin .. dir .. loc
end

-- ---------------------------------------------------------------------------
-- Writing messages
-- ---------------------------------------------------------------------------

local STATUS_LINES = {}      -- "HTTP/1.1 200 OK\r\n" by known status, made once

local function status_line(status)
  local line = STATUS_LINES[status]
  if line == nil then
    line = fmt("HTTP/1.1 %d %s\r\n", status, REASONS[status] or "Status")
    if REASONS[status] then STATUS_LINES[status] = line end
  end
  return line
end
for status in pairs(REASONS) do status_line(status) end   -- C.answer reads them
local c_answer = C.answer
local stats_finish = C.stats_finish     -- st:finish() without a method lookup per request

-- Header lines already checked, per state: name -> value -> the line
-- ("Name: value\r\n"), so that a handler answering with the same headers
-- every time (the common case) pays two table lookups per header, not two
-- pattern searches and the tostring calls.  Emptied when it grows past
-- HEADER_CACHE_MAX lines (headers that vary, such as an ETag).
local HEADER_CACHE_MAX = 512
local header_lines, header_nlines = {}, 0
local lower_names = {}                 -- name -> name:lower(), same bound

local function header_line(k, v)
  local byname = header_lines[k]
  local line = byname and byname[v]
  if line then return line end
  local ks, vs = tostring(k), tostring(v)
  if ks:find("[\r\n:]") or vs:find("[\r\n]") then error("braid.http: bad header " .. ks, 0) end
  line = ks .. ": " .. vs .. "\r\n"
  if v ~= v then return line end       -- NaN: not a table key
  if header_nlines >= HEADER_CACHE_MAX then header_lines, header_nlines, lower_names = {}, 0, {} end
  if not byname then byname = {}; header_lines[k] = byname end
  byname[v] = line
  header_nlines = header_nlines + 1
  return line
end

local function lower_name(k)
  local l = lower_names[k]
  if not l then l = tostring(k):lower(); lower_names[k] = l end
  return l
end

-- A message head: the first line, the caller's headers sorted by name,
-- then the defaults (up to four name/value pairs, the names given with
-- their lower-case forms in DEFAULT_LOWER, or one list of {name, value}
-- pairs) that the caller did not set,
-- the blank line and, when given, the body: one string.
--
-- The server's common answers never come here: C.answer builds them
-- (simple() below); this formats what it does not (numbers, lists of
-- values, non-string names), the client's requests and streamed heads.
local function by_name(a, b) return tostring(a) < tostring(b) end

local DEFAULT_LOWER = {
  Date = "date", ["Content-Length"] = "content-length", Connection = "connection",
  ["Transfer-Encoding"] = "transfer-encoding", Host = "host", ["User-Agent"] = "user-agent",
  Accept = "accept",
}
local function has_lower(lnames, nh, name)
  for i = 1, nh do if lnames[i] == name then return true end end
  return false
end

local function head(first, headers, body, k1, v1, k2, v2, k3, v3, k4, v4)
  local t, names, lnames, n, nh = { first }, {}, {}, 1, 0
  if headers and next(headers) ~= nil then
    local strings = true
    for k in pairs(headers) do
      nh = nh + 1
      names[nh] = k
      if type(k) ~= "string" then strings = false end
    end
    if nh > 1 then table.sort(names, not strings and by_name or nil) end
    for i = 1, nh do
      local k = names[i]
      local v = headers[k]
      if type(v) == "table" then
        for _, x in ipairs(v) do n = n + 1; t[n] = header_line(k, x) end
      else
        n = n + 1
        t[n] = header_line(k, v)
      end
      lnames[i] = lower_name(k)
    end
  end
  if type(k1) == "table" then          -- a list of {name, value} defaults
    for _, kv in ipairs(k1) do
      if not has_lower(lnames, nh, kv[1]:lower()) then n = n + 1; t[n] = kv[1] .. ": " .. kv[2] .. "\r\n" end
    end
    k1 = nil
  end
  if k1 and not has_lower(lnames, nh, DEFAULT_LOWER[k1]) then n = n + 1; t[n] = k1 .. ": " .. v1 .. "\r\n" end
  if k2 and not has_lower(lnames, nh, DEFAULT_LOWER[k2]) then n = n + 1; t[n] = k2 .. ": " .. v2 .. "\r\n" end
  if k3 and not has_lower(lnames, nh, DEFAULT_LOWER[k3]) then n = n + 1; t[n] = k3 .. ": " .. v3 .. "\r\n" end
  if k4 and not has_lower(lnames, nh, DEFAULT_LOWER[k4]) then n = n + 1; t[n] = k4 .. ": " .. v4 .. "\r\n" end
  n = n + 1
  t[n] = "\r\n"
  if body and body ~= "" then n = n + 1; t[n] = body end
  return concat(t, "", 1, n)
end

-- The Date header, formatted once a second (per state), not per response.
local date_t, date_s
local function httpdate()
  local t = os.time()
  if t ~= date_t then date_t, date_s = t, os.date("!%a, %d %b %Y %H:%M:%S GMT", t) end
  return date_s
end

-- ---------------------------------------------------------------------------
-- WebSocket (both ends)
-- ---------------------------------------------------------------------------

local WS = {}
WS.__index = WS
WS.__name = "braid.websocket"
WS.__tostring = function(ws)
  return "braid.websocket (" .. (ws._closed and "closed" or "open") .. ")"
end

local function new_ws(conn, role, rest)
  local ws = setmetatable({ _conn = conn, _fr = C.ws(role), _inbox = {}, _head = 1 }, WS)
  if rest and rest ~= "" then ws:_take(ws._fr:feed(rest)) end
  return ws
end

function WS:_take(msgs, err)
  if msgs then
    local n = self._n or 0
    for _, m in ipairs(msgs) do n = n + 1; self._inbox[n] = m end
    self._n = n
  end
  if err then self._proto = true end
end

function WS:_flush(timeout)
  local out = self._fr:output()
  if out ~= "" then
    local ok, err = self._conn:write(out, timeout)
    if not ok then return nil, err end
  end
  return true
end

local function ws_check(ws, fname)
  if getmetatable(ws) ~= WS then
    error(fmt("bad argument #1 to '%s' (braid.websocket expected, got %s)", fname, H.typename(ws)), 3)
  end
end

-- ws:send(data [, "binary"]) -> true | nil, err
function WS.send(ws, data, kind)
  ws_check(ws, "ws:send")
  if type(data) ~= "string" then
    error(fmt("bad argument #1 to 'ws:send' (string expected, got %s)", H.typename(data)), 2)
  end
  if kind ~= nil and kind ~= "text" and kind ~= "binary" then
    error("bad argument #2 to 'ws:send' (\"text\" or \"binary\" expected)", 2)
  end
  if ws._closed then return nil, "closed" end
  local ok, err = ws._fr:send(kind or "text", data)
  if not ok then return nil, err end
  return ws:_flush()
end

local function ws_shut(ws)
  if not ws._closed then
    ws._closed = true
    ws:_flush(1)
    ws._conn:close()
  end
end

-- ws:recv([timeout]) -> data, kind | nil, "closed"|"timeout"|err
function WS.recv(ws, timeout)
  ws_check(ws, "ws:recv")
  local deadline = timeout and braid.now() + timeout
  while true do
    local m = ws._inbox[ws._head]
    if m then
      ws._inbox[ws._head] = nil
      ws._head = ws._head + 1
      if m.kind == "text" or m.kind == "binary" then
        return m.data, m.kind
      elseif m.kind == "close" then
        ws.close_code, ws.close_reason = m.code, m.data
        ws_shut(ws)        -- wslay queued the close reply
        return nil, "closed"
      elseif m.kind == "ping" then
        ws:_flush()        -- wslay queued the pong
      elseif m.kind == "pong" then
        ws.last_pong = m.data
      end
    else
      if ws._proto then
        ws_shut(ws)        -- wslay queued close 1002
        return nil, "protocol error"
      end
      if ws._closed then return nil, "closed" end
      local left = deadline and math.max(0, deadline - braid.now())
      local data, err = ws._conn:read_some(65536, left)
      if not data then
        if err ~= "timeout" then ws._closed = true; ws._conn:close() end
        return nil, err == "timeout" and "timeout" or "closed"
      end
      ws:_take(ws._fr:feed(data))
    end
  end
end

-- ws:ping([data]) -> true | nil, err (the pong shows as ws.last_pong after
-- a later recv).
function WS.ping(ws, data)
  ws_check(ws, "ws:ping")
  if ws._closed then return nil, "closed" end
  local ok, err = ws._fr:send("ping", data and tostring(data) or "")
  if not ok then return nil, err end
  return ws:_flush()
end

-- ws:close([code [, reason]]): sends a close frame, waits (up to 1 s) for
-- the peer's, then closes the connection.
function WS.close(ws, code, reason)
  ws_check(ws, "ws:close")
  if ws._closed then return true end
  ws._fr:close(code or 1000, reason or "")
  ws:_flush(1)
  local deadline = braid.now() + 1
  while braid.now() < deadline do
    local _, _, received = ws._fr:status()
    if received then break end
    local data = ws._conn:read_some(65536, deadline - braid.now())
    if not data then break end
    ws:_take(ws._fr:feed(data))
  end
  ws._closed = true
  ws._conn:close()
  return true
end

-- ---------------------------------------------------------------------------
-- Server
-- ---------------------------------------------------------------------------

local REQ = {}
REQ.__index = REQ
REQ.__name = "braid.http_request"
-- What the server reads back after the handler, false unless the handler
-- streamed or upgraded (defaults here: no field to set per request).
REQ._responded, REQ._upgraded, REQ._w, REQ._ws = false, false, false, false

local W = {}
W.__index = W

function W.write(w, chunk)
  if w._closed then return nil, "closed" end
  chunk = tostring(chunk)
  if chunk == "" then return true end
  if w._chunked then
    return w._conn:write(fmt("%x\r\n", #chunk) .. chunk .. "\r\n")
  end
  return w._conn:write(chunk)
end

function W.close(w)
  if w._closed then return true end
  w._closed = true
  if w._chunked then return w._conn:write("0\r\n\r\n") end
  return true
end

-- req:stream(status [, headers]) -> w: a chunked response.
function REQ.stream(req, status, headers)
  if getmetatable(req) ~= REQ then
    error("bad argument #1 to 'req:stream' (braid.http request expected)", 2)
  end
  if math.type(status) ~= "integer" or status < 100 or status > 999 then
    error("bad argument #1 to 'req:stream' (HTTP status expected)", 2)
  end
  if req._responded then error("braid: req:stream: a response was already sent", 2) end
  req._responded = true
  local chunked = req.version ~= "1.0"
  if not chunked then req._keep = false end
  local te = chunked and "Transfer-Encoding" or nil
  local cl = not req._keep and "Connection" or nil
  local ok, h
  if te then
    ok, h = pcall(head, status_line(status), headers, nil, "Date", httpdate(), te, "chunked",
                  cl, "close")
  else
    ok, h = pcall(head, status_line(status), headers, nil, "Date", httpdate(), cl, "close")
  end
  if not ok then error(h, 2) end
  local w = setmetatable({ _conn = req._conn, _chunked = chunked }, W)
  req._w = w
  local okw, err = req._conn:write(h)
  if not okw then w._closed = true; req._keep = false; return w, err end
  return w
end

-- braid.http.upgrade(req) -> ws | nil, err
function M.upgrade(req)
  if getmetatable(req) ~= REQ then
    error(fmt("bad argument #1 to 'braid.http.upgrade' (braid.http request expected, got %s)",
      H.typename(req)), 2)
  end
  local h = req.headers
  if req._responded then return nil, "a response was already sent" end
  if not (h.upgrade and h.upgrade:lower():find("websocket", 1, true)) then
    return nil, "not a websocket request"
  end
  local key = h["sec-websocket-key"]
  if not key then return nil, "missing sec-websocket-key" end
  if h["sec-websocket-version"] ~= "13" then return nil, "unsupported websocket version" end
  req._responded, req._upgraded, req._keep = true, true, false
  local ok, err = req._conn:write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n" ..
    "Connection: Upgrade\r\nSec-WebSocket-Accept: " .. C.ws_accept(key) .. "\r\n\r\n")
  if not ok then return nil, err end
  local ws = new_ws(req._conn, "server", req._rest)
  req._ws = ws
  return ws
end

-- Content-Length values of bodies under 4 KiB, made once (tostring of an
-- integer formats it with snprintf: a tenth of a hello-world response).
local clen_strings = {}

-- The response to a handler's results, in Lua: what C.answer leaves.
local function answer_lua(status, keep, version, headers, body, is_head)
  body = body or ""
  local lenk, lenv
  if status == 204 or status == 304 or status < 200 then
    body = ""          -- RFC 9110: no body and no Content-Length for these
  else
    local n = #body
    lenk, lenv = "Content-Length", clen_strings[n]
    if not lenv then
      lenv = tostring(n)
      if n < 4096 then clen_strings[n] = lenv end
    end
  end
  local connv = not keep and "close" or version == "1.0" and "keep-alive" or nil
  local connk = connv and "Connection"
  local b = not is_head and body or nil
  if lenk then
    return head(status_line(status), headers, b, "Date", httpdate(), lenk, lenv, connk, connv)
  end
  return head(status_line(status), headers, b, "Date", httpdate(), connk, connv)
end
M._answer_lua = answer_lua   -- for tests/lua/http_wire_spec.lua

-- Answers a handler's results on conn: conn:write's results, or false and
-- why when a result has the wrong type (raises on a header that would
-- split the message).  C.answer does the common case (checking the
-- results first): on a braid.net connection it writes the answer itself
-- (true, or nil and why), else it returns the response; nothing back
-- means answer_lua's case.
local function write_answer(conn, s, status, keep, version, headers, body, is_head)
  return conn:write(s or answer_lua(status, keep, version, headers, body, is_head))
end

local function simple(conn, status, keep, version, headers, body, is_head)
  local s, why = c_answer(status, headers, body, is_head, keep, version, STATUS_LINES[status], conn)
  if s == true then return true end
  if s == false or (s == nil and why) then return s, why end
  return write_answer(conn, s, status, keep, version, headers, body, is_head)
end

local function log_error(msg)
  io.stderr:write("braid.http: handler error: ", tostring(msg), "\n")
  io.stderr:flush()
end

local function handler_traceback(e)
  return debug.traceback(H.errtext(e), 2)
end


-- Serves one parsed request (keep: the connection may stay open after it;
-- upgrade: it asks for one); returns whether the connection stays open.
-- The parser's message becomes the request (it has room for these fields:
-- lhttp.c presizes it).
local function serve_one(conn, m, keep, upgrade, handler, cfg, remote, rest)
  local req = m                 -- with REQ as its metatable (the parser's, or set by the caller)
  local rq = m.rawquery
  req.query = rq ~= "" and M.decode_query(rq) or {}
  req.remote, req._conn, req._rest = remote, conn, rest
  if upgrade and not (m.headers.upgrade or ""):lower():find("websocket", 1, true) then
    keep = false          -- an upgrade we do not speak: answer, then close
  end
  req._keep = keep
  -- The handler's first three results (status, headers, body), or false
  -- and the error with its traceback.
  local ok, status, headers, body = xpcall(handler, handler_traceback, req)
  local err = not ok and status or nil
  local is_head = m.method == "HEAD"
  local responded = req._responded      -- streamed or upgraded: false, from REQ
  if ok and not responded then
    -- simple(), one call less: C.answer writes the common case itself.
    local keep2, version = req._keep, req.version
    local okw, wrote, why = pcall(c_answer, status, headers, body, is_head, keep2, version,
                                  STATUS_LINES[status], conn)
    if okw and wrote ~= true and wrote ~= false and why == nil then   -- a string, or Lua's case
      okw, wrote, why = pcall(write_answer, conn, wrote, status, keep2, version, headers, body, is_head)
    end
    if not okw then
      ok, err = false, wrote                     -- a header that would split the message
    elseif wrote == false then
      ok, err = false, debug.traceback("braid.http: " .. why, 1)
    elseif not wrote then
      req._keep = false                          -- the write failed
    end
    if ok then        -- the common case: no stream or WebSocket to close
      local closing = stats_finish(cfg.stats)
      return req._keep and not closing
    end
  end
  if not ok then
    log_error(err)
    cfg.stats:error()
    if req._responded then
      req._keep = false          -- a streamed response cut short
    else
      req._keep = false
      simple(conn, 500, false, req.version, { ["content-type"] = "text/plain" },
        "Internal Server Error\n", is_head)
    end
  elseif req._w and not req._w._closed then
    req._w:close()
  end
  if req._ws then req._ws:close() end
  -- A graceful close leaves busy connections open: each closes itself
  -- once its request is answered.
  local closing = stats_finish(cfg.stats)
  return req._keep and not req._upgraded and not closing
end

-- Answers a request the parser refused (400, 413, 431) and closes.
local function refuse(conn, cfg, status)
  simple(conn, status, false, "1.1", { ["content-type"] = "text/plain" },
    (REASONS[status] or "Error") .. "\n")
  cfg.stats:bad()
end

-- The connection loop on a braid.net connection: conn:_http_next reads
-- and parses in C (lnet.c), straight from the connection's buffer, counts
-- the request in cfg.stats (the parser's), tells whether the connection
-- may stay open, and marks it busy until its next call (for a graceful
-- close).
local function serve_net(conn, p, handler, cfg)
  local remote = conn:peer()
  local ht, it = cfg.header_timeout, cfg.idle_timeout
  local next_request = conn._http_next
  while true do
    local m, st, upgrade = next_request(conn, p, ht, it)
    if m then
      -- What follows an upgrade request stays in conn's buffer: the
      -- WebSocket reads it from there.
      if not serve_one(conn, m, st, upgrade, handler, cfg, remote, nil) then return end
    elseif st == "continue" then
      conn:write("HTTP/1.1 100 Continue\r\n\r\n")
    else
      if math.type(st) == "integer" then refuse(conn, cfg, st) end
      return                                 -- closed, timeout, error
    end
  end
end

-- The task of one connection.
local function serve_conn(conn, handler, cfg, ctl, id, slots)
  local ok, err = pcall(function()
    local p = C.parser("request", cfg.max_header, cfg.max_body, cfg.stats, REQ)
    if conn._http_next then return serve_net(conn, p, handler, cfg) end
    -- Any other connection object (M._set_test_transport's): bytes from
    -- conn:read_some through p:feed.
    local remote = conn:peer()
    local queue, qi, qn = {}, 1, 0
    local failed, rest
    local head_deadline = braid.now() + cfg.header_timeout
    local state = "idle"                     -- the parser's, as of its last feed
    while true do
      -- Wait for a complete request (or a parse error).
      while queue[qi] == nil and not failed do
        local timeout
        if state == "head" then
          head_deadline = head_deadline or braid.now() + cfg.header_timeout
          timeout = head_deadline - braid.now()
        elseif state == "idle" and head_deadline then
          timeout = head_deadline - braid.now()
        else
          timeout = cfg.idle_timeout
        end
        if timeout <= 0 then return end
        local data = conn:read_some(65536, timeout)
        if not data then return end           -- timeout, closed, error
        local msgs, st, _, r, expect
        msgs, st, _, r, expect, state = p:feed(data)
        for i = 1, #msgs do qn = qn + 1; queue[qn] = msgs[i] end
        if expect then conn:write("HTTP/1.1 100 Continue\r\n\r\n") end
        if st then failed = st end
        if r then rest = r end
      end
      local m = queue[qi]
      if m then
        queue[qi] = nil
        qi = qi + 1
        head_deadline = nil
        local keep, upgrade = m.keep_alive, m.upgrade
        m.keep_alive, m.upgrade, m.chunked = nil, nil, nil   -- parser flags, not the request's
        setmetatable(m, REQ)
        conn:_busy(true)                     -- for a graceful close
        cfg.stats:begin()                    -- counted in C: no message per request
        local again = serve_one(conn, m, keep and not cfg.closing:is_closed(), upgrade, handler,
          cfg, remote, upgrade and rest or nil)
        conn:_busy(false)
        if not again then return end
        if state == "head" then head_deadline = braid.now() + cfg.header_timeout end
      else
        refuse(conn, cfg, failed)
        return
      end
    end
  end)
  conn:close()
  pcall(ctl.cast, ctl, { "gone", id })
  if slots then pcall(slots.recv, slots, 0) end
  if not ok and err ~= "cancelled" then log_error(err) end
end
M._serve_conn = serve_conn

-- The ctl server: open connections, graceful close.  Request counts live
-- in cfg.stats (C counters every connection task adds to), and whether a
-- connection is serving a request in its conn (conn:_busy()).
local ctl_spec = {
  init = function()
    return { connections = 0, conns = {}, closing = false, open = 0 }
  end,
  cast = function(s, msg)
    local op, id = msg[1], msg[2]
    if op == "open" then
      s.connections = s.connections + 1
      s.open = s.open + 1
      s.conns[id] = msg[3]
      if s.closing then msg[3]:close() end
    elseif op == "gone" then
      if s.conns[id] then s.open = s.open - 1 end
      s.conns[id] = nil
    end
    return s
  end,
  call = function(s, req)
    if req == "stats" then
      return { connections = s.connections, open = s.open }, s
    elseif req == "closing" then
      s.closing = true
      for _, c in pairs(s.conns) do
        if not c:_busy() then c:close() end
      end
      return true, s
    elseif req == "closeall" then
      for _, c in pairs(s.conns) do c:close() end
      return s.open, s
    end
    return nil, s
  end,
}

local function posnum(v, n, fname, what)
  H.argcheck(v == nil or (type(v) == "number" and v > 0), n, fname, what .. " must be a positive number")
end

local function config(opts, fname)
  opts = H.checkopt(opts, 3, fname)
  posnum(opts.header_timeout, 3, fname, "opts.header_timeout")
  posnum(opts.idle_timeout, 3, fname, "opts.idle_timeout")
  posnum(opts.max_connections, 3, fname, "opts.max_connections")
  H.argcheck(opts.max_body == nil or math.type(opts.max_body) == "integer" and opts.max_body >= 0,
    3, fname, "opts.max_body must be an integer >= 0")
  return {
    max_body = opts.max_body or 1 << 20,
    max_header = opts.max_header or 64 * 1024,
    header_timeout = opts.header_timeout or 10,
    idle_timeout = opts.idle_timeout or 60,
    max_connections = opts.max_connections,
    closing = braid.chan(),
    stats = C.stats(),
  }
end

local function accept_loop(l, handler, cfg, ctl, slots)
  local n = 0
  while true do
    if slots then
      if not slots:send(true) then break end   -- closed: the server closes
    end
    local conn, err = l:accept()
    if not conn then
      if slots then slots:recv(0) end
      if err == "closed" or cfg.closing:is_closed() then break end
      braid.sleep(0.01)                 -- EMFILE and friends: back off
    else
      n = n + 1
      ctl:cast({ "open", n, conn })
      -- Nobody awaits a connection's task: it ends quietly, even when
      -- cancelled (at exit); handler errors are logged by serve_conn.
      braid.spawn({ name = "braid.http conn " .. n }, function(...)
        pcall(require("braid.http")._serve_conn, ...)   -- this state's module
      end, conn, handler, cfg, ctl, n, slots)
    end
  end
end

M._accept_loop = accept_loop

-- braid.http.serve(addr, handler [, opts]) -> server | nil, err
function M.serve(addr, handler, opts)
  local fname = "braid.http.serve"
  H.checktype(addr, 1, fname, "string")
  H.checktype(handler, 2, fname, "function")
  local cfg = config(opts, fname)
  local l, err = net().listen(addr, { backlog = opts and opts.backlog, reuseport = opts and opts.reuseport })
  if not l then return nil, err end
  local ctl = braid.server(ctl_spec)
  local slots = cfg.max_connections and braid.chan(cfg.max_connections)
  local task = braid.spawn({ name = "braid.http accept " .. l:addr() }, function(...)
    return require("braid.http")._accept_loop(...)
  end, l, handler, cfg, ctl, slots)
  return H.new(M, { ctl = ctl, listener = l, closing = cfg.closing, slots = slots, counters = cfg.stats,
                    task = task, addr_s = l:addr() }, H.id(cfg.closing))
end

function M.addr(s)
  s = H.check(M, s, "addr")
  return s.addr_s
end

function M.stats(s)
  s = H.check(M, s, "stats")
  local t = s.ctl:call("stats")
  t.requests, t.active, t.errors, t.bad_requests = s.counters:get()
  return t
end

-- server:close([timeout]): stop accepting, wait up to timeout (default 5 s)
-- for requests in flight, then close every connection.
function M.close(s, timeout)
  s = H.check(M, s, "close")
  H.argcheck(timeout == nil or (type(timeout) == "number" and timeout >= 0), 1, "close",
    "timeout must be a number >= 0")
  if s.closing:is_closed() then return true end
  s.counters:close()          -- what connection tasks read (C)
  s.closing:close()
  if s.slots then s.slots:close() end
  s.listener:close()
  local deadline = braid.now() + (timeout or 5)
  s.ctl:call("closing")
  local _, active = s.counters:get()
  while active > 0 and braid.now() < deadline do
    braid.sleep(0.01)
    _, active = s.counters:get()
  end
  s.ctl:call("closeall")
  s.task:wait(1)
  return active == 0
end

-- ---------------------------------------------------------------------------
-- Client
-- ---------------------------------------------------------------------------

local IDLE_MAX = 30               -- seconds an idle pooled connection is kept
local pools = {}                  -- this state's cache of the shared channels

local function pool_for(key)
  local p = pools[key]
  if not p then
    p = C.shared("braid.http.pool " .. key, braid.chan(math.huge))
    pools[key] = p
  end
  return p
end

local function take_idle(pool)
  while true do
    local e = pool:try_recv()
    if e == nil then return nil end
    if braid.now() - e.t < IDLE_MAX then return e.conn end
    e.conn:close()
  end
end

local function connect(u, deadline, opts)
  local tls
  if u.tls then
    tls = { servername = u.host, verify = opts.verify ~= false, cafile = opts.cafile }
  end
  return net().connect(u.hostport, { timeout = math.max(0.001, deadline - braid.now()), tls = tls })
end

local function request_head(method, u, opts, body)
  return head(fmt("%s %s HTTP/1.1\r\n", method, u.target), opts.headers, nil,
              "Host", u.hosthdr, "User-Agent", "braid/" .. braid.version, "Accept", "*/*",
              body and "Content-Length", body and tostring(#body))
end

-- One exchange on one connection: -> resp | nil, err, retry?
local function exchange(conn, method, h, body, deadline, max_body)
  local ok, err = conn:write(body and h .. body or h, math.max(0, deadline - braid.now()))
  if not ok then return nil, err, true end
  local p = C.parser("response", 1 << 20, max_body)
  if method == "HEAD" then p:no_body() end
  local got = false
  while true do
    local left = deadline - braid.now()
    if left <= 0 then return nil, "timeout" end
    local data, rerr = conn:read_some(65536, left)
    local msgs, st, why
    if data then
      got = true
      msgs, st, why = p:feed(data)
    elseif rerr == "closed" then
      msgs, st, why = p:feed(nil)        -- a body read until the peer closes
      if not msgs[1] and not st then return nil, "closed", not got end
    else
      return nil, rerr
    end
    if st then return nil, "bad response: " .. tostring(why) end
    local m = msgs[1]
    if m then
      if m.status >= 100 and m.status < 200 and m.status ~= 101 then
        -- 1xx: a new parser for the real response after it
        p = C.parser("response", 1 << 20, max_body)
      else
        m.keep_alive = m.keep_alive and data ~= nil and msgs[2] == nil
        return m
      end
    end
  end
end

local function request_once(method, url, opts, body, deadline)
  local u, uerr = M.parse_url(url)
  if not u then return nil, uerr end
  if u.scheme ~= "http" and u.scheme ~= "https" then return nil, "unsupported scheme: " .. u.scheme end
  local key = u.scheme .. "://" .. u.hostport
  local pool = pool_for(key)
  local ok, h = pcall(request_head, method, u, opts, body)
  if not ok then return nil, h end
  local max_body = opts.max_body or 256 * 1024 * 1024
  for attempt = 1, 2 do
    local conn = attempt == 1 and take_idle(pool) or nil   -- a retry: a fresh one
    local reused = conn ~= nil
    if not conn then
      local err
      conn, err = connect(u, deadline, opts)
      if not conn then return nil, err end
    end
    local m, err, retry = exchange(conn, method, h, body, deadline, max_body)
    if m then
      if m.keep_alive then
        pool:try_send({ conn = conn, t = braid.now() })
      else
        conn:close()
      end
      return { status = m.status, reason = m.reason, headers = m.headers, body = m.body,
               version = m.version, url = url }
    end
    conn:close()
    if not (reused and retry) then return nil, err end
  end
  return nil, "closed"
end

-- braid.http.request(opts) -> resp | nil, err
function M.request(opts)
  local fname = "braid.http.request"
  H.checktype(opts, 1, fname, "table")
  H.argcheck(type(opts.url) == "string", 1, fname, "opts.url must be a string")
  H.argcheck(opts.method == nil or type(opts.method) == "string", 1, fname, "opts.method must be a string")
  H.argcheck(opts.body == nil or type(opts.body) == "string", 1, fname, "opts.body must be a string")
  H.argcheck(opts.headers == nil or type(opts.headers) == "table", 1, fname, "opts.headers must be a table")
  H.argcheck(opts.timeout == nil or (type(opts.timeout) == "number" and opts.timeout > 0), 1, fname,
    "opts.timeout must be a positive number")
  local method = (opts.method or "GET"):upper()
  local body = opts.body
  local url = opts.url
  local deadline = braid.now() + (opts.timeout or 30)
  local hops = opts.redirect == false and 0 or (opts.max_redirects or 5)
  for hop = 0, hops do
    local resp, err = request_once(method, url, opts, body, deadline)
    if not resp then return nil, err end
    local loc = resp.headers.location
    local s = resp.status
    if not (loc and (s == 301 or s == 302 or s == 303 or s == 307 or s == 308)) or opts.redirect == false then
      return resp
    end
    if hop == hops then return nil, "too many redirects" end
    url = resolve(url, loc)
    if s == 303 or ((s == 301 or s == 302) and method == "POST") then
      method, body = method == "HEAD" and "HEAD" or "GET", nil
    end
  end
end

-- braid.http.get(url [, opts]) -> resp | nil, err
function M.get(url, opts)
  H.checktype(url, 1, "braid.http.get", "string")
  opts = H.checkopt(opts, 2, "braid.http.get")
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  o.url, o.method = url, "GET"
  return M.request(o)
end

-- braid.http.websocket(url [, opts]) -> ws | nil, err
function M.websocket(url, opts)
  local fname = "braid.http.websocket"
  H.checktype(url, 1, fname, "string")
  opts = H.checkopt(opts, 2, fname)
  local u, uerr = M.parse_url(url)
  if not u then return nil, uerr end
  if u.scheme ~= "ws" and u.scheme ~= "wss" then return nil, "unsupported scheme: " .. u.scheme end
  local deadline = braid.now() + (opts.timeout or 30)
  local conn, err = connect(u, deadline, opts)
  if not conn then return nil, err end
  local key = C.ws_key()
  local ok, h = pcall(head, fmt("GET %s HTTP/1.1\r\n", u.target), opts.headers, nil, {
    { "Host", u.hosthdr }, { "Upgrade", "websocket" }, { "Connection", "Upgrade" },
    { "Sec-WebSocket-Key", key }, { "Sec-WebSocket-Version", "13" },
    { "User-Agent", "braid/" .. braid.version } })
  if not ok then conn:close(); return nil, h end
  local okw, werr = conn:write(h)
  if not okw then conn:close(); return nil, werr end
  local p = C.parser("response", 1 << 20, 1 << 20)
  while true do
    local left = deadline - braid.now()
    local data, rerr = conn:read_some(65536, math.max(0, left))
    if not data then conn:close(); return nil, rerr end
    local msgs, st, why, rest = p:feed(data)
    if st then conn:close(); return nil, "bad response: " .. tostring(why) end
    local m = msgs[1]
    if m then
      if m.status ~= 101 then conn:close(); return nil, "handshake: status " .. m.status end
      if m.headers["sec-websocket-accept"] ~= C.ws_accept(key) then
        conn:close()
        return nil, "handshake: bad sec-websocket-accept"
      end
      return new_ws(conn, "client", rest)
    end
  end
end

return M
