/*
 * lembed.c -- the embedding API (include/braid.h): the runtime's life, and
 * channels and futures used from C with plain values.
 *
 * Design notes
 *
 * braid has one runtime per process (lruntime.c's rt); braid_runtime_t is
 * the host's handle on it: the configuration it was created with, and the
 * right to free it.  braid_runtime_new configures the task runtime
 * (braid__rt_configure: before it starts), starts accepting native calls
 * (lnative.c) and sets the deadlock check; braid_runtime_open loads braid
 * into a host state and starts the workers; braid_runtime_free stops the
 * task runtime (braid__rt_stop: cancels, joins, frees) and then the native
 * pool (its running calls are waited for: the host owns their userdata).
 *
 * The channel and future functions are thin: a value is encoded into a
 * message (lcvalue.c) and handed to the core, and a message received is
 * decoded back.  They block the calling OS thread (the core's _until
 * functions), never a worker.
 *
 * Unobserved errors.  The task runtime reports a failed task nobody
 * awaited; when the config has a reporter, the core's
 * braid_future_unobserved hook is pointed at it once the runtime has
 * started.  (A task whose future handle was already collected when it
 * failed is reported by lruntime.c directly, on stderr: reaching the
 * host's reporter there needs a hook in lruntime.c.)
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lembed.h"
#include "lruntime.h"

struct braid_runtime {
  braid_config_t r_cfg;         /* immutable: defaults filled in */
};

static struct {
  pthread_mutex_t mtx;          /* Protects: rt, report, report_ud */
  braid_runtime_t *rt;          /* the live runtime, or NULL */
  braid_report_fn report;       /* the live runtime's reporter, or NULL */
  void *report_ud;
} live = { .mtx = PTHREAD_MUTEX_INITIALIZER };

/* ------------------------------------------------------------------------ */
/* The runtime                                                               */

void braid_config_init(braid_config_t *cfg) {
  memset(cfg, 0, sizeof *cfg);
}

static int online_cpus(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

/* braid_future_unobserved: a rejected future dropped unobserved.  Any
 * thread; no braid lock held (core/future.c calls it from the destroy). */
static void report_unobserved(braid_future_t *f, braid_msg_t *err) {
  size_t len = 0;
  const char *s = err ? braid__msg_first_string(err, &len) : NULL;
  if (s == NULL) s = "(an error that is not a string)", len = strlen(s);
  pthread_mutex_lock(&live.mtx);
  braid_report_fn fn = live.report;
  void *ud = live.report_ud;
  pthread_mutex_unlock(&live.mtx);
  if (fn != NULL) {
    fn(s, len, ud);
  } else {
    uint64_t tid = braid_future_task_id(f);
    const char *name = braid_future_task_name(f);
    if (tid != 0 && name)
      fprintf(stderr, "braid: task '%s' (braid.future#%llu) failed and nobody awaited it: %.*s\n",
              name, (unsigned long long)braid_future_id(f), (int)len, s);
    else if (tid != 0)
      fprintf(stderr, "braid: task %llu (braid.future#%llu) failed and nobody awaited it: %.*s\n",
              (unsigned long long)tid, (unsigned long long)braid_future_id(f), (int)len, s);
    else
      fprintf(stderr, "braid: an error nobody awaited (braid.future#%llu, a rejected future): %.*s\n",
              (unsigned long long)braid_future_id(f), (int)len, s);
    fflush(stderr);
  }
}

int braid_runtime_new(const braid_config_t *cfg, braid_runtime_t **out) {
  braid_config_t c;
  *out = NULL;
  if (cfg) c = *cfg; else braid_config_init(&c);
  if (c.workers < 0 || c.workers > 1024 || c.blocking_threads < 0 ||
      c.blocking_threads > 4096 || c.native_threads < 0 || c.native_threads > 4096 ||
      !(c.preempt_ms == 0 || c.preempt_ms >= 1))       /* NaN fails too */
    return BRAID_EINVAL;
  if (c.workers == 0) c.workers = online_cpus();
  if (c.preempt_ms == 0) c.preempt_ms = 10;
  if (c.blocking_threads == 0) c.blocking_threads = 64;
  if (c.native_threads == 0) c.native_threads = online_cpus();
  braid_runtime_t *rt = calloc(1, sizeof *rt);
  if (rt == NULL) return BRAID_ENOMEM;
  rt->r_cfg = c;
  pthread_mutex_lock(&live.mtx);
  int rc = live.rt != NULL ? BRAID_EINVAL
           : braid__rt_configure(c.workers, c.preempt_ms, c.blocking_threads);
  if (rc == 0) {
    live.rt = rt;
    live.report = c.report;
    live.report_ud = c.report_ud;
  }
  pthread_mutex_unlock(&live.mtx);
  if (rc != 0) {
    free(rt);
    return rc;
  }
  braid__native_start(c.native_threads);
  braid__rt_set_deadlock_check(c.deadlock_check != 0);
  *out = rt;
  return 0;
}

/* Runs under lua_pcall: loads braid as the global `braid`, starts the
 * runtime.  Upvalue-free; the runtime is argument 1 (light userdata). */
static int open_body(lua_State *L) {
  braid_runtime_t *rt = lua_touserdata(L, 1);
  luaL_requiref(L, "braid", luaopen_braid, 1);
  lua_pop(L, 1);                        /* the module (it is global now) */
  braid__rt_start(L);
  if (rt->r_cfg.report != NULL) {
    /* After the start: rt_start installs the runtime's own reporter.  No
     * task has run yet, so no thread reads the hook concurrently. */
    braid_future_unobserved = report_unobserved;
  }
  return 0;
}

int braid_runtime_open(braid_runtime_t *rt, lua_State *L) {
  if (rt == NULL || L == NULL) return BRAID_EINVAL;
  pthread_mutex_lock(&live.mtx);
  bool ok = live.rt == rt;
  pthread_mutex_unlock(&live.mtx);
  if (!ok) return BRAID_EINVAL;
  int top = lua_gettop(L);
  if (!lua_checkstack(L, 4)) return BRAID_ENOMEM;
  lua_pushcfunction(L, open_body);
  lua_pushlightuserdata(L, rt);
  int st = lua_pcall(L, 1, 0, 0);
  lua_settop(L, top);                   /* the error message, if any */
  return st == LUA_OK ? 0 : BRAID_ENOMEM;
}

void braid_runtime_free(braid_runtime_t *rt) {
  if (rt == NULL) return;
  pthread_mutex_lock(&live.mtx);
  bool ok = live.rt == rt;
  pthread_mutex_unlock(&live.mtx);
  BRAID_ASSERT(ok);                     /* freeing a runtime twice */
  /* Tasks first, so that a task awaiting a native call is cancelled as a
   * task rather than failing with the call's "cancelled". */
  braid__rt_stop();                     /* cancels tasks, joins every thread */
  braid__native_stop();                 /* waits for running native calls */
  braid__rt_set_deadlock_check(true);   /* the default of plain Lua hosts */
  pthread_mutex_lock(&live.mtx);
  live.rt = NULL;
  live.report = NULL;
  live.report_ud = NULL;
  pthread_mutex_unlock(&live.mtx);
  free(rt);
}

int braid_native_register(braid_runtime_t *rt, const char *name, braid_native_fn fn, void *ud) {
  if (rt == NULL) return BRAID_EINVAL;
  return braid__native_register(name, fn, ud);
}

/* ------------------------------------------------------------------------ */
/* Channels                                                                  */

_Static_assert(BRAID_CHAN_BLOCK == BRAID_POLICY_BLOCK && BRAID_CHAN_DROP == BRAID_POLICY_DROP &&
               BRAID_CHAN_SLIDE == BRAID_POLICY_SLIDE, "braid.h's policies are core/chan.h's");

int braid_chan_create(size_t cap, int policy, braid_chan_t **out) {
  *out = NULL;
  if (policy != BRAID_CHAN_BLOCK && policy != BRAID_CHAN_DROP && policy != BRAID_CHAN_SLIDE)
    return BRAID_EINVAL;
  *out = braid_chan_new(cap, (braid_policy_t)policy);
  return *out ? 0 : BRAID_ENOMEM;
}

void braid_chan_ref(braid_chan_t *ch) { braid_chan_retain(ch); }
void braid_chan_unref(braid_chan_t *ch) { if (ch) braid_chan_release(ch); }

int braid_chan_send_value(braid_chan_t *ch, const braid_value_t *v, int64_t deadline) {
  if (ch == NULL || v == NULL || v->type == BRAID_TNIL) return BRAID_EINVAL;
  braid_msg_t *m;
  int rc = braid__value_encode(v, 1, &m);
  if (rc != 0) return rc;
  rc = braid_chan_send_until(ch, m, deadline);
  if (rc != 0) braid_msg_release(m);    /* a failed send leaves it ours */
  else braid__count_message();
  return rc;
}

int braid_chan_recv_value(braid_chan_t *ch, braid_value_t *out, int64_t deadline) {
  braid_value_init_nil(out);
  if (ch == NULL) return BRAID_EINVAL;
  braid_msg_t *m = NULL;
  int rc = braid_chan_recv_until(ch, &m, deadline);
  if (rc == 0 || (rc == BRAID_ECLOSED && m != NULL)) {
    int drc = braid__value_decode1(m, out, NULL);
    if (rc == 0) rc = drc;              /* a close error that C cannot hold: nil */
  }
  braid_msg_release(m);
  return rc;
}

int braid_chan_close_value(braid_chan_t *ch, const braid_value_t *err) {
  if (ch == NULL) return BRAID_EINVAL;
  braid_msg_t *m = NULL;
  if (err != NULL && err->type != BRAID_TNIL) {
    int rc = braid__value_encode(err, 1, &m);
    if (rc != 0) return rc;
  }
  return braid_chan_close(ch, m);       /* takes m, also when already closed */
}

void braid_push_chan(lua_State *L, braid_chan_t *ch) {
  braid__pushhandle(L, (braid_obj_t *)ch);
}

braid_chan_t *braid_check_chan(lua_State *L, int idx) {
  braid_chan_t *ch = (braid_chan_t *)braid__checkhandle(L, idx, &braid_chan_type);
  braid_chan_retain(ch);
  return ch;
}

/* ------------------------------------------------------------------------ */
/* Futures                                                                   */

int braid_future_create(braid_future_t **out) {
  *out = braid_future_new();
  return *out ? 0 : BRAID_ENOMEM;
}

void braid_future_ref(braid_future_t *f) { braid_future_retain(f); }
void braid_future_unref(braid_future_t *f) { if (f) braid_future_release(f); }

int braid_future_resolve_values(braid_future_t *f, const braid_value_t *vals, size_t n) {
  if (f == NULL || (vals == NULL && n > 0)) return BRAID_EINVAL;
  if (braid_future_state(f) != BRAID_FUTURE_PENDING) return BRAID_ESETTLED;
  braid_msg_t *m;
  int rc = braid__value_encode(vals, n, &m);
  if (rc != 0) return rc;
  return braid_future_resolve(f, m);    /* takes m either way */
}

int braid_future_reject_value(braid_future_t *f, const braid_value_t *err) {
  if (f == NULL || err == NULL || err->type == BRAID_TNIL) return BRAID_EINVAL;
  if (braid_future_state(f) != BRAID_FUTURE_PENDING) return BRAID_ESETTLED;
  braid_msg_t *m;
  int rc = braid__value_rejection(err, &m);
  if (rc != 0) return rc;
  return braid_future_reject(f, m);
}

int braid_future_await_values(braid_future_t *f, braid_value_t *out, int64_t deadline) {
  braid_value_init_nil(out);
  if (f == NULL) return BRAID_EINVAL;
  braid_future_observe(f);
  braid_msg_t *m = NULL;
  int rc = braid_future_wait_until(f, &m, deadline);
  if (rc == 0) {
    rc = braid__value_decode(m, out, NULL);         /* nil on failure */
  } else if (rc == BRAID_EREJECTED) {
    braid__value_decode1(m, out, NULL);             /* an error C cannot hold: nil */
  }
  braid_msg_release(m);
  return rc;
}

void braid_push_future(lua_State *L, braid_future_t *f) {
  braid__pushhandle(L, (braid_obj_t *)f);
}

braid_future_t *braid_check_future(lua_State *L, int idx) {
  braid_future_t *f = (braid_future_t *)braid__checkhandle(L, idx, &braid_future_type);
  braid_future_retain(f);
  return f;
}
