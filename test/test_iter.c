/* uvt_threaded_iterable[_separate], uvt_yield, pause/resume/stop.
 * Ports aiomisc's threaded-generator scenarios. */
#include "test.h"

typedef struct {
  uvt_iter_t it;
  int limit;          /* items to yield; -1 = forever */
  int fail_with;      /* returned after the items */
  int yielded;        /* accepted by uvt_yield (generator thread) */
  int refused;        /* uvt_yield returned UV_EPIPE */
  int cleaned_up;
  int gen_runs;
  int delivered;      /* item callbacks (loop) */
  int finals;
  int final_status;
  int last_item;
  int in_order;
  int max_outstanding;
  size_t max_size;
  int delivered_shared; /* atomic copy of delivered for the generator */
  int pause_at;       /* pause after this many items (0 = never) */
  int close_at;       /* stop after this many items (0 = never) */
  int use_alias;      /* stop with the deprecated uvt_iter_close */
  int paused;
  int dropped;
  void* gen_ctx;
  void* cb_ctx;
  test_gate_t* gate;  /* the generator waits here before it starts */
  uv_timer_t timer;
} gen_t;

static int dropped_total;
static void drop_item(void* item) {
  free(item);
  dropped_total++;
}

static int counting_gen(uvt_iter_t* it) {
  gen_t* g = (gen_t*)it;
  int i;
  g->gen_runs++;
  g->gen_ctx = uvt_context_get();
  if (g->gate != NULL) gate_wait(g->gate);
  for (i = 0; g->limit < 0 || i < g->limit; i++) {
    int* item = malloc(sizeof(int));
    int rc, outstanding;
    *item = i;
    rc = uvt_yield(it, item);
    if (rc == UV_EPIPE) {
      free(item); /* not taken: ours to clean up */
      g->refused++;
      break;
    }
    ASSERT_OK(rc);
    __atomic_add_fetch(&g->yielded, 1, __ATOMIC_RELEASE);
    /* At least this many are accepted and not yet passed to the callback. */
    outstanding = g->yielded - __atomic_load_n(&g->delivered_shared, __ATOMIC_ACQUIRE);
    if (outstanding > g->max_outstanding) g->max_outstanding = outstanding;
  }
  g->cleaned_up = 1;
  return g->fail_with;
}

static void gen_cb(uvt_iter_t* it, int status, void* item) {
  gen_t* g = (gen_t*)it;
  ASSERT_EQ(g->finals, 0); /* nothing after the final callback */
  ASSERT_EQ(g->paused, 0); /* nothing while paused */
  g->cb_ctx = uvt_context_get();
  if (item == NULL) {
    g->finals++;
    g->final_status = status;
    return;
  }
  ASSERT_EQ(status, 0);
  if (*(int*)item != g->last_item + 1) g->in_order = 0;
  g->last_item = *(int*)item;
  free(item);
  g->delivered++;
  __atomic_store_n(&g->delivered_shared, g->delivered, __ATOMIC_RELEASE);
  if (g->close_at && g->delivered == g->close_at) {
    int (*stop)(uvt_iter_t*, uvt_drop_cb) = g->use_alias ? uvt_iter_close : uvt_iter_stop;
    ASSERT_OK(stop(it, drop_item)); /* from inside the callback */
    ASSERT_ERR(stop(it, drop_item), UV_EINVAL);
  }
  if (g->pause_at && g->delivered == g->pause_at) {
    ASSERT_OK(uvt_iter_pause(it));
    g->paused = 1;
  }
}

static void gen_init(gen_t* g, int limit, size_t max_size) {
  memset(g, 0, sizeof(*g));
  g->limit = limit;
  g->last_item = -1;
  g->in_order = 1;
  g->max_size = max_size;
}

static void setup(uv_loop_t* loop, uvt_bridge_t* b, uvt_pool_t* pool) {
  ASSERT_OK(uv_loop_init(loop));
  ASSERT_OK(uvt_bridge_init(loop, b, pool));
  dropped_total = 0;
}

static void check_books(gen_t* g) {
  /* Everything accepted was delivered or dropped. */
  ASSERT_EQ(g->yielded, g->delivered + dropped_total);
  ASSERT_LE(g->max_outstanding, (int)g->max_size);
}

static void test_basic(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(0, 2);
  gen_t g;
  int ctx_tag;
  setup(&loop, &b, pool);
  gen_init(&g, 1000, 4);
  uvt_context_set(&ctx_tag);
  ASSERT_OK(uvt_threaded_iterable(&b, &g.it, 4, counting_gen, gen_cb));
  uvt_context_set(NULL);
  ASSERT_PTR_EQ(g.it.bridge, &b);
  ASSERT_ERR(uvt_threaded_iterable(&b, &g.it, 4, counting_gen, gen_cb), UV_EBUSY);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT)); /* an open iterator keeps the loop alive */
  ASSERT_EQ(g.delivered, 1000);
  ASSERT(g.in_order);
  ASSERT_EQ(g.finals, 1);
  ASSERT_EQ(g.final_status, UV_EOF);
  ASSERT_PTR_EQ(g.gen_ctx, &ctx_tag);
  ASSERT_PTR_EQ(g.cb_ctx, &ctx_tag);
  check_books(&g);
  /* After the final callback: closed for good, reusable. */
  ASSERT_ERR(uvt_iter_stop(&g.it, NULL), UV_EINVAL);
  ASSERT_ERR(uvt_iter_pause(&g.it), UV_EINVAL);
  ASSERT_ERR(uvt_iter_resume(&g.it), UV_EINVAL);
  gen_init(&g, 10, 1);
  ASSERT_OK(uvt_threaded_iterable(&b, &g.it, 1, counting_gen, gen_cb));
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ(g.delivered, 10);
  ASSERT_EQ(g.final_status, UV_EOF);
  test_close_all(&loop, &b);
  ASSERT_OK(uvt_pool_free(pool));
}

static void test_max_size_1(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(0, 1);
  gen_t g;
  setup(&loop, &b, pool);
  gen_init(&g, 5000, 1);
  ASSERT_OK(uvt_threaded_iterable(&b, &g.it, 1, counting_gen, gen_cb));
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ(g.delivered, 5000);
  ASSERT(g.in_order);
  ASSERT_EQ(g.final_status, UV_EOF);
  ASSERT_EQ(g.max_outstanding, 1);
  check_books(&g);
  test_close_all(&loop, &b);
  ASSERT_OK(uvt_pool_free(pool));
}

static void test_error_after_items(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(0, 1);
  gen_t g;
  setup(&loop, &b, pool);
  gen_init(&g, 3, 2);
  g.fail_with = UV_EIO;
  ASSERT_OK(uvt_threaded_iterable(&b, &g.it, 2, counting_gen, gen_cb));
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ(g.delivered, 3); /* the items come first */
  ASSERT_EQ(g.finals, 1);
  ASSERT_EQ(g.final_status, UV_EIO);
  test_close_all(&loop, &b);
  ASSERT_OK(uvt_pool_free(pool));
}

static void test_error_before_items(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(0, 1);
  gen_t g;
  setup(&loop, &b, pool);
  gen_init(&g, 0, 2);
  g.fail_with = UV_ENOENT;
  ASSERT_OK(uvt_threaded_iterable_separate(&b, &g.it, 2, counting_gen, gen_cb));
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ(g.delivered, 0);
  ASSERT_EQ(g.final_status, UV_ENOENT);
  test_close_all(&loop, &b);
  ASSERT_OK(uvt_pool_free(pool));
}

/* An infinite generator closed from the item callback: its blocked yield
 * returns UV_EPIPE, it cleans up, buffered items go to drop. */
/* Stopped early, an endless generator's yield returns UV_EPIPE. The third
 * round stops it with uvt_iter_close, the deprecated alias. */
static void test_close_infinite(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(0, 1);
  gen_t g;
  int round;
  for (round = 0; round < 3; round++) {
    int separate = round == 1;
    setup(&loop, &b, pool);
    gen_init(&g, -1, 3);
    g.close_at = 10;
    g.use_alias = round == 2;
    if (separate)
      ASSERT_OK(uvt_threaded_iterable_separate(&b, &g.it, 3, counting_gen, gen_cb));
    else
      ASSERT_OK(uvt_threaded_iterable(&b, &g.it, 3, counting_gen, gen_cb));
    ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
    ASSERT_EQ(g.delivered, 10);
    ASSERT_EQ(g.finals, 1);
    ASSERT_EQ(g.final_status, UV_ECANCELED);
    ASSERT_EQ(g.cleaned_up, 1);
    ASSERT_EQ(g.refused, 1);
    check_books(&g);
    test_close_all(&loop, &b);
  }
  ASSERT_OK(uvt_pool_free(pool));
}

static void close_when_full(uv_timer_t* t) {
  gen_t* g = t->data;
  /* Paused from the start: the generator fills the buffer and blocks. */
  if (__atomic_load_n(&g->yielded, __ATOMIC_ACQUIRE) < (int)g->max_size) return;
  uv_timer_stop(t);
  uv_close((uv_handle_t*)t, NULL);
  g->paused = 0;
  ASSERT_OK(uvt_iter_stop(&g->it, drop_item));
  ASSERT_EQ(dropped_total, (int)g->max_size); /* drop ran before close returned */
  ASSERT_ERR(uvt_iter_stop(&g->it, drop_item), UV_EINVAL); /* twice */
  ASSERT_ERR(uvt_iter_pause(&g->it), UV_EINVAL);
}

/* aiomisc: close without consumption. */
static void test_close_unconsumed(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(0, 1);
  gen_t g;
  setup(&loop, &b, pool);
  gen_init(&g, -1, 4);
  ASSERT_OK(uvt_threaded_iterable(&b, &g.it, 4, counting_gen, gen_cb));
  ASSERT_OK(uvt_iter_pause(&g.it));
  ASSERT_OK(uvt_iter_pause(&g.it)); /* idempotent */
  g.paused = 1;
  ASSERT_OK(uv_timer_init(&loop, &g.timer));
  g.timer.data = &g;
  ASSERT_OK(uv_timer_start(&g.timer, close_when_full, 1, 1));
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ(g.delivered, 0);
  ASSERT_EQ(g.yielded, 4);
  ASSERT_EQ(dropped_total, 4);
  ASSERT_EQ(g.final_status, UV_ECANCELED);
  ASSERT_EQ(g.cleaned_up, 1);
  check_books(&g);
  test_close_all(&loop, &b);
  ASSERT_OK(uvt_pool_free(pool));
}

static void resume_later(uv_timer_t* t) {
  gen_t* g = t->data;
  uv_close((uv_handle_t*)t, NULL);
  g->paused = 0;
  ASSERT_OK(uvt_iter_resume(&g->it));
  ASSERT_OK(uvt_iter_resume(&g->it)); /* idempotent */
}

static void pause_then_resume_cb(uvt_iter_t* it, int status, void* item) {
  gen_t* g = (gen_t*)it;
  int was = g->delivered;
  gen_cb(it, status, item);
  if (item != NULL && g->delivered == g->pause_at && was != g->delivered) {
    ASSERT_OK(uv_timer_init(it->bridge->loop, &g->timer));
    g->timer.data = g;
    ASSERT_OK(uv_timer_start(&g->timer, resume_later, 20, 0));
  }
}

/* A pause inside a batch stops delivery at once; resume restarts it. */
static void test_pause_resume(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(0, 1);
  gen_t g;
  setup(&loop, &b, pool);
  gen_init(&g, 200, 16);
  g.pause_at = 5;
  ASSERT_OK(uvt_threaded_iterable(&b, &g.it, 16, counting_gen, pause_then_resume_cb));
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ(g.delivered, 200);
  ASSERT(g.in_order);
  ASSERT_EQ(g.final_status, UV_EOF);
  check_books(&g);
  test_close_all(&loop, &b);
  ASSERT_OK(uvt_pool_free(pool));
}

/* A one-thread pool kept busy by a generator that waits at a gate. */
typedef struct {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool;
  test_gate_t gate;
  gen_t blocker;
} busy_pool_t;

static void busy_pool_start(busy_pool_t* x) {
  x->pool = test_pool(0, 1);
  gate_init(&x->gate);
  setup(&x->loop, &x->b, x->pool);
  gen_init(&x->blocker, 1, 1);
  x->blocker.gate = &x->gate;
  ASSERT_OK(uvt_threaded_iterable(&x->b, &x->blocker.it, 1, counting_gen, gen_cb));
  gate_await_waiters(&x->gate, 1);
}

static void busy_pool_finish(busy_pool_t* x) {
  gate_open(&x->gate);
  ASSERT_OK(uv_run(&x->loop, UV_RUN_DEFAULT));
  ASSERT_EQ(x->blocker.final_status, UV_EOF);
  test_close_all(&x->loop, &x->b);
  gate_destroy(&x->gate);
  ASSERT_OK(uvt_pool_free(x->pool));
}

/* Closed while still queued behind a busy pool: the generator never runs. */
static void test_close_before_start(void) {
  busy_pool_t x;
  gen_t g;
  busy_pool_start(&x);
  gen_init(&g, 5, 2);
  ASSERT_OK(uvt_threaded_iterable(&x.b, &g.it, 2, counting_gen, gen_cb));
  ASSERT_OK(uvt_iter_stop(&g.it, drop_item));
  while (g.finals == 0) ASSERT_GE(uv_run(&x.loop, UV_RUN_ONCE), 0);
  ASSERT_EQ(g.final_status, UV_ECANCELED);
  busy_pool_finish(&x);
  ASSERT_EQ(g.gen_runs, 0);
}

/* _separate works while the pool is saturated. */
static void test_separate_saturated(void) {
  busy_pool_t x;
  gen_t g;
  busy_pool_start(&x);
  gen_init(&g, 100, 8);
  ASSERT_OK(uvt_threaded_iterable_separate(&x.b, &g.it, 8, counting_gen, gen_cb));
  while (g.finals == 0) ASSERT_GE(uv_run(&x.loop, UV_RUN_ONCE), 0);
  ASSERT_EQ(g.delivered, 100);
  ASSERT_EQ(g.final_status, UV_EOF);
  busy_pool_finish(&x);
}

static int close_cb_saw_finals;
static gen_t* close_gens;
static void bridge_closed_check(uvt_bridge_t* b) {
  (void)b;
  close_cb_saw_finals = close_gens[0].finals + close_gens[1].finals;
}

/* Bridge close with iterators running: buffered items are still delivered,
 * then UV_ECANCELED, then close_cb. */
static void test_bridge_close(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(0, 2);
  gen_t g[2];
  setup(&loop, &b, pool);
  gen_init(&g[0], -1, 4);
  gen_init(&g[1], -1, 4);
  close_gens = g;
  ASSERT_OK(uvt_threaded_iterable(&b, &g[0].it, 4, counting_gen, gen_cb));
  ASSERT_OK(uvt_threaded_iterable_separate(&b, &g[1].it, 4, counting_gen, gen_cb));
  while (g[0].delivered < 20 || g[1].delivered < 20) ASSERT_GE(uv_run(&loop, UV_RUN_ONCE), 0);
  ASSERT_OK(uvt_bridge_close(&b, bridge_closed_check));
  ASSERT_ERR(uvt_threaded_iterable(&b, &g[0].it, 4, counting_gen, gen_cb), UV_EPIPE);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ(close_cb_saw_finals, 2);
  ASSERT_EQ(g[0].final_status, UV_ECANCELED);
  ASSERT_EQ(g[1].final_status, UV_ECANCELED);
  ASSERT_EQ(g[0].yielded, g[0].delivered); /* nothing dropped */
  ASSERT_EQ(g[1].yielded, g[1].delivered);
  ASSERT_EQ(dropped_total, 0);
  ASSERT_OK(uv_loop_close(&loop));
  ASSERT_OK(uvt_pool_free(pool));
}

typedef struct {
  uvt_bridge_t* b;
  uvt_iter_t* it;
  int rc_start, rc_pause, rc_resume, rc_close, rc_yield;
} iter_wrong_t;

static void iter_wrong_thread(void* arg) {
  iter_wrong_t* w = arg;
  gen_t other;
  gen_init(&other, 1, 1);
  w->rc_start = uvt_threaded_iterable(w->b, &other.it, 1, counting_gen, gen_cb);
  w->rc_pause = uvt_iter_pause(w->it);
  w->rc_resume = uvt_iter_resume(w->it);
  w->rc_close = uvt_iter_stop(w->it, NULL);
  w->rc_yield = uvt_yield(w->it, NULL);
}

static void test_errors(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(0, 1);
  test_gate_t gate;
  gen_t g, garbage;
  iter_wrong_t w;
  gate_init(&gate);
  setup(&loop, &b, pool);
  gen_init(&g, 2, 2);
  memset(&garbage, 0x3C, sizeof(garbage));
  ASSERT_ERR(uvt_threaded_iterable(NULL, &g.it, 2, counting_gen, gen_cb), UV_EINVAL);
  ASSERT_ERR(uvt_threaded_iterable(&b, NULL, 2, counting_gen, gen_cb), UV_EINVAL);
  ASSERT_ERR(uvt_threaded_iterable(&b, &g.it, 0, counting_gen, gen_cb), UV_EINVAL);
  ASSERT_ERR(uvt_threaded_iterable(&b, &g.it, 2, NULL, gen_cb), UV_EINVAL);
  ASSERT_ERR(uvt_threaded_iterable(&b, &g.it, 2, counting_gen, NULL), UV_EINVAL);
  ASSERT_ERR(uvt_threaded_iterable_separate(&b, &g.it, 0, counting_gen, gen_cb), UV_EINVAL);
  ASSERT_ERR(uvt_threaded_iterable(&b, &g.it, SIZE_MAX, counting_gen, gen_cb), UV_ENOMEM);
  ASSERT_ERR(uvt_iter_pause(NULL), UV_EINVAL);
  ASSERT_ERR(uvt_iter_resume(NULL), UV_EINVAL);
  ASSERT_ERR(uvt_iter_stop(NULL, NULL), UV_EINVAL);
  ASSERT_ERR(uvt_iter_stop(&garbage.it, NULL), UV_EINVAL); /* never started */
  ASSERT_ERR(uvt_yield(NULL, NULL), UV_EINVAL);
  ASSERT_EQ(g.finals, 0);

  g.gate = &gate;
  ASSERT_OK(uvt_threaded_iterable(&b, &g.it, 2, counting_gen, gen_cb));
  ASSERT_ERR(uvt_yield(&g.it, NULL), UV_EINVAL); /* not its generator thread */
  w.b = &b;
  w.it = &g.it;
  run_on_thread(iter_wrong_thread, &w);
  ASSERT_EQ(w.rc_start, UV_EINVAL);
  ASSERT_EQ(w.rc_pause, UV_EINVAL);
  ASSERT_EQ(w.rc_resume, UV_EINVAL);
  ASSERT_EQ(w.rc_close, UV_EINVAL);
  ASSERT_EQ(w.rc_yield, UV_EINVAL);
  gate_open(&gate);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ(g.delivered, 2);
  ASSERT_EQ(g.final_status, UV_EOF);
  test_close_all(&loop, &b);
  gate_destroy(&gate);
  ASSERT_OK(uvt_pool_free(pool));
}

/* Many iterators at once through a small pool and small buffers. */
static void test_many(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(0, 3);
  static gen_t g[16];
  int i;
  setup(&loop, &b, pool);
  for (i = 0; i < 16; i++) {
    gen_init(&g[i], 2000, (size_t)(1 + i % 4));
    if (i % 3 == 0)
      ASSERT_OK(uvt_threaded_iterable_separate(&b, &g[i].it, g[i].max_size, counting_gen, gen_cb));
    else
      ASSERT_OK(uvt_threaded_iterable(&b, &g[i].it, g[i].max_size, counting_gen, gen_cb));
  }
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  for (i = 0; i < 16; i++) {
    ASSERT_EQ(g[i].delivered, 2000);
    ASSERT(g[i].in_order);
    ASSERT_EQ(g[i].final_status, UV_EOF);
    ASSERT_LE(g[i].max_outstanding, (int)g[i].max_size);
  }
  test_close_all(&loop, &b);
  ASSERT_OK(uvt_pool_free(pool));
}

/* The generator puts without a lock while the loop pauses, resumes and
 * stops: tiny buffers, and every fourth round a buffer of 64 to 1024 (a
 * flood the loop takes in chunks within a visit, stopped or paused in the
 * middle of one), a stop after a random number of items (some racing a
 * put), pause toggles from the callback. Books must balance exactly:
 * every accepted item delivered (in order) or dropped, once. */
static unsigned race_seed = 12345;
static unsigned race_rand(void) {
  race_seed = race_seed * 1103515245u + 12345u;
  return race_seed >> 8;
}
typedef struct {
  gen_t g;
  int stop_at, toggle_every;
} race_t;
static void race_resume(void* arg) { /* a uvt_call: on the loop, next drain */
  race_t* r = arg;
  if (r->g.finals == 0 && r->g.paused) {
    r->g.paused = 0;
    ASSERT_OK(uvt_iter_resume(&r->g.it));
  }
}
static void race_cb(uvt_iter_t* it, int status, void* item) {
  race_t* r = (race_t*)it;
  gen_cb(it, status, item);
  if (item == NULL) return;
  if (r->g.delivered == r->stop_at) {
    ASSERT_OK(uvt_iter_stop(it, drop_item));
  } else if (r->toggle_every && r->g.delivered % r->toggle_every == 0) {
    ASSERT_OK(uvt_iter_pause(it));
    r->g.paused = 1;
    ASSERT_OK(uvt_call(it->bridge, race_resume, r));
  }
}
static void test_lockfree_stress(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(0, 2);
  static race_t r;
  int round;
  setup(&loop, &b, pool);
  for (round = 0; round < 200; round++) {
    int flood = round % 4 == 3;
    size_t max_size = flood ? (size_t)64 << (race_rand() % 5) : (size_t)(1 + race_rand() % 8);
    dropped_total = 0;
    gen_init(&r.g, -1, max_size);
    r.stop_at = 1 + (int)(race_rand() % (flood ? 5000 : 300));
    r.toggle_every = (int)(race_rand() % 4) * (flood ? 301 : 7);
    ASSERT_OK(uvt_threaded_iterable(&b, &r.g.it, max_size, counting_gen, race_cb));
    ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
    ASSERT_EQ(r.g.finals, 1);
    ASSERT_EQ(r.g.final_status, UV_ECANCELED);
    ASSERT_EQ(r.g.delivered, r.stop_at);
    ASSERT(r.g.in_order);
    ASSERT_EQ(r.g.refused, 1);
    check_books(&r.g);
  }
  test_close_all(&loop, &b);
  ASSERT_OK(uvt_pool_free(pool));
}

TEST_MAIN(TEST(test_basic), TEST(test_max_size_1), TEST(test_error_after_items),
          TEST(test_error_before_items), TEST(test_close_infinite), TEST(test_close_unconsumed),
          TEST(test_pause_resume), TEST(test_close_before_start), TEST(test_separate_saturated),
          TEST(test_bridge_close), TEST(test_errors), TEST(test_many), TEST(test_lockfree_stress))
