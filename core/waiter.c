/*
 * waiter.c -- parking, claiming and waking (see waiter.h).
 *
 * The OS-thread park protocol uses w_state:
 *
 *   IDLE     -> the waiter is armed or spinning, not asleep
 *   SLEEPING -> the waiter holds w_mtx and is about to wait, or waits, on w_cv
 *   WOKEN    -> the waker has delivered its wake
 *
 * The waker exchanges the state to WOKEN; only if it was SLEEPING does it
 * make a system call.  On Linux the state word is itself a futex: the
 * sleeper waits while it reads SLEEPING, the waker wakes the address.  A
 * futex wake on memory that the woken thread has already freed is harmless
 * (the kernel only hashes the address, and every futex user tolerates
 * spurious wakes), which a condition variable inside the waiter would not
 * allow: the signal would have to be sent under the waiter's mutex.
 * Elsewhere the waiter moves IDLE -> SLEEPING with a compare-and-swap made
 * while holding w_mtx, so a waker that sees SLEEPING cannot signal before
 * the waiter is inside pthread_cond_wait.  Spinning first keeps the common
 * rendezvous case free of system calls.
 */
#include <time.h>
#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "clock.h"
#include "compiler.h"
#include "err.h"
#include "refcnt.h"
#include "waiter.h"

enum { W_IDLE = 0, W_SLEEPING = 1, W_WOKEN = 2 };

int braid_spin_iterations = 4000;

void braid_waiter_init(braid_waiter_t *w, braid_wake_fn wake, void *data) {
  atomic_init(&w->w_fired, BRAID_W_ARMED);
  w->w_err = 0;
  w->w_msg = NULL;
  w->w_wake = wake;
  w->w_data = data;
  atomic_init(&w->w_state, W_IDLE);
#ifndef __linux__
  pthread_mutex_init(&w->w_mtx, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&w->w_cv, &ca);
  BRAID_PCHECK(pthread_condattr_destroy(&ca));
#endif
}

void braid_waiter_fini(braid_waiter_t *w) {
  braid_msg_release(w->w_msg);
  w->w_msg = NULL;
#ifndef __linux__
  BRAID_PCHECK(pthread_cond_destroy(&w->w_cv));
  BRAID_PCHECK(pthread_mutex_destroy(&w->w_mtx));
#endif
}

#ifdef __linux__
/* Sleeps while *addr == val, until woken or the absolute CLOCK_MONOTONIC
 * deadline passes (FUTEX_WAIT_BITSET takes an absolute monotonic time). */
static void futex_wait(_Atomic int *addr, int val, int64_t deadline) {
  struct timespec ts, *tp = NULL;
  if (deadline != BRAID_FOREVER) {
    ts.tv_sec = deadline / 1000000000;
    ts.tv_nsec = deadline % 1000000000;
    tp = &ts;
  }
  syscall(SYS_futex, (int *)addr, FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, val, tp, NULL,
          FUTEX_BITSET_MATCH_ANY);
}

static void futex_wake(_Atomic int *addr) {
  syscall(SYS_futex, (int *)addr, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, 1, NULL, NULL, 0);
}
#endif

void braid_waiter_rearm(braid_waiter_t *w) {
  w->w_err = 0;
  w->w_msg = NULL;
  atomic_store_explicit(&w->w_state, W_IDLE, memory_order_relaxed);
  /* Release: whoever claims the waiter (acquire in the CAS) sees the fields
   * above reset before it writes its result. */
  atomic_store_explicit(&w->w_fired, BRAID_W_ARMED, memory_order_release);
}

void braid_waiter_wake(braid_waiter_t *w) {
  if (w->w_wake) {
    w->w_wake(w);
    return;
  }
#ifndef __linux__
  /* The sleeper reads the state only under w_mtx once it is SLEEPING, so
   * it cannot return (and free w) before this signal is done. */
  int idle = W_IDLE;
  if (atomic_compare_exchange_strong_explicit(&w->w_state, &idle, W_WOKEN,
                                              memory_order_acq_rel, memory_order_acquire))
    return;
  BRAID_PCHECK(pthread_mutex_lock(&w->w_mtx));
  atomic_store_explicit(&w->w_state, W_WOKEN, memory_order_release);
  BRAID_PCHECK(pthread_cond_signal(&w->w_cv));
  BRAID_PCHECK(pthread_mutex_unlock(&w->w_mtx));
  return;
#endif
  /* acq_rel: release publishes w_err/w_msg to the parked thread (paired with
   * its acquire loads of w_state); acquire orders the SLEEPING check. */
  int prev = atomic_exchange_explicit(&w->w_state, W_WOKEN, memory_order_acq_rel);
  if (prev == W_SLEEPING) {
#ifdef __linux__
    futex_wake(&w->w_state);          /* w may be gone already: see above */
#endif
  }
}

bool braid_waiter_fire(braid_waiter_t *w, int index, int err, braid_msg_t *msg) {
  if (!braid_waiter_claim(w, index)) return false;
  w->w_err = err;
  w->w_msg = msg;
  braid_waiter_wake(w);
  return true;
}

bool braid_waiter_woken(braid_waiter_t *w) {
  /* Acquire: pairs with the waker's exchange; the result fields are visible. */
  return atomic_load_explicit(&w->w_state, memory_order_acquire) == W_WOKEN;
}

int braid_waiter_park_until(braid_waiter_t *w, int64_t deadline) {
  /* Spin for at most braid_spin_iterations pauses or BRAID_SPIN_NS,
   * whichever ends first: a pause costs 10 to 150 cycles depending on the
   * processor, so the clock bounds it. */
  if (braid_spin_iterations > 0) {
    int64_t until = braid_now_ns() + BRAID_SPIN_NS;
    for (int i = 0; i < braid_spin_iterations; i++) {
      if (braid_waiter_woken(w)) return 0;
      braid_cpu_relax();
      if ((i & 31) == 31 && braid_now_ns() > until) break;
    }
  }
#ifdef __linux__
  int idle = W_IDLE;
  /* Acquire on failure: the state is WOKEN and the result is visible. */
  if (!atomic_compare_exchange_strong_explicit(&w->w_state, &idle, W_SLEEPING,
                                               memory_order_acq_rel, memory_order_acquire))
    return 0;
  while (atomic_load_explicit(&w->w_state, memory_order_acquire) == W_SLEEPING) {
    if (deadline != BRAID_FOREVER && braid_now_ns() >= deadline) {
      int sleeping = W_SLEEPING;
      if (atomic_compare_exchange_strong_explicit(&w->w_state, &sleeping, W_IDLE,
                                                  memory_order_acq_rel, memory_order_acquire))
        return BRAID_ETIMEDOUT;
      return 0;                       /* the wake arrived just now */
    }
    futex_wait(&w->w_state, W_SLEEPING, deadline);
  }
  return 0;
#else
  struct timespec ts;
  if (deadline != BRAID_FOREVER) {
    ts.tv_sec = deadline / 1000000000;
    ts.tv_nsec = deadline % 1000000000;
  }
  int rc = 0;
  BRAID_PCHECK(pthread_mutex_lock(&w->w_mtx));
  int idle = W_IDLE;
  /* Acquire on failure: the state is WOKEN and the result is visible. */
  if (atomic_compare_exchange_strong_explicit(&w->w_state, &idle, W_SLEEPING,
                                              memory_order_acq_rel, memory_order_acquire)) {
    while (atomic_load_explicit(&w->w_state, memory_order_acquire) != W_WOKEN) {
      if (deadline == BRAID_FOREVER) {
        BRAID_PCHECK(pthread_cond_wait(&w->w_cv, &w->w_mtx));
      } else if (pthread_cond_timedwait(&w->w_cv, &w->w_mtx, &ts) != 0 &&
                 braid_now_ns() >= deadline) {
        int sleeping = W_SLEEPING;
        if (atomic_compare_exchange_strong_explicit(&w->w_state, &sleeping, W_IDLE,
                                                    memory_order_acq_rel,
                                                    memory_order_acquire))
          rc = BRAID_ETIMEDOUT;
        break;  /* timed out, or the wake arrived just now */
      }
    }
  }
  BRAID_PCHECK(pthread_mutex_unlock(&w->w_mtx));
  return rc;
#endif
}

/* --- queues (the caller holds the owner's o_mtx) --- */

void braid__wq_push(braid_wqueue_t *q, braid_wnode_t *n) {
  n->n_next = NULL;
  n->n_prev = q->q_tail;
  if (q->q_tail) q->q_tail->n_next = n; else q->q_head = n;
  q->q_tail = n;
  n->n_queued = true;
}

void braid__wq_remove(braid_wqueue_t *q, braid_wnode_t *n) {
  if (!n->n_queued) return;
  if (n->n_prev) n->n_prev->n_next = n->n_next; else q->q_head = n->n_next;
  if (n->n_next) n->n_next->n_prev = n->n_prev; else q->q_tail = n->n_prev;
  n->n_next = n->n_prev = NULL;
  n->n_queued = false;
}

braid_wnode_t *braid__wq_claim(braid_wqueue_t *q) {
  braid_wnode_t *n;
  while ((n = q->q_head) != NULL) {
    braid__wq_remove(q, n);
    if (braid_waiter_claim(n->n_waiter, n->n_index)) return n;
  }
  return NULL;
}
