/* test_msg.c -- messages, object refcounts and the error map (msg.h,
 * refcnt.h, err.h). */
#include <math.h>

#include "compiler.h"
#include "test.h"

TEST(test_msg_new_copies_bytes) {
  char buf[16] = "hello, braid";
  braid_msg_t *m = braid_msg_new(buf, sizeof buf, NULL, 0);
  ASSERT_NOT_NULL(m);
  ASSERT_EQ_UINT(m->m_len, sizeof buf);
  ASSERT_EQ_UINT(m->m_nhandles, 0);
  ASSERT_EQ_UINT(msg_rc(m), 1);
  memset(buf, 'x', sizeof buf);            /* the message holds a copy */
  ASSERT_EQ_STR((const char *)m->m_data, "hello, braid");
  braid_msg_release(m);
}

TEST(test_msg_new_empty) {
  braid_msg_t *m = braid_msg_new(NULL, 0, NULL, 0);
  ASSERT_NOT_NULL(m);
  ASSERT_EQ_UINT(m->m_len, 0);
  ASSERT_EQ_UINT(m->m_nhandles, 0);
  braid_msg_release(m);
}

TEST(test_msg_int_roundtrip) {
  int64_t vals[] = {0, 1, -1, INT64_MAX, INT64_MIN, 123456789};
  for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++)
    ASSERT_EQ_INT(msg_take_int(msg_int(vals[i])), vals[i]);
}

TEST(test_msg_retain_release) {
  braid_obj_t *h = test_obj_new();
  long destroyed = test_objs_destroyed_count();
  braid_msg_t *m = msg_int_h(7, h);
  for (int i = 0; i < 10; i++) braid_msg_retain(m);
  ASSERT_EQ_UINT(msg_rc(m), 11);
  for (int i = 0; i < 10; i++) braid_msg_release(m);
  ASSERT_EQ_UINT(msg_rc(m), 1);
  ASSERT_EQ_UINT(obj_rc(h), 2);            /* still held by m */
  braid_msg_release(m);
  ASSERT_EQ_UINT(obj_rc(h), 1);
  ASSERT_EQ_INT(test_objs_destroyed_count(), destroyed);
  braid_obj_release(h);
  ASSERT_EQ_INT(test_objs_destroyed_count(), destroyed + 1);
}

TEST(test_msg_release_null) {
  braid_msg_release(NULL);                 /* accepted and ignored */
}

TEST(test_msg_new_retains_handles) {
  braid_obj_t *h[3] = {test_obj_new(), test_obj_new(), test_obj_new()};
  long destroyed = test_objs_destroyed_count();
  int64_t v = 42;
  braid_msg_t *m = braid_msg_new(&v, sizeof v, h, 3);
  ASSERT_NOT_NULL(m);
  ASSERT_EQ_UINT(m->m_nhandles, 3);
  for (int i = 0; i < 3; i++) {
    ASSERT_EQ_PTR(m->m_handles[i], h[i]);
    ASSERT_EQ_UINT(obj_rc(h[i]), 2);
  }
  ASSERT_EQ_INT(msg_get_int(m), 42);
  /* The handle array must not overlap the bytes. */
  ASSERT((unsigned char *)m->m_handles >= m->m_data + m->m_len);
  ASSERT_EQ_UINT((uintptr_t)m->m_handles % sizeof(void *), 0);

  /* The same handle twice is two references. */
  braid_obj_t *twice[2] = {h[0], h[0]};
  braid_msg_t *m2 = braid_msg_new(NULL, 0, twice, 2);
  ASSERT_NOT_NULL(m2);
  ASSERT_EQ_UINT(obj_rc(h[0]), 4);

  braid_msg_release(m);
  for (int i = 0; i < 3; i++) ASSERT_EQ_UINT(obj_rc(h[i]), i == 0 ? 3 : 1);
  braid_msg_release(m2);
  ASSERT_EQ_UINT(obj_rc(h[0]), 1);
  for (int i = 0; i < 3; i++) braid_obj_release(h[i]);
  ASSERT_EQ_INT(test_objs_destroyed_count(), destroyed + 3);
}

/* A message is the only owner of a handle whose creator let go of it. */
TEST(test_msg_last_handle_reference) {
  long destroyed = test_objs_destroyed_count();
  braid_obj_t *h = test_obj_new();
  braid_msg_t *m = msg_int_h(1, h);
  braid_obj_release(h);
  ASSERT_EQ_UINT(obj_rc(h), 1);
  ASSERT_EQ_INT(test_objs_destroyed_count(), destroyed);
  braid_msg_release(m);
  ASSERT_EQ_INT(test_objs_destroyed_count(), destroyed + 1);
}

TEST(test_msg_alloc_set_handle) {
  long destroyed = test_objs_destroyed_count();
  braid_msg_t *m = braid_msg_alloc(5, 4);
  ASSERT_NOT_NULL(m);
  ASSERT_EQ_UINT(m->m_len, 5);
  ASSERT_EQ_UINT(m->m_nhandles, 4);
  ASSERT_EQ_UINT(msg_rc(m), 1);
  for (int i = 0; i < 4; i++) ASSERT_NULL(m->m_handles[i]);
  memcpy(m->m_data, "abcde", 5);
  ASSERT((unsigned char *)m->m_handles >= m->m_data + 5);
  ASSERT_EQ_UINT((uintptr_t)m->m_handles % sizeof(void *), 0);

  /* set_handle steals: slots 0 and 2 filled, 1 and 3 left NULL (a
   * message may be released half built). */
  braid_obj_t *a = test_obj_new(), *b = test_obj_new();
  braid_obj_retain(a);                     /* keep one to look at */
  braid_msg_set_handle(m, 0, a);
  braid_msg_set_handle(m, 2, b);
  ASSERT_EQ_UINT(obj_rc(a), 2);
  ASSERT_EQ_UINT(obj_rc(b), 1);
  ASSERT_EQ_PTR(m->m_handles[0], a);
  ASSERT_EQ_PTR(m->m_handles[2], b);
  ASSERT_EQ_INT(memcmp(m->m_data, "abcde", 5), 0);

  braid_msg_release(m);
  ASSERT_EQ_UINT(obj_rc(a), 1);
  ASSERT_EQ_INT(test_objs_destroyed_count(), destroyed + 1);   /* b */
  braid_obj_release(a);
  ASSERT_EQ_INT(test_objs_destroyed_count(), destroyed + 2);
}

TEST(test_msg_alloc_zero) {
  braid_msg_t *m = braid_msg_alloc(0, 0);
  ASSERT_NOT_NULL(m);
  ASSERT_EQ_UINT(m->m_len, 0);
  ASSERT_EQ_UINT(m->m_nhandles, 0);
  braid_msg_release(m);
  /* Sizes of every alignment remainder. */
  for (size_t len = 0; len < 3 * sizeof(void *); len++) {
    m = braid_msg_alloc(len, 2);
    ASSERT_NOT_NULL(m);
    memset(m->m_data, 0xab, len);
    ASSERT_NULL(m->m_handles[0]);
    ASSERT_NULL(m->m_handles[1]);
    ASSERT_EQ_UINT((uintptr_t)m->m_handles % sizeof(void *), 0);
    braid_msg_release(m);
  }
}

/* Sizes that cannot be represented fail cleanly (NULL, nothing retained)
 * instead of overflowing the size computation. */
TEST(test_msg_alloc_impossible_size) {
  ASSERT_NULL(braid_msg_alloc(SIZE_MAX, 0));
  ASSERT_NULL(braid_msg_alloc(SIZE_MAX - 3, 0));
  ASSERT_NULL(braid_msg_alloc(0, SIZE_MAX));
  ASSERT_NULL(braid_msg_alloc(0, SIZE_MAX / sizeof(void *) + 2));
  braid_obj_t *h = test_obj_new();
  ASSERT_NULL(braid_msg_new(NULL, SIZE_MAX, &h, 1));
  ASSERT_EQ_UINT(obj_rc(h), 1);
  braid_obj_release(h);
}

typedef struct {
  braid_msg_t *m;
  braid_obj_t *o;
  int iters;
} rc_arg_t;

static void *rc_worker(void *p) {
  rc_arg_t *a = p;
  for (int i = 0; i < a->iters; i++) {
    braid_msg_retain(a->m);
    braid_obj_retain(a->o);
    braid_msg_release(a->m);
    braid_obj_release(a->o);
  }
  return NULL;
}

/* Retains and releases from several threads at once never lose a count. */
TEST(test_msg_refcount_threads) {
  enum { NT = 8 };
  long destroyed = test_objs_destroyed_count();
  braid_obj_t *o = test_obj_new();
  rc_arg_t a = {msg_int_h(5, o), o, 20000};
  pthread_t t[NT];
  for (int i = 0; i < NT; i++) t[i] = test_spawn(rc_worker, &a);
  for (int i = 0; i < NT; i++) test_join(t[i]);
  ASSERT_EQ_UINT(msg_rc(a.m), 1);
  ASSERT_EQ_UINT(obj_rc(o), 2);
  braid_msg_release(a.m);
  braid_obj_release(o);
  ASSERT_EQ_INT(test_objs_destroyed_count(), destroyed + 1);
}

/* Handing the last reference to another thread: the releasing thread
 * frees what the creating thread wrote (acq_rel pairing; TSan checks it). */
static void *release_worker(void *p) {
  braid_msg_t *m = p;
  ASSERT_EQ_INT(msg_get_int(m), 99);
  braid_msg_release(m);
  return NULL;
}

TEST(test_msg_release_other_thread) {
  long destroyed = test_objs_destroyed_count();
  braid_obj_t *o = test_obj_new();
  for (int i = 0; i < 50; i++) {
    braid_msg_t *m = msg_int_h(99, o);
    braid_msg_retain(m);
    pthread_t t = test_spawn(release_worker, m);
    braid_msg_release(m);
    test_join(t);
  }
  ASSERT_EQ_UINT(obj_rc(o), 1);
  braid_obj_release(o);
  ASSERT_EQ_INT(test_objs_destroyed_count(), destroyed + 1);
}

/* msg.c's per-thread caches are on except under AddressSanitizer. */
#define MSG_CACHED (!BRAID_ASAN)

/* Messages of 400 bytes (a size class no earlier test uses), MAG = 16 in
 * msg.c: a thread that frees 32 hands 16 to the depot at its 32nd free. */
#define REUSE_N 32
#define REUSE_LEN 400
static braid_msg_t *reuse_made[REUSE_N];

static void *reuse_alloc_worker(void *p) {
  (void)p;
  for (int i = 0; i < REUSE_N; i++) {
    reuse_made[i] = braid_msg_alloc(REUSE_LEN, 0);
    ASSERT_NOT_NULL(reuse_made[i]);
    memset(reuse_made[i]->m_data, i, REUSE_LEN);
  }
  return NULL;
}

static void *reuse_free_worker(void *p) {
  (void)p;
  for (int i = 0; i < REUSE_N; i++) {
    ASSERT_EQ_INT(reuse_made[i]->m_data[REUSE_LEN - 1], i);
    braid_msg_release(reuse_made[i]);
  }
  return NULL;                              /* its cache is emptied at exit */
}

/* Counts the allocations that are exactly the blocks of the batch, in
 * the cache's order: the freeing thread's last 16 frees, newest first
 * (glibc's malloc, whose freed chunks merge, hands the region back in
 * address order instead). */
static void *reuse_take_worker(void *p) {
  int *reused = p;
  braid_msg_t *got[REUSE_N / 2];
  for (int i = 0; i < REUSE_N / 2; i++) {
    got[i] = braid_msg_alloc(REUSE_LEN, 0);
    ASSERT_NOT_NULL(got[i]);
    if (got[i] == reuse_made[REUSE_N - 1 - i]) ++*reused;
  }
  for (int i = 0; i < REUSE_N / 2; i++) braid_msg_release(got[i]);
  return NULL;
}

/* Memory freed on one thread is reused by another (the sender/receiver
 * pattern), whole batches at a time: a third thread's first 16
 * allocations all come from the batch the freeing thread handed over. */
TEST(test_msg_memory_moves_between_threads) {
  test_join(test_spawn(reuse_alloc_worker, NULL));
  test_join(test_spawn(reuse_free_worker, NULL));
  int reused = 0;
  test_join(test_spawn(reuse_take_worker, &reused));
#if MSG_CACHED
  ASSERT_EQ_INT(reused, REUSE_N / 2);
#else
  (void)reused;  /* ASan: plain malloc, whose reuse is its own business */
#endif
}

/* Producers and consumers on their own threads, messages of every size
 * class and past the largest (0 to 1500 bytes, 0 to 3 handles): each
 * arrives intact and every handle reference comes back. */
enum { PC_PAIRS = 2, PC_N = 20000, PC_Q = 64 };
typedef struct pcq {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  braid_msg_t *q[PC_Q];
  unsigned head, tail;
  braid_obj_t *obj;
  long bad, seen;
} pcq_t;

static size_t pc_len(int i) { return (size_t)(i * 37) % 1500; }

static void *pc_producer(void *p) {
  pcq_t *q = p;
  for (int i = 0; i < PC_N; i++) {
    size_t len = pc_len(i), nh = (size_t)i % 4;
    braid_msg_t *m = braid_msg_alloc(len, nh);
    ASSERT_NOT_NULL(m);
    for (size_t k = 0; k < len; k++) m->m_data[k] = (unsigned char)(i + k);
    for (size_t k = 0; k < nh; k++) {
      braid_obj_retain(q->obj);
      m->m_handles[k] = q->obj;
    }
    m->m_tag = (uint32_t)i;
    pthread_mutex_lock(&q->mu);
    while (q->tail - q->head == PC_Q) pthread_cond_wait(&q->cv, &q->mu);
    q->q[q->tail++ % PC_Q] = m;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
  }
  return NULL;
}

static void *pc_consumer(void *p) {
  pcq_t *q = p;
  for (int i = 0; i < PC_N; i++) {
    pthread_mutex_lock(&q->mu);
    while (q->tail == q->head) pthread_cond_wait(&q->cv, &q->mu);
    braid_msg_t *m = q->q[q->head++ % PC_Q];
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    int j = (int)m->m_tag;
    size_t len = pc_len(j);
    bool ok = j == i && m->m_len == len && m->m_nhandles == (uint32_t)(j % 4);
    for (size_t k = 0; ok && k < len; k++) ok = m->m_data[k] == (unsigned char)(j + k);
    if (!ok) q->bad++;
    q->seen++;
    braid_msg_release(m);
  }
  return NULL;
}

TEST(test_msg_memory_producers_consumers) {
  pcq_t q[PC_PAIRS];
  pthread_t t[2 * PC_PAIRS];
  for (int i = 0; i < PC_PAIRS; i++) {
    memset(&q[i], 0, sizeof q[i]);
    pthread_mutex_init(&q[i].mu, NULL);
    pthread_cond_init(&q[i].cv, NULL);
    q[i].obj = test_obj_new();
    t[2 * i] = test_spawn(pc_producer, &q[i]);
    t[2 * i + 1] = test_spawn(pc_consumer, &q[i]);
  }
  for (int i = 0; i < 2 * PC_PAIRS; i++) test_join(t[i]);
  for (int i = 0; i < PC_PAIRS; i++) {
    ASSERT_EQ_INT(q[i].seen, PC_N);
    ASSERT_EQ_INT(q[i].bad, 0);
    ASSERT_EQ_UINT(obj_rc(q[i].obj), 1);   /* every handle released */
    braid_obj_release(q[i].obj);
    pthread_mutex_destroy(&q[i].mu);
    pthread_cond_destroy(&q[i].cv);
  }
}

static long other_destroyed;
static void other_destroy(braid_obj_t *o) {
  other_destroyed++;
  braid_obj_fini(o);
  free(o);
}
static braid_objtype_t other_type = {"other", other_destroy, 0};

/* Ids count 1, 2, ... per type. */
TEST(test_refcnt_ids_per_type) {
  braid_obj_t *a = malloc(sizeof *a), *b = malloc(sizeof *b), *c = malloc(sizeof *c);
  ASSERT(a && b && c);
  braid_obj_init(a, &other_type);
  braid_obj_init(b, &other_type);
  braid_obj_t *t = test_obj_new();          /* another type: own sequence */
  braid_obj_init(c, &other_type);
  ASSERT_EQ_UINT(a->o_id, 1);
  ASSERT_EQ_UINT(b->o_id, 2);
  ASSERT_EQ_UINT(c->o_id, 3);
  ASSERT_EQ_PTR(a->o_type, &other_type);
  ASSERT_EQ_UINT(obj_rc(a), 1);
  ASSERT_EQ_STR(a->o_type->ot_name, "other");
  braid_obj_lock(a);                        /* the mutex is usable */
  braid_obj_unlock(a);
  braid_obj_release(a);
  braid_obj_release(b);
  braid_obj_release(c);
  braid_obj_release(t);
  ASSERT_EQ_INT(other_destroyed, 3);
}

TEST(test_err_names) {
  ASSERT_EQ_STR(braid_err_name(BRAID_ECLOSED), "ECLOSED");
  ASSERT_EQ_STR(braid_err_name(BRAID_ETIMEDOUT), "ETIMEDOUT");
  ASSERT_EQ_STR(braid_err_name(BRAID_ENOENT), "ENOENT");
  ASSERT_EQ_STR(braid_err_name(0), "OK");
  ASSERT_EQ_STR(braid_err_name(-1000), "UNKNOWN");
  ASSERT_EQ_STR(braid_strerror(BRAID_ECLOSED), "closed");
  ASSERT_EQ_STR(braid_strerror(BRAID_ETIMEDOUT), "timeout");
  ASSERT_EQ_STR(braid_strerror(BRAID_ESETTLED), "already settled");
  ASSERT_EQ_STR(braid_strerror(12345), "unknown error");
  /* Every code in the map is distinct and negative. */
  int codes[] = {
#define XX(name, val, msg) BRAID_##name,
      BRAID_ERRNO_MAP(XX)
#undef XX
  };
  size_t n = sizeof codes / sizeof codes[0];
  for (size_t i = 0; i < n; i++) {
    ASSERT_LT_INT(codes[i], 0);
    ASSERT(strcmp(braid_strerror(codes[i]), "unknown error") != 0);
    for (size_t j = i + 1; j < n; j++) ASSERT_NE_INT(codes[i], codes[j]);
  }
}

TEST(test_clock_deadline_after) {
  int64_t before = braid_now_ns();
  int64_t d = braid_deadline_after(0.5);
  int64_t after = braid_now_ns();
  ASSERT_GE_INT(d, before + 500000000);
  ASSERT_LE_INT(d, after + 500000000);
  ASSERT_LE_INT(braid_deadline_after(-1), braid_now_ns());
  ASSERT_LE_INT(braid_deadline_after(NAN), braid_now_ns());
  ASSERT_EQ_INT(braid_deadline_after(1e30), BRAID_FOREVER);
  ASSERT_EQ_INT(braid_deadline_after(INFINITY), BRAID_FOREVER);
  ASSERT_GE_INT(braid_now_ns(), before);   /* monotonic */
}

/* Immediate messages: the integer comes back at both bounds and at zero,
 * retain and release leave it alone, and none is NULL or a real address. */
TEST(test_msg_immediates) {
  const int64_t vals[] = { 0, 1, -1, 42, -42, BRAID_MSG_IMM_MAX, BRAID_MSG_IMM_MIN,
                           BRAID_MSG_IMM_MAX - 1, BRAID_MSG_IMM_MIN + 1 };
  for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
    braid_msg_t *m = braid_msg_imm(vals[i]);
    ASSERT(m != NULL);
    ASSERT(braid_msg_is_imm(m));
    ASSERT_EQ_INT(braid_msg_imm_value(m), vals[i]);
    braid_msg_retain(m);
    braid_msg_release(m);
    braid_msg_release(m);
    ASSERT_EQ_INT(braid_msg_imm_value(m), vals[i]);
  }
  ASSERT_EQ_INT(BRAID_MSG_IMM_MAX, (int64_t)(UINTPTR_MAX >> 2));
  braid_msg_t *real = braid_msg_new("x", 1, NULL, 0);
  ASSERT(!braid_msg_is_imm(real));
  braid_msg_release(real);
}

TEST_LIST {
  RUN(test_msg_new_copies_bytes);
  RUN(test_msg_new_empty);
  RUN(test_msg_int_roundtrip);
  RUN(test_msg_retain_release);
  RUN(test_msg_release_null);
  RUN(test_msg_immediates);
  RUN(test_msg_new_retains_handles);
  RUN(test_msg_last_handle_reference);
  RUN(test_msg_alloc_set_handle);
  RUN(test_msg_alloc_zero);
  RUN(test_msg_alloc_impossible_size);
  RUN(test_msg_refcount_threads);
  RUN(test_msg_release_other_thread);
  RUN(test_msg_memory_moves_between_threads);
  RUN(test_msg_memory_producers_consumers);
  RUN(test_refcnt_ids_per_type);
  RUN(test_err_names);
  RUN(test_clock_deadline_after);
}
