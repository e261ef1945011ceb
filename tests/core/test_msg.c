/* test_msg.c -- messages, object refcounts and the error map (msg.h,
 * refcnt.h, err.h). */
#include <math.h>

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
  RUN(test_refcnt_ids_per_type);
  RUN(test_err_names);
  RUN(test_clock_deadline_after);
}
