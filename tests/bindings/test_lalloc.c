/*
 * test_lalloc.c -- the allocator of braid's own Lua states
 * (bindings/lalloc.c): blocks of every small size class and past it keep
 * their bytes through growth, shrinking and reuse; memory freed by the GC is
 * reused (the state's count returns near where it was); a state closes with
 * every chunk freed (valgrind and LeakSanitizer runs of the test binary
 * would report one lost); the state behaves as luaL_newstate's (warnings
 * off until "@on", a panic function).
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "lruntime.h"
#include "test.h"

static lua_State *newstate(void) {
  lua_State *L = braid__new_state();
  ASSERT_NOT_NULL(L);
  luaL_openlibs(L);
  return L;
}

static void run(lua_State *L, const char *code) {
  if (luaL_dostring(L, code) != LUA_OK) {
    fprintf(stderr, "lua: %s\n", lua_tostring(L, -1));
    ASSERT(0);
  }
}

static int kib(lua_State *L) { return lua_gc(L, LUA_GCCOUNT, 0); }

/* Strings of every length up to past the largest class: each made of a
 * pattern of its length, kept, checked after the others were made and
 * after half of them were freed and remade at other lengths. */
TEST(test_lalloc_strings_every_size) {
  lua_State *L = newstate();
  run(L,
      "local function mk(n, salt) local t = {} for i = 1, n do t[i] = string.char((i * 7 + n + salt) % 256) end return table.concat(t) end\n"
      "local s = {}\n"
      "for n = 0, 2100 do s[n] = mk(n, 0) end\n"
      "for n = 0, 2100 do assert(s[n] == mk(n, 0) and #s[n] == n, n) end\n"
      "for n = 0, 2100, 2 do s[n] = nil end\n"
      "collectgarbage('collect')\n"
      "for n = 0, 2100, 2 do s[n] = mk(2100 - n, 3) end\n"
      "for n = 0, 2100 do if n % 2 == 0 then assert(s[n] == mk(2100 - n, 3), n) else assert(s[n] == mk(n, 0), n) end end\n");
  braid__close_state(L);
}

/* Tables grown across every class boundary into large blocks (array and
 * hash parts), then emptied and rehashed smaller: the values survive each
 * resize, in both directions. */
TEST(test_lalloc_tables_grow_and_shrink) {
  lua_State *L = newstate();
  run(L,
      "local ts = {}\n"
      "for k = 1, 40 do local t = {} for i = 1, k * 37 do t[i] = i * k; t['k' .. i] = -i end ts[k] = t end\n"
      "for k = 1, 40 do local t = ts[k] for i = 1, k * 37 do assert(t[i] == i * k and t['k' .. i] == -i) end end\n"
      "for k = 1, 40 do local t = ts[k] for i = 1, k * 37 do if i > 3 then t[i] = nil; t['k' .. i] = nil end end\n"
      "  for j = 1, 40 do t['n' .. j] = j end end\n"   /* new keys: a rehash to a smaller part */
      "collectgarbage('collect')\n"
      "for k = 1, 40 do local t = ts[k] for i = 1, 3 do assert(t[i] == i * k and t['k' .. i] == -i) end\n"
      "  assert(t[4] == nil) for j = 1, 40 do assert(t['n' .. j] == j) end end\n");
  braid__close_state(L);
}

/* Garbage made and collected in a loop: the blocks are reused, so the
 * state's memory does not grow with the number of rounds. */
TEST(test_lalloc_reuse_bounded) {
  lua_State *L = newstate();
  run(L,
      "function churn(n) for i = 1, n do local t = {id = i, name = 'x' .. i, tags = {'a', 'b'}, s = string.rep('y', i % 900)} end end\n"
      "churn(20000) collectgarbage('collect')\n");
  int base = kib(L);
  for (int round = 0; round < 5; round++) run(L, "churn(20000) collectgarbage('collect')");
  int after = kib(L);
  ASSERT_LE_INT(after, base + 64);
  /* Coroutines (stacks of several sizes) made and dropped. */
  run(L,
      "for i = 1, 2000 do local co = coroutine.wrap(function(n) local a = {} for j = 1, n do a[j] = j end coroutine.yield(#a) end)\n"
      "  assert(co(i % 300) == i % 300) end collectgarbage('collect')\n");
  braid__close_state(L);
}

/* As luaL_newstate: warnings are off until "@on", then printed. */
TEST(test_lalloc_state_as_luaL_newstate) {
  lua_State *L = newstate();
  run(L, "warn('not printed') warn('@on') warn('@off') assert(pcall(error, 'x') == false)");
  lua_pushinteger(L, 42);
  ASSERT_EQ_INT(lua_tointeger(L, -1), 42);
  braid__close_state(L);
}

TEST_LIST {
  RUN(test_lalloc_strings_every_size);
  RUN(test_lalloc_tables_grow_and_shrink);
  RUN(test_lalloc_reuse_bounded);
  RUN(test_lalloc_state_as_luaL_newstate);
}
