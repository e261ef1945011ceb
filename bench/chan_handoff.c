/*
 * chan_handoff.c -- braid channel hand-off benchmark.
 *
 * Measures, each beside a baseline measured in the same run:
 *
 *   1. One-way throughput of small messages between two threads through a
 *      buffered braid channel of capacity 128.  The producer makes every
 *      message with braid_msg_new(&i, sizeof i, NULL, 0) and the consumer
 *      releases it, so the allocation is part of the cost.  Baseline: a
 *      minimal bounded queue (one mutex, two condition variables, a ring of
 *      pointers) of capacity 128 and of capacity 1024, carrying the same
 *      messages made and released the same way.
 *
 *   2. Rendezvous ping-pong latency: two threads, two capacity-0 braid
 *      channels, one message bounced back and forth; microseconds per round
 *      trip.  Baseline: the same over two baseline queues of capacity 1.
 *
 *   3. The braid ping-pong (and the one-way run) again with
 *      braid_spin_iterations = 0, to show whether spinning before sleeping
 *      pays.
 *
 * Every measurement is repeated R times (the braid and baseline runs
 * interleaved, so that machine noise hits both alike) and the median is
 * reported, with the min..max spread below the table.
 *
 * Usage: bench_chan_handoff [--quick] [--help]
 *   --quick              tiny counts (20000 msgs, 1000 round trips), one
 *                        repetition: a smoke test (< 1 s)
 * Environment:
 *   BRAID_BENCH_REPS=R   repetitions (default 5; 1 with --quick)
 *   BRAID_BENCH_N=N      throughput message count (default 1000000); the
 *                        ping-pong round trips scale with it (N / 5, so
 *                        200000 by default)
 *   BRAID_BENCH_PIN=1    pin the two threads to CPUs 0 and 1
 *   BRAID_BENCH_SPIN=k   braid_spin_iterations for the "default" rows
 *                        (default: the core's own value), for tuning
 *
 * Exit status: 0, or 1 when a channel operation failed or a message arrived
 * out of order (the benchmark also checks what it measures).
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chan.h"
#include "clock.h"
#include "err.h"
#include "msg.h"
#include "waiter.h"

/* ------------------------------------------------------------------ */
/* Helpers                                                             */

static bool g_pin;

static void die(const char *what, int err) {
  fprintf(stderr, "chan_handoff: %s failed: %d (%s)\n", what, err,
          err < 0 ? braid_err_name(err) : strerror(err));
  exit(1);
}

static void pin_self(int cpu) {
  if (!g_pin) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  int rc = pthread_setaffinity_np(pthread_self(), sizeof set, &set);
  if (rc != 0) die("pthread_setaffinity_np", rc);
}

static braid_msg_t *new_msg(uint64_t i) {
  braid_msg_t *m = braid_msg_new(&i, sizeof i, NULL, 0);
  if (m == NULL) die("braid_msg_new", ENOMEM);
  return m;
}

static uint64_t msg_value(const braid_msg_t *m) {
  uint64_t v;
  memcpy(&v, m->m_data, sizeof v);
  return v;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  double *tmp = malloc((size_t)n * sizeof *tmp);
  if (tmp == NULL) die("malloc", ENOMEM);
  memcpy(tmp, v, (size_t)n * sizeof *tmp);
  qsort(tmp, (size_t)n, sizeof *tmp, cmp_double);
  double r = n % 2 ? tmp[n / 2] : (tmp[n / 2 - 1] + tmp[n / 2]) / 2;
  free(tmp);
  return r;
}

static void minmax(const double *v, int n, double *lo, double *hi) {
  *lo = *hi = v[0];
  for (int i = 1; i < n; i++) {
    if (v[i] < *lo) *lo = v[i];
    if (v[i] > *hi) *hi = v[i];
  }
}

/* ------------------------------------------------------------------ */
/* Baseline: a minimal bounded queue (mutex + two condvars + ring)     */

typedef struct bq {
  pthread_mutex_t mtx;
  pthread_cond_t not_empty;
  pthread_cond_t not_full;
  size_t cap, head, len;
  braid_msg_t **ring;
} bq_t;

static bq_t *bq_new(size_t cap) {
  bq_t *q = calloc(1, sizeof *q);
  if (q == NULL) die("calloc", ENOMEM);
  q->ring = calloc(cap, sizeof *q->ring);
  if (q->ring == NULL) die("calloc", ENOMEM);
  q->cap = cap;
  pthread_mutex_init(&q->mtx, NULL);
  pthread_cond_init(&q->not_empty, NULL);
  pthread_cond_init(&q->not_full, NULL);
  return q;
}

static void bq_free(bq_t *q) {
  pthread_mutex_destroy(&q->mtx);
  pthread_cond_destroy(&q->not_empty);
  pthread_cond_destroy(&q->not_full);
  free(q->ring);
  free(q);
}

static void bq_push(bq_t *q, braid_msg_t *m) {
  pthread_mutex_lock(&q->mtx);
  while (q->len == q->cap) pthread_cond_wait(&q->not_full, &q->mtx);
  size_t tail = q->head + q->len;
  if (tail >= q->cap) tail -= q->cap;
  q->ring[tail] = m;
  q->len++;
  pthread_mutex_unlock(&q->mtx);
  pthread_cond_signal(&q->not_empty);
}

static braid_msg_t *bq_pop(bq_t *q) {
  pthread_mutex_lock(&q->mtx);
  while (q->len == 0) pthread_cond_wait(&q->not_empty, &q->mtx);
  braid_msg_t *m = q->ring[q->head];
  if (++q->head == q->cap) q->head = 0;
  q->len--;
  pthread_mutex_unlock(&q->mtx);
  pthread_cond_signal(&q->not_full);
  return m;
}

/* ------------------------------------------------------------------ */
/* Two-thread runner.  The workers time themselves: each reads the     */
/* clock right after the start barrier and after its last operation;   */
/* the run lasts from the earlier start to the later end.  (Main must  */
/* not hold the clock: with 2 cores and 2 spinning workers it may not  */
/* be scheduled again until they are done.)                            */

typedef struct run {
  pthread_barrier_t start;
  uint64_t n;
  void *a, *b;              /* the two channels / queues (b unused one-way) */
  bool bad;                 /* a message arrived out of order */
  int64_t t0[2], t1[2];     /* per worker: start and end, ns */
} run_t;

/* Worker w (0 or 1): pin, wait for the start, read the clock. */
static void start(run_t *r, int w) {
  pin_self(w);
  pthread_barrier_wait(&r->start);
  r->t0[w] = braid_now_ns();
}

static void stop(run_t *r, int w) { r->t1[w] = braid_now_ns(); }

static double run_pair(run_t *r, void *(*fa)(void *), void *(*fb)(void *)) {
  pthread_t ta, tb;
  int rc;
  pthread_barrier_init(&r->start, NULL, 3);
  r->bad = false;
  if ((rc = pthread_create(&ta, NULL, fa, r)) != 0) die("pthread_create", rc);
  if ((rc = pthread_create(&tb, NULL, fb, r)) != 0) die("pthread_create", rc);
  pthread_barrier_wait(&r->start);
  pthread_join(ta, NULL);
  pthread_join(tb, NULL);
  int64_t t0 = r->t0[0] < r->t0[1] ? r->t0[0] : r->t0[1];
  int64_t t1 = r->t1[0] > r->t1[1] ? r->t1[0] : r->t1[1];
  pthread_barrier_destroy(&r->start);
  if (r->bad) {
    fprintf(stderr, "chan_handoff: a message arrived out of order or changed\n");
    exit(1);
  }
  return (double)(t1 - t0) / 1e9;
}

/* ---- one-way throughput ---- */

static void *braid_producer(void *arg) {
  run_t *r = arg;
  start(r, 0);
  for (uint64_t i = 0; i < r->n; i++) {
    int rc = braid_chan_send_until(r->a, new_msg(i), BRAID_FOREVER);
    if (rc != 0) die("braid_chan_send_until", rc);
  }
  stop(r, 0);
  return NULL;
}

static void *braid_consumer(void *arg) {
  run_t *r = arg;
  start(r, 1);
  for (uint64_t i = 0; i < r->n; i++) {
    braid_msg_t *m;
    int rc = braid_chan_recv_until(r->a, &m, BRAID_FOREVER);
    if (rc != 0) die("braid_chan_recv_until", rc);
    if (msg_value(m) != i) r->bad = true;
    braid_msg_release(m);
  }
  stop(r, 1);
  return NULL;
}

static void *bq_producer(void *arg) {
  run_t *r = arg;
  start(r, 0);
  for (uint64_t i = 0; i < r->n; i++) bq_push(r->a, new_msg(i));
  stop(r, 0);
  return NULL;
}

static void *bq_consumer(void *arg) {
  run_t *r = arg;
  start(r, 1);
  for (uint64_t i = 0; i < r->n; i++) {
    braid_msg_t *m = bq_pop(r->a);
    if (msg_value(m) != i) r->bad = true;
    braid_msg_release(m);
  }
  stop(r, 1);
  return NULL;
}

/* Returns messages per second. */
static double oneway_braid(uint64_t n, size_t cap) {
  braid_chan_t *ch = braid_chan_new(cap, BRAID_POLICY_BLOCK);
  if (ch == NULL) die("braid_chan_new", ENOMEM);
  run_t r = {.n = n, .a = ch};
  double s = run_pair(&r, braid_producer, braid_consumer);
  braid_chan_stats_t st;
  braid_chan_stats(ch, &st);
  if (st.sent != n || st.received != n || st.len != 0 || st.dropped != 0) {
    fprintf(stderr, "chan_handoff: stats: sent %llu received %llu len %zu dropped %llu, want %llu\n",
            (unsigned long long)st.sent, (unsigned long long)st.received, st.len,
            (unsigned long long)st.dropped, (unsigned long long)n);
    exit(1);
  }
  braid_chan_release(ch);
  return (double)n / s;
}

static double oneway_bq(uint64_t n, size_t cap) {
  bq_t *q = bq_new(cap);
  run_t r = {.n = n, .a = q};
  double s = run_pair(&r, bq_producer, bq_consumer);
  bq_free(q);
  return (double)n / s;
}

/* ---- ping-pong: one message bounced over a -> b -> a ---- */

static void *braid_ping(void *arg) {
  run_t *r = arg;
  braid_msg_t *m0 = new_msg(0), *m = m0;
  start(r, 0);
  for (uint64_t i = 0; i < r->n; i++) {
    int rc = braid_chan_send_until(r->a, m, BRAID_FOREVER);
    if (rc != 0) die("braid_chan_send_until", rc);
    rc = braid_chan_recv_until(r->b, &m, BRAID_FOREVER);
    if (rc != 0) die("braid_chan_recv_until", rc);
    if (m != m0) r->bad = true;
  }
  stop(r, 0);
  braid_msg_release(m);
  return NULL;
}

static void *braid_pong(void *arg) {
  run_t *r = arg;
  start(r, 1);
  for (uint64_t i = 0; i < r->n; i++) {
    braid_msg_t *m;
    int rc = braid_chan_recv_until(r->a, &m, BRAID_FOREVER);
    if (rc != 0) die("braid_chan_recv_until", rc);
    rc = braid_chan_send_until(r->b, m, BRAID_FOREVER);
    if (rc != 0) die("braid_chan_send_until", rc);
  }
  stop(r, 1);
  return NULL;
}

static void *bq_ping(void *arg) {
  run_t *r = arg;
  braid_msg_t *m0 = new_msg(0), *m = m0;
  start(r, 0);
  for (uint64_t i = 0; i < r->n; i++) {
    bq_push(r->a, m);
    m = bq_pop(r->b);
    if (m != m0) r->bad = true;
  }
  stop(r, 0);
  braid_msg_release(m);
  return NULL;
}

static void *bq_pong(void *arg) {
  run_t *r = arg;
  start(r, 1);
  for (uint64_t i = 0; i < r->n; i++) bq_push(r->b, bq_pop(r->a));
  stop(r, 1);
  return NULL;
}

/* Returns microseconds per round trip. */
static double pingpong_braid(uint64_t n) {
  braid_chan_t *a = braid_chan_new(0, BRAID_POLICY_BLOCK);
  braid_chan_t *b = braid_chan_new(0, BRAID_POLICY_BLOCK);
  if (a == NULL || b == NULL) die("braid_chan_new", ENOMEM);
  run_t r = {.n = n, .a = a, .b = b};
  double s = run_pair(&r, braid_ping, braid_pong);
  braid_chan_release(a);
  braid_chan_release(b);
  return s * 1e6 / (double)n;
}

static double pingpong_bq(uint64_t n) {
  bq_t *a = bq_new(1), *b = bq_new(1);
  run_t r = {.n = n, .a = a, .b = b};
  double s = run_pair(&r, bq_ping, bq_pong);
  bq_free(a);
  bq_free(b);
  return s * 1e6 / (double)n;
}

/* ------------------------------------------------------------------ */

static long env_long(const char *name, long dflt, long min) {
  const char *s = getenv(name);
  if (s == NULL || *s == '\0') return dflt;
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno != 0 || *end != '\0' || v < min) {
    fprintf(stderr, "chan_handoff: bad %s=%s (want an integer >= %ld)\n", name, s, min);
    exit(2);
  }
  return v;
}

enum { T_ONEWAY128, T_ONEWAY1024, T_ONEWAY_NOSPIN, T_PP, T_PP_NOSPIN, T_N };

int main(int argc, char **argv) {
  bool quick = false;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      printf("usage: %s [--quick]\n"
             "  env BRAID_BENCH_REPS (default 5), BRAID_BENCH_N (default 1000000;\n"
             "  ping-pong round trips = N/5), BRAID_BENCH_PIN=1 pins the threads,\n"
             "  BRAID_BENCH_SPIN=k replaces the default braid_spin_iterations\n",
             argv[0]);
      return 0;
    } else {
      fprintf(stderr, "chan_handoff: unknown argument %s (try --help)\n", argv[i]);
      return 2;
    }
  }
  int reps = (int)env_long("BRAID_BENCH_REPS", quick ? 1 : 5, 1);
  uint64_t n_tp = (uint64_t)env_long("BRAID_BENCH_N", quick ? 20000 : 1000000, 1);
  uint64_t n_pp = n_tp / 5 ? n_tp / 5 : 1;
  /* --quick: few round trips, so that even a spinning ping-pong on an
   * oversubscribed machine (~250 us a round trip) stays well under 1 s. */
  if (quick && getenv("BRAID_BENCH_N") == NULL) n_pp = 1000;
  g_pin = env_long("BRAID_BENCH_PIN", 0, 0) != 0;

  int spin_default = (int)env_long("BRAID_BENCH_SPIN", braid_spin_iterations, 0);
  braid_spin_iterations = spin_default;
  double *br[T_N], *bl[T_N];             /* per run: braid, baseline */
  for (int t = 0; t < T_N; t++) {
    br[t] = calloc((size_t)reps, sizeof(double));
    bl[t] = calloc((size_t)reps, sizeof(double));
    if (br[t] == NULL || bl[t] == NULL) die("calloc", ENOMEM);
  }

  /* Warm-up (untimed): faults in the allocator arenas and the code. */
  oneway_braid(n_tp / 20 + 1, 128);
  oneway_bq(n_tp / 20 + 1, 128);

  for (int k = 0; k < reps; k++) {
    br[T_ONEWAY128][k] = oneway_braid(n_tp, 128);
    bl[T_ONEWAY128][k] = oneway_bq(n_tp, 128);
    bl[T_ONEWAY1024][k] = oneway_bq(n_tp, 1024);
    br[T_ONEWAY1024][k] = br[T_ONEWAY128][k];   /* same braid run */
    braid_spin_iterations = 0;
    br[T_ONEWAY_NOSPIN][k] = oneway_braid(n_tp, 128);
    braid_spin_iterations = spin_default;
    bl[T_ONEWAY_NOSPIN][k] = bl[T_ONEWAY128][k];  /* same baseline run */

    braid_spin_iterations = spin_default;
    br[T_PP][k] = pingpong_braid(n_pp);
    bl[T_PP][k] = pingpong_bq(n_pp);
    braid_spin_iterations = 0;
    br[T_PP_NOSPIN][k] = pingpong_braid(n_pp);
    braid_spin_iterations = spin_default;
    bl[T_PP_NOSPIN][k] = bl[T_PP][k];           /* same baseline run */
  }

  static const char *const label[T_N] = {
      "one-way cap=128 vs base 128 (M msgs/s)",
      "one-way cap=128 vs base 1024 (M msgs/s)",
      "one-way cap=128 spin=0 vs base 128 (M/s)",
      "ping-pong cap=0 vs base 1 (us/rt)",
      "ping-pong spin=0 vs base 1 (us/rt)",
  };
  /* M msgs/s for throughput rows, us for latency rows. */
  static const double scale[T_N] = {1e-6, 1e-6, 1e-6, 1, 1};

  printf("chan_handoff (median of %d; %llu msgs one-way, %llu round trips; "
         "braid_spin_iterations=%d%s)\n",
         reps, (unsigned long long)n_tp, (unsigned long long)n_pp, spin_default,
         g_pin ? "; pinned" : "");
  printf("%-42s %10s %10s %8s\n", "", "braid", "baseline", "ratio");
  double med_br[T_N], med_bl[T_N];
  for (int t = 0; t < T_N; t++) {
    med_br[t] = median(br[t], reps) * scale[t];
    med_bl[t] = median(bl[t], reps) * scale[t];
    printf("%-42s %10.3f %10.3f %8.2f\n", label[t], med_br[t], med_bl[t],
           med_br[t] / med_bl[t]);
  }
  printf("%-42s %10.3f %10.3f %8.2f\n", "one-way spin=0 vs spin default (M/s)",
         med_br[T_ONEWAY_NOSPIN], med_br[T_ONEWAY128],
         med_br[T_ONEWAY_NOSPIN] / med_br[T_ONEWAY128]);
  printf("%-42s %10.3f %10.3f %8.2f\n", "ping-pong spin=0 vs spin default (us/rt)",
         med_br[T_PP_NOSPIN], med_br[T_PP], med_br[T_PP_NOSPIN] / med_br[T_PP]);
  printf("ratio = braid / baseline: above 1 is better for msgs/s, below 1 for us/rt "
         "(last two rows: braid spin=0 / braid default)\n");

  if (reps > 1) {
    printf("spread (min..max over %d runs):\n", reps);
    for (int t = 0; t < T_N; t++) {
      double blo, bhi, llo, lhi;
      minmax(br[t], reps, &blo, &bhi);
      minmax(bl[t], reps, &llo, &lhi);
      printf("  %-40s braid %.3f..%.3f  baseline %.3f..%.3f\n", label[t],
             blo * scale[t], bhi * scale[t], llo * scale[t], lhi * scale[t]);
    }
  }
  for (int t = 0; t < T_N; t++) {
    free(br[t]);
    free(bl[t]);
  }
  return 0;
}
