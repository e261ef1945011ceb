/*
 * lbraid.c -- luaopen_braid: the module table.
 *
 * The C functions come from lruntime.c (tasks), lchan.c (channels, select,
 * timers) and lfuture.c.  The Lua layer (lua/braid/ files) are compiled into
 * the module (cmake/embed_lua.cmake) and put in package.preload, then
 * "braid.ext" installs the pure-Lua functions and methods into the module
 * table and the handle metatables (braid._meta).
 */
#include <string.h>

#include "braid.h"
#include "lbraid.h"
#include "lembed.h"
#include "lruntime.h"

struct braid_embedded { const char *name, *chunkname, *code; size_t len; };
extern const struct braid_embedded braid__embedded[];

static int load_embedded(lua_State *L) {
  const struct braid_embedded *e = lua_touserdata(L, lua_upvalueindex(1));
  if (luaL_loadbuffer(L, e->code, e->len, e->chunkname) != LUA_OK) return lua_error(L);
  lua_pushvalue(L, 1);                /* the module name */
  lua_call(L, 1, 1);
  return 1;
}

static void setmeta(lua_State *L, const char *field, const char *regname) {
  lua_getfield(L, LUA_REGISTRYINDEX, regname);
  lua_setfield(L, -2, field);
}

int luaopen_braid(lua_State *L) {
  lua_newtable(L);
  braid__open_runtime(L);
  braid__open_chan(L);
  braid__open_future(L);
  braid__open_box(L);
  braid__open_native(L);
  braid__open_net(L);
  braid__open_nats(L);
  braid__open_http(L);              /* braid._http (lhttp.c) */
  lua_pushcfunction(L, braid__l_roundtrip);
  lua_setfield(L, -2, "_roundtrip");
  lua_pushliteral(L, BRAID_VERSION);
  lua_setfield(L, -2, "version");
  lua_createtable(L, 0, 4);           /* braid._meta: the handle metatables */
  setmeta(L, "chan", "braid.chan");
  setmeta(L, "future", "braid.future");
  setmeta(L, "nats", "braid.nats");
  lua_setfield(L, -2, "_meta");

  /* package.preload["braid.<mod>"] for every embedded Lua file. */
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  for (const struct braid_embedded *e = braid__embedded; e->name; e++) {
    lua_pushlightuserdata(L, (void *)e);
    lua_pushcclosure(L, load_embedded, 1);
    lua_setfield(L, -2, e->name);
  }
  lua_pop(L, 1);

  /* A shard's or the blocking pool's state installs the Lua layer on
   * first use of each name (see braid.ext). */
  if (braid__opening_private_state()) {
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "_lazy");
  }

  /* Register the module before braid.ext requires it back. */
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushvalue(L, -2);
  lua_setfield(L, -2, "braid");
  lua_pop(L, 1);
  for (const struct braid_embedded *e = braid__embedded; e->name; e++) {
    if (strcmp(e->name, "braid.ext") == 0) {
      lua_getglobal(L, "require");
      lua_pushliteral(L, "braid.ext");
      lua_call(L, 1, 0);
      break;
    }
  }
  return 1;
}
