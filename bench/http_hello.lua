-- bench/http_hello.lua: braid.http's hello-world server for bench/http.sh.
-- Prints its address, then serves until killed.
--
--   build/braid bench/http_hello.lua 127.0.0.1:0
--
-- Without an address (as scripts/bench.sh runs every bench/*.lua) it only
-- says how it is meant to be run.
local addr = arg and arg[1]
if not addr then
  print("bench/http_hello.lua: run by bench/http.sh (ADDR)")
  return
end
local braid = require "braid"
local http = require "braid.http"

-- bench/http_cpu.sh's knobs: the number of workers, and a /_stats path
-- answering braid.stats()'s "polls wakeups" (off for bench/http.sh).
local workers = tonumber(os.getenv("BRAID_BENCH_WORKERS") or "")
if workers then braid.config{ workers = workers } end

local BODY = "Hello, world!\n"
local HEADERS = { ["content-type"] = "text/plain" }
local handler = function() return 200, HEADERS, BODY end
if (os.getenv("BRAID_BENCH_STATS") or "0") ~= "0" then
  local hello = handler
  handler = function(req)
    if req.path ~= "/_stats" then return hello(req) end
    local s = braid.stats()
    return 200, HEADERS, string.format("%d %d\n", s.polls, s.wakeups)
  end
end
local srv = assert(http.serve(addr, handler, { backlog = 1024 }))
print(srv:addr())
io.stdout:flush()
while true do braid.sleep(3600) end
