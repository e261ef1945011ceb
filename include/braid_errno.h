/*
 * braid_errno.h -- braid's error codes: the one X-macro map that both the
 * public header (braid.h) and the core (core/err.h) use, so that a code,
 * its name and its message can never drift apart (libuv's uv-errno).
 *
 * Every function that can fail returns an int: 0 on success or one of the
 * negative BRAID_E* codes.  Installed beside braid.h; needs no Lua.
 */
#ifndef BRAID_ERRNO_H
#define BRAID_ERRNO_H

/* BRAID_API marks the public functions (this header's and braid.h's): the
 * library is built with -fvisibility=hidden, so that braid.so exports
 * these, luaopen_braid, and nothing internal (tests/app/exports.sh).  It
 * lives here because this is the one public header that the core (no Lua)
 * includes too. */
#ifndef BRAID_API
#if defined(__GNUC__)
#define BRAID_API __attribute__((visibility("default")))
#else
#define BRAID_API
#endif
#endif

#define BRAID_ERRNO_MAP(XX)                                   \
  XX(ECLOSED,    -1, "closed")                                \
  XX(ETIMEDOUT,  -2, "timeout")                               \
  XX(ECANCELED,  -3, "cancelled")                             \
  XX(EAGAIN,     -4, "would block")                           \
  XX(ENOMEM,     -5, "out of memory")                         \
  XX(EINVAL,     -6, "invalid argument")                      \
  XX(EREJECTED,  -7, "rejected")                              \
  XX(ESETTLED,   -8, "already settled")                       \
  XX(EINTR,      -9, "interrupted")                           \
  XX(EDEADLK,   -10, "deadlock")                              \
  XX(ENOENT,    -11, "not found")

enum {
#define XX(name, val, msg) BRAID_##name = (val),
  BRAID_ERRNO_MAP(XX)
#undef XX
};

/* Returns a static, human-readable message for err ("unknown error" for a
 * code that is not in the map). */
BRAID_API const char *braid_strerror(int err);

/* Returns the static name of err without the BRAID_ prefix ("ECLOSED"). */
BRAID_API const char *braid_err_name(int err);

#endif
