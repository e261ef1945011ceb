/*
 * fuzz_ws.c -- libFuzzer target for the WebSocket framer (braid._http.ws,
 * wslay in bindings/lhttp.c) as the server side of braid.http uses it.
 *
 * The input's first byte seeds the split points; the rest is what a client
 * sends after the handshake.  The checker feeds it to a server framer in
 * pieces, drains its output after every piece (pongs, close replies) and
 * fails when a message is not text/binary/ping/pong/close, a close code is
 * out of range, a server frame is masked, or a client framer rejects the
 * output before the server saw a close (wslay echoes a close payload as it
 * came, so the echo of a bad one may be refused).
 *
 * Run:   scripts/fuzz.sh fuzz_ws . build/fuzz -max_total_time=600
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

void braid__open_http(lua_State *L);

/* lhttp.c's answers write to braid.net connections; there are none here. */
int braid__conn_send(lua_State *L, int idx, const char *a, size_t an, const char *b, size_t bn);
int braid__conn_send(lua_State *L, int idx, const char *a, size_t an, const char *b, size_t bn) {
  (void)L, (void)idx, (void)a, (void)an, (void)b, (void)bn;
  return -1;
}

static const char checker[] =
  "local H = ...\n"
  "local KINDS = { text = true, binary = true, ping = true, pong = true, close = true }\n"
  "return function(data, seed)\n"
  "  local s, c = H.ws('server', 4096), H.ws('client')\n"
  "  local i, r, closed = 1, seed + 1, false\n"
  "  while i <= #data do\n"
  "    r = (r * 1103515245 + 12345) % 2147483648\n"
  "    local n = 1 + r % 23\n"
  "    local msgs = s:feed(data:sub(i, i + n - 1))\n"
  "    for _, m in ipairs(msgs) do\n"
  "      assert(KINDS[m.kind], 'bad kind')\n"
  "      assert(type(m.data) == 'string' and #m.data <= 4096, 'bad data')\n"
  "      if m.kind == 'close' then assert(m.code >= 0 and m.code <= 65535); closed = true end\n"
  "    end\n"
  "    local out = s:output()\n"
  "    if #out > 0 then\n"
  "      assert(out:byte(2) & 0x80 == 0, 'server frame masked')\n"
  "      local _, err = c:feed(out)\n"
  "      -- wslay echoes a peer's close payload as it came (a bad reason\n"
  "      -- included, when it arrived in pieces): only that may be refused.\n"
  "      assert(err == nil or closed, 'client rejected the server output')\n"
  "    end\n"
  "    i = i + n\n"
  "  end\n"
  "end\n";

static lua_State *L;

static void setup(void) {
  L = luaL_newstate();
  luaL_openlibs(L);
  lua_newtable(L);
  braid__open_http(L);
  lua_getfield(L, -1, "_http");
  if (luaL_loadstring(L, checker) != LUA_OK) {
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
    abort();
  }
  lua_insert(L, -2);
  lua_call(L, 1, 1);
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
    fprintf(stderr, "fuzz_ws: %s\n", lua_tostring(L, -1));
    abort();
  }
  lua_gc(L, LUA_GCSTEP, 0);
  return 0;
}
