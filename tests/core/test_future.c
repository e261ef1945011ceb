/* test_future.c -- futures (future.h): settle once, many waiters, reject,
 * cancellation with and without a hook, deadlines, futures in select. */
#include <semaphore.h>

#include "future.h"
#include "select.h"
#include "test.h"

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */

static braid_future_t *future_new(void) {
  braid_future_t *f = braid_future_new();
  ASSERT_NOT_NULL(f);
  return f;
}

static braid_case_t await_case(braid_future_t *f) {
  braid_case_t c;
  memset(&c, 0, sizeof c);
  c.c_op = BRAID_OP_AWAIT;
  c.c_obj = f;
  return c;
}

static braid_case_t recv_case(braid_chan_t *ch) {
  braid_case_t c;
  memset(&c, 0, sizeof c);
  c.c_op = BRAID_OP_RECV;
  c.c_obj = ch;
  return c;
}

#define POISON ((braid_msg_t *)(uintptr_t)1)

/* A cancel hook that records its calls.  It runs under the future's lock,
 * so it only touches its own record. */
typedef struct {
  atomic_int calls;
  braid_future_t *_Atomic last_f;
  sem_t sem;               /* posted by every call */
} hook_rec_t;

static void hook_rec_init(hook_rec_t *h) {
  atomic_init(&h->calls, 0);
  atomic_init(&h->last_f, NULL);
  ASSERT_EQ_INT(sem_init(&h->sem, 0, 0), 0);
}

static void hook_fn(braid_future_t *f, void *arg) {
  hook_rec_t *h = arg;
  atomic_store(&h->last_f, f);
  atomic_fetch_add(&h->calls, 1);
  sem_post(&h->sem);
}

/* ------------------------------------------------------------------------ */
/* Settling                                                                  */

TEST(test_future_new_pending) {
  braid_future_t *f = future_new(), *g = future_new();
  ASSERT_EQ_INT(braid_future_state(f), BRAID_FUTURE_PENDING);
  ASSERT(!braid_future_cancel_requested(f));
  ASSERT_EQ_PTR(((braid_obj_t *)f)->o_type, &braid_future_type);
  ASSERT_GT_INT(braid_future_id(g), braid_future_id(f));
  ASSERT_EQ_UINT(obj_rc(f), 1);
  braid_msg_t *out = POISON;
  ASSERT_EQ_ERR(braid_future_peek(f, &out), BRAID_EAGAIN);
  out = POISON;
  ASSERT_EQ_ERR(braid_future_wait_until(f, &out, 0), BRAID_ETIMEDOUT);
  ASSERT_NULL(out);
  braid_future_retain(f);
  ASSERT_EQ_UINT(obj_rc(f), 2);
  braid_future_release(f);
  braid_future_release(f);
  braid_future_release(g);
}

TEST(test_future_settle_once) {
  long destroyed = test_objs_destroyed_count();
  braid_obj_t *h = test_obj_new();
  braid_future_t *f = future_new();
  braid_msg_t *m1 = msg_int(1);
  braid_msg_retain(m1);                    /* keep one to compare */
  ASSERT_OK(braid_future_resolve(f, m1));
  ASSERT_EQ_INT(braid_future_state(f), BRAID_FUTURE_RESOLVED);

  /* Later settles fail, change nothing, and still take their message. */
  ASSERT_EQ_ERR(braid_future_resolve(f, msg_int_h(2, h)), BRAID_ESETTLED);
  ASSERT_EQ_ERR(braid_future_reject(f, msg_int_h(3, h)), BRAID_ESETTLED);
  ASSERT_EQ_ERR(braid_future_settle(f, BRAID_FUTURE_CANCELLED, msg_int_h(4, h)),
                BRAID_ESETTLED);
  ASSERT_EQ_ERR(braid_future_resolve(f, NULL), BRAID_ESETTLED);
  ASSERT_EQ_UINT(obj_rc(h), 1);            /* all three were released */
  ASSERT_EQ_ERR(braid_future_cancel(f), BRAID_ESETTLED);
  ASSERT_EQ_INT(braid_future_state(f), BRAID_FUTURE_RESOLVED);

  /* Every look gets a new reference to the same message. */
  braid_msg_t *a = POISON, *b = POISON, *c = POISON;
  ASSERT_OK(braid_future_peek(f, &a));
  ASSERT_OK(braid_future_wait_until(f, &b, BRAID_FOREVER));
  ASSERT_OK(braid_future_wait_until(f, &c, 0));   /* settled: no wait */
  ASSERT_EQ_PTR(a, m1);
  ASSERT_EQ_PTR(b, m1);
  ASSERT_EQ_PTR(c, m1);
  ASSERT_EQ_UINT(msg_rc(m1), 5);
  braid_msg_release(a);
  braid_msg_release(b);
  braid_msg_release(c);
  braid_future_release(f);                 /* drops the result */
  ASSERT_EQ_UINT(msg_rc(m1), 1);
  braid_msg_release(m1);
  braid_obj_release(h);
  ASSERT_EQ_INT(test_objs_destroyed_count(), destroyed + 1);
}

TEST(test_future_resolve_null) {
  braid_future_t *f = future_new();
  ASSERT_OK(braid_future_resolve(f, NULL));
  braid_msg_t *out = POISON;
  ASSERT_OK(braid_future_wait_until(f, &out, BRAID_FOREVER));
  ASSERT_NULL(out);
  out = POISON;
  ASSERT_OK(braid_future_peek(f, &out));
  ASSERT_NULL(out);
  braid_future_release(f);
}

TEST(test_future_settle_bad_state) {
  braid_future_t *f = future_new();
  ASSERT_EQ_ERR(braid_future_settle(f, BRAID_FUTURE_PENDING, NULL), BRAID_EINVAL);
  ASSERT_EQ_ERR(braid_future_settle(f, (braid_fstate_t)42, NULL), BRAID_EINVAL);
  ASSERT_EQ_INT(braid_future_state(f), BRAID_FUTURE_PENDING);
  ASSERT_OK(braid_future_reject(f, NULL));
  braid_future_release(f);
}

TEST(test_future_reject) {
  braid_future_t *f = future_new();
  braid_msg_t *err = msg_int(-1);
  braid_msg_retain(err);
  ASSERT_OK(braid_future_reject(f, err));
  ASSERT_EQ_INT(braid_future_state(f), BRAID_FUTURE_REJECTED);
  braid_msg_t *out = POISON;
  ASSERT_EQ_ERR(braid_future_wait_until(f, &out, BRAID_FOREVER), BRAID_EREJECTED);
  ASSERT_EQ_PTR(out, err);
  braid_msg_release(out);
  out = POISON;
  ASSERT_EQ_ERR(braid_future_peek(f, &out), BRAID_EREJECTED);
  ASSERT_EQ_PTR(out, err);
  braid_msg_release(out);
  ASSERT_EQ_ERR(braid_future_resolve(f, NULL), BRAID_ESETTLED);
  braid_future_release(f);
  ASSERT_EQ_UINT(msg_rc(err), 1);
  braid_msg_release(err);
}

TEST(test_future_settle_cancelled_with_msg) {
  braid_future_t *f = future_new();
  braid_msg_t *why = msg_int(-2);
  braid_msg_retain(why);
  ASSERT_OK(braid_future_settle(f, BRAID_FUTURE_CANCELLED, why));
  ASSERT_EQ_INT(braid_future_state(f), BRAID_FUTURE_CANCELLED);
  braid_msg_t *out = POISON;
  ASSERT_EQ_ERR(braid_future_wait_until(f, &out, BRAID_FOREVER), BRAID_ECANCELED);
  ASSERT_EQ_PTR(out, why);
  braid_msg_release(out);
  braid_future_release(f);
  braid_msg_release(why);
}

/* ------------------------------------------------------------------------ */
/* Many waiters                                                              */

typedef struct {
  braid_future_t *f;
  bool use_select;
  int64_t deadline;
  int rc;
  int index;
  braid_msg_t *out;
} waiter_arg_t;

static void *waiter_main(void *p) {
  waiter_arg_t *a = p;
  a->out = POISON;
  if (a->use_select) {
    braid_case_t cs[1] = {await_case(a->f)};
    braid_selres_t r;
    a->rc = braid_select_until(cs, 1, a->deadline, &r);
    a->index = r.s_index;
    a->out = r.s_msg;
    if (a->rc == 0) a->rc = r.s_err;
  } else {
    a->rc = braid_future_wait_until(a->f, &a->out, a->deadline);
  }
  return NULL;
}

/* Resolves f with an int after delay_ms. */
typedef struct {
  braid_future_t *f;
  int64_t v;
  int delay_ms;
} resolver_arg_t;

static void *resolver_main(void *p) {
  resolver_arg_t *a = p;
  if (a->delay_ms) test_sleep_ms(a->delay_ms);
  ASSERT_OK(braid_future_resolve(a->f, msg_int(a->v)));
  return NULL;
}

static void many_waiters(int how) {
  enum { NT = 16 };
  braid_future_t *f = future_new();
  waiter_arg_t a[NT];
  pthread_t t[NT];
  for (int i = 0; i < NT; i++) {
    a[i] = (waiter_arg_t){.f = f, .use_select = i % 2 == 1, .deadline = BRAID_FOREVER};
    t[i] = test_spawn(waiter_main, &a[i]);
  }
  test_sleep_ms(30);                       /* most of them are blocked */
  braid_msg_t *m = how == 2 ? NULL : msg_int(123);
  if (m) braid_msg_retain(m);
  int expect;
  switch (how) {
  case 0: ASSERT_OK(braid_future_resolve(f, m)); expect = 0; break;
  case 1: ASSERT_OK(braid_future_reject(f, m)); expect = BRAID_EREJECTED; break;
  default: ASSERT_OK(braid_future_cancel(f)); expect = BRAID_ECANCELED; break;
  }
  for (int i = 0; i < NT; i++) {
    test_join(t[i]);
    ASSERT_EQ_ERR(a[i].rc, expect);
    ASSERT_EQ_PTR(a[i].out, m);
    if (a[i].use_select) ASSERT_EQ_INT(a[i].index, 0);
  }
  if (m) {
    ASSERT_EQ_UINT(msg_rc(m), 2 + NT);     /* ours, the future's, NT */
    for (int i = 0; i < NT; i++) braid_msg_release(a[i].out);
    ASSERT_EQ_UINT(msg_rc(m), 2);
  }
  braid_future_release(f);
  if (m) {
    ASSERT_EQ_UINT(msg_rc(m), 1);
    braid_msg_release(m);
  }
}

TEST(test_future_many_waiters_resolve) { many_waiters(0); }
TEST(test_future_many_waiters_reject) { many_waiters(1); }
TEST(test_future_many_waiters_cancel) { many_waiters(2); }

/* Waiters may hold the only references: the settler lets go of its own
 * right after settling. */
TEST(test_future_waiters_own_references) {
  enum { NT = 8 };
  for (int round = 0; round < 20; round++) {
    braid_future_t *f = future_new();
    waiter_arg_t a[NT];
    pthread_t t[NT];
    for (int i = 0; i < NT; i++) {
      braid_future_retain(f);
      a[i] = (waiter_arg_t){.f = f, .use_select = i % 2, .deadline = BRAID_FOREVER};
      t[i] = test_spawn(waiter_main, &a[i]);
    }
    ASSERT_OK(braid_future_resolve(f, msg_int(round)));
    braid_future_release(f);
    for (int i = 0; i < NT; i++) {
      test_join(t[i]);
      ASSERT_OK(a[i].rc);
      ASSERT_EQ_INT(msg_get_int(a[i].out), round);
      braid_msg_release(a[i].out);
      braid_future_release(f);             /* the waiter's reference */
    }
  }
}

/* ------------------------------------------------------------------------ */
/* Cancellation                                                              */

TEST(test_future_cancel_without_hook) {
  braid_future_t *f = future_new();
  ASSERT_OK(braid_future_cancel(f));
  ASSERT_EQ_INT(braid_future_state(f), BRAID_FUTURE_CANCELLED);
  braid_msg_t *out = POISON;
  ASSERT_EQ_ERR(braid_future_wait_until(f, &out, BRAID_FOREVER), BRAID_ECANCELED);
  ASSERT_NULL(out);
  out = POISON;
  ASSERT_EQ_ERR(braid_future_peek(f, &out), BRAID_ECANCELED);
  ASSERT_NULL(out);
  ASSERT_EQ_ERR(braid_future_cancel(f), BRAID_ESETTLED);
  ASSERT_EQ_ERR(braid_future_resolve(f, msg_int(1)), BRAID_ESETTLED);
  ASSERT_EQ_INT(braid_future_state(f), BRAID_FUTURE_CANCELLED);
  braid_future_release(f);
}

TEST(test_future_cancel_with_hook) {
  hook_rec_t h;
  hook_rec_init(&h);
  braid_future_t *f = future_new();
  braid_future_set_cancel_hook(f, hook_fn, &h);
  ASSERT_EQ_INT(atomic_load(&h.calls), 0);        /* not called yet */
  ASSERT(!braid_future_cancel_requested(f));

  ASSERT_OK(braid_future_cancel(f));
  ASSERT_EQ_INT(atomic_load(&h.calls), 1);
  ASSERT_EQ_PTR(atomic_load(&h.last_f), f);
  ASSERT(braid_future_cancel_requested(f));
  /* Only a request: the future is still pending. */
  ASSERT_EQ_INT(braid_future_state(f), BRAID_FUTURE_PENDING);
  braid_msg_t *out = POISON;
  ASSERT_EQ_ERR(braid_future_peek(f, &out), BRAID_EAGAIN);
  out = POISON;
  int64_t deadline = test_after_ms(20);
  ASSERT_EQ_ERR(braid_future_wait_until(f, &out, deadline), BRAID_ETIMEDOUT);
  ASSERT_NULL(out);

  /* The producer settles as it likes; after that cancel is ESETTLED and the
   * hook is not called again. */
  ASSERT_OK(braid_future_resolve(f, msg_int(5)));
  int calls = atomic_load(&h.calls);
  ASSERT_EQ_ERR(braid_future_cancel(f), BRAID_ESETTLED);
  ASSERT_EQ_INT(atomic_load(&h.calls), calls);
  ASSERT_OK(braid_future_wait_until(f, &out, BRAID_FOREVER));
  ASSERT_EQ_INT(msg_take_int(out), 5);
  braid_future_release(f);
  sem_destroy(&h.sem);
}

TEST(test_future_hook_after_cancel) {
  hook_rec_t a, b;
  hook_rec_init(&a);
  hook_rec_init(&b);
  braid_future_t *f = future_new();
  braid_future_set_cancel_hook(f, hook_fn, &a);
  ASSERT_OK(braid_future_cancel(f));
  ASSERT_EQ_INT(atomic_load(&a.calls), 1);
  /* Remove the hook, install another: cancellation was already requested,
   * so the new one is called at once. */
  braid_future_set_cancel_hook(f, NULL, NULL);
  braid_future_set_cancel_hook(f, hook_fn, &b);
  ASSERT_EQ_INT(atomic_load(&b.calls), 1);
  ASSERT_EQ_PTR(atomic_load(&b.last_f), f);
  ASSERT_EQ_INT(atomic_load(&a.calls), 1);
  ASSERT_EQ_INT(braid_future_state(f), BRAID_FUTURE_PENDING);

  /* With the hook removed again, a cancel settles CANCELLED at once. */
  braid_future_set_cancel_hook(f, NULL, NULL);
  ASSERT_OK(braid_future_cancel(f));
  ASSERT_EQ_INT(braid_future_state(f), BRAID_FUTURE_CANCELLED);
  ASSERT_EQ_INT(atomic_load(&a.calls), 1);
  ASSERT_EQ_INT(atomic_load(&b.calls), 1);
  braid_future_release(f);

  /* A hook installed on a future nobody cancelled is not called. */
  hook_rec_t c;
  hook_rec_init(&c);
  f = future_new();
  braid_future_set_cancel_hook(f, hook_fn, &c);
  braid_future_set_cancel_hook(f, hook_fn, &c);
  ASSERT_EQ_INT(atomic_load(&c.calls), 0);
  ASSERT_OK(braid_future_resolve(f, NULL));
  ASSERT_EQ_INT(atomic_load(&c.calls), 0);
  braid_future_release(f);
  sem_destroy(&a.sem);
  sem_destroy(&b.sem);
  sem_destroy(&c.sem);
}

/* The runtime's pattern: the hook tells the producer (another thread),
 * which sees the request and settles CANCELLED; a blocked waiter then
 * gets ECANCELED. */
typedef struct {
  braid_future_t *f;
  hook_rec_t *h;
  bool saw_request;
} producer_arg_t;

static void *producer_main(void *p) {
  producer_arg_t *a = p;
  while (sem_wait(&a->h->sem) != 0) {}
  a->saw_request = braid_future_cancel_requested(a->f);
  ASSERT_OK(braid_future_settle(a->f, BRAID_FUTURE_CANCELLED, msg_int(-9)));
  return NULL;
}

TEST(test_future_cancel_hook_producer) {
  hook_rec_t h;
  hook_rec_init(&h);
  braid_future_t *f = future_new();
  braid_future_set_cancel_hook(f, hook_fn, &h);
  producer_arg_t pa = {f, &h, false};
  pthread_t prod = test_spawn(producer_main, &pa);
  waiter_arg_t w = {.f = f, .deadline = BRAID_FOREVER};
  pthread_t wt = test_spawn(waiter_main, &w);
  test_sleep_ms(10);
  ASSERT_OK(braid_future_cancel(f));
  test_join(prod);
  test_join(wt);
  ASSERT(pa.saw_request);
  ASSERT_EQ_ERR(w.rc, BRAID_ECANCELED);
  ASSERT_EQ_INT(msg_take_int(w.out), -9);
  braid_future_release(f);
  sem_destroy(&h.sem);
}

/* ------------------------------------------------------------------------ */
/* Deadlines                                                                 */

TEST(test_future_wait_timeout) {
  braid_future_t *f = future_new();
  int64_t start = braid_now_ns(), deadline = start + test_ms(50);
  braid_msg_t *out = POISON;
  ASSERT_EQ_ERR(braid_future_wait_until(f, &out, deadline), BRAID_ETIMEDOUT);
  int64_t end = braid_now_ns();
  ASSERT_NULL(out);
  ASSERT_GE_INT(end, deadline);
  ASSERT_LT_INT(end - start, test_ms(5000));
  out = POISON;
  ASSERT_EQ_ERR(braid_future_wait_until(f, &out, INT64_MIN), BRAID_ETIMEDOUT);
  ASSERT_NULL(out);
  /* The timed-out waiter left nothing behind; the future still works. */
  ASSERT_OK(braid_future_resolve(f, msg_int(3)));
  ASSERT_OK(braid_future_wait_until(f, &out, 0));
  ASSERT_EQ_INT(msg_take_int(out), 3);
  braid_future_release(f);
}

/* A value that comes before the deadline wins over it. */
TEST(test_future_wait_value_in_time) {
  braid_future_t *f = future_new();
  waiter_arg_t w = {.f = f, .deadline = test_after_ms(10000)};
  pthread_t t = test_spawn(waiter_main, &w);
  test_sleep_ms(10);
  ASSERT_OK(braid_future_resolve(f, msg_int(8)));
  test_join(t);
  ASSERT_OK(w.rc);
  ASSERT_EQ_INT(msg_take_int(w.out), 8);
  braid_future_release(f);
}

/* ------------------------------------------------------------------------ */
/* Select                                                                    */

TEST(test_future_select_case) {
  braid_future_t *f = future_new(), *g = future_new();
  braid_chan_t *ch = braid_chan_new(1, BRAID_POLICY_BLOCK);
  ASSERT_NOT_NULL(ch);
  braid_case_t cs[3] = {recv_case(ch), await_case(f), await_case(g)};
  braid_selres_t r;
  ASSERT_EQ_ERR(braid_select_try(cs, 3, &r), BRAID_EAGAIN);
  ASSERT_EQ_ERR(braid_select_until(cs, 3, test_after_ms(10), &r), BRAID_ETIMEDOUT);
  ASSERT_EQ_INT(r.s_index, BRAID_W_TIMEOUT);

  /* Settled: ready at once. */
  braid_msg_t *m = msg_int(4);
  ASSERT_OK(braid_future_resolve(g, m));
  ASSERT_OK(braid_select_try(cs, 3, &r));
  ASSERT_EQ_INT(r.s_index, 2);
  ASSERT_OK(r.s_err);
  ASSERT_EQ_PTR(r.s_msg, m);
  braid_msg_release(r.s_msg);

  /* Blocked, then settled from another thread. */
  for (int round = 0; round < 10; round++) {
    braid_future_t *h = future_new();
    braid_case_t c2[2] = {recv_case(ch), await_case(h)};
    resolver_arg_t ra = {h, round, round % 2 ? 5 : 0};
    pthread_t t = test_spawn(resolver_main, &ra);
    ASSERT_OK(braid_select_until(c2, 2, BRAID_FOREVER, &r));
    test_join(t);
    ASSERT_EQ_INT(r.s_index, 1);
    ASSERT_OK(r.s_err);
    ASSERT_EQ_INT(msg_take_int(r.s_msg), round);
    braid_future_release(h);
  }

  /* Split phase on a future, with an OS-thread waiter. */
  braid_waiter_t w;
  braid_waiter_init(&w, NULL, NULL);
  braid_case_t c3[1] = {await_case(f)};
  ASSERT_EQ_ERR(braid_select_arm(c3, 1, &w, &r), BRAID_EAGAIN);
  resolver_arg_t ra = {f, 77, 5};
  pthread_t t = test_spawn(resolver_main, &ra);
  ASSERT_OK(braid_waiter_park_until(&w, BRAID_FOREVER));
  ASSERT_OK(braid_select_disarm(c3, 1, &w, &r));
  test_join(t);
  ASSERT_EQ_INT(r.s_index, 0);
  ASSERT_EQ_INT(msg_take_int(r.s_msg), 77);
  braid_waiter_fini(&w);

  /* A rejected future in a select: EREJECTED with the error message. */
  braid_future_t *bad = future_new();
  ASSERT_OK(braid_future_reject(bad, msg_int(-3)));
  braid_case_t c4[1] = {await_case(bad)};
  ASSERT_OK(braid_select_until(c4, 1, BRAID_FOREVER, &r));
  ASSERT_EQ_ERR(r.s_err, BRAID_EREJECTED);
  ASSERT_EQ_INT(msg_take_int(r.s_msg), -3);
  braid_future_release(bad);

  braid_chan_release(ch);
  braid_future_release(f);
  braid_future_release(g);
}

/* Racing settlers: exactly one wins each future; the losers' messages are
 * released; every waiter sees the winner's message. */
typedef struct {
  braid_future_t **fs;
  int n;
  int id;
  braid_obj_t *h;
  int *wins;               /* per future: the winner's id + 1 */
} settler_arg_t;

static void *settler_main(void *p) {
  settler_arg_t *a = p;
  for (int i = 0; i < a->n; i++) {
    int rc;
    switch ((a->id + i) % 3) {
    case 0: rc = braid_future_resolve(a->fs[i], msg_int_h(a->id, a->h)); break;
    case 1: rc = braid_future_reject(a->fs[i], msg_int_h(a->id, a->h)); break;
    default: rc = braid_future_cancel(a->fs[i]); break;
    }
    if (rc == 0) __atomic_store_n(&a->wins[i], a->id + 1, __ATOMIC_RELAXED);
    else ASSERT_EQ_ERR(rc, BRAID_ESETTLED);
  }
  return NULL;
}

TEST(test_future_settle_race) {
  enum { NF = 200, NT = 4 };
  long destroyed = test_objs_destroyed_count();
  braid_obj_t *h = test_obj_new();
  braid_future_t *fs[NF];
  int wins[NF];
  for (int i = 0; i < NF; i++) {
    fs[i] = future_new();
    wins[i] = 0;
  }
  settler_arg_t a[NT];
  pthread_t t[NT];
  for (int k = 0; k < NT; k++) {
    a[k] = (settler_arg_t){fs, NF, k, h, wins};
    t[k] = test_spawn(settler_main, &a[k]);
  }
  for (int k = 0; k < NT; k++) test_join(t[k]);
  for (int i = 0; i < NF; i++) {
    ASSERT_GT_INT(wins[i], 0);
    int winner = wins[i] - 1;
    braid_msg_t *out = POISON;
    int rc = braid_future_peek(fs[i], &out);
    switch ((winner + i) % 3) {
    case 0:
      ASSERT_OK(rc);
      ASSERT_EQ_INT(braid_future_state(fs[i]), BRAID_FUTURE_RESOLVED);
      ASSERT_EQ_INT(msg_take_int(out), winner);
      break;
    case 1:
      ASSERT_EQ_ERR(rc, BRAID_EREJECTED);
      ASSERT_EQ_INT(braid_future_state(fs[i]), BRAID_FUTURE_REJECTED);
      ASSERT_EQ_INT(msg_take_int(out), winner);
      break;
    default:
      ASSERT_EQ_ERR(rc, BRAID_ECANCELED);
      ASSERT_EQ_INT(braid_future_state(fs[i]), BRAID_FUTURE_CANCELLED);
      ASSERT_NULL(out);
      break;
    }
  }
  for (int i = 0; i < NF; i++) braid_future_release(fs[i]);
  ASSERT_EQ_UINT(obj_rc(h), 1);            /* every message was freed */
  braid_obj_release(h);
  ASSERT_EQ_INT(test_objs_destroyed_count(), destroyed + 1);
}

/* Releasing futures in every state frees their results (ASan checks). */
TEST(test_future_release_frees_result) {
  long destroyed = test_objs_destroyed_count();
  braid_obj_t *h = test_obj_new();
  hook_rec_t hr;
  hook_rec_init(&hr);
  braid_future_t *p = future_new(), *r = future_new(), *j = future_new(),
                 *c = future_new(), *k = future_new();
  braid_future_set_cancel_hook(p, hook_fn, &hr);
  ASSERT_OK(braid_future_resolve(r, msg_int_h(1, h)));
  ASSERT_OK(braid_future_reject(j, msg_int_h(2, h)));
  ASSERT_OK(braid_future_settle(c, BRAID_FUTURE_CANCELLED, msg_int_h(3, h)));
  braid_future_set_cancel_hook(k, hook_fn, &hr);
  ASSERT_OK(braid_future_cancel(k));       /* requested, still pending */
  ASSERT_EQ_UINT(obj_rc(h), 4);
  braid_future_release(p);
  braid_future_release(r);
  braid_future_release(j);
  braid_future_release(c);
  braid_future_release(k);
  ASSERT_EQ_UINT(obj_rc(h), 1);
  ASSERT_EQ_INT(atomic_load(&hr.calls), 1); /* releasing does not cancel */
  braid_obj_release(h);
  ASSERT_EQ_INT(test_objs_destroyed_count(), destroyed + 1);
  sem_destroy(&hr.sem);
}

/* A future destroyed while rejected and never observed is reported to
 * braid_future_unobserved with its error message (borrowed); observed,
 * resolved, cancelled or pending ones are not. */
static atomic_int unobserved_calls;
static _Atomic int64_t unobserved_value;
static void on_unobserved(braid_future_t *f, braid_msg_t *err) {
  (void)f;
  atomic_store(&unobserved_value, err ? msg_get_int(err) : INT64_MIN);
  atomic_fetch_add(&unobserved_calls, 1);
}

TEST(test_future_unobserved_rejection) {
  braid_future_unobserved = on_unobserved;
  atomic_store(&unobserved_calls, 0);
  long destroyed = test_objs_destroyed_count();
  braid_obj_t *h = test_obj_new();

  braid_future_t *f = future_new();
  ASSERT_OK(braid_future_reject(f, msg_int_h(-17, h)));
  braid_future_release(f);
  ASSERT_EQ_INT(atomic_load(&unobserved_calls), 1);
  ASSERT_EQ_INT(atomic_load(&unobserved_value), -17);
  ASSERT_EQ_UINT(obj_rc(h), 1);            /* the error was still freed */

  /* Rejected with no message: reported with NULL. */
  f = future_new();
  ASSERT_OK(braid_future_reject(f, NULL));
  braid_future_release(f);
  ASSERT_EQ_INT(atomic_load(&unobserved_calls), 2);
  ASSERT_EQ_INT(atomic_load(&unobserved_value), INT64_MIN);

  /* Observed explicitly: not reported. */
  f = future_new();
  braid_future_observe(f);
  ASSERT_OK(braid_future_reject(f, msg_int_h(-18, h)));
  braid_future_release(f);
  f = future_new();
  ASSERT_OK(braid_future_reject(f, msg_int_h(-19, h)));
  braid_future_observe(f);
  braid_future_release(f);
  ASSERT_EQ_INT(atomic_load(&unobserved_calls), 2);

  /* Awaited (wait_until, or a select case): the outcome was looked at. */
  f = future_new();
  ASSERT_OK(braid_future_reject(f, msg_int_h(-20, h)));
  braid_msg_t *out = NULL;
  ASSERT_EQ_ERR(braid_future_wait_until(f, &out, BRAID_FOREVER), BRAID_EREJECTED);
  braid_msg_release(out);
  braid_future_release(f);
  f = future_new();
  braid_case_t cs[1] = {await_case(f)};
  braid_selres_t r;
  ASSERT_EQ_ERR(braid_select_try(cs, 1, &r), BRAID_EAGAIN);   /* will look */
  ASSERT_OK(braid_future_reject(f, msg_int_h(-21, h)));
  braid_future_release(f);
  ASSERT_EQ_INT(atomic_load(&unobserved_calls), 2);

  /* Other outcomes are never reported. */
  f = future_new();
  ASSERT_OK(braid_future_resolve(f, msg_int_h(1, h)));
  braid_future_release(f);
  f = future_new();
  ASSERT_OK(braid_future_cancel(f));
  braid_future_release(f);
  f = future_new();
  braid_future_release(f);
  ASSERT_EQ_INT(atomic_load(&unobserved_calls), 2);

  braid_future_unobserved = NULL;
  /* Without a reporter nothing happens (and nothing leaks). */
  f = future_new();
  ASSERT_OK(braid_future_reject(f, msg_int_h(-22, h)));
  braid_future_release(f);
  ASSERT_EQ_INT(atomic_load(&unobserved_calls), 2);
  ASSERT_EQ_UINT(obj_rc(h), 1);
  braid_obj_release(h);
  ASSERT_EQ_INT(test_objs_destroyed_count(), destroyed + 1);
}

/* A message a settle call gives up (ESETTLED, EINVAL) is released with no
 * future lock held (STYLE.md): its last handle's destructor may run any
 * code.  The probe checks with trylock from the same thread. */
typedef struct {
  braid_obj_t p_base;
  braid_future_t *p_fut;
  int *p_state;            /* 1: destroyed, lock free; 2: lock held */
} probe_obj_t;

static void probe_destroy(braid_obj_t *o) {
  probe_obj_t *p = (probe_obj_t *)o;
  pthread_mutex_t *mtx = &((braid_obj_t *)p->p_fut)->o_mtx;
  if (pthread_mutex_trylock(mtx) == 0) {
    pthread_mutex_unlock(mtx);
    *p->p_state = 1;
  } else {
    *p->p_state = 2;
  }
  braid_obj_fini(o);
  free(p);
}

static braid_objtype_t probe_type = {"probe", probe_destroy, 0};

static braid_msg_t *probe_msg(braid_future_t *f, int *state) {
  probe_obj_t *p = malloc(sizeof *p);
  ASSERT_NOT_NULL(p);
  braid_obj_init(&p->p_base, &probe_type);
  p->p_fut = f;
  p->p_state = state;
  braid_msg_t *m = braid_msg_alloc(0, 1);
  ASSERT_NOT_NULL(m);
  braid_msg_set_handle(m, 0, &p->p_base);
  return m;
}

TEST(test_future_frees_outside_lock) {
  int state = 0;
  braid_future_t *f = future_new();
  ASSERT_EQ_ERR(braid_future_settle(f, BRAID_FUTURE_PENDING, probe_msg(f, &state)),
                BRAID_EINVAL);
  ASSERT_EQ_INT(state, 1);
  ASSERT_OK(braid_future_resolve(f, NULL));
  state = 0;
  ASSERT_EQ_ERR(braid_future_resolve(f, probe_msg(f, &state)), BRAID_ESETTLED);
  ASSERT_EQ_INT(state, 1);
  braid_future_release(f);
}

TEST_LIST {
  RUN(test_future_new_pending);
  RUN(test_future_settle_once);
  RUN(test_future_resolve_null);
  RUN(test_future_settle_bad_state);
  RUN(test_future_reject);
  RUN(test_future_settle_cancelled_with_msg);
  RUN(test_future_many_waiters_resolve);
  RUN(test_future_many_waiters_reject);
  RUN(test_future_many_waiters_cancel);
  RUN(test_future_waiters_own_references);
  RUN(test_future_cancel_without_hook);
  RUN(test_future_cancel_with_hook);
  RUN(test_future_hook_after_cancel);
  RUN(test_future_cancel_hook_producer);
  RUN(test_future_wait_timeout);
  RUN(test_future_wait_value_in_time);
  RUN(test_future_select_case);
  RUN(test_future_settle_race);
  RUN(test_future_release_frees_result);
  RUN(test_future_unobserved_rejection);
  RUN(test_future_frees_outside_lock);
}
