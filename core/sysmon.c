/*
 * sysmon.c -- the scheduler's monitor thread (Go's sysmon).
 *
 * Design notes
 *
 * Sysmon watches the threads that run units.  For each, it remembers the
 * thread's progress counter (bumped at every resume) and when it last
 * changed.  A thread whose counter has not moved for preempt_ns is asked to
 * preempt (ops.preempt: a one-shot Lua count hook, which costs nothing
 * until then; the hook bumps the counter when it fires, even where it
 * cannot yield).  If the counter still has not moved two ticks later, the
 * hook could not fire: the thread is inside a C call (os.execute, a
 * blocking read, a long C library call).  Sysmon then hands its slot to a
 * spare thread (parked, or started now, at most max_threads of them) so
 * that the other units keep running, as Go's sysmon retakes the P of a
 * thread stuck in a system call.  The request to preempt is repeated every
 * preempt_ns, also to a handed-off thread: one that only looked stuck (the
 * OS had descheduled it) then returns its unit at its next resume
 * (braid_sched_handed_off) instead of keeping it.
 *
 * Sysmon also runs due timers when no thread is idle to poll, and moves a
 * unit that has sat a whole tick in a busy thread's runnext to the global
 * queue.
 *
 * Back-off: sysmon ticks every preempt_ns / 4 (clamped to 0.5..5 ms) while
 * some thread runs a unit, and sleeps on a condition variable while none
 * does (the first thread to start running a unit wakes it), so an idle
 * process costs nothing.
 */
#include <signal.h>
#include <stdlib.h>

#include "clock.h"
#include "refcnt.h"
#include "sched_internal.h"

static int64_t tick_ns(const braid_sched_t *s) {
  int64_t t = s->s_cfg.preempt_ns / 4;
  if (t < 500000) t = 500000;
  if (t > 5000000) t = 5000000;
  return t;
}

/* Gives th's slot to a spare thread.  Called with s_mtx held. */
static void handoff_locked(braid_sched_t *s, braid_sthread_t *th, int64_t now) {
  braid_sthread_t *spare = s->s_spares;
  if (spare) {
    s->s_spares = spare->th_pnext;
    spare->th_parked = false;
    atomic_store_explicit(&spare->th_has_slot, true, memory_order_release);
    BRAID_PCHECK(pthread_cond_signal(&spare->th_cv));
  } else if (braid__sched_spawn_locked(s, true) == NULL) {
    return;                           /* at the bound: th keeps its slot */
  }
  atomic_store_explicit(&th->th_has_slot, false, memory_order_release);
  atomic_store_explicit(&th->th_in_c_since, th->th_mon_seen, memory_order_relaxed);
  atomic_store_explicit(&th->th_in_c, true, memory_order_release);
  atomic_fetch_add_explicit(&s->s_nin_c, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&s->s_handoffs, 1, memory_order_relaxed);
  (void)now;
}

static void check_thread(braid_sched_t *s, braid_sthread_t *th, int64_t now, int64_t tick) {
  braid_unit_t *u = atomic_load_explicit(&th->th_unit, memory_order_acquire);
  /* A runnext that waited a whole tick behind a long run: to the global
   * queue, where any thread can take it. */
  braid_unit_t *next = atomic_load_explicit(&th->th_runnext, memory_order_relaxed);
  if (next && next == th->th_mon_next && u != NULL) {
    braid_unit_t *taken = atomic_exchange_explicit(&th->th_runnext, NULL, memory_order_acq_rel);
    if (taken) braid__sched_push(s, taken);
    next = NULL;
  }
  th->th_mon_next = next;

  if (u == NULL) {
    th->th_mon_unit = NULL;
    th->th_mon_preempted = 0;
    return;
  }
  uint64_t p = atomic_load_explicit(&th->th_progress, memory_order_relaxed);
  if (u != th->th_mon_unit || p != th->th_mon_progress) {
    th->th_mon_unit = u;
    th->th_mon_progress = p;
    th->th_mon_seen = now;
    th->th_mon_preempted = 0;
    return;
  }
  /* The same resume for preempt_ns: ask again every preempt_ns, also of a
   * thread already handed off (a thread the OS had descheduled looks stuck
   * too; asked again, it comes back and gives up its unit). */
  if (now - th->th_mon_seen >= s->s_cfg.preempt_ns &&
      (th->th_mon_preempted == 0 || now - th->th_mon_preempted >= s->s_cfg.preempt_ns)) {
    atomic_fetch_add_explicit(&s->s_preempts, 1, memory_order_relaxed);
    s->s_ops.preempt(s->s_ctx, u);
    if (th->th_mon_preempted == 0) th->th_mon_preempted = now;
    return;
  }
  if (th->th_mon_preempted != 0 && now - th->th_mon_preempted >= 2 * tick &&
      !atomic_load_explicit(&th->th_in_c, memory_order_acquire)) {
    BRAID_PCHECK(pthread_mutex_lock(&s->s_mtx));
    /* Still in the same resume (it cannot have moved on: the counter is
     * bumped before a new one starts, and we hold no lock it needs). */
    if (atomic_load_explicit(&th->th_unit, memory_order_acquire) == u &&
        atomic_load_explicit(&th->th_progress, memory_order_relaxed) == p &&
        atomic_load_explicit(&th->th_has_slot, memory_order_relaxed))
      handoff_locked(s, th, now);
    BRAID_PCHECK(pthread_mutex_unlock(&s->s_mtx));
  }
}

void *braid__sysmon_main(void *arg) {
  braid_sched_t *s = arg;
  sigset_t all;
  sigfillset(&all);
  BRAID_PCHECK(pthread_sigmask(SIG_BLOCK, &all, NULL));
  int64_t tick = tick_ns(s);
  BRAID_PCHECK(pthread_mutex_lock(&s->s_mtx));
  while (!atomic_load_explicit(&s->s_stopping, memory_order_relaxed)) {
    /* Sleep while nothing runs.  seq_cst: the Dekker pair with run_unit
     * (it bumps s_nrunning, then reads s_mon_sleeping). */
    atomic_store_explicit(&s->s_mon_sleeping, true, memory_order_seq_cst);
    if (atomic_load_explicit(&s->s_nrunning, memory_order_seq_cst) == 0 &&
        atomic_load_explicit(&s->s_nin_c, memory_order_relaxed) == 0) {
      BRAID_PCHECK(pthread_cond_wait(&s->s_mon_cv, &s->s_mtx));
      atomic_store_explicit(&s->s_mon_sleeping, false, memory_order_relaxed);
      continue;
    }
    atomic_store_explicit(&s->s_mon_sleeping, false, memory_order_relaxed);
    struct timespec ts;
    int64_t wake = braid_now_ns() + tick;
    ts.tv_sec = (time_t)(wake / 1000000000);
    ts.tv_nsec = (long)(wake % 1000000000);
    BRAID_PCHECK_TIMED(pthread_cond_timedwait(&s->s_mon_cv, &s->s_mtx, &ts));
    if (atomic_load_explicit(&s->s_stopping, memory_order_relaxed)) break;
    bool poller = s->s_poller != NULL;
    BRAID_PCHECK(pthread_mutex_unlock(&s->s_mtx));
    int64_t now = braid_now_ns();
    int n = atomic_load_explicit(&s->s_nthreads, memory_order_acquire);
    for (int i = 0; i < n; i++) check_thread(s, s->s_threads[i], now, tick);
    if (!poller) {
      /* Nobody idle polls: serve due timers and ready sockets from here
       * (non-blocking), as Go's sysmon polls the network when no M has
       * for a while. */
      braid__sched_run_timers(s);
      if (s->s_ops.poll) s->s_ops.poll(s->s_ctx, 0);
    }
    BRAID_PCHECK(pthread_mutex_lock(&s->s_mtx));
  }
  BRAID_PCHECK(pthread_mutex_unlock(&s->s_mtx));
  return NULL;
}
