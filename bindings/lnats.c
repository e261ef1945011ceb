/*
 * lnats.c -- braid.nats: the C half of the NATS binding (API.md, "Many
 * processes and machines"), on the official C client nats.c.
 *
 * Design notes
 *
 * A connection is a braid object of type "nats" (tostring braid.nats#<id>):
 * a userdata handle like a channel's, so it travels to any task by
 * reference and every copy shares the one natsConnection (nats.c's
 * connections are thread-safe: a task on any worker may publish).  The
 * methods written in C are here; the rest (publish's JSON, subscribe's
 * options, request's wait, serve) are in lua/braid/nats.lua, found by the
 * metatable's __index when C has no method of that name.
 *
 * nats.c delivers messages on its own threads.  Those callbacks never touch
 * a braid Lua state: they build a braid_value_t ({subject=, data=, reply=,
 * headers=}) and hand it to a braid channel (braid_chan_send_value) or
 * settle a braid future (braid_future_resolve_values), the embedding API's
 * thread-safe calls.  A subscription is a braid channel with the broker's
 * buffer and policy: with "slide" or "drop" the callback tries once (the
 * channel counts what it loses), so a slow subscriber never stalls the
 * connection; with "block" it waits, which stalls only that
 * subscription's own delivery thread (nats.c gives each asynchronous
 * subscription one), until nats.c's pending limit drops messages (counted
 * as well: natsSubscription_GetDropped).
 *
 * JSON payloads (header content-type: application/json) are decoded on
 * receipt by lua-cjson in a private lua_State owned by the subscription's
 * delivery (created at its first JSON message, used only by that
 * subscription's callbacks, which nats.c runs one at a time, and closed in
 * its on-complete callback, after the last one).  That state belongs to no
 * braid runtime and is never seen by a script: it turns bytes into a
 * braid_value_t, nothing more.
 *
 * Requests: one "response mux" per connection, created at the first
 * request: an asynchronous subscription to <inbox>.* .  Each request gets a
 * token and a braid future, kept in a table under the connection's mutex;
 * the request is published with the reply subject <inbox>.<token>; the mux
 * callback settles the future of the token it receives (with the decoded
 * data, or nil, "no responders" for a 503 status).  The calling task waits
 * on that future with its timeout, so a request parks only that task;
 * on a timeout Lua forgets the token (_forget).
 *
 * Lifetime: a subscription record is referenced by the connection's list
 * and by nats.c's delivery (released in the on-complete callback).  close()
 * closes the subscription channels (waking a blocked "block" callback),
 * rejects pending requests' futures, then closes the connection; the
 * natsConnection is destroyed with the last handle.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>
#include <nats/nats.h>

#include "braid.h"
#include "chan.h"
#include "lbraid.h"
#include "lembed.h"

#define NBUCKETS 64

typedef struct nsub nsub_t;

/* One pending request. */
typedef struct nreq {
  uint64_t r_token;
  braid_future_t *r_fut;        /* one reference */
  struct nreq *r_next;
} nreq_t;

typedef struct nconn {
  braid_obj_t n_obj;            /* o_mtx Protects: n_subs, n_reqs, n_mux,
                                   n_inbox, n_next_token, n_closed */
  natsConnection *n_conn;       /* immutable after connect; thread-safe */
  nsub_t *n_subs;               /* every subscription made */
  nreq_t *n_reqs[NBUCKETS];     /* pending requests by token */
  nsub_t *n_mux;                /* the response mux, or NULL */
  char *n_inbox;                /* its prefix, "<inbox>." */
  uint64_t n_next_token;
  bool n_closed;
  /* Relaxed counters: statistics only, read without ordering. */
  _Atomic uint64_t n_dropped;   /* values a "block" subscription lost */
} nconn_t;

struct nsub {
  _Atomic int s_rc;             /* the list's reference + the delivery's */
  nconn_t *s_nc;                /* borrowed: the connection outlives it */
  natsSubscription *s_sub;      /* set once at subscribe */
  braid_chan_t *s_ch;           /* one reference; NULL for the mux */
  bool s_block;                 /* policy "block": wait for room */
  lua_State *s_json;            /* the private decoder; delivery only */
  nsub_t *s_next;               /* the connection's list (its mutex) */
};

static void nconn_destroy(braid_obj_t *o);
static braid_objtype_t braid_nats_type = { "nats", nconn_destroy, 0 };

/* ---------------------------------------------------------------------- */
/* Subscription records                                                    */

static void nsub_release(nsub_t *s) {
  /* acq_rel: the last releaser sees every write made through the other. */
  if (atomic_fetch_sub_explicit(&s->s_rc, 1, memory_order_acq_rel) != 1) return;
  if (s->s_json) lua_close(s->s_json);
  if (s->s_sub) natsSubscription_Destroy(s->s_sub);
  if (s->s_ch) braid_chan_unref(s->s_ch);
  free(s);
}

/* nats.c: the subscription's delivery has ended (after its last callback). */
static void on_complete(void *closure) {
  nsub_release(closure);
}

/* ---------------------------------------------------------------------- */
/* JSON bytes -> braid_value_t, in the delivery's private state            */

static int lua_to_value(lua_State *J, int idx, braid_value_t *out, int depth);

static int table_to_value(lua_State *J, int idx, braid_value_t *out, int depth) {
  lua_Integer n = (lua_Integer)lua_rawlen(J, idx), count = 0;
  lua_pushnil(J);
  while (lua_next(J, idx)) {
    count++;
    lua_pop(J, 1);
  }
  int rc = 0;
  if (count == n) {
    braid_value_init_array(out);
    for (lua_Integer i = 1; i <= n && rc == 0; i++) {
      braid_value_t item;
      lua_rawgeti(J, idx, i);
      rc = lua_to_value(J, lua_gettop(J), &item, depth + 1);
      lua_pop(J, 1);
      if (rc == 0 && (rc = braid_array_push(out, &item)) != 0) braid_value_clear(&item);
    }
  } else {
    braid_value_init_map(out);
    lua_pushnil(J);
    while (rc == 0 && lua_next(J, idx)) {
      int top = lua_gettop(J);
      braid_value_t k, v;
      if (lua_type(J, top) == LUA_TLIGHTUSERDATA) {   /* cjson.null: no pair */
        lua_pop(J, 1);
        continue;
      }
      rc = lua_to_value(J, top - 1, &k, depth + 1);
      if (rc == 0) {
        rc = lua_to_value(J, top, &v, depth + 1);
        if (rc != 0) braid_value_clear(&k);
        else if ((rc = braid_map_set(out, &k, &v)) != 0) {
          braid_value_clear(&k);
          braid_value_clear(&v);
        }
      }
      lua_pop(J, 1);
    }
    if (rc != 0) lua_pop(J, 1);       /* the key left by the broken loop */
  }
  if (rc != 0) braid_value_clear(out);
  return rc;
}

static int lua_to_value(lua_State *J, int idx, braid_value_t *out, int depth) {
  if (depth > BRAID_VALUE_MAX_DEPTH) return BRAID_EINVAL;
  switch (lua_type(J, idx)) {
  case LUA_TBOOLEAN:
    braid_value_init_boolean(out, lua_toboolean(J, idx));
    return 0;
  case LUA_TNUMBER: {
    /* cjson gives floats; an integral one in range is an integer, as the
     * sender most likely had it. */
    lua_Integer i;
    if (lua_isinteger(J, idx)) braid_value_init_integer(out, lua_tointeger(J, idx));
    else {
      double d = lua_tonumber(J, idx);
      if (d >= -9007199254740992.0 && d <= 9007199254740992.0 && (double)(i = (lua_Integer)d) == d)
        braid_value_init_integer(out, i);
      else braid_value_init_number(out, d);
    }
    return 0;
  }
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(J, idx, &len);
    return braid_value_init_string(out, s, len);
  }
  case LUA_TTABLE:
    return table_to_value(J, lua_absindex(J, idx), out, depth);
  default:                            /* null (top level), anything else */
    braid_value_init_nil(out);
    return 0;
  }
}

static int pcall_decode(lua_State *J) {
  size_t len;
  const char *s = lua_tolstring(J, 1, &len);
  lua_getglobal(J, "require");
  lua_pushliteral(J, "cjson");
  lua_call(J, 1, 1);
  lua_getfield(J, -1, "decode");
  lua_pushlstring(J, s, len);
  lua_call(J, 1, 1);
  return 1;
}

/* Decodes data[0 .. len) as JSON into *out; on a decode error *out is the
 * raw bytes as a string. */
static int json_to_value(nsub_t *s, const char *data, size_t len, braid_value_t *out) {
  if (s->s_json == NULL) {
    s->s_json = luaL_newstate();
    if (s->s_json == NULL) return braid_value_init_string(out, data, len);
    luaL_openlibs(s->s_json);
  }
  lua_State *J = s->s_json;
  lua_settop(J, 0);
  lua_pushcfunction(J, pcall_decode);
  lua_pushlstring(J, data, len);
  if (lua_pcall(J, 1, 1, 0) != LUA_OK) {
    lua_settop(J, 0);
    return braid_value_init_string(out, data, len);
  }
  int rc = lua_to_value(J, 1, out, 0);
  lua_settop(J, 0);
  return rc;
}

/* ---------------------------------------------------------------------- */
/* natsMsg -> braid_value_t                                               */

static int map_set_str(braid_value_t *map, const char *k, const char *v, size_t len) {
  braid_value_t key, val;
  int rc = braid_value_init_cstring(&key, k);
  if (rc != 0) return rc;
  if ((rc = braid_value_init_string(&val, v, len)) != 0) {
    braid_value_clear(&key);
    return rc;
  }
  if ((rc = braid_map_set(map, &key, &val)) != 0) {
    braid_value_clear(&key);
    braid_value_clear(&val);
  }
  return rc;
}

static int map_set(braid_value_t *map, const char *k, braid_value_t *val) {
  braid_value_t key;
  int rc = braid_value_init_cstring(&key, k);
  if (rc != 0) return rc;
  if ((rc = braid_map_set(map, &key, val)) != 0) braid_value_clear(&key);
  return rc;
}

static bool is_json(natsMsg *m) {
  const char *ct = NULL;
  return natsMsgHeader_Get(m, "content-type", &ct) == NATS_OK && ct &&
         strncmp(ct, "application/json", 16) == 0;
}

/* The payload of m, decoded when it is JSON. */
static int data_value(nsub_t *s, natsMsg *m, braid_value_t *out) {
  const char *d = natsMsg_GetData(m);
  size_t len = (size_t)natsMsg_GetDataLength(m);
  if (is_json(m)) return json_to_value(s, d ? d : "", len, out);
  return braid_value_init_string(out, d, len);
}

/* {subject=, data=, reply=, headers=} */
static int msg_value(nsub_t *s, natsMsg *m, braid_value_t *out) {
  braid_value_init_map(out);
  const char *subj = natsMsg_GetSubject(m), *reply = natsMsg_GetReply(m);
  int rc = map_set_str(out, "subject", subj, strlen(subj));
  if (rc == 0 && reply && *reply) rc = map_set_str(out, "reply", reply, strlen(reply));
  if (rc == 0) {
    braid_value_t data;
    if ((rc = data_value(s, m, &data)) == 0 && (rc = map_set(out, "data", &data)) != 0)
      braid_value_clear(&data);
  }
  const char **keys = NULL;
  int nkeys = 0;
  if (rc == 0 && natsMsgHeader_Keys(m, &keys, &nkeys) == NATS_OK) {
    braid_value_t h;
    braid_value_init_map(&h);
    for (int i = 0; i < nkeys && rc == 0; i++) {
      const char *v = NULL;
      if (natsMsgHeader_Get(m, keys[i], &v) == NATS_OK && v) {
        /* Lower-case names, as braid.http's headers. */
        char name[256];
        size_t n = strlen(keys[i]);
        if (n >= sizeof name) continue;
        for (size_t j = 0; j <= n; j++)
          name[j] = (char)((keys[i][j] >= 'A' && keys[i][j] <= 'Z') ? keys[i][j] + 32 : keys[i][j]);
        rc = map_set_str(&h, name, v, strlen(v));
      }
    }
    free((void *)keys);
    if (rc == 0 && (rc = map_set(out, "headers", &h)) != 0) braid_value_clear(&h);
    else if (rc != 0) braid_value_clear(&h);
  }
  if (rc != 0) braid_value_clear(out);
  return rc;
}

/* nats.c: a message for a subscription. */
static void on_msg(natsConnection *conn, natsSubscription *sub, natsMsg *m, void *closure) {
  nsub_t *s = closure;
  braid_value_t v;
  if (msg_value(s, m, &v) == 0) {
    int rc = braid_chan_send_value(s->s_ch, &v, s->s_block ? BRAID_FOREVER : 0);
    if (rc == BRAID_ECLOSED) {
      /* The channel was closed by its reader: that unsubscribes. */
      natsSubscription_Unsubscribe(sub);
    } else if (rc != 0) {
      atomic_fetch_add_explicit(&s->s_nc->n_dropped, 1, memory_order_relaxed);
    }
    braid_value_clear(&v);
  }
  natsMsg_Destroy(m);
}

/* nats.c: a reply for the response mux. */
static void on_reply(natsConnection *conn, natsSubscription *sub, natsMsg *m, void *closure) {
  nsub_t *s = closure;
  nconn_t *nc = s->s_nc;
  const char *subj = natsMsg_GetSubject(m);
  const char *dot = strrchr(subj, '.');
  uint64_t token = dot ? strtoull(dot + 1, NULL, 10) : 0;
  braid_future_t *f = NULL;
  braid_obj_lock(&nc->n_obj);
  for (nreq_t **pp = &nc->n_reqs[token % NBUCKETS]; *pp; pp = &(*pp)->r_next) {
    if ((*pp)->r_token == token) {
      nreq_t *r = *pp;
      *pp = r->r_next;
      f = r->r_fut;
      free(r);
      break;
    }
  }
  braid_obj_unlock(&nc->n_obj);
  if (f) {
    braid_value_t vals[2];
    size_t n = 1;
    if (natsMsg_IsNoResponders(m)) {
      braid_value_init_nil(&vals[0]);
      braid_value_init_cstring(&vals[1], "no responders");
      n = 2;
    } else if (data_value(s, m, &vals[0]) != 0) {
      braid_value_init_nil(&vals[0]);
    }
    braid_future_resolve_values(f, vals, n);
    for (size_t i = 0; i < n; i++) braid_value_clear(&vals[i]);
    braid_future_unref(f);
  }
  natsMsg_Destroy(m);
}

/* ---------------------------------------------------------------------- */
/* The connection object                                                   */

static void nconn_shutdown(nconn_t *nc) {
  braid_obj_lock(&nc->n_obj);
  bool was = nc->n_closed;
  nc->n_closed = true;
  nreq_t *reqs[NBUCKETS];
  memcpy(reqs, nc->n_reqs, sizeof reqs);
  memset(nc->n_reqs, 0, sizeof nc->n_reqs);
  braid_obj_unlock(&nc->n_obj);
  if (was) return;
  /* n_subs no longer changes (n_closed): walk it unlocked. */
  for (nsub_t *s = nc->n_subs; s; s = s->s_next)
    if (s->s_ch) braid_chan_close_value(s->s_ch, NULL);
  for (int i = 0; i < NBUCKETS; i++) {
    for (nreq_t *r = reqs[i], *next; r; r = next) {
      next = r->r_next;
      braid_value_t e;
      braid_value_init_cstring(&e, "closed");
      braid_value_t vals[2];
      braid_value_init_nil(&vals[0]);
      vals[1] = e;
      braid_future_resolve_values(r->r_fut, vals, 2);
      braid_value_clear(&vals[1]);
      braid_future_unref(r->r_fut);
      free(r);
    }
  }
  if (nc->n_conn) natsConnection_Close(nc->n_conn);
}

static void nconn_destroy(braid_obj_t *o) {
  nconn_t *nc = (nconn_t *)o;
  nconn_shutdown(nc);
  /* Subscriptions first (each drops its natsSubscription), then the
   * connection. */
  for (nsub_t *s = nc->n_subs, *next; s; s = next) {
    next = s->s_next;
    nsub_release(s);
  }
  if (nc->n_conn) natsConnection_Destroy(nc->n_conn);
  free(nc->n_inbox);
  braid_obj_fini(o);
  free(nc);
}

static nconn_t *checknc(lua_State *L, int idx) {
  nconn_t *nc = (nconn_t *)braid__checkhandle(L, idx, &braid_nats_type);
  return nc;
}

static nconn_t *checkopen(lua_State *L, int idx) {
  nconn_t *nc = checknc(L, idx);
  braid_obj_lock(&nc->n_obj);
  bool closed = nc->n_closed;
  braid_obj_unlock(&nc->n_obj);
  if (closed) luaL_error(L, "braid: braid.nats#%I is closed", (lua_Integer)nc->n_obj.o_id);
  return nc;
}

/* braid._nats.connect(url, name, max_reconnect, reconnect_wait_s, timeout_s)
 *   -> nc | nil, err.  Blocks the calling OS thread up to the timeout
 *   (lua/braid/nats.lua calls it on a braid.blocking thread). */
static int l_connect(lua_State *L) {
  const char *url = luaL_checkstring(L, 1);
  const char *name = luaL_optstring(L, 2, NULL);
  lua_Integer max_reconnect = luaL_optinteger(L, 3, 60);
  double wait = luaL_optnumber(L, 4, 2.0);
  double timeout = luaL_optnumber(L, 5, 2.0);
  natsOptions *opts = NULL;
  natsStatus st = natsOptions_Create(&opts);
  if (st == NATS_OK) st = natsOptions_SetURL(opts, url);
  if (st == NATS_OK && name) st = natsOptions_SetName(opts, name);
  if (st == NATS_OK) st = natsOptions_SetMaxReconnect(opts, (int)max_reconnect);
  if (st == NATS_OK) st = natsOptions_SetReconnectWait(opts, (int64_t)(wait * 1000));
  if (st == NATS_OK) st = natsOptions_SetTimeout(opts, (int64_t)(timeout * 1000));
  if (st == NATS_OK) st = natsOptions_SetAllowReconnect(opts, true);
  natsConnection *conn = NULL;
  if (st == NATS_OK) st = natsConnection_Connect(&conn, opts);
  if (opts) natsOptions_Destroy(opts);
  if (st != NATS_OK) {
    lua_pushnil(L);
    if (st == NATS_NO_SERVER) lua_pushliteral(L, "refused");
    else if (st == NATS_TIMEOUT) lua_pushliteral(L, "timeout");
    else lua_pushstring(L, natsStatus_GetText(st));
    return 2;
  }
  nconn_t *nc = calloc(1, sizeof *nc);
  if (nc == NULL) {
    natsConnection_Destroy(conn);
    return luaL_error(L, "braid: out of memory");
  }
  braid_obj_init(&nc->n_obj, &braid_nats_type);
  nc->n_conn = conn;
  braid__pushhandle(L, &nc->n_obj);
  braid_obj_release(&nc->n_obj);
  return 1;
}

/* Builds a message; data is a string, json marks it. */
static natsMsg *newmsg(lua_State *L, const char *subject, const char *reply, int data_idx, int json_idx) {
  size_t len;
  const char *data = luaL_checklstring(L, data_idx, &len);
  natsMsg *m = NULL;
  natsStatus st = natsMsg_Create(&m, subject, reply, data, (int)len);
  if (st == NATS_OK && lua_toboolean(L, json_idx))
    st = natsMsgHeader_Set(m, "content-type", "application/json");
  if (st != NATS_OK) {
    if (m) natsMsg_Destroy(m);
    luaL_error(L, "braid: nats: %s", natsStatus_GetText(st));
  }
  return m;
}

/* nc:_pub(subject, data, reply|nil, json) -> true | nil, err */
static int l_pub(lua_State *L) {
  nconn_t *nc = checkopen(L, 1);
  const char *subject = luaL_checkstring(L, 2);
  const char *reply = luaL_optstring(L, 4, NULL);
  natsMsg *m = newmsg(L, subject, reply, 3, 5);
  natsStatus st = natsConnection_PublishMsg(nc->n_conn, m);
  natsMsg_Destroy(m);
  if (st != NATS_OK) {
    lua_pushnil(L);
    lua_pushstring(L, natsStatus_GetText(st));
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static nsub_t *subscribe(lua_State *L, nconn_t *nc, const char *subject, const char *queue,
                         braid_chan_t *ch, bool block, natsMsgHandler cb) {
  nsub_t *s = calloc(1, sizeof *s);
  if (s == NULL) {
    luaL_error(L, "braid: out of memory");
    return NULL;
  }
  atomic_init(&s->s_rc, 2);
  s->s_nc = nc;
  s->s_block = block;
  natsSubscription *sub = NULL;
  natsStatus st = queue ? natsConnection_QueueSubscribe(&sub, nc->n_conn, subject, queue, cb, s)
                        : natsConnection_Subscribe(&sub, nc->n_conn, subject, cb, s);
  if (st == NATS_OK) {
    natsSubscription_SetPendingLimits(sub, 65536, 64 * 1024 * 1024);
    st = natsSubscription_SetOnCompleteCB(sub, on_complete, s);
    if (st != NATS_OK) natsSubscription_Unsubscribe(sub);
  }
  if (st != NATS_OK) {
    /* No delivery will release its reference: s is ours alone. */
    if (sub) natsSubscription_Destroy(sub);
    free(s);
    luaL_error(L, "braid: nats: subscribe '%s': %s", subject, natsStatus_GetText(st));
    return NULL;
  }
  s->s_sub = sub;
  if (ch) braid_chan_ref(ch);
  s->s_ch = ch;
  braid_obj_lock(&nc->n_obj);
  bool closed = nc->n_closed;
  s->s_next = nc->n_subs;
  nc->n_subs = s;
  braid_obj_unlock(&nc->n_obj);
  if (closed) {                       /* close() raced with us */
    natsSubscription_Unsubscribe(sub);
    if (ch) braid_chan_close_value(ch, NULL);
  }
  return s;
}

/* nc:_sub(subject, queue|nil, cap, policy) -> chan */
static int l_sub(lua_State *L) {
  nconn_t *nc = checkopen(L, 1);
  const char *subject = luaL_checkstring(L, 2);
  const char *queue = luaL_optstring(L, 3, NULL);
  lua_Number capn = luaL_checknumber(L, 4);
  int policy = (int)luaL_checkinteger(L, 5);
  size_t cap = capn >= (lua_Number)SIZE_MAX ? BRAID_UNBOUNDED : (size_t)capn;
  braid_chan_t *ch = NULL;
  if (braid_chan_create(cap, policy, &ch) != 0) return luaL_error(L, "braid: out of memory");
  /* Pushed first, so that an error below leaves it to the GC. */
  braid_push_chan(L, ch);
  braid_chan_unref(ch);
  subscribe(L, nc, subject, queue, ch, policy == BRAID_CHAN_BLOCK, on_msg);
  return 1;
}

/* nc:_unsub(chan) -> true | false: unsubscribes the subscription feeding
 * chan at once (closing the channel alone unsubscribes at its next
 * message) and closes chan. */
static int l_unsub(lua_State *L) {
  nconn_t *nc = checknc(L, 1);
  braid_chan_t *ch = braid_check_chan(L, 2);
  natsSubscription *sub = NULL;
  braid_obj_lock(&nc->n_obj);
  for (nsub_t *s = nc->n_subs; s; s = s->s_next)
    if (s->s_ch == ch) { sub = s->s_sub; break; }
  bool closed = nc->n_closed;
  braid_obj_unlock(&nc->n_obj);
  braid_chan_close_value(ch, NULL);
  braid_chan_unref(ch);
  if (sub && !closed) natsSubscription_Unsubscribe(sub);
  lua_pushboolean(L, sub != NULL);
  return 1;
}

/* nc:_req(subject, data, json) -> future, token */
static int l_req(lua_State *L) {
  nconn_t *nc = checkopen(L, 1);
  const char *subject = luaL_checkstring(L, 2);
  braid_obj_lock(&nc->n_obj);
  if (nc->n_mux == NULL) {
    /* Made under the lock (nats.c calls no callback from Subscribe; on_reply
     * takes this lock holding no lock of nats.c's). */
    natsInbox *inbox = NULL;
    nsub_t *mux = calloc(1, sizeof *mux);
    natsStatus st = mux ? natsInbox_Create(&inbox) : NATS_NO_MEMORY;
    size_t n = inbox ? strlen(inbox) : 0;
    char *prefix = st == NATS_OK ? malloc(n + 3) : NULL;
    if (st == NATS_OK && prefix == NULL) st = NATS_NO_MEMORY;
    natsSubscription *sub = NULL;
    if (st == NATS_OK) {
      memcpy(prefix, inbox, n);
      memcpy(prefix + n, ".*", 3);
      atomic_init(&mux->s_rc, 2);
      mux->s_nc = nc;
      st = natsConnection_Subscribe(&sub, nc->n_conn, prefix, on_reply, mux);
      if (st == NATS_OK) st = natsSubscription_SetOnCompleteCB(sub, on_complete, mux);
    }
    if (inbox) natsInbox_Destroy(inbox);
    if (st != NATS_OK) {
      if (sub) {
        natsSubscription_Unsubscribe(sub);
        natsSubscription_Destroy(sub);
      }
      braid_obj_unlock(&nc->n_obj);
      free(mux);
      free(prefix);
      return luaL_error(L, "braid: nats: request inbox: %s", natsStatus_GetText(st));
    }
    prefix[n + 1] = '\0';              /* keep "<inbox>." as the prefix */
    mux->s_sub = sub;
    mux->s_next = nc->n_subs;
    nc->n_subs = mux;
    nc->n_mux = mux;
    nc->n_inbox = prefix;
  }
  uint64_t token = ++nc->n_next_token;
  braid_obj_unlock(&nc->n_obj);

  char reply[256];
  snprintf(reply, sizeof reply, "%s%llu", nc->n_inbox, (unsigned long long)token);
  natsMsg *m = newmsg(L, subject, reply, 3, 4);
  nreq_t *r = malloc(sizeof *r);
  braid_future_t *f = NULL;
  if (r == NULL || braid_future_create(&f) != 0) {
    free(r);
    natsMsg_Destroy(m);
    return luaL_error(L, "braid: out of memory");
  }
  braid_push_future(L, f);
  r->r_token = token;
  r->r_fut = f;                       /* the table's reference */
  braid_obj_lock(&nc->n_obj);
  r->r_next = nc->n_reqs[token % NBUCKETS];
  nc->n_reqs[token % NBUCKETS] = r;
  braid_obj_unlock(&nc->n_obj);
  natsStatus st = natsConnection_PublishMsg(nc->n_conn, m);
  natsMsg_Destroy(m);
  if (st != NATS_OK) {
    lua_pop(L, 1);
    lua_pushnil(L);
    lua_pushstring(L, natsStatus_GetText(st));
    /* The token stays until _forget (Lua calls it on every failure). */
    lua_pushinteger(L, (lua_Integer)token);
    return 3;
  }
  lua_pushinteger(L, (lua_Integer)token);
  return 2;
}

/* nc:_forget(token): drops a request that will not be waited for. */
static int l_forget(lua_State *L) {
  nconn_t *nc = checknc(L, 1);
  uint64_t token = (uint64_t)luaL_checkinteger(L, 2);
  braid_future_t *f = NULL;
  braid_obj_lock(&nc->n_obj);
  for (nreq_t **pp = &nc->n_reqs[token % NBUCKETS]; *pp; pp = &(*pp)->r_next) {
    if ((*pp)->r_token == token) {
      nreq_t *r = *pp;
      *pp = r->r_next;
      f = r->r_fut;
      free(r);
      break;
    }
  }
  braid_obj_unlock(&nc->n_obj);
  if (f) braid_future_unref(f);
  return 0;
}

/* nc:flush([timeout]) -> true | nil, err.  Blocks the OS thread (call it
 * through braid.blocking from a task when it may take long). */
static int l_flush(lua_State *L) {
  nconn_t *nc = checkopen(L, 1);
  double t = luaL_optnumber(L, 2, 5.0);
  natsStatus st = natsConnection_FlushTimeout(nc->n_conn, (int64_t)(t * 1000));
  if (st != NATS_OK) {
    lua_pushnil(L);
    lua_pushstring(L, st == NATS_TIMEOUT ? "timeout" : natsStatus_GetText(st));
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int l_close(lua_State *L) {
  nconn_t *nc = checknc(L, 1);
  nconn_shutdown(nc);
  return 0;
}

static int l_stats(lua_State *L) {
  nconn_t *nc = checknc(L, 1);
  uint64_t in = 0, out = 0, reconnects = 0, dropped;
  natsStatistics *st = NULL;
  if (natsStatistics_Create(&st) == NATS_OK) {
    if (natsConnection_GetStats(nc->n_conn, st) == NATS_OK)
      natsStatistics_GetCounts(st, &in, NULL, &out, NULL, &reconnects);
    natsStatistics_Destroy(st);
  }
  dropped = atomic_load_explicit(&nc->n_dropped, memory_order_relaxed);
  braid_obj_lock(&nc->n_obj);
  for (nsub_t *s = nc->n_subs; s; s = s->s_next) {
    if (s->s_ch) {
      braid_chan_stats_t cs;
      braid_chan_stats(s->s_ch, &cs);
      dropped += cs.dropped;
    }
    int64_t d = 0;
    if (!nc->n_closed && natsSubscription_GetDropped(s->s_sub, &d) == NATS_OK && d > 0)
      dropped += (uint64_t)d;
  }
  bool closed = nc->n_closed;
  braid_obj_unlock(&nc->n_obj);
  lua_createtable(L, 0, 6);
  lua_pushinteger(L, (lua_Integer)in);
  lua_setfield(L, -2, "in_msgs");
  lua_pushinteger(L, (lua_Integer)out);
  lua_setfield(L, -2, "out_msgs");
  lua_pushinteger(L, (lua_Integer)reconnects);
  lua_setfield(L, -2, "reconnects");
  lua_pushinteger(L, (lua_Integer)dropped);
  lua_setfield(L, -2, "dropped");
  const char *state = closed ? "closed" : "?";
  if (!closed) {
    switch (natsConnection_Status(nc->n_conn)) {
    case NATS_CONN_STATUS_CONNECTED: state = "connected"; break;
    case NATS_CONN_STATUS_RECONNECTING: state = "reconnecting"; break;
    case NATS_CONN_STATUS_CLOSED: state = "closed"; break;
    default: state = "connecting"; break;
    }
  }
  lua_pushstring(L, state);
  lua_setfield(L, -2, "state");
  return 1;
}

static int l_tostring(lua_State *L) {
  nconn_t *nc = (nconn_t *)braid__tohandle(L, 1);
  if (nc == NULL) {
    lua_pushliteral(L, "braid.handle (released)");
    return 1;
  }
  char url[256] = "";
  braid_obj_lock(&nc->n_obj);
  bool closed = nc->n_closed;
  braid_obj_unlock(&nc->n_obj);
  if (!closed) natsConnection_GetConnectedUrl(nc->n_conn, url, sizeof url);
  lua_pushfstring(L, "braid.nats#%I (%s)", (lua_Integer)nc->n_obj.o_id,
                  closed ? "closed" : (*url ? url : "reconnecting"));
  return 1;
}

/* __index: the C methods, then lua/braid/nats.lua's connection methods. */
static int l_index(lua_State *L) {
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;
  lua_pop(L, 1);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "braid.nats");
  lua_call(L, 1, 1);
  if (lua_getfield(L, -1, "_conn_methods") != LUA_TTABLE) return 0;
  lua_pushvalue(L, 2);
  lua_rawget(L, -2);
  return 1;
}

void braid__open_nats(lua_State *L) {
  static const luaL_Reg meta[] = { { "__tostring", l_tostring }, { NULL, NULL } };
  braid__newtype(L, &braid_nats_type, meta);
  static const luaL_Reg methods[] = {
    { "_pub", l_pub }, { "_sub", l_sub }, { "_unsub", l_unsub }, { "_req", l_req },
    { "_forget", l_forget }, { "flush", l_flush }, { "close", l_close },
    { "stats", l_stats }, { NULL, NULL } };
  luaL_getmetatable(L, "braid.nats");
  luaL_newlib(L, methods);
  lua_pushcclosure(L, l_index, 1);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, l_connect);
  lua_setfield(L, -2, "connect");
  lua_setfield(L, -2, "_nats");        /* braid._nats */
}
