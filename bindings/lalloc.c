/*
 * lalloc.c -- the allocator of braid's own Lua states (shards, the
 * blocking pool's states): size-class free lists per state.
 *
 * Design notes
 *
 * Why.  A received message becomes new Lua objects (a table, its node
 * array, a long string) that the GC frees a moment later: on the receiving
 * worker of bench/nats.lua's publish row, glibc's malloc, free and realloc
 * behind luaL_newstate's allocator were about a sixth of the instructions
 * (callgrind, with a Lua built with symbols).  Lua tells its allocator the
 * old size of every block it frees or resizes, so a block needs no header:
 * a free list per size class, pushed and popped in a few instructions,
 * serves every small block.
 *
 * Ownership.  One arena per lua_State, used only by the thread that holds
 * the state (a shard state moves between workers under its shard's lock,
 * which orders the accesses; a pool state never moves), so no lock.  Small
 * blocks (up to SMALL_MAX bytes) come from CHUNK-byte chunks and go back to
 * their class's list; nothing is returned to the system before
 * braid__close_state, which frees the chunks.  Larger blocks are malloc's.
 *
 * Classes: 16-byte steps up to 256 bytes, 64-byte steps up to SMALL_MAX.
 * A block is used by the class of the size Lua gives, so a shrink inside a
 * class keeps the block in place, and a shrink that cannot get a block of
 * the smaller class (out of memory: Lua assumes a shrink never fails)
 * keeps the larger block, which later goes to the smaller class's list:
 * wasted room, never a wrong size.
 *
 * Sanitizers.  Under AddressSanitizer every block is malloc's, so that
 * use-after-free and overflows of Lua objects are still found.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "compiler.h"
#include "lruntime.h"

#define ARENA_POOL (!BRAID_ASAN)

#define SMALL_MAX 1024
#define NCLASSES (SMALL_MAX / 16)
#define CHUNK (64 * 1024)

typedef struct freeblk { struct freeblk *next; } freeblk_t;

typedef struct chunk {
  struct chunk *next;
  /* the blocks follow, 16-byte aligned */
} chunk_t;

#define CHUNK_HEAD 16           /* sizeof(chunk_t) rounded up to the alignment */

typedef struct arena {
  freeblk_t *free[NCLASSES];    /* per class */
  chunk_t *chunks;              /* every chunk, for braid__close_state */
  unsigned char *bump, *end;    /* the unused room of the newest chunk */
} arena_t;

static inline unsigned class_of(size_t n) {
  return (unsigned)((n + 15) >> 4) - 1;
}

static inline size_t class_size(unsigned c) {
  return (size_t)(c + 1) << 4;
}

static void *small_alloc(arena_t *a, unsigned c) {
  freeblk_t *b = a->free[c];
  if (b) {
    a->free[c] = b->next;
    return b;
  }
  size_t sz = class_size(c);
  if ((size_t)(a->end - a->bump) < sz) {
    /* The rest of the old chunk goes to the lists of the classes it fits. */
    while (a->bump && (size_t)(a->end - a->bump) >= 16) {
      size_t left = (size_t)(a->end - a->bump);
      unsigned lc = class_of(left > SMALL_MAX ? SMALL_MAX : left);
      if (class_size(lc) > left) lc--;
      freeblk_t *r = (freeblk_t *)a->bump;
      r->next = a->free[lc];
      a->free[lc] = r;
      a->bump += class_size(lc);
    }
    chunk_t *ch = malloc(CHUNK);
    if (ch == NULL) return NULL;
    ch->next = a->chunks;
    a->chunks = ch;
    a->bump = (unsigned char *)ch + CHUNK_HEAD;
    a->end = (unsigned char *)ch + CHUNK;
  }
  void *p = a->bump;
  a->bump += sz;
  return p;
}

static inline void small_free(arena_t *a, void *p, unsigned c) {
  freeblk_t *b = p;
  b->next = a->free[c];
  a->free[c] = b;
}

/* Every case of lua_Alloc (osize is a type tag when ptr is NULL): the rare
 * ones (a list to refill, a resize, a large block) out of line, so that
 * arena_alloc's common cases save no registers and call nothing. */
static BRAID_NOINLINE void *arena_general(arena_t *a, void *ptr, size_t osize, size_t nsize) {
  if (ptr == NULL) osize = 0;
  if (nsize == 0) {
    if (ptr == NULL) return NULL;
    if (osize <= SMALL_MAX) small_free(a, ptr, class_of(osize));
    else free(ptr);
    return NULL;
  }
  if (osize > SMALL_MAX && nsize > SMALL_MAX) return realloc(ptr, nsize);
  if (nsize <= SMALL_MAX) {
    unsigned nc = class_of(nsize);
    if (ptr != NULL && osize <= SMALL_MAX && class_of(osize) == nc) return ptr;
    void *q = small_alloc(a, nc);
    if (q == NULL) return nsize <= osize ? ptr : NULL;   /* a shrink never fails */
    if (ptr != NULL) {
      memcpy(q, ptr, osize < nsize ? osize : nsize);
      if (osize <= SMALL_MAX) small_free(a, ptr, class_of(osize));
      else free(ptr);
    }
    return q;
  }
  /* small (or nothing) to large */
  void *q = malloc(nsize);
  if (q == NULL) return NULL;
  if (ptr != NULL) {
    memcpy(q, ptr, osize);
    small_free(a, ptr, class_of(osize));
  }
  return q;
}

/* lua_Alloc.  The common cases inline: a new small block from its class's
 * list, a small block freed, a NULL freed (callgrind, the tables row on
 * one worker: 20 allocator calls per message, each spent ~19 instructions
 * saving and restoring registers for the calls of the rare cases). */
static void *arena_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  arena_t *a = ud;
  if (ptr == NULL) {
    if (nsize - 1 < SMALL_MAX) {                      /* 1 .. SMALL_MAX */
      unsigned c = class_of(nsize);
      freeblk_t *b = a->free[c];
      if (b) {
        a->free[c] = b->next;
        return b;
      }
    } else if (nsize == 0) {
      return NULL;                                    /* Lua frees empty parts as NULL */
    }
  } else if (nsize == 0 && osize <= SMALL_MAX) {      /* osize > 0: the block's size */
    small_free(a, ptr, class_of(osize));
    return NULL;
  }
  return arena_general(a, ptr, osize, nsize);
}

static void *plain_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud;
  (void)osize;
  if (nsize == 0) {
    free(ptr);
    return NULL;
  }
  return realloc(ptr, nsize);
}

/* What luaL_newstate installs, which lua_newstate does not: a panic
 * function that prints the error, and warnings off until "@on". */
static int panic(lua_State *L) {
  const char *msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
  fprintf(stderr, "PANIC: unprotected error in call to Lua API (%s)\n",
          msg ? msg : "error object is not a string");
  return 0;
}

static void warn_off(void *ud, const char *msg, int tocont);
static void warn_cont(void *ud, const char *msg, int tocont);

static int warn_control(lua_State *L, const char *msg, int tocont) {
  if (tocont || *msg++ != '@') return 0;
  if (strcmp(msg, "off") == 0) lua_setwarnf(L, warn_off, L);
  else if (strcmp(msg, "on") == 0) lua_setwarnf(L, warn_cont, L);
  return 1;
}

static void warn_off(void *ud, const char *msg, int tocont) {
  warn_control((lua_State *)ud, msg, tocont);
}

static void warn_more(void *ud, const char *msg, int tocont);

static void warn_cont(void *ud, const char *msg, int tocont) {
  lua_State *L = ud;
  if (warn_control(L, msg, tocont)) return;
  fputs("Lua warning: ", stderr);
  warn_more(ud, msg, tocont);
}

static void warn_more(void *ud, const char *msg, int tocont) {
  lua_State *L = ud;
  fputs(msg, stderr);
  if (tocont) {
    lua_setwarnf(L, warn_more, L);
  } else {
    fputs("\n", stderr);
    lua_setwarnf(L, warn_cont, L);
  }
}

lua_State *braid__new_state(void) {
  lua_State *L;
  if (!ARENA_POOL) {
    L = lua_newstate(plain_alloc, NULL);
  } else {
    arena_t *a = calloc(1, sizeof *a);
    if (a == NULL) return NULL;
    L = lua_newstate(arena_alloc, a);
    if (L == NULL) free(a);
  }
  if (L == NULL) return NULL;
  lua_atpanic(L, panic);
  lua_setwarnf(L, warn_off, L);
  return L;
}

void braid__close_state(lua_State *L) {
  void *ud = NULL;
  lua_Alloc f = lua_getallocf(L, &ud);
  lua_close(L);
  if (f != arena_alloc) return;
  arena_t *a = ud;
  for (chunk_t *c = a->chunks, *next; c; c = next) {
    next = c->next;
    free(c);
  }
  free(a);
}
