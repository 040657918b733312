/* The stats clock (clock.h): TSC ticks where the kernel trusts the TSC,
 * converted to nanoseconds when stats are read (one rate per read, so that
 * a total and its max stay comparable).
 *
 * The rate is not calibrated up front (that would cost a sleep): a reference
 * pair (ticks, ns) is taken at the first uvt__clock_init, and each
 * read of the rate divides the nanoseconds elapsed since then by the ticks
 * elapsed. The error is the spread of one pair of reads (a few ns) over the
 * time since the first pool was made. */
#include "clock.h"

#if defined(UVT__HAVE_TSC)
int uvt__clock_is_tsc;
static uint64_t uvt__ref_ticks, uvt__ref_ns;
static uv_once_t uvt__clock_once = UV_ONCE_INIT;

/* The TSC read halfway through a uv_hrtime() call. */
static void uvt__clock_pair(uint64_t* ticks, uint64_t* ns) {
  uint64_t before = uvt__rdtsc();
  *ns = uv_hrtime();
  *ticks = before + (uvt__rdtsc() - before) / 2;
}

static void uvt__clock_setup(void) {
  if (!uvt__kernel_clock_is_tsc()) return;
  uvt__clock_pair(&uvt__ref_ticks, &uvt__ref_ns);
  uvt__clock_is_tsc = 1;
}

void uvt__clock_init(void) { uv_once(&uvt__clock_once, uvt__clock_setup); }

double uvt__ns_per_tick(void) {
  uint64_t now_ticks, now_ns;
  if (!uvt__clock_is_tsc) return 1.0;
  uvt__clock_pair(&now_ticks, &now_ns);
  if (now_ticks <= uvt__ref_ticks || now_ns <= uvt__ref_ns) return 1.0;
  return (double)(now_ns - uvt__ref_ns) / (double)(now_ticks - uvt__ref_ticks);
}
#else
void uvt__clock_init(void) {}
double uvt__ns_per_tick(void) { return 1.0; }
#endif
