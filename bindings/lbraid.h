/*
 * lbraid.h -- what the binding files share (internal; not installed).
 *
 * Every braid handle seen from Lua is a full userdata holding exactly one
 * reference to a core object (braid_obj_t).  Its metatable is registered
 * under "braid.<type name>" ("braid.chan", "braid.future", ...) and carries
 * the field __braid = true, which is how the codec recognises handles.
 */
#ifndef BRAID_LBRAID_H
#define BRAID_LBRAID_H

#include <stdbool.h>
#include <lua.h>
#include <lauxlib.h>
#include <string.h>

#include "chan.h"
#include "future.h"
#include "msg.h"
#include "refcnt.h"

#include "braid.h"               /* BRAID_VERSION */

/* The userdata block of every handle. */
typedef struct braid_handle {
  /* braid__handle_magic: lets braid__checkhandle know a braid handle from
   * any other userdata without a metatable lookup. */
  uintptr_t h_magic;
  braid_obj_t *h_obj;               /* one reference; NULL after __gc/__close */
  /* h_obj's type, copied at push: checking a handle (every channel
   * operation) then reads nothing of the object.  The object's header
   * shares a cache line with its lock, which the partner on the other core
   * writes at each of its operations: reading o_type there made every
   * check a cache miss (ints one-way on 2 workers, 6 runs each: 4.3-4.6
   * -> 5.6-6.1 M messages/s). */
  braid_objtype_t *h_type;
} braid_handle_t;

/* Pushes a new userdata for o with the metatable of o's type; takes a new
 * reference to o (the caller keeps its own).  The metatable must have been
 * registered (luaopen_braid registers every type). */
void braid__pushhandle(lua_State *L, braid_obj_t *o);

/* Returns the object of the braid handle at idx, or NULL when the value
 * there is not a live braid handle.  Borrowed: no reference is taken. */
braid_obj_t *braid__tohandle(lua_State *L, int idx);

/* Returns the object of a handle of the given type at argument arg, or
 * raises Lua's "bad argument #arg to 'fn' (braid.<type> expected, got X)". */
braid_obj_t *braid__checkhandle(lua_State *L, int arg, braid_objtype_t *type);

/* Registers the metatable "braid.<type->ot_name>" with the methods in l
 * (plus __gc, __close, __tostring unless l has them, __name and __braid);
 * methods are also reachable through __index.  Leaves nothing on the stack. */
void braid__newtype(lua_State *L, braid_objtype_t *type, const luaL_Reg *l);

/* Misuse errors in one form everywhere, with the qualified name of the
 * function: "bad argument #arg to 'braid.sleep' (msg)", "... to
 * 'chan:recv' (...)".  Lua's own luaL_argerror names the function from the
 * call site ('sleep', or whatever local it was called through), so braid
 * passes the name.  arg is the stack index; when fname is a method
 * ("type:name") self is not counted, as Lua counts ('chan:send' #1 is the
 * value).  These raise (the return is for "return braid__argerror(...)"). */
static inline int braid__argerror(lua_State *L, int arg, const char *fname, const char *msg) {
  if (strchr(fname, ':') != NULL) arg--;
  return luaL_error(L, "bad argument #%d to '%s' (%s)", arg, fname, msg);
}

/* The name of the value at idx as Lua's messages give it (its __name, else
 * its type name). */
static inline const char *braid__typename(lua_State *L, int idx) {
  if (luaL_getmetafield(L, idx, "__name") == LUA_TSTRING) {
    const char *s = lua_tostring(L, -1);
    lua_pop(L, 1);                        /* still anchored by the metatable */
    return s;
  }
  if (lua_type(L, idx) == LUA_TLIGHTUSERDATA) return "light userdata";
  return luaL_typename(L, idx);
}

/* "bad argument #arg to 'fname' (<expected> expected, got <type>)". */
static inline int braid__typeerror(lua_State *L, int arg, const char *fname, const char *expected) {
  const char *msg = lua_pushfstring(L, "%s expected, got %s", expected, braid__typename(L, arg));
  return braid__argerror(L, arg, fname, msg);
}

static inline void braid__checktype(lua_State *L, int arg, int t, const char *fname) {
  if (lua_type(L, arg) != t) braid__typeerror(L, arg, fname, lua_typename(L, t));
}

static inline lua_Number braid__checknumber(lua_State *L, int arg, const char *fname) {
  int isnum = 0;
  lua_Number n = lua_tonumberx(L, arg, &isnum);
  if (!isnum) braid__typeerror(L, arg, fname, "number");
  return n;
}

static inline lua_Integer braid__checkinteger(lua_State *L, int arg, const char *fname) {
  int isnum = 0;
  lua_Integer n = lua_tointegerx(L, arg, &isnum);
  if (!isnum) {
    if (lua_isnumber(L, arg)) braid__argerror(L, arg, fname, "number has no integer representation");
    else braid__typeerror(L, arg, fname, "number");
  }
  return n;
}

/* The codec (lcodec.c).  Encodes the n values at stack indexes idx ..
 * idx+n-1 into one message (a new reference).  root names the values in
 * error paths ("args", "value", "results"...).  On an untransferable value
 * raises "braid: cannot transfer <type> at <path>" and nothing leaks. */
braid_msg_t *braid__encode(lua_State *L, int idx, int n, const char *root);
/* braid__encode of at most 8 values that are all nil, booleans, numbers
 * or strings, without raising: NULL when one is not, or when memory runs
 * out (encode the general way then, which raises). */
braid_msg_t *braid__encode_scalars(lua_State *L, int idx, int n);

/* Pushes the values encoded in m; returns how many.  m is borrowed. */
int braid__decode(lua_State *L, braid_msg_t *m);

/* Like braid__decode for a message holding exactly one value: pushes it
 * (nil for an empty message) and returns 1. */
int braid__decode1(lua_State *L, braid_msg_t *m);


/* If m's first value is a string, returns its bytes (borrowed) and sets
 * *len; else NULL (wire.c; no lua_State needed: error reports). */
const char *braid__msg_first_string(braid_msg_t *m, size_t *len);

/* For tests of the codec: reads tables in place (lcodec.c, "Tables read
 * in place") when on and the layout probe passed, else with lua_next;
 * returns whether the probe passed.  Not for concurrent use. */
int braid__codec_inplace(lua_State *L, int on);
/* For tests: fn runs (or NULL: nothing) where the encoder's general path
 * may run Lua code while it reads a table in place (a finalizer could),
 * so that a test can change the table there. */
void braid__codec_inplace_hook(void (*fn)(lua_State *L));

/* braid._roundtrip(...): returns decode(encode(...)) in the same state; for
 * tests of the codec.  Raises like braid__encode (root "value"). */
int braid__l_roundtrip(lua_State *L);

/* The runtime (lruntime.c).  Pushes the globals table of the task running
 * in L (each task has its own), or L's global table when L is not a task.
 * The codec rebinds a decoded function's _ENV upvalue to this table. */
void braid__pushenv(lua_State *L);

/* The codec's function copiers (lcodec.c, "Loaded functions"): Lua code
 * that runs inside a decode, which the runtime's preemption hook lets
 * finish.  Their chunk name, and the state running one on this thread (or
 * NULL; stale after an error raised out of a copier, hence both tests). */
#define BRAID_COPIER_NAME "=(braid copy)"
extern _Thread_local lua_State *braid__copying;

/* The runtime (lruntime.c): when L is the task being resumed on this
 * thread, the address of a pointer its shard keeps for the codec (NULL
 * until the codec first stores its state there; the shard's state, which
 * owns that codec state, is closed only when the shard itself is freed);
 * else NULL.  Only the thread running the shard uses it. */
void **braid__codec_slot(lua_State *L);

/* lfuture.c: if the string at idx is Lua's "attempt to call (or index) a
 * nil value (global 'x')" and x is a global of the Lua code that waits
 * (the caller's _ENV), replaces it with the same message plus "(tasks have
 * their own globals: pass it as an argument or upvalue)". */
void braid__hint_globals(lua_State *L, int idx);

/* lhttp.c: sets braid._http (HTTP parser, WebSocket framer) in the module
 * table on the stack top. */
void braid__open_http(lua_State *L);

/* lhttp.c, for lnet.c's conn:_http_next: feeds a connection's buffered
 * bytes to a request parser, one message at a time (see lhttp.c). */
enum { BRAID_HTTP_MSG, BRAID_HTTP_MORE, BRAID_HTTP_CONTINUE, BRAID_HTTP_BAD, BRAID_HTTP_DONE };
void braid__http_check(lua_State *L, int idx, const char *fname);
int braid__http_take(lua_State *L, int pidx, const char *s, size_t n, size_t *used);
/* Of a parser braid__http_check passed: where it stands, and whether its
 * server is closing. */
enum { BRAID_HTTP_FIRST, BRAID_HTTP_IDLE, BRAID_HTTP_HEAD, BRAID_HTTP_BODY };
int braid__http_phase(lua_State *L, int idx);
bool braid__http_closing(lua_State *L, int idx);
/* lnet.c, for lhttp.c's answers: writes a then b on the connection at idx
 * (conn:write's results), or -1 when idx holds no plain connection. */
int braid__conn_send(lua_State *L, int idx, const char *a, size_t an, const char *b, size_t bn);

#endif
