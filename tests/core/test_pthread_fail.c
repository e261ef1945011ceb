/* test_pthread_fail.c -- a thread that cannot start is an error returned
 * to the caller, never a hang or a crash: the timer queue, the job pool and
 * the netpoller's own thread, with pthread_create made to fail.
 *
 * pthread_create is made to fail by a default thread attribute
 * (pthread_setattr_default_np) whose stack cannot be mapped, as it fails
 * when a process runs out of memory for new threads. */
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "jobpool.h"
#include "netpoll.h"
#include "timer.h"
#include "test.h"

/* Makes every pthread_create with a NULL attribute fail (true), or undoes
 * it (false). */
static void threads_fail(bool fail) {
  pthread_attr_t a;
  ASSERT_EQ_INT(pthread_attr_init(&a), 0);
  size_t huge = (size_t)1 << 62;        /* more than any address space */
  ASSERT_EQ_INT(pthread_attr_setstacksize(&a, fail ? huge : (size_t)8 << 20), 0);
  ASSERT_EQ_INT(pthread_setattr_default_np(&a), 0);
  pthread_attr_destroy(&a);
}

static void *nothing(void *arg) { return arg; }

/* The trick itself works here, or the tests below prove nothing. */
TEST(test_pthread_fail_provoked) {
  threads_fail(true);
  pthread_t t;
  int rc = pthread_create(&t, NULL, nothing, NULL);
  threads_fail(false);
  if (rc == 0) pthread_join(t, NULL);
  ASSERT_NE_INT(rc, 0);
  ASSERT_EQ_INT(pthread_create(&t, NULL, nothing, NULL), 0);
  ASSERT_EQ_INT(pthread_join(t, NULL), 0);
}

TEST(test_pthread_fail_timerq) {
  threads_fail(true);
  braid_timerq_t *q = braid_timerq_new();
  threads_fail(false);
  ASSERT_NULL(q);                       /* nothing leaked (ASan checks) */
  q = braid_timerq_new();
  ASSERT_NOT_NULL(q);
  braid_timerq_free(q);
}

static atomic_int ran, cancelled;
static void job_run(braid_job_t *j) { (void)j; atomic_fetch_add(&ran, 1); }
static void job_cancel(braid_job_t *j) { (void)j; atomic_fetch_add(&cancelled, 1); }

TEST(test_pthread_fail_jobpool) {
  atomic_store(&ran, 0);
  atomic_store(&cancelled, 0);
  braid_jobpool_t *p = braid_jobpool_new(4, test_ms(10000), NULL);
  ASSERT_NOT_NULL(p);
  braid_job_t j1 = { .j_run = job_run, .j_cancel = job_cancel };
  threads_fail(true);
  int rc = braid_jobpool_submit(p, &j1);
  threads_fail(false);
  /* No thread runs and none could start: the job is handed back. */
  ASSERT_EQ_ERR(rc, BRAID_ENOMEM);
  braid_jobpool_stats_t st;
  braid_jobpool_stats(p, &st);
  ASSERT_EQ_INT(st.queued, 0);
  ASSERT_EQ_INT(st.threads, 0);
  /* Threads start again once they can. */
  ASSERT_OK(braid_jobpool_submit(p, &j1));
  int64_t until = braid_now_ns() + test_ms(10000);
  while (atomic_load(&ran) < 1 && braid_now_ns() < until) test_sleep_ms(1);
  ASSERT_EQ_INT(atomic_load(&ran), 1);
  ASSERT(braid_jobpool_stop(p, BRAID_FOREVER));
  ASSERT_EQ_INT(atomic_load(&cancelled), 0);
}

TEST(test_pthread_fail_netpoll_thread) {
  int fds[2];
  ASSERT_EQ_INT(pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
  threads_fail(true);
  errno = 0;
  braid_pollfd_t *pd = braid_pollfd_new(fds[0]);
  int err = errno;
  threads_fail(false);
  /* No poller thread: the registration fails, fd is still ours. */
  ASSERT_NULL(pd);
  ASSERT_NE_INT(err, 0);
  ASSERT_EQ_INT(braid__netpoll_count(), 0);
  ASSERT_EQ_INT(fcntl(fds[0], F_GETFD), FD_CLOEXEC);
  pd = braid_pollfd_new(fds[0]);
  ASSERT_NOT_NULL(pd);
  ASSERT_EQ_INT(braid__netpoll_count(), 1);
  ASSERT(braid_pollfd_close(pd));
  braid_pollfd_release(pd);
  close(fds[1]);
  braid__netpoll_shutdown();
  ASSERT_EQ_INT(braid__netpoll_count(), 0);
}

TEST_LIST {
  RUN(test_pthread_fail_provoked);
  RUN(test_pthread_fail_timerq);
  RUN(test_pthread_fail_jobpool);
  RUN(test_pthread_fail_netpoll_thread);
}
