/*
 * fuzz_http.c -- libFuzzer target for the server's request parser path
 * (braid._http.parser in bindings/lhttp.c, the object lua/braid/http.lua
 * feeds with the bytes of each connection).
 *
 * The input's first byte seeds the split points; the rest is the request
 * stream.  The checker (Lua, below) feeds the stream whole and in random
 * pieces and fails when: the split changes what was parsed (messages,
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

void braid__open_http(lua_State *L);

static const char checker[] =
  "local H = ...\n"
  "local MAXH, MAXB = 512, 256\n"
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
  "return function(data, seed)\n"
  "  local a, sa = run(data, 0)\n"
  "  local b, sb = run(data, seed + 1)\n"
  "  -- Which error wins (400 vs a 413/431 limit) may depend on where a\n"
  "  -- limit is crossed relative to the bad byte: both must reject.\n"
  "  local same = sa == sb or (type(sa) == 'number' and type(sb) == 'number')\n"
  "  if a ~= b or not same then\n"
  "    error(('split changed the result: %q %s vs %q %s'):format(a, tostring(sa), b, tostring(sb)))\n"
  "  end\n"
  "end\n";

static lua_State *L;

static void setup(void) {
  L = luaL_newstate();
  luaL_openlibs(L);
  lua_newtable(L);
  braid__open_http(L);                  /* sets t._http */
  lua_getfield(L, -1, "_http");
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
