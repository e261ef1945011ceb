/*
 * braid.c -- the braid interpreter: lua5.4's command line with braid
 * preloaded.
 *
 * Design notes
 *
 * The command line is the one of Lua 5.4's own lua.c: the same options, the
 * same 'arg' table, LUA_INIT_5_4 / LUA_INIT, the same error messages and
 * exit status, so that a script behaves the same under `braid` as under
 * `lua5.4` with braid.so on its cpath.  What differs: `braid` is a global
 * (and package.loaded.braid) before any user code runs, -v names braid too,
 * and Ctrl-C reaches braid's blocking calls.
 *
 * Ctrl-C.  A signal handler may not touch a Lua state, so, as in lua.c, the
 * handler only sets a count hook on the main state; the hook raises
 * "interrupted!" at the next instruction.  A hook cannot stop a main thread
 * that is parked inside a braid call (recv, sleep, await), so the handler
 * also calls braid_interrupt(), which sets a flag that the parked call
 * polls and turns into "braid: interrupted".  The handler cannot know which
 * of the two the main thread is doing, so it arms both, and app_docall
 * tidies up whatever the other one left behind once the chunk is over: the
 * hook still set, or the braid flag still up (braid_interrupt() also
 * interrupts the *next* blocking call, which would otherwise be a call in
 * the next REPL line).
 *
 * The kernel may run the handler on any thread (the runtime's workers do
 * not block SIGINT), so it does only what is safe from anywhere: atomics,
 * write(2), braid_interrupt(), and lua_sethook on the main state, which
 * lua.c itself relies on being callable asynchronously.
 *
 * A third SIGINT during one chunk kills the process (the second restores
 * the default action), so that a main thread stuck where neither the hook
 * nor braid can reach it (a long C call) can still be stopped.  lua.c kills
 * on the second; braid allows one more because a parked braid call notices
 * the flag only at its next poll (some milliseconds), and a quick double
 * press should not end a REPL session.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "app.h"
#include "braid.h"
#include "future.h"   /* braid_future_unobserved: the unobserved-error hook */
#include "lruntime.h" /* braid__report_unobserved */

#define SIGINTS_TO_KILL 3     /* during one chunk; lua.c: 2 */

const char *app_progname = "braid";

/* The state that SIGINT stops: set by app_docall before the handler is
 * installed (sigaction orders the store before any delivery). */
static lua_State *globalL = NULL;

/* SIGINTs received while the current app_docall runs.  Relaxed: only the
 * count matters, and the handler and docall share no other data through
 * it. */
static atomic_int chunk_sigints;

/* The prompt's Ctrl-C: the flag says one came; the pipe wakes the line
 * reader's poll.  Relaxed: the write(2) to the pipe (or the reader's next
 * check) is what the reader waits on; the flag only says why. */
static atomic_int prompt_sigint;
static int prompt_pipe[2] = { -1, -1 };

/* ------------------------------------------------------------------------ */
/* messages */

void app_message(const char *pname, const char *msg) {
  if (pname) fprintf(stderr, "%s: ", pname);
  fprintf(stderr, "%s\n", msg);
  fflush(stderr);
}

int app_report(lua_State *L, int status) {
  if (status != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    app_message(app_progname, msg ? msg : "(error object is not a string)");
    lua_pop(L, 1);  /* remove the message */
  }
  return status;
}

void app_print_version(void) {
  printf("%s -- %s\n", BRAID_VERSION_STRING, LUA_COPYRIGHT);
  fflush(stdout);
}

static void print_usage(const char *badoption) {
  if (badoption[1] == 'e' || badoption[1] == 'l')
    fprintf(stderr, "%s: '%s' needs argument\n", app_progname, badoption);
  else
    fprintf(stderr, "%s: unrecognized option '%s'\n", app_progname, badoption);
  fprintf(stderr,
    "usage: %s [options] [script [args]]\n"
    "Available options are:\n"
    "  -e stat   execute string 'stat'\n"
    "  -i        enter interactive mode after executing 'script'\n"
    "  -l mod    require library 'mod' into global 'mod'\n"
    "  -l g=mod  require library 'mod' into global 'g'\n"
    "  -v        show version information\n"
    "  -E        ignore environment variables\n"
    "  -W        turn warnings on\n"
    "  --        stop handling options\n"
    "  -         stop handling options and execute stdin\n",
    app_progname);
  fflush(stderr);
}

/* ------------------------------------------------------------------------ */
/* running chunks: the message handler and Ctrl-C */

/* Turns the error object into a string and appends a traceback.  A
 * non-string error with a __tostring that gives a string is kept as that
 * string without a traceback (it presumably says what it wants said). */
static int msghandler(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* The hook that laction sets: fires once, at the next call, return, line or
 * instruction of the main state. */
static void lstop(lua_State *L, lua_Debug *ar) {
  lua_sethook(L, NULL, 0, 0);  /* one shot */
  if (ar->event == LUA_HOOKCALL) {
    lua_getinfo(L, "f", ar);   /* push the function being called */
    int handling = lua_tocfunction(L, -1) == msghandler;
    lua_pop(L, 1);
    /* The call is msghandler's: an error is already on its way, typically
     * the "braid: interrupted" that this same SIGINT caused.  Raising here
     * would turn it into "error in error handling". */
    if (handling) return;
  }
  luaL_error(L, "interrupted!");
}

static void setaction(int sig, void (*handler)(int), struct sigaction *old) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = handler;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  /* no SA_RESTART: a read(2) of the main thread sees EINTR */
  sigaction(sig, &sa, old);
}

/* SIGINT while a chunk runs. */
static void laction(int sig) {
  int saved_errno = errno;
  int n = atomic_fetch_add_explicit(&chunk_sigints, 1, memory_order_relaxed) + 1;
  if (n + 1 >= SIGINTS_TO_KILL) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL);  /* the next one terminates the process */
  }
  braid_interrupt();
  lua_sethook(globalL, lstop,
              LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE | LUA_MASKCOUNT, 1);
  errno = saved_errno;
}

/* Forgets a braid interrupt that no blocking call took. */
static void drain_interrupt(lua_State *L) {
  (void)L;
  braid_interrupt_clear();
}

int app_docall(lua_State *L, int narg, int nres) {
  struct sigaction old;
  int base = lua_gettop(L) - narg;  /* the function's index */
  lua_pushcfunction(L, msghandler);
  lua_insert(L, base);              /* under the function and its arguments */
  globalL = L;
  atomic_store_explicit(&chunk_sigints, 0, memory_order_relaxed);
  setaction(SIGINT, laction, &old);
  int status = lua_pcall(L, narg, nres, base);
  sigaction(SIGINT, &old, NULL);
  if (atomic_load_explicit(&chunk_sigints, memory_order_relaxed) > 0) {
    /* A Ctrl-C came.  Whichever of the hook and the braid flag stopped the
     * chunk, the other may still be armed: disarm both. */
    lua_sethook(L, NULL, 0, 0);
    drain_interrupt(L);
  }
  lua_remove(L, base);              /* the message handler */
  return status;
}

/* ------------------------------------------------------------------------ */
/* the prompt's Ctrl-C (used by repl.c) */

static void prompt_action(int sig) {
  int saved_errno = errno;
  (void)sig;
  atomic_store_explicit(&prompt_sigint, 1, memory_order_relaxed);
  if (prompt_pipe[1] >= 0) {
    char c = 0;
    ssize_t r = write(prompt_pipe[1], &c, 1);  /* full pipe: already awake */
    (void)r;
  }
  errno = saved_errno;
}

void app_prompt_arm(void) {
  if (prompt_pipe[0] < 0 && pipe2(prompt_pipe, O_NONBLOCK | O_CLOEXEC) != 0)
    prompt_pipe[0] = prompt_pipe[1] = -1;  /* the reader falls back on EINTR */
  setaction(SIGINT, prompt_action, NULL);
}

int app_prompt_fd(void) {
  return prompt_pipe[0];
}

int app_prompt_take(void) {
  char buf[64];
  if (prompt_pipe[0] >= 0)
    while (read(prompt_pipe[0], buf, sizeof buf) > 0) {}
  return atomic_exchange_explicit(&prompt_sigint, 0, memory_order_relaxed);
}

/* ------------------------------------------------------------------------ */
/* the command line */

/* The 'arg' table: the script name at index 0, its arguments at 1, 2, ...,
 * and what came before it (interpreter, options) at negative indices.
 * Without a script, the interpreter's name is at 0. */
static void createargtable(lua_State *L, char **argv, int argc, int script) {
  if (script == argc) script = 0;  /* no script: index from argv[0] */
  lua_createtable(L, argc - (script + 1), script + 1);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - script);
  }
  lua_setglobal(L, "arg");
}

static int dochunk(lua_State *L, int status) {
  if (status == LUA_OK) status = app_docall(L, 0, 0);
  return app_report(L, status);
}

static int dofile(lua_State *L, const char *name) {
  return dochunk(L, luaL_loadfile(L, name));
}

static int dostring(lua_State *L, const char *s, const char *name) {
  return dochunk(L, luaL_loadbuffer(L, s, strlen(s), name));
}

/* -l mod: global mod = require "mod";  -l g=mod: global g = require "mod". */
static int dolibrary(lua_State *L, const char *spec) {
  const char *eq = strchr(spec, '=');
  const char *modname = eq ? eq + 1 : spec;
  size_t globlen = eq ? (size_t)(eq - spec) : strlen(spec);
  lua_getglobal(L, "require");
  lua_pushstring(L, modname);
  int status = app_docall(L, 1, 1);
  if (status == LUA_OK) {
    lua_pushglobaltable(L);
    lua_pushlstring(L, spec, globlen);
    lua_pushvalue(L, -3);          /* the module */
    lua_settable(L, -3);           /* _G[g] = module */
    lua_pop(L, 2);                 /* remove the globals and the module */
  }
  return app_report(L, status);
}

/* Pushes arg[1] .. arg[#arg] and returns how many. */
static int pushargs(lua_State *L) {
  if (lua_getglobal(L, "arg") != LUA_TTABLE)
    luaL_error(L, "'arg' is not a table");
  int n = (int)luaL_len(L, -1);
  luaL_checkstack(L, n + 3, "too many arguments to script");
  int i;
  for (i = 1; i <= n; i++) lua_rawgeti(L, -i, i);
  lua_remove(L, -i);               /* the 'arg' table */
  return n;
}

static int handle_script(lua_State *L, char **argv) {
  const char *fname = argv[0];
  /* "-" is standard input, unless "--" made it a file name. */
  if (strcmp(fname, "-") == 0 && strcmp(argv[-1], "--") != 0) fname = NULL;
  int status = luaL_loadfile(L, fname);
  if (status == LUA_OK) {
    int n = pushargs(L);
    status = app_docall(L, n, LUA_MULTRET);
  }
  return app_report(L, status);
}

enum {
  HAS_ERROR = 1,   /* a bad option */
  HAS_I = 2,       /* -i */
  HAS_V = 4,       /* -v (and -i) */
  HAS_E = 8,       /* -e */
  HAS_NOENV = 16   /* -E */
};

/* Scans the options before anything runs.  *first gets the index of the
 * script (argc when there is none) or, on HAS_ERROR, of the bad option. */
static int collectargs(char **argv, int *first) {
  int args = 0;
  int i;
  for (i = 1; argv[i] != NULL; i++) {
    *first = i;
    if (argv[i][0] != '-') return args;        /* the script */
    switch (argv[i][1]) {
      case '-':                                /* -- */
        if (argv[i][2] != '\0') return HAS_ERROR;
        *first = i + 1;
        return args;
      case '\0':                               /* - : the script is stdin */
        return args;
      case 'E':
        if (argv[i][2] != '\0') return HAS_ERROR;
        args |= HAS_NOENV;
        break;
      case 'W':
        if (argv[i][2] != '\0') return HAS_ERROR;
        break;
      case 'i':
        args |= HAS_I;               /* and -i implies -v: */
        /* FALLTHROUGH */
      case 'v':
        if (argv[i][2] != '\0') return HAS_ERROR;
        args |= HAS_V;
        break;
      case 'e':
        args |= HAS_E;               /* and like -l, takes an argument: */
        /* FALLTHROUGH */
      case 'l':
        if (argv[i][2] == '\0') {              /* not glued: the next word */
          i++;
          if (argv[i] == NULL || argv[i][0] == '-') return HAS_ERROR;
        }
        break;
      default:
        return HAS_ERROR;
    }
  }
  *first = i;
  return args;
}

/* Runs -e, -l and -W in order, up to the script.  Returns 0 when one of
 * them failed (already reported). */
static int runargs(lua_State *L, char **argv, int n) {
  for (int i = 1; i < n; i++) {
    int option = argv[i][1];
    switch (option) {
      case 'e':
      case 'l': {
        const char *extra = argv[i] + 2;
        if (*extra == '\0') extra = argv[++i];
        int status = option == 'e' ? dostring(L, extra, "=(command line)")
                                   : dolibrary(L, extra);
        if (status != LUA_OK) return 0;
        break;
      }
      case 'W':
        lua_warning(L, "@on", 0);
        break;
    }
  }
  return 1;
}

static int handle_luainit(lua_State *L) {
  const char *name = "=LUA_INIT" LUA_VERSUFFIX;
  const char *init = getenv(name + 1);
  if (init == NULL) {
    name = "=LUA_INIT";
    init = getenv(name + 1);
  }
  if (init == NULL) return LUA_OK;
  if (init[0] == '@') return dofile(L, init + 1);
  return dostring(L, init, name);
}

/* The whole interpreter, in protected mode.  Pushes true when everything
 * ran without error. */
static int pmain(lua_State *L) {
  int argc = (int)lua_tointeger(L, 1);
  char **argv = (char **)lua_touserdata(L, 2);
  int script;
  int args = collectargs(argv, &script);
  luaL_checkversion(L);
  if (argv[0] && argv[0][0]) app_progname = argv[0];
  if (args == HAS_ERROR) {
    print_usage(argv[script]);
    return 0;
  }
  if (args & HAS_V) app_print_version();
  if (args & HAS_NOENV) {
    /* Read by the package library when it opens: no LUA_PATH & co. */
    lua_pushboolean(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, "LUA_NOENV");
  }
  luaL_openlibs(L);
  luaL_requiref(L, "braid", luaopen_braid, 1);  /* global and package.loaded */
  lua_pop(L, 1);                                /* the module */
  createargtable(L, argv, argc, script);
  lua_gc(L, LUA_GCRESTART);
  lua_gc(L, LUA_GCGEN, 0, 0);
  if (!(args & HAS_NOENV) && handle_luainit(L) != LUA_OK) return 0;
  if (!runargs(L, argv, script)) return 0;
  if (script < argc && handle_script(L, argv + script) != LUA_OK) return 0;
  if (args & HAS_I) {
    app_repl(L);
  } else if (script == argc && !(args & (HAS_E | HAS_V))) {
    if (isatty(0)) {
      app_print_version();
      app_repl(L);
    } else {
      if (dofile(L, NULL) != LUA_OK) return 0;  /* stdin as a script */
    }
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* Set when a task error (or a rejected future) nobody awaited was
 * reported: the interpreter then exits non-zero, as after an uncaught
 * error.  Relaxed: read by main after lua_close joined every thread. */
static atomic_bool unobserved_seen;

/* While the REPL runs, reports are held and printed before the next prompt
 * (app_flush_reports), never in the middle of a command's output.
 * reports_held: release/acquire, so a report that sees it set finds the
 * buffer ready. */
static atomic_bool reports_held;
static struct {
  pthread_mutex_t mtx;               /* Protects: buf, len */
  char *buf;                         /* the held reports, or NULL */
  size_t len;
} held = { PTHREAD_MUTEX_INITIALIZER, NULL, 0 };

/* braid_future_unobserved, installed before braid opens (the runtime keeps
 * a hook a host set): prints the runtime's report and remembers it.  Any
 * thread; no braid lock held. */
static void app_unobserved(braid_future_t *f, braid_msg_t *err) {
  if (atomic_load_explicit(&reports_held, memory_order_acquire)) {
    char *msg = braid__format_unobserved(f, err);
    if (msg == NULL) return;
    atomic_store_explicit(&unobserved_seen, true, memory_order_relaxed);
    pthread_mutex_lock(&held.mtx);
    size_t n = strlen(msg);
    char *nb = realloc(held.buf, held.len + n + 1);
    if (nb != NULL) {
      memcpy(nb + held.len, msg, n + 1);
      held.buf = nb;
      held.len += n;
    }
    pthread_mutex_unlock(&held.mtx);
    free(msg);
    return;
  }
  if (!braid__report_unobserved(f, err)) return;
  atomic_store_explicit(&unobserved_seen, true, memory_order_relaxed);
}

void app_hold_reports(int on) {
  atomic_store_explicit(&reports_held, on != 0, memory_order_release);
  if (!on) app_flush_reports();
}

void app_flush_reports(void) {
  pthread_mutex_lock(&held.mtx);
  char *buf = held.buf;
  size_t len = held.len;
  held.buf = NULL;
  held.len = 0;
  pthread_mutex_unlock(&held.mtx);
  if (buf == NULL) return;
  fflush(stdout);                    /* after what the command printed */
  fwrite(buf, 1, len, stderr);
  fflush(stderr);
  free(buf);
}

int main(int argc, char **argv) {
  braid_future_unobserved = app_unobserved;
  lua_State *L = braid__new_state();  /* luaL_newstate's, with braid's allocator */
  if (L == NULL) {
    app_message(argv[0], "cannot create state: not enough memory");
    return EXIT_FAILURE;
  }
  lua_gc(L, LUA_GCSTOP);             /* no collection while building it */
  lua_pushcfunction(L, pmain);
  lua_pushinteger(L, argc);
  lua_pushlightuserdata(L, argv);
  int status = lua_pcall(L, 2, 1, 0);
  int ok = lua_toboolean(L, -1);
  app_report(L, status);
  /* Closing the state runs the braid module's __gc: live tasks are
   * cancelled and every runtime thread is joined. */
  braid__close_state(L);
  if (atomic_load_explicit(&unobserved_seen, memory_order_relaxed)) return EXIT_FAILURE;
  return (ok && status == LUA_OK) ? EXIT_SUCCESS : EXIT_FAILURE;
}
