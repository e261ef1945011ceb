/*
 * netpoll.c -- the epoll set, poll descriptors and the poller (netpoll.h).
 *
 * Design notes (after Go's runtime/netpoll.go and netpoll_epoll.go)
 *
 * 1. Registry: g.mtx guards the slot table (slot -> descriptor, generation),
 *    the epoll and eventfd descriptors and the poller thread's state.  An
 *    epoll event carries (slot << 32 | generation); a slot is reused only
 *    with a new generation, so a stale event finds nothing.
 * 2. Lock order: g.mtx is never held while a descriptor's o_mtx is taken,
 *    nor the other way round (the poller retains under g.mtx, then locks
 *    each descriptor alone).
 * 3. Events: EPOLLIN/EPOLLRDHUP/EPOLLHUP/EPOLLERR make the read side ready,
 *    EPOLLOUT/EPOLLHUP/EPOLLERR the write side.  Each side: claim and wake
 *    every queued waiter; if none was woken, set the sticky flag.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "err.h"
#include "internal.h"
#include "netpoll.h"

static void pollfd_destroy(braid_obj_t *o);

braid_objtype_t braid_pollfd_type = { "pollfd", pollfd_destroy, 0 };

typedef struct slot {
  braid_pollfd_t *s_pd;       /* NULL when free */
  uint32_t s_gen;
  uint32_t s_next_free;       /* free list link (index + 1; 0 ends it) */
} slot_t;

static struct {
  pthread_mutex_t mtx;        /* Protects: every field below but polling */
  int epfd;                   /* -1 until first use */
  int evfd;                   /* the eventfd that breaks epoll_wait */
  slot_t *slots;
  uint32_t nslots, cap, free_head;  /* free_head: index + 1, 0 = none */
  int count;                  /* descriptors registered */
  bool thread_on;             /* the poller thread runs */
  pthread_t thread;
  _Atomic bool stop;          /* asks the poller thread to return */
  _Atomic bool polling;       /* one thread in epoll_wait at a time */
  bool driven;                /* the scheduler's idle workers poll: no thread */
} g = { .mtx = PTHREAD_MUTEX_INITIALIZER, .epfd = -1, .evfd = -1 };

static void *poller_main(void *arg);

/* With g.mtx held.  Creates the epoll set and the eventfd. */
static int init_locked(void) {
  if (g.epfd >= 0) return 0;
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) return -1;
  int ev = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (ev < 0) { close(ep); return -1; }
  struct epoll_event e = { .events = EPOLLIN | EPOLLET, .data.u64 = UINT64_MAX };
  if (epoll_ctl(ep, EPOLL_CTL_ADD, ev, &e) != 0) { close(ev); close(ep); return -1; }
  g.epfd = ep;
  g.evfd = ev;
  return 0;
}

/* A poller thread of its own, for users of the core without the
 * scheduler (the C tests); the runtime drives the poll from its idle
 * workers instead (braid__netpoll_drive).  With g.mtx held.  Returns 0, or
 * pthread_create's error (nothing would ever poll). */
static int netpoll_start_thread(void) {
  if (g.thread_on || g.driven) return 0;
  atomic_store_explicit(&g.stop, false, memory_order_relaxed);
  int rc = pthread_create(&g.thread, NULL, poller_main, NULL);
  if (rc == 0) g.thread_on = true;
  return rc;
}

static void *poller_main(void *arg) {
  (void)arg;
  /* Acquire: pairs with the release store in shutdown (nothing else is
   * published through it, but it keeps the loop's read ordered). */
  while (!atomic_load_explicit(&g.stop, memory_order_acquire))
    braid__netpoll_poll(BRAID_FOREVER);
  return NULL;
}

braid_pollfd_t *braid_pollfd_new(int fd) {
  braid_pollfd_t *p = calloc(1, sizeof *p);
  if (p == NULL) { errno = ENOMEM; return NULL; }
  if (braid_obj_init(&p->p_obj, &braid_pollfd_type) != 0) {
    free(p);
    errno = ENOMEM;
    return NULL;
  }
  p->p_fd = fd;
  BRAID_PCHECK(pthread_mutex_lock(&g.mtx));
  if (init_locked() != 0) goto fail;
  int trc = netpoll_start_thread();     /* before registering: nothing to undo */
  if (trc != 0) { errno = trc; goto fail; }
  uint32_t idx;
  if (g.free_head) {
    idx = g.free_head - 1;
    g.free_head = g.slots[idx].s_next_free;
  } else {
    if (g.nslots == g.cap) {
      uint32_t cap = g.cap ? 2 * g.cap : 64;
      slot_t *s = realloc(g.slots, cap * sizeof *s);
      if (s == NULL) { errno = ENOMEM; goto fail; }
      g.slots = s;
      g.cap = cap;
    }
    idx = g.nslots++;
    g.slots[idx].s_gen = 0;
  }
  slot_t *s = &g.slots[idx];
  s->s_gen++;
  s->s_pd = p;                /* the registry's reference: */
  braid_obj_retain(&p->p_obj);
  p->p_slot = idx;
  p->p_gen = s->s_gen;
  struct epoll_event e = {
    .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
    .data.u64 = ((uint64_t)idx << 32) | s->s_gen,
  };
  if (epoll_ctl(g.epfd, EPOLL_CTL_ADD, fd, &e) != 0) {
    int err = errno;
    s->s_pd = NULL;
    s->s_next_free = g.free_head;
    g.free_head = idx + 1;
    BRAID_PCHECK(pthread_mutex_unlock(&g.mtx));
    p->p_fd = -1;             /* still the caller's */
    braid_obj_release(&p->p_obj);
    braid_obj_release(&p->p_obj);
    errno = err;
    return NULL;
  }
  g.count++;
  BRAID_PCHECK(pthread_mutex_unlock(&g.mtx));
  return p;
fail:
  BRAID_PCHECK(pthread_mutex_unlock(&g.mtx));
  {
    int err = errno;
    p->p_fd = -1;
    braid_obj_release(&p->p_obj);
    errno = err;
  }
  return NULL;
}

static void pollfd_destroy(braid_obj_t *o) {
  braid_pollfd_t *p = (braid_pollfd_t *)o;
  if (p->p_fd >= 0) close(p->p_fd);
  braid_obj_fini(o);
  free(p);
}

int braid_pollfd_enter(braid_pollfd_t *p) {
  braid_obj_lock(&p->p_obj);
  int fd = p->p_closed ? -1 : p->p_fd;
  if (fd >= 0) p->p_busy++;
  braid_obj_unlock(&p->p_obj);
  return fd;
}

void braid_pollfd_leave(braid_pollfd_t *p) {
  int fd = -1;
  braid_obj_lock(&p->p_obj);
  BRAID_ASSERT(p->p_busy > 0);
  if (--p->p_busy == 0 && p->p_closed) {
    fd = p->p_fd;
    p->p_fd = -1;
  }
  braid_obj_unlock(&p->p_obj);
  if (fd >= 0) close(fd);
}

bool braid_pollfd_closed(braid_pollfd_t *p) {
  braid_obj_lock(&p->p_obj);
  bool c = p->p_closed;
  braid_obj_unlock(&p->p_obj);
  return c;
}

int braid__pollfd_poll_locked(braid_pollfd_t *p, bool write) {
  if (p->p_closed) return BRAID_ECLOSED;
  bool *flag = write ? &p->p_wready : &p->p_rready;
  if (!*flag) return BRAID_EAGAIN;
  *flag = false;
  return 0;
}

/* With o_mtx held: wake every waiter of q with err onto wl; returns how many. */
static int claim_all(braid_wqueue_t *q, int err, braid_wakelist_t *wl) {
  int n = 0;
  braid_wnode_t *node;
  while ((node = braid__wq_claim(q)) != NULL) {
    node->n_waiter->w_err = err;
    node->n_waiter->w_msg = NULL;
    braid__wl_add(wl, node);
    n++;
  }
  return n;
}

bool braid_pollfd_close(braid_pollfd_t *p) {
  braid_wakelist_t wl = { NULL, NULL };
  int fd = -1;
  braid_obj_lock(&p->p_obj);
  if (p->p_closed) {
    braid_obj_unlock(&p->p_obj);
    return false;
  }
  p->p_closed = true;
  claim_all(&p->p_readq, BRAID_ECLOSED, &wl);
  claim_all(&p->p_writeq, BRAID_ECLOSED, &wl);
  int live = p->p_fd;
  if (p->p_busy == 0) {
    fd = p->p_fd;
    p->p_fd = -1;
  }
  /* Deregistered while p's lock is held: a task still inside a call on the
   * fd closes it in braid_pollfd_leave, which needs this lock, so the fd
   * number cannot have been closed (and reused by a new socket, whose
   * registration EPOLL_CTL_DEL would then remove) yet.  g.mtx is a leaf
   * after object locks (LOCKING.md). */
  bool drop = false;
  BRAID_PCHECK(pthread_mutex_lock(&g.mtx));
  slot_t *s = p->p_slot < g.nslots ? &g.slots[p->p_slot] : NULL;
  if (s && s->s_pd == p && s->s_gen == p->p_gen) {
    if (g.epfd >= 0 && live >= 0) epoll_ctl(g.epfd, EPOLL_CTL_DEL, live, NULL);
    s->s_pd = NULL;
    s->s_next_free = g.free_head;
    g.free_head = p->p_slot + 1;
    g.count--;
    drop = true;
  }
  BRAID_PCHECK(pthread_mutex_unlock(&g.mtx));
  braid_obj_unlock(&p->p_obj);
  braid__wl_wake(&wl);
  if (fd >= 0) close(fd);
  if (drop) braid_obj_release(&p->p_obj);
  return true;
}

/* One side's event: wake everyone queued, else remember the readiness. */
static void ready(braid_pollfd_t *p, bool rd, bool wr) {
  braid_wakelist_t wl = { NULL, NULL };
  braid_obj_lock(&p->p_obj);
  if (!p->p_closed) {
    if (rd && claim_all(&p->p_readq, 0, &wl) == 0) p->p_rready = true;
    if (wr && claim_all(&p->p_writeq, 0, &wl) == 0) p->p_wready = true;
  }
  braid_obj_unlock(&p->p_obj);
  braid__wl_wake(&wl);
}

enum { MAXEV = 128 };

int braid__netpoll_poll(int64_t deadline) {
  bool no = false;
  /* Acquire/release: the polling flag is a try-lock around epoll_wait. */
  if (!atomic_compare_exchange_strong_explicit(&g.polling, &no, true,
                                               memory_order_acquire, memory_order_relaxed))
    return 0;
  BRAID_PCHECK(pthread_mutex_lock(&g.mtx));
  int ep = g.epfd, evfd = g.evfd;
  BRAID_PCHECK(pthread_mutex_unlock(&g.mtx));
  if (ep < 0) {
    atomic_store_explicit(&g.polling, false, memory_order_release);
    return 0;
  }
  int64_t d = deadline == BRAID_FOREVER ? -1 : deadline == 0 ? 0 : deadline - braid_now_ns();
  if (d < 0 && deadline != BRAID_FOREVER) d = 0;
  if (d > (int64_t)1000000000000) d = (int64_t)1000000000000;  /* 1000 s: woken again later */
  struct epoll_event ev[MAXEV];
  int n = -1;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 35))
  /* epoll_pwait2 (Linux 5.11): a timeout in nanoseconds, so a timer due in
   * 100 us fires after about 100 us, not after epoll_wait's next whole
   * millisecond (braid.sleep(0.0001) in a task took 1.12 ms when every
   * worker was idle).  Where the kernel lacks it (ENOSYS), or a tool that
   * runs us does not know it, epoll_wait from then on. */
  static _Atomic bool no_pwait2;
  if (!atomic_load_explicit(&no_pwait2, memory_order_relaxed)) {
    struct timespec ts = { (time_t)(d / 1000000000), (long)(d % 1000000000) };
    n = epoll_pwait2(ep, ev, MAXEV, d < 0 ? NULL : &ts, NULL);
    if (n < 0 && errno == ENOSYS) atomic_store_explicit(&no_pwait2, true, memory_order_relaxed);
  }
  if (n < 0 && atomic_load_explicit(&no_pwait2, memory_order_relaxed))
#endif
  {
    int timeout = d < 0 ? -1 : (int)((d + 999999) / 1000000);
    n = epoll_wait(ep, ev, MAXEV, timeout);
  }
  if (n < 0) {
    atomic_store_explicit(&g.polling, false, memory_order_release);
    return errno == EINTR ? 0 : BRAID_EINVAL;
  }
  braid_pollfd_t *pds[MAXEV];
  uint32_t evs[MAXEV];
  int m = 0;
  BRAID_PCHECK(pthread_mutex_lock(&g.mtx));
  for (int i = 0; i < n; i++) {
    if (ev[i].data.u64 == UINT64_MAX) {
      uint64_t v;
      ssize_t r = read(evfd, &v, sizeof v);
      (void)r;
      continue;
    }
    uint32_t idx = (uint32_t)(ev[i].data.u64 >> 32), gen = (uint32_t)ev[i].data.u64;
    if (idx >= g.nslots || g.slots[idx].s_pd == NULL || g.slots[idx].s_gen != gen) continue;
    pds[m] = g.slots[idx].s_pd;
    braid_obj_retain(&pds[m]->p_obj);
    evs[m++] = ev[i].events;
  }
  BRAID_PCHECK(pthread_mutex_unlock(&g.mtx));
  atomic_store_explicit(&g.polling, false, memory_order_release);
  for (int i = 0; i < m; i++) {
    uint32_t e = evs[i];
    bool err = (e & (EPOLLERR | EPOLLHUP)) != 0;
    ready(pds[i], err || (e & (EPOLLIN | EPOLLRDHUP)), err || (e & EPOLLOUT));
    braid_obj_release(&pds[i]->p_obj);
  }
  return m;
}

int braid__netpoll_drive(void) {
  BRAID_PCHECK(pthread_mutex_lock(&g.mtx));
  int rc = init_locked();
  if (rc == 0) g.driven = true;
  BRAID_PCHECK(pthread_mutex_unlock(&g.mtx));
  return rc == 0 ? 0 : BRAID_ENOMEM;
}

void braid__netpoll_break(void) {
  BRAID_PCHECK(pthread_mutex_lock(&g.mtx));
  if (g.evfd >= 0) {
    uint64_t one = 1;
    ssize_t r = write(g.evfd, &one, sizeof one);
    (void)r;
  }
  BRAID_PCHECK(pthread_mutex_unlock(&g.mtx));
}

int braid__netpoll_count(void) {
  BRAID_PCHECK(pthread_mutex_lock(&g.mtx));
  int n = g.count;
  BRAID_PCHECK(pthread_mutex_unlock(&g.mtx));
  return n;
}

void braid__netpoll_shutdown(void) {
  BRAID_PCHECK(pthread_mutex_lock(&g.mtx));
  bool on = g.thread_on;
  pthread_t t = g.thread;
  g.thread_on = false;
  BRAID_PCHECK(pthread_mutex_unlock(&g.mtx));
  if (on) {
    /* Release: pairs with the poller's acquire load. */
    atomic_store_explicit(&g.stop, true, memory_order_release);
    braid__netpoll_break();
    BRAID_PCHECK(pthread_join(t, NULL));
  }
  /* Close every descriptor still registered, one at a time (close takes
   * g.mtx itself). */
  for (;;) {
    braid_pollfd_t *p = NULL;
    BRAID_PCHECK(pthread_mutex_lock(&g.mtx));
    for (uint32_t i = 0; i < g.nslots && p == NULL; i++)
      if (g.slots[i].s_pd) {
        p = g.slots[i].s_pd;
        braid_obj_retain(&p->p_obj);
      }
    BRAID_PCHECK(pthread_mutex_unlock(&g.mtx));
    if (p == NULL) break;
    braid_pollfd_close(p);
    braid_obj_release(&p->p_obj);
  }
  BRAID_PCHECK(pthread_mutex_lock(&g.mtx));
  if (g.count == 0 && g.epfd >= 0) {
    close(g.epfd);
    close(g.evfd);
    g.epfd = g.evfd = -1;
  }
  g.driven = false;
  BRAID_PCHECK(pthread_mutex_unlock(&g.mtx));
}
