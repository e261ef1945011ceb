/* test_chan.c -- channels (chan.h): rendezvous, buffered, unbounded, the
 * drop and slide policies, close, try, deadlines and counters. */
#include "chan.h"
#include "internal.h"
#include "select.h"
#include "test.h"
#include "waiter.h"

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */

static braid_chan_t *chan_new(size_t cap, braid_policy_t policy) {
  braid_chan_t *ch = braid_chan_new(cap, policy);
  ASSERT_NOT_NULL(ch);
  return ch;
}

static void send_int(braid_chan_t *ch, int64_t v) {
  braid_msg_t *m = msg_int(v);
  ASSERT_OK(braid_chan_send_until(ch, m, BRAID_FOREVER));
}

static int64_t recv_int(braid_chan_t *ch) {
  braid_msg_t *m = NULL;
  ASSERT_OK(braid_chan_recv_until(ch, &m, BRAID_FOREVER));
  return msg_take_int(m);
}

static int64_t try_recv_int(braid_chan_t *ch) {
  braid_msg_t *m = NULL;
  ASSERT_OK(braid_chan_try_recv(ch, &m));
  return msg_take_int(m);
}

static void stats(braid_chan_t *ch, braid_chan_stats_t *st) {
  memset(st, 0xee, sizeof *st);            /* every field must be written */
  braid_chan_stats(ch, st);
}

/* A thread that sends `count` ints (first, first+1, ...) with no deadline. */
typedef struct {
  braid_chan_t *ch;
  int64_t first;
  int64_t count;
} sender_arg_t;

static void *sender_main(void *p) {
  sender_arg_t *a = p;
  for (int64_t i = 0; i < a->count; i++) send_int(a->ch, a->first + i);
  return NULL;
}

/* A thread that makes one blocking call and records what it got. */
typedef struct {
  braid_chan_t *ch;
  int64_t val;             /* send: the value offered */
  int64_t deadline;
  int rc;                  /* the call's result */
  braid_msg_t *msg;        /* recv: what came back (owned by the test) */
  bool msg_was_kept;       /* send failure: the message still the sender's */
} call_arg_t;

static void *one_send_main(void *p) {
  call_arg_t *a = p;
  braid_msg_t *m = msg_int(a->val);
  a->rc = braid_chan_send_until(a->ch, m, a->deadline);
  if (a->rc != 0) {
    /* Failed: the message must still be ours, untouched. */
    a->msg_was_kept = msg_rc(m) == 1 && msg_get_int(m) == a->val;
    braid_msg_release(m);
  }
  return NULL;
}

static void *one_recv_main(void *p) {
  call_arg_t *a = p;
  a->msg = (braid_msg_t *)(uintptr_t)1;    /* must be overwritten */
  a->rc = braid_chan_recv_until(a->ch, &a->msg, a->deadline);
  return NULL;
}

/* ------------------------------------------------------------------------ */
/* Creation                                                                  */

TEST(test_chan_new) {
  braid_chan_t *a = chan_new(0, BRAID_POLICY_BLOCK);
  braid_chan_t *b = chan_new(3, BRAID_POLICY_DROP);
  ASSERT_GT_INT(braid_chan_id(b), braid_chan_id(a));
  ASSERT_EQ_UINT(obj_rc(a), 1);
  ASSERT_EQ_PTR(((braid_obj_t *)a)->o_type, &braid_chan_type);
  ASSERT_EQ_UINT(braid_chan_len(a), 0);
  ASSERT(!braid_chan_is_closed(a));
  braid_chan_stats_t st;
  stats(b, &st);
  ASSERT_EQ_UINT(st.len, 0);
  ASSERT_EQ_UINT(st.cap, 3);
  ASSERT_EQ_UINT(st.sent, 0);
  ASSERT_EQ_UINT(st.received, 0);
  ASSERT_EQ_UINT(st.dropped, 0);
  ASSERT(!st.closed);
  braid_chan_retain(a);
  ASSERT_EQ_UINT(obj_rc(a), 2);
  braid_chan_release(a);
  braid_chan_release(a);
  braid_chan_release(b);
}

TEST(test_chan_new_bad_policy) {
  ASSERT_NULL(braid_chan_new(1, (braid_policy_t)3));
  ASSERT_NULL(braid_chan_new(1, (braid_policy_t)-1));
}

/* A channel can travel inside a message (as a handle). */
TEST(test_chan_as_message_handle) {
  braid_chan_t *ch = chan_new(1, BRAID_POLICY_BLOCK);
  braid_obj_t *h = (braid_obj_t *)ch;
  braid_msg_t *m = braid_msg_new(NULL, 0, &h, 1);
  ASSERT_NOT_NULL(m);
  ASSERT_EQ_UINT(obj_rc(ch), 2);
  /* The message sits in the channel it names: a cycle the owner breaks by
   * receiving it back. */
  ASSERT_OK(braid_chan_try_send(ch, m));
  braid_msg_t *out = NULL;
  ASSERT_OK(braid_chan_try_recv(ch, &out));
  ASSERT_EQ_PTR(out, m);
  braid_msg_release(out);
  ASSERT_EQ_UINT(obj_rc(ch), 1);
  braid_chan_release(ch);
}

/* ------------------------------------------------------------------------ */
/* Rendezvous                                                                */

static void rendezvous_handoff(int spin) {
  enum { N = 2000 };
  int saved = braid_spin_iterations;
  if (spin >= 0) braid_spin_iterations = spin;   /* before any thread starts */

  /* Sender thread, receiving main thread. */
  braid_chan_t *ch = chan_new(0, BRAID_POLICY_BLOCK);
  sender_arg_t a = {ch, 0, N};
  pthread_t t = test_spawn(sender_main, &a);
  for (int64_t i = 0; i < N; i++) ASSERT_EQ_INT(recv_int(ch), i);
  test_join(t);
  braid_chan_stats_t st;
  stats(ch, &st);
  ASSERT_EQ_UINT(st.len, 0);
  ASSERT_EQ_UINT(st.cap, 0);
  ASSERT_EQ_UINT(st.sent, N);
  ASSERT_EQ_UINT(st.received, N);
  ASSERT_EQ_UINT(st.dropped, 0);

  /* And the other way round: receiver thread, sending main thread. */
  call_arg_t r = {.ch = ch, .deadline = BRAID_FOREVER};
  for (int64_t i = 0; i < 200; i++) {
    pthread_t rt = test_spawn(one_recv_main, &r);
    send_int(ch, i);
    test_join(rt);
    ASSERT_OK(r.rc);
    ASSERT_EQ_INT(msg_take_int(r.msg), i);
  }
  braid_chan_release(ch);
  braid_spin_iterations = saved;
}

TEST(test_chan_rendezvous_handoff) { rendezvous_handoff(-1); }
TEST(test_chan_rendezvous_handoff_nospin) { rendezvous_handoff(0); }

TEST(test_chan_rendezvous_needs_partner) {
  braid_chan_t *ch = chan_new(0, BRAID_POLICY_BLOCK);
  braid_msg_t *m = msg_int(1);
  ASSERT_EQ_ERR(braid_chan_try_send(ch, m), BRAID_EAGAIN);
  ASSERT_EQ_UINT(msg_rc(m), 1);
  braid_msg_t *out = (braid_msg_t *)(uintptr_t)1;
  ASSERT_EQ_ERR(braid_chan_try_recv(ch, &out), BRAID_EAGAIN);
  ASSERT_EQ_ERR(braid_chan_send_until(ch, m, test_after_ms(20)), BRAID_ETIMEDOUT);
  ASSERT_EQ_UINT(msg_rc(m), 1);
  ASSERT_EQ_UINT(braid_chan_len(ch), 0);
  /* A timed-out sender left nothing behind: a receiver still finds no one. */
  out = (braid_msg_t *)(uintptr_t)1;
  ASSERT_EQ_ERR(braid_chan_try_recv(ch, &out), BRAID_EAGAIN);
  ASSERT_EQ_ERR(braid_chan_recv_until(ch, &out, test_after_ms(20)), BRAID_ETIMEDOUT);
  ASSERT_NULL(out);
  /* And a timed-out receiver left nothing behind for a sender. */
  ASSERT_EQ_ERR(braid_chan_try_send(ch, m), BRAID_EAGAIN);
  braid_chan_stats_t st;
  stats(ch, &st);
  ASSERT_EQ_UINT(st.sent, 0);
  ASSERT_EQ_UINT(st.received, 0);
  braid_msg_release(m);
  braid_chan_release(ch);
}

/* try_send hands a value to a receiver that is already blocked, and
 * try_recv takes one from a blocked sender.  The partner may not have
 * parked yet, so retry (for up to 10 s) until it has. */
TEST(test_chan_try_with_blocked_partner) {
  braid_chan_t *ch = chan_new(0, BRAID_POLICY_BLOCK);
  for (int round = 0; round < 20; round++) {
    call_arg_t r = {.ch = ch, .deadline = BRAID_FOREVER};
    pthread_t t = test_spawn(one_recv_main, &r);
    braid_msg_t *m = msg_int(round);
    int rc, tries = 0;
    while ((rc = braid_chan_try_send(ch, m)) == BRAID_EAGAIN) {
      ASSERT_EQ_UINT(msg_rc(m), 1);
      ASSERT_LT_INT(++tries, 10000);
      test_sleep_ms(1);
    }
    ASSERT_OK(rc);
    test_join(t);
    ASSERT_OK(r.rc);
    ASSERT_EQ_PTR(r.msg, m);               /* handed over, not copied */
    ASSERT_EQ_INT(msg_take_int(r.msg), round);

    call_arg_t s = {.ch = ch, .val = 100 + round, .deadline = BRAID_FOREVER};
    t = test_spawn(one_send_main, &s);
    braid_msg_t *out = NULL;
    tries = 0;
    while ((rc = braid_chan_try_recv(ch, &out)) == BRAID_EAGAIN) {
      ASSERT_LT_INT(++tries, 10000);
      test_sleep_ms(1);
    }
    ASSERT_OK(rc);
    test_join(t);
    ASSERT_OK(s.rc);
    ASSERT_EQ_INT(msg_take_int(out), 100 + round);

    /* A past deadline means "try once", which includes the handoff. */
    r.msg = NULL;
    t = test_spawn(one_recv_main, &r);
    m = msg_int(-round);
    tries = 0;
    while ((rc = braid_chan_send_until(ch, m, 0)) == BRAID_ETIMEDOUT) {
      ASSERT_LT_INT(++tries, 10000);
      test_sleep_ms(1);
    }
    ASSERT_OK(rc);
    test_join(t);
    ASSERT_OK(r.rc);
    ASSERT_EQ_INT(msg_take_int(r.msg), -round);
  }
  braid_chan_release(ch);
}

/* ------------------------------------------------------------------------ */
/* Buffered                                                                  */

TEST(test_chan_buffered_fifo) {
  braid_chan_t *ch = chan_new(8, BRAID_POLICY_BLOCK);
  for (int64_t i = 0; i < 8; i++) ASSERT_OK(braid_chan_try_send(ch, msg_int(i)));
  ASSERT_EQ_UINT(braid_chan_len(ch), 8);
  braid_msg_t *m = msg_int(99);
  ASSERT_EQ_ERR(braid_chan_try_send(ch, m), BRAID_EAGAIN);
  ASSERT_EQ_UINT(msg_rc(m), 1);
  ASSERT_EQ_ERR(braid_chan_send_until(ch, m, 0), BRAID_ETIMEDOUT);
  ASSERT_EQ_UINT(msg_rc(m), 1);
  for (int64_t i = 0; i < 8; i++) ASSERT_EQ_INT(try_recv_int(ch), i);
  braid_msg_t *out = (braid_msg_t *)(uintptr_t)1;
  ASSERT_EQ_ERR(braid_chan_try_recv(ch, &out), BRAID_EAGAIN);
  ASSERT_EQ_UINT(braid_chan_len(ch), 0);

  /* Wrap the ring many times with a varying fill level. */
  int64_t next_in = 0, next_out = 0;
  uint64_t rng = test_rand_init(1);
  for (int step = 0; step < 5000; step++) {
    size_t len = braid_chan_len(ch);
    ASSERT_EQ_INT(len, next_in - next_out);
    if (len < 8 && (len == 0 || test_rand_below(&rng, 2))) {
      ASSERT_OK(braid_chan_try_send(ch, msg_int(next_in++)));
    } else {
      ASSERT_EQ_INT(try_recv_int(ch), next_out++);
    }
  }
  while (next_out < next_in) ASSERT_EQ_INT(recv_int(ch), next_out++);
  braid_msg_release(m);
  braid_chan_release(ch);
}

/* Capacities on both sides of BRAID_RING_MAX (lock-free ring up to it, the
 * locked ring above), odd ones included, whose laps do not fill their
 * power-of-two position space: exact capacity, order, counters, and close
 * keeping what is buffered. */
TEST(test_chan_ring_capacities) {
  size_t caps[] = {1, 2, 3, 5, 7, 64, 1000, BRAID_RING_MAX, BRAID_RING_MAX + 1};
  for (size_t c = 0; c < sizeof caps / sizeof caps[0]; c++) {
    size_t cap = caps[c];
    braid_chan_t *ch = chan_new(cap, BRAID_POLICY_BLOCK);
    int64_t next_in = 0, next_out = 0;
    for (int lap = 0; lap < 3; lap++) {
      while (next_in - next_out < (int64_t)cap) ASSERT_OK(braid_chan_try_send(ch, msg_int(next_in++)));
      braid_msg_t *m = msg_int(-1);
      ASSERT_EQ_ERR(braid_chan_try_send(ch, m), BRAID_EAGAIN);
      ASSERT_EQ_UINT(msg_rc(m), 1);
      braid_msg_release(m);
      ASSERT_EQ_UINT(braid_chan_len(ch), cap);
      /* Leave lap of them (or none), so that the next lap starts elsewhere. */
      while (next_in - next_out > (int64_t)lap % (int64_t)cap) ASSERT_EQ_INT(try_recv_int(ch), next_out++);
    }
    uint64_t rng = test_rand_init(cap);
    for (size_t step = 0; step < 4 * cap + 500; step++) {
      size_t len = braid_chan_len(ch);
      ASSERT_EQ_INT(len, next_in - next_out);
      if (len < cap && (len == 0 || test_rand_below(&rng, 2)))
        ASSERT_OK(braid_chan_try_send(ch, msg_int(next_in++)));
      else
        ASSERT_EQ_INT(try_recv_int(ch), next_out++);
    }
    braid_chan_stats_t st;
    stats(ch, &st);
    ASSERT_EQ_UINT(st.sent, (uint64_t)next_in);
    ASSERT_EQ_UINT(st.received, (uint64_t)next_out);
    ASSERT_EQ_UINT(st.len, (size_t)(next_in - next_out));
    ASSERT_EQ_UINT(st.cap, cap);
    /* Closed: no more sends, what is buffered still comes out in order,
     * then the close error. */
    ASSERT_OK(braid_chan_close(ch, msg_int(-7)));
    braid_msg_t *m = msg_int(-1);
    ASSERT_EQ_ERR(braid_chan_try_send(ch, m), BRAID_ECLOSED);
    ASSERT_EQ_UINT(msg_rc(m), 1);
    braid_msg_release(m);
    while (next_out < next_in) ASSERT_EQ_INT(try_recv_int(ch), next_out++);
    braid_msg_t *err = NULL;
    ASSERT_EQ_ERR(braid_chan_try_recv(ch, &err), BRAID_ECLOSED);
    ASSERT_EQ_INT(msg_take_int(err), -7);
    ASSERT_EQ_ERR(braid_chan_recv_until(ch, &err, BRAID_FOREVER), BRAID_ECLOSED);
    ASSERT_EQ_INT(msg_take_int(err), -7);
    /* Values left in a ring are released with the channel. */
    braid_chan_release(ch);
    ch = chan_new(cap, BRAID_POLICY_BLOCK);
    braid_obj_t *tracker = test_obj_new();
    for (size_t i = 0; i < cap && i < 5; i++) ASSERT_OK(braid_chan_try_send(ch, msg_int_h(1, tracker)));
    ASSERT_EQ_UINT(obj_rc(tracker), 1 + (cap < 5 ? cap : 5));
    braid_chan_release(ch);
    ASSERT_EQ_UINT(obj_rc(tracker), 1);
    braid_obj_release(tracker);
  }
}

/* Cap 1 and 2 with a blocked sender: order is kept across blocking. */
TEST(test_chan_buffered_blocking_sender) {
  for (size_t cap = 1; cap <= 2; cap++) {
    braid_chan_t *ch = chan_new(cap, BRAID_POLICY_BLOCK);
    sender_arg_t a = {ch, 0, 3000};
    pthread_t t = test_spawn(sender_main, &a);
    for (int64_t i = 0; i < 3000; i++) {
      ASSERT_EQ_INT(recv_int(ch), i);
      ASSERT_LE_INT(braid_chan_len(ch), cap);
    }
    test_join(t);
    braid_chan_release(ch);
  }
}

/* Several producers and consumers: every value arrives exactly once, and
 * each producer's values arrive in its order at any one consumer. */
enum { MPMC_PER = 1500 };   /* values per producer */

typedef struct {
  braid_chan_t *ch;
  int64_t n;               /* values to take */
  int64_t *seen;           /* per value: times received */
  int64_t last[4];         /* per producer: last value seen here */
  bool in_order;
} consumer_arg_t;

static void *consumer_main(void *p) {
  consumer_arg_t *a = p;
  a->in_order = true;
  for (int k = 0; k < 4; k++) a->last[k] = -1;
  for (int64_t i = 0; i < a->n; i++) {
    int64_t v = recv_int(a->ch);
    int prod = (int)(v / 100000), seq = (int)(v % 100000);
    if (seq <= a->last[prod]) a->in_order = false;
    a->last[prod] = seq;
    __atomic_fetch_add(&a->seen[prod * MPMC_PER + seq], 1, __ATOMIC_RELAXED);
  }
  return NULL;
}

/* Reads a channel's length while others move values: never above its
 * capacity (the lock-free ring reads its two positions one after the
 * other). */
typedef struct {
  braid_chan_t *ch;
  size_t cap;
  atomic_int stop;
  long reads, over;
} len_watch_t;

static void *len_watch_main(void *p) {
  len_watch_t *a = p;
  while (!atomic_load(&a->stop)) {
    if (braid_chan_len(a->ch) > a->cap) a->over++;
    a->reads++;
  }
  return NULL;
}

TEST(test_chan_mpmc) {
  enum { NP = 4, NC = 4, PER = MPMC_PER };
  size_t caps[] = {0, 1, 2, 3, BRAID_UNBOUNDED};
  for (size_t c = 0; c < 5; c++) {
    braid_chan_t *ch = chan_new(caps[c], BRAID_POLICY_BLOCK);
    int64_t *seen = calloc(NP * PER, sizeof *seen);
    ASSERT_NOT_NULL(seen);
    sender_arg_t sa[NP];
    consumer_arg_t ca[NC];
    pthread_t pt[NP], ct[NC];
    for (int i = 0; i < NC; i++) {
      ca[i] = (consumer_arg_t){.ch = ch, .n = NP * PER / NC, .seen = seen};
      ct[i] = test_spawn(consumer_main, &ca[i]);
    }
    len_watch_t lw = {.ch = ch, .cap = caps[c]};
    atomic_init(&lw.stop, 0);
    pthread_t wt = test_spawn(len_watch_main, &lw);
    for (int i = 0; i < NP; i++) {
      sa[i] = (sender_arg_t){ch, (int64_t)i * 100000, PER};
      pt[i] = test_spawn(sender_main, &sa[i]);
    }
    for (int i = 0; i < NP; i++) test_join(pt[i]);
    for (int i = 0; i < NC; i++) {
      test_join(ct[i]);
      ASSERT(ca[i].in_order);
    }
    atomic_store(&lw.stop, 1);
    test_join(wt);
    ASSERT_GT_INT(lw.reads, 0);
    ASSERT_EQ_INT(lw.over, 0);
    for (int i = 0; i < NP * PER; i++) ASSERT_EQ_INT(seen[i], 1);
    braid_chan_stats_t st;
    stats(ch, &st);
    ASSERT_EQ_UINT(st.sent, NP * PER);
    ASSERT_EQ_UINT(st.received, NP * PER);
    ASSERT_EQ_UINT(st.len, 0);
    free(seen);
    braid_chan_release(ch);
  }
}

/* ------------------------------------------------------------------------ */
/* Unbounded                                                                 */

TEST(test_chan_unbounded) {
  enum { N = 100000 };
  braid_chan_t *ch = chan_new(BRAID_UNBOUNDED, BRAID_POLICY_BLOCK);
  for (int64_t i = 0; i < N; i++) {
    braid_msg_t *m = msg_int(i);
    /* Never blocks: a deadline in the past must still succeed. */
    if (i % 2) ASSERT_OK(braid_chan_send_until(ch, m, 0));
    else ASSERT_OK(braid_chan_try_send(ch, m));
  }
  braid_chan_stats_t st;
  stats(ch, &st);
  ASSERT_EQ_UINT(st.len, N);
  ASSERT_EQ_UINT(st.cap, BRAID_UNBOUNDED);
  ASSERT_EQ_UINT(st.sent, N);
  ASSERT_EQ_UINT(st.received, 0);
  for (int64_t i = 0; i < N; i++) {
    if (i % 2) ASSERT_EQ_INT(try_recv_int(ch), i);
    else ASSERT_EQ_INT(recv_int(ch), i);
  }
  braid_msg_t *out = NULL;
  ASSERT_EQ_ERR(braid_chan_try_recv(ch, &out), BRAID_EAGAIN);
  stats(ch, &st);
  ASSERT_EQ_UINT(st.len, 0);
  ASSERT_EQ_UINT(st.received, N);

  /* Grow, shrink, grow again with the read position mid-buffer. */
  int64_t in = 0, outn = 0;
  for (int round = 0; round < 20; round++) {
    for (int k = 0; k < 1000 + round * 37; k++) ASSERT_OK(braid_chan_try_send(ch, msg_int(in++)));
    for (int k = 0; k < 700 + round * 11; k++) ASSERT_EQ_INT(try_recv_int(ch), outn++);
  }
  ASSERT_EQ_UINT(braid_chan_len(ch), in - outn);
  /* Release with values still inside: they are freed (ASan checks). */
  braid_chan_release(ch);
}

/* ------------------------------------------------------------------------ */
/* Overflow policies                                                         */

TEST(test_chan_drop_policy) {
  long destroyed = test_objs_destroyed_count();
  braid_obj_t *h = test_obj_new();
  braid_chan_t *ch = chan_new(2, BRAID_POLICY_DROP);
  ASSERT_OK(braid_chan_send_until(ch, msg_int(1), BRAID_FOREVER));
  ASSERT_OK(braid_chan_send_until(ch, msg_int(2), BRAID_FOREVER));
  /* Full: the new value is accepted (0) and lost; it never blocks. */
  braid_msg_t *lost = msg_int_h(3, h);
  ASSERT_OK(braid_chan_send_until(ch, lost, BRAID_FOREVER));
  ASSERT_EQ_UINT(obj_rc(h), 1);            /* the channel freed it */
  ASSERT_OK(braid_chan_try_send(ch, msg_int_h(4, h)));
  ASSERT_EQ_UINT(obj_rc(h), 1);
  braid_chan_stats_t st;
  stats(ch, &st);
  ASSERT_EQ_UINT(st.len, 2);
  ASSERT_EQ_UINT(st.cap, 2);
  ASSERT_EQ_UINT(st.dropped, 2);
  ASSERT_EQ_UINT(st.sent, 2);              /* a dropped value never entered */
  ASSERT_EQ_UINT(st.received, 0);
  ASSERT_EQ_INT(try_recv_int(ch), 1);
  ASSERT_EQ_INT(try_recv_int(ch), 2);
  braid_msg_t *out = NULL;
  ASSERT_EQ_ERR(braid_chan_try_recv(ch, &out), BRAID_EAGAIN);
  /* Room again: values are kept. */
  ASSERT_OK(braid_chan_try_send(ch, msg_int(5)));
  ASSERT_EQ_INT(try_recv_int(ch), 5);
  stats(ch, &st);
  ASSERT_EQ_UINT(st.dropped, 2);
  ASSERT_EQ_UINT(st.sent, 3);
  ASSERT_EQ_UINT(st.received, 3);
  ASSERT_EQ_UINT(st.len, 0);
  braid_chan_release(ch);
  braid_obj_release(h);
  ASSERT_EQ_INT(test_objs_destroyed_count(), destroyed + 1);
}

TEST(test_chan_slide_policy) {
  long destroyed = test_objs_destroyed_count();
  braid_obj_t *h = test_obj_new();
  braid_chan_t *ch = chan_new(2, BRAID_POLICY_SLIDE);
  ASSERT_OK(braid_chan_try_send(ch, msg_int_h(1, h)));
  ASSERT_OK(braid_chan_try_send(ch, msg_int(2)));
  ASSERT_EQ_UINT(obj_rc(h), 2);
  /* Full: the oldest value (1) goes, the new one is kept. */
  ASSERT_OK(braid_chan_send_until(ch, msg_int(3), BRAID_FOREVER));
  ASSERT_EQ_UINT(obj_rc(h), 1);            /* 1 was freed */
  braid_chan_stats_t st;
  stats(ch, &st);
  ASSERT_EQ_UINT(st.len, 2);
  ASSERT_EQ_UINT(st.dropped, 1);
  ASSERT_EQ_UINT(st.sent, 3);              /* 3 entered, pushing 1 out */
  ASSERT_EQ_UINT(st.received, 0);
  ASSERT_EQ_INT(try_recv_int(ch), 2);
  ASSERT_EQ_INT(try_recv_int(ch), 3);

  /* Cap 1, many values: only the last survives. */
  braid_chan_t *one = chan_new(1, BRAID_POLICY_SLIDE);
  for (int64_t i = 0; i < 100; i++) ASSERT_OK(braid_chan_send_until(one, msg_int(i), 0));
  stats(one, &st);
  ASSERT_EQ_UINT(st.len, 1);
  ASSERT_EQ_UINT(st.dropped, 99);
  ASSERT_EQ_UINT(st.sent, 100);
  ASSERT_EQ_INT(try_recv_int(one), 99);
  stats(one, &st);
  ASSERT_EQ_UINT(st.received, 1);

  braid_chan_release(one);
  braid_chan_release(ch);
  braid_obj_release(h);
  ASSERT_EQ_INT(test_objs_destroyed_count(), destroyed + 1);
}

/* A blocked receiver gets a drop/slide channel's value directly. */
TEST(test_chan_policy_with_waiting_receiver) {
  braid_policy_t pol[] = {BRAID_POLICY_DROP, BRAID_POLICY_SLIDE};
  for (int p = 0; p < 2; p++) {
    braid_chan_t *ch = chan_new(1, pol[p]);
    call_arg_t r = {.ch = ch, .deadline = BRAID_FOREVER};
    pthread_t t = test_spawn(one_recv_main, &r);
    test_sleep_ms(20);
    send_int(ch, 7);
    test_join(t);
    ASSERT_OK(r.rc);
    ASSERT_EQ_INT(msg_take_int(r.msg), 7);
    braid_chan_stats_t st;
    stats(ch, &st);
    ASSERT_EQ_UINT(st.dropped, 0);
    ASSERT_EQ_UINT(st.len, 0);
    braid_chan_release(ch);
  }
}

/* ------------------------------------------------------------------------ */
/* Close                                                                     */

TEST(test_chan_close_delivers_buffered) {
  long destroyed = test_objs_destroyed_count();
  braid_obj_t *h = test_obj_new();
  braid_chan_t *ch = chan_new(4, BRAID_POLICY_BLOCK);
  for (int64_t i = 1; i <= 3; i++) send_int(ch, i);
  braid_msg_t *err = msg_int_h(-42, h);
  ASSERT_OK(braid_chan_close(ch, err));    /* err is the channel's now */
  ASSERT(braid_chan_is_closed(ch));
  braid_chan_stats_t st;
  stats(ch, &st);
  ASSERT(st.closed);
  ASSERT_EQ_UINT(st.len, 3);

  /* Sends fail and leave the message with the caller. */
  braid_msg_t *m = msg_int(9);
  ASSERT_EQ_ERR(braid_chan_send_until(ch, m, BRAID_FOREVER), BRAID_ECLOSED);
  ASSERT_EQ_ERR(braid_chan_try_send(ch, m), BRAID_ECLOSED);
  ASSERT_EQ_ERR(braid_chan_send_until(ch, m, 0), BRAID_ECLOSED);
  ASSERT_EQ_UINT(msg_rc(m), 1);
  braid_msg_release(m);

  /* Buffered values first, in order. */
  ASSERT_EQ_INT(recv_int(ch), 1);
  ASSERT_EQ_INT(try_recv_int(ch), 2);
  braid_msg_t *out = NULL;
  ASSERT_OK(braid_chan_recv_until(ch, &out, 0));
  ASSERT_EQ_INT(msg_take_int(out), 3);

  /* Then the close error, a new reference each time, for every call. */
  braid_msg_t *e1 = NULL, *e2 = NULL, *e3 = NULL;
  ASSERT_EQ_ERR(braid_chan_recv_until(ch, &e1, BRAID_FOREVER), BRAID_ECLOSED);
  ASSERT_EQ_PTR(e1, err);
  ASSERT_EQ_ERR(braid_chan_try_recv(ch, &e2), BRAID_ECLOSED);
  ASSERT_EQ_PTR(e2, err);
  ASSERT_EQ_ERR(braid_chan_recv_until(ch, &e3, 0), BRAID_ECLOSED);
  ASSERT_EQ_PTR(e3, err);
  ASSERT_EQ_UINT(msg_rc(err), 4);          /* the channel's + 3 */
  ASSERT_EQ_INT(msg_get_int(e1), -42);

  /* A second close fails, releases its err, changes nothing. */
  braid_obj_t *h2 = test_obj_new();
  braid_msg_t *err2 = msg_int_h(-43, h2);
  ASSERT_EQ_ERR(braid_chan_close(ch, err2), BRAID_ECLOSED);
  ASSERT_EQ_UINT(obj_rc(h2), 1);           /* err2 was freed */
  ASSERT_EQ_ERR(braid_chan_close(ch, NULL), BRAID_ECLOSED);
  braid_msg_t *e4 = NULL;
  ASSERT_EQ_ERR(braid_chan_try_recv(ch, &e4), BRAID_ECLOSED);
  ASSERT_EQ_PTR(e4, err);

  stats(ch, &st);
  ASSERT_EQ_UINT(st.sent, 3);
  ASSERT_EQ_UINT(st.received, 3);
  ASSERT_EQ_UINT(st.len, 0);
  ASSERT(st.closed);

  braid_msg_release(e1);
  braid_msg_release(e2);
  braid_msg_release(e3);
  braid_msg_release(e4);
  ASSERT_EQ_UINT(msg_rc(err), 1);
  braid_chan_release(ch);                  /* frees err, hence h's ref */
  ASSERT_EQ_UINT(obj_rc(h), 1);
  braid_obj_release(h);
  braid_obj_release(h2);
  ASSERT_EQ_INT(test_objs_destroyed_count(), destroyed + 2);
}

TEST(test_chan_close_null_error) {
  size_t caps[] = {0, 2, BRAID_UNBOUNDED};
  for (int c = 0; c < 3; c++) {
    braid_chan_t *ch = chan_new(caps[c], BRAID_POLICY_BLOCK);
    ASSERT_OK(braid_chan_close(ch, NULL));
    braid_msg_t *out = (braid_msg_t *)(uintptr_t)1;
    ASSERT_EQ_ERR(braid_chan_recv_until(ch, &out, BRAID_FOREVER), BRAID_ECLOSED);
    ASSERT_NULL(out);
    out = (braid_msg_t *)(uintptr_t)1;
    ASSERT_EQ_ERR(braid_chan_try_recv(ch, &out), BRAID_ECLOSED);
    ASSERT_NULL(out);
    braid_chan_release(ch);
  }
}

/* Closing with values buffered and releasing: nothing leaks (ASan). */
TEST(test_chan_release_full_closed) {
  long destroyed = test_objs_destroyed_count();
  braid_obj_t *h = test_obj_new();
  braid_chan_t *ch = chan_new(8, BRAID_POLICY_BLOCK);
  for (int i = 0; i < 5; i++) ASSERT_OK(braid_chan_try_send(ch, msg_int_h(i, h)));
  ASSERT_OK(braid_chan_close(ch, msg_int_h(-1, h)));
  ASSERT_EQ_UINT(obj_rc(h), 7);
  braid_chan_release(ch);
  ASSERT_EQ_UINT(obj_rc(h), 1);
  braid_obj_release(h);
  ASSERT_EQ_INT(test_objs_destroyed_count(), destroyed + 1);
}

/* Blocked senders are woken with ECLOSED and keep their messages; a value
 * already buffered is still delivered. */
TEST(test_chan_close_wakes_senders) {
  enum { NT = 4 };
  for (size_t cap = 0; cap <= 1; cap++) {
    braid_chan_t *ch = chan_new(cap, BRAID_POLICY_BLOCK);
    if (cap == 1) ASSERT_OK(braid_chan_try_send(ch, msg_int(-1)));   /* full */
    call_arg_t a[NT];
    pthread_t t[NT];
    for (int i = 0; i < NT; i++) {
      a[i] = (call_arg_t){.ch = ch, .val = i, .deadline = BRAID_FOREVER};
      t[i] = test_spawn(one_send_main, &a[i]);
    }
    test_sleep_ms(50);          /* let them block (not required to pass) */
    ASSERT_OK(braid_chan_close(ch, NULL));
    for (int i = 0; i < NT; i++) {
      test_join(t[i]);
      ASSERT_EQ_ERR(a[i].rc, BRAID_ECLOSED);
      ASSERT(a[i].msg_was_kept);
    }
    if (cap == 1) ASSERT_EQ_INT(recv_int(ch), -1);
    braid_msg_t *out = (braid_msg_t *)(uintptr_t)1;
    ASSERT_EQ_ERR(braid_chan_recv_until(ch, &out, 0), BRAID_ECLOSED);
    ASSERT_NULL(out);
    braid_chan_stats_t st;
    stats(ch, &st);
    ASSERT_EQ_UINT(st.sent, cap);
    ASSERT_EQ_UINT(st.received, cap);
    braid_chan_release(ch);
  }
}

/* Blocked receivers are woken with ECLOSED and the close error. */
TEST(test_chan_close_wakes_receivers) {
  enum { NT = 4 };
  size_t caps[] = {0, 4, BRAID_UNBOUNDED};
  for (int c = 0; c < 3; c++) {
    braid_chan_t *ch = chan_new(caps[c], BRAID_POLICY_BLOCK);
    call_arg_t a[NT];
    pthread_t t[NT];
    for (int i = 0; i < NT; i++) {
      a[i] = (call_arg_t){.ch = ch, .deadline = BRAID_FOREVER};
      t[i] = test_spawn(one_recv_main, &a[i]);
    }
    test_sleep_ms(50);
    braid_msg_t *err = msg_int(-7);
    braid_msg_retain(err);                 /* keep one to compare */
    ASSERT_OK(braid_chan_close(ch, err));
    for (int i = 0; i < NT; i++) {
      test_join(t[i]);
      ASSERT_EQ_ERR(a[i].rc, BRAID_ECLOSED);
      ASSERT_EQ_PTR(a[i].msg, err);
    }
    ASSERT_EQ_UINT(msg_rc(err), 2 + NT);
    for (int i = 0; i < NT; i++) braid_msg_release(a[i].msg);
    braid_chan_release(ch);
    ASSERT_EQ_UINT(msg_rc(err), 1);
    braid_msg_release(err);
  }
}

/* Racing closers: exactly one wins; the losers' errors are released. */
typedef struct {
  braid_chan_t *ch;
  braid_obj_t *h;
  int rc;
} closer_arg_t;

static void *closer_main(void *p) {
  closer_arg_t *a = p;
  a->rc = braid_chan_close(a->ch, msg_int_h(1, a->h));
  return NULL;
}

TEST(test_chan_close_race) {
  enum { NT = 4 };
  braid_obj_t *h = test_obj_new();
  for (int round = 0; round < 50; round++) {
    braid_chan_t *ch = chan_new(round % 3, BRAID_POLICY_BLOCK);
    closer_arg_t a[NT];
    pthread_t t[NT];
    for (int i = 0; i < NT; i++) {
      a[i] = (closer_arg_t){ch, h, 1};
      t[i] = test_spawn(closer_main, &a[i]);
    }
    int winners = 0;
    for (int i = 0; i < NT; i++) {
      test_join(t[i]);
      if (a[i].rc == 0) winners++;
      else ASSERT_EQ_ERR(a[i].rc, BRAID_ECLOSED);
    }
    ASSERT_EQ_INT(winners, 1);
    ASSERT_EQ_UINT(obj_rc(h), 2);          /* only the winner's err lives */
    braid_chan_release(ch);
    ASSERT_EQ_UINT(obj_rc(h), 1);
  }
  braid_obj_release(h);
}

/* ------------------------------------------------------------------------ */
/* Deadlines                                                                 */

TEST(test_chan_recv_deadline) {
  size_t caps[] = {0, 1, BRAID_UNBOUNDED};
  for (int c = 0; c < 3; c++) {
    braid_chan_t *ch = chan_new(caps[c], BRAID_POLICY_BLOCK);
    int64_t start = braid_now_ns();
    int64_t deadline = start + test_ms(50);
    braid_msg_t *out = (braid_msg_t *)(uintptr_t)1;
    ASSERT_EQ_ERR(braid_chan_recv_until(ch, &out, deadline), BRAID_ETIMEDOUT);
    int64_t end = braid_now_ns();
    ASSERT_NULL(out);
    ASSERT_GE_INT(end, deadline);          /* not before the deadline */
    ASSERT_LT_INT(end - start, test_ms(5000));
    /* The channel still works: the timed-out waiter is gone. */
    if (caps[c] > 0) {
      send_int(ch, 5);
      ASSERT_EQ_INT(try_recv_int(ch), 5);
    } else {
      braid_msg_t *m = msg_int(5);
      ASSERT_EQ_ERR(braid_chan_try_send(ch, m), BRAID_EAGAIN);
      braid_msg_release(m);
    }
    braid_chan_release(ch);
  }
}

TEST(test_chan_send_deadline) {
  for (size_t cap = 0; cap <= 1; cap++) {
    braid_chan_t *ch = chan_new(cap, BRAID_POLICY_BLOCK);
    if (cap) send_int(ch, 1);
    braid_msg_t *m = msg_int(2);
    int64_t start = braid_now_ns();
    int64_t deadline = start + test_ms(50);
    ASSERT_EQ_ERR(braid_chan_send_until(ch, m, deadline), BRAID_ETIMEDOUT);
    int64_t end = braid_now_ns();
    ASSERT_GE_INT(end, deadline);
    ASSERT_LT_INT(end - start, test_ms(5000));
    ASSERT_EQ_UINT(msg_rc(m), 1);
    ASSERT_EQ_UINT(braid_chan_len(ch), cap);
    if (cap) ASSERT_EQ_INT(try_recv_int(ch), 1);
    /* The timed-out sender's message is not delivered later. */
    braid_msg_t *out = (braid_msg_t *)(uintptr_t)1;
    ASSERT_EQ_ERR(braid_chan_try_recv(ch, &out), BRAID_EAGAIN);
    braid_msg_release(m);
    braid_chan_release(ch);
  }
}

/* A deadline at or before now means "try once". */
TEST(test_chan_deadline_past) {
  int64_t pasts[] = {0, -1, INT64_MIN, braid_now_ns() - test_ms(1000)};
  for (int p = 0; p < 4; p++) {
    int64_t past = pasts[p];
    braid_chan_t *ch = chan_new(1, BRAID_POLICY_BLOCK);
    braid_msg_t *out = (braid_msg_t *)(uintptr_t)1;
    ASSERT_EQ_ERR(braid_chan_recv_until(ch, &out, past), BRAID_ETIMEDOUT);
    ASSERT_NULL(out);
    braid_msg_t *m = msg_int(p);
    ASSERT_OK(braid_chan_send_until(ch, m, past));
    braid_msg_t *m2 = msg_int(p + 1);
    ASSERT_EQ_ERR(braid_chan_send_until(ch, m2, past), BRAID_ETIMEDOUT);
    ASSERT_EQ_UINT(msg_rc(m2), 1);
    ASSERT_OK(braid_chan_recv_until(ch, &out, past));
    ASSERT_EQ_INT(msg_take_int(out), p);
    braid_msg_release(m2);
    braid_chan_release(ch);
  }
}

/* A receiver with a deadline gets a value that comes before it. */
TEST(test_chan_deadline_value_in_time) {
  braid_chan_t *ch = chan_new(0, BRAID_POLICY_BLOCK);
  call_arg_t r = {.ch = ch, .deadline = test_after_ms(10000)};
  pthread_t t = test_spawn(one_recv_main, &r);
  send_int(ch, 77);
  test_join(t);
  ASSERT_OK(r.rc);
  ASSERT_EQ_INT(msg_take_int(r.msg), 77);
  braid_chan_release(ch);
}

/* Many short timeouts racing a slow sender: every value sent is received
 * exactly once, and a receive that timed out got nothing. */
typedef struct {
  braid_chan_t *ch;
  int64_t n;
} slow_sender_arg_t;

static void *slow_sender_main(void *p) {
  slow_sender_arg_t *a = p;
  for (int64_t i = 0; i < a->n; i++) {
    send_int(a->ch, i);
    if (i % 16 == 0) test_sleep_ms(1);
  }
  return NULL;
}

TEST(test_chan_timeout_race) {
  for (size_t cap = 0; cap <= 1; cap++) {
    enum { N = 400 };
    braid_chan_t *ch = chan_new(cap, BRAID_POLICY_BLOCK);
    slow_sender_arg_t a = {ch, N};
    pthread_t t = test_spawn(slow_sender_main, &a);
    int64_t next = 0;
    uint64_t rng = test_rand_init(2);
    while (next < N) {
      braid_msg_t *out = (braid_msg_t *)(uintptr_t)1;
      int rc = braid_chan_recv_until(ch, &out, braid_now_ns() + (int64_t)test_rand_below(&rng, 300000));
      if (rc == BRAID_ETIMEDOUT) {
        ASSERT_NULL(out);
        continue;
      }
      ASSERT_OK(rc);
      ASSERT_EQ_INT(msg_take_int(out), next);
      next++;
    }
    test_join(t);
    braid_msg_t *out = NULL;
    ASSERT_EQ_ERR(braid_chan_try_recv(ch, &out), BRAID_EAGAIN);
    braid_chan_release(ch);
  }
}

/* ------------------------------------------------------------------------ */
/* Counters                                                                  */

TEST(test_chan_stats_exact) {
  braid_chan_stats_t st;
  braid_chan_t *ch = chan_new(4, BRAID_POLICY_BLOCK);
  for (int i = 0; i < 3; i++) send_int(ch, i);
  (void)recv_int(ch);
  stats(ch, &st);
  ASSERT_EQ_UINT(st.len, 2);
  ASSERT_EQ_UINT(st.cap, 4);
  ASSERT_EQ_UINT(st.sent, 3);
  ASSERT_EQ_UINT(st.received, 1);
  ASSERT_EQ_UINT(st.dropped, 0);
  ASSERT(!st.closed);
  ASSERT_EQ_UINT(braid_chan_len(ch), 2);

  /* Failed operations count nothing. */
  send_int(ch, 3);
  send_int(ch, 4);                         /* full now */
  braid_msg_t *m = msg_int(5);
  ASSERT_EQ_ERR(braid_chan_try_send(ch, m), BRAID_EAGAIN);
  ASSERT_EQ_ERR(braid_chan_send_until(ch, m, test_after_ms(5)), BRAID_ETIMEDOUT);
  stats(ch, &st);
  ASSERT_EQ_UINT(st.len, 4);
  ASSERT_EQ_UINT(st.sent, 5);
  for (int i = 1; i <= 4; i++) ASSERT_EQ_INT(recv_int(ch), i);
  braid_msg_t *out = NULL;
  ASSERT_EQ_ERR(braid_chan_try_recv(ch, &out), BRAID_EAGAIN);
  ASSERT_EQ_ERR(braid_chan_recv_until(ch, &out, test_after_ms(5)), BRAID_ETIMEDOUT);
  stats(ch, &st);
  ASSERT_EQ_UINT(st.received, 5);
  ASSERT_EQ_UINT(st.len, 0);

  ASSERT_OK(braid_chan_close(ch, NULL));
  ASSERT_EQ_ERR(braid_chan_try_send(ch, m), BRAID_ECLOSED);
  ASSERT_EQ_ERR(braid_chan_try_recv(ch, &out), BRAID_ECLOSED);
  stats(ch, &st);
  ASSERT_EQ_UINT(st.sent, 5);
  ASSERT_EQ_UINT(st.received, 5);
  ASSERT_EQ_UINT(st.dropped, 0);
  ASSERT_EQ_UINT(st.len, 0);
  ASSERT_EQ_UINT(st.cap, 4);
  ASSERT(st.closed);
  braid_msg_release(m);
  braid_chan_release(ch);
}

/* ------------------------------------------------------------------------ */
/* Lock discipline                                                           */

/* STYLE.md: never free (or run other code) while holding a channel lock.
 * A value lost to the drop or slide policy may hold the last reference to
 * a handle whose destructor runs arbitrary code (a Lua-side object, a
 * future's unobserved-error reporter, ...), so the channel must release it
 * after unlocking.  The probe object's destructor checks, with trylock
 * from the same thread, whether the channel's lock is held. */
typedef struct {
  braid_obj_t p_base;
  braid_chan_t *p_chan;            /* whose lock must be free */
  int *p_state;                    /* 1: destroyed, lock free; 2: lock held */
} probe_obj_t;

static void probe_destroy(braid_obj_t *o) {
  probe_obj_t *p = (probe_obj_t *)o;
  pthread_mutex_t *mtx = &((braid_obj_t *)p->p_chan)->o_mtx;
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

static braid_msg_t *probe_msg(braid_chan_t *ch, int *state) {
  probe_obj_t *p = malloc(sizeof *p);
  ASSERT_NOT_NULL(p);
  braid_obj_init(&p->p_base, &probe_type);
  p->p_chan = ch;
  p->p_state = state;
  braid_msg_t *m = braid_msg_alloc(0, 1);
  ASSERT_NOT_NULL(m);
  braid_msg_set_handle(m, 0, &p->p_base);   /* the message's is the only ref */
  return m;
}

TEST(test_chan_policy_frees_outside_lock) {
  /* Drop: the new value is lost. */
  int state = 0;
  braid_chan_t *ch = chan_new(1, BRAID_POLICY_DROP);
  send_int(ch, 1);
  ASSERT_OK(braid_chan_try_send(ch, probe_msg(ch, &state)));
  ASSERT_EQ_INT(state, 1);                 /* 2: freed under the lock */
  braid_chan_release(ch);

  /* Slide: the oldest value is lost. */
  state = 0;
  ch = chan_new(1, BRAID_POLICY_SLIDE);
  ASSERT_OK(braid_chan_try_send(ch, probe_msg(ch, &state)));
  send_int(ch, 2);
  ASSERT_EQ_INT(state, 1);
  ASSERT_EQ_INT(try_recv_int(ch), 2);
  braid_chan_release(ch);

  /* A second close's error. */
  state = 0;
  ch = chan_new(1, BRAID_POLICY_BLOCK);
  ASSERT_OK(braid_chan_close(ch, NULL));
  ASSERT_EQ_ERR(braid_chan_close(ch, probe_msg(ch, &state)), BRAID_ECLOSED);
  ASSERT_EQ_INT(state, 1);
  braid_chan_release(ch);
}

/* braid_chan_recv_arm / braid_chan_send_arm (the bindings' one-lock
 * waits): done at once with the waiter left alone, or queued on the
 * waiter, which a partner on another thread then fires. */
TEST(test_chan_arm_one_lock) {
  braid_chan_t *ch = chan_new(2, BRAID_POLICY_BLOCK);
  braid_waiter_t *w = braid_thread_waiter();
  braid_case_t c;
  braid_selres_t r;
  braid_msg_t *m = NULL;

  /* A buffered value: taken at once. */
  memset(&c, 0, sizeof c);
  c.c_op = BRAID_OP_RECV;
  c.c_obj = ch;
  send_int(ch, 7);
  ASSERT_OK(braid_chan_recv_arm(ch, &m, &c, w));
  ASSERT_EQ_INT(msg_take_int(m), 7);
  ASSERT(!c.c_node.n_queued);

  /* Empty: queued; a send from another thread hands its value over. */
  ASSERT_EQ_ERR(braid_chan_recv_arm(ch, &m, &c, w), BRAID_EAGAIN);
  ASSERT(m == NULL);
  ASSERT(c.c_node.n_queued);
  sender_arg_t sa = { ch, 8, 1 };
  pthread_t t = test_spawn(sender_main, &sa);
  ASSERT_OK(braid_waiter_park_until(w, BRAID_FOREVER));
  ASSERT_OK(braid_select_disarm(&c, 1, w, &r));
  ASSERT_EQ_INT(r.s_index, 0);
  ASSERT_EQ_INT(r.s_err, 0);
  ASSERT_EQ_INT(msg_take_int(r.s_msg), 8);
  test_join(t);

  /* Full: the sender is queued; a receive moves its value into the
   * buffer, in order, and fires it. */
  send_int(ch, 1);
  send_int(ch, 2);
  memset(&c, 0, sizeof c);
  c.c_op = BRAID_OP_SEND;
  c.c_obj = ch;
  c.c_msg = msg_int(3);
  ASSERT_EQ_ERR(braid_chan_send_arm(ch, c.c_msg, &c, w), BRAID_EAGAIN);
  ASSERT_EQ_INT(try_recv_int(ch), 1);
  ASSERT_OK(braid_waiter_park_until(w, BRAID_FOREVER));
  ASSERT_OK(braid_select_disarm(&c, 1, w, &r));
  ASSERT_EQ_INT(r.s_index, 0);
  ASSERT_EQ_INT(r.s_err, 0);
  ASSERT_EQ_INT(try_recv_int(ch), 2);
  ASSERT_EQ_INT(try_recv_int(ch), 3);

  /* Room: sent at once, the waiter untouched (NULL: never armed). */
  ASSERT_OK(braid_chan_send_arm(ch, msg_int(4), &c, NULL));
  ASSERT_EQ_INT(try_recv_int(ch), 4);

  /* Closed: the message stays the caller's. */
  ASSERT_OK(braid_chan_close(ch, NULL));
  braid_msg_t *late = msg_int(9);
  ASSERT_EQ_ERR(braid_chan_send_arm(ch, late, &c, w), BRAID_ECLOSED);
  ASSERT_EQ_UINT(msg_rc(late), 1);
  braid_msg_release(late);
  ASSERT_EQ_ERR(braid_chan_recv_arm(ch, &m, &c, w), BRAID_ECLOSED);
  ASSERT(m == NULL);
  braid_chan_release(ch);
}

TEST_LIST {
  RUN(test_chan_arm_one_lock);
  RUN(test_chan_new);
  RUN(test_chan_new_bad_policy);
  RUN(test_chan_as_message_handle);
  RUN(test_chan_rendezvous_handoff);
  RUN(test_chan_rendezvous_handoff_nospin);
  RUN(test_chan_rendezvous_needs_partner);
  RUN(test_chan_try_with_blocked_partner);
  RUN(test_chan_buffered_fifo);
  RUN(test_chan_ring_capacities);
  RUN(test_chan_buffered_blocking_sender);
  RUN(test_chan_mpmc);
  RUN(test_chan_unbounded);
  RUN(test_chan_drop_policy);
  RUN(test_chan_slide_policy);
  RUN(test_chan_policy_with_waiting_receiver);
  RUN(test_chan_close_delivers_buffered);
  RUN(test_chan_close_null_error);
  RUN(test_chan_release_full_closed);
  RUN(test_chan_close_wakes_senders);
  RUN(test_chan_close_wakes_receivers);
  RUN(test_chan_close_race);
  RUN(test_chan_recv_deadline);
  RUN(test_chan_send_deadline);
  RUN(test_chan_deadline_past);
  RUN(test_chan_deadline_value_in_time);
  RUN(test_chan_timeout_race);
  RUN(test_chan_stats_exact);
  RUN(test_chan_policy_frees_outside_lock);
}
