/*
 * nats_ref.c -- the nats.c baseline of bench/nats.lua: request/reply round
 * trips (a nats.c responder on another connection) and publish throughput
 * of 100-byte strings to one subscriber, through a local nats-server.
 *
 *   bench_nats_ref URL [ROUNDTRIPS [MESSAGES]]
 * prints "rr_per_s <n>" and "pub_per_s <n>".
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nats/nats.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static natsConnection *responder_nc;
static _Atomic long received;

static void on_req(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *c) {
  natsConnection_Publish(responder_nc, natsMsg_GetReply(m), natsMsg_GetData(m), natsMsg_GetDataLength(m));
  natsMsg_Destroy(m);
}

static void on_msg(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *c) {
  atomic_fetch_add_explicit(&received, 1, memory_order_relaxed);
  natsMsg_Destroy(m);
}

int main(int argc, char **argv) {
  const char *url = argc > 1 ? argv[1] : "nats://127.0.0.1:4222";
  int rounds = argc > 2 ? atoi(argv[2]) : 5000;
  long msgs = argc > 3 ? atol(argv[3]) : 200000;
  natsConnection *a = NULL, *b = NULL;
  if (natsConnection_ConnectTo(&a, url) != NATS_OK || natsConnection_ConnectTo(&b, url) != NATS_OK) {
    fprintf(stderr, "connect failed\n");
    return 1;
  }
  responder_nc = b;
  natsSubscription *rs = NULL, *ps = NULL;
  natsConnection_Subscribe(&rs, b, "bench.echo", on_req, NULL);
  natsConnection_Flush(b);
  double t0 = now();
  for (int i = 0; i < rounds; i++) {
    natsMsg *reply = NULL;
    if (natsConnection_RequestString(&reply, a, "bench.echo", "ping", 5000) != NATS_OK) {
      fprintf(stderr, "request failed\n");
      return 1;
    }
    natsMsg_Destroy(reply);
  }
  printf("rr_per_s %.0f\n", rounds / (now() - t0));
  natsConnection_Subscribe(&ps, b, "bench.pub", on_msg, NULL);
  natsSubscription_SetPendingLimits(ps, -1, -1);
  natsConnection_Flush(b);
  char payload[100];
  memset(payload, 'x', sizeof payload);
  t0 = now();
  for (long i = 0; i < msgs; i++) natsConnection_Publish(a, "bench.pub", payload, sizeof payload);
  natsConnection_Flush(a);
  while (atomic_load(&received) < msgs && now() - t0 < 60) {
    struct timespec ts = { 0, 1000000 };
    nanosleep(&ts, NULL);
  }
  printf("pub_per_s %.0f\n", atomic_load(&received) / (now() - t0));
  natsSubscription_Destroy(rs);
  natsSubscription_Destroy(ps);
  natsConnection_Destroy(a);
  natsConnection_Destroy(b);
  nats_Close();
  return 0;
}
