/*
 * netbuf.c -- read-ahead buffer and framing (netbuf.h).
 *
 * Design notes
 *
 * Appending compacts (moves the live bytes to the front) only when the
 * free tail is too small and the dead head is at least half the block;
 * otherwise the block doubles.  So each byte is moved O(1) times on
 * average, whatever the split points of the stream.
 */
#include <stdlib.h>
#include <string.h>

#include "netbuf.h"

void braid_netbuf_init(braid_netbuf_t *b) { memset(b, 0, sizeof *b); }

void braid_netbuf_free(braid_netbuf_t *b) {
  free(b->nb_buf);
  memset(b, 0, sizeof *b);
}

char *braid_netbuf_space(braid_netbuf_t *b, size_t min, size_t *avail) {
  size_t end = b->nb_off + b->nb_len;
  if (b->nb_cap - end < min) {
    if (b->nb_off > 0 && b->nb_cap - b->nb_len >= min && b->nb_off >= b->nb_cap / 2) {
      memmove(b->nb_buf, b->nb_buf + b->nb_off, b->nb_len);
      b->nb_off = 0;
    } else {
      size_t cap = b->nb_cap ? b->nb_cap : BRAID_NETBUF_CHUNK;
      while (cap - b->nb_len < min) cap *= 2;
      char *nbuf = malloc(cap);
      if (nbuf == NULL) return NULL;
      if (b->nb_len) memcpy(nbuf, b->nb_buf + b->nb_off, b->nb_len);
      free(b->nb_buf);
      b->nb_buf = nbuf;
      b->nb_cap = cap;
      b->nb_off = 0;
    }
    end = b->nb_len;
  }
  *avail = b->nb_cap - end;
  return b->nb_buf + end;
}

void braid_netbuf_commit(braid_netbuf_t *b, size_t n) { b->nb_len += n; }

size_t braid_netbuf_line(braid_netbuf_t *b, size_t *strip) {
  const char *p = b->nb_buf + b->nb_off;
  if (b->nb_scan > b->nb_len) b->nb_scan = 0;
  const char *nl = b->nb_len > b->nb_scan
                       ? memchr(p + b->nb_scan, '\n', b->nb_len - b->nb_scan) : NULL;
  if (nl == NULL) {
    b->nb_scan = b->nb_len;
    return 0;
  }
  size_t n = (size_t)(nl - p) + 1;
  *strip = (n >= 2 && p[n - 2] == '\r') ? 2 : 1;
  return n;
}

const char *braid_netbuf_take(braid_netbuf_t *b, size_t n) {
  const char *p = b->nb_buf + b->nb_off;
  if (n > b->nb_len) n = b->nb_len;
  b->nb_off += n;
  b->nb_len -= n;
  b->nb_scan = 0;
  if (b->nb_len == 0) b->nb_off = 0;  /* p stays valid: nothing is freed */
  return p;
}

void braid_netbuf_trim(braid_netbuf_t *b) {
  if (b->nb_len == 0 && b->nb_buf) {
    free(b->nb_buf);
    b->nb_buf = NULL;
    b->nb_cap = b->nb_off = b->nb_scan = 0;
  }
}
