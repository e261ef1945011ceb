-- bench/host_checksums.lua: the example C host (examples/host/) against
-- sha256sum over the same tree.
--
--   scripts/bench.sh [build]                       (runs every benchmark)
--   build/braid bench/host_checksums.lua [rounds] [files]
--
-- Generates `files` files (default 300, 4 KiB to 1 MiB, about 150 MiB in
-- all) in a temporary directory, then times, as the median of `rounds`
-- runs (default 5) measured in alternation, with the files in the page
-- cache:
--
--   braid_host DIR                      SHA-256 of every file, in parallel
--                                       (braid.pmap over a native function)
--   the same, BRAID_HOST_THREADS=1      one native thread: what parallelism
--                                       adds (OpenSSL's SHA-256 is itself
--                                       several times faster than
--                                       coreutils', so compare with this
--                                       line too)
--   sha256sum, one process per file     `xargs -0 -n1 sha256sum`: what a
--                                       script that calls sha256sum file by
--                                       file sequentially costs
--   sha256sum, one process              `xargs -0 sha256sum`: the same
--                                       hashing in one sequential process
--
-- and checks once that braid_host's output is sha256sum's.  braid_host is
-- looked for beside the braid executable running this script (arg[-1]),
-- else in the first directory of LUA_CPATH (where braid.so is), else in
-- ./build.
local braid = require "braid"

local rounds = tonumber(arg and arg[1]) or 5
local nfiles = tonumber(arg and arg[2]) or 300

local function dirname(p) return p and p:match("^(.*)/[^/]*$") end

local function find_host()
  local dirs = { dirname(arg and arg[-1]) }
  local cpath = os.getenv("LUA_CPATH") or ""
  dirs[#dirs + 1] = dirname(cpath:match("^([^;]*)"))
  dirs[#dirs + 1] = "build"
  for _, d in ipairs(dirs) do
    local p = d .. "/braid_host"
    local f = io.open(p, "rb")
    if f then
      f:close()
      local abs = io.popen("realpath " .. "'" .. p:gsub("'", "'\\''") .. "'"):read("l")
      return abs or p
    end
  end
  return nil
end

local host = find_host()
if not host then
  print("host_checksums: SKIPPED (no braid_host beside the braid executable or braid.so; "
    .. "it needs OpenSSL's libcrypto)")
  return
end

local function sh(cmd)
  local ok = os.execute(cmd)
  assert(ok, "command failed: " .. cmd)
end

local function capture(cmd)
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("a")
  assert(p:close(), "command failed: " .. cmd)
  return out
end

local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
local median = require("benchlib").median

local function time(cmd)
  local t0 = braid.now()
  sh(cmd)
  return braid.now() - t0
end

-- The tree: sizes from a fixed LCG, contents from a 64 KiB block of bytes
-- and the file's number (so that files differ).
local dir = capture("mktemp -d"):gsub("%s+$", "")
local tree = dir .. "/tree"
local seed, total = 12345, 0
local block = {}
for i = 1, 65536 do
  seed = (seed * 1103515245 + 12345) % 2147483648
  block[i] = string.char(seed % 256)
end
block = table.concat(block)
for d = 0, 9 do sh("mkdir -p " .. q(tree .. "/d" .. d)) end
for i = 1, nfiles do
  seed = (seed * 1103515245 + 12345) % 2147483648
  local size = 4096 + seed % (1024 * 1024 - 4096)
  local f = assert(io.open(("%s/d%d/file%04d.bin"):format(tree, i % 10, i), "wb"))
  local left = size
  f:write(("%08d"):format(i))
  left = left - 8
  while left > 0 do
    local n = math.min(left, #block)
    f:write(block:sub(1, n))
    left = left - n
  end
  f:close()
  total = total + size
end

local cmd_host = ("cd %s && %s tree > /dev/null"):format(q(dir), q(host))
local cmd_host1 = ("cd %s && BRAID_HOST_THREADS=1 %s tree > /dev/null"):format(q(dir), q(host))
local cmd_each = ("cd %s && find tree -type f -print0 | LC_ALL=C sort -z | "
  .. "xargs -0 -n1 sha256sum > /dev/null"):format(q(dir))
local cmd_one = ("cd %s && find tree -type f -print0 | LC_ALL=C sort -z | "
  .. "xargs -0 sha256sum > /dev/null"):format(q(dir))

-- Same output (and warms the page cache).
local got = capture(("cd %s && %s tree"):format(q(dir), q(host)))
local want = capture(("cd %s && find tree -type f -print0 | LC_ALL=C sort -z | "
  .. "xargs -0 sha256sum"):format(q(dir)))
assert(got == want, "braid_host's output differs from sha256sum's")

local th, t1, te, to = {}, {}, {}, {}
for i = 1, rounds do
  th[i] = time(cmd_host)
  t1[i] = time(cmd_host1)
  te[i] = time(cmd_each)
  to[i] = time(cmd_one)
end
local h, h1, e, o = median(th), median(t1), median(te), median(to)
sh("rm -rf " .. q(dir))

local cpus = tonumber(capture("getconf _NPROCESSORS_ONLN")) or 0
print(("host_checksums: %d files, %.1f MiB, %d CPUs, median of %d"):format(
  nfiles, total / 1048576, cpus, rounds))
print(("  braid_host DIR (parallel)             %8.1f ms  %7.1f MiB/s"):format(
  h * 1e3, total / 1048576 / h))
print(("  braid_host DIR, 1 native thread       %8.1f ms  %7.1f MiB/s  %.2fx braid_host's time"):format(
  h1 * 1e3, total / 1048576 / h1, h1 / h))
print(("  sha256sum, one process per file       %8.1f ms  %7.1f MiB/s  %.2fx braid_host's time"):format(
  e * 1e3, total / 1048576 / e, e / h))
print(("  sha256sum, one process for all files  %8.1f ms  %7.1f MiB/s  %.2fx braid_host's time"):format(
  o * 1e3, total / 1048576 / o, o / h))
