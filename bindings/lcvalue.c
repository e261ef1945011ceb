/*
 * lcvalue.c -- plain C values (braid_value_t, include/braid.h) and their
 * messages, without a lua_State.
 *
 * Design notes
 *
 * Native functions run on threads that own no Lua state, and a C host's
 * threads send and receive on channels without one, so values are turned
 * into messages, and back, here in plain C.  The messages are exactly those
 * of the Lua codec (lcodec.c): both write and read the bytes only through
 * wire.h, which defines the wire format, so a script decodes what C
 * encodes and the other way round; tests/bindings/test_embed.c round-trips
 * values through both codecs to keep them in agreement.
 *
 * Encoding a C value: scalars are the codec's scalar records; an array is
 * a T_TABLE with only an array part, a map one with only a hash part; a
 * channel or future is a T_HANDLE.  A C value is a tree, so the encoder
 * never emits T_REF (and never sets F_REFS); it sets F_DEEP like lcodec.c
 * when containers nest deeper than the Lua decoder's local frames.
 *
 * Decoding a message from a script: a table with only 1..n becomes an
 * array, any other table a map; a table met twice (T_REF) is copied, and a
 * reference to a table still being decoded is a cycle, which C values
 * cannot hold (BRAID_EINVAL), as are functions, modules and handles other
 * than channels and futures.  Every container's final size is in its
 * record, so its items are allocated once, before its children are
 * decoded: a slot's address never changes, and the table of objects seen
 * (by ordinal, for T_REF) can point at the slots.  Both walks recurse on
 * the C stack, bounded by BRAID_VALUE_MAX_DEPTH.
 *
 * Partial results are always well-formed: a container's items are zeroed
 * (nil) when allocated and counted at once, so an error at any point is
 * cleaned up by clearing the root.
 */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lembed.h"

#include "wire.h"              /* the wire format, shared with lcodec.c */

_Static_assert(BRAID_TNIL == 0, "calloc'ed values must be nil");

/* ------------------------------------------------------------------------ */
/* Values                                                                    */

void braid_value_init_nil(braid_value_t *v) {
  memset(v, 0, sizeof *v);
  v->type = BRAID_TNIL;
}

void braid_value_init_boolean(braid_value_t *v, bool b) {
  braid_value_init_nil(v);
  v->type = BRAID_TBOOLEAN;
  v->u.boolean = b;
}

void braid_value_init_integer(braid_value_t *v, int64_t i) {
  braid_value_init_nil(v);
  v->type = BRAID_TINTEGER;
  v->u.integer = i;
}

void braid_value_init_number(braid_value_t *v, double n) {
  braid_value_init_nil(v);
  v->type = BRAID_TNUMBER;
  v->u.number = n;
}

void braid_value_init_array(braid_value_t *v) {
  braid_value_init_nil(v);
  v->type = BRAID_TARRAY;
}

void braid_value_init_map(braid_value_t *v) {
  braid_value_init_nil(v);
  v->type = BRAID_TMAP;
}

void braid_value_init_chan(braid_value_t *v, braid_chan_t *ch) {
  braid_value_init_nil(v);
  braid_chan_retain(ch);
  v->type = BRAID_TCHAN;
  v->u.chan = ch;
}

void braid_value_init_future(braid_value_t *v, braid_future_t *f) {
  braid_value_init_nil(v);
  braid_future_retain(f);
  v->type = BRAID_TFUTURE;
  v->u.future = f;
}

int braid_value_init_string(braid_value_t *v, const char *s, size_t len) {
  braid_value_init_nil(v);
  if (len == SIZE_MAX) return BRAID_ENOMEM;
  char *p = malloc(len + 1);
  if (p == NULL) return BRAID_ENOMEM;
  if (len) memcpy(p, s, len);
  p[len] = '\0';
  v->type = BRAID_TSTRING;
  v->u.string.ptr = p;
  v->u.string.len = len;
  return 0;
}

int braid_value_init_cstring(braid_value_t *v, const char *s) {
  return braid_value_init_string(v, s, strlen(s));
}

void braid_value_clear(braid_value_t *v) {
  if (v == NULL) return;
  switch (v->type) {
    case BRAID_TSTRING:
      free(v->u.string.ptr);
      break;
    case BRAID_TARRAY:
      for (size_t i = 0; i < v->u.array.len; i++) braid_value_clear(&v->u.array.items[i]);
      free(v->u.array.items);
      break;
    case BRAID_TMAP:
      for (size_t i = 0; i < v->u.map.len; i++) {
        braid_value_clear(&v->u.map.pairs[i].key);
        braid_value_clear(&v->u.map.pairs[i].val);
      }
      free(v->u.map.pairs);
      break;
    case BRAID_TCHAN:
      braid_chan_release(v->u.chan);
      break;
    case BRAID_TFUTURE:
      braid_future_release(v->u.future);
      break;
    default:
      break;
  }
  braid_value_init_nil(v);
}

int braid_value_copy(braid_value_t *dst, const braid_value_t *src) {
  switch (src->type) {
    case BRAID_TSTRING:
      return braid_value_init_string(dst, src->u.string.ptr, src->u.string.len);
    case BRAID_TARRAY: {
      size_t n = src->u.array.len;
      braid_value_init_array(dst);
      if (n == 0) return 0;
      braid_value_t *items = calloc(n, sizeof *items);
      if (items == NULL) return BRAID_ENOMEM;
      dst->u.array.items = items;
      dst->u.array.len = dst->u.array.cap = n;        /* all nil: clearable */
      for (size_t i = 0; i < n; i++) {
        if (braid_value_copy(&items[i], &src->u.array.items[i]) != 0) {
          braid_value_clear(dst);
          return BRAID_ENOMEM;
        }
      }
      return 0;
    }
    case BRAID_TMAP: {
      size_t n = src->u.map.len;
      braid_value_init_map(dst);
      if (n == 0) return 0;
      braid_pair_t *pairs = calloc(n, sizeof *pairs);
      if (pairs == NULL) return BRAID_ENOMEM;
      dst->u.map.pairs = pairs;
      dst->u.map.len = dst->u.map.cap = n;
      for (size_t i = 0; i < n; i++) {
        if (braid_value_copy(&pairs[i].key, &src->u.map.pairs[i].key) != 0 ||
            braid_value_copy(&pairs[i].val, &src->u.map.pairs[i].val) != 0) {
          braid_value_clear(dst);
          return BRAID_ENOMEM;
        }
      }
      return 0;
    }
    case BRAID_TCHAN:
      braid_value_init_chan(dst, src->u.chan);
      return 0;
    case BRAID_TFUTURE:
      braid_value_init_future(dst, src->u.future);
      return 0;
    default:
      *dst = *src;                                    /* a scalar: nothing owned */
      return 0;
  }
}

/* Makes room for one more element of size sz in *items (cap *cap). */
static int grow(void **items, size_t *cap, size_t len, size_t sz) {
  if (len < *cap) return 0;
  size_t ncap = *cap ? *cap * 2 : 4;
  if (ncap < *cap || ncap > SIZE_MAX / sz) return BRAID_ENOMEM;
  void *p = realloc(*items, ncap * sz);
  if (p == NULL) return BRAID_ENOMEM;
  *items = p;
  *cap = ncap;
  return 0;
}

int braid_array_push(braid_value_t *array, braid_value_t *item) {
  if (array == NULL || item == NULL || array->type != BRAID_TARRAY) return BRAID_EINVAL;
  void *items = array->u.array.items;
  int rc = grow(&items, &array->u.array.cap, array->u.array.len, sizeof(braid_value_t));
  array->u.array.items = items;
  if (rc) return rc;
  array->u.array.items[array->u.array.len++] = *item;
  braid_value_init_nil(item);
  return 0;
}

int braid_map_set(braid_value_t *map, braid_value_t *key, braid_value_t *val) {
  if (map == NULL || key == NULL || val == NULL || map->type != BRAID_TMAP) return BRAID_EINVAL;
  if (key->type == BRAID_TNIL || (key->type == BRAID_TNUMBER && isnan(key->u.number)))
    return BRAID_EINVAL;
  void *pairs = map->u.map.pairs;
  int rc = grow(&pairs, &map->u.map.cap, map->u.map.len, sizeof(braid_pair_t));
  map->u.map.pairs = pairs;
  if (rc) return rc;
  braid_pair_t *p = &map->u.map.pairs[map->u.map.len++];
  p->key = *key;
  p->val = *val;
  braid_value_init_nil(key);
  braid_value_init_nil(val);
  return 0;
}

const braid_value_t *braid_map_get(const braid_value_t *map, const char *key) {
  if (map == NULL || key == NULL || map->type != BRAID_TMAP) return NULL;
  size_t len = strlen(key);
  for (size_t i = map->u.map.len; i-- > 0;) {
    const braid_value_t *k = &map->u.map.pairs[i].key;
    if (k->type == BRAID_TSTRING && k->u.string.len == len &&
        memcmp(k->u.string.ptr, key, len) == 0)
      return &map->u.map.pairs[i].val;
  }
  return NULL;
}

/* ------------------------------------------------------------------------ */
/* Encoder                                                                   */

typedef struct enc {
  braid_wbuf_t b;               /* the records */
  braid_obj_t **hv;             /* handles met (borrowed until the end) */
  size_t nh, hcap;
  int maxdepth;                 /* deepest container nesting met */
} enc_t;

static int put_handle(enc_t *e, braid_obj_t *o) {
  if (e->nh == e->hcap) {
    size_t cap = e->hcap ? e->hcap * 2 : 4;
    braid_obj_t **nv = realloc(e->hv, cap * sizeof *nv);
    if (nv == NULL) return BRAID_ENOMEM;
    e->hv = nv;
    e->hcap = cap;
  }
  unsigned char *w = braid__wbuf_reserve(&e->b, 1 + W_VARINT_MAX);
  if (w == NULL) return BRAID_ENOMEM;
  braid__wbuf_end(&e->b, braid__wput_handle(w, e->nh));
  e->hv[e->nh++] = o;
  return 0;
}

static bool bad_key(const braid_value_t *k) {
  return k->type == BRAID_TNIL || (k->type == BRAID_TNUMBER && isnan(k->u.number));
}

static int enc_value(enc_t *e, const braid_value_t *v, int depth) {
  /* Every record but a string's or a handle's fits in W_TABLE_SIZE. */
  unsigned char *w = braid__wbuf_reserve(&e->b, W_TABLE_SIZE);
  if (w == NULL) return BRAID_ENOMEM;
  switch (v->type) {
    case BRAID_TNIL: w = braid__wput_tag(w, T_NIL); break;
    case BRAID_TBOOLEAN: w = braid__wput_tag(w, v->u.boolean ? T_TRUE : T_FALSE); break;
    case BRAID_TINTEGER: w = braid__wput_int(w, v->u.integer); break;
    case BRAID_TNUMBER: w = braid__wput_flt(w, v->u.number); break;
    case BRAID_TSTRING: {
      size_t sz = braid__wstr_size(v->u.string.len);
      if (sz == 0 || (w = braid__wbuf_reserve(&e->b, sz)) == NULL) return BRAID_ENOMEM;
      w = braid__wput_str(w, v->u.string.ptr, v->u.string.len);
      break;
    }
    case BRAID_TARRAY: case BRAID_TMAP: {
      if (++depth > BRAID_VALUE_MAX_DEPTH) return BRAID_EINVAL;
      if (depth > e->maxdepth) e->maxdepth = depth;
      bool arr = v->type == BRAID_TARRAY;
      size_t n = arr ? v->u.array.len : v->u.map.len;
      if (n > INT32_MAX) return BRAID_EINVAL;
      braid__wbuf_end(&e->b, braid__wput_table(w, arr ? (uint32_t)n : 0, arr ? 0 : (uint32_t)n));
      int rc = 0;
      for (size_t i = 0; rc == 0 && i < n; i++) {
        if (arr) {
          rc = enc_value(e, &v->u.array.items[i], depth);
        } else {
          if (bad_key(&v->u.map.pairs[i].key)) return BRAID_EINVAL;
          rc = enc_value(e, &v->u.map.pairs[i].key, depth);
          if (rc == 0) rc = enc_value(e, &v->u.map.pairs[i].val, depth);
        }
      }
      return rc;
    }
    case BRAID_TCHAN:
      if (v->u.chan == NULL) return BRAID_EINVAL;
      return put_handle(e, (braid_obj_t *)v->u.chan);
    case BRAID_TFUTURE:
      if (v->u.future == NULL) return BRAID_EINVAL;
      return put_handle(e, (braid_obj_t *)v->u.future);
    default:
      return BRAID_EINVAL;
  }
  braid__wbuf_end(&e->b, w);
  return 0;
}

int braid__value_encode(const braid_value_t *vals, size_t n, braid_msg_t **out) {
  enc_t e = { 0 };
  *out = NULL;
  int rc = 0;
  unsigned char *w = braid__wbuf_reserve(&e.b, W_VARINT_MAX);
  if (w == NULL) return BRAID_ENOMEM;
  braid__wbuf_end(&e.b, braid__wput_varint(w, n));
  for (size_t i = 0; rc == 0 && i < n; i++) rc = enc_value(&e, &vals[i], 0);
  if (rc == 0) {
    /* A C value is a tree: never F_REFS. */
    *out = braid__wmsg(&e.b, e.hv, e.nh, braid__wdepth_flags(e.maxdepth));
    if (*out == NULL) rc = BRAID_ENOMEM;
  }
  free(e.b.wb_buf);
  free(e.hv);
  return rc;
}

int braid__value_rejection(const braid_value_t *err, braid_msg_t **out) {
  braid_value_t two[2];
  two[0] = *err;                                      /* borrowed: only read */
  two[1].type = BRAID_TSTRING;                        /* no traceback: "" */
  two[1].u.string.ptr = (char *)"";
  two[1].u.string.len = 0;
  return braid__value_encode(two, 2, out);
}

braid_msg_t *braid__msg_error(const char *s, size_t len) {
  braid_value_t v;
  braid_msg_t *m = NULL;
  if (braid_value_init_string(&v, s, len) != 0) return NULL;
  braid__value_rejection(&v, &m);
  braid_value_clear(&v);
  return m;
}

/* ------------------------------------------------------------------------ */
/* Decoder                                                                   */

typedef struct obj {
  braid_value_t *o_slot;        /* where the object was decoded */
  bool o_done;                  /* complete (a T_REF to it is not a cycle) */
} obj_t;

typedef struct dec {
  braid_wrd_t r;                /* the message being read */
  obj_t *objs;                  /* by ordinal */
  size_t nobj, ocap;
  const char *what;             /* the fault, for braid__vfault_t */
  const char *type;             /* a handle's type name, or NULL */
} dec_t;

static int fault(dec_t *d, const char *what, int rc) {
  if (d->what == NULL) d->what = what;
  return rc;
}

#define CORRUPT(d) fault((d), "corrupt message", BRAID_EINVAL)
#define NOMEM(d) fault((d), "out of memory", BRAID_ENOMEM)

/* Gives the object just started in slot its ordinal. */
static int register_obj(dec_t *d, braid_value_t *slot) {
  if (d->nobj == d->ocap) {
    size_t cap = d->ocap ? d->ocap * 2 : 16;
    obj_t *no = realloc(d->objs, cap * sizeof *no);
    if (no == NULL) return BRAID_ENOMEM;
    d->objs = no;
    d->ocap = cap;
  }
  size_t ord = d->nobj++;
  d->objs[ord].o_slot = slot;
  d->objs[ord].o_done = false;
  return 0;
}

/* Decodes the children of the table whose header is t into out. */
static int dec_table(dec_t *d, const braid_wtok_t *t, braid_value_t *out, int depth);

/* Decodes one record into out (nil on entry); depth counts the open
 * containers around it.  On error out stays clearable. */
static int dec_value(dec_t *d, braid_value_t *out, int depth) {
  braid_wtok_t t;
  if (!braid__wnext(&d->r, &t)) return CORRUPT(d);
  switch (t.wt_type) {
    case T_NIL: return 0;
    case T_FALSE: braid_value_init_boolean(out, false); return 0;
    case T_TRUE: braid_value_init_boolean(out, true); return 0;
    case T_INT: braid_value_init_integer(out, t.wt_i); return 0;
    case T_FLT: braid_value_init_number(out, t.wt_n); return 0;
    case T_STR:
      if (braid_value_init_string(out, t.wt_s, t.wt_len) != 0) return NOMEM(d);
      return 0;
    case T_TABLE: {
      if (++depth > BRAID_VALUE_MAX_DEPTH) return fault(d, "nesting", BRAID_EINVAL);
      size_t ord = d->nobj;
      if (register_obj(d, out) != 0) return NOMEM(d);
      int rc = dec_table(d, &t, out, depth);
      /* By ordinal: decoding the children may have moved d->objs. */
      if (rc == 0) d->objs[ord].o_done = true;
      return rc;
    }
    case T_HANDLE: {
      braid_obj_t *h = d->r.wr_m->m_handles[t.wt_ord];
      if (h->o_type == &braid_chan_type) {
        braid_value_init_chan(out, (braid_chan_t *)h);
      } else if (h->o_type == &braid_future_type) {
        braid_value_init_future(out, (braid_future_t *)h);
      } else {
        d->type = h->o_type->ot_name;
        return fault(d, "handle", BRAID_EINVAL);
      }
      if (register_obj(d, out) != 0) return NOMEM(d);
      d->objs[d->nobj - 1].o_done = true;
      return 0;
    }
    case T_REF:
      if (t.wt_ord >= d->nobj) return CORRUPT(d);
      if (!d->objs[t.wt_ord].o_done) return fault(d, "cycle", BRAID_EINVAL);
      if (braid_value_copy(out, d->objs[t.wt_ord].o_slot) != 0) return NOMEM(d);
      return 0;
    case T_FUNC: return fault(d, "function", BRAID_EINVAL);
    case T_MODULE: case T_MODFIELD: return fault(d, "module", BRAID_EINVAL);
    default: return CORRUPT(d);                       /* T_ENV, T_UPREF: upvalues only */
  }
}

static int dec_table(dec_t *d, const braid_wtok_t *t, braid_value_t *out, int depth) {
  uint32_t narr = t->wt_narr, nhash = t->wt_nhash;
  int rc = 0;
  if (nhash == 0) {
    braid_value_init_array(out);
    if (narr == 0) return 0;
    braid_value_t *items = calloc(narr, sizeof *items);
    if (items == NULL) return NOMEM(d);
    out->u.array.items = items;
    out->u.array.len = out->u.array.cap = narr;
    for (uint32_t i = 0; rc == 0 && i < narr; i++) rc = dec_value(d, &items[i], depth);
    return rc;
  }
  size_t n = (size_t)narr + nhash;
  braid_value_init_map(out);
  braid_pair_t *pairs = calloc(n, sizeof *pairs);
  if (pairs == NULL) return NOMEM(d);
  out->u.map.pairs = pairs;
  out->u.map.len = out->u.map.cap = n;                /* all nil: clearable */
  size_t k = 0;
  for (uint32_t i = 0; rc == 0 && i < narr; i++) {
    rc = dec_value(d, &pairs[k].val, depth);
    if (rc == 0 && pairs[k].val.type != BRAID_TNIL) {
      braid_value_init_integer(&pairs[k].key, (int64_t)i + 1);
      k++;
    }
  }
  for (uint32_t i = 0; rc == 0 && i < nhash; i++) {
    rc = dec_value(d, &pairs[k].key, depth);
    if (rc == 0 && bad_key(&pairs[k].key)) rc = CORRUPT(d);
    if (rc == 0) rc = dec_value(d, &pairs[k].val, depth);
    if (rc == 0) k++;
  }
  if (rc == 0) out->u.map.len = k;                    /* the tail is nil: nothing owned */
  return rc;
}

/* Decodes up to max values of m into out (an array). */
static int decode(braid_msg_t *m, braid_value_t *out, size_t max, braid__vfault_t *vf) {
  dec_t d = { 0 };
  int rc = 0;
  size_t i = 0;
  braid_value_init_array(out);
  if (vf) {
    vf->vf_index = 0;
    vf->vf_what = NULL;
    vf->vf_type = NULL;
  }
  if (m == NULL) return 0;
  size_t n;
  if (!braid__wopen(&d.r, m, &n)) {
    rc = CORRUPT(&d);
    goto done;
  }
  if (n > max) n = max;
  if (n > 0) {
    braid_value_t *items = calloc(n, sizeof *items);
    if (items == NULL) {
      rc = fault(&d, "out of memory", BRAID_ENOMEM);
      goto done;
    }
    out->u.array.items = items;
    out->u.array.len = out->u.array.cap = n;
    for (; rc == 0 && i < n; i++) rc = dec_value(&d, &items[i], 0);
    if (rc == 0 && max == SIZE_MAX && !braid__wrd_done(&d.r)) rc = CORRUPT(&d);  /* trailing bytes */
  }
done:
  free(d.objs);
  if (rc != 0) {
    braid_value_clear(out);
    if (vf) {
      vf->vf_index = i;                               /* the value being decoded, 1-based */
      vf->vf_what = d.what;
      vf->vf_type = d.type;
    }
  }
  return rc;
}

int braid__value_decode(braid_msg_t *m, braid_value_t *out, braid__vfault_t *fault) {
  return decode(m, out, SIZE_MAX, fault);
}

int braid__value_decode1(braid_msg_t *m, braid_value_t *out, braid__vfault_t *fault) {
  braid_value_t all;
  int rc = decode(m, &all, 1, fault);
  if (rc != 0) {
    braid_value_init_nil(out);
    return rc;
  }
  if (all.u.array.len == 0) {
    braid_value_init_nil(out);
  } else {
    *out = all.u.array.items[0];                      /* moved */
  }
  free(all.u.array.items);
  return 0;
}
