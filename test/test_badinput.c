/* Every public function through bad input: NULL, zero sizes, garbage
 * (never initialised) structs, the wrong thread, double init, double close,
 * use after close, resubmission in flight, cancel of a finished request,
 * finished channels and iterators. Each row checks the documented result;
 * the rows are printed as the Markdown table the README shows. */
#include "test.h"

static int rows;

static void row(const char* fn, const char* situation, int got, int want) {
  printf("| `%s` | %s | %s |\n", fn, situation, want == 0 ? "0" : uv_err_name(want));
  if (got != want) {
    fprintf(stderr, "%s (%s): got %s, documented %s\n", fn, situation,
            got ? uv_err_name(got) : "0", want ? uv_err_name(want) : "0");
    abort();
  }
  rows++;
}

static void noop_work(uvt_work_t* req) { (void)req; }
static void gate_work(uvt_work_t* req) { gate_wait(req->data); }
static int afters, iter_finals, chan_finals; /* final callbacks seen */
static void noop_after(uvt_work_t* req, int status) {
  (void)req;
  (void)status;
  afters++;
}
static int one_item_gen(uvt_iter_t* it) { return uvt_yield(it, it) == 0 ? 0 : UV_EPIPE; }
static int endless_gen(uvt_iter_t* it) {
  while (uvt_yield(it, it) == 0) {
  }
  return 0;
}
static void iter_cb(uvt_iter_t* it, int status, void* item) {
  (void)it;
  (void)status;
  if (item == NULL) iter_finals++;
}
static void chan_cb(uvt_chan_t* ch, int status, void* item) {
  (void)ch;
  (void)status;
  if (item == NULL) chan_finals++;
}
static void call_fn(void* arg) { (void)arg; }
static void await_fn(uvt_await_t* aw, void* arg) {
  (void)arg;
  uvt_await_resolve(aw, 0);
}

/* The calls a thread other than the loop's makes, and what they returned. */
typedef struct {
  uvt_bridge_t* b;
  uvt_work_t* running;
  uvt_iter_t* it;
  uvt_chan_t* ch;
  int threaded, separate, threaded_ex, cancel, close, iterable, pause, resume, iclose, yield;
  int chan_init, chan_pause, chan_resume, chan_stop, batch_hooks;
} other_thread_t;

static void other_thread(void* arg) {
  other_thread_t* o = arg;
  uvt_work_t w;
  uvt_iter_t it2;
  uvt_chan_t ch2;
  o->threaded = uvt_threaded(o->b, &w, noop_work, noop_after);
  o->separate = uvt_threaded_separate(o->b, &w, noop_work, noop_after);
  o->threaded_ex = uvt_threaded_ex(o->b, &w, NULL, noop_work, noop_after);
  o->cancel = uvt_cancel(o->running);
  o->close = uvt_bridge_close(o->b, NULL);
  o->iterable = uvt_threaded_iterable(o->b, &it2, 1, one_item_gen, iter_cb);
  o->pause = uvt_iter_pause(o->it);
  o->resume = uvt_iter_resume(o->it);
  o->iclose = uvt_iter_stop(o->it, NULL);
  o->yield = uvt_yield(o->it, NULL);
  o->chan_init = uvt_chan_init(o->b, &ch2, 1, chan_cb);
  o->chan_pause = uvt_chan_pause(o->ch);
  o->chan_resume = uvt_chan_resume(o->ch);
  o->chan_stop = uvt_chan_stop(o->ch, NULL);
  o->batch_hooks = uvt_bridge_batch_hooks(o->b, NULL, NULL);
  uvt_bridge_ref(o->b);     /* ignored, like the stream ref calls below */
  uvt_iter_unref(o->it);
  uvt_chan_unref(o->ch);
}

static void test_bad_input(void) {
  uv_loop_t loop;
  uvt_bridge_t b, garbage_b;
  uvt_pool_t* pool = NULL;
  uvt_pool_t* pool2;
  uvt_pool_options_t o;
  uvt_pool_stats_t st;
  uvt_lane_options_t lo;
  uvt_lane_t *lane = NULL, *lane2 = NULL;
  uvt_lane_stats_t ls;
  uvt_work_options_t wo;
  uvt_work_t req, running, done_req, garbage_w, lane_running, lane_waiting;
  uvt_iter_t it, done_it, garbage_it;
  uvt_chan_t ch, full_ch, done_ch, garbage_ch;
  test_gate_t gate;
  other_thread_t other;

  memset(&garbage_b, 0xA7, sizeof(garbage_b));
  memset(&garbage_w, 0xA7, sizeof(garbage_w));
  memset(&garbage_it, 0xA7, sizeof(garbage_it));
  memset(&garbage_ch, 0xA7, sizeof(garbage_ch));
  printf("| function | situation | result |\n|---|---|---|\n");

  uvt_pool_options_init(&o);
  row("uvt_pool_new", "pool NULL", uvt_pool_new(NULL, &o), UV_EINVAL);
  o.max_threads = 0;
  row("uvt_pool_new", "max_threads 0", uvt_pool_new(&pool, &o), UV_EINVAL);
  o.max_threads = 1;
  o.min_threads = 2;
  row("uvt_pool_new", "min_threads > max_threads", uvt_pool_new(&pool, &o), UV_EINVAL);
  row("uvt_pool_free", "NULL", uvt_pool_free(NULL), UV_EINVAL);
  row("uvt_pool_free", "the default pool", uvt_pool_free(uvt_pool_default()), UV_EINVAL);
  row("uvt_pool_stats", "pool or out NULL", uvt_pool_stats(NULL, &st), UV_EINVAL);

  pool = test_pool(0, 2); /* one thread stays blocked below, one works */
  ASSERT_OK(uv_loop_init(&loop));
  row("uvt_bridge_init", "loop or bridge NULL", uvt_bridge_init(NULL, &b, pool), UV_EINVAL);
  ASSERT_OK(uvt_bridge_init(&loop, &b, pool));
  row("uvt_bridge_init", "already initialised (double init)", uvt_bridge_init(&loop, &b, pool), UV_EBUSY);
  row("uvt_pool_free", "a bridge still uses it", uvt_pool_free(pool), UV_EBUSY);
  row("uvt_bridge_close", "NULL", uvt_bridge_close(NULL, NULL), UV_EINVAL);
  row("uvt_bridge_close", "never initialised", uvt_bridge_close(&garbage_b, NULL), UV_EINVAL);
  row("uvt_bridge_batch_hooks", "NULL", uvt_bridge_batch_hooks(NULL, NULL, NULL), UV_EINVAL);
  row("uvt_bridge_batch_hooks", "never initialised", uvt_bridge_batch_hooks(&garbage_b, NULL, NULL), UV_EINVAL);

  row("uvt_threaded", "bridge, req or work NULL", uvt_threaded(&b, &req, NULL, noop_after), UV_EINVAL);
  row("uvt_threaded", "bridge never initialised", uvt_threaded(&garbage_b, &req, noop_work, noop_after), UV_EINVAL);
  row("uvt_threaded_separate", "bridge, req or work NULL", uvt_threaded_separate(&b, NULL, noop_work, noop_after), UV_EINVAL);
  row("uvt_cancel", "NULL", uvt_cancel(NULL), UV_EINVAL);
  row("uvt_cancel", "never submitted", uvt_cancel(&garbage_w), UV_EINVAL);
  row("uvt_is_cancelled", "NULL", uvt_is_cancelled(NULL), 0);
  row("uvt_is_cancelled", "never submitted", uvt_is_cancelled(&garbage_w), 0);

  /* A running request (its worker waits at a gate), a finished one. */
  gate_init(&gate);
  running.data = &gate;
  ASSERT_OK(uvt_threaded(&b, &running, gate_work, noop_after));
  gate_await_waiters(&gate, 1);
  row("uvt_threaded", "request in flight (resubmission)", uvt_threaded(&b, &running, noop_work, noop_after), UV_EBUSY);
  row("uvt_threaded_separate", "request in flight", uvt_threaded_separate(&b, &running, noop_work, noop_after), UV_EBUSY);
  row("uvt_cancel", "running", uvt_cancel(&running), UV_EBUSY);
  ASSERT_OK(uvt_threaded(&b, &done_req, noop_work, noop_after));
  while (afters == 0) ASSERT_GE(uv_run(&loop, UV_RUN_ONCE), 0);
  row("uvt_cancel", "finished (after delivered)", uvt_cancel(&done_req), UV_EINVAL);

  /* Lanes. The pool's second thread blocks in lane_running (until the end). */
  uvt_lane_options_init(&lo);
  uvt_lane_options_init(NULL); /* ignored */
  row("uvt_lane_new", "lane NULL", uvt_lane_new(pool, &lo, NULL), UV_EINVAL);
  lo.max_running = 0;
  row("uvt_lane_new", "max_running 0", uvt_lane_new(pool, &lo, &lane), UV_EINVAL);
  lo.max_running = 1;
  lo.max_queued = 1;
  ASSERT_OK(uvt_lane_new(pool, &lo, &lane));
  row("uvt_lane_free", "NULL", uvt_lane_free(NULL), UV_EINVAL);
  row("uvt_lane_stats", "lane or out NULL", uvt_lane_stats(NULL, &ls), UV_EINVAL);
  pool2 = test_pool(0, 1);
  ASSERT_OK(uvt_lane_new(pool2, NULL, &lane2));
  row("uvt_pool_free", "a lane of it exists", uvt_pool_free(pool2), UV_EBUSY);
  wo.lane = lane2;
  wo.queue_timeout_ms = 0;
  row("uvt_threaded_ex", "a lane of another pool than the bridge's", uvt_threaded_ex(&b, &req, &wo, noop_work, noop_after), UV_EINVAL);
  wo.lane = lane;
  row("uvt_threaded_ex", "bridge, req or work NULL", uvt_threaded_ex(&b, &req, &wo, NULL, noop_after), UV_EINVAL);
  row("uvt_threaded_ex", "bridge never initialised", uvt_threaded_ex(&garbage_b, &req, &wo, noop_work, noop_after), UV_EINVAL);
  lane_running.data = &gate;
  ASSERT_OK(uvt_threaded_ex(&b, &lane_running, &wo, gate_work, noop_after));
  gate_await_waiters(&gate, 2);
  ASSERT_OK(uvt_threaded_ex(&b, &lane_waiting, &wo, noop_work, noop_after)); /* waits: 1 = max_queued */
  row("uvt_threaded_ex", "the lane's max_queued tasks wait already", uvt_threaded_ex(&b, &req, &wo, noop_work, noop_after), UV_EAGAIN);
  row("uvt_threaded_ex", "request in flight (waiting in its lane)", uvt_threaded_ex(&b, &lane_waiting, &wo, noop_work, noop_after), UV_EBUSY);
  row("uvt_lane_free", "a task of it queued, running or not yet delivered", uvt_lane_free(lane), UV_EBUSY);

  /* Iterators. */
  row("uvt_threaded_iterable", "bridge, it, gen or cb NULL", uvt_threaded_iterable(&b, &it, 1, NULL, iter_cb), UV_EINVAL);
  row("uvt_threaded_iterable", "max_size 0", uvt_threaded_iterable(&b, &it, 0, one_item_gen, iter_cb), UV_EINVAL);
  row("uvt_threaded_iterable_separate", "max_size 0", uvt_threaded_iterable_separate(&b, &it, 0, one_item_gen, iter_cb), UV_EINVAL);
  row("uvt_iter_pause", "NULL or never started", uvt_iter_pause(&garbage_it), UV_EINVAL);
  row("uvt_iter_resume", "NULL or never started", uvt_iter_resume(NULL), UV_EINVAL);
  row("uvt_iter_stop", "NULL or never started", uvt_iter_stop(&garbage_it, NULL), UV_EINVAL);
  row("uvt_iter_close", "NULL (deprecated alias of uvt_iter_stop)", uvt_iter_close(NULL, NULL), UV_EINVAL);
  uvt_iter_ref(NULL); /* ignored, as on a never-started iterator */
  uvt_iter_unref(&garbage_it);
  row("uvt_yield", "NULL", uvt_yield(NULL, NULL), UV_EINVAL);
  ASSERT_OK(uvt_threaded_iterable_separate(&b, &it, 1, endless_gen, iter_cb));
  ASSERT_OK(uvt_iter_pause(&it)); /* stays open until the bridge closes */
  row("uvt_threaded_iterable", "iterator still open", uvt_threaded_iterable(&b, &it, 1, one_item_gen, iter_cb), UV_EBUSY);
  row("uvt_yield", "not from its generator", uvt_yield(&it, NULL), UV_EINVAL);
  ASSERT_OK(uvt_threaded_iterable_separate(&b, &done_it, 1, one_item_gen, iter_cb));
  while (iter_finals == 0) ASSERT_GE(uv_run(&loop, UV_RUN_ONCE), 0);
  row("uvt_iter_pause", "after the final callback", uvt_iter_pause(&done_it), UV_EINVAL);
  row("uvt_iter_resume", "after the final callback", uvt_iter_resume(&done_it), UV_EINVAL);
  row("uvt_iter_stop", "after the final callback", uvt_iter_stop(&done_it, NULL), UV_EINVAL);

  /* Channels. */
  row("uvt_chan_init", "bridge, ch or cb NULL", uvt_chan_init(&b, &ch, 1, NULL), UV_EINVAL);
  row("uvt_chan_init", "max_size 0", uvt_chan_init(&b, &ch, 0, chan_cb), UV_EINVAL);
  row("uvt_chan_init", "max_size too large to allocate", uvt_chan_init(&b, &ch, SIZE_MAX, chan_cb), UV_ENOMEM);
  row("uvt_chan_put", "NULL or never initialised", uvt_chan_put(&garbage_ch, NULL), UV_EINVAL);
  row("uvt_chan_put_timeout", "NULL", uvt_chan_put_timeout(NULL, NULL, 1), UV_EINVAL);
  row("uvt_chan_try_put", "NULL or never initialised", uvt_chan_try_put(&garbage_ch, NULL), UV_EINVAL);
  row("uvt_chan_close", "NULL or never initialised", uvt_chan_close(&garbage_ch), UV_EINVAL);
  row("uvt_chan_pause", "NULL or never initialised", uvt_chan_pause(&garbage_ch), UV_EINVAL);
  row("uvt_chan_resume", "NULL", uvt_chan_resume(NULL), UV_EINVAL);
  row("uvt_chan_stop", "NULL or never initialised", uvt_chan_stop(&garbage_ch, NULL), UV_EINVAL);
  uvt_chan_ref(NULL); /* ignored, as on a never-initialised channel */
  uvt_chan_unref(&garbage_ch);
  ASSERT_OK(uvt_chan_init(&b, &ch, 1, chan_cb));
  row("uvt_chan_init", "channel still open", uvt_chan_init(&b, &ch, 1, chan_cb), UV_EBUSY);
  row("uvt_chan_put", "on the loop thread (would deadlock)", uvt_chan_put(&ch, NULL), UV_EBUSY);
  row("uvt_chan_put_timeout", "on the loop thread", uvt_chan_put_timeout(&ch, NULL, 1), UV_EBUSY);
  ASSERT_OK(uvt_chan_init(&b, &full_ch, 1, chan_cb));
  ASSERT_OK(uvt_chan_pause(&full_ch));
  ASSERT_OK(uvt_chan_try_put(&full_ch, &full_ch));
  row("uvt_chan_try_put", "full", uvt_chan_try_put(&full_ch, &full_ch), UV_EAGAIN);
  ASSERT_OK(uvt_chan_stop(&full_ch, NULL));
  row("uvt_chan_stop", "already stopped", uvt_chan_stop(&full_ch, NULL), UV_EINVAL);
  row("uvt_chan_close", "stopped", uvt_chan_close(&full_ch), UV_EPIPE);
  row("uvt_chan_try_put", "stopped", uvt_chan_try_put(&full_ch, NULL), UV_EPIPE);
  row("uvt_chan_pause", "stopped", uvt_chan_pause(&full_ch), UV_EINVAL);
  ASSERT_OK(uvt_chan_init(&b, &done_ch, 1, chan_cb));
  ASSERT_OK(uvt_chan_close(&done_ch));
  row("uvt_chan_close", "closed already", uvt_chan_close(&done_ch), UV_EPIPE);
  row("uvt_chan_try_put", "closed", uvt_chan_try_put(&done_ch, NULL), UV_EPIPE);
  while (chan_finals < 2) ASSERT_GE(uv_run(&loop, UV_RUN_ONCE), 0); /* full_ch's, done_ch's */
  row("uvt_chan_put_timeout", "after the final callback", uvt_chan_put_timeout(&done_ch, NULL, 1), UV_EPIPE);
  row("uvt_chan_stop", "after the final callback", uvt_chan_stop(&done_ch, NULL), UV_EINVAL);
  row("uvt_chan_resume", "after the final callback", uvt_chan_resume(&done_ch), UV_EINVAL);

  /* Calls and awaits. */
  row("uvt_call", "bridge or fn NULL", uvt_call(&b, NULL, NULL), UV_EINVAL);
  row("uvt_call", "bridge never initialised", uvt_call(&garbage_b, call_fn, NULL), UV_EINVAL);
  row("uvt_sync_await", "bridge or fn NULL", uvt_sync_await(NULL, await_fn, NULL), UV_EINVAL);
  row("uvt_sync_await", "on the loop thread (would deadlock)", uvt_sync_await(&b, await_fn, NULL), UV_EBUSY);
  uvt_await_resolve(NULL, 0); /* ignored */

  /* The wrong thread. */
  memset(&other, 0, sizeof(other));
  other.b = &b;
  other.running = &running;
  other.it = &it;
  other.ch = &ch;
  run_on_thread(other_thread, &other);
  row("uvt_threaded", "not the loop thread", other.threaded, UV_EINVAL);
  row("uvt_threaded_separate", "not the loop thread", other.separate, UV_EINVAL);
  row("uvt_threaded_ex", "not the loop thread", other.threaded_ex, UV_EINVAL);
  row("uvt_cancel", "not the loop thread", other.cancel, UV_EINVAL);
  row("uvt_bridge_close", "not the loop thread", other.close, UV_EINVAL);
  row("uvt_threaded_iterable", "not the loop thread", other.iterable, UV_EINVAL);
  row("uvt_iter_pause", "not the loop thread", other.pause, UV_EINVAL);
  row("uvt_iter_resume", "not the loop thread", other.resume, UV_EINVAL);
  row("uvt_iter_stop", "not the loop thread", other.iclose, UV_EINVAL);
  row("uvt_yield", "not its generator thread", other.yield, UV_EINVAL);
  row("uvt_chan_init", "not the loop thread", other.chan_init, UV_EINVAL);
  row("uvt_chan_pause", "not the loop thread", other.chan_pause, UV_EINVAL);
  row("uvt_chan_resume", "not the loop thread", other.chan_resume, UV_EINVAL);
  row("uvt_chan_stop", "not the loop thread", other.chan_stop, UV_EINVAL);
  row("uvt_bridge_batch_hooks", "not the loop thread", other.batch_hooks, UV_EINVAL);

  /* A closing bridge, then a closed one. */
  ASSERT_OK(uvt_bridge_close(&b, NULL));
  row("uvt_bridge_close", "closing already (double close)", uvt_bridge_close(&b, NULL), UV_EINVAL);
  row("uvt_threaded", "bridge closing", uvt_threaded(&b, &req, noop_work, noop_after), UV_EPIPE);
  row("uvt_threaded_separate", "bridge closing", uvt_threaded_separate(&b, &req, noop_work, noop_after), UV_EPIPE);
  row("uvt_threaded_ex", "bridge closing", uvt_threaded_ex(&b, &req, &wo, noop_work, noop_after), UV_EPIPE);
  row("uvt_threaded_iterable", "bridge closing", uvt_threaded_iterable(&b, &done_it, 1, one_item_gen, iter_cb), UV_EPIPE);
  row("uvt_chan_init", "bridge closing", uvt_chan_init(&b, &done_ch, 1, chan_cb), UV_EPIPE);
  row("uvt_call", "bridge closing", uvt_call(&b, call_fn, NULL), UV_EPIPE);
  row("uvt_sync_await", "bridge closing", uvt_sync_await(&b, await_fn, NULL), UV_EPIPE);
  row("uvt_chan_try_put", "bridge closing", uvt_chan_try_put(&ch, NULL), UV_EPIPE);
  gate_open(&gate);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  row("uvt_bridge_close", "after close_cb (use after close)", uvt_bridge_close(&b, NULL), UV_EINVAL);
  row("uvt_threaded", "after close_cb (use after close)", uvt_threaded(&b, &req, noop_work, noop_after), UV_EINVAL);
  row("uvt_call", "after close_cb (use after close)", uvt_call(&b, call_fn, NULL), UV_EINVAL);
  row("uvt_bridge_batch_hooks", "after close_cb (use after close)", uvt_bridge_batch_hooks(&b, NULL, NULL), UV_EINVAL);
  row("uvt_chan_put", "after its final callback", uvt_chan_put(&ch, NULL), UV_EPIPE);
  uvt_bridge_ref(&b);   /* ignored */
  uvt_bridge_unref(&b); /* ignored */
  ASSERT_OK(uv_loop_close(&loop));
  gate_destroy(&gate);
  ASSERT_OK(uvt_lane_free(lane));
  ASSERT_OK(uvt_lane_free(lane2));
  ASSERT_OK(uvt_pool_free(pool2));
  ASSERT_OK(uvt_pool_free(pool));
  fprintf(stderr, "%d bad inputs checked\n", rows);
}

TEST_MAIN(TEST(test_bad_input))
