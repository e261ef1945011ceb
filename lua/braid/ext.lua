-- braid.ext: installs the pure-Lua layer into the braid module table and the
-- handle metatables.  luaopen_braid requires it (embedded in braid.so), so
-- every state that opens braid -- the host's, each worker's -- has it.
local braid = require "braid"
local meta = braid._meta

-- Each part of the layer installs its names; a worker's state (braid._lazy,
-- set by luaopen_braid for the shards and the blocking pool) installs a part
-- only when one of its names is first used: compiling every file in every
-- state cost about 7 ms of CPU per state, and most tasks use none of them.
local parts = {}

function parts.future()
  local future = require "braid.future"
  meta.future.map = future.map
  meta.future.catch = future.catch
  braid.all, braid.any, braid.race = future.all, future.any, future.race
end

-- Channel pipelines.
function parts.pipeline()
  local pipeline = require "braid.pipeline"
  meta.chan.map = pipeline.map
  meta.chan.filter = pipeline.filter
  meta.chan.take = pipeline.take
  meta.chan.batch = pipeline.batch
  braid.merge, braid.tee, braid.pipeline = pipeline.merge, pipeline.tee, pipeline.pipeline
  braid.from, braid.collect = pipeline.from, pipeline.collect
end

-- Parallel map, pools, worklists, limiters, memo.
function parts.pmap() braid.pmap = require("braid.pmap").pmap end
function parts.pool() braid.pool = require("braid.pool").new end
function parts.worklist() braid.worklist = require("braid.worklist").worklist end
function parts.limiter() braid.limiter = require("braid.limiter").new end
function parts.memo() braid.memo = require("braid.memo").new end

-- Structured concurrency, pub/sub, servers.
function parts.group() braid.group = require("braid.group").new end
function parts.broker() braid.broker = require("braid.broker").new end
function parts.server()
  local server = require "braid.server"
  braid.server = server.new
  braid.noreply = server.noreply
end

-- HTTP/1.1 and WebSocket (lua/braid/http.lua, bindings/lhttp.c).
function parts.http() braid.http = require "braid.http" end

-- Which part installs each name, per table.
local names = {
  [braid] = { all = "future", any = "future", race = "future", merge = "pipeline",
    tee = "pipeline", pipeline = "pipeline", from = "pipeline", collect = "pipeline",
    pmap = "pmap", pool = "pool", worklist = "worklist", limiter = "limiter", memo = "memo",
    group = "group", broker = "broker", server = "server", noreply = "server", http = "http" },
  [meta.future] = { map = "future", catch = "future" },
  [meta.chan] = { map = "pipeline", filter = "pipeline", take = "pipeline", batch = "pipeline" },
}

local lazy = rawget(braid, "_lazy")
if not lazy then
  for _, install in pairs(parts) do install() end
else
  -- The handle metatables are their own __index: a name they lack falls
  -- through to this loader (and a typo costs one table lookup more).
  for t, map in pairs(names) do
    if t ~= braid then
      setmetatable(t, { __index = function(tt, k)
        local part = map[k]
        if part and parts[part] then
          parts[part]()
          parts[part] = nil
          return rawget(tt, k)
        end
      end })
    end
  end
end

-- Many processes and machines: braid.nats, loaded at first use (it is
-- rarely needed, and every state opens this file).
do
  local mt = getmetatable(braid) or {}
  local index = mt.__index
  local own = names[braid]
  mt.__index = function(t, k)
    if k == "nats" then
      local m = require "braid.nats"
      rawset(t, "nats", m)
      return m
    end
    local part = lazy and own[k]
    if part and parts[part] then
      parts[part]()
      parts[part] = nil
      return rawget(t, k)
    end
    if type(index) == "function" then return index(t, k) end
    if type(index) == "table" then return index[k] end
  end
  setmetatable(braid, mt)
end

return true
