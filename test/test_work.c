/* uvt_threaded, uvt_threaded_separate, uvt_cancel, uvt_is_cancelled. */
#include "test.h"

typedef struct {
  uvt_work_t req;
  int work_runs;
  int after_calls;
  int status;
  uv_thread_t work_thread;
  void* work_ctx;
  void* after_ctx;
  test_gate_t* gate;
  int* after_order;
  int* after_seq;
  int id;
} job_t;

static uv_thread_t loop_thread;

static void job_work(uvt_work_t* req) {
  job_t* j = (job_t*)req;
  j->work_runs++;
  j->work_thread = uv_thread_self();
  j->work_ctx = uvt_context_get();
  if (j->gate != NULL) gate_wait(j->gate);
}

static void job_after(uvt_work_t* req, int status) {
  job_t* j = (job_t*)req;
  uv_thread_t self = uv_thread_self();
  ASSERT(uv_thread_equal(&self, &loop_thread));
  j->after_calls++;
  j->status = status;
  j->after_ctx = uvt_context_get();
  if (j->after_order != NULL) j->after_order[(*j->after_seq)++] = j->id;
}

static void setup(uv_loop_t* loop, uvt_bridge_t* b, uvt_pool_t* pool) {
  loop_thread = uv_thread_self();
  ASSERT_OK(uv_loop_init(loop));
  ASSERT_OK(uvt_bridge_init(loop, b, pool));
}

static void test_version(void) {
  char buf[32];
  ASSERT_EQ(uvt_version(),
            (UVT_VERSION_MAJOR << 16) | (UVT_VERSION_MINOR << 8) | UVT_VERSION_PATCH);
  snprintf(buf, sizeof(buf), "%d.%d.%d", UVT_VERSION_MAJOR, UVT_VERSION_MINOR, UVT_VERSION_PATCH);
  ASSERT_EQ(strcmp(uvt_version_string(), buf), 0);
}

static void test_threaded_basic(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(0, 4);
  job_t jobs[100];
  int i;
  memset(jobs, 0xA5, sizeof(jobs)); /* garbage: requests need no init */
  setup(&loop, &b, pool);
  for (i = 0; i < 100; i++) {
    jobs[i].gate = NULL;
    jobs[i].after_order = NULL;
    jobs[i].work_runs = jobs[i].after_calls = 0;
    ASSERT_OK(uvt_threaded(&b, &jobs[i].req, job_work, job_after));
    ASSERT_PTR_EQ(jobs[i].req.bridge, &b);
  }
  /* uv_run returns by itself once every completion has been delivered. */
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  for (i = 0; i < 100; i++) {
    ASSERT_EQ(jobs[i].work_runs, 1);
    ASSERT_EQ(jobs[i].after_calls, 1);
    ASSERT_EQ(jobs[i].status, 0);
    ASSERT(!uv_thread_equal(&jobs[i].work_thread, &loop_thread));
  }
  test_close_all(&loop, &b);
  ASSERT_OK(uvt_pool_free(pool));
}

static void test_after_null(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(0, 2);
  job_t j;
  memset(&j, 0, sizeof(j));
  setup(&loop, &b, pool);
  ASSERT_OK(uvt_threaded(&b, &j.req, job_work, NULL));
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ(j.work_runs, 1);
  /* Reusable once delivered. */
  ASSERT_OK(uvt_threaded(&b, &j.req, job_work, job_after));
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ(j.work_runs, 2);
  ASSERT_EQ(j.after_calls, 1);
  test_close_all(&loop, &b);
  ASSERT_OK(uvt_pool_free(pool));
}

typedef struct {
  uvt_bridge_t* b;
  uvt_work_t* req;
  int rc_threaded, rc_separate, rc_cancel, rc_close;
} wrong_thread_t;

static void wrong_thread_calls(void* arg) {
  wrong_thread_t* w = arg;
  w->rc_threaded = uvt_threaded(w->b, w->req, job_work, job_after);
  w->rc_separate = uvt_threaded_separate(w->b, w->req, job_work, job_after);
  w->rc_close = uvt_bridge_close(w->b, NULL);
}

static void wrong_thread_cancel(void* arg) {
  wrong_thread_t* w = arg;
  w->rc_cancel = uvt_cancel(w->req);
}

static void test_threaded_errors(void) {
  uv_loop_t loop;
  uvt_bridge_t b, garbage;
  uvt_pool_t* pool = test_pool(0, 1);
  test_gate_t gate;
  job_t j, k;
  wrong_thread_t w;
  memset(&j, 0, sizeof(j));
  memset(&k, 0, sizeof(k));
  memset(&garbage, 0x5A, sizeof(garbage));
  gate_init(&gate);
  setup(&loop, &b, pool);

  ASSERT_ERR(uvt_threaded(NULL, &j.req, job_work, job_after), UV_EINVAL);
  ASSERT_ERR(uvt_threaded(&b, NULL, job_work, job_after), UV_EINVAL);
  ASSERT_ERR(uvt_threaded(&b, &j.req, NULL, job_after), UV_EINVAL);
  ASSERT_ERR(uvt_threaded(&garbage, &j.req, job_work, job_after), UV_EINVAL);
  ASSERT_ERR(uvt_threaded_separate(NULL, &j.req, job_work, job_after), UV_EINVAL);
  ASSERT_ERR(uvt_threaded_separate(&b, NULL, job_work, job_after), UV_EINVAL);
  ASSERT_ERR(uvt_threaded_separate(&b, &j.req, NULL, job_after), UV_EINVAL);
  ASSERT_ERR(uvt_cancel(NULL), UV_EINVAL);
  ASSERT_ERR(uvt_cancel(&j.req), UV_EINVAL); /* never submitted */
  ASSERT_EQ(uvt_is_cancelled(NULL), 0);

  /* In flight: resubmission is refused, on the pool or separate. */
  j.gate = &gate;
  ASSERT_OK(uvt_threaded(&b, &j.req, job_work, job_after));
  ASSERT_ERR(uvt_threaded(&b, &j.req, job_work, job_after), UV_EBUSY);
  ASSERT_ERR(uvt_threaded_separate(&b, &j.req, job_work, job_after), UV_EBUSY);

  /* Loop-thread-only calls from another thread. */
  w.b = &b;
  w.req = &k.req;
  run_on_thread(wrong_thread_calls, &w);
  ASSERT_EQ(w.rc_threaded, UV_EINVAL);
  ASSERT_EQ(w.rc_separate, UV_EINVAL);
  ASSERT_EQ(w.rc_close, UV_EINVAL);
  w.req = &j.req;
  run_on_thread(wrong_thread_cancel, &w);
  ASSERT_EQ(w.rc_cancel, UV_EINVAL);

  gate_await_waiters(&gate, 1);
  gate_open(&gate);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ(j.after_calls, 1);
  ASSERT_EQ(k.after_calls, 0);
  ASSERT_ERR(uvt_cancel(&j.req), UV_EINVAL); /* finished */

  /* Closing bridge: EPIPE and the callback never runs. */
  ASSERT_OK(uvt_bridge_close(&b, NULL));
  ASSERT_ERR(uvt_threaded(&b, &k.req, job_work, job_after), UV_EPIPE);
  ASSERT_ERR(uvt_threaded_separate(&b, &k.req, job_work, job_after), UV_EPIPE);
  ASSERT_ERR(uvt_bridge_close(&b, NULL), UV_EINVAL);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ(k.after_calls, 0);
  ASSERT_EQ(k.work_runs, 0);
  /* Closed: the bridge is gone. */
  ASSERT_ERR(uvt_threaded(&b, &k.req, job_work, job_after), UV_EINVAL);
  ASSERT_ERR(uvt_bridge_close(&b, NULL), UV_EINVAL);
  ASSERT_OK(uv_loop_close(&loop));
  gate_destroy(&gate);
  ASSERT_OK(uvt_pool_free(pool));
}

/* One pool thread blocked at a gate, ten requests queued behind it: the
 * queued ones can be cancelled, the running one cannot. */
static void test_cancel_queued(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(0, 1);
  uvt_pool_stats_t st;
  test_gate_t gate;
  job_t blocker, jobs[10];
  int i;
  memset(&blocker, 0, sizeof(blocker));
  memset(jobs, 0, sizeof(jobs));
  gate_init(&gate);
  setup(&loop, &b, pool);

  blocker.gate = &gate;
  ASSERT_OK(uvt_threaded(&b, &blocker.req, job_work, job_after));
  gate_await_waiters(&gate, 1);
  for (i = 0; i < 10; i++) ASSERT_OK(uvt_threaded(&b, &jobs[i].req, job_work, job_after));
  for (i = 0; i < 10; i += 2) {
    ASSERT_OK(uvt_cancel(&jobs[i].req));
    ASSERT_OK(uvt_cancel(&jobs[i].req)); /* again: still 0 */
    ASSERT_EQ(uvt_is_cancelled(&jobs[i].req), 1);
  }
  ASSERT_EQ(uvt_is_cancelled(&blocker.req), 0);
  ASSERT_ERR(uvt_cancel(&blocker.req), UV_EBUSY);
  ASSERT_EQ(uvt_is_cancelled(&blocker.req), 1);

  /* The cancelled ones are delivered while the pool is still blocked. */
  while (jobs[8].after_calls == 0) ASSERT_GE(uv_run(&loop, UV_RUN_ONCE), 0);
  for (i = 0; i < 10; i += 2) {
    ASSERT_EQ(jobs[i].after_calls, 1);
    ASSERT_EQ(jobs[i].status, UV_ECANCELED);
  }
  gate_open(&gate);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ(blocker.status, 0);
  ASSERT_EQ(blocker.work_runs, 1);
  for (i = 0; i < 10; i++) {
    ASSERT_EQ(jobs[i].after_calls, 1);
    ASSERT_EQ(jobs[i].work_runs, i % 2 ? 1 : 0);
    ASSERT_EQ(jobs[i].status, i % 2 ? 0 : UV_ECANCELED);
  }
  ASSERT_OK(uvt_pool_stats(pool, &st));
  ASSERT_EQ(st.submitted, 11);
  ASSERT_EQ(st.cancelled, 5);
  ASSERT_EQ(st.completed, 6);
  ASSERT_EQ(st.queued, 0);
  ASSERT_EQ(st.running, 0);
  test_close_all(&loop, &b);
  gate_destroy(&gate);
  ASSERT_OK(uvt_pool_free(pool));
}

static void cancellable_work(uvt_work_t* req) {
  job_t* j = (job_t*)req;
  gate_wait(j->gate);
  /* Polls the flag like a long job would. */
  while (!uvt_is_cancelled(req)) uv_sleep(1);
  j->work_runs++;
}

/* Separate work runs on its own thread even with the pool saturated, and can
 * only be flagged, never withdrawn. */
static void test_separate(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(0, 1);
  test_gate_t gate, sep_gate;
  job_t blocker, sep, sep2;
  memset(&blocker, 0, sizeof(blocker));
  memset(&sep, 0, sizeof(sep));
  memset(&sep2, 0, sizeof(sep2));
  gate_init(&gate);
  gate_init(&sep_gate);
  setup(&loop, &b, pool);

  blocker.gate = &gate;
  ASSERT_OK(uvt_threaded(&b, &blocker.req, job_work, job_after));
  gate_await_waiters(&gate, 1);

  uvt_context_set(&sep);
  ASSERT_OK(uvt_threaded_separate(&b, &sep.req, job_work, job_after));
  uvt_context_set(NULL);
  while (sep.after_calls == 0) ASSERT_GE(uv_run(&loop, UV_RUN_ONCE), 0);
  ASSERT_EQ(sep.status, 0);
  ASSERT_EQ(sep.work_runs, 1);
  ASSERT_PTR_EQ(sep.work_ctx, &sep);
  ASSERT_PTR_EQ(sep.after_ctx, &sep);
  ASSERT(!uv_thread_equal(&sep.work_thread, &blocker.work_thread));

  sep2.gate = &sep_gate;
  ASSERT_OK(uvt_threaded_separate(&b, &sep2.req, cancellable_work, job_after));
  gate_await_waiters(&sep_gate, 1);
  ASSERT_ERR(uvt_cancel(&sep2.req), UV_EBUSY);
  ASSERT_EQ(uvt_is_cancelled(&sep2.req), 1);
  gate_open(&sep_gate);
  while (sep2.after_calls == 0) ASSERT_GE(uv_run(&loop, UV_RUN_ONCE), 0);
  ASSERT_EQ(sep2.status, 0);
  ASSERT_EQ(sep2.work_runs, 1);

  gate_open(&gate);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ(blocker.after_calls, 1);
  test_close_all(&loop, &b);
  gate_destroy(&gate);
  gate_destroy(&sep_gate);
  ASSERT_OK(uvt_pool_free(pool));
}

static int close_order_seq;
static int close_order_cb_at;
static void close_order_cb(uvt_bridge_t* b) {
  (void)b;
  close_order_cb_at = close_order_seq;
}

/* Close with work queued and running: queued work is cancelled, running work
 * is flagged and completes normally, close_cb comes last. */
static void test_close_with_work(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(0, 1);
  test_gate_t gate;
  job_t running, queued[5], sep;
  int order[8];
  int i;
  memset(&running, 0, sizeof(running));
  memset(queued, 0, sizeof(queued));
  memset(&sep, 0, sizeof(sep));
  gate_init(&gate);
  setup(&loop, &b, pool);
  close_order_seq = 0;
  close_order_cb_at = -1;

  running.gate = &gate;
  running.after_order = order;
  running.after_seq = &close_order_seq;
  running.id = 100;
  ASSERT_OK(uvt_threaded(&b, &running.req, job_work, job_after));
  gate_await_waiters(&gate, 1);
  for (i = 0; i < 5; i++) {
    queued[i].after_order = order;
    queued[i].after_seq = &close_order_seq;
    queued[i].id = i;
    ASSERT_OK(uvt_threaded(&b, &queued[i].req, job_work, job_after));
  }
  sep.gate = &gate;
  sep.after_order = order;
  sep.after_seq = &close_order_seq;
  sep.id = 200;
  ASSERT_OK(uvt_threaded_separate(&b, &sep.req, job_work, job_after));
  gate_await_waiters(&gate, 2);

  ASSERT_OK(uvt_bridge_close(&b, close_order_cb));
  ASSERT_EQ(uvt_is_cancelled(&running.req), 1);
  ASSERT_EQ(uvt_is_cancelled(&sep.req), 1);
  /* The queued ones come back while the running ones still block. */
  while (close_order_seq < 5) ASSERT_GE(uv_run(&loop, UV_RUN_ONCE), 0);
  ASSERT_EQ(close_order_cb_at, -1);
  for (i = 0; i < 5; i++) {
    ASSERT_EQ(queued[i].status, UV_ECANCELED);
    ASSERT_EQ(queued[i].work_runs, 0);
    ASSERT_EQ(order[i], i);
  }
  gate_open(&gate);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ(running.status, 0);
  ASSERT_EQ(running.work_runs, 1);
  ASSERT_EQ(sep.status, 0);
  ASSERT_EQ(close_order_cb_at, 7); /* after all seven after callbacks */
  ASSERT_OK(uv_loop_close(&loop));
  gate_destroy(&gate);
  ASSERT_OK(uvt_pool_free(pool));
}

static void test_context(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(0, 2);
  job_t a, c;
  int tag_a, tag_c, outer;
  memset(&a, 0, sizeof(a));
  memset(&c, 0, sizeof(c));
  setup(&loop, &b, pool);
  uvt_context_set(&tag_a);
  ASSERT_OK(uvt_threaded(&b, &a.req, job_work, job_after));
  uvt_context_set(&tag_c);
  ASSERT_OK(uvt_threaded(&b, &c.req, job_work, job_after));
  uvt_context_set(&outer);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_PTR_EQ(a.work_ctx, &tag_a);
  ASSERT_PTR_EQ(a.after_ctx, &tag_a);
  ASSERT_PTR_EQ(c.work_ctx, &tag_c);
  ASSERT_PTR_EQ(c.after_ctx, &tag_c);
  ASSERT_PTR_EQ(uvt_context_get(), &outer); /* restored */
  uvt_context_set(NULL);
  test_close_all(&loop, &b);
  ASSERT_OK(uvt_pool_free(pool));
}

/* One million tiny tasks, 1024 in flight, none lost, none doubled. */
#define MILLION 1000000
#define IN_FLIGHT 1024
static struct {
  uvt_work_t reqs[IN_FLIGHT];
  unsigned char seen[MILLION];
  int ids[IN_FLIGHT];
  long submitted, delivered;
  uvt_bridge_t* b;
} mill;

static void mill_work(uvt_work_t* req) { (void)req; }

static void mill_after(uvt_work_t* req, int status) {
  int slot = (int)(req - mill.reqs);
  ASSERT_EQ(status, 0);
  ASSERT_EQ(mill.seen[mill.ids[slot]], 0);
  mill.seen[mill.ids[slot]] = 1;
  mill.delivered++;
  if (mill.submitted < MILLION) {
    mill.ids[slot] = (int)mill.submitted++;
    ASSERT_OK(uvt_threaded(mill.b, req, mill_work, mill_after));
  }
}

static void test_million(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(0, 4);
  uvt_pool_stats_t st;
  int i;
  memset(&mill, 0, sizeof(mill));
  mill.b = &b;
  setup(&loop, &b, pool);
  for (i = 0; i < IN_FLIGHT; i++) {
    mill.ids[i] = (int)mill.submitted++;
    ASSERT_OK(uvt_threaded(&b, &mill.reqs[i], mill_work, mill_after));
  }
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ(mill.delivered, MILLION);
  for (i = 0; i < MILLION; i++) ASSERT_EQ(mill.seen[i], 1);
  ASSERT_OK(uvt_pool_stats(pool, &st));
  ASSERT_EQ(st.submitted, MILLION);
  ASSERT_EQ(st.completed, MILLION);
  ASSERT_EQ(st.cancelled, 0);
  test_close_all(&loop, &b);
  ASSERT_OK(uvt_pool_free(pool));
}

TEST_MAIN(TEST(test_version), TEST(test_threaded_basic), TEST(test_after_null),
          TEST(test_threaded_errors), TEST(test_cancel_queued), TEST(test_separate),
          TEST(test_close_with_work), TEST(test_context), TEST(test_million))
