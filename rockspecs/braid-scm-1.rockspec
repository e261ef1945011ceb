-- braid from a checkout, with LuaRocks:
--   luarocks --lua-version 5.4 make rockspecs/braid-scm-1.rockspec            (system tree)
--   luarocks --lua-version 5.4 --tree /tmp/t make rockspecs/braid-scm-1.rockspec
-- The build is the project's CMake (no network): braid.so into the tree's
-- lib/lua/5.4, lua/braid/*.lua into share/lua/5.4/braid (braid.so carries
-- them too), the braid interpreter into bin/.
rockspec_format = "3.0"
package = "braid"
version = "scm-1"
source = {
   url = "git+file://.",          -- `luarocks make` builds the checkout it runs in
}
description = {
   summary = "Real concurrency for Lua 5.4: tasks on OS threads, channels, select, futures",
   detailed = [[
A C core (channels, select, futures, timers) with Lua bindings: tasks run
in parallel on worker threads, block only themselves, and talk over
channels; patterns (pmap, pools, pipelines, servers, pub/sub) on top.
]],
}
dependencies = {
   "lua >= 5.4, < 5.5",
}
build = {
   type = "cmake",
   variables = {
      CMAKE_BUILD_TYPE = "Release",
      CMAKE_INSTALL_PREFIX = "$(PREFIX)",
      -- C-host files (static libraries, braid.pc) stay in the rock's own
      -- directory: the tree's lib/ is for Lua modules.
      CMAKE_INSTALL_LIBDIR = "dev/lib",
      BRAID_INSTALL_CMOD_DIR = "$(LIBDIR)",
      BRAID_INSTALL_LMOD_DIR = "$(LUADIR)",
      BUILD_TESTING = "OFF",
      BRAID_FUZZ = "OFF",
      BRAID_FUZZ_PASS = "OFF",
      BRAID_SANITIZER_PASS = "OFF",
   },
}
