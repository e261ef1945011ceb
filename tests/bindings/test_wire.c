/*
 * test_wire.c -- the wire format's one writer and reader (bindings/wire.h,
 * wire.c), without either codec: every record type written with
 * braid__wput_* reads back with braid__wnext field for field; every
 * truncation, a foreign tag, F_SHARED on a scalar, counts that the bytes
 * left cannot hold and out-of-range handle or upvalue numbers are refused;
 * the table counts (the receivers' presize hints) are the ones written.
 */
#include <math.h>

#include "lbraid.h"
#include "lruntime.h"
#include "test.h"
#include "wire.h"

/* Writes one of each record into b; returns how many records. */
static size_t write_all(braid_wbuf_t *b) {
  unsigned char *w = braid__wbuf_reserve(b, 512);
  ASSERT_NOT_NULL(w);
  w = braid__wput_varint(w, 13);                        /* values at top level */
  w = braid__wput_tag(w, T_NIL);
  w = braid__wput_tag(w, T_FALSE);
  w = braid__wput_tag(w, T_TRUE);
  w = braid__wput_int(w, INT64_MIN);
  w = braid__wput_flt(w, -0.0);
  w = braid__wput_str(w, "San Francisco", 13);
  unsigned char *tab = w;
  w = braid__wput_table(w, 0, 0);                       /* patched below */
  w = braid__wput_str(w, "a", 1);                       /* t[1] */
  w = braid__wput_str(w, "id", 2);                      /* key */
  w = braid__wput_int(w, 7);                            /* value */
  braid__wpatch_table(tab, 1, 1);
  braid__wmark_shared(tab);
  w = braid__wput_ref(w, 0);
  w = braid__wput_handle(w, 1);
  w = braid__wput_module(w, "string", 6, NULL, 0);
  w = braid__wput_module(w, "math", 4, "floor", 5);
  unsigned char *fn = w;
  w = braid__wput_func(w);
  memcpy(w, "\x1bLua", 4);                              /* the "dump" */
  w += 4;
  braid__wpatch_func(fn, 4);
  *w++ = 2;                                             /* nups */
  w = braid__wput_tag(w, T_ENV);
  w = braid__wput_upref(w, 5, 255);
  w = braid__wput_str(w, "", 0);
  braid__wbuf_end(b, w);
  return 13;
}

static braid_msg_t *msg_of(const braid_wbuf_t *b, size_t len, size_t nh) {
  braid_obj_t *hv[2] = { test_obj_new(), test_obj_new() };
  braid_wbuf_t c = *b;
  c.wb_len = len;
  braid_msg_t *m = braid__wmsg(&c, hv, nh, F_REFS);
  ASSERT_NOT_NULL(m);
  braid_obj_release(hv[0]);
  braid_obj_release(hv[1]);
  return m;
}

static bool next(braid_wrd_t *r, braid_wtok_t *t, unsigned type) {
  if (!braid__wnext(r, t)) return false;
  ASSERT_EQ_UINT(t->wt_type, type);
  return true;
}

TEST(test_wire_every_record_reads_back) {
  braid_wbuf_t b = { 0 };
  write_all(&b);
  braid_msg_t *m = msg_of(&b, b.wb_len, 2);
  ASSERT_EQ_UINT(m->m_tag, CODEC_MAGIC | F_REFS);
  braid_wrd_t r;
  braid_wtok_t t;
  size_t n;
  ASSERT(braid__wopen(&r, m, &n));
  ASSERT_EQ_UINT(n, 13);
  ASSERT(next(&r, &t, T_NIL) && !t.wt_shared);
  ASSERT(next(&r, &t, T_FALSE));
  ASSERT(next(&r, &t, T_TRUE));
  ASSERT(next(&r, &t, T_INT));
  ASSERT(t.wt_i == INT64_MIN);
  ASSERT(next(&r, &t, T_FLT));
  ASSERT(t.wt_n == 0.0 && signbit(t.wt_n));
  ASSERT(next(&r, &t, T_STR));
  ASSERT_EQ_UINT(t.wt_len, 13);
  ASSERT(memcmp(t.wt_s, "San Francisco", 13) == 0);
  ASSERT(next(&r, &t, T_TABLE));
  ASSERT(t.wt_shared);
  ASSERT_EQ_UINT(t.wt_narr, 1);                         /* the presize hints */
  ASSERT_EQ_UINT(t.wt_nhash, 1);
  ASSERT(next(&r, &t, T_STR) && t.wt_len == 1 && t.wt_s[0] == 'a');
  ASSERT(next(&r, &t, T_STR) && t.wt_len == 2);
  ASSERT(next(&r, &t, T_INT) && t.wt_i == 7);
  ASSERT(next(&r, &t, T_REF) && t.wt_ord == 0);
  ASSERT(next(&r, &t, T_HANDLE) && t.wt_ord == 1);
  ASSERT(next(&r, &t, T_MODULE) && t.wt_len == 6 && t.wt_key == NULL);
  ASSERT(memcmp(t.wt_s, "string", 6) == 0);
  ASSERT(next(&r, &t, T_MODFIELD) && t.wt_len == 4 && t.wt_keylen == 5);
  ASSERT(memcmp(t.wt_key, "floor", 5) == 0);
  ASSERT(next(&r, &t, T_FUNC) && t.wt_len == 4 && t.wt_nups == 2);
  ASSERT(memcmp(t.wt_s, "\x1bLua", 4) == 0);
  ASSERT(next(&r, &t, T_ENV));
  ASSERT(next(&r, &t, T_UPREF) && t.wt_ord == 5 && t.wt_up == 255);
  ASSERT(next(&r, &t, T_STR) && t.wt_len == 0);
  ASSERT(braid__wrd_done(&r));
  ASSERT(!braid__wnext(&r, &t));                        /* nothing left */
  /* Handles: a reference each, released with the message. */
  ASSERT_EQ_UINT(m->m_nhandles, 2);
  ASSERT_EQ_INT(obj_rc(m->m_handles[0]), 1);
  braid_msg_release(m);
  free(b.wb_buf);
}

/* Walks every record of m; false at the first refused one. */
static bool walk(braid_msg_t *m) {
  braid_wrd_t r;
  braid_wtok_t t;
  size_t n;
  if (!braid__wopen(&r, m, &n)) return false;
  while (!braid__wrd_done(&r))
    if (!braid__wnext(&r, &t)) return false;
  return true;
}

TEST(test_wire_truncations_refused) {
  braid_wbuf_t b = { 0 };
  write_all(&b);
  /* Each cut inside a record is refused; a cut between records is not
   * the reader's to notice (the decoders count the values). */
  int refused = 0;
  for (size_t len = 0; len < b.wb_len; len++) {
    braid_msg_t *m = msg_of(&b, len, 2);
    if (!walk(m)) refused++;
    braid_msg_release(m);
  }
  ASSERT_GT_INT(refused, (int)b.wb_len / 2);
  braid_msg_t *m = msg_of(&b, b.wb_len, 2);
  ASSERT(walk(m));
  braid_msg_release(m);
  /* Missing handles: index 1 of a message with one. */
  m = msg_of(&b, b.wb_len, 1);
  ASSERT(!walk(m));
  braid_msg_release(m);
  free(b.wb_buf);
}

static bool one(const unsigned char *data, size_t len) {
  braid_msg_t *m = braid_msg_new(data, len, NULL, 0);
  ASSERT_NOT_NULL(m);
  m->m_tag = CODEC_MAGIC;
  bool ok = walk(m);
  braid_msg_release(m);
  return ok;
}

TEST(test_wire_malformed_records) {
  static const unsigned char good[] = { 1, T_TRUE };
  ASSERT(one(good, sizeof good));
  static const unsigned char foreign[] = { 1, 99 };
  ASSERT(!one(foreign, sizeof foreign));
  static const unsigned char shared_int[] = { 1, T_TRUE | F_SHARED };
  ASSERT(!one(shared_int, sizeof shared_int));
  /* A table announcing more values than bytes left. */
  static const unsigned char big_table[] = { 1, T_TABLE, 3, 0, 0, 0, 0, 0, 0, 0, T_NIL, T_NIL };
  ASSERT(!one(big_table, sizeof big_table));
  static const unsigned char big_hash[] = { 1, T_TABLE, 0, 0, 0, 0, 2, 0, 0, 0, T_NIL, T_NIL, T_NIL };
  ASSERT(!one(big_hash, sizeof big_hash));
  /* A string longer than the message; a varint of 11 bytes. */
  static const unsigned char long_str[] = { 1, T_STR, 5, 'a' };
  ASSERT(!one(long_str, sizeof long_str));
  static const unsigned char long_varint[] = { 1, T_REF, 0x80, 0x80, 0x80, 0x80, 0x80,
                                               0x80, 0x80, 0x80, 0x80, 0x80, 0 };
  ASSERT(!one(long_varint, sizeof long_varint));
  /* Upvalue 0, an empty dump. */
  static const unsigned char up0[] = { 1, T_UPREF, 0, 0 };
  ASSERT(!one(up0, sizeof up0));
  static const unsigned char nodump[] = { 1, T_FUNC, 0, 0, 0, 0, 0 };
  ASSERT(!one(nodump, sizeof nodump));
  /* A count of values more than the bytes could hold, a foreign m_tag. */
  static const unsigned char count[] = { 5, T_NIL };
  braid_msg_t *m = braid_msg_new(count, sizeof count, NULL, 0);
  braid_wrd_t r;
  size_t n;
  m->m_tag = CODEC_MAGIC;
  ASSERT(!braid__wopen(&r, m, &n));
  m->m_tag = 0;
  ASSERT(!braid__wopen(&r, m, &n));
  braid_msg_release(m);
}

TEST(test_wire_buffer_growth_and_flags) {
  braid_wbuf_t b = { 0 };
  for (int i = 0; i < 10000; i++) {
    unsigned char *w = braid__wbuf_reserve(&b, 9);
    ASSERT_NOT_NULL(w);
    braid__wbuf_end(&b, braid__wput_int(w, i));
  }
  ASSERT_EQ_UINT(b.wb_len, 90000);
  int64_t v;
  memcpy(&v, b.wb_buf + 9 * 9999 + 1, 8);
  ASSERT(v == 9999);
  free(b.wb_buf);
  ASSERT_EQ_UINT(braid__wdepth_flags(DEC_LOCAL_FRAMES), 0);
  ASSERT_EQ_UINT(braid__wdepth_flags(DEC_LOCAL_FRAMES + 1), F_DEEP);
  ASSERT_EQ_UINT(braid__wvarint_size(127), 1);
  ASSERT_EQ_UINT(braid__wvarint_size(128), 2);
  ASSERT_EQ_UINT(braid__wvarint_size(UINT64_MAX), W_VARINT_MAX);
  /* The scalar messages built without a lua_State read back. */
  braid_msg_t *m = braid__msg_number(2.5);
  braid_wrd_t r;
  braid_wtok_t t;
  size_t n;
  ASSERT(braid__wopen(&r, m, &n) && n == 1 && braid__wnext(&r, &t));
  ASSERT(t.wt_type == T_FLT && t.wt_n == 2.5 && braid__wrd_done(&r));
  braid_msg_release(m);
}

TEST_LIST {
  RUN(test_wire_every_record_reads_back);
  RUN(test_wire_truncations_refused);
  RUN(test_wire_malformed_records);
  RUN(test_wire_buffer_growth_and_flags);
}
