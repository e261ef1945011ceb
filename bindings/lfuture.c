/*
 * lfuture.c -- braid.future and its methods (map, catch, all, any and race
 * are Lua: lua/braid/future.lua).
 *
 * A rejected future's message holds two values: the error and the remote
 * traceback (a string, "" when there is none).  await raises the error with
 * the traceback appended; wait returns the error alone.
 */
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "err.h"
#include "internal.h"
#include "lruntime.h"

static braid_future_t *checkfuture(lua_State *L, int arg) {
  return (braid_future_t *)braid__checkhandle(L, arg, &braid_future_type);
}

static int l_future(lua_State *L) {
  braid_future_t *f = braid_future_new();
  if (f == NULL) return luaL_error(L, "braid: out of memory");
  braid__pushhandle(L, (braid_obj_t *)f);
  braid_future_release(f);
  return 1;
}

static int l_resolve(lua_State *L) {
  braid_future_t *f = checkfuture(L, 1);
  braid_msg_t *m = braid__encode(L, 2, lua_gettop(L) - 1, "results");
  lua_pushboolean(L, braid_future_resolve(f, m) == 0);
  return 1;
}

static int l_reject(lua_State *L) {
  braid_future_t *f = checkfuture(L, 1);
  lua_settop(L, 2);
  if (lua_isnil(L, 2)) braid__argerror(L, 2, "future:reject", "an error value expected, got nil");
  lua_pushliteral(L, "");
  braid_msg_t *m = braid__encode(L, 2, 2, "error");
  lua_pushboolean(L, braid_future_reject(f, m) == 0);
  return 1;
}

/* ------------------------------------------------------------------------ */
/* "tasks have their own globals": a task that calls or indexes a global
 * the main script defined fails with Lua's "attempt to call a nil value
 * (global 'helper')".  The hint is added where the error is delivered
 * (await, wait), on the observer's thread: only there can the observer's
 * globals be read (the task's state is another thread's).  The globals are
 * those of the Lua function that waits (its _ENV upvalue: a busted spec's
 * environment too), else the state's _G. */

static const char HINT[] = " (tasks have their own globals: pass it as an argument or upvalue)";

/* Pushes the _ENV of the innermost Lua function on L's stack that is not
 * braid's own (the files of lua/braid: braid.pmap waits for the user), or _G. */
static void push_caller_env(lua_State *L) {
  lua_Debug ar;
  for (int level = 0; lua_getstack(L, level, &ar); level++) {
    lua_getinfo(L, "fS", &ar);
    if (!lua_iscfunction(L, -1) && strncmp(ar.source, "@lua/braid/", 11) != 0) {
      for (int i = 1;; i++) {
        const char *up = lua_getupvalue(L, -1, i);
        if (up == NULL) break;
        if (strcmp(up, "_ENV") == 0 && lua_istable(L, -1)) {
          lua_remove(L, -2);
          return;
        }
        lua_pop(L, 1);
      }
    }
    lua_pop(L, 1);
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
}

static int env_has(lua_State *L) {            /* (env, name): env[name] ~= nil */
  lua_gettable(L, 1);
  lua_pushboolean(L, !lua_isnil(L, -1));
  return 1;
}

void braid__hint_globals(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  if (lua_type(L, idx) != LUA_TSTRING) return;
  const char *s = lua_tostring(L, idx);
  if (strstr(s, HINT + 1) != NULL) return;     /* hinted already (a nested wait) */
  const char *at = strstr(s, "a nil value (global '");
  if (at == NULL) return;
  const char *name = at + strlen("a nil value (global '");
  const char *end = strchr(name, '\'');
  if (end == NULL || end[1] != ')' || end - name > 200) return;
  /* "attempt to call" or "attempt to index" right before. */
  static const char call[] = "attempt to call ", index[] = "attempt to index ";
  size_t before = (size_t)(at - s);
  if (!(before >= sizeof call - 1 && memcmp(at - (sizeof call - 1), call, sizeof call - 1) == 0) &&
      !(before >= sizeof index - 1 && memcmp(at - (sizeof index - 1), index, sizeof index - 1) == 0))
    return;
  int top = lua_gettop(L);
  lua_pushcfunction(L, env_has);
  push_caller_env(L);
  lua_pushlstring(L, name, (size_t)(end - name));
  bool has = lua_pcall(L, 2, 1, 0) == LUA_OK && lua_toboolean(L, -1);  /* __index may raise */
  lua_settop(L, top);
  if (!has) return;
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addlstring(&b, s, (size_t)(end + 2 - s));  /* through "(global 'x')" */
  luaL_addstring(&b, HINT);
  luaL_addstring(&b, end + 2);
  luaL_pushresult(&b);
  lua_replace(L, idx);
}

/* braid._hint_globals(v) -> v, hinted when it is such a string (for the
 * Lua layer's error texts: "braid.pmap: item 3: ..."). */
static int l_hint_globals(lua_State *L) {
  lua_settop(L, 1);
  braid__hint_globals(L, 1);
  return 1;
}

/* Pushes a rejected result's error value (without its traceback). */
static void pusherror(lua_State *L, braid_msg_t *m) {
  int k = m ? braid__decode(L, m) : 0;
  if (k == 0) lua_pushliteral(L, "rejected");
  else if (k > 1) lua_pop(L, k - 1);
  if (k > 0) braid__hint_globals(L, -1);
}

static int finish_await(lua_State *L, braid_case_t *c, int n, braid_selres_t *r) {
  braid_msg_t *m = r->s_msg;
  if (r->s_index == BRAID_W_TIMEOUT) return braid__raise(L, "timeout");
  if (r->s_err == BRAID_ECANCELED) {
    braid_msg_release(m);
    return braid__raise(L, "cancelled");
  }
  if (r->s_err == BRAID_EREJECTED) return braid__raise_rejection(L, m);
  int k = m ? braid__decode(L, m) : 0;
  braid_msg_release(m);
  return k;
}

static int l_await(lua_State *L) {
  braid_future_t *f = checkfuture(L, 1);
  int64_t deadline = braid__optdeadline(L, 2, "future:await");
  lua_settop(L, 1);
  braid_case_t c = { .c_op = BRAID_OP_AWAIT, .c_obj = f };
  return braid__wait(L, &c, 1, deadline, finish_await, "await", (braid_obj_t *)f);
}

static int finish_wait(lua_State *L, braid_case_t *c, int n, braid_selres_t *r) {
  braid_msg_t *m = r->s_msg;
  lua_settop(L, 0);
  if (r->s_index == BRAID_W_TIMEOUT) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "timeout");
    return 2;
  }
  if (r->s_err == BRAID_ECANCELED) {
    braid_msg_release(m);
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "cancelled");
    return 2;
  }
  if (r->s_err == BRAID_EREJECTED) {
    lua_pushboolean(L, 0);
    pusherror(L, m);
    braid_msg_release(m);
    return 2;
  }
  lua_pushboolean(L, 1);
  int k = m ? braid__decode(L, m) : 0;
  braid_msg_release(m);
  return k + 1;
}

static int l_wait(lua_State *L) {
  braid_future_t *f = checkfuture(L, 1);
  int64_t deadline = braid__optdeadline(L, 2, "future:wait");
  lua_settop(L, 1);
  braid_case_t c = { .c_op = BRAID_OP_AWAIT, .c_obj = f };
  return braid__wait(L, &c, 1, deadline, finish_wait, "await", (braid_obj_t *)f);
}

static const char *const fstates[] = { "pending", "resolved", "rejected", "cancelled" };

static int l_status(lua_State *L) {
  braid_future_t *f = checkfuture(L, 1);
  braid_fstate_t st = braid_future_state(f);
  if (st != BRAID_FUTURE_PENDING) braid_future_observe(f);
  lua_pushstring(L, fstates[st]);
  return 1;
}

static int l_cancel(lua_State *L) {
  braid_future_t *f = checkfuture(L, 1);
  braid_future_observe(f);            /* the canceller expects the outcome */
  lua_pushboolean(L, braid_future_cancel(f) == 0);
  return 1;
}

/* f:_observe(): marks f observed without waiting, for a combinator that
 * took f over (the losers of braid.race/any/all): its error, if it ever
 * rejects, was handled by whoever awaited the combinator.  Internal. */
static int l_observe(lua_State *L) {
  braid_future_observe(checkfuture(L, 1));
  return 0;
}

static int l_future_tostring(lua_State *L) {
  braid_obj_t *o = braid__tohandle(L, 1);
  if (o == NULL) {
    lua_pushliteral(L, "braid.future (released)");
    return 1;
  }
  lua_pushfstring(L, "braid.future#%I (%s)", (lua_Integer)o->o_id,
                  fstates[braid_future_state((braid_future_t *)o)]);
  return 1;
}

void braid__open_future(lua_State *L) {
  static const luaL_Reg methods[] = {
    { "resolve", l_resolve }, { "reject", l_reject }, { "await", l_await },
    { "wait", l_wait }, { "status", l_status }, { "cancel", l_cancel },
    { "_observe", l_observe },
    { "__tostring", l_future_tostring }, { NULL, NULL } };
  braid__newtype(L, &braid_future_type, methods);
  lua_pushcfunction(L, l_future);
  lua_setfield(L, -2, "future");
  lua_pushcfunction(L, l_hint_globals);
  lua_setfield(L, -2, "_hint_globals");
}
