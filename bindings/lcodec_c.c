/*
 * lcodec_c.c -- messages made from C values, without a lua_State, in the
 * codec's wire format (lcodec.c documents it): for the timer thread
 * (braid.after, braid.ticker).
 */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "lbraid.h"
#include "lruntime.h"

#include "lcodec.h"             /* the wire format, shared with lcodec.c */

braid_msg_t *braid__msg_number(double d) {
  braid_msg_t *m = braid_msg_alloc(2 + sizeof d, 0);
  if (m == NULL) return NULL;
  m->m_tag = CODEC_MAGIC;
  m->m_data[0] = 1;                   /* one value (varint) */
  m->m_data[1] = T_FLT;
  memcpy(m->m_data + 2, &d, sizeof d);
  return m;
}

/* Reads a varint at *p (bounded by end); false when malformed. */
static bool get_varint(const unsigned char **p, const unsigned char *end, uint64_t *v) {
  *v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (*p >= end) return false;
    unsigned b = *(*p)++;
    *v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) return true;
  }
  return false;
}

const char *braid__msg_first_string(braid_msg_t *m, size_t *len) {
  if (m == NULL || (m->m_tag & CODEC_MAGIC_MASK) != CODEC_MAGIC) return NULL;
  const unsigned char *p = m->m_data, *end = m->m_data + m->m_len;
  uint64_t n, l;
  if (!get_varint(&p, end, &n) || n < 1 || p >= end || *p++ != T_STR) return NULL;
  if (!get_varint(&p, end, &l) || l > (uint64_t)(end - p)) return NULL;
  *len = (size_t)l;
  return (const char *)p;
}
