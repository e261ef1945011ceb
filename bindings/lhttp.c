/*
 * lhttp.c -- braid._http: the C half of braid.http.
 *
 * Design notes:
 * - No I/O here.  braid.net (lnet.c) reads and writes the sockets: its
 *   conn:_http_next hands a connection's buffered bytes to
 *   braid__http_take (one request at a time, no string of them), and
 *   C.answer hands a response's head and body to braid__conn_send.  Other
 *   transports feed bytes through p:feed.  That keeps every wait on the
 *   netpoller, and lets one fuzz target (tests/fuzz/fuzz_http.c) drive the
 *   server's exact parser path and compare it with p:feed.
 * - HTTP/1.x parsing is Debian's http-parser (the Node.js parser), used as
 *   an incremental parser: p:feed(bytes) returns every message completed
 *   by those bytes.  Limits: header bytes past max_header -> status 431,
 *   a body past max_body (declared or received) -> 413, any parse error ->
 *   400.  After an error the parser is dead (every later feed repeats it).
 * - WebSocket framing is wslay's event API.  Its recv callback reads from
 *   a C input buffer filled by ws:feed(bytes), its send callback appends to
 *   a C output buffer drained by ws:output().  wslay reassembles fragmented
 *   messages, answers pings with pongs and replies to a close.
 * - Parsers and framers are plain Lua userdata (not braid handles): they
 *   never cross threads; a connection's task owns its parser and its
 *   framer.  A server's request counters (C.stats) are a braid handle,
 *   shared by all its connection tasks.
 */
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <http_parser.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <wslay/wslay.h>

#include "lbraid.h"

#define PARSER_MT "braid.http_parser"
static const char PARSER_MT_KEY = 'p';   /* registry: the parser metatable (its address) */
#define WS_MT "braid.ws_framer"

/* ------------------------------------------------------------------------- */
/* Growable byte buffers                                                     */
/* ------------------------------------------------------------------------- */

typedef struct hbuf {
  char *b_data;
  size_t b_len, b_cap;
} hbuf_t;

static int hbuf_add(hbuf_t *b, const char *p, size_t n) {
  if (b->b_len + n > b->b_cap) {
    size_t cap = b->b_cap ? b->b_cap : 256;
    while (cap < b->b_len + n) cap *= 2;
    char *d = realloc(b->b_data, cap);
    if (!d) return -1;
    b->b_data = d;
    b->b_cap = cap;
  }
  if (n) memcpy(b->b_data + b->b_len, p, n);
  b->b_len += n;
  return 0;
}

static void hbuf_free(hbuf_t *b) {
  free(b->b_data);
  b->b_data = NULL;
  b->b_len = b->b_cap = 0;
}

/* ------------------------------------------------------------------------- */
/* HTTP parser                                                               */
/* ------------------------------------------------------------------------- */

typedef struct hstats hstats_t;       /* a server's counters, below */
static void hs_request(hstats_t *h);
static bool hs_closing(hstats_t *h);
static void hs_drop(hstats_t *h);

typedef struct hparser {
  http_parser p_parser;
  http_parser_settings p_settings;
  lua_State *p_L;             /* the state of the current feed, else NULL */
  int p_msgs;                 /* stack index of the result array during feed */
  int p_keys;                 /* stack index of the key strings during feed */
  int p_msg;                  /* stack index of the message being built, 0 */
  int p_hdrs;                 /* stack index of its headers table (p_msg + 1) */
  int p_nmsgs;
  int p_one;                  /* braid__http_take: stop after one message */
  int p_served;               /* messages completed so far */
  int p_keep, p_upgrade;      /* the last message's (take mode: not fields) */
  hstats_t *p_stats;          /* the server's counters (take counts requests), or NULL */
  int p_request;              /* 1: requests, 0: responses */
  size_t p_max_header, p_max_body;
  size_t p_header_bytes;      /* bytes of the current message's head */
  int p_in_head;              /* 1 from the first byte of a message to headers complete */
  int p_in_body;
  int p_skip_body;            /* response to HEAD (set by p:no_body()) */
  int p_status;               /* 0, or 400/413/431 once dead */
  const char *p_error;        /* a static description of p_status */
  int p_upgraded;             /* an upgrade message completed: stop parsing */
  int p_last_was_value;       /* header state: a value was being read */
  int p_field_counted;        /* the first field's separators are counted */
  int p_expect;               /* the head asked for 100-continue (until taken) */
  int p_saw_expect;           /* the head has an Expect field */
  hbuf_t p_url, p_field, p_value, p_body;
} hparser_t;

/* The strings the parser puts in every message, made once per state and
 * pushed by index: lua_setfield with a C string pays a cache lookup and a
 * strcmp per call (luaS_new), about 14 times per request. */
enum {
  K_HEADERS = 1, K_METHOD, K_TARGET, K_PATH, K_RAWQUERY, K_STATUS, K_REASON, K_VERSION,
  K_CHUNKED, K_BODY, K_KEEP_ALIVE, K_UPGRADE, K_EXPECT, K_V10, K_V11, K_EMPTY,
  K_GET, K_HEAD, K_POST, K_N
};
static const char *const key_names[K_N] = {
  NULL, "headers", "method", "target", "path", "rawquery", "status", "reason", "version",
  "chunked", "body", "keep_alive", "upgrade", "expect", "1.0", "1.1", "",
  "GET", "HEAD", "POST",
};
static const char KEYS_KEY = 'k';     /* registry key (its address) */

/* Pushes the key table of L (made on first use). */
static void push_keys(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &KEYS_KEY) == LUA_TTABLE) return;
  lua_pop(L, 1);
  lua_createtable(L, K_N - 1, 0);
  for (int k = 1; k < K_N; k++) {
    lua_pushstring(L, key_names[k]);
    lua_rawseti(L, -2, k);
  }
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &KEYS_KEY);
}

static inline void pushkey(lua_State *L, hparser_t *hp, int k) {
  lua_rawgeti(L, hp->p_keys, k);
}

static void fail(hparser_t *hp, int status, const char *why) {
  if (!hp->p_status) {
    hp->p_status = status;
    hp->p_error = why;
  }
}

static int head_bytes(hparser_t *hp, size_t n) {
  hp->p_header_bytes += n;
  if (hp->p_header_bytes > hp->p_max_header) {
    fail(hp, 431, "header fields too large");
    return -1;
  }
  return 0;
}

/* Stores the pending header (p_field: p_value) into msg.headers; a repeated
 * name is joined with ", " (RFC 9110 5.3). */
static void commit_header(hparser_t *hp) {
  lua_State *L = hp->p_L;
  if (!hp->p_field.b_len && !hp->p_value.b_len) return;
  for (size_t i = 0; i < hp->p_field.b_len; i++) {
    char c = hp->p_field.b_data[i];
    if (c >= 'A' && c <= 'Z') hp->p_field.b_data[i] = (char)(c + 32);
  }
  lua_pushlstring(L, hp->p_field.b_data ? hp->p_field.b_data : "", hp->p_field.b_len);
  lua_pushvalue(L, -1);
  if (lua_rawget(L, hp->p_hdrs) == LUA_TSTRING) {
    lua_pushliteral(L, ", ");   /* after the old value */
    lua_pushlstring(L, hp->p_value.b_data ? hp->p_value.b_data : "", hp->p_value.b_len);
    lua_concat(L, 3);
  } else {
    lua_pop(L, 1);
    lua_pushlstring(L, hp->p_value.b_data ? hp->p_value.b_data : "", hp->p_value.b_len);
  }
  lua_rawset(L, hp->p_hdrs);
  if (hp->p_field.b_len == 6 && memcmp(hp->p_field.b_data, "expect", 6) == 0) hp->p_saw_expect = 1;
  hp->p_field.b_len = hp->p_value.b_len = 0;
}

static int on_message_begin(http_parser *p) {
  hparser_t *hp = p->data;
  lua_State *L = hp->p_L;
  hp->p_in_head = 1;
  hp->p_in_body = 0;
  hp->p_header_bytes = 0;
  hp->p_last_was_value = 0;
  hp->p_field_counted = 0;
  hp->p_url.b_len = hp->p_field.b_len = hp->p_value.b_len = hp->p_body.b_len = 0;
  hp->p_saw_expect = 0;
  if (hp->p_msg) lua_settop(L, hp->p_msg - 1);   /* an unfinished message */
  /* 10 fields, and room for the 5 that braid.http's server adds when the
   * message becomes the request (query, remote, _conn, _rest, _keep), so
   * that it never rehashes. */
  lua_createtable(L, 0, 16);
  hp->p_msg = lua_gettop(L);
  lua_createtable(L, 0, 8);     /* no rehash up to 8 fields (growing from 0 costs more) */
  hp->p_hdrs = hp->p_msg + 1;
  pushkey(L, hp, K_HEADERS);
  lua_pushvalue(L, hp->p_hdrs);
  lua_rawset(L, hp->p_msg);
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t n) {
  hparser_t *hp = p->data;
  if (head_bytes(hp, n) || hbuf_add(&hp->p_url, at, n)) return -1;
  return 0;
}

static int on_status(http_parser *p, const char *at, size_t n) {
  hparser_t *hp = p->data;
  if (head_bytes(hp, n) || hbuf_add(&hp->p_url, at, n)) return -1;
  return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n) {
  hparser_t *hp = p->data;
  /* Each field's ": " and CRLF count too, once per field whatever the
   * split points, so the limit does not depend on them. */
  size_t extra = 0;
  if (hp->p_last_was_value) {
    commit_header(hp);
    hp->p_last_was_value = 0;
    extra = 4;
  } else if (!hp->p_field_counted) {
    extra = 4;
  }
  hp->p_field_counted = 1;
  if (head_bytes(hp, n + extra)) return -1;
  return hbuf_add(&hp->p_field, at, n) ? -1 : 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n) {
  hparser_t *hp = p->data;
  if (head_bytes(hp, n)) return -1;
  hp->p_last_was_value = 1;
  return hbuf_add(&hp->p_value, at, n) ? -1 : 0;
}

static int on_headers_complete(http_parser *p) {
  hparser_t *hp = p->data;
  lua_State *L = hp->p_L;
  int m = hp->p_msg;
  commit_header(hp);
  hp->p_in_head = 0;
  hp->p_in_body = 1;
  if (hp->p_request) {
    const char *url = hp->p_url.b_data ? hp->p_url.b_data : "";
    size_t n = hp->p_url.b_len, q = n, h = n;
    for (size_t i = 0; i < n; i++) {
      if (url[i] == '#') { h = i; break; }
      if (url[i] == '?' && q == n) q = i;
    }
    if (q > h) q = h;
    /* The usual methods, an empty query and a path that is the whole
     * target come from strings made once (no interning per request). */
    pushkey(L, hp, K_METHOD);
    if (p->method == HTTP_GET) pushkey(L, hp, K_GET);
    else if (p->method == HTTP_HEAD) pushkey(L, hp, K_HEAD);
    else if (p->method == HTTP_POST) pushkey(L, hp, K_POST);
    else lua_pushstring(L, http_method_str((enum http_method)p->method));
    lua_rawset(L, m);
    pushkey(L, hp, K_TARGET);
    lua_pushlstring(L, url, n);
    if (q == n) lua_pushvalue(L, -1);         /* path: the same string */
    else lua_pushlstring(L, url, q);
    lua_rotate(L, -3, 1);                     /* path under the key and target */
    lua_rawset(L, m);
    pushkey(L, hp, K_PATH);
    lua_rotate(L, -2, 1);
    lua_rawset(L, m);
    pushkey(L, hp, K_RAWQUERY);
    if (q < h && h - q > 1) lua_pushlstring(L, url + q + 1, h - q - 1);
    else pushkey(L, hp, K_EMPTY);
    lua_rawset(L, m);
  } else {
    pushkey(L, hp, K_STATUS);
    lua_pushinteger(L, p->status_code);
    lua_rawset(L, m);
    pushkey(L, hp, K_REASON);
    lua_pushlstring(L, hp->p_url.b_data ? hp->p_url.b_data : "", hp->p_url.b_len);
    lua_rawset(L, m);
  }
  pushkey(L, hp, K_VERSION);
  if (p->http_major == 1 && p->http_minor <= 1)         /* no formatting for the usual two */
    pushkey(L, hp, p->http_minor ? K_V11 : K_V10);
  else
    lua_pushfstring(L, "%d.%d", (int)p->http_major, (int)p->http_minor);
  lua_rawset(L, m);
  if (!hp->p_one) {             /* take mode: a request has no parser flags */
    pushkey(L, hp, K_CHUNKED);
    lua_pushboolean(L, (p->flags & F_CHUNKED) != 0);
    lua_rawset(L, m);
  }
  hp->p_expect = 0;
  if (hp->p_request && hp->p_saw_expect) {
    pushkey(L, hp, K_EXPECT);
    lua_rawget(L, hp->p_hdrs);
    const char *e = lua_tostring(L, -1);
    hp->p_expect = e && strncasecmp(e, "100-continue", 12) == 0;
    lua_pop(L, 1);
  }
  if (p->content_length != ULLONG_MAX && !(p->flags & F_CHUNKED) &&
      p->content_length > (uint64_t)hp->p_max_body) {
    fail(hp, 413, "content too large");
    return -1;
  }
  if (!hp->p_request && hp->p_skip_body) return 1;   /* HEAD: no body */
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t n) {
  hparser_t *hp = p->data;
  if (hp->p_body.b_len + n > hp->p_max_body) {
    fail(hp, 413, "content too large");
    return -1;
  }
  return hbuf_add(&hp->p_body, at, n) ? -1 : 0;
}

static int on_message_complete(http_parser *p) {
  hparser_t *hp = p->data;
  lua_State *L = hp->p_L;
  int m = hp->p_msg;
  pushkey(L, hp, K_BODY);
  lua_pushlstring(L, hp->p_body.b_data ? hp->p_body.b_data : "", hp->p_body.b_len);
  lua_rawset(L, m);
  hp->p_keep = http_should_keep_alive(p);
  hp->p_upgrade = p->upgrade;
  if (!hp->p_one) {
    pushkey(L, hp, K_KEEP_ALIVE);
    lua_pushboolean(L, hp->p_keep);
    lua_rawset(L, m);
    pushkey(L, hp, K_UPGRADE);
    lua_pushboolean(L, hp->p_upgrade);
    lua_rawset(L, m);
  }
  lua_settop(L, m);                               /* the headers table goes */
  hp->p_nmsgs++;
  hp->p_served++;
  if (!hp->p_one) lua_rawseti(L, hp->p_msgs, hp->p_nmsgs);   /* pops the message */
  hp->p_msg = 0;
  hp->p_in_body = 0;
  hp->p_skip_body = 0;
  if (p->upgrade) hp->p_upgraded = 1;   /* http-parser stops by itself */
  /* One at a time: http-parser returns right after this message's last
   * byte (every message_complete consumes its byte), the rest stays in the
   * caller's buffer. */
  else if (hp->p_one) http_parser_pause(p, 1);
  return 0;
}

/* The parser's methods share upvalues: 1 its metatable (a check by
 * pointer, not luaL_checkudata's registry lookup by name at every call),
 * then the names p:state() returns (made once, not interned per call). */
enum { UV_MT = 1, UV_ERROR, UV_UPGRADED, UV_HEAD, UV_BODY, UV_IDLE, UV_N = UV_IDLE };

static hparser_t *checkparser(lua_State *L) {
  hparser_t *hp = lua_touserdata(L, 1);
  if (hp == NULL || !lua_getmetatable(L, 1) || !lua_rawequal(L, -1, lua_upvalueindex(UV_MT)))
    luaL_typeerror(L, 1, PARSER_MT);
  lua_pop(L, 1);
  return hp;
}

/* p:feed(bytes) -> msgs, status, reason, rest, expect, state
 *   msgs: array of complete messages; status/reason once the input is
 *   invalid (400/413/431), else nil; rest: the bytes after an upgrade
 *   request (once), else nil; expect and state: what p:expect_continue()
 *   and p:state() return now.  p:feed(nil) tells the parser the input
 *   ended. */
static int l_parser_feed(lua_State *L);

static int parser_state(const hparser_t *hp) {
  return hp->p_status ? UV_ERROR : hp->p_upgraded ? UV_UPGRADED : hp->p_in_head ? UV_HEAD
       : hp->p_in_body ? UV_BODY : UV_IDLE;
}

static int l_parser_state(lua_State *L) {
  hparser_t *hp = checkparser(L);
  lua_pushvalue(L, lua_upvalueindex(parser_state(hp)));
  return 1;
}

/* p:expect_continue() -> bool: the request being read asked for
 * "Expect: 100-continue" and its body has not arrived; true once. */
static int l_parser_expect(lua_State *L) {
  hparser_t *hp = checkparser(L);
  lua_pushboolean(L, hp->p_expect && hp->p_in_body && !hp->p_status);
  hp->p_expect = 0;
  return 1;
}

/* p:no_body(): the next response answers a HEAD request. */
static int l_parser_no_body(lua_State *L) {
  hparser_t *hp = checkparser(L);
  hp->p_skip_body = 1;
  return 0;
}

static int l_parser_gc(lua_State *L) {
  hparser_t *hp = checkparser(L);
  if (hp->p_stats) hs_drop(hp->p_stats);
  hp->p_stats = NULL;
  hbuf_free(&hp->p_url);
  hbuf_free(&hp->p_field);
  hbuf_free(&hp->p_value);
  hbuf_free(&hp->p_body);
  return 0;
}

/* A message in progress across feeds is kept in the parser's user value. */
static int l_parser_feed(lua_State *L) {
  hparser_t *hp = checkparser(L);
  size_t n;
  const char *s = luaL_optlstring(L, 2, NULL, &n);
  int eof = s == NULL;
  if (eof) { s = ""; n = 0; }
  lua_settop(L, 2);
  lua_newtable(L);                            /* 3: result array */
  hp->p_msgs = 3;
  hp->p_nmsgs = 0;
  size_t used = 0;
  int was_upgraded = hp->p_upgraded;
  if (!hp->p_status && !hp->p_upgraded) {
    push_keys(L);                             /* 4: the key strings */
    hp->p_keys = 4;
    /* 5: the message in progress, if any, and 6: its headers */
    if (lua_getiuservalue(L, 1, 1) == LUA_TTABLE) {
      hp->p_msg = 5;
      hp->p_hdrs = 6;
      pushkey(L, hp, K_HEADERS);
      lua_rawget(L, hp->p_msg);
    } else {
      lua_pop(L, 1);
      hp->p_msg = 0;
    }
    hp->p_L = L;
    used = http_parser_execute(&hp->p_parser, &hp->p_settings, s, n);
    hp->p_L = NULL;
    if (!hp->p_status && !hp->p_upgraded) {
      enum http_errno e = HTTP_PARSER_ERRNO(&hp->p_parser);
      if (e == HPE_HEADER_OVERFLOW) fail(hp, 431, "header fields too large");
      else if (e != HPE_OK) fail(hp, 400, http_errno_description(e));
    }
    /* The unfinished message (if any) is the top above the array. */
    if (hp->p_msg) lua_pushvalue(L, hp->p_msg);
    else lua_pushnil(L);
    lua_setiuservalue(L, 1, 1);
    hp->p_msg = 0;
    lua_settop(L, 3);
    if (!hp->p_status && !hp->p_upgraded && hp->p_in_head &&
        hp->p_header_bytes > hp->p_max_header)
      fail(hp, 431, "header fields too large");
  }
  if (hp->p_status) {
    lua_pushinteger(L, hp->p_status);
    lua_pushstring(L, hp->p_error);
  } else {
    lua_pushnil(L);
    lua_pushnil(L);
  }
  if (!hp->p_status && hp->p_upgraded && !was_upgraded)
    lua_pushlstring(L, s + used, used < n ? n - used : 0);
  else
    lua_pushnil(L);
  /* What p:expect_continue() and p:state() would say now, without two
   * more calls per request. */
  lua_pushboolean(L, hp->p_expect && hp->p_in_body && !hp->p_status);
  hp->p_expect = 0;
  lua_pushvalue(L, lua_upvalueindex(parser_state(hp)));
  (void)eof;
  return 6;
}

/* braid.net's server read (lnet.c, conn:_http_next): the next message
 * straight from the connection's read-ahead bytes, with no string of them
 * and no result array.  Feeds s[0..n) to the parser at pidx, stopping after
 * the first complete message; *used gets the bytes consumed (the rest are
 * the caller's, e.g. what follows an upgrade).  Returns
 *   BRAID_HTTP_MSG       the message is pushed, then whether the connection
 *                        stays open after it (keep-alive, and the server is
 *                        not closing) and whether it asks for an upgrade;
 *                        the server's counters count a request begun;
 *   BRAID_HTTP_MORE      every byte was taken, no message yet;
 *   BRAID_HTTP_CONTINUE  as MORE, and the head asked for 100-continue
 *                        (reported once);
 *   BRAID_HTTP_BAD       the input is invalid: nil, status, reason pushed;
 *   BRAID_HTTP_DONE      the parser is past an upgrade: nothing more.
 * The message is a request without the parser's flags (chunked,
 * keep_alive, upgrade), with the parser's request metatable if it has one.  pidx holds a parser braid__http_check passed. */
int braid__http_take(lua_State *L, int pidx, const char *s, size_t n, size_t *used) {
  hparser_t *hp = lua_touserdata(L, pidx);
  *used = 0;
  if (hp->p_status) goto bad;
  if (hp->p_upgraded) return BRAID_HTTP_DONE;
  pidx = lua_absindex(L, pidx);
  int base = lua_gettop(L);
  push_keys(L);
  hp->p_keys = base + 1;
  if (lua_getiuservalue(L, pidx, 1) == LUA_TTABLE) {    /* a message in progress */
    hp->p_msg = base + 2;
    hp->p_hdrs = base + 3;
    pushkey(L, hp, K_HEADERS);
    lua_rawget(L, hp->p_msg);
  } else {
    lua_pop(L, 1);
    hp->p_msg = 0;
  }
  hp->p_nmsgs = 0;
  hp->p_one = 1;
  hp->p_L = L;
  size_t u = http_parser_execute(&hp->p_parser, &hp->p_settings, s, n);
  hp->p_L = NULL;
  hp->p_one = 0;
  *used = u;
  enum http_errno e = HTTP_PARSER_ERRNO(&hp->p_parser);
  if (e == HPE_PAUSED) {
    http_parser_pause(&hp->p_parser, 0);
    e = HPE_OK;
  }
  if (!hp->p_status && !hp->p_upgraded) {
    if (e == HPE_HEADER_OVERFLOW) fail(hp, 431, "header fields too large");
    else if (e != HPE_OK) fail(hp, 400, http_errno_description(e));
    else if (hp->p_in_head && hp->p_header_bytes > hp->p_max_header)
      fail(hp, 431, "header fields too large");
  }
  if (hp->p_nmsgs && !hp->p_status) {
    /* The message sits above the keys (and any unfinished one before it,
     * which it replaced: on_message_begin drops that). */
    lua_pushnil(L);
    lua_setiuservalue(L, pidx, 1);
    lua_replace(L, base + 1);
    lua_settop(L, base + 1);
    hp->p_msg = 0;
    if (lua_getiuservalue(L, pidx, 2) == LUA_TTABLE) lua_setmetatable(L, base + 1);
    else lua_pop(L, 1);
    lua_pushboolean(L, hp->p_keep && !(hp->p_stats && hs_closing(hp->p_stats)));
    lua_pushboolean(L, hp->p_upgrade);
    if (hp->p_stats) hs_request(hp->p_stats);
    return BRAID_HTTP_MSG;
  }
  if (hp->p_msg && !hp->p_status) lua_pushvalue(L, hp->p_msg);
  else lua_pushnil(L);
  lua_setiuservalue(L, pidx, 1);
  hp->p_msg = 0;
  lua_settop(L, base);
  if (hp->p_status) goto bad;
  if (hp->p_expect && hp->p_in_body) {
    hp->p_expect = 0;
    return BRAID_HTTP_CONTINUE;
  }
  hp->p_expect = 0;
  return BRAID_HTTP_MORE;
bad:
  lua_pushnil(L);
  lua_pushinteger(L, hp->p_status);
  lua_pushstring(L, hp->p_error);
  return BRAID_HTTP_BAD;
}

/* The request parser at idx, checked (raises naming fname's argument). */
void braid__http_check(lua_State *L, int idx, const char *fname) {
  hparser_t *hp = lua_touserdata(L, idx);
  bool ok = hp && lua_getmetatable(L, idx);
  if (ok) {     /* by the metatable's address: no lookup by name per request */
    lua_rawgetp(L, LUA_REGISTRYINDEX, &PARSER_MT_KEY);
    ok = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
  }
  if (!ok || !hp->p_request) braid__typeerror(L, idx, fname, "braid.http request parser");
}

/* Whether the server of the parser at idx is closing (false without one). */
bool braid__http_closing(lua_State *L, int idx) {
  const hparser_t *hp = lua_touserdata(L, idx);
  return hp->p_stats && hs_closing(hp->p_stats);
}

/* Where the parser at idx stands, for conn:_http_next's timeouts. */
int braid__http_phase(lua_State *L, int idx) {
  const hparser_t *hp = lua_touserdata(L, idx);
  if (hp->p_in_head) return BRAID_HTTP_HEAD;
  if (hp->p_in_body) return BRAID_HTTP_BODY;
  return hp->p_served ? BRAID_HTTP_IDLE : BRAID_HTTP_FIRST;
}

/* ------------------------------------------------------------------------- */
/* WebSocket                                                                 */
/* ------------------------------------------------------------------------- */

typedef struct wsframer {
  wslay_event_context_ptr w_ctx;
  hbuf_t w_in;              /* bytes fed, not yet read by wslay */
  size_t w_in_off;
  hbuf_t w_out;             /* frames written by wslay, not yet taken */
  lua_State *w_L;           /* during feed */
  int w_msgs, w_nmsgs;
  int w_oom;
} wsframer_t;

static ssize_t ws_recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len,
                          int flags, void *ud) {
  wsframer_t *w = ud;
  size_t avail = w->w_in.b_len - w->w_in_off;
  if (!avail) {
    wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    return -1;
  }
  if (len > avail) len = avail;
  memcpy(buf, w->w_in.b_data + w->w_in_off, len);
  w->w_in_off += len;
  if (w->w_in_off == w->w_in.b_len) w->w_in_off = w->w_in.b_len = 0;
  return (ssize_t)len;
}

static ssize_t ws_send_cb(wslay_event_context_ptr ctx, const uint8_t *data,
                          size_t len, int flags, void *ud) {
  wsframer_t *w = ud;
  if (hbuf_add(&w->w_out, (const char *)data, len)) {
    w->w_oom = 1;
    wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
  }
  return (ssize_t)len;
}

static int ws_genmask_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len,
                         void *ud) {
  return RAND_bytes(buf, (int)len) == 1 ? 0 : -1;
}

static void ws_msg_cb(wslay_event_context_ptr ctx,
                      const struct wslay_event_on_msg_recv_arg *arg, void *ud) {
  wsframer_t *w = ud;
  lua_State *L = w->w_L;
  const char *kind;
  switch (arg->opcode) {
  case WSLAY_TEXT_FRAME: kind = "text"; break;
  case WSLAY_BINARY_FRAME: kind = "binary"; break;
  case WSLAY_CONNECTION_CLOSE: kind = "close"; break;
  case WSLAY_PING: kind = "ping"; break;
  case WSLAY_PONG: kind = "pong"; break;
  default: return;
  }
  if (!L) return;
  lua_createtable(L, 0, 3);
  lua_pushstring(L, kind);
  lua_setfield(L, -2, "kind");
  const uint8_t *d = arg->msg;
  size_t dn = arg->msg_length;
  if (arg->opcode == WSLAY_CONNECTION_CLOSE && dn >= 2) { d += 2; dn -= 2; }
  lua_pushlstring(L, (const char *)d, dn);   /* a close's reason after its code */
  lua_setfield(L, -2, "data");
  if (arg->opcode == WSLAY_CONNECTION_CLOSE) {
    lua_pushinteger(L, arg->status_code);
    lua_setfield(L, -2, "code");
  }
  lua_rawseti(L, w->w_msgs, ++w->w_nmsgs);
}

static wsframer_t *checkws(lua_State *L) {
  wsframer_t *w = luaL_checkudata(L, 1, WS_MT);
  if (!w->w_ctx) luaL_error(L, "braid: websocket framer is freed");
  return w;
}

/* braid._http.ws(role [, max_msg]) -> framer; role "server" or "client". */
static int l_ws_new(lua_State *L) {
  static const char *const roles[] = {"server", "client", NULL};
  int role = luaL_checkoption(L, 1, NULL, roles);
  lua_Integer maxmsg = luaL_optinteger(L, 2, 16 << 20);
  wsframer_t *w = lua_newuserdatauv(L, sizeof *w, 0);
  memset(w, 0, sizeof *w);
  struct wslay_event_callbacks cb = {
    .recv_callback = ws_recv_cb,
    .send_callback = ws_send_cb,
    .genmask_callback = ws_genmask_cb,
    .on_msg_recv_callback = ws_msg_cb,
  };
  int rc = role == 0 ? wslay_event_context_server_init(&w->w_ctx, &cb, w)
                     : wslay_event_context_client_init(&w->w_ctx, &cb, w);
  if (rc != 0) return luaL_error(L, "braid: out of memory");
  wslay_event_config_set_max_recv_msg_length(w->w_ctx, (uint64_t)maxmsg);
  luaL_setmetatable(L, WS_MT);
  return 1;
}

/* ws:feed(bytes) -> msgs [, err]: every complete message ({kind=, data=
 * [, code=]}); err "protocol" when wslay rejects the stream. */
static int l_ws_feed(lua_State *L) {
  wsframer_t *w = checkws(L);
  size_t n;
  const char *s = luaL_checklstring(L, 2, &n);
  if (hbuf_add(&w->w_in, s, n)) return luaL_error(L, "braid: out of memory");
  lua_settop(L, 2);
  lua_newtable(L);
  w->w_msgs = 3;
  w->w_nmsgs = 0;
  w->w_L = L;
  int rc = wslay_event_recv(w->w_ctx);
  w->w_L = NULL;
  /* On a protocol violation wslay queues close 1002 and stops reading. */
  if (rc != 0 || (!wslay_event_get_read_enabled(w->w_ctx) &&
                  !wslay_event_get_close_received(w->w_ctx))) {
    lua_pushliteral(L, "protocol");
    return 2;
  }
  return 1;
}

/* ws:send(kind, data): queue a message ("text", "binary", "ping", "pong"). */
static int l_ws_send(lua_State *L) {
  static const char *const kinds[] = {"text", "binary", "ping", "pong", NULL};
  static const uint8_t ops[] = {WSLAY_TEXT_FRAME, WSLAY_BINARY_FRAME, WSLAY_PING,
                                WSLAY_PONG};
  wsframer_t *w = checkws(L);
  int k = luaL_checkoption(L, 2, NULL, kinds);
  size_t n;
  const char *s = luaL_optlstring(L, 3, "", &n);
  struct wslay_event_msg m = {ops[k], (const uint8_t *)s, n};
  int rc = wslay_event_queue_msg(w->w_ctx, &m);
  if (rc != 0) {
    lua_pushnil(L);
    lua_pushstring(L, rc == WSLAY_ERR_NO_MORE_MSG ? "closed" : "invalid message");
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* ws:close([code [, reason]]): queue a close frame. */
static int l_ws_close(lua_State *L) {
  wsframer_t *w = checkws(L);
  lua_Integer code = luaL_optinteger(L, 2, 1000);
  size_t n;
  const char *s = luaL_optlstring(L, 3, "", &n);
  int rc = wslay_event_queue_close(w->w_ctx, (uint16_t)code, (const uint8_t *)s, n);
  lua_pushboolean(L, rc == 0);
  return 1;
}

/* ws:output() -> bytes: every frame wslay can write now (may be ""). */
static int l_ws_output(lua_State *L) {
  wsframer_t *w = checkws(L);
  int rc = wslay_event_send(w->w_ctx);
  if (w->w_oom) return luaL_error(L, "braid: out of memory");
  lua_pushlstring(L, w->w_out.b_data ? w->w_out.b_data : "", w->w_out.b_len);
  w->w_out.b_len = 0;
  if (rc != 0) {
    lua_pushliteral(L, "protocol");
    return 2;
  }
  return 1;
}

/* ws:status() -> want_read, want_write, close_received, close_sent, code */
static int l_ws_status(lua_State *L) {
  wsframer_t *w = checkws(L);
  lua_pushboolean(L, wslay_event_want_read(w->w_ctx));
  lua_pushboolean(L, wslay_event_want_write(w->w_ctx));
  lua_pushboolean(L, wslay_event_get_close_received(w->w_ctx));
  lua_pushboolean(L, wslay_event_get_close_sent(w->w_ctx));
  lua_pushinteger(L, wslay_event_get_status_code_received(w->w_ctx));
  return 5;
}

static int l_ws_gc(lua_State *L) {
  wsframer_t *w = luaL_checkudata(L, 1, WS_MT);
  if (w->w_ctx) wslay_event_context_free(w->w_ctx);
  w->w_ctx = NULL;
  hbuf_free(&w->w_in);
  hbuf_free(&w->w_out);
  return 0;
}

/* ------------------------------------------------------------------------- */
/* Handshake helpers                                                         */
/* ------------------------------------------------------------------------- */

/* braid._http.ws_accept(key) -> base64(SHA1(key .. GUID)) (RFC 6455 4.2.2) */
static int l_ws_accept(lua_State *L) {
  static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  size_t n;
  const char *key = luaL_checklstring(L, 1, &n);
  unsigned char md[SHA_DIGEST_LENGTH];
  unsigned char out[4 * ((SHA_DIGEST_LENGTH + 2) / 3) + 1];
  EVP_MD_CTX *c = EVP_MD_CTX_new();
  int ok = c && EVP_DigestInit_ex(c, EVP_sha1(), NULL) &&
           EVP_DigestUpdate(c, key, n) &&
           EVP_DigestUpdate(c, guid, sizeof guid - 1) &&
           EVP_DigestFinal_ex(c, md, NULL);
  EVP_MD_CTX_free(c);
  if (!ok) return luaL_error(L, "braid: SHA-1 failed");
  int len = EVP_EncodeBlock(out, md, SHA_DIGEST_LENGTH);
  lua_pushlstring(L, (const char *)out, (size_t)len);
  return 1;
}

/* braid._http.ws_key() -> base64 of 16 random bytes (Sec-WebSocket-Key) */
static int l_ws_key(lua_State *L) {
  unsigned char raw[16], out[25];
  if (RAND_bytes(raw, sizeof raw) != 1) return luaL_error(L, "braid: RAND_bytes failed");
  int len = EVP_EncodeBlock(out, raw, sizeof raw);
  lua_pushlstring(L, (const char *)out, (size_t)len);
  return 1;
}

/* ------------------------------------------------------------------------- */
/* Process-wide named handles                                                */
/* ------------------------------------------------------------------------- */

/* braid.http's client keeps one pool of idle connections per host for the
 * whole process, but every Lua state loads its own copy of the module: the
 * pools are found by name here.  An entry holds one reference until the
 * process ends (reachable from a static: not a leak). */
typedef struct shared {
  struct shared *s_next;
  braid_obj_t *s_obj;
  char s_name[];
} shared_t;

static pthread_mutex_t shared_mtx = PTHREAD_MUTEX_INITIALIZER;
static shared_t *shared_list;          /* Protects: shared_mtx */

/* braid._http.shared(name, handle) -> the handle registered under name:
 * the first handle given for a name wins, later calls get it back. */
static int l_shared(lua_State *L) {
  size_t n;
  const char *name = luaL_checklstring(L, 1, &n);
  braid_obj_t *o = braid__tohandle(L, 2);
  luaL_argcheck(L, o != NULL, 2, "braid handle expected");
  braid_obj_t *found = NULL;
  pthread_mutex_lock(&shared_mtx);
  for (shared_t *e = shared_list; e; e = e->s_next)
    if (strcmp(e->s_name, name) == 0) { found = e->s_obj; break; }
  if (!found) {
    shared_t *e = malloc(sizeof *e + n + 1);
    if (e) {
      memcpy(e->s_name, name, n + 1);
      braid_obj_retain(o);
      e->s_obj = o;
      e->s_next = shared_list;
      shared_list = e;
    }
    found = o;
  }
  braid_obj_retain(found);     /* kept across the unlock for the push */
  pthread_mutex_unlock(&shared_mtx);
  braid__pushhandle(L, found);
  braid_obj_release(found);
  return 1;
}

/* ------------------------------------------------------------------------- */
/* A server's request counters                                               */

/* Kept by every connection task of one server, in whatever state it runs,
 * without a message: a request's begin and end used to be two casts to the
 * server's ctl task (a channel send and a wake-up each), which bench/http.sh
 * measured at about a quarter of the hello-world request's cost.  The ctl
 * task keeps what changes per connection (opened, gone). */
enum { HS_REQUESTS, HS_ACTIVE, HS_ERRORS, HS_BAD, HS_N };

struct hstats {
  braid_obj_t h_obj;
  /* Relaxed: independent counters, read together only for stats(). */
  _Atomic int64_t h_c[HS_N];
  /* The server is closing (st:close()).  seq_cst with each connection's
   * busy flag (lnet.c, conn:_http_next): a connection clears busy, then
   * reads this; the server sets this, then reads busy; so one of them
   * sees the other and an idle connection is never left open. */
  _Atomic bool h_closing;
};

static void hstats_destroy(braid_obj_t *o) {
  braid_obj_fini(o);
  free(o);
}

static braid_objtype_t hstats_type = { "http_stats", hstats_destroy, 0 };

static hstats_t *checkstats(lua_State *L) {
  return (hstats_t *)braid__checkhandle(L, 1, &hstats_type);
}

/* C.stats() -> a new counters handle (all zero). */
static int l_stats_new(lua_State *L) {
  hstats_t *h = calloc(1, sizeof *h);
  if (h == NULL || braid_obj_init(&h->h_obj, &hstats_type) != 0) {
    free(h);
    return luaL_error(L, "braid: out of memory");
  }
  braid__pushhandle(L, &h->h_obj);
  braid_obj_release(&h->h_obj);      /* the userdata holds its own */
  return 1;
}

static void hs_add(hstats_t *h, int i, int64_t d) {
  atomic_fetch_add_explicit(&h->h_c[i], d, memory_order_relaxed);
}

static void hs_request(hstats_t *h) {
  hs_add(h, HS_REQUESTS, 1);
  hs_add(h, HS_ACTIVE, 1);
}

static bool hs_closing(hstats_t *h) {
  return atomic_load_explicit(&h->h_closing, memory_order_seq_cst);
}

static void hs_drop(hstats_t *h) { braid_obj_release(&h->h_obj); }

/* st:begin(): a request starts (conn:_http_next counts its own). */
static int l_stats_begin(lua_State *L) {
  hs_request(checkstats(L));
  return 0;
}

/* st:finish() -> closing: a request is answered; whether the server is
 * closing (st:close()). */
static int l_stats_finish(lua_State *L) {
  hstats_t *h = checkstats(L);
  hs_add(h, HS_ACTIVE, -1);
  lua_pushboolean(L, hs_closing(h));
  return 1;
}

/* st:close(): the server is closing. */
static int l_stats_close(lua_State *L) {
  atomic_store_explicit(&checkstats(L)->h_closing, true, memory_order_seq_cst);
  return 0;
}

/* st:error() / st:bad(): a handler error, a malformed request. */
static int l_stats_error(lua_State *L) { hs_add(checkstats(L), HS_ERRORS, 1); return 0; }
static int l_stats_bad(lua_State *L) { hs_add(checkstats(L), HS_BAD, 1); return 0; }

/* st:get() -> requests, active, errors, bad */
static int l_stats_get(lua_State *L) {
  hstats_t *h = checkstats(L);
  for (int i = 0; i < HS_N; i++)
    lua_pushinteger(L, (lua_Integer)atomic_load_explicit(&h->h_c[i], memory_order_relaxed));
  return HS_N;
}

/* ------------------------------------------------------------------------- */
/* Message heads                                                             */
/* ------------------------------------------------------------------------- */

/* A header block from a headers table, the common case of the server's
 * answers: string names and values, no metatable, at most HEAD_MAX.
 * Anything else (numbers, lists of values, other keys) makes the caller
 * step aside for http.lua's head(), which formats it with tostring.  The
 * strings are the table's own: no user code runs while they are read, so
 * they stay put. */
enum { HEAD_MAX = 32 };
typedef struct hline { const char *n, *v; size_t nl, vl; } hline_t;

static int hline_less(const hline_t *a, const hline_t *b) {
  size_t n = a->nl < b->nl ? a->nl : b->nl;
  int c = memcmp(a->n, b->n, n);
  return c < 0 || (c == 0 && a->nl < b->nl);
}

static int has_name(const hline_t *h, int nh, const char *k, size_t kl) {
  for (int i = 0; i < nh; i++)
    if (h[i].nl == kl && strncasecmp(h[i].n, k, kl) == 0) return 1;
  return 0;
}

/* Reads the headers table at idx (nil: none) into h, sorted by name.
 * Returns 0 when it is not the simple case (the caller steps aside);
 * raises on a name or value that would split the message. */
static int gather_headers(lua_State *L, int idx, hline_t *h, int *nhp) {
  int nh = 0;
  *nhp = 0;
  if (!lua_isnoneornil(L, idx)) {
    if (lua_type(L, idx) != LUA_TTABLE || lua_getmetatable(L, idx)) return 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
      if (nh == HEAD_MAX || lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING) {
        lua_pop(L, 2);
        return 0;
      }
      hline_t *e = &h[nh++];
      e->n = lua_tolstring(L, -2, &e->nl);
      e->v = lua_tolstring(L, -1, &e->vl);
      lua_pop(L, 1);
      if (e->nl == 0 || memchr(e->n, '\r', e->nl) || memchr(e->n, '\n', e->nl) ||
          memchr(e->n, ':', e->nl) || memchr(e->v, '\r', e->vl) || memchr(e->v, '\n', e->vl)) {
        if (e->nl == 0) return 0;       /* http.lua words that one */
        lua_pushfstring(L, "braid.http: bad header %s", e->n);   /* as http.lua: no position */
        return lua_error(L);
      }
      /* Insertion sort by name, as table.sort orders strings. */
      for (int i = nh - 1; i > 0 && hline_less(&h[i], &h[i - 1]); i--) {
        hline_t t = h[i];
        h[i] = h[i - 1];
        h[i - 1] = t;
      }
    }
  }
  *nhp = nh;
  return 1;
}

/* The Date header's value, formatted once a second per thread (as
 * http.lua's httpdate: os.date's strftime, in the C locale's names). */
static const char *http_date(size_t *len) {
  static _Thread_local time_t last = (time_t)-1;
  static _Thread_local char buf[64];
  static _Thread_local size_t n;
  time_t t = time(NULL);
  if (t != last) {
    struct tm tm;
    gmtime_r(&t, &tm);
    n = strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    last = t;
  }
  *len = n;
  return buf;
}

/* Appends n bytes at p to the head being built in buf (the caller sized it). */
static char *put(char *o, const char *p, size_t n) {
  memcpy(o, p, n);
  return o + n;
}

static char *put_hline(char *o, const char *n, size_t nl, const char *v, size_t vl) {
  o = put(o, n, nl);
  *o++ = ':';
  *o++ = ' ';
  o = put(o, v, vl);
  *o++ = '\r';
  *o++ = '\n';
  return o;
}

/* A server's answer from a handler's results: the common case of
 * http.lua's simple(), whose answer_lua does the rest the same way
 * (tests/lua/http_wire_spec.lua compares them).
 *
 *   C.answer(status, headers, body, is_head, keep, version, sline [, conn])
 *     -> response | true | nil, why | false, why | nothing
 *
 * With conn (a plain braid.net connection) the answer is written there,
 * head and body in one sendmsg without a string of them, and the results
 * are conn:write's (true, or nil and why); otherwise it is the whole
 * response in one string.  false, why: a handler result of the wrong
 * type.  Nothing: answer_lua does it (sline, the cached status line,
 * missing; headers with numbers, lists or a metatable).  Raises, as
 * answer_lua does, on a header that would split the message.  Bodyless
 * statuses (1xx, 204, 304) get neither body nor Content-Length; Date,
 * Content-Length and Connection (close, or keep-alive for HTTP/1.0)
 * unless the handler set them. */
static int l_answer(lua_State *L) {
  lua_settop(L, 8);
  lua_Integer st = lua_isinteger(L, 1) ? lua_tointeger(L, 1) : 0;
  if (st < 100 || st > 999) {
    const char *sv = luaL_tolstring(L, 1, NULL);     /* below the two results */
    lua_pushboolean(L, 0);
    lua_pushfstring(L, "handler returned %s as the status", sv);
    return 2;
  }
  if (!lua_isnil(L, 2) && !lua_istable(L, 2)) {
    lua_pushboolean(L, 0);
    lua_pushfstring(L, "handler returned a %s as the headers", luaL_typename(L, 2));
    return 2;
  }
  if (!lua_isnil(L, 3) && lua_type(L, 3) != LUA_TSTRING) {
    lua_pushboolean(L, 0);
    lua_pushfstring(L, "handler returned a %s as the body", luaL_typename(L, 3));
    return 2;
  }
  if (lua_type(L, 7) != LUA_TSTRING) return 0;
  hline_t h[HEAD_MAX];
  int nh;
  if (!gather_headers(L, 2, h, &nh)) return 0;
  size_t sl, bl = 0, dl;
  const char *sline = lua_tolstring(L, 7, &sl);
  const char *body = lua_isnil(L, 3) ? "" : lua_tolstring(L, 3, &bl);
  int nobody = st == 204 || st == 304 || st < 200;
  if (nobody) bl = 0;
  if (lua_toboolean(L, 4)) body = "", bl = 0;         /* HEAD: the head alone */
  const char *date = http_date(&dl);
  const char *connv = NULL;
  if (!lua_toboolean(L, 5)) connv = "close";
  else if (lua_type(L, 6) == LUA_TSTRING && strcmp(lua_tostring(L, 6), "1.0") == 0) connv = "keep-alive";
  char num[24];
  size_t k = sizeof num, v = lua_isnil(L, 3) || nobody ? 0 : lua_rawlen(L, 3);
  do { num[--k] = (char)('0' + v % 10); v /= 10; } while (v);
  /* The head's size, to build it in one piece. */
  size_t need = sl + 2 + (4 + 4 + dl) + (14 + 4 + sizeof num - k) + (10 + 4 + 10);
  for (int i = 0; i < nh; i++) need += h[i].nl + h[i].vl + 4;
  char small[1024];
  char *hb = need <= sizeof small ? small : lua_newuserdatauv(L, need, 0);
  char *o = put(hb, sline, sl);
  for (int i = 0; i < nh; i++) o = put_hline(o, h[i].n, h[i].nl, h[i].v, h[i].vl);
  if (!has_name(h, nh, "date", 4)) o = put_hline(o, "Date", 4, date, dl);
  if (!nobody && !has_name(h, nh, "content-length", 14))
    o = put_hline(o, "Content-Length", 14, num + k, sizeof num - k);
  if (connv && !has_name(h, nh, "connection", 10)) o = put_hline(o, "Connection", 10, connv, strlen(connv));
  o = put(o, "\r\n", 2);
  if (!lua_isnil(L, 8)) {
    int n = braid__conn_send(L, 8, hb, (size_t)(o - hb), body, bl);
    if (n >= 0) return n;
  }
  lua_pushlstring(L, hb, (size_t)(o - hb));
  if (bl) {
    lua_pushlstring(L, body, bl);
    lua_concat(L, 2);
  }
  return 1;
}

/* ------------------------------------------------------------------------- */

static void newmeta(lua_State *L, const char *name, const luaL_Reg *l) {
  luaL_newmetatable(L, name);
  luaL_setfuncs(L, l, 0);
  lua_pushvalue(L, -1);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}

/* C.parser(kind, max_header, max_body [, stats [, mt]]) -> parser; kind
 * "request" or "response"; with a server's counters (C.stats()), the
 * requests conn:_http_next takes are counted there as they begin, and
 * with mt, they get it as their metatable (braid.http's REQ). */
static int l_parser_create(lua_State *L) {
  /* one user value: the message in progress between feeds */
  static const char *const kinds[] = {"request", "response", NULL};
  int kind = luaL_checkoption(L, 1, NULL, kinds);
  lua_Integer mh = luaL_optinteger(L, 2, 65536);
  lua_Integer mb = luaL_optinteger(L, 3, 1 << 20);
  luaL_argcheck(L, mh > 0, 2, "must be positive");
  luaL_argcheck(L, mb >= 0, 3, "must not be negative");
  hstats_t *st = lua_isnoneornil(L, 4) ? NULL
               : (hstats_t *)braid__checkhandle(L, 4, &hstats_type);
  /* user values: 1 the message in progress, 2 the requests' metatable */
  if (!lua_isnoneornil(L, 5)) luaL_checktype(L, 5, LUA_TTABLE);
  hparser_t *hp = lua_newuserdatauv(L, sizeof *hp, 2);
  memset(hp, 0, sizeof *hp);
  if (st) {
    braid_obj_retain(&st->h_obj);
    hp->p_stats = st;
  }
  hp->p_request = kind == 0;
  if (!lua_isnoneornil(L, 5)) {
    lua_pushvalue(L, 5);
    lua_setiuservalue(L, -2, 2);
  }
  hp->p_max_header = (size_t)mh;
  hp->p_max_body = (size_t)mb;
  http_parser_init(&hp->p_parser, hp->p_request ? HTTP_REQUEST : HTTP_RESPONSE);
  hp->p_parser.data = hp;
  http_parser_settings_init(&hp->p_settings);
  hp->p_settings.on_message_begin = on_message_begin;
  hp->p_settings.on_url = on_url;
  hp->p_settings.on_status = on_status;
  hp->p_settings.on_header_field = on_header_field;
  hp->p_settings.on_header_value = on_header_value;
  hp->p_settings.on_headers_complete = on_headers_complete;
  hp->p_settings.on_body = on_body;
  hp->p_settings.on_message_complete = on_message_complete;
  luaL_setmetatable(L, PARSER_MT);
  return 1;
}

void braid__open_http(lua_State *L) {
  static const luaL_Reg parser_m[] = {
    {"feed", l_parser_feed}, {"state", l_parser_state},
    {"no_body", l_parser_no_body}, {"expect_continue", l_parser_expect}, {"__gc", l_parser_gc}, {NULL, NULL}};
  static const luaL_Reg ws_m[] = {
    {"feed", l_ws_feed}, {"send", l_ws_send}, {"close", l_ws_close},
    {"output", l_ws_output}, {"status", l_ws_status}, {"__gc", l_ws_gc},
    {NULL, NULL}};
  static const luaL_Reg funcs[] = {
    {"parser", l_parser_create}, {"stats_finish", l_stats_finish}, {"ws", l_ws_new}, {"ws_accept", l_ws_accept},
    {"ws_key", l_ws_key}, {"shared", l_shared}, {"stats", l_stats_new}, {"answer", l_answer},
    {NULL, NULL}};
  static const luaL_Reg stats_m[] = {
    {"begin", l_stats_begin}, {"finish", l_stats_finish}, {"close", l_stats_close},
    {"error", l_stats_error},
    {"bad", l_stats_bad}, {"get", l_stats_get}, {NULL, NULL}};
  braid__newtype(L, &hstats_type, stats_m);
  luaL_newmetatable(L, PARSER_MT);       /* the methods' upvalues (UV_*) */
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &PARSER_MT_KEY);
  lua_pushvalue(L, -1);
  lua_pushliteral(L, "error");
  lua_pushliteral(L, "upgraded");
  lua_pushliteral(L, "head");
  lua_pushliteral(L, "body");
  lua_pushliteral(L, "idle");
  luaL_setfuncs(L, parser_m, UV_N);
  lua_pushvalue(L, -1);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  newmeta(L, WS_MT, ws_m);
  luaL_newlib(L, funcs);
  lua_setfield(L, -2, "_http");
}
