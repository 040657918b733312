/* uvt_call, uvt_sync_await, uvt_await_resolve, context propagation. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"

#define CALLERS 4
#define CALLS_PER_THREAD 50000

static uv_thread_t loop_thread;

static void setup(uv_loop_t* loop, uvt_bridge_t* b, uvt_pool_t** pool) {
  loop_thread = uv_thread_self();
  *pool = test_pool(0, 1);
  ASSERT_OK(uv_loop_init(loop));
  ASSERT_OK(uvt_bridge_init(loop, b, *pool));
}

static void teardown(uv_loop_t* loop, uvt_bridge_t* b, uvt_pool_t* pool) {
  test_close_all(loop, b);
  ASSERT_OK(uvt_pool_free(pool));
}

static void assert_loop_thread(void) {
  uv_thread_t self = uv_thread_self();
  ASSERT(uv_thread_equal(&self, &loop_thread));
}

/* ---- uvt_call ------------------------------------------------------------ */

static struct {
  int last[CALLERS];
  long received;
  int in_order;
  uvt_bridge_t* b;
} calls;

static void record_call(void* arg) {
  intptr_t v = (intptr_t)arg;
  int t = (int)(v >> 24), seq = (int)(v & 0xFFFFFF);
  assert_loop_thread();
  if (seq != calls.last[t] + 1) calls.in_order = 0;
  calls.last[t] = seq;
  if (++calls.received == (long)CALLERS * CALLS_PER_THREAD) uvt_bridge_unref(calls.b);
}

static void caller_main(void* arg) {
  intptr_t t = (intptr_t)arg;
  int i;
  for (i = 1; i <= CALLS_PER_THREAD; i++) ASSERT_OK(uvt_call(calls.b, record_call, (void*)((t << 24) | i)));
}

/* Several threads hammer the bridge's lock-free inbox: every call arrives
 * once, on the loop thread, in each caller's order. */
static void test_call_order(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool;
  uv_thread_t t[CALLERS];
  intptr_t i;
  setup(&loop, &b, &pool);
  memset(&calls, 0, sizeof(calls));
  calls.in_order = 1;
  calls.b = &b;
  uvt_bridge_ref(&b); /* threads alone do not keep the loop alive */
  for (i = 0; i < CALLERS; i++) ASSERT_OK(uv_thread_create(&t[i], caller_main, (void*)i));
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  for (i = 0; i < CALLERS; i++) ASSERT_OK(uv_thread_join(&t[i]));
  ASSERT_EQ(calls.received, (long)CALLERS * CALLS_PER_THREAD);
  ASSERT(calls.in_order);
  teardown(&loop, &b, pool);
}

static int ran_before_close;
static int close_saw;
static void count_run(void* arg) {
  (void)arg;
  ran_before_close++;
}
static void close_saw_cb(uvt_bridge_t* b) {
  (void)b;
  close_saw = ran_before_close;
}

static void test_call_errors_and_close(void) {
  uv_loop_t loop;
  uvt_bridge_t b, garbage;
  uvt_pool_t* pool;
  setup(&loop, &b, &pool);
  memset(&garbage, 0x11, sizeof(garbage));
  ASSERT_ERR(uvt_call(NULL, count_run, NULL), UV_EINVAL);
  ASSERT_ERR(uvt_call(&b, NULL, NULL), UV_EINVAL);
  ASSERT_ERR(uvt_call(&garbage, count_run, NULL), UV_EINVAL);
  /* Calls accepted before the close still run, before close_cb. */
  ran_before_close = 0;
  close_saw = -1;
  ASSERT_OK(uvt_call(&b, count_run, NULL));
  ASSERT_OK(uvt_call(&b, count_run, NULL));
  ASSERT_OK(uvt_bridge_close(&b, close_saw_cb));
  ASSERT_ERR(uvt_call(&b, count_run, NULL), UV_EPIPE);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ(close_saw, 2);
  ASSERT_EQ(ran_before_close, 2);
  ASSERT_OK(uv_loop_close(&loop));
  ASSERT_OK(uvt_pool_free(pool));
}

/* ---- uvt_sync_await ---------------------------------------------------- */

typedef struct {
  uvt_bridge_t* b;
  uvt_await_cb fn;
  void* arg;
  int rc;
  void* ctx_in_fn;
  void* ctx_after;
  int fn_runs;
  uvt_await_t* aw;
  uv_timer_t timer;
  uv_fs_t fs;
  uv_sem_t ready;
  int close_cb_at_resolve;
} awaiter_t;

static void awaiter_main(void* arg) {
  awaiter_t* a = arg;
  a->rc = uvt_sync_await(a->b, a->fn, a);
  a->ctx_after = uvt_context_get();
}

static void resolve_now(uvt_await_t* aw, void* arg) {
  awaiter_t* a = arg;
  assert_loop_thread();
  a->fn_runs++;
  a->ctx_in_fn = uvt_context_get();
  uvt_await_resolve(aw, -1234); /* any status passes through */
}

static void run_awaiter(uv_loop_t* loop, awaiter_t* a) {
  uv_thread_t t;
  uvt_bridge_ref(a->b);
  ASSERT_OK(uv_thread_create(&t, awaiter_main, a));
  while (a->fn_runs == 0 || uv_loop_alive(loop)) {
    ASSERT_GE(uv_run(loop, UV_RUN_ONCE), 0);
    if (a->fn_runs > 0) uvt_bridge_unref(a->b);
  }
  ASSERT_OK(uv_thread_join(&t));
}

/* Runs fn through uvt_sync_await from a new thread on a fresh loop and
 * bridge, which are closed again; returns what the thread saw. */
static awaiter_t await_once(uvt_await_cb fn) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool;
  awaiter_t a;
  setup(&loop, &b, &pool);
  memset(&a, 0, sizeof(a));
  a.b = &b;
  a.fn = fn;
  run_awaiter(&loop, &a);
  teardown(&loop, &b, pool);
  a.b = NULL;
  return a;
}

static void test_sync_await_immediate(void) {
  awaiter_t a = await_once(resolve_now);
  ASSERT_EQ(a.rc, -1234);
  ASSERT_EQ(a.fn_runs, 1);
}

static void on_timer_resolve(uv_timer_t* t) {
  awaiter_t* a = t->data;
  uv_close((uv_handle_t*)t, NULL);
  uvt_await_resolve(a->aw, 7);
}
static void resolve_after_timer(uvt_await_t* aw, void* arg) {
  awaiter_t* a = arg;
  a->fn_runs++;
  a->aw = aw;
  ASSERT_OK(uv_timer_init(a->b->loop, &a->timer));
  a->timer.data = a;
  ASSERT_OK(uv_timer_start(&a->timer, on_timer_resolve, 20, 0));
}

static void test_sync_await_timer(void) {
  awaiter_t a = await_once(resolve_after_timer);
  ASSERT_EQ(a.rc, 7);
}

static void on_stat(uv_fs_t* req) {
  awaiter_t* a = req->data;
  int result = (int)req->result;
  uv_fs_req_cleanup(req);
  uvt_await_resolve(a->aw, result);
}
static void resolve_after_fs(uvt_await_t* aw, void* arg) {
  awaiter_t* a = arg;
  a->fn_runs++;
  a->aw = aw;
  a->fs.data = a;
  ASSERT_OK(uv_fs_stat(a->b->loop, &a->fs, "/definitely/not/here", on_stat));
}

/* The loop function resolves from a uv_fs callback: the thread gets its result. */
static void test_sync_await_fs(void) {
  awaiter_t a = await_once(resolve_after_fs);
  ASSERT_EQ(a.rc, UV_ENOENT);
}

static void test_sync_await_errors(void) {
  uv_loop_t loop;
  uvt_bridge_t b, garbage;
  uvt_pool_t* pool;
  awaiter_t a;
  setup(&loop, &b, &pool);
  memset(&garbage, 0x99, sizeof(garbage));
  memset(&a, 0, sizeof(a));
  ASSERT_ERR(uvt_sync_await(&b, resolve_now, &a), UV_EBUSY); /* loop thread: no deadlock */
  ASSERT_ERR(uvt_sync_await(NULL, resolve_now, &a), UV_EINVAL);
  ASSERT_ERR(uvt_sync_await(&b, NULL, &a), UV_EINVAL);
  ASSERT_ERR(uvt_sync_await(&garbage, resolve_now, &a), UV_EINVAL);
  uvt_await_resolve(NULL, 0); /* ignored */
  ASSERT_EQ(a.fn_runs, 0);
  /* A closing bridge refuses new awaits. */
  ASSERT_OK(uvt_bridge_close(&b, NULL));
  a.b = &b;
  a.fn = resolve_now;
  run_on_thread(awaiter_main, &a);
  ASSERT_EQ(a.rc, UV_EPIPE);
  ASSERT_EQ(a.fn_runs, 0);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_OK(uv_loop_close(&loop));
  ASSERT_OK(uvt_pool_free(pool));
}

static void closer(void* arg) {
  awaiter_t* a = arg;
  ASSERT_OK(uvt_bridge_close(a->b, NULL));
}

static void call_then_await_main(void* arg) {
  awaiter_t* a = arg;
  ASSERT_OK(uvt_call(a->b, closer, a));
  uv_sem_post(&a->ready);
  a->rc = uvt_sync_await(a->b, a->fn, a);
}

/* The bridge closes after the await was accepted, before fn started: the
 * caller gets UV_ECANCELED and fn never runs. */
static void test_sync_await_cancelled_before_start(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool;
  awaiter_t a;
  uv_thread_t t;
  setup(&loop, &b, &pool);
  memset(&a, 0, sizeof(a));
  a.b = &b;
  a.fn = resolve_now;
  ASSERT_OK(uv_sem_init(&a.ready, 0));
  uvt_bridge_ref(&b);
  ASSERT_OK(uv_thread_create(&t, call_then_await_main, &a));
  uv_sem_wait(&a.ready);
  /* Give the thread time to queue its await behind the closing call, so both
   * arrive in one batch (the loop is not running meanwhile). */
  uv_sleep(100);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_OK(uv_thread_join(&t));
  ASSERT_EQ(a.rc, UV_ECANCELED);
  ASSERT_EQ(a.fn_runs, 0);
  ASSERT_OK(uv_loop_close(&loop));
  uv_sem_destroy(&a.ready);
  ASSERT_OK(uvt_pool_free(pool));
}

static awaiter_t* started_awaiter;
static int resolved_yet;
static void late_resolve(uv_timer_t* t) {
  uv_close((uv_handle_t*)t, NULL);
  resolved_yet = 1;
  uvt_await_resolve(started_awaiter->aw, 99);
}
static void closed_after_resolve(uvt_bridge_t* b) {
  (void)b;
  started_awaiter->close_cb_at_resolve = resolved_yet;
}
static void close_then_resolve(uvt_await_t* aw, void* arg) {
  awaiter_t* a = arg;
  a->fn_runs++;
  a->aw = aw;
  ASSERT_OK(uvt_bridge_close(a->b, closed_after_resolve));
  ASSERT_OK(uv_timer_init(a->b->loop, &a->timer));
  ASSERT_OK(uv_timer_start(&a->timer, late_resolve, 30, 0));
}

/* Once fn started, the close waits for the resolve. */
static void test_sync_await_close_waits(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool;
  awaiter_t a;
  uv_thread_t t;
  setup(&loop, &b, &pool);
  memset(&a, 0, sizeof(a));
  a.b = &b;
  a.fn = close_then_resolve;
  a.close_cb_at_resolve = -1;
  started_awaiter = &a;
  resolved_yet = 0;
  uvt_bridge_ref(&b);
  ASSERT_OK(uv_thread_create(&t, awaiter_main, &a));
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_OK(uv_thread_join(&t));
  ASSERT_EQ(a.rc, 99);
  ASSERT_EQ(a.close_cb_at_resolve, 1);
  ASSERT_OK(uv_loop_close(&loop));
  ASSERT_OK(uvt_pool_free(pool));
}

static void resolve_twice(uvt_await_t* aw, void* arg) {
  awaiter_t* a = arg;
  a->fn_runs++;
  uvt_await_resolve(aw, 5);
  uvt_await_resolve(aw, 6); /* a programming error */
}

/* A second resolve is detected: ignored in release builds, an assertion in
 * debug builds (checked in a child process). */
static void test_double_resolve(void) {
#ifdef NDEBUG
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool;
  awaiter_t a;
  setup(&loop, &b, &pool);
  memset(&a, 0, sizeof(a));
  a.b = &b;
  a.fn = resolve_twice;
  run_awaiter(&loop, &a);
  ASSERT_EQ(a.rc, 5);
  /* The bridge is still sound. */
  a.fn = resolve_now;
  a.fn_runs = 0;
  run_awaiter(&loop, &a);
  ASSERT_EQ(a.rc, -1234);
  teardown(&loop, &b, pool);
#else
  pid_t pid = fork();
  int wstatus;
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    uv_loop_t loop;
    uvt_bridge_t b;
    uvt_pool_t* pool;
    awaiter_t a;
    signal(SIGABRT, SIG_DFL);
    setup(&loop, &b, &pool);
    memset(&a, 0, sizeof(a));
    a.b = &b;
    a.fn = resolve_twice;
    run_awaiter(&loop, &a);
    _exit(0); /* not reached: the second resolve asserts */
  }
  ASSERT_EQ(waitpid(pid, &wstatus, 0), pid);
  ASSERT(WIFSIGNALED(wstatus));
  ASSERT_EQ(WTERMSIG(wstatus), SIGABRT);
#endif
}

/* ---- Context ------------------------------------------------------------ */

static int ctx_x, ctx_y, ctx_loop;
static void* call_saw;
static void see_ctx(void* arg) {
  (void)arg;
  call_saw = uvt_context_get();
}
static void ctx_thread(void* arg) {
  awaiter_t* a = arg;
  uvt_context_set(&ctx_x);
  ASSERT_OK(uvt_call(a->b, see_ctx, NULL));
  uvt_context_set(&ctx_y);
  a->rc = uvt_sync_await(a->b, resolve_now, a);
  a->ctx_after = uvt_context_get();
}

static void test_context(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool;
  awaiter_t a;
  uv_thread_t t;
  setup(&loop, &b, &pool);
  memset(&a, 0, sizeof(a));
  a.b = &b;
  uvt_context_set(&ctx_loop);
  uvt_bridge_ref(&b);
  ASSERT_OK(uv_thread_create(&t, ctx_thread, &a));
  while (a.fn_runs == 0) ASSERT_GE(uv_run(&loop, UV_RUN_ONCE), 0);
  uvt_bridge_unref(&b);
  ASSERT_OK(uv_thread_join(&t));
  ASSERT_PTR_EQ(call_saw, &ctx_x);
  ASSERT_PTR_EQ(a.ctx_in_fn, &ctx_y);
  ASSERT_PTR_EQ(a.ctx_after, &ctx_y);
  ASSERT_PTR_EQ(uvt_context_get(), &ctx_loop); /* restored on the loop */
  uvt_context_set(NULL);
  teardown(&loop, &b, pool);
}

/* Many threads awaiting at once, each many times. */
#define AWAITERS 4
#define AWAITS_EACH 2000
static long awaits_done;
static void add_and_resolve(uvt_await_t* aw, void* arg) {
  awaits_done++;
  uvt_await_resolve(aw, (int)(intptr_t)arg);
}
static void many_awaits_main(void* arg) {
  uvt_bridge_t* b = arg;
  int i;
  for (i = 0; i < AWAITS_EACH; i++) ASSERT_EQ(uvt_sync_await(b, add_and_resolve, (void*)(intptr_t)i), i);
}
static void test_many_awaits(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool;
  uv_thread_t t[AWAITERS];
  int i;
  setup(&loop, &b, &pool);
  awaits_done = 0;
  uvt_bridge_ref(&b);
  for (i = 0; i < AWAITERS; i++) ASSERT_OK(uv_thread_create(&t[i], many_awaits_main, &b));
  while (awaits_done < AWAITERS * AWAITS_EACH) ASSERT_GE(uv_run(&loop, UV_RUN_ONCE), 0);
  uvt_bridge_unref(&b);
  for (i = 0; i < AWAITERS; i++) ASSERT_OK(uv_thread_join(&t[i]));
  teardown(&loop, &b, pool);
}

/* A thread that exits with its calls still in flight: their records come
 * back after their owner is gone, and are freed by the loop (ASan and
 * valgrind see neither a leak nor a use after free). Each thread's calls
 * are one run in the ready list, handed back together (call.c), and the
 * first run is longer than a drain's budget of 1000, so it is carried
 * over to the next drain. */
#define EXIT_CALLS 1500
static long exit_calls_run;
static void exit_call_fn(void* arg) {
  (void)arg;
  exit_calls_run++;
}
static void call_and_exit(void* arg) {
  int i;
  for (i = 0; i < EXIT_CALLS; i++) ASSERT_OK(uvt_call(arg, exit_call_fn, NULL));
}
static void stop_when_all_ran(uv_timer_t* t) {
  if (exit_calls_run < 3 * EXIT_CALLS) return;
  uv_close((uv_handle_t*)t, NULL);
}
static void test_caller_exits_first(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(0, 1);
  uv_timer_t t;
  int i;
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uvt_bridge_init(&loop, &b, pool));
  exit_calls_run = 0;
  for (i = 0; i < 3; i++) run_on_thread(call_and_exit, &b); /* each joined before the loop runs */
  ASSERT_OK(uv_timer_init(&loop, &t));
  ASSERT_OK(uv_timer_start(&t, stop_when_all_ran, 1, 1));
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ(exit_calls_run, 3 * EXIT_CALLS);
  test_close_all(&loop, &b);
  ASSERT_OK(uvt_pool_free(pool));
}

TEST_MAIN(TEST(test_call_order), TEST(test_call_errors_and_close), TEST(test_sync_await_immediate),
          TEST(test_sync_await_timer), TEST(test_sync_await_fs), TEST(test_sync_await_errors),
          TEST(test_sync_await_cancelled_before_start), TEST(test_sync_await_close_waits),
          TEST(test_double_resolve), TEST(test_context), TEST(test_many_awaits), TEST(test_caller_exits_first))
