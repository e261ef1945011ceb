/*
 * lnet.c -- braid.net: TCP and Unix sockets that park the task, never the
 * worker (API.md "Network").
 *
 * Design notes
 *
 * A connection or listener is a core object (sock_t, types "conn" and
 * "listener") with a poll descriptor (core/netpoll.h); Lua holds handles, so
 * the codec carries them to other tasks like channels.  Every socket call is
 * a non-blocking syscall; on EAGAIN the call waits on the descriptor's
 * READABLE or WRITABLE case through braid__wait (the task is suspended; on
 * an OS thread the thread parks) and then tries again.
 *
 * A call is a "step" function that can run many times: its state lives in
 * fixed stack slots (the stack survives the task's yield), so after a wait
 * the finish callback simply runs the step again.  On an OS thread the wait
 * returns synchronously and the finish returns NET_AGAIN instead, so the
 * step loops rather than recursing once per EAGAIN.
 *
 *   slot 1..4  the call's arguments (settop 4)
 *   slot 5     deadline (integer ns)
 *   slot 6     the step (a C function)
 *   slot 7     which token the call needs: 0 none, 1 read, 2 write
 *   slot 8     whether it holds the token
 *   slot 9     progress (write offset) or the connect/listen op userdata
 *   slot 10    the token guard (nil until the call first waits)
 *
 * Readers take turns whole reads, writers whole writes: each direction has
 * a token, an atomic state (free, held, waited for) in the socket.  An
 * uncontended turn is a CAS to take and an exchange to give back; a task
 * that finds the token held marks it waited for and waits (a braid wait)
 * on the direction's capacity-1 channel, which carries only wake-ups: a
 * give that finds the mark sends one, and the woken task tries again.  The
 * read-ahead buffer (core/netbuf.h) belongs to the holder of the read
 * token.  close() closes the descriptor (waking every reader, writer and
 * acceptor with "closed") and both wake-up channels (waking those queued
 * for a turn).
 *
 * braid.http's server reads through conn:_http_next (step_http): its
 * request parser (lhttp.c) takes one request at a time straight from the
 * read-ahead buffer.  Its answers go out through braid__conn_send, head and
 * body in one sendmsg from C memory.
 *
 * Name resolution (getaddrinfo) is a job on the runtime's job pool
 * (core/jobpool.h, braid.blocking's) and the caller awaits a braid future;
 * numeric addresses are resolved inline.
 *
 * TLS (OpenSSL): the SSL object sits in the socket; every SSL call is
 * non-blocking and made under the socket's o_mtx (OpenSSL objects are not
 * safe for a concurrent read and write); SSL_ERROR_WANT_READ/WRITE map onto
 * the same READABLE/WRITABLE waits.  Clients verify against the system
 * store (or opts.tls.cafile) with SNI and a host name check; listen's
 * opts.tls = {cert=, key=} (an addition) makes accepted connections TLS:
 * accept returns at once and the server handshake runs inside the
 * connection's first read or write (SSL accept state), parking that task on
 * the netpoller, so a stalled client never holds up the accept loop.
 *
 * Cancellation: the runtime raises "cancelled" (or an interrupt) out of a
 * wait without running its finish, so a call that waits with a token (or
 * for one) first arms a guard in slot 10, a to-be-closed userdata whose
 * __close gives the token back if the call still holds it.  Lua closes it
 * whichever way the frame ends: the call returning, a pcall catching the
 * error, or the runtime closing the cancelled task's coroutine.  Calls that
 * never wait pay nothing for it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "clock.h"
#include "err.h"
#include "jobpool.h"
#include "lbraid.h"
#include "lruntime.h"
#include "netbuf.h"
#include "netpoll.h"
#include "select.h"

enum { NET_AGAIN = -100 };
enum { S_DEADLINE = 5, S_STEP, S_TOKKIND, S_TOKHELD, S_AUX, S_GUARD };
enum { LINE_MAX_BYTES = 16 * 1024 * 1024 };

/* ------------------------------------------------------------------------ */
/* The socket object                                                         */

typedef struct sock {
  braid_obj_t s_obj;          /* o_mtx: unused (the tokens order access) */
  braid_pollfd_t *s_pd;       /* immutable; closed by close() or destroy */
  /* Each direction's token (conns): s_tok[0] reads, s_tok[1] writes; 0
   * free, 1 held, 2 held and a task may wait for it.  Taking is a CAS (or
   * an exchange to 2 before waiting), giving back an exchange to 0; only
   * a give that finds 2 sends a wake-up on the direction's channel
   * (capacity 1, immutable), whose waiters then try again (a futex-style
   * mutex: an uncontended turn costs two atomics, no lock). */
  _Atomic int s_tok[2];
  braid_chan_t *s_rtok;       /* read wake-ups (conns), immutable */
  braid_chan_t *s_wtok;       /* write wake-ups (conns), immutable */
  braid_netbuf_t s_rb;        /* read-ahead: the read token's holder's */
  bool s_eof;                 /* the peer closed: the read token's holder's */
  char s_peer[112];           /* immutable */
  char s_local[112];          /* immutable */
  char *s_unlink;             /* listener on a unix path it created */
  SSL *s_ssl;                 /* TLS connection, under o_mtx; immutable ptr */
  SSL_CTX *s_ctx;             /* TLS listener's server context, immutable */
  /* braid.http: a request is being served on this connection (from
   * conn:_http_next's request to its next call, or conn:_busy), read by
   * the server's graceful close to leave it open.  seq_cst against the
   * server's closing flag (lhttp.c's hstats): a connection that turns idle
   * clears this, then reads the flag; the close sets the flag, then reads
   * this.  A request that begins just as the close looks is cut. */
  _Atomic bool s_busy;
} sock_t;

static void sock_destroy(braid_obj_t *o);
static braid_objtype_t conn_type = { "conn", sock_destroy, 0 };
static braid_objtype_t listener_type = { "listener", sock_destroy, 0 };

static void sock_destroy(braid_obj_t *o) {
  sock_t *s = (sock_t *)o;
  if (s->s_pd) {
    braid_pollfd_close(s->s_pd);
    braid_pollfd_release(s->s_pd);
  }
  if (s->s_rtok) { braid_chan_close(s->s_rtok, NULL); braid_chan_release(s->s_rtok); }
  if (s->s_wtok) { braid_chan_close(s->s_wtok, NULL); braid_chan_release(s->s_wtok); }
  if (s->s_unlink) { unlink(s->s_unlink); free(s->s_unlink); }
  if (s->s_ssl) SSL_free(s->s_ssl);
  if (s->s_ctx) SSL_CTX_free(s->s_ctx);
  braid_netbuf_free(&s->s_rb);
  braid_obj_fini(o);
  free(s);
}

static void fmt_addr(const struct sockaddr *sa, socklen_t len, char *out, size_t cap) {
  char host[INET6_ADDRSTRLEN];
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const void *)sa;
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    snprintf(out, cap, "%s:%u", host, ntohs(in->sin_port));
  } else if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in = (const void *)sa;
    inet_ntop(AF_INET6, &in->sin6_addr, host, sizeof host);
    snprintf(out, cap, "[%s]:%u", host, ntohs(in->sin6_port));
  } else if (sa->sa_family == AF_UNIX) {
    const struct sockaddr_un *un = (const void *)sa;
    size_t n = len > offsetof(struct sockaddr_un, sun_path)
                   ? strnlen(un->sun_path, len - offsetof(struct sockaddr_un, sun_path)) : 0;
    snprintf(out, cap, "unix:%.*s", (int)n, un->sun_path);
  } else {
    snprintf(out, cap, "?");
  }
}

/* A token is the integer 1, an immediate message (msg.h): taking and
 * giving one back allocates nothing. */
static braid_msg_t *token_msg(void) { return braid_msg_imm(1); }

/* Makes a socket object around a registered descriptor (stolen). */
static sock_t *sock_new(braid_pollfd_t *pd, int fd, bool conn) {
  sock_t *s = calloc(1, sizeof *s);
  if (s == NULL) return NULL;
  if (braid_obj_init(&s->s_obj, conn ? &conn_type : &listener_type) != 0) {
    free(s);
    return NULL;
  }
  s->s_pd = pd;
  braid_netbuf_init(&s->s_rb);
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0)
    fmt_addr((struct sockaddr *)&ss, len, s->s_local, sizeof s->s_local);
  if (conn) {
    len = sizeof ss;
    if (getpeername(fd, (struct sockaddr *)&ss, &len) == 0)
      fmt_addr((struct sockaddr *)&ss, len, s->s_peer, sizeof s->s_peer);
    s->s_rtok = braid_chan_new(1, BRAID_POLICY_BLOCK);
    s->s_wtok = braid_chan_new(1, BRAID_POLICY_BLOCK);
    if (!s->s_rtok || !s->s_wtok) {
      braid_obj_release(&s->s_obj);
      return NULL;
    }
  }
  return s;
}

/* Pushes a new handle for s and drops the creator's reference. */
static void push_sock(lua_State *L, sock_t *s) {
  braid__pushhandle(L, &s->s_obj);
  braid_obj_release(&s->s_obj);
}

static sock_t *stack_sock(lua_State *L) {
  braid_handle_t *h = lua_touserdata(L, 1);
  return h ? (sock_t *)h->h_obj : NULL;
}

static int push_fail(lua_State *L, const char *why) {
  lua_pushnil(L);
  lua_pushstring(L, why);
  return 2;
}

static const char *errno_reason(int e) {
  switch (e) {
    case ECONNREFUSED: return "refused";
    case ENETUNREACH: case EHOSTUNREACH: return "unreachable";
    case ETIMEDOUT: return "timeout";
    case ECONNRESET: case EPIPE: case ENOTCONN: return "closed";
    default: return strerror(e);
  }
}

/* "tls: <reason>" for a failed SSL call (the error queue, else the
 * verification result). */
static void tls_reason(SSL *ssl, int sslerr, char *why, size_t cap) {
  long v = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
  unsigned long e = ERR_get_error();
  if (v != X509_V_OK) {
    snprintf(why, cap, "tls: certificate verify failed (%s)", X509_verify_cert_error_string(v));
  } else if (e != 0) {
    const char *r = ERR_reason_error_string(e);
    snprintf(why, cap, "tls: %s", r ? r : "error");
  } else if (sslerr == SSL_ERROR_SYSCALL || sslerr == SSL_ERROR_ZERO_RETURN) {
    snprintf(why, cap, "tls: connection closed during handshake");
  } else {
    snprintf(why, cap, "tls: error %d", sslerr);
  }
  ERR_clear_error();
}

enum { TLS_OK = 0, TLS_WANT = 1, TLS_EOF = 2, TLS_FAIL = 3 };

/* One non-blocking SSL step under s's lock: op 'r' read, 'w' write, 'h'
 * handshake.  *n: bytes moved. *want: the case to wait on for TLS_WANT. */
static int tls_call(pthread_mutex_t *lock, SSL *ssl, int op, void *p, size_t len, size_t *n,
                    braid_op_t *want, char *why, size_t cap) {
  if (lock) pthread_mutex_lock(lock);
  ERR_clear_error();
  int rc;
  if (op == 'r') rc = SSL_read(ssl, p, (int)(len > INT32_MAX ? INT32_MAX : len));
  else if (op == 'w') rc = SSL_write(ssl, p, (int)(len > INT32_MAX ? INT32_MAX : len));
  else rc = SSL_do_handshake(ssl);
  int e = rc > 0 ? SSL_ERROR_NONE : SSL_get_error(ssl, rc);
  int res;
  if (e == SSL_ERROR_NONE) {
    *n = rc > 0 ? (size_t)rc : 0;
    res = TLS_OK;
  } else if (e == SSL_ERROR_WANT_READ) {
    *want = BRAID_OP_READABLE;
    res = TLS_WANT;
  } else if (e == SSL_ERROR_WANT_WRITE) {
    *want = BRAID_OP_WRITABLE;
    res = TLS_WANT;
  } else if (op == 'r' && (e == SSL_ERROR_ZERO_RETURN ||
                           (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0))) {
    ERR_clear_error();
    res = TLS_EOF;
  } else {
    tls_reason(op == 'h' ? ssl : NULL, e, why, cap);
    res = TLS_FAIL;
  }
  if (lock) pthread_mutex_unlock(lock);
  return res;
}

/* ------------------------------------------------------------------------ */
/* Waiting                                                                   */

/* Takes the direction's token (kind 1 read, 2 write) if it is free; on
 * false the state says "waited for", so the holder's give wakes a waiter. */
static bool tok_try(sock_t *s, int kind) {
  _Atomic int *t = &s->s_tok[kind - 1];
  int z = 0;
  if (atomic_compare_exchange_strong_explicit(t, &z, 1, memory_order_acq_rel,
                                              memory_order_relaxed))
    return true;
  return atomic_exchange_explicit(t, 2, memory_order_acq_rel) == 0;
}

static void give_token(sock_t *s, int kind) {
  if (atomic_exchange_explicit(&s->s_tok[kind - 1], 0, memory_order_acq_rel) != 2) return;
  braid_chan_t *tok = kind == 1 ? s->s_rtok : s->s_wtok;
  braid_msg_t *m = token_msg();         /* a wake-up: full means one is pending */
  if (m && braid_chan_try_send(tok, m) != 0) braid_msg_release(m);
}

/* The token guard (slot S_GUARD, to-be-closed): mirrors S_TOKHELD. */
typedef struct tokguard {
  sock_t *g_s;                /* retained until closed */
  int g_kind;                 /* 1 read, 2 write */
  bool g_held;
} tokguard_t;

static int tokguard_close(lua_State *L) {
  tokguard_t *g = lua_touserdata(L, 1);
  if (g == NULL || g->g_s == NULL) return 0;
  if (g->g_held) give_token(g->g_s, g->g_kind);
  g->g_held = false;
  braid_obj_release(&g->g_s->s_obj);
  g->g_s = NULL;
  return 0;
}

/* Arms the guard before the call's first wait (calls that need a token). */
static void arm_guard(lua_State *L) {
  int kind = (int)lua_tointeger(L, S_TOKKIND);
  if (kind == 0 || !lua_isnil(L, S_GUARD)) return;
  sock_t *s = stack_sock(L);
  if (s == NULL) return;
  tokguard_t *g = lua_newuserdatauv(L, sizeof *g, 0);
  g->g_s = s;
  g->g_kind = kind;
  g->g_held = lua_toboolean(L, S_TOKHELD);
  braid_obj_retain(&s->s_obj);
  if (luaL_newmetatable(L, "braid.net.tokguard")) {
    lua_pushcfunction(L, tokguard_close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, tokguard_close);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  lua_replace(L, S_GUARD);
  lua_toclose(L, S_GUARD);
}

static void set_held(lua_State *L, bool held) {
  lua_pushboolean(L, held);
  lua_replace(L, S_TOKHELD);
  tokguard_t *g = lua_touserdata(L, S_GUARD);
  if (g) g->g_held = held;
}

static void token_release(lua_State *L) {
  if (!lua_toboolean(L, S_TOKHELD)) return;
  sock_t *s = stack_sock(L);
  set_held(L, false);
  if (s == NULL) return;
  give_token(s, (int)lua_tointeger(L, S_TOKKIND));
}

/* Ends a call with nil, why (giving back its token). */
static int step_fail(lua_State *L, const char *why) {
  token_release(L);
  return push_fail(L, why);
}

static int finish_step(lua_State *L, braid_case_t *c, int n, braid_selres_t *r) {
  (void)n;
  if (!lua_isyieldable(L)) braid__rt_job(-1);
  if (r->s_index == BRAID_W_TIMEOUT) {
    braid_msg_release(r->s_msg);
    return step_fail(L, "timeout");
  }
  if (c->c_op == BRAID_OP_RECV) {           /* a token's wake-up: try again */
    braid_msg_release(r->s_msg);
    if (r->s_err != 0) return step_fail(L, "closed");
  } else if (c->c_op == BRAID_OP_AWAIT) {   /* a name lookup */
    braid_msg_release(r->s_msg);
  } else if (r->s_err != 0) {
    return step_fail(L, "closed");
  }
  if (!lua_isyieldable(L)) return NET_AGAIN;
  return lua_tocfunction(L, S_STEP)(L);
}

/* Waits on one case for the running step.  Returns the call's results, or
 * NET_AGAIN when the step must loop (OS thread). */
static int net_wait(lua_State *L, braid_op_t op, void *obj, const char *what, braid_obj_t *on) {
  braid_case_t c = { .c_op = op, .c_obj = obj };
  int64_t deadline = (int64_t)lua_tointeger(L, S_DEADLINE);
  /* On an OS thread, a socket wait is an outside event the deadlock check
   * must allow for (like a job in flight). */
  arm_guard(L);
  if (!lua_isyieldable(L)) braid__rt_job(1);
  return braid__wait(L, &c, 1, deadline, finish_step, what, on);
}

/* Normalises the stack for a step call. */
static void step_setup(lua_State *L, int64_t deadline, lua_CFunction step, int tokkind) {
  lua_settop(L, 4);
  lua_pushinteger(L, (lua_Integer)deadline);
  lua_pushcfunction(L, step);
  lua_pushinteger(L, tokkind);
  lua_pushboolean(L, 0);
  lua_pushinteger(L, 0);
  lua_pushnil(L);
}

/* Takes the call's token; returns 0 when held, else the call's results. */
static int take_token(lua_State *L, sock_t *s, int *nres) {
  if (lua_toboolean(L, S_TOKHELD)) return 0;
  int kind = (int)lua_tointeger(L, S_TOKKIND);
  braid_chan_t *tok = kind == 1 ? s->s_rtok : s->s_wtok;
  /* A pending cancel is raised by the wait, before any turn is taken. */
  if (!braid__cancel_pending(L) && tok_try(s, kind)) {
    set_held(L, true);
    return 0;
  }
  /* Wait for a wake-up (the channel closes with the socket: "closed"). */
  *nres = net_wait(L, BRAID_OP_RECV, tok, kind == 1 ? "read" : "write", &s->s_obj);
  return 1;
}

/* ------------------------------------------------------------------------ */
/* Reading                                                                   */

/* Tries to complete the read from the buffer: returns the result count, or
 * 0 when more bytes are needed. */
static int read_frame(lua_State *L, sock_t *s) {
  braid_netbuf_t *b = &s->s_rb;
  size_t have = braid_netbuf_len(b);
  if (lua_type(L, 2) == LUA_TNUMBER) {
    size_t want = (size_t)lua_tointeger(L, 2);
    if (have >= want || (s->s_eof && have > 0)) {
      size_t n = have < want ? have : want;
      lua_pushlstring(L, braid_netbuf_take(b, n), n);
      return 1;
    }
    if (want == 0) { lua_pushliteral(L, ""); return 1; }
    return s->s_eof ? push_fail(L, "closed") : 0;
  }
  const char *f = lua_tostring(L, 2);
  if (f[0] == 'a') {
    if (!s->s_eof) return 0;
    lua_pushlstring(L, braid_netbuf_take(b, have), have);
    return 1;
  }
  if (f[0] == 's') {                         /* read_some: slot 3 holds max */
    if (have > 0) {
      size_t max = (size_t)lua_tointeger(L, 3);
      size_t n = have < max ? have : max;
      lua_pushlstring(L, braid_netbuf_take(b, n), n);
      return 1;
    }
    return s->s_eof ? push_fail(L, "closed") : 0;
  }
  size_t strip = 0, n = braid_netbuf_line(b, &strip);
  if (n > 0) {
    const char *p = braid_netbuf_take(b, n);
    lua_pushlstring(L, p, f[0] == 'L' ? n : n - strip);
    return 1;
  }
  if (s->s_eof) {
    if (have == 0) return push_fail(L, "closed");
    lua_pushlstring(L, braid_netbuf_take(b, have), have);
    return 1;
  }
  if (have > LINE_MAX_BYTES) return push_fail(L, "line too long");
  return 0;
}

static int step_read(lua_State *L) {
  sock_t *s = stack_sock(L);
  if (s == NULL) return push_fail(L, "closed");
  int nres;
  if (take_token(L, s, &nres)) return nres;
  for (;;) {
    int k = read_frame(L, s);
    if (k > 0) {
      /* An emptied buffer is freed at once, not kept for the next read:
       * that costs a malloc and a free of 16 KiB per read (2.5% of a
       * hello-world request's instructions), but glibc then hands the
       * same cache-hot chunk to whichever connection reads next, where
       * kept buffers are one cold 16 KiB per connection (measured,
       * interleaved: echo over 100 connections 6% slower with them kept,
       * HTTP unchanged). */
      braid_netbuf_trim(&s->s_rb);
      token_release(L);
      return k;
    }
    int fd = braid_pollfd_enter(s->s_pd);
    if (fd < 0) return step_fail(L, "closed");
    size_t avail;
    char *p = braid_netbuf_space(&s->s_rb, 4096, &avail);
    if (p == NULL) {
      braid_pollfd_leave(s->s_pd);
      token_release(L);
      return luaL_error(L, "braid: out of memory");
    }
    if (s->s_ssl) {
      size_t got = 0;
      braid_op_t want = BRAID_OP_READABLE;
      char why[256];
      int t = tls_call(&s->s_obj.o_mtx, s->s_ssl, 'r', p, avail, &got, &want, why, sizeof why);
      braid_pollfd_leave(s->s_pd);
      if (t == TLS_OK) { braid_netbuf_commit(&s->s_rb, got); continue; }
      if (t == TLS_EOF) { s->s_eof = true; continue; }
      if (t == TLS_FAIL) return step_fail(L, why);
      braid_netbuf_trim(&s->s_rb);      /* an idle connection keeps no buffer */
      k = net_wait(L, want, s->s_pd, "read", &s->s_obj);
      if (k == NET_AGAIN) continue;
      return k;
    }
    ssize_t got = recv(fd, p, avail, 0);
    int e = errno;
    braid_pollfd_leave(s->s_pd);
    if (got > 0) { braid_netbuf_commit(&s->s_rb, (size_t)got); continue; }
    if (got == 0) { s->s_eof = true; continue; }
    if (e == EINTR) continue;
    if (e == EAGAIN || e == EWOULDBLOCK) {
      /* An empty read-ahead buffer is freed before parking: an idle
       * connection keeps no 16 KiB chunk (bench/net_idle.lua). */
      braid_netbuf_trim(&s->s_rb);
      k = net_wait(L, BRAID_OP_READABLE, s->s_pd, "read", &s->s_obj);
      if (k == NET_AGAIN) continue;
      return k;
    }
    if (e == ECONNRESET) { s->s_eof = true; continue; }
    return step_fail(L, strerror(e));
  }
}

/* braid.http's server read: the next request, parsed by the request parser
 * in slot 2 straight from the read-ahead buffer (lhttp.c's
 * braid__http_take), so a request costs no string of its bytes and no
 * Lua loop over them.  Slots 3 and 4: the header and idle timeouts
 * (seconds); S_AUX: the deadline of the head being read (0 until one
 * begins).  Each wait's deadline follows the parser: the head's (since
 * the call began, or since the connection opened for its first request),
 * else the idle timeout from now. */
static int step_http(lua_State *L) {
  sock_t *s = stack_sock(L);
  if (s == NULL) return push_fail(L, "closed");
  int nres;
  if (take_token(L, s, &nres)) return nres;
  for (;;) {
    braid_netbuf_t *b = &s->s_rb;
    size_t have = braid_netbuf_len(b);
    if (have > 0) {
      size_t used = 0;
      int k = braid__http_take(L, 2, b->nb_buf + b->nb_off, have, &used);
      braid_netbuf_take(b, used);
      if (k == BRAID_HTTP_MSG) {          /* the request, keep, upgrade */
        braid_netbuf_trim(b);
        token_release(L);
        atomic_store_explicit(&s->s_busy, true, memory_order_seq_cst);
        return 3;
      }
      if (k == BRAID_HTTP_BAD) {
        token_release(L);
        return 3;
      }
      if (k == BRAID_HTTP_DONE) return step_fail(L, "closed");
      if (k == BRAID_HTTP_CONTINUE) {
        token_release(L);
        lua_pushnil(L);
        lua_pushliteral(L, "continue");
        return 2;
      }
    }
    if (s->s_eof) return step_fail(L, "closed");
    int fd = braid_pollfd_enter(s->s_pd);
    if (fd < 0) return step_fail(L, "closed");
    size_t avail;
    char *p = braid_netbuf_space(b, 4096, &avail);
    if (p == NULL) {
      braid_pollfd_leave(s->s_pd);
      token_release(L);
      return luaL_error(L, "braid: out of memory");
    }
    ssize_t got;
    int e = 0;
    braid_op_t want = BRAID_OP_READABLE;
    if (s->s_ssl) {
      size_t n = 0;
      char why[256];
      int t = tls_call(&s->s_obj.o_mtx, s->s_ssl, 'r', p, avail, &n, &want, why, sizeof why);
      braid_pollfd_leave(s->s_pd);
      if (t == TLS_FAIL) return step_fail(L, why);
      got = t == TLS_OK ? (ssize_t)n : t == TLS_EOF ? 0 : -1;
      e = EAGAIN;
    } else {
      got = recv(fd, p, avail, 0);
      e = errno;
      braid_pollfd_leave(s->s_pd);
    }
    if (got > 0) { braid_netbuf_commit(b, (size_t)got); continue; }
    if (got == 0 || e == ECONNRESET) { s->s_eof = true; continue; }
    if (e == EINTR) continue;
    if (e != EAGAIN && e != EWOULDBLOCK) return step_fail(L, strerror(e));
    braid_netbuf_trim(b);        /* an idle connection keeps no buffer */
    int64_t deadline;
    int phase = braid__http_phase(L, 2);
    if (phase == BRAID_HTTP_HEAD || phase == BRAID_HTTP_FIRST) {
      if (lua_tointeger(L, S_AUX) == 0) {
        lua_pushinteger(L, (lua_Integer)braid_deadline_after(lua_tonumber(L, 3)));
        lua_replace(L, S_AUX);
      }
      deadline = (int64_t)lua_tointeger(L, S_AUX);
    } else {
      deadline = braid_deadline_after(lua_tonumber(L, 4));
    }
    lua_pushinteger(L, (lua_Integer)deadline);
    lua_replace(L, S_DEADLINE);
    int k = net_wait(L, want, s->s_pd, "read", &s->s_obj);
    if (k == NET_AGAIN) continue;
    return k;
  }
}

static sock_t *checkconn(lua_State *L) {
  return (sock_t *)braid__checkhandle(L, 1, &conn_type);
}

/* conn:_busy([flag]) -> whether braid.http is serving a request on it;
 * with flag, marks it first. */
static int l_conn_busy(lua_State *L) {
  sock_t *s = checkconn(L);
  if (!lua_isnoneornil(L, 2))
    atomic_store_explicit(&s->s_busy, lua_toboolean(L, 2), memory_order_seq_cst);
  lua_pushboolean(L, atomic_load_explicit(&s->s_busy, memory_order_seq_cst));
  return 1;
}

static int l_read(lua_State *L) {
  checkconn(L);
  lua_settop(L, 4);
  if (lua_type(L, 2) == LUA_TNUMBER) {
    lua_Integer n = luaL_checkinteger(L, 2);
    if (n < 0) luaL_argerror(L, 2, "count must be >= 0");
  } else {
    const char *f = luaL_optstring(L, 2, "l");
    if (*f == '*') f++;               /* Lua 5.1 style "*l" */
    if (strcmp(f, "l") && strcmp(f, "L") && strcmp(f, "a"))
      return luaL_argerror(L, 2, "invalid format");
    lua_pushstring(L, f);
    lua_replace(L, 2);
  }
  int64_t deadline = braid__optdeadline(L, 3, "conn:read");
  step_setup(L, deadline, step_read, 1);
  return step_read(L);
}

/* conn:_http_next(parser, header_timeout, idle_timeout) -> request,
 * keep, upgrade | nil, status, reason (invalid input) | nil, "continue"
 * (answer 100 and call again) | nil, "closed" / "timeout" / why.  For
 * braid.http's server loop (lua/braid/http.lua): the connection is busy
 * (for a graceful close) from a request until the next call, and "closed"
 * once the parser's server is closing. */
static int l_http_next(lua_State *L) {
  sock_t *s = checkconn(L);
  braid__http_check(L, 2, "conn:_http_next");
  luaL_checknumber(L, 3);
  luaL_checknumber(L, 4);
  lua_settop(L, 4);
  atomic_store_explicit(&s->s_busy, false, memory_order_seq_cst);
  if (braid__http_closing(L, 2)) return push_fail(L, "closed");
  step_setup(L, BRAID_FOREVER, step_http, 1);
  return step_http(L);
}

static int l_read_some(lua_State *L) {
  checkconn(L);
  lua_settop(L, 4);
  lua_Integer max = luaL_optinteger(L, 2, 65536);
  if (max < 1) luaL_argerror(L, 2, "max must be >= 1");
  int64_t deadline = braid__optdeadline(L, 3, "conn:read_some");
  lua_pushinteger(L, max);
  lua_replace(L, 3);
  lua_pushliteral(L, "s");
  lua_replace(L, 2);
  step_setup(L, deadline, step_read, 1);
  return step_read(L);
}

/* ------------------------------------------------------------------------ */
/* Writing                                                                   */

static int step_write(lua_State *L) {
  sock_t *s = stack_sock(L);
  if (s == NULL) return push_fail(L, "closed");
  int nres;
  if (take_token(L, s, &nres)) return nres;
  size_t len;
  const char *p = lua_tolstring(L, 2, &len);
  for (;;) {
    size_t off = (size_t)lua_tointeger(L, S_AUX);
    if (off >= len) {
      token_release(L);
      lua_pushboolean(L, 1);
      return 1;
    }
    int fd = braid_pollfd_enter(s->s_pd);
    if (fd < 0) return step_fail(L, "closed");
    if (s->s_ssl) {
      size_t put = 0;
      braid_op_t want = BRAID_OP_WRITABLE;
      char why[256];
      int t = tls_call(&s->s_obj.o_mtx, s->s_ssl, 'w', (void *)(p + off), len - off, &put, &want,
                       why, sizeof why);
      braid_pollfd_leave(s->s_pd);
      if (t == TLS_OK) {
        lua_pushinteger(L, (lua_Integer)(off + put));
        lua_replace(L, S_AUX);
        continue;
      }
      if (t != TLS_WANT) return step_fail(L, t == TLS_EOF ? "closed" : why);
      int k = net_wait(L, want, s->s_pd, "write", &s->s_obj);
      if (k == NET_AGAIN) continue;
      return k;
    }
    ssize_t n = send(fd, p + off, len - off, MSG_NOSIGNAL);
    int e = errno;
    braid_pollfd_leave(s->s_pd);
    if (n >= 0) {
      lua_pushinteger(L, (lua_Integer)(off + (size_t)n));
      lua_replace(L, S_AUX);
      continue;
    }
    if (e == EINTR) continue;
    if (e == EAGAIN || e == EWOULDBLOCK) {
      int k = net_wait(L, BRAID_OP_WRITABLE, s->s_pd, "write", &s->s_obj);
      if (k == NET_AGAIN) continue;
      return k;
    }
    return step_fail(L, errno_reason(e));
  }
}

/* For braid.http's answers (lhttp.c): conn:write of the bytes a then b,
 * straight from C memory (a response head and its body, one sendmsg),
 * when idx holds a plain TCP or Unix connection; -1 otherwise (the caller
 * makes a string and writes it).  Only bytes left over when the socket is
 * full become a Lua string, for the ordinary write step, which then
 * replaces the caller's slots 1 and 2: call this last, as the return. */
int braid__conn_send(lua_State *L, int idx, const char *a, size_t an, const char *b, size_t bn) {
  braid_obj_t *o = braid__tohandle(L, idx);
  if (o == NULL || o->o_type != &conn_type) return -1;
  sock_t *s = (sock_t *)o;
  if (s->s_ssl) return -1;
  size_t off = 0, len = an + bn;
  bool held = !braid__cancel_pending(L) && tok_try(s, 2);
  if (held) {
    for (;;) {
      int fd = braid_pollfd_enter(s->s_pd);
      if (fd < 0) {
        give_token(s, 2);
        return push_fail(L, "closed");
      }
      struct iovec iov[2];
      int niov = 0;
      if (off < an) iov[niov++] = (struct iovec){ (void *)(a + off), an - off };
      if (bn) iov[niov++] = off <= an ? (struct iovec){ (void *)b, bn }
                                      : (struct iovec){ (void *)(b + (off - an)), len - off };
      struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)niov };
      ssize_t n = sendmsg(fd, &mh, MSG_NOSIGNAL);
      int e = errno;
      braid_pollfd_leave(s->s_pd);
      if (n >= 0) {
        off += (size_t)n;
        if (off < len) continue;
        give_token(s, 2);
        lua_pushboolean(L, 1);
        return 1;
      }
      if (e == EINTR) continue;
      if (e == EAGAIN || e == EWOULDBLOCK) break;
      give_token(s, 2);
      return push_fail(L, errno_reason(e));
    }
  }
  /* The socket is full (or another task is writing): the rest waits in
   * the write step, which keeps the token if it is held. */
  idx = lua_absindex(L, idx);
  if (off < an) {
    lua_pushlstring(L, a + off, an - off);
    lua_pushlstring(L, b, bn);
    lua_concat(L, 2);
  } else {
    lua_pushlstring(L, b + (off - an), len - off);
  }
  lua_copy(L, idx, 1);
  lua_copy(L, -1, 2);
  step_setup(L, BRAID_FOREVER, step_write, 2);
  if (held) set_held(L, true);
  return step_write(L);
}

static int l_write(lua_State *L) {
  checkconn(L);
  luaL_checkstring(L, 2);
  int64_t deadline = braid__optdeadline(L, 3, "conn:write");
  step_setup(L, deadline, step_write, 2);
  return step_write(L);
}

/* ------------------------------------------------------------------------ */
/* Connection and listener methods                                           */

static int l_conn_shutdown(lua_State *L) {
  sock_t *s = checkconn(L);
  int fd = braid_pollfd_enter(s->s_pd);
  if (fd < 0) return push_fail(L, "closed");
  if (s->s_ssl) {
    braid_obj_lock(&s->s_obj);
    SSL_shutdown(s->s_ssl);           /* close_notify, best effort */
    ERR_clear_error();
    braid_obj_unlock(&s->s_obj);
  }
  int rc = shutdown(fd, SHUT_WR);
  int e = errno;
  braid_pollfd_leave(s->s_pd);
  if (rc != 0) return push_fail(L, errno_reason(e));
  lua_pushboolean(L, 1);
  return 1;
}

static int sock_close(lua_State *L, sock_t *s) {
  braid_pollfd_close(s->s_pd);
  if (s->s_rtok) braid_chan_close(s->s_rtok, NULL);
  if (s->s_wtok) braid_chan_close(s->s_wtok, NULL);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_conn_close(lua_State *L) { return sock_close(L, checkconn(L)); }

static int l_conn_peer(lua_State *L) {
  lua_pushstring(L, checkconn(L)->s_peer);
  return 1;
}

static int l_conn_addr(lua_State *L) {
  lua_pushstring(L, checkconn(L)->s_local);
  return 1;
}

static int l_conn_tostring(lua_State *L) {
  braid_handle_t *h = lua_touserdata(L, 1);
  if (h == NULL || h->h_obj == NULL) {
    lua_pushliteral(L, "braid.conn (released)");
  } else {
    sock_t *s = (sock_t *)h->h_obj;
    lua_pushfstring(L, "braid.conn#%I %s", (lua_Integer)s->s_obj.o_id, s->s_peer);
  }
  return 1;
}

/* ------------------------------------------------------------------------ */
/* Addresses and name resolution                                             */

typedef struct lookup {
  braid_job_t lk_job;         /* the pool's until run or cancelled */
  _Atomic int lk_rc;          /* the caller's op and the lookup job */
  char lk_host[256], lk_port[8];
  int lk_gai;                 /* written by the thread before settling */
  struct addrinfo *lk_res;    /* idem */
  braid_future_t *lk_f;       /* settled when done */
} lookup_t;

static void lookup_unref(lookup_t *lk) {
  /* acq_rel: the last holder sees every write of the other. */
  if (atomic_fetch_sub_explicit(&lk->lk_rc, 1, memory_order_acq_rel) == 1) {
    if (lk->lk_res) freeaddrinfo(lk->lk_res);
    braid_future_release(lk->lk_f);
    free(lk);
  }
}

/* Runs on a pool thread. */
static void lookup_run(braid_job_t *j) {
  lookup_t *lk = j->j_data;
  struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                            .ai_flags = AI_ADDRCONFIG };
  lk->lk_gai = getaddrinfo(lk->lk_host, lk->lk_port, &hints, &lk->lk_res);
  braid_future_resolve(lk->lk_f, NULL);       /* publishes lk_gai/lk_res */
  braid__rt_job(-1);
  lookup_unref(lk);
}

/* The pool stopped before running it (the runtime is closing). */
static void lookup_cancel(braid_job_t *j) {
  lookup_t *lk = j->j_data;
  lk->lk_gai = EAI_AGAIN;
  braid_future_resolve(lk->lk_f, NULL);
  braid__rt_job(-1);
  lookup_unref(lk);
}

/* Runs getaddrinfo off the workers, as a job on the runtime's job pool.
 * Returns 0 or a braid error code. */
static int resolve_async(lookup_t *lk) {
  braid_jobpool_t *pool = braid__rt_jobpool();
  if (pool == NULL) return BRAID_ECLOSED;
  lk->lk_job.j_run = lookup_run;
  lk->lk_job.j_cancel = lookup_cancel;
  lk->lk_job.j_data = lk;
  atomic_fetch_add_explicit(&lk->lk_rc, 1, memory_order_relaxed);
  braid__rt_job(1);
  int rc = braid_jobpool_submit(pool, &lk->lk_job);
  if (rc != 0) {
    braid__rt_job(-1);
    atomic_fetch_sub_explicit(&lk->lk_rc, 1, memory_order_relaxed);
  }
  return rc;
}

/* The state of a connect or listen, a userdata in slot S_AUX. */
typedef struct netop {
  bool op_unix;
  struct sockaddr_un op_un;
  socklen_t op_unlen;
  lookup_t *op_lk;            /* a pending or finished lookup */
  struct addrinfo *op_ai;     /* numeric lookup result (owned) */
  struct addrinfo *op_cur;    /* next address to try */
  braid_pollfd_t *op_pd;      /* a connect in progress */
  int op_err;                 /* the last error, 0 = none yet */
  int op_backlog;
  bool op_reuseport;
  SSL_CTX *op_ctx;            /* TLS: the context (client or server) */
  SSL *op_ssl;                /* TLS: the handshake in progress */
  bool op_connected;          /* TCP is up; the handshake runs */
  bool op_numeric;            /* the host is an IP literal */
  bool op_verify;
  char op_host[256];          /* for SNI and the host name check */
} netop_t;

static int netop_gc(lua_State *L) {
  netop_t *op = lua_touserdata(L, 1);
  if (op->op_pd) {
    braid_pollfd_close(op->op_pd);
    braid_pollfd_release(op->op_pd);
    op->op_pd = NULL;
  }
  if (op->op_ai) { freeaddrinfo(op->op_ai); op->op_ai = NULL; }
  if (op->op_lk) { lookup_unref(op->op_lk); op->op_lk = NULL; }
  if (op->op_ssl) { SSL_free(op->op_ssl); op->op_ssl = NULL; }
  if (op->op_ctx) { SSL_CTX_free(op->op_ctx); op->op_ctx = NULL; }
  return 0;
}

static int addr_error(lua_State *L, const char *fn, const char *why, const char *addr) {
  return luaL_error(L, "bad argument #1 to '%s' (%s: '%s')", fn, why, addr);
}

/* Parses slot 1 into op; raises on a malformed address.  Returns true when
 * the host still needs a lookup (host/port left in *host, *port). */
static bool parse_addr(lua_State *L, const char *fn, netop_t *op, char *host, size_t hcap,
                       char *port) {
  if (lua_type(L, 1) != LUA_TSTRING)
    luaL_error(L, "bad argument #1 to '%s' (string expected, got %s)", fn, luaL_typename(L, 1));
  size_t len;
  const char *a = lua_tolstring(L, 1, &len);
  if (strncmp(a, "unix:", 5) == 0) {
    const char *path = a + 5;
    size_t pl = len - 5;
    if (pl == 0 || memchr(path, 0, pl) || pl >= sizeof op->op_un.sun_path)
      addr_error(L, fn, "malformed unix path", a);
    op->op_unix = true;
    op->op_un.sun_family = AF_UNIX;
    memcpy(op->op_un.sun_path, path, pl);
    op->op_unlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + pl + 1);
    return false;
  }
  const char *colon;
  const char *h = a;
  size_t hl;
  if (a[0] == '[') {
    const char *close = strchr(a, ']');
    if (close == NULL || close[1] != ':') addr_error(L, fn, "malformed address", a);
    h = a + 1;
    hl = (size_t)(close - h);
    colon = close + 1;
  } else {
    colon = strrchr(a, ':');
    if (colon == NULL) addr_error(L, fn, "malformed address (host:port expected)", a);
    hl = (size_t)(colon - a);
    if (memchr(a, ':', hl)) addr_error(L, fn, "malformed address (IPv6 needs [brackets])", a);
  }
  if (hl == 0 || hl >= hcap || memchr(h, 0, hl)) addr_error(L, fn, "malformed host", a);
  const char *p = colon + 1;
  size_t plen = strlen(p);
  if (plen == 0 || plen > 5 || strspn(p, "0123456789") != plen || atoi(p) > 65535 ||
      (size_t)(a + len - p) != plen)
    addr_error(L, fn, "malformed port", a);
  memcpy(host, h, hl);
  host[hl] = 0;
  memcpy(port, p, plen + 1);
  struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                            .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV };
  snprintf(op->op_host, sizeof op->op_host, "%s", host);
  if (getaddrinfo(host, port, &hints, &op->op_ai) == 0) {
    op->op_cur = op->op_ai;
    op->op_numeric = true;
    return false;
  }
  op->op_ai = NULL;
  return true;
}

/* Makes slot S_AUX the op and starts the lookup if needed.  Returns 0 to go
 * on, or the call's results. */
static netop_t *push_op(lua_State *L) {
  netop_t *op = lua_newuserdatauv(L, sizeof *op, 0);
  memset(op, 0, sizeof *op);
  if (luaL_newmetatable(L, "braid.net.op")) {
    lua_pushcfunction(L, netop_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  lua_replace(L, S_AUX);
  return op;
}

static netop_t *stack_op(lua_State *L) { return lua_touserdata(L, S_AUX); }

/* Waits for the lookup if one is pending; returns 1 with *nres when the
 * call must return now. */
static int await_lookup(lua_State *L, netop_t *op, int *nres) {
  lookup_t *lk = op->op_lk;
  if (lk == NULL || op->op_cur || op->op_err) return 0;
  if (braid_future_state(lk->lk_f) == BRAID_FUTURE_PENDING) {
    *nres = net_wait(L, BRAID_OP_AWAIT, lk->lk_f, "resolve", NULL);
    return *nres == NET_AGAIN ? -1 : 1;
  }
  if (lk->lk_gai != 0) {
    char why[160];
    snprintf(why, sizeof why, "dns: %s", gai_strerror(lk->lk_gai));
    *nres = push_fail(L, why);
    return 1;
  }
  op->op_cur = lk->lk_res;
  if (op->op_cur == NULL) { *nres = push_fail(L, "dns: no address"); return 1; }
  return 0;
}

static int start_lookup(lua_State *L, netop_t *op, const char *host, const char *port) {
  lookup_t *lk = calloc(1, sizeof *lk);
  if (lk == NULL) return luaL_error(L, "braid: out of memory");
  atomic_init(&lk->lk_rc, 1);
  snprintf(lk->lk_host, sizeof lk->lk_host, "%s", host);
  snprintf(lk->lk_port, sizeof lk->lk_port, "%s", port);
  lk->lk_f = braid_future_new();
  if (lk->lk_f == NULL) { free(lk); return luaL_error(L, "braid: out of memory"); }
  op->op_lk = lk;
  int rc = resolve_async(lk);
  if (rc != 0) {
    char why[160];
    snprintf(why, sizeof why, "dns: %s", braid_strerror(rc));
    return push_fail(L, why);
  }
  return 0;
}

/* Registers fd, wraps it; returns 1 (handle pushed) or the failure. */
static int push_new_sock(lua_State *L, int fd, braid_pollfd_t *pd, bool conn) {
  if (pd == NULL) {
    pd = braid_pollfd_new(fd);
    if (pd == NULL) {
      int e = errno;
      close(fd);
      return push_fail(L, strerror(e));
    }
  }
  sock_t *s = sock_new(pd, fd, conn);
  if (s == NULL) {
    braid_pollfd_close(pd);
    braid_pollfd_release(pd);
    return luaL_error(L, "braid: out of memory");
  }
  push_sock(L, s);
  return 1;
}

/* ------------------------------------------------------------------------ */
/* connect                                                                   */

/* TCP is up on fd (pd registered or NULL).  Without TLS pushes the conn
 * and returns 1; with TLS starts the handshake and returns NET_AGAIN. */
static int connected(lua_State *L, netop_t *op, int fd, braid_pollfd_t *pd) {
  if (op->op_ctx == NULL) return push_new_sock(L, fd, pd, true);
  if (pd == NULL) {
    pd = braid_pollfd_new(fd);
    if (pd == NULL) {
      int e = errno;
      close(fd);
      return push_fail(L, strerror(e));
    }
  }
  op->op_pd = pd;
  op->op_connected = true;
  SSL *ssl = SSL_new(op->op_ctx);
  if (ssl == NULL || SSL_set_fd(ssl, fd) != 1) {
    if (ssl) SSL_free(ssl);
    return push_fail(L, "tls: cannot make a connection object");
  }
  op->op_ssl = ssl;
  if (op->op_host[0] && !op->op_numeric) SSL_set_tlsext_host_name(ssl, op->op_host);
  if (op->op_verify) {
    SSL_set_verify(ssl, SSL_VERIFY_PEER, NULL);
    if (op->op_numeric)
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), op->op_host);
    else if (op->op_host[0])
      SSL_set1_host(ssl, op->op_host);
  } else {
    SSL_set_verify(ssl, SSL_VERIFY_NONE, NULL);
  }
  SSL_set_connect_state(ssl);
  return NET_AGAIN;
}

/* Runs the client handshake of op.  Returns 1 with the
 * conn pushed, NET_AGAIN to call again, or the failure/wait results. */
static int handshake(lua_State *L, netop_t *op, const char *what) {
  int fd = braid_pollfd_enter(op->op_pd);
  if (fd < 0) return push_fail(L, "closed");
  size_t n;
  braid_op_t want = BRAID_OP_READABLE;
  char why[256];
  /* No lock: the handshake's SSL is the op's alone. */
  int t = tls_call(NULL, op->op_ssl, 'h', NULL, 0, &n, &want, why, sizeof why);
  braid_pollfd_leave(op->op_pd);
  if (t == TLS_WANT) return net_wait(L, want, op->op_pd, what, NULL);
  braid_pollfd_t *pd = op->op_pd;
  SSL *ssl = op->op_ssl;
  op->op_pd = NULL;
  op->op_ssl = NULL;
  op->op_connected = false;
  if (t != TLS_OK) {
    SSL_free(ssl);
    braid_pollfd_close(pd);
    braid_pollfd_release(pd);
    return push_fail(L, why);
  }
  int k = push_new_sock(L, fd, pd, true);
  sock_t *s = (sock_t *)braid__tohandle(L, -1);
  if (k == 1 && s) s->s_ssl = ssl;
  else SSL_free(ssl);
  return k;
}

static int step_connect(lua_State *L) {
  netop_t *op = stack_op(L);
  for (;;) {
    int nres, k = await_lookup(L, op, &nres);
    if (k < 0) continue;
    if (k > 0) return nres;
    if (op->op_pd && op->op_connected) {
      k = handshake(L, op, "connect");
      if (k == NET_AGAIN) continue;
      return k;
    }
    if (op->op_pd) {                  /* woken: did it connect? */
      int fd = braid_pollfd_enter(op->op_pd);
      int err = 0;
      socklen_t el = sizeof err;
      bool pending = false;
      if (fd < 0) err = ECONNABORTED;
      else {
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0) err = errno;
        if (err == 0) {
          struct sockaddr_storage ss;
          socklen_t sl = sizeof ss;
          if (getpeername(fd, (struct sockaddr *)&ss, &sl) != 0) pending = errno == ENOTCONN;
        }
        braid_pollfd_leave(op->op_pd);
      }
      if (pending) {
        k = net_wait(L, BRAID_OP_WRITABLE, op->op_pd, "connect", NULL);
        if (k == NET_AGAIN) continue;
        return k;
      }
      braid_pollfd_t *pd = op->op_pd;
      op->op_pd = NULL;
      if (err == 0) {
        k = connected(L, op, fd, pd);
        if (k == NET_AGAIN) continue;
        return k;
      }
      braid_pollfd_close(pd);
      braid_pollfd_release(pd);
      op->op_err = err;
      if (!op->op_unix && op->op_cur) op->op_cur = op->op_cur->ai_next;
      if (op->op_unix || op->op_cur == NULL) return push_fail(L, errno_reason(err));
      continue;
    }
    const struct sockaddr *sa;
    socklen_t sl;
    int family;
    if (op->op_unix) {
      sa = (const struct sockaddr *)&op->op_un;
      sl = op->op_unlen;
      family = AF_UNIX;
    } else {
      if (op->op_cur == NULL) return push_fail(L, errno_reason(op->op_err ? op->op_err : EHOSTUNREACH));
      sa = op->op_cur->ai_addr;
      sl = op->op_cur->ai_addrlen;
      family = op->op_cur->ai_family;
    }
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return push_fail(L, strerror(errno));
    if (family != AF_UNIX) {
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    int rc = connect(fd, sa, sl);
    int e = errno;
    if (rc == 0) {
      k = connected(L, op, fd, NULL);
      if (k == NET_AGAIN) continue;
      return k;
    }
    if (e == EINPROGRESS || e == EAGAIN) {
      op->op_pd = braid_pollfd_new(fd);
      if (op->op_pd == NULL) { e = errno; close(fd); return push_fail(L, strerror(e)); }
      k = net_wait(L, BRAID_OP_WRITABLE, op->op_pd, "connect", NULL);
      if (k == NET_AGAIN) continue;
      return k;
    }
    close(fd);
    op->op_err = e;
    if (op->op_unix) return push_fail(L, errno_reason(e));
    op->op_cur = op->op_cur->ai_next;
    if (op->op_cur == NULL) return push_fail(L, errno_reason(e));
  }
}

static int l_connect(lua_State *L) {
  static const char fn[] = "braid.net.connect";
  /* The runtime first: its idle workers poll the sockets (a socket made
   * before it would start the netpoller's own thread). */
  braid__rt_start(L);
  double timeout = 30;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    if (lua_getfield(L, 2, "timeout") != LUA_TNIL) {
      timeout = luaL_checknumber(L, -1);
      if (!(timeout >= 0)) luaL_argerror(L, 2, "opts.timeout must be >= 0");
    }
    lua_pop(L, 1);
  }
  step_setup(L, braid_deadline_after(timeout), step_connect, 0);
  netop_t *op = push_op(L);
  char host[256], port[8];
  bool lookup = parse_addr(L, fn, op, host, sizeof host, port);
  if (lua_istable(L, 2)) {
    int tt = lua_getfield(L, 2, "tls");
    if (tt == LUA_TTABLE || (tt == LUA_TBOOLEAN && lua_toboolean(L, -1))) {
      const char *cafile = NULL;
      op->op_verify = true;
      if (tt == LUA_TTABLE) {
        if (lua_getfield(L, -1, "servername") == LUA_TSTRING)
          snprintf(op->op_host, sizeof op->op_host, "%s", lua_tostring(L, -1)), op->op_numeric = false;
        lua_pop(L, 1);
        if (lua_getfield(L, -1, "verify") != LUA_TNIL) op->op_verify = lua_toboolean(L, -1);
        lua_pop(L, 1);
        if (lua_getfield(L, -1, "cafile") == LUA_TSTRING) cafile = lua_tostring(L, -1);
        lua_pop(L, 1);   /* the string stays alive in opts.tls */
      }
      op->op_ctx = SSL_CTX_new(TLS_client_method());
      if (op->op_ctx == NULL) return push_fail(L, "tls: cannot make a context");
      SSL_CTX_set_min_proto_version(op->op_ctx, TLS1_2_VERSION);
      SSL_CTX_set_mode(op->op_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                                       SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
      int ok = cafile ? SSL_CTX_load_verify_locations(op->op_ctx, cafile, NULL)
                      : SSL_CTX_set_default_verify_paths(op->op_ctx);
      if (ok != 1) {
        ERR_clear_error();
        return push_fail(L, "tls: cannot load the CA certificates");
      }
    }
    lua_pop(L, 1);
  }
  if (lookup) {
    int k = start_lookup(L, op, host, port);
    if (k) return k;
  }
  return step_connect(L);
}

/* ------------------------------------------------------------------------ */
/* accept                                                                    */

static sock_t *checklistener(lua_State *L) {
  return (sock_t *)braid__checkhandle(L, 1, &listener_type);
}

static int step_accept(lua_State *L) {
  sock_t *l = stack_sock(L);
  if (l == NULL) return push_fail(L, "closed");
  for (;;) {
    int fd = braid_pollfd_enter(l->s_pd);
    if (fd < 0) return push_fail(L, "closed");
    int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    int e = errno;
    braid_pollfd_leave(l->s_pd);
    if (c >= 0) {
      int one = 1;
      setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  /* fails on unix: fine */
      braid_pollfd_t *pd = braid_pollfd_new(c);
      if (pd == NULL) { e = errno; close(c); return push_fail(L, strerror(e)); }
      SSL *ssl = NULL;
      if (l->s_ctx) {
        /* TLS: the server handshake runs inside the connection's first
         * SSL_read/SSL_write (accept state), in the task that reads or
         * writes, so a client that stalls its handshake holds up only its
         * own connection, never this accept loop. */
        ssl = SSL_new(l->s_ctx);
        if (ssl == NULL || SSL_set_fd(ssl, c) != 1) {
          if (ssl) SSL_free(ssl);
          ERR_clear_error();
          braid_pollfd_close(pd);
          braid_pollfd_release(pd);
          return push_fail(L, "tls: cannot make a connection object");
        }
        SSL_set_accept_state(ssl);
      }
      sock_t *s = sock_new(pd, c, true);
      if (s == NULL) {
        if (ssl) SSL_free(ssl);
        braid_pollfd_close(pd);
        braid_pollfd_release(pd);
        return luaL_error(L, "braid: out of memory");
      }
      s->s_ssl = ssl;
      push_sock(L, s);
      return 1;
    }
    if (e == EINTR || e == ECONNABORTED) continue;
    if (e == EAGAIN || e == EWOULDBLOCK) {
      int k = net_wait(L, BRAID_OP_READABLE, l->s_pd, "accept", &l->s_obj);
      if (k == NET_AGAIN) continue;
      return k;
    }
    return push_fail(L, strerror(e));
  }
}

static int l_accept(lua_State *L) {
  sock_t *l = checklistener(L);
  int64_t deadline = braid__optdeadline(L, 2, "listener:accept");
  (void)l;
  step_setup(L, deadline, step_accept, 0);
  return step_accept(L);
}

static int l_listener_addr(lua_State *L) {
  lua_pushstring(L, checklistener(L)->s_local);
  return 1;
}

static int l_listener_close(lua_State *L) { return sock_close(L, checklistener(L)); }

/* ------------------------------------------------------------------------ */
/* listen                                                                    */

static int step_listen(lua_State *L) {
  netop_t *op = stack_op(L);
  int nres, k;
  while ((k = await_lookup(L, op, &nres)) < 0) { }
  if (k > 0) return nres;
  int fd, e = 0;
  if (op->op_unix) {
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return push_fail(L, strerror(errno));
    if (bind(fd, (struct sockaddr *)&op->op_un, op->op_unlen) != 0 ||
        listen(fd, op->op_backlog) != 0) {
      e = errno;
      close(fd);
      return push_fail(L, strerror(e));
    }
    int n = push_new_sock(L, fd, NULL, false);
    sock_t *s = (sock_t *)braid__tohandle(L, -1);
    if (n == 1 && s) {
      s->s_unlink = strdup(op->op_un.sun_path);
      s->s_ctx = op->op_ctx;
      op->op_ctx = NULL;
    }
    return n;
  }
  for (struct addrinfo *ai = op->op_cur; ai; ai = ai->ai_next) {
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) { e = errno; continue; }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (op->op_reuseport) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (ai->ai_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, op->op_backlog) == 0) {
      int n = push_new_sock(L, fd, NULL, false);
      sock_t *s = (sock_t *)braid__tohandle(L, -1);
      if (n == 1 && s) { s->s_ctx = op->op_ctx; op->op_ctx = NULL; }
      return n;
    }
    e = errno;
    close(fd);
  }
  return push_fail(L, strerror(e ? e : EADDRNOTAVAIL));
}

static int l_listen(lua_State *L) {
  static const char fn[] = "braid.net.listen";
  /* The runtime first: its idle workers poll the sockets (a socket made
   * before it would start the netpoller's own thread). */
  braid__rt_start(L);
  int backlog = 511;
  bool reuseport = false;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    if (lua_getfield(L, 2, "backlog") != LUA_TNIL) backlog = (int)luaL_checkinteger(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, 2, "reuseport");
    reuseport = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  SSL_CTX *ctx = NULL;
  if (lua_istable(L, 2) && lua_getfield(L, 2, "tls") == LUA_TTABLE) {
    lua_getfield(L, -1, "cert");
    lua_getfield(L, -2, "key");
    const char *cert = lua_tostring(L, -2), *key = lua_tostring(L, -1);
    if (cert == NULL || key == NULL)
      return luaL_argerror(L, 2, "opts.tls needs cert and key (file names)");
    ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) return push_fail(L, "tls: cannot make a context");
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
      char why[256];
      tls_reason(NULL, 0, why, sizeof why);
      SSL_CTX_free(ctx);
      return push_fail(L, why);
    }
    lua_pop(L, 2);
  }
  if (lua_istable(L, 2)) lua_pop(L, 1);
  step_setup(L, BRAID_FOREVER, step_listen, 0);
  netop_t *op = push_op(L);
  op->op_ctx = ctx;                   /* the listener takes it on success */
  op->op_backlog = backlog;
  op->op_reuseport = reuseport;
  char host[256], port[8];
  if (parse_addr(L, fn, op, host, sizeof host, port)) {
    int k = start_lookup(L, op, host, port);
    if (k) return k;
  }
  return step_listen(L);
}

/* ------------------------------------------------------------------------ */

void braid__open_net(lua_State *L) {
  static const luaL_Reg conn_m[] = {
    { "read", l_read }, { "read_some", l_read_some }, { "write", l_write },
    { "shutdown", l_conn_shutdown }, { "close", l_conn_close },
    { "peer", l_conn_peer }, { "addr", l_conn_addr }, { "_busy", l_conn_busy },
    { "_http_next", l_http_next },
    { "__tostring", l_conn_tostring }, { NULL, NULL } };
  static const luaL_Reg listener_m[] = {
    { "accept", l_accept }, { "addr", l_listener_addr }, { "close", l_listener_close },
    { NULL, NULL } };
  braid__newtype(L, &conn_type, conn_m);
  braid__newtype(L, &listener_type, listener_m);
  static const luaL_Reg fns[] = {
    { "listen", l_listen }, { "connect", l_connect }, { NULL, NULL } };
  luaL_newlib(L, fns);
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "net");
  /* require "braid.net" gives the same table. */
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_insert(L, -2);
  lua_setfield(L, -2, "braid.net");
  lua_pop(L, 1);
}
