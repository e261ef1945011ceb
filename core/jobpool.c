/*
 * jobpool.c -- the job pool (see jobpool.h).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <time.h>

#include "clock.h"
#include "err.h"
#include "jobpool.h"
#include "refcnt.h"   /* BRAID_PCHECK */

struct braid_jobpool {
  int p_max;                  /* immutable */
  int64_t p_idle_ns;          /* immutable */
  void (*p_thread_exit)(void);  /* immutable */
  pthread_mutex_t p_mtx;      /* Protects: every field below */
  pthread_cond_t p_cv;        /* idle threads wait here (CLOCK_MONOTONIC) */
  pthread_cond_t p_done;      /* signalled when a thread exits */
  braid_job_t *p_head, *p_tail;
  int p_queued;               /* jobs on the queue */
  int p_threads;              /* threads alive */
  int p_idle;                 /* threads waiting for a job */
  int p_running;              /* jobs running */
  bool p_stop;
  /* Every thread started and not joined yet (joinable: a thread must not
   * still be returning through this library's code when the host unloads
   * it after stop), and whether it has left its loop. */
  struct ptid { pthread_t t; bool exited; } *p_tids;
  int p_ntids, p_captids;
};

/* Joins the threads that have left their loop.  Called with p_mtx held;
 * such a thread only has to return, so the join is short. */
static void reap_locked(braid_jobpool_t *p) {
  int k = 0;
  for (int i = 0; i < p->p_ntids; i++) {
    if (p->p_tids[i].exited) BRAID_PCHECK(pthread_join(p->p_tids[i].t, NULL));
    else p->p_tids[k++] = p->p_tids[i];
  }
  p->p_ntids = k;
}

static void *pool_main(void *arg) {
  braid_jobpool_t *p = arg;
  sigset_t all;
  sigfillset(&all);
  BRAID_PCHECK(pthread_sigmask(SIG_BLOCK, &all, NULL));   /* signals are the host's */
  BRAID_PCHECK(pthread_mutex_lock(&p->p_mtx));
  for (;;) {
    if (p->p_head == NULL && !p->p_stop) {
      p->p_idle++;
      int64_t until = braid_now_ns() + p->p_idle_ns;
      struct timespec ts = { (time_t)(until / 1000000000), (long)(until % 1000000000) };
      int rc = 0;
      while (p->p_head == NULL && !p->p_stop && rc != ETIMEDOUT) {
        rc = pthread_cond_timedwait(&p->p_cv, &p->p_mtx, &ts);
        BRAID_PCHECK_TIMED(rc);
      }
      p->p_idle--;
    }
    braid_job_t *j = p->p_head;
    if (j == NULL) break;             /* idle too long, or stopping */
    p->p_head = j->j_next;
    if (p->p_head == NULL) p->p_tail = NULL;
    p->p_queued--;
    p->p_running++;
    BRAID_PCHECK(pthread_mutex_unlock(&p->p_mtx));
    j->j_run(j);                      /* j may be freed by now */
    BRAID_PCHECK(pthread_mutex_lock(&p->p_mtx));
    p->p_running--;
  }
  BRAID_PCHECK(pthread_mutex_unlock(&p->p_mtx));
  if (p->p_thread_exit) p->p_thread_exit();
  BRAID_PCHECK(pthread_mutex_lock(&p->p_mtx));
  p->p_threads--;
  pthread_t me = pthread_self();
  for (int i = 0; i < p->p_ntids; i++)
    if (pthread_equal(p->p_tids[i].t, me)) p->p_tids[i].exited = true;
  BRAID_PCHECK(pthread_cond_broadcast(&p->p_done));
  BRAID_PCHECK(pthread_mutex_unlock(&p->p_mtx));
  return NULL;
}

braid_jobpool_t *braid_jobpool_new(int max_threads, int64_t idle_ns,
                                   void (*thread_exit)(void)) {
  braid_jobpool_t *p = calloc(1, sizeof *p);
  if (p == NULL) return NULL;
  p->p_max = max_threads > 0 ? max_threads : 1;
  p->p_idle_ns = idle_ns > 0 ? idle_ns : 10000000000LL;
  p->p_thread_exit = thread_exit;
  pthread_condattr_t ca;
  if (pthread_mutex_init(&p->p_mtx, NULL) != 0) goto error1;
  if (pthread_condattr_init(&ca) != 0) goto error2;
  int rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  if (rc == 0) rc = pthread_cond_init(&p->p_cv, &ca);
  BRAID_PCHECK(pthread_condattr_destroy(&ca));
  if (rc != 0) goto error2;
  if (pthread_cond_init(&p->p_done, NULL) != 0) goto error3;
  return p;
error3:
  BRAID_PCHECK(pthread_cond_destroy(&p->p_cv));
error2:
  BRAID_PCHECK(pthread_mutex_destroy(&p->p_mtx));
error1:
  free(p);
  return NULL;
}

int braid_jobpool_submit(braid_jobpool_t *p, braid_job_t *j) {
  BRAID_PCHECK(pthread_mutex_lock(&p->p_mtx));
  if (p->p_stop) {
    BRAID_PCHECK(pthread_mutex_unlock(&p->p_mtx));
    return BRAID_ECLOSED;
  }
  j->j_next = NULL;
  if (p->p_tail) p->p_tail->j_next = j; else p->p_head = j;
  p->p_tail = j;
  p->p_queued++;
  if (p->p_idle > 0) BRAID_PCHECK(pthread_cond_signal(&p->p_cv));
  /* More jobs waiting than idle threads to take them: one more thread.  An
   * idle thread counts until it wakes, but so does every job until it is
   * taken, so a burst of n jobs gets n threads (up to the bound). */
  if (p->p_queued > p->p_idle && p->p_threads < p->p_max) {
    reap_locked(p);
    int rc = 0;
    if (p->p_ntids == p->p_captids) {
      int ncap = p->p_captids ? 2 * p->p_captids : 16;
      struct ptid *nt = realloc(p->p_tids, (size_t)ncap * sizeof *nt);
      if (nt == NULL) rc = ENOMEM;
      else { p->p_tids = nt; p->p_captids = ncap; }
    }
    pthread_t th;
    if (rc == 0) rc = pthread_create(&th, NULL, pool_main, p);
    if (rc == 0) {
      p->p_tids[p->p_ntids].t = th;
      p->p_tids[p->p_ntids].exited = false;
      p->p_ntids++;
      p->p_threads++;
    } else if (p->p_threads == 0) {
      /* No thread could ever run it: take it back (it is the only job). */
      p->p_head = p->p_tail = NULL;
      p->p_queued--;
      BRAID_PCHECK(pthread_mutex_unlock(&p->p_mtx));
      return BRAID_ENOMEM;
    }
    /* else: a running thread takes it when it is done */
  }
  BRAID_PCHECK(pthread_mutex_unlock(&p->p_mtx));
  return 0;
}

bool braid_jobpool_stop(braid_jobpool_t *p, int64_t grace_ns) {
  BRAID_PCHECK(pthread_mutex_lock(&p->p_mtx));
  p->p_stop = true;
  braid_job_t *j = p->p_head;
  p->p_head = p->p_tail = NULL;
  p->p_queued = 0;
  BRAID_PCHECK(pthread_cond_broadcast(&p->p_cv));
  BRAID_PCHECK(pthread_mutex_unlock(&p->p_mtx));
  while (j) {
    braid_job_t *next = j->j_next;
    if (j->j_cancel) j->j_cancel(j);
    j = next;
  }
  int64_t until = grace_ns == BRAID_FOREVER ? BRAID_FOREVER : braid_now_ns() + grace_ns;
  BRAID_PCHECK(pthread_mutex_lock(&p->p_mtx));
  while (p->p_threads > 0 && braid_now_ns() < until) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 5000000;
    if (ts.tv_nsec >= 1000000000) { ts.tv_sec++; ts.tv_nsec -= 1000000000; }
    BRAID_PCHECK_TIMED(pthread_cond_timedwait(&p->p_done, &p->p_mtx, &ts));
  }
  bool all = p->p_threads == 0;
  if (all) {
    reap_locked(p);
  } else {
    /* Stuck ones are left running, detached; the others are joined. */
    for (int i = 0; i < p->p_ntids; i++)
      if (p->p_tids[i].exited) BRAID_PCHECK(pthread_join(p->p_tids[i].t, NULL));
      else BRAID_PCHECK(pthread_detach(p->p_tids[i].t));
    p->p_ntids = 0;
  }
  BRAID_PCHECK(pthread_mutex_unlock(&p->p_mtx));
  if (!all) return false;
  free(p->p_tids);
  BRAID_PCHECK(pthread_cond_destroy(&p->p_done));
  BRAID_PCHECK(pthread_cond_destroy(&p->p_cv));
  BRAID_PCHECK(pthread_mutex_destroy(&p->p_mtx));
  free(p);
  return true;
}

void braid_jobpool_stats(braid_jobpool_t *p, braid_jobpool_stats_t *st) {
  BRAID_PCHECK(pthread_mutex_lock(&p->p_mtx));
  st->threads = p->p_threads;
  st->idle = p->p_idle;
  st->queued = p->p_queued;
  st->running = p->p_running;
  BRAID_PCHECK(pthread_mutex_unlock(&p->p_mtx));
}
