/*
 * wire.c -- the out-of-line part of the wire format (wire.h defines the
 * format and holds its inline writer and reader): buffer growth, finishing
 * a message, and the messages and reads that need no lua_State (the timer
 * thread's braid.after/braid.ticker values, error reports).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lbraid.h"
#include "lruntime.h"

#include "wire.h"

bool braid__wbuf_grow(braid_wbuf_t *b, size_t n) {
  size_t cap = b->wb_cap ? b->wb_cap : 256;
  while (cap - b->wb_len < n) {
    if (cap > SIZE_MAX / 2) return false;
    cap *= 2;
  }
  unsigned char *nb = realloc(b->wb_buf, cap);
  if (nb == NULL) return false;
  b->wb_buf = nb;
  b->wb_cap = cap;
  return true;
}

braid_msg_t *braid__wmsg(const braid_wbuf_t *b, braid_obj_t *const *hv, size_t nh,
                         unsigned flags) {
  braid_msg_t *m = braid_msg_alloc(b->wb_len, nh);
  if (m == NULL) return NULL;
  if (b->wb_len) memcpy(m->m_data, b->wb_buf, b->wb_len);
  for (size_t i = 0; i < nh; i++) {
    braid_obj_retain(hv[i]);
    braid_msg_set_handle(m, i, hv[i]);
  }
  m->m_tag = CODEC_MAGIC | flags;
  return m;
}

braid_msg_t *braid__msg_number(double d) {
  braid_msg_t *m = braid_msg_alloc(1 + 9, 0);
  if (m == NULL) return NULL;
  m->m_tag = CODEC_MAGIC;
  braid__wput_flt(braid__wput_varint(m->m_data, 1), d);   /* one value */
  return m;
}

const char *braid__msg_first_string(braid_msg_t *m, size_t *len) {
  braid_wrd_t r;
  braid_wtok_t t;
  size_t n;
  if (!braid__wopen(&r, m, &n) || n < 1 || !braid__wnext(&r, &t) || t.wt_type != T_STR)
    return NULL;
  *len = t.wt_len;
  return t.wt_s;
}
