/*
 * fuzz_netread.c -- libFuzzer target for braid.net's read-ahead buffer and
 * framing (core/netbuf.c): a random byte stream, cut at random split points,
 * is appended piece by piece while line and count readers take frames; every
 * frame is checked against a plain scan of the whole stream.
 *
 * Input: byte 0 seeds the split points and the reader choice, the rest is
 * the stream.  Built with clang only (CMake: fuzz_netread), run bounded by
 * ctest (-runs=20000).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "netbuf.h"

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "check failed: %s (line %d)\n", #c, __LINE__); abort(); } } while (0)

static uint32_t rng(uint32_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 17;
  *s ^= *s << 5;
  return *s;
}

/* Takes every frame the buffer can give now.  pos: bytes of the stream
 * consumed so far; fed: bytes appended so far. */
static void drain(braid_netbuf_t *b, const uint8_t *st, size_t fed, size_t *pos, uint32_t *r,
                  bool eof) {
  for (;;) {
    CHECK(braid_netbuf_len(b) == fed - *pos);
    bool line = rng(r) & 1;
    if (line) {
      const uint8_t *nl = memchr(st + *pos, '\n', fed - *pos);
      size_t strip = 0, n = braid_netbuf_line(b, &strip);
      if (nl == NULL) {
        CHECK(n == 0);
        if (eof && fed > *pos) {      /* the last, unterminated line */
          size_t left = fed - *pos;
          const char *p = braid_netbuf_take(b, left);
          CHECK(memcmp(p, st + *pos, left) == 0);
          *pos = fed;
        }
        return;
      }
      size_t want = (size_t)(nl - (st + *pos)) + 1;
      CHECK(n == want);
      CHECK(strip == ((want >= 2 && st[*pos + want - 2] == '\r') ? 2u : 1u));
      const char *p = braid_netbuf_take(b, n);
      CHECK(memcmp(p, st + *pos, n) == 0);
      *pos += n;
    } else {
      size_t want = 1 + rng(r) % 64;
      size_t have = fed - *pos;
      if (have < want && !(eof && have > 0)) return;
      size_t n = have < want ? have : want;
      const char *p = braid_netbuf_take(b, n);
      CHECK(memcmp(p, st + *pos, n) == 0);
      *pos += n;
    }
    if (*pos == fed) {
      braid_netbuf_trim(b);
      if (rng(r) & 1) return;
    }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  uint32_t r = 0x9E3779B9u ^ data[0];
  const uint8_t *st = data + 1;
  size_t total = size - 1, fed = 0, pos = 0;
  braid_netbuf_t b;
  braid_netbuf_init(&b);
  while (fed < total) {
    size_t piece = 1 + rng(&r) % 97;
    if (piece > total - fed) piece = total - fed;
    size_t avail;
    char *p = braid_netbuf_space(&b, rng(&r) % 3 == 0 ? 1 : 4096, &avail);
    CHECK(p != NULL);
    if (piece > avail) piece = avail;
    memcpy(p, st + fed, piece);
    braid_netbuf_commit(&b, piece);
    fed += piece;
    drain(&b, st, fed, &pos, &r, false);
  }
  drain(&b, st, fed, &pos, &r, true);
  while (pos < fed) drain(&b, st, fed, &pos, &r, true);
  CHECK(braid_netbuf_len(&b) == 0);
  braid_netbuf_free(&b);
  return 0;
}
