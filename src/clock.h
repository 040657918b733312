/* Private to uvthreads: the stats clock.
 *
 * Pool stats time every task three times (submit, start, end). uv_hrtime()
 * costs about 24 ns on a VM's vDSO; the TSC costs 10, and what is saved is
 * a third of a no-op task. Ticks are the TSC where the kernel itself keeps
 * time with it (so it is invariant and synchronised across CPUs), else
 * nanoseconds. Stats multiply by uvt__ns_per_tick() when read;
 * uvt__clock_init must have run (uvt_pool_new does it) before the first
 * tick is taken. */
#ifndef UVT_CLOCK_H
#define UVT_CLOCK_H

#include "internal.h"

#if defined(UVT__HAVE_TSC)
extern int uvt__clock_is_tsc;
static inline uint64_t uvt__ticks(void) { return uvt__clock_is_tsc ? uvt__rdtsc() : uv_hrtime(); }
#else
static inline uint64_t uvt__ticks(void) { return uv_hrtime(); }
#endif

void uvt__clock_init(void);
double uvt__ns_per_tick(void);

/* end - start, or 0 if a clock read on another CPU was behind. */
static inline uint64_t uvt__ticks_since(uint64_t start, uint64_t end) {
  return end > start ? end - start : 0;
}

/* The earlier of two stamps, where 0 stands for none. */
static inline uint64_t uvt__ticks_earliest(uint64_t a, uint64_t b) {
  if (a == 0) return b;
  if (b == 0) return a;
  return a < b ? a : b;
}

#endif /* UVT_CLOCK_H */
