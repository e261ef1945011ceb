/*
 * lruntime.c -- the task runtime: Lua states ("shards") that host tasks as
 * coroutines, run by the scheduler's worker threads (core/sched.c);
 * blocking that suspends only the task, preemption, the blocking pool,
 * deadlock detection and shutdown.
 *
 * Design notes
 *
 * The runtime is one per process (rt below).  It starts lazily, on the
 * first call that needs a worker (go, spawn, sleep, blocking, after...), so
 * that braid.config can come first.
 *
 * Shards.  S Lua states (braid.config{states=}, default 4 per worker), each
 * opened with the standard libraries and braid when it first runs a task.
 * A shard is a unit of the scheduler (core/sched.h): any worker thread may
 * run it, one at a time, so a started task (a coroutine, which cannot leave
 * its state) runs wherever a worker is free.  A new task is placed on a
 * shard when it is spawned (round robin, skipping shards whose thread sits
 * in a C call) and queued there; a woken task goes back on its shard's
 * ready queue and makes the shard ready (braid_sched_ready); the scheduler
 * runs the shard's ready tasks (shard_run) until none is left or its slice
 * ends while other shards wait.
 *
 * Blocking (braid__wait): a task arms a select on its own waiter whose wake
 * callback queues the task on its shard, then lua_yieldk's.  The shard
 * cannot resume the task before the yield completes because only the
 * thread running the shard pops its ready queue, and it is the one
 * yielding, so an early wake is harmless.  Timeouts are timers (served by
 * the scheduler's idle poll) that fire the waiter; cancellation fires it
 * too.  Anywhere else (the main thread, a blocking-pool thread, a call that
 * cannot yield) the OS thread parks, in slices on the thread that opened
 * braid, so that it can notice an interrupt (REPL Ctrl-C) or a deadlock.
 *
 * Cancellation, as in Trio: once a partner has claimed a task's waiter,
 * the operation has happened and returns normally; the cancel takes effect
 * at the task's next blocking call, or when its time slice ends (sysmon's
 * preemption hook raises "cancelled" then), never at an arbitrary
 * instruction right after an operation completed.
 *
 * Preemption costs nothing while it is not needed: no hook is installed.
 * The scheduler's sysmon sees a shard that has been in one resume past
 * preempt_ms and calls shard_preempt, which sets a one-shot count hook on
 * the running coroutine; the hook clears itself and yields.  lua_sethook
 * may be called from another thread (ldebug.c; lua.c does it from a signal
 * handler); ThreadSanitizer reports that write as a race by design
 * (tests/tsan.supp).  When the hook cannot fire (the task sits in a C
 * call), sysmon hands the thread's place to a spare thread; the task shows
 * as "in C" in braid.tasks().
 *
 * Lock order (core/LOCKING.md): future o_mtx -> shard sh_mtx -> rt.mtx ->
 * the scheduler's s_mtx; channel locks are never held while any of these
 * is taken.  No Lua API call runs with a braid mutex held.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lualib.h>

#include "braid.h"
#include "clock.h"
#include "compiler.h"
#include "err.h"
#include "internal.h"
#include "jobpool.h"
#include "lembed.h"
#include "lruntime.h"
#include "netpoll.h"
#include "sched.h"
#include "tls.h"

#if LUA_VERSION_RELEASE_NUM >= 50406
#define reset_thread(co, from) lua_closethread((co), (from))
#else
#define reset_thread(co, from) lua_resetthread(co)
#endif

typedef struct task task_t;
typedef struct shard shard_t;

enum { T_NEW, T_READY, T_RUNNING, T_BLOCKED, T_SLEEPING };
static const char *const state_names[] = { "ready", "ready", "running", "blocked", "sleeping" };
enum { Y_NONE, Y_BLOCK, Y_YIELD };
enum { SMALL_CASES = 1, POOL_MAX = 64, STATES_PER_WORKER = 4, SHARD_FAIR_TICK = 61 };
/* How long shutdown waits for tasks to unwind before it detaches workers
 * still inside Lua (a task that swallows its cancellation). */
#define SHUTDOWN_GRACE_NS 100000000LL

struct task {
  braid_waiter_t t_waiter;    /* w_wake = task_wake, w_data = this task */
  uint64_t t_id;              /* immutable */
  char *t_name;               /* immutable, may be NULL */
  braid_future_t *t_fut;      /* one reference; settled when the task ends */
  braid_msg_t *t_fn;          /* until started: the function */
  braid_msg_t *t_args;        /* until started: the arguments */
  shard_t *t_home;            /* immutable: the shard it runs in */
  lua_State *t_co;            /* its coroutine, in t_home's state */
  int t_coref;                /* registry reference of t_co */
  int t_envref;               /* registry reference of its globals table */
  int t_nargs;                /* values to pass to the next lua_resume */
  _Atomic int t_state;        /* T_*, for braid.tasks() */
  /* What it waits for ("recv", "sleep", ...) and on what (type and id):
   * written by its shard's thread, read by braid.tasks() elsewhere, so
   * atomic (relaxed: a diagnostic snapshot). */
  _Atomic(const char *) t_what;
  _Atomic(braid_objtype_t *) t_ontype;
  _Atomic uint64_t t_onid;
  _Atomic bool t_cancel;      /* cancellation requested */
  bool t_cancel_raised;       /* we raised "cancelled" in it */
  int t_yield;                /* Y_*: why the last resume yielded */
  braid_case_t *t_cases;      /* the current wait's cases (t_small or heap) */
  int t_ncases, t_casecap;
  braid_case_t t_small[SMALL_CASES];
  braid_selres_t t_res;       /* the current wait's result */
  braid_finish_fn t_finish;   /* the current wait's finisher */
  braid_timer_t t_timer;      /* the current wait's deadline */
  bool t_timed;               /* t_timer is queued (or firing) */
  task_t *t_next;             /* ready queue link */
  task_t *t_lnext, *t_lprev;  /* the live list, under rt.mtx */
};

struct shard {
  braid_unit_t sh_unit;       /* the scheduler's view; u_data = this shard */
  int sh_id;                  /* immutable */
  lua_State *sh_L;            /* made on first run; touched only by the thread
                                 running the shard (and shutdown) */
  pthread_mutex_t sh_mtx;     /* Protects: sh_rhead/sh_rtail, and (for the hook
                                 setters) which task sh_current names */
  task_t *sh_rhead, *sh_rtail;    /* tasks ready to run (started or new) */
  /* A task woken from a wait runs next in its shard (Go's runnext, inside
   * a state): it does not queue behind tasks that compute for whole
   * slices.  The one it displaces goes to the tail, and every
   * SHARD_FAIR_TICK-th pop takes the head first, so a ping-pong pair that
   * keeps waking each other cannot starve the queue.  A slot swapped
   * without the lock (Go's runnext is a CAS'd slot too): a wake on the
   * same worker takes no lock to put, the pop none to take. */
  task_t *_Atomic sh_next;
  unsigned sh_tick;           /* pops so far; the running thread only */
  /* Tasks ready (queue and runnext slot): bumped after a put (release),
   * dropped after a take; pop_ready reads it first (acquire), the spinning
   * await and shard_run's slice check as a hint (relaxed). */
  _Atomic int sh_nready;
  /* The task being resumed, for sysmon's preemption and the canceller:
   * written by the running thread (seq_cst, see run_task), and only read
   * under sh_mtx to set a hook; task_end takes sh_mtx once before it frees
   * the task, so a task seen there is alive. */
  task_t *_Atomic sh_current;
  _Atomic bool sh_stop;       /* shutdown: run no more tasks (never cleared) */
  _Atomic int sh_ntasks;      /* live tasks placed here (relaxed: placement) */
  int sh_pool[POOL_MAX];      /* registry refs of idle coroutines (running thread) */
  int sh_npool;
  int sh_envmt;               /* registry ref: metatable of task globals */
  void *sh_codec;             /* the codec's state of sh_L (braid__codec_slot) */
};

typedef struct bjob {
  braid_job_t j_job;          /* j_data = this job */
  braid_msg_t *j_fn, *j_args;
  braid_future_t *j_fut;
} bjob_t;

static struct runtime {
  pthread_mutex_t mtx;        /* Protects: started, have_owner/owner, live,
                                 the config fields before start */
  bool started;
  _Atomic bool stopping;       /* shutdown has begun; read lock-free */
  int nworkers;               /* config, then immutable once started */
  int nshards;                /* config (0: STATES_PER_WORKER per worker) */
  int max_threads;            /* config */
  double preempt_ms;
  int blocking_max;
  shard_t *shards;            /* immutable while started */
  braid_sched_t *sched;       /* immutable while started */
  braid_jobpool_t *jobs;      /* the blocking pool */
  task_t *live;               /* every task not yet ended */
  braid_timerq_t *timers;     /* driven by the scheduler */
  char *path, *cpath;         /* the host's package.path / cpath */
  pthread_t owner;            /* the thread that opened braid first */
  bool have_owner;
  /* Counters, on cache lines of their own: the fields above are read at
   * every resume (sched, timers), and a counter written beside them pulls
   * their line away from every other worker at each write (ints one-way
   * across 2 workers: false sharing with rt.messages, bumped per send). */
  _Alignas(64) _Atomic uint64_t messages;    /* per send */
  _Alignas(64) _Atomic long active;  /* tasks queued, ready or running (not blocked) */
  _Atomic uint64_t epoch;     /* bumped by every wake, spawn and end */
  _Alignas(64) _Atomic unsigned next_shard;  /* placement cursor */
  _Atomic long nlive;
  _Atomic long binflight;     /* blocking jobs queued or running */
  _Atomic uint64_t spawned, completed, failed, next_id;
  _Atomic int interrupt;      /* braid_interrupt() was called */
  /* The waiter the owner's thread parks on now, or NULL (braid_interrupt
   * fires it). */
  braid_waiter_t *_Atomic owner_waiter;
  _Atomic bool no_deadlock;   /* the deadlock check is off */
  _Atomic bool quiet_reports; /* shut down: no unobserved-error reports */
  char pad_end[64];           /* nothing of another object on the last line */
} rt = {
  .mtx = PTHREAD_MUTEX_INITIALIZER,
  .nworkers = 0,
  .max_threads = 256,
  .preempt_ms = 10,
  .blocking_max = 64,
};

static _Thread_local BRAID_TLS_HOT shard_t *tls_shard;      /* the shard this thread runs now */
static _Thread_local BRAID_TLS_HOT task_t *tls_task;        /* the task being resumed here */

static void preempt_hook(lua_State *L, lua_Debug *ar);

static int online_cpus(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

/* ------------------------------------------------------------------------ */
/* helpers */

int braid__raise(lua_State *L, const char *s) {
  lua_pushstring(L, s);
  return lua_error(L);
}

void braid__count_message(void) {
  /* Relaxed: a statistic. */
  atomic_fetch_add_explicit(&rt.messages, 1, memory_order_relaxed);
}

lua_Number braid__opttimeout(lua_State *L, int arg, const char *fname) {
  if (lua_isnoneornil(L, arg)) return -1;
  lua_Number s = braid__checknumber(L, arg, fname);
  if (s != s) braid__argerror(L, arg, fname, "timeout is NaN");
  if (s < 0) braid__argerror(L, arg, fname, "timeout must be >= 0");
  return s;
}

int64_t braid__optdeadline(lua_State *L, int arg, const char *fname) {
  return braid__timeout_deadline(braid__opttimeout(L, arg, fname));
}

static task_t *current_task(lua_State *L) {
  task_t *t = tls_task;
  return t && t->t_co == L ? t : NULL;
}

void **braid__codec_slot(lua_State *L) {
  task_t *t = tls_task;
  return t && t->t_co == L ? &t->t_home->sh_codec : NULL;
}

void braid__pushenv(lua_State *L) {
  task_t *t = tls_task;
  if (t == NULL) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
    return;
  }
  if (t->t_envref == LUA_NOREF) {
    /* The task's own globals, made when a function that reads or writes
     * globals first arrives in it (its _ENV upvalue): a task whose
     * function touches none, `function() return ch:recv() end`, never
     * has a table (bench/runtime.lua's memory row). */
    lua_createtable(L, 0, 0);
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->t_home->sh_envmt);
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    t->t_envref = luaL_ref(L, LUA_REGISTRYINDEX);
    return;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->t_envref);
}

/* Encodes n values (copied from idx) under protection.  Returns the message,
 * or NULL with the error message pushed. */
typedef struct enc { int n; const char *root; braid_msg_t *out; } enc_t;

static int enc_body(lua_State *L) {
  enc_t *e = lua_touserdata(L, 1);
  e->out = braid__encode(L, 2, e->n, e->root);
  return 0;
}

braid_msg_t *braid__pencode(lua_State *L, int idx, int n, const char *root) {
  enc_t e = { n, root, NULL };
  idx = lua_absindex(L, idx);
  luaL_checkstack(L, n + 2, "braid: too many values");
  lua_pushcfunction(L, enc_body);
  lua_pushlightuserdata(L, &e);
  for (int i = 0; i < n; i++) lua_pushvalue(L, idx + i);
  if (lua_pcall(L, n + 1, 0, 0) != LUA_OK) return NULL;
  return e.out;
}

/* Decodes m onto L under protection; returns the count or -1 with the error
 * pushed. */
typedef struct dec { braid_msg_t *m; int n; } dec_t;

static int dec_body(lua_State *L) {
  dec_t *d = lua_touserdata(L, 1);
  lua_pop(L, 1);
  d->n = braid__decode(L, d->m);
  return d->n;
}

static int pdecode(lua_State *L, braid_msg_t *m) {
  dec_t d = { m, 0 };
  lua_pushcfunction(L, dec_body);
  lua_pushlightuserdata(L, &d);
  if (lua_pcall(L, 1, LUA_MULTRET, 0) != LUA_OK) return -1;
  return d.n;
}

/* A rejection is two values: the error and the remote traceback. */
static braid_msg_t *rejection(lua_State *L, int erridx, const char *tb) {
  erridx = lua_absindex(L, erridx);
  lua_pushvalue(L, erridx);
  lua_pushstring(L, tb ? tb : "");
  braid_msg_t *m = braid__pencode(L, -2, 2, "error");
  if (m == NULL) {                      /* an error value that cannot travel */
    lua_pop(L, 1);
    lua_pushstring(L, luaL_tolstring(L, erridx, NULL));
    lua_remove(L, -2);
    lua_pushstring(L, tb ? tb : "");
    m = braid__pencode(L, -2, 2, "error");
    if (m == NULL) lua_pop(L, 1);
  }
  lua_pop(L, 2);
  return m;
}

int braid__raise_rejection(lua_State *L, braid_msg_t *m) {
  /* Decode, release, then raise: nothing may leak past lua_error. */
  int k = m ? braid__decode(L, m) : 0;
  braid_msg_release(m);
  if (k == 0) return braid__raise(L, "rejected");
  braid__hint_globals(L, -k);
  if (k >= 2 && lua_type(L, -k) == LUA_TSTRING && lua_type(L, -k + 1) == LUA_TSTRING &&
      lua_rawlen(L, -k + 1) > 0) {
    lua_settop(L, lua_gettop(L) - k + 2);
    lua_pushliteral(L, "\n[remote] ");
    lua_insert(L, -2);
    lua_concat(L, 3);                 /* err .. "\n[remote] " .. traceback */
  } else {
    lua_settop(L, lua_gettop(L) - k + 1);   /* the error value alone */
  }
  return lua_error(L);
}

char *braid__format_unobserved(braid_future_t *f, braid_msg_t *err) {
  /* Errors that surface while (or after) the runtime shuts down are the
   * shutdown's own cancellation unwinding through tasks: not the user's. */
  if (atomic_load_explicit(&rt.quiet_reports, memory_order_acquire)) return NULL;
  size_t len = 0;
  const char *s = err ? braid__msg_first_string(err, &len) : NULL;
  if (s == NULL) s = "(an error that is not a string)", len = strlen(s);
  /* The task is named from its future: the report may come from the
   * future's last release, long after the task ended. */
  uint64_t tid = braid_future_task_id(f);
  const char *name = braid_future_task_name(f);
  unsigned long long fid = (unsigned long long)braid_future_id(f);
  char who[128];
  if (tid != 0 && name) snprintf(who, sizeof who, "task '%.100s'", name);
  else if (tid != 0) snprintf(who, sizeof who, "task %llu", (unsigned long long)tid);
  const char *fmt = tid != 0 ? "braid: %s (braid.future#%llu) failed and nobody awaited it: %.*s\n"
                             : "braid: an error nobody awaited%s (braid.future#%llu, a rejected "
                               "future): %.*s\n";
  if (tid == 0) who[0] = '\0';
  int n = snprintf(NULL, 0, fmt, who, fid, (int)len, s);
  char *out = n >= 0 ? malloc((size_t)n + 1) : NULL;
  if (out) snprintf(out, (size_t)n + 1, fmt, who, fid, (int)len, s);
  return out;
}

bool braid__report_unobserved(braid_future_t *f, braid_msg_t *err) {
  if (atomic_load_explicit(&rt.quiet_reports, memory_order_acquire)) return false;
  size_t len = 0;
  const char *s = err ? braid__msg_first_string(err, &len) : NULL;
  if (s == NULL) s = "(an error that is not a string)", len = strlen(s);
  if (braid__embed_report(s, len)) return true;   /* the host's reporter */
  char *msg = braid__format_unobserved(f, err);
  if (msg == NULL) return true;         /* out of memory: reported, unprinted */
  fputs(msg, stderr);
  fflush(stderr);
  free(msg);
  return true;
}

static void report_unobserved(braid_future_t *f, braid_msg_t *err) {
  braid__report_unobserved(f, err);
}

/* ------------------------------------------------------------------------ */
/* queues and waking */

/* Queues t on its shard and makes the shard ready: in the shard's runnext
 * slot when it was woken from a wait (next), else at the tail.  Any
 * thread, no core lock held. */
static void push_ready(task_t *t, bool next) {
  shard_t *sh = t->t_home;
  t->t_next = NULL;
  /* acq_rel: the task's fields written before its wake are visible to the
   * thread that swaps it out; the displaced one's likewise to us. */
  if (next) t = atomic_exchange_explicit(&sh->sh_next, t, memory_order_acq_rel);
  if (t) {
    BRAID_PCHECK(pthread_mutex_lock(&sh->sh_mtx));
    if (sh->sh_rtail) sh->sh_rtail->t_next = t; else sh->sh_rhead = t;
    sh->sh_rtail = t;
    BRAID_PCHECK(pthread_mutex_unlock(&sh->sh_mtx));
  }
  /* Counted after the put: a pop that sees the count finds a task (this
   * one, or one whose count it borrows and which then waits for its own),
   * so the count never goes below zero.  A pop that misses this one is
   * followed by the braid_sched_ready below, or (on sh's own thread) by
   * shard_run's next pop. */
  atomic_fetch_add_explicit(&sh->sh_nready, 1, memory_order_release);
  /* The thread running sh pops its queue again before it gives sh back:
   * nothing to tell the scheduler. */
  if (tls_shard != sh) braid_sched_ready(rt.sched, &sh->sh_unit);
}

/* The waiter's wake callback: any thread, no core lock held. */
static void task_wake(braid_waiter_t *wt) {
  task_t *t = wt->w_data;
  atomic_fetch_add_explicit(&rt.active, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&rt.epoch, 1, memory_order_relaxed);
  atomic_store_explicit(&t->t_state, T_READY, memory_order_relaxed);
  push_ready(t, true);
}

static void task_timer_cb(braid_timer_t *tm) {
  task_t *t = tm->t_data;
  braid_waiter_fire(&t->t_waiter, BRAID_W_TIMEOUT, BRAID_ETIMEDOUT, NULL);
}

static task_t *pop_queue(shard_t *sh) {
  BRAID_PCHECK(pthread_mutex_lock(&sh->sh_mtx));
  task_t *t = sh->sh_rhead;
  if (t) {
    sh->sh_rhead = t->t_next;
    if (sh->sh_rhead == NULL) sh->sh_rtail = NULL;
  }
  BRAID_PCHECK(pthread_mutex_unlock(&sh->sh_mtx));
  return t;
}

static task_t *pop_ready(shard_t *sh) {
  if (atomic_load_explicit(&sh->sh_nready, memory_order_acquire) <= 0) return NULL;
  task_t *t = NULL;
  bool fair = ++sh->sh_tick % SHARD_FAIR_TICK == 0;
  if (fair) t = pop_queue(sh);
  if (t == NULL && atomic_load_explicit(&sh->sh_next, memory_order_relaxed) != NULL)
    t = atomic_exchange_explicit(&sh->sh_next, NULL, memory_order_acq_rel);
  if (t == NULL && !fair) t = pop_queue(sh);
  if (t) {
    t->t_next = NULL;
    atomic_fetch_sub_explicit(&sh->sh_nready, 1, memory_order_relaxed);
  }
  return t;
}

/* Picks the shard for a new task: round robin, passing over shards whose
 * thread sits in a C call (their tasks wait for it). */
static shard_t *place(void) {
  unsigned k = atomic_fetch_add_explicit(&rt.next_shard, 1, memory_order_relaxed);
  for (int i = 0; i < rt.nshards; i++) {
    shard_t *sh = &rt.shards[(k + (unsigned)i) % (unsigned)rt.nshards];
    if (!braid_sched_unit_in_c(&sh->sh_unit, NULL)) return sh;
  }
  return &rt.shards[k % (unsigned)rt.nshards];
}

/* ------------------------------------------------------------------------ */
/* running tasks */

static void task_cancel_hook(braid_future_t *f, void *arg) {
  task_t *t = arg;
  (void)f;
  /* seq_cst: pairs with the fence in park_task (Dekker: either the task
   * sees the flag after arming, or this fire finds the waiter armed).  A
   * running task is not interrupted here: it sees the flag at its next
   * blocking call, or when sysmon preempts it at the end of its slice. */
  atomic_store_explicit(&t->t_cancel, true, memory_order_seq_cst);
  braid_waiter_fire(&t->t_waiter, BRAID_W_CANCEL, BRAID_ECANCELED, NULL);
}

static void task_free(task_t *t) {
  BRAID_PCHECK(pthread_mutex_lock(&rt.mtx));
  if (t->t_lprev) t->t_lprev->t_lnext = t->t_lnext; else rt.live = t->t_lnext;
  if (t->t_lnext) t->t_lnext->t_lprev = t->t_lprev;
  BRAID_PCHECK(pthread_mutex_unlock(&rt.mtx));
  atomic_fetch_sub_explicit(&rt.nlive, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&rt.epoch, 1, memory_order_relaxed);
  if (t->t_home) atomic_fetch_sub_explicit(&t->t_home->sh_ntasks, 1, memory_order_relaxed);
  braid_msg_release(t->t_fn);
  braid_msg_release(t->t_args);
  braid_future_release(t->t_fut);
  if (t->t_cases != t->t_small) free(t->t_cases);
  braid_waiter_fini(&t->t_waiter);
  free(t);
}

/* Settles the task's future and frees it; the coroutine is recycled. */
static void task_end(shard_t *sh, task_t *t, braid_fstate_t st, braid_msg_t *m) {
  lua_State *L = sh->sh_L;
  /* t is not sh_current: run_task cleared it when the resume returned.  A
   * hook setter that read it before holds sh_mtx until its lua_sethook
   * returned: once we have had the lock, none can reach t, and the hook it
   * may have left is cleared before the coroutine is recycled. */
  BRAID_PCHECK(pthread_mutex_lock(&sh->sh_mtx));
  BRAID_PCHECK(pthread_mutex_unlock(&sh->sh_mtx));
  if (t->t_co) lua_sethook(t->t_co, NULL, 0, 0);
  atomic_fetch_sub_explicit(&rt.active, 1, memory_order_relaxed);
  if (st == BRAID_FUTURE_REJECTED && m && braid_future_unobserved &&
      atomic_load_explicit(&((braid_obj_t *)t->t_fut)->o_rc, memory_order_acquire) == 1 &&
      !atomic_load_explicit(&t->t_fut->f_observed, memory_order_acquire)) {
    braid_future_unobserved(t->t_fut, m);   /* nobody else can ever see it */
    braid_future_observe(t->t_fut);
  }
  /* Counted before the settle: whoever awaits the future and then reads
   * braid.stats() sees the task completed. */
  atomic_fetch_add_explicit(&rt.completed, 1, memory_order_relaxed);
  braid_future_settle(t->t_fut, st, m);   /* also drops the cancel hook */
  if (t->t_co) {
    lua_State *co = t->t_co;
    if (lua_status(co) == LUA_OK && sh->sh_npool < POOL_MAX) {
      lua_settop(co, 0);
      sh->sh_pool[sh->sh_npool++] = t->t_coref;
    } else {
      /* Not recycled: an error raised by a hook (cancellation) leaves the
       * coroutine with hooks disabled (Lua restores allowhook only for a
       * pcall), and no preemption could ever stop the next task in it. */
      reset_thread(co, L);
      luaL_unref(L, LUA_REGISTRYINDEX, t->t_coref);
    }
    t->t_co = NULL;
  }
  if (t->t_envref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, t->t_envref);
  t->t_envref = LUA_NOREF;
  task_free(t);
}

static lua_State *new_private_state(void);

/* Opens sh's Lua state (on the thread that first runs it).  Returns false
 * when out of memory. */
static bool shard_open(shard_t *sh) {
  lua_State *L = new_private_state();
  if (L == NULL) return false;
  lua_createtable(L, 0, 1);           /* task globals read through to _G */
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
  lua_setfield(L, -2, "__index");
  sh->sh_envmt = luaL_ref(L, LUA_REGISTRYINDEX);
  sh->sh_L = L;
  return true;
}

/* Makes t's coroutine and globals in its shard's state and loads its
 * function and arguments.  Returns false when the task already ended. */
static bool task_start(shard_t *sh, task_t *t) {
  lua_State *L = sh->sh_L;
  if (atomic_load_explicit(&t->t_cancel, memory_order_seq_cst)) {
    task_end(sh, t, BRAID_FUTURE_CANCELLED, NULL);
    return false;
  }
  if (sh->sh_npool > 0) {
    t->t_coref = sh->sh_pool[--sh->sh_npool];
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->t_coref);
    t->t_co = lua_tothread(L, -1);
    lua_pop(L, 1);
  } else {
    t->t_co = lua_newthread(L);
    t->t_coref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  /* The task's own globals wait for braid__pushenv: made when a
   * function with an _ENV upvalue is decoded into the task. */
  tls_task = t;                         /* braid__pushenv sees the task */
  lua_State *co = t->t_co;
  int nf = pdecode(co, t->t_fn);
  int na = nf != 1 ? -1 : t->t_args ? pdecode(co, t->t_args) : 0;
  tls_task = NULL;
  braid_msg_release(t->t_fn);
  braid_msg_release(t->t_args);
  t->t_fn = t->t_args = NULL;
  if (nf != 1 || na < 0 || lua_type(co, 1) != LUA_TFUNCTION) {
    if (nf == 1 && na >= 0) lua_pushliteral(co, "braid: task function did not decode");
    braid_msg_t *m = rejection(co, -1, NULL);
    lua_settop(co, 0);
    task_end(sh, t, BRAID_FUTURE_REJECTED, m);
    return false;
  }
  t->t_nargs = na;
  return true;
}

static void run_task(shard_t *sh, task_t *t) {
  lua_State *L = sh->sh_L;
  if (t->t_co == NULL && !task_start(sh, t)) return;
  lua_State *co = t->t_co;
  /* seq_cst: a hook setter (sysmon's preemption, shutdown) takes sh_mtx
   * and reads sh_current; publishing t before resuming means a request
   * made from now on reaches this resume. */
  atomic_store_explicit(&sh->sh_current, t, memory_order_seq_cst);
  atomic_store_explicit(&t->t_state, T_RUNNING, memory_order_relaxed);
  int yielded = t->t_yield;
  t->t_yield = Y_NONE;
  /* Cancelled while it sat preempted (not while blocked: a wait that a
   * partner completed returns its result first, see the design notes):
   * stop at its first instruction. */
  if (yielded == Y_YIELD && atomic_load_explicit(&t->t_cancel, memory_order_seq_cst) &&
      !t->t_cancel_raised)
    lua_sethook(co, preempt_hook, LUA_MASKCOUNT, 1);
  tls_task = t;
  int nres = 0;
  int status = lua_resume(co, L, t->t_nargs, &nres);
  tls_task = NULL;
  t->t_nargs = 0;
  /* The resume is over.  No lock: a hook setter that read t just before
   * this store may still set its hook after the clear below; t then yields
   * once at the start of its next resume (preempt_hook), which is what the
   * setter asked for anyway.  task_end waits for such a setter before t
   * and its coroutine are reused. */
  atomic_store_explicit(&sh->sh_current, NULL, memory_order_seq_cst);
  lua_sethook(co, NULL, 0, 0);        /* a hook that did not fire */
  if (status == LUA_YIELD) {
    lua_pop(co, nres);
    if (t->t_yield != Y_BLOCK) {      /* preempted, braid.yield, coroutine.yield */
      atomic_fetch_add_explicit(&rt.epoch, 1, memory_order_relaxed);
      t->t_yield = Y_YIELD;
      atomic_store_explicit(&t->t_state, T_READY, memory_order_relaxed);
      push_ready(t, false);
    }
    return;
  }
  if (status == LUA_OK) {
    lua_xmove(co, L, nres);
    /* Scalar results (most) need no protected call. */
    braid_msg_t *m = braid__encode_scalars(L, -nres, nres);
    if (m == NULL) m = braid__pencode(L, -nres, nres, "results");
    if (m == NULL) {                  /* a result that cannot travel */
      braid_msg_t *r = rejection(L, -1, NULL);
      lua_settop(L, 0);
      task_end(sh, t, BRAID_FUTURE_REJECTED, r);
      return;
    }
    lua_settop(L, 0);
    task_end(sh, t, BRAID_FUTURE_RESOLVED, m);
    return;
  }
  /* An error: a cancellation we raised, or a failure with a traceback. */
  if (t->t_cancel_raised && atomic_load_explicit(&t->t_cancel, memory_order_relaxed)) {
    task_end(sh, t, BRAID_FUTURE_CANCELLED, NULL);
    return;
  }
  atomic_fetch_add_explicit(&rt.failed, 1, memory_order_relaxed);
  lua_xmove(co, L, 1);                /* the error value */
  luaL_traceback(L, co, NULL, 0);
  braid_msg_t *m = rejection(L, -2, lua_tostring(L, -1));
  lua_settop(L, 0);
  task_end(sh, t, BRAID_FUTURE_REJECTED, m);
}

/* ops.run: runs sh's ready tasks until none is left, or until its slice
 * has ended while other shards wait. */
static bool shard_run(void *ctx, braid_unit_t *u, int64_t slice_end) {
  shard_t *sh = u->u_data;
  (void)ctx;
  if (sh->sh_L == NULL && !shard_open(sh)) {
    /* Out of memory: its tasks wait for a later try. */
    return atomic_load_explicit(&sh->sh_nready, memory_order_relaxed) > 0;
  }
  tls_shard = sh;
  bool more = false;
  for (;;) {
    if (atomic_load_explicit(&sh->sh_stop, memory_order_acquire)) break;
    task_t *t = pop_ready(sh);
    if (t == NULL) break;
    braid_sched_progress();
    run_task(sh, t);
    if ((braid_sched_waiting(rt.sched) && braid_now_ns() >= slice_end) ||
        braid_sched_handed_off()) {
      more = atomic_load_explicit(&sh->sh_nready, memory_order_relaxed) > 0;
      break;
    }
  }
  tls_shard = NULL;
  return more;
}

/* ops.preempt (sysmon, no scheduler lock held): hook the running task so
 * that it yields at its next instruction (or raises "cancelled"). */
static void shard_preempt(void *ctx, braid_unit_t *u) {
  shard_t *sh = u->u_data;
  (void)ctx;
  BRAID_PCHECK(pthread_mutex_lock(&sh->sh_mtx));
  task_t *t = atomic_load_explicit(&sh->sh_current, memory_order_acquire);
  if (t) lua_sethook(t->t_co, preempt_hook, LUA_MASKCOUNT, 1);
  BRAID_PCHECK(pthread_mutex_unlock(&sh->sh_mtx));
}

static void preempt_hook(lua_State *L, lua_Debug *ar) {
  /* A codec copier runs inside a decode (lcodec.c, "Loaded functions"),
   * which must not be interrupted: the hook waits for the task's own code. */
  if (braid__copying == L && lua_getinfo(L, "S", ar) && strcmp(ar->source, BRAID_COPIER_NAME) == 0)
    return;
  lua_sethook(L, NULL, 0, 0);         /* one shot */
  braid_sched_progress();             /* it fired: this thread is not stuck in C */
  task_t *t = current_task(L);
  if (t == NULL) return;
  if (atomic_load_explicit(&t->t_cancel, memory_order_relaxed) && !t->t_cancel_raised) {
    /* Raised once by a hook (a task that catches it and computes on is
     * not interrupted again); every later blocking call raises too. */
    t->t_cancel_raised = true;
    braid__raise(L, "cancelled");
  }
  if (lua_isyieldable(L)) {
    t->t_yield = Y_YIELD;
    lua_yield(L, 0);
  }
}

/* ------------------------------------------------------------------------ */
/* starting and stopping */

/* luaopen_braid for a shard or pool state (per thread: states open on
 * several threads at once). */
static _Thread_local bool opening_private_state;

static lua_State *new_private_state(void) {
  lua_State *L = braid__new_state();
  if (L == NULL) return NULL;
  luaL_openlibs(L);
  lua_getglobal(L, "package");
  if (rt.path) { lua_pushstring(L, rt.path); lua_setfield(L, -2, "path"); }
  if (rt.cpath) { lua_pushstring(L, rt.cpath); lua_setfield(L, -2, "cpath"); }
  lua_pop(L, 1);
  opening_private_state = true;
  luaL_requiref(L, "braid", luaopen_braid, 1);
  opening_private_state = false;
  lua_pop(L, 1);
  return L;
}

bool braid__opening_private_state(void) { return opening_private_state; }

static void timers_kick(void *arg) {
  (void)arg;
  braid_sched_t *s = rt.sched;
  if (s) braid_sched_kick(s);
}

static void shard_thread_start(void *ctx) { (void)ctx; }

/* ops.poll / ops.poll_break: the netpoller (braid.net's sockets), with the
 * next timer's deadline as the limit. */
static void shard_poll(void *ctx, int64_t deadline) {
  (void)ctx;
  braid__netpoll_poll(deadline);
}

static void shard_poll_break(void *ctx) {
  (void)ctx;
  braid__netpoll_break();
}

static void pool_thread_exit(void);

/* Frees what rt_start made (the scheduler is not running). */
static void rt_free_parts(void) {
  if (rt.shards) {
    for (int i = 0; i < rt.nshards; i++) {
      shard_t *sh = &rt.shards[i];
      if (sh->sh_L) braid__close_state(sh->sh_L);
      BRAID_PCHECK(pthread_mutex_destroy(&sh->sh_mtx));
    }
    free(rt.shards);
    rt.shards = NULL;
  }
  if (rt.sched) braid_sched_free(rt.sched);
  rt.sched = NULL;
  if (rt.jobs) braid_jobpool_stop(rt.jobs, BRAID_FOREVER);
  rt.jobs = NULL;
  /* Timers still queued (braid.after / braid.ticker: a tick owns its
   * channel reference) fire now and free what they own; a ticker's re-add
   * fails.  Task timers are gone with their tasks (task_abandon). */
  if (rt.timers) braid_timerq_close(rt.timers);
  if (rt.timers) braid_timerq_free(rt.timers);
  rt.timers = NULL;
  free(rt.path);
  free(rt.cpath);
  rt.path = rt.cpath = NULL;
}

static void rt_start(lua_State *L) {
  /* Read the host's paths before taking the lock: no Lua API under a
   * braid mutex. */
  char *path = NULL, *cpath = NULL;
  if (lua_getglobal(L, "package") == LUA_TTABLE) {
    if (lua_getfield(L, -1, "path") == LUA_TSTRING) path = strdup(lua_tostring(L, -1));
    if (lua_getfield(L, -2, "cpath") == LUA_TSTRING) cpath = strdup(lua_tostring(L, -1));
    lua_pop(L, 2);
  }
  lua_pop(L, 1);
  BRAID_PCHECK(pthread_mutex_lock(&rt.mtx));
  if (rt.started) {
    BRAID_PCHECK(pthread_mutex_unlock(&rt.mtx));
    free(path);
    free(cpath);
    return;
  }
  if (rt.nworkers <= 0) rt.nworkers = online_cpus();
  if (rt.nshards <= 0) rt.nshards = STATES_PER_WORKER * rt.nworkers;
  rt.path = path;
  rt.cpath = cpath;
  const char *why = "out of memory";
  rt.timers = braid_timerq_new_driven();
  rt.shards = calloc((size_t)rt.nshards, sizeof(shard_t));
  rt.jobs = braid_jobpool_new(rt.blocking_max, 10000000000LL, pool_thread_exit);
  if (rt.timers == NULL || rt.shards == NULL || rt.jobs == NULL) goto error;
  for (int i = 0; i < rt.nshards; i++) {
    shard_t *sh = &rt.shards[i];
    sh->sh_id = i;
    braid_unit_init(&sh->sh_unit, i, sh);
    if (pthread_mutex_init(&sh->sh_mtx, NULL) != 0) {
      rt.nshards = i;                   /* rt_free_parts destroys the first i */
      goto error;
    }
    atomic_init(&sh->sh_nready, 0);
    atomic_init(&sh->sh_current, NULL);
    atomic_init(&sh->sh_next, NULL);
    atomic_init(&sh->sh_stop, false);
    atomic_init(&sh->sh_ntasks, 0);
    sh->sh_envmt = LUA_NOREF;
  }
  static const braid_sched_ops_t ops = {
    .run = shard_run, .preempt = shard_preempt, .thread_start = shard_thread_start,
    .poll = shard_poll, .poll_break = shard_poll_break,
  };
  braid_sched_config_t cfg = {
    .workers = rt.nworkers,
    .max_threads = rt.max_threads,
    .preempt_ns = (int64_t)(rt.preempt_ms * 1e6),
    .timers = rt.timers,
  };
  if (braid__netpoll_drive() != 0) goto error;
  rt.sched = braid_sched_new(&cfg, &ops, NULL);
  if (rt.sched == NULL) goto error;
  braid_timerq_set_kick(rt.timers, timers_kick, NULL);
  if (braid_future_unobserved == NULL)    /* a C host may have set its own */
    braid_future_unobserved = report_unobserved;
  if (braid_sched_start(rt.sched) != 0) {
    why = "cannot start its threads";
    goto error;
  }
  rt.started = true;
  atomic_store_explicit(&rt.quiet_reports, false, memory_order_release);
  BRAID_PCHECK(pthread_mutex_unlock(&rt.mtx));
  return;
error:
  rt_free_parts();
  BRAID_PCHECK(pthread_mutex_unlock(&rt.mtx));
  luaL_error(L, "braid: cannot start the runtime (%s)", why);
}

braid_timerq_t *braid__timers(lua_State *L) {
  if (!rt.started) rt_start(L);
  return rt.timers;
}

/* Ends a task that is not running, from the shutdown path (every thread
 * that runs tasks is gone). */
static void task_abandon(task_t *t) {
  if (t->t_co != NULL && t->t_ncases >= 0 && t->t_yield == Y_BLOCK) {
    /* Blocked: take its nodes off every queue and drop its timer. */
    if (braid_waiter_claim(&t->t_waiter, BRAID_W_INTR)) {
      t->t_waiter.w_err = BRAID_EINTR;
    }
    if (t->t_timed) braid_timer_cancel(rt.timers, &t->t_timer);
    braid_selres_t r;
    braid_select_disarm(t->t_cases, t->t_ncases, &t->t_waiter, &r);
    for (int i = 0; i < t->t_ncases; i++) {
      if (t->t_cases[i].c_op == BRAID_OP_SEND && !(r.s_index == i && r.s_err == 0))
        braid_msg_release(t->t_cases[i].c_msg);
      braid_obj_release((braid_obj_t *)t->t_cases[i].c_obj);
    }
    braid_msg_release(r.s_msg);
    t->t_yield = Y_NONE;
  }
  atomic_fetch_add_explicit(&rt.active, 1, memory_order_relaxed);  /* task_end drops it */
  if (t->t_home && t->t_home->sh_L) {
    task_end(t->t_home, t, BRAID_FUTURE_CANCELLED, NULL);
  } else {
    atomic_fetch_add_explicit(&rt.completed, 1, memory_order_relaxed);
    braid_future_settle(t->t_fut, BRAID_FUTURE_CANCELLED, NULL);
    task_free(t);
  }
}

/* Shuts the runtime down: cancels every task, stops the scheduler, ends
 * every task, closes the shard states.  Called when the state that opened
 * braid first is closed.  Tasks get SHUTDOWN_GRACE_NS to come back to the
 * scheduler; a thread still inside Lua after that (a task that swallows
 * its cancellation and computes on) is detached, and the runtime leaves
 * everything such a thread may touch allocated: the process is exiting, as
 * a Go program exits with goroutines still running. */
static void rt_stop(void) {
  BRAID_PCHECK(pthread_mutex_lock(&rt.mtx));
  if (!rt.started || atomic_load_explicit(&rt.stopping, memory_order_seq_cst)) {
    BRAID_PCHECK(pthread_mutex_unlock(&rt.mtx));
    return;
  }
  atomic_store_explicit(&rt.stopping, true, memory_order_seq_cst);
  atomic_store_explicit(&rt.quiet_reports, true, memory_order_release);
  for (task_t *t = rt.live; t; t = t->t_lnext)
    atomic_store_explicit(&t->t_cancel, true, memory_order_seq_cst);
  BRAID_PCHECK(pthread_mutex_unlock(&rt.mtx));
  /* No shard runs another task; the running ones raise at their next
   * instruction. */
  for (int i = 0; i < rt.nshards; i++) {
    shard_t *sh = &rt.shards[i];
    atomic_store_explicit(&sh->sh_stop, true, memory_order_release);
    shard_preempt(NULL, &sh->sh_unit);
  }
  bool joined = braid_sched_stop(rt.sched, SHUTDOWN_GRACE_NS);
  /* No worker polls any more: close every socket (waking what waits on
   * one), then the epoll set. */
  braid__netpoll_shutdown();
  /* A blocking job gets the same grace (one stuck in a C call keeps its
   * thread, detached): exit never waits seconds for it. */
  /* Out of rt.jobs under the lock first: a detached worker still running
   * a task may call braid.stats() (l_stats reads the pool under rt.mtx)
   * while the pool is stopped and freed.  tests/app/shutdown/pcall_braid.lua
   * crashed in braid_jobpool_stats(NULL) in about 1 run in 6. */
  BRAID_PCHECK(pthread_mutex_lock(&rt.mtx));
  braid_jobpool_t *jobs = rt.jobs;
  rt.jobs = NULL;
  BRAID_PCHECK(pthread_mutex_unlock(&rt.mtx));
  bool pool_done = braid_jobpool_stop(jobs, SHUTDOWN_GRACE_NS);  /* freed, or left to its last thread */
  if (!joined) {
    /* Leave the shards, the tasks and the scheduler to the detached
     * threads; start afresh if the host opens braid again. */
    BRAID_PCHECK(pthread_mutex_lock(&rt.mtx));
    rt.shards = NULL;
    rt.sched = NULL;
    rt.timers = NULL;
    rt.live = NULL;
    rt.path = rt.cpath = NULL;
    atomic_store_explicit(&rt.active, 0, memory_order_relaxed);
    atomic_store_explicit(&rt.nlive, 0, memory_order_relaxed);
    rt.started = false;
    atomic_store_explicit(&rt.stopping, false, memory_order_seq_cst);
    rt.have_owner = false;
    BRAID_PCHECK(pthread_mutex_unlock(&rt.mtx));
    return;
  }
  (void)pool_done;
  /* Every thread that runs tasks is gone: end what is left. */
  for (;;) {
    BRAID_PCHECK(pthread_mutex_lock(&rt.mtx));
    task_t *t = rt.live;
    BRAID_PCHECK(pthread_mutex_unlock(&rt.mtx));
    if (t == NULL) break;
    task_abandon(t);
  }
  /* Every task is gone: counts that a task queued or woken during the
   * shutdown still holds must not leak into a runtime started later (its
   * deadlock check would never fire). */
  atomic_store_explicit(&rt.active, 0, memory_order_relaxed);
  atomic_store_explicit(&rt.nlive, 0, memory_order_relaxed);
  atomic_store_explicit(&rt.binflight, 0, memory_order_relaxed);
  rt_free_parts();                      /* closes the states: no lock held */
  BRAID_PCHECK(pthread_mutex_lock(&rt.mtx));
  rt.started = false;
  atomic_store_explicit(&rt.stopping, false, memory_order_seq_cst);
  rt.have_owner = false;
  BRAID_PCHECK(pthread_mutex_unlock(&rt.mtx));
}

/* ------------------------------------------------------------------------ */
/* blocking: the shared wait */

/* "; task 2 'producer' waits on send braid.chan#4" for each blocked task
 * (at most 8, then "; and N more"), into buf.  No Lua under rt.mtx. */
static void deadlock_holders(char *buf, size_t size) {
  size_t used = 0;
  int shown = 0, more = 0;
  buf[0] = '\0';
  BRAID_PCHECK(pthread_mutex_lock(&rt.mtx));
  for (task_t *t = rt.live; t; t = t->t_lnext) {
    int st = atomic_load_explicit(&t->t_state, memory_order_relaxed);
    const char *w = atomic_load_explicit(&t->t_what, memory_order_relaxed);
    if ((st != T_BLOCKED && st != T_SLEEPING) || w == NULL) continue;
    if (shown == 8) { more++; continue; }
    braid_objtype_t *ot = atomic_load_explicit(&t->t_ontype, memory_order_relaxed);
    char name[80];
    if (t->t_name) snprintf(name, sizeof name, " '%s'", t->t_name); else name[0] = '\0';
    int k;
    if (ot)
      k = snprintf(buf + used, size - used, "; task %llu%s waits on %s braid.%s#%llu",
                   (unsigned long long)t->t_id, name, w, ot->ot_name,
                   (unsigned long long)atomic_load_explicit(&t->t_onid, memory_order_relaxed));
    else
      k = snprintf(buf + used, size - used, "; task %llu%s waits on %s",
                   (unsigned long long)t->t_id, name, w);
    if (k < 0 || (size_t)k >= size - used) { more++; shown = 8; continue; }
    used += (size_t)k;
    shown++;
  }
  BRAID_PCHECK(pthread_mutex_unlock(&rt.mtx));
  if (more > 0 && used + 32 < size) snprintf(buf + used, size - used, "; and %d more", more);
}

static int complete(lua_State *L, task_t *t, braid_case_t *cases, int n,
                    braid_selres_t *r, braid_finish_fn finish, const char *what,
                    braid_obj_t *on) {
  for (int i = 0; i < n; i++) {
    if (cases[i].c_op == BRAID_OP_SEND && !(r->s_index == i && r->s_err == 0))
      braid_msg_release(cases[i].c_msg);
    braid_obj_release((braid_obj_t *)cases[i].c_obj);   /* taken in braid__wait */
  }
  if (r->s_index == BRAID_W_CANCEL) {
    braid_msg_release(r->s_msg);
    if (t) t->t_cancel_raised = true;
    return braid__raise(L, "cancelled");
  }
  if (r->s_index == BRAID_W_INTR) {
    braid_msg_release(r->s_msg);
    if (r->s_err == BRAID_EDEADLK) {
      char who[1024];
      deadlock_holders(who, sizeof who);
      if (on)
        lua_pushfstring(L, "braid: deadlock: %s braid.%s#%I (no task, timer or job can complete it)%s",
                        what, on->o_type->ot_name, (lua_Integer)on->o_id, who);
      else
        lua_pushfstring(L, "braid: deadlock: %s (no task, timer or job can complete it)%s", what, who);
      return lua_error(L);
    }
    return braid__raise(L, "braid: interrupted");
  }
  return finish(L, cases, n, r);
}

static int finish_none(lua_State *L, braid_case_t *c, int n, braid_selres_t *r) {
  return 0;
}

static int wait_k(lua_State *L, int status, lua_KContext ctx) {
  task_t *t = (task_t *)ctx;
  (void)status;
  if (t->t_timed) {
    braid_timer_cancel(rt.timers, &t->t_timer);
    t->t_timed = false;
  }
  braid_select_disarm(t->t_cases, t->t_ncases, &t->t_waiter, &t->t_res);
  t->t_yield = Y_NONE;
  int n = t->t_ncases;
  t->t_ncases = 0;
  braid_selres_t r = t->t_res;
  return complete(L, t, t->t_cases, n, &r, t->t_finish,
                  atomic_load_explicit(&t->t_what, memory_order_relaxed), NULL);
}

enum { TASK_SPIN_NS = 5000 };

/* Whether sh has no other task to run now (lock-free hints). */
static bool shard_has_nothing_else(shard_t *sh) {
  return atomic_load_explicit(&sh->sh_nready, memory_order_relaxed) == 0 &&
         !braid_sched_waiting(rt.sched);
}

static bool deadlocked(void) {
  if (atomic_load_explicit(&rt.no_deadlock, memory_order_relaxed)) return false;
  if (atomic_load_explicit(&rt.binflight, memory_order_seq_cst) > 0) return false;
  if (!rt.started) return true;         /* no task exists that could help */
  uint64_t e = atomic_load_explicit(&rt.epoch, memory_order_seq_cst);
  for (int round = 0; round < 2; round++) {
    if (atomic_load_explicit(&rt.active, memory_order_seq_cst) > 0) return false;
    if (atomic_load_explicit(&rt.binflight, memory_order_seq_cst) > 0) return false;
    if (braid_timerq_len(rt.timers) > 0) return false;
    if (round == 0) usleep(2000);       /* let a wake in flight land */
  }
  return atomic_load_explicit(&rt.epoch, memory_order_seq_cst) == e;
}

static int finish_sleep(lua_State *L, braid_case_t *c, int n, braid_selres_t *r);

/* Suspends task t, whose n cases (t->t_cases, objects retained) were just
 * armed on its waiter, until the waiter fires; wait_k finishes the wait. */
static int park_task(lua_State *L, task_t *t, int n, int64_t deadline,
                     braid_finish_fn finish, const char *what, braid_obj_t *on) {
  t->t_ncases = n;
  t->t_finish = finish;
  atomic_store_explicit(&t->t_what, what, memory_order_relaxed);
  atomic_store_explicit(&t->t_ontype, on ? on->o_type : NULL, memory_order_relaxed);
  atomic_store_explicit(&t->t_onid, on ? on->o_id : 0, memory_order_relaxed);
  if (deadline != BRAID_FOREVER) {
    if (braid_timer_add(rt.timers, &t->t_timer, deadline, task_timer_cb, t) == 0)
      t->t_timed = true;
    else
      braid_waiter_fire(&t->t_waiter, BRAID_W_TIMEOUT, BRAID_ETIMEDOUT, NULL);
  }
  /* seq_cst fence: pairs with task_cancel_hook's store (see there). */
  atomic_thread_fence(memory_order_seq_cst);
  if (atomic_load_explicit(&t->t_cancel, memory_order_relaxed))
    braid_waiter_fire(&t->t_waiter, BRAID_W_CANCEL, BRAID_ECANCELED, NULL);
  atomic_store_explicit(&t->t_state, finish == finish_sleep ? T_SLEEPING : T_BLOCKED,
                        memory_order_relaxed);
  atomic_fetch_sub_explicit(&rt.active, 1, memory_order_relaxed);
  t->t_yield = Y_BLOCK;
  return lua_yieldk(L, 0, (lua_KContext)t, wait_k);
}

braid_case_t *braid__wait1_case(lua_State *L, int64_t deadline, braid_waiter_t **w) {
  task_t *t = current_task(L);
  if (t == NULL || atomic_load_explicit(&t->t_cancel, memory_order_relaxed) ||
      !lua_isyieldable(L) || (deadline != BRAID_FOREVER && deadline <= braid_now_ns()))
    return NULL;
  *w = &t->t_waiter;
  return &t->t_cases[0];            /* t_casecap >= 1 */
}

int braid__wait1_park(lua_State *L, int64_t deadline, braid_finish_fn finish, const char *what,
                      braid_obj_t *on) {
  task_t *t = current_task(L);
  /* The object is borrowed from the caller's stack, which the suspended
   * wait does not keep. */
  braid_obj_retain((braid_obj_t *)t->t_cases[0].c_obj);
  return park_task(L, t, 1, deadline, finish, what, on);
}

int braid__wait(lua_State *L, braid_case_t *cases, int n, int64_t deadline,
                braid_finish_fn finish, const char *what, braid_obj_t *on) {
  task_t *t = current_task(L);
  braid_selres_t r;
  /* The cases' objects are borrowed from Lua values that the wait must not
   * depend on (a select's table may change while it waits). */
  for (int i = 0; i < n; i++) braid_obj_retain((braid_obj_t *)cases[i].c_obj);
  bool now_only = deadline != BRAID_FOREVER && deadline <= braid_now_ns();
  if (t && lua_isyieldable(L)) {
    /* Sticky: after a cancel every blocking call raises, so a task that
     * caught "cancelled" still stops at its next wait; cleanup uses the
     * non-blocking try_* calls. */
    if (atomic_load_explicit(&t->t_cancel, memory_order_seq_cst)) {
      r.s_index = BRAID_W_CANCEL;
      r.s_err = BRAID_ECANCELED;
      r.s_msg = NULL;
      return complete(L, t, cases, n, &r, finish, what, on);
    }
    if (n > t->t_casecap) {
      braid_case_t *nc = malloc((size_t)n * sizeof *nc);
      if (nc == NULL) {
        r.s_index = BRAID_W_TIMEOUT;    /* releases like an unfired wait */
        r.s_err = BRAID_ENOMEM;
        r.s_msg = NULL;
        complete(L, t, cases, n, &r, finish_none, what, on);
        return luaL_error(L, "braid: out of memory");
      }
      if (t->t_cases != t->t_small) free(t->t_cases);
      t->t_cases = nc;
      t->t_casecap = n;
    }
    if (n > 0) memcpy(t->t_cases, cases, (size_t)n * sizeof *cases);
    int rc = BRAID_EAGAIN;
    if (!now_only && n == 1 && t->t_cases[0].c_op == BRAID_OP_AWAIT &&
        shard_has_nothing_else(t->t_home)) {
      /* Like Go's spinning M: with nothing else to run on this worker, a
       * few microseconds of polling usually catch a task finishing on the
       * other core (spawn + await), and save the suspend/wake round trip.
       * Only futures: their state is read without a lock.  Polling a
       * channel would take its lock and slow down the very partner it
       * waits for (measured: half the throughput). */
      braid_future_t *f = t->t_cases[0].c_obj;
      int64_t until = braid_now_ns() + TASK_SPIN_NS;
      for (int i = 0; braid_future_state(f) == BRAID_FUTURE_PENDING; i++) {
        if ((i & 15) == 15 &&
            (braid_now_ns() >= until || !shard_has_nothing_else(t->t_home)))
          break;
        braid_cpu_relax();
      }
    }
    if (rc == BRAID_EAGAIN)
      rc = now_only ? braid_select_try(t->t_cases, n, &r)
                    : braid_select_arm(t->t_cases, n, &t->t_waiter, &r);
    if (rc != BRAID_EAGAIN || now_only) {
      if (rc == BRAID_EAGAIN) {
        r.s_index = BRAID_W_TIMEOUT;
        r.s_err = BRAID_ETIMEDOUT;
        r.s_msg = NULL;
      }
      return complete(L, t, t->t_cases, n, &r, finish, what, on);
    }
    return park_task(L, t, n, deadline, finish, what, on);
  }

  /* An OS thread: the main thread, a pool thread, or a call that cannot
   * yield.  One waiter per thread, the core's. */
  braid_waiter_t *tw = braid_thread_waiter();
  bool owner = rt.have_owner && pthread_equal(pthread_self(), rt.owner);
  if (owner && atomic_exchange_explicit(&rt.interrupt, 0, memory_order_acq_rel)) {
    r.s_index = BRAID_W_INTR;
    r.s_err = BRAID_EINTR;
    r.s_msg = NULL;
    return complete(L, NULL, cases, n, &r, finish, what, on);
  }
  int rc = now_only ? braid_select_try(cases, n, &r) : braid_select_arm(cases, n, tw, &r);
  if (rc == BRAID_EAGAIN && now_only) {
    r.s_index = BRAID_W_TIMEOUT;
    r.s_err = BRAID_ETIMEDOUT;
    r.s_msg = NULL;
  } else if (rc == BRAID_EAGAIN) {
    /* braid_interrupt fires the owner's waiter directly (seq_cst: with its
     * store of the flag before it reads owner_waiter, either it sees our
     * waiter or we see its flag). */
    if (owner) {
      atomic_store_explicit(&rt.owner_waiter, tw, memory_order_seq_cst);
      if (atomic_load_explicit(&rt.interrupt, memory_order_seq_cst))
        braid_waiter_fire(tw, BRAID_W_INTR, BRAID_EINTR, NULL);
    }
    /* Only a wait without a deadline on the owner's thread parks in slices,
     * to look for a deadlock: 2 ms, 20 ms, then 100 ms. */
    int64_t step = 2000000;
    for (;;) {
      int64_t slice = deadline;
      if (owner && deadline == BRAID_FOREVER) {
        int64_t s = braid_now_ns() + step;
        if (s < slice) slice = s;
        step = step < 20000000 ? 20000000 : 100000000;
      }
      if (braid_waiter_park_until(tw, slice) == 0) break;
      int special = 0, err = 0;
      if (braid_now_ns() >= deadline) {
        special = BRAID_W_TIMEOUT, err = BRAID_ETIMEDOUT;
      } else if (owner && atomic_exchange_explicit(&rt.interrupt, 0, memory_order_acq_rel)) {
        special = BRAID_W_INTR, err = BRAID_EINTR;
      } else if (owner && deadline == BRAID_FOREVER && deadlocked()) {
        special = BRAID_W_INTR, err = BRAID_EDEADLK;
      } else {
        continue;
      }
      if (braid_waiter_claim(tw, special)) tw->w_err = err;  /* our own: no wake */
      else braid_waiter_park_until(tw, BRAID_FOREVER);    /* a wake is coming */
      break;
    }
    if (owner) atomic_store_explicit(&rt.owner_waiter, NULL, memory_order_seq_cst);
    braid_select_disarm(cases, n, tw, &r);
    if (r.s_index == BRAID_W_INTR && r.s_err == BRAID_EINTR)
      atomic_store_explicit(&rt.interrupt, 0, memory_order_release);   /* consumed */
  }
  return complete(L, NULL, cases, n, &r, finish, what, on);
}

bool braid__cancel_pending(lua_State *L) {
  task_t *t = current_task(L);
  return t && atomic_load_explicit(&t->t_cancel, memory_order_relaxed);
}

void braid_interrupt(void) {
  /* Async-signal-safe (the REPL calls it from its SIGINT handler): atomics
   * and, through the waiter, a futex wake. */
  atomic_store_explicit(&rt.interrupt, 1, memory_order_seq_cst);
  braid_waiter_t *w = atomic_load_explicit(&rt.owner_waiter, memory_order_seq_cst);
  if (w) braid_waiter_fire(w, BRAID_W_INTR, BRAID_EINTR, NULL);
}

void braid_interrupt_clear(void) {
  atomic_store_explicit(&rt.interrupt, 0, memory_order_release);
}

/* ------------------------------------------------------------------------ */
/* the blocking pool: jobs on the job pool (core/jobpool.c), each pool
 * thread with a Lua state of its own, made on its first job */

static _Thread_local lua_State *tls_pool_L;

static void pool_thread_exit(void) {
  if (tls_pool_L) braid__close_state(tls_pool_L);
  tls_pool_L = NULL;
}

static void bjob_done(bjob_t *j, braid_fstate_t st, braid_msg_t *m) {
  braid_msg_release(j->j_fn);
  braid_msg_release(j->j_args);
  braid_future_settle(j->j_fut, st, m);
  braid_future_release(j->j_fut);
  free(j);
  atomic_fetch_sub_explicit(&rt.binflight, 1, memory_order_seq_cst);
  atomic_fetch_add_explicit(&rt.epoch, 1, memory_order_relaxed);
}

static void bjob_run(braid_job_t *job) {
  bjob_t *j = job->j_data;
  if (tls_pool_L == NULL) tls_pool_L = new_private_state();
  lua_State *L = tls_pool_L;
  if (L == NULL) {
    bjob_done(j, BRAID_FUTURE_REJECTED, braid__msg_error("braid: out of memory", 20));
    return;
  }
  lua_settop(L, 0);
  int nf = pdecode(L, j->j_fn);
  int na = nf == 1 ? pdecode(L, j->j_args) : -1;
  braid_fstate_t st;
  braid_msg_t *m;
  if (nf != 1 || na < 0) {
    st = BRAID_FUTURE_REJECTED;
    m = rejection(L, -1, NULL);
  } else if (lua_pcall(L, na, LUA_MULTRET, 0) == LUA_OK) {
    int nres = lua_gettop(L);
    m = braid__pencode(L, 1, nres, "results");
    st = m ? BRAID_FUTURE_RESOLVED : BRAID_FUTURE_REJECTED;
    if (m == NULL) m = rejection(L, -1, NULL);
  } else {
    luaL_traceback(L, L, NULL, 0);
    st = BRAID_FUTURE_REJECTED;
    m = rejection(L, -2, lua_tostring(L, -1));
  }
  lua_settop(L, 0);
  bjob_done(j, st, m);
}

static void bjob_cancel(braid_job_t *job) {
  bjob_done(job->j_data, BRAID_FUTURE_CANCELLED, NULL);
}

/* ------------------------------------------------------------------------ */
/* the Lua functions */

static task_t *task_new(lua_State *L, int fnidx, int nargs, const char *name) {
  braid__checktype(L, fnidx, LUA_TFUNCTION, fnidx == 1 ? "braid.go" : "braid.spawn");
  /* Unprotected, as every chan:send's encode: nothing is held yet that a
   * raise would leak, and the error is the caller's either way. */
  braid_msg_t *fn = braid__encode(L, fnidx, 1, "fn");
  /* No arguments (a closure that captured what it needs): no message,
   * no protected call on either side. */
  braid_msg_t *args = nargs > 0 ? braid__pencode(L, fnidx + 1, nargs, "args") : NULL;
  if (args == NULL && nargs > 0) {
    braid_msg_release(fn);
    lua_error(L);
  }
  task_t *t = calloc(1, sizeof *t);
  braid_future_t *f = t ? braid_future_new() : NULL;
  char *nm = name && t ? strdup(name) : NULL;
  if (f == NULL || (name && nm == NULL)) {
    free(t);
    free(nm);
    if (f) braid_future_release(f);
    braid_msg_release(fn);
    braid_msg_release(args);
    luaL_error(L, "braid: out of memory");
  }
  braid_waiter_init(&t->t_waiter, task_wake, t);
  /* Not armed until its first wait: a cancel fire before then is a no-op. */
  atomic_store_explicit(&t->t_waiter.w_fired, 0, memory_order_relaxed);
  t->t_id = atomic_fetch_add_explicit(&rt.next_id, 1, memory_order_relaxed) + 1;
  t->t_name = nm;                       /* owned by f (the reports name the task) */
  braid_future_set_task(f, t->t_id, nm);
  t->t_fut = f;
  t->t_fn = fn;
  t->t_args = args;
  t->t_coref = LUA_NOREF;
  t->t_envref = LUA_NOREF;
  t->t_cases = t->t_small;
  t->t_casecap = SMALL_CASES;
  atomic_init(&t->t_state, T_NEW);
  atomic_init(&t->t_cancel, false);
  return t;
}

static int spawn_common(lua_State *L, int fnidx, const char *name) {
  if (!rt.started) rt_start(L);
  int nargs = lua_gettop(L) - fnidx;
  task_t *t = task_new(L, fnidx, nargs, name);
  braid__pushhandle(L, (braid_obj_t *)t->t_fut);  /* before queueing: t may end at once */
  braid_future_set_cancel_hook(t->t_fut, task_cancel_hook, t);
  BRAID_PCHECK(pthread_mutex_lock(&rt.mtx));
  t->t_lnext = rt.live;
  if (rt.live) rt.live->t_lprev = t;
  rt.live = t;
  bool stopping = atomic_load_explicit(&rt.stopping, memory_order_seq_cst);
  BRAID_PCHECK(pthread_mutex_unlock(&rt.mtx));
  atomic_fetch_add_explicit(&rt.nlive, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&rt.spawned, 1, memory_order_relaxed);
  if (stopping) return luaL_error(L, "braid: the runtime is shutting down");
  t->t_home = place();
  atomic_fetch_add_explicit(&t->t_home->sh_ntasks, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&rt.active, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&rt.epoch, 1, memory_order_relaxed);
  push_ready(t, false);
  return 1;
}

static int l_go(lua_State *L) {
  return spawn_common(L, 1, NULL);
}

static int l_spawn(lua_State *L) {
  const char *name = NULL;
  if (!lua_isnoneornil(L, 1)) {
    braid__checktype(L, 1, LUA_TTABLE, "braid.spawn");
    if (lua_getfield(L, 1, "name") != LUA_TNIL) {
      if (lua_type(L, -1) != LUA_TSTRING)
        braid__argerror(L, 1, "braid.spawn", "opts.name must be a string");
      name = lua_tostring(L, -1);
    }
    lua_pop(L, 1);
  }
  int r = spawn_common(L, 2, name);
  return r;
}

static int l_blocking(lua_State *L) {
  braid__checktype(L, 1, LUA_TFUNCTION, "braid.blocking");
  if (!rt.started) rt_start(L);
  braid_msg_t *fn = braid__pencode(L, 1, 1, "fn");
  if (fn == NULL) return lua_error(L);
  braid_msg_t *args = braid__pencode(L, 2, lua_gettop(L) - 1, "args");
  if (args == NULL) {
    braid_msg_release(fn);
    return lua_error(L);
  }
  bjob_t *j = calloc(1, sizeof *j);
  braid_future_t *f = j ? braid_future_new() : NULL;
  if (f == NULL) {
    free(j);
    braid_msg_release(fn);
    braid_msg_release(args);
    return luaL_error(L, "braid: out of memory");
  }
  j->j_fn = fn;
  j->j_args = args;
  j->j_fut = f;                         /* the job's reference */
  j->j_job.j_run = bjob_run;
  j->j_job.j_cancel = bjob_cancel;
  j->j_job.j_data = j;
  braid__pushhandle(L, (braid_obj_t *)f);
  atomic_fetch_add_explicit(&rt.binflight, 1, memory_order_seq_cst);
  braid_jobpool_t *jobs = braid__rt_jobpool();         /* NULL: the runtime is stopping */
  int rc = jobs ? braid_jobpool_submit(jobs, &j->j_job) : BRAID_ECLOSED;
  if (rc != 0) {
    bjob_done(j, BRAID_FUTURE_CANCELLED, NULL);
    return luaL_error(L, "braid: cannot run a blocking job (%s)", braid_strerror(rc));
  }
  return 1;
}

static int finish_sleep(lua_State *L, braid_case_t *c, int n, braid_selres_t *r) {
  braid_msg_release(r->s_msg);
  return 0;
}

static int l_sleep(lua_State *L) {
  lua_Number s = braid__checknumber(L, 1, "braid.sleep");
  if (s != s || s < 0) braid__argerror(L, 1, "braid.sleep", "seconds must be >= 0");
  if (!rt.started) rt_start(L);
  return braid__wait(L, NULL, 0, braid_deadline_after(s), finish_sleep, "sleep", NULL);
}

static int l_yield(lua_State *L) {
  task_t *t = current_task(L);
  if (t && lua_isyieldable(L)) {
    if (atomic_load_explicit(&t->t_cancel, memory_order_relaxed) && !t->t_cancel_raised) {
      t->t_cancel_raised = true;
      return braid__raise(L, "cancelled");
    }
    t->t_yield = Y_YIELD;
    return lua_yield(L, 0);
  }
  sched_yield();
  return 0;
}

static int l_now(lua_State *L) {
  lua_pushnumber(L, (lua_Number)braid_now_ns() / 1e9);
  return 1;
}

static int l_self(lua_State *L) {
  task_t *t = tls_task;
  if (t == NULL) return 0;
  lua_pushinteger(L, (lua_Integer)t->t_id);
  if (t->t_name) lua_pushstring(L, t->t_name); else lua_pushnil(L);
  return 2;
}

static int l_cancelled(lua_State *L) {
  task_t *t = tls_task;
  lua_pushboolean(L, t && atomic_load_explicit(&t->t_cancel, memory_order_relaxed));
  return 1;
}

/* braid.config's integer option k, on the stack top. */
static lua_Integer config_int(lua_State *L, const char *k) {
  int isint = 0;
  lua_Integer v = lua_tointegerx(L, -1, &isint);
  if (!isint)
    braid__argerror(L, 1, "braid.config", lua_pushfstring(L, "%s must be an integer", k));
  return v;
}

static int l_config(lua_State *L) {
  static const char *const known[] = { "workers", "preempt_ms", "blocking_threads", "states",
                                       "max_threads", NULL };
  static const char fn[] = "braid.config";
  braid__checktype(L, 1, LUA_TTABLE, fn);
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    lua_pop(L, 1);
    const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "?";
    int i = 0;
    while (known[i] && strcmp(k, known[i]) != 0) i++;
    if (known[i] == NULL)
      return braid__argerror(L, 1, fn, lua_pushfstring(L, "unknown option '%s'; the options are "
                             "workers, preempt_ms, blocking_threads, states, max_threads", k));
  }
  /* Check everything first (Lua errors, no lock held), then store. */
  lua_Integer workers = 0, bthreads = 0, states = 0, maxth = -1;
  lua_Number ms = 0;
  if (lua_getfield(L, 1, "workers") != LUA_TNIL) {
    workers = config_int(L, "workers");
    if (workers < 1 || workers > 1024) braid__argerror(L, 1, fn, "workers must be between 1 and 1024");
  }
  if (lua_getfield(L, 1, "preempt_ms") != LUA_TNIL) {
    ms = lua_tonumber(L, -1);
    if (!lua_isnumber(L, -1) || !(ms >= 1)) braid__argerror(L, 1, fn, "preempt_ms must be a number >= 1");
  }
  if (lua_getfield(L, 1, "blocking_threads") != LUA_TNIL) {
    bthreads = config_int(L, "blocking_threads");
    if (bthreads < 1 || bthreads > 4096)
      braid__argerror(L, 1, fn, "blocking_threads must be between 1 and 4096");
  }
  if (lua_getfield(L, 1, "states") != LUA_TNIL) {
    states = config_int(L, "states");
    if (states < 1 || states > 65536) braid__argerror(L, 1, fn, "states must be between 1 and 65536");
  }
  if (lua_getfield(L, 1, "max_threads") != LUA_TNIL) {
    maxth = config_int(L, "max_threads");
    if (maxth < 0 || maxth > 65536) braid__argerror(L, 1, fn, "max_threads must be between 0 and 65536");
  }
  lua_pop(L, 5);
  BRAID_PCHECK(pthread_mutex_lock(&rt.mtx));
  bool started = rt.started;
  if (!started) {
    if (workers) rt.nworkers = (int)workers;
    if (ms) rt.preempt_ms = ms;
    if (bthreads) rt.blocking_max = (int)bthreads;
    if (states) rt.nshards = (int)states;
    if (maxth >= 0) rt.max_threads = (int)maxth;
  }
  BRAID_PCHECK(pthread_mutex_unlock(&rt.mtx));
  if (started) return luaL_error(L, "braid: config: the runtime has already started");
  return 0;
}

static void setint(lua_State *L, const char *k, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setfield(L, -2, k);
}

static int l_stats(lua_State *L) {
  long live = atomic_load_explicit(&rt.nlive, memory_order_relaxed);
  long ready = 0, blocked = 0, sleeping = 0, running = 0;
  BRAID_PCHECK(pthread_mutex_lock(&rt.mtx));
  for (task_t *t = rt.live; t; t = t->t_lnext) {
    switch (atomic_load_explicit(&t->t_state, memory_order_relaxed)) {
      case T_BLOCKED: blocked++; break;
      case T_SLEEPING: sleeping++; break;
      case T_RUNNING: running++; break;
      default: ready++; break;
    }
  }
  bool started = rt.started;
  int workers = rt.nworkers > 0 ? rt.nworkers : online_cpus();
  int states = rt.nshards > 0 ? rt.nshards : STATES_PER_WORKER * workers;
  braid_sched_stats_t ss = { 0 };
  braid_jobpool_stats_t js = { 0 };
  if (started) {
    /* Both can be NULL while started: rt_stop takes the pool first, and
     * rt_free_parts frees the scheduler before started is cleared. */
    if (rt.sched) braid_sched_stats(rt.sched, &ss);
    if (rt.jobs) braid_jobpool_stats(rt.jobs, &js);     /* NULL once rt_stop took it */
  }
  BRAID_PCHECK(pthread_mutex_unlock(&rt.mtx));
  lua_createtable(L, 0, 22);
  setint(L, "workers", workers);
  setint(L, "states", states);
  setint(L, "tasks", live);
  setint(L, "ready", ready);
  setint(L, "running", running);
  setint(L, "blocked", blocked);
  setint(L, "sleeping", sleeping);
  setint(L, "spawned", (lua_Integer)atomic_load_explicit(&rt.spawned, memory_order_relaxed));
  setint(L, "completed", (lua_Integer)atomic_load_explicit(&rt.completed, memory_order_relaxed));
  setint(L, "failed", (lua_Integer)atomic_load_explicit(&rt.failed, memory_order_relaxed));
  setint(L, "messages", (lua_Integer)atomic_load_explicit(&rt.messages, memory_order_relaxed));
  setint(L, "blocking_threads", js.threads);
  setint(L, "blocking_jobs", atomic_load_explicit(&rt.binflight, memory_order_relaxed));
  setint(L, "timers", started && rt.timers ? (lua_Integer)braid_timerq_len(rt.timers) : 0);
  setint(L, "threads", ss.threads);
  setint(L, "in_c", ss.in_c);
  setint(L, "handoffs", (lua_Integer)ss.handoffs);
  setint(L, "steals", (lua_Integer)ss.steals);
  setint(L, "preempts", (lua_Integer)ss.preempts);
  setint(L, "polls", (lua_Integer)ss.polls);
  setint(L, "wakeups", (lua_Integer)ss.wakeups);
  return 1;
}

/* One row of braid.tasks(), copied under rt.mtx (no Lua API there). */
typedef struct trow {
  uint64_t id;
  char name[64];
  bool named;
  int state;
  bool in_c;
  double in_c_s;
  const char *what;
  const char *ontype;
  uint64_t onid;
} trow_t;

static int l_tasks(lua_State *L) {
  size_t n = 0, cap = 0;
  trow_t *rows = NULL;
  for (;;) {
    size_t want = (size_t)atomic_load_explicit(&rt.nlive, memory_order_relaxed) + 16;
    if (want > cap) {
      trow_t *nr = realloc(rows, want * sizeof *nr);
      if (nr == NULL) {
        free(rows);
        return luaL_error(L, "braid: out of memory");
      }
      rows = nr;
      cap = want;
    }
    int64_t now = braid_now_ns();
    BRAID_PCHECK(pthread_mutex_lock(&rt.mtx));
    n = 0;
    bool fits = true;
    for (task_t *t = rt.live; t; t = t->t_lnext) {
      if (n == cap) { fits = false; break; }
      trow_t *r = &rows[n++];
      r->id = t->t_id;
      r->named = t->t_name != NULL;
      if (r->named) snprintf(r->name, sizeof r->name, "%s", t->t_name);
      r->state = atomic_load_explicit(&t->t_state, memory_order_relaxed);
      int64_t since = 0;
      r->in_c = r->state == T_RUNNING && t->t_home &&
                braid_sched_unit_in_c(&t->t_home->sh_unit, &since) &&
                atomic_load_explicit(&t->t_home->sh_current, memory_order_relaxed) == t;
      r->in_c_s = r->in_c ? (double)(now - since) / 1e9 : 0;
      r->what = atomic_load_explicit(&t->t_what, memory_order_relaxed);
      braid_objtype_t *ot = atomic_load_explicit(&t->t_ontype, memory_order_relaxed);
      r->ontype = ot ? ot->ot_name : NULL;
      r->onid = atomic_load_explicit(&t->t_onid, memory_order_relaxed);
    }
    BRAID_PCHECK(pthread_mutex_unlock(&rt.mtx));
    if (fits) break;
    cap = 0;                            /* grew meanwhile: again, larger */
  }
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    trow_t *r = &rows[i];
    lua_createtable(L, 0, 5);
    setint(L, "id", (lua_Integer)r->id);
    if (r->named) { lua_pushstring(L, r->name); lua_setfield(L, -2, "name"); }
    lua_pushstring(L, r->in_c ? "in C" : state_names[r->state]);
    lua_setfield(L, -2, "state");
    if (r->in_c) { lua_pushnumber(L, r->in_c_s); lua_setfield(L, -2, "in_c"); }
    if ((r->state == T_BLOCKED || r->state == T_SLEEPING) && r->what) {
      if (r->ontype) lua_pushfstring(L, "%s braid.%s#%I", r->what, r->ontype, (lua_Integer)r->onid);
      else lua_pushstring(L, r->what);
      lua_setfield(L, -2, "waiting_on");
    }
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  free(rows);
  return 1;
}

static int l_shutdown_gc(lua_State *L) {
  (void)L;
  rt_stop();
  return 0;
}

void braid__open_runtime(lua_State *L) {
  static const luaL_Reg fns[] = {
    { "go", l_go }, { "spawn", l_spawn }, { "blocking", l_blocking },
    { "sleep", l_sleep }, { "yield", l_yield }, { "now", l_now },
    { "self", l_self }, { "cancelled", l_cancelled }, { "config", l_config },
    { "stats", l_stats }, { "tasks", l_tasks }, { NULL, NULL } };
  luaL_setfuncs(L, fns, 0);
  if (opening_private_state) return;
  /* The first host state to open braid owns the runtime: closing it shuts
   * the runtime down (a userdata in its registry with __gc). */
  BRAID_PCHECK(pthread_mutex_lock(&rt.mtx));
  bool first = !rt.have_owner;
  if (first) {
    rt.have_owner = true;
    rt.owner = pthread_self();
  }
  BRAID_PCHECK(pthread_mutex_unlock(&rt.mtx));
  if (first) {
    lua_newuserdatauv(L, 1, 0);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, l_shutdown_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, "braid.runtime");
  }
}

/* ------------------------------------------------------------------------ */
/* for the embedding API */

int braid__rt_configure(int workers, double preempt_ms, int blocking_threads) {
  BRAID_PCHECK(pthread_mutex_lock(&rt.mtx));
  if (rt.started) {
    BRAID_PCHECK(pthread_mutex_unlock(&rt.mtx));
    return BRAID_EINVAL;
  }
  if (workers > 0) rt.nworkers = workers;
  if (preempt_ms >= 1) rt.preempt_ms = preempt_ms;
  if (blocking_threads > 0) rt.blocking_max = blocking_threads;
  BRAID_PCHECK(pthread_mutex_unlock(&rt.mtx));
  return 0;
}

void braid__rt_stop(void) { rt_stop(); }

void braid__rt_start(lua_State *L) {
  if (!rt.started) rt_start(L);
}

braid_jobpool_t *braid__rt_jobpool(void) {
  BRAID_PCHECK(pthread_mutex_lock(&rt.mtx));
  braid_jobpool_t *p = rt.started ? rt.jobs : NULL;
  BRAID_PCHECK(pthread_mutex_unlock(&rt.mtx));
  return p;
}

void braid__rt_job(int delta) {
  atomic_fetch_add_explicit(&rt.binflight, delta, memory_order_seq_cst);
  atomic_fetch_add_explicit(&rt.epoch, 1, memory_order_relaxed);
}

void braid__rt_set_deadlock_check(bool on) {
  atomic_store_explicit(&rt.no_deadlock, !on, memory_order_relaxed);
}
