/*
 * sched_internal.h -- what sched.c and sysmon.c share.  Not installed.
 */
#ifndef BRAID_SCHED_INTERNAL_H
#define BRAID_SCHED_INTERNAL_H

#include <pthread.h>

#include "sched.h"

struct braid_sthread {
  braid_sched_t *th_s;        /* immutable */
  int th_id;                  /* immutable: index in s_threads */
  pthread_t th_pth;           /* immutable once started */
  pthread_cond_t th_cv;       /* the thread parks here (s_mtx) */
  /* Go's runnext: a unit made ready by this thread runs next here.  Set by
   * the owner (exchange), taken by the owner or a spinning thief
   * (exchange); acq_rel so that the taker sees the unit's queued state. */
  braid_unit_t *_Atomic th_runnext;
  /* Bumped by the owner at every fill of th_runnext (relaxed: a thief
   * only skips a unit it has not seen sit there, the same fill, for
   * STEAL_AFTER_NS; a stale reading delays or hastens one steal, never
   * loses a unit).  A count, not a time: the owner reads no clock. */
  _Atomic uint64_t th_runnext_gen;
  /* The thief's side (this thread's own, plain): the fill it watches. */
  struct braid_sthread *th_watch;
  uint64_t th_watch_gen;
  int64_t th_watch_at;
  /* The unit running here, NULL between units: release by the thread,
   * acquire by sysmon. */
  braid_unit_t *_Atomic th_unit;
  /* Bumped at every resume inside a unit (braid_sched_progress): relaxed,
   * sysmon only compares two readings some milliseconds apart. */
  _Atomic uint64_t th_progress;
  /* Handed off: sysmon gave this thread's slot away while it sat in one
   * resume.  Set by sysmon under s_mtx, cleared by the thread under s_mtx;
   * read lock-free (acquire) by diagnostics. */
  _Atomic bool th_in_c;
  _Atomic int64_t th_in_c_since;
  /* May run units (false: a spare).  Written under s_mtx (by sysmon's
   * hand-off, release), read lock-free by the thread between units
   * (acquire). */
  _Atomic bool th_has_slot;
  /* Under s_mtx: */
  bool th_parked;             /* on s_idle or s_spares, waiting for a signal */
  bool th_spinning;           /* counted in s_nspinning (owner only) */
  braid_sthread_t *th_pnext;  /* s_idle / s_spares link */
  bool th_joined;             /* stop: joined (or detached) */
  /* Owner only: */
  unsigned th_tick;           /* schedules so far (fairness) */
  int64_t th_spin_ns;         /* how long a spin after a wake-up lasts (owner only) */
  /* Sysmon only: */
  uint64_t th_mon_progress;
  braid_unit_t *th_mon_unit;
  int64_t th_mon_seen;        /* when th_mon_progress was read first */
  int64_t th_mon_preempted;   /* when sysmon asked for preemption, or 0 */
  braid_unit_t *th_mon_next;  /* runnext at the last look */
};

struct braid_sched {
  braid_sched_config_t s_cfg;   /* immutable */
  braid_sched_ops_t s_ops;      /* immutable */
  void *s_ctx;                  /* immutable */
  int s_maxthreads;             /* immutable: workers + max_threads */

  pthread_mutex_t s_mtx;      /* Protects: the run queue, s_idle, s_spares,
                                 s_poller, s_nthreads growth, the th_* fields
                                 marked "under s_mtx", s_mon_sleeping */
  braid_unit_t *s_head, *s_tail;  /* the global run queue (FIFO) */
  /* Length of the run queue: written under s_mtx, read lock-free (seq_cst:
   * the Dekker pair with a thread that stops spinning, see sched.c). */
  _Atomic int s_nqueued;
  braid_sthread_t **s_threads;    /* s_maxthreads slots; entries never move */
  /* Threads started: written under s_mtx (release), read lock-free by
   * sysmon (acquire; entries below it are initialised). */
  _Atomic int s_nthreads;
  braid_sthread_t *s_idle;    /* parked threads that hold a slot */
  braid_sthread_t *s_spares;  /* parked threads without one */
  braid_sthread_t *s_poller;  /* the thread in the idle poll, or NULL */
  /* s_poller != NULL, readable without s_mtx (written under it, seq_cst):
   * wakep's lock-free look for a parked thread. */
  _Atomic bool s_polling;
  bool s_poll_woken;          /* s_poller was asked to come back */
  _Atomic int s_nspinning;    /* threads looking for work (seq_cst pairs) */
  _Atomic int s_nidle;        /* parked threads with a slot (stats) */
  _Atomic int s_nin_c;        /* threads handed off */
  _Atomic bool s_stopping;
  /* Threads inside ops.run (seq_cst: sysmon).  Written twice per unit run,
   * so on a cache line of its own: the fields above are what a spinning
   * thread reads at every turn of its loop. */
  _Alignas(64) _Atomic int s_nrunning;
  _Alignas(64) pthread_t s_sysmon;
  bool s_sysmon_started;
  pthread_cond_t s_mon_cv;    /* sysmon sleeps here when nothing runs */
  _Atomic bool s_mon_sleeping;

  _Atomic uint64_t s_handoffs, s_steals, s_preempts, s_polls, s_wakeups;
};

/* sysmon.c */
void *braid__sysmon_main(void *arg);
/* Starts a scheduler thread that holds a slot (has_slot) or not; called
 * with s_mtx held.  Returns the thread or NULL. */
braid_sthread_t *braid__sched_spawn_locked(braid_sched_t *s, bool has_slot);
/* Puts a queued unit on the global run queue and makes sure a thread
 * looks for work. */
void braid__sched_push(braid_sched_t *s, braid_unit_t *u);
/* Makes sure a thread looks for work (Go's wakep). */
void braid__sched_wakep(braid_sched_t *s);
/* Runs the timers that are due (any thread). */
void braid__sched_run_timers(braid_sched_t *s);

#endif
