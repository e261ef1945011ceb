/*
 * compiler.h -- what the build is: the sanitizer in use, and the few
 * compiler attributes the hot paths ask for (measured where they are used).
 */
#ifndef BRAID_COMPILER_H
#define BRAID_COMPILER_H

/* 1 under AddressSanitizer (GCC or clang).  The allocators that keep
 * freed blocks for reuse (bindings/lalloc.c, core/msg.c) then hand every
 * block to malloc and free, so that a use after free is still found. */
#if defined(__SANITIZE_ADDRESS__)
#define BRAID_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BRAID_ASAN 1
#endif
#endif
#ifndef BRAID_ASAN
#define BRAID_ASAN 0
#endif

#if defined(__GNUC__)
#define BRAID_NOINLINE __attribute__((noinline))
#define BRAID_ALWAYS_INLINE __attribute__((always_inline))
#else
#define BRAID_NOINLINE
#define BRAID_ALWAYS_INLINE
#endif

/* One pause in a spin loop: lets the other hyperthread run and saves
 * power; compiles to nothing where the processor has no such hint. */
static inline void braid_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

#endif
