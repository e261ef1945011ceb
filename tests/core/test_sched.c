/* test_sched.c -- the scheduler (sched.h, sysmon.c) and the job pool
 * (jobpool.h) with fake units: no lost wake-ups, one thread per unit at a
 * time, spreading of work, preemption requests, hand-off of a thread stuck
 * in "C", timers and I/O served by the idle poll, shutdown with units in
 * every state, and the job pool's growth to a burst. */
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

#include "jobpool.h"
#include "sched.h"
#include "test.h"
#include "timer.h"

/* A fake unit: a count of pending work items, each of which takes
 * work_us of CPU (or, for a "stuck" unit, sleeps in a blocking call). */
typedef struct fake {
  braid_unit_t f_unit;
  _Atomic int f_pending;      /* items to do */
  _Atomic int f_done;         /* items done */
  _Atomic int f_inside;       /* threads inside run (must stay <= 1) */
  _Atomic int f_max_inside;
  int f_work_us;              /* CPU per item */
  int f_block_ms;             /* sleep (no progress) per item: "in C" */
  _Atomic bool f_spin_until_preempt;  /* first item spins until preempt is called */
  _Atomic bool f_preempted;
  _Atomic bool f_forever;     /* spin until f_release */
  _Atomic bool f_release;
  braid_sthread_t *_Atomic f_thread;  /* last thread that ran it */
  _Atomic int64_t f_finished_ns;
  struct fake *f_spawn_into;  /* its item makes these ready (from a worker) */
  int f_nspawn;
} fake_t;

typedef struct world {
  braid_sched_t *w_s;
  _Atomic int w_threads_seen;
  braid_sthread_t *_Atomic w_seen[8];
  int w_epfd, w_evfd, w_pipe[2];
  fake_t *w_io_unit;          /* made ready by the poll when w_pipe[0] is readable */
  _Atomic int w_polls;
} world_t;

static void note_thread(world_t *w) {
  braid_sthread_t *me = braid_sched_self();
  int n = atomic_load(&w->w_threads_seen);
  for (int i = 0; i < n; i++)
    if (atomic_load(&w->w_seen[i]) == me) return;
  if (n < 8 && atomic_compare_exchange_strong(&w->w_threads_seen, &n, n + 1))
    atomic_store(&w->w_seen[n], me);
}

static void burn_us(int us) {
  int64_t until = braid_now_ns() + (int64_t)us * 1000;
  while (braid_now_ns() < until) {
  }
}

static bool fake_run(void *ctx, braid_unit_t *u, int64_t slice_end) {
  world_t *w = ctx;
  fake_t *f = u->u_data;
  int in = atomic_fetch_add(&f->f_inside, 1) + 1;
  int mx = atomic_load(&f->f_max_inside);
  while (in > mx && !atomic_compare_exchange_weak(&f->f_max_inside, &mx, in)) {
  }
  atomic_store(&f->f_thread, braid_sched_self());
  note_thread(w);
  bool more = false;
  for (;;) {
    int p = atomic_load(&f->f_pending);
    if (p == 0) break;
    if (!atomic_compare_exchange_strong(&f->f_pending, &p, p - 1)) continue;
    braid_sched_progress();
    for (int i = 0; i < f->f_nspawn; i++) {
      atomic_fetch_add(&f->f_spawn_into[i].f_pending, 1);
      braid_sched_ready(w->w_s, &f->f_spawn_into[i].f_unit);
    }
    if (atomic_load(&f->f_forever)) {
      while (!atomic_load(&f->f_release)) usleep(1000);
    } else if (atomic_load(&f->f_spin_until_preempt)) {
      int64_t give_up = braid_now_ns() + 10 * 1000000000LL;
      while (!atomic_load(&f->f_preempted) && braid_now_ns() < give_up) {
      }
      atomic_store(&f->f_spin_until_preempt, false);
    } else if (f->f_block_ms) {
      usleep((useconds_t)f->f_block_ms * 1000);   /* no progress: looks stuck in C */
    } else {
      burn_us(f->f_work_us);
    }
    atomic_fetch_add(&f->f_done, 1);
    atomic_store(&f->f_finished_ns, braid_now_ns());
    if (braid_sched_waiting(w->w_s) && braid_now_ns() >= slice_end) {
      more = atomic_load(&f->f_pending) > 0;
      break;
    }
  }
  atomic_fetch_sub(&f->f_inside, 1);
  return more;
}

static void fake_preempt(void *ctx, braid_unit_t *u) {
  fake_t *f = u->u_data;
  (void)ctx;
  atomic_store(&f->f_preempted, true);
}

static void fake_init(fake_t *f, int id) {
  memset(f, 0, sizeof *f);
  braid_unit_init(&f->f_unit, id, f);
}

static braid_sched_t *sched_new(world_t *w, int workers, braid_timerq_t *timers, bool poll);

static void give(world_t *w, fake_t *f, int n) {
  atomic_fetch_add(&f->f_pending, n);
  braid_sched_ready(w->w_s, &f->f_unit);
}

static void wait_done(fake_t *f, int n, int secs) {
  int64_t until = braid_now_ns() + (int64_t)secs * 1000000000LL;
  while (atomic_load(&f->f_done) < n && braid_now_ns() < until) usleep(200);
  ASSERT_EQ_INT(atomic_load(&f->f_done), n);
}

/* ------------------------------------------------------------------------ */
/* the idle poll: an epoll set with an eventfd and a pipe */

static void fake_poll(void *ctx, int64_t deadline) {
  world_t *w = ctx;
  atomic_fetch_add(&w->w_polls, 1);
  int ms = -1;
  if (deadline != BRAID_FOREVER) {
    int64_t left = deadline - braid_now_ns();
    ms = left <= 0 ? 0 : (int)((left + 999999) / 1000000);
  }
  struct epoll_event ev[4];
  int n = epoll_wait(w->w_epfd, ev, 4, ms);
  for (int i = 0; i < n; i++) {
    if (ev[i].data.fd == w->w_evfd) {
      uint64_t x;
      ssize_t r = read(w->w_evfd, &x, sizeof x);
      (void)r;
    } else if (ev[i].data.fd == w->w_pipe[0]) {
      char buf[64];
      while (read(w->w_pipe[0], buf, sizeof buf) > 0) {
      }
      give(w, w->w_io_unit, 1);
    }
  }
}

static void fake_poll_break(void *ctx) {
  world_t *w = ctx;
  uint64_t one = 1;
  ssize_t r = write(w->w_evfd, &one, sizeof one);
  (void)r;
}

static braid_sched_t *sched_new(world_t *w, int workers, braid_timerq_t *timers, bool poll) {
  braid_sched_ops_t ops = { .run = fake_run, .preempt = fake_preempt };
  if (poll) {
    ops.poll = fake_poll;
    ops.poll_break = fake_poll_break;
  }
  braid_sched_config_t cfg = {
    .workers = workers, .max_threads = 8, .preempt_ns = 10000000, .timers = timers,
  };
  braid_sched_t *s = braid_sched_new(&cfg, &ops, w);
  ASSERT_NOT_NULL(s);
  w->w_s = s;
  ASSERT_OK(braid_sched_start(s));
  return s;
}

static void sched_done(braid_sched_t *s) {
  ASSERT(braid_sched_stop(s, 10 * 1000000000LL));
  braid_sched_free(s);
}

/* ------------------------------------------------------------------------ */

typedef struct feeder { world_t *w; fake_t *units; int nunits, rounds; uint64_t seed; } feeder_t;

static void *feeder_main(void *arg) {
  feeder_t *fd = arg;
  uint64_t r = test_rand_init(fd->seed);
  for (int i = 0; i < fd->rounds; i++) {
    give(fd->w, &fd->units[test_rand_below(&r, (uint64_t)fd->nunits)], 1);
    if ((i & 63) == 0) usleep(50);
  }
  return NULL;
}

/* Many threads make units ready at random: every item runs, exactly once,
 * and no unit ever runs on two threads at once (no lost wake-up: the count
 * of items done reaches the count given). */
TEST(test_sched_no_lost_wakeups) {
  enum { NUNITS = 32, NFEED = 4, ROUNDS = 5000 };
  world_t w = { 0 };
  fake_t *units = calloc(NUNITS, sizeof *units);
  for (int i = 0; i < NUNITS; i++) fake_init(&units[i], i);
  braid_sched_t *s = sched_new(&w, 2, NULL, false);
  feeder_t fd[NFEED];
  pthread_t th[NFEED];
  for (int i = 0; i < NFEED; i++) {
    fd[i] = (feeder_t){ &w, units, NUNITS, ROUNDS, (uint64_t)i + 1 };
    th[i] = test_spawn(feeder_main, &fd[i]);
  }
  for (int i = 0; i < NFEED; i++) test_join(th[i]);
  int64_t until = braid_now_ns() + 20 * 1000000000LL;
  int total = 0;
  while (braid_now_ns() < until) {
    total = 0;
    for (int i = 0; i < NUNITS; i++) total += atomic_load(&units[i].f_done);
    if (total == NFEED * ROUNDS) break;
    usleep(1000);
  }
  ASSERT_EQ_INT(total, NFEED * ROUNDS);
  for (int i = 0; i < NUNITS; i++) {
    ASSERT_EQ_INT(atomic_load(&units[i].f_max_inside), 1);
    ASSERT_EQ_INT(atomic_load(&units[i].f_pending), 0);
  }
  sched_done(s);
  free(units);
}

/* Units made ready from inside a running unit (as tasks that one task
 * starts) spread over both workers: both threads run some, and all finish.
 * The first runs in the spawner's thread's runnext; the others go through
 * the global queue to the other thread. */
TEST(test_sched_spreads_started_work) {
  world_t w = { 0 };
  fake_t units[9];
  for (int i = 0; i < 9; i++) fake_init(&units[i], i);
  for (int i = 0; i < 8; i++) units[i].f_work_us = 5000;   /* < preempt_ns: no hand-off */
  units[8].f_spawn_into = units;
  units[8].f_nspawn = 8;
  braid_sched_t *s = sched_new(&w, 2, NULL, false);
  give(&w, &units[8], 1);
  for (int i = 0; i < 8; i++) wait_done(&units[i], 1, 20);
  ASSERT_GE_INT(atomic_load(&w.w_threads_seen), 2);
  sched_done(s);
}

/* A unit that runs past preempt_ns is asked to preempt. */
TEST(test_sched_preempts_a_long_run) {
  world_t w = { 0 };
  fake_t f;
  fake_init(&f, 0);
  atomic_store(&f.f_spin_until_preempt, true);
  braid_sched_t *s = sched_new(&w, 1, NULL, false);
  give(&w, &f, 1);
  wait_done(&f, 1, 20);
  ASSERT(atomic_load(&f.f_preempted));
  braid_sched_stats_t st;
  braid_sched_stats(s, &st);
  ASSERT_GE_INT((int)st.preempts, 1);
  sched_done(s);
}

/* Both workers sit in a blocking call (no progress): sysmon hands their
 * places to spare threads, and a third unit runs while they are stuck. */
TEST(test_sched_handoff_when_stuck_in_c) {
  world_t w = { 0 };
  fake_t stuck[2], quick;
  for (int i = 0; i < 2; i++) {
    fake_init(&stuck[i], i);
    stuck[i].f_block_ms = 1500;
  }
  fake_init(&quick, 2);
  quick.f_work_us = 10;
  braid_sched_t *s = sched_new(&w, 2, NULL, false);
  give(&w, &stuck[0], 1);
  give(&w, &stuck[1], 1);
  /* Wait until both are inside their call. */
  int64_t until = braid_now_ns() + 10 * 1000000000LL;
  while ((atomic_load(&stuck[0].f_inside) == 0 || atomic_load(&stuck[1].f_inside) == 0) &&
         braid_now_ns() < until)
    usleep(500);
  ASSERT_EQ_INT(atomic_load(&stuck[0].f_inside) + atomic_load(&stuck[1].f_inside), 2);
  give(&w, &quick, 1);
  wait_done(&quick, 1, 20);
  /* Order, not time: the quick unit finished while both were still stuck. */
  ASSERT_EQ_INT(atomic_load(&stuck[0].f_done) + atomic_load(&stuck[1].f_done), 0);
  braid_sched_stats_t st;
  braid_sched_stats(s, &st);
  ASSERT_GE_INT((int)st.handoffs, 1);
  ASSERT(braid_sched_unit_in_c(&stuck[0].f_unit, NULL) ||
         braid_sched_unit_in_c(&stuck[1].f_unit, NULL));
  wait_done(&stuck[0], 1, 20);
  wait_done(&stuck[1], 1, 20);
  /* Once back, the extra threads do not run units at the same time as
   * more than `workers` others for long: every unit still runs alone. */
  ASSERT_EQ_INT(atomic_load(&stuck[0].f_max_inside), 1);
  sched_done(s);
}

/* Timers of a driven queue fire from the idle poll, in deadline order. */
static _Atomic int timer_order[4];
static _Atomic int timer_n;
static void timer_cb(braid_timer_t *t) {
  atomic_store(&timer_order[atomic_fetch_add(&timer_n, 1)], (int)(intptr_t)t->t_data);
}

static void kick(void *arg) { braid_sched_kick(arg); }

TEST(test_sched_serves_timers) {
  world_t w = { 0 };
  braid_timerq_t *q = braid_timerq_new_driven();
  ASSERT_NOT_NULL(q);
  braid_sched_t *s = sched_new(&w, 2, q, false);
  braid_timerq_set_kick(q, kick, s);
  usleep(20000);                      /* every worker parked, one polling forever */
  braid_timer_t t[4];
  memset(t, 0, sizeof t);
  atomic_store(&timer_n, 0);
  ASSERT_OK(braid_timer_add(q, &t[0], test_after_ms(60), timer_cb, (void *)(intptr_t)3));
  ASSERT_OK(braid_timer_add(q, &t[1], test_after_ms(20), timer_cb, (void *)(intptr_t)1));
  ASSERT_OK(braid_timer_add(q, &t[2], test_after_ms(40), timer_cb, (void *)(intptr_t)2));
  ASSERT_OK(braid_timer_add(q, &t[3], test_after_ms(10), timer_cb, (void *)(intptr_t)0));
  int64_t until = braid_now_ns() + 10 * 1000000000LL;
  while (atomic_load(&timer_n) < 4 && braid_now_ns() < until) usleep(1000);
  ASSERT_EQ_INT(atomic_load(&timer_n), 4);
  for (int i = 0; i < 4; i++) ASSERT_EQ_INT(atomic_load(&timer_order[i]), i);
  sched_done(s);
  braid_timerq_free(q);
}

/* A pipe that becomes readable wakes the unit waiting on it through the
 * poll (epoll + eventfd, as the netpoller does). */
TEST(test_sched_poll_wakes_on_io) {
  world_t w = { 0 };
  fake_t f;
  fake_init(&f, 0);
  f.f_work_us = 1;
  w.w_io_unit = &f;
  ASSERT_OK(pipe2(w.w_pipe, O_NONBLOCK | O_CLOEXEC) == 0 ? 0 : -1);
  w.w_evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  w.w_epfd = epoll_create1(EPOLL_CLOEXEC);
  ASSERT(w.w_evfd >= 0 && w.w_epfd >= 0);
  struct epoll_event ev = { .events = EPOLLIN | EPOLLET, .data.fd = w.w_evfd };
  ASSERT_EQ_INT(epoll_ctl(w.w_epfd, EPOLL_CTL_ADD, w.w_evfd, &ev), 0);
  ev.data.fd = w.w_pipe[0];
  ASSERT_EQ_INT(epoll_ctl(w.w_epfd, EPOLL_CTL_ADD, w.w_pipe[0], &ev), 0);
  braid_sched_t *s = sched_new(&w, 2, NULL, true);
  for (int i = 1; i <= 20; i++) {
    usleep(2000);
    ASSERT_EQ_INT((int)write(w.w_pipe[1], "x", 1), 1);
    wait_done(&f, i, 20);
  }
  ASSERT_GE_INT(atomic_load(&w.w_polls), 1);
  sched_done(s);
  close(w.w_pipe[0]);
  close(w.w_pipe[1]);
  close(w.w_evfd);
  close(w.w_epfd);
}

/* Stop with units idle, queued and running: it returns, and the queued
 * ones did not run after it. */
TEST(test_sched_stop_with_units_in_every_state) {
  world_t w = { 0 };
  fake_t units[6];
  for (int i = 0; i < 6; i++) {
    fake_init(&units[i], i);
    units[i].f_work_us = 20000;
  }
  braid_sched_t *s = sched_new(&w, 2, NULL, false);
  for (int i = 0; i < 6; i++) give(&w, &units[i], 50);  /* long queues */
  usleep(30000);
  ASSERT(braid_sched_stop(s, 10 * 1000000000LL));
  int done = 0;
  for (int i = 0; i < 6; i++) done += atomic_load(&units[i].f_done);
  usleep(20000);
  int later = 0;
  for (int i = 0; i < 6; i++) later += atomic_load(&units[i].f_done);
  ASSERT_EQ_INT(later, done);
  ASSERT_LT_INT(done, 300);
  braid_sched_free(s);
}

/* A unit that never comes back: stop gives up after the grace period and
 * says so (the thread is detached and left alone). */
static braid_sched_t *detached_sched;   /* reachable: the thread still uses it */
static fake_t forever_unit;

TEST(test_sched_stop_detaches_a_thread_that_never_returns) {
  static world_t w;
  memset(&w, 0, sizeof w);
  fake_init(&forever_unit, 0);
  atomic_store(&forever_unit.f_forever, true);
  detached_sched = sched_new(&w, 1, NULL, false);
  give(&w, &forever_unit, 1);
  while (atomic_load(&forever_unit.f_inside) == 0) usleep(500);
  ASSERT(!braid_sched_stop(detached_sched, 50000000));
  atomic_store(&forever_unit.f_release, true);   /* let it end in the background */
  wait_done(&forever_unit, 1, 20);
}

/* ------------------------------------------------------------------------ */
/* the job pool */

typedef struct pjob {
  braid_job_t j;
  _Atomic int *inflight, *peak, *done;
  int sleep_ms;
} pjob_t;

static void pjob_run(braid_job_t *j) {
  pjob_t *p = j->j_data;
  int in = atomic_fetch_add(p->inflight, 1) + 1;
  int pk = atomic_load(p->peak);
  while (in > pk && !atomic_compare_exchange_weak(p->peak, &pk, in)) {
  }
  usleep((useconds_t)p->sleep_ms * 1000);
  atomic_fetch_sub(p->inflight, 1);
  atomic_fetch_add(p->done, 1);
}

static void pjob_cancel(braid_job_t *j) {
  pjob_t *p = j->j_data;
  atomic_fetch_add(p->done, 100);
}

/* After one job and an idle pause, a burst of 8 runs on 8 threads at once
 * (one idle thread must not stand in for the whole burst). */
TEST(test_jobpool_grows_to_a_burst) {
  braid_jobpool_t *pool = braid_jobpool_new(16, 10000000000LL, NULL);
  ASSERT_NOT_NULL(pool);
  _Atomic int inflight = 0, peak = 0, done = 0;
  pjob_t first = { { pjob_run, pjob_cancel, NULL, NULL }, &inflight, &peak, &done, 1 };
  first.j.j_data = &first;
  ASSERT_OK(braid_jobpool_submit(pool, &first.j));
  while (atomic_load(&done) < 1) usleep(500);
  usleep(20000);                      /* its thread is idle now */
  atomic_store(&peak, 0);
  pjob_t burst[8];
  for (int i = 0; i < 8; i++) {
    burst[i] = (pjob_t){ { pjob_run, pjob_cancel, NULL, NULL }, &inflight, &peak, &done, 300 };
    burst[i].j.j_data = &burst[i];
    ASSERT_OK(braid_jobpool_submit(pool, &burst[i].j));
  }
  int64_t until = braid_now_ns() + 20 * 1000000000LL;
  while (atomic_load(&done) < 9 && braid_now_ns() < until) usleep(1000);
  ASSERT_EQ_INT(atomic_load(&done), 9);
  ASSERT_EQ_INT(atomic_load(&peak), 8);
  braid_jobpool_stats_t st;
  braid_jobpool_stats(pool, &st);
  ASSERT_GE_INT(st.threads, 8);
  ASSERT(braid_jobpool_stop(pool, 10 * 1000000000LL));
}

/* The bound holds, and jobs still queued at stop are cancelled. */
TEST(test_jobpool_bound_and_cancel_at_stop) {
  braid_jobpool_t *pool = braid_jobpool_new(2, 10000000000LL, NULL);
  ASSERT_NOT_NULL(pool);
  _Atomic int inflight = 0, peak = 0, done = 0;
  pjob_t jobs[6];
  for (int i = 0; i < 6; i++) {
    jobs[i] = (pjob_t){ { pjob_run, pjob_cancel, NULL, NULL }, &inflight, &peak, &done, 100 };
    jobs[i].j.j_data = &jobs[i];
    ASSERT_OK(braid_jobpool_submit(pool, &jobs[i].j));
  }
  while (atomic_load(&inflight) < 2) usleep(500);
  ASSERT(braid_jobpool_stop(pool, 10 * 1000000000LL));
  ASSERT_EQ_INT(atomic_load(&peak), 2);
  /* 2 ran (1 each), 4 were cancelled (100 each) */
  ASSERT_EQ_INT(atomic_load(&done), 2 + 4 * 100);
}

TEST_LIST {
  RUN(test_sched_no_lost_wakeups);
  RUN(test_sched_spreads_started_work);
  RUN(test_sched_preempts_a_long_run);
  RUN(test_sched_handoff_when_stuck_in_c);
  RUN(test_sched_serves_timers);
  RUN(test_sched_poll_wakes_on_io);
  RUN(test_sched_stop_with_units_in_every_state);
  RUN(test_sched_stop_detaches_a_thread_that_never_returns);
  RUN(test_jobpool_grows_to_a_burst);
  RUN(test_jobpool_bound_and_cancel_at_stop);
}
