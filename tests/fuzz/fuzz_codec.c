/*
 * fuzz_codec.c -- libFuzzer target for the message decoders: random bytes
 * as a message's data go to both decoders of the wire format (bindings/
 * wire.h): the C-value decoder (lcvalue.c) and the Lua decoder (lcodec.c).
 * Each must decode or refuse ("braid: corrupt message", an error code),
 * never crash or leak.  Whatever decodes is encoded again and decoded
 * again: for C values, encoding that gives the same bytes (C values keep
 * their order); for Lua values the two decodings must be deeply equal (a
 * Lua table's order depends on how it was built).
 *
 * Input: byte 0 holds the message's m_tag flags (bits 0-1: F_REFS, F_DEEP)
 * and how many channels it carries as handles (bits 2-3: 0..3); the rest
 * is m_data.  Messages with a T_FUNC record are kept from the Lua decoder:
 * it trusts bytecode (lua_load has no verifier; lcodec.c, "Limits and
 * trust"), and the records are found by walking them with braid__wnext.
 *
 * Built with clang only (CMake: fuzz_codec), run bounded by ctest
 * (-runs=20000); the seed corpus is tests/fuzz/corpus_codec.
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chan.h"
#include "lbraid.h"
#include "lembed.h"
#include "wire.h"

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "check failed: %s (line %d)\n", #c, __LINE__); abort(); } } while (0)

/* The runtime's: a decoded function's _ENV (never reached: no functions). */
void braid__pushenv(lua_State *L) { lua_pushglobaltable(L); }
/* The runtime's: no tasks here, so no shard keeps a codec state. */
void **braid__codec_slot(lua_State *L) { (void)L; return NULL; }

static lua_State *L;
static braid_chan_t *chans[3];

/* deq(a, b): deep equality.  Keys that are tables or handles (a new
 * userdata at each decode) are only counted. */
static const char deq_src[] =
  "local function deq(a, b, seen)\n"
  "  if a == b then return true end\n"
  "  if a ~= a and b ~= b then return math.type(a) == math.type(b) end\n"
  "  if type(a) ~= 'table' or type(b) ~= 'table' then return false end\n"
  "  if seen[a] then return seen[a] == b end\n"
  "  seen[a] = b\n"
  "  local na, nb = 0, 0\n"
  "  for k, v in pairs(a) do\n"
  "    na = na + 1\n"
  "    local tk = type(k)\n"
  "    if tk ~= 'table' and tk ~= 'userdata' and not deq(v, rawget(b, k), seen) then return false end\n"
  "  end\n"
  "  for _ in pairs(b) do nb = nb + 1 end\n"
  "  return na == nb\n"
  "end\n"
  "return function(a, b) return deq(a, b, {}) end\n";

static void setup(void) {
  L = luaL_newstate();
  CHECK(L != NULL);
  luaL_openlibs(L);
  /* T_MODULE names come from the input: require finds only what is loaded. */
  CHECK(luaL_dostring(L, "package.path = '' package.cpath = ''") == LUA_OK);
  CHECK(luaL_dostring(L, deq_src) == LUA_OK);
  lua_setglobal(L, "deq");
  braid__newtype(L, &braid_chan_type, NULL);        /* pushes nothing */
  for (int i = 0; i < 3; i++) CHECK((chans[i] = braid_chan_new(1, BRAID_POLICY_BLOCK)) != NULL);
}

static int same_bytes(braid_msg_t *a, braid_msg_t *b) {
  return a->m_len == b->m_len && memcmp(a->m_data, b->m_data, a->m_len) == 0 &&
         a->m_nhandles == b->m_nhandles;
}

/* Does any record of m (walked in order) hold bytecode?  A malformed
 * record ends the walk: the decoders refuse the message there anyway. */
static int has_function(braid_msg_t *m) {
  braid_wrd_t r;
  braid_wtok_t t;
  size_t n;
  if (!braid__wopen(&r, m, &n)) return 0;
  while (braid__wnext(&r, &t))
    if (t.wt_type == T_FUNC) return 1;
  return 0;
}

static void c_side(braid_msg_t *m) {
  braid_value_t v, v2;
  braid__vfault_t vf;
  if (braid__value_decode(m, &v, &vf) != 0) {
    CHECK(vf.vf_what != NULL);
    return;
  }
  braid_msg_t *m2 = NULL, *m3 = NULL;
  CHECK(braid__value_encode(v.u.array.items, v.u.array.len, &m2) == 0);
  CHECK(braid__value_decode(m2, &v2, NULL) == 0);
  CHECK(braid__value_encode(v2.u.array.items, v2.u.array.len, &m3) == 0);
  CHECK(same_bytes(m2, m3));
  braid_value_clear(&v);
  braid_value_clear(&v2);
  braid_msg_release(m2);
  braid_msg_release(m3);
}

/* Under lua_pcall: decodes the message (light userdata 1), encodes what
 * came out, decodes that, and compares the two decodings.  An encode may
 * refuse what a decode made (it raises before building a message); a
 * decode of the encoder's own output may not. */
static int lua_side(lua_State *S) {
  braid_msg_t *m = lua_touserdata(S, 1);
  lua_settop(S, 0);
  int n = braid__decode(S, m);                        /* 1..n */
  braid_msg_t *m2 = braid__encode(S, 1, n, "value");
  int n2 = braid__decode(S, m2);                      /* n+1..n+n2 */
  braid_msg_release(m2);
  CHECK(n2 == n);
  CHECK(lua_checkstack(S, 4));
  for (int i = 1; i <= n; i++) {
    lua_getglobal(S, "deq");
    lua_pushvalue(S, i);
    lua_pushvalue(S, n + i);
    lua_call(S, 2, 1);
    CHECK(lua_toboolean(S, -1));
    lua_pop(S, 1);
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (L == NULL) setup();
  if (size < 1) return 0;
  unsigned flags = data[0] & (F_REFS | F_DEEP);
  size_t nh = (data[0] >> 2) & 3;
  braid_msg_t *m = braid_msg_alloc(size - 1, nh);
  CHECK(m != NULL);
  if (size > 1) memcpy(m->m_data, data + 1, size - 1);
  for (size_t i = 0; i < nh; i++) {
    braid_chan_retain(chans[i]);
    braid_msg_set_handle(m, i, (braid_obj_t *)chans[i]);
  }
  m->m_tag = CODEC_MAGIC | flags;
  c_side(m);
  if (!has_function(m)) {
    lua_pushcfunction(L, lua_side);
    lua_pushlightuserdata(L, m);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
      CHECK(lua_type(L, -1) == LUA_TSTRING);             /* corrupt, not found, ... */
      lua_pop(L, 1);
    }
    lua_gc(L, LUA_GCCOLLECT);
  }
  braid_msg_release(m);
  return 0;
}
