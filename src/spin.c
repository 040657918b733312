/* The spin policy (internal.h): a thread that waits for another spins
 * briefly before it sleeps only while the process may run two threads at
 * once. Confined to one CPU (taskset, a cpuset, a one-CPU VM or
 * container), the thread it waits for cannot run while it spins: every
 * spin is then replaced by one yield of the CPU. The calling thread's
 * affinity is what counts: the library's threads are started from the
 * loop thread or from the pool's, and inherit it; a process-wide mask
 * would miss a loop thread pinned to one core together with its pool. */
#include "internal.h"

#if defined(__linux__)
#include <sched.h>
#endif
#include <unistd.h>

int uvt__spin_pays_flag = 1;

/* CPUs this thread may run on (its affinity), at least 1. */
static long uvt__cpus_available(void) {
#if defined(__linux__) && defined(CPU_COUNT)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return CPU_COUNT(&set) > 0 ? CPU_COUNT(&set) : 1;
#endif
  {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? n : 1;
  }
}

void uvt__spin_policy_update(void) {
  /* Relaxed: a hint that spinning threads read; a stale value costs only
   * a spin or a yield. */
  uvt__store_relaxed(&uvt__spin_pays_flag, uvt__cpus_available() > 1 ? 1 : 0);
}
