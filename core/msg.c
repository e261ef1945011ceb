/* msg.c -- immutable refcounted messages (see msg.h). */
#include <stdlib.h>
#include <string.h>

#include "msg.h"

/* Handles follow the data, aligned for a pointer. */
static size_t handles_offset(size_t len) {
  return (len + sizeof(void *) - 1) & ~(sizeof(void *) - 1);
}

braid_msg_t *braid_msg_alloc(size_t len, size_t nhandles) {
  if (nhandles > UINT32_MAX) return NULL;
  size_t off = handles_offset(len);
  if (off < len || nhandles > (SIZE_MAX - sizeof(braid_msg_t) - off) / sizeof(void *))
    return NULL;
  braid_msg_t *m = malloc(sizeof *m + off + nhandles * sizeof(braid_obj_t *));
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
  free(m);
}
