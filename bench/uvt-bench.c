/* uvt-bench: every scenario side by side with its baseline, in one run.
 *
 *   uvt-bench [--smoke] [--runs N] [--json FILE] [scenario...]
 *
 * Each scenario runs ours and the baseline alternately, --runs times, and
 * prints the medians and their ratio (higher is better for rates, lower for
 * times). libuv's uv_queue_work pool size is fixed per process at first use,
 * so every uv_queue_work measurement runs in a child process started with
 * UV_THREADPOOL_SIZE set (this binary, with --child). */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include <uvthreads.h>

static int smoke;
static int runs = 5;
static FILE* json;
static int json_first = 1;

#define CHECK(x)                                                              \
  do {                                                                        \
    int check_rc_ = (x);                                                      \
    if (check_rc_ != 0) {                                                     \
      fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x,              \
              uv_strerror(check_rc_));                                        \
      exit(1);                                                                \
    }                                                                         \
  } while (0)

static double now_s(void) { return (double)uv_hrtime() / 1e9; }

static int cmp_double(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return x < y ? -1 : x > y;
}
static double median(double* v, int n) {
  qsort(v, (size_t)n, sizeof(double), cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static uvt_pool_t* make_pool(unsigned min_threads, unsigned max_threads) {
  uvt_pool_options_t o;
  uvt_pool_t* pool;
  uvt_pool_options_init(&o);
  o.min_threads = min_threads;
  o.max_threads = max_threads;
  CHECK(uvt_pool_new(&pool, &o));
  return pool;
}

static void close_bridge(uv_loop_t* loop, uvt_bridge_t* b) {
  CHECK(uvt_bridge_close(b, NULL));
  CHECK(uv_run(loop, UV_RUN_DEFAULT));
  CHECK(uv_loop_close(loop));
}

/* ---- Reporting ----------------------------------------------------------- */

static double host_probe_ns(long round_trips, int tries);
#define FAST_MODE_NS 250 /* ping-pong round trips below this: the fast mode */

/* The last measurement's ping-pong at its start and end, and its mode. The
 * host can change mode within a run, so each cell says the mode it ran in:
 * "fast" or "slow" if the probes at its start and its end agree, "mixed"
 * if not. A cell starts where the one before ended (end_ns), the first one
 * at the run's start (print_host_mode). A change and a change back within
 * one cell goes unseen. */
static struct {
  double start_ns, end_ns;
  const char* mode;
} cell;

/* Probes the end of a measurement and names its mode. Cells that report
 * more figures of the same measurement (percentiles) pass again = 1 and
 * keep its mode. */
static void cell_mode(int again) {
  if (again) return;
  cell.start_ns = cell.end_ns;
  cell.end_ns = host_probe_ns(2000, 3);
  if (cell.start_ns < FAST_MODE_NS && cell.end_ns < FAST_MODE_NS)
    cell.mode = "fast";
  else if (cell.start_ns >= FAST_MODE_NS && cell.end_ns >= FAST_MODE_NS)
    cell.mode = "slow";
  else
    cell.mode = "mixed";
}

static void report_line(const char* scenario, const char* unit, double ours, double base,
                        const char* base_name, int higher_is_better, int with_ratio, int again) {
  double ratio = higher_is_better ? ours / base : base / ours;
  const char* mode;
  cell_mode(again);
  mode = cell.mode;
  if (with_ratio)
    printf("%-26s %14.4g %14.4g  %-8s %6.2fx  %-5s  (baseline: %s)\n", scenario, ours, base, unit,
           ratio, mode, base_name);
  else /* both near zero: the absolutes matter, not their ratio */
    printf("%-26s %14.4g %14.4g  %-8s %7s  %-5s  (baseline: %s)\n", scenario, ours, base, unit, "",
           mode, base_name);
  if (json != NULL) {
    fprintf(json,
            "%s\n  {\"scenario\": \"%s\", \"unit\": \"%s\", \"ours\": %.6g, \"baseline\": %.6g, "
            "\"baseline_name\": \"%s\", ",
            json_first ? "" : ",", scenario, unit, ours, base, base_name);
    if (with_ratio) fprintf(json, "\"speedup\": %.4f, ", ratio);
    fprintf(json,
            "\"higher_is_better\": %s, \"mode\": \"%s\", \"pingpong_ns_start\": %.0f, "
            "\"pingpong_ns_end\": %.0f}",
            higher_is_better ? "true" : "false", mode, cell.start_ns, cell.end_ns);
    json_first = 0;
  }
}
static void report(const char* scenario, const char* unit, double ours, double base,
                   const char* base_name, int higher_is_better) {
  report_line(scenario, unit, ours, base, base_name, higher_is_better, 1, 0);
}
/* Another figure of the measurement the last report came from. */
static void report_again(const char* scenario, const char* unit, double ours, double base,
                         const char* base_name, int higher_is_better) {
  report_line(scenario, unit, ours, base, base_name, higher_is_better, 1, 1);
}

/* Runs a child measurement: this binary with --child, UV_THREADPOOL_SIZE set. */
static char self_path[4096];
static void child(const char* what, unsigned threads, double arg, double* out, int nout) {
  char cmd[8192];
  FILE* p;
  int i;
  snprintf(cmd, sizeof(cmd), "UV_THREADPOOL_SIZE=%u '%s' --child %s %.0f", threads, self_path,
           what, arg);
  p = popen(cmd, "r");
  if (p == NULL) exit(1);
  for (i = 0; i < nout; i++)
    if (fscanf(p, "%lf", &out[i]) != 1) {
      fprintf(stderr, "child %s failed\n", what);
      exit(1);
    }
  if (pclose(p) != 0) exit(1);
}

/* ---- tput: no-op tasks, 1024 in flight ---------------------------------- */

#define IN_FLIGHT 1024
/* Both sides run floods for this long before the measured one. A pool that
 * has just sat idle (ours while the baseline's child process ran, and the
 * other way round) starts a flood slowly on this VM: its scheduler tracks a
 * thread's recent CPU use and packs threads that used little onto one CPU
 * until their use builds up, which takes tens of milliseconds. With 4096
 * tasks of warm-up (0.2 ms), a 400,000-task run after 100 ms of sleep ran
 * at 12-13 M tasks/s against 35 M back to back; with 50 ms of floods
 * first, at 20 M (our 4-thread pool, medians of 8 and 9). */
#define WARM_UP_S 0.05
static struct {
  long left, done;
  uvt_bridge_t* b;
  uv_loop_t* loop;
  uint64_t t0;
  double* lat;
  long nlat;
} tp;

static void noop_work(uvt_work_t* req) { (void)req; }
static void tput_after(uvt_work_t* req, int status) {
  (void)status;
  tp.done++;
  if (tp.left > 0) {
    tp.left--;
    CHECK(uvt_threaded(tp.b, req, noop_work, tput_after));
  }
}

static double ours_tput_pool(uvt_pool_t* pool, long n) {
  static uvt_work_t reqs[IN_FLIGHT];
  uv_loop_t loop;
  uvt_bridge_t b;
  double t;
  int i;
  CHECK(uv_loop_init(&loop));
  CHECK(uvt_bridge_init(&loop, &b, pool));
  tp.b = &b;
  tp.done = 0;
  tp.left = n - IN_FLIGHT;
  t = now_s();
  for (i = 0; i < IN_FLIGHT; i++) CHECK(uvt_threaded(&b, &reqs[i], noop_work, tput_after));
  CHECK(uv_run(&loop, UV_RUN_DEFAULT));
  t = now_s() - t;
  close_bridge(&loop, &b);
  return (double)tp.done / t;
}

static double ours_tput(unsigned threads, long n) {
  uvt_pool_t* pool = make_pool(threads, threads);
  double r, until = now_s() + WARM_UP_S;
  while (now_s() < until) ours_tput_pool(pool, IN_FLIGHT * 4);
  r = ours_tput_pool(pool, n);
  CHECK(uvt_pool_free(pool));
  return r;
}

static void uvnoop_work(uv_work_t* req) { (void)req; }
static void uv_tput_after(uv_work_t* req, int status) {
  (void)status;
  tp.done++;
  if (tp.left > 0) {
    tp.left--;
    CHECK(uv_queue_work(tp.loop, req, uvnoop_work, uv_tput_after));
  }
}
static double libuv_tput_once(long n) {
  static uv_work_t reqs[IN_FLIGHT];
  uv_loop_t loop;
  double t;
  int i;
  CHECK(uv_loop_init(&loop));
  tp.loop = &loop;
  tp.done = 0;
  tp.left = n - IN_FLIGHT;
  t = now_s();
  for (i = 0; i < IN_FLIGHT; i++) CHECK(uv_queue_work(&loop, &reqs[i], uvnoop_work, uv_tput_after));
  CHECK(uv_run(&loop, UV_RUN_DEFAULT));
  t = now_s() - t;
  CHECK(uv_loop_close(&loop));
  return (double)tp.done / t;
}
static double libuv_tput(long n) {
  double until = now_s() + WARM_UP_S;
  while (now_s() < until) libuv_tput_once(IN_FLIGHT * 4);
  return libuv_tput_once(n);
}

static void scenario_tput(const unsigned* threads, int nthreads, const char* prefix, long n) {
  int k, r;
  for (k = 0; k < nthreads; k++) {
    double o[32], u[32];
    char name[64];
    for (r = 0; r < runs; r++) {
      o[r] = ours_tput(threads[k], n);
      child("tput", threads[k], (double)n, &u[r], 1);
    }
    snprintf(name, sizeof(name), "%s/%u-threads", prefix, threads[k]);
    report(name, "tasks/s", median(o, runs), median(u, runs), "uv_queue_work", 1);
  }
}

/* ---- latency: one task at a time --------------------------------------- */

static void lat_after(uvt_work_t* req, int status) {
  (void)status;
  tp.lat[tp.nlat++] = (double)(uv_hrtime() - tp.t0) / 1e3;
  if (tp.left-- > 0) {
    tp.t0 = uv_hrtime();
    CHECK(uvt_threaded(tp.b, req, noop_work, lat_after));
  }
}
static void percentiles(double* v, long n, double out[3]) {
  qsort(v, (size_t)n, sizeof(double), cmp_double);
  out[0] = v[n / 2];
  out[1] = v[n * 99 / 100];
  out[2] = v[n * 999 / 1000];
}
static void pack_threads(int pack);
static void ours_latency(unsigned threads, long n, double out[3], int packed) {
  uvt_pool_t* pool = make_pool(threads, threads);
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_work_t req;
  tp.lat = malloc(sizeof(double) * (size_t)n);
  CHECK(uv_loop_init(&loop));
  CHECK(uvt_bridge_init(&loop, &b, pool));
  if (packed) pack_threads(1);
  tp.b = &b;
  tp.nlat = 0;
  tp.left = n - 1;
  tp.t0 = uv_hrtime();
  CHECK(uvt_threaded(&b, &req, noop_work, lat_after));
  CHECK(uv_run(&loop, UV_RUN_DEFAULT));
  if (packed) pack_threads(0);
  close_bridge(&loop, &b);
  percentiles(tp.lat, tp.nlat, out);
  free(tp.lat);
  CHECK(uvt_pool_free(pool));
}
static void uv_lat_after(uv_work_t* req, int status) {
  (void)status;
  tp.lat[tp.nlat++] = (double)(uv_hrtime() - tp.t0) / 1e3;
  if (tp.left-- > 0) {
    tp.t0 = uv_hrtime();
    CHECK(uv_queue_work(tp.loop, req, uvnoop_work, uv_lat_after));
  }
}
static void libuv_latency(long n, double out[3]) {
  uv_loop_t loop;
  uv_work_t req;
  tp.lat = malloc(sizeof(double) * (size_t)n);
  CHECK(uv_loop_init(&loop));
  tp.loop = &loop;
  tp.nlat = 0;
  tp.left = n - 1;
  tp.t0 = uv_hrtime();
  CHECK(uv_queue_work(&loop, &req, uvnoop_work, uv_lat_after));
  CHECK(uv_run(&loop, UV_RUN_DEFAULT));
  CHECK(uv_loop_close(&loop));
  percentiles(tp.lat, tp.nlat, out);
  free(tp.lat);
}
static void scenario_latency(void) {
  long n = smoke ? 2000 : 30000;
  double o[3][32], u[3][32];
  const char* names[3] = {"latency/p50", "latency/p99", "latency/p999"};
  int r, k;
  for (r = 0; r < runs; r++) {
    double a[3], c[3];
    ours_latency(4, n, a, 0);
    child("latency", 4, (double)n, c, 3);
    for (k = 0; k < 3; k++) {
      o[k][r] = a[k];
      u[k][r] = c[k];
    }
  }
  for (k = 0; k < 3; k++)
    (k == 0 ? report : report_again)(names[k], "us", median(o[k], runs), median(u[k], runs),
                                     "uv_queue_work", 0);
}

/* ---- blocking: tasks that sleep 1 ms ------------------------------------ */

static void sleep_work(uvt_work_t* req) {
  (void)req;
  uv_sleep(1);
}
static void count_after(uvt_work_t* req, int status) {
  (void)req;
  (void)status;
  tp.done++;
}
static double ours_blocking(uvt_pool_t* pool, int n) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_work_t* reqs = calloc((size_t)n, sizeof(*reqs));
  double t;
  int i;
  CHECK(uv_loop_init(&loop));
  CHECK(uvt_bridge_init(&loop, &b, pool));
  t = now_s();
  for (i = 0; i < n; i++) CHECK(uvt_threaded(&b, &reqs[i], sleep_work, count_after));
  CHECK(uv_run(&loop, UV_RUN_DEFAULT));
  t = now_s() - t;
  close_bridge(&loop, &b);
  free(reqs);
  return t * 1e3;
}
static void uvsleep_work(uv_work_t* req) {
  (void)req;
  uv_sleep(1);
}
static void uv_count_after(uv_work_t* req, int status) {
  (void)req;
  (void)status;
}
static double libuv_blocking(int n) {
  uv_loop_t loop;
  uv_work_t* reqs = calloc((size_t)n, sizeof(*reqs));
  double t;
  int i;
  CHECK(uv_loop_init(&loop));
  t = now_s();
  for (i = 0; i < n; i++) CHECK(uv_queue_work(&loop, &reqs[i], uvsleep_work, uv_count_after));
  CHECK(uv_run(&loop, UV_RUN_DEFAULT));
  t = now_s() - t;
  CHECK(uv_loop_close(&loop));
  free(reqs);
  return t * 1e3;
}
static void scenario_blocking(void) {
  int n = smoke ? 100 : 2000;
  double o[32], u[32], d[32];
  int r;
  for (r = 0; r < runs; r++) {
    uvt_pool_t* pool = make_pool(4, 4);
    uvt_pool_t* defaults = make_pool(0, 16); /* the default pool's settings */
    o[r] = ours_blocking(pool, n);
    d[r] = ours_blocking(defaults, n);
    child("blocking", 4, n, &u[r], 1);
    CHECK(uvt_pool_free(pool));
    CHECK(uvt_pool_free(defaults));
  }
  report("blocking/4-threads", "ms", median(o, runs), median(u, runs), "uv_queue_work", 0);
  report_again("blocking/default-pool", "ms", median(d, runs), median(u, runs), "uv_queue_work(4)",
               0);
}

/* ---- lag: a 1 ms timer while CPU-heavy jobs run ----------------------- */

static uint64_t sink_value;   /* loop thread only: keeps results alive */
static uint64_t cpu_sink;     /* written by every worker */
static void cpu_job(void) {
  uint64_t x = 1;
  int i;
  for (i = 0; i < 200000; i++) x = x * 6364136223846793005u + 1442695040888963407u;
  __atomic_store_n(&cpu_sink, x, __ATOMIC_RELAXED);
}
static struct {
  uint64_t last, worst;
  int jobs_left;
  int done; /* the next tick measures the last gap and stops */
  uv_timer_t timer;
} lag;
static void lag_tick(uv_timer_t* t) {
  uint64_t now = uv_hrtime();
  if (lag.last != 0 && now - lag.last > lag.worst) lag.worst = now - lag.last;
  lag.last = now;
  if (lag.done) uv_timer_stop(t);
}
static void cpu_work(uvt_work_t* req) {
  (void)req;
  cpu_job();
}
static void lag_after(uvt_work_t* req, int status) {
  (void)req;
  (void)status;
  if (--lag.jobs_left == 0) lag.done = 1;
}
/* The jobs go to a CPU pool one thread short of the cores, so that the loop
 * thread keeps a core. */
static double lag_ours(int jobs) {
  unsigned cores = uv_available_parallelism();
  uvt_pool_t* pool = make_pool(0, cores > 1 ? cores - 1 : 1);
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_work_t* reqs = calloc((size_t)jobs, sizeof(*reqs));
  int i;
  CHECK(uv_loop_init(&loop));
  CHECK(uvt_bridge_init(&loop, &b, pool));
  memset(&lag, 0, sizeof(lag));
  lag.jobs_left = jobs;
  CHECK(uv_timer_init(&loop, &lag.timer));
  CHECK(uv_timer_start(&lag.timer, lag_tick, 1, 1));
  for (i = 0; i < jobs; i++) CHECK(uvt_threaded(&b, &reqs[i], cpu_work, lag_after));
  CHECK(uv_run(&loop, UV_RUN_DEFAULT));
  uv_close((uv_handle_t*)&lag.timer, NULL);
  close_bridge(&loop, &b);
  free(reqs);
  CHECK(uvt_pool_free(pool));
  return (double)lag.worst / 1e6 - 1.0; /* delay beyond the 1 ms period */
}
/* The same burst run where it arrives: the callback calls the blocking
 * function itself, as a program without a thread pool does. */
static void inline_burst(uv_timer_t* t) {
  uv_close((uv_handle_t*)t, NULL);
  while (lag.jobs_left-- > 0) cpu_job();
  lag.done = 1;
}
static double lag_inline(int jobs) {
  uv_loop_t loop;
  uv_timer_t burst;
  CHECK(uv_loop_init(&loop));
  memset(&lag, 0, sizeof(lag));
  lag.jobs_left = jobs;
  CHECK(uv_timer_init(&loop, &lag.timer));
  CHECK(uv_timer_start(&lag.timer, lag_tick, 1, 1));
  CHECK(uv_timer_init(&loop, &burst));
  CHECK(uv_timer_start(&burst, inline_burst, 5, 0));
  CHECK(uv_run(&loop, UV_RUN_DEFAULT));
  uv_close((uv_handle_t*)&lag.timer, NULL);
  CHECK(uv_run(&loop, UV_RUN_DEFAULT));
  CHECK(uv_loop_close(&loop));
  return (double)lag.worst / 1e6 - 1.0;
}
static void scenario_lag(void) {
  int jobs = smoke ? 50 : 1000;
  double o[32], u[32];
  int r;
  for (r = 0; r < runs; r++) {
    o[r] = lag_ours(jobs);
    u[r] = lag_inline(jobs);
  }
  report("lag/worst-timer-delay", "ms", median(o, runs), median(u, runs), "inline in callback", 0);
}

/* ---- idle: CPU burned per second by an idle 8-thread pool ---------------- */

static double cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
         ru.ru_stime.tv_usec / 1e6;
}
static double ours_idle(double seconds) {
  uvt_pool_t* pool = make_pool(8, 8);
  double c;
  ours_tput_pool(pool, 20000); /* a burst, then silence */
  uv_sleep(50);
  c = cpu_seconds();
  uv_sleep((unsigned)(seconds * 1000));
  c = cpu_seconds() - c;
  CHECK(uvt_pool_free(pool));
  return c * 1e3 / seconds;
}
static double libuv_idle(double seconds) {
  double c;
  libuv_tput_once(20000);
  uv_sleep(50);
  c = cpu_seconds();
  uv_sleep((unsigned)(seconds * 1000));
  c = cpu_seconds() - c;
  return c * 1e3 / seconds;
}
static void scenario_idle(void) {
  double seconds = smoke ? 0.1 : 1.0;
  double o[32], u[32];
  int r, n = runs < 3 ? runs : 3;
  for (r = 0; r < n; r++) {
    o[r] = ours_idle(seconds);
    child("idle", 8, seconds * 1000, &u[r], 1);
  }
  report_line("idle/cpu-per-second", "ms/s", median(o, n), median(u, n),
              "uv_queue_work, 8 threads", 0, 0, 0);
}

/* ---- Hand-written baseline: mutex+condvar ring + uv_async_send ----------- */

typedef struct {
  uv_mutex_t mutex;
  uv_cond_t space;
  void** ring;
  size_t cap, head, count;
  int producers_left;
  uv_async_t async;
  long received;
} ring_t;

static void ring_init(ring_t* r, uv_loop_t* loop, size_t cap, uv_async_cb cb) {
  memset(r, 0, sizeof(*r));
  CHECK(uv_mutex_init(&r->mutex));
  CHECK(uv_cond_init(&r->space));
  r->ring = calloc(cap, sizeof(void*));
  r->cap = cap;
  CHECK(uv_async_init(loop, &r->async, cb));
}
static void ring_put(ring_t* r, void* item) {
  uv_mutex_lock(&r->mutex);
  while (r->count == r->cap) uv_cond_wait(&r->space, &r->mutex);
  r->ring[(r->head + r->count) % r->cap] = item;
  r->count++;
  uv_mutex_unlock(&r->mutex);
  uv_async_send(&r->async);
}
static void ring_finish(ring_t* r) {
  uv_mutex_lock(&r->mutex);
  r->producers_left--;
  uv_mutex_unlock(&r->mutex);
  uv_async_send(&r->async);
}
/* The loop takes everything buffered in one go (as a careful user would). */
static void ring_drain(uv_async_t* a) {
  ring_t* r = a->data;
  int done;
  uv_mutex_lock(&r->mutex);
  while (r->count > 0) {
    void* item = r->ring[r->head];
    r->head = (r->head + 1) % r->cap;
    r->count--;
    r->received++;
    sink_value += (uintptr_t)item;
  }
  uv_cond_broadcast(&r->space);
  done = r->producers_left == 0;
  uv_mutex_unlock(&r->mutex);
  if (done) uv_close((uv_handle_t*)a, NULL);
}

typedef struct {
  ring_t* r;
  long n;
} ring_producer_t;
/* The producers copy what they read for every item: p lives on the loop
 * thread's stack, beside the loop the loop thread writes all the time (as
 * bench_gen's gen_n, below). */
static void ring_producer(void* arg) {
  ring_producer_t* p = arg;
  ring_t* r = p->r;
  long i, n = p->n;
  for (i = 1; i <= n; i++) ring_put(r, (void*)(intptr_t)i);
  ring_finish(r);
}
static double base_stream(long per_producer, int producers, size_t cap) {
  uv_loop_t loop;
  ring_t r;
  ring_producer_t p = {&r, per_producer};
  uv_thread_t t[8];
  double s;
  int i;
  CHECK(uv_loop_init(&loop));
  ring_init(&r, &loop, cap, ring_drain);
  r.async.data = &r;
  r.producers_left = producers;
  s = now_s();
  for (i = 0; i < producers; i++) CHECK(uv_thread_create(&t[i], ring_producer, &p));
  CHECK(uv_run(&loop, UV_RUN_DEFAULT));
  s = now_s() - s;
  for (i = 0; i < producers; i++) CHECK(uv_thread_join(&t[i]));
  CHECK(uv_loop_close(&loop));
  free(r.ring);
  uv_cond_destroy(&r.space);
  uv_mutex_destroy(&r.mutex);
  return (double)r.received / s;
}

/* ---- iter: a generator thread streaming items --------------------------- */

static long gen_n;
static long iter_received;
static int bench_gen(uvt_iter_t* it) {
  /* A copy: gen_n shares a cache line with the loop's counters, and
   * reading it for every item made the harness, not the library, pay a
   * line transfer per item. */
  long i, n = gen_n;
  for (i = 1; i <= n; i++)
    if (uvt_yield(it, (void*)(intptr_t)i) != 0) return UV_ECANCELED;
  return 0;
}
static void bench_iter_cb(uvt_iter_t* it, int status, void* item) {
  (void)it;
  (void)status;
  if (item != NULL) {
    iter_received++;
    sink_value += (uintptr_t)item;
  }
}
static double ours_iter(long n, size_t cap) {
  uvt_pool_t* pool = make_pool(0, 2);
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_iter_t it;
  double s;
  CHECK(uv_loop_init(&loop));
  CHECK(uvt_bridge_init(&loop, &b, pool));
  gen_n = n;
  iter_received = 0;
  s = now_s();
  CHECK(uvt_threaded_iterable_separate(&b, &it, cap, bench_gen, bench_iter_cb));
  CHECK(uv_run(&loop, UV_RUN_DEFAULT));
  s = now_s() - s;
  close_bridge(&loop, &b);
  CHECK(uvt_pool_free(pool));
  return (double)iter_received / s;
}

/* ---- chan: producer threads into a channel ------------------------------ */

static long chan_received;
static void bench_chan_cb(uvt_chan_t* ch, int status, void* item) {
  (void)ch;
  (void)status;
  if (item != NULL) {
    chan_received++;
    sink_value += (uintptr_t)item;
  }
}
typedef struct {
  uvt_chan_t* ch;
  long n;
  int* left;
} chan_producer_t;
static void chan_producer(void* arg) {
  chan_producer_t* p = arg;
  uvt_chan_t* ch = p->ch; /* copies, as in ring_producer */
  long i, n = p->n;
  for (i = 1; i <= n; i++) CHECK(uvt_chan_put(ch, (void*)(intptr_t)i));
  if (__atomic_sub_fetch(p->left, 1, __ATOMIC_ACQ_REL) == 0) CHECK(uvt_chan_close(ch));
}
static double ours_chan(long per_producer, int producers, size_t cap) {
  uvt_pool_t* pool = make_pool(0, 1);
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_chan_t ch;
  uv_thread_t t[8];
  int left = producers;
  chan_producer_t p = {&ch, per_producer, &left};
  double s;
  int i;
  CHECK(uv_loop_init(&loop));
  CHECK(uvt_bridge_init(&loop, &b, pool));
  chan_received = 0;
  CHECK(uvt_chan_init(&b, &ch, cap, bench_chan_cb));
  s = now_s();
  for (i = 0; i < producers; i++) CHECK(uv_thread_create(&t[i], chan_producer, &p));
  CHECK(uv_run(&loop, UV_RUN_DEFAULT));
  s = now_s() - s;
  for (i = 0; i < producers; i++) CHECK(uv_thread_join(&t[i]));
  close_bridge(&loop, &b);
  CHECK(uvt_pool_free(pool));
  return (double)chan_received / s;
}

/* The whole range a user might pick: every buffer size for the iterator,
 * and for the channel with 1, 2, 4 and 8 producers. Item counts shrink
 * with the buffer (a 1-slot buffer hands over one item per wake-up). */
static const size_t stream_sizes[] = {1, 16, 64, 256, 1024, 4096};
static const int stream_producers[] = {1, 2, 4, 8};

static long stream_items(size_t cap) {
  long n = cap == 1 ? 20000 : cap == 16 ? 200000 : cap < 1024 ? 1000000 : 2000000;
  return smoke ? (n < 4000 ? n : 4000) : n;
}

static void scenario_streams(void) {
  double o[32], u[32];
  char name[64];
  size_t z;
  int p, r;
  for (z = 0; z < sizeof(stream_sizes) / sizeof(stream_sizes[0]); z++) {
    size_t cap = stream_sizes[z];
    long n = stream_items(cap);
    for (r = 0; r < runs; r++) {
      o[r] = ours_iter(n, cap);
      u[r] = base_stream(n, 1, cap);
    }
    snprintf(name, sizeof(name), "iter/max_size-%zu", cap);
    report(name, "items/s", median(o, runs), median(u, runs), "mutex ring+async", 1);
  }
  for (p = 0; p < (int)(sizeof(stream_producers) / sizeof(stream_producers[0])); p++) {
    int producers = stream_producers[p];
    for (z = 0; z < sizeof(stream_sizes) / sizeof(stream_sizes[0]); z++) {
      size_t cap = stream_sizes[z];
      long per = stream_items(cap) / producers;
      for (r = 0; r < runs; r++) {
        o[r] = ours_chan(per, producers, cap);
        u[r] = base_stream(per, producers, cap);
      }
      snprintf(name, sizeof(name), "chan/%dp/max_size-%zu", producers, cap);
      report(name, "items/s", median(o, runs), median(u, runs), "mutex ring+async", 1);
    }
  }
}

/* ---- call: uvt_call from threads ---------------------------------------- */

/* The hand-written way: a mutex-protected list, a malloc per call, and
 * uv_async_send after each; the loop takes the whole list at once. */
typedef struct base_call_s {
  struct base_call_s* next;
  void (*fn)(void*);
  void* arg;
} base_call_t;
static struct {
  uv_mutex_t mutex;
  base_call_t *head, *tail;
  uv_async_t async;
  /* The loop's count, away from the lines the threads write. */
  _Alignas(64) long expected, done;
} bc;
static void counted_call(void* arg) {
  (void)arg;
  if (++bc.done == bc.expected) uv_close((uv_handle_t*)&bc.async, NULL);
}
static void base_call_drain(uv_async_t* a) {
  base_call_t* c;
  (void)a;
  uv_mutex_lock(&bc.mutex);
  c = bc.head;
  bc.head = bc.tail = NULL;
  uv_mutex_unlock(&bc.mutex);
  while (c != NULL) {
    base_call_t* next = c->next;
    c->fn(c->arg);
    free(c);
    c = next;
  }
}
static void base_call_thread(void* arg) {
  long i, n = (long)(intptr_t)arg;
  for (i = 0; i < n; i++) {
    base_call_t* c = malloc(sizeof(*c));
    c->next = NULL;
    c->fn = counted_call;
    c->arg = NULL;
    uv_mutex_lock(&bc.mutex);
    if (bc.tail != NULL)
      bc.tail->next = c;
    else
      bc.head = c;
    bc.tail = c;
    uv_mutex_unlock(&bc.mutex);
    uv_async_send(&bc.async);
  }
}
/* packed: every thread on one CPU (see scenario_packed). */
static double base_call(int threads, long per_thread, int packed) {
  uv_loop_t loop;
  uv_thread_t t[8];
  double s;
  int i;
  CHECK(uv_loop_init(&loop));
  CHECK(uv_mutex_init(&bc.mutex));
  CHECK(uv_async_init(&loop, &bc.async, base_call_drain));
  if (packed) pack_threads(1); /* the threads below inherit the pin */
  bc.head = bc.tail = NULL;
  bc.expected = per_thread * threads;
  bc.done = 0;
  s = now_s();
  for (i = 0; i < threads; i++)
    CHECK(uv_thread_create(&t[i], base_call_thread, (void*)(intptr_t)per_thread));
  CHECK(uv_run(&loop, UV_RUN_DEFAULT));
  s = now_s() - s;
  for (i = 0; i < threads; i++) CHECK(uv_thread_join(&t[i]));
  if (packed) pack_threads(0);
  CHECK(uv_loop_close(&loop));
  uv_mutex_destroy(&bc.mutex);
  return (double)bc.done / s;
}

static struct {
  uvt_bridge_t* b;
  long per_thread, expected, done;
} oc;
static void ours_counted_call(void* arg) {
  (void)arg;
  if (++oc.done == oc.expected) uvt_bridge_unref(oc.b);
}
static void ours_call_thread(void* arg) {
  /* Read once: done, which the loop writes for every call, shares their
   * line (the baseline's threads get their count as an argument). */
  long i, n = oc.per_thread;
  uvt_bridge_t* b = oc.b;
  (void)arg;
  for (i = 0; i < n; i++) CHECK(uvt_call(b, ours_counted_call, NULL));
}
static double ours_call(int threads, long per_thread, int packed) {
  uvt_pool_t* pool = make_pool(0, 1);
  uv_loop_t loop;
  uvt_bridge_t b;
  uv_thread_t t[8];
  double s;
  int i;
  CHECK(uv_loop_init(&loop));
  CHECK(uvt_bridge_init(&loop, &b, pool));
  if (packed) pack_threads(1); /* after the init: the library's spin policy sees two CPUs */
  uvt_bridge_ref(&b); /* threads call in while the loop has nothing else */
  oc.b = &b;
  oc.per_thread = per_thread;
  oc.expected = per_thread * threads;
  oc.done = 0;
  s = now_s();
  for (i = 0; i < threads; i++) CHECK(uv_thread_create(&t[i], ours_call_thread, NULL));
  CHECK(uv_run(&loop, UV_RUN_DEFAULT));
  s = now_s() - s;
  for (i = 0; i < threads; i++) CHECK(uv_thread_join(&t[i]));
  if (packed) pack_threads(0);
  close_bridge(&loop, &b);
  CHECK(uvt_pool_free(pool));
  return (double)oc.done / s;
}
static void scenario_call(void) {
  static const int threads[] = {1, 4, 8};
  long per = smoke ? 5000 : 250000;
  double o[32], u[32];
  char name[64];
  int k, r;
  for (k = 0; k < 3; k++) {
    for (r = 0; r < runs; r++) {
      o[r] = ours_call(threads[k], per, 0);
      u[r] = base_call(threads[k], per, 0);
    }
    snprintf(name, sizeof(name), "call/%d-threads", threads[k]);
    report(name, "calls/s", median(o, runs), median(u, runs), "mutex list+malloc+async", 1);
  }
}

/* ---- The host's mode: a cache line's round trip between two threads ----- */

static int probe_flag;
/* Spins until the flag holds want. A process confined to one CPU (taskset,
 * a container) has both threads on it: there the spin yields, or the
 * probe would take a scheduler tick per round trip. */
static void probe_wait(int want) {
  unsigned spins = 0;
  while (__atomic_load_n(&probe_flag, __ATOMIC_ACQUIRE) != want)
    if (++spins % 4096 == 0) sched_yield();
}
static void probe_pong(void* arg) {
  long i, n = (long)(intptr_t)arg;
  for (i = 0; i < n; i++) {
    probe_wait(1);
    __atomic_store_n(&probe_flag, 0, __ATOMIC_RELEASE);
  }
}
/* Round trips of one flag between two threads, median ns of the tries. This
 * VM runs in two modes (~90 ns or ~600 ns): figures hold only in the mode
 * they were taken in, so every run prints it at its start and end, and
 * every cell the mode it ran in (a shorter probe: 1-10 ms on two CPUs,
 * about 40 on one). */
static double host_probe_ns(long n, int tries) {
  double v[5];
  int k;
  for (k = 0; k < tries; k++) {
    uv_thread_t t;
    double s;
    long i;
    probe_flag = 0;
    CHECK(uv_thread_create(&t, probe_pong, (void*)(intptr_t)n));
    s = now_s();
    for (i = 0; i < n; i++) {
      __atomic_store_n(&probe_flag, 1, __ATOMIC_RELEASE);
      probe_wait(0);
    }
    v[k] = (now_s() - s) * 1e9 / (double)n;
    CHECK(uv_thread_join(&t));
  }
  return median(v, tries);
}
static void print_host_mode(const char* when) {
  double ns = host_probe_ns(20000, 5);
  printf("host %s: cache-line ping-pong round trip %.0f ns (%s mode)\n", when, ns,
         ns < FAST_MODE_NS ? "fast" : "slow");
  if (json != NULL)
    fprintf(json, "%s\n  {\"host\": \"%s\", \"pingpong_ns\": %.0f}", json_first ? "" : ",", when, ns);
  json_first = 0;
  cell.end_ns = ns; /* where the first cell starts */
}

/* ---- lanes: fast tasks beside a flood of slow ones ----------------------- */

/* A 4-thread pool. LANES_SLOW tasks of 50 ms are always in flight (each
 * resubmitted as it ends), and a timer submits one no-op "fast" task every
 * millisecond; the scenario measures the fast tasks' round trip. With the
 * slow tasks in a lane of max_running 2, two threads stay for the fast
 * ones; without lanes (everything plain on the same pool), or with
 * uv_queue_work, a fast task queues behind the slow ones. */
#define LANES_SLOW 16
#define LANES_SLOW_MS 50
#define LANES_FAST_MAX 4096 /* fast tasks in flight at most */
static struct {
  uvt_bridge_t* b;
  uvt_lane_t* lane; /* NULL: everything plain */
  uv_loop_t* loop;
  uv_timer_t tick;
  uint64_t end;
  double* lat; /* us */
  long nlat, cap;
  int free_top;
  int free_idx[LANES_FAST_MAX];
  uint64_t t0[LANES_FAST_MAX];
} ln;
static uvt_work_t ln_fast[LANES_FAST_MAX], ln_slow[LANES_SLOW];
static uv_work_t ln_uv_fast[LANES_FAST_MAX], ln_uv_slow[LANES_SLOW];

static void ln_reset(double seconds, uv_loop_t* loop) {
  int i;
  ln.loop = loop;
  ln.end = uv_hrtime() + (uint64_t)(seconds * 1e9);
  ln.cap = (long)(seconds * 1000) + 1000;
  ln.lat = malloc(sizeof(double) * (size_t)ln.cap);
  ln.nlat = 0;
  ln.free_top = LANES_FAST_MAX;
  for (i = 0; i < LANES_FAST_MAX; i++) ln.free_idx[i] = i;
}
static int ln_take(void) { return ln.free_top > 0 ? ln.free_idx[--ln.free_top] : -1; }
static void ln_done(int i) {
  if (ln.nlat < ln.cap) ln.lat[ln.nlat++] = (double)(uv_hrtime() - ln.t0[i]) / 1e3;
  ln.free_idx[ln.free_top++] = i;
}
static void ln_finish(double out[2]) {
  double p[3];
  percentiles(ln.lat, ln.nlat, p);
  out[0] = p[0];
  out[1] = p[1];
  free(ln.lat);
}

static void ln_slow_work(uvt_work_t* req) {
  (void)req;
  uv_sleep(LANES_SLOW_MS);
}
static void ln_slow_after(uvt_work_t* req, int status) {
  uvt_work_options_t o = {ln.lane, 0};
  (void)status;
  if (uv_hrtime() < ln.end) CHECK(uvt_threaded_ex(ln.b, req, &o, ln_slow_work, ln_slow_after));
}
static void ln_fast_after(uvt_work_t* req, int status) {
  (void)status;
  ln_done((int)(req - ln_fast));
}
static void ln_tick(uv_timer_t* t) {
  int i;
  if (uv_hrtime() >= ln.end) {
    uv_close((uv_handle_t*)t, NULL);
    return;
  }
  if ((i = ln_take()) < 0) return;
  ln.t0[i] = uv_hrtime();
  CHECK(uvt_threaded(ln.b, &ln_fast[i], noop_work, ln_fast_after));
}
static void ours_lanes(int use_lane, double seconds, double out[2]) {
  uvt_pool_t* pool = make_pool(4, 4);
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_lane_options_t lo;
  uvt_work_options_t o;
  int i;
  uvt_lane_options_init(&lo);
  lo.max_running = 2;
  ln.lane = NULL;
  if (use_lane) CHECK(uvt_lane_new(pool, &lo, &ln.lane));
  CHECK(uv_loop_init(&loop));
  CHECK(uvt_bridge_init(&loop, &b, pool));
  ln.b = &b;
  ln_reset(seconds, &loop);
  o.lane = ln.lane;
  o.queue_timeout_ms = 0;
  for (i = 0; i < LANES_SLOW; i++)
    CHECK(uvt_threaded_ex(&b, &ln_slow[i], &o, ln_slow_work, ln_slow_after));
  CHECK(uv_timer_init(&loop, &ln.tick));
  CHECK(uv_timer_start(&ln.tick, ln_tick, 1, 1));
  CHECK(uv_run(&loop, UV_RUN_DEFAULT));
  close_bridge(&loop, &b);
  ln_finish(out);
  if (ln.lane != NULL) CHECK(uvt_lane_free(ln.lane));
  CHECK(uvt_pool_free(pool));
}

static void ln_uv_slow_work(uv_work_t* req) {
  (void)req;
  uv_sleep(LANES_SLOW_MS);
}
static void ln_uv_slow_after(uv_work_t* req, int status) {
  (void)status;
  if (uv_hrtime() < ln.end) CHECK(uv_queue_work(ln.loop, req, ln_uv_slow_work, ln_uv_slow_after));
}
static void ln_uv_fast_after(uv_work_t* req, int status) {
  (void)status;
  ln_done((int)(req - ln_uv_fast));
}
static void ln_uv_tick(uv_timer_t* t) {
  int i;
  if (uv_hrtime() >= ln.end) {
    uv_close((uv_handle_t*)t, NULL);
    return;
  }
  if ((i = ln_take()) < 0) return;
  ln.t0[i] = uv_hrtime();
  CHECK(uv_queue_work(ln.loop, &ln_uv_fast[i], uvnoop_work, ln_uv_fast_after));
}
static void libuv_lanes(double seconds, double out[2]) {
  uv_loop_t loop;
  int i;
  CHECK(uv_loop_init(&loop));
  ln_reset(seconds, &loop);
  for (i = 0; i < LANES_SLOW; i++)
    CHECK(uv_queue_work(&loop, &ln_uv_slow[i], ln_uv_slow_work, ln_uv_slow_after));
  CHECK(uv_timer_init(&loop, &ln.tick));
  CHECK(uv_timer_start(&ln.tick, ln_uv_tick, 1, 1));
  CHECK(uv_run(&loop, UV_RUN_DEFAULT));
  CHECK(uv_loop_close(&loop));
  ln_finish(out);
}

static void scenario_lanes(void) {
  double seconds = smoke ? 0.2 : 2.0;
  double l[2][32], p[2][32], u[2][32];
  const char* names[2] = {"lanes/fast-p50", "lanes/fast-p99"};
  const char* uv_names[2] = {"lanes/fast-p50-vs-libuv", "lanes/fast-p99-vs-libuv"};
  int r, k;
  for (r = 0; r < runs; r++) {
    double a[2], c[2], d[2];
    ours_lanes(1, seconds, a);
    ours_lanes(0, seconds, c);
    child("lanes", 4, seconds * 1000, d, 2);
    for (k = 0; k < 2; k++) {
      l[k][r] = a[k];
      p[k][r] = c[k];
      u[k][r] = d[k];
    }
  }
  for (k = 0; k < 2; k++)
    (k == 0 ? report : report_again)(names[k], "us", median(l[k], runs), median(p[k], runs),
                                     "no lanes", 0);
  for (k = 0; k < 2; k++)
    report_again(uv_names[k], "us", median(l[k], runs), median(u[k], runs), "uv_queue_work", 0);
}

/* ---- sync_await round trip ---------------------------------------------- */

static void await_fn(uvt_await_t* aw, void* arg) { uvt_await_resolve(aw, (int)(intptr_t)arg); }
typedef struct {
  uvt_bridge_t* b;
  long n;
  double seconds;
  double* lat; /* each round trip, us */
} awaiter_t;
static void awaiter(void* arg) {
  awaiter_t* a = arg;
  double s = now_s();
  long i;
  for (i = 0; i < a->n; i++) {
    uint64_t t0 = uv_hrtime();
    if (uvt_sync_await(a->b, await_fn, (void*)(intptr_t)1) != 1) exit(1);
    a->lat[i] = (double)(uv_hrtime() - t0) / 1e3;
  }
  a->seconds = now_s() - s;
}
static void unref_when_done(void* arg) { uvt_bridge_unref(arg); }
static void awaiter_then_unref(void* arg) {
  awaiter_t* a = arg;
  awaiter(a);
  CHECK(uvt_call(a->b, unref_when_done, a->b));
}
static double ours_await(long n, double* lat, int packed) {
  uvt_pool_t* pool = make_pool(0, 1);
  uv_loop_t loop;
  uvt_bridge_t b;
  awaiter_t a = {&b, n, 0, lat};
  uv_thread_t t;
  CHECK(uv_loop_init(&loop));
  CHECK(uvt_bridge_init(&loop, &b, pool));
  uvt_bridge_ref(&b);
  if (packed) pack_threads(1); /* the thread below inherits the pin */
  CHECK(uv_thread_create(&t, awaiter_then_unref, &a));
  CHECK(uv_run(&loop, UV_RUN_DEFAULT));
  CHECK(uv_thread_join(&t));
  if (packed) pack_threads(0);
  close_bridge(&loop, &b);
  CHECK(uvt_pool_free(pool));
  return (double)n / a.seconds;
}

/* The hand-written version: a request slot, uv_async_send, a condvar. */
typedef struct {
  uv_mutex_t mutex;
  uv_cond_t cond;
  uv_async_t async;
  int pending, done, result, stop;
  long n;
  double seconds;
  double* lat; /* each round trip, us */
} handoff_t;
static void handoff_async(uv_async_t* a) {
  handoff_t* h = a->data;
  uv_mutex_lock(&h->mutex);
  if (h->pending) {
    h->pending = 0;
    h->result = 1;
    h->done = 1;
    uv_cond_signal(&h->cond);
  }
  if (h->stop) uv_close((uv_handle_t*)a, NULL);
  uv_mutex_unlock(&h->mutex);
}
static void handoff_thread(void* arg) {
  handoff_t* h = arg;
  double s = now_s();
  long i;
  for (i = 0; i < h->n; i++) {
    uint64_t t0 = uv_hrtime();
    uv_mutex_lock(&h->mutex);
    h->pending = 1;
    h->done = 0;
    uv_mutex_unlock(&h->mutex);
    uv_async_send(&h->async);
    uv_mutex_lock(&h->mutex);
    while (!h->done) uv_cond_wait(&h->cond, &h->mutex);
    uv_mutex_unlock(&h->mutex);
    h->lat[i] = (double)(uv_hrtime() - t0) / 1e3;
  }
  h->seconds = now_s() - s;
  uv_mutex_lock(&h->mutex);
  h->stop = 1;
  uv_mutex_unlock(&h->mutex);
  uv_async_send(&h->async);
}
static double base_await(long n, double* lat, int packed) {
  uv_loop_t loop;
  handoff_t h;
  uv_thread_t t;
  memset(&h, 0, sizeof(h));
  h.n = n;
  h.lat = lat;
  CHECK(uv_loop_init(&loop));
  CHECK(uv_mutex_init(&h.mutex));
  CHECK(uv_cond_init(&h.cond));
  CHECK(uv_async_init(&loop, &h.async, handoff_async));
  h.async.data = &h;
  if (packed) pack_threads(1);
  CHECK(uv_thread_create(&t, handoff_thread, &h));
  CHECK(uv_run(&loop, UV_RUN_DEFAULT));
  CHECK(uv_thread_join(&t));
  if (packed) pack_threads(0);
  CHECK(uv_loop_close(&loop));
  uv_cond_destroy(&h.cond);
  uv_mutex_destroy(&h.mutex);
  return (double)n / h.seconds;
}
static void scenario_await(void) {
  long n = smoke ? 2000 : 50000;
  double o[32], u[32], op[3][32], up[3][32], p[3];
  double* lat = malloc(sizeof(double) * (size_t)n);
  const char* names[2] = {"sync_await/p50", "sync_await/p99"};
  int r, k;
  if (lat == NULL) exit(1);
  for (r = 0; r < runs; r++) {
    o[r] = ours_await(n, lat, 0);
    percentiles(lat, n, p);
    for (k = 0; k < 3; k++) op[k][r] = p[k];
    u[r] = base_await(n, lat, 0);
    percentiles(lat, n, p);
    for (k = 0; k < 3; k++) up[k][r] = p[k];
  }
  free(lat);
  report("sync_await/round-trip", "ops/s", median(o, runs), median(u, runs), "async+condvar", 1);
  for (k = 0; k < 2; k++)
    report_again(names[k], "us", median(op[k], runs), median(up[k], runs), "async+condvar", 0);
}

/* ---- packed: the loop and the thread it waits for on one CPU ----------- */

/* A scheduler may put the loop thread and the thread that answers it on
 * one CPU while the other idles (this VM's kernel does so now and then:
 * whole `latency` runs then measured a p50 of 11-16 us instead of 0.8).
 * These rows make that happen every time: the library is set up with
 * every CPU allowed (so its waits spin), then every thread of the process
 * is pinned to the first CPU, and threads started later inherit the pin;
 * the baselines' threads are pinned the same way. */
static cpu_set_t packed_saved;
static void pin_every_thread(const cpu_set_t* set) {
  DIR* d = opendir("/proc/self/task");
  struct dirent* e;
  if (d == NULL) exit(1);
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.') (void)sched_setaffinity(atoi(e->d_name), sizeof(*set), set);
  closedir(d);
}
static void pack_threads(int pack) {
  cpu_set_t one;
  int cpu;
  if (!pack) {
    pin_every_thread(&packed_saved);
    return;
  }
  if (sched_getaffinity(0, sizeof(packed_saved), &packed_saved) != 0) exit(1);
  for (cpu = 0; cpu < CPU_SETSIZE && !CPU_ISSET(cpu, &packed_saved); cpu++) {
  }
  CPU_ZERO(&one);
  CPU_SET(cpu, &one);
  pin_every_thread(&one);
}
static void scenario_packed(void) {
  long n = smoke ? 2000 : 30000;
  long calls = smoke ? 5000 : 250000;
  double ol[2][32], ul[2][32], oa[2][32], ua[2][32], oc1[32], uc1[32], p[3];
  double* lat;
  int r, k;
  if (uv_available_parallelism() < 2) {
    printf("packed: skipped (one CPU: the library does not spin there)\n");
    return;
  }
  if ((lat = malloc(sizeof(double) * (size_t)n)) == NULL) exit(1);
  for (r = 0; r < runs; r++) {
    double a[3], c[3];
    oc1[r] = ours_call(1, calls, 1);
    uc1[r] = base_call(1, calls, 1);
    ours_latency(4, n, a, 1);
    child("latency-packed", 4, (double)n, c, 3);
    (void)ours_await(n, lat, 1);
    percentiles(lat, n, p);
    for (k = 0; k < 2; k++) {
      ol[k][r] = a[k];
      ul[k][r] = c[k];
      oa[k][r] = p[k];
    }
    (void)base_await(n, lat, 1);
    percentiles(lat, n, p);
    for (k = 0; k < 2; k++) ua[k][r] = p[k];
  }
  free(lat);
  report("packed/latency-p50", "us", median(ol[0], runs), median(ul[0], runs), "uv_queue_work", 0);
  report_again("packed/latency-p99", "us", median(ol[1], runs), median(ul[1], runs),
               "uv_queue_work", 0);
  report_again("packed/sync_await-p50", "us", median(oa[0], runs), median(ua[0], runs),
               "async+condvar", 0);
  report_again("packed/sync_await-p99", "us", median(oa[1], runs), median(ua[1], runs),
               "async+condvar", 0);
  report_again("packed/call-1-thread", "calls/s", median(oc1, runs), median(uc1, runs),
               "mutex list+malloc+async", 1);
}

/* ---- Child side --------------------------------------------------------- */

static int run_child(const char* what, double arg) {
  if (strcmp(what, "tput") == 0) {
    printf("%f\n", libuv_tput((long)arg));
  } else if (strcmp(what, "latency") == 0 || strcmp(what, "latency-packed") == 0) {
    double out[3];
    if (strcmp(what, "latency-packed") == 0) pack_threads(1); /* libuv's threads inherit it */
    libuv_latency((long)arg, out);
    printf("%f %f %f\n", out[0], out[1], out[2]);
  } else if (strcmp(what, "blocking") == 0) {
    printf("%f\n", libuv_blocking((int)arg));
  } else if (strcmp(what, "idle") == 0) {
    printf("%f\n", libuv_idle(arg / 1000));
  } else if (strcmp(what, "lanes") == 0) {
    double out[2];
    libuv_lanes(arg / 1000, out);
    printf("%f %f\n", out[0], out[1]);
  } else {
    return 1;
  }
  return 0;
}

static int wanted(int argc, char** argv, int first, const char* name) {
  int i, any = 0;
  for (i = first; i < argc; i++) {
    if (argv[i][0] == '-') continue;
    any = 1;
    if (strcmp(argv[i], name) == 0) return 1;
  }
  return !any;
}

int main(int argc, char** argv) {
  static const unsigned tput_threads[] = {1, 2, 4};
  static const unsigned scaling_threads[] = {1, 2, 4, 16, 64};
  const char* json_path = NULL;
  ssize_t len;
  int i;

  if (argc >= 4 && strcmp(argv[1], "--child") == 0) return run_child(argv[2], atof(argv[3]));
  for (i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--smoke") == 0) {
      smoke = 1;
      runs = 1;
    } else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
      runs = atoi(argv[++i]);
      if (runs < 1 || runs > 31) runs = 5;
    } else if (strcmp(argv[i], "--json") == 0 && i + 1 < argc) {
      json_path = argv[++i];
    } else if (strcmp(argv[i], "--help") == 0) {
      printf("usage: uvt-bench [--smoke] [--runs N] [--json FILE] [scenario...]\n"
             "scenarios: tput latency blocking scaling lag idle streams call await packed lanes\n");
      return 0;
    }
  }
  len = readlink("/proc/self/exe", self_path, sizeof(self_path) - 1);
  if (len <= 0) return 1;
  self_path[len] = '\0';
  if (json_path != NULL && (json = fopen(json_path, "w")) == NULL) return 1;
  if (json != NULL) fprintf(json, "{\"version\": \"%s\", \"runs\": %d, \"results\": [", uvt_version_string(), runs);

  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("uvt-bench %s: medians of %d run(s), ratio >1 means uvthreads is better, %u CPU(s)\n",
         uvt_version_string(), runs, uv_available_parallelism());
  print_host_mode("at start");
  printf("%-26s %14s %14s  %-8s %7s  %s\n", "scenario", "uvthreads", "baseline", "unit", "ratio",
         "mode");
  /* Positional arguments pick scenarios; the values after options are skipped. */
  for (i = 1; i < argc; i++)
    if ((strcmp(argv[i], "--runs") == 0 || strcmp(argv[i], "--json") == 0) && i + 1 < argc)
      argv[++i] = (char*)"-";
  if (wanted(argc, argv, 1, "tput")) scenario_tput(tput_threads, 3, "tput", smoke ? 20000 : 2000000);
  if (wanted(argc, argv, 1, "latency")) scenario_latency();
  if (wanted(argc, argv, 1, "blocking")) scenario_blocking();
  if (wanted(argc, argv, 1, "scaling"))
    scenario_tput(scaling_threads, 5, "scaling", smoke ? 20000 : 2000000);
  if (wanted(argc, argv, 1, "lag")) scenario_lag();
  if (wanted(argc, argv, 1, "idle")) scenario_idle();
  if (wanted(argc, argv, 1, "streams")) scenario_streams();
  if (wanted(argc, argv, 1, "call")) scenario_call();
  if (wanted(argc, argv, 1, "await")) scenario_await();
  if (wanted(argc, argv, 1, "packed")) scenario_packed();
  if (wanted(argc, argv, 1, "lanes")) scenario_lanes();
  print_host_mode("at end");
  if (json != NULL) {
    fprintf(json, "\n]}\n");
    fclose(json);
  }
  return 0;
}
