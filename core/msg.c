/*
 * msg.c -- immutable refcounted messages (see msg.h).
 *
 * Design notes
 *
 * Memory.  A message is mostly allocated on one thread (the sender's) and
 * freed on another (the receiver's, which drops the last reference).
 * glibc's malloc pays for that pattern: the freeing thread's tcache fills
 * while the allocating thread's runs dry, and the two meet at the arena's
 * lock on every few messages.  Measured on bench/runtime.lua's tables row
 * (a producer and a consumer on two workers, one ~130-byte message each),
 * jemalloc preloaded moved it from 0.48-0.63 to 0.60-0.66 M msg/s.
 *
 * So messages of up to MSG_SMALL_MAX bytes (header included) come from
 * per-thread caches of free blocks, one per size class, traded with a
 * global depot in batches of MAG blocks (Bonwick's magazines): a free goes
 * to the freeing thread's cache, and a cache holding 2 * MAG blocks hands
 * MAG of them to its class's depot; an allocation takes from the thread's
 * cache, and an empty cache takes a whole batch from the depot.  So a
 * producer and a consumer on two threads trade one batch per MAG messages,
 * under the depot's lock, and touch no shared line per message.  A class
 * is fixed by the message's size (msg_bytes), so a block needs no header:
 * the release computes the same class the allocation did.
 *
 * Bounds: a thread caches at most 2 * MAG blocks per class, the depot at
 * most DEPOT_MAX batches per class; beyond that a block goes back to free.
 * A thread's cache is emptied when the thread exits (a pthread key's
 * destructor: workers, pool threads and a C host's own threads alike);
 * frees after that (other keys' destructors) go straight to free.  The
 * main thread's cache and the depot are never freed (the process's exit
 * returns them).
 *
 * Under AddressSanitizer every message is malloc's and free's, so that a
 * use after release is still found (as lalloc.c does for Lua objects).
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "compiler.h"
#include "msg.h"
#include "tls.h"

#ifndef MSG_CACHE
#define MSG_CACHE (!BRAID_ASAN)
#endif

enum {
  MSG_NCLASS = 5,               /* 64, 128, 256, 512, 1024 bytes */
  MSG_SMALL_MAX = 1024,
  MAG = 16,                     /* blocks per batch */
  DEPOT_MAX = 16                /* batches per class in the depot */
};

/* Handles follow the data, aligned for a pointer. */
static size_t handles_offset(size_t len) {
  return (len + sizeof(void *) - 1) & ~(sizeof(void *) - 1);
}

/* The bytes of a message of len bytes and nhandles handles (no overflow:
 * braid_msg_alloc checked it). */
static size_t msg_bytes(size_t len, size_t nhandles) {
  return sizeof(braid_msg_t) + handles_offset(len) + nhandles * sizeof(braid_obj_t *);
}

#if MSG_CACHE

/* A free block; a batch is MAG of them linked by fb_next, its first block
 * linking the depot's next batch by fb_batch. */
typedef struct fblk {
  struct fblk *fb_next;
  struct fblk *fb_batch;
} fblk_t;

typedef struct tcache {
  fblk_t *tc_head[MSG_NCLASS];
  unsigned tc_n[MSG_NCLASS];
  int tc_state;                 /* TC_NEW, TC_LIVE (destructor armed), TC_DEAD */
} tcache_t;

enum { TC_NEW, TC_LIVE, TC_DEAD };

/* The cache itself is a general-dynamic variable (64 bytes: too many for
 * the static TLS surplus, core/tls.h); the hot paths reach it through an
 * initial-exec pointer set at the thread's first message. */
static _Thread_local tcache_t tls_cache_store;
static _Thread_local BRAID_TLS_HOT tcache_t *tls_cache;

static inline tcache_t *my_cache(void) {
  tcache_t *tc = tls_cache;
  if (tc == NULL) tls_cache = tc = &tls_cache_store;
  return tc;
}

static struct depot {
  _Alignas(64) pthread_mutex_t d_mtx;   /* Protects: d_batches, d_n */
  fblk_t *d_batches;
  /* Written under d_mtx; read without it (relaxed) as a hint, so that a
   * thread that only allocates (a producer whose messages are freed
   * elsewhere, and not yet) does not lock an empty depot per message. */
  _Atomic unsigned d_n;
} depot[MSG_NCLASS] = {                  /* a line (or two) per class */
  { .d_mtx = PTHREAD_MUTEX_INITIALIZER }, { .d_mtx = PTHREAD_MUTEX_INITIALIZER },
  { .d_mtx = PTHREAD_MUTEX_INITIALIZER }, { .d_mtx = PTHREAD_MUTEX_INITIALIZER },
  { .d_mtx = PTHREAD_MUTEX_INITIALIZER },
};

static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;
static bool cache_key_ok;

static inline int class_of(size_t bytes) {
  if (bytes <= 64) return 0;
  if (bytes > MSG_SMALL_MAX) return -1;
  /* 65..128 -> 1, 129..256 -> 2, ... */
  return 64 - __builtin_clzll((unsigned long long)(bytes - 1)) - 6;
}

static inline size_t class_size(int c) { return (size_t)64 << c; }

static void free_list(fblk_t *b) {
  while (b) {
    fblk_t *next = b->fb_next;
    free(b);
    b = next;
  }
}

/* The key's destructor: the exiting thread's blocks go back to free. */
static void cache_exit(void *arg) {
  tcache_t *tc = arg;
  for (int c = 0; c < MSG_NCLASS; c++) {
    free_list(tc->tc_head[c]);
    tc->tc_head[c] = NULL;
    tc->tc_n[c] = 0;
  }
  tc->tc_state = TC_DEAD;
}

static void cache_key_init(void) {
  cache_key_ok = pthread_key_create(&cache_key, cache_exit) == 0;
}

/* Arms the destructor of this thread's cache; false if it cannot be (the
 * thread then uses malloc and free only). */
static bool cache_arm(tcache_t *tc) {
  BRAID_PCHECK(pthread_once(&cache_once, cache_key_init));
  if (!cache_key_ok || pthread_setspecific(cache_key, tc) != 0) {
    tc->tc_state = TC_DEAD;
    return false;
  }
  tc->tc_state = TC_LIVE;
  return true;
}

static void *block_alloc(int c) {
  tcache_t *tc = my_cache();
  fblk_t *b = tc->tc_head[c];
  struct depot *d = &depot[c];
  if (b == NULL && tc->tc_state != TC_DEAD &&
      atomic_load_explicit(&d->d_n, memory_order_relaxed) > 0) {
    BRAID_PCHECK(pthread_mutex_lock(&d->d_mtx));
    b = d->d_batches;
    if (b) {
      d->d_batches = b->fb_batch;
      atomic_store_explicit(&d->d_n, atomic_load_explicit(&d->d_n, memory_order_relaxed) - 1,
                            memory_order_relaxed);
    }
    BRAID_PCHECK(pthread_mutex_unlock(&d->d_mtx));
    if (b) {
      /* Blocks taken before the destructor is armed would be lost at
       * thread exit: arm it first. */
      if (tc->tc_state == TC_NEW && !cache_arm(tc)) {
        free_list(b);
        b = NULL;
      } else {
        tc->tc_n[c] = MAG;
      }
    }
  }
  if (b == NULL) return malloc(class_size(c));
  tc->tc_head[c] = b->fb_next;
  tc->tc_n[c]--;
  return b;
}

static void block_free(void *p, int c) {
  tcache_t *tc = my_cache();
  if (tc->tc_state != TC_LIVE && (tc->tc_state == TC_DEAD || !cache_arm(tc))) {
    free(p);
    return;
  }
  fblk_t *b = p;
  b->fb_next = tc->tc_head[c];
  tc->tc_head[c] = b;
  if (++tc->tc_n[c] < 2 * MAG) return;
  /* Full: the newest MAG blocks become a batch for the depot. */
  fblk_t *last = b;
  for (int i = 1; i < MAG; i++) last = last->fb_next;
  tc->tc_head[c] = last->fb_next;
  tc->tc_n[c] -= MAG;
  last->fb_next = NULL;
  struct depot *d = &depot[c];
  BRAID_PCHECK(pthread_mutex_lock(&d->d_mtx));
  unsigned n = atomic_load_explicit(&d->d_n, memory_order_relaxed);
  bool kept = n < DEPOT_MAX;
  if (kept) {
    b->fb_batch = d->d_batches;
    d->d_batches = b;
    atomic_store_explicit(&d->d_n, n + 1, memory_order_relaxed);
  }
  BRAID_PCHECK(pthread_mutex_unlock(&d->d_mtx));
  if (!kept) free_list(b);
}

static void *msg_mem_alloc(size_t bytes) {
  int c = class_of(bytes);
  return c < 0 ? malloc(bytes) : block_alloc(c);
}

static void msg_mem_free(void *p, size_t bytes) {
  int c = class_of(bytes);
  if (c < 0) free(p);
  else block_free(p, c);
}

#else

static void *msg_mem_alloc(size_t bytes) { return malloc(bytes); }
static void msg_mem_free(void *p, size_t bytes) { (void)bytes; free(p); }

#endif

braid_msg_t *braid_msg_alloc(size_t len, size_t nhandles) {
  if (nhandles > UINT32_MAX) return NULL;
  size_t off = handles_offset(len);
  if (off < len || nhandles > (SIZE_MAX - sizeof(braid_msg_t) - off) / sizeof(void *))
    return NULL;
  braid_msg_t *m = msg_mem_alloc(msg_bytes(len, nhandles));
  if (m == NULL) return NULL;
  atomic_init(&m->m_rc, 1);
  m->m_len = len;
  m->m_nhandles = (uint32_t)nhandles;
  m->m_tag = 0;
  m->m_handles = (braid_obj_t **)(m->m_data + off);
  for (size_t i = 0; i < nhandles; i++) m->m_handles[i] = NULL;
  return m;
}

braid_msg_t *braid_msg_new(const void *data, size_t len,
                           braid_obj_t *const *handles, size_t nhandles) {
  braid_msg_t *m = braid_msg_alloc(len, nhandles);
  if (m == NULL) return NULL;
  if (len) memcpy(m->m_data, data, len);
  for (size_t i = 0; i < nhandles; i++) {
    braid_obj_retain(handles[i]);
    m->m_handles[i] = handles[i];
  }
  return m;
}

void braid_msg_release(braid_msg_t *m) {
  if (m == NULL || braid_msg_is_imm(m)) return;
  /* acq_rel: see braid_obj_release. */
  if (atomic_fetch_sub_explicit(&m->m_rc, 1, memory_order_acq_rel) != 1) return;
  for (uint32_t i = 0; i < m->m_nhandles; i++)
    if (m->m_handles[i]) braid_obj_release(m->m_handles[i]);
  msg_mem_free(m, msg_bytes(m->m_len, m->m_nhandles));
}
