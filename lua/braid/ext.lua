-- braid.ext: installs the pure-Lua layer into the braid module table and the
-- handle metatables.  luaopen_braid requires it (embedded in braid.so), so
-- every state that opens braid -- the host's, each worker's -- has it.
local braid = require "braid"
local meta = braid._meta

-- The layer, as data: for each module, the names it gives the braid table
-- and the chan/future metatables (name = the module's field, or true for
-- the module itself).  A worker's state (braid._lazy, set by luaopen_braid
-- for the shards and the blocking pool) requires a module only when one of
-- its names is first used: compiling every file in every state cost about
-- 7 ms of CPU per state, and most tasks use none of them.
local targets = { braid = braid, chan = meta.chan, future = meta.future }
local parts = {
  { mod = "braid.future", braid = { all = "all", any = "any", race = "race" },
    future = { map = "map", catch = "catch" } },
  { mod = "braid.pipeline", -- channel pipelines
    chan = { map = "map", filter = "filter", take = "take", batch = "batch" },
    braid = { merge = "merge", tee = "tee", pipeline = "pipeline", from = "from",
              collect = "collect" } },
  -- Parallel map, pools, worklists, limiters, memo.
  { mod = "braid.pmap", braid = { pmap = "pmap" } },
  { mod = "braid.pool", braid = { pool = "new" } },
  { mod = "braid.worklist", braid = { worklist = "worklist" } },
  { mod = "braid.limiter", braid = { limiter = "new" } },
  { mod = "braid.memo", braid = { memo = "new" } },
  -- Structured concurrency, pub/sub, servers.
  { mod = "braid.group", braid = { group = "new" } },
  { mod = "braid.broker", braid = { broker = "new" } },
  { mod = "braid.server", braid = { server = "new", noreply = "noreply" } },
  -- HTTP/1.1 and WebSocket (lua/braid/http.lua, bindings/lhttp.c).
  { mod = "braid.http", braid = { http = true } },
}

local installed = {}
local function install(part)
  if installed[part] then return end
  installed[part] = true
  local m = require(part.mod)
  for tname, t in pairs(targets) do
    for name, field in pairs(part[tname] or {}) do
      rawset(t, name, field == true and m or m[field])
    end
  end
end

-- owner[t][name]: the part that gives table t that name.
local owner = {}
for _, part in ipairs(parts) do
  for tname, t in pairs(targets) do
    for name in pairs(part[tname] or {}) do
      owner[t] = owner[t] or {}
      owner[t][name] = part
    end
  end
end

-- Installs the part that owns t[k] and returns the value (nil if none).
local function lazy_get(t, k)
  local part = owner[t] and owner[t][k]
  if part == nil or installed[part] then return nil end
  install(part)
  return rawget(t, k)
end

local lazy = rawget(braid, "_lazy")
if not lazy then
  for _, part in ipairs(parts) do install(part) end
else
  -- The handle metatables are their own __index: a name they lack falls
  -- through to lazy_get (and a typo costs one table lookup more).
  setmetatable(meta.chan, { __index = lazy_get })
  setmetatable(meta.future, { __index = lazy_get })
end

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
    if lazy then
      local v = lazy_get(t, k)
      if v ~= nil then return v end
    end
    if type(index) == "function" then return index(t, k) end
    if type(index) == "table" then return index[k] end
  end
  setmetatable(braid, mt)
end

return true
