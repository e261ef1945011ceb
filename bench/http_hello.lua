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

local BODY = "Hello, world!\n"
local HEADERS = { ["content-type"] = "text/plain" }
local srv = assert(http.serve(addr, function() return 200, HEADERS, BODY end,
                              { backlog = 1024 }))
print(srv:addr())
io.stdout:flush()
while true do braid.sleep(3600) end
