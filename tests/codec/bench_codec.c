/*
 * bench_codec.c -- what one message costs the codec: encode in state A,
 * decode in state B, release (single thread, so no channel cost is in it).
 *
 *   cc -std=c11 -D_GNU_SOURCE -O2 -Icore -Ibindings -Iinclude \
 *      $(pkg-config --cflags lua5.4) tests/codec/bench_codec.c \
 *      bindings/lcodec.c bindings/wire.c core/[*].c $(pkg-config --libs lua5.4) -lpthread -lm \
 *      -o bench_codec && ./bench_codec
 *
 * Not a ctest: it prints numbers (thread CPU time, best of 5 runs).
 * Handles are stubbed out (none is sent).  An optional argument scales the
 * iteration counts.
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lbraid.h"

void braid__pushenv(lua_State *L) { lua_pushglobaltable(L); }
braid_obj_t *braid__tohandle(lua_State *L, int idx) { return NULL; }
void braid__pushhandle(lua_State *L, braid_obj_t *o) { abort(); }

/* CPU time of this thread: other load on the machine does not count. */
static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static lua_State *A, *B;

static void die(lua_State *L) {
  fprintf(stderr, "bench_codec: %s\n", lua_tostring(L, -1));
  exit(1);
}

/* Leaves the value of expr at the top of A. */
static void value(const char *expr) {
  char chunk[512];
  snprintf(chunk, sizeof chunk, "return %s", expr);
  if (luaL_dostring(A, chunk) != LUA_OK) die(A);
}

typedef enum { ENC_DEC, ENC_ONLY, DEC_ONLY } mode_t_;

/* ns per message for the value at the top of A (one run). */
static double bench1(long iters, mode_t_ mode) {
  int top = lua_gettop(A);
  braid_msg_t *m = braid__encode(A, top, 1, "value");
  double t0 = now_s();
  for (long i = 0; i < iters; i++) {
    if (mode != DEC_ONLY) {
      braid_msg_t *x = braid__encode(A, top, 1, "value");
      if (mode == ENC_ONLY) { braid_msg_release(x); continue; }
      braid__decode(B, x);
      lua_settop(B, 0);
      braid_msg_release(x);
    } else {
      braid__decode(B, m);
      lua_settop(B, 0);
    }
  }
  double ns = (now_s() - t0) * 1e9 / (double)iters;
  braid_msg_release(m);
  return ns;
}

/* The best of 5 runs. */
static double bench(long iters, mode_t_ mode) {
  double best = 1e30;
  for (int r = 0; r < 5; r++) {
    double ns = bench1(iters / 5, mode);
    if (ns < best) best = ns;
  }
  return best;
}

/* lua_load of a function's dump, the part of decoding a function that a
 * prototype cache would save. */
static double bench_load(long iters) {
  lua_State *L = A;
  int top = lua_gettop(L);
  if (luaL_loadstring(L, "return string.dump((...), false)") != LUA_OK) die(L);
  lua_pushvalue(L, top);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) die(L);
  size_t len;
  const char *dump = lua_tolstring(L, -1, &len);
  double t0 = now_s();
  for (long i = 0; i < iters; i++) {
    if (luaL_loadbufferx(B, dump, len, "=f", "b") != LUA_OK) die(B);
    lua_settop(B, 0);
  }
  double ns = (now_s() - t0) * 1e9 / (double)iters;
  printf("  (dump of that function: %zu bytes)\n", len);
  lua_settop(L, top);
  return ns;
}

int main(int argc, char **argv) {
  long scale = argc > 1 ? atol(argv[1]) : 1;
  A = luaL_newstate();
  B = luaL_newstate();
  luaL_openlibs(A);
  luaL_openlibs(B);
  struct { const char *name, *expr; long iters; } cases[] = {
    { "small integer", "42", 5000000 },
    { "short string", "'San Francisco'", 5000000 },
    { "record table", "{id = 7, name = 'San Francisco', temp = 288.9, tags = {'a', 'b'}}", 2000000 },
    { "array of 100 ints", "(function() local t = {} for i = 1, 100 do t[i] = i end return t end)()", 200000 },
    { "function, 2 upvalues", "(function() local n, fmt = 1, string.format return function(x) return fmt('%d', x + n) end end)()", 300000 },
  };
  printf("codec: ns per message (encode in A, decode in B, release)\n");
  printf("%-22s %10s %10s %10s\n", "value", "enc+dec", "enc", "dec");
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    value(cases[i].expr);
    long it = cases[i].iters * scale;
    bench(it / 10, ENC_DEC);                          /* warm up */
    double ed = bench(it, ENC_DEC), e = bench(it, ENC_ONLY), d = bench(it, DEC_ONLY);
    printf("%-22s %10.1f %10.1f %10.1f   (%.2f M msg/s)\n", cases[i].name, ed, e, d, 1e3 / ed);
    lua_settop(A, 0);
  }
  value("(function() local n, fmt = 1, string.format return function(x) return fmt('%d', x + n) end end)()");
  double l = bench_load(300000 * scale);
  printf("lua_load of the same function's dump alone: %.1f ns\n", l);
  lua_close(A);
  lua_close(B);
  return 0;
}
