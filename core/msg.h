/*
 * msg.h -- immutable, refcounted messages.
 *
 * Design notes
 *
 * A message is what travels through channels and settles futures: an
 * opaque byte buffer (the codec's encoding of a Lua value, or a C host's
 * bytes) plus an array of handle references (channels, futures, ... that
 * the value mentions).  The core never looks inside the bytes.
 *
 * A message is built once by its creator and immutable after it is first
 * shared, so any number of receivers may read it concurrently; publish to
 * many subscribers shares one message.  Data and handles live in the same
 * allocation as the header.
 */
#ifndef BRAID_MSG_H
#define BRAID_MSG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "refcnt.h"

typedef struct braid_msg {
  _Atomic size_t m_rc;          /* references */
  size_t m_len;                 /* bytes in m_data */
  uint32_t m_nhandles;          /* entries in m_handles */
  uint32_t m_tag;               /* free for the creator (e.g. codec version) */
  braid_obj_t **m_handles;      /* points into this allocation */
  unsigned char m_data[];       /* m_len bytes, then the handle array */
} braid_msg_t;

/* Returns a new message (one reference, the caller's) holding a copy of
 * data[0..len) and a new reference to each of handles[0..nhandles).  On
 * allocation failure returns NULL and retains nothing. */
braid_msg_t *braid_msg_new(const void *data, size_t len,
                           braid_obj_t *const *handles, size_t nhandles);

/* Returns a message with room for len bytes and nhandles handle slots, both
 * uninitialised except that every handle slot is NULL.  The creator fills
 * them (braid_msg_set_handle steals a reference) before sharing the message.
 * Returns NULL when out of memory. */
braid_msg_t *braid_msg_alloc(size_t len, size_t nhandles);

/* Stores h in slot i of a message being built; steals the caller's
 * reference to h. */
static inline void braid_msg_set_handle(braid_msg_t *m, size_t i, braid_obj_t *h) {
  m->m_handles[i] = h;
}

/* Immediate messages.  The commonest value sent, one small integer (an id,
 * a counter, a job number), travels in the pointer itself, as Go's channels
 * carry an int in the buffer slot: the low bit set (no message is at an odd
 * address), the integer in the other bits.  It is never allocated, retain
 * and release do nothing, and the codec's reader opens it as the encoding
 * of that one integer, so nothing but the codec's two ends tells it apart.
 * Integers outside [BRAID_MSG_IMM_MIN, BRAID_MSG_IMM_MAX] take a real
 * message. */
#define BRAID_MSG_IMM_MAX ((int64_t)(UINTPTR_MAX >> 2))
#define BRAID_MSG_IMM_MIN (-BRAID_MSG_IMM_MAX - 1)

static inline bool braid_msg_is_imm(const braid_msg_t *m) {
  return ((uintptr_t)m & 1u) != 0;
}

/* The immediate message holding i, which must be within the bounds above. */
static inline braid_msg_t *braid_msg_imm(int64_t i) {
  return (braid_msg_t *)(((uintptr_t)(intptr_t)i << 1) | 1u);
}

/* The integer an immediate message holds (an arithmetic shift: gcc and
 * clang define >> of a negative number so). */
static inline int64_t braid_msg_imm_value(const braid_msg_t *m) {
  return (int64_t)((intptr_t)(uintptr_t)m >> 1);
}

static inline void braid_msg_retain(braid_msg_t *m) {
  if (braid_msg_is_imm(m)) return;
  /* Relaxed: see braid_obj_retain. */
  atomic_fetch_add_explicit(&m->m_rc, 1, memory_order_relaxed);
}

/* Drops a reference; the last one releases every handle and frees the
 * message.  NULL and immediate messages are accepted and ignored. */
void braid_msg_release(braid_msg_t *m);

#endif
