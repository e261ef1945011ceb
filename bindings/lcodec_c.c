/*
 * lcodec_c.c -- messages made from C values, without a lua_State, in the
 * codec's wire format (lcodec.c documents it): for the timer thread
 * (braid.after, braid.ticker).
 */
#include <string.h>

#include "lbraid.h"
#include "lruntime.h"

/* Must match lcodec.c: CODEC_MAGIC, and the record tags. */
enum { C_MAGIC = 0x62726400u, C_T_FLT = 5 };

braid_msg_t *braid__msg_number(double d) {
  braid_msg_t *m = braid_msg_alloc(2 + sizeof d, 0);
  if (m == NULL) return NULL;
  m->m_tag = C_MAGIC;
  m->m_data[0] = 1;                   /* one value (varint) */
  m->m_data[1] = C_T_FLT;
  memcpy(m->m_data + 2, &d, sizeof d);
  return m;
}
