/*
 * test.h -- the tiny harness of braid's C tests (after libuv's test/).
 *
 * Design notes
 *
 * One executable per component.  A test is a function without arguments:
 *
 *   TEST(test_chan_fifo) {
 *     ...
 *     ASSERT_EQ_INT(braid_chan_len(ch), 3);
 *   }
 *
 *   TEST_LIST {
 *     RUN(test_chan_fifo);
 *   }
 *
 * The binary runs every test in TEST_LIST order, or only the one named in
 * argv[1] ("--list" prints the names), and prints "ok <name>" after each.
 * A failed assertion prints both values, the file and the line, then
 * aborts: the first failure ends the binary (ctest reports it), and a core
 * dump or a sanitizer's stack shows where.
 *
 * A watchdog (alarm) aborts a test that hangs, naming it; its budget is
 * BRAID_TEST_TIMEOUT seconds (default 60: sanitizer builds are slow).  The
 * random seed of test_rand() is BRAID_TEST_SEED, or the time; it is printed
 * with every failure so a failing run can be repeated.
 *
 * Everything here is static: the header is included by exactly one .c file
 * per executable.
 */
#ifndef BRAID_TEST_H
#define BRAID_TEST_H

#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "err.h"
#include "msg.h"
#include "refcnt.h"

/* ------------------------------------------------------------------------ */
/* Declaring and running tests                                               */

#define TEST(name) static void name(void)

/* The body that follows lists the tests with RUN(name); */
#define TEST_LIST static void test__list(void)
#define RUN(name) test__run(#name, name)

static const char *test__only;      /* argv[1], or NULL for every test */
static bool test__listing;          /* argv[1] was "--list" */
static int test__found;             /* tests that matched test__only */
static const char *volatile test__current = "(none)";
static uint64_t test__seed;

static void test__list(void);

static void test__vfail(const char *file, int line, const char *fmt, va_list ap) {
  fprintf(stderr, "FAIL %s\n  at %s:%d: ", test__current, file, line);
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n  (BRAID_TEST_SEED=%" PRIu64 ")\n", test__seed);
  fflush(stderr);
  fflush(stdout);
  abort();
}

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4), noreturn))
#endif
static void test__fail(const char *file, int line, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  test__vfail(file, line, fmt, ap);
  va_end(ap);
  abort();
}

static void test__on_alarm(int sig) {
  /* Only async-signal-safe calls here. */
  static const char a[] = "FAIL (watchdog: test did not finish in time): ";
  const char *name = test__current;
  (void)sig;
  if (write(2, a, sizeof a - 1) < 0) { /* nothing to do */ }
  if (write(2, name, strlen(name)) < 0) { /* nothing to do */ }
  if (write(2, "\n", 1) < 0) { /* nothing to do */ }
  abort();
}

static unsigned test__timeout(void) {
  const char *s = getenv("BRAID_TEST_TIMEOUT");
  long v = s ? strtol(s, NULL, 10) : 0;
  return v > 0 ? (unsigned)v : 60;
}

static void test__run(const char *name, void (*fn)(void)) {
  if (test__listing) {
    printf("%s\n", name);
    return;
  }
  if (test__only != NULL && strcmp(test__only, name) != 0) return;
  test__found++;
  test__current = name;
  alarm(test__timeout());
  fn();
  alarm(0);
  printf("ok %s\n", name);
  fflush(stdout);
  test__current = "(none)";
}

int main(int argc, char **argv) {
  const char *seed = getenv("BRAID_TEST_SEED");
  test__seed = seed ? strtoull(seed, NULL, 10) : (uint64_t)time(NULL);
  signal(SIGALRM, test__on_alarm);
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc > 1 && strcmp(argv[1], "--list") == 0) test__listing = true;
  else if (argc > 1) test__only = argv[1];
  test__list();
  if (test__only != NULL && test__found == 0) {
    fprintf(stderr, "%s: no test named '%s' (see --list)\n", argv[0], test__only);
    return 2;
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Assertions: each prints both values, the file and the line, then aborts.  */

#define ASSERT(cond)                                                        \
  do {                                                                      \
    if (!(cond)) test__fail(__FILE__, __LINE__, "ASSERT(%s)", #cond);       \
  } while (0)

#define ASSERT_CMP_INT(a, op, b)                                            \
  do {                                                                      \
    intmax_t a_ = (intmax_t)(a), b_ = (intmax_t)(b);                        \
    if (!(a_ op b_))                                                        \
      test__fail(__FILE__, __LINE__, "%s %s %s: %jd vs %jd",                \
                 #a, #op, #b, a_, b_);                                      \
  } while (0)

#define ASSERT_EQ_INT(a, b) ASSERT_CMP_INT(a, ==, b)
#define ASSERT_NE_INT(a, b) ASSERT_CMP_INT(a, !=, b)
#define ASSERT_GE_INT(a, b) ASSERT_CMP_INT(a, >=, b)
#define ASSERT_LE_INT(a, b) ASSERT_CMP_INT(a, <=, b)
#define ASSERT_GT_INT(a, b) ASSERT_CMP_INT(a, >, b)
#define ASSERT_LT_INT(a, b) ASSERT_CMP_INT(a, <, b)

/* For uint64_t counters and size_t values that may not fit intmax_t. */
#define ASSERT_EQ_UINT(a, b)                                                \
  do {                                                                      \
    uintmax_t a_ = (uintmax_t)(a), b_ = (uintmax_t)(b);                     \
    if (a_ != b_)                                                           \
      test__fail(__FILE__, __LINE__, "%s == %s: %ju != %ju",                \
                 #a, #b, a_, b_);                                           \
  } while (0)

/* For BRAID_E* codes: prints the names too ("ETIMEDOUT (-2)"). */
#define ASSERT_EQ_ERR(a, b)                                                 \
  do {                                                                      \
    int a_ = (int)(a), b_ = (int)(b);                                       \
    if (a_ != b_)                                                           \
      test__fail(__FILE__, __LINE__, "%s == %s: %s (%d) != %s (%d)",        \
                 #a, #b, braid_err_name(a_), a_, braid_err_name(b_), b_);   \
  } while (0)

#define ASSERT_OK(expr) ASSERT_EQ_ERR(expr, 0)

#define ASSERT_EQ_PTR(a, b)                                                 \
  do {                                                                      \
    const void *a_ = (const void *)(a), *b_ = (const void *)(b);            \
    if (a_ != b_)                                                           \
      test__fail(__FILE__, __LINE__, "%s == %s: %p != %p", #a, #b, a_, b_); \
  } while (0)

#define ASSERT_NE_PTR(a, b)                                                 \
  do {                                                                      \
    const void *a_ = (const void *)(a), *b_ = (const void *)(b);            \
    if (a_ == b_)                                                           \
      test__fail(__FILE__, __LINE__, "%s != %s: both %p", #a, #b, a_);      \
  } while (0)

#define ASSERT_NULL(a) ASSERT_EQ_PTR(a, NULL)
#define ASSERT_NOT_NULL(a) ASSERT_NE_PTR(a, NULL)

#define ASSERT_EQ_STR(a, b)                                                 \
  do {                                                                      \
    const char *a_ = (a), *b_ = (b);                                        \
    if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0)                    \
      test__fail(__FILE__, __LINE__, "%s == %s: \"%s\" != \"%s\"", #a, #b,  \
                 a_ ? a_ : "(null)", b_ ? b_ : "(null)");                   \
  } while (0)

/* ------------------------------------------------------------------------ */
/* Messages carrying one int64                                               */

/* A new message (one reference, the caller's) whose bytes are v's. */
static inline braid_msg_t *msg_int(int64_t v) {
  braid_msg_t *m = braid_msg_new(&v, sizeof v, NULL, 0);
  ASSERT_NOT_NULL(m);
  return m;
}

/* As msg_int, with one handle (a new reference to h is taken). */
static inline braid_msg_t *msg_int_h(int64_t v, braid_obj_t *h) {
  braid_msg_t *m = braid_msg_new(&v, sizeof v, &h, 1);
  ASSERT_NOT_NULL(m);
  return m;
}

/* The int64 a msg_int message carries; borrows m. */
static inline int64_t msg_get_int(const braid_msg_t *m) {
  int64_t v;
  ASSERT_NOT_NULL(m);
  ASSERT_EQ_UINT(m->m_len, sizeof v);
  memcpy(&v, m->m_data, sizeof v);
  return v;
}

/* Reads the int of m and drops the caller's reference to it. */
static inline int64_t msg_take_int(braid_msg_t *m) {
  int64_t v = msg_get_int(m);
  braid_msg_release(m);
  return v;
}

static inline size_t msg_rc(braid_msg_t *m) {
  return atomic_load_explicit(&m->m_rc, memory_order_acquire);
}

static inline size_t obj_rc(void *o) {
  return atomic_load_explicit(&((braid_obj_t *)o)->o_rc, memory_order_acquire);
}

/* ------------------------------------------------------------------------ */
/* A counting object: a handle whose destruction is observable.  Putting   */
/* one in messages shows whether every message was freed: the object's     */
/* refcount is 1 (the test's) + the live messages that hold it.            */

typedef struct test_obj {
  braid_obj_t to_base;
} test_obj_t;

static atomic_long test_objs_destroyed;   /* test_obj destructions so far */

static inline void test_obj_destroy(braid_obj_t *o) {
  braid_obj_fini(o);
  free(o);
  atomic_fetch_add_explicit(&test_objs_destroyed, 1, memory_order_relaxed);
}

static braid_objtype_t test_obj_type = {"testobj", test_obj_destroy, 0};

static inline braid_obj_t *test_obj_new(void) {
  test_obj_t *t = malloc(sizeof *t);
  ASSERT_NOT_NULL(t);
  braid_obj_init(&t->to_base, &test_obj_type);
  return &t->to_base;
}

static inline long test_objs_destroyed_count(void) {
  return atomic_load_explicit(&test_objs_destroyed, memory_order_relaxed);
}

/* ------------------------------------------------------------------------ */
/* Time, threads, randomness                                                 */

static inline int64_t test_ms(int64_t ms) { return ms * 1000000; }

/* An absolute deadline ms milliseconds from now. */
static inline int64_t test_after_ms(int64_t ms) { return braid_now_ns() + test_ms(ms); }

static inline void test_sleep_ms(int64_t ms) {
  struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {}
}

static inline void test_sleep_us(int64_t us) {
  struct timespec ts = {(time_t)(us / 1000000), (long)(us % 1000000) * 1000L};
  while (nanosleep(&ts, &ts) != 0) {}
}

static inline pthread_t test_spawn(void *(*fn)(void *), void *arg) {
  pthread_t t;
  ASSERT_EQ_INT(pthread_create(&t, NULL, fn, arg), 0);
  return t;
}

static inline void *test_join(pthread_t t) {
  void *ret = NULL;
  ASSERT_EQ_INT(pthread_join(t, &ret), 0);
  return ret;
}

/* splitmix64: a small, per-caller random generator (thread-safe by having
 * each thread keep its own state). */
static inline uint64_t test_rand(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* A state derived from the run's seed and a stream number (thread index). */
static inline uint64_t test_rand_init(uint64_t stream) {
  uint64_t s = test__seed ^ (stream * 0x2545f4914f6cdd1dull + 1);
  (void)test_rand(&s);
  return s;
}

/* Uniform in [0, n). */
static inline uint64_t test_rand_below(uint64_t *state, uint64_t n) {
  return n ? test_rand(state) % n : 0;
}

/* Seconds for a time-based test: env name (a decimal, may be fractional),
 * else dflt. */
static inline double test_env_seconds(const char *name, double dflt) {
  const char *s = getenv(name);
  double v = s ? strtod(s, NULL) : 0;
  return v > 0 ? v : dflt;
}

#endif
