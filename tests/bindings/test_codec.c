/*
 * test_codec.c -- the value codec (bindings/lcodec.c): Lua values <->
 * messages, across two lua_States.
 *
 * Standalone: links liblua5.4, core/[*].c, bindings/lcodec.c, bindings/wire.c and
 * bindings/lhandle.c (handles are a fake type registered with
 * braid__newtype).  braid__pushenv and braid__codec_slot are stubbed here
 * (weak, so linking the real runtime instead also works): the first pushes
 * the table the test stored in the registry under "test_env", or the
 * globals.
 *
 *   cc -std=c11 -D_GNU_SOURCE -g -Icore -Ibindings -Iinclude -Itests/core \
 *      $(pkg-config --cflags lua5.4) tests/codec/test_codec.c \
 *      bindings/lcodec.c bindings/wire.c bindings/lhandle.c core/[*].c \
 *      $(pkg-config --libs lua5.4) -lpthread -lm -o test_codec
 *
 * Most tests are pairs of Lua chunks: the sender chunk runs in state A and
 * returns values, which are encoded (braid__encode), decoded into state B
 * (braid__decode) and passed as ... to the checker chunk, which asserts.
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <math.h>
#include <string.h>

#include "lbraid.h"
#include "test.h"

/* ------------------------------------------------------------------------ */
/* Stubs and helpers                                                         */

__attribute__((weak)) void braid__pushenv(lua_State *L) {
  if (lua_getfield(L, LUA_REGISTRYINDEX, "test_env") == LUA_TTABLE) return;
  lua_pop(L, 1);
  lua_pushglobaltable(L);
}

/* The runtime's slot for a task's codec state: no tasks here (weak, as
 * above: defining it keeps the runtime's object file out of the link). */
__attribute__((weak)) void **braid__codec_slot(lua_State *L) {
  (void)L;
  return NULL;
}

static int l_newobj(lua_State *L) {
  braid_obj_t *o = test_obj_new();
  braid__pushhandle(L, o);
  braid_obj_release(o);                 /* the userdata holds the reference */
  return 1;
}

static int l_objrc(lua_State *L) {
  braid_obj_t *o = braid__tohandle(L, 1);
  luaL_argcheck(L, o != NULL, 1, "handle expected");
  lua_pushinteger(L, (lua_Integer)obj_rc(o));
  return 1;
}

static int l_objid(lua_State *L) {
  braid_obj_t *o = braid__tohandle(L, 1);
  luaL_argcheck(L, o != NULL, 1, "handle expected");
  lua_pushinteger(L, (lua_Integer)o->o_id);
  return 1;
}

static int l_lightud(lua_State *L) {
  lua_pushlightuserdata(L, (void *)L);
  return 1;
}

/* A foreign C function (in no module). */
static int l_foreign(lua_State *L) { (void)L; return 0; }

static const char *const lua_helpers =
  "function deepeq(a, b, seen)\n"
  "  if a == b then return true end\n"
  "  if type(a) == 'number' and type(b) == 'number' then\n"
  "    return a ~= a and b ~= b and math.type(a) == math.type(b)\n"
  "  end\n"
  "  if type(a) ~= 'table' or type(b) ~= 'table' then return false end\n"
  "  seen = seen or {}\n"
  "  if seen[a] then return seen[a] == b end\n"
  "  seen[a] = b\n"
  "  for k, v in pairs(a) do\n"
  "    local w = b[k]\n"
  "    if type(k) == 'table' then\n"
  "      return false  -- table keys are checked by hand\n"
  "    end\n"
  "    if not deepeq(v, w, seen) then return false end\n"
  "  end\n"
  "  for k in pairs(b) do if a[k] == nil then return false end end\n"
  "  return true\n"
  "end\n";

static lua_State *setup_state(lua_State *L);

static lua_State *newstate(void) {
  return setup_state(luaL_newstate());
}

static lua_State *setup_state(lua_State *L) {
  ASSERT_NOT_NULL(L);
  luaL_openlibs(L);
  braid__newtype(L, &test_obj_type, NULL);
  lua_register(L, "newobj", l_newobj);
  lua_register(L, "objrc", l_objrc);
  lua_register(L, "objid", l_objid);
  lua_register(L, "lightud", l_lightud);
  lua_register(L, "roundtrip", braid__l_roundtrip);
  /* foreign: a C function that is a global would travel as _G.foreign; keep
   * it out of every module, in the registry. */
  lua_pushcfunction(L, l_foreign);
  lua_setfield(L, LUA_REGISTRYINDEX, "foreign");
  if (luaL_dostring(L, lua_helpers) != LUA_OK)
    test__fail(__FILE__, __LINE__, "helpers: %s", lua_tostring(L, -1));
  return L;
}

/* Runs chunk in L with the registry's "foreign" as ... ; leaves its results
 * on the stack; returns how many. */
static int run(lua_State *L, const char *chunk, int nargs_on_stack) {
  int base = lua_gettop(L) - nargs_on_stack;
  if (luaL_loadstring(L, chunk) != LUA_OK)
    test__fail(__FILE__, __LINE__, "load: %s", lua_tostring(L, -1));
  lua_insert(L, base + 1);
  if (lua_pcall(L, nargs_on_stack, LUA_MULTRET, 0) != LUA_OK)
    test__fail(__FILE__, __LINE__, "chunk failed: %s\n--- chunk:\n%s", lua_tostring(L, -1), chunk);
  return lua_gettop(L) - base;
}

/* Encoding under lua_pcall: args are root (light userdata to a string) and
 * the values. */
static braid_msg_t *enc_out;
static int enc_n;
static const char *enc_root;

static int p_encode(lua_State *L) {
  enc_out = braid__encode(L, 1, enc_n, enc_root);
  return 0;
}

/* Encodes the top n values of L (popped); returns the message, or NULL with
 * the error in *err (a static copy). */
static braid_msg_t *encode_top(lua_State *L, int n, const char *root, char *err, size_t errlen) {
  enc_out = NULL;
  enc_n = n;
  enc_root = root;
  lua_pushcfunction(L, p_encode);
  lua_insert(L, -n - 1);
  int top = lua_gettop(L) - n - 1;
  if (lua_pcall(L, n, 0, 0) != LUA_OK) {
    snprintf(err, errlen, "%s", lua_tostring(L, -1));
    lua_settop(L, top);
    return NULL;
  }
  lua_settop(L, top);
  return enc_out;
}

static braid_msg_t *dec_msg;
static int dec_count;

static int p_decode(lua_State *L) {
  dec_count = braid__decode(L, dec_msg);
  return dec_count;
}

/* Decodes m into L under lua_pcall; pushes the values and returns how many,
 * or -1 with the error message pushed. */
static int decode_push(lua_State *L, braid_msg_t *m) {
  dec_msg = m;
  lua_pushcfunction(L, p_decode);
  if (lua_pcall(L, 0, LUA_MULTRET, 0) != LUA_OK) return -1;
  return dec_count;
}

/* Runs sender in A, sends its results (root "value") to B, runs checker in
 * B with them as ...; returns nothing.  Both states are fresh. */
static void xfer_check(const char *sender, const char *checker) {
  lua_State *A = newstate(), *B = newstate();
  char err[512];
  int n = run(A, sender, 0);
  braid_msg_t *m = encode_top(A, n, "value", err, sizeof err);
  if (m == NULL) test__fail(__FILE__, __LINE__, "encode failed: %s\n--- sender:\n%s", err, sender);
  int got = decode_push(B, m);
  if (got < 0) test__fail(__FILE__, __LINE__, "decode failed: %s", lua_tostring(B, -1));
  ASSERT_EQ_INT(got, n);
  run(B, checker, got);
  braid_msg_release(m);
  lua_close(A);
  lua_close(B);
}

/* Runs sender in a fresh state and encodes its results with root; asserts
 * that the encode raised exactly want. */
static void expect_encode_error(const char *sender, const char *root, const char *want) {
  lua_State *A = newstate();
  char err[512];
  int n = run(A, sender, 0);
  braid_msg_t *m = encode_top(A, n, root, err, sizeof err);
  if (m != NULL) test__fail(__FILE__, __LINE__, "encode of\n%s\nsucceeded; wanted: %s", sender, want);
  ASSERT_EQ_STR(err, want);
  /* The state still encodes afterwards (the scratch is not left busy). */
  lua_pushinteger(A, 7);
  lua_newtable(A);
  m = encode_top(A, 2, "value", err, sizeof err);
  ASSERT_NOT_NULL(m);
  braid_msg_release(m);
  lua_close(A);
}

/* ------------------------------------------------------------------------ */
/* Scalars and strings                                                       */

TEST(test_codec_scalars) {
  xfer_check(
    "return nil, true, false, 0, -1, math.mininteger, math.maxinteger, "
    "  1.5, -0.0, 0/0, 1/0, -1/0, 3.0, 2^53, 1e-310",
    "local a = table.pack(...)\n"
    "assert(a.n == 15)\n"
    "assert(a[1] == nil and a[2] == true and a[3] == false)\n"
    "assert(math.type(a[4]) == 'integer' and a[4] == 0)\n"
    "assert(a[5] == -1 and a[6] == math.mininteger and a[7] == math.maxinteger)\n"
    "assert(math.type(a[6]) == 'integer')\n"
    "assert(a[8] == 1.5)\n"
    "assert(a[9] == 0 and 1/a[9] == -1/0, 'negative zero')\n"
    "assert(a[10] ~= a[10], 'NaN')\n"
    "assert(a[11] == 1/0 and a[12] == -1/0)\n"
    "assert(math.type(a[13]) == 'float' and a[13] == 3)\n"
    "assert(math.type(a[14]) == 'float' and a[14] == 2^53)\n"
    "assert(a[15] == 1e-310, 'subnormal')\n");
}

TEST(test_codec_nil_in_multiple_values) {
  xfer_check("return nil, 2", "local a = table.pack(...) assert(a.n == 2 and a[1] == nil and a[2] == 2)");
  xfer_check("return 1, nil", "local a = table.pack(...) assert(a.n == 2 and a[1] == 1 and a[2] == nil)");
  xfer_check("return", "assert(select('#', ...) == 0)");
  xfer_check("return nil, {}, nil", "local a = table.pack(...) assert(a.n == 3 and type(a[2]) == 'table')");
}

TEST(test_codec_binary_strings) {
  xfer_check(
    "return '', 'a\\0b\\0\\0', ('\\255\\0'):rep(1000), ('x'):rep(100000), '\\0'",
    "local a, b, c, d, e = ...\n"
    "assert(a == '' and b == 'a\\0b\\0\\0' and #b == 5)\n"
    "assert(c == ('\\255\\0'):rep(1000) and #d == 100000 and e == '\\0')\n");
}

TEST(test_codec_msg_first_string) {
  lua_State *A = newstate();
  char err[256];
  size_t len = 99;
  lua_pushlstring(A, "ab\0cd", 5);
  braid_msg_t *m = encode_top(A, 1, "value", err, sizeof err);
  ASSERT_NOT_NULL(m);
  const char *s = braid__msg_first_string(m, &len);
  ASSERT_NOT_NULL(s);
  ASSERT_EQ_UINT(len, 5);
  ASSERT(memcmp(s, "ab\0cd", 5) == 0);
  braid_msg_release(m);

  luaL_Buffer b;                                     /* a long one (varint > 1 byte) */
  luaL_buffinit(A, &b);
  for (int i = 0; i < 3000; i++) luaL_addchar(&b, (char)('a' + i % 26));
  luaL_pushresult(&b);
  m = encode_top(A, 1, "value", err, sizeof err);
  s = braid__msg_first_string(m, &len);
  ASSERT_NOT_NULL(s);
  ASSERT_EQ_UINT(len, 3000);
  ASSERT(s[2999] == 'a' + 2999 % 26);
  braid_msg_release(m);

  lua_pushinteger(A, 5);                             /* not a string */
  m = encode_top(A, 1, "value", err, sizeof err);
  ASSERT_NULL(braid__msg_first_string(m, &len));
  braid_msg_release(m);
  lua_pushinteger(A, 1);                             /* a string second */
  lua_pushstring(A, "b");
  m = encode_top(A, 2, "value", err, sizeof err);
  ASSERT_NULL(braid__msg_first_string(m, &len));
  braid_msg_release(m);
  lua_pushstring(A, "a");                            /* two values: the first */
  lua_pushstring(A, "bc");
  m = encode_top(A, 2, "value", err, sizeof err);
  s = braid__msg_first_string(m, &len);
  ASSERT_NOT_NULL(s);
  ASSERT_EQ_UINT(len, 1);
  ASSERT(s[0] == 'a');
  braid_msg_release(m);
  lua_newtable(A);                                   /* a table */
  m = encode_top(A, 1, "value", err, sizeof err);
  ASSERT_NULL(braid__msg_first_string(m, &len));
  braid_msg_release(m);
  m = braid_msg_new("abc", 3, NULL, 0);              /* not a codec message */
  ASSERT_NULL(braid__msg_first_string(m, &len));
  braid_msg_release(m);
  ASSERT_NULL(braid__msg_first_string(NULL, &len));
  lua_close(A);
}

/* ------------------------------------------------------------------------ */
/* Tables                                                                    */

TEST(test_codec_tables_nested) {
  xfer_check(
    "return {id = 1, name = 'San Francisco', temp = 288.9, tags = {'a', 'b'},\n"
    "        [1.5] = 'f', [true] = 'T', [false] = 'F', [-3] = 'neg', [0] = 'zero',\n"
    "        [10] = 'ten', nested = {a = {b = {c = {d = 'deep'}}}},\n"
    "        [2^63] = 'bigfloat', [math.mininteger] = 'minint', empty = {}}",
    "local t = ...\n"
    "assert(t.id == 1 and math.type(t.id) == 'integer')\n"
    "assert(t.name == 'San Francisco' and t.temp == 288.9)\n"
    "assert(#t.tags == 2 and t.tags[1] == 'a' and t.tags[2] == 'b')\n"
    "assert(t[1.5] == 'f' and t[true] == 'T' and t[false] == 'F' and t[-3] == 'neg')\n"
    "assert(t[0] == 'zero' and t[10] == 'ten' and t.nested.a.b.c.d == 'deep')\n"
    "assert(t[2^63] == 'bigfloat' and t[math.mininteger] == 'minint')\n"
    "assert(next(t.empty) == nil)\n");
}

TEST(test_codec_tables_arrays_and_holes) {
  xfer_check(
    "local big = {} for i = 1, 10000 do big[i] = i * 2 end\n"
    "local holes = {1, nil, 3, nil, 5}\n"
    "local mixed = {10, 20, 30, x = 'y', [100] = 'h'}\n"
    "return big, holes, mixed",
    "local big, holes, mixed = ...\n"
    "assert(#big == 10000) for i = 1, 10000 do assert(big[i] == i * 2) end\n"
    "assert(holes[1] == 1 and holes[2] == nil and holes[3] == 3 and holes[5] == 5)\n"
    "assert(mixed[1] == 10 and mixed[3] == 30 and mixed.x == 'y' and mixed[100] == 'h')\n"
    "local n = 0 for _ in pairs(mixed) do n = n + 1 end assert(n == 5)\n");
}

TEST(test_codec_tables_shared_and_cycles) {
  xfer_check(
    "local shared = {v = 1}\n"
    "local t = {a = shared, b = shared, list = {shared, shared}}\n"
    "t.self = t\n"
    "local x, y = {}, {} x.y = y y.x = x\n"
    "local k = {'key'}\n"
    "t[k] = k\n"
    "return t, shared, x, t",
    "local t, shared, x, t2 = ...\n"
    "assert(t.a == t.b and t.a == shared and t.list[1] == shared and t.list[2] == shared)\n"
    "assert(t.self == t, 'cycle')\n"
    "assert(t2 == t, 'the same table twice among the values')\n"
    "assert(x.y.x == x, 'two-table cycle')\n"
    "local found = 0\n"
    "for key, v in pairs(t) do if type(key) == 'table' then\n"
    "  found = found + 1 assert(key == v and key[1] == 'key') end end\n"
    "assert(found == 1, 'table key preserved with identity')\n");
}

TEST(test_codec_tables_many_shared) {
  /* More than SMALL_SEEN objects: the seen map switches to its hash. */
  xfer_check(
    "local nodes = {} for i = 1, 3000 do nodes[i] = {id = i, prev = nodes[i - 1], first = nodes[1]} end\n"
    "return nodes",
    "local nodes = ...\n"
    "assert(#nodes == 3000)\n"
    "for i = 1, 3000 do\n"
    "  assert(nodes[i].id == i and nodes[i].prev == nodes[i - 1] and (i == 1 or nodes[i].first == nodes[1]))\n"
    "end\n");
}

TEST(test_codec_metatables_not_copied) {
  xfer_check(
    "return setmetatable({x = 1}, {__index = function() return 'mt' end})",
    "local t = ... assert(getmetatable(t) == nil and t.x == 1 and t.y == nil)");
}

TEST(test_codec_copies_are_distinct) {
  lua_State *A = newstate();
  run(A,
      "local t = {1, {2}}\n"
      "local c1, c2 = roundtrip(t), roundtrip(t)\n"
      "assert(c1 ~= t and c2 ~= c1 and c1[2] ~= t[2])\n"
      "c1[1] = 99 assert(t[1] == 1 and c2[1] == 1)\n", 0);
  lua_close(A);
}

/* ------------------------------------------------------------------------ */
/* Functions                                                                 */

TEST(test_codec_function_upvalues) {
  xfer_check(
    "local n, s, t = 40, 'str', {k = 'v'}\n"
    "return function(x) return n + x, s, t.k end",
    "local f = ...\n"
    "local a, b, c = f(2)\n"
    "assert(a == 42 and b == 'str' and c == 'v')\n");
}

TEST(test_codec_function_env_rebound) {
  /* The sender's globals do not travel: the function reads B's env. */
  lua_State *A = newstate(), *B = newstate();
  char err[256];
  run(A, "secret = 'A' return function(x) greeting = 'hi ' .. x return secret end", 0);
  braid_msg_t *m = encode_top(A, 1, "value", err, sizeof err);
  ASSERT_NOT_NULL(m);
  run(B, "debug.getregistry().test_env = setmetatable({secret = 'B-env'}, {__index = _G})", 0);
  ASSERT_EQ_INT(decode_push(B, m), 1);
  run(B,
      "local f = ...\n"
      "assert(f('bob') == 'B-env')\n"
      "local env = debug.getregistry().test_env\n"
      "assert(env.greeting == 'hi bob' and rawget(_G, 'greeting') == nil)\n"
      "local name, v = debug.getupvalue(f, 1) assert(name == '_ENV' and v == env)\n", 1);
  braid_msg_release(m);
  lua_close(A);
  lua_close(B);
}

TEST(test_codec_function_recursive_and_shared_upvalues) {
  xfer_check(
    "local function fact(n) if n <= 1 then return 1 end return n * fact(n - 1) end\n"
    "local count = 0\n"
    "local function inc() count = count + 1 return count end\n"
    "local function get() return count end\n"
    "inc()\n"
    "return fact, {inc = inc, get = get, again = inc}",
    "local fact, t = ...\n"
    "assert(fact(10) == 3628800, 'recursive local function')\n"
    "assert(t.again == t.inc, 'same function twice')\n"
    "assert(t.get() == 1)\n"
    "assert(t.inc() == 2 and t.get() == 2, 'shared upvalue joined')\n");
}

TEST(test_codec_function_with_modules_and_nested) {
  xfer_check(
    "local fmt, sqrt, str = string.format, math.sqrt, string\n"
    "local helper = function(x) return x * 2 end\n"
    "return function(x) return fmt('%d:%s', helper(x), str.rep('z', 2)), sqrt(16) end",
    "local f = ...\n"
    "local a, b = f(21)\n"
    "assert(a == '42:zz' and b == 4.0)\n"
    "local found = false\n"
    "for i = 1, 10 do local name, v = debug.getupvalue(f, i)\n"
    "  if name == 'sqrt' then assert(v == math.sqrt, 'the receiver\\'s own math.sqrt') found = true end end\n"
    "assert(found)\n");
}

TEST(test_codec_function_keeps_debug_info) {
  xfer_check(
    "return load('local x = 1\\nreturn function() error(\"boom\") end', '@task.lua')()",
    "local f = ...\n"
    "local ok, err = pcall(f)\n"
    "assert(not ok and err:find('task.lua:2: boom', 1, true), err)\n");
}

TEST(test_codec_function_identity_and_varargs) {
  xfer_check(
    "local function f(...) return select('#', ...), ... end\n"
    "return f, f, {f}",
    "local f, g, t = ...\n"
    "assert(f == g and t[1] == f)\n"
    "local n, a, b = f(nil, 2) assert(n == 2 and a == nil and b == 2)\n");
}

/* ------------------------------------------------------------------------ */
/* Modules and standard C functions                                          */

TEST(test_codec_modules_by_name) {
  xfer_check(
    "return string, math.sqrt, print, _G, table.concat, {s = string, p = print}",
    "local s, sq, p, g, cc, t = ...\n"
    "assert(s == string and sq == math.sqrt and p == print and g == _G)\n"
    "assert(cc == table.concat and t.s == string and t.p == print)\n");
}

TEST(test_codec_module_required_in_receiver) {
  /* Sender loads "mymod" after a first encode (the map must notice it);
   * the receiver has not loaded it yet and requires it (from preload). */
  lua_State *A = newstate(), *B = newstate();
  char err[256];
  run(A, "return {1}", 0);
  braid_msg_t *m = encode_top(A, 1, "value", err, sizeof err);   /* builds the map */
  ASSERT_NOT_NULL(m);
  braid_msg_release(m);
  run(A,
      "package.preload.mymod = function() return {name = 'A', add = function(a, b) return a + b end} end\n"
      "local mm = require 'mymod'\n"
      "return mm, {m = mm}", 0);
  m = encode_top(A, 2, "value", err, sizeof err);
  ASSERT_NOT_NULL(m);
  run(B,
      "loads = 0\n"
      "package.preload.mymod = function() loads = loads + 1 return {name = 'B'} end", 0);
  ASSERT_EQ_INT(decode_push(B, m), 2);
  run(B,
      "local mm, t = ...\n"
      "assert(mm.name == 'B' and mm == package.loaded.mymod and t.m == mm)\n"
      "assert(loads == 1)\n", 2);
  braid_msg_release(m);
  lua_close(A);
  lua_close(B);
}

TEST(test_codec_module_field_missing_in_receiver) {
  lua_State *A = newstate(), *B = newstate();
  char err[256];
  /* A C function that only A's module "zz" has. */
  run(A, "package.loaded.zz = {only = debug.getregistry().foreign} return zz_only or package.loaded.zz.only", 0);
  braid_msg_t *m = encode_top(A, 1, "value", err, sizeof err);
  ASSERT_NOT_NULL(m);
  run(B, "package.loaded.zz = {}", 0);
  ASSERT_EQ_INT(decode_push(B, m), -1);
  ASSERT_EQ_STR(lua_tostring(B, -1), "braid: module 'zz' has no field 'only' in the receiving state");
  lua_settop(B, 0);
  ASSERT_EQ_INT(decode_push(B, m), -1);              /* repeatable */
  lua_settop(B, 0);
  braid_msg_release(m);
  lua_close(A);
  lua_close(B);
}

TEST(test_codec_module_name_choice) {
  /* math.abs also stored as string.cfn travels as math.abs (the shorter
   * module name), so a receiver without string.cfn still gets it. */
  xfer_check("string.cfn = math.abs return math.abs, string.cfn",
             "local a, b = ... assert(a == math.abs and b == math.abs and string.cfn == nil)");
}

/* ------------------------------------------------------------------------ */
/* Handles                                                                   */

TEST(test_codec_handles) {
  lua_State *A = newstate(), *B = newstate();
  char err[256];
  run(A, "h = newobj() return h, {h, h}, objid(h)", 0);
  lua_Integer id = lua_tointeger(A, -1);
  lua_pop(A, 1);
  braid_msg_t *m = encode_top(A, 2, "value", err, sizeof err);
  ASSERT_NOT_NULL(m);
  ASSERT_EQ_UINT(m->m_nhandles, 1);                  /* the same userdata once */
  run(A, "assert(objrc(h) == 2, 'userdata + message')", 0);
  ASSERT_EQ_INT(decode_push(B, m), 2);
  lua_pushinteger(B, id);
  run(B,
      "local h, t, id = ...\n"
      "assert(objid(h) == id and t[1] == h and t[2] == h)\n"
      "assert(rawequal(t[1], h), 'one userdata')\n"
      "assert(objrc(h) == 3, 'A, B and the message')\n", 3);
  braid_msg_release(m);
  lua_close(B);
  run(A, "assert(objrc(h) == 1)", 0);
  lua_close(A);
}

TEST(test_codec_handle_as_upvalue_and_key) {
  xfer_check(
    "local h = newobj() local t = {[h] = 'v'}\n"
    "return function() return h end, t, h",
    "local f, t, h = ...\n"
    "assert(rawequal(f(), h) and t[h] == 'v')\n");
}

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */

TEST(test_codec_error_paths) {
  expect_encode_error("return 1, {conn = io.stdout}", "args",
                      "braid: cannot transfer userdata (FILE*) at args[2].conn: open it inside the task, or pass a braid handle");
  expect_encode_error("return {coroutine.create(print)}", "value",
                      "braid: cannot transfer thread at value[1]: a coroutine stays in the task that made it; send a channel instead");
  expect_encode_error("return 1, {x = {coroutine.create(print)}}", "value",
                      "braid: cannot transfer thread at value[2].x[1]: a coroutine stays in the task that made it; send a channel instead");
  expect_encode_error("local db = io.stdout return function() return db end", "fn",
                      "braid: cannot transfer userdata (FILE*) at upvalue 'db': open it inside the task, or pass a braid handle");
  expect_encode_error("local db = {conn = io.stdout} return function() return db end", "fn",
                      "braid: cannot transfer userdata (FILE*) at upvalue 'db'.conn: open it inside the task, or pass a braid handle");
  expect_encode_error("return io.stdout", "fn", "braid: cannot transfer userdata (FILE*) at fn: open it inside the task, or pass a braid handle");
  expect_encode_error("local db = io.stdout return {handler = function() return db end}", "value",
                      "braid: cannot transfer userdata (FILE*) at value.handler upvalue 'db': open it inside the task, or pass a braid handle");
  expect_encode_error("return coroutine.wrap(print)", "value",
                      "braid: cannot transfer C function at value: only the standard library's and loaded modules' C functions travel");
  expect_encode_error("return debug.getregistry().foreign", "results",
                      "braid: cannot transfer C function at results[1]: only the standard library's and loaded modules' C functions travel");
  expect_encode_error("return lightud()", "value", "braid: cannot transfer userdata at value");
  expect_encode_error("return {['a b'] = {['end'] = {[1.5] = {[true] = {io.stdout}}}}}", "value",
                      "braid: cannot transfer userdata (FILE*) at value[\"a b\"][\"end\"][1.5][true][1]: open it inside the task, or pass a braid handle");
  expect_encode_error("return {x = {[io.stdout] = 1}}", "value",
                      "braid: cannot transfer userdata (FILE*) at value.x (in a key): open it inside the task, or pass a braid handle");
  expect_encode_error("return {[{}] = io.stdout}", "value",
                      "braid: cannot transfer userdata (FILE*) at value[<table>]: open it inside the task, or pass a braid handle");
  expect_encode_error("return {['q\"\\n'] = io.stdout}", "value",
                      "braid: cannot transfer userdata (FILE*) at value[\"q\\\"\\n\"]: open it inside the task, or pass a braid handle");
}

TEST(test_codec_deep_nesting) {
  /* Nesting is bounded by the Lua stack, not the C stack: a linked list of
   * 100000 nodes sent from its head, and a function nested in it. */
  xfer_check(
    "local list for i = 1, 100000 do list = {value = i, next = list} end\n"
    "local t = list for i = 1, 50000 do t = t.next end\n"
    "local x = 5 t.f = function() return x + t.value end\n"
    "return list",
    "local r = ... local n, sum = 0, 0\n"
    "while r do n = n + 1 sum = sum + r.value if r.f then assert(r.f() == 5 + r.value) end r = r.next end\n"
    "assert(n == 100000 and sum == 100000 * 100001 // 2)\n");
  /* A failure deep down: the path elides its middle. */
  lua_State *A = newstate();
  char err[512];
  run(A, "local t = {} local c = t for i = 1, 2000 do c.n = {} c = c.n end c.n = io.stdout return t", 0);
  braid_msg_t *m = encode_top(A, 1, "value", err, sizeof err);
  ASSERT_NULL(m);
  static const char want[] =
    "braid: cannot transfer userdata (FILE*) at value.n.n.n.n.n.n.n.n.n.n.n.n[...].n.n.n.n.n.n.n.n.n.n.n.n"
    ": open it inside the task, or pass a braid handle";
  ASSERT_EQ_STR(err, want);
  lua_close(A);
}

TEST(test_codec_error_releases_nothing_held) {
  /* A failing encode takes no handle reference and sends nothing. */
  lua_State *A = newstate();
  char err[256];
  run(A, "h = newobj() return {h, h, {h}, io.stdout}", 0);
  braid_msg_t *m = encode_top(A, 1, "value", err, sizeof err);
  ASSERT_NULL(m);
  ASSERT_EQ_STR(err, "braid: cannot transfer userdata (FILE*) at value[4]: open it inside the task, or pass a braid handle");
  run(A, "assert(objrc(h) == 1)", 0);
  lua_close(A);
}

/* ------------------------------------------------------------------------ */
/* Corrupt messages                                                          */

static braid_msg_t *msg_copy(braid_msg_t *m, size_t len) {
  braid_msg_t *c = braid_msg_alloc(len, m->m_nhandles);
  ASSERT_NOT_NULL(c);
  memcpy(c->m_data, m->m_data, len);
  c->m_tag = m->m_tag;
  for (uint32_t i = 0; i < m->m_nhandles; i++) {
    braid_obj_retain(m->m_handles[i]);
    braid_msg_set_handle(c, i, m->m_handles[i]);
  }
  return c;
}

static const char *const corrupt_senders[] = {
  "local h = newobj() local s = {1}\n"
  "local t = {s, s, h, h, name = 'x\\0y', f = function(a) return a + #s end, pr = print, str = string}\n"
  "t.self = t\n"
  "return 42, t, 1.5, 'tail'",
  /* Deeper than the decoder's local frames, with functions and upvalues. */
  "local root = {} local c = root\n"
  "for i = 1, 40 do local up = i c.n = {v = i, f = function() return up, c end} c = c.n end\n"
  "return root, root",
};

static void corrupt_truncated(const char *sender, int nvals) {
  lua_State *A = newstate(), *B = newstate();
  char err[256];
  run(A, sender, 0);
  braid_msg_t *m = encode_top(A, nvals, "value", err, sizeof err);
  ASSERT_NOT_NULL(m);
  ASSERT_EQ_INT(decode_push(B, m), nvals);          /* the whole one is fine */
  lua_settop(B, 0);
  for (size_t len = 0; len < m->m_len; len++) {
    braid_msg_t *c = msg_copy(m, len);
    int r = decode_push(B, c);
    if (r != -1) test__fail(__FILE__, __LINE__, "truncated at %zu of %zu: decoded", len, m->m_len);
    ASSERT_EQ_STR(lua_tostring(B, -1), "braid: corrupt message");
    lua_settop(B, 0);
    braid_msg_release(c);
  }
  /* Trailing bytes, a foreign tag, missing handles. */
  braid_msg_t *c = braid_msg_alloc(m->m_len + 1, m->m_nhandles);
  memcpy(c->m_data, m->m_data, m->m_len);
  c->m_data[m->m_len] = 1;
  c->m_tag = m->m_tag;
  for (uint32_t i = 0; i < m->m_nhandles; i++) {
    braid_obj_retain(m->m_handles[i]);
    braid_msg_set_handle(c, i, m->m_handles[i]);
  }
  ASSERT_EQ_INT(decode_push(B, c), -1);
  lua_settop(B, 0);
  braid_msg_release(c);
  c = braid_msg_new(m->m_data, m->m_len, NULL, 0);   /* tag 0, no handles */
  ASSERT_EQ_INT(decode_push(B, c), -1);
  ASSERT_EQ_STR(lua_tostring(B, -1), "braid: corrupt message");
  lua_settop(B, 0);
  if (m->m_nhandles > 0) {
    c->m_tag = m->m_tag;                             /* right tag, no handles */
    ASSERT_EQ_INT(decode_push(B, c), -1);
    ASSERT_EQ_STR(lua_tostring(B, -1), "braid: corrupt message");
    lua_settop(B, 0);
  }
  braid_msg_release(c);
  braid_msg_release(m);
  lua_close(A);
  lua_close(B);
}

TEST(test_codec_corrupt_truncated) {
  corrupt_truncated(corrupt_senders[0], 4);
  corrupt_truncated(corrupt_senders[1], 2);
}

TEST(test_codec_corrupt_random_bytes) {
  /* Flipped bytes in messages without functions (a function's bytecode is
   * trusted: Lua has no verifier) must decode or raise, never crash. */
  lua_State *A = newstate(), *B = newstate();
  char err[256];
  run(A,
      "local h = newobj() local s = {1, 2.5, 'x'}\n"
      "local t = {s, s, h, h, name = 'abc', [3.5] = true, sub = {a = {b = {}}}, pr = print, str = string}\n"
      "t.self = t\n"
      "return 42, t, nil, 'tail'", 0);
  braid_msg_t *m = encode_top(A, 4, "value", err, sizeof err);
  ASSERT_NOT_NULL(m);
  uint64_t x = test__seed | 1;
  int raised = 0, decoded = 0;
  for (int iter = 0; iter < 20000; iter++) {
    braid_msg_t *c = msg_copy(m, m->m_len);
    int flips = 1 + (int)(iter % 3);
    for (int k = 0; k < flips; k++) {
      x ^= x << 13; x ^= x >> 7; x ^= x << 17;
      c->m_data[(x >> 8) % c->m_len] = (unsigned char)(x >> 40);
    }
    int r = decode_push(B, c);
    if (r < 0) raised++; else decoded++;
    lua_settop(B, 0);
    braid_msg_release(c);
  }
  ASSERT_GT_INT(raised, 0);
  braid_msg_release(m);
  lua_close(A);
  lua_close(B);
}

/* ------------------------------------------------------------------------ */
/* Scratch reuse, nested encodes from finalizers, _roundtrip                 */

TEST(test_codec_scratch_reuse) {
  lua_State *A = newstate();
  run(A,
      "local big = {} for i = 1, 100000 do big[i] = {i} end\n"
      "for round = 1, 3 do\n"
      "  local c = roundtrip(big) assert(#c == 100000 and c[100000][1] == 100000)\n"
      "  local s = roundtrip({1, {2}}) assert(s[2][1] == 2)\n"
      "  assert(roundtrip(5) == 5)\n"
      "end\n", 0);
  lua_close(A);
}

/* The encoder reads tables in place (lcodec.c) only where that gives byte
 * for byte what lua_next's walk gives: random tables of every kind of key
 * and value, built by inserts and deletes (so holes, dead keys, integer
 * keys in the hash part, resized parts), encoded both ways. */
TEST(test_codec_tables_in_place_match_lua_next) {
  lua_State *A = newstate();
  ASSERT_EQ_INT(braid__codec_inplace(A, 1), 1);      /* Lua 5.4: the layout probe passes */
  run(A,
      "local seed = 12345\n"
      "local function rnd(n) seed = (seed * 1103515245 + 12345) % 2147483648 return seed % n + 1 end\n"
      "local keys = {1, 2, 3, 4, 5, 8, 100, -1, 0, 2.5, -0.5, 1e300, math.mininteger, math.maxinteger,\n"
      "  'a', 'name', 'San Francisco', string.rep('k', 45), true, false, 2^53}\n"
      "function gen(depth)\n"
      "  local t = {}\n"
      "  for _ = 1, rnd(30) - 1 do\n"
      "    local r = rnd(10)\n"
      "    local k = r <= 4 and rnd(12) or keys[rnd(#keys)]\n"
      "    local v\n"
      "    local c = rnd(9)\n"
      "    if c == 1 then v = nil\n"
      "    elseif c == 2 then v = rnd(1000) - 500\n"
      "    elseif c == 3 then v = rnd(1000) / 7\n"
      "    elseif c == 4 then v = string.rep('s', rnd(50))\n"
      "    elseif c == 5 then v = rnd(2) == 1\n"
      "    elseif c == 6 and depth < 3 then v = gen(depth + 1)\n"
      "    elseif c == 7 then v = math.sin\n"
      "    elseif c == 8 and depth < 3 then local u = gen(depth + 1) v = function() return u end\n"
      "    else v = keys[rnd(#keys)] end\n"
      "    t[k] = v\n"
      "  end\n"
      "  if rnd(4) == 1 then local _ = #t end\n"
      "  if rnd(5) == 1 and depth < 3 then t[gen(depth + 1)] = 1 end   -- a table as a key\n"
      "  return t\n"
      "end\n", 0);
  char err[512];
  for (int i = 0; i < 400; i++) {
    lua_getglobal(A, "gen");
    lua_pushinteger(A, 0);
    lua_call(A, 1, 1);
    lua_pushvalue(A, -1);
    braid__codec_inplace(A, 1);
    braid_msg_t *a = encode_top(A, 1, "value", err, sizeof err);
    ASSERT_NOT_NULL(a);
    braid__codec_inplace(A, 0);
    braid_msg_t *b = encode_top(A, 1, "value", err, sizeof err);
    ASSERT_NOT_NULL(b);
    ASSERT_EQ_INT((long long)a->m_len, (long long)b->m_len);
    ASSERT_EQ_INT(memcmp(a->m_data, b->m_data, a->m_len), 0);
    braid_msg_release(a);
    braid_msg_release(b);
  }
  braid__codec_inplace(A, 1);
  lua_close(A);
}

/* Runs the global change() (tests' hook in the encoder's general path). */
static void call_change(lua_State *L) {
  if (lua_getglobal(L, "change") != LUA_TFUNCTION) {
    lua_pop(L, 1);
    return;
  }
  lua_call(L, 0, 0);
}

/* A table changed while it is being sent, where Lua code may run inside
 * the encode (a finalizer, in an allocation of the general path; here a
 * test hook in the same place runs change()): resized, or given a key of
 * another kind in a free node (no resize).  The encode raises, naming the
 * table; it never reads freed parts or takes a table for a string.  The
 * table's first value ([1], in the array part) takes the general path, so
 * the walk has every node still ahead when the change happens; its 60
 * string keys leave 4 of 64 nodes free.  Unchanged, the copy is exact. */
TEST(test_codec_table_resized_during_encode) {
  lua_State *A = newstate();
  if (!braid__codec_inplace(A, 1)) {
    lua_close(A);
    return;
  }
  run(A,
      "function victim()\n"
      "  local t = {{1}}\n"
      "  for i = 1, 60 do t['k' .. i] = i end\n"
      "  return t\n"
      "end\n"
      "changes = {\n"
      "  function(t) for i = 1, 300 do t['n' .. i] = i end end,   -- resized\n"
      "  function(t) t[{}] = {} end,                              -- a table key\n"
      "  function(t) t[print] = 1 end,                            -- a C function key\n"
      "  function(t) t.k1 = 'changed' end,                        -- a value: allowed\n"
      "}\n", 0);
  braid__codec_inplace_hook(call_change);
  static const char *const cases[] = {
    "local t = victim() local c = changes[1] change = function() change = nil c(t) end return t",
    "local t = victim() local c = changes[2] change = function() change = nil c(t) end return t",
    "local t = victim() local c = changes[3] change = function() change = nil c(t) end return t",
  };
  char err[512];
  for (int i = 0; i < 3; i++) {
    ASSERT_EQ_INT(run(A, cases[i], 0), 1);
    braid_msg_t *m = encode_top(A, 1, "value", err, sizeof err);
    ASSERT_NULL(m);
    ASSERT_EQ_STR(err, "braid: cannot transfer table at value (changed while it was being sent)");
  }
  /* A value changed in place: no new key, no resize, so the walk goes on
   * (reading the new value where it has not passed it yet). */
  ASSERT_EQ_INT(run(A, "local t = victim() local c = changes[4] "
                       "change = function() change = nil c(t) end return t", 0), 1);
  braid_msg_t *m = encode_top(A, 1, "value", err, sizeof err);
  ASSERT_NOT_NULL(m);
  ASSERT_EQ_INT(decode_push(A, m), 1);
  run(A, "local t = ... assert(t[1][1] == 1 and t.k1 == 'changed' and t.k60 == 60)", 1);
  braid_msg_release(m);
  braid__codec_inplace_hook(NULL);
  lua_close(A);
}

/* A bump allocator that starts over for every state: states opened one
 * after another get the same addresses, the registry's included. */
static _Alignas(16) unsigned char bump_buf[16 << 20];
static size_t bump_used;

static void *bump_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud;
  if (nsize == 0) return NULL;                        /* frees are dropped */
  if (ptr != NULL && nsize <= osize) return ptr;
  size_t n = (nsize + 15) & ~(size_t)15;
  if (bump_used + n > sizeof bump_buf) return NULL;
  void *p = bump_buf + bump_used;
  bump_used += n;
  if (ptr != NULL) memcpy(p, ptr, osize);
  return p;
}

/* States opened and closed one after another with the registry at the
 * same address: each must get a codec state of its own, not the closed
 * one this thread remembered (getcstate), with its short-string and
 * function caches empty (a stale one: wrong strings, or a crash). */
TEST(test_codec_state_reopened) {
  const void *first = NULL;
  int same = 0;
  for (int i = 0; i < 20; i++) {
    bump_used = 0;
    lua_State *A = setup_state(lua_newstate(bump_alloc, NULL));
    const void *reg = lua_topointer(A, LUA_REGISTRYINDEX);
    if (i == 0) first = reg;
    same += reg == first;
    lua_pushinteger(A, i);
    lua_setglobal(A, "round");
    run(A,
        "local up = round\n"
        "local function f(x) return x + up end\n"
        "local name = 'Town ' .. round\n"
        "for k = 1, 3 do\n"
        "  local t = roundtrip({[name] = round, id = round, tags = {'a' .. round, 'b'}})\n"
        "  assert(t[name] == round and t.id == round and t.tags[1] == 'a' .. round)\n"
        "  local g = roundtrip(f)\n"
        "  assert(g(k) == k + round and g ~= f)\n"
        "end\n", 0);
    lua_close(A);
  }
  ASSERT_EQ_INT(same, 20);                            /* the case this checks */
}

TEST(test_codec_finalizers_encode_during_encode) {
  /* Finalizers that encode run while another encode is rebuilding the
   * module map (it allocates): each must get a correct message. */
  lua_State *A = newstate();
  run(A,
      "collectgarbage('incremental') collectgarbage('setpause', 0) collectgarbage('setstepmul', 1000)\n"
      "local fin = 0\n"
      "local mt = {__gc = function(o) local c = roundtrip({o.v, {o.v}, string})\n"
      "  assert(c[1] == o.v and c[2][1] == o.v and c[3] == string) fin = fin + 1 end}\n"
      "for round = 1, 200 do\n"
      "  for i = 1, 50 do setmetatable({v = i}, mt) end\n"
      "  package.loaded['m' .. round] = {f = math.floor, g = {}}  -- stale map\n"
      "  local v = roundtrip({math.floor, {1, 2, 3}, 'x', string.rep})\n"
      "  assert(v[1] == math.floor and v[2][3] == 3 and v[4] == string.rep)\n"
      "end\n"
      "collectgarbage() collectgarbage()\n"
      "assert(fin == 200 * 50, fin)\n", 0);
  lua_close(A);
}

TEST(test_codec_nested_encode_from_lua_code) {
  /* An __index on a foreign userdata's metatable must not run in the
   * middle of an encode (braid__tohandle recognises handles by their magic
   * word, and the transfer error reads __name raw); if Lua code ever runs
   * there, a nested encode must use its own scratch and leave the outer
   * one intact. */
  lua_State *A = newstate();
  run(A,
      "local nested = 0\n"
      "setmetatable(getmetatable(io.stdout), {__index = function(_, k)\n"
      "  if k == '__braid' then\n"
      "    local c = roundtrip({1, {2}, string, ('n'):rep(300)})\n"
      "    assert(c[1] == 1 and c[2][1] == 2 and c[3] == string and #c[4] == 300)\n"
      "    nested = nested + 1\n"
      "  end end})\n"
      "local ok, err = pcall(roundtrip, {('x'):rep(500), {3, 4}, io.stdout})\n"
      "-- nested stays 0: nothing reads __braid through __index any more.\n"
      "assert(nested <= 1 and err == 'braid: cannot transfer userdata (FILE*) at value[3]: open it inside the task, or pass a braid handle', err)\n"
      "local c = roundtrip({('y'):rep(500), {5}}) assert(c[2][1] == 5)\n"
      "setmetatable(getmetatable(io.stdout), nil)\n", 0);
  lua_close(A);
}

TEST(test_codec_roundtrip_errors_raise) {
  lua_State *A = newstate();
  run(A,
      "local ok, err = pcall(roundtrip, 1, {conn = io.stdout})\n"
      "assert(not ok and err == 'braid: cannot transfer userdata (FILE*) at value[2].conn: open it inside the task, or pass a braid handle', err)\n"
      "ok, err = pcall(roundtrip, {co = coroutine.create(print)})\n"
      "assert(not ok and err == 'braid: cannot transfer thread at value.co: a coroutine stays in the task that made it; send a channel instead', err)\n"
      "assert(select('#', roundtrip()) == 0)\n"
      "local a, b = roundtrip(nil, 2) assert(a == nil and b == 2)\n", 0);
  lua_close(A);
}

TEST(test_codec_decode1) {
  lua_State *A = newstate(), *B = newstate();
  char err[256];
  lua_pushinteger(A, 1);
  lua_pushinteger(A, 2);
  braid_msg_t *m = encode_top(A, 2, "value", err, sizeof err);
  ASSERT_EQ_INT(braid__decode1(B, m), 1);
  ASSERT_EQ_INT(lua_gettop(B), 1);
  ASSERT_EQ_INT(lua_tointeger(B, 1), 1);
  lua_settop(B, 0);
  braid_msg_release(m);
  m = encode_top(A, 0, "value", err, sizeof err);
  ASSERT_EQ_INT(braid__decode1(B, m), 1);
  ASSERT(lua_isnil(B, 1) && lua_gettop(B) == 1);
  braid_msg_release(m);
  lua_close(A);
  lua_close(B);
}

TEST(test_codec_c_built_messages) {
  /* wire.c builds a number message without a lua_State: magic
   * 0x62726400, count 1, T_FLT (5), 8 bytes.  Keep that decodable. */
  lua_State *B = newstate();
  double d = 12.25;
  braid_msg_t *m = braid_msg_alloc(2 + sizeof d, 0);
  m->m_tag = 0x62726400u;
  m->m_data[0] = 1;
  m->m_data[1] = 5;
  memcpy(m->m_data + 2, &d, sizeof d);
  ASSERT_EQ_INT(decode_push(B, m), 1);
  ASSERT(lua_isnumber(B, -1) && !lua_isinteger(B, -1) && lua_tonumber(B, -1) == 12.25);
  braid_msg_release(m);
  lua_close(B);
}

TEST_LIST {
  RUN(test_codec_scalars);
  RUN(test_codec_nil_in_multiple_values);
  RUN(test_codec_binary_strings);
  RUN(test_codec_msg_first_string);
  RUN(test_codec_tables_nested);
  RUN(test_codec_tables_arrays_and_holes);
  RUN(test_codec_tables_shared_and_cycles);
  RUN(test_codec_tables_many_shared);
  RUN(test_codec_metatables_not_copied);
  RUN(test_codec_copies_are_distinct);
  RUN(test_codec_function_upvalues);
  RUN(test_codec_function_env_rebound);
  RUN(test_codec_function_recursive_and_shared_upvalues);
  RUN(test_codec_function_with_modules_and_nested);
  RUN(test_codec_function_keeps_debug_info);
  RUN(test_codec_function_identity_and_varargs);
  RUN(test_codec_modules_by_name);
  RUN(test_codec_module_required_in_receiver);
  RUN(test_codec_module_field_missing_in_receiver);
  RUN(test_codec_module_name_choice);
  RUN(test_codec_handles);
  RUN(test_codec_handle_as_upvalue_and_key);
  RUN(test_codec_error_paths);
  RUN(test_codec_deep_nesting);
  RUN(test_codec_error_releases_nothing_held);
  RUN(test_codec_corrupt_truncated);
  RUN(test_codec_corrupt_random_bytes);
  RUN(test_codec_scratch_reuse);
  RUN(test_codec_state_reopened);
  RUN(test_codec_tables_in_place_match_lua_next);
  RUN(test_codec_table_resized_during_encode);
  RUN(test_codec_finalizers_encode_during_encode);
  RUN(test_codec_nested_encode_from_lua_code);
  RUN(test_codec_roundtrip_errors_raise);
  RUN(test_codec_decode1);
  RUN(test_codec_c_built_messages);
}
