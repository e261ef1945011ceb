/* stress_chan.c -- randomized, time-bounded runs of channels, select and
 * futures from many threads, then exact accounting.
 *
 * Design notes
 *
 * Channels: producers, consumers and selecting threads hammer a handful of
 * channels of mixed capacities (0, 1, 3, 16, unbounded: rendezvous, the
 * lock-free ring, odd and even, and the locked ring) with every kind of
 * operation (blocking with short deadlines, try, select, select_try).
 * Every value carries a unique id; the thread that made it records whether
 * its send succeeded, receivers count what they get.  Each round ends by
 * closing the channels while the threads are still at work, then joining,
 * draining and checking: every value sent successfully was received exactly
 * once, no value that failed to send was received, the channels' counters
 * agree, and no message is alive (every message holds a reference to one
 * tracker object, whose refcount therefore counts live messages).
 *
 * Futures: settlers, cancellers, waiters and a producer that honours
 * cancel requests race on rounds of futures; then each future was settled
 * exactly once, every waiter saw the winner's result, and nothing leaks.
 *
 * Runs for about BRAID_STRESS_SECONDS (default 2) in total, whatever the
 * build (time-based loops, so ThreadSanitizer only makes it do less).
 */
#include <semaphore.h>

#include "../core/test.h"
#include "select.h"

/* ------------------------------------------------------------------------ */
/* Channel stress                                                            */

enum {
  NCHAN = 5,
  NPROD = 8,
  NCONS = 8,
  NSEL = 3,
  NSLOT = NPROD + NSEL,    /* threads that make values */
  SLOT_BITS = 20,
  MAXPER = 1 << SLOT_BITS, /* values per making thread, whole run */
};

static const size_t chan_caps[NCHAN] = {0, 1, 3, 16, BRAID_UNBOUNDED};

typedef struct {
  braid_chan_t *chans[NCHAN];
  braid_obj_t *tracker;          /* held by every message */
  atomic_int stop;               /* set by main: leave the loop */
  uint8_t *sent_ok;              /* [NSLOT * MAXPER], written by the maker */
  uint8_t *recv_count;           /* [NSLOT * MAXPER], atomic increments */
  int64_t next_k[NSLOT];         /* per maker: next sequence number */
  atomic_llong recv_total;       /* values received, all threads */
  atomic_llong ops;              /* operations done, for the report */
  atomic_llong closed_seen;      /* ECLOSED results, for the report */
} cstress_t;

typedef struct {
  cstress_t *s;
  int slot;                      /* maker slot, or -1 for a consumer */
  uint64_t rng;
} cthread_t;

static int64_t short_deadline(uint64_t *rng) {
  /* 0 (try once) a quarter of the time, else up to 2 ms. */
  if (test_rand_below(rng, 4) == 0) return 0;
  return braid_now_ns() + (int64_t)test_rand_below(rng, 2000000);
}

static braid_chan_t *pick(cstress_t *s, uint64_t *rng) {
  return s->chans[test_rand_below(rng, NCHAN)];
}

/* A new value from this maker, or NULL when its id space is used up. */
static braid_msg_t *make_value(cthread_t *t, int64_t *id) {
  cstress_t *s = t->s;
  int64_t k = s->next_k[t->slot];
  if (k >= MAXPER) return NULL;
  s->next_k[t->slot] = k + 1;
  *id = ((int64_t)t->slot << SLOT_BITS) | k;
  return msg_int_h(*id, s->tracker);
}

static void note_sent(cstress_t *s, int64_t id) { s->sent_ok[id] = 1; }

static void note_received(cstress_t *s, braid_msg_t *m) {
  int64_t id = msg_get_int(m);
  ASSERT(id >= 0 && id < (int64_t)NSLOT * MAXPER);
  __atomic_fetch_add(&s->recv_count[id], 1, __ATOMIC_RELAXED);
  atomic_fetch_add_explicit(&s->recv_total, 1, memory_order_relaxed);
  ASSERT_EQ_UINT(m->m_nhandles, 1);
  ASSERT_EQ_PTR(m->m_handles[0], s->tracker);
  braid_msg_release(m);
}

/* A close error: -1 with the tracker. */
static void note_closed(cstress_t *s, braid_msg_t *err) {
  if (err != NULL) ASSERT_EQ_INT(msg_get_int(err), -1);
  braid_msg_release(err);
  atomic_fetch_add_explicit(&s->closed_seen, 1, memory_order_relaxed);
}

/* A send that failed: the message must still be ours alone. */
static void unsent(braid_msg_t *m, int rc) {
  ASSERT(rc == BRAID_ETIMEDOUT || rc == BRAID_EAGAIN || rc == BRAID_ECLOSED);
  ASSERT_EQ_UINT(msg_rc(m), 1);
  braid_msg_release(m);
}

static void *producer_main(void *p) {
  cthread_t *t = p;
  cstress_t *s = t->s;
  while (!atomic_load_explicit(&s->stop, memory_order_acquire)) {
    int64_t id;
    braid_msg_t *m = make_value(t, &id);
    if (m == NULL) {
      test_sleep_ms(1);
      continue;
    }
    int rc;
    switch (test_rand_below(&t->rng, 4)) {
    case 0:
      rc = braid_chan_send_until(pick(s, &t->rng), m, short_deadline(&t->rng));
      break;
    case 1:
      rc = braid_chan_try_send(pick(s, &t->rng), m);
      break;
    default: {
      /* The same message offered on 1-3 channels: at most one takes it. */
      braid_case_t cs[3];
      int n = 1 + (int)test_rand_below(&t->rng, 3);
      for (int i = 0; i < n; i++) {
        memset(&cs[i], 0, sizeof cs[i]);
        cs[i].c_op = BRAID_OP_SEND;
        cs[i].c_obj = pick(s, &t->rng);
        cs[i].c_msg = m;
      }
      braid_selres_t r;
      if (test_rand_below(&t->rng, 2)) rc = braid_select_try(cs, n, &r);
      else rc = braid_select_until(cs, n, short_deadline(&t->rng), &r);
      if (rc == 0) {
        ASSERT(r.s_index >= 0 && r.s_index < n);
        ASSERT_NULL(r.s_msg);
        rc = r.s_err;
      }
      break;
    }
    }
    if (rc == 0) note_sent(s, id);
    else {
      if (rc == BRAID_ECLOSED) atomic_fetch_add_explicit(&s->closed_seen, 1, memory_order_relaxed);
      unsent(m, rc);
    }
    atomic_fetch_add_explicit(&s->ops, 1, memory_order_relaxed);
  }
  return NULL;
}

static void *consumer_main(void *p) {
  cthread_t *t = p;
  cstress_t *s = t->s;
  while (!atomic_load_explicit(&s->stop, memory_order_acquire)) {
    braid_msg_t *m = NULL;
    int rc;
    switch (test_rand_below(&t->rng, 4)) {
    case 0:
      rc = braid_chan_recv_until(pick(s, &t->rng), &m, short_deadline(&t->rng));
      break;
    case 1:
      rc = braid_chan_try_recv(pick(s, &t->rng), &m);
      break;
    default: {
      braid_case_t cs[4];
      int n = 1 + (int)test_rand_below(&t->rng, 4);
      for (int i = 0; i < n; i++) {
        memset(&cs[i], 0, sizeof cs[i]);
        cs[i].c_op = BRAID_OP_RECV;
        cs[i].c_obj = pick(s, &t->rng);
      }
      braid_selres_t r;
      if (test_rand_below(&t->rng, 2)) rc = braid_select_try(cs, n, &r);
      else rc = braid_select_until(cs, n, short_deadline(&t->rng), &r);
      if (rc == 0) {
        ASSERT(r.s_index >= 0 && r.s_index < n);
        rc = r.s_err;
        m = r.s_msg;
      } else {
        ASSERT_NULL(r.s_msg);
      }
      break;
    }
    }
    if (rc == 0) note_received(s, m);
    else if (rc == BRAID_ECLOSED) note_closed(s, m);
    else {
      ASSERT(rc == BRAID_ETIMEDOUT || rc == BRAID_EAGAIN);
      ASSERT_NULL(m);
    }
    atomic_fetch_add_explicit(&s->ops, 1, memory_order_relaxed);
  }
  return NULL;
}

/* Selects mixing sends and receives, sometimes on the same channel. */
static void *selector_main(void *p) {
  cthread_t *t = p;
  cstress_t *s = t->s;
  while (!atomic_load_explicit(&s->stop, memory_order_acquire)) {
    braid_case_t cs[4];
    int64_t ids[4];
    int n = 2 + (int)test_rand_below(&t->rng, 3);
    for (int i = 0; i < n; i++) {
      memset(&cs[i], 0, sizeof cs[i]);
      cs[i].c_obj = pick(s, &t->rng);
      cs[i].c_op = BRAID_OP_RECV;
      if (test_rand_below(&t->rng, 2)) {
        braid_msg_t *m = make_value(t, &ids[i]);
        if (m) {
          cs[i].c_op = BRAID_OP_SEND;
          cs[i].c_msg = m;
        }
      }
    }
    braid_selres_t r;
    int rc;
    if (test_rand_below(&t->rng, 3) == 0) rc = braid_select_try(cs, n, &r);
    else rc = braid_select_until(cs, n, short_deadline(&t->rng), &r);
    int fired = -1;
    if (rc == 0) {
      fired = r.s_index;
      ASSERT(fired >= 0 && fired < n);
      if (cs[fired].c_op == BRAID_OP_RECV) {
        if (r.s_err == 0) note_received(s, r.s_msg);
        else {
          ASSERT_EQ_ERR(r.s_err, BRAID_ECLOSED);
          note_closed(s, r.s_msg);
        }
      } else {
        ASSERT_NULL(r.s_msg);
        if (r.s_err == 0) note_sent(s, ids[fired]);
        else {
          ASSERT_EQ_ERR(r.s_err, BRAID_ECLOSED);
          fired = -1;                      /* the message is still ours */
        }
      }
    } else {
      ASSERT(rc == BRAID_ETIMEDOUT || rc == BRAID_EAGAIN);
    }
    /* Every send case that did not deliver still owns its message. */
    for (int i = 0; i < n; i++)
      if (cs[i].c_op == BRAID_OP_SEND && i != fired) unsent(cs[i].c_msg, BRAID_EAGAIN);
    atomic_fetch_add_explicit(&s->ops, 1, memory_order_relaxed);
  }
  return NULL;
}

TEST(stress_chan_mixed) {
  double seconds = test_env_seconds("BRAID_STRESS_SECONDS", 2.0) * 0.65;
  int rounds = seconds < 0.5 ? 1 : (int)(seconds / 0.25);
  int64_t round_ns = (int64_t)(seconds * 1e9) / rounds;

  cstress_t *s = calloc(1, sizeof *s);
  ASSERT_NOT_NULL(s);
  s->sent_ok = calloc((size_t)NSLOT * MAXPER, 1);
  s->recv_count = calloc((size_t)NSLOT * MAXPER, 1);
  ASSERT(s->sent_ok && s->recv_count);
  s->tracker = test_obj_new();
  uint64_t total_sent_stat = 0, total_recv_stat = 0;

  for (int round = 0; round < rounds; round++) {
    for (int c = 0; c < NCHAN; c++) {
      s->chans[c] = braid_chan_new(chan_caps[c], BRAID_POLICY_BLOCK);
      ASSERT_NOT_NULL(s->chans[c]);
    }
    atomic_store(&s->stop, 0);
    enum { NT = NPROD + NCONS + NSEL };
    cthread_t ct[NT];
    pthread_t th[NT];
    for (int i = 0; i < NT; i++) {
      ct[i].s = s;
      ct[i].rng = test_rand_init((uint64_t)(round * NT + i));
      if (i < NPROD) ct[i].slot = i;
      else if (i < NPROD + NCONS) ct[i].slot = -1;
      else ct[i].slot = NPROD + (i - NPROD - NCONS);
      void *(*fn)(void *) = i < NPROD ? producer_main
                            : i < NPROD + NCONS ? consumer_main : selector_main;
      th[i] = test_spawn(fn, &ct[i]);
    }
    test_sleep_ms(round_ns / 1000000);
    /* Close while everyone is still at it: blocked senders get ECLOSED
     * and keep their messages, receivers drain and then see ECLOSED. */
    for (int c = 0; c < NCHAN; c++)
      ASSERT_OK(braid_chan_close(s->chans[c], msg_int_h(-1, s->tracker)));
    test_sleep_ms(5);
    atomic_store_explicit(&s->stop, 1, memory_order_release);
    for (int i = 0; i < NT; i++) test_join(th[i]);

    for (int c = 0; c < NCHAN; c++) {
      braid_msg_t *m = NULL;
      int rc;
      while ((rc = braid_chan_try_recv(s->chans[c], &m)) == 0) note_received(s, m);
      ASSERT_EQ_ERR(rc, BRAID_ECLOSED);
      note_closed(s, m);
      braid_chan_stats_t st;
      braid_chan_stats(s->chans[c], &st);
      ASSERT(st.closed);
      ASSERT_EQ_UINT(st.len, 0);
      ASSERT_EQ_UINT(st.dropped, 0);
      ASSERT_EQ_UINT(st.sent, st.received);
      total_sent_stat += st.sent;
      total_recv_stat += st.received;
      braid_chan_release(s->chans[c]);
    }
  }

  /* Exactly once: a value was received iff its send succeeded. */
  uint64_t sent = 0, received = 0;
  for (int slot = 0; slot < NSLOT; slot++) {
    for (int64_t k = 0; k < s->next_k[slot]; k++) {
      int64_t id = ((int64_t)slot << SLOT_BITS) | k;
      if (s->sent_ok[id] != s->recv_count[id]) {
        fprintf(stderr, "value slot %d seq %d: sent_ok %d, received %d times\n",
                slot, (int)k, s->sent_ok[id], s->recv_count[id]);
        ASSERT_EQ_INT(s->recv_count[id], s->sent_ok[id]);
      }
      sent += s->sent_ok[id];
      received += s->recv_count[id];
    }
  }
  ASSERT_EQ_UINT(received, sent);
  /* Nothing was received that was never made. */
  ASSERT_EQ_UINT(atomic_load(&s->recv_total), received);
  ASSERT_EQ_UINT(total_sent_stat, sent);
  ASSERT_EQ_UINT(total_recv_stat, received);
  ASSERT_GT_INT(sent, 0);

  /* No message alive: only our own reference to the tracker is left. */
  ASSERT_EQ_UINT(obj_rc(s->tracker), 1);
  braid_obj_release(s->tracker);
  fprintf(stderr, "# stress_chan_mixed: %d rounds, %llu ops, %llu values "
          "delivered, %llu ECLOSED results\n", rounds,
          (unsigned long long)atomic_load(&s->ops), (unsigned long long)sent,
          (unsigned long long)atomic_load(&s->closed_seen));
  free(s->sent_ok);
  free(s->recv_count);
  free(s);
}

/* ------------------------------------------------------------------------ */
/* Future stress                                                             */

enum {
  NFUT = 64,
  NSETTLER = 4,
  NFWAITER = 6,
  NCANCELLER = 2,
  KIND_RESOLVE = 1,
  KIND_REJECT = 2,
  KIND_CANCELLED = 3,
  CANCEL_CODE = 999,       /* payload of a cancel() that settled */
};

typedef struct {
  braid_future_t *fs[NFUT];
  bool hooked[NFUT];             /* immutable during a round */
  atomic_int settled_ok[NFUT];   /* successful settling calls */
  atomic_llong winner[NFUT];     /* the winner's payload */
  atomic_llong observed[NFUT];   /* the first payload a waiter saw */
  atomic_int hook_calls[NFUT];
  atomic_int cancels_ok[NFUT];   /* cancel() calls that returned 0 */
  braid_obj_t *tracker;
  atomic_int stop;
  atomic_llong waits_done;
} fstress_t;

typedef struct {
  fstress_t *s;
  int id;
  uint64_t rng;
} fthread_t;

static int64_t payload(int f, int tid, int kind) { return (int64_t)(f + 1) * 1000 + tid * 10 + kind; }

static void fhook(braid_future_t *f, void *arg) {
  (void)f;                       /* must not touch the future: lock held */
  atomic_fetch_add((atomic_int *)arg, 1);
}

/* Checks one observed result of future i against what waiters saw before,
 * and against the future's final state. */
static void observe(fstress_t *s, int i, int err, braid_msg_t *m) {
  int64_t p;
  int kind;
  if (m == NULL) {
    ASSERT_EQ_ERR(err, BRAID_ECANCELED);
    p = (int64_t)(i + 1) * 1000 + CANCEL_CODE;
  } else {
    p = msg_get_int(m);
    ASSERT_EQ_INT(p / 1000, i + 1);
    kind = (int)(p % 10);
    ASSERT_EQ_ERR(err, kind == KIND_RESOLVE ? 0 : kind == KIND_REJECT ? BRAID_EREJECTED
                                                                       : BRAID_ECANCELED);
    braid_msg_release(m);
  }
  long long expect = 0;
  if (!atomic_compare_exchange_strong(&s->observed[i], &expect, p))
    ASSERT_EQ_INT(expect, p);    /* every waiter sees the same result */
  ASSERT(braid_future_state(s->fs[i]) != BRAID_FUTURE_PENDING);
  atomic_fetch_add_explicit(&s->waits_done, 1, memory_order_relaxed);
}

static void won(fstress_t *s, int i, int64_t p) {
  atomic_fetch_add(&s->settled_ok[i], 1);
  atomic_store(&s->winner[i], p);
}

static void *settler_main(void *arg) {
  fthread_t *t = arg;
  fstress_t *s = t->s;
  while (!atomic_load_explicit(&s->stop, memory_order_acquire)) {
    int i = (int)test_rand_below(&t->rng, NFUT);
    int kind = 1 + (int)test_rand_below(&t->rng, 3);
    int64_t p = payload(i, t->id, kind);
    braid_msg_t *m = msg_int_h(p, s->tracker);
    braid_fstate_t st = kind == KIND_RESOLVE ? BRAID_FUTURE_RESOLVED
                        : kind == KIND_REJECT ? BRAID_FUTURE_REJECTED
                                              : BRAID_FUTURE_CANCELLED;
    int rc = braid_future_settle(s->fs[i], st, m);
    if (rc == 0) won(s, i, p);
    else ASSERT_EQ_ERR(rc, BRAID_ESETTLED);
    /* Slow enough that futures stay pending for much of a round, so that
     * waiters block and cancels find them pending. */
    test_sleep_us((int64_t)test_rand_below(&t->rng, 4000));
  }
  return NULL;
}

static void *canceller_main(void *arg) {
  fthread_t *t = arg;
  fstress_t *s = t->s;
  while (!atomic_load_explicit(&s->stop, memory_order_acquire)) {
    int i = (int)test_rand_below(&t->rng, NFUT);
    int rc = braid_future_cancel(s->fs[i]);
    if (rc == 0) {
      atomic_fetch_add(&s->cancels_ok[i], 1);
      if (!s->hooked[i]) won(s, i, (int64_t)(i + 1) * 1000 + CANCEL_CODE);
    } else {
      ASSERT_EQ_ERR(rc, BRAID_ESETTLED);
    }
    test_sleep_us((int64_t)test_rand_below(&t->rng, 3000));
  }
  return NULL;
}

/* Honours cancel requests on hooked futures, as the runtime would. */
static void *fproducer_main(void *arg) {
  fthread_t *t = arg;
  fstress_t *s = t->s;
  while (!atomic_load_explicit(&s->stop, memory_order_acquire)) {
    for (int i = 0; i < NFUT; i++) {
      if (!s->hooked[i] || !braid_future_cancel_requested(s->fs[i])) continue;
      int64_t p = payload(i, t->id, KIND_CANCELLED);
      int rc = braid_future_settle(s->fs[i], BRAID_FUTURE_CANCELLED, msg_int_h(p, s->tracker));
      if (rc == 0) won(s, i, p);
      else ASSERT_EQ_ERR(rc, BRAID_ESETTLED);
    }
    test_sleep_us(200);
  }
  return NULL;
}

static void *fwaiter_main(void *arg) {
  fthread_t *t = arg;
  fstress_t *s = t->s;
  while (!atomic_load_explicit(&s->stop, memory_order_acquire)) {
    int64_t deadline = short_deadline(&t->rng);
    if (test_rand_below(&t->rng, 2)) {
      int i = (int)test_rand_below(&t->rng, NFUT);
      braid_msg_t *m = (braid_msg_t *)(uintptr_t)1;
      int rc = test_rand_below(&t->rng, 4) == 0 ? braid_future_peek(s->fs[i], &m)
                                                 : braid_future_wait_until(s->fs[i], &m, deadline);
      if (rc == BRAID_ETIMEDOUT || rc == BRAID_EAGAIN) {
        if (rc == BRAID_ETIMEDOUT) ASSERT_NULL(m);
        continue;
      }
      observe(s, i, rc, m);
    } else {
      braid_case_t cs[3];
      int idx[3];
      int n = 1 + (int)test_rand_below(&t->rng, 3);
      for (int k = 0; k < n; k++) {
        idx[k] = (int)test_rand_below(&t->rng, NFUT);
        memset(&cs[k], 0, sizeof cs[k]);
        cs[k].c_op = BRAID_OP_AWAIT;
        cs[k].c_obj = s->fs[idx[k]];
      }
      braid_selres_t r;
      int rc = braid_select_until(cs, n, deadline, &r);
      if (rc == BRAID_ETIMEDOUT) {
        ASSERT_EQ_INT(r.s_index, BRAID_W_TIMEOUT);
        continue;
      }
      ASSERT_OK(rc);
      ASSERT(r.s_index >= 0 && r.s_index < n);
      observe(s, idx[r.s_index], r.s_err, r.s_msg);
    }
  }
  return NULL;
}

TEST(stress_future_mixed) {
  double seconds = test_env_seconds("BRAID_STRESS_SECONDS", 2.0) * 0.35;
  int rounds = seconds < 0.2 ? 1 : (int)(seconds / 0.1);
  int64_t round_ms = (int64_t)(seconds * 1000) / rounds;
  if (round_ms < 1) round_ms = 1;
  fstress_t *s = calloc(1, sizeof *s);
  ASSERT_NOT_NULL(s);
  s->tracker = test_obj_new();
  uint64_t rng = test_rand_init(4242);
  long long waits = 0, hook_total = 0;

  for (int round = 0; round < rounds; round++) {
    for (int i = 0; i < NFUT; i++) {
      s->fs[i] = braid_future_new();
      ASSERT_NOT_NULL(s->fs[i]);
      s->hooked[i] = test_rand_below(&rng, 2);
      atomic_store(&s->settled_ok[i], 0);
      atomic_store(&s->winner[i], 0);
      atomic_store(&s->observed[i], 0);
      atomic_store(&s->hook_calls[i], 0);
      atomic_store(&s->cancels_ok[i], 0);
      if (s->hooked[i]) braid_future_set_cancel_hook(s->fs[i], fhook, &s->hook_calls[i]);
    }
    atomic_store(&s->stop, 0);
    enum { NT = NSETTLER + NFWAITER + NCANCELLER + 1 };
    fthread_t ft[NT];
    pthread_t th[NT];
    for (int k = 0; k < NT; k++) {
      ft[k] = (fthread_t){s, k, test_rand_init((uint64_t)(1000 + round * NT + k))};
      void *(*fn)(void *) = k < NSETTLER ? settler_main
                            : k < NSETTLER + NFWAITER ? fwaiter_main
                            : k < NSETTLER + NFWAITER + NCANCELLER ? canceller_main
                                                                   : fproducer_main;
      th[k] = test_spawn(fn, &ft[k]);
    }
    test_sleep_ms(round_ms);
    atomic_store_explicit(&s->stop, 1, memory_order_release);
    for (int k = 0; k < NT; k++) test_join(th[k]);

    for (int i = 0; i < NFUT; i++) {
      braid_future_t *f = s->fs[i];
      /* Settle what is left, so that every future has one result. */
      int64_t p = payload(i, 9, KIND_RESOLVE);
      int rc = braid_future_resolve(f, msg_int_h(p, s->tracker));
      if (rc == 0) won(s, i, p);
      else ASSERT_EQ_ERR(rc, BRAID_ESETTLED);
      ASSERT_EQ_INT(atomic_load(&s->settled_ok[i]), 1);

      /* The result is the winner's, and waiters saw that one. */
      braid_msg_t *m = (braid_msg_t *)(uintptr_t)1;
      rc = braid_future_peek(f, &m);
      int64_t got = m ? msg_get_int(m) : (int64_t)(i + 1) * 1000 + CANCEL_CODE;
      braid_msg_release(m);
      ASSERT_EQ_INT(got, atomic_load(&s->winner[i]));
      long long seen = atomic_load(&s->observed[i]);
      if (seen) ASSERT_EQ_INT(seen, got);
      int kind = (int)(got % 10);
      braid_fstate_t st = braid_future_state(f);
      if (got % 1000 == CANCEL_CODE) ASSERT_EQ_INT(st, BRAID_FUTURE_CANCELLED);
      else if (kind == KIND_RESOLVE) ASSERT_EQ_INT(st, BRAID_FUTURE_RESOLVED);
      else if (kind == KIND_REJECT) ASSERT_EQ_INT(st, BRAID_FUTURE_REJECTED);
      else ASSERT_EQ_INT(st, BRAID_FUTURE_CANCELLED);

      /* Hooks: called only for requests made while pending with a hook. */
      int hooks = atomic_load(&s->hook_calls[i]), cancels = atomic_load(&s->cancels_ok[i]);
      if (s->hooked[i]) {
        ASSERT_LE_INT(hooks, cancels);
        ASSERT_EQ_INT(hooks > 0, cancels > 0);
        ASSERT_EQ_INT(braid_future_cancel_requested(f), cancels > 0);
      } else {
        ASSERT_EQ_INT(hooks, 0);
        ASSERT_LE_INT(cancels, 1);
      }
      hook_total += hooks;
      braid_future_release(f);
    }
    waits += atomic_load(&s->waits_done);
    atomic_store(&s->waits_done, 0);
  }
  ASSERT_EQ_UINT(obj_rc(s->tracker), 1);   /* no message alive */
  braid_obj_release(s->tracker);
  fprintf(stderr, "# stress_future_mixed: %d rounds, %lld results seen, %lld hook calls\n",
          rounds, waits, hook_total);
  free(s);
}

TEST_LIST {
  RUN(stress_chan_mixed);
  RUN(stress_future_mixed);
}
