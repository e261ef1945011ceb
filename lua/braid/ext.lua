-- braid.ext: installs the pure-Lua layer into the braid module table and the
-- handle metatables.  luaopen_braid requires it (embedded in braid.so), so
-- every state that opens braid -- the host's, each worker's -- has it.
local braid = require "braid"
local meta = braid._meta

local future = require "braid.future"
meta.future.map = future.map
meta.future.catch = future.catch
braid.all, braid.any, braid.race = future.all, future.any, future.race

return true
