-- braid.ext: installs the pure-Lua layer into the braid module table and the
-- handle metatables.  luaopen_braid requires it (embedded in braid.so), so
-- every state that opens braid -- the host's, each worker's -- has it.
local braid = require "braid"
local meta = braid._meta

local future = require "braid.future"
meta.future.map = future.map
meta.future.catch = future.catch
braid.all, braid.any, braid.race = future.all, future.any, future.race

-- Channel pipelines.
local pipeline = require "braid.pipeline"
meta.chan.map = pipeline.map
meta.chan.filter = pipeline.filter
meta.chan.take = pipeline.take
meta.chan.batch = pipeline.batch
braid.merge, braid.tee, braid.pipeline = pipeline.merge, pipeline.tee, pipeline.pipeline
braid.from, braid.collect = pipeline.from, pipeline.collect

-- Parallel map, pools, worklists, limiters, memo.
braid.pmap = require("braid.pmap").pmap
braid.pool = require("braid.pool").new
braid.worklist = require("braid.worklist").worklist
braid.limiter = require("braid.limiter").new
braid.memo = require("braid.memo").new

-- Structured concurrency, pub/sub, servers.
braid.group = require("braid.group").new
braid.broker = require("braid.broker").new
local server = require "braid.server"
braid.server = server.new
braid.noreply = server.noreply

-- Many processes and machines: braid.nats, loaded at first use (it is
-- rarely needed, and every state opens this file).
do
  local mt = getmetatable(braid) or {}
  local index = mt.__index
  mt.__index = function(t, k)
    if k == "nats" then
      local m = require "braid.nats"
      rawset(t, "nats", m)
      return m
    end
    if type(index) == "function" then return index(t, k) end
    if type(index) == "table" then return index[k] end
  end
  setmetatable(braid, mt)
end

-- HTTP/1.1 and WebSocket (lua/braid/http.lua, bindings/lhttp.c).
braid.http = require "braid.http"

return true
