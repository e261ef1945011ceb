/*
 * repl.c -- the braid REPL: read a statement, run it, print what it
 * returned.
 *
 * Design notes
 *
 * The loop is Lua 5.4's (lua.c): a line is first tried as an expression
 * ("return <line>;", so `1+1` prints 2), then as a statement; a statement
 * that fails to compile only because it ended too early (the message ends
 * in "<eof>") asks for more lines under the second prompt.  `=expr` is
 * `return expr`.  _PROMPT and _PROMPT2 change the prompts.  Errors print
 * with a traceback and the session goes on.
 *
 * Reading a line.  On a terminal, with GNU readline linked
 * (BRAID_HAVE_READLINE), lines are edited with readline and kept in
 * ~/.braid_history; elsewhere (a pipe, or no readline) they are read with
 * getline.  readline runs through its callback interface, driven by a
 * poll(2) on the terminal and on the prompt's SIGINT pipe (braid.c): a
 * Ctrl-C at the prompt drops the line being typed (and any unfinished
 * statement) and gives a fresh prompt, even when the kernel delivered the
 * signal to one of the runtime's worker threads, which a blocking
 * readline() would never notice.  Readline installs no signal handlers of
 * its own (rl_catch_signals = 0): SIGINT is braid.c's.
 *
 * Background tasks keep running while the prompt waits: they are on the
 * runtime's worker threads and need nothing from this loop.
 *
 * Printing.  Results print like print() does (tostring, tab-separated),
 * except that a table that is an array of records -- braid.tasks(), or any
 * {{id=1, name="a"}, ...} -- prints as an aligned table, columns "id" and
 * "name" first, then the others by name, and any other plain table prints
 * on one line, {1, 2, x = 3} (braid.stats() too), with caps on items,
 * depth and cycles (render_src).
 *
 * Background errors.  A task error nobody awaited is reported by a worker
 * thread at any moment; while the REPL runs, braid.c holds those reports
 * and the loop prints them just before each prompt, so that they never
 * land in the middle of a command's output.
 *
 * Completion hides names that start with "_" (braid._box, _ENV) unless
 * the word being completed starts with "_".
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#ifdef BRAID_HAVE_READLINE
#include <readline/history.h>
#include <readline/readline.h>
#endif

#include "app.h"

#define PROMPT1 "> "
#define PROMPT2 ">> "
#define HISTORY_FILE "/.braid_history"
#define HISTORY_MAX 1000

#define ROWS_MAX 1000     /* bigger arrays print as tostring does */
#define COLS_MAX 16       /* more columns: not a table of records */
#define CELL_MAX 40       /* a cell longer than this is cut, with "..." */

enum { LINE_EOF, LINE_OK, LINE_INTR };         /* read_line results */
enum { NO_INPUT = -1, CANCELLED = -2 };        /* loadline, besides LUA_* */

/* ------------------------------------------------------------------------ */
/* reading lines */

/* Without readline (or not on a terminal): the prompt, then getline.  A
 * Ctrl-C that the main thread took shows as EINTR; one taken by another
 * thread is noticed when the line ends. */
static int read_plain(const char *prompt, char **out) {
  for (;;) {
    fputs(prompt, stdout);
    fflush(stdout);
    char *line = NULL;
    size_t cap = 0;
    errno = 0;
    ssize_t n = getline(&line, &cap, stdin);
    if (app_prompt_take()) {
      free(line);
      clearerr(stdin);
      fputc('\n', stdout);
      return LINE_INTR;
    }
    if (n >= 0) {
      *out = line;
      return LINE_OK;
    }
    free(line);
    if (errno != EINTR) return LINE_EOF;
    clearerr(stdin);                 /* another signal: ask again */
  }
}

#ifdef BRAID_HAVE_READLINE

static int use_readline;             /* stdin is a terminal */
static char *history_path;           /* NULL: no history file */
static lua_State *complete_L;        /* the REPL's state, for completion */

static char *rl_result;              /* the line readline handed over */
static int rl_finished;              /* on_line ran */

static void on_line(char *line) {
  rl_result = line;                  /* NULL at end of input */
  rl_finished = 1;
  rl_callback_handler_remove();      /* the terminal back to normal */
}

static int read_rl(const char *prompt, char **out) {
  rl_result = NULL;
  rl_finished = 0;
  rl_callback_handler_install(prompt, on_line);
  while (!rl_finished) {
    struct pollfd fds[2] = {
      { .fd = fileno(rl_instream ? rl_instream : stdin), .events = POLLIN },
      { .fd = app_prompt_fd(), .events = POLLIN },
    };
    int r = poll(fds, fds[1].fd >= 0 ? 2 : 1, -1);
    if (app_prompt_take()) {         /* Ctrl-C: drop the line */
      FILE *term = rl_outstream ? rl_outstream : stdout;
      rl_echo_signal_char(SIGINT);   /* "^C" after the text, as bash shows it */
      fputc('\n', term);
      fflush(term);
      rl_free_line_state();
      rl_callback_sigcleanup();
      rl_replace_line("", 0);        /* the next prompt starts empty */
      rl_callback_handler_remove();
      return LINE_INTR;
    }
    if (r < 0) {
      if (errno == EINTR) continue;
      rl_callback_handler_remove();
      return LINE_EOF;
    }
    if (fds[0].revents) rl_callback_read_char();
  }
  if (rl_result == NULL) return LINE_EOF;
  *out = rl_result;
  return LINE_OK;
}

/* Keeps a line in the history, in memory and in the file at once (so that
 * os.exit() loses nothing), skipping a repeat of the previous entry. */
static void saveline(const char *line) {
  if (!use_readline || line[0] == '\0') return;
  HIST_ENTRY *last = history_get(history_base + history_length - 1);
  if (last && strcmp(last->line, line) == 0) return;
  add_history(line);
  if (history_path && append_history(1, history_path) != 0)
    write_history(history_path);     /* no file yet */
}

/* Completion of names: globals, fields after '.', methods after ':'
 * (found through __index tables too, so `ch:` lists a channel's
 * methods), and keywords.  Runs at the prompt, when no Lua code runs, in
 * protected mode: completing must never raise into the REPL. */

static const char *const keywords[] = {
  "and", "break", "do", "else", "elseif", "end", "false", "for", "function",
  "goto", "if", "in", "local", "nil", "not", "or", "repeat", "return",
  "then", "true", "until", "while", NULL
};

static char **matches;               /* the candidates of the current word */
static size_t nmatches, nextmatch;

static int isident(const char *s) {
  if (!(*s == '_' || (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z')))
    return 0;
  for (s++; *s; s++)
    if (!(*s == '_' || (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
          (*s >= '0' && *s <= '9')))
      return 0;
  return 1;
}

/* Adds to the result table (index 2) every identifier key of the table at
 * the top that starts with the partial name, then does the same for its
 * __index chain.  Pops the table. */
static void addfields(lua_State *L, const char *head, size_t headlen,
                      const char *part, int methods) {
  size_t plen = strlen(part);
  for (int depth = 0; depth < 8 && lua_istable(L, -1); depth++) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      if (lua_type(L, -2) == LUA_TSTRING) {
        const char *k = lua_tostring(L, -2);
        if (strncmp(k, part, plen) == 0 && isident(k) &&
            (k[0] != '_' || part[0] == '_') &&   /* _internal: only when asked */
            (!methods || lua_isfunction(L, -1))) {
          lua_pushlstring(L, head, headlen);
          lua_pushstring(L, k);
          lua_concat(L, 2);
          lua_rawseti(L, 2, (lua_Integer)lua_rawlen(L, 2) + 1);
        }
      }
      lua_pop(L, 1);                 /* the value */
    }
    if (!lua_getmetatable(L, -1)) break;
    lua_getfield(L, -1, "__index");
    lua_remove(L, -2);               /* the metatable */
    lua_remove(L, -2);               /* the table done */
  }
  lua_pop(L, 1);
}

/* complete_k(text) -> array of candidates */
static int complete_k(lua_State *L) {
  const char *text = luaL_checkstring(L, 1);
  lua_settop(L, 1);
  lua_newtable(L);                   /* index 2: the result */
  /* sep: just after the last '.' or ':', or NULL for a bare name */
  const char *sep = NULL;
  for (const char *p = text; *p; p++)
    if (*p == '.' || *p == ':') sep = p + 1;
  lua_pushglobaltable(L);            /* index 3: where names are looked up */
  if (sep == NULL) {                 /* a bare name: keywords and globals */
    for (int i = 0; keywords[i]; i++)
      if (strncmp(keywords[i], text, strlen(text)) == 0) {
        lua_pushstring(L, keywords[i]);
        lua_rawseti(L, 2, (lua_Integer)lua_rawlen(L, 2) + 1);
      }
    addfields(L, "", 0, text, 0);
    return 1;                        /* the result is on top again */
  }
  if (sep - 1 == text) {             /* ".x" or ":x": after an expression */
    lua_settop(L, 2);                /* that we will not evaluate */
    return 1;
  }
  /* "a.b.c:pa": look a, b, c up from the globals, then complete "pa". */
  for (const char *p = text; p < sep - 1;) {
    const char *q = p;
    while (q < sep - 1 && *q != '.' && *q != ':') q++;
    int t = lua_type(L, -1);
    if (t != LUA_TTABLE && t != LUA_TUSERDATA && t != LUA_TSTRING) {
      lua_settop(L, 2);              /* nothing to look in */
      return 1;
    }
    lua_pushlstring(L, p, (size_t)(q - p));
    lua_gettable(L, -2);             /* may run __index: we are protected */
    lua_remove(L, -2);               /* the container */
    p = q + 1;
  }
  if (!lua_istable(L, -1) && lua_getmetatable(L, -1)) {
    lua_getfield(L, -1, "__index");  /* a handle or a string: its methods */
    lua_remove(L, -2);               /* the metatable */
  }
  if (lua_istable(L, -1))
    addfields(L, text, (size_t)(sep - text), sep, sep[-1] == ':');
  lua_settop(L, 2);
  return 1;
}

static char *next_match(const char *text, int state) {
  (void)text;
  (void)state;
  return nextmatch < nmatches ? matches[nextmatch++] : NULL;
}

static char **attempt_completion(const char *text, int start, int end) {
  lua_State *L = complete_L;
  (void)start;
  (void)end;
  rl_attempted_completion_over = 1;  /* never fall back on file names */
  rl_completion_append_character = '\0';  /* reset before each attempt */
  for (size_t i = nextmatch; i < nmatches; i++) free(matches[i]);
  free(matches);
  matches = NULL;
  nmatches = nextmatch = 0;
  int top = lua_gettop(L);
  lua_pushcfunction(L, complete_k);
  lua_pushstring(L, text);
  if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_istable(L, -1)) {
    size_t n = lua_rawlen(L, -1);
    matches = calloc(n ? n : 1, sizeof *matches);
    for (size_t i = 1; matches && i <= n; i++) {
      lua_rawgeti(L, -1, (lua_Integer)i);
      const char *s = lua_tostring(L, -1);
      if (s && (matches[nmatches] = strdup(s)) != NULL) nmatches++;
      lua_pop(L, 1);
    }
  }
  lua_settop(L, top);
  if (nmatches == 0) return NULL;
  return rl_completion_matches(text, next_match);
}

static void repl_open(lua_State *L) {
  use_readline = isatty(STDIN_FILENO);
  if (!use_readline) return;
  complete_L = L;
  rl_readline_name = "braid";        /* for $if braid in ~/.inputrc */
  rl_catch_signals = 0;              /* SIGINT is braid.c's */
  rl_attempted_completion_function = attempt_completion;
  rl_completer_word_break_characters = " \t\n\"\\'`@$><=;|&{}()[],+-*/%^~#";
  rl_completion_append_character = '\0';
  using_history();
  stifle_history(HISTORY_MAX);
  const char *home = getenv("HOME");
  if (home && *home && (history_path = malloc(strlen(home) + sizeof HISTORY_FILE)) != NULL) {
    strcpy(history_path, home);
    strcat(history_path, HISTORY_FILE);
    read_history(history_path);      /* none yet: fine */
  }
}

static void repl_close(void) {
  if (!use_readline) return;
  if (history_path) {
    history_truncate_file(history_path, HISTORY_MAX);
    free(history_path);
    history_path = NULL;
  }
  for (size_t i = nextmatch; i < nmatches; i++) free(matches[i]);
  free(matches);
  matches = NULL;
  nmatches = nextmatch = 0;
}

static int read_line(const char *prompt, char **out) {
  return use_readline ? read_rl(prompt, out) : read_plain(prompt, out);
}

#else /* !BRAID_HAVE_READLINE */

static void saveline(const char *line) { (void)line; }
static void repl_open(lua_State *L) { (void)L; }
static void repl_close(void) {}
static int read_line(const char *prompt, char **out) { return read_plain(prompt, out); }

#endif

/* ------------------------------------------------------------------------ */
/* the loop */

/* Pushes the prompt: _PROMPT or _PROMPT2 when it is a string or number,
 * read raw so that a strict _G metatable cannot raise here. */
static const char *pushprompt(lua_State *L, int firstline) {
  lua_pushglobaltable(L);
  lua_pushstring(L, firstline ? "_PROMPT" : "_PROMPT2");
  lua_rawget(L, -2);
  lua_remove(L, -2);                 /* the globals */
  const char *p = lua_tostring(L, -1);
  if (p == NULL) {
    lua_pop(L, 1);
    p = lua_pushstring(L, firstline ? PROMPT1 : PROMPT2);
  }
  return p;
}

/* Reads a line and pushes it (a first line "=expr" as "return expr").
 * Returns LINE_OK, or LINE_EOF / LINE_INTR with nothing pushed. */
static int pushline(lua_State *L, int firstline) {
  char *b = NULL;
  app_flush_reports();               /* background errors, before the prompt */
  const char *prompt = pushprompt(L, firstline);
  int r = read_line(prompt, &b);
  lua_pop(L, 1);                     /* the prompt (readline copied it) */
  if (r != LINE_OK) return r;
  size_t len = strlen(b);
  if (len > 0 && b[len - 1] == '\n') b[--len] = '\0';
  if (firstline && b[0] == '=')
    lua_pushfstring(L, "return %s", b + 1);
  else
    lua_pushlstring(L, b, len);
  free(b);
  return LINE_OK;
}

/* Whether a load failed only because the chunk ended too early: a syntax
 * error whose message ends in "<eof>".  The message stays on the stack. */
static int incomplete(lua_State *L, int status) {
  static const char mark[] = "<eof>";
  size_t len;
  if (status != LUA_ERRSYNTAX) return 0;
  const char *msg = lua_tolstring(L, -1, &len);
  return len >= sizeof mark - 1 && strcmp(msg + len - (sizeof mark - 1), mark) == 0;
}

/* Tries the line on top as "return <line>;".  On success the chunk
 * replaces the line; otherwise the stack is as it was. */
static int addreturn(lua_State *L) {
  const char *line = lua_tostring(L, -1);
  const char *retline = lua_pushfstring(L, "return %s;", line);
  int status = luaL_loadbuffer(L, retline, strlen(retline), "=stdin");
  if (status == LUA_OK) {
    lua_remove(L, -2);               /* the "return" text */
    saveline(line);
  } else {
    lua_pop(L, 2);                   /* the error and the "return" text */
  }
  return status;
}

/* Compiles the text at index 1 as a statement, reading more lines while it
 * is incomplete.  Leaves the chunk or the error message on top, or nothing
 * extra when a Ctrl-C dropped the statement (CANCELLED). */
static int multiline(lua_State *L) {
  for (;;) {
    size_t len;
    const char *text = lua_tolstring(L, 1, &len);
    int status = luaL_loadbuffer(L, text, len, "=stdin");
    if (!incomplete(L, status)) {
      saveline(text);
      return status;
    }
    lua_pop(L, 1);                   /* the "<eof>" message */
    int r = pushline(L, 0);
    if (r == LINE_INTR) {
      saveline(text);                /* to recall and fix it */
      return CANCELLED;
    }
    if (r == LINE_EOF) {             /* report what is missing */
      saveline(text);
      return luaL_loadbuffer(L, text, len, "=stdin");
    }
    lua_pushliteral(L, "\n");
    lua_insert(L, -2);
    lua_concat(L, 3);                /* text .. "\n" .. line */
  }
}

/* Reads one statement or expression.  Returns its load status with the
 * chunk (or error message) alone on the stack, CANCELLED with an empty
 * stack, or NO_INPUT at the end of input. */
static int loadline(lua_State *L) {
  lua_settop(L, 0);
  app_prompt_take();                 /* a Ctrl-C while results printed */
  for (;;) {
    int r = pushline(L, 1);
    if (r == LINE_EOF) return NO_INPUT;
    if (r == LINE_OK) break;
  }
  int status = addreturn(L);
  if (status != LUA_OK) status = multiline(L);
  lua_remove(L, 1);                  /* the line */
  return status;
}

/* ------------------------------------------------------------------------ */
/* printing results */

/* Whether the value at idx is an array of records: a plain table holding
 * exactly 1..n (n <= ROWS_MAX), each a plain table whose keys are all
 * strings. */
static int isrows(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  if (lua_type(L, idx) != LUA_TTABLE) return 0;
  if (luaL_getmetafield(L, idx, "__tostring") != LUA_TNIL) {
    lua_pop(L, 1);
    return 0;
  }
  lua_Unsigned n = lua_rawlen(L, idx);
  if (n < 1 || n > ROWS_MAX) return 0;
  lua_Unsigned count = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (++count > n) {
      lua_pop(L, 1);                 /* the key */
      return 0;
    }
  }
  if (count != n) return 0;
  for (lua_Unsigned i = 1; i <= n; i++) {
    int ok = lua_rawgeti(L, idx, (lua_Integer)i) == LUA_TTABLE;
    if (ok && luaL_getmetafield(L, -1, "__tostring") != LUA_TNIL) {
      lua_pop(L, 1);
      ok = 0;
    }
    int keys = 0;
    if (ok) {
      lua_pushnil(L);
      while (lua_next(L, -2)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) {
          lua_pop(L, 1);             /* the key */
          ok = 0;
          break;
        }
        keys++;
      }
    }
    lua_pop(L, 1);                   /* the row */
    if (!ok || keys == 0) return 0;
  }
  return 1;
}

static int colrank(const char *s) {
  return strcmp(s, "id") == 0 ? 0 : strcmp(s, "name") == 0 ? 1 : 2;
}

static int colcmp(const void *a, const void *b) {
  const char *x = *(const char *const *)a, *y = *(const char *const *)b;
  int rx = colrank(x), ry = colrank(y);
  return rx != ry ? rx - ry : strcmp(x, y);
}

/* Display width of UTF-8 text: its characters (not continuation bytes). */
static size_t textwidth(const char *s, size_t len) {
  size_t w = 0;
  for (size_t i = 0; i < len; i++)
    if (((unsigned char)s[i] & 0xC0) != 0x80) w++;
  return w;
}

/* Replaces the value on top with its cell text: "" for nil, tostring
 * otherwise, control characters as spaces, cut to CELL_MAX characters. */
static void pushcell(lua_State *L) {
  int v = lua_gettop(L);
  size_t len = 0;
  const char *s = lua_isnil(L, v) ? "" : luaL_tolstring(L, v, &len);
  size_t keep = textwidth(s, len) > CELL_MAX ? CELL_MAX - 3 : CELL_MAX;
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  size_t chars = 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if ((c & 0xC0) != 0x80 && ++chars > keep) {
      luaL_addstring(&b, "...");
      break;
    }
    luaL_addchar(&b, (c < 0x20 || c == 0x7F) ? ' ' : (char)c);
  }
  luaL_pushresult(&b);
  lua_replace(L, v);                 /* the cell in place of the value */
  lua_settop(L, v);                  /* drop tostring's string */
}

static void printrows(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  int top = lua_gettop(L);
  lua_Integer nrows = (lua_Integer)lua_rawlen(L, idx);

  /* The columns: every key of every row. */
  lua_newtable(L);                   /* top+1: set of column names */
  const char *cols[COLS_MAX];
  int ncols = 0;
  for (lua_Integer r = 1; r <= nrows; r++) {
    lua_rawgeti(L, idx, r);
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      lua_pop(L, 1);
      lua_pushvalue(L, -1);          /* the key */
      if (lua_rawget(L, top + 1) == LUA_TNIL && ncols < COLS_MAX) {
        cols[ncols++] = lua_tostring(L, -2);  /* anchored in the set below */
        lua_pushvalue(L, -2);
        lua_pushboolean(L, 1);
        lua_rawset(L, top + 1);
      }
      lua_pop(L, 1);
    }
    lua_pop(L, 1);                   /* the row */
  }
  qsort(cols, (size_t)ncols, sizeof cols[0], colcmp);

  /* The cells, their widths, and which columns are all numbers. */
  size_t width[COLS_MAX];
  int numeric[COLS_MAX];
  lua_createtable(L, (int)(nrows * ncols), 0);  /* top+2: the cells */
  for (int c = 0; c < ncols; c++) {
    width[c] = textwidth(cols[c], strlen(cols[c]));
    numeric[c] = 1;
  }
  for (lua_Integer r = 1; r <= nrows; r++) {
    lua_rawgeti(L, idx, r);
    for (int c = 0; c < ncols; c++) {
      int t = lua_getfield(L, -1, cols[c]);
      if (t != LUA_TNUMBER && t != LUA_TNIL) numeric[c] = 0;
      pushcell(L);
      size_t len;
      const char *s = lua_tolstring(L, -1, &len);
      size_t w = textwidth(s, len);
      if (w > width[c]) width[c] = w;
      lua_rawseti(L, top + 2, (r - 1) * ncols + c + 1);
    }
    lua_pop(L, 1);                   /* the row */
  }

  /* Header, rule, rows; each line built whole, then trailing blanks cut. */
  for (lua_Integer r = -1; r <= nrows; r++) {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int c = 0; c < ncols; c++) {
      size_t len;
      const char *s;
      if (r == -1) {                   /* the header */
        s = cols[c];
        len = strlen(s);
      } else if (r == 0) {             /* the rule */
        s = NULL;
        len = 0;
      } else {
        lua_rawgeti(L, top + 2, (r - 1) * ncols + c + 1);
        s = lua_tolstring(L, -1, &len);
        lua_pop(L, 1);                 /* still anchored in the cells table */
      }
      size_t pad = s ? width[c] - textwidth(s, len) : 0;
      if (c > 0) luaL_addstring(&b, "  ");
      if (s == NULL) {
        for (size_t i = 0; i < width[c]; i++) luaL_addchar(&b, '-');
        continue;
      }
      if (numeric[c]) for (size_t i = 0; i < pad; i++) luaL_addchar(&b, ' ');
      luaL_addlstring(&b, s, len);
      if (!numeric[c]) for (size_t i = 0; i < pad; i++) luaL_addchar(&b, ' ');
    }
    while (luaL_bufflen(&b) > 0 && luaL_buffaddr(&b)[luaL_bufflen(&b) - 1] == ' ')
      luaL_buffsub(&b, 1);
    luaL_addchar(&b, '\n');
    luaL_pushresult(&b);
    size_t len;
    const char *line = lua_tolstring(L, -1, &len);
    fwrite(line, 1, len, stdout);
    lua_pop(L, 1);
  }
  printf("(%lld row%s)\n", (long long)nrows, nrows == 1 ? "" : "s");
  lua_settop(L, top);
}

/* A plain table (no metatable with __tostring or __name) on one line, as
 * a new user expects to see it: {1, 2, x = 3, name = "a"}.  The array part
 * first, then the other keys sorted (numbers, then strings, then the
 * rest); at most RENDER_ITEMS entries per table and RENDER_TOTAL in all,
 * RENDER_DEPTH levels (deeper: {...}), a table met again: <cycle>. */
static const char render_src[] =
  "local ITEMS, TOTAL, DEPTH = ...\n"
  "local kw = {}\n"
  "for w in ('and break do else elseif end false for function goto if in local nil not or '\n"
  "  .. 'repeat return then true until while'):gmatch('%a+') do kw[w] = true end\n"
  "local rank = { number = 1, string = 2 }\n"
  "local function before(a, b)\n"
  "  local ra, rb = rank[type(a)] or 3, rank[type(b)] or 3\n"
  "  if ra ~= rb then return ra < rb end\n"
  "  if ra < 3 then return a < b end\n"
  "  return tostring(a) < tostring(b)\n"
  "end\n"
  "local function plain(t)\n"
  "  local mt = getmetatable(t)\n"
  "  return mt == nil or (type(mt) == 'table' and rawget(mt, '__tostring') == nil\n"
  "    and rawget(mt, '__name') == nil)\n"
  "end\n"
  "local budget\n"
  "local function str(v)\n"
  "  return (string.format('%q', v):gsub('\\\n', 'n'))\n"
  "end\n"
  "local render\n"
  "local function key(k, seen, depth)\n"
  "  if type(k) == 'string' and k:match('^[%a_][%w_]*$') and not kw[k] then return k end\n"
  "  return '[' .. render(k, seen, depth) .. ']'\n"
  "end\n"
  "function render(v, seen, depth)\n"
  "  local t = type(v)\n"
  "  if t == 'string' then return str(v) end\n"
  "  if t ~= 'table' or not plain(v) then return tostring(v) end\n"
  "  if seen[v] then return '<cycle>' end\n"
  "  if next(v) == nil then return '{}' end\n"
  "  if depth >= DEPTH then return '{...}' end\n"
  "  seen[v] = true\n"
  "  local parts, n, more = {}, rawlen(v), false\n"
  "  for i = 1, n do\n"
  "    if #parts >= ITEMS or budget <= 0 then more = true break end\n"
  "    budget = budget - 1\n"
  "    parts[#parts + 1] = render(rawget(v, i), seen, depth + 1)\n"
  "  end\n"
  "  if not more then\n"
  "    local keys = {}\n"
  "    for k in next, v do\n"
  "      if not (math.type(k) == 'integer' and k >= 1 and k <= n) then keys[#keys + 1] = k end\n"
  "    end\n"
  "    table.sort(keys, before)\n"
  "    for _, k in ipairs(keys) do\n"
  "      if #parts >= ITEMS or budget <= 0 then more = true break end\n"
  "      budget = budget - 1\n"
  "      parts[#parts + 1] = key(k, seen, depth + 1) .. ' = ' .. render(rawget(v, k), seen, depth + 1)\n"
  "    end\n"
  "  end\n"
  "  seen[v] = nil\n"
  "  if more then parts[#parts + 1] = '...' end\n"
  "  return '{' .. table.concat(parts, ', ') .. '}'\n"
  "end\n"
  "return function(v)\n"
  "  if type(v) ~= 'table' or not plain(v) then return nil end\n"
  "  budget = TOTAL\n"
  "  return render(v, {}, 0)\n"
  "end\n";

#define RENDER_ITEMS 30
#define RENDER_TOTAL 200
#define RENDER_DEPTH 3

/* Replaces the value at idx by its one-line rendering when it is a plain
 * table (see render_src); leaves anything else as it is. */
static void render_value(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  if (lua_type(L, idx) != LUA_TTABLE) return;
  if (lua_getfield(L, LUA_REGISTRYINDEX, "braid.repl.render") != LUA_TFUNCTION) {
    lua_pop(L, 1);
    if (luaL_loadbuffer(L, render_src, sizeof render_src - 1, "=braid.repl") != LUA_OK)
      lua_error(L);
    lua_pushinteger(L, RENDER_ITEMS);
    lua_pushinteger(L, RENDER_TOTAL);
    lua_pushinteger(L, RENDER_DEPTH);
    lua_call(L, 3, 1);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, "braid.repl.render");
  }
  lua_pushvalue(L, idx);
  lua_call(L, 1, 1);
  if (lua_isstring(L, -1)) lua_replace(L, idx);
  else lua_pop(L, 1);
}

/* printvalues(...): print's output, or tables of records drawn as tables
 * (then one value per line).  Other plain tables print on one line
 * (render_value). */
static int printvalues(lua_State *L) {
  int n = lua_gettop(L);
  int rows = 0;
  for (int i = 1; i <= n && !rows; i++) rows = isrows(L, i);
  if (!rows) {
    for (int i = 1; i <= n; i++) render_value(L, i);
    lua_getglobal(L, "print");
    lua_insert(L, 1);
    lua_call(L, n, 0);
    return 0;
  }
  for (int i = 1; i <= n; i++) {
    if (isrows(L, i)) {
      printrows(L, i);
    } else {
      render_value(L, i);
      size_t len;
      const char *s = luaL_tolstring(L, i, &len);
      fwrite(s, 1, len, stdout);
      fputc('\n', stdout);
      lua_pop(L, 1);
    }
  }
  fflush(stdout);
  return 0;
}

static void print_results(lua_State *L) {
  int n = lua_gettop(L);
  if (n == 0) return;
  luaL_checkstack(L, LUA_MINSTACK, "too many results to print");
  lua_pushcfunction(L, printvalues);
  lua_insert(L, 1);
  app_report(L, app_docall(L, n, 0));
}

void app_repl(lua_State *L) {
  const char *oldprogname = app_progname;
  app_progname = NULL;               /* no program name on REPL errors */
  app_hold_reports(1);
  repl_open(L);
  app_prompt_arm();
  int status;
  while ((status = loadline(L)) != NO_INPUT) {
    if (status == CANCELLED) continue;
    if (status == LUA_OK) status = app_docall(L, 0, LUA_MULTRET);
    if (status == LUA_OK)
      print_results(L);
    else
      app_report(L, status);
  }
  lua_settop(L, 0);
  fputc('\n', stdout);
  fflush(stdout);
  app_hold_reports(0);               /* prints what is still held */
  repl_close();
  signal(SIGINT, SIG_DFL);
  app_progname = oldprogname;
}
