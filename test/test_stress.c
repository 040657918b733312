/* Stress: several loops on several threads share one small elastic pool and
 * run a random mix of every operation (threaded and separate work, work in
 * lanes shared by the loops (max_running 1..4, one with max_queued) with
 * and without queue deadlines, cancels, iterators closed or paused at
 * random, channels closed or stopped with blocked producers, uvt_call,
 * uvt_sync_await), then close their bridge in the middle of it all.
 * Afterwards the books must balance: every accepted request got exactly one
 * final callback, every lane's counters add up and agree with the statuses
 * its tasks' afters saw, no lane ever ran more than max_running tasks at
 * once, every accepted item was delivered or dropped, every thread was
 * joined, every loop closes.
 *
 * Runs UVT_STRESS_SECONDS seconds (default 1). */
#include "test.h"

#define LOOPS 3
#define MAX_INFLIGHT 64
#define MAX_CHANS 64
#define LANES 4

/* Lanes shared by every loop: lane k runs at most k + 1 tasks at once. */
static struct {
  uvt_lane_t* lane;
  int running, max;            /* atomic: tasks in their work function */
  long ok, cancelled, expired; /* atomic: statuses the afters saw */
  long rejected;               /* atomic: UV_EAGAIN */
} lanes[LANES];

typedef struct loop_ctx_s loop_ctx_t;

typedef struct {
  uvt_work_t req;
  loop_ctx_t* ctx;
  int sleep_us;
  int finals;
  int slot;
  int lane; /* index in lanes, or -1 */
  int timed; /* submitted with a queue deadline */
} job_t;

typedef struct {
  uvt_iter_t it;
  loop_ctx_t* ctx;
  long limit; /* < 0: endless */
  long yielded; /* generator thread; final once the generator returned */
  long delivered, dropped;
  long close_at;
  int finals;
} gen_t;

typedef struct {
  uvt_chan_t ch;
  loop_ctx_t* ctx;
  long accepted; /* atomic: puts that returned 0 */
  long delivered, dropped;
  long stop_at;
  int finals;
  int producers;
  uv_thread_t threads[2];
} chan_t;

struct loop_ctx_s {
  int id;
  unsigned seed;
  uvt_pool_t* pool;
  uv_loop_t loop;
  uvt_bridge_t bridge;
  uv_timer_t tick;
  uint64_t deadline;
  int stopping;     /* atomic: callers must stop */
  int callers_left; /* atomic */
  uv_thread_t callers[2];
  job_t* inflight[MAX_INFLIGHT];
  chan_t* chans[MAX_CHANS];
  int nchans;
  /* the books */
  long work_accepted, work_finals;
  long iters_started, iters_finals;
  long chans_opened, chans_finals;
  long calls_accepted; /* atomic */
  long calls_run;
  long awaits_resolved; /* atomic: returned the value fn resolved with */
  long awaits_run;
  long ops;
};

static unsigned rnd(loop_ctx_t* c, unsigned n) {
  c->seed = c->seed * 1103515245u + 12345u;
  return (c->seed >> 8) % n;
}

/* ---- work ------------------------------------------------------------- */

static void job_work(uvt_work_t* req) {
  job_t* j = (job_t*)req;
  int i;
  if (j->lane >= 0) {
    int now = __atomic_add_fetch(&lanes[j->lane].running, 1, __ATOMIC_SEQ_CST);
    int max = __atomic_load_n(&lanes[j->lane].max, __ATOMIC_RELAXED);
    while (now > max && !__atomic_compare_exchange_n(&lanes[j->lane].max, &max, now, 1,
                                                     __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
  }
  for (i = 0; i < j->sleep_us / 50 && !uvt_is_cancelled(req); i++) uv_sleep(0);
  if (j->lane >= 0) __atomic_sub_fetch(&lanes[j->lane].running, 1, __ATOMIC_SEQ_CST);
}

static void job_after(uvt_work_t* req, int status) {
  job_t* j = (job_t*)req;
  ASSERT(status == 0 || status == UV_ECANCELED || (j->timed && status == UV_ETIMEDOUT));
  if (j->lane >= 0)
    __atomic_add_fetch(status == 0 ? &lanes[j->lane].ok
                       : status == UV_ECANCELED ? &lanes[j->lane].cancelled
                                                : &lanes[j->lane].expired,
                       1, __ATOMIC_RELAXED);
  ASSERT_EQ(j->finals, 0);
  j->finals++;
  j->ctx->work_finals++;
  j->ctx->inflight[j->slot] = NULL;
  free(j);
}

/* how: 0 on the pool, 1 separate, 2 through uvt_threaded_ex (a random lane
 * or none, a random queue deadline or none). */
static void submit_job(loop_ctx_t* c, int how) {
  int slot = (int)rnd(c, MAX_INFLIGHT);
  job_t* j;
  int rc;
  if (c->inflight[slot] != NULL) return;
  j = calloc(1, sizeof(*j));
  j->ctx = c;
  j->slot = slot;
  j->sleep_us = (int)rnd(c, 400);
  j->lane = -1;
  if (how == 2) {
    uvt_work_options_t o;
    j->lane = (int)rnd(c, LANES + 1) - 1;
    o.lane = j->lane >= 0 ? lanes[j->lane].lane : NULL;
    o.queue_timeout_ms = rnd(c, 2) ? 0 : 1 + rnd(c, 20);
    j->timed = o.queue_timeout_ms != 0;
    rc = uvt_threaded_ex(&c->bridge, &j->req, &o, job_work, job_after);
    if (rc == UV_EAGAIN) { /* the lane with max_queued */
      __atomic_add_fetch(&lanes[j->lane].rejected, 1, __ATOMIC_RELAXED);
      free(j);
      return;
    }
  } else {
    rc = how ? uvt_threaded_separate(&c->bridge, &j->req, job_work, job_after)
             : uvt_threaded(&c->bridge, &j->req, job_work, job_after);
  }
  if (rc != 0) {
    ASSERT_EQ(rc, UV_EPIPE); /* only once the bridge is closing */
    free(j);
    return;
  }
  c->work_accepted++;
  c->inflight[slot] = j;
}

static void cancel_random(loop_ctx_t* c) {
  job_t* j = c->inflight[rnd(c, MAX_INFLIGHT)];
  int rc;
  if (j == NULL) return;
  rc = uvt_cancel(&j->req);
  ASSERT(rc == 0 || rc == UV_EBUSY);
}

/* ---- iterators -------------------------------------------------------- */

static int stress_gen(uvt_iter_t* it) {
  gen_t* g = (gen_t*)it;
  long i;
  for (i = 0; g->limit < 0 || i < g->limit; i++) {
    long* item = malloc(sizeof(long));
    *item = i;
    if (uvt_yield(it, item) != 0) {
      free(item);
      return 0;
    }
    g->yielded++;
    if (i % 16 == 0) uv_sleep(0);
  }
  return g->limit % 3 == 0 ? UV_EIO : 0;
}

/* Drop callbacks run on the loop thread inside the close/stop call, so the
 * owner they count for is per loop thread. */
static _Thread_local gen_t* dropping_gen;
static void counting_drop(void* item) {
  free(item);
  dropping_gen->dropped++;
}

static void gen_cb(uvt_iter_t* it, int status, void* item) {
  gen_t* g = (gen_t*)it;
  ASSERT_EQ(g->finals, 0);
  if (item == NULL) {
    ASSERT(status == UV_EOF || status == UV_EIO || status == UV_ECANCELED);
    g->finals++;
    /* The generator has returned: its count is final. */
    ASSERT_EQ(g->yielded, g->delivered + g->dropped);
    g->ctx->iters_finals++;
    free(g);
    return;
  }
  ASSERT_EQ(status, 0);
  free(item);
  g->delivered++;
  if (g->close_at && g->delivered == g->close_at) {
    dropping_gen = g;
    ASSERT_OK(uvt_iter_stop(it, counting_drop));
  } else if (g->delivered % 7 == 0) {
    /* a pause/resume pair in the middle of a batch */
    ASSERT_OK(uvt_iter_pause(it));
    ASSERT_OK(uvt_iter_resume(it));
  }
}

static void start_iter(loop_ctx_t* c) {
  gen_t* g = calloc(1, sizeof(*g));
  size_t max_size = 1 + rnd(c, 8);
  int rc;
  g->ctx = c;
  g->limit = rnd(c, 4) == 0 ? -1 : (long)rnd(c, 200);
  g->close_at = rnd(c, 2) ? (long)rnd(c, 50) : 0;
  if (g->limit < 0 && g->close_at == 0) g->close_at = 1 + (long)rnd(c, 100);
  rc = rnd(c, 3) == 0 ? uvt_threaded_iterable_separate(&c->bridge, &g->it, max_size, stress_gen, gen_cb)
                      : uvt_threaded_iterable(&c->bridge, &g->it, max_size, stress_gen, gen_cb);
  if (rc != 0) {
    ASSERT_EQ(rc, UV_EPIPE);
    free(g);
    return;
  }
  c->iters_started++;
}

/* ---- channels ---------------------------------------------------------- */

static void producer_main(void* arg) {
  chan_t* ch = arg;
  long i;
  for (i = 1; i <= 300; i++) {
    int rc;
    long* item = malloc(sizeof(long));
    *item = i;
    switch (i % 3) {
      case 0:
        rc = uvt_chan_put(&ch->ch, item);
        break;
      case 1:
        rc = uvt_chan_put_timeout(&ch->ch, item, 5);
        break;
      default:
        rc = uvt_chan_try_put(&ch->ch, item);
        break;
    }
    if (rc == 0) {
      __atomic_add_fetch(&ch->accepted, 1, __ATOMIC_RELAXED);
      continue;
    }
    free(item);
    if (rc == UV_EPIPE) return; /* stopped, or closed by the other producer */
    ASSERT(rc == UV_ETIMEDOUT || rc == UV_EAGAIN);
  }
  {
    int rc = uvt_chan_close(&ch->ch);
    ASSERT(rc == 0 || rc == UV_EPIPE);
  }
}

static _Thread_local long chan_drops;
static void chan_drop(void* item) {
  free(item);
  chan_drops++;
}

static void chan_cb(uvt_chan_t* uch, int status, void* item) {
  chan_t* ch = (chan_t*)uch;
  ASSERT_EQ(ch->finals, 0);
  if (item == NULL) {
    ASSERT(status == UV_EOF || status == UV_ECANCELED);
    ch->finals++;
    ch->ctx->chans_finals++;
    return; /* freed after its producers are joined */
  }
  ASSERT_EQ(status, 0);
  free(item);
  ch->delivered++;
  if (ch->stop_at && ch->delivered == ch->stop_at) {
    chan_drops = 0;
    ASSERT_OK(uvt_chan_stop(uch, chan_drop));
    ch->dropped += chan_drops;
  }
}

static void open_chan(loop_ctx_t* c) {
  chan_t* ch;
  int i, rc;
  if (c->nchans == MAX_CHANS) return;
  ch = calloc(1, sizeof(*ch));
  ch->ctx = c;
  ch->stop_at = rnd(c, 3) == 0 ? 1 + (long)rnd(c, 100) : 0;
  rc = uvt_chan_init(&c->bridge, &ch->ch, 1 + rnd(c, 8), chan_cb);
  if (rc != 0) {
    ASSERT_EQ(rc, UV_EPIPE);
    free(ch);
    return;
  }
  if (rnd(c, 2)) ASSERT_OK(uvt_chan_pause(&ch->ch)); /* producers block until resumed */
  c->chans_opened++;
  c->chans[c->nchans++] = ch;
  ch->producers = 1 + (int)rnd(c, 2);
  for (i = 0; i < ch->producers; i++) ASSERT_OK(uv_thread_create(&ch->threads[i], producer_main, ch));
}

static void poke_chans(loop_ctx_t* c) {
  int i;
  for (i = 0; i < c->nchans; i++) {
    chan_t* ch = c->chans[i];
    int rc;
    if (ch->finals) continue;
    rc = rnd(c, 2) ? uvt_chan_resume(&ch->ch) : uvt_chan_pause(&ch->ch);
    ASSERT(rc == 0 || rc == UV_EINVAL); /* EINVAL once stopped */
  }
}

/* ---- threads calling in ---------------------------------------------- */

static void count_call(void* arg) { ((loop_ctx_t*)arg)->calls_run++; }

static void resolve_soon(uvt_await_t* aw, void* arg) {
  ((loop_ctx_t*)arg)->awaits_run++;
  uvt_await_resolve(aw, 42);
}

static void caller_stopped(void* arg) { (void)arg; }

static void caller_main(void* arg) {
  loop_ctx_t* c = arg;
  unsigned i = 0;
  while (!__atomic_load_n(&c->stopping, __ATOMIC_ACQUIRE)) {
    if (++i % 4 == 0) {
      int rc = uvt_sync_await(&c->bridge, resolve_soon, c);
      ASSERT_EQ(rc, 42);
      __atomic_add_fetch(&c->awaits_resolved, 1, __ATOMIC_RELAXED);
    } else {
      ASSERT_OK(uvt_call(&c->bridge, count_call, c));
      __atomic_add_fetch(&c->calls_accepted, 1, __ATOMIC_RELAXED);
    }
    if (i % 64 == 0) uv_sleep(1);
  }
  /* The last call into this bridge before it closes. */
  ASSERT_OK(uvt_call(&c->bridge, caller_stopped, c));
  __atomic_sub_fetch(&c->callers_left, 1, __ATOMIC_ACQ_REL);
}

/* ---- a stats reader ------------------------------------------------------ */

/* Reads the pool's and the lanes' stats all along (their lock-free reads of
 * the rings, the workers and the lanes' tasks race every other thread). */
static struct {
  uvt_pool_t* pool;
  int stop; /* atomic */
  long reads;
} reader;

static void reader_main(void* arg) {
  (void)arg;
  while (!__atomic_load_n(&reader.stop, __ATOMIC_ACQUIRE)) {
    uvt_pool_stats_t st;
    int i;
    ASSERT_OK(uvt_pool_stats(reader.pool, &st));
    ASSERT_LE(st.oldest_queued_ns, 60000000000u);
    ASSERT_LE(st.oldest_running_ns, 60000000000u);
    for (i = 0; i < LANES; i++) {
      uvt_lane_stats_t ls;
      ASSERT_OK(uvt_lane_stats(lanes[i].lane, &ls));
      ASSERT_LE(ls.running, (uint64_t)i + 1);
      /* Exact at any time: a lane counts under its mutex. */
      ASSERT_EQ(ls.submitted, ls.completed + ls.cancelled + ls.expired + ls.queued + ls.running);
    }
    reader.reads++;
    uv_sleep(1);
  }
}

/* ---- the driver -------------------------------------------------------- */

static void bridge_closed(uvt_bridge_t* b) {
  loop_ctx_t* c = b->data;
  uv_close((uv_handle_t*)&c->tick, NULL);
}

static void on_tick(uv_timer_t* t) {
  loop_ctx_t* c = t->data;
  int n;
  if (uv_hrtime() >= c->deadline) {
    __atomic_store_n(&c->stopping, 1, __ATOMIC_RELEASE);
    /* Threads may call until the close callback, not after: close once they
     * are out; work, generators and channels are still going. */
    if (__atomic_load_n(&c->callers_left, __ATOMIC_ACQUIRE) == 0) {
      uv_timer_stop(t);
      uvt_bridge_unref(&c->bridge);
      ASSERT_OK(uvt_bridge_close(&c->bridge, bridge_closed));
    }
    return;
  }
  for (n = 0; n < 4; n++, c->ops++) {
    switch (rnd(c, 13)) {
      case 0:
      case 1:
        submit_job(c, 0);
        break;
      case 2:
        submit_job(c, 1);
        break;
      case 10:
      case 11:
      case 12:
        submit_job(c, 2);
        break;
      case 3:
      case 4:
        cancel_random(c);
        break;
      case 5:
      case 6:
        start_iter(c);
        break;
      case 7:
        open_chan(c);
        break;
      default:
        poke_chans(c);
        break;
    }
  }
}

static void loop_main(void* arg) {
  loop_ctx_t* c = arg;
  int i;
  ASSERT_OK(uv_loop_init(&c->loop));
  ASSERT_OK(uvt_bridge_init(&c->loop, &c->bridge, c->pool));
  c->bridge.data = c;
  uvt_bridge_ref(&c->bridge); /* the caller threads keep calling in */
  ASSERT_OK(uv_timer_init(&c->loop, &c->tick));
  c->tick.data = c;
  ASSERT_OK(uv_timer_start(&c->tick, on_tick, 1, 1));
  c->callers_left = 2;
  for (i = 0; i < 2; i++) ASSERT_OK(uv_thread_create(&c->callers[i], caller_main, c));
  ASSERT_OK(uv_run(&c->loop, UV_RUN_DEFAULT));
  for (i = 0; i < 2; i++) ASSERT_OK(uv_thread_join(&c->callers[i]));
  ASSERT_OK(uv_loop_close(&c->loop));

  /* The books. */
  ASSERT_EQ(c->work_finals, c->work_accepted);
  ASSERT_EQ(c->iters_finals, c->iters_started);
  ASSERT_EQ(c->chans_finals, c->chans_opened);
  ASSERT_EQ(c->calls_run, c->calls_accepted);
  ASSERT_EQ(c->awaits_run, c->awaits_resolved);
  for (i = 0; i < c->nchans; i++) {
    chan_t* ch = c->chans[i];
    int k;
    for (k = 0; k < ch->producers; k++) ASSERT_OK(uv_thread_join(&ch->threads[k]));
    ASSERT_EQ(ch->finals, 1);
    ASSERT_EQ(ch->accepted, ch->delivered + ch->dropped);
    free(ch);
  }
}

static void test_stress(void) {
  uvt_pool_options_t opts;
  uvt_pool_t* pool;
  uvt_pool_stats_t st;
  static loop_ctx_t ctx[LOOPS];
  uv_thread_t threads[LOOPS], reader_thread;
  const char* env = getenv("UVT_STRESS_SECONDS");
  double seconds = env ? atof(env) : 1.0;
  long ops = 0, work = 0, iters = 0, chans = 0, calls = 0, awaits = 0;
  long lane_tasks = 0, lane_expired = 0;
  int i;
  uvt_pool_options_init(&opts);
  opts.max_threads = 3;
  opts.idle_timeout_ms = 20; /* threads come and go */
  ASSERT_OK(uvt_pool_new(&pool, &opts));
  memset(lanes, 0, sizeof(lanes));
  for (i = 0; i < LANES; i++) {
    uvt_lane_options_t lo;
    uvt_lane_options_init(&lo);
    lo.max_running = (unsigned)i + 1;
    lo.max_queued = i == 1 ? 4 : 0;
    ASSERT_OK(uvt_lane_new(pool, &lo, &lanes[i].lane));
  }
  memset(ctx, 0, sizeof(ctx));
  reader.pool = pool;
  reader.stop = 0;
  reader.reads = 0;
  ASSERT_OK(uv_thread_create(&reader_thread, reader_main, NULL));
  for (i = 0; i < LOOPS; i++) {
    ctx[i].id = i;
    ctx[i].seed = (unsigned)(uv_hrtime() ^ (uint64_t)(i * 7919));
    ctx[i].pool = pool;
    ctx[i].deadline = uv_hrtime() + (uint64_t)(seconds * 1e9);
    ASSERT_OK(uv_thread_create(&threads[i], loop_main, &ctx[i]));
  }
  for (i = 0; i < LOOPS; i++) {
    ASSERT_OK(uv_thread_join(&threads[i]));
    ops += ctx[i].ops;
    work += ctx[i].work_accepted;
    iters += ctx[i].iters_started;
    chans += ctx[i].chans_opened;
    calls += ctx[i].calls_accepted;
    awaits += ctx[i].awaits_resolved;
  }
  __atomic_store_n(&reader.stop, 1, __ATOMIC_RELEASE);
  ASSERT_OK(uv_thread_join(&reader_thread));
  ASSERT_GT(reader.reads, 0);
  ASSERT_OK(uvt_pool_stats(pool, &st));
  ASSERT_EQ(st.queued, 0);
  ASSERT_EQ(st.running, 0);
  ASSERT_EQ(st.submitted, st.completed + st.cancelled + st.expired);
  for (i = 0; i < LANES; i++) {
    uvt_lane_stats_t ls;
    ASSERT_OK(uvt_lane_stats(lanes[i].lane, &ls));
    ASSERT_EQ(ls.queued, 0);
    ASSERT_EQ(ls.running, 0);
    ASSERT_EQ(ls.submitted, ls.completed + ls.cancelled + ls.expired);
    ASSERT_EQ(ls.completed, lanes[i].ok);
    ASSERT_EQ(ls.cancelled, lanes[i].cancelled);
    ASSERT_EQ(ls.expired, lanes[i].expired);
    ASSERT_EQ(ls.rejected, lanes[i].rejected);
    ASSERT_LE(lanes[i].max, i + 1);
    lane_tasks += (long)ls.submitted;
    lane_expired += (long)ls.expired;
    ASSERT_OK(uvt_lane_free(lanes[i].lane));
  }
  ASSERT_OK(uvt_pool_free(pool));
  printf("stress: %.1f s, %d loops, %ld random operations: %ld jobs (%ld in lanes, %ld of them "
         "expired, %ld expired in all), %ld iterators, %ld channels, %ld calls, %ld awaits; books "
         "balanced\n",
         seconds, LOOPS, ops, work, lane_tasks, lane_expired, (long)st.expired, iters, chans, calls,
         awaits);
}

TEST_MAIN(TEST(test_stress))
