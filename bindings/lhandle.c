/*
 * lhandle.c -- the userdata shared by every braid handle (see lbraid.h).
 */
#include <string.h>

#include "lbraid.h"

/* An address inside braid.so, mixed so that it is not a plausible pointer
 * either: no other library's userdata starts with it. */
static const char magic_anchor;
#define HANDLE_MAGIC ((uintptr_t)&magic_anchor ^ (uintptr_t)0x6272616964u)

void braid__pushhandle(lua_State *L, braid_obj_t *o) {
  /* Boxes (lbox.c) keep their decoded fields in a user value. */
  int nuv = strcmp(o->o_type->ot_name, "box") == 0 ? 1 : 0;
  braid_handle_t *h = lua_newuserdatauv(L, sizeof *h, nuv);
  h->h_magic = HANDLE_MAGIC;
  h->h_obj = NULL;
  h->h_type = o->o_type;
  /* The metatable, by the type's address (braid__newtype): no string to
   * format or hash on every spawn and every handle decoded. */
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, o->o_type) != LUA_TTABLE)
    luaL_error(L, "braid: type braid.%s is not registered", o->o_type->ot_name);
  lua_setmetatable(L, -2);
  braid_obj_retain(o);
  h->h_obj = o;
}

/* The handle at idx, or NULL: a full userdata of a handle's size that
 * starts with the magic word is one of ours (two API calls, no metatable
 * lookup: this runs at every channel operation and every handle encoded). */
static braid_handle_t *handle_at(lua_State *L, int idx) {
  braid_handle_t *h = lua_touserdata(L, idx);
  if (h == NULL || lua_rawlen(L, idx) != sizeof *h || h->h_magic != HANDLE_MAGIC) return NULL;
  return h;
}

braid_obj_t *braid__tohandle(lua_State *L, int idx) {
  braid_handle_t *h = handle_at(L, idx);
  return h ? h->h_obj : NULL;
}

braid_obj_t *braid__checkhandle(lua_State *L, int arg, braid_objtype_t *type) {
  braid_handle_t *h = handle_at(L, arg);
  braid_obj_t *o = h ? h->h_obj : NULL;
  if (o == NULL || h->h_type != type) {
    const char *got = luaL_typename(L, arg);
    if (luaL_getmetafield(L, arg, "__name") == LUA_TSTRING) got = lua_tostring(L, -1);
    luaL_argerror(L, arg, lua_pushfstring(L, "braid.%s expected, got %s", type->ot_name, got));
  }
  return o;
}

static int handle_gc(lua_State *L) {
  braid_handle_t *h = lua_touserdata(L, 1);
  if (h && h->h_obj) {
    braid_obj_t *o = h->h_obj;
    h->h_obj = NULL;                 /* harmless twice */
    braid_obj_release(o);
  }
  return 0;
}

static int handle_tostring(lua_State *L) {
  braid_handle_t *h = lua_touserdata(L, 1);
  if (h == NULL || h->h_obj == NULL) {
    lua_pushliteral(L, "braid.handle (released)");
  } else {
    lua_pushfstring(L, "braid.%s#%I", h->h_obj->o_type->ot_name, (lua_Integer)h->h_obj->o_id);
  }
  return 1;
}

static int handle_eq(lua_State *L) {
  braid_handle_t *a = lua_touserdata(L, 1), *b = lua_touserdata(L, 2);
  lua_pushboolean(L, a && b && a->h_obj && a->h_obj == b->h_obj);
  return 1;
}

void braid__newtype(lua_State *L, braid_objtype_t *type, const luaL_Reg *l) {
  lua_pushfstring(L, "braid.%s", type->ot_name);
  const char *name = lua_tostring(L, -1);
  luaL_newmetatable(L, name);       /* sets __name */
  lua_remove(L, -2);                /* the name string */
  static const luaL_Reg base[] = {
    { "__gc", handle_gc }, { "__close", handle_gc },
    { "__tostring", handle_tostring }, { "__eq", handle_eq }, { NULL, NULL } };
  luaL_setfuncs(L, base, 0);
  if (l) luaL_setfuncs(L, l, 0);    /* may override the base entries */
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, type);  /* for braid__pushhandle */
  if (lua_getfield(L, -1, "__index") == LUA_TNIL) {
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "__index"); /* methods live in the metatable itself */
  } else {
    lua_pop(L, 1);
  }
  lua_pop(L, 1);                    /* the metatable */
}
