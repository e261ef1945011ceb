-- checksums.lua -- sha256sum over a directory tree, in parallel.
--
--   braid_host DIR                  (braid_host is examples/host/host.c)
--
-- Prints one `sha256sum`-compatible line per regular file under DIR
-- (symbolic links are not followed, as with `find DIR -type f`), sorted by
-- path in byte order, so that
--
--   braid_host DIR
--   find DIR -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
--
-- print the same.  A file that cannot be read is reported on stderr as
-- sha256sum does, and the host exits with status 1.
--
-- The work is the host's: braid.native.list_dir and
-- braid.native.sha256_file are C functions (OpenSSL) that braid_host
-- registered; each call returns a future at once and runs on a native
-- thread.  braid.pmap spreads the files over tasks, each awaiting one
-- digest at a time, so that about opts.workers files are read and hashed
-- at once.
local braid = require "braid"

local dir = arg and arg[1]
if not dir then
  io.stderr:write("usage: braid_host DIR\n")
  return false
end

local files = braid.native.list_dir(dir):await()
table.sort(files)                     -- byte order: braid_host never sets a locale

-- Enough tasks to keep every native thread busy while others wait on I/O.
local sums = braid.pmap(files, function(path)
  local ok, digest = braid.native.sha256_file(path):wait()
  if ok then return digest end
  return { err = digest }
end, { workers = 32 })

-- sha256sum escapes a name holding a backslash or a newline, and then
-- starts its line with a backslash.
local function escape(path)
  if not path:find("[\\\n]") then return "", path end
  return "\\", (path:gsub("\\", "\\\\"):gsub("\n", "\\n"))
end

local out, failed = {}, 0
for i, path in ipairs(files) do
  local sum = sums[i]
  if type(sum) == "string" then
    local prefix, name = escape(path)
    out[#out + 1] = prefix .. sum .. "  " .. name .. "\n"
  else
    io.stderr:write("sha256sum: ", tostring(sum.err), "\n")
    failed = failed + 1
  end
end
io.write(table.concat(out))
return failed == 0
