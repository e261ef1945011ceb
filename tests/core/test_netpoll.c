/*
 * test_netpoll.c -- poll descriptors: readiness parks and wakes OS-thread
 * waiters through select, no lost wake-up, close wakes all, many fds.
 * The dedicated poller thread delivers the events.
 */
#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "select.h"
#include "test.h"

static void nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL);
  ASSERT(fl >= 0 && fcntl(fd, F_SETFL, fl | O_NONBLOCK) == 0);
}

/* Reads one byte, parking on READABLE on EAGAIN.  Returns the byte, or -1
 * on close/timeout (err in *err). */
static int read_byte(braid_pollfd_t *p, int64_t deadline, int *err) {
  for (;;) {
    int fd = braid_pollfd_enter(p);
    if (fd < 0) { *err = BRAID_ECLOSED; return -1; }
    unsigned char c;
    ssize_t n = read(fd, &c, 1);
    int e = errno;
    braid_pollfd_leave(p);
    if (n == 1) return c;
    ASSERT(n < 0 && (e == EAGAIN || e == EWOULDBLOCK));
    braid_case_t cs[1] = { { .c_op = BRAID_OP_READABLE, .c_obj = p } };
    braid_selres_t r;
    int rc = braid_select_until(cs, 1, deadline, &r);
    if (rc != 0) { *err = rc; return -1; }
    if (r.s_err != 0) { *err = r.s_err; return -1; }
  }
}

typedef struct reader {
  braid_pollfd_t *p;
  int got, err;
  _Atomic int *count;
} reader_t;

static void *reader_main(void *arg) {
  reader_t *a = arg;
  a->err = 0;
  a->got = read_byte(a->p, BRAID_FOREVER, &a->err);
  if (a->count) atomic_fetch_add(a->count, 1);
  return NULL;
}

TEST(test_netpoll_wakes_parked_reader) {
  int fds[2];
  ASSERT_OK(pipe(fds));
  nonblock(fds[0]);
  braid_pollfd_t *p = braid_pollfd_new(fds[0]);
  ASSERT_NOT_NULL(p);
  reader_t a = { p, 0, 0, NULL };
  pthread_t t = test_spawn(reader_main, &a);
  test_sleep_ms(20);                  /* let it park (either way is correct) */
  ASSERT_EQ_INT(write(fds[1], "x", 1), 1);
  test_join(t);
  ASSERT_EQ_INT(a.got, 'x');
  ASSERT_EQ_INT(a.err, 0);
  braid_pollfd_close(p);
  braid_pollfd_release(p);
  close(fds[1]);
}

TEST(test_netpoll_timeout) {
  int fds[2];
  ASSERT_OK(pipe(fds));
  nonblock(fds[0]);
  braid_pollfd_t *p = braid_pollfd_new(fds[0]);
  int err = 0;
  ASSERT_EQ_INT(read_byte(p, test_after_ms(20), &err), -1);
  ASSERT_EQ_ERR(err, BRAID_ETIMEDOUT);
  /* The descriptor still works after a timed-out wait. */
  ASSERT_EQ_INT(write(fds[1], "y", 1), 1);
  ASSERT_EQ_INT(read_byte(p, test_after_ms(5000), &err), 'y');
  braid_pollfd_close(p);
  braid_pollfd_release(p);
  close(fds[1]);
}

/* The event races the arm: a writer fires right after each EAGAIN; every
 * byte must be read, none waits for the 10 s deadline. */
typedef struct pinger {
  int fd, rounds;
  _Atomic int *acked;
} pinger_t;

static void *pinger_main(void *arg) {
  pinger_t *a = arg;
  for (int i = 0; i < a->rounds; i++) {
    while (atomic_load(a->acked) < i) { }
    ASSERT_EQ_INT(write(a->fd, "z", 1), 1);
  }
  return NULL;
}

TEST(test_netpoll_no_lost_wakeup) {
  int sv[2];
  ASSERT_OK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
  nonblock(sv[0]);
  braid_pollfd_t *p = braid_pollfd_new(sv[0]);
  _Atomic int acked = 0;
  enum { ROUNDS = 20000 };
  pinger_t a = { sv[1], ROUNDS, &acked };
  pthread_t t = test_spawn(pinger_main, &a);
  for (int i = 0; i < ROUNDS; i++) {
    int err = 0;
    ASSERT_EQ_INT(read_byte(p, test_after_ms(10000), &err), 'z');
    atomic_store(&acked, i + 1);
  }
  test_join(t);
  braid_pollfd_close(p);
  braid_pollfd_release(p);
  close(sv[1]);
}

TEST(test_netpoll_close_wakes_all) {
  int fds[2];
  ASSERT_OK(pipe(fds));
  nonblock(fds[0]);
  braid_pollfd_t *p = braid_pollfd_new(fds[0]);
  enum { N = 8 };
  reader_t a[N];
  pthread_t t[N];
  _Atomic int done = 0;
  for (int i = 0; i < N; i++) {
    a[i] = (reader_t){ p, 0, 0, &done };
    t[i] = test_spawn(reader_main, &a[i]);
  }
  test_sleep_ms(30);
  ASSERT_EQ_INT(atomic_load(&done), 0);
  ASSERT(braid_pollfd_close(p));
  ASSERT(!braid_pollfd_close(p));
  for (int i = 0; i < N; i++) {
    test_join(t[i]);
    ASSERT_EQ_INT(a[i].got, -1);
    ASSERT_EQ_ERR(a[i].err, BRAID_ECLOSED);
  }
  ASSERT_EQ_INT(braid_pollfd_enter(p), -1);
  braid_pollfd_release(p);
  close(fds[1]);
}

TEST(test_netpoll_writable) {
  int sv[2];
  ASSERT_OK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
  nonblock(sv[0]);
  braid_pollfd_t *p = braid_pollfd_new(sv[0]);
  char buf[4096] = {0};
  size_t sent = 0;
  while (write(sv[0], buf, sizeof buf) > 0) sent += sizeof buf;  /* fill */
  ASSERT_EQ_INT(errno, EAGAIN);
  braid_case_t cs[1];
  braid_selres_t r;
  /* Drain any readiness left from before the fill, then it must block. */
  for (int k = 0; k < 2; k++) {
    cs[0] = (braid_case_t){ .c_op = BRAID_OP_WRITABLE, .c_obj = p };
    if (braid_select_until(cs, 1, test_after_ms(20), &r) == BRAID_ETIMEDOUT) break;
    ASSERT(write(sv[0], buf, sizeof buf) < 0);
  }
  cs[0] = (braid_case_t){ .c_op = BRAID_OP_WRITABLE, .c_obj = p };
  ASSERT_EQ_ERR(braid_select_until(cs, 1, test_after_ms(20), &r), BRAID_ETIMEDOUT);
  size_t got = 0;
  while (got < sent) {
    ssize_t n = read(sv[1], buf, sizeof buf);
    ASSERT(n > 0);
    got += (size_t)n;
  }
  cs[0] = (braid_case_t){ .c_op = BRAID_OP_WRITABLE, .c_obj = p };
  ASSERT_OK(braid_select_until(cs, 1, test_after_ms(10000), &r));
  ASSERT(write(sv[0], buf, 1) == 1);
  braid_pollfd_close(p);
  braid_pollfd_release(p);
  close(sv[1]);
}

/* Many fds at once, in one select and from many threads. */
TEST(test_netpoll_many_fds) {
  enum { N = 200 };
  int sv[N][2];
  braid_pollfd_t *p[N];
  int before = braid__netpoll_count();
  for (int i = 0; i < N; i++) {
    ASSERT_OK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv[i]));
    nonblock(sv[i][0]);
    p[i] = braid_pollfd_new(sv[i][0]);
    ASSERT_NOT_NULL(p[i]);
  }
  ASSERT_EQ_INT(braid__netpoll_count(), before + N);
  /* One select over SEL of them (ThreadSanitizer holds at most 64 locks). */
  enum { SEL = 40 };
  braid_case_t cs[SEL];
  uint64_t rs = test_rand_init(1);
  for (int round = 0; round < 100; round++) {
    int base = (int)test_rand_below(&rs, N - SEL + 1);
    int k = base + (int)test_rand_below(&rs, SEL);
    ASSERT_EQ_INT(write(sv[k][1], "m", 1), 1);
    braid_selres_t r;
    /* Sticky flags left by earlier rounds give spurious readiness: loop
     * until k's byte is read; no other fd may yield a byte. */
    bool got = false;
    while (!got) {
      for (int i = 0; i < SEL; i++)
        cs[i] = (braid_case_t){ .c_op = BRAID_OP_READABLE, .c_obj = p[base + i] };
      ASSERT_OK(braid_select_until(cs, SEL, test_after_ms(10000), &r));
      char c;
      ssize_t n = read(sv[base + r.s_index][0], &c, 1);
      if (n == 1) { ASSERT_EQ_INT(base + r.s_index, k); got = true; }
    }
  }
  /* Every thread may poll too: a blocking poll is refused while the poller
   * thread holds it, or returns at once for deadline 0. */
  ASSERT(braid__netpoll_poll(0) >= 0);
  for (int i = 0; i < N; i++) {
    braid_pollfd_close(p[i]);
    braid_pollfd_release(p[i]);
    close(sv[i][1]);
  }
  ASSERT_EQ_INT(braid__netpoll_count(), before);
}

TEST(test_netpoll_shutdown_closes) {
  int fds[2];
  ASSERT_OK(pipe(fds));
  nonblock(fds[0]);
  braid_pollfd_t *p = braid_pollfd_new(fds[0]);
  reader_t a = { p, 0, 0, NULL };
  pthread_t t = test_spawn(reader_main, &a);
  test_sleep_ms(20);
  braid__netpoll_shutdown();
  test_join(t);
  ASSERT_EQ_ERR(a.err, BRAID_ECLOSED);
  ASSERT(braid_pollfd_closed(p));
  ASSERT_EQ_INT(braid__netpoll_count(), 0);
  ASSERT(fcntl(fds[0], F_GETFD) < 0);  /* the fd was closed */
  braid_pollfd_release(p);
  close(fds[1]);
  /* Registering again starts afresh. */
  ASSERT_OK(pipe(fds));
  nonblock(fds[0]);
  p = braid_pollfd_new(fds[0]);
  ASSERT_NOT_NULL(p);
  int err = 0;
  ASSERT_EQ_INT(write(fds[1], "q", 1), 1);
  ASSERT_EQ_INT(read_byte(p, test_after_ms(10000), &err), 'q');
  braid_pollfd_release(p);             /* destroy closes the fd too */
  close(fds[1]);
  braid__netpoll_shutdown();
}

TEST_LIST {
  RUN(test_netpoll_wakes_parked_reader);
  RUN(test_netpoll_timeout);
  RUN(test_netpoll_no_lost_wakeup);
  RUN(test_netpoll_close_wakes_all);
  RUN(test_netpoll_writable);
  RUN(test_netpoll_many_fds);
  RUN(test_netpoll_shutdown_closes);
}
