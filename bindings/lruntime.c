/*
 * lruntime.c -- the task runtime: worker threads each owning a lua_State,
 * tasks as coroutines, blocking that suspends only the task, preemption, the
 * blocking pool, deadlock detection and shutdown.
 *
 * Design notes
 *
 * The runtime is one per process (rt below).  It starts lazily, on the
 * first call that needs a worker (go, spawn, sleep, blocking, after...), so
 * that braid.config can come first.  W worker threads each own one
 * lua_State opened with the standard libraries and braid.
 *
 * A task that has not started is only two messages (its function and its
 * arguments): it may run on any worker, so it sits in a stealable queue (the
 * spawning worker's, or the injection queue when spawned from outside).  A
 * started task is a coroutine in one worker's state and stays on that
 * worker: its wakeups go to that worker's ready queue.
 *
 * Blocking (braid__wait): a task arms a select on its own waiter whose wake
 * callback pushes the task on its worker's ready queue, then lua_yieldk's.
 * The worker cannot pop the task before the yield completes because only
 * that worker pops its ready queue, so an early wake is harmless.  Timeouts
 * are timers that fire the waiter; cancellation fires it too.  Anywhere
 * else (the main thread, a blocking-pool thread, a call that cannot yield)
 * the OS thread parks, in slices, so that the main thread can notice an
 * interrupt (REPL Ctrl-C) or a deadlock.
 *
 * Preemption costs nothing while it is not needed: no hook is installed.
 * A monitor thread (Go's sysmon) sees a task that has run past preempt_ms
 * while other tasks wait and sets a one-shot count hook on its coroutine;
 * the hook clears itself and yields.  lua_sethook may be called from another
 * thread (ldebug.c; lua.c does it from a signal handler); ThreadSanitizer
 * reports that write as a race by design (tests/tsan.supp).
 *
 * Lock order (core/LOCKING.md): future o_mtx -> worker wk_mtx -> rt.mtx;
 * channel locks are never held while any of these is taken.
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
#include "err.h"
#include "internal.h"
#include "lruntime.h"
#include "netpoll.h"

#if LUA_VERSION_RELEASE_NUM >= 50406
#define reset_thread(co, from) lua_closethread((co), (from))
#else
#define reset_thread(co, from) lua_resetthread(co)
#endif

typedef struct task task_t;
typedef struct worker worker_t;

enum { T_NEW, T_READY, T_RUNNING, T_BLOCKED, T_SLEEPING };
static const char *const state_names[] = { "ready", "ready", "running", "blocked", "sleeping" };
enum { Y_NONE, Y_BLOCK, Y_YIELD };
enum { SMALL_CASES = 1, POOL_MAX = 64 };

struct task {
  braid_waiter_t t_waiter;    /* w_wake = task_wake, w_data = this task */
  uint64_t t_id;              /* immutable */
  char *t_name;               /* immutable, may be NULL */
  braid_future_t *t_fut;      /* one reference; settled when the task ends */
  braid_msg_t *t_fn;          /* until started: the function */
  braid_msg_t *t_args;        /* until started: the arguments */
  worker_t *_Atomic t_home;   /* set once, when the task starts */
  lua_State *t_co;            /* its coroutine, in t_home's state */
  int t_coref;                /* registry reference of t_co */
  int t_envref;               /* registry reference of its globals table */
  int t_nargs;                /* values to pass to the next lua_resume */
  _Atomic int t_state;        /* T_*, for braid.tasks() */
  /* What it waits for ("recv", "sleep", ...) and on what (type and id):
   * written by its worker, read by braid.tasks() elsewhere, so atomic
   * (relaxed: a diagnostic snapshot). */
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
  task_t *t_next;             /* queue link (ready, new, injection) */
  task_t *t_lnext, *t_lprev;  /* the live list, under rt.mtx */
};

struct worker {
  int wk_id;                  /* immutable */
  pthread_t wk_thread;
  lua_State *wk_L;            /* touched only by this worker (and shutdown) */
  pthread_mutex_t wk_mtx;     /* Protects: the queues, wk_sleeping, (hooking) wk_current,
                                 wk_seq, wk_start */
  pthread_cond_t wk_cv;       /* the worker sleeps here */
  task_t *wk_rhead, *wk_rtail;    /* started tasks ready to resume */
  task_t *wk_nhead, *wk_ntail;    /* unstarted tasks (stealable) */
  _Atomic int wk_nnew;        /* length of the new queue, read lock-free by thieves */
  _Atomic int wk_nready;      /* length of the ready queue, read lock-free when spinning */
  bool wk_sleeping;
  bool wk_fair;               /* the last task yielded its slice (worker only) */
  /* The task resumed last, for the monitor: written by the worker without
   * the lock at each resume; cleared under wk_mtx before the task is freed,
   * and only read under wk_mtx to set a hook, so a task seen there is alive
   * (its coroutine may be suspended: a hook there only costs one yield). */
  task_t *_Atomic wk_current;
  _Atomic uint64_t wk_seq;    /* resumes so far */
  _Atomic int64_t wk_start;   /* when the current resume began */
  uint64_t wk_mon_seq;        /* the monitor's last look (monitor only) */
  int wk_pool[POOL_MAX];      /* registry refs of idle coroutines */
  int wk_npool;
  int wk_envmt;               /* registry ref: metatable of task globals */
};

typedef struct bjob {
  braid_msg_t *j_fn, *j_args;
  braid_future_t *j_fut;
  struct bjob *j_next;
} bjob_t;

static struct runtime {
  pthread_mutex_t mtx;        /* Protects: the fields up to the atomics */
  pthread_cond_t mon_cv;      /* the monitor sleeps here */
  bool started;
  _Atomic bool stopping;       /* shutdown has begun; read lock-free */
  int nworkers;               /* config, then immutable once started */
  double preempt_ms;
  int blocking_max;
  worker_t *workers;
  task_t *inj_head, *inj_tail;    /* unstarted tasks spawned off-worker */
  task_t *live;               /* every task not yet ended */
  braid_timerq_t *timers;
  pthread_t monitor;
  char *path, *cpath;         /* the host's package.path / cpath */
  pthread_t owner;            /* the thread that opened braid first */
  bool have_owner;
  /* the blocking pool */
  pthread_cond_t b_cv;        /* idle pool threads wait here */
  bjob_t *b_head, *b_tail;
  int b_threads, b_idle;
  /* counters */
  _Atomic int ninj;           /* length of the injection queue */
  _Atomic int nsleeping;      /* workers asleep or about to be */
  _Atomic long active;        /* tasks queued, ready or running (not blocked) */
  _Atomic long nlive;
  _Atomic long binflight;     /* blocking jobs queued or running */
  _Atomic uint64_t epoch;     /* bumped by every wake, spawn and end */
  _Atomic uint64_t spawned, completed, failed, messages, next_id;
  _Atomic int interrupt;      /* braid_interrupt() was called */
  _Atomic bool no_deadlock;   /* the deadlock check is off */
  _Atomic int bexit;          /* blocking threads still running at shutdown */
} rt = {
  .mtx = PTHREAD_MUTEX_INITIALIZER,
  .nworkers = 0,
  .preempt_ms = 10,
  .blocking_max = 64,
};

static _Thread_local worker_t *tls_worker;    /* this thread's worker, if any */
static _Thread_local task_t *tls_task;        /* the task being resumed here */

static void preempt_hook(lua_State *L, lua_Debug *ar);
static void block_signals(void);

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

int64_t braid__optdeadline(lua_State *L, int arg) {
  if (lua_isnoneornil(L, arg)) return BRAID_FOREVER;
  lua_Number s = luaL_checknumber(L, arg);
  if (s != s) luaL_argerror(L, arg, "timeout is NaN");
  if (s < 0) luaL_argerror(L, arg, "timeout must be >= 0");
  return braid_deadline_after(s);
}

static task_t *current_task(lua_State *L) {
  task_t *t = tls_task;
  return t && t->t_co == L ? t : NULL;
}

void braid__pushenv(lua_State *L) {
  task_t *t = tls_task;
  if (t && t->t_envref != LUA_NOREF) lua_rawgeti(L, LUA_REGISTRYINDEX, t->t_envref);
  else lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
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

static void report_unobserved(braid_future_t *f, braid_msg_t *err) {
  size_t len = 0;
  const char *s = err ? braid__msg_first_string(err, &len) : NULL;
  fprintf(stderr, "braid: an error nobody awaited (braid.future#%llu, a failed task or a rejected future): %.*s\n",
          (unsigned long long)braid_future_id(f), s ? (int)len : 7, s ? s : "(error)");
  fflush(stderr);
}

/* ------------------------------------------------------------------------ */
/* queues and waking */

static void wake_one_idle(void) {
  /* seq_cst: pairs with the idle worker's increment of nsleeping before its
   * last look at the queues (a Dekker pair: one of us sees the other). */
  if (atomic_load_explicit(&rt.nsleeping, memory_order_seq_cst) == 0) return;
  for (int i = 0; i < rt.nworkers; i++) {
    worker_t *w = &rt.workers[i];
    pthread_mutex_lock(&w->wk_mtx);
    if (w->wk_sleeping) {
      w->wk_sleeping = false;
      pthread_cond_signal(&w->wk_cv);
      pthread_mutex_unlock(&w->wk_mtx);
      return;
    }
    pthread_mutex_unlock(&w->wk_mtx);
  }
}

/* Queues an unstarted task: on this worker's stealable queue, or on the
 * injection queue from outside.  Wakes an idle worker. */
static void push_new(task_t *t) {
  worker_t *w = tls_worker;
  t->t_next = NULL;
  atomic_fetch_add_explicit(&rt.active, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&rt.epoch, 1, memory_order_relaxed);
  if (w) {
    pthread_mutex_lock(&w->wk_mtx);
    if (w->wk_ntail) w->wk_ntail->t_next = t; else w->wk_nhead = t;
    w->wk_ntail = t;
    atomic_fetch_add_explicit(&w->wk_nnew, 1, memory_order_seq_cst);
    pthread_mutex_unlock(&w->wk_mtx);
  } else {
    pthread_mutex_lock(&rt.mtx);
    if (rt.inj_tail) rt.inj_tail->t_next = t; else rt.inj_head = t;
    rt.inj_tail = t;
    atomic_fetch_add_explicit(&rt.ninj, 1, memory_order_seq_cst);
    pthread_mutex_unlock(&rt.mtx);
  }
  wake_one_idle();
}

/* Pushes a started task on its worker's ready queue. */
static void push_ready(worker_t *w, task_t *t) {
  t->t_next = NULL;
  atomic_store_explicit(&t->t_state, T_READY, memory_order_relaxed);
  pthread_mutex_lock(&w->wk_mtx);
  if (w->wk_rtail) w->wk_rtail->t_next = t; else w->wk_rhead = t;
  w->wk_rtail = t;
  /* Relaxed: a hint for the spinning worker, which then takes the lock. */
  atomic_fetch_add_explicit(&w->wk_nready, 1, memory_order_relaxed);
  if (w->wk_sleeping) {
    w->wk_sleeping = false;
    pthread_cond_signal(&w->wk_cv);
  }
  pthread_mutex_unlock(&w->wk_mtx);
}

/* The waiter's wake callback: any thread, no core lock held. */
static void task_wake(braid_waiter_t *wt) {
  task_t *t = wt->w_data;
  atomic_fetch_add_explicit(&rt.active, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&rt.epoch, 1, memory_order_relaxed);
  /* Acquire: pairs with the release store when the task started. */
  push_ready(atomic_load_explicit(&t->t_home, memory_order_acquire), t);
}

static void task_timer_cb(braid_timer_t *tm) {
  task_t *t = tm->t_data;
  braid_waiter_fire(&t->t_waiter, BRAID_W_TIMEOUT, BRAID_ETIMEDOUT, NULL);
}

static task_t *pop_list(task_t **head, task_t **tail) {
  task_t *t = *head;
  if (t) {
    *head = t->t_next;
    if (*head == NULL) *tail = NULL;
    t->t_next = NULL;
  }
  return t;
}

/* Called with w->wk_mtx held. */
static task_t *pop_ready(worker_t *w) {
  task_t *t = pop_list(&w->wk_rhead, &w->wk_rtail);
  if (t) atomic_fetch_sub_explicit(&w->wk_nready, 1, memory_order_relaxed);
  return t;
}

static task_t *next_task(worker_t *w) {
  task_t *t;
  /* After a task yielded its slice, unstarted work (here, injected, or on
   * other workers) goes first, so that a preempted task cannot starve tasks
   * that have not started yet (Go checks its global queue likewise). */
  bool fair = w->wk_fair;
  w->wk_fair = false;
  pthread_mutex_lock(&w->wk_mtx);
  t = fair ? NULL : pop_ready(w);
  if (t == NULL && (t = pop_list(&w->wk_nhead, &w->wk_ntail)) != NULL)
    atomic_fetch_sub_explicit(&w->wk_nnew, 1, memory_order_relaxed);
  if (t == NULL && fair && atomic_load_explicit(&rt.ninj, memory_order_relaxed) == 0)
    t = pop_ready(w);
  pthread_mutex_unlock(&w->wk_mtx);
  if (t) return t;
  if (atomic_load_explicit(&rt.ninj, memory_order_relaxed) > 0) {
    pthread_mutex_lock(&rt.mtx);
    if ((t = pop_list(&rt.inj_head, &rt.inj_tail)) != NULL)
      atomic_fetch_sub_explicit(&rt.ninj, 1, memory_order_relaxed);
    pthread_mutex_unlock(&rt.mtx);
    if (t) return t;
  }
  /* Steal an unstarted task from another worker. */
  for (int k = 1; k < rt.nworkers; k++) {
    worker_t *v = &rt.workers[(w->wk_id + k) % rt.nworkers];
    if (atomic_load_explicit(&v->wk_nnew, memory_order_relaxed) == 0) continue;
    pthread_mutex_lock(&v->wk_mtx);
    if ((t = pop_list(&v->wk_nhead, &v->wk_ntail)) != NULL)
      atomic_fetch_sub_explicit(&v->wk_nnew, 1, memory_order_relaxed);
    pthread_mutex_unlock(&v->wk_mtx);
    if (t) return t;
  }
  if (fair) {                           /* nothing else: back to our own */
    pthread_mutex_lock(&w->wk_mtx);
    t = pop_ready(w);
    pthread_mutex_unlock(&w->wk_mtx);
  }
  return t;
}

static bool work_visible(worker_t *w) {
  if (w->wk_rhead || w->wk_nhead) return true;   /* caller holds wk_mtx */
  if (atomic_load_explicit(&rt.ninj, memory_order_seq_cst) > 0) return true;
  for (int i = 0; i < rt.nworkers; i++)
    if (atomic_load_explicit(&rt.workers[i].wk_nnew, memory_order_seq_cst) > 0) return true;
  return false;
}

static void worker_idle(worker_t *w) {
  /* Spin a little (bounded by the clock): a partner on the other core
   * usually answers within microseconds. */
  int64_t until = braid_now_ns() + BRAID_SPIN_NS;
  for (int i = 0;; i++) {
    if ((i & 31) == 31 && braid_now_ns() > until) break;
    if (atomic_load_explicit(&w->wk_nready, memory_order_relaxed) > 0 ||
        atomic_load_explicit(&rt.ninj, memory_order_relaxed) > 0 ||
        atomic_load_explicit(&w->wk_nnew, memory_order_relaxed) > 0)
      return;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
  pthread_mutex_lock(&w->wk_mtx);
  w->wk_sleeping = true;
  atomic_fetch_add_explicit(&rt.nsleeping, 1, memory_order_seq_cst);
  if (!work_visible(w) && !atomic_load_explicit(&rt.stopping, memory_order_seq_cst)) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 50 * 1000000;         /* a safety net, not a poll */
    if (ts.tv_nsec >= 1000000000) { ts.tv_sec++; ts.tv_nsec -= 1000000000; }
    while (w->wk_sleeping && !atomic_load_explicit(&rt.stopping, memory_order_seq_cst) && w->wk_rhead == NULL)
      if (pthread_cond_timedwait(&w->wk_cv, &w->wk_mtx, &ts) == ETIMEDOUT) break;
  }
  w->wk_sleeping = false;
  atomic_fetch_sub_explicit(&rt.nsleeping, 1, memory_order_seq_cst);
  pthread_mutex_unlock(&w->wk_mtx);
}

/* ------------------------------------------------------------------------ */
/* running tasks */

static void task_cancel_hook(braid_future_t *f, void *arg) {
  task_t *t = arg;
  (void)f;
  /* seq_cst: pairs with the fence in braid__wait (Dekker: either the task
   * sees the flag after arming, or this fire finds the waiter armed). */
  atomic_store_explicit(&t->t_cancel, true, memory_order_seq_cst);
  braid_waiter_fire(&t->t_waiter, BRAID_W_CANCEL, BRAID_ECANCELED, NULL);
  worker_t *w = atomic_load_explicit(&t->t_home, memory_order_acquire);
  if (w) {
    pthread_mutex_lock(&w->wk_mtx);
    if (atomic_load_explicit(&w->wk_current, memory_order_seq_cst) == t)
      lua_sethook(t->t_co, preempt_hook, LUA_MASKCOUNT, 1);
    pthread_mutex_unlock(&w->wk_mtx);
  }
}

static void task_free(task_t *t) {
  pthread_mutex_lock(&rt.mtx);
  if (t->t_lprev) t->t_lprev->t_lnext = t->t_lnext; else rt.live = t->t_lnext;
  if (t->t_lnext) t->t_lnext->t_lprev = t->t_lprev;
  pthread_mutex_unlock(&rt.mtx);
  atomic_fetch_sub_explicit(&rt.nlive, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&rt.completed, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&rt.epoch, 1, memory_order_relaxed);
  braid_msg_release(t->t_fn);
  braid_msg_release(t->t_args);
  braid_future_release(t->t_fut);
  if (t->t_cases != t->t_small) free(t->t_cases);
  braid_waiter_fini(&t->t_waiter);
  free(t->t_name);
  free(t);
}

/* Settles the task's future and frees it; the coroutine is recycled. */
static void task_end(worker_t *w, task_t *t, braid_fstate_t st, braid_msg_t *m) {
  lua_State *L = w->wk_L;
  if (atomic_load_explicit(&w->wk_current, memory_order_relaxed) == t) {
    pthread_mutex_lock(&w->wk_mtx);   /* the monitor must not see t any more */
    atomic_store_explicit(&w->wk_current, NULL, memory_order_relaxed);
    pthread_mutex_unlock(&w->wk_mtx);
  }
  atomic_fetch_sub_explicit(&rt.active, 1, memory_order_relaxed);
  if (st == BRAID_FUTURE_REJECTED && m && braid_future_unobserved &&
      atomic_load_explicit(&((braid_obj_t *)t->t_fut)->o_rc, memory_order_acquire) == 1) {
    braid_future_unobserved(t->t_fut, m);   /* nobody else can ever see it */
    braid_future_observe(t->t_fut);
  }
  braid_future_settle(t->t_fut, st, m);   /* also drops the cancel hook */
  if (t->t_co) {
    lua_State *co = t->t_co;
    if (lua_status(co) == LUA_OK && w->wk_npool < POOL_MAX) {
      lua_settop(co, 0);
      w->wk_pool[w->wk_npool++] = t->t_coref;
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

/* Makes t's coroutine and globals in w's state and loads its function and
 * arguments.  Returns false when the task already ended. */
static bool task_start(worker_t *w, task_t *t) {
  lua_State *L = w->wk_L;
  if (atomic_load_explicit(&t->t_cancel, memory_order_seq_cst)) {
    task_end(w, t, BRAID_FUTURE_CANCELLED, NULL);
    return false;
  }
  if (w->wk_npool > 0) {
    t->t_coref = w->wk_pool[--w->wk_npool];
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->t_coref);
    t->t_co = lua_tothread(L, -1);
    lua_pop(L, 1);
  } else {
    t->t_co = lua_newthread(L);
    t->t_coref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  lua_createtable(L, 0, 0);             /* the task's own globals */
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->wk_envmt);
  lua_setmetatable(L, -2);
  t->t_envref = luaL_ref(L, LUA_REGISTRYINDEX);
  /* Release: pairs with task_wake's acquire of t_home. */
  atomic_store_explicit(&t->t_home, w, memory_order_release);
  tls_task = t;                         /* braid__pushenv sees the task */
  lua_State *co = t->t_co;
  int nf = pdecode(co, t->t_fn);
  int na = nf == 1 ? pdecode(co, t->t_args) : -1;
  tls_task = NULL;
  braid_msg_release(t->t_fn);
  braid_msg_release(t->t_args);
  t->t_fn = t->t_args = NULL;
  if (nf != 1 || na < 0 || lua_type(co, 1) != LUA_TFUNCTION) {
    if (nf == 1 && na >= 0) lua_pushliteral(co, "braid: task function did not decode");
    braid_msg_t *m = rejection(co, -1, NULL);
    lua_settop(co, 0);
    task_end(w, t, BRAID_FUTURE_REJECTED, m);
    return false;
  }
  t->t_nargs = na;
  return true;
}

static void run_task(worker_t *w, task_t *t) {
  lua_State *L = w->wk_L;
  if (t->t_co == NULL && !task_start(w, t)) return;
  lua_State *co = t->t_co;
  /* Relaxed: the monitor only needs eventually-visible hints; it takes
   * wk_mtx before acting on wk_current. */
  atomic_store_explicit(&w->wk_start, braid_now_ns(), memory_order_relaxed);
  /* seq_cst, with the load of t_cancel below: a Dekker pair with
   * task_cancel_hook (store t_cancel, then load wk_current), so either the
   * canceller sees this task current and hooks it, or we see the flag. */
  atomic_store_explicit(&w->wk_current, t, memory_order_seq_cst);
  atomic_fetch_add_explicit(&w->wk_seq, 1, memory_order_relaxed);
  atomic_store_explicit(&t->t_state, T_RUNNING, memory_order_relaxed);
  t->t_yield = Y_NONE;
  /* Cancelled while it waited in a queue: stop at its first instruction
   * (the cancel hook could only interrupt a running or blocked task). */
  if (atomic_load_explicit(&t->t_cancel, memory_order_seq_cst) && !t->t_cancel_raised)
    lua_sethook(co, preempt_hook, LUA_MASKCOUNT, 1);
  tls_task = t;
  int nres = 0;
  int status = lua_resume(co, L, t->t_nargs, &nres);
  tls_task = NULL;
  t->t_nargs = 0;
  lua_sethook(co, NULL, 0, 0);        /* a hook that did not fire */
  if (status == LUA_YIELD) {
    lua_pop(co, nres);
    if (t->t_yield != Y_BLOCK) {      /* preempted, braid.yield, coroutine.yield */
      atomic_fetch_add_explicit(&rt.epoch, 1, memory_order_relaxed);
      w->wk_fair = true;
      push_ready(w, t);
    }
    return;
  }
  if (status == LUA_OK) {
    lua_xmove(co, L, nres);
    braid_msg_t *m = braid__pencode(L, -nres, nres, "results");
    if (m == NULL) {                  /* a result that cannot travel */
      braid_msg_t *r = rejection(L, -1, NULL);
      lua_settop(L, 0);
      task_end(w, t, BRAID_FUTURE_REJECTED, r);
      return;
    }
    lua_settop(L, 0);
    task_end(w, t, BRAID_FUTURE_RESOLVED, m);
    return;
  }
  /* An error: a cancellation we raised, or a failure with a traceback. */
  if (t->t_cancel_raised && atomic_load_explicit(&t->t_cancel, memory_order_relaxed)) {
    task_end(w, t, BRAID_FUTURE_CANCELLED, NULL);
    return;
  }
  atomic_fetch_add_explicit(&rt.failed, 1, memory_order_relaxed);
  lua_xmove(co, L, 1);                /* the error value */
  const char *msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
  luaL_traceback(L, co, msg ? NULL : NULL, 0);
  braid_msg_t *m = rejection(L, -2, lua_tostring(L, -1));
  lua_settop(L, 0);
  task_end(w, t, BRAID_FUTURE_REJECTED, m);
}

static void *worker_main(void *arg) {
  worker_t *w = arg;
  tls_worker = w;
  block_signals();
  for (;;) {
    task_t *t = next_task(w);
    if (t) {
      run_task(w, t);
      continue;
    }
    pthread_mutex_lock(&rt.mtx);
    bool stop = atomic_load_explicit(&rt.stopping, memory_order_seq_cst);
    pthread_mutex_unlock(&rt.mtx);
    if (stop) break;
    worker_idle(w);
  }
  return NULL;
}

static void preempt_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);         /* one shot */
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

static void *monitor_main(void *arg) {
  (void)arg;
  block_signals();
  int64_t slice = (int64_t)(rt.preempt_ms * 1e6);
  int64_t tick = slice / 2 > 1000000 ? slice / 2 : 1000000;
  pthread_mutex_lock(&rt.mtx);
  while (!atomic_load_explicit(&rt.stopping, memory_order_seq_cst)) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += tick;
    ts.tv_sec += ts.tv_nsec / 1000000000;
    ts.tv_nsec %= 1000000000;
    pthread_cond_timedwait(&rt.mon_cv, &rt.mtx, &ts);
    if (atomic_load_explicit(&rt.stopping, memory_order_seq_cst)) break;
    bool inj = rt.inj_head != NULL;
    pthread_mutex_unlock(&rt.mtx);
    int64_t now = braid_now_ns();
    for (int i = 0; i < rt.nworkers; i++) {
      worker_t *w = &rt.workers[i];
      pthread_mutex_lock(&w->wk_mtx);
      /* Acquire: pairs with the worker's store; the task's fields (t_co)
       * written before it are visible. */
      task_t *cur = atomic_load_explicit(&w->wk_current, memory_order_acquire);
      uint64_t seq = atomic_load_explicit(&w->wk_seq, memory_order_relaxed);
      if (cur && seq == w->wk_mon_seq &&
          now - atomic_load_explicit(&w->wk_start, memory_order_relaxed) >= slice &&
          (w->wk_rhead || w->wk_nhead || inj)) {
        lua_sethook(cur->t_co, preempt_hook, LUA_MASKCOUNT, 1);
        atomic_store_explicit(&w->wk_start, now, memory_order_relaxed);
      }
      w->wk_mon_seq = seq;
      pthread_mutex_unlock(&w->wk_mtx);
    }
    pthread_mutex_lock(&rt.mtx);
  }
  pthread_mutex_unlock(&rt.mtx);
  return NULL;
}

/* ------------------------------------------------------------------------ */
/* starting and stopping */

static bool opening_private_state;    /* luaopen_braid for a worker/pool state */

static lua_State *new_private_state(void) {
  lua_State *L = luaL_newstate();
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

static void rt_start(lua_State *L) {
  pthread_mutex_lock(&rt.mtx);
  if (rt.started) {
    pthread_mutex_unlock(&rt.mtx);
    return;
  }
  if (rt.nworkers <= 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    rt.nworkers = n > 0 ? (int)n : 1;
  }
  lua_getglobal(L, "package");
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "path");
    if (lua_isstring(L, -1)) rt.path = strdup(lua_tostring(L, -1));
    lua_getfield(L, -2, "cpath");
    if (lua_isstring(L, -1)) rt.cpath = strdup(lua_tostring(L, -1));
    lua_pop(L, 2);
  }
  lua_pop(L, 1);
  rt.timers = braid_timerq_new();
  rt.workers = calloc((size_t)rt.nworkers, sizeof(worker_t));
  if (rt.timers == NULL || rt.workers == NULL) {
    pthread_mutex_unlock(&rt.mtx);
    luaL_error(L, "braid: cannot start the runtime (out of memory)");
  }
  pthread_cond_init(&rt.mon_cv, NULL);
  pthread_cond_init(&rt.b_cv, NULL);
  if (braid_future_unobserved == NULL)    /* a C host may have set its own */
    braid_future_unobserved = report_unobserved;
  for (int i = 0; i < rt.nworkers; i++) {
    worker_t *w = &rt.workers[i];
    w->wk_id = i;
    pthread_mutex_init(&w->wk_mtx, NULL);
    pthread_cond_init(&w->wk_cv, NULL);
    w->wk_L = new_private_state();
    if (w->wk_L == NULL) {
      pthread_mutex_unlock(&rt.mtx);
      luaL_error(L, "braid: cannot start the runtime (out of memory)");
    }
    lua_State *wl = w->wk_L;
    lua_createtable(wl, 0, 1);          /* task globals read through to _G */
    lua_rawgeti(wl, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
    lua_setfield(wl, -2, "__index");
    w->wk_envmt = luaL_ref(wl, LUA_REGISTRYINDEX);
  }
  rt.started = true;
  for (int i = 0; i < rt.nworkers; i++)
    pthread_create(&rt.workers[i].wk_thread, NULL, worker_main, &rt.workers[i]);
  pthread_create(&rt.monitor, NULL, monitor_main, NULL);
  pthread_mutex_unlock(&rt.mtx);
}

braid_timerq_t *braid__timers(lua_State *L) {
  if (!rt.started) rt_start(L);
  return rt.timers;
}

/* Ends a task that is not running, from the shutdown path. */
static void task_abandon(worker_t *w, task_t *t) {
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
  if (w) {
    task_end(w, t, BRAID_FUTURE_CANCELLED, NULL);
  } else {
    braid_future_settle(t->t_fut, BRAID_FUTURE_CANCELLED, NULL);
    task_free(t);
  }
}

static void blocking_shutdown(void);

/* Shuts the runtime down: stops and joins the workers, ends every task,
 * closes the worker states.  Called when the state that opened braid first
 * is closed. */
static void rt_stop(void) {
  pthread_mutex_lock(&rt.mtx);
  if (!rt.started || atomic_load_explicit(&rt.stopping, memory_order_seq_cst)) {
    pthread_mutex_unlock(&rt.mtx);
    return;
  }
  atomic_store_explicit(&rt.stopping, true, memory_order_seq_cst);
  pthread_cond_broadcast(&rt.mon_cv);
  /* A task computing without end: make it yield at its next instruction. */
  for (task_t *t = rt.live; t; t = t->t_lnext)
    atomic_store_explicit(&t->t_cancel, true, memory_order_seq_cst);
  pthread_mutex_unlock(&rt.mtx);
  for (int i = 0; i < rt.nworkers; i++) {
    worker_t *w = &rt.workers[i];
    pthread_mutex_lock(&w->wk_mtx);
    task_t *cur = atomic_load_explicit(&w->wk_current, memory_order_acquire);
    if (cur) lua_sethook(cur->t_co, preempt_hook, LUA_MASKCOUNT, 1);
    w->wk_sleeping = false;
    pthread_cond_signal(&w->wk_cv);
    pthread_mutex_unlock(&w->wk_mtx);
  }
  /* Workers stop picking tasks once they see `stopping` with empty queues;
   * tasks still queued are abandoned below.  Make them see it now. */
  for (int i = 0; i < rt.nworkers; i++) {
    worker_t *w = &rt.workers[i];
    pthread_mutex_lock(&w->wk_mtx);
    w->wk_rhead = w->wk_rtail = NULL;   /* ready tasks stay on the live list */
    atomic_store_explicit(&w->wk_nready, 0, memory_order_relaxed);
    w->wk_nhead = w->wk_ntail = NULL;
    atomic_store_explicit(&w->wk_nnew, 0, memory_order_relaxed);
    pthread_mutex_unlock(&w->wk_mtx);
  }
  pthread_mutex_lock(&rt.mtx);
  rt.inj_head = rt.inj_tail = NULL;
  atomic_store_explicit(&rt.ninj, 0, memory_order_relaxed);
  pthread_mutex_unlock(&rt.mtx);
  braid__netpoll_shutdown();          /* braid.net: close every socket, wake its waiters */
  for (int i = 0; i < rt.nworkers; i++) pthread_join(rt.workers[i].wk_thread, NULL);
  pthread_join(rt.monitor, NULL);
  blocking_shutdown();
  /* Every thread that runs tasks is gone: end what is left. */
  for (;;) {
    pthread_mutex_lock(&rt.mtx);
    task_t *t = rt.live;
    pthread_mutex_unlock(&rt.mtx);
    if (t == NULL) break;
    task_abandon(atomic_load_explicit(&t->t_home, memory_order_relaxed), t);
  }
  /* Every task is gone: counts that a task queued or woken during the
   * shutdown still holds must not leak into a runtime started later (its
   * deadlock check would never fire). */
  atomic_store_explicit(&rt.active, 0, memory_order_relaxed);
  atomic_store_explicit(&rt.nlive, 0, memory_order_relaxed);
  braid_timerq_free(rt.timers);
  rt.timers = NULL;
  for (int i = 0; i < rt.nworkers; i++) {
    worker_t *w = &rt.workers[i];
    lua_close(w->wk_L);
    pthread_cond_destroy(&w->wk_cv);
    pthread_mutex_destroy(&w->wk_mtx);
  }
  free(rt.workers);
  rt.workers = NULL;
  free(rt.path);
  free(rt.cpath);
  rt.path = rt.cpath = NULL;
  pthread_mutex_lock(&rt.mtx);
  rt.started = false;
  atomic_store_explicit(&rt.stopping, false, memory_order_seq_cst);
  rt.have_owner = false;
  pthread_mutex_unlock(&rt.mtx);
}

/* ------------------------------------------------------------------------ */
/* blocking: the shared wait */

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
      if (on)
        lua_pushfstring(L, "braid: deadlock: %s braid.%s#%I (no task, timer or job can complete it)",
                        what, on->o_type->ot_name, (lua_Integer)on->o_id);
      else
        lua_pushfstring(L, "braid: deadlock: %s (no task, timer or job can complete it)", what);
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

/* Whether w has no other task to run now (lock-free hints). */
static bool worker_has_nothing_else(worker_t *w) {
  return atomic_load_explicit(&w->wk_nready, memory_order_relaxed) == 0 &&
         atomic_load_explicit(&w->wk_nnew, memory_order_relaxed) == 0 &&
         atomic_load_explicit(&rt.ninj, memory_order_relaxed) == 0;
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
        worker_has_nothing_else(t->t_home)) {
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
            (braid_now_ns() >= until || !worker_has_nothing_else(t->t_home)))
          break;
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
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
    atomic_store_explicit(&t->t_state, strcmp(what, "sleep") == 0 ? T_SLEEPING : T_BLOCKED,
                          memory_order_relaxed);
    atomic_fetch_sub_explicit(&rt.active, 1, memory_order_relaxed);
    t->t_yield = Y_BLOCK;
    return lua_yieldk(L, 0, (lua_KContext)t, wait_k);
  }

  /* An OS thread: the main thread, a pool thread, or a call that cannot
   * yield.  One waiter per thread. */
  static _Thread_local braid_waiter_t tw;
  static _Thread_local bool tw_ready;
  if (!tw_ready) {
    braid_waiter_init(&tw, NULL, NULL);
    tw_ready = true;
  }
  bool owner = rt.have_owner && pthread_equal(pthread_self(), rt.owner);
  if (owner && atomic_exchange_explicit(&rt.interrupt, 0, memory_order_acq_rel)) {
    r.s_index = BRAID_W_INTR;
    r.s_err = BRAID_EINTR;
    r.s_msg = NULL;
    return complete(L, NULL, cases, n, &r, finish, what, on);
  }
  int rc = now_only ? braid_select_try(cases, n, &r) : braid_select_arm(cases, n, &tw, &r);
  if (rc == BRAID_EAGAIN && now_only) {
    r.s_index = BRAID_W_TIMEOUT;
    r.s_err = BRAID_ETIMEDOUT;
    r.s_msg = NULL;
  } else if (rc == BRAID_EAGAIN) {
    int64_t step = 2000000;             /* 2 ms, then 20 ms slices */
    for (;;) {
      int64_t slice = deadline;
      if (owner) {
        int64_t s = braid_now_ns() + step;
        if (s < slice) slice = s;
        step = 20000000;
      }
      if (braid_waiter_park_until(&tw, slice) == 0) break;
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
      if (braid_waiter_claim(&tw, special)) tw.w_err = err;  /* our own: no wake */
      else braid_waiter_park_until(&tw, BRAID_FOREVER);    /* a wake is coming */
      break;
    }
    braid_select_disarm(cases, n, &tw, &r);
  }
  return complete(L, NULL, cases, n, &r, finish, what, on);
}

bool braid__cancel_pending(lua_State *L) {
  task_t *t = current_task(L);
  return t && atomic_load_explicit(&t->t_cancel, memory_order_relaxed);
}

void braid_interrupt(void) {
  atomic_store_explicit(&rt.interrupt, 1, memory_order_release);
}

void braid_interrupt_clear(void) {
  atomic_store_explicit(&rt.interrupt, 0, memory_order_release);
}

/* Runtime threads take no signals: SIGINT must reach the main thread (the
 * REPL's handler, EINTR in its reads). */
static void block_signals(void) {
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
}

/* ------------------------------------------------------------------------ */
/* the blocking pool */

static _Thread_local bool tls_pool_thread;

static void *pool_main(void *arg) {
  (void)arg;
  tls_pool_thread = true;
  block_signals();
  lua_State *L = NULL;
  pthread_mutex_lock(&rt.mtx);
  L = new_private_state();
  for (;;) {
    while (rt.b_head == NULL && !atomic_load_explicit(&rt.stopping, memory_order_seq_cst)) {
      rt.b_idle++;
      pthread_cond_wait(&rt.b_cv, &rt.mtx);
      rt.b_idle--;
    }
    if (rt.b_head == NULL) break;       /* stopping with nothing queued */
    bjob_t *j = rt.b_head;
    rt.b_head = j->j_next;
    if (rt.b_head == NULL) rt.b_tail = NULL;
    pthread_mutex_unlock(&rt.mtx);
    lua_settop(L, 0);
    int nf = pdecode(L, j->j_fn);
    int na = nf == 1 ? pdecode(L, j->j_args) : -1;
    braid_fstate_t st;
    braid_msg_t *m;
    if (nf != 1 || na < 0) {
      st = BRAID_FUTURE_REJECTED;
      m = rejection(L, -1, NULL);
    } else {
      lua_pushcfunction(L, NULL);
      lua_settop(L, na + 1);
      if (lua_pcall(L, na, LUA_MULTRET, 0) == LUA_OK) {
        int nres = lua_gettop(L);
        m = braid__pencode(L, 1, nres, "results");
        st = m ? BRAID_FUTURE_RESOLVED : BRAID_FUTURE_REJECTED;
        if (m == NULL) m = rejection(L, -1, NULL);
      } else {
        luaL_traceback(L, L, NULL, 0);
        st = BRAID_FUTURE_REJECTED;
        m = rejection(L, -2, lua_tostring(L, -1));
      }
    }
    lua_settop(L, 0);
    braid_msg_release(j->j_fn);
    braid_msg_release(j->j_args);
    braid_future_settle(j->j_fut, st, m);
    braid_future_release(j->j_fut);
    free(j);
    atomic_fetch_sub_explicit(&rt.binflight, 1, memory_order_seq_cst);
    atomic_fetch_add_explicit(&rt.epoch, 1, memory_order_relaxed);
    pthread_mutex_lock(&rt.mtx);
  }
  rt.b_threads--;
  pthread_cond_broadcast(&rt.b_cv);
  pthread_mutex_unlock(&rt.mtx);
  if (L) lua_close(L);
  atomic_fetch_sub_explicit(&rt.bexit, 1, memory_order_release);
  return NULL;
}

static void blocking_shutdown(void) {
  pthread_mutex_lock(&rt.mtx);
  /* Jobs not started are cancelled. */
  bjob_t *j = rt.b_head;
  rt.b_head = rt.b_tail = NULL;
  pthread_cond_broadcast(&rt.b_cv);
  pthread_mutex_unlock(&rt.mtx);
  while (j) {
    bjob_t *next = j->j_next;
    braid_msg_release(j->j_fn);
    braid_msg_release(j->j_args);
    braid_future_settle(j->j_fut, BRAID_FUTURE_CANCELLED, NULL);
    braid_future_release(j->j_fut);
    atomic_fetch_sub_explicit(&rt.binflight, 1, memory_order_relaxed);
    free(j);
    j = next;
  }
  /* Running jobs get a bounded grace period: a thread stuck in a system
   * call cannot be joined, and exit must not hang on it.  Such a thread
   * finishes its job later and exits on its own. */
  int64_t until = braid_now_ns() + 2000000000LL;
  while (atomic_load_explicit(&rt.bexit, memory_order_acquire) > 0 && braid_now_ns() < until)
    usleep(1000);
}

/* ------------------------------------------------------------------------ */
/* the Lua functions */

static task_t *task_new(lua_State *L, int fnidx, int nargs, const char *name) {
  luaL_checktype(L, fnidx, LUA_TFUNCTION);
  braid_msg_t *fn = braid__pencode(L, fnidx, 1, "fn");
  if (fn == NULL) lua_error(L);
  braid_msg_t *args = braid__pencode(L, fnidx + 1, nargs, "args");
  if (args == NULL) {
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
  t->t_name = nm;
  t->t_fut = f;
  t->t_fn = fn;
  t->t_args = args;
  t->t_coref = LUA_NOREF;
  t->t_envref = LUA_NOREF;
  t->t_cases = t->t_small;
  t->t_casecap = SMALL_CASES;
  atomic_init(&t->t_state, T_NEW);
  atomic_init(&t->t_home, NULL);
  atomic_init(&t->t_cancel, false);
  return t;
}

static int spawn_common(lua_State *L, int fnidx, const char *name) {
  if (!rt.started) rt_start(L);
  int nargs = lua_gettop(L) - fnidx;
  task_t *t = task_new(L, fnidx, nargs, name);
  braid__pushhandle(L, (braid_obj_t *)t->t_fut);  /* before queueing: t may end at once */
  braid_future_set_cancel_hook(t->t_fut, task_cancel_hook, t);
  pthread_mutex_lock(&rt.mtx);
  t->t_lnext = rt.live;
  if (rt.live) rt.live->t_lprev = t;
  rt.live = t;
  bool stopping = atomic_load_explicit(&rt.stopping, memory_order_seq_cst);
  pthread_mutex_unlock(&rt.mtx);
  atomic_fetch_add_explicit(&rt.nlive, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&rt.spawned, 1, memory_order_relaxed);
  if (stopping) return luaL_error(L, "braid: the runtime is shutting down");
  push_new(t);
  return 1;
}

static int l_go(lua_State *L) {
  return spawn_common(L, 1, NULL);
}

static int l_spawn(lua_State *L) {
  const char *name = NULL;
  if (!lua_isnoneornil(L, 1)) {
    luaL_checktype(L, 1, LUA_TTABLE);
    if (lua_getfield(L, 1, "name") != LUA_TNIL) name = luaL_checkstring(L, -1);
    lua_pop(L, 1);
  }
  int r = spawn_common(L, 2, name);
  return r;
}

static int l_blocking(lua_State *L) {
  if (!rt.started) rt_start(L);
  luaL_checktype(L, 1, LUA_TFUNCTION);
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
  braid__pushhandle(L, (braid_obj_t *)f);
  atomic_fetch_add_explicit(&rt.binflight, 1, memory_order_seq_cst);
  pthread_mutex_lock(&rt.mtx);
  if (rt.b_tail) rt.b_tail->j_next = j; else rt.b_head = j;
  rt.b_tail = j;
  if (rt.b_idle > 0) {
    pthread_cond_signal(&rt.b_cv);
  } else if (rt.b_threads < rt.blocking_max) {
    pthread_t th;
    if (pthread_create(&th, NULL, pool_main, NULL) == 0) {
      pthread_detach(th);
      rt.b_threads++;
      atomic_fetch_add_explicit(&rt.bexit, 1, memory_order_relaxed);
    }
  }
  pthread_mutex_unlock(&rt.mtx);
  return 1;
}

static int finish_sleep(lua_State *L, braid_case_t *c, int n, braid_selres_t *r) {
  braid_msg_release(r->s_msg);
  return 0;
}

static int l_sleep(lua_State *L) {
  lua_Number s = luaL_checknumber(L, 1);
  if (s != s || s < 0) luaL_argerror(L, 1, "seconds must be >= 0");
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

static int l_config(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    lua_pop(L, 1);
    const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "?";
    if (strcmp(k, "workers") && strcmp(k, "preempt_ms") && strcmp(k, "blocking_threads"))
      return luaL_error(L, "braid: config: unknown option '%s' (workers, preempt_ms, "
                           "blocking_threads)", k);
  }
  pthread_mutex_lock(&rt.mtx);
  bool started = rt.started;
  pthread_mutex_unlock(&rt.mtx);
  if (started) return luaL_error(L, "braid: config: the runtime has already started");
  if (lua_getfield(L, 1, "workers") != LUA_TNIL) {
    lua_Integer n = luaL_checkinteger(L, -1);
    luaL_argcheck(L, n >= 1 && n <= 1024, 1, "workers must be between 1 and 1024");
    rt.nworkers = (int)n;
  }
  if (lua_getfield(L, 1, "preempt_ms") != LUA_TNIL) {
    lua_Number ms = luaL_checknumber(L, -1);
    luaL_argcheck(L, ms >= 1, 1, "preempt_ms must be >= 1");
    rt.preempt_ms = ms;
  }
  if (lua_getfield(L, 1, "blocking_threads") != LUA_TNIL) {
    lua_Integer n = luaL_checkinteger(L, -1);
    luaL_argcheck(L, n >= 1 && n <= 4096, 1, "blocking_threads must be between 1 and 4096");
    rt.blocking_max = (int)n;
  }
  lua_pop(L, 3);
  return 0;
}

static void setint(lua_State *L, const char *k, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setfield(L, -2, k);
}

static int l_stats(lua_State *L) {
  long live = atomic_load_explicit(&rt.nlive, memory_order_relaxed);
  long active = atomic_load_explicit(&rt.active, memory_order_relaxed);
  long ready = 0, blocked = 0, sleeping = 0, running = 0;
  pthread_mutex_lock(&rt.mtx);
  for (task_t *t = rt.live; t; t = t->t_lnext) {
    switch (atomic_load_explicit(&t->t_state, memory_order_relaxed)) {
      case T_BLOCKED: blocked++; break;
      case T_SLEEPING: sleeping++; break;
      case T_RUNNING: running++; break;
      default: ready++; break;
    }
  }
  int bthreads = rt.b_threads;
  pthread_mutex_unlock(&rt.mtx);
  (void)active;
  lua_createtable(L, 0, 12);
  setint(L, "workers", rt.started ? rt.nworkers : 0);
  setint(L, "tasks", live);
  setint(L, "ready", ready);
  setint(L, "running", running);
  setint(L, "blocked", blocked);
  setint(L, "sleeping", sleeping);
  setint(L, "spawned", (lua_Integer)atomic_load_explicit(&rt.spawned, memory_order_relaxed));
  setint(L, "completed", (lua_Integer)atomic_load_explicit(&rt.completed, memory_order_relaxed));
  setint(L, "failed", (lua_Integer)atomic_load_explicit(&rt.failed, memory_order_relaxed));
  setint(L, "messages", (lua_Integer)atomic_load_explicit(&rt.messages, memory_order_relaxed));
  setint(L, "blocking_threads", bthreads);
  setint(L, "blocking_jobs", atomic_load_explicit(&rt.binflight, memory_order_relaxed));
  setint(L, "timers", rt.started && rt.timers ? (lua_Integer)braid_timerq_len(rt.timers) : 0);
  return 1;
}

static int l_tasks(lua_State *L) {
  lua_newtable(L);
  int i = 0;
  pthread_mutex_lock(&rt.mtx);
  for (task_t *t = rt.live; t; t = t->t_lnext) {
    int st = atomic_load_explicit(&t->t_state, memory_order_relaxed);
    lua_createtable(L, 0, 4);
    setint(L, "id", (lua_Integer)t->t_id);
    if (t->t_name) { lua_pushstring(L, t->t_name); lua_setfield(L, -2, "name"); }
    lua_pushstring(L, state_names[st]);
    lua_setfield(L, -2, "state");
    const char *what = atomic_load_explicit(&t->t_what, memory_order_relaxed);
    braid_objtype_t *ontype = atomic_load_explicit(&t->t_ontype, memory_order_relaxed);
    if ((st == T_BLOCKED || st == T_SLEEPING) && what) {
      if (ontype)
        lua_pushfstring(L, "%s braid.%s#%I", what, ontype->ot_name,
                        (lua_Integer)atomic_load_explicit(&t->t_onid, memory_order_relaxed));
      else
        lua_pushstring(L, what);
      lua_setfield(L, -2, "waiting_on");
    }
    lua_rawseti(L, -2, ++i);
  }
  pthread_mutex_unlock(&rt.mtx);
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
  pthread_mutex_lock(&rt.mtx);
  bool first = !rt.have_owner;
  if (first) {
    rt.have_owner = true;
    rt.owner = pthread_self();
  }
  pthread_mutex_unlock(&rt.mtx);
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
  pthread_mutex_lock(&rt.mtx);
  if (rt.started) {
    pthread_mutex_unlock(&rt.mtx);
    return BRAID_EINVAL;
  }
  if (workers > 0) rt.nworkers = workers;
  if (preempt_ms >= 1) rt.preempt_ms = preempt_ms;
  if (blocking_threads > 0) rt.blocking_max = blocking_threads;
  pthread_mutex_unlock(&rt.mtx);
  return 0;
}

void braid__rt_stop(void) { rt_stop(); }

void braid__rt_start(lua_State *L) {
  if (!rt.started) rt_start(L);
}

void braid__rt_job(int delta) {
  atomic_fetch_add_explicit(&rt.binflight, delta, memory_order_seq_cst);
  atomic_fetch_add_explicit(&rt.epoch, 1, memory_order_relaxed);
}

void braid__rt_set_deadlock_check(bool on) {
  atomic_store_explicit(&rt.no_deadlock, !on, memory_order_relaxed);
}
