/*
 * sched.c -- the M:N scheduler (see sched.h).
 *
 * Design notes
 *
 * Model.  braid runs Lua tasks, and a Lua coroutine cannot leave the
 * lua_State it was created in.  So the thing that moves between threads is
 * not a task but a state: the bindings make S Lua states ("shards", units
 * here), several per worker, each with its own queue of ready coroutines,
 * and any worker thread may run any unit, one thread at a time (the model
 * of cloudwu/ltask, with coroutine tasks inside each state).  New tasks are
 * spread over the units when they are spawned; a task that becomes ready
 * makes its unit ready; an idle worker takes whichever unit is ready.  A
 * started task therefore runs wherever a worker is free, which is what the
 * old model (one state per worker, a started task pinned to it) could not
 * do.  The price: shard-mates of a task stuck in a C call wait for it (a
 * state runs on one thread at a time), so tasks are spread over a few
 * shards per worker.
 *
 * Unit states (u_state), one atomic word:
 *
 *   IDLE --ready--> QUEUED --a thread pops it--> RUNNING --run returns--+
 *     ^                                            |                    |
 *     |                                         ready                   |
 *     |                                            v                    |
 *     +----------- run returned "no work" ---- NOTIFIED --requeued------+
 *
 * braid_sched_ready() moves IDLE to QUEUED (and queues the unit) or RUNNING
 * to NOTIFIED (the thread running it requeues it when run returns, even if
 * run found nothing: the work may have arrived after its last look).  So
 * a unit is on at most one queue, run by at most one thread, and a ready
 * call is never lost.
 *
 * Run queues.  One global FIFO under s_mtx, plus a runnext slot per thread
 * (Go's runnext): a unit made ready by a thread running another unit goes
 * into that thread's runnext, and the thread runs it as soon as its current
 * unit returns.  That keeps a ping-pong between two units on one thread
 * without a wake-up through the kernel.  The unit that was in runnext
 * before moves to the global queue and a thread is woken for it.  A
 * runnext put also wakes a parked thread (free when one spins already):
 * spinning threads steal a runnext that has waited STEAL_AFTER_NS, so a
 * producer that keeps running does not hold its consumer back (a
 * ping-pong partner is taken by its owner long before that).  sysmon
 * moves a runnext that has waited a whole tick to the global queue, so a
 * unit never waits behind a long run.
 *
 * Fairness, as a rule with a number: every 61st schedule a thread takes
 * from the global queue before its runnext (Go's schedtick % 61), and a
 * unit that still has work when its slice (preempt_ns) ends goes to the
 * tail of the global queue.  So a unit that becomes ready waits at most
 * (units queued before it) slices, and a task inside it at most (tasks
 * ready before it in its unit) resumes.
 *
 * Parking and unparking (after Go's "Worker thread parking/unparking"
 * essay in runtime/proc.go).  The problem is to balance keeping enough
 * threads running to use the cores against parking threads that have
 * nothing to do, without losing a wake-up.  A thread looking for work is
 * "spinning" (s_nspinning).  Making a unit ready wakes a parked thread only
 * if nobody spins (braid__sched_wakep): a spinner will find the work.  A
 * spinner that finds work stops spinning and, if it was the last spinner,
 * wakes another, so that bursts spread.  A spinner that finds nothing
 * stops spinning (decrement, seq_cst), then looks at the global queue once
 * more (seq_cst); a producer pushes (seq_cst) and then reads s_nspinning
 * (seq_cst): a Dekker pair, so either the spinner sees the unit or the
 * producer sees no spinner and wakes someone.  Parking itself happens
 * under s_mtx after one more look at the queue, and wakep takes s_mtx, so
 * a thread is never parked while a unit waits in the global queue.
 *
 * Spinning politely.  A spinner holds a CPU that runnable threads may
 * want: a client on the same machine that a socket just woke, softirq
 * work, another process.  The kernel does not always preempt a running
 * thread for one it wakes on the same CPU (EEVDF lets it finish its slice,
 * 0.75 ms or more; CFS had a wake-up granularity of about a millisecond),
 * so a spinner that only executes pause makes such a thread wait, and a
 * request/response pipeline that waits on it stalls at both ends.  So the
 * spin loop calls sched_yield every 16th turn (it returns at once when
 * nothing else is runnable there).  Measured with bench/http.sh's hello
 * world on 2 workers, wrk on the same 2 cores, interleaved: 68 000-71 000
 * -> 86 000-88 000 requests/s, p99 4.0-4.6 -> 1.7 ms, idle time 22% -> 7%
 * of one CPU (bench/http_cpu.sh's measure); yielding every turn, every
 * 4th or every 64th measured the same, and spinning without pause (to
 * rule out the hypervisor's pause-loop exits) changed nothing.
 *
 * Wasted wake-ups.  A unit made ready into runnext wakes a parked thread
 * (above), which is wasted when the owner runs that unit itself a moment
 * later: a ping-pong between two units on one thread wakes the other
 * thread, which spins SPIN_NS, parks, and is woken again by the next round
 * trip, each time a futex or eventfd write on the busy thread and a
 * cross-CPU wake-up (on this 2-vCPU guest ~1 500 of them per 50 000 round
 * trips).  So a thread that was woken, found nothing to do and had been
 * parked for less time than it had spun spins twice as long after its
 * next wake-up, up to SPIN_MAX_NS; a wake-up that finds work, or one
 * after a longer park, brings the spin back to SPIN_NS.  Spinning longer
 * only ever replaces parks shorter than the spin: where wake-ups come
 * seldom (a task woken by a timer every half millisecond, its partner on
 * another shard) CPU use stays where it was (6% of a CPU, measured).  A
 * spin longer than SPIN_NS runs due timers and, when nobody polls, polls
 * the network without blocking every SPIN_NS, so that a longer spin does
 * not make them later than a park would.  Ping-pong
 * across 2 workers, interleaved with the build before: 0.86-1.3 -> 0.79-1.1
 * us per round trip, wake-ups 1 500-2 000 -> 270-340 per 50 000.
 *
 * The idle poll.  The first thread to park becomes the poller: it calls
 * ops.poll (the netpoller's epoll_wait, whose eventfd is ops.poll_break)
 * with the next timer's deadline as its limit, or, without ops.poll,
 * sleeps on its condition variable until that deadline.  Other parked
 * threads sleep on their own condition variables.  wakep prefers a thread
 * parked on a condition variable (cheaper) and breaks the poll only when
 * the poller is the only parked thread.  A timer that becomes the earliest
 * kicks the poller (braid_sched_kick).  Timers are also run by busy threads
 * between units and by sysmon, so they fire on time when nobody is idle.
 *
 * Hand-off (sysmon.c).  A thread that stays in one resume past preempt_ns
 * is asked to preempt (ops.preempt: a Lua count hook).  If it still has
 * not come back a tick later, its code is inside a C call; sysmon takes
 * its slot and gives it to a spare thread (started on demand, at most
 * max_threads of them), as Go's sysmon retakes the P of a thread in a
 * system call.  The stuck thread, when its call returns, finishes its
 * resume, returns its unit, finds its slot gone and parks as a spare.  So
 * at most `workers` threads run units at once except for the moments a
 * stuck thread comes back.
 *
 * Shutdown.  braid_sched_stop sets s_stopping, wakes every parked thread
 * and the poller; each thread exits when it next returns to the scheduler.
 * Threads are joined with a grace period; one that is still inside a unit
 * after it (a task that computes forever and swallows its cancellation) is
 * detached, and the caller is told to leave the units alone.
 *
 * Lock order: s_mtx is taken after any unit lock of the bindings (a task
 * wake holds its shard's lock only while queueing the task, then calls
 * braid_sched_ready without it), and no other lock is taken under it.
 */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "compiler.h"
#include "err.h"
#include "refcnt.h"
#include "sched_internal.h"
#include "tls.h"

enum {
  FAIR_TICK = 61,           /* every 61st schedule looks at the global queue first */
  SPIN_NS = 20000,          /* a spinning thread looks for work this long */
  SPIN_MAX_NS = 160000,     /* ...or up to this long after wasted wake-ups */
  STEAL_AFTER_NS = 3000,    /* ...and steals a runnext this old (Go: 3 us) */
};

static _Thread_local BRAID_TLS_HOT braid_sthread_t *tls_thread;

static int cond_init_monotonic(pthread_cond_t *cv) {
  pthread_condattr_t ca;
  int rc = pthread_condattr_init(&ca);
  if (rc != 0) return rc;
  rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  if (rc == 0) rc = pthread_cond_init(cv, &ca);
  BRAID_PCHECK(pthread_condattr_destroy(&ca));
  return rc;
}

/* Waits on cv (with s_mtx held) until signalled or deadline. */
static void cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *m, int64_t deadline) {
  if (deadline == BRAID_FOREVER) {
    BRAID_PCHECK(pthread_cond_wait(cv, m));
    return;
  }
  struct timespec ts = { (time_t)(deadline / 1000000000), (long)(deadline % 1000000000) };
  BRAID_PCHECK_TIMED(pthread_cond_timedwait(cv, m, &ts));
}

/* ------------------------------------------------------------------------ */
/* queues */

/* Called with s_mtx held. */
static void global_push_locked(braid_sched_t *s, braid_unit_t *u) {
  u->u_next = NULL;
  if (s->s_tail) s->s_tail->u_next = u; else s->s_head = u;
  s->s_tail = u;
  /* seq_cst: the producer side of the Dekker pair with a thread that stops
   * spinning (it decrements s_nspinning, then reads this). */
  atomic_fetch_add_explicit(&s->s_nqueued, 1, memory_order_seq_cst);
}

static void global_push(braid_sched_t *s, braid_unit_t *u) {
  BRAID_PCHECK(pthread_mutex_lock(&s->s_mtx));
  global_push_locked(s, u);
  BRAID_PCHECK(pthread_mutex_unlock(&s->s_mtx));
}

void braid__sched_push(braid_sched_t *s, braid_unit_t *u) {
  global_push(s, u);
  braid__sched_wakep(s);
}

static braid_unit_t *global_pop(braid_sched_t *s) {
  if (atomic_load_explicit(&s->s_nqueued, memory_order_seq_cst) == 0) return NULL;
  BRAID_PCHECK(pthread_mutex_lock(&s->s_mtx));
  braid_unit_t *u = s->s_head;
  if (u) {
    s->s_head = u->u_next;
    if (s->s_head == NULL) s->s_tail = NULL;
    u->u_next = NULL;
    atomic_fetch_sub_explicit(&s->s_nqueued, 1, memory_order_relaxed);
  }
  BRAID_PCHECK(pthread_mutex_unlock(&s->s_mtx));
  return u;
}

/* Takes a unit from another thread's runnext, if it has waited there
 * STEAL_AFTER_NS: a younger one is about to run on its owner (a ping-pong
 * between two units on one thread), and stealing it would split the pair
 * over two threads that then wake each other through the kernel.  The age
 * is the thief's to measure: it watches one fill (its generation) and
 * takes it once it has seen that same fill for STEAL_AFTER_NS. */
static braid_unit_t *steal(braid_sched_t *s, braid_sthread_t *self) {
  int n = atomic_load_explicit(&s->s_nthreads, memory_order_acquire);
  int start = self->th_id + 1;
  int64_t now = 0;
  for (int k = 0; k < n; k++) {
    braid_sthread_t *v = s->s_threads[(start + k) % n];
    if (v == self) continue;
    if (atomic_load_explicit(&v->th_runnext, memory_order_relaxed) == NULL) continue;
    uint64_t gen = atomic_load_explicit(&v->th_runnext_gen, memory_order_relaxed);
    if (now == 0) now = braid_now_ns();
    if (self->th_watch != v || self->th_watch_gen != gen) {
      self->th_watch = v;             /* a new fill: its age starts now */
      self->th_watch_gen = gen;
      self->th_watch_at = now;
      continue;
    }
    if (now - self->th_watch_at < STEAL_AFTER_NS) continue;
    braid_unit_t *u = atomic_exchange_explicit(&v->th_runnext, NULL, memory_order_acq_rel);
    if (u) {
      atomic_fetch_add_explicit(&s->s_steals, 1, memory_order_relaxed);
      return u;
    }
  }
  return NULL;
}

static braid_unit_t *find_work(braid_sched_t *s, braid_sthread_t *th, bool may_steal) {
  braid_unit_t *u;
  if (++th->th_tick % FAIR_TICK == 0 && (u = global_pop(s)) != NULL) return u;
  if (atomic_load_explicit(&th->th_runnext, memory_order_relaxed) != NULL &&
      (u = atomic_exchange_explicit(&th->th_runnext, NULL, memory_order_acq_rel)) != NULL)
    return u;
  if ((u = global_pop(s)) != NULL) return u;
  return may_steal ? steal(s, th) : NULL;
}

void braid_unit_init(braid_unit_t *u, int id, void *data) {
  atomic_init(&u->u_state, BRAID_UNIT_IDLE);
  u->u_next = NULL;
  u->u_data = data;
  u->u_id = id;
  atomic_init(&u->u_thread, NULL);
}

/* Puts u in th's runnext (th is the calling thread), a new generation
 * for the thieves' age check; returns the unit it displaced, or NULL. */
static braid_unit_t *runnext_put(braid_sthread_t *th, braid_unit_t *u) {
  uint64_t gen = atomic_load_explicit(&th->th_runnext_gen, memory_order_relaxed);
  atomic_store_explicit(&th->th_runnext_gen, gen + 1, memory_order_relaxed);
  return atomic_exchange_explicit(&th->th_runnext, u, memory_order_acq_rel);
}

/* Queues a unit that the caller just moved to QUEUED. */
static void enqueue(braid_sched_t *s, braid_unit_t *u) {
  braid_sthread_t *th = tls_thread;
  if (th && th->th_s == s && atomic_load_explicit(&th->th_unit, memory_order_relaxed) != NULL &&
      !atomic_load_explicit(&s->s_stopping, memory_order_relaxed)) {
    braid_unit_t *old = runnext_put(th, u);
    if (old == NULL) {
      /* Our own thread runs it next, unless we keep running: a parked
       * thread wakes up spinning and takes it once it has waited
       * STEAL_AFTER_NS (Go's ready() calls wakep too).  Free while
       * someone spins already. */
      braid__sched_wakep(s);
      return;
    }
    u = old;                          /* the displaced one goes global */
  }
  braid__sched_push(s, u);
}

void braid_sched_ready(braid_sched_t *s, braid_unit_t *u) {
  /* acq_rel CASes: the thread that later runs the unit sees what the
   * caller did before (queued a task in it). */
  int st = atomic_load_explicit(&u->u_state, memory_order_acquire);
  for (;;) {
    switch (st) {
      case BRAID_UNIT_IDLE:
        if (atomic_compare_exchange_weak_explicit(&u->u_state, &st, BRAID_UNIT_QUEUED,
                                                  memory_order_acq_rel, memory_order_acquire)) {
          enqueue(s, u);
          return;
        }
        break;
      case BRAID_UNIT_RUNNING:
        if (atomic_compare_exchange_weak_explicit(&u->u_state, &st, BRAID_UNIT_NOTIFIED,
                                                  memory_order_acq_rel, memory_order_acquire))
          return;
        break;
      default:                        /* QUEUED or NOTIFIED: it will run */
        return;
    }
  }
}

bool braid_sched_waiting(braid_sched_t *s) {
  return atomic_load_explicit(&s->s_nqueued, memory_order_relaxed) > 0;
}

void braid_sched_progress(void) {
  braid_sthread_t *th = tls_thread;
  if (th) atomic_fetch_add_explicit(&th->th_progress, 1, memory_order_relaxed);
}

bool braid_sched_unit_in_c(braid_unit_t *u, int64_t *since_ns) {
  braid_sthread_t *th = atomic_load_explicit(&u->u_thread, memory_order_acquire);
  if (th == NULL || !atomic_load_explicit(&th->th_in_c, memory_order_acquire)) return false;
  if (since_ns) *since_ns = atomic_load_explicit(&th->th_in_c_since, memory_order_relaxed);
  return true;
}

braid_sthread_t *braid_sched_self(void) { return tls_thread; }

bool braid_sched_handed_off(void) {
  braid_sthread_t *th = tls_thread;
  return th && atomic_load_explicit(&th->th_in_c, memory_order_relaxed);
}

/* ------------------------------------------------------------------------ */
/* waking and parking */

void braid__sched_wakep(braid_sched_t *s) {
  /* seq_cst: see global_push_locked. */
  if (atomic_load_explicit(&s->s_nspinning, memory_order_seq_cst) != 0) return;
  /* Nobody parked: every thread with a slot is running a unit or about to
   * look at the queue.  A thread that parks registers under s_mtx after a
   * last look at the global queue, and a global push takes s_mtx before
   * this load, so a pushed unit is either seen by that look or this load
   * sees the thread parked. */
  if (atomic_load_explicit(&s->s_nidle, memory_order_seq_cst) == 0 &&
      !atomic_load_explicit(&s->s_polling, memory_order_seq_cst))
    return;
  BRAID_PCHECK(pthread_mutex_lock(&s->s_mtx));
  if (atomic_load_explicit(&s->s_nspinning, memory_order_relaxed) != 0 ||
      atomic_load_explicit(&s->s_stopping, memory_order_relaxed)) {
    BRAID_PCHECK(pthread_mutex_unlock(&s->s_mtx));
    return;
  }
  braid_sthread_t *th = s->s_idle;
  if (th) {
    s->s_idle = th->th_pnext;
    th->th_parked = false;
    th->th_spinning = true;           /* it wakes up spinning */
    atomic_fetch_add_explicit(&s->s_nspinning, 1, memory_order_seq_cst);
    atomic_fetch_sub_explicit(&s->s_nidle, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->s_wakeups, 1, memory_order_relaxed);
    BRAID_PCHECK(pthread_cond_signal(&th->th_cv));
    BRAID_PCHECK(pthread_mutex_unlock(&s->s_mtx));
    return;
  }
  braid_sthread_t *p = s->s_poller;
  bool brk = p && !s->s_poll_woken;
  if (brk) {
    s->s_poll_woken = true;
    atomic_fetch_add_explicit(&s->s_wakeups, 1, memory_order_relaxed);
    if (s->s_ops.poll == NULL) pthread_cond_signal(&p->th_cv);
  }
  BRAID_PCHECK(pthread_mutex_unlock(&s->s_mtx));
  if (brk && s->s_ops.poll_break) s->s_ops.poll_break(s->s_ctx);
}

void braid_sched_kick(braid_sched_t *s) {
  BRAID_PCHECK(pthread_mutex_lock(&s->s_mtx));
  braid_sthread_t *p = s->s_poller;
  if (p) {
    s->s_poll_woken = true;
    if (s->s_ops.poll == NULL) pthread_cond_signal(&p->th_cv);
  }
  BRAID_PCHECK(pthread_mutex_unlock(&s->s_mtx));
  if (p && s->s_ops.poll_break) s->s_ops.poll_break(s->s_ctx);
}

void braid__sched_run_timers(braid_sched_t *s) {
  braid_timerq_t *q = s->s_cfg.timers;
  if (q == NULL) return;
  int64_t next = braid_timerq_next(q);
  if (next == BRAID_FOREVER) return;
  int64_t now = braid_now_ns();
  if (next <= now) braid_timerq_run(q, now);
}

static void stop_spinning(braid_sched_t *s, braid_sthread_t *th) {
  if (!th->th_spinning) return;
  th->th_spinning = false;
  atomic_fetch_sub_explicit(&s->s_nspinning, 1, memory_order_seq_cst);
}

/* Parks th (which holds a slot) until there is work: as the poller if
 * nobody polls, else on its condition variable. */
static void park_idle(braid_sched_t *s, braid_sthread_t *th) {
  BRAID_PCHECK(pthread_mutex_lock(&s->s_mtx));
  if (s->s_head != NULL || atomic_load_explicit(&s->s_stopping, memory_order_relaxed) ||
      !atomic_load_explicit(&th->th_has_slot, memory_order_relaxed)) {
    BRAID_PCHECK(pthread_mutex_unlock(&s->s_mtx));
    return;
  }
  if (s->s_poller == NULL) {
    s->s_poller = th;
    atomic_store_explicit(&s->s_polling, true, memory_order_seq_cst);
    s->s_poll_woken = false;
    atomic_fetch_add_explicit(&s->s_polls, 1, memory_order_relaxed);
    int64_t deadline = s->s_cfg.timers ? braid_timerq_next(s->s_cfg.timers) : BRAID_FOREVER;
    if (s->s_ops.poll) {
      BRAID_PCHECK(pthread_mutex_unlock(&s->s_mtx));
      s->s_ops.poll(s->s_ctx, deadline);
      BRAID_PCHECK(pthread_mutex_lock(&s->s_mtx));
    } else if (!s->s_poll_woken) {
      cond_wait_until(&th->th_cv, &s->s_mtx, deadline);
    }
    s->s_poller = NULL;
    atomic_store_explicit(&s->s_polling, false, memory_order_seq_cst);
    BRAID_PCHECK(pthread_mutex_unlock(&s->s_mtx));
    braid__sched_run_timers(s);
    return;
  }
  th->th_parked = true;
  th->th_pnext = s->s_idle;
  s->s_idle = th;
  atomic_fetch_add_explicit(&s->s_nidle, 1, memory_order_relaxed);
  while (th->th_parked && !atomic_load_explicit(&s->s_stopping, memory_order_relaxed))
    BRAID_PCHECK(pthread_cond_wait(&th->th_cv, &s->s_mtx));
  if (th->th_parked) {                /* stopping: take it off the list */
    braid_sthread_t **pp = &s->s_idle;
    while (*pp && *pp != th) pp = &(*pp)->th_pnext;
    if (*pp) *pp = th->th_pnext;
    th->th_parked = false;
    atomic_fetch_sub_explicit(&s->s_nidle, 1, memory_order_relaxed);
  }
  BRAID_PCHECK(pthread_mutex_unlock(&s->s_mtx));
}

/* Parks a thread without a slot until sysmon gives it one. */
static void park_spare(braid_sched_t *s, braid_sthread_t *th) {
  BRAID_PCHECK(pthread_mutex_lock(&s->s_mtx));
  if (!atomic_load_explicit(&th->th_has_slot, memory_order_relaxed) &&
      !atomic_load_explicit(&s->s_stopping, memory_order_relaxed)) {
    th->th_parked = true;
    th->th_pnext = s->s_spares;
    s->s_spares = th;
    while (th->th_parked && !atomic_load_explicit(&s->s_stopping, memory_order_relaxed))
      BRAID_PCHECK(pthread_cond_wait(&th->th_cv, &s->s_mtx));
    if (th->th_parked) {
      braid_sthread_t **pp = &s->s_spares;
      while (*pp && *pp != th) pp = &(*pp)->th_pnext;
      if (*pp) *pp = th->th_pnext;
      th->th_parked = false;
    }
  }
  BRAID_PCHECK(pthread_mutex_unlock(&s->s_mtx));
}

/* ------------------------------------------------------------------------ */
/* the thread loop */

static void run_unit(braid_sched_t *s, braid_sthread_t *th, braid_unit_t *u) {
  atomic_store_explicit(&u->u_state, BRAID_UNIT_RUNNING, memory_order_relaxed);
  atomic_store_explicit(&u->u_thread, th, memory_order_release);
  atomic_fetch_add_explicit(&th->th_progress, 1, memory_order_relaxed);
  atomic_store_explicit(&th->th_unit, u, memory_order_release);
  /* seq_cst, with sysmon's store of s_mon_sleeping before it reads
   * s_nrunning: either sysmon sees us running or we see it asleep. */
  atomic_fetch_add_explicit(&s->s_nrunning, 1, memory_order_seq_cst);
  if (atomic_load_explicit(&s->s_mon_sleeping, memory_order_seq_cst)) {
    BRAID_PCHECK(pthread_mutex_lock(&s->s_mtx));
    BRAID_PCHECK(pthread_cond_signal(&s->s_mon_cv));
    BRAID_PCHECK(pthread_mutex_unlock(&s->s_mtx));
  }
  /* The coarse clock: one clock read per unit run is on every hand-over
   * between units (a ping-pong across two shards); its lag shortens a
   * slice by at most a timer tick, and only when others wait. */
  bool more = s->s_ops.run(s->s_ctx, u, braid_coarse_ns() + s->s_cfg.preempt_ns);
  atomic_fetch_sub_explicit(&s->s_nrunning, 1, memory_order_relaxed);
  atomic_store_explicit(&th->th_unit, NULL, memory_order_release);
  atomic_store_explicit(&u->u_thread, NULL, memory_order_release);
  if (!more) {
    int st = BRAID_UNIT_RUNNING;
    if (atomic_compare_exchange_strong_explicit(&u->u_state, &st, BRAID_UNIT_IDLE,
                                                memory_order_acq_rel, memory_order_acquire))
      return;
    /* NOTIFIED: work arrived while it ran; look again, here, next. */
    atomic_store_explicit(&u->u_state, BRAID_UNIT_QUEUED, memory_order_relaxed);
    braid_unit_t *old = runnext_put(th, u);
    if (old) {
      braid__sched_push(s, old);
    }
    return;
  }
  /* Its slice ended with work left: behind the others. */
  atomic_store_explicit(&u->u_state, BRAID_UNIT_QUEUED, memory_order_relaxed);
  braid__sched_push(s, u);
}

/* After a run: a thread that was handed off gives up (its slot is gone). */
static void after_handoff(braid_sched_t *s, braid_sthread_t *th) {
  if (!atomic_load_explicit(&th->th_in_c, memory_order_acquire)) return;
  BRAID_PCHECK(pthread_mutex_lock(&s->s_mtx));
  atomic_store_explicit(&th->th_in_c, false, memory_order_release);
  atomic_fetch_sub_explicit(&s->s_nin_c, 1, memory_order_relaxed);
  BRAID_PCHECK(pthread_mutex_unlock(&s->s_mtx));
  /* Its runnext belongs to a thread with a slot now. */
  braid_unit_t *u = atomic_exchange_explicit(&th->th_runnext, NULL, memory_order_acq_rel);
  if (u) {
    braid__sched_push(s, u);
  }
}

static void *thread_main(void *arg) {
  braid_sthread_t *th = arg;
  braid_sched_t *s = th->th_s;
  tls_thread = th;
  sigset_t all;
  sigfillset(&all);
  BRAID_PCHECK(pthread_sigmask(SIG_BLOCK, &all, NULL));   /* signals are the host's */
  if (s->s_ops.thread_start) s->s_ops.thread_start(s->s_ctx);
  /* Back from park_idle: the next spin is th_spin_ns long, not SPIN_NS. */
  bool woke = false;
  int64_t parked_ns = 0;              /* how long that park lasted */
  th->th_spin_ns = SPIN_NS;
  while (!atomic_load_explicit(&s->s_stopping, memory_order_acquire)) {
    if (!atomic_load_explicit(&th->th_has_slot, memory_order_acquire)) {
      stop_spinning(s, th);
      park_spare(s, th);
      continue;
    }
    braid__sched_run_timers(s);
    braid_unit_t *u = find_work(s, th, th->th_spinning);
    if (u == NULL) {
      /* Spin: look for work for a few microseconds before parking.  Other
       * threads' runnext slots only every 64th turn: they are written at
       * every wake on their thread, and a spinner reading them in a tight
       * loop pulls the line away from its owner at each write (ping-pong
       * across 2 workers, interleaved: 1.26 -> 1.15 us reading them every
       * 16th turn, and every 64th no worse than every 16th; a stolen
       * runnext is 3 us old anyway).  Every 16th turn it also yields its
       * CPU (the design notes, "Spinning politely"). */
      if (!th->th_spinning) {
        th->th_spinning = true;
        atomic_fetch_add_explicit(&s->s_nspinning, 1, memory_order_seq_cst);
      }
      int64_t start = braid_now_ns();
      int64_t limit = woke ? th->th_spin_ns : SPIN_NS;
      int64_t look = SPIN_NS;         /* a longer spin serves timers and sockets */
      for (int i = 0;; i++) {
        int64_t spent = (i & 15) == 15 ? braid_now_ns() - start : 0;
        if ((u = find_work(s, th, (i & 63) == 63)) != NULL) break;
        if (spent >= limit || atomic_load_explicit(&s->s_stopping, memory_order_relaxed)) break;
        if (spent >= look) {
          /* Every SPIN_NS of a spin longer than SPIN_NS: what a parked
           * thread would have done by now (nobody may be parked to poll). */
          look += SPIN_NS;
          braid__sched_run_timers(s);
          if (s->s_ops.poll && !atomic_load_explicit(&s->s_polling, memory_order_relaxed))
            s->s_ops.poll(s->s_ctx, 0);
          continue;
        }
        if ((i & 15) == 15) sched_yield(); else braid_cpu_relax();
      }
      /* A wake-up that found nothing to do was wasted: if its park was
       * shorter than this spin (a spin twice as long would have covered
       * it), the next one spins twice as long (design notes, "Wasted
       * wake-ups"). */
      if (woke && u == NULL)
        th->th_spin_ns = parked_ns >= limit ? SPIN_NS
                       : limit * 2 > SPIN_MAX_NS ? SPIN_MAX_NS : limit * 2;
      if (u == NULL) {
        stop_spinning(s, th);
        /* The Dekker recheck (see the design notes). */
        if ((u = find_work(s, th, true)) == NULL) {
          int64_t parked_at = braid_now_ns();
          park_idle(s, th);
          parked_ns = braid_now_ns() - parked_at;
          woke = true;
          continue;
        }
      }
    }
    if (th->th_spinning) {
      /* Found work: if we were the last spinner, make sure someone else
       * looks (a burst of ready units spreads over the threads). */
      stop_spinning(s, th);
      if (atomic_load_explicit(&s->s_nqueued, memory_order_relaxed) > 0) braid__sched_wakep(s);
    }
    if (woke) {
      woke = false;
      th->th_spin_ns = SPIN_NS;       /* this wake-up was worth it */
    }
    run_unit(s, th, u);
    after_handoff(s, th);
  }
  stop_spinning(s, th);
  /* A unit left in runnext goes back to the global queue for whoever runs
   * the units after the stop (the bindings' shutdown). */
  braid_unit_t *u = atomic_exchange_explicit(&th->th_runnext, NULL, memory_order_acq_rel);
  if (u) global_push(s, u);
  if (s->s_ops.thread_exit) s->s_ops.thread_exit(s->s_ctx);
  tls_thread = NULL;
  return NULL;
}

braid_sthread_t *braid__sched_spawn_locked(braid_sched_t *s, bool has_slot) {
  int n = atomic_load_explicit(&s->s_nthreads, memory_order_relaxed);
  if (n >= s->s_maxthreads) return NULL;
  braid_sthread_t *th = calloc(1, sizeof *th);
  if (th == NULL) return NULL;
  th->th_s = s;
  th->th_id = n;
  atomic_init(&th->th_has_slot, has_slot);
  atomic_init(&th->th_runnext, NULL);
  atomic_init(&th->th_runnext_gen, 0);
  atomic_init(&th->th_unit, NULL);
  atomic_init(&th->th_progress, 0);
  atomic_init(&th->th_in_c, false);
  atomic_init(&th->th_in_c_since, 0);
  if (cond_init_monotonic(&th->th_cv) != 0) {
    free(th);
    return NULL;
  }
  s->s_threads[n] = th;
  /* Release: sysmon and thieves read entries below s_nthreads. */
  atomic_store_explicit(&s->s_nthreads, n + 1, memory_order_release);
  if (pthread_create(&th->th_pth, NULL, thread_main, th) != 0) {
    atomic_store_explicit(&s->s_nthreads, n, memory_order_release);
    s->s_threads[n] = NULL;
    BRAID_PCHECK(pthread_cond_destroy(&th->th_cv));
    free(th);
    return NULL;
  }
  return th;
}

/* ------------------------------------------------------------------------ */
/* life cycle */

braid_sched_t *braid_sched_new(const braid_sched_config_t *cfg,
                               const braid_sched_ops_t *ops, void *ctx) {
  if (cfg->workers < 1 || ops->run == NULL || ops->preempt == NULL ||
      (ops->poll != NULL) != (ops->poll_break != NULL))
    return NULL;
  /* Aligned as its type asks (s_nrunning has a cache line of its own);
   * the size rounded up to the alignment, as aligned_alloc wants. */
  size_t align = _Alignof(braid_sched_t);
  braid_sched_t *s = aligned_alloc(align, (sizeof *s + align - 1) / align * align);
  if (s == NULL) return NULL;
  memset(s, 0, sizeof *s);
  s->s_cfg = *cfg;
  if (s->s_cfg.preempt_ns <= 0) s->s_cfg.preempt_ns = 10000000;
  if (s->s_cfg.max_threads < 0) s->s_cfg.max_threads = 0;
  s->s_ops = *ops;
  s->s_ctx = ctx;
  s->s_maxthreads = cfg->workers + s->s_cfg.max_threads;
  s->s_threads = calloc((size_t)s->s_maxthreads, sizeof *s->s_threads);
  if (s->s_threads == NULL) goto error1;
  if (pthread_mutex_init(&s->s_mtx, NULL) != 0) goto error2;
  if (cond_init_monotonic(&s->s_mon_cv) != 0) goto error3;
  atomic_init(&s->s_nqueued, 0);
  atomic_init(&s->s_nthreads, 0);
  atomic_init(&s->s_nspinning, 0);
  atomic_init(&s->s_nidle, 0);
  atomic_init(&s->s_polling, false);
  atomic_init(&s->s_nrunning, 0);
  atomic_init(&s->s_nin_c, 0);
  atomic_init(&s->s_stopping, false);
  atomic_init(&s->s_mon_sleeping, false);
  return s;
error3:
  BRAID_PCHECK(pthread_mutex_destroy(&s->s_mtx));
error2:
  free(s->s_threads);
error1:
  free(s);
  return NULL;
}

int braid_sched_start(braid_sched_t *s) {
  BRAID_PCHECK(pthread_mutex_lock(&s->s_mtx));
  for (int i = 0; i < s->s_cfg.workers; i++) {
    if (braid__sched_spawn_locked(s, true) == NULL) {
      BRAID_PCHECK(pthread_mutex_unlock(&s->s_mtx));
      braid_sched_stop(s, BRAID_FOREVER);
      return BRAID_ENOMEM;
    }
  }
  if (pthread_create(&s->s_sysmon, NULL, braid__sysmon_main, s) != 0) {
    BRAID_PCHECK(pthread_mutex_unlock(&s->s_mtx));
    braid_sched_stop(s, BRAID_FOREVER);
    return BRAID_ENOMEM;
  }
  s->s_sysmon_started = true;
  BRAID_PCHECK(pthread_mutex_unlock(&s->s_mtx));
  return 0;
}

bool braid_sched_stop(braid_sched_t *s, int64_t grace_ns) {
  BRAID_PCHECK(pthread_mutex_lock(&s->s_mtx));
  atomic_store_explicit(&s->s_stopping, true, memory_order_seq_cst);
  int n = atomic_load_explicit(&s->s_nthreads, memory_order_relaxed);
  for (int i = 0; i < n; i++) pthread_cond_signal(&s->s_threads[i]->th_cv);
  BRAID_PCHECK(pthread_cond_signal(&s->s_mon_cv));
  bool polling = s->s_poller != NULL;
  BRAID_PCHECK(pthread_mutex_unlock(&s->s_mtx));
  if (polling && s->s_ops.poll_break) s->s_ops.poll_break(s->s_ctx);
  if (s->s_sysmon_started) {
    BRAID_PCHECK(pthread_join(s->s_sysmon, NULL));
    s->s_sysmon_started = false;
  }
  /* Sysmon is gone: the thread count no longer changes. */
  n = atomic_load_explicit(&s->s_nthreads, memory_order_acquire);
  int64_t until = grace_ns == BRAID_FOREVER ? BRAID_FOREVER : braid_now_ns() + grace_ns;
  bool all = true;
  for (int i = 0; i < n; i++) {
    braid_sthread_t *th = s->s_threads[i];
    if (th->th_joined) continue;
    if (until == BRAID_FOREVER) {
      BRAID_PCHECK(pthread_join(th->th_pth, NULL));
      th->th_joined = true;
      continue;
    }
    for (;;) {
      /* A poller may have gone back to poll after the break: break again
       * until it has left. */
      if (s->s_ops.poll_break) s->s_ops.poll_break(s->s_ctx);
      int64_t step = braid_now_ns() + 5000000;
      if (step > until) step = until;
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);   /* pthread_timedjoin_np's clock */
      int64_t left = step - braid_now_ns();
      if (left < 0) left = 0;
      ts.tv_sec += (time_t)(left / 1000000000);
      ts.tv_nsec += (long)(left % 1000000000);
      if (ts.tv_nsec >= 1000000000) { ts.tv_sec++; ts.tv_nsec -= 1000000000; }
      int rc = pthread_timedjoin_np(th->th_pth, NULL, &ts);
      if (rc == 0) { th->th_joined = true; break; }
      if (braid_now_ns() >= until) break;
    }
    if (!th->th_joined) {
      BRAID_PCHECK(pthread_detach(th->th_pth));
      th->th_joined = true;           /* never join it again */
      all = false;
    }
  }
  return all;
}

void braid_sched_free(braid_sched_t *s) {
  if (s == NULL) return;
  int n = atomic_load_explicit(&s->s_nthreads, memory_order_relaxed);
  for (int i = 0; i < n; i++) {
    BRAID_PCHECK(pthread_cond_destroy(&s->s_threads[i]->th_cv));
    free(s->s_threads[i]);
  }
  free(s->s_threads);
  BRAID_PCHECK(pthread_cond_destroy(&s->s_mon_cv));
  BRAID_PCHECK(pthread_mutex_destroy(&s->s_mtx));
  free(s);
}

void braid_sched_stats(braid_sched_t *s, braid_sched_stats_t *st) {
  memset(st, 0, sizeof *st);
  st->workers = s->s_cfg.workers;
  st->threads = atomic_load_explicit(&s->s_nthreads, memory_order_relaxed);
  st->spinning = atomic_load_explicit(&s->s_nspinning, memory_order_relaxed);
  st->idle = atomic_load_explicit(&s->s_nidle, memory_order_relaxed);
  st->in_c = atomic_load_explicit(&s->s_nin_c, memory_order_relaxed);
  st->handoffs = atomic_load_explicit(&s->s_handoffs, memory_order_relaxed);
  st->steals = atomic_load_explicit(&s->s_steals, memory_order_relaxed);
  st->preempts = atomic_load_explicit(&s->s_preempts, memory_order_relaxed);
  st->polls = atomic_load_explicit(&s->s_polls, memory_order_relaxed);
  st->wakeups = atomic_load_explicit(&s->s_wakeups, memory_order_relaxed);
}
