/*
 * lcodec.c -- Lua values <-> messages (see lbraid.h and API.md, "Values
 * that cross threads").
 *
 * Design notes
 *
 * Encoding walks the values once, depth first, appending tagged records to
 * a growable scratch buffer; then one braid_msg_alloc(len, nhandles), one
 * memcpy, and a reference to each handle.  Nothing is retained before the
 * walk has succeeded, so an untransferable value raises with nothing to
 * undo: the scratch memory belongs to a per-lua_State userdata (the "codec
 * state", in the registry; each worker thread owns exactly one state, so
 * this is per thread too) and survives the longjmp.  A message of scalars
 * only (an integer, a string, `true, 42`) skips the scratch buffer: its
 * size is known up front and it is written straight into the message.
 *
 * Wire format: wire.h defines it and holds its only writer and reader;
 * lcvalue.c (C values) uses the same ones.  This file walks Lua values and
 * builds them; it never touches the bytes of a record itself.
 *
 * Objects (tables, Lua functions, handles) get ordinals and T_REF records
 * as wire.h says; the decoder keeps only the shared objects (F_SHARED) in
 * its refs table.  An object is registered before
 * its children are encoded or decoded, so cycles work, including a
 * function that is its own upvalue (a recursive local function).
 *
 * Modules travel by name.  A reverse map (object -> module name [, key]) of
 * package.loaded and the C functions in its tables is built lazily per
 * lua_State.  To notice modules loaded later without scanning package.loaded
 * at every encode, the codec puts a metatable on package.loaded (when it has
 * none) whose __newindex (called by require and luaL_requiref for a new
 * name) marks the map stale.  A C function that is not in the map forces
 * one rebuild per encode before it is declared untransferable, which also
 * catches a module replaced in place.
 *
 * Paths in error messages.  root names the values: "args" and "results"
 * are always indexed (args[1], args[2], ...); any other root names a
 * single value as itself ("value", "value[2].conn") and several values as
 * root[i].  The root "fn" with one value is the function of a task: its
 * own upvalues read `upvalue 'db'` and deeper values `upvalue 'db'.conn`.
 * Elsewhere an upvalue reads `value.handler upvalue 'db'`.  A failure inside
 * a table key reads `value.t (in a key)`.
 *
 * Limits and trust.  Neither walk recurses on the C stack: each keeps its
 * own stack of open tables and functions (the encoder's in the scratch, the
 * decoder's on the C stack up to DEC_LOCAL_FRAMES and then in a userdata),
 * so nesting is bounded by the Lua stack (two slots per level, about
 * LUAI_MAXSTACK / 2 levels); deeper raises "braid: cannot transfer table
 * at <path> (nested too deep)".  The decoder bounds-checks every read and
 * raises "braid: corrupt message" for a truncated or malformed message,
 * but it cannot verify the bytecode inside a T_FUNC record (Lua has no
 * verifier): messages are only ever built by this encoder, in this
 * process.
 *
 * Re-entrancy.  No Lua code runs during an encode, except a finalizer
 * called from an allocation or a metamethod reached through
 * braid__tohandle; if such code encodes again, the inner encode sees
 * cs_busy and uses a private scratch.  Decoding needs no scratch (it uses
 * the codec state's cache of short strings, "Short strings" below) and may
 * run require().
 */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compiler.h"
#include "lbraid.h"
#include "tls.h"

#if defined(__GNUC__)
#define NORETURN __attribute__((noreturn))
#else
#define NORETURN
#endif

/* lua_error and luaL_error are not declared noreturn. */
#define UNREACHABLE() abort()

/* Raises a message with no position prefix (luaL_error would add one when
 * level 1 is a Lua function). */
NORETURN static void codec_raise(lua_State *L, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  lua_error(L);
  UNREACHABLE();
}

/* ------------------------------------------------------------------------ */
/* Format                                                                    */

#include "wire.h"

/* Scratch memory above these sizes is freed after an encode instead of
 * being kept for the next one. */
#define KEEP_BUF (1024 * 1024)
#define KEEP_SEEN 4096
#define KEEP_HANDLES 1024
#define KEEP_FRAMES 1024

#define SMALL_SEEN 8              /* linear scan up to this many objects */

/* ------------------------------------------------------------------------ */
/* Per-state scratch and the module map                                      */

/* An object (table, Lua function, handle) or an upvalue seen by the
 * encoder.  For an upvalue, ord/off are those of its function. */
typedef struct seen {
  const void *sn_p;             /* lua_topointer or lua_upvalueid */
  uint32_t sn_gen;              /* hash slots: live iff == scratch gen */
  uint32_t sn_ord;              /* object ordinal */
  uint32_t sn_up;               /* 0 for an object, else upvalue number */
  size_t sn_off;                /* offset of the object's tag byte in buf */
} seen_t;

enum { PF_INDEX, PF_KEY, PF_INKEY, PF_UPVAL };

/* An open table or function of the encoder's walk (the walk keeps its own
 * stack of these instead of recursing, so nesting is bounded by the Lua
 * stack, not the C stack).  The pf_ fields say where the child being
 * encoded sits, for error paths. */
typedef struct eframe {
  int ef_func;                  /* a function (else a table) */
  int ef_obj;                   /* stack index of the table or function */
  int ef_k;                     /* table: key slot (value at ef_k + 1);
                                   function: slot of the current upvalue */
  int ef_valnext;               /* table: the key is done, the value is next */
  int ef_inarray;               /* table: keys have run 1, 2, 3, ... so far */
  uint32_t ef_narr, ef_nhash;   /* table: counts written so far */
  uint32_t ef_ord;              /* function: its ordinal */
  int ef_up;                    /* function: current upvalue number */
  size_t ef_off;                /* offset of the tag byte in the buffer */
  size_t ef_nupoff;             /* function: offset of its u8 nups */
  /* A table read in place (see "Tables read in place"): */
  const void *ef_tab;           /* the Table, or NULL: read with lua_next */
  const void *ef_arr, *ef_node; /* its parts when opened: a change raises */
  unsigned ef_asize, ef_nsize;  /* their sizes */
  unsigned ef_pos;              /* the next slot: array, then nodes */
  int ef_pushed;                /* a key and value sit at ef_k, ef_k + 1 */
  int pf_kind;                  /* PF_*: what the child is */
  lua_Integer pf_i;             /* PF_INDEX: the index */
  const char *pf_name;          /* PF_UPVAL: the upvalue's name */
} eframe_t;

typedef struct scratch {
  braid_wbuf_t s_b;             /* records being built */
  braid_obj_t **s_hv;           /* handles met (borrowed until the end) */
  size_t s_nh, s_hcap;
  seen_t s_small[SMALL_SEEN];   /* the first objects, scanned linearly */
  int s_nsmall;
  int s_usehash;                /* more than SMALL_SEEN: s_hash holds all */
  seen_t *s_hash;               /* open addressing, power-of-2 size */
  size_t s_hashcap, s_hcount;
  uint32_t s_gen;               /* bumped per encode: clears s_hash in O(1) */
  eframe_t *s_frames;           /* the walk's open tables and functions */
  size_t s_fcap;
} scratch_t;

/* An entry of the module map. */
typedef struct modent {
  const void *me_p;             /* the module table or C function; NULL: free */
  const char *me_name;          /* module name (anchored in the uservalue) */
  const char *me_key;           /* field name, or NULL for the module itself */
  uint32_t me_namelen, me_keylen;
} modent_t;

/* The decoder's cache of short strings (see "Short strings" below): sets
 * of two strings and one candidate, 64 bytes a set. */
#define SCACHE_BITS 7
#define SCACHE_SETS (1u << SCACHE_BITS)
#define SCACHE_MAXLEN 16

typedef struct sset {
  uint64_t ss_a[2], ss_b[2];    /* the two strings' words (str_words) */
  uint64_t ss_ga, ss_gb;        /* the candidate's words */
  int ss_ref[2];                /* each way's registry reference, or 0 */
  uint8_t ss_len[2];            /* 0: the way is empty */
  uint8_t ss_glen;              /* 0: no candidate */
  uint8_t ss_victim;            /* the way the next promotion replaces */
} sset_t;
_Static_assert(sizeof(sset_t) == 64, "a set of the string cache is 64 bytes");

/* The decoder's cache of loaded functions (see "Loaded functions" below):
 * sets of two ways. */
#define FCACHE_BITS 5
#define FCACHE_SETS (1u << FCACHE_BITS)
#define FCACHE_MAXDUMP 8192

typedef struct fent {
  uint64_t fe_hash;             /* of the dump */
  size_t fe_len;                /* 0: the way is empty */
  unsigned char *fe_dump;       /* a copy of the dump (malloc) */
  int fe_ref;                   /* registry reference of the copier; 0: seen
                                   once, no copier yet; -1: cannot have one */
  bool fe_recent;               /* hit since a miss last passed it */
} fent_t;

/* The codec state of one lua_State: a full userdata in the registry whose
 * uservalue 1 anchors every object and string the module map points to. */
typedef struct cstate {
  scratch_t cs_s;               /* the encoder's scratch */
  int cs_busy;                  /* an encode is using cs_s (a finalizer may
                                   encode while another encode runs) */
  /* The module map, in two parts: [0] the tables, [1] the C functions
   * (each open addressing, a power-of-2 size, or NULL).  Every table sent
   * is looked up in [0], a few dozen entries at most a quarter full, not
   * among the hundreds of C functions. */
  modent_t *cs_mods[2];
  size_t cs_modcap[2];
  int cs_mod_stale;             /* rebuild before the next lookup */
  sset_t cs_strs[SCACHE_SETS];  /* the decoder's short strings */
  fent_t cs_fns[FCACHE_SETS][2];   /* the decoder's loaded functions */
  bool cs_closed;               /* collected (its state is closing): cache
                                   no more functions */
} cstate_t;

static const char CSTATE_KEY = 'c';  /* registry key (its address) */
#define CSTATE_MT "braid codec state"
#define SCRATCH_MT "braid codec scratch"
#define BOX_MT "braid codec box"

static void scratch_free(scratch_t *s) {
  free(s->s_b.wb_buf);
  free(s->s_hv);
  free(s->s_hash);
  free(s->s_frames);
  memset(s, 0, sizeof *s);
}

/* Bumped by every codec state's collection (see getcstate). */
static _Atomic uint64_t cstate_gen = 1;

static int cstate_gc(lua_State *L) {
  cstate_t *cs = lua_touserdata(L, 1);
  atomic_fetch_add_explicit(&cstate_gen, 1, memory_order_release);   /* see getcstate */
  scratch_free(&cs->cs_s);
  for (int k = 0; k < 2; k++) {
    free(cs->cs_mods[k]);
    cs->cs_mods[k] = NULL;
    cs->cs_modcap[k] = 0;
  }
  cs->cs_mod_stale = 1;
  for (unsigned i = 0; i < FCACHE_SETS; i++) {  /* the copiers go with the registry */
    for (int w = 0; w < 2; w++) free(cs->cs_fns[i][w].fe_dump);
  }
  memset(cs->cs_fns, 0, sizeof cs->cs_fns);
  cs->cs_closed = true;         /* a later finalizer's decode caches nothing */
  return 0;
}

static int scratch_gc(lua_State *L) {
  scratch_free(lua_touserdata(L, 1));
  return 0;
}

/* Pushes nothing; returns L's codec state, creating it on first use.  In
 * a task the runtime keeps it per shard (braid__codec_slot), which saves
 * the registry lookup (about 200 instructions) at every encode and decode.
 * Elsewhere (the host's state: a script's main chunk spawning and sending)
 * each thread remembers the last state it used, by its registry's address;
 * a codec state is collected only when its Lua state closes, and that
 * bumps cstate_gen, which voids every thread's entry, so a registry made
 * later at the same address is not taken for the old one (the address is
 * reused only through free and malloc, which order the bump before it). */
static cstate_t *getcstate_slow(lua_State *L);

static _Thread_local struct { const void *reg; cstate_t *cs; uint64_t gen; } tls_cs;

static inline cstate_t *getcstate(lua_State *L) {
  void **slot = braid__codec_slot(L);
  if (slot) {
    if (*slot == NULL) *slot = getcstate_slow(L);
    return *slot;
  }
  const void *reg = lua_topointer(L, LUA_REGISTRYINDEX);
  uint64_t gen = atomic_load_explicit(&cstate_gen, memory_order_acquire);
  if (tls_cs.reg == reg && tls_cs.gen == gen) return tls_cs.cs;
  cstate_t *cs = getcstate_slow(L);
  tls_cs.reg = reg;
  tls_cs.cs = cs;
  tls_cs.gen = gen;
  return cs;
}

static cstate_t *getcstate_slow(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &CSTATE_KEY) == LUA_TUSERDATA) {
    cstate_t *cs = lua_touserdata(L, -1);
    lua_pop(L, 1);  /* the registry keeps it alive */
    return cs;
  }
  lua_pop(L, 1);
  cstate_t *cs = lua_newuserdatauv(L, sizeof *cs, 1);
  memset(cs, 0, sizeof *cs);
  cs->cs_mod_stale = 1;
  if (luaL_newmetatable(L, CSTATE_MT)) {
    lua_pushcfunction(L, cstate_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &CSTATE_KEY);  /* pops the userdata */
  return cs;
}

static inline size_t hashptr(const void *p) {
  uint64_t x = (uint64_t)(uintptr_t)p;
  x ^= x >> 29;
  x *= 0x9e3779b97f4a7c15ull;
  return (size_t)(x ^ (x >> 32));
}

/* ------------------------------------------------------------------------ */
/* Encoder                                                                   */

typedef struct enc {
  lua_State *L;
  cstate_t *cs;                 /* owner of the module map */
  scratch_t *s;                 /* cs->cs_s, or a private one when nested */
  int *busy;                    /* cleared when done or failing, or NULL */
  const char *root;
  int n;                        /* values encoded */
  int ival;                     /* 1-based value being encoded */
  int depth;                    /* open tables and functions (s_frames) */
  int maxdepth;                 /* deepest nesting met */
  uint32_t nobj;                /* objects given an ordinal so far */
  unsigned flags;               /* m_tag flags */
  int rebuilt;                  /* the module map was rebuilt in this encode */
} enc_t;

static int is_ident(const char *s, size_t len) {
  static const char *const reserved[] = {
    "and", "break", "do", "else", "elseif", "end", "false", "for",
    "function", "goto", "if", "in", "local", "nil", "not", "or", "repeat",
    "return", "then", "true", "until", "while", NULL };
  if (len == 0 || len > 64) return 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return 0;
  }
  for (int i = 0; reserved[i]; i++)
    if (strcmp(s, reserved[i]) == 0) return 0;
  return 1;
}

/* Appends ["..."] for a string key: escaped like %q, cut after 40 bytes. */
static void add_quoted(luaL_Buffer *b, const char *s, size_t len) {
  size_t lim = len > 40 ? 37 : len;
  luaL_addstring(b, "[\"");
  for (size_t i = 0; i < lim; i++) {
    unsigned char c = (unsigned char)s[i];
    char tmp[8];
    if (c == '"' || c == '\\') { luaL_addchar(b, '\\'); luaL_addchar(b, (char)c); }
    else if (c == '\n') luaL_addstring(b, "\\n");
    else if (c == '\r') luaL_addstring(b, "\\r");
    else if (c == '\t') luaL_addstring(b, "\\t");
    else if (c < 32 || c == 127) { snprintf(tmp, sizeof tmp, "\\%d", c); luaL_addstring(b, tmp); }
    else luaL_addchar(b, (char)c);
  }
  if (lim < len) luaL_addstring(b, "...");
  luaL_addstring(b, "\"]");
}

static void add_frame(enc_t *e, luaL_Buffer *b, const eframe_t *f, int empty) {
  lua_State *L = e->L;
  char tmp[64];
  switch (f->pf_kind) {
    case PF_INDEX:
      snprintf(tmp, sizeof tmp, "[%lld]", (long long)f->pf_i);
      luaL_addstring(b, tmp);
      break;
    case PF_UPVAL:
      if (!empty) luaL_addchar(b, ' ');
      luaL_addstring(b, "upvalue '");
      luaL_addstring(b, f->pf_name);
      luaL_addchar(b, '\'');
      break;
    case PF_KEY: {
      int k = f->ef_k;
      switch (lua_type(L, k)) {
        case LUA_TSTRING: {
          size_t len;
          const char *s = lua_tolstring(L, k, &len);  /* a string: no conversion */
          if (is_ident(s, len)) { luaL_addchar(b, '.'); luaL_addlstring(b, s, len); }
          else add_quoted(b, s, len);
          break;
        }
        case LUA_TNUMBER:
          if (lua_isinteger(L, k)) snprintf(tmp, sizeof tmp, "[%lld]", (long long)lua_tointeger(L, k));
          else snprintf(tmp, sizeof tmp, "[%.14g]", (double)lua_tonumber(L, k));
          luaL_addstring(b, tmp);
          break;
        case LUA_TBOOLEAN:
          luaL_addstring(b, lua_toboolean(L, k) ? "[true]" : "[false]");
          break;
        default:
          snprintf(tmp, sizeof tmp, "[<%s>]", luaL_typename(L, k));
          luaL_addstring(b, tmp);
          break;
      }
      break;
    }
  }
}

/* Pushes the path of the value being encoded. */
static void push_path(enc_t *e) {
  lua_State *L = e->L;
  luaL_Buffer b;
  int fnroot = e->n == 1 && strcmp(e->root, "fn") == 0;
  int indexed = e->n != 1 || strcmp(e->root, "args") == 0 ||
                strcmp(e->root, "results") == 0;
  luaL_buffinit(L, &b);
  int empty = 0;
  if (fnroot && e->depth > 0) {
    empty = 1;                                  /* "upvalue 'db'" */
  } else if (indexed) {
    lua_pushfstring(L, "%s[%d]", e->root, e->ival);
    luaL_addvalue(&b);
  } else {
    luaL_addstring(&b, e->root);
  }
  /* A deep path would make a huge message: elide the middle. */
  for (int i = 0; i < e->depth; i++) {
    const eframe_t *f = &e->s->s_frames[i];
    if (e->depth > 24 && i == 12) {
      luaL_addstring(&b, "[...]");
      i = e->depth - 12;
      f = &e->s->s_frames[i];
    }
    if (f->pf_kind == PF_INKEY) {
      luaL_addstring(&b, empty ? "(in a key)" : " (in a key)");
      break;
    }
    add_frame(e, &b, f, empty);
    empty = 0;
  }
  luaL_pushresult(&b);
}

/* Ends the encode (clears busy) and raises msg. */
NORETURN static void enc_raise(enc_t *e) {
  if (e->busy) *e->busy = 0;
  lua_error(e->L);
  UNREACHABLE();
}

NORETURN static void fail_nomem(enc_t *e) {
  lua_pushliteral(e->L, "braid: not enough memory to encode a value");
  enc_raise(e);
}

/* Raises "braid: cannot transfer <what> at <path><why>". */
NORETURN static void fail_transfer(enc_t *e, const char *what, const char *why) {
  lua_State *L = e->L;
  lua_checkstack(L, 8);
  push_path(e);
  lua_pushfstring(L, "braid: cannot transfer %s at %s%s", what, lua_tostring(L, -1), why);
  enc_raise(e);
}

/* Makes room for n more bytes; returns where they go. */
static inline unsigned char *reserve(enc_t *e, size_t n) {
  unsigned char *w = braid__wbuf_reserve(&e->s->s_b, n);
  if (w == NULL) fail_nomem(e);
  return w;
}

/* Ends an append that wrote up to w. */
static inline void wend(enc_t *e, unsigned char *w) { braid__wbuf_end(&e->s->s_b, w); }

/* A scalar read from the stack once: its record can then be sized and
 * written without further API calls. */
typedef struct scalar {
  int sc_tag;                   /* T_NIL .. T_STR, or 0: not a scalar */
  size_t sc_len;                /* T_STR: length */
  union { lua_Integer i; lua_Number n; const char *s; } sc_v;
} scalar_t;

/* Reads the value at idx, of Lua type t, into *sc; returns its record's
 * size, or 0 when it is not a nil, boolean, number or string. */
static inline size_t scalar_get(lua_State *L, int idx, int t, scalar_t *sc) {
  switch (t) {
    case LUA_TNIL: sc->sc_tag = T_NIL; return 1;
    case LUA_TBOOLEAN: sc->sc_tag = lua_toboolean(L, idx) ? T_TRUE : T_FALSE; return 1;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) {
        sc->sc_tag = T_INT;
        sc->sc_v.i = lua_tointeger(L, idx);
      } else {
        sc->sc_tag = T_FLT;
        sc->sc_v.n = lua_tonumber(L, idx);
      }
      return 9;
    case LUA_TSTRING:
      sc->sc_tag = T_STR;
      sc->sc_v.s = lua_tolstring(L, idx, &sc->sc_len);  /* a string: no conversion */
      return braid__wstr_size(sc->sc_len);          /* never 0: the string exists */
    default:
      sc->sc_tag = 0;
      return 0;
  }
}

/* Writes the record of sc. */
static inline unsigned char *put_scalar(const scalar_t *sc, unsigned char *w) {
  switch (sc->sc_tag) {
    case T_INT: return braid__wput_int(w, sc->sc_v.i);
    case T_FLT: return braid__wput_flt(w, sc->sc_v.n);
    case T_STR: return braid__wput_str(w, sc->sc_v.s, sc->sc_len);
    default: return braid__wput_tag(w, (unsigned)sc->sc_tag);
  }
}

_Static_assert(sizeof(lua_Integer) == 8 && sizeof(lua_Number) == 8,
               "the codec stores integers and floats in 8 bytes");

/* --- the seen map --- */

static seen_t *seen_find(scratch_t *s, const void *p) {
  if (!s->s_usehash) {
    for (int i = 0; i < s->s_nsmall; i++)
      if (s->s_small[i].sn_p == p) return &s->s_small[i];
    return NULL;
  }
  size_t mask = s->s_hashcap - 1;
  for (size_t i = hashptr(p) & mask;; i = (i + 1) & mask) {
    seen_t *sn = &s->s_hash[i];
    if (sn->sn_gen != s->s_gen) return NULL;
    if (sn->sn_p == p) return sn;
  }
}

/* Inserts into s_hash, which has room; p is not there. */
static seen_t *hash_put(scratch_t *s, const seen_t *v) {
  size_t mask = s->s_hashcap - 1;
  size_t i = hashptr(v->sn_p) & mask;
  while (s->s_hash[i].sn_gen == s->s_gen) i = (i + 1) & mask;
  s->s_hash[i] = *v;
  s->s_hash[i].sn_gen = s->s_gen;
  s->s_hcount++;
  return &s->s_hash[i];
}

/* Grows s_hash to cap slots (load stays <= 1/2), moving the live entries. */
static void hash_grow(enc_t *e, size_t cap) {
  scratch_t *s = e->s;
  seen_t *old = s->s_hash;
  size_t oldcap = s->s_hashcap;
  seen_t *nh = calloc(cap, sizeof *nh);   /* sn_gen 0: empty (gen is never 0) */
  if (nh == NULL) fail_nomem(e);
  s->s_hash = nh;
  s->s_hashcap = cap;
  s->s_hcount = 0;
  if (s->s_usehash)
    for (size_t i = 0; i < oldcap; i++)
      if (old[i].sn_gen == s->s_gen) hash_put(s, &old[i]);
  free(old);
}

static void seen_add(enc_t *e, const void *p, uint32_t ord, uint32_t up, size_t off) {
  scratch_t *s = e->s;
  seen_t v = { p, 0, ord, up, off };
  if (!s->s_usehash) {
    if (s->s_nsmall < SMALL_SEEN) {
      s->s_small[s->s_nsmall++] = v;
      return;
    }
    if (s->s_hashcap < 64) hash_grow(e, 64);
    s->s_hcount = 0;
    for (int i = 0; i < SMALL_SEEN; i++) hash_put(s, &s->s_small[i]);
    s->s_usehash = 1;
  }
  if ((s->s_hcount + 1) * 2 > s->s_hashcap) {
    if (s->s_hashcap > SIZE_MAX / 2 / sizeof(seen_t)) fail_nomem(e);
    hash_grow(e, s->s_hashcap * 2);
  }
  hash_put(s, &v);
}

/* --- the module map --- */

static int loaded_newindex(lua_State *L) {
  cstate_t *cs = lua_touserdata(L, lua_upvalueindex(1));
  lua_settop(L, 3);
  lua_rawset(L, 1);
  cs->cs_mod_stale = 1;
  return 0;
}

/* Is entry a a better name for its object than b?  A module beats a field
 * of a module; then the shorter name wins (math.sqrt over a copy of it in
 * a module "mymath"), then the byte order, so the choice is the same in
 * every state. */
static int mod_better(const modent_t *a, const modent_t *b) {
  if ((a->me_key == NULL) != (b->me_key == NULL)) return a->me_key == NULL;
  if (a->me_namelen != b->me_namelen) return a->me_namelen < b->me_namelen;
  int c = strcmp(a->me_name, b->me_name);
  if (c != 0) return c < 0;
  if (a->me_key && a->me_keylen != b->me_keylen) return a->me_keylen < b->me_keylen;
  return a->me_key && strcmp(a->me_key, b->me_key) < 0;
}

static void mod_put(modent_t *t, size_t cap, const modent_t *v) {
  size_t mask = cap - 1;
  for (size_t i = hashptr(v->me_p) & mask;; i = (i + 1) & mask) {
    if (t[i].me_p == NULL) { t[i] = *v; return; }
    if (t[i].me_p == v->me_p) {
      if (mod_better(v, &t[i])) t[i] = *v;
      return;
    }
  }
}

/* Appends obj (at -1 after the pushes below), name, key to the anchor. */
static void anchor_add(lua_State *L, int anchor, int *n, int obj, int name, int key) {
  lua_pushvalue(L, obj);
  lua_rawseti(L, anchor, ++*n);
  lua_pushvalue(L, name);
  lua_rawseti(L, anchor, ++*n);
  if (key) lua_pushvalue(L, key);
  else lua_pushboolean(L, 0);
  lua_rawseti(L, anchor, ++*n);
}

/* Rebuilds the module map of the cstate at 1 (run under lua_pcall: a memory
 * error in the Lua part leaves the old map and nothing allocated in C).
 * First every object and name goes into a new anchor table (Lua
 * allocations only), then the C table is built from it without allocating
 * anything in Lua, and swapped in. */
static int mod_rebuild(lua_State *L) {
  cstate_t *cs = lua_touserdata(L, 1);
  lua_settop(L, 1);
  lua_newtable(L);                                    /* 2: anchor */
  int n = 0;
  if (lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE) == LUA_TTABLE) {  /* 3 */
    if (!lua_getmetatable(L, 3)) {
      lua_createtable(L, 0, 1);
      lua_pushvalue(L, 1);
      lua_pushcclosure(L, loaded_newindex, 1);
      lua_setfield(L, -2, "__newindex");
      lua_setmetatable(L, 3);
    } else {
      /* Already set: ours from an earlier build, or someone else's, and
       * then only C function misses notice new modules. */
      lua_pop(L, 1);
    }
    lua_pushnil(L);
    while (lua_next(L, 3)) {                          /* 4: name, 5: value */
      if (lua_type(L, 4) == LUA_TSTRING) {
        if (lua_type(L, 5) == LUA_TTABLE) {
          anchor_add(L, 2, &n, 5, 4, 0);
          lua_pushnil(L);
          while (lua_next(L, 5)) {                    /* 6: key, 7: value */
            if (lua_type(L, 6) == LUA_TSTRING && lua_iscfunction(L, 7))
              anchor_add(L, 2, &n, 7, 4, 6);
            lua_pop(L, 1);
          }
        } else if (lua_iscfunction(L, 5)) {
          anchor_add(L, 2, &n, 5, 4, 0);
        }
      }
      lua_pop(L, 1);
    }
  }
  size_t count[2] = { 0, 0 }, cap[2];
  for (int i = 1; i + 2 <= n; i += 3) {
    count[lua_rawgeti(L, 2, i) != LUA_TTABLE]++;
    lua_pop(L, 1);
  }
  modent_t *t[2];
  for (int k = 0; k < 2; k++) {
    /* Tables at most a quarter full (a miss, the common case, probes about
     * 1.4 slots), C functions at most half. */
    cap[k] = 16;
    while (cap[k] < count[k] * (k == 0 ? 4 : 2) + 2) cap[k] *= 2;
    t[k] = calloc(cap[k], sizeof *t[k]);
  }
  if (t[0] == NULL || t[1] == NULL) {
    free(t[0]);
    free(t[1]);
    codec_raise(L, "braid: not enough memory to encode a value");
  }
  for (int i = 1; i + 2 <= n; i += 3) {
    modent_t v;
    size_t len;
    int k = lua_rawgeti(L, 2, i) != LUA_TTABLE;
    v.me_p = lua_topointer(L, -1);
    lua_rawgeti(L, 2, i + 1);
    v.me_name = lua_tolstring(L, -1, &len);           /* a string: no conversion */
    v.me_namelen = (uint32_t)len;
    v.me_key = NULL;
    v.me_keylen = 0;
    if (lua_rawgeti(L, 2, i + 2) == LUA_TSTRING) {
      v.me_key = lua_tolstring(L, -1, &len);
      v.me_keylen = (uint32_t)len;
    }
    lua_pop(L, 3);  /* the anchor keeps them alive */
    if (v.me_p) mod_put(t[k], cap[k], &v);
  }
  for (int k = 0; k < 2; k++) {
    free(cs->cs_mods[k]);
    cs->cs_mods[k] = t[k];
    cs->cs_modcap[k] = cap[k];
  }
  cs->cs_mod_stale = 0;
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, 1, 1);                         /* the new anchor */
  return 0;
}

static void mod_refresh(enc_t *e) {
  lua_State *L = e->L;
  if (!lua_checkstack(L, 12)) fail_nomem(e);
  lua_pushcfunction(L, mod_rebuild);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &CSTATE_KEY);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) enc_raise(e);  /* the error is on top */
  e->rebuilt = 1;
}

static const modent_t *mod_find(enc_t *e, const void *p, int cfunc) {
  cstate_t *cs = e->cs;
  if (cs->cs_mod_stale) mod_refresh(e);
  for (int pass = 0;; pass++) {
    const modent_t *t = cs->cs_mods[cfunc != 0];
    if (t) {
      size_t mask = cs->cs_modcap[cfunc != 0] - 1;
      for (size_t i = hashptr(p) & mask; t[i].me_p; i = (i + 1) & mask)
        if (t[i].me_p == p) return &t[i];
    }
    /* A table that is not a module is the common case: no rebuild for it. */
    if (!cfunc || e->rebuilt || pass > 0) return NULL;
    mod_refresh(e);
  }
}

static void put_module(enc_t *e, const modent_t *me) {
  unsigned char *w = reserve(e, braid__wmodule_size(me->me_namelen, me->me_keylen));
  wend(e, braid__wput_module(w, me->me_name, me->me_namelen, me->me_key, me->me_keylen));
}

/* T_REF to an object met before; marks the object shared. */
static void put_ref(enc_t *e, const seen_t *sn) {
  braid__wmark_shared(e->s->s_b.wb_buf + sn->sn_off);
  e->flags |= F_REFS;
  unsigned char *w = reserve(e, 1 + W_VARINT_MAX);
  wend(e, braid__wput_ref(w, sn->sn_ord));
}

/* Pushes a frame for a table or function at obj; returns it.  Fails when the
 * Lua stack cannot grow (nesting of about LUAI_MAXSTACK / 2 levels). */
static eframe_t *push_frame(enc_t *e, int obj, const char *what) {
  scratch_t *s = e->s;
  if (!lua_checkstack(e->L, 4)) fail_transfer(e, what, " (nested too deep)");
  if ((size_t)e->depth == s->s_fcap) {
    size_t cap = s->s_fcap ? s->s_fcap * 2 : 32;
    eframe_t *nf = realloc(s->s_frames, cap * sizeof *nf);
    if (nf == NULL) fail_nomem(e);
    s->s_frames = nf;
    s->s_fcap = cap;
  }
  eframe_t *f = &s->s_frames[e->depth++];
  if (e->depth > e->maxdepth) e->maxdepth = e->depth;
  f->ef_obj = obj;
  f->ef_k = lua_gettop(e->L) + 1;
  f->ef_off = s->s_b.wb_len;
  return f;
}

static bool tip_open(eframe_t *f, const void *p);

static void open_table(enc_t *e, int t, const void *p) {
  eframe_t *f = push_frame(e, t, "table");
  seen_add(e, p, e->nobj++, 0, f->ef_off);
  f->ef_func = 0;
  f->ef_valnext = 0;
  f->ef_inarray = 1;
  f->ef_narr = f->ef_nhash = 0;
  unsigned char *w = reserve(e, W_TABLE_SIZE);
  wend(e, braid__wput_table(w, 0, 0));                /* the counts: patched when done */
  if (!tip_open(f, p)) lua_pushnil(e->L);             /* lua_next's key slot, at ef_k */
}

/* Tables read in place.  lua_next finds the previous key again at every
 * call (a hash lookup: about 110 instructions a step, callgrind), and each
 * key and value then costs lua_type and lua_to* calls: for bench/
 * runtime.lua's record {id, name, temp, tags = {"a", "b"}} those were half
 * of its ~3 150 encoding instructions.  So the encoder reads a table's
 * array and node parts itself, in lua_next's own order (array slots, then
 * nodes), which gives byte for byte the message lua_next would; a scalar
 * key or value is written from its TValue with no API call.  A value that
 * is not a scalar (a table, function, handle) is pushed with its key
 * (lua_rawget) and encoded the general way.
 *
 * This reads Lua 5.4's internal layouts (lobject.h: Table, Node, TValue,
 * TString), which 5.4.0 to 5.4.8 share but no header installs, so they are
 * declared here and checked: the first encode of a process reads probe
 * tables both ways (tip_probe) and uses the in-place reader only when
 * every key, value, type, string pointer and the order agree; otherwise
 * lua_next does it all, as before.  A table whose keys are not all
 * pushable scalars (a table or function as a key) is read with lua_next.
 * Nothing here allocates or runs Lua code while it reads; the general
 * path's API calls can (a finalizer), so the parts and sizes recorded at
 * open are checked before each read (and each key's type), and a table
 * resized meanwhile, or given a key of another kind, raises "changed while
 * it was being sent" (lua_next's behaviour there is undefined; two
 * resizes in one finalizer that end where they began go unnoticed, and
 * the walk then reads the new parts, in bounds).  64-bit builds only; the
 * probe also checks each table's type tag before it reads further. */
/* 0: not probed yet; 1: the layouts agree; -1: they do not (lua_next). */
static _Atomic int tip_state;

#if LUA_VERSION_NUM == 504 && UINTPTR_MAX == UINT64_MAX
typedef union tip_val { void *gc; void *p; lua_Integer i; lua_Number n; } tip_val_t;
typedef struct tip_tv { tip_val_t v; unsigned char tt; } tip_tv_t;
typedef struct tip_node {
  tip_val_t v;
  unsigned char tt, key_tt;
  int next;
  tip_val_t key;
} tip_node_t;
typedef struct tip_table {
  void *next;
  unsigned char tt, marked, flags, lsizenode;
  unsigned int alimit;
  tip_tv_t *array;
  tip_node_t *node;
  void *lastfree, *metatable, *gclist;
} tip_table_t;
typedef struct tip_str {
  void *next;
  unsigned char tt, marked, extra, shrlen;
  unsigned int hash;
  union { size_t lnglen; void *hnext; } u;
  char contents[1];
} tip_str_t;
enum {                          /* lobject.h's type tags (with BIT_ISCOLLECTABLE) */
  TIP_FALSE = 0x01, TIP_TRUE = 0x11, TIP_INT = 0x03, TIP_FLT = 0x13,
  TIP_SHRSTR = 0x44, TIP_LNGSTR = 0x54, TIP_TABLE = 0x05, TIP_BITRAS = 0x80
};
_Static_assert(sizeof(tip_tv_t) == 16 && sizeof(tip_node_t) == 24 && sizeof(tip_table_t) == 56,
               "Lua 5.4's TValue, Node and Table on a 64-bit machine");

static inline bool tip_empty(unsigned char tt) { return (tt & 0x0f) == LUA_TNIL; }

/* ltable.c's luaH_realasize.  Its flag is bit 7 of flags from 5.4.1 on,
 * of marked in 5.4.0; the other field's bit 7 is unused. */
static inline unsigned tip_asize(const tip_table_t *t) {
  unsigned a = t->alimit;
  if (!((t->flags | t->marked) & TIP_BITRAS) || (a & (a - 1)) == 0) return a;
  a |= a >> 1; a |= a >> 2; a |= a >> 4; a |= a >> 8; a |= a >> 16;
  return a + 1;
}

/* The scalar of a TValue's parts; its record's size, or 0 when it is not
 * a boolean, number or string. */
static inline size_t tip_scalar(const tip_val_t *v, unsigned char tt, scalar_t *sc) {
  switch (tt) {
    case TIP_FALSE: sc->sc_tag = T_FALSE; return 1;
    case TIP_TRUE: sc->sc_tag = T_TRUE; return 1;
    case TIP_INT: sc->sc_tag = T_INT; sc->sc_v.i = v->i; return 9;
    case TIP_FLT: sc->sc_tag = T_FLT; sc->sc_v.n = v->n; return 9;
    case TIP_SHRSTR: case TIP_LNGSTR: {
      const tip_str_t *ts = v->gc;
      sc->sc_tag = T_STR;
      sc->sc_v.s = ts->contents;
      sc->sc_len = tt == TIP_SHRSTR ? ts->shrlen : ts->u.lnglen;
      return braid__wstr_size(sc->sc_len);
    }
    default: sc->sc_tag = 0; return 0;
  }
}

/* A key tip_pushkey can push back. */
static inline bool tip_pushable(unsigned char kt) {
  return kt == TIP_INT || kt == TIP_FLT || kt == TIP_TRUE || kt == TIP_FALSE ||
         kt == TIP_SHRSTR || kt == TIP_LNGSTR;
}

/* Slot pos of t (array slots first, then nodes): false when it is empty;
 * else its value and key (an array slot's key is the integer pos + 1). */
static inline bool tip_slot(const tip_table_t *t, unsigned asize, unsigned pos, const tip_val_t **v,
                            unsigned char *vt, const tip_val_t **k, unsigned char *kt,
                            lua_Integer *ikey) {
  if (pos < asize) {
    const tip_tv_t *a = &t->array[pos];
    if (tip_empty(a->tt)) return false;
    *v = &a->v;
    *vt = a->tt;
    *ikey = (lua_Integer)pos + 1;
    *k = NULL;
    *kt = TIP_INT;
    return true;
  }
  const tip_node_t *n = &t->node[pos - asize];
  if (tip_empty(n->tt)) return false;
  *v = &n->v;
  *vt = n->tt;
  *k = &n->key;
  *kt = n->key_tt;
  *ikey = n->key_tt == TIP_INT ? n->key.i : 0;
  return true;
}

/* Checks the layouts against lua_next on a table at the top of L. */
static bool tip_check(lua_State *L) {
  const tip_table_t *t = lua_topointer(L, -1);
  if (t->tt != TIP_TABLE) return false;               /* the header (LUA_VTABLE) is where we think */
  unsigned asize = tip_asize(t), total = asize + (1u << t->lsizenode), pos = 0;
  int ti = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, ti)) {
    const tip_val_t *v, *k;
    unsigned char vt, kt;
    lua_Integer ik;
    while (pos < total && !tip_slot(t, asize, pos, &v, &vt, &k, &kt, &ik)) pos++;
    if (pos++ >= total) return false;
    for (int side = 0; side < 2; side++) {            /* the key, then the value */
      int idx = side ? -1 : -2;
      const tip_val_t *x = side ? v : k;
      unsigned char tt = side ? vt : kt;
      scalar_t sc, ref;
      size_t n = x ? tip_scalar(x, tt, &sc) : (sc.sc_tag = T_INT, sc.sc_v.i = ik, 9);
      size_t rn = scalar_get(L, idx, lua_type(L, idx), &ref);
      if (n != rn || sc.sc_tag != ref.sc_tag) return false;
      if (n == 0) {                                   /* a table, function, userdata */
        if (x == NULL || x->p != lua_topointer(L, idx)) return false;   /* gc, p, f alike */
        continue;
      }
      if (sc.sc_tag == T_INT && sc.sc_v.i != ref.sc_v.i) return false;
      if (sc.sc_tag == T_FLT && sc.sc_v.n != ref.sc_v.n) return false;
      if (sc.sc_tag == T_STR && (sc.sc_v.s != ref.sc_v.s || sc.sc_len != ref.sc_len)) return false;
    }
    lua_pop(L, 1);
  }
  while (pos < total) {                               /* nothing left either */
    const tip_val_t *v, *k;
    unsigned char vt, kt;
    lua_Integer ik;
    if (tip_slot(t, asize, pos++, &v, &vt, &k, &kt, &ik)) return false;
  }
  return true;
}

static int tip_dummy(lua_State *L) { (void)L; return 0; }

/* Builds probe tables in L (with the API only: no global is used) and
 * compares the two readings of each (see above).  Out of memory raises,
 * before anything of an encode is held. */
static void tip_probe(lua_State *L) {
  int top = lua_gettop(L);
  luaL_checkstack(L, 8, "braid: stack overflow while encoding");
  bool ok = true;
  /* Every kind of key and value, in both parts. */
  lua_createtable(L, 5, 12);
  lua_pushinteger(L, 10); lua_rawseti(L, -2, 1);
  lua_pushnumber(L, 20.5); lua_rawseti(L, -2, 2);
  lua_pushliteral(L, "x"); lua_rawseti(L, -2, 3);
  lua_pushboolean(L, 1); lua_rawseti(L, -2, 4);
  lua_pushboolean(L, 0); lua_rawseti(L, -2, 5);
  lua_pushliteral(L, "v"); lua_setfield(L, -2, "k");
  lua_pushnumber(L, 2.5); lua_pushinteger(L, -7); lua_rawset(L, -3);
  lua_pushinteger(L, -3); lua_pushliteral(L, "neg"); lua_rawset(L, -3);
  lua_pushliteral(L, "a long key, longer than any short string of Lua 5.4");
  lua_pushliteral(L, "a long value, longer than any short string of Lua 5.4");
  lua_rawset(L, -3);
  lua_newtable(L); lua_setfield(L, -2, "sub");
  lua_pushcfunction(L, tip_dummy); lua_setfield(L, -2, "f");
  lua_pushboolean(L, 1); lua_pushinteger(L, 1); lua_rawset(L, -3);
  lua_pushboolean(L, 0); lua_pushnumber(L, 0.25); lua_rawset(L, -3);
  lua_pushinteger(L, LUA_MININTEGER); lua_pushinteger(L, LUA_MAXINTEGER); lua_rawset(L, -3);
  ok = ok && tip_check(L);
  lua_settop(L, top);
  /* An array grown by assignment, with a hole, after # moved its limit
   * below a value (the real size is then computed from the limit). */
  lua_newtable(L);
  for (int i = 1; i <= 16; i++) { lua_pushinteger(L, i * 3); lua_rawseti(L, -2, i); }
  for (int i = 12; i <= 16; i++) if (i != 13) { lua_pushnil(L); lua_rawseti(L, -2, i); }
  (void)lua_rawlen(L, -1);
  ok = ok && tip_check(L);
  lua_settop(L, top);
  /* String keys, a third of them removed (dead keys). */
  lua_newtable(L);
  for (int i = 1; i <= 40; i++) { lua_pushfstring(L, "k%d", i); lua_pushinteger(L, i); lua_rawset(L, -3); }
  for (int i = 1; i <= 40; i += 3) { lua_pushfstring(L, "k%d", i); lua_pushnil(L); lua_rawset(L, -3); }
  ok = ok && tip_check(L);
  lua_settop(L, top);
  /* Integer keys in the hash part only; an empty table. */
  lua_createtable(L, 0, 4);
  for (int i = 3; i >= 1; i--) { lua_pushinteger(L, i); lua_rawseti(L, -2, i); }
  ok = ok && tip_check(L);
  lua_settop(L, top);
  lua_newtable(L);
  ok = ok && tip_check(L);
  lua_settop(L, top);
  atomic_store_explicit(&tip_state, ok ? 1 : -1, memory_order_relaxed);
}

/* Opens frame f for the table at p in place when the layouts were checked
 * and every key is a scalar lua_pushx can push back; else returns false. */
static bool tip_open(eframe_t *f, const void *p) {
  f->ef_tab = NULL;
  if (atomic_load_explicit(&tip_state, memory_order_relaxed) != 1) return false;
  const tip_table_t *t = p;
  unsigned nsize = 1u << t->lsizenode;
  for (unsigned i = 0; i < nsize; i++) {
    const tip_node_t *n = &t->node[i];
    if (tip_empty(n->tt)) continue;
    if (!tip_pushable(n->key_tt)) return false;
  }
  f->ef_tab = t;
  f->ef_arr = t->array;
  f->ef_node = t->node;
  f->ef_asize = tip_asize(t);
  f->ef_nsize = nsize;
  f->ef_pos = 0;
  f->ef_pushed = 0;
  return true;
}

/* Pushes the key of a slot (tip_open checked that it can be pushed). */
static void tip_pushkey(lua_State *L, const tip_val_t *k, unsigned char kt, lua_Integer ikey) {
  switch (kt) {
    case TIP_INT: lua_pushinteger(L, ikey); break;
    case TIP_FLT: lua_pushnumber(L, k->n); break;
    case TIP_TRUE: case TIP_FALSE: lua_pushboolean(L, kt == TIP_TRUE); break;
    default: {
      const tip_str_t *ts = k->gc;
      lua_pushlstring(L, ts->contents, kt == TIP_SHRSTR ? ts->shrlen : ts->u.lnglen);
      break;
    }
  }
}

static void enc_value_at(enc_t *e, int idx);

/* The table of the innermost frame changed shape while it was being sent
 * (a finalizer that ran in an API call of the general path: lua_next's
 * behaviour there is undefined).  Raises, naming the table, whose frame
 * is dropped first: its key slot no longer holds a key. */
NORETURN static void tip_changed(enc_t *e) {
  e->depth--;
  fail_transfer(e, "table", " (changed while it was being sent)");
}

/* step() for a table read in place. */
static void tip_step(enc_t *e) {
  lua_State *L = e->L;
  eframe_t *f = &e->s->s_frames[e->depth - 1];
  int k = f->ef_k;
  if (f->ef_pushed) {                                 /* the last value went the general way */
    lua_settop(L, k - 1);
    f->ef_pushed = 0;
  }
  /* Lua code can have run only before this call (an API call of the
   * general path, a child's encode): the loop below calls no API until it
   * returns, so the parts are checked here, once. */
  const tip_table_t *t = f->ef_tab;
  if (t->array != f->ef_arr || t->node != f->ef_node || tip_asize(t) != f->ef_asize ||
      (1u << t->lsizenode) != f->ef_nsize)
    tip_changed(e);
  unsigned total = f->ef_asize + f->ef_nsize;
  for (;;) {
    const tip_val_t *v, *kv;
    unsigned char vt, kt;
    lua_Integer ikey;
    while (f->ef_pos < total && !tip_slot(t, f->ef_asize, f->ef_pos, &v, &vt, &kv, &kt, &ikey))
      f->ef_pos++;
    /* A key put into a free node meanwhile needs no resize: check each. */
    if (f->ef_pos < total && !tip_pushable(kt)) tip_changed(e);
    if (f->ef_pos >= total) {                         /* done */
      braid__wpatch_table(e->s->s_b.wb_buf + f->ef_off, f->ef_narr, f->ef_nhash);
      e->depth--;
      return;
    }
    f->ef_pos++;
    scalar_t ks = { 0, 0, { 0 } }, vs = { 0, 0, { 0 } };
    size_t vn = tip_scalar(v, vt, &vs);
    if (f->ef_inarray) {
      if (kt == TIP_INT && ikey == (lua_Integer)f->ef_narr + 1) {
        if (++f->ef_narr == UINT32_MAX) fail_nomem(e);
        f->pf_kind = PF_INDEX;
        f->pf_i = ikey;
        if (vn) {
          wend(e, put_scalar(&vs, reserve(e, vn)));
          continue;
        }
        tip_pushkey(L, kv, kt, ikey);
        f = &e->s->s_frames[e->depth - 1];            /* (the pushes run no encode) */
        f->ef_pushed = 1;
        enc_value_at(e, k);
        return;
      }
      f->ef_inarray = 0;
    }
    if (++f->ef_nhash == UINT32_MAX) fail_nomem(e);
    size_t kn = kv ? tip_scalar(kv, kt, &ks) : (ks.sc_tag = T_INT, ks.sc_v.i = ikey, 9);
    if (vn) {
      unsigned char *w = reserve(e, kn + vn);
      wend(e, put_scalar(&vs, put_scalar(&ks, w)));
      continue;
    }
    wend(e, put_scalar(&ks, reserve(e, kn)));
    f->pf_kind = PF_KEY;
    tip_pushkey(L, kv, kt, ikey);
    f = &e->s->s_frames[e->depth - 1];
    f->ef_pushed = 1;
    enc_value_at(e, k);
    return;
  }
}
#else
static bool tip_open(eframe_t *f, const void *p) { (void)p; f->ef_tab = NULL; return false; }
static void tip_step(enc_t *e) { (void)e; }
static void tip_probe(lua_State *L) { (void)L; atomic_store(&tip_state, -1); }
#endif

static int dump_writer(lua_State *L, const void *p, size_t sz, void *ud) {
  braid_wbuf_t *b = ud;
  (void)L;
  unsigned char *w = braid__wbuf_reserve(b, sz);
  if (w == NULL) return 1;                            /* no longjmp inside lua_dump */
  /* Most pieces are one byte (ldump.c writes every byte field, and most
   * sizes, alone): a store, not a call of memcpy. */
  if (sz == 1) *w = *(const unsigned char *)p;
  else memcpy(w, p, sz);
  b->wb_len += sz;
  return 0;
}

static void open_function(enc_t *e, int fi, const void *p) {
  lua_State *L = e->L;
  eframe_t *f = push_frame(e, fi, "function");
  size_t off = f->ef_off;
  uint32_t ord = e->nobj++;
  seen_add(e, p, ord, 0, off);
  unsigned char *w = reserve(e, W_FUNC_HEAD);
  wend(e, braid__wput_func(w));
  lua_pushvalue(L, fi);
  int st = lua_dump(L, dump_writer, &e->s->s_b, 0);   /* not stripped: names */
  lua_pop(L, 1);
  if (st != 0) fail_nomem(e);
  size_t dlen = e->s->s_b.wb_len - off - W_FUNC_HEAD;
  if (dlen > UINT32_MAX) fail_nomem(e);
  braid__wpatch_func(e->s->s_b.wb_buf + off, (uint32_t)dlen);
  reserve(e, 1);
  f = &e->s->s_frames[e->depth - 1];
  f->ef_nupoff = e->s->s_b.wb_len++;                  /* u8 nups, patched when done */
  f->ef_func = 1;
  f->ef_ord = ord;
  f->ef_up = 0;
  f->pf_kind = PF_UPVAL;
}

/* Encodes the value at idx, whose Lua type is t.  A scalar, a reference, a
 * module or a handle is written at once (returns 0); a new table or Lua
 * function gets a frame whose children step() encodes (returns 1). */
static int enc_value(enc_t *e, int idx, int t) {
  lua_State *L = e->L;
  switch (t) {
    case LUA_TNIL: case LUA_TBOOLEAN: case LUA_TNUMBER: case LUA_TSTRING: {
      scalar_t sc;
      size_t n = scalar_get(L, idx, t, &sc);
      wend(e, put_scalar(&sc, reserve(e, n)));
      return 0;
    }
    case LUA_TTABLE: {
      const void *p = lua_topointer(L, idx);
      const modent_t *me = mod_find(e, p, 0);
      if (me) { put_module(e, me); return 0; }
      const seen_t *sn = seen_find(e->s, p);
      if (sn) { put_ref(e, sn); return 0; }
      open_table(e, idx, p);
      return 1;
    }
    case LUA_TFUNCTION: {
      const void *p = lua_topointer(L, idx);
      if (lua_iscfunction(L, idx)) {
        const modent_t *me = mod_find(e, p, 1);
        if (me == NULL)
          fail_transfer(e, "C function", ": only the standard library's and loaded modules' C functions travel");
        put_module(e, me);
        return 0;
      }
      const seen_t *sn = seen_find(e->s, p);
      if (sn) { put_ref(e, sn); return 0; }
      open_function(e, idx, p);
      return 1;
    }
    case LUA_TUSERDATA: {
      braid_obj_t *o = braid__tohandle(L, idx);
      if (o == NULL) break;
      const void *p = lua_topointer(L, idx);
      const seen_t *sn = seen_find(e->s, p);
      if (sn) { put_ref(e, sn); return 0; }
      scratch_t *s = e->s;
      if (s->s_nh == s->s_hcap) {
        size_t cap = s->s_hcap ? s->s_hcap * 2 : 8;
        braid_obj_t **nv = realloc(s->s_hv, cap * sizeof *nv);
        if (nv == NULL) fail_nomem(e);
        s->s_hv = nv;
        s->s_hcap = cap;
      }
      seen_add(e, p, e->nobj++, 0, s->s_b.wb_len);
      unsigned char *w = reserve(e, 1 + W_VARINT_MAX);
      wend(e, braid__wput_handle(w, s->s_nh));
      s->s_hv[s->s_nh++] = o;                         /* borrowed until the end */
      return 0;
    }
    default:
      break;
  }
  /* Say what the value is and what to do instead: a userdata names its
   * type (its metatable's __name, "FILE*" for an open file). */
  if (lua_type(L, idx) == LUA_TUSERDATA) {
    const char *what = "userdata";
    if (lua_checkstack(L, 2) && luaL_getmetafield(L, idx, "__name") == LUA_TSTRING)
      what = lua_pushfstring(L, "userdata (%s)", lua_tostring(L, -1));
    fail_transfer(e, what, ": open it inside the task, or pass a braid handle");
  }
  if (lua_type(L, idx) == LUA_TTHREAD)
    fail_transfer(e, "thread", ": a coroutine stays in the task that made it; send a channel instead");
  fail_transfer(e, luaL_typename(L, idx), "");
}

/* enc_value for a child of a table: scalars (most children) inline
 * (forced: GCC's own estimate kept it out of line, one call per child). */
static inline BRAID_ALWAYS_INLINE int enc_child(enc_t *e, int idx, int t) {
  if (t == LUA_TSTRING || t == LUA_TNUMBER || t == LUA_TBOOLEAN || t == LUA_TNIL) {
    scalar_t sc;
    size_t n = scalar_get(e->L, idx, t, &sc);
    wend(e, put_scalar(&sc, reserve(e, n)));
    return 0;
  }
  return enc_value(e, idx, t);
}

int braid__codec_inplace(lua_State *L, int on) {
  if (atomic_load_explicit(&tip_state, memory_order_relaxed) == 0) tip_probe(L);
  static _Atomic int probed;                          /* the probe's own verdict */
  int v = atomic_load_explicit(&probed, memory_order_relaxed);
  if (v == 0) {
    v = atomic_load_explicit(&tip_state, memory_order_relaxed);
    atomic_store_explicit(&probed, v, memory_order_relaxed);
  }
  atomic_store_explicit(&tip_state, on && v == 1 ? 1 : -1, memory_order_relaxed);
  return v == 1;
}

/* Tests only (braid__codec_inplace_hook): called where Lua code may run
 * in the middle of an in-place walk. */
static void (*tip_test_hook)(lua_State *L);

void braid__codec_inplace_hook(void (*fn)(lua_State *L)) { tip_test_hook = fn; }

/* Pushes the value of the key at idx (of the innermost table, read in
 * place) above it and encodes it the general way. */
static void enc_value_at(enc_t *e, int idx) {
  lua_State *L = e->L;
  lua_pushvalue(L, idx);
  lua_rawget(L, e->s->s_frames[e->depth - 1].ef_obj);
  if (tip_test_hook) tip_test_hook(L);
  enc_value(e, idx + 1, lua_type(L, idx + 1));
}

/* Encodes the next child of the innermost open table or function, or
 * closes it when it has none left.  Frame pointers are re-read after
 * enc_value, which may grow the frame array. */
static void step(enc_t *e) {
  lua_State *L = e->L;
  eframe_t *f = &e->s->s_frames[e->depth - 1];
  if (!f->ef_func && f->ef_tab) {
    tip_step(e);
    return;
  }
  if (!f->ef_func) {
    /* Tables: one lua_next pass.  Lua visits the array part first, in index
     * order, so while the keys run 1, 2, 3, ... the values go to the array
     * section; from the first other key on (a hole, a string key, ...)
     * every entry is a key/value pair.  A table whose array lives in its
     * hash part is sent as pairs only, which decodes to the same table. */
    int k = f->ef_k;
    if (f->ef_valnext) {                              /* the key was a table or function */
      f->ef_valnext = 0;
      f->pf_kind = PF_KEY;
      if (enc_value(e, k + 1, lua_type(L, k + 1))) return;
      f = &e->s->s_frames[e->depth - 1];
    }
    for (;;) {
      lua_settop(L, k);                               /* keep the key */
      if (!lua_next(L, f->ef_obj)) {                  /* done; the key is popped */
        braid__wpatch_table(e->s->s_b.wb_buf + f->ef_off, f->ef_narr, f->ef_nhash);
        e->depth--;
        return;
      }
      int kt = lua_type(L, k);
      if (f->ef_inarray) {
        int isint = 0;
        lua_Integer i = kt == LUA_TNUMBER ? lua_tointegerx(L, k, &isint) : 0;
        /* An integral float key is an integer key in Lua 5.4, so isint is
         * exact; lua_tointegerx is not called on strings, which it converts. */
        if (isint && i == (lua_Integer)f->ef_narr + 1) {
          if (++f->ef_narr == UINT32_MAX) fail_nomem(e);
          f->pf_kind = PF_INDEX;
          f->pf_i = i;
          if (enc_child(e, k + 1, lua_type(L, k + 1))) return;
          f = &e->s->s_frames[e->depth - 1];
          continue;
        }
        f->ef_inarray = 0;
      }
      if (++f->ef_nhash == UINT32_MAX) fail_nomem(e);
      f->pf_kind = PF_INKEY;
      if (enc_child(e, k, kt)) {
        e->s->s_frames[e->depth - 2].ef_valnext = 1;  /* the value after the key */
        return;
      }
      f = &e->s->s_frames[e->depth - 1];
      f->pf_kind = PF_KEY;
      if (enc_child(e, k + 1, lua_type(L, k + 1))) return;
      f = &e->s->s_frames[e->depth - 1];
    }
  }
  /* Functions: the upvalues in order; _ENV is not sent. */
  for (;;) {
    lua_settop(L, f->ef_k - 1);                       /* the previous upvalue */
    int i = ++f->ef_up;
    const char *name = lua_getupvalue(L, f->ef_obj, i);  /* pushes it at ef_k */
    if (name == NULL) {
      e->s->s_b.wb_buf[f->ef_nupoff] = (unsigned char)(i - 1);  /* MAXUPVAL is 255 */
      e->depth--;
      return;
    }
    if (name[0] == '_' && strcmp(name, "_ENV") == 0) {
      wend(e, braid__wput_tag(reserve(e, 1), T_ENV));
      continue;
    }
    void *id = lua_upvalueid(L, f->ef_obj, i);
    seen_t *sn = seen_find(e->s, id);
    if (sn) {                                         /* shared with a function met before */
      braid__wmark_shared(e->s->s_b.wb_buf + sn->sn_off);
      e->flags |= F_REFS;
      unsigned char *w = reserve(e, 1 + 2 * W_VARINT_MAX);
      wend(e, braid__wput_upref(w, sn->sn_ord, sn->sn_up));
      continue;
    }
    seen_add(e, id, f->ef_ord, (uint32_t)i, f->ef_off);
    f->pf_name = name;
    if (enc_value(e, f->ef_k, lua_type(L, f->ef_k))) return;
    f = &e->s->s_frames[e->depth - 1];
  }
}

/* Encodes n <= 8 scalars at idx.. straight into a message; NULL when one
 * of them is not a scalar. */
static braid_msg_t *encode_scalars(lua_State *L, int idx, int n) {
  scalar_t sc[8];
  size_t len = 1;                                     /* the count */
  for (int i = 0; i < n; i++) {
    size_t sz = scalar_get(L, idx + i, lua_type(L, idx + i), &sc[i]);
    if (sz == 0) return NULL;
    len += sz;
  }
  braid_msg_t *m = braid_msg_alloc(len, 0);
  if (m == NULL) return NULL;
  unsigned char *w = braid__wput_varint(m->m_data, (uint64_t)n);  /* one byte */
  for (int i = 0; i < n; i++) w = put_scalar(&sc[i], w);
  m->m_tag = CODEC_MAGIC;
  return m;
}

/* One small integer (the commonest value) in the pointer, else up to 8
 * scalars; NULL for anything else or out of memory.  idx is absolute. */
static inline braid_msg_t *encode_simple(lua_State *L, int idx, int n) {
  if (n == 1 && lua_isinteger(L, idx)) {
    lua_Integer i = lua_tointeger(L, idx);
    if (i >= BRAID_MSG_IMM_MIN && i <= BRAID_MSG_IMM_MAX) return braid_msg_imm(i);
  }
  return n >= 0 && n <= 8 ? encode_scalars(L, idx, n) : NULL;
}

braid_msg_t *braid__encode_scalars(lua_State *L, int idx, int n) {
  return encode_simple(L, lua_absindex(L, idx), n);
}

braid_msg_t *braid__encode(lua_State *L, int idx, int n, const char *root) {
  idx = lua_absindex(L, idx);
  if (root == NULL) root = "value";
  if (n < 0) n = 0;
  /* Scalars (one small integer the commonest): no scratch, no frames.  Out
   * of memory there, the general way below raises. */
  braid_msg_t *sm = encode_simple(L, idx, n);
  if (sm) return sm;
  if (!lua_checkstack(L, 16)) codec_raise(L, "braid: stack overflow while encoding");
  cstate_t *cs = getcstate(L);
  if (atomic_load_explicit(&tip_state, memory_order_relaxed) == 0) tip_probe(L);
  enc_t e = { L, cs, &cs->cs_s, &cs->cs_busy, root, n, 0, 0, 0, 0, 0, 0 };
  int top = lua_gettop(L);
  if (cs->cs_busy) {
    /* Another encode on this state is in progress (we run in a finalizer
     * called from its allocation): use a private scratch, freed by the GC. */
    scratch_t *s = lua_newuserdatauv(L, sizeof *s, 0);
    memset(s, 0, sizeof *s);
    if (luaL_newmetatable(L, SCRATCH_MT)) {
      lua_pushcfunction(L, scratch_gc);
      lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    e.s = s;
    e.busy = NULL;
  } else {
    cs->cs_busy = 1;
  }
  scratch_t *s = e.s;
  s->s_b.wb_len = 0;
  s->s_nh = 0;
  s->s_nsmall = 0;
  s->s_usehash = 0;
  s->s_hcount = 0;
  if (++s->s_gen == 0) {                              /* wrapped: clear for real */
    if (s->s_hash) memset(s->s_hash, 0, s->s_hashcap * sizeof *s->s_hash);
    s->s_gen = 1;
  }
  wend(&e, braid__wput_varint(reserve(&e, W_VARINT_MAX), (uint64_t)n));
  for (int i = 0; i < n; i++) {
    e.ival = i + 1;
    if (enc_value(&e, idx + i, lua_type(L, idx + i)))
      while (e.depth > 0) step(&e);
  }
  braid_msg_t *m = braid__wmsg(&s->s_b, s->s_hv, s->s_nh, e.flags | braid__wdepth_flags(e.maxdepth));
  if (m == NULL) fail_nomem(&e);
  /* Keep the scratch small between encodes. */
  if (s->s_b.wb_cap > KEEP_BUF) { free(s->s_b.wb_buf); s->s_b.wb_buf = NULL; s->s_b.wb_cap = 0; }
  if (s->s_hashcap > KEEP_SEEN) {
    free(s->s_hash); s->s_hash = NULL; s->s_hashcap = 0; s->s_usehash = 0;
  }
  if (s->s_hcap > KEEP_HANDLES) { free(s->s_hv); s->s_hv = NULL; s->s_hcap = 0; }
  if (s->s_fcap > KEEP_FRAMES) { free(s->s_frames); s->s_frames = NULL; s->s_fcap = 0; }
  s->s_nh = 0;
  if (e.busy) *e.busy = 0;
  lua_settop(L, top);
  return m;
}

/* ------------------------------------------------------------------------ */
/* Decoder                                                                   */

/* An open table or function of the decoder (which, like the encoder,
 * keeps its own stack instead of recursing). */
typedef struct dframe {
  int df_func;                  /* a function (else a table) */
  int df_obj;                   /* stack index of the table or function */
  uint32_t df_arr;              /* table: array values still to come */
  uint32_t df_hash;             /* table: pairs still to come */
  uint32_t df_i;                /* table: index of the next array value */
  int df_valnext;               /* table: a key is on the stack, its value next */
  unsigned df_up, df_nups;      /* function: upvalues set so far, and in all */
} dframe_t;

typedef struct dec {
  lua_State *L;
  cstate_t *cs;                 /* L's codec state, once a short string needs it */
  braid_wrd_t r;                /* the message being read */
  int aux;                      /* stack index of the aux table, or 0: shared
                                   objects at [ord + 1], deep frames at [0] */
  uint32_t nobj;                /* objects met so far */
  dframe_t *frames;             /* DEC_LOCAL_FRAMES on the C stack, then a
                                   userdata held by the aux table */
  size_t fcap;
  int depth;
} dec_t;

NORETURN static void corrupt(dec_t *d) {
  codec_raise(d->L, "braid: corrupt message");
}

/* Gives the new object at the top its ordinal; keeps it when shared. */
static void dec_register(dec_t *d, bool shared) {
  uint32_t ord = d->nobj++;
  if (shared) {
    if (d->aux == 0) corrupt(d);
    lua_pushvalue(d->L, -1);
    lua_rawseti(d->L, d->aux, (lua_Integer)ord + 1);
  }
}

/* Pushes the object of ordinal ord (met before) and returns its type. */
static int dec_getref(dec_t *d, uint64_t ord) {
  if (d->aux == 0 || ord >= d->nobj) corrupt(d);
  int t = lua_rawgeti(d->L, d->aux, (lua_Integer)ord + 1);
  if (t == LUA_TNIL) corrupt(d);
  return t;
}

/* Pushes package.loaded[name] of this state, requiring it if needed. */
static void dec_module(dec_t *d, const char *name, size_t len) {
  lua_State *L = d->L;
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushlstring(L, name, len);
  int t = lua_istable(L, -2) ? lua_rawget(L, -2) : LUA_TNIL;
  if (t == LUA_TNIL || (t == LUA_TBOOLEAN && !lua_toboolean(L, -1))) {
    lua_pop(L, 1);
    if (lua_getglobal(L, "require") != LUA_TFUNCTION) {
      lua_pushlstring(L, name, len);
      codec_raise(L, "braid: cannot load module '%s' (no require)", lua_tostring(L, -1));
    }
    lua_pushlstring(L, name, len);
    lua_call(L, 1, 1);                                /* may raise: not found */
  }
  lua_remove(L, -2);                                  /* package.loaded */
}

typedef struct rd {
  const char *p;
  size_t n;
} rd_t;

static const char *dump_reader(lua_State *L, void *ud, size_t *sz) {
  rd_t *r = ud;
  (void)L;
  const char *p = r->p;
  *sz = r->n;
  r->p = NULL;
  r->n = 0;
  return p;
}

/* Opens a frame for the table or function just pushed. */
static dframe_t *dec_push_frame(dec_t *d) {
  lua_State *L = d->L;
  /* The caller's lua_checkstack(L, 7) left room for the object and 6 more
   * above it: a key, and a value (the most a record pushes is a short
   * string cached for the first time: the string, its copy and luaL_ref's
   * two; or a module lookup: package.loaded, require and its argument, or
   * an error message with two strings), or this function's userdata. */
  if ((size_t)d->depth == d->fcap) {
    /* Past the local frames: a userdata owned by the aux table, so a raise
     * leaks nothing.  Only messages flagged F_DEEP have an aux table. */
    if (d->aux == 0) corrupt(d);
    size_t cap = d->fcap * 2;
    if (cap > SIZE_MAX / sizeof(dframe_t)) corrupt(d);
    dframe_t *nf = lua_newuserdatauv(L, cap * sizeof *nf, 0);
    memcpy(nf, d->frames, d->fcap * sizeof *nf);
    lua_rawseti(L, d->aux, 0);                        /* replaces the old one */
    d->frames = nf;
    d->fcap = cap;
  }
  dframe_t *f = &d->frames[d->depth++];
  f->df_obj = lua_gettop(L);
  return f;
}

/* Loaded functions.  A plain decode loads the dump again (lua_load of a
 * binary chunk: no parsing, but a Proto with its code, constants and debug
 * info is allocated: about 2 600 of a spawn's ~8 400 instructions on its
 * two threads, callgrind, and 208 bytes of every task blocked in
 * `function() return ch:recv() end`).  A task function, a pmap's worker
 * and a handler sent per request arrive again and again with the same
 * bytes, so each state caches the prototypes it loaded (DESIGN.md,
 * "Messages and the codec"): the second time a dump arrives, it is loaded
 * once more as the only child of a small function, the "copier", whose
 * code is
 *
 *     LOADNIL 0 (nups - 1); CLOSURE nups 0; RETURN nups 2 (closing)
 *
 * and whose child's upvalue descriptors are rewritten to capture the
 * copier's registers 0 .. nups - 1 (instack, idx = i).  Each call of the
 * copier makes a new closure of the one loaded prototype, with upvalues of
 * its own (nil, closed by the RETURN) that the decoder then sets, as after
 * a lua_load.  So every transfer is still a distinct closure (API.md) with
 * distinct upvalues; only the immutable prototype is shared, as among the
 * closures one OP_CLOSURE makes in plain Lua.
 *
 * This is the one place the codec knows Lua 5.4's binary format (ldump.c):
 * the header, and the top function's fields up to its upvalues; the three
 * opcodes and the instruction layout have not changed from 5.4.0 to 5.4.8.
 * A dump that does not parse as expected is simply loaded the plain way.
 * The copier runs as Lua code inside the decode: the runtime's preemption
 * hook lets it finish (braid__copying names the state running one, and the
 * running function must also bear the copier's chunk name, so neither a
 * stale mark nor a user's chunk of that name escapes preemption).  It has
 * line information (all zero deltas): Lua 5.4.0's line hook reads it
 * without a check.  What a user can see of it: a debug hook sees one call
 * of "(braid copy)" in each cached decode, and string.dump of a cached
 * copy shows the rewritten upvalue descriptors.
 *
 * The cache: FCACHE_SETS sets of two ways per state, by a hash of the
 * dump, compared byte for byte.  A dump seen for the first time is only
 * remembered (its bytes); the second sighting builds the copier, so a
 * function that never comes back costs one malloc and memcpy, not a second
 * load.  A miss replaces an empty way or one not hit since the last miss
 * passed it (second chance), else nothing: a hot function stays when
 * others that collide come and go.  Dumps over FCACHE_MAXDUMP bytes are
 * not cached. */
enum {
  DUMP_HEADER = 31,             /* signature 4, version, format, LUAC_DATA 6,
                                   3 sizes, LUAC_INT 8, LUAC_NUM 8 */
  OPC_LOADNIL = 8, OPC_RETURN = 70, OPC_CLOSURE = 79,   /* lopcodes.h, 5.4.0 to 5.4.8 */
  COPIER_CODE_MAX = 3
};

/* A cursor over a dump; every read is bounds-checked. */
typedef struct dcur { const unsigned char *p, *end; } dcur_t;

static bool dump_size(dcur_t *c, size_t *out) {          /* ldump.c's dumpSize */
  size_t x = 0;
  while (c->p < c->end) {
    unsigned b = *c->p++;
    if (x > (SIZE_MAX >> 7)) return false;
    x = x << 7 | (b & 0x7f);
    if (b & 0x80) {
      *out = x;
      return true;
    }
  }
  return false;
}

static bool dump_skip(dcur_t *c, size_t n) {
  if ((size_t)(c->end - c->p) < n) return false;
  c->p += n;
  return true;
}

static bool dump_string(dcur_t *c) {
  size_t n;
  return dump_size(c, &n) && (n == 0 || dump_skip(c, n - 1));
}

/* Where the top function's upvalue descriptors start in a dump of this
 * Lua, and how many there are; NULL when the dump is not what is expected
 * (the caller then loads it the plain way). */
static const unsigned char *dump_upvalues(const unsigned char *s, size_t n, size_t *nups) {
  static const unsigned char head[] = { 0x1b, 'L', 'u', 'a',
    (LUA_VERSION_NUM / 100) * 16 + LUA_VERSION_NUM % 100, 0 };
  /* Instruction, lua_Integer and lua_Number sizes: 4, 8, 8 (the 8-byte
   * constants skipped below; a _Static_assert above checks our own). */
  if (n < DUMP_HEADER + 1 || memcmp(s, head, sizeof head) != 0 || s[12] != 4 ||
      s[13] != sizeof(lua_Integer) || s[14] != sizeof(lua_Number))
    return NULL;
  dcur_t c = { s + DUMP_HEADER + 1, s + n };
  size_t x, ncode, nk;
  /* A function without a source (loaded from a stripped dump) would take
   * the copier's as its parent's. */
  if (!dump_size(&c, &x) || x == 0 || !dump_skip(&c, x - 1) ||
      !dump_size(&c, &x) || !dump_size(&c, &x) || !dump_skip(&c, 3) ||
      !dump_size(&c, &ncode) || ncode > n / 4 || !dump_skip(&c, ncode * 4) ||
      !dump_size(&c, &nk) || nk > n)
    return NULL;
  for (size_t i = 0; i < nk; i++) {
    if (c.p >= c.end) return NULL;
    switch (*c.p++) {
      case 0: case 1: case 17: break;                 /* nil, false, true */
      case 3: case 19:                                /* integer, float */
        if (!dump_skip(&c, 8)) return NULL;
        break;
      case 4: case 20:                                /* short, long string */
        if (!dump_string(&c)) return NULL;
        break;
      default: return NULL;
    }
  }
  /* The copier needs nups + 1 registers, at most 255. */
  if (!dump_size(&c, nups) || *nups > 254 || (size_t)(c.end - c.p) < *nups * 3) return NULL;
  return c.p;
}

static uint64_t hash_dump(const unsigned char *s, size_t n) {
  uint64_t h = n * 0x9e3779b97f4a7c15ull, w;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    memcpy(&w, s + i, 8);
    h = (h ^ w) * 0xff51afd7ed558ccdull;
    h ^= h >> 29;
  }
  w = 0;
  memcpy(&w, s + i, n - i);
  h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
  return h ^ h >> 32;
}

static unsigned char *put_size(unsigned char *w, size_t x) {   /* x < 2^14 */
  if (x >= 0x80) *w++ = (unsigned char)(x >> 7);
  *w++ = (unsigned char)(0x80 | (x & 0x7f));
  return w;
}

enum { COPIER_OK, COPIER_NEVER, COPIER_NOMEM };

/* Loads the copier of the function dumped in s (see "Loaded functions")
 * and pushes it (COPIER_OK); else pushes nothing and says whether a later
 * try could succeed (COPIER_NOMEM) or not (the dump is not what is
 * expected). */
static int load_copier(lua_State *L, const unsigned char *s, size_t n) {
  size_t nups;
  const unsigned char *uv = dump_upvalues(s, n, &nups);
  if (uv == NULL) return COPIER_NEVER;
  static const char name[] = BRAID_COPIER_NAME;
  size_t cap = n + sizeof name + 32 + COPIER_CODE_MAX * 5;
  unsigned char *b = malloc(cap), *w = b;
  if (b == NULL) return COPIER_NOMEM;
  memcpy(w, s, DUMP_HEADER);                          /* the dump's own header */
  w += DUMP_HEADER;
  *w++ = 0;                                           /* the copier has no upvalues */
  w = put_size(w, sizeof name);                       /* its source: size + 1, bytes */
  memcpy(w, name, sizeof name - 1);
  w += sizeof name - 1;
  w = put_size(w, 0);                                 /* linedefined */
  w = put_size(w, 0);                                 /* lastlinedefined */
  *w++ = 0;                                           /* numparams */
  *w++ = 0;                                           /* is_vararg */
  *w++ = (unsigned char)(nups + 1 < 2 ? 2 : nups + 1);   /* maxstacksize */
  uint32_t code[COPIER_CODE_MAX];
  int nc = 0;
  uint32_t a = (uint32_t)nups;
  if (nups > 0) code[nc++] = OPC_LOADNIL | 0u << 7 | (a - 1) << 16;   /* R[0..nups-1] = nil */
  code[nc++] = OPC_CLOSURE | a << 7 | 0u << 15;                          /* R[nups] = closure(P[0]) */
  code[nc++] = OPC_RETURN | a << 7 | 1u << 15 | 2u << 16;                /* return R[nups], closing */
  w = put_size(w, (size_t)nc);
  memcpy(w, code, (size_t)nc * 4);                    /* native order, as the header says */
  w += nc * 4;
  w = put_size(w, 0);                                 /* constants */
  w = put_size(w, 0);                                 /* upvalues */
  w = put_size(w, 1);                                 /* protos: the function */
  size_t uvoff = (size_t)(uv - s);
  memcpy(w, s + DUMP_HEADER + 1, n - DUMP_HEADER - 1);
  unsigned char *cuv = w + (uvoff - DUMP_HEADER - 1);
  for (size_t i = 0; i < nups; i++) {                 /* instack, idx; kind kept */
    cuv[3 * i] = 1;
    cuv[3 * i + 1] = (unsigned char)i;
  }
  w += n - DUMP_HEADER - 1;
  w = put_size(w, (size_t)nc);                        /* lineinfo: a zero delta each */
  memset(w, 0, (size_t)nc);
  w += nc;
  for (int i = 0; i < 3; i++) w = put_size(w, 0);     /* abslineinfo, locvars, upvalue names */
  rd_t r = { (const char *)b, (size_t)(w - b) };
  int st = lua_load(L, dump_reader, &r, BRAID_COPIER_NAME, "b");
  free(b);
  if (st != LUA_OK) {
    lua_pop(L, 1);                                    /* the error message */
    return st == LUA_ERRMEM ? COPIER_NOMEM : COPIER_NEVER;
  }
  return COPIER_OK;
}

BRAID_TLS_HOT _Thread_local lua_State *braid__copying;

/* Pushes a new closure of the function dumped in s from the cache and
 * returns true, or returns false (pushing nothing) for the caller to load
 * it.  No Lua code runs between finding the way and the copier's call
 * (lua_load of a binary chunk and luaL_ref take no GC step in 5.4); the
 * copier itself may run finalizers (its closure is an allocation), which
 * may decode again, but the way is not touched after it. */
static bool fcache_push(dec_t *d, const unsigned char *s, size_t n) {
  lua_State *L = d->L;
  if (n > FCACHE_MAXDUMP || n <= DUMP_HEADER) return false;
  if (d->cs == NULL) d->cs = getcstate(L);
  if (d->cs->cs_closed) return false;
  uint64_t h = hash_dump(s, n);
  fent_t *set = d->cs->cs_fns[h & (FCACHE_SETS - 1)], *e = NULL;
  for (int w = 0; w < 2; w++) {
    fent_t *c = &set[w];
    if (c->fe_len == n && c->fe_hash == h && memcmp(c->fe_dump, s, n) == 0) e = c;
  }
  if (e == NULL) {                                    /* a miss: the first sighting */
    for (int w = 0; w < 2 && e == NULL; w++) {
      fent_t *c = &set[w];
      if (c->fe_len == 0 || !c->fe_recent) e = c;
      else c->fe_recent = false;                      /* its second chance */
    }
    if (e == NULL) return false;
    unsigned char *copy = malloc(n);
    if (copy == NULL) return false;
    memcpy(copy, s, n);
    if (e->fe_ref > 0) luaL_unref(L, LUA_REGISTRYINDEX, e->fe_ref);
    free(e->fe_dump);
    e->fe_dump = copy;
    e->fe_len = n;
    e->fe_hash = h;
    e->fe_ref = 0;
    e->fe_recent = false;
    return false;
  }
  e->fe_recent = true;
  if (e->fe_ref < 0) return false;
  if (e->fe_ref == 0) {                               /* the second: make the copier */
    int st = load_copier(L, s, n);
    if (st != COPIER_OK) {
      if (st == COPIER_NEVER) e->fe_ref = -1;         /* out of memory: try again later */
      return false;
    }
    lua_pushvalue(L, -1);
    e->fe_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  } else {
    lua_rawgeti(L, LUA_REGISTRYINDEX, e->fe_ref);
  }
  braid__copying = L;
  lua_call(L, 0, 1);                                  /* the copier: a new closure */
  braid__copying = NULL;
  return true;
}

static int dec_function(dec_t *d, const braid_wtok_t *t) {
  lua_State *L = d->L;
  rd_t r;
  r.n = t->wt_len;
  r.p = t->wt_s;
  if (!lua_checkstack(L, 7)) codec_raise(L, "braid: value nested too deep to decode");
  if (!fcache_push(d, (const unsigned char *)t->wt_s, t->wt_len) &&
      lua_load(L, dump_reader, &r, "=braid", "b") != LUA_OK) {
    lua_pop(L, 1);  /* the error message */
    corrupt(d);
  }
  dec_register(d, t->wt_shared);
  unsigned nups = t->wt_nups;
  if (nups == 0) return 0;
  dframe_t *f = dec_push_frame(d);
  f->df_func = 1;
  f->df_up = 0;
  f->df_nups = nups;
  return 1;
}

/* Short strings.  Lua interns every short string: lua_pushlstring hashes
 * all of its bytes and walks a chain of the string table with memcmp,
 * about 150 instructions for "name" or "San Francisco" (callgrind), and the
 * field names and tags of a record are the same strings in every message.
 * So each state keeps a cache of short strings (up to SCACHE_MAXLEN bytes),
 * each held by a registry slot of its own: a hit is a hash of two words
 * and one lua_rawgeti of the registry.  The two words (str_words) hold
 * every byte of a string that short, so equal words and lengths are equal
 * strings, with no memcmp.  A set holds two strings and one candidate: a
 * string that misses becomes the candidate, and the next miss of the same
 * string promotes it into the older way, so strings that never repeat
 * (ids, random keys) cost a few stores each and never evict the field
 * names.  Lua code can run only inside lua_pushlstring (a finalizer called
 * by its allocation, which may decode again): every field of the set is
 * read again after it, and nothing between choosing a way and storing its
 * fields runs Lua (luaL_ref and lua_rawseti call no finalizer), so a live
 * way always names a slot that holds its own string; a nested decode may
 * at worst leave a registry slot orphaned. */
static inline void str_words(const char *s, size_t len, uint64_t *a, uint64_t *b) {
  if (len >= 8) {                                     /* [0, 8) and [len - 8, len) */
    memcpy(a, s, 8);
    memcpy(b, s + len - 8, 8);
  } else if (len >= 4) {                              /* [0, 4) and [len - 4, len) */
    uint32_t x, y;
    memcpy(&x, s, 4);
    memcpy(&y, s + len - 4, 4);
    *a = x;
    *b = y;
  } else {                                            /* 1 to 3 bytes */
    *a = (uint64_t)(unsigned char)s[0] | (uint64_t)(unsigned char)s[len >> 1] << 8 |
         (uint64_t)(unsigned char)s[len - 1] << 16;
    *b = 0;
  }
}

/* Pushes the string of len bytes, 1 <= len <= SCACHE_MAXLEN.  Out of line:
 * inlined, its calls made dec_scalar save registers for every number too
 * (callgrind: decode 191.8 -> 189.6 M instructions for 50 000 tables). */
static BRAID_NOINLINE void push_short(dec_t *d, const char *s, size_t len) {
  lua_State *L = d->L;
  if (d->cs == NULL) d->cs = getcstate(L);
  uint64_t a, b;
  str_words(s, len, &a, &b);
  uint64_t h = a * 0x9e3779b97f4a7c15ull ^ (b + len) * 0xc2b2ae3d27d4eb4full;
  h = (h ^ (h >> 32)) * 0xff51afd7ed558ccdull;
  sset_t *st = &d->cs->cs_strs[h >> (64 - SCACHE_BITS)];
  for (int w = 0; w < 2; w++) {
    if (st->ss_len[w] == len && st->ss_a[w] == a && st->ss_b[w] == b) {
      lua_rawgeti(L, LUA_REGISTRYINDEX, st->ss_ref[w]);
      return;
    }
  }
  lua_pushlstring(L, s, len);
  if (st->ss_glen != len || st->ss_ga != a || st->ss_gb != b) {  /* the first miss */
    st->ss_ga = a;
    st->ss_gb = b;
    st->ss_glen = (uint8_t)len;
    return;
  }
  int w = st->ss_len[0] == 0 ? 0 : st->ss_len[1] == 0 ? 1 : st->ss_victim;
  lua_pushvalue(L, -1);
  int ref = st->ss_ref[w];
  if (ref) lua_rawseti(L, LUA_REGISTRYINDEX, ref);    /* an existing slot: no allocation */
  else ref = luaL_ref(L, LUA_REGISTRYINDEX);
  st->ss_a[w] = a;
  st->ss_b[w] = b;
  st->ss_len[w] = (uint8_t)len;
  st->ss_ref[w] = ref;
  st->ss_victim = (uint8_t)(w ^ 1);
  st->ss_glen = 0;
}

/* Pushes the next record if it is a scalar (nil, a boolean, a number, a
 * string) and returns its type; else returns 0 with the reader back where
 * it was (the record is read again the general way). */
static unsigned dec_scalar(dec_t *d) {
  lua_State *L = d->L;
  const unsigned char *at = d->r.wr_p;
  unsigned type;
  bool shared;
  if (!braid__wrd_tag(&d->r, &type, &shared)) corrupt(d);
  switch (type) {
    case T_STR: {
      const char *s;
      size_t len;
      if (!braid__wrd_str(&d->r, &s, &len)) corrupt(d);
      if (len - 1 < SCACHE_MAXLEN) push_short(d, s, len);   /* 1 .. SCACHE_MAXLEN */
      else lua_pushlstring(L, s, len);
      return T_STR;
    }
    case T_INT: {
      int64_t i;
      if (!braid__wrd_int(&d->r, &i)) corrupt(d);
      lua_pushinteger(L, (lua_Integer)i);
      return T_INT;
    }
    case T_FLT: {
      double n;
      if (!braid__wrd_flt(&d->r, &n)) corrupt(d);
      lua_pushnumber(L, (lua_Number)n);
      return T_FLT;
    }
    case T_TRUE: case T_FALSE:
      lua_pushboolean(L, type == T_TRUE);
      return type;
    case T_NIL:
      lua_pushnil(L);
      return T_NIL;
    default:
      d->r.wr_p = at;
      return 0;
  }
}

/* The key just pushed (its record's tag is t) must be a valid table key:
 * not nil, not NaN. */
static void dec_check_key(dec_t *d, unsigned t) {
  if (t == T_NIL) corrupt(d);
  if (t == T_FLT) {
    lua_Number k = lua_tonumber(d->L, -1);
    if (k != k) corrupt(d);                           /* NaN key */
  }
}

/* Opens a table: its leading scalar entries go straight in (most tables
 * sent are records of strings and numbers: no frame, no dec_deliver per
 * field); from the first entry that is anything else, a frame takes the
 * rest. */
static int dec_table(dec_t *d, const braid_wtok_t *t) {
  lua_State *L = d->L;
  uint32_t narr = t->wt_narr, nhash = t->wt_nhash;     /* <= INT32_MAX (wire.h) */
  if (!lua_checkstack(L, 7)) codec_raise(L, "braid: value nested too deep to decode");
  lua_createtable(L, (int)narr, (int)nhash);           /* presized: the counts are exact */
  dec_register(d, t->wt_shared);
  uint32_t i = 1;
  for (; narr > 0; narr--, i++) {
    if (!dec_scalar(d)) break;
    lua_rawseti(L, -2, (lua_Integer)i);
  }
  if (narr == 0) {
    for (; nhash > 0; nhash--) {
      const unsigned char *at = d->r.wr_p;
      unsigned kt = dec_scalar(d);
      if (!kt) break;
      dec_check_key(d, kt);
      if (!dec_scalar(d)) {                           /* the pair goes the general way */
        lua_pop(L, 1);
        d->r.wr_p = at;
        break;
      }
      lua_rawset(L, -3);
    }
  }
  if (narr == 0 && nhash == 0) return 0;
  dframe_t *f = dec_push_frame(d);
  f->df_func = 0;
  f->df_arr = narr;
  f->df_hash = nhash;
  f->df_i = i;
  f->df_valnext = 0;
  return 1;
}

/* Puts the value just pushed (its record's tag is t) into the innermost
 * open container, then closes every container that is complete, each
 * going into its own parent.  At depth 0 the value is a result and stays. */
static void dec_deliver(dec_t *d, unsigned t) {
  lua_State *L = d->L;
  while (d->depth > 0) {
    dframe_t *f = &d->frames[d->depth - 1];
    if (f->df_func) {
      if (lua_setupvalue(L, f->df_obj, (int)++f->df_up) == NULL) corrupt(d);  /* pops it */
      if (f->df_up < f->df_nups) return;
    } else if (f->df_arr) {
      if (t == T_NIL) lua_pop(L, 1);                  /* never encoded; harmless */
      else lua_rawseti(L, f->df_obj, (lua_Integer)f->df_i);
      f->df_i++;
      if (--f->df_arr || f->df_hash) return;
    } else if (!f->df_valnext) {                      /* a key */
      dec_check_key(d, t);
      f->df_valnext = 1;
      return;
    } else {
      lua_rawset(L, f->df_obj);
      f->df_valnext = 0;
      if (--f->df_hash) return;
    }
    /* f is complete, and at the top of the stack: deliver it. */
    t = f->df_func ? T_FUNC : T_TABLE;
    d->depth--;
  }
}

/* Reads one record: pushes a value and delivers it, or opens a frame. */
static void dec_record(dec_t *d) {
  lua_State *L = d->L;
  /* Scalars (most records) without a token. */
  unsigned type = dec_scalar(d);
  if (type) goto deliver;
  bool shared;
  if (!braid__wrd_tag(&d->r, &type, &shared)) corrupt(d);
  braid_wtok_t t;
  if (!braid__wrd_body(&d->r, type, shared, &t)) corrupt(d);
  dframe_t *f = d->depth ? &d->frames[d->depth - 1] : NULL;
  int upvalue = f && f->df_func;
  switch (t.wt_type) {
    case T_TABLE:
      if (dec_table(d, &t)) return;
      break;
    case T_FUNC:
      if (dec_function(d, &t)) return;
      break;
    case T_HANDLE:
      braid__pushhandle(L, d->r.wr_m->m_handles[t.wt_ord]);
      dec_register(d, t.wt_shared);
      break;
    case T_REF: dec_getref(d, t.wt_ord); break;
    case T_MODULE: case T_MODFIELD: {
      const char *name = t.wt_s, *key = t.wt_key;
      size_t len = t.wt_len, klen = t.wt_keylen;
      dec_module(d, name, len);
      if (key) {
        if (lua_type(L, -1) != LUA_TTABLE ||
            (lua_pushlstring(L, key, klen), lua_rawget(L, -2)) == LUA_TNIL) {
          lua_pushlstring(L, name, len);
          lua_pushlstring(L, key, klen);
          codec_raise(L, "braid: module '%s' has no field '%s' in the receiving state",
                      lua_tostring(L, -2), lua_tostring(L, -1));
        }
        lua_remove(L, -2);                            /* the module */
      }
      /* Only if require returned nil: keep the key checks sound. */
      if (lua_isnil(L, -1)) corrupt(d);
      break;
    }
    case T_ENV:                                       /* upvalues only */
      if (!upvalue) corrupt(d);
      braid__pushenv(L);
      break;
    case T_UPREF: {                                   /* upvalues only */
      if (!upvalue) corrupt(d);
      int up = (int)t.wt_up;                          /* 1..255 (wire.h) */
      if (dec_getref(d, t.wt_ord) != LUA_TFUNCTION || lua_iscfunction(L, -1) ||
          lua_getupvalue(L, -1, up) == NULL)
        corrupt(d);
      lua_pop(L, 1);                                  /* its value */
      int i = (int)f->df_up + 1;
      if (lua_getupvalue(L, f->df_obj, i) == NULL) corrupt(d);
      lua_pop(L, 1);
      lua_upvaluejoin(L, f->df_obj, i, -1, up);
      /* Deliver the function itself in place of a value: setting the
       * upvalue to it would undo the join, so set it to the value it now
       * shares (a no-op store). */
      lua_pop(L, 1);
      lua_getupvalue(L, f->df_obj, i);
      break;
    }
    default:
      corrupt(d);
  }
deliver:
  dec_deliver(d, type);
}

/* Decodes up to max values (all when max < 0); returns how many. */
static int decode(lua_State *L, braid_msg_t *m, int max) {
  if (m != NULL && braid_msg_is_imm(m)) {             /* one integer */
    if (max == 0) return 0;
    lua_pushinteger(L, braid_msg_imm_value(m));
    return 1;
  }
  dframe_t local[DEC_LOCAL_FRAMES];
  dec_t d;
  d.L = L;
  d.cs = NULL;
  d.aux = 0;
  d.nobj = 0;
  d.frames = local;
  d.fcap = DEC_LOCAL_FRAMES;
  d.depth = 0;
  size_t n;
  if (!braid__wopen(&d.r, m, &n)) corrupt(&d);
  if (max >= 0 && n > (size_t)max) n = (size_t)max;
  if (n > INT32_MAX / 2 || !lua_checkstack(L, (int)n + 8))
    codec_raise(L, "braid: too many values to decode");
  int base = lua_gettop(L);
  if (m->m_tag & (F_REFS | F_DEEP)) {
    lua_newtable(L);
    d.aux = base + 1;
  }
  for (size_t i = 0; i < n;) {
    dec_record(&d);
    if (d.depth == 0) i++;
  }
  if (max < 0 && !braid__wrd_done(&d.r)) corrupt(&d);  /* trailing bytes */
  if (d.aux) lua_remove(L, d.aux);
  return (int)n;
}

int braid__decode(lua_State *L, braid_msg_t *m) {
  return decode(L, m, -1);
}

int braid__decode1(lua_State *L, braid_msg_t *m) {
  if (decode(L, m, 1) == 0) lua_pushnil(L);
  return 1;
}

/* ------------------------------------------------------------------------ */
/* braid._roundtrip                                                          */

static int box_gc(lua_State *L) {
  braid_msg_t **box = lua_touserdata(L, 1);
  if (box && *box) {
    braid_msg_release(*box);
    *box = NULL;
  }
  return 0;
}

int braid__l_roundtrip(lua_State *L) {
  int n = lua_gettop(L);
  /* The box releases the message if decoding raises. */
  braid_msg_t **box = lua_newuserdatauv(L, sizeof *box, 0);
  *box = NULL;
  if (luaL_newmetatable(L, BOX_MT)) {
    lua_pushcfunction(L, box_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  *box = braid__encode(L, 1, n, "value");
  int r = braid__decode(L, *box);
  braid_msg_release(*box);
  *box = NULL;
  return r;
}
