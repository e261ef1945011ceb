/*
 * lruntime.h -- the task runtime, as the binding files see it (internal).
 */
#ifndef BRAID_LRUNTIME_H
#define BRAID_LRUNTIME_H

#include <stdbool.h>
#include <stdint.h>

#include "lbraid.h"
#include "select.h"
#include "timer.h"

/* Pushes the Lua results of a finished wait and returns their count.  Runs
 * in the waiting task (or thread) after the cases were disarmed; r->s_msg is
 * the callee's to release.  Special indexes (timeout) reach it too; cancel
 * and interrupt are raised before it is called. */
typedef int (*braid_finish_fn)(lua_State *L, braid_case_t *cases, int n,
                               braid_selres_t *r);

/* Blocks the caller on cases until one fires or the deadline passes, then
 * returns finish's results.  Inside a task it suspends only the task
 * (lua_yieldk: call it as `return braid__wait(...)`); elsewhere it blocks
 * the OS thread, checking for interrupts and, on the thread that opened
 * braid, for deadlock.  cases is copied; send messages are owned by the wait
 * from the call on (released when their case does not consume them).  what
 * and on describe the wait for braid.tasks() ("recv", a channel). */
int braid__wait(lua_State *L, braid_case_t *cases, int n, int64_t deadline,
                braid_finish_fn finish, const char *what, braid_obj_t *on);

/* A one-case wait in one lock (lchan.c's send and receive): in a task that
 * may park now (not cancelled, yieldable, deadline not passed),
 * braid__wait1_case returns the task's case slot and sets *w to its
 * waiter, else NULL (use braid__wait).  The caller fills the case (c_op,
 * c_obj, c_msg) and tries-or-arms it on *w with braid_chan_send_arm /
 * braid_chan_recv_arm; if that armed it, `return braid__wait1_park(...)`
 * suspends the task as braid__wait would, and finish runs when it wakes. */
braid_case_t *braid__wait1_case(lua_State *L, int64_t deadline, braid_waiter_t **w);
int braid__wait1_park(lua_State *L, int64_t deadline, braid_finish_fn finish, const char *what,
                      braid_obj_t *on);

/* The process-wide timer queue (starts it on first use).  Raises on failure. */
braid_timerq_t *braid__timers(lua_State *L);

/* Prints the report of an error nobody awaited, naming the task when the
 * future is a failed task's (the runtime's default unobserved hook; hosts
 * that install their own may call it).  With an embedding host's reporter
 * (braid_config_t.report) the error's text goes to it instead of stderr.
 * Returns false, reporting nothing, for errors that surface once the
 * runtime shuts down (its cancellation unwinding through tasks). */
bool braid__report_unobserved(braid_future_t *f, braid_msg_t *err);

/* The text braid__report_unobserved prints (one line with its "\n"),
 * malloc'd, or NULL when it would print nothing (shutdown) or out of
 * memory: for a host that prints it later (the REPL, before its prompt). */
char *braid__format_unobserved(braid_future_t *f, braid_msg_t *err);

/* Counts a message that went through a braid channel/future (stats). */
void braid__count_message(void);

/* Registers the runtime's functions (go, spawn, sleep, ...) into the module
 * table on top of the stack. */
void braid__open_runtime(lua_State *L);

/* Per-type openers: register metatables and put constructors in the module
 * table on top of the stack. */
void braid__open_chan(lua_State *L);
void braid__open_future(lua_State *L);
void braid__open_box(lua_State *L);
void braid__open_net(lua_State *L);   /* lnet.c: braid.net */

/* Checks an optional timeout argument (nil = forever, seconds >= 0) and
 * returns the absolute deadline; a bad one raises naming fname
 * ("chan:recv", see braid__argerror). */
int64_t braid__optdeadline(lua_State *L, int arg, const char *fname);

/* The same checks, but the timeout in seconds (< 0: none), for a fast
 * path that reads the clock only when it has to wait
 * (braid__timeout_deadline): chan:recv and chan:send. */
lua_Number braid__opttimeout(lua_State *L, int arg, const char *fname);
static inline int64_t braid__timeout_deadline(lua_Number s) {
  return s < 0 ? BRAID_FOREVER : braid_deadline_after(s);
}

/* lalloc.c: a Lua state as luaL_newstate makes it (panic function,
 * warnings off) but with braid's per-state size-class allocator; NULL when
 * out of memory.  Closed with braid__close_state only. */
lua_State *braid__new_state(void);
void braid__close_state(lua_State *L);

/* Raises a Lua error whose value is exactly the string s (no position). */
int braid__raise(lua_State *L, const char *s);

/* Raises the error of a rejected result (two values: the error and the
 * remote traceback), the traceback appended to a string error, as await
 * does.  Takes m's reference (released before raising). */
int braid__raise_rejection(lua_State *L, braid_msg_t *m);

/* braid__encode under protection: returns the message, or NULL with the
 * error message pushed (nothing leaked). */
braid_msg_t *braid__pencode(lua_State *L, int idx, int n, const char *root);

/* A message holding one float, made without a Lua state (timer threads). */
braid_msg_t *braid__msg_number(double d);

/* Whether L is a task whose cancellation was requested: the channel fast
 * paths then take the slow path, which raises "cancelled". */
bool braid__cancel_pending(lua_State *L);

/* For the embedding API (include/braid.h).  Configure before the runtime
 * starts (returns BRAID_EINVAL once started); stop it (cancels and joins
 * everything; it may start again later). */
int braid__rt_configure(int workers, double preempt_ms, int blocking_threads);
void braid__rt_stop(void);
/* Whether luaopen_braid runs for a shard's or the blocking pool's state
 * (this thread is opening one). */
bool braid__opening_private_state(void);
/* Starts the runtime now if it is not running (L: a host state, for its
 * package.path); raises on failure. */
void braid__rt_start(lua_State *L);
/* Jobs that run outside tasks (native calls): counted so that the deadlock
 * check knows they may still complete something.  delta is +1 or -1. */
void braid__rt_job(int delta);
/* The runtime's job pool (braid.blocking's; braid.net resolves names on
 * it), or NULL when the runtime is not running.  Call braid__rt_start
 * first. */
struct braid_jobpool *braid__rt_jobpool(void);
/* Turns the main thread's deadlock check on or off (a C host whose own
 * threads feed channels turns it off). */
void braid__rt_set_deadlock_check(bool on);

#endif
