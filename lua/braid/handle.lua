-- braid.handle: what the Lua-table handles of the patterns layer share
-- (pool, limiter, memo, group, broker, server).
--
-- Design notes
--
-- API.md promises that every handle can be sent over a channel, passed to
-- a task or captured as an upvalue, and that all copies refer to the same
-- object.  These handles are plain Lua tables whose fields are braid
-- channels and futures (userdata that the codec transfers by reference), so
-- a copy made by the codec shares every channel and future with the
-- original: that is the "same object".  The state that must be shared lives
-- in those channels and futures (or in a task that owns it), never in the
-- table.
--
-- The codec does not copy metatables, so a method must not depend on one.
-- Every method is therefore a plain field of the handle: a tiny stub
-- closure `function(self, ...) return mod[name](self, ...) end` whose
-- upvalues are the module table (a value of package.loaded, which the
-- codec sends by name: the receiver gets its own copy of the module) and
-- the method name (a string).  A copy of a handle thus carries a few
-- hundred bytes of stub bytecode and works in the receiving task at once.
--
-- The metatable (for __tostring and __name) is lost in the copy.  Every
-- method re-attaches it on entry (M.check; M.attach(h) does it by hand),
-- so `tostring(h)` of a copy gives "braid.<kind>#<id> (...)" from its
-- first method call on; before that it is a plain table's "table: 0x...".
-- A handle's id is the id of one of its channels, so it is the same in
-- every copy.  type(h) is "table", not "userdata" as API.md says of
-- handles: making these kinds userdata needs a generic handle type in the
-- bindings.
local M = {}

local type, tostring, tonumber, error, select = type, tostring, tonumber, error, select
local getmetatable, setmetatable = getmetatable, setmetatable

-- Numeric id of a braid userdata handle (a chan or future): the number in
-- its tostring, "braid.chan#12 (0/1)" -> 12.
function M.id(h)
  return tonumber(tostring(h):match("#(%d+)"))
end

-- Lua's own name for a value in "bad argument" messages.
function M.typename(v)
  if type(v) == "table" and type(v._kind) == "string" then return "braid." .. v._kind end
  local mt = getmetatable(v)
  if type(mt) == "table" and type(mt.__name) == "string" then return mt.__name end
  return type(v)
end

local function stub(mod, name)
  return function(self, ...) return mod[name](self, ...) end
end

-- Registers a handle kind.  mod is the module table (the value its file
-- returns: it must be package.loaded["braid.<file>"] so that stubs travel
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
  mod._stubs = nil
end

-- Makes t a handle of mod's kind: adds the stubs and the metatable.
function M.new(mod, t, id)
  local stubs = mod._stubs
  if stubs == nil then
    stubs = {}
    for i = 1, #mod._methods do
      local name = mod._methods[i]
      stubs[name] = stub(mod, name)
    end
    mod._stubs = stubs
  end
  t._kind = mod._kind
  t._id = id
  for name, f in pairs(stubs) do t[name] = f end
  return setmetatable(t, mod._mt)
end

-- Checks that argument #1 of method fname is a handle of mod's kind and
-- re-attaches its metatable (lost when the handle was copied).
function M.check(mod, self, fname)
  if type(self) ~= "table" or self._kind ~= mod._kind then
    error(("bad argument #1 to '%s' (braid.%s expected, got %s)")
      :format(fname, mod._kind, M.typename(self)), 3)
  end
  if getmetatable(self) == nil then setmetatable(self, mod._mt) end
  return self
end

-- Re-attaches h's metatable after a transfer; returns h.
-- Values that are not pattern handles are returned unchanged.
function M.attach(h)
  if type(h) == "table" and type(h._kind) == "string" and getmetatable(h) == nil then
    local ok, mod = pcall(require, "braid." .. h._kind)
    if ok and type(mod) == "table" and mod._mt then setmetatable(h, mod._mt) end
  end
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

function M.checkchan(v, n, fname, level)
  if not M.is(v, "chan") then
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
  if type(e) == "string" then return e end
  return tostring(e)
end

-- Counts the values passed (select('#')) and packs them.
function M.pack(...)
  return { n = select("#", ...), ... }
end

return M
