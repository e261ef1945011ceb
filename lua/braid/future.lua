-- braid.future combinators: f:map, f:catch, braid.all, braid.any, braid.race.
--
-- Each runs as a task (API.md: "fn runs as a task once f settles"), so the
-- returned future can be awaited, selected on and cancelled like any other.
local braid = require "braid"

local M = {}

local pack, unpack = table.pack, table.unpack

-- f:map(fn): fn(values...) once f resolves; a rejection passes through.
function M.map(f, fn)
  if type(fn) ~= "function" then
    error("bad argument #1 to 'future:map' (function expected, got " .. type(fn) .. ")", 2)
  end
  return braid.go(function()
    local r = pack(f:wait())
    if not r[1] then error(r[2], 0) end
    return fn(unpack(r, 2, r.n))
  end)
end

-- f:catch(fn): fn(err) once f rejects; resolved values pass through.
function M.catch(f, fn)
  if type(fn) ~= "function" then
    error("bad argument #1 to 'future:catch' (function expected, got " .. type(fn) .. ")", 2)
  end
  return braid.go(function()
    local r = pack(f:wait())
    if r[1] then return unpack(r, 2, r.n) end
    if r[2] == "cancelled" then error("cancelled", 0) end
    return fn(r[2])
  end)
end

local function check_futures(fs, name)
  if type(fs) ~= "table" then
    error("bad argument #1 to '" .. name .. "' (table of futures expected, got " .. type(fs) .. ")", 3)
  end
  for i = 1, #fs do
    if tostring(fs[i]):match("^braid%.future#") == nil then
      error("bad argument #1 to '" .. name .. "' (element " .. i .. " is not a braid.future)", 3)
    end
  end
end

-- Waits on every pending future at once; calls on(i, ok, err) as each
-- settles; stops when on returns true.
local function each_settled(fs, on)
  -- The combinator takes the futures over: a loser that rejects after the
  -- result is decided was handled by whoever awaits the combinator, so it
  -- is not reported at exit as an error nobody awaited.
  for i = 1, #fs do fs[i]:_observe() end
  local pending, index = {}, {}
  for i = 1, #fs do pending[#pending + 1] = fs[i]; index[#index + 1] = i end
  while #pending > 0 do
    local k = braid.select(pending)
    local i = index[k]
    table.remove(pending, k)
    table.remove(index, k)
    local r = pack(fs[i]:wait(0))
    if on(i, r) then return end
  end
end

-- braid.all(fs): an array of each future's first value; rejects on the first
-- rejection.
function M.all(fs)
  check_futures(fs, "braid.all")
  return braid.go(function()
    local results, failure = {}, nil
    each_settled(fs, function(i, r)
      if not r[1] then failure = r[2]; return true end
      results[i] = r[2]
    end)
    if failure ~= nil then error(failure, 0) end
    return results
  end)
end

-- braid.any(fs): the values of the first to resolve; rejects only when all
-- reject (with the last error).
function M.any(fs)
  check_futures(fs, "braid.any")
  return braid.go(function()
    local winner, last = nil, "braid.any: no futures"
    each_settled(fs, function(i, r)
      if r[1] then winner = r; return true end
      last = r[2]
    end)
    if winner then return unpack(winner, 2, winner.n) end
    error(last, 0)
  end)
end

-- braid.race(fs): settles like the first to settle.
function M.race(fs)
  check_futures(fs, "braid.race")
  return braid.go(function()
    if #fs == 0 then error("braid.race: no futures", 0) end
    local first
    each_settled(fs, function(i, r) first = r; return true end)
    if first[1] then return unpack(first, 2, first.n) end
    error(first[2], 0)
  end)
end

return M
