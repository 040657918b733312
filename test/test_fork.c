/* fork(): a child can exit or exec at any moment, also while the parent's
 * pools are busy, and can use the library afresh (a new loop, bridge and
 * default pool); the parent's pools and bridges are the parent's. */
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"

typedef struct {
  uvt_work_t req;
  test_gate_t* gate;
  int runs, status;
} job_t;

static void job_work(uvt_work_t* req) {
  job_t* j = (job_t*)req;
  if (j->gate != NULL) gate_wait(j->gate);
  j->runs++;
}
static void job_after(uvt_work_t* req, int status) { ((job_t*)req)->status = status + 1000; }

static int yields;
static int gen(uvt_iter_t* it) {
  int i;
  for (i = 0; i < 100; i++)
    if (uvt_yield(it, &yields) != 0) return UV_ECANCELED;
  return 0;
}
static void on_item(uvt_iter_t* it, int status, void* item) {
  (void)it;
  if (item != NULL) yields++;
  else yields += status == UV_EOF ? 1000 : -1000000;
}

/* In the child: everything works on a new loop with a fresh default pool. */
static int child_uses_library(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_iter_t it;
  job_t j;
  memset(&j, 0, sizeof(j));
  if (uv_loop_init(&loop) || uvt_bridge_init(&loop, &b, NULL)) return 10;
  if (uvt_threaded(&b, &j.req, job_work, job_after)) return 11;
  if (uvt_threaded_iterable(&b, &it, 4, gen, on_item)) return 12;
  if (uv_run(&loop, UV_RUN_DEFAULT)) return 13;
  if (j.runs != 1 || j.status != 1000 || yields != 1100) return 14;
  if (uvt_bridge_close(&b, NULL)) return 15;
  uv_run(&loop, UV_RUN_DEFAULT);
  return uv_loop_close(&loop) ? 16 : 0;
}

static int wait_child(pid_t pid) {
  int status;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT(WIFEXITED(status));
  return WEXITSTATUS(status);
}

static void test_fork_while_busy(void) {
  uv_loop_t loop;
  uvt_bridge_t b, bdef;
  uvt_pool_t* pool = test_pool(1, 2);
  test_gate_t gate;
  job_t busy, warm;
  pid_t pid;

  gate_init(&gate);
  memset(&busy, 0, sizeof(busy));
  memset(&warm, 0, sizeof(warm));
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uvt_bridge_init(&loop, &b, pool));
  ASSERT_OK(uvt_bridge_init(&loop, &bdef, NULL)); /* the default pool exists */
  ASSERT_OK(uvt_threaded(&bdef, &warm.req, job_work, job_after));
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  busy.gate = &gate;
  ASSERT_OK(uvt_threaded(&b, &busy.req, job_work, job_after));
  gate_await_waiters(&gate, 1); /* a pool thread is busy at the fork */

  /* A child that exits at once. */
  pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) _exit(0);
  ASSERT_EQ(wait_child(pid), 0);

  /* A child that execs. */
  pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", "exit 7", (char*)NULL);
    _exit(99);
  }
  ASSERT_EQ(wait_child(pid), 7);

  /* A child that uses the library afresh. */
  pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) _exit(child_uses_library());
  ASSERT_EQ(wait_child(pid), 0);

  /* The parent is unaffected. */
  gate_open(&gate);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ(busy.status, 1000);
  ASSERT_OK(uvt_bridge_close(&bdef, NULL));
  test_close_all(&loop, &b);
  gate_destroy(&gate);
  ASSERT_OK(uvt_pool_free(pool));
}

static void never_returns_work(uvt_work_t* req) {
  (void)req;
  for (;;) uv_sleep(1000);
}
static int endless(uvt_iter_t* it) {
  while (uvt_yield(it, &yields) == 0) {
  }
  return 0;
}

/* A process may exit with work running, queued, a generator blocked in
 * uvt_yield and a separate thread busy: exit() does not wait for them. */
static void test_exit_with_work_in_flight(void) {
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    uv_loop_t loop;
    uvt_bridge_t b;
    uvt_pool_t* pool;
    uvt_work_t running, queued, separate;
    uvt_iter_t it;
    uvt_pool_options_t o;
    uvt_pool_options_init(&o);
    o.max_threads = 1;
    if (uvt_pool_new(&pool, &o) || uv_loop_init(&loop) || uvt_bridge_init(&loop, &b, pool)) _exit(10);
    if (uvt_threaded(&b, &running, never_returns_work, NULL)) _exit(11);
    if (uvt_threaded(&b, &queued, never_returns_work, NULL)) _exit(12);
    if (uvt_threaded_separate(&b, &separate, never_returns_work, NULL)) _exit(13);
    if (uvt_threaded_iterable_separate(&b, &it, 1, endless, on_item)) _exit(14);
    uv_run(&loop, UV_RUN_NOWAIT);
    uv_sleep(20);
    exit(0); /* atexit handlers run; nothing of the library waits */
  }
  ASSERT_EQ(wait_child(pid), 0);
}

TEST_MAIN(TEST(test_fork_while_busy), TEST(test_exit_with_work_in_flight))
