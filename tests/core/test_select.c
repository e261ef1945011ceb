/* test_select.c -- select over channels and futures (select.h), its
 * split-phase form and waiter firing (waiter.h). */
#include <semaphore.h>

#include "select.h"
#include "test.h"

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */

static braid_chan_t *chan_new(size_t cap) {
  braid_chan_t *ch = braid_chan_new(cap, BRAID_POLICY_BLOCK);
  ASSERT_NOT_NULL(ch);
  return ch;
}

static braid_future_t *future_new(void) {
  braid_future_t *f = braid_future_new();
  ASSERT_NOT_NULL(f);
  return f;
}

static void send_int(braid_chan_t *ch, int64_t v) {
  ASSERT_OK(braid_chan_send_until(ch, msg_int(v), BRAID_FOREVER));
}

static int64_t recv_int(braid_chan_t *ch) {
  braid_msg_t *m = NULL;
  ASSERT_OK(braid_chan_recv_until(ch, &m, BRAID_FOREVER));
  return msg_take_int(m);
}

static braid_case_t recv_case(braid_chan_t *ch) {
  braid_case_t c;
  memset(&c, 0, sizeof c);
  c.c_op = BRAID_OP_RECV;
  c.c_obj = ch;
  return c;
}

static braid_case_t send_case(braid_chan_t *ch, braid_msg_t *m) {
  braid_case_t c;
  memset(&c, 0, sizeof c);
  c.c_op = BRAID_OP_SEND;
  c.c_obj = ch;
  c.c_msg = m;
  return c;
}

static braid_case_t await_case(braid_future_t *f) {
  braid_case_t c;
  memset(&c, 0, sizeof c);
  c.c_op = BRAID_OP_AWAIT;
  c.c_obj = f;
  return c;
}

static void res_poison(braid_selres_t *r) {
  r->s_index = 12345;
  r->s_err = 12345;
  r->s_msg = (braid_msg_t *)(uintptr_t)1;
}

/* ------------------------------------------------------------------------ */
/* Ready cases                                                               */

TEST(test_select_ready_case_chosen) {
  enum { N = 4 };
  braid_chan_t *ch[N];
  for (int i = 0; i < N; i++) ch[i] = chan_new(1);
  braid_case_t cs[N];
  for (int i = 0; i < N; i++) cs[i] = recv_case(ch[i]);
  braid_selres_t r;
  res_poison(&r);
  ASSERT_EQ_ERR(braid_select_try(cs, N, &r), BRAID_EAGAIN);
  uint64_t rng = test_rand_init(1);
  for (int round = 0; round < 200; round++) {
    int k = (int)test_rand_below(&rng, N);
    send_int(ch[k], round);
    res_poison(&r);
    if (round % 2) ASSERT_OK(braid_select_try(cs, N, &r));
    else ASSERT_OK(braid_select_until(cs, N, BRAID_FOREVER, &r));
    ASSERT_EQ_INT(r.s_index, k);
    ASSERT_OK(r.s_err);
    ASSERT_EQ_INT(msg_take_int(r.s_msg), round);
  }
  for (int i = 0; i < N; i++) {
    ASSERT_EQ_UINT(braid_chan_len(ch[i]), 0);
    braid_chan_release(ch[i]);
  }
}

/* Among several ready cases each is chosen about equally often. */
TEST(test_select_uniform_choice) {
  enum { N = 3, ROUNDS = 30000 };
  braid_chan_t *ch[N];
  braid_case_t cs[N];
  for (int i = 0; i < N; i++) {
    ch[i] = chan_new(1);
    send_int(ch[i], i);
    cs[i] = recv_case(ch[i]);
  }
  int hits[N] = {0};
  for (int round = 0; round < ROUNDS; round++) {
    braid_selres_t r;
    ASSERT_OK(braid_select_try(cs, N, &r));
    ASSERT(r.s_index >= 0 && r.s_index < N);
    ASSERT_OK(r.s_err);
    ASSERT_EQ_INT(msg_get_int(r.s_msg), r.s_index);
    hits[r.s_index]++;
    /* Put it back: every channel stays ready. */
    ASSERT_OK(braid_chan_try_send(ch[r.s_index], r.s_msg));
  }
  for (int i = 0; i < N; i++) {
    ASSERT_GE_INT(hits[i], ROUNDS * 25 / 100);
    ASSERT_LE_INT(hits[i], ROUNDS * 42 / 100);
    braid_chan_release(ch[i]);
  }
}

/* The same with send cases. */
TEST(test_select_uniform_send) {
  enum { N = 3, ROUNDS = 30000 };
  braid_chan_t *ch[N];
  braid_msg_t *m[N];
  braid_case_t cs[N];
  for (int i = 0; i < N; i++) {
    ch[i] = chan_new(1);
    m[i] = msg_int(i);
    cs[i] = send_case(ch[i], m[i]);
  }
  int hits[N] = {0};
  for (int round = 0; round < ROUNDS; round++) {
    braid_selres_t r;
    ASSERT_OK(braid_select_try(cs, N, &r));
    int k = r.s_index;
    ASSERT(k >= 0 && k < N);
    ASSERT_OK(r.s_err);
    hits[k]++;
    /* Take it back out (the channel owned it; now we do again). */
    braid_msg_t *out = NULL;
    ASSERT_OK(braid_chan_try_recv(ch[k], &out));
    ASSERT_EQ_PTR(out, m[k]);
    for (int i = 0; i < N; i++) ASSERT_EQ_UINT(msg_rc(m[i]), 1);
  }
  for (int i = 0; i < N; i++) {
    ASSERT_GE_INT(hits[i], ROUNDS * 25 / 100);
    ASSERT_LE_INT(hits[i], ROUNDS * 42 / 100);
    braid_msg_release(m[i]);
    braid_chan_release(ch[i]);
  }
}

TEST(test_select_send_cases) {
  braid_chan_t *full = chan_new(1), *room = chan_new(2);
  send_int(full, 0);
  braid_msg_t *a = msg_int(1), *b = msg_int(2);
  braid_case_t cs[2] = {send_case(full, a), send_case(room, b)};
  braid_selres_t r;
  res_poison(&r);
  ASSERT_OK(braid_select_until(cs, 2, BRAID_FOREVER, &r));
  ASSERT_EQ_INT(r.s_index, 1);
  ASSERT_OK(r.s_err);
  ASSERT_EQ_UINT(msg_rc(a), 1);            /* a is still ours */
  ASSERT_EQ_UINT(braid_chan_len(room), 1);
  ASSERT_EQ_INT(recv_int(room), 2);        /* b went in (and is gone now) */

  /* Nothing ready: EAGAIN, both messages still ours. */
  cs[1] = send_case(full, b = msg_int(3));
  ASSERT_EQ_ERR(braid_select_try(cs, 2, &r), BRAID_EAGAIN);
  ASSERT_EQ_ERR(braid_select_until(cs, 2, test_after_ms(10), &r), BRAID_ETIMEDOUT);
  ASSERT_EQ_INT(r.s_index, BRAID_W_TIMEOUT);
  ASSERT_EQ_UINT(msg_rc(a), 1);
  ASSERT_EQ_UINT(msg_rc(b), 1);
  ASSERT_EQ_UINT(braid_chan_len(full), 1);
  braid_msg_release(a);
  braid_msg_release(b);
  braid_chan_release(full);
  braid_chan_release(room);
}

/* Send and receive cases on one channel. */
TEST(test_select_send_recv_same_chan) {
  braid_chan_t *ch = chan_new(1);
  braid_msg_t *m = msg_int(1);
  braid_case_t cs[2] = {send_case(ch, m), recv_case(ch)};
  braid_selres_t r;

  /* Empty: only the send is ready. */
  ASSERT_OK(braid_select_try(cs, 2, &r));
  ASSERT_EQ_INT(r.s_index, 0);
  ASSERT_OK(r.s_err);
  /* Full: only the receive is ready; it gets what was just sent. */
  braid_msg_t *m2 = msg_int(2);
  cs[0] = send_case(ch, m2);
  ASSERT_OK(braid_select_try(cs, 2, &r));
  ASSERT_EQ_INT(r.s_index, 1);
  ASSERT_EQ_PTR(r.s_msg, m);
  braid_msg_release(r.s_msg);
  ASSERT_EQ_UINT(msg_rc(m2), 1);
  braid_msg_release(m2);
  braid_chan_release(ch);

  /* Cap 2 holding one value: both are ready, both get chosen. */
  ch = chan_new(2);
  send_int(ch, 100);
  int hits[2] = {0, 0};
  for (int round = 0; round < 2000; round++) {
    braid_msg_t *s = msg_int(round);
    cs[0] = send_case(ch, s);
    cs[1] = recv_case(ch);
    ASSERT_OK(braid_select_try(cs, 2, &r));
    hits[r.s_index]++;
    if (r.s_index == 0) {                  /* 2 buffered: take one out */
      braid_msg_release(r.s_msg);          /* NULL for a send: harmless */
      (void)recv_int(ch);
    } else {                               /* 0 buffered: put one back */
      braid_msg_release(r.s_msg);
      ASSERT_OK(braid_chan_try_send(ch, s));
      s = NULL;
    }
    ASSERT_EQ_UINT(braid_chan_len(ch), 1);
  }
  ASSERT_GE_INT(hits[0], 600);
  ASSERT_GE_INT(hits[1], 600);
  braid_chan_release(ch);
}

/* On a rendezvous channel a select's own send case must never pair with
 * its own receive case. */
typedef struct {
  braid_chan_t *ch;
  int64_t deadline;
  int rc;
  braid_selres_t r;
  bool msg_kept;           /* the offered message is still ours after a
                              receive or a timeout */
  int64_t offered;
} self_arg_t;

static void *self_select_main(void *p) {
  self_arg_t *a = p;
  braid_msg_t *m = msg_int(a->offered);
  braid_case_t cs[2] = {send_case(a->ch, m), recv_case(a->ch)};
  a->rc = braid_select_until(cs, 2, a->deadline, &a->r);
  if (a->rc != 0 || a->r.s_index != 0) {
    a->msg_kept = msg_rc(m) == 1;
    braid_msg_release(m);
  }
  return NULL;
}

TEST(test_select_send_recv_same_rendezvous) {
  braid_chan_t *ch = chan_new(0);
  self_arg_t a = {.ch = ch, .offered = 5};

  /* Alone it cannot complete. */
  a.deadline = test_after_ms(30);
  self_select_main(&a);
  ASSERT_EQ_ERR(a.rc, BRAID_ETIMEDOUT);
  ASSERT_EQ_INT(a.r.s_index, BRAID_W_TIMEOUT);
  ASSERT(a.msg_kept);

  /* A receiver elsewhere takes the send case. */
  a = (self_arg_t){.ch = ch, .offered = 6, .deadline = BRAID_FOREVER};
  pthread_t t = test_spawn(self_select_main, &a);
  ASSERT_EQ_INT(recv_int(ch), 6);
  test_join(t);
  ASSERT_OK(a.rc);
  ASSERT_EQ_INT(a.r.s_index, 0);
  ASSERT_OK(a.r.s_err);

  /* A sender elsewhere completes the receive case. */
  a = (self_arg_t){.ch = ch, .offered = 7, .deadline = BRAID_FOREVER};
  t = test_spawn(self_select_main, &a);
  send_int(ch, 8);
  test_join(t);
  ASSERT_OK(a.rc);
  ASSERT_EQ_INT(a.r.s_index, 1);
  ASSERT(a.msg_kept);
  ASSERT_EQ_INT(msg_take_int(a.r.s_msg), 8);
  braid_chan_release(ch);
}


/* ------------------------------------------------------------------------ */
/* An actor: a thread that waits delay_ms, then does one thing to a channel */
/* or a future, so that a select in the test's thread is completed by       */
/* another thread.                                                           */

typedef enum { ACT_SEND, ACT_RECV, ACT_CLOSE, ACT_RESOLVE, ACT_REJECT,
               ACT_CANCEL } act_t;

typedef struct {
  act_t act;
  void *obj;               /* a braid_chan_t or braid_future_t */
  braid_msg_t *msg;        /* SEND/CLOSE/RESOLVE/REJECT: given away;
                              RECV: what was received */
  int delay_ms;
  int rc;
  pthread_t thread;
} actor_t;

static void *actor_main(void *p) {
  actor_t *a = p;
  if (a->delay_ms) test_sleep_ms(a->delay_ms);
  switch (a->act) {
  case ACT_SEND:
    a->rc = braid_chan_send_until(a->obj, a->msg, BRAID_FOREVER);
    break;
  case ACT_RECV:
    a->rc = braid_chan_recv_until(a->obj, &a->msg, BRAID_FOREVER);
    break;
  case ACT_CLOSE:
    a->rc = braid_chan_close(a->obj, a->msg);
    break;
  case ACT_RESOLVE:
    a->rc = braid_future_resolve(a->obj, a->msg);
    break;
  case ACT_REJECT:
    a->rc = braid_future_reject(a->obj, a->msg);
    break;
  case ACT_CANCEL:
    a->rc = braid_future_cancel(a->obj);
    break;
  }
  return NULL;
}

static void actor_start(actor_t *a, act_t act, void *obj, braid_msg_t *msg, int delay_ms) {
  *a = (actor_t){.act = act, .obj = obj, .msg = msg, .delay_ms = delay_ms, .rc = 999};
  a->thread = test_spawn(actor_main, a);
}

static void actor_join(actor_t *a) { test_join(a->thread); }

/* ------------------------------------------------------------------------ */
/* Blocking selects completed by another thread                             */

/* The same channel in several cases (natural in Lua code) must not
 * deadlock on its own lock, and only one case fires. */
TEST(test_select_duplicate_chan) {
  braid_chan_t *ch = chan_new(1);
  braid_case_t cs[3] = {recv_case(ch), recv_case(ch), recv_case(ch)};
  braid_selres_t r;
  ASSERT_EQ_ERR(braid_select_try(cs, 3, &r), BRAID_EAGAIN);
  send_int(ch, 1);
  ASSERT_OK(braid_select_try(cs, 3, &r));
  ASSERT(r.s_index >= 0 && r.s_index < 3);
  ASSERT_EQ_INT(msg_take_int(r.s_msg), 1);
  braid_chan_release(ch);

  braid_chan_t *rv = chan_new(0);
  braid_case_t cr[3] = {recv_case(rv), recv_case(rv), recv_case(rv)};
  for (int round = 0; round < 20; round++) {
    actor_t a;
    actor_start(&a, ACT_SEND, rv, msg_int(round), round % 2 ? 5 : 0);
    res_poison(&r);
    ASSERT_OK(braid_select_until(cr, 3, BRAID_FOREVER, &r));
    actor_join(&a);
    ASSERT_OK(a.rc);
    ASSERT(r.s_index >= 0 && r.s_index < 3);
    ASSERT_OK(r.s_err);
    ASSERT_EQ_INT(msg_take_int(r.s_msg), round);
    /* The losing nodes are gone: nobody waits on rv any more. */
    braid_msg_t *m = msg_int(0);
    ASSERT_EQ_ERR(braid_chan_try_send(rv, m), BRAID_EAGAIN);
    braid_msg_release(m);
  }
  braid_chan_release(rv);
}

TEST(test_select_blocked_woken_by_send) {
  braid_chan_t *a = chan_new(0), *b = chan_new(4);
  braid_future_t *f = future_new();
  braid_case_t cs[3] = {recv_case(a), recv_case(b), await_case(f)};
  for (int round = 0; round < 20; round++) {
    actor_t act;
    braid_chan_t *target = round % 2 ? a : b;
    actor_start(&act, ACT_SEND, target, msg_int(round), round % 3 ? 10 : 0);
    braid_selres_t r;
    res_poison(&r);
    ASSERT_OK(braid_select_until(cs, 3, BRAID_FOREVER, &r));
    actor_join(&act);
    ASSERT_OK(act.rc);
    ASSERT_EQ_INT(r.s_index, target == a ? 0 : 1);
    ASSERT_OK(r.s_err);
    ASSERT_EQ_INT(msg_take_int(r.s_msg), round);
  }
  /* Nothing left queued anywhere. */
  braid_msg_t *m = msg_int(0);
  ASSERT_EQ_ERR(braid_chan_try_send(a, m), BRAID_EAGAIN);
  braid_msg_release(m);
  ASSERT_EQ_UINT(braid_chan_len(b), 0);
  braid_future_release(f);
  braid_chan_release(a);
  braid_chan_release(b);
}

TEST(test_select_blocked_woken_by_recv) {
  braid_chan_t *a = chan_new(0), *b = chan_new(1), *idle = chan_new(0);
  send_int(b, -1);                           /* b full */
  for (int round = 0; round < 20; round++) {
    braid_msg_t *ma = msg_int(100 + round), *mb = msg_int(200 + round);
    braid_case_t cs[3] = {send_case(a, ma), send_case(b, mb), recv_case(idle)};
    braid_chan_t *target = round % 2 ? a : b;
    actor_t act;
    actor_start(&act, ACT_RECV, target, NULL, round % 3 ? 10 : 0);
    braid_selres_t r;
    res_poison(&r);
    ASSERT_OK(braid_select_until(cs, 3, BRAID_FOREVER, &r));
    actor_join(&act);
    ASSERT_OK(act.rc);
    ASSERT_OK(r.s_err);
    if (target == a) {
      ASSERT_EQ_INT(r.s_index, 0);
      ASSERT_EQ_PTR(act.msg, ma);            /* handed over directly */
      ASSERT_EQ_UINT(msg_rc(mb), 1);         /* the loser is still ours */
      braid_msg_release(mb);
    } else {
      ASSERT_EQ_INT(r.s_index, 1);
      /* The receiver took the buffered value; ours took its place. */
      ASSERT_EQ_INT(msg_get_int(act.msg), round == 0 ? -1 : 200 + round - 2);
      ASSERT_EQ_UINT(msg_rc(ma), 1);
      braid_msg_release(ma);
    }
    braid_msg_release(act.msg);
    ASSERT_EQ_UINT(braid_chan_len(b), 1);
  }
  braid_chan_release(a);
  braid_chan_release(b);
  braid_chan_release(idle);
}

TEST(test_select_blocked_woken_by_close) {
  /* A receive case gets ECLOSED and the close error. */
  braid_chan_t *a = chan_new(0), *b = chan_new(2);
  braid_msg_t *err = msg_int(-5);
  braid_msg_retain(err);
  braid_case_t cs[2] = {recv_case(a), recv_case(b)};
  actor_t act;
  actor_start(&act, ACT_CLOSE, b, err, 20);
  braid_selres_t r;
  res_poison(&r);
  ASSERT_OK(braid_select_until(cs, 2, BRAID_FOREVER, &r));
  actor_join(&act);
  ASSERT_OK(act.rc);
  ASSERT_EQ_INT(r.s_index, 1);
  ASSERT_EQ_ERR(r.s_err, BRAID_ECLOSED);
  ASSERT_EQ_PTR(r.s_msg, err);
  braid_msg_release(r.s_msg);
  /* Now b is ready at once, every time. */
  ASSERT_OK(braid_select_try(cs, 2, &r));
  ASSERT_EQ_INT(r.s_index, 1);
  ASSERT_EQ_ERR(r.s_err, BRAID_ECLOSED);
  ASSERT_EQ_PTR(r.s_msg, err);
  braid_msg_release(r.s_msg);

  /* A close with no error: s_msg NULL. */
  actor_start(&act, ACT_CLOSE, a, NULL, 20);
  braid_case_t ca[1] = {recv_case(a)};
  res_poison(&r);
  ASSERT_OK(braid_select_until(ca, 1, BRAID_FOREVER, &r));
  actor_join(&act);
  ASSERT_EQ_INT(r.s_index, 0);
  ASSERT_EQ_ERR(r.s_err, BRAID_ECLOSED);
  ASSERT_NULL(r.s_msg);
  braid_chan_release(a);
  braid_chan_release(b);
  ASSERT_EQ_UINT(msg_rc(err), 1);
  braid_msg_release(err);

  /* A blocked send case gets ECLOSED and keeps its message. */
  for (size_t cap = 0; cap <= 1; cap++) {
    braid_chan_t *c = chan_new(cap);
    if (cap) send_int(c, 1);
    braid_msg_t *m = msg_int(2);
    braid_case_t sc[1] = {send_case(c, m)};
    actor_start(&act, ACT_CLOSE, c, NULL, 20);
    res_poison(&r);
    ASSERT_OK(braid_select_until(sc, 1, BRAID_FOREVER, &r));
    actor_join(&act);
    ASSERT_EQ_INT(r.s_index, 0);
    ASSERT_EQ_ERR(r.s_err, BRAID_ECLOSED);
    ASSERT_EQ_UINT(msg_rc(m), 1);
    ASSERT_EQ_INT(msg_get_int(m), 2);
    braid_msg_release(m);
    if (cap) ASSERT_EQ_INT(recv_int(c), 1);
    braid_chan_release(c);
  }
}

TEST(test_select_blocked_woken_by_future) {
  act_t acts[3] = {ACT_RESOLVE, ACT_REJECT, ACT_CANCEL};
  int errs[3] = {0, BRAID_EREJECTED, BRAID_ECANCELED};
  for (int k = 0; k < 3; k++) {
    braid_chan_t *ch = chan_new(0);
    braid_future_t *f1 = future_new(), *f2 = future_new();
    braid_msg_t *m = k == 2 ? NULL : msg_int(k);
    if (m) braid_msg_retain(m);
    braid_case_t cs[3] = {await_case(f1), recv_case(ch), await_case(f2)};
    actor_t act;
    actor_start(&act, acts[k], f2, m, 20);
    braid_selres_t r;
    res_poison(&r);
    ASSERT_OK(braid_select_until(cs, 3, BRAID_FOREVER, &r));
    actor_join(&act);
    ASSERT_OK(act.rc);
    ASSERT_EQ_INT(r.s_index, 2);
    ASSERT_EQ_ERR(r.s_err, errs[k]);
    ASSERT_EQ_PTR(r.s_msg, m);
    if (m) {
      ASSERT_EQ_UINT(msg_rc(m), 3);          /* ours, the future's, r's */
      braid_msg_release(r.s_msg);
      braid_msg_release(m);
    }
    /* A settled future stays ready. */
    ASSERT_OK(braid_select_try(cs, 3, &r));
    ASSERT_EQ_INT(r.s_index, 2);
    ASSERT_EQ_ERR(r.s_err, errs[k]);
    braid_msg_release(r.s_msg);
    /* The unsettled future and the channel hold no stale node. */
    braid_msg_t *probe = msg_int(0);
    ASSERT_EQ_ERR(braid_chan_try_send(ch, probe), BRAID_EAGAIN);
    braid_msg_release(probe);
    braid_future_release(f1);
    braid_future_release(f2);
    braid_chan_release(ch);
  }
}

/* ------------------------------------------------------------------------ */
/* Deadlines                                                                 */

TEST(test_select_timeout) {
  braid_chan_t *a = chan_new(0), *b = chan_new(1);
  send_int(b, 1);                            /* b full: a send cannot go */
  braid_future_t *f = future_new();
  braid_msg_t *m = msg_int(2);
  braid_case_t cs[3] = {recv_case(a), send_case(b, m), await_case(f)};
  braid_selres_t r;
  res_poison(&r);
  int64_t start = braid_now_ns(), deadline = start + test_ms(50);
  ASSERT_EQ_ERR(braid_select_until(cs, 3, deadline, &r), BRAID_ETIMEDOUT);
  int64_t end = braid_now_ns();
  ASSERT_GE_INT(end, deadline);
  ASSERT_LT_INT(end - start, test_ms(5000));
  ASSERT_EQ_INT(r.s_index, BRAID_W_TIMEOUT);
  ASSERT_EQ_ERR(r.s_err, BRAID_ETIMEDOUT);
  ASSERT_NULL(r.s_msg);
  ASSERT_EQ_UINT(msg_rc(m), 1);
  /* Nothing stale remains: a's queue is empty, b holds only 1, f's waiter
   * list is empty (settling works and nobody was woken wrongly). */
  braid_msg_t *probe = msg_int(0);
  ASSERT_EQ_ERR(braid_chan_try_send(a, probe), BRAID_EAGAIN);
  braid_msg_release(probe);
  ASSERT_EQ_INT(recv_int(b), 1);
  ASSERT_OK(braid_future_resolve(f, NULL));
  braid_msg_release(m);
  braid_future_release(f);
  braid_chan_release(a);
  braid_chan_release(b);
}

TEST(test_select_deadline_past) {
  braid_chan_t *ch = chan_new(1);
  braid_case_t cs[1] = {recv_case(ch)};
  braid_selres_t r;
  res_poison(&r);
  ASSERT_EQ_ERR(braid_select_until(cs, 1, 0, &r), BRAID_ETIMEDOUT);
  ASSERT_EQ_INT(r.s_index, BRAID_W_TIMEOUT);
  ASSERT_NULL(r.s_msg);
  ASSERT_EQ_ERR(braid_select_until(cs, 1, INT64_MIN, &r), BRAID_ETIMEDOUT);
  send_int(ch, 3);
  ASSERT_OK(braid_select_until(cs, 1, braid_now_ns() - 1, &r));
  ASSERT_EQ_INT(r.s_index, 0);
  ASSERT_EQ_INT(msg_take_int(r.s_msg), 3);
  braid_chan_release(ch);
}

TEST(test_select_no_cases) {
  braid_selres_t r;
  res_poison(&r);
  ASSERT_EQ_ERR(braid_select_try(NULL, 0, &r), BRAID_EAGAIN);
  res_poison(&r);
  ASSERT_EQ_ERR(braid_select_until(NULL, 0, 0, &r), BRAID_ETIMEDOUT);
  ASSERT_EQ_INT(r.s_index, BRAID_W_TIMEOUT);
  int64_t start = braid_now_ns(), deadline = start + test_ms(30);
  res_poison(&r);
  ASSERT_EQ_ERR(braid_select_until(NULL, 0, deadline, &r), BRAID_ETIMEDOUT);
  int64_t end = braid_now_ns();
  ASSERT_GE_INT(end, deadline);
  ASSERT_LT_INT(end - start, test_ms(5000));
  ASSERT_EQ_INT(r.s_index, BRAID_W_TIMEOUT);
  ASSERT_EQ_ERR(r.s_err, BRAID_ETIMEDOUT);
  ASSERT_NULL(r.s_msg);
}

/* ------------------------------------------------------------------------ */
/* Closed channels                                                           */

TEST(test_select_send_on_closed) {
  braid_chan_t *ch = chan_new(1), *idle = chan_new(0);
  ASSERT_OK(braid_chan_close(ch, NULL));
  braid_msg_t *m = msg_int(1);
  braid_case_t cs[2] = {recv_case(idle), send_case(ch, m)};
  braid_selres_t r;
  res_poison(&r);
  ASSERT_OK(braid_select_try(cs, 2, &r));
  ASSERT_EQ_INT(r.s_index, 1);
  ASSERT_EQ_ERR(r.s_err, BRAID_ECLOSED);
  ASSERT_EQ_UINT(msg_rc(m), 1);
  res_poison(&r);
  ASSERT_OK(braid_select_until(cs, 2, BRAID_FOREVER, &r));
  ASSERT_EQ_INT(r.s_index, 1);
  ASSERT_EQ_ERR(r.s_err, BRAID_ECLOSED);
  ASSERT_EQ_UINT(msg_rc(m), 1);
  /* Split phase: arm completes at once. */
  braid_waiter_t w;
  braid_waiter_init(&w, NULL, NULL);
  res_poison(&r);
  ASSERT_OK(braid_select_arm(cs, 2, &w, &r));
  ASSERT_EQ_INT(r.s_index, 1);
  ASSERT_EQ_ERR(r.s_err, BRAID_ECLOSED);
  ASSERT_EQ_UINT(msg_rc(m), 1);
  braid_waiter_fini(&w);
  braid_chan_stats_t st;
  braid_chan_stats(ch, &st);
  ASSERT_EQ_UINT(st.sent, 0);
  ASSERT_EQ_UINT(st.len, 0);
  braid_msg_release(m);
  braid_chan_release(ch);
  braid_chan_release(idle);
}

/* A closed channel still delivers its buffered values to a select. */
TEST(test_select_recv_closed_buffered) {
  braid_chan_t *ch = chan_new(2);
  send_int(ch, 1);
  send_int(ch, 2);
  ASSERT_OK(braid_chan_close(ch, NULL));
  braid_case_t cs[1] = {recv_case(ch)};
  braid_selres_t r;
  for (int64_t i = 1; i <= 2; i++) {
    ASSERT_OK(braid_select_try(cs, 1, &r));
    ASSERT_OK(r.s_err);
    ASSERT_EQ_INT(msg_take_int(r.s_msg), i);
  }
  ASSERT_OK(braid_select_try(cs, 1, &r));
  ASSERT_EQ_ERR(r.s_err, BRAID_ECLOSED);
  ASSERT_NULL(r.s_msg);
  braid_chan_release(ch);
}

/* ------------------------------------------------------------------------ */
/* Split phase                                                               */

typedef struct {
  sem_t sem;               /* posted by every wake */
  atomic_int calls;        /* wakes so far */
} wake_ctx_t;

static void my_wake(braid_waiter_t *w) {
  wake_ctx_t *c = w->w_data;
  atomic_fetch_add_explicit(&c->calls, 1, memory_order_relaxed);
  sem_post(&c->sem);       /* last touch: the waiter may go right after */
}

static void wake_ctx_init(wake_ctx_t *c) {
  ASSERT_EQ_INT(sem_init(&c->sem, 0, 0), 0);
  atomic_init(&c->calls, 0);
}

static void wake_ctx_wait(wake_ctx_t *c) {
  while (sem_wait(&c->sem) != 0) {}
}

TEST(test_select_arm_disarm) {
  wake_ctx_t ctx;
  wake_ctx_init(&ctx);
  braid_chan_t *a = chan_new(0), *b = chan_new(0);
  braid_case_t cs[2] = {recv_case(a), recv_case(b)};
  for (int round = 0; round < 50; round++) {
    /* Heap waiter: a waker that touches it after its wake would be caught
     * by ASan as a use after free. */
    braid_waiter_t *w = malloc(sizeof *w);
    ASSERT_NOT_NULL(w);
    braid_waiter_init(w, my_wake, &ctx);
    braid_selres_t r;
    res_poison(&r);
    ASSERT_EQ_ERR(braid_select_arm(cs, 2, w, &r), BRAID_EAGAIN);
    braid_chan_t *target = round % 2 ? a : b;
    actor_t act;
    actor_start(&act, ACT_SEND, target, msg_int(round), round % 4 == 0 ? 5 : 0);
    wake_ctx_wait(&ctx);
    ASSERT_EQ_INT(atomic_load(&ctx.calls), round + 1);
    res_poison(&r);
    ASSERT_OK(braid_select_disarm(cs, 2, w, &r));
    ASSERT_EQ_INT(r.s_index, target == a ? 0 : 1);
    ASSERT_OK(r.s_err);
    ASSERT_EQ_INT(msg_take_int(r.s_msg), round);
    actor_join(&act);
    ASSERT_OK(act.rc);
    braid_waiter_fini(w);
    free(w);
    /* The other node was removed. */
    braid_msg_t *probe = msg_int(0);
    ASSERT_EQ_ERR(braid_chan_try_send(a, probe), BRAID_EAGAIN);
    ASSERT_EQ_ERR(braid_chan_try_send(b, probe), BRAID_EAGAIN);
    braid_msg_release(probe);
  }
  ASSERT_EQ_INT(atomic_load(&ctx.calls), 50);
  sem_destroy(&ctx.sem);
  braid_chan_release(a);
  braid_chan_release(b);
}

/* arm with a ready case completes at once and never calls the wake; the
 * same waiter can be armed again and again. */
TEST(test_select_arm_ready_and_reuse) {
  wake_ctx_t ctx;
  wake_ctx_init(&ctx);
  braid_chan_t *ch = chan_new(4);
  braid_waiter_t w;
  braid_waiter_init(&w, my_wake, &ctx);
  braid_case_t cs[1] = {recv_case(ch)};
  for (int round = 0; round < 100; round++) {
    braid_selres_t r;
    if (round % 2) {
      send_int(ch, round);
      ASSERT_OK(braid_select_arm(cs, 1, &w, &r));
      ASSERT_EQ_INT(r.s_index, 0);
      ASSERT_EQ_INT(msg_take_int(r.s_msg), round);
    } else {
      ASSERT_EQ_ERR(braid_select_arm(cs, 1, &w, &r), BRAID_EAGAIN);
      ASSERT_OK(braid_chan_try_send(ch, msg_int(round)));   /* fires w */
      wake_ctx_wait(&ctx);
      ASSERT_OK(braid_select_disarm(cs, 1, &w, &r));
      ASSERT_EQ_INT(r.s_index, 0);
      ASSERT_EQ_INT(msg_take_int(r.s_msg), round);
      ASSERT_EQ_UINT(braid_chan_len(ch), 0);   /* handed to the node */
    }
  }
  ASSERT_EQ_INT(atomic_load(&ctx.calls), 50);
  braid_waiter_fini(&w);
  sem_destroy(&ctx.sem);
  braid_chan_release(ch);
}

/* The OS-thread kind of waiter used split phase: park, then disarm. */
TEST(test_select_arm_park) {
  braid_chan_t *ch = chan_new(0);
  braid_case_t cs[1] = {recv_case(ch)};
  braid_waiter_t w;
  braid_waiter_init(&w, NULL, NULL);
  braid_selres_t r;

  ASSERT_EQ_ERR(braid_select_arm(cs, 1, &w, &r), BRAID_EAGAIN);
  ASSERT(!braid_waiter_woken(&w));
  actor_t act;
  actor_start(&act, ACT_SEND, ch, msg_int(11), 10);
  ASSERT_OK(braid_waiter_park_until(&w, BRAID_FOREVER));
  ASSERT(braid_waiter_woken(&w));
  ASSERT_OK(braid_select_disarm(cs, 1, &w, &r));
  ASSERT_EQ_INT(r.s_index, 0);
  ASSERT_EQ_INT(msg_take_int(r.s_msg), 11);
  actor_join(&act);

  /* A park deadline passes: fire the timeout ourselves, then collect. */
  ASSERT_EQ_ERR(braid_select_arm(cs, 1, &w, &r), BRAID_EAGAIN);
  int64_t deadline = test_after_ms(20);
  ASSERT_EQ_ERR(braid_waiter_park_until(&w, deadline), BRAID_ETIMEDOUT);
  ASSERT_GE_INT(braid_now_ns(), deadline);
  ASSERT(braid_waiter_fire(&w, BRAID_W_TIMEOUT, BRAID_ETIMEDOUT, NULL));
  ASSERT_OK(braid_waiter_park_until(&w, BRAID_FOREVER));   /* at once */
  ASSERT(braid_waiter_woken(&w));
  res_poison(&r);
  ASSERT_EQ_ERR(braid_select_disarm(cs, 1, &w, &r), BRAID_ETIMEDOUT);
  ASSERT_EQ_INT(r.s_index, BRAID_W_TIMEOUT);
  ASSERT_NULL(r.s_msg);
  braid_msg_t *probe = msg_int(0);
  ASSERT_EQ_ERR(braid_chan_try_send(ch, probe), BRAID_EAGAIN);
  braid_msg_release(probe);

  braid_waiter_fini(&w);
  braid_chan_release(ch);
}

/* braid_waiter_fire on an armed waiter: it wins, the wake runs, disarm
 * reports the special index, and the nodes are gone. */
TEST(test_select_waiter_fire) {
  wake_ctx_t ctx;
  wake_ctx_init(&ctx);
  braid_chan_t *ch = chan_new(0), *full = chan_new(1);
  send_int(full, 0);
  braid_future_t *f = future_new();
  struct {
    int index, err;
  } kinds[3] = {{BRAID_W_TIMEOUT, BRAID_ETIMEDOUT},
                {BRAID_W_CANCEL, BRAID_ECANCELED},
                {BRAID_W_INTR, BRAID_EINTR}};
  for (int k = 0; k < 3; k++) {
    braid_msg_t *m = msg_int(k);
    braid_case_t cs[3] = {recv_case(ch), send_case(full, m), await_case(f)};
    braid_waiter_t w;
    braid_waiter_init(&w, my_wake, &ctx);
    braid_selres_t r;
    ASSERT_EQ_ERR(braid_select_arm(cs, 3, &w, &r), BRAID_EAGAIN);
    ASSERT(braid_waiter_fire(&w, kinds[k].index, kinds[k].err, NULL));
    wake_ctx_wait(&ctx);
    /* A second firing loses and leaves its message with the caller. */
    braid_msg_t *late = msg_int(99);
    ASSERT(!braid_waiter_fire(&w, BRAID_W_INTR, BRAID_EINTR, late));
    ASSERT_EQ_UINT(msg_rc(late), 1);
    braid_msg_release(late);
    res_poison(&r);
    ASSERT_EQ_ERR(braid_select_disarm(cs, 3, &w, &r), kinds[k].err);
    ASSERT_EQ_INT(r.s_index, kinds[k].index);
    ASSERT_EQ_ERR(r.s_err, kinds[k].err);
    ASSERT_NULL(r.s_msg);
    ASSERT_EQ_UINT(msg_rc(m), 1);            /* the send case's message */
    ASSERT_EQ_INT(atomic_load(&ctx.calls), k + 1);
    braid_waiter_fini(&w);
    /* No stale nodes: the rendezvous has no receiver, the full channel's
     * receiver gets the old value, the future settles without a waiter. */
    braid_msg_t *probe = msg_int(0);
    ASSERT_EQ_ERR(braid_chan_try_send(ch, probe), BRAID_EAGAIN);
    braid_msg_release(probe);
    ASSERT_EQ_INT(recv_int(full), 0);
    ASSERT_EQ_UINT(braid_chan_len(full), 0);
    send_int(full, 0);
    braid_msg_release(m);
  }
  ASSERT_OK(braid_future_resolve(f, NULL));
  ASSERT_EQ_INT(atomic_load(&ctx.calls), 3);
  sem_destroy(&ctx.sem);
  braid_future_release(f);
  braid_chan_release(ch);
  braid_chan_release(full);
}

/* Firing a timeout races a sender: exactly one of them wins each time, and
 * no value is lost or delivered twice. */
typedef struct {
  braid_chan_t *ch;
  int64_t n;
} race_sender_t;

static void *race_sender_main(void *p) {
  race_sender_t *a = p;
  uint64_t rng = test_rand_init(77);
  for (int64_t i = 0; i < a->n; i++) {
    ASSERT_OK(braid_chan_send_until(a->ch, msg_int(i), BRAID_FOREVER));
    if (test_rand_below(&rng, 8) == 0) test_sleep_ms(0);
  }
  return NULL;
}

TEST(test_select_fire_races_sender) {
  enum { N = 1500 };
  for (size_t cap = 0; cap <= 1; cap++) {
    wake_ctx_t ctx;
    wake_ctx_init(&ctx);
    braid_chan_t *ch = chan_new(cap);
    race_sender_t rs = {ch, N};
    pthread_t t = test_spawn(race_sender_main, &rs);
    braid_case_t cs[1] = {recv_case(ch)};
    uint64_t rng = test_rand_init(78);
    int64_t next = 0;
    int armed = 0, timeouts = 0;
    while (next < N) {
      braid_waiter_t *w = malloc(sizeof *w);
      ASSERT_NOT_NULL(w);
      braid_waiter_init(w, my_wake, &ctx);
      braid_selres_t r;
      int rc = braid_select_arm(cs, 1, w, &r);
      if (rc == BRAID_EAGAIN) {
        armed++;
        for (uint64_t spin = test_rand_below(&rng, 2000); spin > 0; spin--)
          __asm__ __volatile__("" ::: "memory");
        bool won = braid_waiter_fire(w, BRAID_W_TIMEOUT, BRAID_ETIMEDOUT, NULL);
        wake_ctx_wait(&ctx);
        rc = braid_select_disarm(cs, 1, w, &r);
        if (won) {
          timeouts++;
          ASSERT_EQ_ERR(rc, BRAID_ETIMEDOUT);
          ASSERT_EQ_INT(r.s_index, BRAID_W_TIMEOUT);
          ASSERT_NULL(r.s_msg);
        } else {
          ASSERT_OK(rc);
        }
      }
      if (rc == 0) {
        ASSERT_EQ_INT(r.s_index, 0);
        ASSERT_OK(r.s_err);
        ASSERT_EQ_INT(msg_take_int(r.s_msg), next);
        next++;
      }
      braid_waiter_fini(w);
      free(w);
    }
    test_join(t);
    ASSERT_EQ_INT(atomic_load(&ctx.calls), armed);
    braid_msg_t *out = NULL;
    ASSERT_EQ_ERR(braid_chan_try_recv(ch, &out), BRAID_EAGAIN);
    (void)timeouts;
    sem_destroy(&ctx.sem);
    braid_chan_release(ch);
  }
}

/* Two selects sharing channels in opposite orders never deadlock (locks
 * are taken in address order), and every value arrives once. */
typedef struct {
  braid_chan_t *a, *b;
  int64_t n;
  bool reversed;
  int64_t got;
} cross_arg_t;

static void *cross_main(void *p) {
  cross_arg_t *x = p;
  braid_chan_t *first = x->reversed ? x->b : x->a;
  braid_chan_t *second = x->reversed ? x->a : x->b;
  for (int64_t i = 0; i < x->n; i++) {
    braid_msg_t *m = msg_int(i);
    braid_case_t cs[3] = {send_case(first, m), recv_case(second), recv_case(first)};
    braid_selres_t r;
    int rc = braid_select_until(cs, 3, braid_now_ns() + test_ms(2), &r);
    if (rc == 0 && r.s_index == 0) continue;   /* m is the channel's */
    braid_msg_release(m);
    if (rc == 0) {
      ASSERT_OK(r.s_err);
      x->got++;
      braid_msg_release(r.s_msg);
    } else {
      ASSERT_EQ_ERR(rc, BRAID_ETIMEDOUT);
    }
  }
  return NULL;
}

TEST(test_select_lock_order) {
  braid_chan_t *a = chan_new(0), *b = chan_new(1);
  cross_arg_t x[4];
  pthread_t t[4];
  for (int i = 0; i < 4; i++) {
    x[i] = (cross_arg_t){a, b, 1000, i % 2 == 1, 0};
    t[i] = test_spawn(cross_main, &x[i]);
  }
  for (int i = 0; i < 4; i++) test_join(t[i]);
  braid_chan_stats_t sa, sb;
  braid_chan_stats(a, &sa);
  braid_chan_stats(b, &sb);
  int64_t got = 0;
  for (int i = 0; i < 4; i++) got += x[i].got;
  ASSERT_EQ_UINT(sa.received + sb.received, got);
  ASSERT_EQ_UINT(sa.sent + sb.sent, got + sb.len);
  braid_chan_release(a);
  braid_chan_release(b);
}

TEST_LIST {
  RUN(test_select_ready_case_chosen);
  RUN(test_select_uniform_choice);
  RUN(test_select_uniform_send);
  RUN(test_select_send_cases);
  RUN(test_select_send_recv_same_chan);
  RUN(test_select_send_recv_same_rendezvous);
  RUN(test_select_duplicate_chan);
  RUN(test_select_blocked_woken_by_send);
  RUN(test_select_blocked_woken_by_recv);
  RUN(test_select_blocked_woken_by_close);
  RUN(test_select_blocked_woken_by_future);
  RUN(test_select_timeout);
  RUN(test_select_deadline_past);
  RUN(test_select_no_cases);
  RUN(test_select_send_on_closed);
  RUN(test_select_recv_closed_buffered);
  RUN(test_select_arm_disarm);
  RUN(test_select_arm_ready_and_reuse);
  RUN(test_select_arm_park);
  RUN(test_select_waiter_fire);
  RUN(test_select_fire_races_sender);
  RUN(test_select_lock_order);
}
