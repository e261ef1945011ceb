/*
 * lbox.c -- the userdata behind the patterns layer's handles (pool,
 * limiter, memo, group, broker, server).
 *
 * Design notes
 *
 * API.md says every handle is a userdata that can be sent, passed to a task
 * or captured, all copies referring to the same object.  A pattern's state
 * lives in channels, futures and tasks; its handle only has to carry their
 * references.  A box is a core object holding those fields encoded once
 * (a message: its channels and futures travel as handle references) and the
 * kind's name.  It crosses states like any handle, by reference; each Lua
 * userdata decodes the fields on first use into its user value.  Methods
 * are found by name in the kind's module, require("braid.<kind>"), whose
 * `_methodset` lists them (lua/braid/handle.lua), so a box works in any
 * state at once, with no metatable to copy.
 */
#include <stdlib.h>
#include <string.h>

#include "lbraid.h"
#include "lruntime.h"

typedef struct box {
  braid_obj_t b_obj;          /* refcount, id */
  braid_msg_t *b_fields;      /* immutable: the encoded field table */
  char b_kind[32];            /* immutable: "pool", "server", ... */
} box_t;

static void box_destroy(braid_obj_t *o) {
  box_t *b = (box_t *)o;
  braid_msg_release(b->b_fields);
  braid_obj_fini(o);
  free(b);
}

static braid_objtype_t braid_box_type = { "box", box_destroy, 0 };

/* braid._box(kind, fields) -> a handle whose fields are a copy of fields. */
static int l_box(lua_State *L) {
  size_t klen;
  const char *kind = luaL_checklstring(L, 1, &klen);
  luaL_argcheck(L, klen > 0 && klen < sizeof(((box_t *)0)->b_kind), 1, "kind too long");
  luaL_checktype(L, 2, LUA_TTABLE);
  box_t *b = calloc(1, sizeof *b);
  if (b == NULL) return luaL_error(L, "braid: out of memory");
  braid_msg_t *m = braid__pencode(L, 2, 1, "value");
  if (m == NULL) {
    free(b);
    return lua_error(L);
  }
  if (braid_obj_init(&b->b_obj, &braid_box_type) != 0) {
    braid_msg_release(m);
    free(b);
    return luaL_error(L, "braid: out of memory");
  }
  b->b_fields = m;
  memcpy(b->b_kind, kind, klen + 1);
  braid__pushhandle(L, &b->b_obj);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, -2, 1);        /* the creator's fields are the cache */
  braid_obj_release(&b->b_obj);
  return 1;
}

/* Pushes the module of b's kind. */
static void pushmodule(lua_State *L, box_t *b) {
  lua_getglobal(L, "require");
  lua_pushfstring(L, "braid.%s", b->b_kind);
  lua_call(L, 1, 1);
}

/* Pushes u's fields table (decoded once per userdata). */
static void pushfields(lua_State *L, int u, box_t *b) {
  if (lua_getiuservalue(L, u, 1) == LUA_TTABLE) return;
  lua_pop(L, 1);
  braid__decode1(L, b->b_fields);
  lua_pushvalue(L, -1);
  lua_setiuservalue(L, u, 1);
}

static int box_index(lua_State *L) {
  box_t *b = (box_t *)braid__checkhandle(L, 1, &braid_box_type);
  pushfields(L, 1, b);
  lua_pushvalue(L, 2);
  if (lua_rawget(L, -2) != LUA_TNIL) return 1;
  lua_pop(L, 2);                      /* nil, fields */
  pushmodule(L, b);
  if (lua_getfield(L, -1, "_methodset") == LUA_TTABLE) {
    lua_pushvalue(L, 2);
    if (lua_rawget(L, -2) != LUA_TNIL) {
      lua_pop(L, 2);                  /* the flag, the set */
      lua_pushvalue(L, 2);
      lua_gettable(L, -2);            /* module[k] */
      return 1;
    }
  }
  lua_pushnil(L);
  return 1;
}

static int box_newindex(lua_State *L) {
  box_t *b = (box_t *)braid__checkhandle(L, 1, &braid_box_type);
  return luaL_error(L, "braid: a braid.%s handle cannot be modified", b->b_kind);
}

static int box_tostring(lua_State *L) {
  box_t *b = (box_t *)braid__tohandle(L, 1);
  if (b == NULL) {
    lua_pushliteral(L, "braid.handle (released)");
    return 1;
  }
  pushmodule(L, b);
  if (lua_getfield(L, -1, "_mt") == LUA_TTABLE &&
      lua_getfield(L, -1, "__tostring") == LUA_TFUNCTION) {
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1);
    return 1;
  }
  lua_pushfstring(L, "braid.%s#%I", b->b_kind, (lua_Integer)b->b_obj.o_id);
  return 1;
}

void braid__open_box(lua_State *L) {
  static const luaL_Reg methods[] = {
    { "__index", box_index }, { "__newindex", box_newindex },
    { "__tostring", box_tostring }, { NULL, NULL } };
  braid__newtype(L, &braid_box_type, methods);
  lua_pushcfunction(L, l_box);
  lua_setfield(L, -2, "_box");
}
