-- braid.handle: what the handles of the patterns layer share (pool,
-- limiter, memo, group, broker, server).
--
-- Design notes
--
-- API.md promises that every handle is a userdata that can be sent over a
-- channel, passed to a task or captured as an upvalue, all copies
-- referring to the same object.  A pattern keeps its state in channels,
-- futures and tasks; its handle only carries their references.  M.new puts
-- those fields into a box (bindings/lbox.c: braid._box): a userdata whose
-- fields are encoded once and travel by reference like any braid handle.
-- Reading a field (h.ctl) decodes the fields once per userdata; a method
-- (h:go()) is looked up by name in the kind's module, require("braid.<kind>"),
-- among mod._methodset, so a copy works in any task at once.  tostring(h)
-- is mod._mt.__tostring: "braid.<kind>#<id> (state)", where the id is one
-- of the handle's channels' (the same in every copy).  Fields are read-only.
local M = {}

local type, tostring, tonumber, error, select = type, tostring, tonumber, error, select
local getmetatable = getmetatable

-- Numeric id of a braid userdata handle (a chan or future): the number in
-- its tostring, "braid.chan#12 (0/1)" -> 12.
function M.id(h)
  return tonumber(tostring(h):match("#(%d+)"))
end

-- Lua's own name for a value in "bad argument" messages.
local function isbox(v)
  local mt = getmetatable(v)
  return type(v) == "userdata" and type(mt) == "table" and mt.__name == "braid.box"
end
M.isbox = isbox

function M.typename(v)
  if isbox(v) then return "braid." .. tostring(v._kind) end
  local mt = getmetatable(v)
  if type(mt) == "table" and type(mt.__name) == "string" then return mt.__name end
  return type(v)
end


-- Registers a handle kind.  mod is the module table (the value its file
-- returns: it must be package.loaded["braid.<file>"], which boxes find
-- by name); methods lists the method names; tostring(h) -> the state text
-- after "braid.<kind>#<id> ".
function M.kind(mod, kind, methods, state)
  mod._kind = kind
  mod._methods = methods
  mod._mt = {
    __name = "braid." .. kind,
    __tostring = function(h)
      local ok, s = pcall(state, h)
      if not ok then s = "?" end
      return ("braid.%s#%s%s"):format(kind, tostring(h._id), s and s ~= "" and " (" .. s .. ")" or "")
    end,
  }
  mod._methodset = {}
  for i = 1, #methods do mod._methodset[methods[i]] = true end
end

-- Makes a handle of mod's kind from the fields in t (a box: see above).
function M.new(mod, t, id)
  t._kind = mod._kind
  t._id = id
  return require("braid")._box(mod._kind, t)
end

-- Misuse messages name the function qualified, one form everywhere (as the
-- C bindings do, bindings/lbraid.h): "bad argument #1 to 'braid.pmap'
-- (...)", "bad argument #1 to 'pool:submit' (...)"; a method's argument
-- numbers do not count self, and a bad self is Lua's "calling 'pool:submit'
-- on bad self (...)".

-- Checks that self, of method fname ("pool:submit"), is a handle of mod's
-- kind.
function M.check(mod, self, fname)
  if not isbox(self) or self._kind ~= mod._kind then
    error(("calling '%s' on bad self (braid.%s expected, got %s)")
      :format(fname, mod._kind, M.typename(self)), 3)
  end
  return self
end

-- Kept for callers of the table-handle days: a box needs no re-attaching.
function M.attach(h)
  return h
end

-- Argument checks in Lua's own words.
function M.argcheck(cond, n, fname, msg, level)
  if not cond then
    error(("bad argument #%d to '%s' (%s)"):format(n, fname, msg), (level or 2) + 1)
  end
end

function M.checktype(v, n, fname, want, level)
  if type(v) ~= want then
    error(("bad argument #%d to '%s' (%s expected, got %s)")
      :format(n, fname, want, M.typename(v)), (level or 2) + 1)
  end
end

function M.checkopt(v, n, fname, level)
  if v ~= nil and type(v) ~= "table" then
    error(("bad argument #%d to '%s' (table expected, got %s)")
      :format(n, fname, M.typename(v)), (level or 2) + 1)
  end
  return v or {}
end

-- Is v a braid userdata handle of the given kind ("chan", "future")?
function M.is(v, kind)
  local mt = getmetatable(v)
  return type(v) == "userdata" and type(mt) == "table" and mt.__name == "braid." .. kind
end

-- n == 0: v is self of the method fname ("chan:take").
function M.checkchan(v, n, fname, level)
  if not M.is(v, "chan") then
    if n == 0 then
      error(("calling '%s' on bad self (braid.chan expected, got %s)")
        :format(fname, M.typename(v)), (level or 2) + 1)
    end
    error(("bad argument #%d to '%s' (braid.chan expected, got %s)")
      :format(n, fname, M.typename(v)), (level or 2) + 1)
  end
  return v
end

-- Number of worker threads (starting the runtime if it is not yet).
function M.workers()
  local braid = require "braid"
  local w = braid.stats().workers
  if w == 0 then
    braid.go(function() end)
    w = braid.stats().workers
  end
  if w < 1 then w = 1 end
  return w
end

-- An error value that can travel (to a future, a channel's close): e
-- itself, or its tostring when it cannot be encoded; "nil error" for nil.
function M.travels(e)
  if e == nil then return "nil error" end
  local t = type(e)
  if t == "string" or t == "number" or t == "boolean" then return e end
  if pcall(require("braid")._roundtrip, e) then return e end
  return tostring(e)
end

-- An error value as text, for messages that embed it.
function M.errtext(e)
  -- "(tasks have their own globals ...)" when e is Lua's error for a
  -- global the caller has and the task had not (bindings/lfuture.c).
  if type(e) == "string" then return require("braid")._hint_globals(e) end
  return tostring(e)
end

-- Counts the values passed (select('#')) and packs them.
function M.pack(...)
  return { n = select("#", ...), ... }
end

return M
