/*
 * netpoll.h -- readiness of file descriptors, for parking on sockets.
 *
 * Design notes (after Go's runtime/netpoll.go and netpoll_epoll.go)
 *
 * One epoll set for the process.  Every fd is registered once, edge
 * triggered, for EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLET; an eventfd in the set
 * breaks a blocked epoll_wait (braid__netpoll_break).
 *
 * A poll descriptor (braid_pollfd_t, Go's pollDesc) per fd is a select-able
 * object: a braid_obj_t header (refcount, id, o_mtx) so that select.c locks
 * it in address order with channels and futures, a reader queue and a writer
 * queue of waiter nodes, and two sticky "ready" flags.
 *
 * The no-lost-wake-up rule.  A caller tries its syscall first; on EAGAIN it
 * selects on BRAID_OP_READABLE (or WRITABLE).  An event always takes o_mtx:
 * it claims and wakes every queued waiter of that direction, and when it
 * woke none it sets the direction's ready flag.  Arming takes o_mtx too: a
 * set flag makes the case ready at once (the flag is consumed).  So an event
 * that lands between the EAGAIN and the queueing is seen as the flag; one
 * that lands after is seen as a wake.  A flag left by an older event only
 * causes one more syscall that returns EAGAIN again: spurious readiness is
 * harmless, lost readiness is impossible.
 *
 * Lifetime.  The epoll set names a descriptor by (slot, generation), never
 * by pointer: the poller looks the slot up under the registry mutex and
 * retains the descriptor, so an event that arrives for a descriptor closed
 * meanwhile is dropped, not a use-after-free.  The fd itself is closed when
 * the descriptor is closed and no syscall is in flight on it
 * (braid_pollfd_enter/leave), so its number cannot be reused under a
 * concurrent read().
 *
 * Polling.  braid__netpoll_poll runs one epoll_wait; only one thread polls at
 * a time (the others return at once).  Until the scheduler polls from idle
 * workers, one dedicated poller thread (started lazily by the first
 * registration, netpoll_start_thread) loops on it; braid__netpoll_shutdown
 * stops and joins it and closes every descriptor still registered, waking
 * its waiters with BRAID_ECLOSED.
 */
#ifndef BRAID_NETPOLL_H
#define BRAID_NETPOLL_H

#include <stdbool.h>
#include <stdint.h>

#include "refcnt.h"

typedef struct braid_pollfd braid_pollfd_t;

extern braid_objtype_t braid_pollfd_type;

/* Registers fd (which must be non-blocking) and returns its descriptor with
 * one reference, the caller's; the descriptor owns fd from now on (it closes
 * it).  Returns NULL with errno set on failure (fd is then still the
 * caller's). */
braid_pollfd_t *braid_pollfd_new(int fd);

static inline void braid_pollfd_release(braid_pollfd_t *p) { braid_obj_release((braid_obj_t *)p); }

/* Brackets a syscall on the fd: enter returns the fd, or -1 once closed;
 * every successful enter needs one leave. */
int braid_pollfd_enter(braid_pollfd_t *p);
void braid_pollfd_leave(braid_pollfd_t *p);

/* Closes: wakes every queued reader and writer with BRAID_ECLOSED, removes
 * the fd from the epoll set and closes it (once no syscall is in flight).
 * Returns false when it was already closed. */
bool braid_pollfd_close(braid_pollfd_t *p);
bool braid_pollfd_closed(braid_pollfd_t *p);

/* Runs one epoll_wait until deadline (0: do not block; BRAID_FOREVER: no
 * limit) and fires the waiters of the fds that became ready.  Returns the
 * number of descriptors that had events, 0 when another thread is polling,
 * or a negative BRAID_E* code. */
int braid__netpoll_poll(int64_t deadline);

/* From now on the caller (the scheduler's idle workers) polls: no poller
 * thread is started.  Creates the epoll set now, so an idle poll always
 * has something to block in.  Until braid__netpoll_shutdown.  Returns 0
 * or BRAID_ENOMEM. */
int braid__netpoll_drive(void);

/* Makes a blocked braid__netpoll_poll return. */
void braid__netpoll_break(void);

/* Stops and joins the poller thread, closes every registered descriptor
 * (waking its waiters with BRAID_ECLOSED) and the epoll set.  Registering
 * again later starts afresh.  For the runtime's stop path. */
void braid__netpoll_shutdown(void);

/* Descriptors registered now (tests, stats). */
int braid__netpoll_count(void);

#endif
