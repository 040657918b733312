/* Graceful shutdown on SIGINT.
 *
 * Long jobs, an endless generator and a producer thread are running when
 * Ctrl-C arrives. One uvt_bridge_close winds everything down: queued jobs
 * are cancelled, running ones see uvt_is_cancelled() and stop early, the
 * generator's uvt_yield returns UV_EPIPE, the producer's put returns
 * UV_EPIPE, and the close callback runs when nothing is left.
 *
 *   uvt-shutdown             runs until Ctrl-C
 *   uvt-shutdown --self-test sends itself SIGINT after 200 ms */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <uvthreads.h>

static uvt_bridge_t bridge;
static uv_signal_t sigint;
static uv_timer_t self_kill;
static uvt_chan_t messages;
static int cancelled_jobs, finished_jobs, items, messages_seen;

static void long_job(uvt_work_t* req) { /* polls for cancellation */
  int i;
  for (i = 0; i < 100000 && !uvt_is_cancelled(req); i++) uv_sleep(1);
}
static void job_done(uvt_work_t* req, int status) {
  (void)req;
  if (status == UV_ECANCELED) cancelled_jobs++; /* was still queued */
  else finished_jobs++;
}

static int endless(uvt_iter_t* it) {
  static int n;
  while (uvt_yield(it, &n) == 0) uv_sleep(1); /* until the close */
  return 0;
}
static void on_item(uvt_iter_t* it, int status, void* item) {
  (void)it;
  if (item != NULL) items++;
  else printf("generator ended: %s\n", uv_err_name(status));
}

static void on_message(uvt_chan_t* ch, int status, void* item) {
  (void)ch;
  if (item != NULL) messages_seen++;
  else printf("channel ended: %s\n", uv_err_name(status));
}
static void producer(void* arg) {
  (void)arg;
  while (uvt_chan_put(&messages, &messages) == 0) uv_sleep(1);
}

static void closed(uvt_bridge_t* b) {
  (void)b;
  printf("bridge closed: %d jobs finished early, %d cancelled before they ran, "
         "%d items, %d messages\n", finished_jobs, cancelled_jobs, items, messages_seen);
}

static void on_sigint(uv_signal_t* s, int signum) {
  printf("got signal %d: shutting down\n", signum);
  uv_close((uv_handle_t*)s, NULL);
  uvt_bridge_close(&bridge, closed);
}

static void raise_sigint(uv_timer_t* t) {
  uv_close((uv_handle_t*)t, NULL);
  uv_kill(uv_os_getpid(), SIGINT);
}

int main(int argc, char** argv) {
  uv_loop_t* loop = uv_default_loop();
  uvt_pool_options_t opts;
  uvt_pool_t* pool;
  uvt_work_t jobs[6];
  uvt_iter_t it;
  uv_thread_t thread;
  int i;

  uvt_pool_options_init(&opts);
  opts.max_threads = 2; /* so that some jobs wait in the queue */
  if (uvt_pool_new(&pool, &opts) != 0 || uvt_bridge_init(loop, &bridge, pool) != 0) return 1;
  for (i = 0; i < 6; i++) uvt_threaded(&bridge, &jobs[i], long_job, job_done);
  uvt_threaded_iterable_separate(&bridge, &it, 4, endless, on_item);
  uvt_chan_init(&bridge, &messages, 4, on_message);
  uv_thread_create(&thread, producer, NULL);

  uv_signal_init(loop, &sigint);
  uv_signal_start(&sigint, on_sigint, SIGINT);
  if (argc > 1 && strcmp(argv[1], "--self-test") == 0) {
    uv_timer_init(loop, &self_kill);
    uv_timer_start(&self_kill, raise_sigint, 200, 0);
  } else {
    printf("running; press Ctrl-C to stop\n");
  }
  uv_run(loop, UV_RUN_DEFAULT);
  uv_thread_join(&thread); /* its put returned UV_EPIPE */
  uvt_pool_free(pool);
  return uv_loop_close(loop) == 0 && cancelled_jobs == 4 && finished_jobs == 2 ? 0 : 1;
}
