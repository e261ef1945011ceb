/*
 * err.h -- braid's error codes, for the core.
 *
 * The map itself is include/braid_errno.h (installed, shared with braid.h).
 */
#ifndef BRAID_ERR_H
#define BRAID_ERR_H

#include "braid_errno.h"

#endif
