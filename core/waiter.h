/*
 * waiter.h -- how a blocked party (an OS thread or a suspended Lua task) is
 * parked, chosen and woken.
 *
 * Design notes
 *
 * A waiter stands for one blocked operation: a send, a receive, an await,
 * or a whole select.  For every case of the operation a node (braid_wnode_t,
 * Go's sudog) is put on the queue of the channel or future concerned; all of
 * a select's nodes point at the same waiter.
 *
 * The waiter's w_fired word decides who completes the operation.  It is
 * BRAID_W_ARMED while the operation waits; whoever moves it to a case index
 * (or to BRAID_W_TIMEOUT, BRAID_W_CANCEL, BRAID_W_INTR) with a
 * compare-and-swap has won: it alone writes w_err and w_msg, then wakes the
 * waiter.  Everyone else who finds the node on a queue simply drops it.
 *
 * Waking has two kinds, fixed when the waiter is initialised:
 *
 *   - w_wake == NULL: an OS thread parks in braid_waiter_park_until().  It
 *     spins briefly first (a rendezvous partner on another core usually
 *     answers within a microsecond), then sleeps on a condition variable.
 *   - w_wake != NULL: the runtime's callback, called once per firing, with no
 *     core lock held.  For a Lua task it pushes the task on its worker's ready
 *     queue; the task then resumes and calls braid_select_disarm.
 *
 * Lifetime: the waker touches the waiter after the compare-and-swap, until
 * its wake completes.  The blocked side therefore never returns before it
 * has been woken (w_state WOKEN, or its callback ran), and only then may the
 * waiter's memory go.
 */
#ifndef BRAID_WAITER_H
#define BRAID_WAITER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "msg.h"

enum {
  BRAID_W_ARMED = -1,       /* waiting: nobody has won yet */
  BRAID_W_TIMEOUT = -2,     /* the deadline passed */
  BRAID_W_CANCEL = -3,      /* the task was cancelled */
  BRAID_W_INTR = -4,        /* interrupted (REPL Ctrl-C, deadlock, shutdown) */
};

typedef struct braid_waiter braid_waiter_t;
typedef void (*braid_wake_fn)(braid_waiter_t *w);

struct braid_waiter {
  _Atomic int w_fired;      /* BRAID_W_ARMED, else who won (case index or BRAID_W_*) */
  int w_err;                /* written by the winner before waking: 0 or BRAID_E* */
  braid_msg_t *w_msg;       /* written by the winner: a received message or close
                               error, owned by the waiter's side */
  braid_wake_fn w_wake;     /* immutable: NULL for OS-thread parking */
  void *w_data;             /* immutable: for w_wake (the runtime's task) */
  _Atomic int w_state;      /* OS-thread park protocol (waiter.c); on Linux
                               also the futex the thread sleeps on */
#ifndef __linux__
  pthread_mutex_t w_mtx;    /* Protects: sleeping on w_cv */
  pthread_cond_t w_cv;      /* signalled once, by the waker */
#endif
};

/* A node per case, on the queue of one channel or future.  Lives in the
 * blocked side's memory (braid_case_t).  All fields but n_waiter and n_index
 * are under the queue owner's o_mtx. */
typedef struct braid_wnode {
  struct braid_wnode *n_next;   /* queue links */
  struct braid_wnode *n_prev;
  braid_waiter_t *n_waiter;     /* immutable while queued */
  int n_index;                  /* immutable: case index reported on a win */
  bool n_queued;                /* on its owner's queue */
  braid_msg_t *n_msg;           /* send case: the message offered (the sender's
                                   until a receiver wins the node) */
} braid_wnode_t;

typedef struct braid_wqueue {
  braid_wnode_t *q_head;
  braid_wnode_t *q_tail;
} braid_wqueue_t;

/* Initialises w.  wake NULL selects OS-thread parking. */
void braid_waiter_init(braid_waiter_t *w, braid_wake_fn wake, void *data);
void braid_waiter_fini(braid_waiter_t *w);

/* Makes w ready for a new blocking operation (fired = ARMED, no result). */
void braid_waiter_rearm(braid_waiter_t *w);

/* Tries to win w for case index.  Returns true when this caller won; it must
 * then set w_err/w_msg and call braid_waiter_wake() (outside any core lock).
 * acq_rel: the winner sees the waiter's arming, the woken side sees the
 * winner's writes through the wake. */
static inline bool braid_waiter_claim(braid_waiter_t *w, int index) {
  int armed = BRAID_W_ARMED;
  return atomic_compare_exchange_strong_explicit(
      &w->w_fired, &armed, index, memory_order_acq_rel, memory_order_acquire);
}

/* Wakes a waiter that the caller has claimed.  Call with no core lock held. */
void braid_waiter_wake(braid_waiter_t *w);

/* Claims w for index with err/msg and wakes it.  For timers, cancellation and
 * interrupts.  Returns true when it won (msg is then the waiter's), false
 * when someone else had (msg is untouched and still the caller's). */
bool braid_waiter_fire(braid_waiter_t *w, int index, int err, braid_msg_t *msg);

/* OS-thread parking (w_wake == NULL).  Returns 0 once woken, BRAID_ETIMEDOUT
 * when the deadline passes first (the caller then tries
 * braid_waiter_claim(w, BRAID_W_TIMEOUT); if that fails a wake is on its way
 * and the caller parks again until BRAID_FOREVER). */
int braid_waiter_park_until(braid_waiter_t *w, int64_t deadline);

/* Whether w has been woken (OS-thread kind). */
bool braid_waiter_woken(braid_waiter_t *w);

/* Spin iterations before an OS thread sleeps; 0 disables spinning.  A
 * process-wide tuning knob for the benchmark. */
extern int braid_spin_iterations;

/* The longest an OS thread spins before sleeping, in nanoseconds.  Spinning
 * pays only while the partner runs on another core at the same moment. */
#define BRAID_SPIN_NS 10000

/* Queue operations; the caller holds the owner's o_mtx. */
void braid__wq_push(braid_wqueue_t *q, braid_wnode_t *n);
void braid__wq_remove(braid_wqueue_t *q, braid_wnode_t *n);
/* Pops the first node whose waiter the caller wins for that node's index;
 * nodes whose waiter was already won elsewhere are dropped.  Returns NULL
 * when none is left. */
braid_wnode_t *braid__wq_claim(braid_wqueue_t *q);

#endif
