/* The spin policy (internal.h): a thread that waits for another spins
 * briefly before it sleeps only while the process may run two threads at
 * once. Confined to one CPU (taskset, a cpuset, a one-CPU VM or
 * container), the thread it waits for cannot run while it spins: every
 * spin is then replaced by one yield of the CPU. The calling thread's
 * affinity is what counts (uv_available_parallelism reads it): the
 * library's threads are started from the loop thread or from the pool's,
 * and inherit it; a process-wide mask would miss a loop thread pinned to
 * one core together with its pool. A CPU quota (cgroup cpu.max) is left
 * out: under one the threads still run at once, and spinning measured
 * ahead (bench/README.md). */
#include "internal.h"

int uvt__spin_pays_flag = 1;

void uvt__spin_policy_update(void) {
  /* Relaxed: a hint that spinning threads read; a stale value costs only
   * a spin or a yield. */
  uvt__store_relaxed(&uvt__spin_pays_flag, uv_available_parallelism() > 1 ? 1 : 0);
}
