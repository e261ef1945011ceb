/*
 * wire.h -- the message wire format: its definition, and the one writer and
 * the one reader of its bytes (internal; no Lua).
 *
 * Design notes
 *
 * Two codecs turn values into messages and back: lcodec.c for Lua values
 * (in a lua_State) and lcvalue.c for plain C values (braid_value_t, native
 * functions and C hosts, no lua_State).  Each walks its own kind of value,
 * but neither writes or reads a byte of the format itself: the records are
 * written by the braid__wput_* functions below (after braid__wbuf_reserve
 * or a size computed with braid__w*_size) and read, one record header at a
 * time, by braid__wnext, which also does every bounds check.  So the tags,
 * the varints, the fixed-size fields, the buffer growth and the limits are
 * written once, here; the hot paths are static inline so that the Lua codec
 * pays no call for them.  tests/bindings/test_embed.c round-trips values
 * through both codecs, tests/fuzz/fuzz_codec.c feeds both decoders random
 * messages.
 *
 * Wire format.  m_tag is CODEC_MAGIC | flags (F_REFS: the message holds
 * shared objects; F_DEEP: it nests deeper than the Lua decoder's local
 * frames, DEC_LOCAL_FRAMES).  m_data is a varint count of values, then one
 * record per value.  A record is a tag byte, then:
 *
 *   T_NIL, T_FALSE, T_TRUE     nothing
 *   T_INT, T_FLT               8 raw bytes (host order: messages never
 *                              leave the process), so -0.0, NaN, inf and
 *                              math.mininteger survive and the subtype is
 *                              kept
 *   T_STR                      varint length, the bytes (contiguous: see
 *                              braid__msg_first_string)
 *   T_TABLE                    u32 narr, u32 nhash, narr values (t[1] ..
 *                              t[narr]), then nhash key/value pairs.  The
 *                              counts are exact, so they are also the
 *                              receiver's presize hints (lua_createtable,
 *                              or one allocation of a C array or map)
 *   T_FUNC                     u32 length, lua_dump bytes (not stripped),
 *                              u8 nups, nups upvalue records: a value, or
 *                              T_ENV (rebound to braid__pushenv), or T_UPREF
 *   T_HANDLE                   varint index into m_handles
 *   T_REF                      varint ordinal of an object seen earlier
 *   T_UPREF                    varint ordinal of a function seen earlier,
 *                              varint upvalue number: the same upvalue
 *                              (lua_upvaluejoin on decode)
 *   T_MODULE                   varint length, name: require(name)
 *   T_MODFIELD                 name, then varint length, key: require(name)[key]
 *
 * Varints are little-endian base 128 (7 bits a byte, high bit: more), at
 * most 10 bytes.  Tables, Lua functions and handles are "objects": each
 * gets the next ordinal, in the same pre-order on both sides.  When an
 * object is met a second time, the encoder emits T_REF and sets F_SHARED on
 * the tag byte of the object's first record (patched in place), so a
 * decoder keeps only the shared objects.  F_SHARED on any other record is
 * corrupt.
 *
 * Records are self-delimiting: a message's records can be walked in order
 * with braid__wnext alone, without knowing the nesting (that is how the
 * fuzz target tells messages with bytecode apart, which the Lua decoder
 * trusts: see lcodec.c, "Limits and trust").
 *
 * Trust.  braid__wnext bounds-checks every field against the end of the
 * message: a count is never more than the bytes left could hold (each
 * record is at least one byte), so a decoder may allocate what a header
 * announces before reading the children.
 */
#ifndef BRAID_WIRE_H
#define BRAID_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "msg.h"
#include "refcnt.h"

#define CODEC_MAGIC 0x62726400u   /* "brd" + one byte of flags */
#define CODEC_MAGIC_MASK 0xffffff00u
#define F_REFS 0x01u              /* m_tag: some object has F_SHARED */
#define F_DEEP 0x02u              /* m_tag: nesting deeper than DEC_LOCAL_FRAMES */

/* The values are part of the format.  Append, never renumber. */
enum {
  T_NIL = 1, T_FALSE = 2, T_TRUE = 3, T_INT = 4, T_FLT = 5, T_STR = 6,
  T_TABLE = 7, T_FUNC = 8, T_HANDLE = 9, T_REF = 10, T_UPREF = 11,
  T_MODULE = 12, T_MODFIELD = 13, T_ENV = 14
};
#define F_SHARED 0x80u            /* on a T_TABLE/T_FUNC/T_HANDLE tag byte */

#define DEC_LOCAL_FRAMES 32       /* Lua decoder frames on the C stack */

#define W_VARINT_MAX 10           /* bytes of the longest varint */
#define W_TABLE_SIZE 9            /* tag, u32 narr, u32 nhash */
#define W_FUNC_HEAD 5             /* tag, u32 dump length */

_Static_assert(sizeof(int64_t) == 8 && sizeof(double) == 8,
               "the format stores integers and floats in 8 bytes");

/* The m_tag flags of a message whose containers nest maxdepth deep (a
 * top-level table is depth 1). */
static inline unsigned braid__wdepth_flags(int maxdepth) {
  return maxdepth > DEC_LOCAL_FRAMES ? F_DEEP : 0;
}

/* ------------------------------------------------------------------------ */
/* Writer                                                                    */

/* A growable buffer of records.  Owned by its encoder (which frees wb_buf
 * or keeps it for the next message). */
typedef struct braid_wbuf {
  unsigned char *wb_buf;
  size_t wb_len, wb_cap;
} braid_wbuf_t;

/* Grows b so that n more bytes fit; false when out of memory (b is then
 * unchanged).  Out of line: the rare case of braid__wbuf_reserve. */
bool braid__wbuf_grow(braid_wbuf_t *b, size_t n);

/* Returns where n more bytes go (the caller adds what it wrote to wb_len,
 * or sets wb_len with braid__wbuf_end), or NULL when out of memory. */
static inline unsigned char *braid__wbuf_reserve(braid_wbuf_t *b, size_t n) {
  if (b->wb_cap - b->wb_len < n && !braid__wbuf_grow(b, n)) return NULL;
  return b->wb_buf + b->wb_len;
}

/* Ends an append that wrote up to w (inside the reserved room). */
static inline void braid__wbuf_end(braid_wbuf_t *b, unsigned char *w) {
  b->wb_len = (size_t)(w - b->wb_buf);
}

static inline size_t braid__wvarint_size(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) { v >>= 7; n++; }
  return n;
}

static inline unsigned char *braid__wput_varint(unsigned char *w, uint64_t v) {
  while (v >= 0x80) {
    *w++ = (unsigned char)(v | 0x80);
    v >>= 7;
  }
  *w++ = (unsigned char)v;
  return w;
}

/* T_NIL, T_FALSE, T_TRUE, T_ENV: 1 byte. */
static inline unsigned char *braid__wput_tag(unsigned char *w, unsigned tag) {
  *w++ = (unsigned char)tag;
  return w;
}

/* T_INT, T_FLT: 9 bytes. */
static inline unsigned char *braid__wput_int(unsigned char *w, int64_t i) {
  *w++ = T_INT;
  memcpy(w, &i, 8);
  return w + 8;
}

static inline unsigned char *braid__wput_flt(unsigned char *w, double n) {
  *w++ = T_FLT;
  memcpy(w, &n, 8);
  return w + 8;
}

/* T_STR of len bytes: braid__wstr_size(len) bytes (0 when that overflows). */
static inline size_t braid__wstr_size(size_t len) {
  return len > SIZE_MAX - 1 - W_VARINT_MAX ? 0 : 1 + braid__wvarint_size(len) + len;
}

/* Copies n bytes, inline for up to 16 (the field names and tags of most
 * records: a call to memcpy cost more than the copy). */
static inline void braid__wcopy(unsigned char *w, const char *s, size_t n) {
  if (n >= 8 && n <= 16) {                            /* two overlapping words */
    uint64_t a, b;
    memcpy(&a, s, 8);
    memcpy(&b, s + n - 8, 8);
    memcpy(w, &a, 8);
    memcpy(w + n - 8, &b, 8);
  } else if (n >= 4 && n < 8) {
    uint32_t a, b;
    memcpy(&a, s, 4);
    memcpy(&b, s + n - 4, 4);
    memcpy(w, &a, 4);
    memcpy(w + n - 4, &b, 4);
  } else if (n < 4) {
    for (size_t i = 0; i < n; i++) w[i] = (unsigned char)s[i];
  } else {
    memcpy(w, s, n);
  }
}

static inline unsigned char *braid__wput_str(unsigned char *w, const char *s, size_t len) {
  *w++ = T_STR;
  w = braid__wput_varint(w, len);
  braid__wcopy(w, s, len);
  return w + len;
}

/* T_TABLE header: W_TABLE_SIZE bytes.  An encoder that learns the counts
 * only after the children writes it with zeros and patches it. */
static inline unsigned char *braid__wput_table(unsigned char *w, uint32_t narr, uint32_t nhash) {
  *w = T_TABLE;
  memcpy(w + 1, &narr, 4);
  memcpy(w + 5, &nhash, 4);
  return w + W_TABLE_SIZE;
}

static inline void braid__wpatch_table(unsigned char *rec, uint32_t narr, uint32_t nhash) {
  memcpy(rec + 1, &narr, 4);
  memcpy(rec + 5, &nhash, 4);
}

/* T_FUNC header: W_FUNC_HEAD bytes; the dump follows (appended to the
 * buffer by lua_dump), then braid__wpatch_func sets its length, then one
 * byte of nups (patched when the upvalues are done). */
static inline unsigned char *braid__wput_func(unsigned char *w) {
  *w = T_FUNC;
  memset(w + 1, 0, 4);
  return w + W_FUNC_HEAD;
}

static inline void braid__wpatch_func(unsigned char *rec, uint32_t dumplen) {
  memcpy(rec + 1, &dumplen, 4);
}

/* T_HANDLE, T_REF: at most 1 + W_VARINT_MAX bytes; T_UPREF twice that. */
static inline unsigned char *braid__wput_handle(unsigned char *w, uint64_t index) {
  *w++ = T_HANDLE;
  return braid__wput_varint(w, index);
}

static inline unsigned char *braid__wput_ref(unsigned char *w, uint64_t ord) {
  *w++ = T_REF;
  return braid__wput_varint(w, ord);
}

static inline unsigned char *braid__wput_upref(unsigned char *w, uint64_t ord, uint64_t up) {
  *w++ = T_UPREF;
  w = braid__wput_varint(w, ord);
  return braid__wput_varint(w, up);
}

/* Marks the object whose record starts at rec as shared (it is referred
 * to again); the message then needs F_REFS. */
static inline void braid__wmark_shared(unsigned char *rec) { *rec |= F_SHARED; }

/* T_MODULE (key NULL) or T_MODFIELD: at most this many bytes. */
static inline size_t braid__wmodule_size(size_t namelen, size_t keylen) {
  return 1 + W_VARINT_MAX + namelen + W_VARINT_MAX + keylen;
}

static inline unsigned char *braid__wput_module(unsigned char *w, const char *name, size_t namelen,
                                                const char *key, size_t keylen) {
  *w++ = key ? T_MODFIELD : T_MODULE;
  w = braid__wput_varint(w, namelen);
  memcpy(w, name, namelen);
  w += namelen;
  if (key) {
    w = braid__wput_varint(w, keylen);
    memcpy(w, key, keylen);
    w += keylen;
  }
  return w;
}

/* Returns a new message holding b's bytes and a new reference to each of
 * hv[0..nh), tagged CODEC_MAGIC | flags; NULL when out of memory (nothing
 * retained). */
braid_msg_t *braid__wmsg(const braid_wbuf_t *b, braid_obj_t *const *hv, size_t nh,
                         unsigned flags);

/* ------------------------------------------------------------------------ */
/* Reader                                                                    */

typedef struct braid_wrd {
  const unsigned char *wr_p, *wr_end;
  braid_msg_t *wr_m;            /* for T_HANDLE indices */
  unsigned char wr_imm[10];     /* an immediate message's encoding */
} braid_wrd_t;

/* One record's header, as braid__wnext read it.  Strings point into the
 * message. */
typedef struct braid_wtok {
  unsigned wt_type;             /* T_*, without F_SHARED */
  bool wt_shared;               /* F_SHARED was set (objects only) */
  union {
    int64_t wt_i;               /* T_INT */
    double wt_n;                /* T_FLT */
    uint64_t wt_ord;            /* T_REF, T_UPREF: ordinal; T_HANDLE: index
                                   of a non-NULL handle of the message */
    struct { uint32_t wt_narr, wt_nhash; };  /* T_TABLE, both <= INT32_MAX */
  };
  const char *wt_s;             /* T_STR, T_FUNC (the dump), T_MODULE/T_MODFIELD name */
  size_t wt_len;                /* its length (> 0 for a dump) */
  const char *wt_key;           /* T_MODULE/T_MODFIELD: the key, or NULL */
  union {
    size_t wt_keylen;           /* T_MODFIELD: the key's length */
    uint64_t wt_up;             /* T_UPREF: upvalue number, 1..255 */
    unsigned wt_nups;           /* T_FUNC: upvalue records that follow */
  };
} braid_wtok_t;

static inline bool braid__wrd_varint(braid_wrd_t *r, uint64_t *v) {
  uint64_t x = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (r->wr_p >= r->wr_end) return false;
    unsigned b = *r->wr_p++;
    x |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) { *v = x; return true; }
  }
  *v = 0;
  return false;
}

/* A varint that counts bytes or records still to come: at most what is
 * left (each record is at least one byte). */
static inline bool braid__wrd_count(braid_wrd_t *r, size_t *n) {
  uint64_t v;
  bool ok = braid__wrd_varint(r, &v) && v <= (uint64_t)(r->wr_end - r->wr_p);
  *n = ok ? (size_t)v : 0;                          /* set either way (see braid__wnext) */
  return ok;
}

/* n bytes; sets *s to them. */
static inline bool braid__wrd_bytes(braid_wrd_t *r, size_t n, const char **s) {
  if ((size_t)(r->wr_end - r->wr_p) < n) { *s = NULL; return false; }
  *s = (const char *)r->wr_p;
  r->wr_p += n;
  return true;
}

static inline bool braid__wrd_fixed(braid_wrd_t *r, void *to, size_t n) {
  if ((size_t)(r->wr_end - r->wr_p) < n) { memset(to, 0, n); return false; }
  memcpy(to, r->wr_p, n);
  r->wr_p += n;
  return true;
}

/* Starts reading m: checks its tag, sets *n to its count of values.  False
 * when m is not a message of this format. */
static inline bool braid__wopen(braid_wrd_t *r, braid_msg_t *m, size_t *n) {
  if (m != NULL && braid_msg_is_imm(m)) {          /* one integer (msg.h) */
    r->wr_m = m;
    r->wr_p = r->wr_imm;
    r->wr_end = braid__wput_int(braid__wput_varint(r->wr_imm, 1), braid_msg_imm_value(m));
    return braid__wrd_count(r, n);
  }
  if (m == NULL || (m->m_tag & CODEC_MAGIC_MASK) != CODEC_MAGIC) return false;
  r->wr_m = m;
  r->wr_p = m->m_data;
  r->wr_end = m->m_data + m->m_len;
  return braid__wrd_count(r, n);
}

/* The bytes left: a complete message has none after its last record. */
static inline bool braid__wrd_done(const braid_wrd_t *r) { return r->wr_p == r->wr_end; }

/* The bodies of the scalar records (after the tag byte): a decoder's hot
 * path reads the tag with braid__wrd_tag and these directly, without a
 * token; braid__wnext uses them too. */
static inline bool braid__wrd_int(braid_wrd_t *r, int64_t *i) { return braid__wrd_fixed(r, i, 8); }
static inline bool braid__wrd_flt(braid_wrd_t *r, double *n) { return braid__wrd_fixed(r, n, 8); }
static inline bool braid__wrd_str(braid_wrd_t *r, const char **s, size_t *len) {
  return braid__wrd_count(r, len) && braid__wrd_bytes(r, *len, s);
}

/* Reads the next record's tag byte: its type (T_*) and whether it has
 * F_SHARED.  False at the end or for F_SHARED on a record that is not an
 * object (an unknown type is refused by the body's reader). */
static inline bool braid__wrd_tag(braid_wrd_t *r, unsigned *type, bool *shared) {
  if (r->wr_p >= r->wr_end) return false;
  unsigned tag = *r->wr_p++;
  *type = tag & ~F_SHARED;
  *shared = (tag & F_SHARED) != 0;
  return !*shared || *type == T_TABLE || *type == T_FUNC || *type == T_HANDLE;
}

/* Reads the rest of a record whose tag braid__wrd_tag read (type, shared)
 * into *t.  False when it is malformed, truncated or of an unknown type. */
static inline bool braid__wrd_body(braid_wrd_t *r, unsigned type, bool shared, braid_wtok_t *t) {
  t->wt_type = type;
  t->wt_shared = shared;
  /* Only the fields of the record's type are set, and these always (for
   * compilers that cannot see that callers read them only on success). */
  t->wt_s = t->wt_key = NULL;
  t->wt_len = t->wt_keylen = 0;
  switch (type) {
    case T_NIL: case T_FALSE: case T_TRUE: case T_ENV:
      return true;
    case T_INT:
      return braid__wrd_int(r, &t->wt_i);
    case T_FLT:
      return braid__wrd_flt(r, &t->wt_n);
    case T_STR:
      return braid__wrd_str(r, &t->wt_s, &t->wt_len);
    case T_TABLE: {
      if (!braid__wrd_fixed(r, &t->wt_narr, 4) || !braid__wrd_fixed(r, &t->wt_nhash, 4))
        return false;
      size_t left = (size_t)(r->wr_end - r->wr_p);
      return t->wt_narr <= left && t->wt_nhash <= (left - t->wt_narr) / 2 &&
             t->wt_narr <= INT32_MAX && t->wt_nhash <= INT32_MAX;
    }
    case T_FUNC: {
      uint32_t n;
      const char *nups;
      if (!braid__wrd_fixed(r, &n, 4) || n == 0 || !braid__wrd_bytes(r, n, &t->wt_s) ||
          !braid__wrd_bytes(r, 1, &nups))
        return false;
      t->wt_len = n;
      t->wt_nups = (unsigned char)*nups;
      return (size_t)(r->wr_end - r->wr_p) >= t->wt_nups;
    }
    case T_HANDLE:
      return braid__wrd_varint(r, &t->wt_ord) && t->wt_ord < r->wr_m->m_nhandles &&
             r->wr_m->m_handles[t->wt_ord] != NULL;
    case T_REF:
      return braid__wrd_varint(r, &t->wt_ord);
    case T_UPREF:
      return braid__wrd_varint(r, &t->wt_ord) && braid__wrd_varint(r, &t->wt_up) &&
             t->wt_up >= 1 && t->wt_up <= 255;
    case T_MODULE: case T_MODFIELD:
      if (!braid__wrd_str(r, &t->wt_s, &t->wt_len)) return false;
      return type == T_MODULE || braid__wrd_str(r, &t->wt_key, &t->wt_keylen);
    default:
      return false;
  }
}

/* Reads the next record's header (for a table or a function, not its
 * children, which are the records that follow) into *t.  False when it is
 * malformed or truncated. */
static inline bool braid__wnext(braid_wrd_t *r, braid_wtok_t *t) {
  unsigned type;
  bool shared;
  return braid__wrd_tag(r, &type, &shared) && braid__wrd_body(r, type, shared, t);
}

#endif
