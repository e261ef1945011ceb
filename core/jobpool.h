/*
 * jobpool.h -- one bounded pool of OS threads for work that blocks the
 * thread: braid.blocking, native calls, name resolution.
 *
 * Design notes (after libuv's threadpool.c)
 *
 * A job is an intrusive record (the caller owns its memory until run or
 * cancel is called) with a function that runs on a pool thread.  The pool
 * starts threads on demand: a thread starts whenever queued jobs outnumber
 * idle threads, up to max_threads, so a burst of n jobs runs on n threads
 * at once.  (An idle thread counts as idle until it wakes, and a job as
 * queued until a thread takes it, so one idle thread never stands in for
 * several jobs of a burst.)  A thread
 * idle for idle_ns exits.  Jobs still queued at shutdown get their cancel
 * callback instead; running jobs get a grace period.
 */
#ifndef BRAID_JOBPOOL_H
#define BRAID_JOBPOOL_H

#include <stdbool.h>
#include <stdint.h>

typedef struct braid_jobpool braid_jobpool_t;
typedef struct braid_job braid_job_t;
typedef void (*braid_job_fn)(braid_job_t *j);

struct braid_job {
  braid_job_fn j_run;         /* runs on a pool thread */
  braid_job_fn j_cancel;      /* runs instead when the pool stops first (may be NULL) */
  void *j_data;               /* the caller's */
  braid_job_t *j_next;        /* queue link (the pool's) */
};

/* Creates a pool of at most max_threads threads; idle threads exit after
 * idle_ns.  thread_exit (may be NULL) runs on each pool thread as it exits.
 * Returns NULL on failure. */
braid_jobpool_t *braid_jobpool_new(int max_threads, int64_t idle_ns,
                                   void (*thread_exit)(void));

/* Queues j.  Returns 0, or BRAID_ENOMEM/BRAID_ECLOSED (nothing queued). */
int braid_jobpool_submit(braid_jobpool_t *p, braid_job_t *j);

/* Stops the pool: queued jobs are cancelled (j_cancel), running ones get
 * grace_ns to finish.  Returns true and frees the pool when every thread
 * has exited; false when some job still runs after the grace period (the
 * pool then stays allocated for that thread, which frees nothing when it
 * finishes: a deliberate leak in a process that is exiting). */
bool braid_jobpool_stop(braid_jobpool_t *p, int64_t grace_ns);

typedef struct braid_jobpool_stats {
  int threads, idle, queued, running;
} braid_jobpool_stats_t;

void braid_jobpool_stats(braid_jobpool_t *p, braid_jobpool_stats_t *st);

#endif
