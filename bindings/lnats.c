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
 * The main thread's deadlock check (lruntime.c) cannot see nats.c's
 * threads, so each open subscription (until its on-complete callback),
 * each pending request and each JetStream fetch thread counts as a runtime
 * job (braid__rt_job), as a native call in flight does.
 *
 * Lifetime: a subscription record is referenced by the connection's list
 * and by nats.c's delivery (released in the on-complete callback).  close()
 * closes the subscription channels (waking a blocked "block" callback),
 * rejects pending requests' futures, then closes the connection; the
 * natsConnection is destroyed with the last handle.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
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
#include "lruntime.h"
#include "wire.h"

#define NBUCKETS 64
#define BATCH 64                /* messages a delivery gathers before a send */

/* nats.c's own publish (src/pub.c; exported by libnats, declared in its
 * private conn.h, the same signature from 3.0 to today's 3.x).  With
 * directFlush it writes the socket at once, as natsConnection_Request does
 * for its request, instead of kicking the flusher thread, which gathers
 * for 1 ms before it writes: on a request that 1 ms is the round trip's
 * largest part.  Weak: a libnats without it leaves requests on the
 * flusher's path (PublishMsg). */
#if NATS_VERSION_MAJOR == 3
extern natsStatus natsConn_publish(natsConnection *nc, natsMsg *msg, const char *reply,
                                   bool directFlush) __attribute__((weak));
#else
static natsStatus (*const natsConn_publish)(natsConnection *, natsMsg *, const char *, bool) = NULL;
#endif

typedef struct nsub nsub_t;
typedef struct npull npull_t;

/* One pending request. */
typedef struct nreq {
  uint64_t r_token;
  braid_future_t *r_fut;        /* one reference */
  struct nreq *r_next;
} nreq_t;

typedef struct nconn {
  braid_obj_t n_obj;            /* o_mtx Protects: n_subs, n_pulls, n_next_pull, n_reqs, n_mux,
                                   n_inbox, n_next_token, n_closed */
  natsConnection *n_conn;       /* immutable after connect; thread-safe */
  nsub_t *n_subs;               /* every subscription made */
  npull_t *n_pulls;             /* every JetStream pull consumer */
  uint64_t n_next_pull;
  nreq_t *n_reqs[NBUCKETS];     /* pending requests by token */
  nsub_t *n_mux;                /* the response mux, or NULL */
  char *n_inbox;                /* its prefix, "<inbox>." */
  uint64_t n_next_token;
  bool n_closed;
  /* Release/acquire: a lock-free copy of n_closed (set under o_mtx, after
   * it), read by the publish fast path instead of taking the lock. */
  _Atomic bool n_closed_hint;
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
  /* Delivery only (nats.c runs one callback of a subscription at a time):
   * messages encoded but not yet sent, while nats.c holds more behind
   * them (see on_msg). */
  braid_msg_t *s_batch[BATCH];
  int s_nbatch;
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
  for (int i = 0; i < s->s_nbatch; i++) braid_msg_release(s->s_batch[i]);
  if (s->s_sub) natsSubscription_Destroy(s->s_sub);
  if (s->s_ch) braid_chan_unref(s->s_ch);
  free(s);
}

/* nats.c: the subscription's delivery has ended (after its last callback).
 * Each open subscription counts as a runtime job (braid__rt_job), as a
 * native call in flight does: the main thread's deadlock check must allow
 * for a message that nats.c's threads may still deliver. */
static void on_complete(void *closure) {
  braid__rt_job(-1);
  nsub_release(closure);
}

static void on_complete_mux(void *closure) {
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
static int json_to_value(lua_State **Jp, const char *data, size_t len, braid_value_t *out) {
  if (*Jp == NULL) {
    *Jp = luaL_newstate();
    if (*Jp == NULL) return braid_value_init_string(out, data, len);
    luaL_openlibs(*Jp);
  }
  lua_State *J = *Jp;
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

static bool is_json(natsMsg *m) {
  const char *ct = NULL;
  return natsMsgHeader_Get(m, "content-type", &ct) == NATS_OK && ct &&
         strncmp(ct, "application/json", 16) == 0;
}

/* The payload of m, decoded when it is JSON. */
static int data_value(lua_State **Jp, natsMsg *m, braid_value_t *out) {
  const char *d = natsMsg_GetData(m);
  size_t len = (size_t)natsMsg_GetDataLength(m);
  if (is_json(m)) return json_to_value(Jp, d ? d : "", len, out);
  return braid_value_init_string(out, d, len);
}

/* A string value that borrows s (encoded, never cleared). */
static braid_value_t borrowed(const char *s, size_t len) {
  braid_value_t v;
  v.type = BRAID_TSTRING;
  v.u.string.ptr = (char *)s;
  v.u.string.len = len;
  return v;
}

/* The wire size of a value of a message's map: a string, an integer, or
 * a map of strings (the headers); 0 for any other (a decoded JSON tree). */
static size_t flat_size(const braid_value_t *v) {
  switch (v->type) {
    case BRAID_TSTRING: return braid__wstr_size(v->u.string.len);
    case BRAID_TINTEGER: return 9;
    case BRAID_TMAP: {
      size_t n = W_TABLE_SIZE;
      for (size_t i = 0; i < v->u.map.len; i++) {
        const braid_pair_t *p = &v->u.map.pairs[i];
        if (p->key.type != BRAID_TSTRING || p->val.type != BRAID_TSTRING) return 0;
        n += braid__wstr_size(p->key.u.string.len) + braid__wstr_size(p->val.u.string.len);
      }
      return n;
    }
    default: return 0;
  }
}

static unsigned char *flat_put(unsigned char *w, const braid_value_t *v) {
  switch (v->type) {
    case BRAID_TSTRING: return braid__wput_str(w, v->u.string.ptr, v->u.string.len);
    case BRAID_TINTEGER: return braid__wput_int(w, v->u.integer);
    default:                                          /* BRAID_TMAP, checked by flat_size */
      w = braid__wput_table(w, 0, (uint32_t)v->u.map.len);
      for (size_t i = 0; i < v->u.map.len; i++) {
        w = flat_put(w, &v->u.map.pairs[i].key);
        w = flat_put(w, &v->u.map.pairs[i].val);
      }
      return w;
  }
}

/* The message of the map pairs[0..n) when every value is flat (see
 * flat_size): sized first, then written straight into one allocation,
 * without braid__value_encode's growing buffer and copy.  Per message on
 * the delivery thread this is most of the encoding (bench/nats.lua's
 * publish row).  Returns 1 when some value is not flat (the caller
 * encodes it the general way), else 0 or BRAID_ENOMEM. */
static int flat_encode(const braid_pair_t *pairs, size_t n, braid_msg_t **out) {
  size_t len = 1 + W_TABLE_SIZE;                      /* one value: the map */
  for (size_t i = 0; i < n; i++) {
    size_t v = flat_size(&pairs[i].val);
    if (v == 0) return 1;
    len += braid__wstr_size(pairs[i].key.u.string.len) + v;
  }
  braid_msg_t *m = braid_msg_alloc(len, 0);
  if (m == NULL) return BRAID_ENOMEM;
  m->m_tag = CODEC_MAGIC | braid__wdepth_flags(2);
  unsigned char *w = braid__wput_table(braid__wput_varint(m->m_data, 1), 0, (uint32_t)n);
  for (size_t i = 0; i < n; i++) {
    w = flat_put(w, &pairs[i].key);
    w = flat_put(w, &pairs[i].val);
  }
  *out = m;
  return 0;
}

/* m as the message of a value {subject=, data=, reply=, headers=} plus
 * nextra integer fields (JetStream's id, seq, delivered).  The value is
 * built on the stack with strings that borrow m's bytes and encoded at
 * once: one allocation for the message (and the encoder's buffer), none
 * per field; only a JSON payload's decoded tree and the headers' pairs
 * are allocated. */
static int msg_encode(lua_State **Jp, natsMsg *m, const char *const *xkeys,
                      const int64_t *xvals, int nextra, braid_msg_t **out) {
  braid_pair_t pairs[8];
  size_t n = 0;
  const char *subj = natsMsg_GetSubject(m), *reply = natsMsg_GetReply(m);
  pairs[n].key = borrowed("subject", 7);
  pairs[n++].val = borrowed(subj, strlen(subj));
  if (reply && *reply) {
    pairs[n].key = borrowed("reply", 5);
    pairs[n++].val = borrowed(reply, strlen(reply));
  }
  const char *d = natsMsg_GetData(m);
  size_t dlen = (size_t)natsMsg_GetDataLength(m);
  const char **keys = NULL;
  int nkeys = 0;
  /* Headers: lower-case names (as braid.http's), first value of each. */
  braid_pair_t *hp = NULL;
  char *names = NULL;
  size_t nh = 0;
  bool json = false;
  int rc = 0;
  if (natsMsgHeader_Keys(m, &keys, &nkeys) == NATS_OK && nkeys > 0) {
    size_t room = 0;
    for (int i = 0; i < nkeys; i++) room += strlen(keys[i]) + 1;
    hp = malloc((size_t)nkeys * sizeof *hp);
    names = malloc(room);
    if (hp == NULL || names == NULL) rc = BRAID_ENOMEM;
    char *w = names;
    for (int i = 0; i < nkeys && rc == 0; i++) {
      const char *v = NULL;
      if (natsMsgHeader_Get(m, keys[i], &v) != NATS_OK || v == NULL) continue;
      size_t kl = strlen(keys[i]);
      for (size_t j = 0; j < kl; j++)
        w[j] = (char)((keys[i][j] >= 'A' && keys[i][j] <= 'Z') ? keys[i][j] + 32 : keys[i][j]);
      w[kl] = '\0';
      if (kl == 12 && memcmp(w, "content-type", 12) == 0 && strncmp(v, "application/json", 16) == 0)
        json = true;
      hp[nh].key = borrowed(w, kl);
      hp[nh++].val = borrowed(v, strlen(v));
      w += kl + 1;
    }
  }
  braid_value_t data;
  if (rc == 0) {
    if (json) rc = json_to_value(Jp, d ? d : "", dlen, &data);
    else data = borrowed(d ? d : "", dlen);
  }
  if (rc == 0) {
    pairs[n].key = borrowed("data", 4);
    pairs[n++].val = data;
    if (nh > 0) {
      pairs[n].key = borrowed("headers", 7);
      braid_value_t *h = &pairs[n++].val;
      h->type = BRAID_TMAP;
      h->u.map.pairs = hp;
      h->u.map.len = h->u.map.cap = nh;
    }
    for (int i = 0; i < nextra && n < 8; i++) {
      pairs[n].key = borrowed(xkeys[i], strlen(xkeys[i]));
      braid_value_init_integer(&pairs[n++].val, xvals[i]);
    }
    rc = flat_encode(pairs, n, out);
    if (rc == 1) {
      braid_value_t v;
      v.type = BRAID_TMAP;
      v.u.map.pairs = pairs;
      v.u.map.len = v.u.map.cap = n;
      rc = braid__value_encode(&v, 1, out);
    }
    if (json) braid_value_clear(&data);
  }
  free(hp);
  free(names);
  free((void *)keys);
  return rc;
}

/* Sends a message built by msg_encode (taken: released on failure). */
static int chan_send_msg(braid_chan_t *ch, braid_msg_t *bm, int64_t deadline) {
  int rc = braid_chan_send_until(ch, bm, deadline);
  if (rc != 0) braid_msg_release(bm);
  else braid__count_message();
  return rc;
}

/* nats.c: a message for a subscription. */
static void on_msg(natsConnection *conn, natsSubscription *sub, natsMsg *m, void *closure) {
  nsub_t *s = closure;
  braid_msg_t *bm = NULL;
  if (msg_encode(&s->s_json, m, NULL, NULL, 0, &bm) == 0) s->s_batch[s->s_nbatch++] = bm;
  natsMsg_Destroy(m);
  /* Batching: while nats.c holds more messages for this subscription, the
   * encoded ones wait here (up to BATCH), then go to the channel in one
   * burst.  The reader is woken by the first send and finds the rest
   * waiting, instead of parking and being woken again for each message;
   * with nothing behind it a message is sent at once. */
  int pending = 0;
  if (s->s_nbatch < BATCH && s->s_nbatch > 0 &&
      natsSubscription_GetPending(sub, &pending, NULL) == NATS_OK && pending > 0)
    return;
  int n = s->s_nbatch;
  s->s_nbatch = 0;
  for (int i = 0; i < n; i++) {
    int rc = chan_send_msg(s->s_ch, s->s_batch[i], s->s_block ? BRAID_FOREVER : 0);
    if (rc == BRAID_ECLOSED) {
      /* The channel was closed by its reader: that unsubscribes. */
      for (int j = i + 1; j < n; j++) braid_msg_release(s->s_batch[j]);
      natsSubscription_Unsubscribe(sub);
      break;
    } else if (rc != 0) {
      atomic_fetch_add_explicit(&s->s_nc->n_dropped, 1, memory_order_relaxed);
    }
  }
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
      braid__rt_job(-1);                /* l_req's */
      break;
    }
  }
  braid_obj_unlock(&nc->n_obj);
  if (f) {
    braid_value_t vals[2];
    size_t n = 1;
    const char *herr = NULL;
    if (natsMsg_IsNoResponders(m)) {
      braid_value_init_nil(&vals[0]);
      braid_value_init_cstring(&vals[1], "no responders");
      n = 2;
    } else if (natsMsgHeader_Get(m, "Nats-Service-Error", &herr) == NATS_OK && herr) {
      /* The NATS micro services' error reply (nc:serve sends it when its
       * handler raises; so do Go's and nats.c's micro services). */
      size_t len = strlen(herr);
      char *e = malloc(len + 16);
      braid_value_init_nil(&vals[0]);
      if (e) {
        memcpy(e, "handler error: ", 15);
        memcpy(e + 15, herr, len + 1);
        braid_value_init_string(&vals[1], e, len + 15);
        free(e);
      } else {
        braid_value_init_cstring(&vals[1], "handler error");
      }
      n = 2;
    } else if (data_value(&s->s_json, m, &vals[0]) != 0) {
      braid_value_init_nil(&vals[0]);
    }
    braid_future_resolve_values(f, vals, n);
    for (size_t i = 0; i < n; i++) braid_value_clear(&vals[i]);
    braid_future_unref(f);
  }
  natsMsg_Destroy(m);
}


/* ---------------------------------------------------------------------- */
/* JetStream pull consumers (braid.nats.worklist)                          */

/* A message fetched and handed to Lua, waiting for its ack. */
typedef struct nheld {
  uint64_t h_id;
  natsMsg *h_msg;
  struct nheld *h_next;
} nheld_t;

/* One durable pull consumer of a work-queue stream.  A fetch thread of its
 * own calls natsSubscription_Fetch (which blocks) one message at a time
 * and hands each to a rendezvous channel, so at most one message waits for
 * a free Lua worker; the message itself stays here until Lua acks (or
 * naks) it by id. */
struct npull {
  uint64_t p_id;                /* immutable */
  jsCtx *p_js;                  /* immutable */
  natsSubscription *p_sub;      /* immutable; the fetch thread's alone */
  braid_chan_t *p_ch;           /* immutable; one reference */
  pthread_t p_th;
  lua_State *p_json;            /* the fetch thread's decoder */
  /* Release/acquire: stop is set by close/stop, read by the fetch thread
   * between fetches; nothing else is published through it. */
  _Atomic bool p_stop;
  pthread_mutex_t p_mtx;        /* Protects: p_held, p_next_held */
  nheld_t *p_held[NBUCKETS];
  uint64_t p_next_held;
  npull_t *p_next;              /* the connection's list (its mutex) */
};

static void pull_deliver(npull_t *p, natsMsg *m) {
  jsMsgMetaData *meta = NULL;
  if (natsMsg_GetMetaData(&meta, m) != NATS_OK) {
    natsMsg_Destroy(m);
    return;
  }
  nheld_t *h = malloc(sizeof *h);
  if (h == NULL) {
    jsMsgMetaData_Destroy(meta);
    natsMsg_Nak(m, NULL);
    natsMsg_Destroy(m);
    return;
  }
  pthread_mutex_lock(&p->p_mtx);
  h->h_id = ++p->p_next_held;
  h->h_msg = m;
  h->h_next = p->p_held[h->h_id % NBUCKETS];
  p->p_held[h->h_id % NBUCKETS] = h;
  pthread_mutex_unlock(&p->p_mtx);
  static const char *const xkeys[3] = { "id", "seq", "delivered" };
  int64_t xvals[3] = { (int64_t)h->h_id, (int64_t)meta->Sequence.Stream,
                       (int64_t)meta->NumDelivered };
  braid_msg_t *bm = NULL;
  int rc = msg_encode(&p->p_json, m, xkeys, xvals, 3, &bm);
  if (rc == 0) rc = chan_send_msg(p->p_ch, bm, BRAID_FOREVER);
  jsMsgMetaData_Destroy(meta);
  if (rc != 0) {
    /* Closed (stopping) or out of memory: give it back at once. */
    nheld_t *mine = NULL;
    pthread_mutex_lock(&p->p_mtx);
    for (nheld_t **pp = &p->p_held[h->h_id % NBUCKETS]; *pp; pp = &(*pp)->h_next)
      if (*pp == h) { *pp = h->h_next; mine = h; break; }
    pthread_mutex_unlock(&p->p_mtx);
    if (mine) {
      natsMsg_Nak(m, NULL);
      natsMsg_Destroy(m);
      free(mine);
    }
  }
}

static void *pull_main(void *arg) {
  npull_t *p = arg;
  while (!atomic_load_explicit(&p->p_stop, memory_order_acquire)) {
    natsMsgList list = { NULL, 0 };
    jsErrCode jerr = 0;
    natsStatus st = natsSubscription_Fetch(&list, p->p_sub, 1, 500, &jerr);
    if (st == NATS_OK) {
      for (int i = 0; i < list.Count; i++) {
        natsMsg *m = list.Msgs[i];
        list.Msgs[i] = NULL;
        pull_deliver(p, m);
      }
      natsMsgList_Destroy(&list);
    } else if (st != NATS_TIMEOUT) {
      /* Disconnected, reconnecting, closed: do not spin. */
      struct timespec ts = { 0, 100 * 1000 * 1000 };
      nanosleep(&ts, NULL);
    }
  }
  braid__rt_job(-1);                  /* l_js_pull's: fetching has ended */
  return NULL;
}

static void pull_stop(npull_t *p) {
  atomic_store_explicit(&p->p_stop, true, memory_order_release);
  braid_chan_close_value(p->p_ch, NULL);
}

/* After pull_stop: joins the thread and frees everything (messages not
 * acked are left to the server's ack wait). */
static void pull_free(npull_t *p) {
  pthread_join(p->p_th, NULL);
  for (int i = 0; i < NBUCKETS; i++)
    for (nheld_t *h = p->p_held[i], *next; h; h = next) {
      next = h->h_next;
      natsMsg_Destroy(h->h_msg);
      free(h);
    }
  natsSubscription_Destroy(p->p_sub);
  jsCtx_Destroy(p->p_js);
  braid_chan_unref(p->p_ch);
  if (p->p_json) lua_close(p->p_json);
  pthread_mutex_destroy(&p->p_mtx);
  free(p);
}

/* ---------------------------------------------------------------------- */
/* The connection object                                                   */

static void nconn_shutdown(nconn_t *nc) {
  braid_obj_lock(&nc->n_obj);
  bool was = nc->n_closed;
  nc->n_closed = true;
  atomic_store_explicit(&nc->n_closed_hint, true, memory_order_release);
  nreq_t *reqs[NBUCKETS];
  memcpy(reqs, nc->n_reqs, sizeof reqs);
  memset(nc->n_reqs, 0, sizeof nc->n_reqs);
  braid_obj_unlock(&nc->n_obj);
  if (was) return;
  /* n_subs no longer changes (n_closed): walk it unlocked. */
  for (nsub_t *s = nc->n_subs; s; s = s->s_next)
    if (s->s_ch) braid_chan_close_value(s->s_ch, NULL);
  for (npull_t *p = nc->n_pulls; p; p = p->p_next) pull_stop(p);
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
      braid__rt_job(-1);                /* l_req's */
    }
  }
  if (nc->n_conn) natsConnection_Close(nc->n_conn);
}

static void nconn_destroy(braid_obj_t *o) {
  nconn_t *nc = (nconn_t *)o;
  nconn_shutdown(nc);
  /* Pull consumers and subscriptions first (each drops its
   * natsSubscription), then the connection. */
  for (npull_t *p = nc->n_pulls, *next; p; p = next) {
    next = p->p_next;
    pull_free(p);
  }
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
  /* acquire: pairs with nconn_shutdown's release; a publish racing with
   * close gets nats.c's own "Connection Closed" instead. */
  if (atomic_load_explicit(&nc->n_closed_hint, memory_order_acquire)) luaL_error(L, "braid: braid.nats#%I is closed", (lua_Integer)nc->n_obj.o_id);
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
  if (braid_obj_init(&nc->n_obj, &braid_nats_type) != 0) {
    free(nc);
    natsConnection_Destroy(conn);
    return luaL_error(L, "braid: out of memory");
  }
  atomic_init(&nc->n_closed_hint, false);
  nc->n_conn = conn;
  braid__pushhandle(L, &nc->n_obj);
  braid_obj_release(&nc->n_obj);
  return 1;
}

/* Builds a message; data is a string, json marks it; the table at
 * json_idx + 1 (if any) adds headers (string names and values). */
static natsMsg *newmsg(lua_State *L, const char *subject, const char *reply, int data_idx, int json_idx) {
  size_t len;
  const char *data = luaL_checklstring(L, data_idx, &len);
  natsMsg *m = NULL;
  natsStatus st = natsMsg_Create(&m, subject, reply, data, (int)len);
  if (st == NATS_OK && lua_toboolean(L, json_idx))
    st = natsMsgHeader_Set(m, "content-type", "application/json");
  if (st == NATS_OK && lua_istable(L, json_idx + 1)) {
    lua_pushnil(L);
    while (st == NATS_OK && lua_next(L, json_idx + 1)) {
      if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING)
        st = natsMsgHeader_Set(m, lua_tostring(L, -2), lua_tostring(L, -1));
      lua_pop(L, 1);
    }
    if (st != NATS_OK) lua_pop(L, 1);
  }
  if (st != NATS_OK) {
    if (m) natsMsg_Destroy(m);
    luaL_error(L, "braid: nats: %s", natsStatus_GetText(st));
  }
  return m;
}

/* What nc:publish and nc:_pub return: true, or nil and nats.c's error. */
static int pub_result(lua_State *L, natsStatus st) {
  if (st != NATS_OK) {
    lua_pushnil(L);
    lua_pushstring(L, natsStatus_GetText(st));
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* nc:_pub(subject, data, reply|nil, json [, headers]) -> true | nil, err */
static int l_pub(lua_State *L) {
  nconn_t *nc = checkopen(L, 1);
  const char *subject = luaL_checkstring(L, 2);
  const char *reply = luaL_optstring(L, 4, NULL);
  natsMsg *m = newmsg(L, subject, reply, 3, 5);
  natsStatus st = natsConnection_PublishMsg(nc->n_conn, m);
  natsMsg_Destroy(m);
  return pub_result(L, st);
}

/* Pushes lua/braid/nats.lua's connection method name (or nil).  The
 * methods table is looked up once per Lua state and kept in the registry. */
static const char LUA_METHODS_KEY[] = "braid.nats: Lua methods";
static void push_lua_method(lua_State *L, const char *name) {
  if (lua_getfield(L, LUA_REGISTRYINDEX, LUA_METHODS_KEY) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "braid.nats");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "_conn_methods");
    lua_remove(L, -2);
    if (!lua_istable(L, -1)) {
      lua_pop(L, 1);
      lua_pushnil(L);
      return;
    }
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, LUA_METHODS_KEY);
  }
  lua_getfield(L, -1, name);
  lua_remove(L, -2);
}

/* A subject as lua/braid/nats.lua's checksubject wants it: a non-empty
 * string without white space. */
static const char *checksubject(lua_State *L, int idx, const char *fname) {
  size_t len;
  const char *s = lua_type(L, idx) == LUA_TSTRING ? lua_tolstring(L, idx, &len) : NULL;
  bool ok = s && len > 0;
  for (size_t i = 0; ok && i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c <= ' ' && (c == ' ' || (c >= '\t' && c <= '\r'))) ok = false;   /* one compare per byte */
  }
  if (!ok) {
    if (s) lua_pushfstring(L, "'%s'", s);
    else lua_pushstring(L, luaL_typename(L, idx));
    luaL_error(L, "bad argument #%d to '%s' (subject must be a non-empty string without spaces, got %s)",
               idx - 1, fname, lua_tostring(L, -1));
  }
  return s;
}

/* nc:publish(subject, v [, reply]).  A string goes straight into nats.c's
 * write buffer (natsConnection_Publish copies it there; its flusher thread
 * writes, so a publish neither waits nor wakes anyone but, at most, that
 * flusher); any other value is lua/braid/nats.lua's _publish (JSON). */
static int l_publish(lua_State *L) {
  if (lua_type(L, 3) != LUA_TSTRING || lua_gettop(L) > 4) {
    push_lua_method(L, "_publish");
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
  }
  nconn_t *nc = checkopen(L, 1);
  const char *subject = checksubject(L, 2, "nc:publish");
  const char *reply = lua_isnoneornil(L, 4) ? NULL : checksubject(L, 4, "nc:publish");
  size_t len;
  const char *data = lua_tolstring(L, 3, &len);
  natsStatus st = reply ? natsConnection_PublishRequest(nc->n_conn, subject, reply, data, (int)len)
                        : natsConnection_Publish(nc->n_conn, subject, data, (int)len);
  return pub_result(L, st);
}

static nsub_t *subscribe(lua_State *L, nconn_t *nc, const char *subject, const char *queue,
                         braid_chan_t *ch, bool block, bool unbounded, natsMsgHandler cb) {
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
    /* An unbounded channel asks for no loss: no limit in nats.c either. */
    if (unbounded) natsSubscription_SetPendingLimits(sub, -1, -1);
    else natsSubscription_SetPendingLimits(sub, 65536, 64 * 1024 * 1024);
    braid__rt_job(1);                 /* before any on_complete can run */
    st = natsSubscription_SetOnCompleteCB(sub, on_complete, s);
    if (st != NATS_OK) {
      braid__rt_job(-1);
      natsSubscription_Unsubscribe(sub);
    }
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
  subscribe(L, nc, subject, queue, ch, policy == BRAID_CHAN_BLOCK, cap == BRAID_UNBOUNDED, on_msg);
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

/* nc:_req(subject, data, json [, headers]) -> future, token */
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
      /* Not a job itself: each pending request is one. */
      if (st == NATS_OK) st = natsSubscription_SetOnCompleteCB(sub, on_complete_mux, mux);
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
  /* A pending request is a runtime job until its reply, _forget or close
   * takes it out (the deadlock check must wait for nats.c's reply). */
  braid__rt_job(1);
  braid_obj_unlock(&nc->n_obj);
  natsStatus st = natsConn_publish ? natsConn_publish(nc->n_conn, m, reply, true)
                                   : natsConnection_PublishMsg(nc->n_conn, m);
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
      braid__rt_job(-1);                /* l_req's */
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


/* nc:_js_pull(stream, subject, durable, ack_wait_s, duplicates_s, memory)
 *   -> chan, pull_id | nil, err.  Creates (or finds) the work-queue stream
 *   and the durable pull consumer (explicit acks), and starts the fetch
 *   thread.  Blocks on JetStream's API: lua/braid/natswork.lua calls it on
 *   a braid.blocking thread. */
static int l_js_pull(lua_State *L) {
  nconn_t *nc = checkopen(L, 1);
  const char *stream = luaL_checkstring(L, 2);
  const char *subject = luaL_checkstring(L, 3);
  const char *durable = luaL_checkstring(L, 4);
  double ack_wait = luaL_checknumber(L, 5);
  double dups = luaL_checknumber(L, 6);
  bool memory = lua_toboolean(L, 7);
  jsCtx *js = NULL;
  jsErrCode jerr = 0;
  natsStatus st = natsConnection_JetStream(&js, nc->n_conn, NULL);
  if (st == NATS_OK) {
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = stream;
    const char *subjects[1] = { subject };
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Retention = js_WorkQueuePolicy;
    cfg.Storage = memory ? js_MemoryStorage : js_FileStorage;
    cfg.Duplicates = (int64_t)(dups * 1e9);
    jsStreamInfo *si = NULL;
    st = js_AddStream(&si, js, &cfg, NULL, &jerr);
    if (st != NATS_OK && jerr == JSStreamNameExistErr) st = NATS_OK;  /* made by a peer */
    if (si) jsStreamInfo_Destroy(si);
  }
  natsSubscription *sub = NULL;
  if (st == NATS_OK) {
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = stream;
    so.Config.AckPolicy = js_AckExplicit;
    so.Config.AckWait = (int64_t)(ack_wait * 1e9);
    so.Config.MaxAckPending = 100000;
    st = js_PullSubscribe(&sub, js, subject, durable, NULL, &so, &jerr);
  }
  npull_t *p = NULL;
  braid_chan_t *ch = NULL;
  if (st == NATS_OK) {
    p = calloc(1, sizeof *p);
    if (p == NULL || braid_chan_create(0, BRAID_CHAN_BLOCK, &ch) != 0) st = NATS_NO_MEMORY;
  }
  if (st == NATS_OK) {
    pthread_mutex_init(&p->p_mtx, NULL);
    p->p_js = js;
    p->p_sub = sub;
    p->p_ch = ch;
    atomic_init(&p->p_stop, false);
    braid__rt_job(1);                 /* a fetch thread may deliver */
    if (pthread_create(&p->p_th, NULL, pull_main, p) != 0) {
      braid__rt_job(-1);
      pthread_mutex_destroy(&p->p_mtx);
      st = NATS_NO_MEMORY;
    }
  }
  if (st != NATS_OK) {
    if (ch) braid_chan_unref(ch);
    free(p);
    if (sub) natsSubscription_Destroy(sub);
    if (js) jsCtx_Destroy(js);
    lua_pushnil(L);
    if (jerr) lua_pushfstring(L, "jetstream: %s (%d)", natsStatus_GetText(st), (int)jerr);
    else lua_pushfstring(L, "jetstream: %s", natsStatus_GetText(st));
    return 2;
  }
  braid_obj_lock(&nc->n_obj);
  p->p_id = ++nc->n_next_pull;
  p->p_next = nc->n_pulls;
  nc->n_pulls = p;
  bool closed = nc->n_closed;
  braid_obj_unlock(&nc->n_obj);
  if (closed) pull_stop(p);
  braid_push_chan(L, ch);
  lua_pushinteger(L, (lua_Integer)p->p_id);
  return 2;
}

static npull_t *findpull(nconn_t *nc, uint64_t id) {
  npull_t *p;
  braid_obj_lock(&nc->n_obj);
  for (p = nc->n_pulls; p; p = p->p_next)
    if (p->p_id == id) break;
  braid_obj_unlock(&nc->n_obj);
  return p;                           /* lives as long as nc */
}

/* nc:_js_ack(pull_id, msg_id [, nak]) -> true | false (unknown id) */
static int l_js_ack(lua_State *L) {
  nconn_t *nc = checknc(L, 1);
  npull_t *p = findpull(nc, (uint64_t)luaL_checkinteger(L, 2));
  uint64_t id = (uint64_t)luaL_checkinteger(L, 3);
  bool nak = lua_toboolean(L, 4);
  nheld_t *h = NULL;
  if (p) {
    pthread_mutex_lock(&p->p_mtx);
    for (nheld_t **pp = &p->p_held[id % NBUCKETS]; *pp; pp = &(*pp)->h_next)
      if ((*pp)->h_id == id) { h = *pp; *pp = h->h_next; break; }
    pthread_mutex_unlock(&p->p_mtx);
  }
  if (h == NULL) {
    lua_pushboolean(L, 0);
    return 1;
  }
  /* Neither waits for the server: a publish to the ack subject. */
  natsStatus st = nak ? natsMsg_Nak(h->h_msg, NULL) : natsMsg_Ack(h->h_msg, NULL);
  natsMsg_Destroy(h->h_msg);
  free(h);
  lua_pushboolean(L, st == NATS_OK);
  return 1;
}

/* nc:_js_stop(pull_id): stops fetching and closes the channel. */
static int l_js_stop(lua_State *L) {
  nconn_t *nc = checknc(L, 1);
  npull_t *p = findpull(nc, (uint64_t)luaL_checkinteger(L, 2));
  if (p) pull_stop(p);
  return 0;
}

/* nc:_js_delete(stream) -> true | nil, err (blocking; tests, demos). */
static int l_js_delete(lua_State *L) {
  nconn_t *nc = checkopen(L, 1);
  const char *stream = luaL_checkstring(L, 2);
  jsCtx *js = NULL;
  jsErrCode jerr = 0;
  natsStatus st = natsConnection_JetStream(&js, nc->n_conn, NULL);
  if (st == NATS_OK) st = js_DeleteStream(js, stream, NULL, &jerr);
  if (js) jsCtx_Destroy(js);
  if (st != NATS_OK) {
    lua_pushnil(L);
    lua_pushfstring(L, "jetstream: %s (%d)", natsStatus_GetText(st), (int)jerr);
    return 2;
  }
  lua_pushboolean(L, 1);
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

/* The methods table's __index: lua/braid/nats.lua's connection methods.
 * The connection's __index is the table of C methods itself, so that
 * nc:publish is found by the VM without a C call (bench/nats.lua's
 * publish loop); only the Lua methods come through here. */
static int l_index(lua_State *L) {
  if (lua_type(L, 2) != LUA_TSTRING) return 0;
  push_lua_method(L, lua_tostring(L, 2));
  return 1;
}

void braid__open_nats(lua_State *L) {
  static const luaL_Reg meta[] = { { "__tostring", l_tostring }, { NULL, NULL } };
  braid__newtype(L, &braid_nats_type, meta);
  static const luaL_Reg methods[] = {
    { "publish", l_publish }, { "_pub", l_pub }, { "_sub", l_sub }, { "_unsub", l_unsub }, { "_req", l_req },
    { "_forget", l_forget }, { "flush", l_flush }, { "close", l_close },
    { "stats", l_stats }, { "_js_pull", l_js_pull }, { "_js_ack", l_js_ack },
    { "_js_stop", l_js_stop }, { "_js_delete", l_js_delete }, { NULL, NULL } };
  luaL_getmetatable(L, "braid.nats");
  luaL_newlib(L, methods);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, l_index);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, -2);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, l_connect);
  lua_setfield(L, -2, "connect");
  lua_setfield(L, -2, "_nats");        /* braid._nats */
}
