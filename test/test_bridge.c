/* The bridge: init/close errors, loop liveness, ref/unref, close callbacks. */
#include "test.h"

static void test_init_errors(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(0, 1);
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_ERR(uvt_bridge_init(NULL, &b, pool), UV_EINVAL);
  ASSERT_ERR(uvt_bridge_init(&loop, NULL, pool), UV_EINVAL);
  ASSERT_OK(uvt_bridge_init(&loop, &b, pool));
  ASSERT_ERR(uvt_bridge_init(&loop, &b, pool), UV_EBUSY); /* double init */
  ASSERT_ERR(uvt_pool_free(pool), UV_EBUSY);
  test_close_all(&loop, &b);
  ASSERT_OK(uvt_pool_free(pool));
}

typedef struct {
  uvt_bridge_t* b;
  int rc;
} thread_close_t;

static void close_from_thread(void* arg) {
  thread_close_t* t = arg;
  t->rc = uvt_bridge_close(t->b, NULL);
  uvt_bridge_ref(t->b); /* ignored off the loop thread */
}

static void test_close_errors(void) {
  uv_loop_t loop;
  uvt_bridge_t b, garbage;
  uvt_pool_t* pool = test_pool(0, 1);
  thread_close_t t;
  memset(&garbage, 0xEE, sizeof(garbage));
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uvt_bridge_init(&loop, &b, pool));
  ASSERT_ERR(uvt_bridge_close(NULL, NULL), UV_EINVAL);
  ASSERT_ERR(uvt_bridge_close(&garbage, NULL), UV_EINVAL);
  t.b = &b;
  run_on_thread(close_from_thread, &t);
  ASSERT_EQ(t.rc, UV_EINVAL);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT)); /* not ref'd by the thread */
  uvt_bridge_ref(NULL);
  uvt_bridge_unref(NULL);
  uvt_bridge_ref(&garbage);
  test_closed_count = 0;
  ASSERT_OK(uvt_bridge_close(&b, test_on_bridge_closed));
  ASSERT_ERR(uvt_bridge_close(&b, test_on_bridge_closed), UV_EINVAL); /* twice */
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ(test_closed_count, 1);
  ASSERT_ERR(uvt_bridge_close(&b, test_on_bridge_closed), UV_EINVAL); /* after close_cb */
  ASSERT_OK(uv_loop_close(&loop));
  /* The struct can be initialised again after its close callback. */
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uvt_bridge_init(&loop, &b, pool));
  test_close_all(&loop, &b);
  ASSERT_OK(uvt_pool_free(pool));
}

static void test_idle_and_ref(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(0, 1);
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uvt_bridge_init(&loop, &b, pool));
  /* An idle bridge does not keep uv_run alive. */
  ASSERT_EQ(uv_run(&loop, UV_RUN_DEFAULT), 0);
  uvt_bridge_ref(&b);
  ASSERT_NE(uv_run(&loop, UV_RUN_NOWAIT), 0);
  ASSERT(uv_loop_alive(&loop));
  uvt_bridge_unref(&b);
  ASSERT_EQ(uv_run(&loop, UV_RUN_NOWAIT), 0);
  ASSERT(!uv_loop_alive(&loop));
  test_close_all(&loop, &b);
  ASSERT_OK(uvt_pool_free(pool));
}

static int heap_closed;
static void free_in_close_cb(uvt_bridge_t* b) {
  heap_closed = 1;
  memset(b, 0xCC, sizeof(*b));
  free(b);
}

static void noop_work(uvt_work_t* req) { (void)req; }
static void gate_work(uvt_work_t* req) { gate_wait(req->data); }
static void close_from_after(uvt_work_t* req, int status) {
  ASSERT_EQ(status, 0);
  ASSERT_OK(uvt_bridge_close(req->bridge, free_in_close_cb));
  free(req);
}

/* close from inside a callback, and close_cb frees the bridge. */
static void test_close_inside_callback(void) {
  uv_loop_t loop;
  uvt_bridge_t* b = malloc(sizeof(*b));
  uvt_work_t* req = malloc(sizeof(*req));
  uvt_pool_t* pool = test_pool(0, 1);
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uvt_bridge_init(&loop, b, pool));
  ASSERT_OK(uvt_threaded(b, req, noop_work, close_from_after));
  heap_closed = 0;
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ(heap_closed, 1);
  ASSERT_OK(uv_loop_close(&loop));
  ASSERT_OK(uvt_pool_free(pool));
}

/* A program may init on one thread and run the loop on another. */
typedef struct {
  uv_loop_t* loop;
  uvt_bridge_t* b;
  uvt_work_t req;
  int after;
} moved_t;

static void moved_after(uvt_work_t* req, int status) {
  moved_t* m = req->data;
  ASSERT_EQ(status, 0);
  m->after++;
  uvt_bridge_unref(m->b); /* accepted: this is the loop thread now */
}
static void moved_call(void* arg) {
  moved_t* m = arg;
  m->req.data = m;
  /* This thread runs the bridge's callbacks now: it is the loop thread. */
  ASSERT_OK(uvt_threaded(m->b, &m->req, noop_work, moved_after));
}
static void moved_loop_main(void* arg) {
  moved_t* m = arg;
  uvt_bridge_ref(m->b); /* refused: not yet the loop thread */
  ASSERT_EQ(uv_run(m->loop, UV_RUN_DEFAULT), 0);
  ASSERT_EQ(m->after, 1);
  test_close_all(m->loop, m->b);
}

static void test_loop_moves_thread(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(0, 1);
  moved_t m;
  memset(&m, 0, sizeof(m));
  m.loop = &loop;
  m.b = &b;
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uvt_bridge_init(&loop, &b, pool));
  uvt_bridge_ref(&b); /* keeps the loop alive until the work is back */
  ASSERT_OK(uvt_call(&b, moved_call, &m));
  run_on_thread(moved_loop_main, &m);
  ASSERT_OK(uvt_pool_free(pool));
}

/* uv_stop from a callback in the middle of a batch: uv_run returns after
 * the batch (at most 1000 callbacks); nothing is lost, the next uv_run
 * delivers the rest. */
#define STOP_TASKS 3000
static struct {
  uvt_work_t reqs[STOP_TASKS];
  int delivered;
  uv_loop_t* loop;
} stopper;

static void stop_after(uvt_work_t* req, int status) {
  (void)req;
  ASSERT_EQ(status, 0);
  if (++stopper.delivered == 10) uv_stop(stopper.loop);
}

static void test_uv_stop_mid_batch(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(1, 1);
  test_gate_t gate;
  uvt_work_t blocker;
  int i;
  gate_init(&gate);
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uvt_bridge_init(&loop, &b, pool));
  stopper.loop = &loop;
  stopper.delivered = 0;
  /* Queue everything behind a blocker, so it completes as one flood. */
  blocker.data = &gate;
  ASSERT_OK(uvt_threaded(&b, &blocker, gate_work, NULL));
  gate_await_waiters(&gate, 1);
  for (i = 0; i < STOP_TASKS; i++) ASSERT_OK(uvt_threaded(&b, &stopper.reqs[i], noop_work, stop_after));
  gate_open(&gate);
  while (stopper.delivered < 10) ASSERT_GE(uv_run(&loop, UV_RUN_DEFAULT), 0);
  ASSERT_LE(stopper.delivered, 1000); /* one batch at the most */
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ(stopper.delivered, STOP_TASKS);
  test_close_all(&loop, &b);
  gate_destroy(&gate);
  ASSERT_OK(uvt_pool_free(pool));
}

/* A push that lands while the loop is delivering (on the drain's marker,
 * which it then does not wake the loop for) is delivered by the same drain. */
static struct {
  uvt_bridge_t* b;
  int work_done, called;
} during;

static void during_call(void* arg) {
  (void)arg;
  during.called++;
}

static void call_from_thread(void* arg) {
  (void)arg;
  ASSERT_OK(uvt_call(during.b, during_call, NULL));
}

static void during_after(uvt_work_t* req, int status) {
  (void)req;
  ASSERT_EQ(status, 0);
  run_on_thread(call_from_thread, NULL); /* pushes while we are in the drain */
  ASSERT_EQ(during.called, 0);
  during.work_done = 1;
}

static void test_push_during_drain(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_work_t req;
  uvt_pool_t* pool = test_pool(1, 1);
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uvt_bridge_init(&loop, &b, pool));
  during.b = &b;
  during.work_done = during.called = 0;
  ASSERT_OK(uvt_threaded(&b, &req, noop_work, during_after));
  while (!during.work_done) ASSERT_GE(uv_run(&loop, UV_RUN_ONCE), 0);
  ASSERT_EQ(during.called, 1); /* in the same uv_run iteration */
  test_close_all(&loop, &b);
  ASSERT_OK(uvt_pool_free(pool));
}

/* Callbacks that keep posting keep a drain busy only up to its budget:
 * a timer started in the first of them fires after at most 1000. */
#define CHAIN_CALLS 5000
static struct {
  uvt_bridge_t* b;
  uv_timer_t timer;
  int calls, fired_at;
} chain;

static void chain_timer(uv_timer_t* t) {
  (void)t;
  chain.fired_at = chain.calls;
}

static void chain_call(void* arg) {
  (void)arg;
  if (++chain.calls == 1) ASSERT_OK(uv_timer_start(&chain.timer, chain_timer, 0, 0));
  if (chain.calls < CHAIN_CALLS)
    ASSERT_OK(uvt_call(chain.b, chain_call, NULL));
  else
    uvt_bridge_unref(chain.b);
}

static void test_flood_yields_to_timers(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(0, 1);
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uvt_bridge_init(&loop, &b, pool));
  ASSERT_OK(uv_timer_init(&loop, &chain.timer));
  chain.b = &b;
  chain.calls = 0;
  chain.fired_at = -1;
  uvt_bridge_ref(&b); /* calls alone do not keep the loop alive */
  ASSERT_OK(uvt_call(&b, chain_call, NULL));
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ(chain.calls, CHAIN_CALLS);
  ASSERT_GE(chain.fired_at, 1);
  ASSERT_LE(chain.fired_at, 1000); /* one drain's budget */
  uv_close((uv_handle_t*)&chain.timer, NULL);
  test_close_all(&loop, &b);
  ASSERT_OK(uvt_pool_free(pool));
}

/* ---- Batch hooks ------------------------------------------------------- */

static char batch_log[256]; /* E enter, L leave, c a callback */
static int batch_len;
static uvt_bridge_t* batch_bridge;

static void batch_note(char c) {
  ASSERT_LT(batch_len, (int)sizeof(batch_log) - 1);
  batch_log[batch_len++] = c;
}
static void batch_enter(uvt_bridge_t* b) {
  ASSERT_PTR_EQ(b, batch_bridge);
  batch_note('E');
}
static void batch_leave(uvt_bridge_t* b) {
  ASSERT_PTR_EQ(b, batch_bridge);
  batch_note('L');
}
static void batch_work(uvt_work_t* req) { (void)req; }
static void batch_after(uvt_work_t* req, int status) {
  (void)req;
  ASSERT_EQ(status, 0);
  batch_note('c');
}
static void batch_call(void* arg) {
  (void)arg;
  batch_note('c');
}
static void batch_chan_cb(uvt_chan_t* ch, int status, void* item) {
  (void)ch;
  (void)status;
  (void)item;
  batch_note('c');
}

/* Every callback lies inside an enter/leave pair; no pair is empty. */
static void batch_check_log(void) {
  int i, open = 0;
  batch_log[batch_len] = '\0';
  for (i = 0; i < batch_len; i++) {
    if (batch_log[i] == 'E') {
      ASSERT_EQ(open, 0);
      ASSERT(i + 1 < batch_len && batch_log[i + 1] == 'c'); /* never around nothing */
      open = 1;
    } else if (batch_log[i] == 'L') {
      ASSERT_EQ(open, 1);
      open = 0;
    } else {
      ASSERT_EQ(open, 1);
    }
  }
  ASSERT_EQ(open, 0);
}

static void test_batch_hooks(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(0, 2);
  uvt_work_t w[3];
  uvt_chan_t ch;
  int i;
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uvt_bridge_init(&loop, &b, pool));
  batch_bridge = &b;
  batch_len = 0;
  ASSERT_OK(uvt_bridge_batch_hooks(&b, batch_enter, batch_leave));

  /* Completions and calls: each drain's callbacks between E and L. */
  for (i = 0; i < 3; i++) ASSERT_OK(uvt_threaded(&b, &w[i], batch_work, batch_after));
  ASSERT_OK(uvt_call(&b, batch_call, NULL));
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  batch_check_log();
  ASSERT(strchr(batch_log, 'E') != NULL);
  ASSERT_EQ((int)(strchr(batch_log, 'c') - batch_log), 1);

  /* A drain that delivers nothing calls neither hook: a completion without
   * an after, and a paused channel whose item was scheduled. */
  batch_len = 0;
  ASSERT_OK(uvt_threaded(&b, &w[0], batch_work, NULL));
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_OK(uvt_chan_init(&b, &ch, 2, batch_chan_cb));
  ASSERT_OK(uvt_chan_try_put(&ch, &ch)); /* schedules a delivery */
  ASSERT_OK(uvt_chan_pause(&ch));        /* which then finds nothing to deliver */
  ASSERT_GE(uv_run(&loop, UV_RUN_NOWAIT), 0);
  ASSERT_EQ(batch_len, 0);

  /* Item and final callbacks are batched too. */
  ASSERT_OK(uvt_chan_close(&ch));
  ASSERT_OK(uvt_chan_resume(&ch));
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  batch_check_log();
  ASSERT_EQ(batch_len, 4); /* E, the item, the final, L */

  /* Removed hooks are not called. */
  ASSERT_OK(uvt_bridge_batch_hooks(&b, NULL, NULL));
  batch_len = 0;
  ASSERT_OK(uvt_call(&b, batch_call, NULL));
  test_close_all(&loop, &b); /* accepted calls still run */
  ASSERT_EQ(batch_len, 1);   /* the call ran, no hook */
  ASSERT_OK(uvt_pool_free(pool));
}

/* ---- Stream ref/unref --------------------------------------------------- */

static int unref_finals;
static void unref_chan_cb(uvt_chan_t* ch, int status, void* item) {
  (void)ch;
  (void)status;
  if (item == NULL) unref_finals++;
}
static void unref_iter_cb(uvt_iter_t* it, int status, void* item) {
  (void)it;
  (void)status;
  if (item == NULL) unref_finals++;
}
static int unref_endless_gen(uvt_iter_t* it) {
  while (uvt_yield(it, it) == 0) {
  }
  return 0;
}
static void unref_from_thread(void* arg) { uvt_chan_unref(arg); /* ignored here */ }
static void unref_timer_cb(uv_timer_t* t) { uv_close((uv_handle_t*)t, NULL); }

/* Runs the loop for ms with a ref'd timer: unref'd streams deliver meanwhile. */
static void run_for(uv_loop_t* loop, uint64_t ms) {
  uv_timer_t t;
  ASSERT_OK(uv_timer_init(loop, &t));
  ASSERT_OK(uv_timer_start(&t, unref_timer_cb, ms, 0));
  ASSERT_OK(uv_run(loop, UV_RUN_DEFAULT));
}

static void test_stream_unref(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(0, 1);
  uvt_chan_t ch;
  uvt_iter_t it;
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uvt_bridge_init(&loop, &b, pool));
  unref_finals = 0;

  /* An open channel keeps the loop alive until it is unref'd. */
  ASSERT_OK(uvt_chan_init(&b, &ch, 4, unref_chan_cb));
  ASSERT(uv_loop_alive(&loop));
  uvt_chan_unref(&ch);
  uvt_chan_unref(&ch); /* idempotent */
  ASSERT(!uv_loop_alive(&loop));
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT)); /* returns with the channel open */
  uvt_chan_ref(&ch);
  ASSERT(uv_loop_alive(&loop));
  run_on_thread(unref_from_thread, &ch); /* another thread: ignored */
  ASSERT(uv_loop_alive(&loop));
  uvt_chan_unref(&ch);
  ASSERT(!uv_loop_alive(&loop));

  /* Unref'd, it still delivers while the loop runs for something else. */
  ASSERT_OK(uvt_chan_try_put(&ch, &ch));
  ASSERT_OK(uvt_chan_close(&ch));
  uvt_chan_ref(&ch); /* closed: ignored */
  ASSERT(!uv_loop_alive(&loop));
  run_for(&loop, 20);
  ASSERT_EQ(unref_finals, 1);
  uvt_chan_ref(&ch); /* finished: ignored */
  ASSERT(!uv_loop_alive(&loop));

  /* An unref'd endless generator does not keep uv_run() alive either. */
  ASSERT_OK(uvt_threaded_iterable(&b, &it, 2, unref_endless_gen, unref_iter_cb));
  ASSERT(uv_loop_alive(&loop));
  uvt_iter_unref(&it);
  ASSERT(!uv_loop_alive(&loop));
  run_for(&loop, 20); /* returns with the generator still yielding */
  uvt_iter_ref(&it);
  ASSERT(uv_loop_alive(&loop));
  ASSERT_OK(uvt_iter_stop(&it, NULL));
  uvt_iter_unref(&it); /* stopped: ignored, so the loop runs to the final */
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ(unref_finals, 2);
  test_close_all(&loop, &b);
  ASSERT_OK(uvt_pool_free(pool));
}

TEST_MAIN(TEST(test_init_errors), TEST(test_close_errors), TEST(test_idle_and_ref),
          TEST(test_close_inside_callback), TEST(test_loop_moves_thread),
          TEST(test_uv_stop_mid_batch), TEST(test_push_during_drain),
          TEST(test_flood_yields_to_timers), TEST(test_batch_hooks), TEST(test_stream_unref))
