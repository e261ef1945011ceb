-- bench/http_inmem.lua -- braid.http's per-request work without sockets:
-- N hello-world requests through the server's connection loop
-- (braid.http._serve_conn: parse, request, handler, answer) over an
-- in-memory connection, in one task.  Prints microseconds per request.
--
--   build/braid bench/http_inmem.lua            (N=20000 by default)
--   instructions per request (callgrind; the difference of two sizes):
--     N=2000 valgrind --tool=callgrind lua5.4 bench/http_inmem.lua
--     N=6000 valgrind --tool=callgrind lua5.4 bench/http_inmem.lua
--     (with LUA_CPATH/LUA_PATH pointing at build/ and lua/)
local braid = require "braid"
local http = require "braid.http"

local N = tonumber(os.getenv("N") or 20000)
local REQ = "GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
local i, out = 0, 0
local conn = {
  read_some = function()
    i = i + 1
    if i > N then return nil, "closed" end
    return REQ
  end,
  write = function(_, s) out = out + #s; return true end,
  close = function() end,
  _busy = function() return false end,
  peer = function() return "127.0.0.1:1" end,
  counts = function() return i, out end,   -- the task's copy counts (the codec copies conn)
}
local cfg = { max_body = 1 << 20, max_header = 65536, header_timeout = 10, idle_timeout = 60,
              closing = braid.chan(), stats = braid._http.stats() }
local ctl = { cast = function() end }
local BODY, HEADERS = "Hello, world!\n", { ["content-type"] = "text/plain" }
local t0 = braid.now()
local reads, bytes = braid.go(function()
  http._serve_conn(conn, function() return 200, HEADERS, BODY end, cfg, ctl, 1, nil)
  return conn.counts()
end):await()
local dt = braid.now() - t0
assert(reads - 1 == N and bytes > N * #BODY, "every request answered")
print(string.format("braid.http in memory: %d requests, %.2f us per request (%d bytes answered)",
  N, dt / N * 1e6, bytes))
