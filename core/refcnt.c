/* refcnt.c -- object initialisation and the always-on assertion. */
#include <stdio.h>
#include <stdlib.h>

#include "clock.h"
#include "err.h"
#include "refcnt.h"

int braid_obj_init(braid_obj_t *o, braid_objtype_t *type) {
  /* Adaptive (glibc): a contended lock spins a little before it sleeps in
   * the kernel.  Channel and future critical sections are a few dozen
   * instructions (a ring slot, a waiter queue), so the holder is almost
   * always about to let go, and a futex sleep and wake-up would cost a
   * hundred times the wait: a producer and a consumer on two cores
   * (bench/runtime.lua ints, 2 workers, 6 runs each) went from 2.9-3.3 to
   * 4.3-4.6 M messages/s, with futex calls a quarter of the profile
   * before.  glibc bounds the spin (max_adaptive_count), so a holder that
   * stays longer (a socket's lock across an SSL call) or was preempted is
   * not waited for long.  Elsewhere, or if the type is refused, a default
   * mutex. */
  pthread_mutexattr_t ma;
  if (pthread_mutexattr_init(&ma) != 0) return BRAID_ENOMEM;
#ifdef __GLIBC__
  (void)pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ADAPTIVE_NP);
#endif
  int rc = pthread_mutex_init(&o->o_mtx, &ma);
  BRAID_PCHECK(pthread_mutexattr_destroy(&ma));
  if (rc != 0) return BRAID_ENOMEM;
  atomic_init(&o->o_rc, 1);
  o->o_type = type;
  /* Relaxed: ids only need to be unique, not ordered with anything. */
  o->o_id = atomic_fetch_add_explicit(&type->ot_next_id, 1, memory_order_relaxed) + 1;
  return 0;
}

void braid_obj_fini(braid_obj_t *o) {
  BRAID_PCHECK(pthread_mutex_destroy(&o->o_mtx));
}

void braid__assert_fail(const char *what, const char *file, int line) {
  fprintf(stderr, "braid: assertion failed: %s (%s:%d)\n", what, file, line);
  fflush(stderr);
  abort();
}

int64_t braid_deadline_after(double seconds) {
  int64_t now = braid_now_ns();
  if (!(seconds > 0)) return now;   /* also catches NaN */
  if (seconds >= (double)(BRAID_FOREVER - now) / 1e9) return BRAID_FOREVER;
  return now + (int64_t)(seconds * 1e9);
}
