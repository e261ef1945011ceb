/*
 * chan.c -- channels (see chan.h; invariants in internal.h).
 *
 * Design notes
 *
 * A channel is a mutex (the object's o_mtx), a ring buffer of message
 * pointers, a closed flag with an optional error message, and two FIFO
 * queues of blocked senders and receivers, as in Go's runtime/chan.go.
 *
 * A sender that finds a blocked receiver hands its message straight to the
 * receiver's waiter (no buffer copy); a receiver that takes from a full
 * buffer refills it from the first blocked sender, keeping FIFO order.  The
 * ring starts small and doubles up to the capacity, so a channel made with a
 * large or unbounded capacity costs nothing until it is used.
 *
 * Lock rule: a partner is claimed (its waiter's fired word won) under the
 * channel lock but woken only after the lock is dropped.
 */
#include <stdlib.h>

#include "clock.h"
#include "err.h"
#include "internal.h"
#include "select.h"

static void chan_destroy(braid_obj_t *o);

braid_objtype_t braid_chan_type = { "chan", chan_destroy, 0 };

braid_chan_t *braid_chan_new(size_t cap, braid_policy_t policy) {
  if (policy != BRAID_POLICY_BLOCK && policy != BRAID_POLICY_DROP &&
      policy != BRAID_POLICY_SLIDE)
    return NULL;
  braid_chan_t *ch = calloc(1, sizeof *ch);
  if (ch == NULL) return NULL;
  if (braid_obj_init(&ch->c_obj, &braid_chan_type) != 0) {
    free(ch);
    return NULL;
  }
  ch->c_cap = cap;
  ch->c_policy = policy;
  return ch;
}

static void chan_destroy(braid_obj_t *o) {
  braid_chan_t *ch = (braid_chan_t *)o;
  for (size_t i = 0; i < ch->c_len; i++)
    braid_msg_release(ch->c_buf[(ch->c_head + i) % ch->c_size]);
  free(ch->c_buf);
  braid_msg_release(ch->c_err);
  braid_obj_fini(o);
  free(ch);
}

/* Appends m to the ring, growing it.  Called with the lock held and
 * c_len < c_cap.  Returns 0 or BRAID_ENOMEM (nothing changed). */
static int ring_push(braid_chan_t *ch, braid_msg_t *m) {
  if (ch->c_len == ch->c_size) {
    size_t nsize = ch->c_size ? ch->c_size * 2 : 8;
    if (nsize > ch->c_cap) nsize = ch->c_cap;
    if (nsize < ch->c_size || nsize > SIZE_MAX / sizeof(void *)) return BRAID_ENOMEM;
    braid_msg_t **nbuf = malloc(nsize * sizeof *nbuf);
    if (nbuf == NULL) return BRAID_ENOMEM;
    for (size_t i = 0; i < ch->c_len; i++)
      nbuf[i] = ch->c_buf[(ch->c_head + i) % ch->c_size];
    free(ch->c_buf);
    ch->c_buf = nbuf;
    ch->c_size = nsize;
    ch->c_head = 0;
  }
  size_t tail = ch->c_head + ch->c_len;
  if (tail >= ch->c_size) tail -= ch->c_size;
  ch->c_buf[tail] = m;
  ch->c_len++;
  return 0;
}

static braid_msg_t *ring_pop(braid_chan_t *ch) {
  braid_msg_t *m = ch->c_buf[ch->c_head];
  if (++ch->c_head == ch->c_size) ch->c_head = 0;
  ch->c_len--;
  return m;
}

int braid__chan_recv_locked(braid_chan_t *ch, braid_msg_t **out, braid_wakelist_t *wl) {
  braid_wnode_t *n;
  if (ch->c_len > 0) {
    *out = ring_pop(ch);
    ch->c_received++;
    /* The buffer was full if a sender waits: move its value to the tail. */
    if ((n = braid__wq_claim(&ch->c_sendq)) != NULL) {
      /* Cannot fail: a slot was just freed and the ring never shrinks. */
      BRAID_ASSERT(ring_push(ch, n->n_msg) == 0);
      ch->c_sent++;
      n->n_waiter->w_err = 0;
      n->n_waiter->w_msg = NULL;
      braid__wl_add(wl, n);
    }
    return 0;
  }
  if ((n = braid__wq_claim(&ch->c_sendq)) != NULL) {
    *out = n->n_msg;                /* rendezvous: straight from the sender */
    ch->c_sent++;
    ch->c_received++;
    n->n_waiter->w_err = 0;
    n->n_waiter->w_msg = NULL;
    braid__wl_add(wl, n);
    return 0;
  }
  if (ch->c_closed) {
    if (ch->c_err) braid_msg_retain(ch->c_err);
    *out = ch->c_err;
    return BRAID_ECLOSED;
  }
  return BRAID_EAGAIN;
}

int braid__chan_send_locked(braid_chan_t *ch, braid_msg_t *m, braid_wakelist_t *wl) {
  braid_wnode_t *n;
  if (ch->c_closed) return BRAID_ECLOSED;
  if ((n = braid__wq_claim(&ch->c_recvq)) != NULL) {
    n->n_waiter->w_err = 0;
    n->n_waiter->w_msg = m;         /* handed over: no buffer copy */
    ch->c_sent++;
    ch->c_received++;
    braid__wl_add(wl, n);
    return 0;
  }
  if (ch->c_len < ch->c_cap) {
    int rc = ring_push(ch, m);
    if (rc == 0) ch->c_sent++;
    return rc;
  }
  switch (ch->c_policy) {
    case BRAID_POLICY_DROP:
      ch->c_dropped++;
      wl->wl_drop = m;
      return 0;
    case BRAID_POLICY_SLIDE:
      ch->c_dropped++;
      if (ch->c_len == 0) {         /* a rendezvous with nobody waiting */
        wl->wl_drop = m;
        return 0;
      }
      wl->wl_drop = ring_pop(ch);
      BRAID_ASSERT(ring_push(ch, m) == 0);
      ch->c_sent++;
      return 0;
    default:
      return BRAID_EAGAIN;
  }
}

void braid__wl_wake(braid_wakelist_t *wl) {
  braid_wnode_t *n = wl->wl_head;
  while (n) {
    /* Read the link before waking: the woken side may free its node. */
    braid_wnode_t *next = n->n_next;
    braid_waiter_wake(n->n_waiter);
    n = next;
  }
  wl->wl_head = NULL;
  braid_msg_release(wl->wl_drop);
  wl->wl_drop = NULL;
}

int braid_chan_close(braid_chan_t *ch, braid_msg_t *err) {
  braid_wakelist_t wl = { NULL, NULL };
  braid_wnode_t *n;
  braid_obj_lock(&ch->c_obj);
  if (ch->c_closed) {
    braid_obj_unlock(&ch->c_obj);
    braid_msg_release(err);
    return BRAID_ECLOSED;
  }
  ch->c_closed = true;
  ch->c_err = err;
  while ((n = braid__wq_claim(&ch->c_recvq)) != NULL) {
    if (err) braid_msg_retain(err);
    n->n_waiter->w_err = BRAID_ECLOSED;
    n->n_waiter->w_msg = err;
    braid__wl_add(&wl, n);
  }
  while ((n = braid__wq_claim(&ch->c_sendq)) != NULL) {
    n->n_waiter->w_err = BRAID_ECLOSED;  /* the message stays the sender's */
    n->n_waiter->w_msg = NULL;
    braid__wl_add(&wl, n);
  }
  braid_obj_unlock(&ch->c_obj);
  braid__wl_wake(&wl);
  return 0;
}

int braid_chan_try_send(braid_chan_t *ch, braid_msg_t *m) {
  braid_wakelist_t wl = { NULL, NULL };
  braid_obj_lock(&ch->c_obj);
  int rc = braid__chan_send_locked(ch, m, &wl);
  braid_obj_unlock(&ch->c_obj);
  braid__wl_wake(&wl);
  return rc;
}

int braid_chan_try_recv(braid_chan_t *ch, braid_msg_t **out) {
  braid_wakelist_t wl = { NULL, NULL };
  *out = NULL;
  braid_obj_lock(&ch->c_obj);
  int rc = braid__chan_recv_locked(ch, out, &wl);
  braid_obj_unlock(&ch->c_obj);
  braid__wl_wake(&wl);
  return rc;
}

int braid_chan_send_arm(braid_chan_t *ch, braid_msg_t *m, braid_case_t *c, braid_waiter_t *w) {
  braid_wakelist_t wl = { NULL, NULL };
  braid_obj_lock(&ch->c_obj);
  int rc = braid__chan_send_locked(ch, m, &wl);
  if (rc == BRAID_EAGAIN && w) braid__case_arm_locked(c, w);
  braid_obj_unlock(&ch->c_obj);
  if (wl.wl_head || wl.wl_drop) braid__wl_wake(&wl);
  return rc;
}

int braid_chan_recv_arm(braid_chan_t *ch, braid_msg_t **out, braid_case_t *c, braid_waiter_t *w) {
  braid_wakelist_t wl = { NULL, NULL };
  *out = NULL;
  braid_obj_lock(&ch->c_obj);
  int rc = braid__chan_recv_locked(ch, out, &wl);
  if (rc == BRAID_EAGAIN && w) braid__case_arm_locked(c, w);
  braid_obj_unlock(&ch->c_obj);
  if (wl.wl_head) braid__wl_wake(&wl);
  return rc;
}

int braid_chan_send_until(braid_chan_t *ch, braid_msg_t *m, int64_t deadline) {
  int rc = braid_chan_try_send(ch, m);   /* fast path: no waiter needed */
  if (rc != BRAID_EAGAIN) return rc;
  braid_case_t c = { .c_op = BRAID_OP_SEND, .c_obj = ch, .c_msg = m };
  braid_selres_t r;
  rc = braid_select_until(&c, 1, deadline, &r);
  return rc == 0 ? r.s_err : rc;
}

int braid_chan_recv_until(braid_chan_t *ch, braid_msg_t **out, int64_t deadline) {
  int rc = braid_chan_try_recv(ch, out);  /* fast path: no waiter needed */
  if (rc != BRAID_EAGAIN) return rc;
  braid_case_t c = { .c_op = BRAID_OP_RECV, .c_obj = ch };
  braid_selres_t r;
  rc = braid_select_until(&c, 1, deadline, &r);
  *out = r.s_msg;
  return rc == 0 ? r.s_err : rc;
}

void braid_chan_stats(braid_chan_t *ch, braid_chan_stats_t *st) {
  braid_obj_lock(&ch->c_obj);
  st->len = ch->c_len;
  st->cap = ch->c_cap;
  st->sent = ch->c_sent;
  st->received = ch->c_received;
  st->dropped = ch->c_dropped;
  st->closed = ch->c_closed;
  braid_obj_unlock(&ch->c_obj);
}

size_t braid_chan_len(braid_chan_t *ch) {
  braid_obj_lock(&ch->c_obj);
  size_t n = ch->c_len;
  braid_obj_unlock(&ch->c_obj);
  return n;
}

bool braid_chan_is_closed(braid_chan_t *ch) {
  braid_obj_lock(&ch->c_obj);
  bool c = ch->c_closed;
  braid_obj_unlock(&ch->c_obj);
  return c;
}
