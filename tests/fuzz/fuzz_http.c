/*
 * fuzz_http.c -- libFuzzer target for the server's request parser path
 * (braid._http.parser in bindings/lhttp.c): braid__http_take, which the
 * server's conn:_http_next (bindings/lnet.c) runs on each connection's
 * read-ahead buffer, one message at a time, and p:feed, which the client
 * and other transports use.
 *
 * The input's first byte seeds the split points; the rest is the request
 * stream.  The checker (Lua, below) feeds the stream whole and in random
 * pieces, through p:feed and through take (bytes appended to a buffer as
 * they arrive, as from a socket, and taken from its front), and fails
 * when: the path or the split changes what was parsed (messages,
 * accepted or rejected; which of 400/413/431 may differ), a body exceeds max_body, an error status is not one of
 * 400/413/431, a message lacks its method/path/headers, or a failed parser
 * accepts more.  A failure raises; the target then aborts.
 *
 * Build: cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DBRAID_FUZZ=ON
 *        cmake --build build-fuzz --target fuzz_http
 * Run:   build-fuzz/fuzz_http -max_total_time=600 -max_len=4096 tests/fuzz/corpus_http
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#include "lbraid.h"

/* lhttp.c's answers write to braid.net connections; there are none here. */
int braid__conn_send(lua_State *L, int idx, const char *a, size_t an, const char *b, size_t bn) {
  (void)L, (void)idx, (void)a, (void)an, (void)b, (void)bn;
  return -1;
}

/* take(p, buf) -> msgs, status, rest: the server's read loop over one
 * buffer (lnet.c's step_http without the socket): every message
 * braid__http_take completes from the front of buf, the status once the
 * input is invalid, and the bytes it left (after an upgrade). */
static int l_take(lua_State *L) {
  size_t n, off = 0;
  braid__http_check(L, 1, "take");
  const char *s = luaL_checklstring(L, 2, &n);
  lua_settop(L, 2);
  lua_newtable(L);
  int nm = 0;
  for (;;) {
    size_t used = 0;
    int k = braid__http_take(L, 1, s + off, n - off, &used);
    if (used > n - off) luaL_error(L, "take used %d of %d bytes", (int)used, (int)(n - off));
    off += used;
    if (k == BRAID_HTTP_MSG) {           /* the message, keep, upgrade */
      if (!lua_isboolean(L, -1) || !lua_isboolean(L, -2)) luaL_error(L, "take: no flags");
      lua_pop(L, 2);
      lua_rawseti(L, 3, ++nm);
      continue;
    }
    if (k == BRAID_HTTP_BAD) {
      lua_pop(L, 1);                     /* the reason */
      lua_remove(L, -2);                 /* the nil */
      lua_pushnil(L);
      return 3;
    }
    if (k != BRAID_HTTP_DONE && off != n) luaL_error(L, "take left bytes without a message");
    lua_pushnil(L);
    lua_pushlstring(L, s + off, n - off);
    return 3;
  }
}

static const char checker[] =
  "local H = ...\n"
  "local MAXH, MAXB = 512, 256\n"
  "-- path: the target up to '?' or '#'; rawquery: from '?' to '#'.\n"
  "local function check_target(m)\n"
  "  local t = m.target:gsub('#.*$', '')\n"
  "  local i = t:find('?', 1, true)\n"
  "  local p, q = t, ''\n"
  "  if i then p, q = t:sub(1, i - 1), t:sub(i + 1) end\n"
  "  assert(m.path == p and m.rawquery == q, 'path/rawquery do not split the target')\n"
  "end\n"
  "local function run(data, seed)\n"
  "  local p = H.parser('request', MAXH, MAXB)\n"
  "  local out, status = {}, nil\n"
  "  local i, r = 1, seed\n"
  "  while i <= #data do\n"
  "    local n\n"
  "    if seed == 0 then n = #data else r = (r * 1103515245 + 12345) % 2147483648; n = 1 + r % 17 end\n"
  "    local msgs, st = p:feed(data:sub(i, i + n - 1))\n"
  "    for _, m in ipairs(msgs) do\n"
  "      assert(type(m.method) == 'string' and type(m.path) == 'string')\n"
  "      assert(type(m.headers) == 'table' and type(m.body) == 'string')\n"
  "      assert(#m.body <= MAXB, 'body over max_body')\n"
  "      check_target(m)\n"
  "      for k in pairs(m.headers) do assert(k == k:lower(), 'header not lower-case') end\n"
  "      out[#out + 1] = m.method .. ' ' .. m.target .. ' ' .. #m.body .. ' ' .. m.body\n"
  "    end\n"
  "    if st then\n"
  "      assert(st == 400 or st == 413 or st == 431, 'bad status')\n"
  "      local again, st2 = p:feed('GET / HTTP/1.1\\r\\n\\r\\n')\n"
  "      assert(#again == 0 and st2 == st, 'failed parser accepted more')\n"
  "      status = st\n"
  "      break\n"
  "    end\n"
  "    if p:state() == 'upgraded' then status = 'upgraded' break end\n"
  "    i = i + n\n"
  "  end\n"
  "  return table.concat(out, '\\n'), status\n"
  "end\n"
  "local function take_run(data, seed)\n"
  "  local p = H.parser('request', MAXH, MAXB)\n"
  "  local out, status, buf = {}, nil, ''\n"
  "  local i, r = 1, seed\n"
  "  while i <= #data do\n"
  "    local n\n"
  "    if seed == 0 then n = #data else r = (r * 1103515245 + 12345) % 2147483648; n = 1 + r % 17 end\n"
  "    local msgs, st, rest = H.take(p, buf .. data:sub(i, i + n - 1))\n"
  "    buf = rest or ''\n"
  "    for _, m in ipairs(msgs) do\n"
  "      assert(type(m.method) == 'string' and type(m.path) == 'string')\n"
  "      assert(type(m.headers) == 'table' and type(m.body) == 'string')\n"
  "      assert(#m.body <= MAXB, 'body over max_body')\n"
  "      check_target(m)\n"
  "      out[#out + 1] = m.method .. ' ' .. m.target .. ' ' .. #m.body .. ' ' .. m.body\n"
  "    end\n"
  "    if st then\n"
  "      assert(st == 400 or st == 413 or st == 431, 'bad status')\n"
  "      local again, st2 = H.take(p, 'GET / HTTP/1.1\\r\\n\\r\\n')\n"
  "      assert(#again == 0 and st2 == st, 'failed parser accepted more')\n"
  "      status = st\n"
  "      break\n"
  "    end\n"
  "    if p:state() == 'upgraded' then status = 'upgraded' break end\n"
  "    i = i + n\n"
  "  end\n"
  "  return table.concat(out, '\\n'), status\n"
  "end\n"
  "return function(data, seed)\n"
  "  local a, sa = run(data, 0)\n"
  "  -- Which error wins (400 vs a 413/431 limit) may depend on where a\n"
  "  -- limit is crossed relative to the bad byte: both must reject.\n"
  "  for _, f in ipairs({ run, take_run }) do\n"
  "    for _, sd in ipairs({ 0, seed + 1 }) do\n"
  "      local b, sb = f(data, sd)\n"
  "      local same = sa == sb or (type(sa) == 'number' and type(sb) == 'number')\n"
  "      if a ~= b or not same then\n"
  "        error(('%s split %d changed the result: %q %s vs %q %s'):format(\n"
  "          f == run and 'feed' or 'take', sd, a, tostring(sa), b, tostring(sb)))\n"
  "      end\n"
  "    end\n"
  "  end\n"
  "end\n";

static lua_State *L;

static void setup(void) {
  L = luaL_newstate();
  luaL_openlibs(L);
  lua_newtable(L);
  braid__open_http(L);                  /* sets t._http */
  lua_getfield(L, -1, "_http");
  lua_pushcfunction(L, l_take);
  lua_setfield(L, -2, "take");
  if (luaL_loadstring(L, checker) != LUA_OK) {
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
    abort();
  }
  lua_insert(L, -2);
  lua_call(L, 1, 1);                    /* -> the check function */
  lua_setfield(L, LUA_REGISTRYINDEX, "fuzz_check");
  lua_settop(L, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!L) setup();
  if (size < 1) return 0;
  lua_getfield(L, LUA_REGISTRYINDEX, "fuzz_check");
  lua_pushlstring(L, (const char *)data + 1, size - 1);
  lua_pushinteger(L, data[0]);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
    fprintf(stderr, "fuzz_http: %s\n", lua_tostring(L, -1));
    abort();
  }
  lua_gc(L, LUA_GCSTEP, 0);
  return 0;
}
