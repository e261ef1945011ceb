/*
 * select.c -- select over channel and future cases (see select.h).
 *
 * Design notes (after Go's runtime/select.go)
 *
 * 1. Poll order: a random permutation of the cases, so that among ready
 *    cases each is chosen with equal probability.
 * 2. Lock order: the cases' objects sorted by address; an object named by
 *    several cases is locked once.  Every path that holds more than one
 *    core lock takes them in this order (core/LOCKING.md).
 * 3. With every lock held, the first ready case in poll order completes.
 *    Otherwise one node per case is queued, pointing at the shared waiter.
 * 4. After the waiter fired and woke, the objects are locked again and the
 *    nodes that lost are removed.  Nothing touches a case's object after the
 *    last unlock except through the wake list, whose waiters cannot vanish
 *    before they are woken.
 */
#include <stdlib.h>

#include "clock.h"
#include "err.h"
#include "internal.h"
#include "select.h"
#include "tls.h"

enum { SMALL = 16 };

static _Thread_local BRAID_TLS_HOT uint64_t rng_state;

static uint32_t rng_next(void) {
  uint64_t x = rng_state;
  if (x == 0) x = (uint64_t)(uintptr_t)&rng_state ^ (uint64_t)braid_now_ns() ^ 0x9E3779B97F4A7C15ull;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  rng_state = x;
  return (uint32_t)(x >> 32);
}

static braid_obj_t *case_obj(braid_case_t *c) { return (braid_obj_t *)c->c_obj; }

/* Scratch arrays for one select: poll order and lock order. */
typedef struct order {
  int *poll;
  int *lock;
  int small[2 * SMALL];
} order_t;

static int order_init(order_t *o, braid_case_t *cases, int n) {
  if (n == 1) {                       /* nothing to shuffle or sort */
    o->poll = o->small;
    o->lock = o->small + SMALL;
    o->poll[0] = o->lock[0] = 0;
    return 0;
  }
  if (n <= SMALL) {
    o->poll = o->small;
    o->lock = o->small + SMALL;
  } else {
    o->poll = malloc(2 * (size_t)n * sizeof(int));
    if (o->poll == NULL) return BRAID_ENOMEM;
    o->lock = o->poll + n;
  }
  /* Fisher-Yates shuffle, built inside-out. */
  for (int i = 0; i < n; i++) {
    int j = (int)(rng_next() % (uint32_t)(i + 1));
    o->poll[i] = o->poll[j];
    o->poll[j] = i;
  }
  /* Insertion sort by object address: n is small in practice. */
  for (int i = 0; i < n; i++) {
    int k = i;
    uintptr_t a = (uintptr_t)cases[i].c_obj;
    while (k > 0 && (uintptr_t)cases[o->lock[k - 1]].c_obj > a) {
      o->lock[k] = o->lock[k - 1];
      k--;
    }
    o->lock[k] = i;
  }
  return 0;
}

static void order_fini(order_t *o) {
  if (o->poll != o->small) free(o->poll);
}

static void lock_all(braid_case_t *cases, order_t *o, int n) {
  braid_obj_t *prev = NULL;
  for (int i = 0; i < n; i++) {
    braid_obj_t *obj = case_obj(&cases[o->lock[i]]);
    if (obj != prev) braid_obj_lock(obj);
    prev = obj;
  }
}

static void unlock_all(braid_case_t *cases, order_t *o, int n) {
  braid_obj_t *prev = NULL;
  for (int i = n - 1; i >= 0; i--) {
    braid_obj_t *obj = case_obj(&cases[o->lock[i]]);
    if (obj != prev) braid_obj_unlock(obj);
    prev = obj;
  }
}

/* Tries case i with its object locked.  Returns BRAID_EAGAIN or fills r. */
static int poll_case(braid_case_t *c, int i, braid_selres_t *r, braid_wakelist_t *wl) {
  braid_msg_t *m = NULL;
  int rc;
  switch (c->c_op) {
    case BRAID_OP_RECV:
      rc = braid__chan_recv_locked((braid_chan_t *)c->c_obj, &m, wl);
      break;
    case BRAID_OP_SEND:
      rc = braid__chan_send_locked((braid_chan_t *)c->c_obj, c->c_msg, wl);
      break;
    case BRAID_OP_READABLE:
    case BRAID_OP_WRITABLE:
      rc = braid__pollfd_poll_locked((braid_pollfd_t *)c->c_obj, c->c_op == BRAID_OP_WRITABLE);
      break;
    default:
      rc = braid__future_poll_locked((braid_future_t *)c->c_obj, &m);
      break;
  }
  if (rc == BRAID_EAGAIN) return rc;
  r->s_index = i;
  r->s_err = rc;
  r->s_msg = m;
  return 0;
}

/* Try every case; when none is ready and w != NULL, queue the nodes. */
static int select_poll(braid_case_t *cases, int n, braid_waiter_t *w, braid_selres_t *r) {
  order_t o;
  braid_wakelist_t wl = { NULL, NULL };
  r->s_index = BRAID_W_ARMED;
  r->s_err = 0;
  r->s_msg = NULL;
  if (n == 0) {
    if (w) braid_waiter_rearm(w);     /* only a timer or a cancel can fire it */
    return BRAID_EAGAIN;
  }
  if (n == 1) {
    /* Every send, receive and await: one lock, no order arrays. */
    braid_case_t *c = &cases[0];
    braid_obj_lock(case_obj(c));
    int rc = poll_case(c, 0, r, &wl);
    if (rc == BRAID_EAGAIN && w) {
      braid__case_arm_locked(c, w);
      braid__case_queued_locked(c, &wl);
    }
    braid_obj_unlock(case_obj(c));
    if (wl.wl_head || wl.wl_drop) braid__wl_wake(&wl);
    return rc;
  }
  if (order_init(&o, cases, n) != 0) return BRAID_ENOMEM;
  lock_all(cases, &o, n);
  int rc = BRAID_EAGAIN;
  for (int k = 0; k < n && rc == BRAID_EAGAIN; k++) {
    int i = o.poll[k];
    rc = poll_case(&cases[i], i, r, &wl);
  }
  if (rc == BRAID_EAGAIN && w) {
    /* Armed only now, when the nodes are queued: a waiter whose select
     * completed at once must stay un-armed, or a timer or cancel could fire
     * it (and wake a task that is running). */
    braid_waiter_rearm(w);
    for (int i = 0; i < n; i++) {
      braid_wnode_t *node = &cases[i].c_node;
      node->n_waiter = w;
      node->n_index = i;
      node->n_msg = cases[i].c_op == BRAID_OP_SEND ? cases[i].c_msg : NULL;
      braid__wq_push(braid__case_queue(&cases[i]), node);
    }
    /* Only now, every node queued: what a lock-free ring completes may
     * fire this waiter, for any of its cases. */
    for (int i = 0; i < n; i++) braid__case_queued_locked(&cases[i], &wl);
  }
  unlock_all(cases, &o, n);
  order_fini(&o);
  braid__wl_wake(&wl);
  return rc;
}

int braid_select_try(braid_case_t *cases, int n, braid_selres_t *r) {
  return select_poll(cases, n, NULL, r);
}

int braid_select_arm(braid_case_t *cases, int n, braid_waiter_t *w, braid_selres_t *r) {
  return select_poll(cases, n, w, r);
}

/* Takes a case's node off its queue (its object locked). */
static void unqueue_locked(braid_case_t *c) {
  if (!c->c_node.n_queued) return;
  braid__wq_remove(braid__case_queue(c), &c->c_node);
  braid__case_unqueued_locked(c);
}

int braid_select_disarm(braid_case_t *cases, int n, braid_waiter_t *w, braid_selres_t *r) {
  /* Acquire: pairs with the claim; the winner's w_err/w_msg are visible
   * (the wake also ordered them). */
  int fired = atomic_load_explicit(&w->w_fired, memory_order_acquire);
  BRAID_ASSERT(fired != BRAID_W_ARMED);
  /* The winning node was dequeued by its claimer; the others may still be
   * queued.  A lone case that won needs no locking at all. */
  if (!(n == 1 && fired == 0) && n > 0) {
    order_t o;
    if (order_init(&o, cases, n) != 0) {
      /* No memory for the order arrays: lock and clean case by case. */
      for (int i = 0; i < n; i++) {
        braid_obj_lock(case_obj(&cases[i]));
        unqueue_locked(&cases[i]);
        braid_obj_unlock(case_obj(&cases[i]));
      }
    } else {
      lock_all(cases, &o, n);
      for (int i = 0; i < n; i++)
        if (i != fired) unqueue_locked(&cases[i]);
      unlock_all(cases, &o, n);
      order_fini(&o);
    }
  }
  r->s_index = fired;
  r->s_err = w->w_err;
  r->s_msg = w->w_msg;
  w->w_msg = NULL;
  return fired >= 0 ? 0 : r->s_err;
}

/* One waiter per OS thread: an OS thread blocks in one select at a time. */
static _Thread_local braid_waiter_t tls_waiter;
static _Thread_local bool tls_waiter_ready;

braid_waiter_t *braid_thread_waiter(void) {
  if (!tls_waiter_ready) {
    braid_waiter_init(&tls_waiter, NULL, NULL);
    tls_waiter_ready = true;
  }
  return &tls_waiter;
}

int braid_select_until(braid_case_t *cases, int n, int64_t deadline, braid_selres_t *r) {
  braid_waiter_t *w = braid_thread_waiter();
  bool now_only = deadline != BRAID_FOREVER && deadline <= braid_now_ns();
  int rc = select_poll(cases, n, now_only ? NULL : w, r);
  if (rc != BRAID_EAGAIN) return rc;
  if (!now_only) {
    if (braid_waiter_park_until(w, deadline) == BRAID_ETIMEDOUT) {
      if (braid_waiter_claim(w, BRAID_W_TIMEOUT))
        w->w_err = BRAID_ETIMEDOUT;         /* our own waiter: no wake needed */
      else
        braid_waiter_park_until(w, BRAID_FOREVER);  /* a wake is on its way */
    }
    return braid_select_disarm(cases, n, w, r);
  }
  r->s_index = BRAID_W_TIMEOUT;
  r->s_err = BRAID_ETIMEDOUT;
  r->s_msg = NULL;
  return BRAID_ETIMEDOUT;
}
