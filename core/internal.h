/*
 * internal.h -- what select.c needs to see of channels and futures.  Not
 * part of any public interface.
 */
#ifndef BRAID_INTERNAL_H
#define BRAID_INTERNAL_H

#include "chan.h"
#include "future.h"
#include "netpoll.h"
#include "select.h"
#include "waiter.h"

/*
 * Channel invariants (under c_obj.o_mtx), as in Go's chan.go:
 *   - at least one of c_sendq and c_recvq is empty, except for nodes whose
 *     waiter was already won elsewhere (they are dropped when met);
 *   - c_recvq holds live nodes only while the buffer is empty;
 *   - c_sendq holds live nodes only while the buffer is full (policy block);
 *   - once c_closed, both queues are empty and stay empty.
 *
 * A buffered channel of policy block and capacity up to BRAID_RING_MAX
 * keeps its values in a lock-free ring instead (c_ring; chan.c's design
 * notes): senders and receivers that find nobody waiting move values
 * without the lock.  Its queues and the bits that announce them are under
 * the lock; the ring's positions are atomics.
 */
enum { BRAID_RING_MAX = 4096 };

typedef struct braid_slot {
  _Atomic uint64_t s_stamp;   /* the position this slot waits for (chan.c) */
  braid_msg_t *s_msg;
} braid_slot_t;

#define BRAID_LINE 64

struct braid_chan {
  braid_obj_t c_obj;          /* refcount, id, and o_mtx which protects the rest */
  size_t c_cap;               /* immutable: capacity, BRAID_UNBOUNDED for no bound */
  braid_policy_t c_policy;    /* immutable */
  bool c_fast;                /* immutable: values go through c_ring */
  bool c_closed;
  braid_msg_t *c_err;         /* close error, or NULL; immutable once c_closed */
  braid_wqueue_t c_recvq;     /* blocked receivers */
  braid_wqueue_t c_sendq;     /* blocked senders */
  /* Locked ring (!c_fast) */
  braid_msg_t **c_buf;        /* ring of c_size slots (grown up to c_cap) */
  size_t c_size;              /* slots allocated */
  size_t c_head;              /* index of the oldest buffered value */
  size_t c_len;               /* values buffered */
  uint64_t c_sent, c_received, c_dropped;
  /* Lock-free ring (c_fast): read by every operation, rarely written. */
  _Alignas(BRAID_LINE) braid_slot_t *_Atomic c_ring;  /* NULL until the first send */
  uint64_t c_lap;             /* immutable: a power of two > 2 * c_cap */
  _Atomic unsigned c_wait;    /* CW_RECV, CW_SEND: a queue is not empty */
  bool c_rbits, c_sbits;      /* under o_mtx: the announcements made */
  _Alignas(BRAID_LINE) _Atomic uint64_t c_rtail;  /* next send: pos << 2 | RT_* */
  _Alignas(BRAID_LINE) _Atomic uint64_t c_rhead;  /* next receive: pos << 1 | RH_* */
};                            /* sizeof: a multiple of the line, so c_rhead's is its own */

struct braid_future {
  braid_obj_t f_obj;          /* refcount, id, and o_mtx which protects the rest */
  _Atomic int f_state;        /* braid_fstate_t; written under o_mtx, read lock-free */
  braid_msg_t *f_msg;         /* the result; immutable once settled */
  braid_wqueue_t f_waitq;     /* blocked awaiters */
  _Atomic bool f_cancel;      /* cancellation requested */
  _Atomic bool f_observed;    /* see braid_future_observe */
  braid_cancel_fn f_hook;     /* the producer's cancel hook, or NULL */
  void *f_hook_arg;
  /* The task that settles it (braid_future_set_task): immutable once set,
   * which is before the future is shared. */
  uint64_t f_task_id;         /* 0: not a task's future */
  char *f_task_name;          /* owned, may be NULL */
};

/* A poll descriptor (netpoll.h).  Under p_obj.o_mtx: everything but
 * p_slot/p_gen (immutable while registered). */
struct braid_pollfd {
  braid_obj_t p_obj;          /* refcount, id, and o_mtx which protects the rest */
  int p_fd;                   /* -1 once closed(2) */
  int p_busy;                 /* syscalls in flight (enter/leave) */
  bool p_closed;              /* braid_pollfd_close ran */
  bool p_rready, p_wready;    /* sticky readiness (the no-lost-wake-up rule) */
  braid_wqueue_t p_readq;     /* BRAID_OP_READABLE waiters */
  braid_wqueue_t p_writeq;    /* BRAID_OP_WRITABLE waiters */
  uint32_t p_slot, p_gen;     /* the registry slot naming it in epoll */
};

/* READABLE/WRITABLE with o_mtx held: 0 (readiness consumed), BRAID_ECLOSED,
 * or BRAID_EAGAIN. */
int braid__pollfd_poll_locked(braid_pollfd_t *p, bool write);

/* A list of claimed nodes to wake once every lock is dropped.  Linked
 * through n_next (the nodes are off their queues by then). */
typedef struct braid_wakelist {
  braid_wnode_t *wl_head;
  braid_msg_t *wl_drop;       /* a value lost to drop/slide: released after
                                 unlocking, since its handles' destructors
                                 may run any code */
} braid_wakelist_t;

static inline void braid__wl_add(braid_wakelist_t *wl, braid_wnode_t *n) {
  n->n_next = wl->wl_head;
  wl->wl_head = n;
}

/* Wakes every node's waiter and releases wl_drop.  Call with no lock held. */
void braid__wl_wake(braid_wakelist_t *wl);

/* Try one operation; the caller holds the object's o_mtx.  Return
 * BRAID_EAGAIN when the operation would block (nothing changed), otherwise
 * the operation is done: *err and *out as in braid_selres_t.  A partner that
 * must be woken is added to wl. */
int braid__chan_recv_locked(braid_chan_t *ch, braid_msg_t **out, braid_wakelist_t *wl);
int braid__chan_send_locked(braid_chan_t *ch, braid_msg_t *m, braid_wakelist_t *wl);
int braid__future_poll_locked(braid_future_t *f, braid_msg_t **out);

/* One-case waits of the Lua bindings, split phase: each tries the
 * operation and, when it would block and w is not NULL, queues c's node on
 * w (c->c_op, c_obj and, for a send, c_msg filled in by the caller), all
 * under one lock, and returns BRAID_EAGAIN; an armed w is finished with
 * braid_select_disarm(c, 1, w, ...).  Otherwise it returns what
 * braid_chan_try_send / braid_chan_try_recv would, w untouched.  (What
 * braid_select_arm does with one case, minus its generality on the path
 * where the operation completes at once, the common one.) */
int braid_chan_send_arm(braid_chan_t *ch, braid_msg_t *m, braid_case_t *c, braid_waiter_t *w);
/* The waiter queue a case waits on. */
static inline braid_wqueue_t *braid__case_queue(braid_case_t *c) {
  switch (c->c_op) {
    case BRAID_OP_RECV: return &((braid_chan_t *)c->c_obj)->c_recvq;
    case BRAID_OP_SEND: return &((braid_chan_t *)c->c_obj)->c_sendq;
    case BRAID_OP_READABLE: return &((braid_pollfd_t *)c->c_obj)->p_readq;
    case BRAID_OP_WRITABLE: return &((braid_pollfd_t *)c->c_obj)->p_writeq;
    default: return &((braid_future_t *)c->c_obj)->f_waitq;
  }
}

void braid__chan_settle_locked(braid_chan_t *ch, braid_wakelist_t *wl);
void braid__chan_announce_locked(braid_chan_t *ch);

/* The channel of a send or receive case on a lock-free ring, else NULL. */
static inline braid_chan_t *braid__case_ring(braid_case_t *c) {
  if (c->c_op != BRAID_OP_RECV && c->c_op != BRAID_OP_SEND) return NULL;
  braid_chan_t *ch = c->c_obj;
  return ch->c_fast ? ch : NULL;
}

/* Case c's node was queued by select (its object locked): a lock-free
 * channel announces the queue and completes what the ring allows now,
 * waking into wl (which may fire this very waiter). */
static inline void braid__case_queued_locked(braid_case_t *c, braid_wakelist_t *wl) {
  braid_chan_t *ch = braid__case_ring(c);
  if (ch) braid__chan_settle_locked(ch, wl);
}

/* Case c's node left its queue in select's disarm (its object locked). */
static inline void braid__case_unqueued_locked(braid_case_t *c) {
  braid_chan_t *ch = braid__case_ring(c);
  if (ch) braid__chan_announce_locked(ch);
}

/* Queues one case's node on w: its object is locked by the caller and the
 * case cannot complete now.  Armed only here, when the node is queued: a
 * waiter whose wait completed at once must stay un-armed, or a timer or
 * cancel could fire it (and wake a task that is running).  Then
 * braid__case_queued_locked, or for a known lock-free channel chan.c's
 * settle. */
static inline void braid__case_arm_locked(braid_case_t *c, braid_waiter_t *w) {
  braid_waiter_rearm(w);
  c->c_node.n_waiter = w;
  c->c_node.n_index = 0;
  c->c_node.n_msg = c->c_op == BRAID_OP_SEND ? c->c_msg : NULL;
  braid__wq_push(braid__case_queue(c), &c->c_node);
}
int braid_chan_recv_arm(braid_chan_t *ch, braid_msg_t **out, braid_case_t *c, braid_waiter_t *w);

#endif
