/*
 * nats_peer.c -- a plain nats.c client, no braid: proves that a non-braid
 * NATS client talks to a braid service (tests/lua/nats_spec.lua).
 *
 *   nats_peer URL request SUBJECT DATA [TIMEOUT_MS]
 *       sends DATA (with content-type: application/json when it starts
 *       with '{' or '['), prints "<content-type or ->\n<reply data>" and
 *       exits 0; exits 2 on a timeout, 3 on no responders, 1 otherwise.
 *   nats_peer URL publish SUBJECT DATA
 *       publishes DATA as it is, flushes, exits 0.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nats/nats.h>

int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: %s URL request|publish SUBJECT DATA [TIMEOUT_MS]\n", argv[0]);
    return 1;
  }
  const char *url = argv[1], *mode = argv[2], *subject = argv[3], *data = argv[4];
  int64_t timeout = argc > 5 ? atoll(argv[5]) : 2000;
  natsConnection *nc = NULL;
  natsStatus st = natsConnection_ConnectTo(&nc, url);
  if (st != NATS_OK) {
    fprintf(stderr, "connect: %s\n", natsStatus_GetText(st));
    return 1;
  }
  int rc = 0;
  if (strcmp(mode, "publish") == 0) {
    st = natsConnection_PublishString(nc, subject, data);
    if (st == NATS_OK) st = natsConnection_FlushTimeout(nc, timeout);
    if (st != NATS_OK) rc = 1;
  } else {
    natsMsg *req = NULL, *reply = NULL;
    st = natsMsg_Create(&req, subject, NULL, data, (int)strlen(data));
    if (st == NATS_OK && (data[0] == '{' || data[0] == '['))
      st = natsMsgHeader_Set(req, "content-type", "application/json");
    if (st == NATS_OK) st = natsConnection_RequestMsg(&reply, nc, req, timeout);
    if (st == NATS_OK) {
      const char *ct = NULL;
      if (natsMsgHeader_Get(reply, "content-type", &ct) != NATS_OK) ct = "-";
      printf("%s\n%.*s", ct, natsMsg_GetDataLength(reply), natsMsg_GetData(reply));
      natsMsg_Destroy(reply);
    } else {
      rc = st == NATS_TIMEOUT ? 2 : st == NATS_NO_RESPONDERS ? 3 : 1;
    }
    natsMsg_Destroy(req);
  }
  if (rc == 1) fprintf(stderr, "%s: %s\n", mode, natsStatus_GetText(st));
  natsConnection_Destroy(nc);
  nats_Close();
  return rc;
}
