/*
 * future.h -- futures: settle once, any number of waiters.
 *
 * A future is pending until it is resolved (a value message), rejected (an
 * error message) or cancelled.  The first settle wins; later ones return
 * BRAID_ESETTLED and change nothing.  Every waiter, present or future, gets
 * a reference to the same result message.  A future is also a select case
 * (BRAID_OP_AWAIT).
 *
 * Cancellation is a request: braid_future_cancel() sets a flag and calls the
 * producer's cancel hook (the runtime's: it interrupts the producing task's
 * blocking call).  A future with no hook (made by hand) is settled as
 * cancelled at once.
 */
#ifndef BRAID_FUTURE_H
#define BRAID_FUTURE_H

#include <stdbool.h>

#include "braid_errno.h"   /* BRAID_API */
#include "msg.h"
#include "refcnt.h"

typedef struct braid_future braid_future_t;

typedef enum braid_fstate {
  BRAID_FUTURE_PENDING = 0,
  BRAID_FUTURE_RESOLVED,
  BRAID_FUTURE_REJECTED,
  BRAID_FUTURE_CANCELLED,
} braid_fstate_t;

/* Called with the future's o_mtx held: it must not block, take a lock that
 * is ordered before a future's (core/LOCKING.md), or touch the future. */
typedef void (*braid_cancel_fn)(braid_future_t *f, void *arg);

extern braid_objtype_t braid_future_type;

/* Returns a new pending future (one reference, the caller's) or NULL. */
braid_future_t *braid_future_new(void);

static inline void braid_future_retain(braid_future_t *f) { braid_obj_retain((braid_obj_t *)f); }
static inline void braid_future_release(braid_future_t *f) { braid_obj_release((braid_obj_t *)f); }
static inline uint64_t braid_future_id(braid_future_t *f) { return ((braid_obj_t *)f)->o_id; }

/* Settles f as state (RESOLVED, REJECTED or CANCELLED) with msg (may be
 * NULL; its reference is stolen either way) and wakes every waiter.  Returns
 * 0, BRAID_ESETTLED when f was already settled, BRAID_EINVAL for a bad
 * state. */
int braid_future_settle(braid_future_t *f, braid_fstate_t state, braid_msg_t *msg);

static inline int braid_future_resolve(braid_future_t *f, braid_msg_t *m) {
  return braid_future_settle(f, BRAID_FUTURE_RESOLVED, m);
}
static inline int braid_future_reject(braid_future_t *f, braid_msg_t *err) {
  return braid_future_settle(f, BRAID_FUTURE_REJECTED, err);
}

/* Requests cancellation.  Pending with a hook: sets the flag and calls the
 * hook.  Pending without a hook: settles CANCELLED.  Settled: nothing.
 * Returns 0 when the request was made, BRAID_ESETTLED when already settled. */
BRAID_API int braid_future_cancel(braid_future_t *f);   /* also braid.h's */

/* Whether cancellation was requested (an atomic read; for the producer). */
bool braid_future_cancel_requested(braid_future_t *f);

/* Installs (fn != NULL) or removes (fn == NULL) the cancel hook.  If
 * cancellation was already requested when a hook is installed, it is called
 * at once (with o_mtx held). */
void braid_future_set_cancel_hook(braid_future_t *f, braid_cancel_fn fn, void *arg);

braid_fstate_t braid_future_state(braid_future_t *f);

/* Marks f as observed: somebody looked at (or will look at) its outcome.
 * A future destroyed while REJECTED and never observed is passed to
 * braid_future_unobserved (if set) with its error message, so that a failed
 * task nobody awaited is reported, not lost. */
void braid_future_observe(braid_future_t *f);
extern void (*braid_future_unobserved)(braid_future_t *f, braid_msg_t *err);

/* Names the task that settles f, for reports (an error nobody awaited is
 * reported when f is destroyed, after the task is gone).  Call before f is
 * shared; f takes over name (malloc'd, may be NULL) and frees it. */
void braid_future_set_task(braid_future_t *f, uint64_t task_id, char *name);
/* The task's id (0 when f is not a task's) and name (NULL when unnamed);
 * valid while f is. */
uint64_t braid_future_task_id(braid_future_t *f);
const char *braid_future_task_name(braid_future_t *f);

/* Waits until the deadline (blocks the OS thread).  Returns 0 (resolved),
 * BRAID_EREJECTED, BRAID_ECANCELED (*out set to a new reference to the
 * result message, possibly NULL) or BRAID_ETIMEDOUT (*out NULL). */
int braid_future_wait_until(braid_future_t *f, braid_msg_t **out, int64_t deadline);

/* Result of a settled future without waiting: as braid_future_wait_until,
 * or BRAID_EAGAIN while pending. */
int braid_future_peek(braid_future_t *f, braid_msg_t **out);

#endif
