/*
 * host.c -- braid_host: a C program that embeds braid (include/braid.h),
 * registers native functions, and runs a script that uses them.
 *
 *   braid_host [-s script.lua] DIR
 *
 * The default script is examples/host/checksums.lua (BRAID_HOST_SCRIPT at
 * build time, or the BRAID_HOST_SCRIPT environment variable): it prints a
 * sha256sum-compatible line for every regular file under DIR, hashing the
 * files in parallel with braid.pmap over braid.native.sha256_file.
 *
 * The natives registered here:
 *
 *   braid.native.sha256_file(path) -> future of the lowercase hex digest
 *       (OpenSSL EVP); rejects with "<path>: <strerror>".
 *   braid.native.list_dir(dir) -> future of an array of the regular files
 *       under dir, recursively, symbolic links not followed (like
 *       `find dir -type f`), unsorted.
 *
 * Environment: BRAID_HOST_THREADS sets the native threads (default: the
 * online CPUs).  The script gets `arg` as lua.c gives it (arg[0] the
 * script, arg[1] ... the arguments after it); it returns false to make the
 * host exit with status 1.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <openssl/evp.h>

#include "braid.h"

#ifndef BRAID_HOST_SCRIPT
#define BRAID_HOST_SCRIPT "examples/host/checksums.lua"
#endif

/* ------------------------------------------------------------------------ */
/* Native functions: no Lua state here, only braid_value_t                   */

static int sha256_file(braid_call_t *call, const braid_value_t *args, size_t nargs, void *ud) {
  (void)ud;
  if (nargs != 1 || args[0].type != BRAID_TSTRING)
    return braid_call_error(call, "sha256_file: a path (string) expected");
  const char *path = args[0].u.string.ptr;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return braid_call_error(call, "%s: %s", path, strerror(errno));
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
    EVP_MD_CTX_free(ctx);
    close(fd);
    return braid_call_error(call, "%s: cannot start SHA-256 (OpenSSL)", path);
  }
  int rc = 0;
  unsigned char buf[64 * 1024];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      rc = braid_call_error(call, "%s: %s", path, strerror(errno));
      break;
    }
    if (EVP_DigestUpdate(ctx, buf, (size_t)n) != 1) {
      rc = braid_call_error(call, "%s: SHA-256 failed (OpenSSL)", path);
      break;
    }
    if (braid_call_cancelled(call)) {   /* a big file, and nobody waits */
      rc = braid_call_error(call, "%s: cancelled", path);
      break;
    }
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  if (rc == 0 && EVP_DigestFinal_ex(ctx, md, &mdlen) != 1)
    rc = braid_call_error(call, "%s: SHA-256 failed (OpenSSL)", path);
  EVP_MD_CTX_free(ctx);
  close(fd);
  if (rc != 0) return rc;
  char hex[2 * EVP_MAX_MD_SIZE + 1];
  for (unsigned int i = 0; i < mdlen; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
  braid_value_t v;
  if ((rc = braid_value_init_string(&v, hex, 2 * (size_t)mdlen)) != 0) return rc;
  return braid_call_return(call, &v);   /* on error v is still ours */
}

/* Joins dir and name with one '/' (none added after a trailing one). */
static char *join(const char *dir, const char *name) {
  size_t dl = strlen(dir), nl = strlen(name);
  bool slash = dl > 0 && dir[dl - 1] == '/';
  char *p = malloc(dl + nl + 2);
  if (p == NULL) return NULL;
  memcpy(p, dir, dl);
  if (!slash) p[dl++] = '/';
  memcpy(p + dl, name, nl + 1);
  return p;
}

static int list_dir(braid_call_t *call, const braid_value_t *args, size_t nargs, void *ud) {
  (void)ud;
  if (nargs != 1 || args[0].type != BRAID_TSTRING)
    return braid_call_error(call, "list_dir: a directory (string) expected");
  /* Depth first with an explicit stack of directories still to read. */
  size_t ntodo = 0, captodo = 16;
  char **todo = malloc(captodo * sizeof *todo);
  braid_value_t files;
  braid_value_init_array(&files);
  int rc = 0;
  if (todo == NULL || (todo[ntodo] = strdup(args[0].u.string.ptr)) == NULL) {
    free(todo);
    return BRAID_ENOMEM;
  }
  ntodo++;
  while (rc == 0 && ntodo > 0) {
    char *dir = todo[--ntodo];
    DIR *d = opendir(dir);
    if (d == NULL) {
      rc = braid_call_error(call, "%s: %s", dir, strerror(errno));
      free(dir);
      break;
    }
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL) {
      if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
      char *path = join(dir, e->d_name);
      struct stat st;
      if (path == NULL) {
        rc = BRAID_ENOMEM;
      } else if (lstat(path, &st) != 0) {
        rc = braid_call_error(call, "%s: %s", path, strerror(errno));
      } else if (S_ISDIR(st.st_mode)) {
        if (ntodo == captodo) {
          char **nt = realloc(todo, 2 * captodo * sizeof *nt);
          if (nt == NULL) rc = BRAID_ENOMEM;
          else todo = nt, captodo *= 2;
        }
        if (rc == 0) {
          todo[ntodo++] = path;
          path = NULL;
        }
      } else if (S_ISREG(st.st_mode)) {
        braid_value_t v;
        rc = braid_value_init_cstring(&v, path);
        if (rc == 0 && (rc = braid_array_push(&files, &v)) != 0) braid_value_clear(&v);
      }
      free(path);
    }
    closedir(d);
    free(dir);
  }
  while (ntodo > 0) free(todo[--ntodo]);
  free(todo);
  if (rc == 0 && (rc = braid_call_return(call, &files)) == 0) return 0;
  braid_value_clear(&files);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* The host                                                                  */

static void report(const char *err, size_t len, void *ud) {
  (void)ud;
  fprintf(stderr, "braid_host: an error nobody observed: %.*s\n", (int)len, err);
}

static int msghandler(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  luaL_traceback(L, L, msg, 1);
  return 1;
}

static int usage(const char *prog) {
  fprintf(stderr, "usage: %s [-s script.lua] DIR\n", prog);
  return 2;
}

int main(int argc, char **argv) {
  const char *script = getenv("BRAID_HOST_SCRIPT");
  if (script == NULL || *script == '\0') script = BRAID_HOST_SCRIPT;
  int first = 1;
  if (argc > 2 && strcmp(argv[1], "-s") == 0) {
    script = argv[2];
    first = 3;
  }
  if (argc - first != 1 || argv[first][0] == '-') return usage(argv[0]);

  braid_config_t cfg;
  braid_config_init(&cfg);
  cfg.report = report;
  const char *threads = getenv("BRAID_HOST_THREADS");
  if (threads != NULL) cfg.native_threads = atoi(threads);
  braid_runtime_t *rt;
  int rc = braid_runtime_new(&cfg, &rt);
  if (rc == 0) rc = braid_native_register(rt, "sha256_file", sha256_file, NULL);
  if (rc == 0) rc = braid_native_register(rt, "list_dir", list_dir, NULL);
  if (rc != 0) {
    fprintf(stderr, "braid_host: %s\n", braid_strerror(rc));
    braid_runtime_free(rt);
    return 1;
  }

  lua_State *L = luaL_newstate();
  if (L == NULL) {
    fprintf(stderr, "braid_host: out of memory\n");
    braid_runtime_free(rt);
    return 1;
  }
  luaL_openlibs(L);
  if ((rc = braid_runtime_open(rt, L)) != 0) {
    fprintf(stderr, "braid_host: cannot open braid: %s\n", braid_strerror(rc));
    lua_close(L);
    braid_runtime_free(rt);
    return 1;
  }
  /* arg, as lua.c makes it: arg[0] the script, then its arguments. */
  lua_createtable(L, argc - first, 1);
  lua_pushstring(L, script);
  lua_rawseti(L, -2, 0);
  for (int i = first; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - first + 1);
  }
  lua_setglobal(L, "arg");

  int status = 0;
  lua_pushcfunction(L, msghandler);
  if (luaL_loadfile(L, script) != LUA_OK) {
    fprintf(stderr, "braid_host: %s\n", lua_tostring(L, -1));
    status = 1;
  } else {
    for (int i = first; i < argc; i++) lua_pushstring(L, argv[i]);
    if (lua_pcall(L, argc - first, 1, 1) != LUA_OK) {
      fprintf(stderr, "braid_host: %s\n", lua_tostring(L, -1));
      status = 1;
    } else if (lua_isboolean(L, -1) && !lua_toboolean(L, -1)) {
      status = 1;
    }
  }
  lua_close(L);
  braid_runtime_free(rt);
  return status;
}
