/*
 * select.h -- waiting on several channel and future operations at once.
 *
 * Design notes (after Go's runtime/select.go)
 *
 * A select takes an array of cases.  It visits them in a random order (so
 * that among ready cases each is chosen uniformly) while holding every
 * object's lock, taken in address order (so two selects over the same
 * objects cannot deadlock).  The first ready case completes and the select
 * returns.  When none is ready it puts one node per case on the objects'
 * queues, unlocks, and parks; whoever completes one of the nodes wins the
 * waiter's fired word with a compare-and-swap (waiter.h).  After waking, the
 * select locks the objects again and removes the nodes that lost.
 *
 * Two ways to block:
 *   - braid_select_until(): an OS thread; parks on a condition variable.
 *   - braid_select_arm() then braid_select_disarm(): split phase, for the
 *     runtime.  arm either completes at once or queues the nodes; the
 *     runtime suspends the task; the waker's callback makes it runnable; the
 *     task calls disarm, which collects the result.  Timeouts, cancellation
 *     and interrupts fire the waiter with braid_waiter_fire().
 */
#ifndef BRAID_SELECT_H
#define BRAID_SELECT_H

#include <stdint.h>

#include "chan.h"
#include "future.h"
#include "netpoll.h"
#include "waiter.h"

typedef enum braid_op {
  BRAID_OP_RECV = 0,        /* receive from c_obj, a braid_chan_t */
  BRAID_OP_SEND,            /* send c_msg on c_obj, a braid_chan_t */
  BRAID_OP_AWAIT,           /* wait for c_obj, a braid_future_t, to settle */
  BRAID_OP_READABLE,        /* wait until c_obj, a braid_pollfd_t, may read */
  BRAID_OP_WRITABLE,        /* wait until c_obj, a braid_pollfd_t, may write */
} braid_op_t;

typedef struct braid_case {
  braid_op_t c_op;
  void *c_obj;              /* borrowed for the duration of the select */
  braid_msg_t *c_msg;       /* SEND: the message; the channel's only if that
                               case fires with s_err == 0 */
  braid_wnode_t c_node;     /* private to select */
} braid_case_t;

typedef struct braid_selres {
  int s_index;              /* the case that fired, or BRAID_W_TIMEOUT /
                               BRAID_W_CANCEL / BRAID_W_INTR */
  int s_err;                /* RECV: 0 or BRAID_ECLOSED;
                               SEND: 0 or BRAID_ECLOSED (or BRAID_ENOMEM);
                               AWAIT: 0, BRAID_EREJECTED or BRAID_ECANCELED;
                               READABLE/WRITABLE: 0 or BRAID_ECLOSED;
                               BRAID_ETIMEDOUT / BRAID_ECANCELED / BRAID_EINTR
                               for the special indexes */
  braid_msg_t *s_msg;       /* RECV: the value, or the close error (may be
                               NULL); AWAIT: the result; the caller owns it */
} braid_selres_t;

/* Completes a ready case if any.  Returns 0 with *r filled, or BRAID_EAGAIN
 * when no case is ready (nothing changed). */
int braid_select_try(braid_case_t *cases, int n, braid_selres_t *r);

/* Blocks the calling OS thread until a case fires or the deadline passes
 * (then r->s_index is BRAID_W_TIMEOUT and the function returns
 * BRAID_ETIMEDOUT).  Returns 0 when a case fired.  n == 0 waits for the
 * deadline only. */
int braid_select_until(braid_case_t *cases, int n, int64_t deadline, braid_selres_t *r);

/* The calling OS thread's waiter (made on first use, no wake callback: it
 * parks the thread).  An OS thread blocks in one select at a time, so
 * every blocking path of a thread (braid_select_until, the bindings'
 * waits outside a task) shares it. */
braid_waiter_t *braid_thread_waiter(void);

/* Split phase.  Completes a ready case if any (returns 0, *r filled,
 * nothing queued, w untouched: it stays un-armed); otherwise rearms w,
 * queues the cases' nodes on it and returns BRAID_EAGAIN.  From then on anyone may fire w; the caller must
 * wait until w is woken and then call braid_select_disarm.  The cases array
 * must stay put until then. */
int braid_select_arm(braid_case_t *cases, int n, braid_waiter_t *w, braid_selres_t *r);

/* After w was fired and woken: removes the nodes still queued and fills *r
 * from w.  Returns 0 when a case fired, else the special index's error. */
int braid_select_disarm(braid_case_t *cases, int n, braid_waiter_t *w, braid_selres_t *r);

#endif
