/*
 * timer.c -- a min-heap of timers served by one thread (see timer.h).
 *
 * Design notes
 *
 * The heap is an array of timer pointers ordered by (deadline, seq); each
 * timer remembers its slot so cancel is O(log n).  The thread waits on a
 * condition variable (CLOCK_MONOTONIC) until the earliest deadline or until
 * an add makes a new earliest one.  Due timers are popped under the lock and
 * their callbacks run with the lock dropped; q_running names the timer whose
 * callback runs so that cancel can wait for it (q_done is broadcast after
 * every callback).
 */
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "clock.h"
#include "err.h"
#include "refcnt.h"
#include "timer.h"

struct braid_timerq {
  pthread_mutex_t q_mtx;      /* Protects: every field below, and t_slot /
                                 t_deadline of queued timers */
  pthread_cond_t q_wake;      /* the thread waits here for the next deadline */
  pthread_cond_t q_done;      /* broadcast after each callback */
  braid_timer_t **q_heap;     /* q_len timers, a binary min-heap */
  size_t q_len, q_cap;
  uint64_t q_seq;             /* next insertion number */
  braid_timer_t *q_running;   /* whose callback runs now, or NULL */
  bool q_stop;                /* the thread should exit */
  bool q_driven;              /* immutable: no thread; braid_timerq_run serves it */
  bool q_closed;              /* braid_timerq_close: adds fail */
  pthread_t q_thread;
  braid_timerq_kick_fn q_kick;  /* driven: told of a new earliest deadline */
  void *q_kick_arg;
  /* The earliest deadline (BRAID_FOREVER when empty): written under q_mtx,
   * read lock-free by pollers deciding how long to sleep.  Relaxed: a
   * stale value is corrected by the kick that follows every new earliest. */
  _Atomic int64_t q_next;
};

static void update_next(braid_timerq_t *q) {
  atomic_store_explicit(&q->q_next, q->q_len ? q->q_heap[0]->t_deadline : BRAID_FOREVER,
                        memory_order_relaxed);
}

static bool before(const braid_timer_t *a, const braid_timer_t *b) {
  return a->t_deadline < b->t_deadline ||
         (a->t_deadline == b->t_deadline && a->t_seq < b->t_seq);
}

static void heap_set(braid_timerq_t *q, size_t i, braid_timer_t *t) {
  q->q_heap[i] = t;
  t->t_slot = i + 1;
}

static void sift_up(braid_timerq_t *q, size_t i) {
  braid_timer_t *t = q->q_heap[i];
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!before(t, q->q_heap[p])) break;
    heap_set(q, i, q->q_heap[p]);
    i = p;
  }
  heap_set(q, i, t);
}

static void sift_down(braid_timerq_t *q, size_t i) {
  braid_timer_t *t = q->q_heap[i];
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= q->q_len) break;
    if (c + 1 < q->q_len && before(q->q_heap[c + 1], q->q_heap[c])) c++;
    if (!before(q->q_heap[c], t)) break;
    heap_set(q, i, q->q_heap[c]);
    i = c;
  }
  heap_set(q, i, t);
}

static void heap_remove(braid_timerq_t *q, braid_timer_t *t) {
  size_t i = t->t_slot - 1;
  t->t_slot = 0;
  q->q_len--;
  if (i != q->q_len) {
    heap_set(q, i, q->q_heap[q->q_len]);
    sift_down(q, i);
    sift_up(q, q->q_heap[i]->t_slot - 1);
  }
  update_next(q);
}

static void *timer_thread(void *arg) {
  braid_timerq_t *q = arg;
  /* Signals are for the application's threads, not this one. */
  sigset_t all;
  sigfillset(&all);
  BRAID_PCHECK(pthread_sigmask(SIG_BLOCK, &all, NULL));
  BRAID_PCHECK(pthread_mutex_lock(&q->q_mtx));
  while (!q->q_stop) {
    if (q->q_len == 0) {
      BRAID_PCHECK(pthread_cond_wait(&q->q_wake, &q->q_mtx));
      continue;
    }
    braid_timer_t *t = q->q_heap[0];
    int64_t now = braid_now_ns();
    if (t->t_deadline > now) {
      struct timespec ts = { t->t_deadline / 1000000000, t->t_deadline % 1000000000 };
      BRAID_PCHECK_TIMED(pthread_cond_timedwait(&q->q_wake, &q->q_mtx, &ts));
      continue;
    }
    heap_remove(q, t);
    q->q_running = t;
    BRAID_PCHECK(pthread_mutex_unlock(&q->q_mtx));
    t->t_cb(t);               /* may re-add t (a ticker) */
    BRAID_PCHECK(pthread_mutex_lock(&q->q_mtx));
    q->q_running = NULL;
    BRAID_PCHECK(pthread_cond_broadcast(&q->q_done));
  }
  BRAID_PCHECK(pthread_mutex_unlock(&q->q_mtx));
  return NULL;
}

/* NULL when out of memory (or of the resources a mutex or condition
 * variable needs). */
static braid_timerq_t *timerq_alloc(void) {
  braid_timerq_t *q = calloc(1, sizeof *q);
  if (q == NULL) return NULL;
  atomic_init(&q->q_next, BRAID_FOREVER);
  if (pthread_mutex_init(&q->q_mtx, NULL) != 0) goto error1;
  pthread_condattr_t ca;
  if (pthread_condattr_init(&ca) != 0) goto error2;
  int rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  if (rc == 0) rc = pthread_cond_init(&q->q_wake, &ca);
  BRAID_PCHECK(pthread_condattr_destroy(&ca));
  if (rc != 0) goto error2;
  if (pthread_cond_init(&q->q_done, NULL) != 0) goto error3;
  return q;
error3:
  BRAID_PCHECK(pthread_cond_destroy(&q->q_wake));
error2:
  BRAID_PCHECK(pthread_mutex_destroy(&q->q_mtx));
error1:
  free(q);
  return NULL;
}

static void timerq_dealloc(braid_timerq_t *q) {
  for (size_t i = 0; i < q->q_len; i++) q->q_heap[i]->t_slot = 0;
  free(q->q_heap);
  BRAID_PCHECK(pthread_cond_destroy(&q->q_done));
  BRAID_PCHECK(pthread_cond_destroy(&q->q_wake));
  BRAID_PCHECK(pthread_mutex_destroy(&q->q_mtx));
  free(q);
}

braid_timerq_t *braid_timerq_new_driven(void) {
  braid_timerq_t *q = timerq_alloc();
  if (q) q->q_driven = true;
  return q;
}

void braid_timerq_set_kick(braid_timerq_t *q, braid_timerq_kick_fn kick, void *arg) {
  BRAID_PCHECK(pthread_mutex_lock(&q->q_mtx));
  q->q_kick = kick;
  q->q_kick_arg = arg;
  BRAID_PCHECK(pthread_mutex_unlock(&q->q_mtx));
}

int64_t braid_timerq_next(braid_timerq_t *q) {
  return atomic_load_explicit(&q->q_next, memory_order_relaxed);
}

int braid_timerq_run(braid_timerq_t *q, int64_t now) {
  int n = 0;
  BRAID_PCHECK(pthread_mutex_lock(&q->q_mtx));
  /* One runner at a time: callbacks run in deadline order, and cancel's
   * wait for a running callback (q_running) stays a single slot.  A second
   * caller leaves the due timers to the first, which loops until none is
   * due. */
  while (q->q_running == NULL && q->q_len > 0 && q->q_heap[0]->t_deadline <= now) {
    braid_timer_t *t = q->q_heap[0];
    heap_remove(q, t);
    q->q_running = t;
    BRAID_PCHECK(pthread_mutex_unlock(&q->q_mtx));
    t->t_cb(t);               /* may re-add t (a ticker) */
    n++;
    BRAID_PCHECK(pthread_mutex_lock(&q->q_mtx));
    q->q_running = NULL;
    BRAID_PCHECK(pthread_cond_broadcast(&q->q_done));
  }
  BRAID_PCHECK(pthread_mutex_unlock(&q->q_mtx));
  return n;
}

braid_timerq_t *braid_timerq_new(void) {
  braid_timerq_t *q = timerq_alloc();
  if (q == NULL) return NULL;
  if (pthread_create(&q->q_thread, NULL, timer_thread, q) != 0) {
    BRAID_PCHECK(pthread_cond_destroy(&q->q_done));
    BRAID_PCHECK(pthread_cond_destroy(&q->q_wake));
    BRAID_PCHECK(pthread_mutex_destroy(&q->q_mtx));
    free(q);
    return NULL;
  }
  return q;
}

void braid_timerq_free(braid_timerq_t *q) {
  if (q == NULL) return;
  if (!q->q_driven) {
    BRAID_PCHECK(pthread_mutex_lock(&q->q_mtx));
    q->q_stop = true;
    BRAID_PCHECK(pthread_cond_signal(&q->q_wake));
    BRAID_PCHECK(pthread_mutex_unlock(&q->q_mtx));
    BRAID_PCHECK(pthread_join(q->q_thread, NULL));
  }
  timerq_dealloc(q);
}

int braid_timer_add(braid_timerq_t *q, braid_timer_t *t, int64_t deadline,
                    braid_timer_fn cb, void *data) {
  BRAID_PCHECK(pthread_mutex_lock(&q->q_mtx));
  BRAID_ASSERT(t->t_slot == 0);
  if (q->q_closed) {
    pthread_mutex_unlock(&q->q_mtx);
    return BRAID_ECLOSED;
  }
  if (q->q_len == q->q_cap) {
    size_t ncap = q->q_cap ? q->q_cap * 2 : 64;
    braid_timer_t **nh = realloc(q->q_heap, ncap * sizeof *nh);
    if (nh == NULL) {
      BRAID_PCHECK(pthread_mutex_unlock(&q->q_mtx));
      return BRAID_ENOMEM;
    }
    q->q_heap = nh;
    q->q_cap = ncap;
  }
  t->t_deadline = deadline;
  t->t_cb = cb;
  t->t_data = data;
  t->t_seq = q->q_seq++;
  q->q_heap[q->q_len++] = t;
  sift_up(q, q->q_len - 1);
  bool earliest = q->q_heap[0] == t;
  braid_timerq_kick_fn kick = q->q_kick;
  void *kick_arg = q->q_kick_arg;
  if (earliest) {
    update_next(q);
    if (!q->q_driven) BRAID_PCHECK(pthread_cond_signal(&q->q_wake));
  }
  BRAID_PCHECK(pthread_mutex_unlock(&q->q_mtx));
  /* Outside the lock: the kick wakes a poller, which reads q_next. */
  if (earliest && kick) kick(kick_arg);
  return 0;
}

int braid_timerq_close(braid_timerq_t *q) {
  pthread_mutex_lock(&q->q_mtx);
  q->q_closed = true;
  pthread_mutex_unlock(&q->q_mtx);
  return braid_timerq_run(q, INT64_MAX);
}

bool braid_timer_cancel(braid_timerq_t *q, braid_timer_t *t) {
  BRAID_PCHECK(pthread_mutex_lock(&q->q_mtx));
  bool queued = t->t_slot != 0;
  if (queued) heap_remove(q, t);
  while (q->q_running == t) BRAID_PCHECK(pthread_cond_wait(&q->q_done, &q->q_mtx));
  /* A callback that re-added t while we waited: take it out again. */
  if (!queued && t->t_slot != 0) heap_remove(q, t);
  BRAID_PCHECK(pthread_mutex_unlock(&q->q_mtx));
  return queued;
}

size_t braid_timerq_len(braid_timerq_t *q) {
  BRAID_PCHECK(pthread_mutex_lock(&q->q_mtx));
  size_t n = q->q_len;
  BRAID_PCHECK(pthread_mutex_unlock(&q->q_mtx));
  return n;
}
