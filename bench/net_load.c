/*
 * net_load.c -- echo load generator for bench/net.lua: N connections, each
 * sends a fixed-size message and waits for it to come back, for a bounded
 * time; prints round trips per second and the p99 round trip.
 *
 *   bench_net_load HOST:PORT [connections=100] [bytes=64] [seconds=10]
 *
 * One thread, non-blocking sockets, level-triggered epoll.  Run without
 * arguments (as scripts/bench.sh does for every bench_*) it only says how
 * it is meant to be run.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

typedef struct conn {
  int fd;
  size_t got;
  int64_t sent_at;
} conn_t;

static int cmp64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    printf("bench_net_load: run by bench/net.lua (HOST:PORT [conns] [bytes] [seconds])\n");
    return 0;
  }
  char host[64];
  const char *colon = strrchr(argv[1], ':');
  if (!colon || (size_t)(colon - argv[1]) >= sizeof host) { fprintf(stderr, "bad address\n"); return 2; }
  memcpy(host, argv[1], (size_t)(colon - argv[1]));
  host[colon - argv[1]] = 0;
  int port = atoi(colon + 1);
  int n = argc > 2 ? atoi(argv[2]) : 100;
  size_t size = argc > 3 ? (size_t)atoi(argv[3]) : 64;
  double secs = argc > 4 ? atof(argv[4]) : 10;
  if (n < 1 || size < 1 || size > 65536 || !(secs > 0)) { fprintf(stderr, "bad arguments\n"); return 2; }
  struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
  if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) { fprintf(stderr, "IPv4 address expected\n"); return 2; }

  int ep = epoll_create1(0);
  conn_t *cs = calloc((size_t)n, sizeof *cs);
  char *msg = malloc(size), *buf = malloc(65536);
  memset(msg, 'm', size);
  size_t cap = 1 << 20, nlat = 0;
  int64_t *lat = malloc(cap * sizeof *lat);
  for (int i = 0; i < n; i++) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) { perror("connect"); return 1; }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    cs[i].fd = fd;
    struct epoll_event e = { .events = EPOLLIN, .data.ptr = &cs[i] };
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
  }
  int64_t start = now_ns(), end = start + (int64_t)(secs * 1e9);
  for (int i = 0; i < n; i++) {
    cs[i].sent_at = now_ns();
    if (write(cs[i].fd, msg, size) != (ssize_t)size) { perror("write"); return 1; }
  }
  uint64_t trips = 0;
  struct epoll_event ev[256];
  while (now_ns() < end) {
    int k = epoll_wait(ep, ev, 256, 100);
    for (int j = 0; j < k; j++) {
      conn_t *c = ev[j].data.ptr;
      ssize_t r = read(c->fd, buf, 65536);
      if (r <= 0) {
        if (r < 0 && errno == EAGAIN) continue;
        fprintf(stderr, "connection closed by the server\n");
        return 1;
      }
      c->got += (size_t)r;
      if (c->got >= size) {
        int64_t t = now_ns();
        if (nlat < cap) lat[nlat++] = t - c->sent_at;
        trips++;
        c->got -= size;
        c->sent_at = t;
        if (write(c->fd, msg, size) != (ssize_t)size) { perror("write"); return 1; }
      }
    }
  }
  double el = (double)(now_ns() - start) / 1e9;
  qsort(lat, nlat, sizeof *lat, cmp64);
  double p99 = nlat ? (double)lat[(size_t)((double)nlat * 0.99)] / 1e3 : 0;
  printf("connections %d, %zu-byte messages, %.1f s: %.0f round trips/s, p99 %.0f us\n",
         n, size, el, (double)trips / el, p99);
  for (int i = 0; i < n; i++) close(cs[i].fd);
  close(ep);
  free(cs); free(msg); free(buf); free(lat);
  return 0;
}
