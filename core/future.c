/*
 * future.c -- settle-once results with any number of waiters (future.h).
 *
 * Design notes
 *
 * A future is a channel's little sibling: the object mutex, a state word, a
 * result message and one queue of blocked awaiters.  Settling wins once,
 * claims every queued awaiter, gives each its own reference to the result,
 * and wakes them all after unlocking.  The state is also an atomic so that
 * braid_future_state() and polling need no lock.
 */
#include <stdlib.h>

#include "clock.h"
#include "err.h"
#include "internal.h"
#include "select.h"

static void future_destroy(braid_obj_t *o);

braid_objtype_t braid_future_type = { "future", future_destroy, 0 };

braid_future_t *braid_future_new(void) {
  braid_future_t *f = calloc(1, sizeof *f);
  if (f == NULL) return NULL;
  if (braid_obj_init(&f->f_obj, &braid_future_type) != 0) {
    free(f);
    return NULL;
  }
  atomic_init(&f->f_state, BRAID_FUTURE_PENDING);
  atomic_init(&f->f_cancel, false);
  atomic_init(&f->f_observed, false);
  return f;
}

void (*braid_future_unobserved)(braid_future_t *f, braid_msg_t *err);

void braid_future_observe(braid_future_t *f) {
  /* Relaxed: only read by the destroyer, after the acq_rel refcount drop. */
  atomic_store_explicit(&f->f_observed, true, memory_order_relaxed);
}

void braid_future_set_task(braid_future_t *f, uint64_t task_id, char *name) {
  free(f->f_task_name);
  f->f_task_id = task_id;
  f->f_task_name = name;
}

uint64_t braid_future_task_id(braid_future_t *f) { return f->f_task_id; }

const char *braid_future_task_name(braid_future_t *f) { return f->f_task_name; }

static void future_destroy(braid_obj_t *o) {
  braid_future_t *f = (braid_future_t *)o;
  if (braid_future_unobserved &&
      atomic_load_explicit(&f->f_state, memory_order_relaxed) == BRAID_FUTURE_REJECTED &&
      !atomic_load_explicit(&f->f_observed, memory_order_relaxed))
    braid_future_unobserved(f, f->f_msg);
  free(f->f_task_name);
  braid_msg_release(f->f_msg);
  braid_obj_fini(o);
  free(f);
}

static void settle_locked(braid_future_t *f, braid_fstate_t state, braid_msg_t *msg,
                          braid_wakelist_t *wl);

static int state_err(int state) {
  switch (state) {
    case BRAID_FUTURE_RESOLVED: return 0;
    case BRAID_FUTURE_REJECTED: return BRAID_EREJECTED;
    case BRAID_FUTURE_CANCELLED: return BRAID_ECANCELED;
    default: return BRAID_EAGAIN;
  }
}

int braid__future_poll_locked(braid_future_t *f, braid_msg_t **out) {
  braid_future_observe(f);
  int st = atomic_load_explicit(&f->f_state, memory_order_relaxed);
  if (st == BRAID_FUTURE_PENDING) return BRAID_EAGAIN;
  if (f->f_msg) braid_msg_retain(f->f_msg);
  *out = f->f_msg;
  return state_err(st);
}

int braid_future_settle(braid_future_t *f, braid_fstate_t state, braid_msg_t *msg) {
  if (state != BRAID_FUTURE_RESOLVED && state != BRAID_FUTURE_REJECTED &&
      state != BRAID_FUTURE_CANCELLED) {
    braid_msg_release(msg);
    return BRAID_EINVAL;
  }
  braid_wakelist_t wl = { NULL, NULL };
  braid_obj_lock(&f->f_obj);
  if (atomic_load_explicit(&f->f_state, memory_order_relaxed) != BRAID_FUTURE_PENDING) {
    braid_obj_unlock(&f->f_obj);
    braid_msg_release(msg);
    return BRAID_ESETTLED;
  }
  settle_locked(f, state, msg, &wl);
  braid_obj_unlock(&f->f_obj);
  braid__wl_wake(&wl);
  return 0;
}

/* Settles a pending future; called with o_mtx held.  The awaiters to wake
 * are added to wl. */
static void settle_locked(braid_future_t *f, braid_fstate_t state, braid_msg_t *msg,
                          braid_wakelist_t *wl) {
  braid_wnode_t *n;
  f->f_msg = msg;
  /* Release: a lock-free reader that sees the new state sees f_msg. */
  atomic_store_explicit(&f->f_state, state, memory_order_release);
  f->f_hook = NULL;               /* the producer is done with it */
  while ((n = braid__wq_claim(&f->f_waitq)) != NULL) {
    if (msg) braid_msg_retain(msg);
    n->n_waiter->w_err = state_err(state);
    n->n_waiter->w_msg = msg;
    braid__wl_add(wl, n);
  }
}

int braid_future_cancel(braid_future_t *f) {
  braid_obj_lock(&f->f_obj);
  if (atomic_load_explicit(&f->f_state, memory_order_relaxed) != BRAID_FUTURE_PENDING) {
    braid_obj_unlock(&f->f_obj);
    return BRAID_ESETTLED;
  }
  /* Relaxed: the flag is a request, polled by the producer; the hook call
   * below (under the lock) is what delivers it promptly. */
  atomic_store_explicit(&f->f_cancel, true, memory_order_relaxed);
  if (f->f_hook) {
    f->f_hook(f, f->f_hook_arg);
    braid_obj_unlock(&f->f_obj);
    return 0;
  }
  braid_wakelist_t wl = { NULL, NULL };
  settle_locked(f, BRAID_FUTURE_CANCELLED, NULL, &wl);   /* no hook: nobody else will */
  braid_obj_unlock(&f->f_obj);
  braid__wl_wake(&wl);
  return 0;
}

bool braid_future_cancel_requested(braid_future_t *f) {
  return atomic_load_explicit(&f->f_cancel, memory_order_relaxed);
}

void braid_future_set_cancel_hook(braid_future_t *f, braid_cancel_fn fn, void *arg) {
  braid_obj_lock(&f->f_obj);
  f->f_hook = fn;
  f->f_hook_arg = arg;
  if (fn && atomic_load_explicit(&f->f_cancel, memory_order_relaxed) &&
      atomic_load_explicit(&f->f_state, memory_order_relaxed) == BRAID_FUTURE_PENDING)
    fn(f, arg);
  braid_obj_unlock(&f->f_obj);
}

braid_fstate_t braid_future_state(braid_future_t *f) {
  /* Acquire: pairs with the release in settle. */
  return (braid_fstate_t)atomic_load_explicit(&f->f_state, memory_order_acquire);
}

int braid_future_peek(braid_future_t *f, braid_msg_t **out) {
  *out = NULL;
  if (braid_future_state(f) == BRAID_FUTURE_PENDING) return BRAID_EAGAIN;
  braid_obj_lock(&f->f_obj);
  int rc = braid__future_poll_locked(f, out);
  braid_obj_unlock(&f->f_obj);
  return rc;
}

int braid_future_wait_until(braid_future_t *f, braid_msg_t **out, int64_t deadline) {
  braid_case_t c = { .c_op = BRAID_OP_AWAIT, .c_obj = f };
  braid_selres_t r;
  int rc = braid_select_until(&c, 1, deadline, &r);
  *out = r.s_msg;
  return rc == 0 ? r.s_err : rc;
}
