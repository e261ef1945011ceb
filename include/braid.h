/*
 * braid.h -- the public header for C programs that embed braid.
 *
 * braid gives Lua 5.4 scripts channels, select, futures, timers and an M:N
 * scheduler that runs Lua tasks in parallel on native threads.  A host opens
 * braid into its own lua_State with luaopen_braid (or requires it) and runs
 * scripts as usual.
 */
#ifndef BRAID_H
#define BRAID_H

#include <lua.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BRAID_VERSION "0.1.0"
#define BRAID_VERSION_STRING "braid " BRAID_VERSION

/* Opens the braid module into L: pushes the module table (as require does)
 * and returns 1.  The first call starts the runtime (worker threads);
 * closing the state that opened it first shuts the runtime down: live tasks
 * are cancelled, every thread is joined, everything is freed. */
int luaopen_braid(lua_State *L);

/* Interrupts the blocking braid call (recv, send, await, sleep, select, ...)
 * that the main thread is in, or its next one: that call raises
 * "braid: interrupted".  Async-signal-safe: it only sets a flag, so a SIGINT
 * handler may call it. */
void braid_interrupt(void);

/* Forgets an interrupt that no blocking call has taken yet (the REPL calls
 * it before each new line, after Ctrl-C stopped computing code instead). */
void braid_interrupt_clear(void);

#ifdef __cplusplus
}
#endif

#endif
