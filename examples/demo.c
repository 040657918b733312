/* uvt-demo: why a libuv program wants uvthreads, in a few seconds.
 *
 *  1. A burst of CPU-heavy jobs run inline in a loop callback vs through
 *     uvt_threaded on a pool sized to the cores, while a 1 ms timer
 *     measures how late the loop gets.
 *  2. A blocking generator reads a file line by line
 *     (uvt_threaded_iterable, bounded buffer) while the loop counts words.
 *  3. Worker threads report progress through a channel: a progress bar.
 *  4. A plain thread asks the loop for a value with uvt_sync_await.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uvthreads.h>

static struct {
  int jobs;
  int lines;
  int workers;
} opt = {400, 200000, 4};

#define CHECK(x)                                                                        \
  do {                                                                                  \
    int check_rc_ = (x);                                                                \
    if (check_rc_ != 0) {                                                               \
      fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, uv_strerror(check_rc_)); \
      exit(1);                                                                          \
    }                                                                                   \
  } while (0)

static uv_loop_t* loop;
static uvt_bridge_t bridge;

/* ---- 1. Loop lag -------------------------------------------------------- */

static uint64_t sink; /* keeps the hashing from being optimised away */
static void cpu_job(void) { /* about half a millisecond of hashing */
  uint64_t x = 1469598103934665603u;
  int i;
  for (i = 0; i < 400000; i++) x = (x ^ (uint64_t)i) * 1099511628211u;
  __atomic_store_n(&sink, x, __ATOMIC_RELAXED); /* many threads run this */
}

static struct {
  uv_timer_t timer;
  uint64_t last, worst;
  int left;
  int done; /* the work is over: the next tick measures the last gap and stops */
} lag;

static void lag_tick(uv_timer_t* t) {
  uint64_t now = uv_hrtime();
  if (lag.last && now - lag.last > lag.worst) lag.worst = now - lag.last;
  lag.last = now;
  if (lag.done) uv_timer_stop(t);
}

static void lag_start(void) {
  memset(&lag, 0, sizeof(lag));
  lag.left = opt.jobs;
  CHECK(uv_timer_init(loop, &lag.timer));
  CHECK(uv_timer_start(&lag.timer, lag_tick, 1, 1));
}

static double lag_stop(void) {
  uv_close((uv_handle_t*)&lag.timer, NULL);
  CHECK(uv_run(loop, UV_RUN_DEFAULT));
  return lag.worst > 1000000 ? (double)(lag.worst - 1000000) / 1e6 : 0.0;
}

/* What a program without a thread pool does: the request callback calls the
 * blocking function itself, for the whole burst. */
static void inline_burst(uv_timer_t* t) {
  int i;
  uv_close((uv_handle_t*)t, NULL);
  for (i = 0; i < opt.jobs; i++) cpu_job();
  lag.done = 1;
}

static void job_work(uvt_work_t* req) {
  (void)req;
  cpu_job();
}
static void job_after(uvt_work_t* req, int status) {
  CHECK(status);
  (void)req;
  if (--lag.left == 0) lag.done = 1;
}

static void demo_lag(double* inline_ms, double* threaded_ms, double* inline_s, double* threaded_s) {
  uv_timer_t burst;
  uvt_work_t* reqs = calloc((size_t)opt.jobs, sizeof(*reqs));
  uvt_pool_options_t popts;
  uvt_pool_t* cpu_pool;
  uvt_bridge_t cpu_bridge;
  double t;
  int i;

  lag_start();
  CHECK(uv_timer_init(loop, &burst));
  CHECK(uv_timer_start(&burst, inline_burst, 5, 0));
  t = (double)uv_hrtime();
  CHECK(uv_run(loop, UV_RUN_DEFAULT));
  *inline_s = ((double)uv_hrtime() - t) / 1e9;
  *inline_ms = lag_stop();

  /* CPU-bound work gets its own pool, one thread short of the cores, so the
   * loop thread keeps a core (the default pool is sized for blocking I/O,
   * and more runnable threads than cores would compete with the loop). */
  uvt_pool_options_init(&popts);
  popts.max_threads = uv_available_parallelism() > 1 ? uv_available_parallelism() - 1 : 1;
  popts.name = "cpu";
  CHECK(uvt_pool_new(&cpu_pool, &popts));
  CHECK(uvt_bridge_init(loop, &cpu_bridge, cpu_pool));
  lag_start();
  t = (double)uv_hrtime();
  for (i = 0; i < opt.jobs; i++) CHECK(uvt_threaded(&cpu_bridge, &reqs[i], job_work, job_after));
  CHECK(uv_run(loop, UV_RUN_DEFAULT));
  *threaded_s = ((double)uv_hrtime() - t) / 1e9;
  *threaded_ms = lag_stop();
  CHECK(uvt_bridge_close(&cpu_bridge, NULL));
  CHECK(uv_run(loop, UV_RUN_DEFAULT));
  CHECK(uvt_pool_free(cpu_pool));
  free(reqs);
}

/* ---- 2. A file, line by line, through a generator ---------------------- */

typedef struct {
  uvt_iter_t it;
  const char* path;
  long lines, words;
  int status;
} reader_t;

static int read_lines(uvt_iter_t* it) { /* on a worker thread: blocking I/O is fine */
  reader_t* r = (reader_t*)it;
  char buf[256];
  FILE* f = fopen(r->path, "r");
  if (f == NULL) return UV_ENOENT;
  while (fgets(buf, sizeof(buf), f) != NULL) {
    char* line = strdup(buf);
    if (uvt_yield(it, line) != 0) { /* closed early: clean up */
      free(line);
      break;
    }
  }
  fclose(f);
  return 0;
}

static void on_line(uvt_iter_t* it, int status, void* item) {
  reader_t* r = (reader_t*)it;
  char* p;
  if (item == NULL) {
    r->status = status;
    return;
  }
  r->lines++;
  for (p = item; *p; p++)
    if (*p == ' ') r->words++;
  r->words++;
  free(item);
}

static void demo_file(reader_t* r, const char* path) {
  FILE* f = fopen(path, "w");
  int i;
  if (f == NULL) {
    perror(path);
    exit(1);
  }
  for (i = 0; i < opt.lines; i++) fprintf(f, "line %d of the demo file\n", i);
  fclose(f);
  memset(r, 0, sizeof(*r));
  r->path = path;
  CHECK(uvt_threaded_iterable(&bridge, &r->it, 64, read_lines, on_line));
  CHECK(uv_run(loop, UV_RUN_DEFAULT));
  remove(path);
}

/* ---- 3. Progress from worker threads through a channel ------------------- */

static uvt_chan_t progress;
static int progress_done, progress_total, workers_left;

static int progress_tty;
static void on_progress(uvt_chan_t* ch, int status, void* item) {
  int before, now;
  (void)ch;
  (void)item;
  if (status != 0) { /* UV_EOF: every worker is done */
    if (progress_tty) printf("\n");
    return;
  }
  before = progress_done * 100 / progress_total;
  now = ++progress_done * 100 / progress_total;
  if (progress_tty && now != before) {
    int width = 40, filled = now * width / 100;
    printf("\r  progress [%.*s%*s] %3d%%", filled, "########################################",
           width - filled, "", now);
    fflush(stdout);
  } else if (!progress_tty && now / 25 != before / 25) {
    printf("  progress %d%%\n", now);
  }
}

static void worker_main(void* arg) {
  int i, steps = *(int*)arg;
  for (i = 0; i < steps; i++) {
    cpu_job();
    CHECK(uvt_chan_put(&progress, NULL)); /* blocks if the loop falls behind */
  }
  if (__atomic_sub_fetch(&workers_left, 1, __ATOMIC_ACQ_REL) == 0) CHECK(uvt_chan_close(&progress));
}

static void demo_progress(void) {
  uv_thread_t t[16];
  int steps = opt.jobs / opt.workers, i;
  progress_total = steps * opt.workers;
  progress_tty = isatty(1);
  workers_left = opt.workers;
  CHECK(uvt_chan_init(&bridge, &progress, 8, on_progress));
  for (i = 0; i < opt.workers; i++) CHECK(uv_thread_create(&t[i], worker_main, &steps));
  CHECK(uv_run(loop, UV_RUN_DEFAULT));
  for (i = 0; i < opt.workers; i++) CHECK(uv_thread_join(&t[i]));
}

/* ---- 4. A thread asks the loop ------------------------------------------- */

static uv_timer_t answer_timer;
static uvt_await_t* pending;
static void answer(uv_timer_t* t) {
  uv_close((uv_handle_t*)t, NULL);
  uvt_await_resolve(pending, 42); /* resolved later, from a loop callback */
}
static void ask_loop(uvt_await_t* aw, void* arg) {
  (void)arg;
  pending = aw;
  CHECK(uv_timer_init(loop, &answer_timer));
  CHECK(uv_timer_start(&answer_timer, answer, 10, 0));
}
static int answer_got;
static void asker(void* arg) {
  (void)arg;
  answer_got = uvt_sync_await(&bridge, ask_loop, NULL);
}
static void asker_done(void* arg) {
  (void)arg;
  uvt_bridge_unref(&bridge);
}
static void asker_main(void* arg) {
  asker(arg);
  CHECK(uvt_call(&bridge, asker_done, NULL));
}

int main(int argc, char** argv) {
  double inline_ms, threaded_ms, inline_s, threaded_s;
  reader_t reader;
  uv_thread_t t;
  char path[256];
  int i;

  for (i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--quick") == 0) {
      opt.jobs = 40;
      opt.lines = 5000;
    } else if (strcmp(argv[i], "--jobs") == 0 && i + 1 < argc) {
      opt.jobs = atoi(argv[++i]);
      if (opt.jobs < opt.workers) opt.jobs = opt.workers;
    } else {
      printf("usage: uvt-demo [--quick] [--jobs N]\n"
             "  Runs CPU-heavy jobs inline and through uvthreads and reports the loop's\n"
             "  worst timer lag; streams a file through a generator; shows worker\n"
             "  progress through a channel; answers a thread through uvt_sync_await.\n"
             "  --quick   small sizes (used by the test suite)\n"
             "  --jobs N  CPU jobs per part (default 400, about 0.5 ms each)\n");
      return strcmp(argv[i], "--help") == 0 ? 0 : 2;
    }
  }

  loop = uv_default_loop();
  CHECK(uvt_bridge_init(loop, &bridge, NULL));
  printf("uvthreads %s demo\n\n", uvt_version_string());

  printf("1. a burst of %d CPU jobs while a 1 ms timer ticks\n", opt.jobs);
  demo_lag(&inline_ms, &threaded_ms, &inline_s, &threaded_s);
  printf("  inline in the callback:   worst timer lag %8.2f ms  (all done in %.2f s)\n", inline_ms,
         inline_s);
  printf("  uvt_threaded, CPU pool:   worst timer lag %8.2f ms  (all done in %.2f s)\n\n",
         threaded_ms, threaded_s);

  printf("2. a %d-line file read by a blocking generator, 64 lines in flight\n", opt.lines);
  snprintf(path, sizeof(path), "%s/uvt-demo-%d.txt", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp",
           (int)uv_os_getpid());
  demo_file(&reader, path);
  printf("  %ld lines, %ld words, final status %s\n\n", reader.lines, reader.words,
         uv_err_name(reader.status));

  printf("3. %d worker threads report progress through a channel\n", opt.workers);
  demo_progress();
  printf("\n");

  printf("4. a thread asks the loop and waits (uvt_sync_await)\n");
  uvt_bridge_ref(&bridge); /* the thread's request keeps the loop running */
  CHECK(uv_thread_create(&t, asker_main, NULL));
  CHECK(uv_run(loop, UV_RUN_DEFAULT));
  CHECK(uv_thread_join(&t));
  printf("  the loop answered %d\n\n", answer_got);

  CHECK(uvt_bridge_close(&bridge, NULL));
  CHECK(uv_run(loop, UV_RUN_DEFAULT));
  CHECK(uv_loop_close(loop));

  printf("summary: worst loop lag %.2f ms inline vs %.2f ms with uvthreads; %ld lines "
         "streamed; %d progress messages; await answered %d\n",
         inline_ms, threaded_ms, reader.lines, progress_done, answer_got);
  return reader.status == UV_EOF && answer_got == 42 && progress_done == progress_total ? 0 : 1;
}
