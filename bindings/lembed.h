/*
 * lembed.h -- the embedding API's internals (include/braid.h), as the
 * binding files and tests see them.  Not installed.
 *
 * lembed.c   runtime create/open/free, channels and futures from C
 * lcvalue.c  braid_value_t <-> messages in the codec's wire format (no Lua)
 * lnative.c  braid.native and the native thread pool
 */
#ifndef BRAID_LEMBED_H
#define BRAID_LEMBED_H

#include <stdbool.h>
#include <stddef.h>

#include "braid.h"
#include "lbraid.h"

/* Installs braid.native into the module table on top of L's stack, and as
 * package.loaded["braid.native"] (so that a native function value travels
 * by name, like any module's C function).  Called by luaopen_braid for
 * every state: the host's and every worker's. */
void braid__open_native(lua_State *L);

/* --- lnats.c --- */

/* Registers the braid.nats connection type and braid._nats (the C half of
 * lua/braid/nats.lua) into the module table on top of L's stack. */
void braid__open_nats(lua_State *L);

/* --- lcvalue.c --- */

/* Why a message could not become C values. */
typedef struct braid__vfault {
  size_t vf_index;              /* 1-based index of the top-level value */
  const char *vf_what;          /* "function", "module", "cycle", "handle",
                                   "nesting", "corrupt message", "out of
                                   memory" (static) */
  const char *vf_type;          /* "handle": its type name ("broker") */
} braid__vfault_t;

/* Encodes vals[0 .. n) (borrowed) into a new message in lcodec.c's wire
 * format; handles get new references in the message.  Returns 0 with *out
 * the caller's; BRAID_EINVAL (a nil or NaN map key, an unknown type, an
 * array or map longer than 2^32 - 1, nesting deeper than
 * BRAID_VALUE_MAX_DEPTH); BRAID_ENOMEM.  On error *out is NULL. */
int braid__value_encode(const braid_value_t *vals, size_t n, braid_msg_t **out);

/* Decodes every value of m (borrowed) into *out, an array (overwritten).
 * Returns 0; BRAID_EINVAL when a value cannot be represented or m is not a
 * codec message (fault, if not NULL, says which and why); BRAID_ENOMEM.  On
 * error *out is nil and nothing leaks.  m NULL decodes as no values. */
int braid__value_decode(braid_msg_t *m, braid_value_t *out, braid__vfault_t *fault);

/* The same for the first value only (nil when m has none). */
int braid__value_decode1(braid_msg_t *m, braid_value_t *out, braid__vfault_t *fault);

/* A rejection message as the runtime makes them: the error value and a
 * traceback string ("" here).  Returns as braid__value_encode. */
int braid__value_rejection(const braid_value_t *err, braid_msg_t **out);

/* A rejection message holding the string s. */
braid_msg_t *braid__msg_error(const char *s, size_t len);

/* --- lembed.c --- */

/* Hands the text of an unobserved error to the host's reporter
 * (braid_config_t.report) of the live runtime: returns true when there is
 * one (it was called), false when there is none (the caller prints).  Only
 * braid__report_unobserved calls it, after its rules.  Any thread; no
 * braid lock held. */
bool braid__embed_report(const char *err, size_t len);

/* --- lnative.c --- */

/* Starts accepting native calls with at most max_threads native threads
 * (threads start on demand).  Returns 0, or BRAID_ENOMEM (nothing
 * started). */
int braid__native_start(int max_threads);

/* Stops accepting native calls, cancels queued ones, asks running ones to
 * stop and joins every native thread; then forgets every registration. */
void braid__native_stop(void);

/* Registers a native function (braid_native_register without the rt). */
int braid__native_register(const char *name, braid_native_fn fn, void *ud);

#endif
