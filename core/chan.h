/*
 * chan.h -- channels: rendezvous, buffered and unbounded, with overflow
 * policies, close with an error, deadlines and counters.
 *
 * Ownership: a successful send passes the caller's message reference to the
 * channel (and on to the receiver); a failed send leaves it with the caller.
 * A successful receive returns a reference the caller owns.
 *
 * Every blocking operation here is a one-case braid_select (select.h); the
 * runtime uses the split-phase select API to block Lua tasks on channels.
 */
#ifndef BRAID_CHAN_H
#define BRAID_CHAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "braid_errno.h"   /* BRAID_API */
#include "msg.h"
#include "refcnt.h"

typedef struct braid_chan braid_chan_t;

#define BRAID_UNBOUNDED SIZE_MAX

typedef enum braid_policy {
  BRAID_POLICY_BLOCK = 0,   /* a full channel makes the sender wait */
  BRAID_POLICY_DROP = 1,    /* a full channel drops the new value */
  BRAID_POLICY_SLIDE = 2,   /* a full channel drops its oldest value */
} braid_policy_t;

typedef struct braid_chan_stats {
  size_t len;               /* values buffered now */
  size_t cap;               /* capacity; BRAID_UNBOUNDED when unbounded */
  uint64_t sent;            /* values that entered the channel */
  uint64_t received;        /* values taken out */
  uint64_t dropped;         /* values lost to the drop/slide policy */
  bool closed;
} braid_chan_stats_t;

extern braid_objtype_t braid_chan_type;

/* Returns a new channel (one reference, the caller's) or NULL when out of
 * memory or policy is not a braid_policy_t. */
braid_chan_t *braid_chan_new(size_t cap, braid_policy_t policy);

static inline void braid_chan_retain(braid_chan_t *ch) { braid_obj_retain((braid_obj_t *)ch); }
static inline void braid_chan_release(braid_chan_t *ch) { braid_obj_release((braid_obj_t *)ch); }
static inline uint64_t braid_chan_id(braid_chan_t *ch) { return ((braid_obj_t *)ch)->o_id; }

/* Sends m, waiting until the deadline (clock.h) for room or a receiver.
 * Returns 0 (m is the channel's; with drop/slide a full channel counts a
 * drop), BRAID_ECLOSED, BRAID_ETIMEDOUT, BRAID_ENOMEM (unbounded growth
 * failed); on error m is still the caller's.  Blocks the OS thread. */
int braid_chan_send_until(braid_chan_t *ch, braid_msg_t *m, int64_t deadline);

/* Receives into *out, waiting until the deadline.  Returns 0 (*out is the
 * caller's), BRAID_ETIMEDOUT (*out NULL), or BRAID_ECLOSED once closed and
 * drained, with *out a new reference to the close error message or NULL. */
int braid_chan_recv_until(braid_chan_t *ch, braid_msg_t **out, int64_t deadline);

/* Never block: BRAID_EAGAIN instead of waiting (full / empty). */
int braid_chan_try_send(braid_chan_t *ch, braid_msg_t *m);
int braid_chan_try_recv(braid_chan_t *ch, braid_msg_t **out);

/* Closes ch.  err (may be NULL) becomes the close error that receivers get
 * once the buffer is drained; its reference is stolen.  Wakes every blocked
 * receiver (BRAID_ECLOSED) and sender (BRAID_ECLOSED, message returned).
 * Returns 0, or BRAID_ECLOSED when ch was already closed (err is released,
 * nothing else changes). */
int braid_chan_close(braid_chan_t *ch, braid_msg_t *err);

void braid_chan_stats(braid_chan_t *ch, braid_chan_stats_t *st);
/* Also braid.h's (BRAID_API: exported). */
BRAID_API size_t braid_chan_len(braid_chan_t *ch);
BRAID_API bool braid_chan_is_closed(braid_chan_t *ch);

#endif
