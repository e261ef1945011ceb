/*
 * tls.h -- thread-local variables on hot paths.
 *
 * braid.so is loaded with dlopen (require "braid"), where a _Thread_local
 * defaults to the general-dynamic model: every read is a call to
 * __tls_get_addr (about 20 of them per channel round trip, measured with
 * callgrind).  The initial-exec model reads the variable with one
 * instruction; its space comes from the static TLS surplus glibc keeps for
 * libraries loaded later, which is small, so only a few pointer-sized
 * variables get it.
 */
#ifndef BRAID_TLS_H
#define BRAID_TLS_H

#if defined(__GNUC__)
#define BRAID_TLS_HOT __attribute__((tls_model("initial-exec")))
#else
#define BRAID_TLS_HOT
#endif

#endif
