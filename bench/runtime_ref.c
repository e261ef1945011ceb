/*
 * runtime_ref.c -- the plain-C baselines of bench/runtime.lua.
 *
 * Each mode does, with POSIX threads and nothing else, what one row of
 * bench/runtime.lua does with braid tasks, at the same size, and prints one
 * number (the same unit as that row):
 *
 *   ints      200 000 int64 one-way between two threads through a bounded
 *             queue of capacity 1024 (one mutex, two condition variables,
 *             a ring): messages per second
 *   tables    100 000 heap messages {id, name, temp, tags = {"a", "b"}}:
 *             the producer makes each with 5 mallocs (struct, name, tag
 *             array, two tags), the consumer checks and frees them; same
 *             queue: messages per second
 *   pingpong  50 000 round trips between two threads over two queues of
 *             capacity 1: microseconds per round trip
 *   spawn     20 000 sequential pthread_create + pthread_join of a thread
 *             that returns a value: microseconds each
 *   memory    1 000 threads blocked on a condition variable: resident
 *             memory added per thread, KiB
 *
 * Usage: bench_runtime_ref <mode>      (bench/runtime.lua runs it)
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static long rss_kib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long v = -1;
  while (f && fgets(line, sizeof line, f))
    if (strncmp(line, "VmRSS:", 6) == 0) {
      v = strtol(line + 6, NULL, 10);
      break;
    }
  if (f) fclose(f);
  return v;
}

/* A bounded queue of pointer-sized items. */
typedef struct queue {
  pthread_mutex_t mu;       /* Protects: everything below */
  pthread_cond_t not_empty, not_full;
  size_t cap, head, count;
  intptr_t *ring;
} queue_t;

static void q_init(queue_t *q, size_t cap) {
  pthread_mutex_init(&q->mu, NULL);
  pthread_cond_init(&q->not_empty, NULL);
  pthread_cond_init(&q->not_full, NULL);
  q->cap = cap;
  q->head = q->count = 0;
  q->ring = malloc(cap * sizeof *q->ring);
  if (q->ring == NULL) abort();
}

static void q_push(queue_t *q, intptr_t v) {
  pthread_mutex_lock(&q->mu);
  while (q->count == q->cap) pthread_cond_wait(&q->not_full, &q->mu);
  q->ring[(q->head + q->count) % q->cap] = v;
  q->count++;
  pthread_cond_signal(&q->not_empty);
  pthread_mutex_unlock(&q->mu);
}

static intptr_t q_pop(queue_t *q) {
  pthread_mutex_lock(&q->mu);
  while (q->count == 0) pthread_cond_wait(&q->not_empty, &q->mu);
  intptr_t v = q->ring[q->head];
  q->head = (q->head + 1) % q->cap;
  q->count--;
  pthread_cond_signal(&q->not_full);
  pthread_mutex_unlock(&q->mu);
  return v;
}

static queue_t qa, qb;
static long n_items;

static void *ints_producer(void *arg) {
  (void)arg;
  for (long i = 1; i <= n_items; i++) q_push(&qa, i);
  return NULL;
}

static void *ints_consumer(void *arg) {
  long long s = 0;
  for (long i = 0; i < n_items; i++) s += q_pop(&qa);
  *(long long *)arg = s;
  return NULL;
}

typedef struct hmsg { long id; char *name; double temp; char **tags; } hmsg_t;

static void *tables_producer(void *arg) {
  (void)arg;
  for (long i = 1; i <= n_items; i++) {
    hmsg_t *m = malloc(sizeof *m);
    char **tags = malloc(2 * sizeof *tags);
    if (m == NULL || tags == NULL) abort();
    m->id = i;
    m->name = strdup("San Francisco");
    m->temp = 288.9;
    tags[0] = strdup("a");
    tags[1] = strdup("b");
    m->tags = tags;
    q_push(&qa, (intptr_t)m);
  }
  return NULL;
}

static void *tables_consumer(void *arg) {
  long long s = 0;
  long bad = 0;
  for (long i = 0; i < n_items; i++) {
    hmsg_t *m = (hmsg_t *)q_pop(&qa);
    s += m->id;
    if (strcmp(m->name, "San Francisco") != 0 || m->temp != 288.9 ||
        strcmp(m->tags[0], "a") != 0 || strcmp(m->tags[1], "b") != 0)
      bad++;
    free(m->tags[0]);
    free(m->tags[1]);
    free(m->tags);
    free(m->name);
    free(m);
  }
  *(long long *)arg = bad ? -1 : s;
  return NULL;
}

static void *pong(void *arg) {
  (void)arg;
  for (long i = 0; i < n_items; i++) q_push(&qb, q_pop(&qa));
  return NULL;
}

static void *ping(void *arg) {
  for (long i = 1; i <= n_items; i++) {
    q_push(&qa, i);
    if (q_pop(&qb) != i) abort();
  }
  *(double *)arg = now();
  return NULL;
}

static void *trivial(void *arg) { return arg; }

static pthread_mutex_t park_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t park_cv = PTHREAD_COND_INITIALIZER;
static int parked, released;

static void *parker(void *arg) {
  (void)arg;
  pthread_mutex_lock(&park_mu);
  parked++;
  pthread_cond_broadcast(&park_cv);
  while (!released) pthread_cond_wait(&park_cv, &park_mu);
  pthread_mutex_unlock(&park_mu);
  return NULL;
}

/* Runs producer and consumer threads over qa; returns items per second. */
static double one_way(void *(*prod)(void *), void *(*cons)(void *), long n, long long want) {
  pthread_t p, c;
  long long sum = 0;
  n_items = n;
  q_init(&qa, 1024);
  double t0 = now();
  pthread_create(&c, NULL, cons, &sum);
  pthread_create(&p, NULL, prod, NULL);
  pthread_join(p, NULL);
  pthread_join(c, NULL);
  double dt = now() - t0;
  if (sum != want) {
    fprintf(stderr, "runtime_ref: bad checksum %lld\n", sum);
    exit(1);
  }
  return (double)n / dt;
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "";
  if (strcmp(mode, "ints") == 0) {
    long n = 200000;
    printf("%.1f\n", one_way(ints_producer, ints_consumer, n, (long long)n * (n + 1) / 2));
  } else if (strcmp(mode, "tables") == 0) {
    long n = 100000;
    printf("%.1f\n", one_way(tables_producer, tables_consumer, n, (long long)n * (n + 1) / 2));
  } else if (strcmp(mode, "pingpong") == 0) {
    pthread_t a, b;
    double end = 0;
    n_items = 50000;
    q_init(&qa, 1);
    q_init(&qb, 1);
    double t0 = now();
    pthread_create(&b, NULL, pong, NULL);
    pthread_create(&a, NULL, ping, &end);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    printf("%.4f\n", (end - t0) / (double)n_items * 1e6);
  } else if (strcmp(mode, "spawn") == 0) {
    int n = 20000;
    double t0 = now();
    for (int i = 0; i < n; i++) {
      pthread_t t;
      void *r = NULL;
      if (pthread_create(&t, NULL, trivial, (void *)(intptr_t)42) != 0) return 1;
      pthread_join(t, &r);
      if ((intptr_t)r != 42) return 1;
    }
    printf("%.4f\n", (now() - t0) / n * 1e6);
  } else if (strcmp(mode, "memory") == 0) {
    enum { N = 1000 };
    static pthread_t ts[N];
    long r0 = rss_kib();
    for (int i = 0; i < N; i++)
      if (pthread_create(&ts[i], NULL, parker, NULL) != 0) return 1;
    pthread_mutex_lock(&park_mu);
    while (parked < N) pthread_cond_wait(&park_cv, &park_mu);
    pthread_mutex_unlock(&park_mu);
    long r1 = rss_kib();
    pthread_mutex_lock(&park_mu);
    released = 1;
    pthread_cond_broadcast(&park_cv);
    pthread_mutex_unlock(&park_mu);
    for (int i = 0; i < N; i++) pthread_join(ts[i], NULL);
    printf("%.3f\n", (double)(r1 - r0) / N);
  } else {
    fprintf(stderr, "usage: bench_runtime_ref ints|tables|pingpong|spawn|memory\n");
    return 2;
  }
  return 0;
}
