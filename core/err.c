/* err.c -- the message and name of each BRAID_E* code. */
#include "err.h"

const char *braid_strerror(int err) {
  switch (err) {
#define XX(name, val, msg) case BRAID_##name: return msg;
    BRAID_ERRNO_MAP(XX)
#undef XX
    case 0: return "success";
    default: return "unknown error";
  }
}

const char *braid_err_name(int err) {
  switch (err) {
#define XX(name, val, msg) case BRAID_##name: return #name;
    BRAID_ERRNO_MAP(XX)
#undef XX
    case 0: return "OK";
    default: return "UNKNOWN";
  }
}
