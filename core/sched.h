/*
 * sched.h -- the M:N scheduler: worker threads that run "units" (the
 * bindings' Lua states, called shards there), hand-off of a worker stuck in
 * a C call, and the idle workers' poll (netpoller and timers).
 *
 * The scheduler knows nothing of Lua.  A unit is a thing that may have
 * work; when it has, someone calls braid_sched_ready() and some worker
 * calls ops.run(unit) on it, never two workers at once.  What "work" is
 * (ready coroutines) and how it is run belong to the caller; how the unit
 * is preempted (a one-shot count hook) too: the scheduler only says when.
 *
 * See sched.c for the design notes (parking, spinning, fairness, hand-off).
 */
#ifndef BRAID_SCHED_H
#define BRAID_SCHED_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "timer.h"

typedef struct braid_sched braid_sched_t;
typedef struct braid_unit braid_unit_t;
typedef struct braid_sthread braid_sthread_t;

enum {
  BRAID_UNIT_IDLE = 0,      /* no work known, on no queue, not running */
  BRAID_UNIT_QUEUED,        /* on a run queue (or in a runnext slot) */
  BRAID_UNIT_RUNNING,       /* a worker runs it */
  BRAID_UNIT_NOTIFIED,      /* running, and made ready again meanwhile */
};

struct braid_unit {
  _Atomic int u_state;        /* BRAID_UNIT_*; transitions in sched.c */
  braid_unit_t *u_next;       /* run queue link, under s_mtx */
  void *u_data;               /* the caller's (immutable) */
  int u_id;                   /* the caller's (immutable) */
  /* The thread running it, for preemption and diagnostics: written by that
   * thread when it starts and stops running the unit (release), read by
   * sysmon and by braid_sched_unit_thread() (acquire). */
  braid_sthread_t *_Atomic u_thread;
};

typedef struct braid_sched_ops {
  /* Runs u on the calling thread until it has no ready work or until
   * slice_end (absolute, clock.h) has passed and braid_sched_waiting() says
   * other units wait.  Returns true when u still has ready work (it goes
   * back on the global run queue, behind the others).  Never called for one
   * unit on two threads at once. */
  bool (*run)(void *ctx, braid_unit_t *u, int64_t slice_end);
  /* Called by sysmon, with no scheduler lock held, when u has been in one
   * resume for longer than preempt_ns: ask its code to return soon (a Lua
   * count hook).  May do nothing (no one else waits). */
  void (*preempt)(void *ctx, braid_unit_t *u);
  /* Optional.  Waits for I/O until deadline (BRAID_FOREVER: no limit, 0:
   * do not block) and makes the units of whatever became ready ready.
   * Only one thread polls at a time. */
  void (*poll)(void *ctx, int64_t deadline);
  /* Optional (with poll).  Makes a poll in progress return soon. */
  void (*poll_break)(void *ctx);
  /* Optional.  Runs once on each scheduler thread when it starts and once
   * when it exits (thread-local set-up; blocking signals). */
  void (*thread_start)(void *ctx);
  void (*thread_exit)(void *ctx);
} braid_sched_ops_t;

typedef struct braid_sched_config {
  int workers;                /* the number of threads running units at once */
  int max_threads;            /* extra threads started while workers sit in C */
  int64_t preempt_ns;         /* a resume longer than this is preempted */
  braid_timerq_t *timers;     /* a driven queue (braid_timerq_new_driven), served
                                 by the workers' idle loop; may be NULL */
} braid_sched_config_t;

/* Creates a scheduler (threads start in braid_sched_start).  Returns NULL on
 * failure (nothing allocated remains). */
braid_sched_t *braid_sched_new(const braid_sched_config_t *cfg,
                               const braid_sched_ops_t *ops, void *ctx);

/* Starts the worker threads and sysmon.  Returns 0, or a BRAID_E* error
 * after stopping and joining whatever it had started. */
int braid_sched_start(braid_sched_t *s);

/* Stops the scheduler: no unit starts running any more; threads come back
 * from the unit they run, then exit.  Waits up to grace_ns for them.
 * Returns true when every thread was joined; false when some thread is
 * still inside a unit after the grace period (it is detached: the caller
 * must then leave the units and whatever they touch alive, forever).
 * Units queued but not run stay queued (the caller owns them). */
bool braid_sched_stop(braid_sched_t *s, int64_t grace_ns);

/* Frees a stopped scheduler.  Only after braid_sched_stop returned true. */
void braid_sched_free(braid_sched_t *s);

/* Initialises a unit (IDLE). */
void braid_unit_init(braid_unit_t *u, int id, void *data);

/* u has ready work: makes sure a worker will run it.  Any thread, any time
 * (after stop it only marks the unit queued).  Cheap when u is already
 * queued or running. */
void braid_sched_ready(braid_sched_t *s, braid_unit_t *u);

/* Whether other units wait for a worker (a lock-free hint). */
bool braid_sched_waiting(braid_sched_t *s);

/* Called by ops.run at each resume of something inside a unit: the
 * progress counter sysmon reads to tell a long resume (preempt it) from a
 * thread stuck in C (hand its place to another thread).  Only from a
 * scheduler thread, inside ops.run. */
void braid_sched_progress(void);

/* The scheduler thread running u, if any, and whether it is stuck in a C
 * call (handed off), since when (*since_ns, clock.h). */
bool braid_sched_unit_in_c(braid_unit_t *u, int64_t *since_ns);

/* Whether the calling thread was handed off (sysmon gave its place to
 * another thread while it sat in one resume): ops.run should then return
 * as soon as it can. */
bool braid_sched_handed_off(void);

/* The calling thread's scheduler thread (NULL elsewhere). */
braid_sthread_t *braid_sched_self(void);

/* Wakes a thread sleeping in the idle poll so that it re-reads the timer
 * queue's next deadline (the driven timer queue's kick). */
void braid_sched_kick(braid_sched_t *s);

typedef struct braid_sched_stats {
  int workers;                /* configured */
  int threads;                /* scheduler threads alive (workers + extra) */
  int spinning, idle;         /* threads looking for work, parked */
  int in_c;                   /* threads handed off while stuck in C */
  uint64_t handoffs;          /* hand-offs so far */
  uint64_t steals;            /* units taken from another thread's runnext */
  uint64_t preempts;          /* preemption requests */
  uint64_t polls;             /* idle polls */
  uint64_t wakeups;           /* parked threads woken, polls broken (wakep) */
} braid_sched_stats_t;

void braid_sched_stats(braid_sched_t *s, braid_sched_stats_t *st);

#endif
