/*
 * chan.c -- channels (see chan.h; invariants in internal.h).
 *
 * Design notes
 *
 * A channel is a mutex (the object's o_mtx), a ring buffer of message
 * pointers, a closed flag with an optional error message, and two FIFO
 * queues of blocked senders and receivers, as in Go's runtime/chan.go.
 *
 * A sender that finds a blocked receiver hands its message straight to the
 * receiver's waiter (no buffer copy); a receiver that takes from a full
 * buffer refills it from the first blocked sender, keeping FIFO order.  The
 * ring starts small and doubles up to the capacity, so a channel made with a
 * large or unbounded capacity costs nothing until it is used.
 *
 * Lock rule: a partner is claimed (its waiter's fired word won) under the
 * channel lock but woken only after the lock is dropped.
 *
 * The lock-free ring
 *
 * With that design every message takes the lock twice, once on each side,
 * and on two cores the lock's cache line moves between them twice per
 * message: that, not the work, bounded a producer and a consumer.  A
 * buffered channel of policy block and at most BRAID_RING_MAX slots
 * (c_fast) therefore keeps its values in a bounded ring after Vyukov's
 * MPMC queue, as crossbeam's array channel does:
 *
 *   - A position is a lap plus a slot index; c_lap is a power of two above
 *     twice the capacity, so the next position after the last slot is the
 *     next lap's slot 0.  Each slot's stamp says what it waits for: stamp
 *     == pos, free for the sender at pos; pos + 1, full for the receiver at
 *     pos; after that receive, pos + c_lap, free for the next lap.
 *   - A sender claims c_rtail by compare-and-swap, then writes the value
 *     and the stamp; a receiver claims c_rhead likewise, takes the value
 *     and frees the slot.  Sender and receiver meet only in the slot's line.
 *
 * Blocking keeps Go's queues and the lock.  A queue that is not empty is
 * announced twice (under the lock, before the queued party looks at the
 * ring once more):
 *
 *   - in c_wait (CW_RECV, CW_SEND), which every lock-free operation reads
 *     after its compare-and-swap: a sender that sees CW_RECV takes the lock
 *     and hands the ring's oldest values to the queued receivers
 *     (settle_locked), a receiver that sees CW_SEND moves queued senders'
 *     values into the slots it freed.  The compare-and-swap and the read are
 *     seq_cst, as are the announcement and the queued party's second look
 *     at the other position, so at least one side sees the other (Dekker):
 *     no wake-up is lost.
 *   - in a low bit of the position its own side claims (RH_QUEUED on
 *     c_rhead for receivers, RT_QUEUED on c_rtail for senders), which makes
 *     every lock-free compare-and-swap on it fail: while parties of one side
 *     are queued only the lock holder moves that side's position, so it may
 *     look at the ring, claim a waiter and then take the value it saw.
 *     A locked operation settles the queues before its own try, and a
 *     lock-free one that finds the ring empty while senders are queued (or
 *     full while receivers are) takes the lock, so a try does not fail for
 *     want of a settle still on its way from another thread.
 *
 * Close sets RT_CLOSED on c_rtail, so no send starts after it; values
 * already claimed are still delivered, to queued receivers first.  A
 * compare-and-swap that lost to an operation half done (its position taken,
 * its stamp not yet written) spins until the stamp is written: a few
 * instructions, unless that thread was preempted just there.
 */
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "compiler.h"
#include "err.h"
#include "internal.h"
#include "select.h"

static void chan_destroy(braid_obj_t *o);

braid_objtype_t braid_chan_type = { "chan", chan_destroy, 0 };

enum {
  RT_QUEUED = 1,              /* c_rtail: senders are queued */
  RT_CLOSED = 2,              /* c_rtail: closed, no send may start */
  RH_QUEUED = 1,              /* c_rhead: receivers are queued */
  CW_RECV = 1,                /* c_wait: receivers are queued */
  CW_SEND = 2,                /* c_wait: senders are queued */
};

/* What a ring operation found. */
enum { R_OK, R_FULL, R_EMPTY, R_CLOSED, R_LOCK };

/* Not a BRAID_E* code: "take the lock", from the fast paths. */
#define FAST_LOCK 1

braid_chan_t *braid_chan_new(size_t cap, braid_policy_t policy) {
  if (policy != BRAID_POLICY_BLOCK && policy != BRAID_POLICY_DROP &&
      policy != BRAID_POLICY_SLIDE)
    return NULL;
  /* Aligned so that the ring's positions sit on lines of their own. */
  braid_chan_t *ch = aligned_alloc(BRAID_LINE, sizeof *ch);
  if (ch == NULL) return NULL;
  memset(ch, 0, sizeof *ch);
  if (braid_obj_init(&ch->c_obj, &braid_chan_type) != 0) {
    free(ch);
    return NULL;
  }
  ch->c_cap = cap;
  ch->c_policy = policy;
  if (policy == BRAID_POLICY_BLOCK && cap >= 1 && cap <= BRAID_RING_MAX) {
    ch->c_fast = true;
    uint64_t lap = 1;
    while (lap <= 2 * (uint64_t)cap) lap <<= 1;
    ch->c_lap = lap;
  }
  return ch;
}

/* --- the lock-free ring --- */

static inline uint64_t ring_next(const braid_chan_t *ch, uint64_t pos) {
  uint64_t index = pos & (ch->c_lap - 1);
  return index + 1 < ch->c_cap ? pos + 1 : (pos & ~(ch->c_lap - 1)) + ch->c_lap;
}

/* Values that have passed a position since the channel was made. */
static inline uint64_t ring_count(const braid_chan_t *ch, uint64_t pos) {
  return pos / ch->c_lap * ch->c_cap + (pos & (ch->c_lap - 1));
}

/* Waits out an operation half done by another thread. */
static void ring_backoff(unsigned *spins) {
  if (*spins < 7) {
    for (unsigned i = 0; i < 1u << *spins; i++) braid_cpu_relax();
    (*spins)++;
  } else {
    sched_yield();                  /* that thread may have been preempted */
  }
}

/* The first send makes the ring (under the lock): a channel that is never
 * used costs no slots. */
static int ring_make_locked(braid_chan_t *ch) {
  if (atomic_load_explicit(&ch->c_ring, memory_order_relaxed) != NULL) return 0;
  braid_slot_t *r = malloc(ch->c_cap * sizeof *r);
  if (r == NULL) return BRAID_ENOMEM;
  for (size_t i = 0; i < ch->c_cap; i++) atomic_init(&r[i].s_stamp, i);
  /* Release: the stamps are visible to whoever loads the pointer. */
  atomic_store_explicit(&ch->c_ring, r, memory_order_release);
  return 0;
}

/* Puts m in the ring.  locked: the caller holds the lock (and has checked
 * c_closed), so RT_QUEUED does not stop it.  Returns R_OK, R_FULL or R_LOCK
 * (senders queued, closed or no ring yet: take the lock). */
static inline int ring_send(braid_chan_t *ch, braid_msg_t *m, bool locked) {
  braid_slot_t *ring = atomic_load_explicit(&ch->c_ring, memory_order_acquire);
  if (ring == NULL) return R_LOCK;
  uint64_t stop = locked ? RT_CLOSED : RT_QUEUED | RT_CLOSED;
  uint64_t t = atomic_load_explicit(&ch->c_rtail, memory_order_relaxed);
  unsigned spins = 0;
  for (;;) {
    if (t & stop) return R_LOCK;
    uint64_t pos = t >> 2;
    braid_slot_t *s = &ring[pos & (ch->c_lap - 1)];
    /* Acquire: the receiver that freed the slot has taken its value. */
    uint64_t stamp = atomic_load_explicit(&s->s_stamp, memory_order_acquire);
    if (stamp == pos) {
      uint64_t nt = ring_next(ch, pos) << 2 | (t & 3);
      /* seq_cst: ordered before the caller's read of c_wait (design notes). */
      if (atomic_compare_exchange_weak_explicit(&ch->c_rtail, &t, nt, memory_order_seq_cst,
                                                memory_order_relaxed)) {
        s->s_msg = m;
        atomic_store_explicit(&s->s_stamp, pos + 1, memory_order_release);
        return R_OK;
      }
      continue;                     /* t reloaded */
    }
    if (stamp + ch->c_lap == pos + 1) {
      /* The slot holds last lap's value: full, unless its receive is half
       * done. */
      atomic_thread_fence(memory_order_seq_cst);
      uint64_t h = atomic_load_explicit(&ch->c_rhead, memory_order_relaxed) >> 1;
      if (h + ch->c_lap == pos) return R_FULL;
    }
    ring_backoff(&spins);
    t = atomic_load_explicit(&ch->c_rtail, memory_order_relaxed);
  }
}

/* Takes the oldest value into *out.  locked: as for ring_send.  Returns
 * R_OK, R_EMPTY, R_CLOSED (empty and closed) or R_LOCK. */
static inline int ring_recv(braid_chan_t *ch, braid_msg_t **out, bool locked) {
  braid_slot_t *ring = atomic_load_explicit(&ch->c_ring, memory_order_acquire);
  if (ring == NULL) return R_LOCK;
  uint64_t h = atomic_load_explicit(&ch->c_rhead, memory_order_relaxed);
  unsigned spins = 0;
  for (;;) {
    if ((h & RH_QUEUED) && !locked) return R_LOCK;
    uint64_t pos = h >> 1;
    braid_slot_t *s = &ring[pos & (ch->c_lap - 1)];
    /* Acquire: the sender's value is visible. */
    uint64_t stamp = atomic_load_explicit(&s->s_stamp, memory_order_acquire);
    if (stamp == pos + 1) {
      uint64_t nh = ring_next(ch, pos) << 1 | (h & 1);
      /* seq_cst: ordered before the caller's read of c_wait. */
      if (atomic_compare_exchange_weak_explicit(&ch->c_rhead, &h, nh, memory_order_seq_cst,
                                                memory_order_relaxed)) {
        *out = s->s_msg;
        atomic_store_explicit(&s->s_stamp, pos + ch->c_lap, memory_order_release);
        return R_OK;
      }
      continue;
    }
    if (stamp == pos) {
      /* Nothing in the slot: empty, unless its send is half done. */
      atomic_thread_fence(memory_order_seq_cst);
      uint64_t t = atomic_load_explicit(&ch->c_rtail, memory_order_relaxed);
      if (t >> 2 == pos) return (t & RT_CLOSED) ? R_CLOSED : R_EMPTY;
    }
    ring_backoff(&spins);
    h = atomic_load_explicit(&ch->c_rhead, memory_order_relaxed);
  }
}

/* Sets or clears the announcements of the queues as they are now.  A new
 * announcement is seq_cst, before the caller's second look at the ring. */
static void announce_locked(braid_chan_t *ch) {
  bool r = ch->c_recvq.q_head != NULL, s = ch->c_sendq.q_head != NULL;
  if (r != ch->c_rbits) {
    ch->c_rbits = r;
    if (r) {
      atomic_fetch_or_explicit(&ch->c_wait, CW_RECV, memory_order_seq_cst);
      atomic_fetch_or_explicit(&ch->c_rhead, RH_QUEUED, memory_order_seq_cst);
    } else {
      atomic_fetch_and_explicit(&ch->c_rhead, ~(uint64_t)RH_QUEUED, memory_order_seq_cst);
      atomic_fetch_and_explicit(&ch->c_wait, ~(unsigned)CW_RECV, memory_order_seq_cst);
    }
  }
  if (s != ch->c_sbits) {
    ch->c_sbits = s;
    if (s) {
      atomic_fetch_or_explicit(&ch->c_wait, CW_SEND, memory_order_seq_cst);
      atomic_fetch_or_explicit(&ch->c_rtail, RT_QUEUED, memory_order_seq_cst);
    } else {
      atomic_fetch_and_explicit(&ch->c_rtail, ~(uint64_t)RT_QUEUED, memory_order_seq_cst);
      atomic_fetch_and_explicit(&ch->c_wait, ~(unsigned)CW_SEND, memory_order_seq_cst);
    }
  }
}

/* Hands the ring's oldest values to queued receivers.  RH_QUEUED is set, so
 * only the lock holder takes values: one seen here is still there after
 * the claim.  Returns whether any moved. */
static bool drain_locked(braid_chan_t *ch, braid_wakelist_t *wl) {
  bool moved = false;
  while (ch->c_recvq.q_head) {
    uint64_t h = atomic_load_explicit(&ch->c_rhead, memory_order_relaxed) >> 1;
    /* seq_cst: the second look, after the announcement (design notes).  A
     * position taken whose stamp is not written yet is a value on its way,
     * which ring_recv waits for. */
    uint64_t t = atomic_load_explicit(&ch->c_rtail, memory_order_seq_cst) >> 2;
    if (t == h) break;
    braid_wnode_t *n = braid__wq_claim(&ch->c_recvq);
    if (n == NULL) break;
    braid_msg_t *m = NULL;
    BRAID_ASSERT(ring_recv(ch, &m, true) == R_OK);
    n->n_waiter->w_err = 0;
    n->n_waiter->w_msg = m;
    braid__wl_add(wl, n);
    moved = true;
  }
  return moved;
}

/* Moves queued senders' values into free slots, oldest sender first.
 * RT_QUEUED is set, so only the lock holder sends. */
static bool refill_locked(braid_chan_t *ch, braid_wakelist_t *wl) {
  bool moved = false;
  while (ch->c_sendq.q_head) {
    uint64_t t = atomic_load_explicit(&ch->c_rtail, memory_order_relaxed) >> 2;
    uint64_t h = atomic_load_explicit(&ch->c_rhead, memory_order_seq_cst) >> 1;
    if (h + ch->c_lap == t) break;  /* full */
    braid_wnode_t *n = braid__wq_claim(&ch->c_sendq);
    if (n == NULL) break;
    BRAID_ASSERT(ring_send(ch, n->n_msg, true) == R_OK);
    n->n_waiter->w_err = 0;
    n->n_waiter->w_msg = NULL;
    braid__wl_add(wl, n);
    moved = true;
  }
  return moved;
}

/* Announces the queues, then completes what the ring allows for the queued
 * parties; takes back the announcements of queues left empty. */
static void settle_locked(braid_chan_t *ch, braid_wakelist_t *wl) {
  announce_locked(ch);
  if (atomic_load_explicit(&ch->c_ring, memory_order_relaxed) != NULL) {
    bool moved;
    do {
      moved = drain_locked(ch, wl);
      if (!ch->c_closed && refill_locked(ch, wl)) moved = true;
    } while (moved);                /* a refill may have given a receiver work */
  }
  announce_locked(ch);
}

void braid__chan_settle_locked(braid_chan_t *ch, braid_wakelist_t *wl) { settle_locked(ch, wl); }

void braid__chan_announce_locked(braid_chan_t *ch) { announce_locked(ch); }

/* After a lock-free operation: serve the other side's queued parties. */
BRAID_NOINLINE static void serve_queued(braid_chan_t *ch) {
  braid_wakelist_t wl = { NULL, NULL };
  braid_obj_lock(&ch->c_obj);
  settle_locked(ch, &wl);
  braid_obj_unlock(&ch->c_obj);
  braid__wl_wake(&wl);
}

/* The lock-free send: 0, BRAID_EAGAIN (full) or FAST_LOCK. */
static inline int fast_send(braid_chan_t *ch, braid_msg_t *m) {
  int r = ring_send(ch, m, false);
  if (r == R_OK) {
    if (atomic_load_explicit(&ch->c_wait, memory_order_seq_cst) & CW_RECV) serve_queued(ch);
    return 0;
  }
  if (r == R_FULL && !(atomic_load_explicit(&ch->c_wait, memory_order_relaxed) & CW_RECV))
    return BRAID_EAGAIN;
  return FAST_LOCK;                 /* or full while receivers wait: the lock settles */
}

/* The lock-free receive: 0, BRAID_EAGAIN (empty) or FAST_LOCK (also when
 * closed: the lock reads the close error). */
static inline int fast_recv(braid_chan_t *ch, braid_msg_t **out) {
  int r = ring_recv(ch, out, false);
  if (r == R_OK) {
    if (atomic_load_explicit(&ch->c_wait, memory_order_seq_cst) & CW_SEND) serve_queued(ch);
    return 0;
  }
  if (r == R_EMPTY && !(atomic_load_explicit(&ch->c_wait, memory_order_relaxed) & CW_SEND))
    return BRAID_EAGAIN;
  return FAST_LOCK;                 /* or empty while senders wait: the lock settles */
}

/* The locked operations on a lock-free channel (see the _locked ones
 * below); out of line, so that the other channels' paths stay as short as
 * they were. */
BRAID_NOINLINE static int ring_recv_locked(braid_chan_t *ch, braid_msg_t **out, braid_wakelist_t *wl) {
  /* Queued receivers first, and queued senders' values in: what the lock
   * alone would show. */
  if (ch->c_recvq.q_head || ch->c_sendq.q_head) settle_locked(ch, wl);
  int r = ring_recv(ch, out, true);
  if (r == R_OK) {
    if (ch->c_sendq.q_head) settle_locked(ch, wl);
    return 0;
  }
  if (!ch->c_closed) return BRAID_EAGAIN;  /* empty, or no ring yet */
  if (ch->c_err) braid_msg_retain(ch->c_err);
  *out = ch->c_err;
  return BRAID_ECLOSED;
}

BRAID_NOINLINE static int ring_send_locked(braid_chan_t *ch, braid_msg_t *m, braid_wakelist_t *wl) {
  if (ch->c_closed) return BRAID_ECLOSED;
  int rc = ring_make_locked(ch);
  if (rc != 0) return rc;
  if (ch->c_sendq.q_head || ch->c_recvq.q_head) settle_locked(ch, wl);  /* likewise */
  if (ring_send(ch, m, true) != R_OK) return BRAID_EAGAIN;
  if (ch->c_recvq.q_head) settle_locked(ch, wl);
  return 0;
}

static void chan_destroy(braid_obj_t *o) {
  braid_chan_t *ch = (braid_chan_t *)o;
  braid_slot_t *ring = atomic_load_explicit(&ch->c_ring, memory_order_relaxed);
  if (ring) {
    uint64_t h = atomic_load_explicit(&ch->c_rhead, memory_order_relaxed) >> 1;
    uint64_t t = atomic_load_explicit(&ch->c_rtail, memory_order_relaxed) >> 2;
    for (; h != t; h = ring_next(ch, h)) braid_msg_release(ring[h & (ch->c_lap - 1)].s_msg);
    free(ring);
  }
  for (size_t i = 0; i < ch->c_len; i++)
    braid_msg_release(ch->c_buf[(ch->c_head + i) % ch->c_size]);
  free(ch->c_buf);
  braid_msg_release(ch->c_err);
  braid_obj_fini(o);
  free(ch);
}

/* --- the locked ring --- */

/* Appends m to the ring, growing it.  Called with the lock held and
 * c_len < c_cap.  Returns 0 or BRAID_ENOMEM (nothing changed). */
static int buf_push(braid_chan_t *ch, braid_msg_t *m) {
  if (ch->c_len == ch->c_size) {
    size_t nsize = ch->c_size ? ch->c_size * 2 : 8;
    if (nsize > ch->c_cap) nsize = ch->c_cap;
    if (nsize < ch->c_size || nsize > SIZE_MAX / sizeof(void *)) return BRAID_ENOMEM;
    braid_msg_t **nbuf = malloc(nsize * sizeof *nbuf);
    if (nbuf == NULL) return BRAID_ENOMEM;
    for (size_t i = 0; i < ch->c_len; i++)
      nbuf[i] = ch->c_buf[(ch->c_head + i) % ch->c_size];
    free(ch->c_buf);
    ch->c_buf = nbuf;
    ch->c_size = nsize;
    ch->c_head = 0;
  }
  size_t tail = ch->c_head + ch->c_len;
  if (tail >= ch->c_size) tail -= ch->c_size;
  ch->c_buf[tail] = m;
  ch->c_len++;
  return 0;
}

static braid_msg_t *buf_pop(braid_chan_t *ch) {
  braid_msg_t *m = ch->c_buf[ch->c_head];
  if (++ch->c_head == ch->c_size) ch->c_head = 0;
  ch->c_len--;
  return m;
}

int braid__chan_recv_locked(braid_chan_t *ch, braid_msg_t **out, braid_wakelist_t *wl) {
  if (ch->c_fast) return ring_recv_locked(ch, out, wl);
  braid_wnode_t *n;
  if (ch->c_len > 0) {
    *out = buf_pop(ch);
    ch->c_received++;
    /* The buffer was full if a sender waits: move its value to the tail. */
    if ((n = braid__wq_claim(&ch->c_sendq)) != NULL) {
      /* Cannot fail: a slot was just freed and the ring never shrinks. */
      BRAID_ASSERT(buf_push(ch, n->n_msg) == 0);
      ch->c_sent++;
      n->n_waiter->w_err = 0;
      n->n_waiter->w_msg = NULL;
      braid__wl_add(wl, n);
    }
    return 0;
  }
  if ((n = braid__wq_claim(&ch->c_sendq)) != NULL) {
    *out = n->n_msg;                /* rendezvous: straight from the sender */
    ch->c_sent++;
    ch->c_received++;
    n->n_waiter->w_err = 0;
    n->n_waiter->w_msg = NULL;
    braid__wl_add(wl, n);
    return 0;
  }
  if (ch->c_closed) {
    if (ch->c_err) braid_msg_retain(ch->c_err);
    *out = ch->c_err;
    return BRAID_ECLOSED;
  }
  return BRAID_EAGAIN;
}

int braid__chan_send_locked(braid_chan_t *ch, braid_msg_t *m, braid_wakelist_t *wl) {
  if (ch->c_fast) return ring_send_locked(ch, m, wl);
  braid_wnode_t *n;
  if (ch->c_closed) return BRAID_ECLOSED;
  if ((n = braid__wq_claim(&ch->c_recvq)) != NULL) {
    n->n_waiter->w_err = 0;
    n->n_waiter->w_msg = m;         /* handed over: no buffer copy */
    ch->c_sent++;
    ch->c_received++;
    braid__wl_add(wl, n);
    return 0;
  }
  if (ch->c_len < ch->c_cap) {
    int rc = buf_push(ch, m);
    if (rc == 0) ch->c_sent++;
    return rc;
  }
  switch (ch->c_policy) {
    case BRAID_POLICY_DROP:
      ch->c_dropped++;
      wl->wl_drop = m;
      return 0;
    case BRAID_POLICY_SLIDE:
      ch->c_dropped++;
      if (ch->c_len == 0) {         /* a rendezvous with nobody waiting */
        wl->wl_drop = m;
        return 0;
      }
      wl->wl_drop = buf_pop(ch);
      BRAID_ASSERT(buf_push(ch, m) == 0);
      ch->c_sent++;
      return 0;
    default:
      return BRAID_EAGAIN;
  }
}

void braid__wl_wake(braid_wakelist_t *wl) {
  braid_wnode_t *n = wl->wl_head;
  while (n) {
    /* Read the link before waking: the woken side may free its node. */
    braid_wnode_t *next = n->n_next;
    braid_waiter_wake(n->n_waiter);
    n = next;
  }
  wl->wl_head = NULL;
  braid_msg_release(wl->wl_drop);
  wl->wl_drop = NULL;
}

int braid_chan_close(braid_chan_t *ch, braid_msg_t *err) {
  braid_wakelist_t wl = { NULL, NULL };
  braid_wnode_t *n;
  braid_obj_lock(&ch->c_obj);
  if (ch->c_closed) {
    braid_obj_unlock(&ch->c_obj);
    braid_msg_release(err);
    return BRAID_ECLOSED;
  }
  ch->c_closed = true;
  ch->c_err = err;
  if (ch->c_fast) {
    /* No send starts from now on; values already claimed still go to the
     * queued receivers. */
    atomic_fetch_or_explicit(&ch->c_rtail, RT_CLOSED, memory_order_seq_cst);
    if (atomic_load_explicit(&ch->c_ring, memory_order_relaxed) != NULL) drain_locked(ch, &wl);
  }
  while ((n = braid__wq_claim(&ch->c_recvq)) != NULL) {
    if (err) braid_msg_retain(err);
    n->n_waiter->w_err = BRAID_ECLOSED;
    n->n_waiter->w_msg = err;
    braid__wl_add(&wl, n);
  }
  while ((n = braid__wq_claim(&ch->c_sendq)) != NULL) {
    n->n_waiter->w_err = BRAID_ECLOSED;  /* the message stays the sender's */
    n->n_waiter->w_msg = NULL;
    braid__wl_add(&wl, n);
  }
  if (ch->c_fast) announce_locked(ch);
  braid_obj_unlock(&ch->c_obj);
  braid__wl_wake(&wl);
  return 0;
}

static inline int try_send_locked(braid_chan_t *ch, braid_msg_t *m) {
  braid_wakelist_t wl = { NULL, NULL };
  braid_obj_lock(&ch->c_obj);
  int rc = braid__chan_send_locked(ch, m, &wl);
  braid_obj_unlock(&ch->c_obj);
  braid__wl_wake(&wl);
  return rc;
}

static inline int try_recv_locked(braid_chan_t *ch, braid_msg_t **out) {
  braid_wakelist_t wl = { NULL, NULL };
  braid_obj_lock(&ch->c_obj);
  int rc = braid__chan_recv_locked(ch, out, &wl);
  braid_obj_unlock(&ch->c_obj);
  braid__wl_wake(&wl);
  return rc;
}

/* ring: a lock-free channel (a constant where this is inlined). */
static inline int send_arm_locked(braid_chan_t *ch, braid_msg_t *m, braid_case_t *c,
                                  braid_waiter_t *w, bool ring) {
  braid_wakelist_t wl = { NULL, NULL };
  braid_obj_lock(&ch->c_obj);
  int rc = ring ? ring_send_locked(ch, m, &wl) : braid__chan_send_locked(ch, m, &wl);
  if (rc == BRAID_EAGAIN && w) {
    braid__case_arm_locked(c, w);
    if (ring) settle_locked(ch, &wl);
  }
  braid_obj_unlock(&ch->c_obj);
  if (wl.wl_head || wl.wl_drop) braid__wl_wake(&wl);
  return rc;
}

static inline int recv_arm_locked(braid_chan_t *ch, braid_msg_t **out, braid_case_t *c,
                                  braid_waiter_t *w, bool ring) {
  braid_wakelist_t wl = { NULL, NULL };
  braid_obj_lock(&ch->c_obj);
  int rc = ring ? ring_recv_locked(ch, out, &wl) : braid__chan_recv_locked(ch, out, &wl);
  if (rc == BRAID_EAGAIN && w) {
    braid__case_arm_locked(c, w);
    if (ring) settle_locked(ch, &wl);
  }
  braid_obj_unlock(&ch->c_obj);
  if (wl.wl_head) braid__wl_wake(&wl);
  return rc;
}

/* A lock-free channel's entry points: the lock-free try, then the lock. */
BRAID_NOINLINE static int ring_try_send(braid_chan_t *ch, braid_msg_t *m) {
  int rc = fast_send(ch, m);
  return rc != FAST_LOCK ? rc : try_send_locked(ch, m);
}

BRAID_NOINLINE static int ring_try_recv(braid_chan_t *ch, braid_msg_t **out) {
  int rc = fast_recv(ch, out);
  return rc != FAST_LOCK ? rc : try_recv_locked(ch, out);
}

BRAID_NOINLINE static int ring_send_arm(braid_chan_t *ch, braid_msg_t *m, braid_case_t *c,
                                        braid_waiter_t *w) {
  return fast_send(ch, m) == 0 ? 0 : send_arm_locked(ch, m, c, w, true);
}

BRAID_NOINLINE static int ring_recv_arm(braid_chan_t *ch, braid_msg_t **out, braid_case_t *c,
                                        braid_waiter_t *w) {
  return fast_recv(ch, out) == 0 ? 0 : recv_arm_locked(ch, out, c, w, true);
}

int braid_chan_try_send(braid_chan_t *ch, braid_msg_t *m) {
  if (ch->c_fast) return ring_try_send(ch, m);
  return try_send_locked(ch, m);
}

int braid_chan_try_recv(braid_chan_t *ch, braid_msg_t **out) {
  *out = NULL;
  if (ch->c_fast) return ring_try_recv(ch, out);
  return try_recv_locked(ch, out);
}

int braid_chan_send_arm(braid_chan_t *ch, braid_msg_t *m, braid_case_t *c, braid_waiter_t *w) {
  if (ch->c_fast) return ring_send_arm(ch, m, c, w);
  return send_arm_locked(ch, m, c, w, false);
}

int braid_chan_recv_arm(braid_chan_t *ch, braid_msg_t **out, braid_case_t *c, braid_waiter_t *w) {
  *out = NULL;
  if (ch->c_fast) return ring_recv_arm(ch, out, c, w);
  return recv_arm_locked(ch, out, c, w, false);
}

int braid_chan_send_until(braid_chan_t *ch, braid_msg_t *m, int64_t deadline) {
  int rc = braid_chan_try_send(ch, m);   /* fast path: no waiter needed */
  if (rc != BRAID_EAGAIN) return rc;
  braid_case_t c = { .c_op = BRAID_OP_SEND, .c_obj = ch, .c_msg = m };
  braid_selres_t r;
  rc = braid_select_until(&c, 1, deadline, &r);
  return rc == 0 ? r.s_err : rc;
}

int braid_chan_recv_until(braid_chan_t *ch, braid_msg_t **out, int64_t deadline) {
  int rc = braid_chan_try_recv(ch, out);  /* fast path: no waiter needed */
  if (rc != BRAID_EAGAIN) return rc;
  braid_case_t c = { .c_op = BRAID_OP_RECV, .c_obj = ch };
  braid_selres_t r;
  rc = braid_select_until(&c, 1, deadline, &r);
  *out = r.s_msg;
  return rc == 0 ? r.s_err : rc;
}

/* A lock-free ring's counters, from its positions, and the values between
 * them.  A receive is counted once its position is taken, a send likewise.
 * The two positions are read one after the other while others move them:
 * the tail, read second, is never behind the head, but receives and sends
 * in between can put it more than c_cap ahead of the head read first,
 * which no moment had; the length is therefore capped. */
static size_t ring_stats(braid_chan_t *ch, uint64_t *sent, uint64_t *received) {
  uint64_t h = atomic_load_explicit(&ch->c_rhead, memory_order_acquire) >> 1;
  uint64_t t = atomic_load_explicit(&ch->c_rtail, memory_order_acquire) >> 2;
  *received = ring_count(ch, h);
  *sent = ring_count(ch, t);
  uint64_t len = *sent - *received;
  return len > ch->c_cap ? ch->c_cap : (size_t)len;
}

void braid_chan_stats(braid_chan_t *ch, braid_chan_stats_t *st) {
  braid_obj_lock(&ch->c_obj);
  if (ch->c_fast) {
    st->len = ring_stats(ch, &st->sent, &st->received);
  } else {
    st->len = ch->c_len;
    st->sent = ch->c_sent;
    st->received = ch->c_received;
  }
  st->cap = ch->c_cap;
  st->dropped = ch->c_dropped;
  st->closed = ch->c_closed;
  braid_obj_unlock(&ch->c_obj);
}

size_t braid_chan_len(braid_chan_t *ch) {
  if (ch->c_fast) {
    uint64_t sent, received;
    return ring_stats(ch, &sent, &received);
  }
  braid_obj_lock(&ch->c_obj);
  size_t n = ch->c_len;
  braid_obj_unlock(&ch->c_obj);
  return n;
}

bool braid_chan_is_closed(braid_chan_t *ch) {
  braid_obj_lock(&ch->c_obj);
  bool c = ch->c_closed;
  braid_obj_unlock(&ch->c_obj);
  return c;
}
