/*
 * braid.h -- the public header for C programs that embed braid.
 *
 * braid gives Lua 5.4 scripts channels, select, futures, timers and an M:N
 * scheduler that runs Lua tasks in parallel on native threads.  A host opens
 * braid into its own lua_State with luaopen_braid (or requires it) and runs
 * scripts as usual.  A host that wants more uses the embedding API below:
 *
 *   braid_runtime_t *rt;
 *   braid_runtime_new(NULL, &rt);                   // defaults
 *   braid_native_register(rt, "sha256_file", sha256_file, NULL);
 *   lua_State *L = luaL_newstate();
 *   luaL_openlibs(L);
 *   braid_runtime_open(rt, L);                      // global `braid`
 *   luaL_dofile(L, "checksums.lua");                // braid.native.sha256_file(path)
 *   lua_close(L);
 *   braid_runtime_free(rt);
 *
 * Conventions (as in libuv's uv.h):
 *
 * - Functions that can fail return an int: 0, or a negative BRAID_E* code
 *   (braid_strerror() names it).  On failure nothing was modified unless the
 *   function says otherwise.
 * - Deadlines are absolute: nanoseconds of CLOCK_MONOTONIC, as made by
 *   braid_deadline_after(seconds); BRAID_FOREVER never passes, and a
 *   deadline at or before now (0 will do) means "try once, do not wait".
 *   A wait blocks the calling OS thread.
 * - Channels and futures are reference counted: a function that "returns a
 *   new reference" hands one to the caller, who drops it with
 *   braid_chan_unref / braid_future_unref.  "Borrows" means the function
 *   keeps no reference after it returns.
 * - Every function is thread-safe unless it takes a lua_State: those follow
 *   Lua's rule (only the thread that currently runs that state).  A
 *   braid_value_t is plain data: one thread at a time, as with any struct.
 */
#ifndef BRAID_H
#define BRAID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <lua.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BRAID_VERSION "0.1.0"
#define BRAID_VERSION_STRING "braid " BRAID_VERSION

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */

#include "braid_errno.h"   /* BRAID_E* codes, braid_strerror, braid_err_name */

/* ------------------------------------------------------------------------ */
/* Time                                                                      */

#define BRAID_FOREVER INT64_MAX

/* Returns the deadline `seconds` from now (saturating at BRAID_FOREVER); a
 * negative or NaN timeout counts as 0. */
BRAID_API int64_t braid_deadline_after(double seconds);

/* ------------------------------------------------------------------------ */
/* The Lua module                                                            */

/* Opens the braid module into L: pushes the module table (as require does)
 * and returns 1.  The first call starts the runtime (worker threads);
 * closing the state that opened it first shuts the runtime down: live tasks
 * are cancelled, every thread is joined, everything is freed. */
BRAID_API int luaopen_braid(lua_State *L);

/* Interrupts the blocking braid call (recv, send, await, sleep, select, ...)
 * that the main thread is in, or its next one: that call raises
 * "braid: interrupted".  Async-signal-safe: it only sets a flag, so a SIGINT
 * handler may call it. */
BRAID_API void braid_interrupt(void);

/* Forgets an interrupt that no blocking call has taken yet (the REPL calls
 * it before each new line, after Ctrl-C stopped computing code instead). */
BRAID_API void braid_interrupt_clear(void);

/* ------------------------------------------------------------------------ */
/* Values                                                                    */

/* The plain C values that cross between C and scripts: what a native
 * function receives and returns, and what C sends on channels and settles
 * futures with.  A Lua table arrives as BRAID_TARRAY when it has only the
 * keys 1..n, else as BRAID_TMAP (with its 1..n part as integer keys); an
 * empty table arrives as an empty array.  A value shared twice in a Lua
 * table is copied twice here; a cycle, a function, or a handle other than a
 * channel or a future cannot be represented (BRAID_EINVAL).
 *
 * Ownership: a braid_value_t owns its string bytes, its items, pairs and
 * handle references, recursively.  Assigning the struct moves that
 * ownership (then clear only one of the two); braid_value_clear() releases
 * it.  A braid_value_t may live anywhere (stack, array, heap): the library
 * never frees the struct itself.  Read the fields directly; change
 * containers only through the functions below. */
typedef enum braid_type {
  BRAID_TNIL = 0,
  BRAID_TBOOLEAN,
  BRAID_TINTEGER,       /* Lua integer subtype */
  BRAID_TNUMBER,        /* Lua float subtype */
  BRAID_TSTRING,        /* bytes with a length (binary-safe) */
  BRAID_TARRAY,         /* items[0 .. len) are t[1] .. t[len] */
  BRAID_TMAP,           /* key/value pairs (keys never nil nor NaN) */
  BRAID_TCHAN,          /* a braid.chan: one reference */
  BRAID_TFUTURE,        /* a braid.future: one reference */
} braid_type_t;

typedef struct braid_chan braid_chan_t;        /* opaque */
typedef struct braid_future braid_future_t;    /* opaque */
typedef struct braid_value braid_value_t;
typedef struct braid_pair braid_pair_t;

struct braid_value {
  braid_type_t type;
  union {
    bool boolean;
    int64_t integer;
    double number;
    struct {
      char *ptr;                /* len bytes, then a NUL not counted in len */
      size_t len;
    } string;
    struct {
      braid_value_t *items;
      size_t len;
      size_t cap;               /* allocated items (private) */
    } array;
    struct {
      braid_pair_t *pairs;
      size_t len;
      size_t cap;               /* allocated pairs (private) */
    } map;
    braid_chan_t *chan;
    braid_future_t *future;
  } u;
};

struct braid_pair {
  braid_value_t key;
  braid_value_t val;
};

/* Arrays and maps nest at most this deep in a value that is sent,
 * received, or passed to or returned from a native function (deeper:
 * BRAID_EINVAL). */
#define BRAID_VALUE_MAX_DEPTH 200

/* Initialise v, overwriting whatever it held without releasing it (use on
 * fresh or cleared values).  These cannot fail. */
BRAID_API void braid_value_init_nil(braid_value_t *v);
BRAID_API void braid_value_init_boolean(braid_value_t *v, bool b);
BRAID_API void braid_value_init_integer(braid_value_t *v, int64_t i);
BRAID_API void braid_value_init_number(braid_value_t *v, double n);
BRAID_API void braid_value_init_array(braid_value_t *v);         /* empty, allocates nothing */
BRAID_API void braid_value_init_map(braid_value_t *v);           /* empty, allocates nothing */
/* Takes a new reference to ch / f (the caller keeps its own). */
BRAID_API void braid_value_init_chan(braid_value_t *v, braid_chan_t *ch);
BRAID_API void braid_value_init_future(braid_value_t *v, braid_future_t *f);

/* Initialises v as a copy of s[0 .. len) (s may be NULL when len is 0).
 * Returns 0, or BRAID_ENOMEM with v nil. */
BRAID_API int braid_value_init_string(braid_value_t *v, const char *s, size_t len);

/* The same for a NUL-terminated s. */
BRAID_API int braid_value_init_cstring(braid_value_t *v, const char *s);

/* Releases everything v owns and makes it nil.  NULL is ignored; clearing
 * twice is harmless. */
BRAID_API void braid_value_clear(braid_value_t *v);

/* Initialises dst as a deep copy of src (handles: new references).
 * Returns 0, or BRAID_ENOMEM with dst nil and nothing leaked. */
BRAID_API int braid_value_copy(braid_value_t *dst, const braid_value_t *src);

/* Appends *item to the array: moves it (item becomes nil).  Returns 0,
 * BRAID_EINVAL when array is not an array, BRAID_ENOMEM; on error item is
 * unchanged and still the caller's. */
BRAID_API int braid_array_push(braid_value_t *array, braid_value_t *item);

/* Adds the pair (*key, *val) to the map: moves both (they become nil).  A
 * key set twice keeps both pairs; a script sees the last one, and so does
 * braid_map_get.  Returns 0, BRAID_EINVAL when map is not a map or key is
 * nil or NaN, BRAID_ENOMEM; on error key and val are unchanged. */
BRAID_API int braid_map_set(braid_value_t *map, braid_value_t *key, braid_value_t *val);

/* Returns the value of the last pair of map whose key is the string key,
 * or NULL when there is none (or map is not a map).  Borrowed from map. */
BRAID_API const braid_value_t *braid_map_get(const braid_value_t *map, const char *key);

/* ------------------------------------------------------------------------ */
/* The runtime                                                               */

typedef struct braid_runtime braid_runtime_t;         /* opaque */

/* Receives the error of a failed task (or of a rejected future) that
 * nothing ever observed: no await, wait, status or cancel looked at it.
 * err[0 .. len) is the error's text (borrowed for the call, not
 * NUL-terminated; a placeholder when the error is not a string).  Called
 * on whichever thread dropped the future last, with no braid lock held;
 * it must not call into Lua. */
typedef void (*braid_report_fn)(const char *err, size_t len, void *ud);

typedef struct braid_config {
  int workers;                /* worker threads; 0: online CPUs */
  double preempt_ms;          /* time slice of a computing task; 0: 10 ms */
  int blocking_threads;       /* braid.blocking threads; 0: 64 */
  int native_threads;         /* native function threads; 0: online CPUs */
  /* The main thread's deadlock check (API.md, "Deadlock"): a blocking call
   * that no task, timer, blocking or native job can complete raises
   * "braid: deadlock: ...".  Off by default here, because the runtime
   * cannot see a host's own threads: a script blocked on a channel that a
   * C thread will feed would be reported wrongly.  Turn it on (1) when no
   * thread of the host ever completes a braid operation. */
  int deadlock_check;
  braid_report_fn report;     /* NULL: print unobserved errors to stderr */
  void *report_ud;            /* passed to report */
} braid_config_t;

/* Fills cfg with the defaults (all zero: see the fields). */
BRAID_API void braid_config_init(braid_config_t *cfg);

/* Creates the runtime with cfg (NULL: the defaults); cfg is copied.  Starts
 * no thread yet: braid_runtime_open and native calls do.  braid has one
 * runtime per process.  Returns 0 with *out set; BRAID_EINVAL when a
 * runtime already exists or has already started (a script required braid
 * before), or a field of cfg is out of range (workers 1..1024, preempt_ms
 * >= 1, blocking_threads 1..4096, native_threads 1..4096, when not 0);
 * BRAID_ENOMEM.  On error *out is NULL. */
BRAID_API int braid_runtime_new(const braid_config_t *cfg, braid_runtime_t **out);

/* Opens braid into L as luaL_requiref does, as the global `braid` and
 * package.loaded.braid, and starts the runtime (worker threads) if it is
 * not running; once the runtime has started, cfg->report receives the
 * unobserved errors.  Call it on the thread that will run the scripts: that
 * thread's blocking calls are the ones braid_interrupt interrupts.  The
 * first state opened owns the runtime: closing it stops the tasks (as
 * lua_close does for luaopen_braid).  L needs the standard libraries
 * (luaL_openlibs) for package and require.  Returns 0 and leaves L's stack
 * as it was; BRAID_EINVAL for a NULL L, or an rt that is not the live
 * runtime; BRAID_ENOMEM (braid could not be loaded or the runtime could
 * not start: L is unchanged except that braid may be loaded). */
BRAID_API int braid_runtime_open(braid_runtime_t *rt, lua_State *L);

/* Shuts the runtime down and frees it: every task is cancelled and every
 * worker, timer and blocking thread joined (as closing the owning state
 * does).  Tasks that do not unwind: tasks get 100 ms to come back to the
 * scheduler; a worker still inside Lua after that (a task that swallows
 * its cancellation in pcall and computes on) is detached and left running,
 * and the runtime leaves allocated everything such a thread may touch (its
 * Lua states, tasks, scheduler): it is not freed, the call returns, and a
 * later braid_runtime_new starts afresh.  Likewise a braid.blocking job
 * still running 100 ms later keeps its thread, detached.  So the call
 * never hangs, but memory and threads are reclaimed only when every task
 * unwinds (then nothing is lost: pending braid.after/ticker timers fire
 * early one last time and free themselves, blocked tasks' values are
 * released).  Then native
 * calls not yet started are settled as cancelled, and
 * running native functions are asked to stop (braid_call_cancelled) and
 * waited for, so that the host may free their userdata once this returns
 * (a call that fails because of the shutdown settles as cancelled).
 * Futures and channels that C still holds stay valid until unreferenced.
 * Safe with tasks blocked and native calls in flight.  No other thread may
 * use rt, or run braid code, during or after the call.  Close the
 * lua_States opened with braid_runtime_open before or after this, but
 * before another runtime is created (the first one's __gc would stop the
 * new runtime).  NULL is ignored. */
BRAID_API void braid_runtime_free(braid_runtime_t *rt);

/* ------------------------------------------------------------------------ */
/* Native functions                                                          */

/* One call of a native function: opaque, valid until the function
 * returns. */
typedef struct braid_call braid_call_t;

/* A native function: braid.native.NAME(...) returns a future at once and
 * the function runs later on a native thread, with the call's arguments
 * decoded into args[0 .. nargs) (borrowed for the call: copy what you
 * keep).  It has no Lua state and must not touch one.  It returns 0 to
 * resolve the future with the values given to braid_call_return (none:
 * the future resolves with no values), or anything else to reject it: with
 * the message set by braid_call_error, or else with
 * "braid.native.NAME: <braid_strerror(result)>" (a negative result) or
 * "braid.native.NAME: failed (<result>)".  ud is the pointer given to
 * braid_native_register.  The function may use the channel and future
 * functions below (they block its native thread, never a worker); calls
 * run concurrently, up to braid_config_t.native_threads at once. */
typedef int (*braid_native_fn)(braid_call_t *call, const braid_value_t *args,
                               size_t nargs, void *ud);

/* Makes fn callable from every script as braid.native.NAME (the tasks'
 * states included).  name is copied; ud is borrowed until
 * braid_runtime_free returns.  Register before braid_runtime_open so that
 * the function value itself can travel to tasks (as an upvalue, or as
 * braid.pmap's fn); one registered later is still reachable as
 * braid.native.NAME everywhere.  Thread-safe.  Returns 0; BRAID_EINVAL for
 * a NULL rt or fn, a name that is not a Lua identifier, a name already
 * registered; BRAID_ENOMEM. */
BRAID_API int braid_native_register(braid_runtime_t *rt, const char *name,
                          braid_native_fn fn, void *ud);

/* Appends *v to the call's results: moves it (v becomes nil).  Returns 0,
 * or BRAID_ENOMEM with v unchanged. */
BRAID_API int braid_call_return(braid_call_t *call, braid_value_t *v);

/* Sets the error the future is rejected with (printf-style; a later call
 * replaces it) and returns BRAID_EREJECTED, so that a native function can
 * `return braid_call_error(call, "open %s: %s", path, strerror(errno));`. */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
BRAID_API int braid_call_error(braid_call_t *call, const char *fmt, ...);

/* Whether the call's future was cancelled or the runtime is shutting down:
 * a long native function should poll this and return early. */
BRAID_API bool braid_call_cancelled(braid_call_t *call);

/* The registered name of the function being called (borrowed). */
BRAID_API const char *braid_call_name(braid_call_t *call);

/* ------------------------------------------------------------------------ */
/* Channels from C                                                           */

/* Overflow policies of a buffered channel (braid.chan's `policy`). */
#define BRAID_CHAN_BLOCK 0        /* a full channel makes the sender wait */
#define BRAID_CHAN_DROP 1         /* a full channel drops the new value */
#define BRAID_CHAN_SLIDE 2        /* a full channel drops its oldest value */

/* Capacity of an unbounded channel (braid.chan(math.huge)). */
#define BRAID_UNBOUNDED SIZE_MAX

/* Creates a channel: cap 0 is a rendezvous, BRAID_UNBOUNDED has no bound.
 * Needs no runtime.  Returns 0 with *out a new reference; BRAID_EINVAL for
 * a bad policy; BRAID_ENOMEM.  On error *out is NULL. */
BRAID_API int braid_chan_create(size_t cap, int policy, braid_chan_t **out);

/* Takes / drops a reference.  The last unref frees the channel (closing
 * and freeing are separate: an unclosed channel's blocked parties stay
 * blocked while any reference remains). */
BRAID_API void braid_chan_ref(braid_chan_t *ch);
BRAID_API void braid_chan_unref(braid_chan_t *ch);

/* Sends a copy of *v (borrowed) on ch, waiting until the deadline for room
 * or a receiver.  Returns 0; BRAID_ECLOSED; BRAID_ETIMEDOUT; BRAID_EINVAL
 * when v is nil (never a channel value) or cannot be encoded (a nil or NaN
 * map key, nesting deeper than BRAID_VALUE_MAX_DEPTH); BRAID_ENOMEM. */
BRAID_API int braid_chan_send_value(braid_chan_t *ch, const braid_value_t *v, int64_t deadline);

/* Receives a value into *out (overwritten, not released first), waiting
 * until the deadline.  Returns 0 with *out the caller's; BRAID_ETIMEDOUT
 * with *out nil; BRAID_ECLOSED once ch is closed and drained, with *out
 * the close error (nil when closed without one); BRAID_EINVAL when the
 * value received cannot be represented (a function, a cycle, ...; the
 * value is consumed and lost, *out nil); BRAID_ENOMEM (likewise). */
BRAID_API int braid_chan_recv_value(braid_chan_t *ch, braid_value_t *out, int64_t deadline);

/* Closes ch; err (borrowed; NULL or nil for none) is what receivers get
 * once the buffer is drained (a script's recv returns nil, err).  Wakes
 * every blocked sender and receiver.  Returns 0; BRAID_ECLOSED when it was
 * already closed (nothing changes); BRAID_EINVAL / BRAID_ENOMEM when err
 * cannot be encoded (ch is not closed). */
BRAID_API int braid_chan_close_value(braid_chan_t *ch, const braid_value_t *err);

/* Whether ch is closed; values buffered now. */
BRAID_API bool braid_chan_is_closed(braid_chan_t *ch);
BRAID_API size_t braid_chan_len(braid_chan_t *ch);

/* Pushes a braid.chan handle for ch onto L (it takes its own reference;
 * the caller keeps its own), e.g. to set a global or pass an argument.
 * braid must have been opened in L.  Raises a Lua error when out of
 * memory. */
BRAID_API void braid_push_chan(lua_State *L, braid_chan_t *ch);

/* Returns the channel of the braid.chan handle at idx as a new reference
 * (the Lua value may be collected, the C side keeps the channel), or raises
 * Lua's "bad argument #idx (braid.chan expected, got X)". */
BRAID_API braid_chan_t *braid_check_chan(lua_State *L, int idx);

/* ------------------------------------------------------------------------ */
/* Futures from C                                                            */

/* Creates a pending future (braid.future()).  Needs no runtime.  Returns 0
 * with *out a new reference, or BRAID_ENOMEM with *out NULL. */
BRAID_API int braid_future_create(braid_future_t **out);

BRAID_API void braid_future_ref(braid_future_t *f);
BRAID_API void braid_future_unref(braid_future_t *f);

/* Resolves f with copies of vals[0 .. n) (borrowed; a script's await
 * returns them).  Returns 0; BRAID_ESETTLED when f was already settled
 * (nothing changes); BRAID_EINVAL when a value cannot be encoded;
 * BRAID_ENOMEM. */
BRAID_API int braid_future_resolve_values(braid_future_t *f, const braid_value_t *vals, size_t n);

/* Rejects f with a copy of *err (borrowed; not nil: a string, usually): a
 * script's await raises it.  Returns as braid_future_resolve_values. */
BRAID_API int braid_future_reject_value(braid_future_t *f, const braid_value_t *err);

/* Waits until f settles or the deadline passes, and marks its outcome as
 * observed.  *out is overwritten.  Returns 0 with *out an array of the
 * values f resolved with; BRAID_EREJECTED with *out the error (a task's
 * error value, without its traceback; nil when C cannot hold it);
 * BRAID_ECANCELED with *out nil; BRAID_ETIMEDOUT with *out nil (f is
 * still pending); BRAID_EINVAL / BRAID_ENOMEM with *out nil when the
 * values cannot be represented. */
BRAID_API int braid_future_await_values(braid_future_t *f, braid_value_t *out, int64_t deadline);

/* Asks f's producer to stop (f:cancel()): a task's future stops its task;
 * a native call's or a hand-made future settles as cancelled at once.
 * Returns 0, or BRAID_ESETTLED when f was already settled. */
BRAID_API int braid_future_cancel(braid_future_t *f);

/* As braid_push_chan / braid_check_chan, for braid.future handles. */
BRAID_API void braid_push_future(lua_State *L, braid_future_t *f);
BRAID_API braid_future_t *braid_check_future(lua_State *L, int idx);

#ifdef __cplusplus
}
#endif

#endif
