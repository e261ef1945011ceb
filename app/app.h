/*
 * app.h -- the braid interpreter's parts as braid.c (options, running
 * chunks, SIGINT) and repl.c (the interactive loop) see each other.
 * Internal to app/: nothing here is installed.
 */
#ifndef BRAID_APP_H
#define BRAID_APP_H

#include <lua.h>

/* The name put in front of error messages: argv[0] like lua5.4 does, NULL
 * in the REPL (an error there is the session's, not the program's). */
extern const char *app_progname;

/* Writes "<pname>: <msg>\n" to stderr (no prefix when pname is NULL). */
void app_message(const char *pname, const char *msg);

/* When status is not LUA_OK, prints the message on top of the stack (a
 * string: docall's message handler made it one) and pops it.  Returns
 * status. */
int app_report(lua_State *L, int status);

/* lua_pcall of the function under its narg arguments, with a message
 * handler that adds a traceback and with Ctrl-C armed: a SIGINT while the
 * call runs makes the blocked braid call raise "braid: interrupted" and
 * computing Lua code raise "interrupted!".  The SIGINT action in place
 * before the call is back when it returns. */
int app_docall(lua_State *L, int narg, int nres);

/* Prints "braid <version> -- Lua <version>  Copyright ..." on stdout. */
void app_print_version(void);

/* The prompt's Ctrl-C.  While app_prompt_arm() is in effect (between two
 * chunks), SIGINT only sets a flag and makes app_prompt_fd() readable, so
 * that the line reader can poll it next to the terminal, whichever thread
 * the kernel delivered the signal to. */
void app_prompt_arm(void);
int app_prompt_fd(void);
/* Returns 1 and clears the flag if a Ctrl-C came since the last call. */
int app_prompt_take(void);

/* Runs the read-eval-print loop until end of input. */
void app_repl(lua_State *L);

/* braid.c: while on, reports of errors nobody awaited are held, and
 * app_flush_reports prints them (to stderr, after flushing stdout); off
 * prints what is held. */
void app_hold_reports(int on);
void app_flush_reports(void);

#endif
