/* test_timer.c -- the timer queue (timer.h): deadline order, FIFO among
 * equal deadlines, synchronous cancel, tickers, freeing with timers queued. */
#include <semaphore.h>

#include "timer.h"
#include "test.h"

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */

static braid_timerq_t *timerq_new(void) {
  braid_timerq_t *q = braid_timerq_new();
  ASSERT_NOT_NULL(q);
  return q;
}

static void timer_zero(braid_timer_t *t) { memset(t, 0, sizeof *t); }

/* A callback that posts the semaphore in t_data. */
static void post_cb(braid_timer_t *t) { sem_post((sem_t *)t->t_data); }

static void sem_wait_all(sem_t *s, int n) {
  for (int i = 0; i < n; i++)
    while (sem_wait(s) != 0) {}
}

/* Waits up to 10 s for the semaphore; false when it did not come. */
static bool sem_wait_10s(sem_t *s) {
  int64_t deadline = braid_now_ns() + test_ms(10000);
  while (sem_trywait(s) != 0) {
    if (braid_now_ns() > deadline) return false;
    test_sleep_ms(1);
  }
  return true;
}

/* ------------------------------------------------------------------------ */
/* Order                                                                     */

/* The firing log: the timer thread appends, the test reads after a sem. */
typedef struct {
  int *order;              /* indexes of fired timers, in firing order */
  atomic_int n;
  sem_t done;              /* posted once per firing */
} firelog_t;

typedef struct {
  braid_timer_t t;         /* first: the callback casts back */
  firelog_t *log;
  int index;
} logged_timer_t;

static void log_cb(braid_timer_t *t) {
  logged_timer_t *lt = (logged_timer_t *)t;
  int k = atomic_fetch_add(&lt->log->n, 1);
  lt->log->order[k] = lt->index;
  sem_post(&lt->log->done);
}

/* A gate: a timer whose callback holds the timer thread until released,
 * so that a batch of timers can be added before any fires. */
typedef struct {
  sem_t entered;
  sem_t release;
} gate_t;

static void gate_cb(braid_timer_t *t) {
  gate_t *g = t->t_data;
  sem_post(&g->entered);
  while (sem_wait(&g->release) != 0) {}
}

TEST(test_timer_order) {
  enum { N = 300 };
  braid_timerq_t *q = timerq_new();
  logged_timer_t *ts = calloc(N, sizeof *ts);
  int64_t *deadline = calloc(N, sizeof *deadline);
  firelog_t log;
  log.order = calloc(N, sizeof *log.order);
  ASSERT(ts && deadline && log.order);
  atomic_init(&log.n, 0);
  ASSERT_EQ_INT(sem_init(&log.done, 0, 0), 0);

  /* Hold the timer thread in a gate callback while adding. */
  gate_t g;
  sem_init(&g.entered, 0, 0);
  sem_init(&g.release, 0, 0);
  braid_timer_t gate;
  timer_zero(&gate);
  ASSERT_OK(braid_timer_add(q, &gate, braid_now_ns(), gate_cb, &g));
  sem_wait_all(&g.entered, 1);

  /* Deadlines in the past, now, and up to 40 ms ahead, on only 25 distinct
   * values so that many are equal. */
  uint64_t rng = test_rand_init(1);
  int64_t base = braid_now_ns() - test_ms(5);
  for (int i = 0; i < N; i++) {
    deadline[i] = base + test_ms(2) * (int64_t)test_rand_below(&rng, 25);
    timer_zero(&ts[i].t);
    ts[i].log = &log;
    ts[i].index = i;
    ASSERT_OK(braid_timer_add(q, &ts[i].t, deadline[i], log_cb, NULL));
  }
  ASSERT_EQ_UINT(braid_timerq_len(q), N);
  sem_post(&g.release);
  sem_wait_all(&log.done, N);
  ASSERT_EQ_INT(atomic_load(&log.n), N);
  ASSERT_EQ_UINT(braid_timerq_len(q), 0);

  /* Fired in deadline order; equal deadlines in the order they were added
   * (indexes increase with insertion). */
  for (int k = 1; k < N; k++) {
    int a = log.order[k - 1], b = log.order[k];
    ASSERT_LE_INT(deadline[a], deadline[b]);
    if (deadline[a] == deadline[b]) ASSERT_LT_INT(a, b);
  }
  /* Every timer fired exactly once. */
  int *seen = calloc(N, sizeof *seen);
  ASSERT_NOT_NULL(seen);
  for (int k = 0; k < N; k++) seen[log.order[k]]++;
  for (int i = 0; i < N; i++) ASSERT_EQ_INT(seen[i], 1);
  /* Fired timers are no longer queued: cancel says so. */
  for (int i = 0; i < N; i += 7) ASSERT(!braid_timer_cancel(q, &ts[i].t));

  braid_timerq_free(q);
  free(seen);
  free(ts);
  free(deadline);
  free(log.order);
  sem_destroy(&log.done);
  sem_destroy(&g.entered);
  sem_destroy(&g.release);
}

/* No timer fires before its deadline. */
typedef struct {
  braid_timer_t t;
  int64_t deadline;
  _Atomic int64_t fired_at;
  sem_t *done;
} stamped_timer_t;

static void stamp_cb(braid_timer_t *t) {
  stamped_timer_t *st = (stamped_timer_t *)t;
  atomic_store(&st->fired_at, braid_now_ns());
  sem_post(st->done);
}

TEST(test_timer_not_early) {
  enum { N = 50 };
  braid_timerq_t *q = timerq_new();
  sem_t done;
  sem_init(&done, 0, 0);
  stamped_timer_t ts[N];
  uint64_t rng = test_rand_init(2);
  for (int i = 0; i < N; i++) {
    timer_zero(&ts[i].t);
    ts[i].deadline = braid_now_ns() + (int64_t)test_rand_below(&rng, (uint64_t)test_ms(60));
    atomic_init(&ts[i].fired_at, 0);
    ts[i].done = &done;
    ASSERT_OK(braid_timer_add(q, &ts[i].t, ts[i].deadline, stamp_cb, NULL));
  }
  sem_wait_all(&done, N);
  for (int i = 0; i < N; i++) ASSERT_GE_INT(atomic_load(&ts[i].fired_at), ts[i].deadline);
  braid_timerq_free(q);
  sem_destroy(&done);
}

/* A timer added with an earlier deadline than the one the thread sleeps
 * for is not held up by it. */
TEST(test_timer_earlier_added_later) {
  braid_timerq_t *q = timerq_new();
  sem_t s;
  sem_init(&s, 0, 0);
  braid_timer_t far, near;
  timer_zero(&far);
  timer_zero(&near);
  ASSERT_OK(braid_timer_add(q, &far, braid_now_ns() + test_ms(60000), post_cb, &s));
  test_sleep_ms(20);                       /* the thread sleeps for far */
  ASSERT_OK(braid_timer_add(q, &near, braid_now_ns() + test_ms(10), post_cb, &s));
  ASSERT(sem_wait_10s(&s));                /* near fired, long before far */
  ASSERT_EQ_UINT(braid_timerq_len(q), 1);
  ASSERT(braid_timer_cancel(q, &far));
  braid_timerq_free(q);
  sem_destroy(&s);
}

/* ------------------------------------------------------------------------ */
/* Cancel                                                                    */

static atomic_int never_runs;
static void never_cb(braid_timer_t *t) {
  (void)t;
  atomic_fetch_add(&never_runs, 1);
}

static void noop_cb(braid_timer_t *t) { (void)t; }

TEST(test_timer_cancel_before_firing) {
  enum { N = 100 };
  braid_timerq_t *q = timerq_new();
  /* Hold the timer thread in a gate so that nothing fires while the
   * timers, all due within a millisecond, are added and cancelled: no
   * timing assumption. */
  gate_t g;
  sem_init(&g.entered, 0, 0);
  sem_init(&g.release, 0, 0);
  braid_timer_t gate;
  timer_zero(&gate);
  ASSERT_OK(braid_timer_add(q, &gate, braid_now_ns(), gate_cb, &g));
  sem_wait_all(&g.entered, 1);
  braid_timer_t ts[N];
  int64_t base = braid_now_ns();
  for (int i = 0; i < N; i++) {
    timer_zero(&ts[i]);
    ASSERT_OK(braid_timer_add(q, &ts[i], base + 10000 * i, never_cb, NULL));
  }
  ASSERT_EQ_UINT(braid_timerq_len(q), N);
  /* Cancel in a scattered order: removal from the middle of the heap. */
  for (int k = 0; k < N; k++) {
    int i = (k * 37) % N;
    ASSERT(braid_timer_cancel(q, &ts[i]));
    ASSERT_EQ_UINT(braid_timerq_len(q), N - 1 - k);
    ASSERT(!braid_timer_cancel(q, &ts[i]));   /* not queued any more */
  }
  /* A later timer proves the thread ran past the cancelled deadlines. */
  sem_t s;
  sem_init(&s, 0, 0);
  braid_timer_t probe;
  timer_zero(&probe);
  ASSERT_OK(braid_timer_add(q, &probe, base + test_ms(5), post_cb, &s));
  sem_post(&g.release);
  ASSERT(sem_wait_10s(&s));
  ASSERT_EQ_INT(atomic_load(&never_runs), 0);
  /* A cancelled timer may be added again. */
  ASSERT_OK(braid_timer_add(q, &ts[0], braid_now_ns(), post_cb, &s));
  ASSERT(sem_wait_10s(&s));
  braid_timerq_free(q);
  sem_destroy(&s);
  sem_destroy(&g.entered);
  sem_destroy(&g.release);
}

/* Cancelling some timers of a batch leaves the rest in order. */
TEST(test_timer_cancel_some_keeps_order) {
  enum { N = 200 };
  braid_timerq_t *q = timerq_new();
  logged_timer_t *ts = calloc(N, sizeof *ts);
  int64_t *deadline = calloc(N, sizeof *deadline);
  bool *cancelled = calloc(N, sizeof *cancelled);
  firelog_t log;
  log.order = calloc(N, sizeof *log.order);
  ASSERT(ts && deadline && cancelled && log.order);
  atomic_init(&log.n, 0);
  sem_init(&log.done, 0, 0);
  gate_t g;
  sem_init(&g.entered, 0, 0);
  sem_init(&g.release, 0, 0);
  braid_timer_t gate;
  timer_zero(&gate);
  ASSERT_OK(braid_timer_add(q, &gate, braid_now_ns(), gate_cb, &g));
  sem_wait_all(&g.entered, 1);
  uint64_t rng = test_rand_init(3);
  int64_t base = braid_now_ns();
  for (int i = 0; i < N; i++) {
    deadline[i] = base + (int64_t)test_rand_below(&rng, (uint64_t)test_ms(30));
    timer_zero(&ts[i].t);
    ts[i].log = &log;
    ts[i].index = i;
    ASSERT_OK(braid_timer_add(q, &ts[i].t, deadline[i], log_cb, NULL));
  }
  int live = N;
  for (int i = 0; i < N; i++) {
    if (test_rand_below(&rng, 3) == 0) {
      ASSERT(braid_timer_cancel(q, &ts[i].t));
      cancelled[i] = true;
      live--;
    }
  }
  ASSERT_EQ_UINT(braid_timerq_len(q), live);
  sem_post(&g.release);
  sem_wait_all(&log.done, live);
  test_sleep_ms(50);                       /* a cancelled one would show */
  ASSERT_EQ_INT(atomic_load(&log.n), live);
  for (int k = 0; k < live; k++) ASSERT(!cancelled[log.order[k]]);
  for (int k = 1; k < live; k++)
    ASSERT_LE_INT(deadline[log.order[k - 1]], deadline[log.order[k]]);
  braid_timerq_free(q);
  free(ts);
  free(deadline);
  free(cancelled);
  free(log.order);
  sem_destroy(&log.done);
  sem_destroy(&g.entered);
  sem_destroy(&g.release);
}

TEST(test_timer_cancel_after_firing) {
  braid_timerq_t *q = timerq_new();
  sem_t s;
  sem_init(&s, 0, 0);
  braid_timer_t t;
  timer_zero(&t);
  ASSERT_OK(braid_timer_add(q, &t, braid_now_ns(), post_cb, &s));
  ASSERT(sem_wait_10s(&s));
  ASSERT(!braid_timer_cancel(q, &t));
  ASSERT_EQ_UINT(braid_timerq_len(q), 0);
  /* Never-added (zeroed) timers are "not queued" too. */
  braid_timer_t fresh;
  timer_zero(&fresh);
  ASSERT(!braid_timer_cancel(q, &fresh));
  braid_timerq_free(q);
  sem_destroy(&s);
}

/* Cancel while the callback runs waits for it to return (del_timer_sync). */
typedef struct {
  braid_timer_t t;
  sem_t entered;
  atomic_int done;
} slow_timer_t;

static void slow_cb(braid_timer_t *t) {
  slow_timer_t *st = (slow_timer_t *)t;
  sem_post(&st->entered);
  test_sleep_ms(100);
  atomic_store(&st->done, 1);
}

TEST(test_timer_cancel_waits_for_callback) {
  braid_timerq_t *q = timerq_new();
  slow_timer_t *st = malloc(sizeof *st);
  ASSERT_NOT_NULL(st);
  timer_zero(&st->t);
  sem_init(&st->entered, 0, 0);
  atomic_init(&st->done, 0);
  ASSERT_OK(braid_timer_add(q, &st->t, braid_now_ns(), slow_cb, NULL));
  sem_wait_all(&st->entered, 1);
  ASSERT(!braid_timer_cancel(q, &st->t));
  ASSERT_EQ_INT(atomic_load(&st->done), 1);   /* it had returned */
  sem_destroy(&st->entered);
  free(st);                                /* reusable at once (ASan) */
  braid_timerq_free(q);
}

/* ------------------------------------------------------------------------ */
/* Tickers                                                                   */

typedef struct {
  braid_timer_t t;
  braid_timerq_t *q;
  int fires;
  int limit;
  sem_t done;
} ticker_t;

static void ticker_cb(braid_timer_t *t) {
  ticker_t *tk = (ticker_t *)t;
  tk->fires++;             /* only the timer thread touches it until done */
  if (tk->fires < tk->limit) {
    ASSERT_OK(braid_timer_add(tk->q, t, braid_now_ns() + test_ms(1), ticker_cb, NULL));
  } else {
    sem_post(&tk->done);
  }
}

TEST(test_timer_ticker) {
  braid_timerq_t *q = timerq_new();
  enum { NT = 3 };
  ticker_t tk[NT];
  for (int i = 0; i < NT; i++) {
    timer_zero(&tk[i].t);
    tk[i].q = q;
    tk[i].fires = 0;
    tk[i].limit = 20 + 5 * i;
    sem_init(&tk[i].done, 0, 0);
    ASSERT_OK(braid_timer_add(q, &tk[i].t, braid_now_ns(), ticker_cb, NULL));
  }
  for (int i = 0; i < NT; i++) {
    ASSERT(sem_wait_10s(&tk[i].done));
    ASSERT_EQ_INT(tk[i].fires, tk[i].limit);
    ASSERT(!braid_timer_cancel(q, &tk[i].t));
    sem_destroy(&tk[i].done);
  }
  ASSERT_EQ_UINT(braid_timerq_len(q), 0);
  braid_timerq_free(q);
}

/* A ticker cancelled from another thread stops.  cancel returns true when
 * it caught the timer queued between firings; false when the callback was
 * running (cancel waited for it; the header leaves open whether a re-add
 * made meanwhile survives), so cancel until the queue is empty. */
typedef struct {
  braid_timer_t t;
  braid_timerq_t *q;
  atomic_int fires;
} forever_ticker_t;

static void forever_cb(braid_timer_t *t) {
  forever_ticker_t *tk = (forever_ticker_t *)t;
  atomic_fetch_add(&tk->fires, 1);
  ASSERT_OK(braid_timer_add(tk->q, t, braid_now_ns() + test_ms(1), forever_cb, NULL));
}

TEST(test_timer_cancel_ticker) {
  braid_timerq_t *q = timerq_new();
  forever_ticker_t tk;
  timer_zero(&tk.t);
  tk.q = q;
  atomic_init(&tk.fires, 0);
  ASSERT_OK(braid_timer_add(q, &tk.t, braid_now_ns(), forever_cb, NULL));
  while (atomic_load(&tk.fires) < 5) test_sleep_ms(1);
  int tries = 0;
  for (;;) {
    bool was_queued = braid_timer_cancel(q, &tk.t);
    if (braid_timerq_len(q) == 0) break;   /* not re-added meanwhile */
    ASSERT(!was_queued);                   /* true means it is out */
    ASSERT_LT_INT(++tries, 100000);
  }
  int fires = atomic_load(&tk.fires);
  test_sleep_ms(30);
  ASSERT_EQ_INT(atomic_load(&tk.fires), fires);
  ASSERT_EQ_UINT(braid_timerq_len(q), 0);
  braid_timerq_free(q);
}

/* ------------------------------------------------------------------------ */
/* Many threads adding and cancelling                                        */

typedef struct {
  braid_timerq_t *q;
  atomic_int *fired;
  int id;
} churn_arg_t;

typedef struct {
  braid_timer_t t;
  atomic_int *fired;
} count_timer_t;

static void count_cb(braid_timer_t *t) {
  atomic_fetch_add(((count_timer_t *)t)->fired, 1);
}

static void *churn_main(void *p) {
  churn_arg_t *a = p;
  enum { N = 64 };
  count_timer_t ts[N];
  uint64_t rng = test_rand_init(100 + (uint64_t)a->id);
  int added = 0, cancelled = 0;
  for (int i = 0; i < N; i++) {
    timer_zero(&ts[i].t);
    ts[i].fired = a->fired;
  }
  for (int round = 0; round < 30; round++) {
    for (int i = 0; i < N; i++) {
      int64_t d = braid_now_ns() + (int64_t)test_rand_below(&rng, (uint64_t)test_ms(3));
      ASSERT_OK(braid_timer_add(a->q, &ts[i].t, d, count_cb, NULL));
      added++;
    }
    for (int i = 0; i < N; i++)
      if (braid_timer_cancel(a->q, &ts[i].t)) cancelled++;
  }
  /* Every timer is now either cancelled or fired (and returned). */
  return (void *)(intptr_t)(added - cancelled);
}

TEST(test_timer_threads_add_cancel) {
  enum { NT = 4 };
  braid_timerq_t *q = timerq_new();
  atomic_int fired;
  atomic_init(&fired, 0);
  churn_arg_t a[NT];
  pthread_t t[NT];
  for (int i = 0; i < NT; i++) {
    a[i] = (churn_arg_t){q, &fired, i};
    t[i] = test_spawn(churn_main, &a[i]);
  }
  intptr_t expect = 0;
  for (int i = 0; i < NT; i++) expect += (intptr_t)test_join(t[i]);
  ASSERT_EQ_INT(atomic_load(&fired), expect);
  ASSERT_EQ_UINT(braid_timerq_len(q), 0);
  braid_timerq_free(q);
}

/* ------------------------------------------------------------------------ */
/* Freeing                                                                   */

TEST(test_timer_free_with_queued) {
  braid_timerq_t *q = timerq_new();
  enum { N = 100 };
  braid_timer_t *ts = calloc(N, sizeof *ts);
  ASSERT_NOT_NULL(ts);
  for (int i = 0; i < N; i++)
    ASSERT_OK(braid_timer_add(q, &ts[i], test_after_ms(60000 + i), never_cb, NULL));
  ASSERT_EQ_UINT(braid_timerq_len(q), N);
  braid_timerq_free(q);
  ASSERT_EQ_INT(atomic_load(&never_runs), 0);
  free(ts);

  /* An empty queue, and one freed right after it was made. */
  braid_timerq_free(timerq_new());
  q = timerq_new();
  braid_timer_t t;
  timer_zero(&t);
  ASSERT_OK(braid_timer_add(q, &t, braid_now_ns(), noop_cb, NULL));
  braid_timerq_free(q);                    /* may or may not have fired */
}

/* braid_timerq_close: every queued timer fires once, in deadline order; a
 * ticker's re-add fails (so its callback frees it); later adds fail. */
typedef struct close_timer {
  braid_timer_t t;
  braid_timerq_t *q;
  int fired;
  int readd_err;          /* the ticker's re-add result */
  bool ticker;
} close_timer_t;

static int close_order[8], close_n;

static void close_cb(braid_timer_t *t) {
  close_timer_t *ct = (close_timer_t *)t;
  ct->fired++;
  close_order[close_n++] = (int)(intptr_t)t->t_data;
  if (ct->ticker)
    ct->readd_err = braid_timer_add(ct->q, t, t->t_deadline + test_ms(1000), close_cb, t->t_data);
}

TEST(test_timer_close_fires_queued) {
  braid_timerq_t *q = braid_timerq_new_driven();
  ASSERT_NOT_NULL(q);
  close_timer_t ts[4];
  memset(ts, 0, sizeof ts);
  close_n = 0;
  for (int i = 0; i < 4; i++) {
    ts[i].q = q;
    ts[i].ticker = i == 1;
    /* Deadlines far away, added out of order: 3, 1, 0, 2 hours. */
    int64_t hours[4] = { 3, 1, 0, 2 };
    ASSERT_OK(braid_timer_add(q, &ts[i].t, braid_now_ns() + test_ms(3600000) * (hours[i] + 1),
                              close_cb, (void *)(intptr_t)i));
  }
  ASSERT_EQ_INT(braid_timerq_close(q), 4);
  for (int i = 0; i < 4; i++) ASSERT_EQ_INT(ts[i].fired, 1);
  ASSERT_EQ_ERR(ts[1].readd_err, BRAID_ECLOSED);
  int want[4] = { 2, 1, 3, 0 };
  for (int i = 0; i < 4; i++) ASSERT_EQ_INT(close_order[i], want[i]);
  ASSERT_EQ_UINT(braid_timerq_len(q), 0);
  braid_timer_t late;
  timer_zero(&late);
  ASSERT_EQ_ERR(braid_timer_add(q, &late, braid_now_ns(), noop_cb, NULL), BRAID_ECLOSED);
  ASSERT_EQ_INT(braid_timerq_run(q, INT64_MAX), 0);
  braid_timerq_free(q);
}

/* Several queues at once are independent. */
TEST(test_timer_several_queues) {
  enum { NQ = 3 };
  braid_timerq_t *q[NQ];
  sem_t s;
  sem_init(&s, 0, 0);
  braid_timer_t t[NQ];
  for (int i = 0; i < NQ; i++) {
    q[i] = timerq_new();
    timer_zero(&t[i]);
    ASSERT_OK(braid_timer_add(q[i], &t[i], test_after_ms(5 * i), post_cb, &s));
  }
  for (int i = 0; i < NQ; i++) ASSERT(sem_wait_10s(&s));
  for (int i = 0; i < NQ; i++) braid_timerq_free(q[i]);
  sem_destroy(&s);
}

TEST_LIST {
  RUN(test_timer_order);
  RUN(test_timer_not_early);
  RUN(test_timer_earlier_added_later);
  RUN(test_timer_cancel_before_firing);
  RUN(test_timer_cancel_some_keeps_order);
  RUN(test_timer_cancel_after_firing);
  RUN(test_timer_cancel_waits_for_callback);
  RUN(test_timer_ticker);
  RUN(test_timer_cancel_ticker);
  RUN(test_timer_threads_add_cancel);
  RUN(test_timer_free_with_queued);
  RUN(test_timer_close_fires_queued);
  RUN(test_timer_several_queues);
}
