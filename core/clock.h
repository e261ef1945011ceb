/*
 * clock.h -- braid's time base: nanoseconds of CLOCK_MONOTONIC.
 *
 * Deadlines are absolute int64 nanoseconds.  BRAID_FOREVER never passes;
 * a deadline at or before now means "try once, do not wait".
 */
#ifndef BRAID_CLOCK_H
#define BRAID_CLOCK_H

#include <stdint.h>
#include <time.h>

#include "braid_errno.h"   /* BRAID_API */

#define BRAID_FOREVER INT64_MAX

static inline int64_t braid_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* now + seconds, saturating at BRAID_FOREVER; a negative or NaN timeout
 * counts as 0. */
BRAID_API int64_t braid_deadline_after(double seconds);   /* braid.h's */

#endif
