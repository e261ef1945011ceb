/*
 * lnative.c -- braid.native: C functions that a host registered, called from
 * scripts, run on a pool of native threads (include/braid.h, "Native
 * functions").
 *
 * Design notes
 *
 * braid.native.NAME(...) encodes its arguments with the Lua codec (so the
 * rules and the error paths of every other transfer apply), decodes them
 * at once into plain C values (lcvalue.c, no Lua), and queues a call; it
 * returns a future without waiting.  A native thread takes the call, runs
 * the function with no Lua state, encodes its results (or its error) back
 * into a message and settles the future; a task awaiting it wakes like on
 * any future.  Decoding on the caller's side means that an argument C
 * cannot hold (a function, a cycle) raises in the script, at the call,
 * naming the argument, instead of rejecting the future later.
 *
 * The registry of natives is per process, like the runtime: every Lua
 * state (the host's and each worker's) has its own braid.native table,
 * whose entries are small closures that hold only the name and look the
 * function up at each call.  A state fills its table with the natives
 * registered when it is opened, and __index finds later ones (and caches
 * them).  The table is also package.loaded["braid.native"], so that the
 * codec sends a native function value by name (T_MODFIELD), like any
 * module's C function: braid.pmap(paths, braid.native.sha256_file) works.
 *
 * The calls run on a job pool of their own (core/jobpool.h, the pool
 * braid.blocking uses too, as another instance): it has its own bound
 * (braid_config_t.native_threads) and its own life, from
 * braid_runtime_new to braid_runtime_free, which outlives the task
 * runtime's (braid_runtime_free stops the tasks first), and its shutdown
 * waits for running calls without a grace limit.  Threads start on demand
 * and leave after 10 s idle.  Every queued or running call counts as
 * a runtime job (braid__rt_job) from before it is queued until after its
 * future is settled, so that the main thread's deadlock check never sees a
 * wait that a native call is about to complete as hopeless.
 *
 * Shutdown (braid__native_stop) stops accepting calls, marks the pool
 * stopping (braid_call_cancelled turns true), and stops the job pool: the
 * calls not started are settled as cancelled (their j_cancel), and every
 * thread is joined: a running native function is waited for, because the
 * host may free the function's userdata as soon as braid_runtime_free
 * returns.
 *
 * Lock order: np.mtx, then the job pool's lock (a call is submitted with
 * np.mtx held, so that a stop cannot free the pool under it).  No Lua API,
 * no future settle and no user code runs with np.mtx held.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobpool.h"
#include "lembed.h"
#include "lruntime.h"

typedef struct native {
  char *n_name;                 /* owned; stable until braid__native_stop */
  braid_native_fn n_fn;
  void *n_ud;
} native_t;

struct braid_call {
  braid_job_t c_job;            /* the pool's record; j_data is the call */
  const char *c_name;           /* borrowed from the registry entry */
  braid_native_fn c_fn;
  void *c_ud;
  braid_value_t c_args;         /* an array: the arguments */
  braid_value_t c_results;      /* an array: what braid_call_return gave */
  char *c_err;                  /* braid_call_error's message, or NULL */
  braid_future_t *c_fut;        /* one reference: the call's */
};

static struct {
  pthread_mutex_t mtx;          /* Protects: every field up to the atomics */
  bool accepting;               /* between braid__native_start and _stop */
  native_t *natives;            /* the registry */
  size_t nnatives, natcap;
  braid_jobpool_t *pool;        /* the native threads, while accepting */
  /* Set by shutdown before it stops the pool; read lock-free by
   * braid_call_cancelled (relaxed: a hint that a function polls). */
  _Atomic bool stopping;
} np = {
  .mtx = PTHREAD_MUTEX_INITIALIZER,
};

/* ------------------------------------------------------------------------ */
/* The registry                                                              */

static bool is_identifier(const char *s) {
  if (s == NULL || !((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_'))
    return false;
  for (s++; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
          (*s >= '0' && *s <= '9') || *s == '_'))
      return false;
  return true;
}

/* Called with np.mtx held. */
static native_t *find(const char *name) {
  for (size_t i = 0; i < np.nnatives; i++)
    if (strcmp(np.natives[i].n_name, name) == 0) return &np.natives[i];
  return NULL;
}

int braid__native_register(const char *name, braid_native_fn fn, void *ud) {
  if (fn == NULL || !is_identifier(name)) return BRAID_EINVAL;
  char *copy = strdup(name);
  if (copy == NULL) return BRAID_ENOMEM;
  int rc = 0;
  pthread_mutex_lock(&np.mtx);
  if (find(name) != NULL) {
    rc = BRAID_EINVAL;
  } else if (np.nnatives == np.natcap) {
    size_t cap = np.natcap ? np.natcap * 2 : 8;
    native_t *nv = realloc(np.natives, cap * sizeof *nv);
    if (nv == NULL) {
      rc = BRAID_ENOMEM;
    } else {
      np.natives = nv;
      np.natcap = cap;
    }
  }
  if (rc == 0) {
    np.natives[np.nnatives].n_name = copy;
    np.natives[np.nnatives].n_fn = fn;
    np.natives[np.nnatives].n_ud = ud;
    np.nnatives++;
  }
  pthread_mutex_unlock(&np.mtx);
  if (rc != 0) free(copy);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* The call object, for native functions                                     */

int braid_call_return(braid_call_t *call, braid_value_t *v) {
  if (call == NULL || v == NULL) return BRAID_EINVAL;
  return braid_array_push(&call->c_results, v);
}

int braid_call_error(braid_call_t *call, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = NULL;
  if (vasprintf(&s, fmt, ap) < 0) s = NULL;
  va_end(ap);
  free(call->c_err);
  call->c_err = s;                    /* NULL: the default message */
  return BRAID_EREJECTED;
}

bool braid_call_cancelled(braid_call_t *call) {
  return atomic_load_explicit(&np.stopping, memory_order_relaxed) ||
         braid_future_state(call->c_fut) != BRAID_FUTURE_PENDING ||
         braid_future_cancel_requested(call->c_fut);
}

const char *braid_call_name(braid_call_t *call) {
  return call->c_name;
}

/* ------------------------------------------------------------------------ */
/* The pool                                                                  */

static void call_free(braid_call_t *c) {
  braid_value_clear(&c->c_args);
  braid_value_clear(&c->c_results);
  free(c->c_err);
  braid_future_release(c->c_fut);
  free(c);
}

/* Settles c's future with what the function produced (rc: its result). */
static void call_settle(braid_call_t *c, int rc) {
  braid_msg_t *m = NULL;
  char buf[256];
  if (rc == 0) {
    int erc = braid__value_encode(c->c_results.u.array.items, c->c_results.u.array.len, &m);
    if (erc == 0) {
      braid_future_resolve(c->c_fut, m);
      return;
    }
    snprintf(buf, sizeof buf, "braid.native.%s: cannot return its results (%s)", c->c_name,
             erc == BRAID_EINVAL ? "nested too deep, or a malformed value"
                                 : braid_strerror(erc));
    m = braid__msg_error(buf, strlen(buf));
  } else if (atomic_load_explicit(&np.stopping, memory_order_relaxed)) {
    /* A call that gave up because of the shutdown: cancelled, like the
     * calls that never started (and not an error nobody will observe). */
    braid_future_settle(c->c_fut, BRAID_FUTURE_CANCELLED, NULL);
    return;
  } else if (c->c_err != NULL) {
    m = braid__msg_error(c->c_err, strlen(c->c_err));
  } else {
    if (rc < 0) snprintf(buf, sizeof buf, "braid.native.%s: %s", c->c_name, braid_strerror(rc));
    else snprintf(buf, sizeof buf, "braid.native.%s: failed (%d)", c->c_name, rc);
    m = braid__msg_error(buf, strlen(buf));
  }
  braid_future_reject(c->c_fut, m);   /* m NULL (out of memory): "rejected" */
}

/* j_run: runs the call on a native thread. */
static void call_run(braid_job_t *j) {
  braid_call_t *c = j->j_data;
  /* A call cancelled while queued is not run (its future is settled). */
  if (braid_future_state(c->c_fut) == BRAID_FUTURE_PENDING) {
    int rc = c->c_fn(c, c->c_args.u.array.items, c->c_args.u.array.len, c->c_ud);
    call_settle(c, rc);
  }
  call_free(c);
  /* After the settle: the deadlock check must not see the job gone while
   * its result is not yet visible. */
  braid__rt_job(-1);
}

/* j_cancel: the pool stopped before the call started. */
static void call_drop(braid_job_t *j) {
  braid_call_t *c = j->j_data;
  braid_future_settle(c->c_fut, BRAID_FUTURE_CANCELLED, NULL);
  call_free(c);
  braid__rt_job(-1);
}

int braid__native_start(int max_threads) {
  /* Idle native threads leave after 10 s (they start again on demand). */
  braid_jobpool_t *pool = braid_jobpool_new(max_threads > 0 ? max_threads : 1,
                                            10000000000LL, NULL);
  if (pool == NULL) return BRAID_ENOMEM;
  pthread_mutex_lock(&np.mtx);
  BRAID_ASSERT(np.pool == NULL);        /* one runtime at a time (lembed.c) */
  np.pool = pool;
  np.accepting = true;
  atomic_store_explicit(&np.stopping, false, memory_order_relaxed);
  pthread_mutex_unlock(&np.mtx);
  return 0;
}

void braid__native_stop(void) {
  pthread_mutex_lock(&np.mtx);
  np.accepting = false;
  atomic_store_explicit(&np.stopping, true, memory_order_relaxed);
  braid_jobpool_t *pool = np.pool;
  np.pool = NULL;                       /* no submit reaches it from now on */
  pthread_mutex_unlock(&np.mtx);
  /* Queued calls settle as cancelled (call_drop); running ones are waited
   * for, however long they take (the host owns their userdata). */
  if (pool) braid_jobpool_stop(pool, BRAID_FOREVER);
  /* Every call is over: no one borrows a name any more. */
  pthread_mutex_lock(&np.mtx);
  for (size_t i = 0; i < np.nnatives; i++) free(np.natives[i].n_name);
  free(np.natives);
  np.natives = NULL;
  np.nnatives = np.natcap = 0;
  pthread_mutex_unlock(&np.mtx);
}

/* Queues c for the native function called name.  Returns 0, BRAID_ENOENT
 * (not registered), BRAID_ECANCELED (not accepting calls) or BRAID_ENOMEM
 * (no native thread could start, and none runs). */
static int submit(braid_call_t *c, const char *name) {
  pthread_mutex_lock(&np.mtx);
  native_t *nt = np.accepting ? find(name) : NULL;
  if (nt == NULL) {
    int rc = np.accepting ? BRAID_ENOENT : BRAID_ECANCELED;
    pthread_mutex_unlock(&np.mtx);
    return rc;
  }
  c->c_name = nt->n_name;
  c->c_fn = nt->n_fn;
  c->c_ud = nt->n_ud;
  c->c_job.j_run = call_run;
  c->c_job.j_cancel = call_drop;
  c->c_job.j_data = c;
  braid__rt_job(+1);                    /* before any thread can finish it */
  /* Under np.mtx: braid__native_stop cannot free the pool meanwhile. */
  int rc = braid_jobpool_submit(np.pool, &c->c_job);
  pthread_mutex_unlock(&np.mtx);
  if (rc != 0) {
    braid__rt_job(-1);
    return rc == BRAID_ECLOSED ? BRAID_ECANCELED : BRAID_ENOMEM;
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* The Lua side                                                              */

static int no_native(lua_State *L, const char *name);

/* braid.native.NAME(...) -> future.  Upvalue 1: NAME. */
static int l_call(lua_State *L) {
  const char *name = lua_tostring(L, lua_upvalueindex(1));
  int n = lua_gettop(L);
  braid_future_t *f = braid_future_new();
  if (f == NULL) return luaL_error(L, "braid: out of memory");
  braid__pushhandle(L, (braid_obj_t *)f);
  braid_future_release(f);              /* the handle holds it now */
  braid_msg_t *m = braid__encode(L, 1, n, "args");      /* raises: nothing to undo */
  braid_call_t *c = calloc(1, sizeof *c);
  braid__vfault_t vf;
  int rc = c ? braid__value_decode(m, &c->c_args, &vf) : BRAID_ENOMEM;
  braid_msg_release(m);
  if (rc == 0) {
    braid_value_init_array(&c->c_results);
    braid_future_retain(f);
    c->c_fut = f;
    rc = submit(c, name);
    if (rc != 0) call_free(c);
  } else {
    free(c);                            /* c_args is nil after a failed decode */
  }
  switch (rc) {
    case 0:
      return 1;                         /* the future */
    case BRAID_ENOENT:
      return no_native(L, name);
    case BRAID_ECANCELED:
      return luaL_error(L, "braid.native.%s: the runtime is shutting down", name);
    case BRAID_EINVAL: {
      const char *what = vf.vf_what ? vf.vf_what : "value";
      if (strcmp(what, "handle") == 0)
        lua_pushfstring(L, "cannot pass a braid.%s", vf.vf_type ? vf.vf_type : "handle");
      else if (strcmp(what, "cycle") == 0 || strcmp(what, "nesting") == 0)
        lua_pushfstring(L, "cannot pass a table with a %s",
                        strcmp(what, "cycle") == 0 ? "cycle" : "nesting too deep");
      else
        lua_pushfstring(L, "cannot pass a %s", what);
      const char *msg = lua_tostring(L, -1);
      return braid__argerror(L, (int)vf.vf_index, lua_pushfstring(L, "braid.native.%s", name), msg);
    }
    default:
      return luaL_error(L, "braid: out of memory");
  }
}

static void push_native(lua_State *L, const char *name) {
  lua_pushstring(L, name);
  lua_pushcclosure(L, l_call, 1);
}

/* Raises "braid: no native function 'name' (registered: a, b)".  The
 * names are copied under the lock into a fixed buffer (no Lua API with
 * np.mtx held), then pushed. */
static int no_native(lua_State *L, const char *name) {
  char list[512];
  size_t used = 0;
  list[0] = '\0';
  pthread_mutex_lock(&np.mtx);
  size_t n = np.nnatives;
  for (size_t i = 0; i < n && used + 8 < sizeof list; i++) {
    int k = snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", np.natives[i].n_name);
    if (k < 0 || (size_t)k >= sizeof list - used) {
      snprintf(list + used, sizeof list - used, ", ...");
      break;
    }
    used += (size_t)k;
  }
  pthread_mutex_unlock(&np.mtx);
  if (n == 0)
    return luaL_error(L, "braid: no native function '%s' (the host registered none)", name);
  return luaL_error(L, "braid: no native function '%s' (registered: %s)", name, list);
}

/* __index(t, k): a native registered after t was filled; any other name
 * raises (a misspelt native is an error at the call site, not "attempt to
 * call a nil value"). */
static int l_index(lua_State *L) {
  if (lua_type(L, 2) != LUA_TSTRING) return 0;
  const char *name = lua_tostring(L, 2);
  pthread_mutex_lock(&np.mtx);
  bool known = find(name) != NULL;
  pthread_mutex_unlock(&np.mtx);
  if (!known) return no_native(L, name);
  push_native(L, name);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, -2);
  lua_rawset(L, 1);                     /* cache it: t[k] = the closure */
  return 1;
}

void braid__open_native(lua_State *L) {
  lua_newtable(L);                      /* braid.native */
  lua_createtable(L, 0, 2);
  lua_pushcfunction(L, l_index);
  lua_setfield(L, -2, "__index");
  lua_pushliteral(L, "braid.native");
  lua_setfield(L, -2, "__name");
  lua_setmetatable(L, -2);
  /* The natives registered now.  A name is read under the lock and pushed
   * after it (the Lua API may raise, never with np.mtx held); the string
   * stays valid meanwhile, since only braid__native_stop frees it. */
  for (size_t i = 0;; i++) {
    pthread_mutex_lock(&np.mtx);
    const char *name = i < np.nnatives ? np.natives[i].n_name : NULL;
    pthread_mutex_unlock(&np.mtx);
    if (name == NULL) break;
    lua_pushstring(L, name);
    push_native(L, name);
    lua_rawset(L, -3);
  }
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushvalue(L, -2);
  lua_setfield(L, -2, "braid.native");  /* package.loaded["braid.native"] */
  lua_pop(L, 1);                        /* package.loaded */
  lua_setfield(L, -2, "native");        /* module.native */
}
