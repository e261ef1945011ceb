/*
 * netbuf.h -- a connection's read-ahead buffer and its framing (lines,
 * counts), with no sockets: the fuzzer drives it directly.
 *
 * Design notes
 *
 * Bytes live in one heap block [nb_buf + nb_off, + nb_len).  A reader asks
 * for a frame; when the buffer cannot satisfy it, more bytes are appended
 * (braid_netbuf_space + braid_netbuf_commit) and the frame is asked again.
 * A line search remembers how far it has scanned (nb_scan), so a line that
 * arrives in many pieces is scanned once with memchr, never byte by byte
 * and never copied per piece.  Nothing is consumed until a frame is taken:
 * a read that gives up (timeout) leaves every byte for the next read.
 */
#ifndef BRAID_NETBUF_H
#define BRAID_NETBUF_H

#include <stdbool.h>
#include <stddef.h>

typedef struct braid_netbuf {
  char *nb_buf;
  size_t nb_off, nb_len, nb_cap;
  size_t nb_scan;             /* bytes from nb_off known to hold no '\n' */
} braid_netbuf_t;

enum { BRAID_NETBUF_CHUNK = 16384 };

void braid_netbuf_init(braid_netbuf_t *b);
void braid_netbuf_free(braid_netbuf_t *b);

/* Room for at least min more bytes at the end; returns a pointer to it and
 * sets *avail, or NULL when out of memory. */
char *braid_netbuf_space(braid_netbuf_t *b, size_t min, size_t *avail);
void braid_netbuf_commit(braid_netbuf_t *b, size_t n);

/* Frames.  Each returns the frame's length (bytes to take with
 * braid_netbuf_take), or 0 when the buffer cannot satisfy it yet.
 * line: through the first '\n' (*strip set to the bytes of "\n"/"\r\n"). */
size_t braid_netbuf_line(braid_netbuf_t *b, size_t *strip);

/* The first n bytes: returns a pointer to them and drops them from the
 * buffer (valid until the next call on b). */
const char *braid_netbuf_take(braid_netbuf_t *b, size_t n);

static inline size_t braid_netbuf_len(const braid_netbuf_t *b) { return b->nb_len; }

/* Frees the block when it is empty (idle connections cost nothing). */
void braid_netbuf_trim(braid_netbuf_t *b);

#endif
