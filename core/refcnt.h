/*
 * refcnt.h -- the base of every object that crosses threads.
 *
 * Design notes
 *
 * Channels, futures and the higher-level handles (broker, limiter, ...)
 * start with a braid_obj_t.  It carries the reference count, the object's
 * type (name, destructor), a per-type id used in tostring ("braid.chan#12"),
 * and the object's mutex.  Putting the mutex in the common header lets
 * select lock any mix of channels and futures in address order without
 * knowing which is which.
 *
 * Closing and freeing are separate: closing wakes waiters, freeing happens
 * when the last reference is dropped.  A Lua userdata, a message and a
 * queued task argument each hold exactly one reference.
 */
#ifndef BRAID_REFCNT_H
#define BRAID_REFCNT_H

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct braid_obj braid_obj_t;

typedef struct braid_objtype {
  const char *ot_name;                   /* "chan", "future", ...: tostring prefix */
  void (*ot_destroy)(braid_obj_t *o);    /* frees the object; refcount is zero */
  _Atomic uint64_t ot_next_id;           /* last id handed out for this type */
} braid_objtype_t;

struct braid_obj {
  _Atomic size_t o_rc;                   /* references; the object dies at 0 */
  braid_objtype_t *o_type;               /* immutable after init */
  uint64_t o_id;                         /* immutable; 1, 2, ... per type */
  pthread_mutex_t o_mtx;                 /* Protects: the subtype's state */
};

/* Initializes o with one reference owned by the caller and a fresh id.
 * Returns 0, or BRAID_ENOMEM when its mutex cannot be made (o is then not
 * initialized: free it, do not release it). */
int braid_obj_init(braid_obj_t *o, braid_objtype_t *type);

/* Destroys the mutex; for destructors. */
void braid_obj_fini(braid_obj_t *o);

static inline void braid_obj_retain(braid_obj_t *o) {
  /* Relaxed: a new reference can only be made from an existing one, which
   * already keeps the object alive; nothing is published by the increment. */
  atomic_fetch_add_explicit(&o->o_rc, 1, memory_order_relaxed);
}

/* Drops one reference; the last one destroys the object.  acq_rel pairs
 * every earlier release (writes made through other references) with the
 * destroyer's view of the object. */
static inline void braid_obj_release(braid_obj_t *o) {
  if (atomic_fetch_sub_explicit(&o->o_rc, 1, memory_order_acq_rel) == 1)
    o->o_type->ot_destroy(o);
}

/* Aborts with a message when cond is false; never compiled out (libdill). */
#define BRAID_ASSERT(cond) \
  ((cond) ? (void)0 : braid__assert_fail(#cond, __FILE__, __LINE__))
void braid__assert_fail(const char *what, const char *file, int line);

/* The result of a pthread call that fails only when misused (lock, unlock,
 * cond wait/signal/broadcast, join, detach, destroy, sigmask: an object
 * not initialized, a mutex not held, a thread already joined): a bug, not a
 * condition to handle.  Asserted in debug builds (NDEBUG not defined),
 * the bare call otherwise.  Calls that fail for want of resources
 * (pthread_create, pthread_mutex_init, pthread_cond_init,
 * pthread_condattr_init) are checked in every build and their failure is
 * returned to the caller. */
/* A pthread_cond_timedwait result: 0 or ETIMEDOUT unless misused. */
static inline bool braid__timedwait_ok(int rc) { return rc == 0 || rc == ETIMEDOUT; }
/* Each evaluates call exactly once. */
#ifdef NDEBUG
#define BRAID_PCHECK(call) ((void)(call))
#define BRAID_PCHECK_TIMED(call) ((void)(call))
#else
#define BRAID_PCHECK(call) BRAID_ASSERT((call) == 0)
#define BRAID_PCHECK_TIMED(call) BRAID_ASSERT(braid__timedwait_ok(call))
#endif

static inline void braid_obj_lock(braid_obj_t *o) { BRAID_PCHECK(pthread_mutex_lock(&o->o_mtx)); }
static inline void braid_obj_unlock(braid_obj_t *o) { BRAID_PCHECK(pthread_mutex_unlock(&o->o_mtx)); }

#endif
