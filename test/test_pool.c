/* The pool: options, errors, elastic sizing, stats, names, sharing. */
#define _GNU_SOURCE /* pthread_getname_np */
#include <pthread.h>

#include "test.h"

static void test_options_defaults(void) {
  uvt_pool_options_t o;
  memset(&o, 0x77, sizeof(o));
  uvt_pool_options_init(&o);
  ASSERT_EQ(o.min_threads, 0);
  ASSERT_EQ(o.max_threads, 16);
  ASSERT_EQ(o.idle_timeout_ms, 10000);
  ASSERT_EQ(o.stack_size, 0);
  ASSERT(o.name == NULL);
  uvt_pool_options_init(NULL); /* harmless */
}

static void test_pool_errors(void) {
  uvt_pool_options_t o;
  uvt_pool_t* pool = NULL;
  uvt_pool_stats_t st;
  ASSERT_ERR(uvt_pool_new(NULL, NULL), UV_EINVAL);
  uvt_pool_options_init(&o);
  o.max_threads = 0;
  ASSERT_ERR(uvt_pool_new(&pool, &o), UV_EINVAL);
  o.max_threads = 2;
  o.min_threads = 3;
  ASSERT_ERR(uvt_pool_new(&pool, &o), UV_EINVAL);
  ASSERT(pool == NULL);
  ASSERT_ERR(uvt_pool_free(NULL), UV_EINVAL);
  ASSERT_ERR(uvt_pool_stats(NULL, &st), UV_EINVAL);
  ASSERT_OK(uvt_pool_new(&pool, NULL)); /* defaults */
  ASSERT_ERR(uvt_pool_stats(pool, NULL), UV_EINVAL);
  ASSERT_OK(uvt_pool_stats(pool, &st));
  ASSERT_EQ(st.threads, 0);
  ASSERT_OK(uvt_pool_free(pool));
}

static void test_min_threads_start(void) {
  uvt_pool_t* pool = test_pool(3, 5);
  uvt_pool_stats_t st;
  ASSERT_OK(uvt_pool_stats(pool, &st));
  ASSERT_EQ(st.threads, 3);
  ASSERT_OK(uvt_pool_free(pool));
}

typedef struct {
  uvt_work_t req;
  test_gate_t* gate;
  char name[32];
  int rc_free;
  uvt_pool_t* pool;
  int done;
} pjob_t;

static void pjob_work(uvt_work_t* req) {
  pjob_t* j = (pjob_t*)req;
  pthread_getname_np(pthread_self(), j->name, sizeof(j->name));
  if (j->pool != NULL) j->rc_free = uvt_pool_free(j->pool);
  if (j->gate != NULL) gate_wait(j->gate);
}
static void pjob_after(uvt_work_t* req, int status) {
  ASSERT_EQ(status, 0);
  ((pjob_t*)req)->done++;
}

static void wait_threads(uvt_pool_t* pool, unsigned want) {
  uvt_pool_stats_t st;
  int tries;
  for (tries = 0; tries < 20000; tries++) {
    ASSERT_OK(uvt_pool_stats(pool, &st));
    if (st.threads == want) return;
    uv_sleep(1);
  }
  ASSERT_EQ(st.threads, want);
}

/* Grows while work waits and nobody is idle; shrinks back to min_threads. */
static void test_elastic(void) {
  uvt_pool_options_t o;
  uvt_pool_t* pool;
  uvt_pool_stats_t st;
  uv_loop_t loop;
  uvt_bridge_t b;
  test_gate_t gate;
  pjob_t jobs[8];
  int i;
  uvt_pool_options_init(&o);
  o.min_threads = 1;
  o.max_threads = 6;
  o.idle_timeout_ms = 30;
  ASSERT_OK(uvt_pool_new(&pool, &o));
  memset(jobs, 0, sizeof(jobs));
  gate_init(&gate);
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uvt_bridge_init(&loop, &b, pool));
  for (i = 0; i < 8; i++) {
    jobs[i].gate = &gate;
    ASSERT_OK(uvt_threaded(&b, &jobs[i].req, pjob_work, pjob_after));
  }
  gate_await_waiters(&gate, 6); /* grew to max_threads, no further */
  ASSERT_OK(uvt_pool_stats(pool, &st));
  ASSERT_EQ(st.threads, 6);
  ASSERT_EQ(st.running, 6);
  ASSERT_EQ(st.queued, 2);
  gate_open(&gate);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  for (i = 0; i < 8; i++) ASSERT_EQ(jobs[i].done, 1);
  wait_threads(pool, 1); /* idle threads above min_threads exit */
  ASSERT_OK(uvt_pool_stats(pool, &st));
  ASSERT_EQ(st.idle_threads, 1);
  /* And it grows again. */
  gate_close(&gate);
  for (i = 0; i < 3; i++) ASSERT_OK(uvt_threaded(&b, &jobs[i].req, pjob_work, pjob_after));
  gate_await_waiters(&gate, 3);
  gate_open(&gate);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  test_close_all(&loop, &b);
  gate_destroy(&gate);
  ASSERT_OK(uvt_pool_free(pool));
}

static void sleepy_work(uvt_work_t* req) {
  (void)req;
  uv_sleep(5);
}

static void test_stats_and_names(void) {
  uvt_pool_options_t o;
  uvt_pool_t* pool;
  uvt_pool_stats_t st;
  uv_loop_t loop;
  uvt_bridge_t b;
  pjob_t blocker, j, sleepy, self_free;
  test_gate_t gate;
  uvt_pool_options_init(&o);
  o.max_threads = 1;
  o.name = "dbworker";
  o.stack_size = 256 * 1024;
  ASSERT_OK(uvt_pool_new(&pool, &o));
  memset(&j, 0, sizeof(j));
  memset(&sleepy, 0, sizeof(sleepy));
  memset(&self_free, 0, sizeof(self_free));
  memset(&blocker, 0, sizeof(blocker));
  gate_init(&gate);
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uvt_bridge_init(&loop, &b, pool));
  ASSERT_PTR_EQ(b.pool, pool);
  ASSERT_PTR_EQ(b.loop, &loop);
  /* The only thread waits at a gate while the rest is queued, so the job
   * behind the sleeper surely waits out its whole 5 ms (however long the
   * thread took to start). */
  blocker.gate = &gate;
  ASSERT_OK(uvt_threaded(&b, &blocker.req, pjob_work, pjob_after));
  gate_await_waiters(&gate, 1);
  ASSERT_OK(uvt_threaded(&b, &sleepy.req, sleepy_work, pjob_after));
  ASSERT_OK(uvt_threaded(&b, &j.req, pjob_work, pjob_after));
  self_free.pool = pool;
  ASSERT_OK(uvt_threaded(&b, &self_free.req, pjob_work, pjob_after));
  gate_open(&gate);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ(strcmp(j.name, "dbworker-0"), 0);
  ASSERT_EQ(self_free.rc_free, UV_EBUSY); /* from one of its own threads */
  ASSERT_OK(uvt_pool_stats(pool, &st));
  ASSERT_EQ(st.submitted, 4);
  ASSERT_EQ(st.completed, 4);
  ASSERT_GE(st.run_ns_max, 4000000);  /* the 5 ms sleeper */
  ASSERT_GE(st.run_ns_total, st.run_ns_max);
  ASSERT_GE(st.wait_ns_max, 4000000); /* the second waited behind it */
  ASSERT_GE(st.wait_ns_total, st.wait_ns_max);
  ASSERT_ERR(uvt_pool_free(pool), UV_EBUSY); /* a bridge still uses it */
  test_close_all(&loop, &b);
  gate_destroy(&gate);
  ASSERT_OK(uvt_pool_free(pool));
}

/* Several loops on several threads share one pool. */
#define LOOPS 4
#define PER_LOOP 20000
typedef struct {
  uvt_pool_t* pool;
  uvt_work_t reqs[64];
  long left, delivered;
  uvt_bridge_t b;
} loop_ctx_t;

static void count_work(uvt_work_t* req) { (void)req; }
static void count_after(uvt_work_t* req, int status) {
  loop_ctx_t* c = req->data;
  ASSERT_EQ(status, 0);
  c->delivered++;
  if (c->left > 0) {
    c->left--;
    req->data = c;
    ASSERT_OK(uvt_threaded(&c->b, req, count_work, count_after));
  }
}

static void loop_thread_main(void* arg) {
  loop_ctx_t* c = arg;
  uv_loop_t loop;
  int i;
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uvt_bridge_init(&loop, &c->b, c->pool));
  c->left = PER_LOOP - 64;
  for (i = 0; i < 64; i++) {
    c->reqs[i].data = c;
    ASSERT_OK(uvt_threaded(&c->b, &c->reqs[i], count_work, count_after));
  }
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ(c->delivered, PER_LOOP);
  ASSERT_OK(uvt_bridge_close(&c->b, NULL));
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_OK(uv_loop_close(&loop));
}

static void test_shared_pool(void) {
  uvt_pool_t* pool = test_pool(0, 3);
  uvt_pool_stats_t st;
  static loop_ctx_t ctx[LOOPS];
  uv_thread_t threads[LOOPS];
  int i;
  memset(ctx, 0, sizeof(ctx));
  for (i = 0; i < LOOPS; i++) {
    ctx[i].pool = pool;
    ASSERT_OK(uv_thread_create(&threads[i], loop_thread_main, &ctx[i]));
  }
  for (i = 0; i < LOOPS; i++) ASSERT_OK(uv_thread_join(&threads[i]));
  ASSERT_OK(uvt_pool_stats(pool, &st));
  ASSERT_EQ(st.submitted, (uint64_t)LOOPS * PER_LOOP);
  ASSERT_EQ(st.completed, (uint64_t)LOOPS * PER_LOOP);
  ASSERT_OK(uvt_pool_free(pool));
}

/* The run queue's rings, hammered: several loops put bursts larger than a
 * ring (4096 cells), so that the overflow queue is used too; every other
 * request is cancelled right after it is put, racing the workers' takes;
 * every completion puts its request once more from the callback (a batch,
 * whose wake-up check is left to its end), and every third of those is
 * cancelled too; every request is reused for several rounds, so cells go
 * round many laps. Each loop makes a new bridge every round, so the role of
 * sole producer of the pool's own ring moves between loops while the others
 * put to the shared ring. Each request must be delivered exactly once per
 * put, cancelled (and then never run) exactly when uvt_cancel said so, and
 * the books balance. */
#define RING_LOOPS 3
#define RING_BURST 6000
#define RING_ROUNDS 4
typedef struct {
  uvt_work_t req;
  int index, runs, deliveries, cancel_rc, again;
} ring_req_t;
typedef struct {
  uvt_pool_t* pool;
  uvt_bridge_t b;
  ring_req_t reqs[RING_BURST];
  long delivered, cancelled;
} ring_ctx_t;

static void ring_work(uvt_work_t* req) {
  ring_req_t* r = (ring_req_t*)req; /* req is its first member */
  r->runs++;
}
static void ring_after(uvt_work_t* req, int status) {
  ring_req_t* r = (ring_req_t*)req; /* req is its first member */
  ring_ctx_t* c = req->data;
  r->deliveries++;
  if (r->cancel_rc == 0) {
    ASSERT_EQ(status, UV_ECANCELED);
    c->cancelled++;
  } else {
    ASSERT_EQ(status, 0);
  }
  c->delivered++;
  if (r->again) {
    r->again = 0;
    r->cancel_rc = UV_EBUSY;
    ASSERT_OK(uvt_threaded(&c->b, &r->req, ring_work, ring_after));
    if (r->index % 3 == 0) r->cancel_rc = uvt_cancel(&r->req);
  }
}

static void ring_loop_main(void* arg) {
  ring_ctx_t* c = arg;
  uv_loop_t loop;
  int i, round;
  ASSERT_OK(uv_loop_init(&loop));
  for (round = 1; round <= RING_ROUNDS; round++) {
    ASSERT_OK(uvt_bridge_init(&loop, &c->b, c->pool));
    for (i = 0; i < RING_BURST; i++) {
      ring_req_t* r = &c->reqs[i];
      r->req.data = c;
      r->index = i;
      r->again = 1;
      r->cancel_rc = UV_EBUSY;
      ASSERT_OK(uvt_threaded(&c->b, &r->req, ring_work, ring_after));
      if (i % 2 == 0) r->cancel_rc = uvt_cancel(&r->req);
    }
    ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
    for (i = 0; i < RING_BURST; i++) {
      ring_req_t* r = &c->reqs[i];
      ASSERT_EQ(r->deliveries, 2 * round);
      /* A request whose cancel succeeded never ran in that round. */
      ASSERT_LE(r->runs, 2 * round);
      if (i % 3 != 0) ASSERT_EQ(r->cancel_rc, UV_EBUSY);
    }
    ASSERT_OK(uvt_bridge_close(&c->b, NULL));
    ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  }
  ASSERT_EQ(c->delivered, 2L * RING_BURST * RING_ROUNDS);
  ASSERT_OK(uv_loop_close(&loop));
}

static void test_ring_stress(void) {
  uvt_pool_t* pool = test_pool(4, 4);
  uvt_pool_stats_t st;
  static ring_ctx_t ctx[RING_LOOPS];
  uv_thread_t threads[RING_LOOPS];
  uint64_t runs = 0, cancelled = 0;
  int i, k;
  memset(ctx, 0, sizeof(ctx));
  for (i = 0; i < RING_LOOPS; i++) {
    ctx[i].pool = pool;
    ASSERT_OK(uv_thread_create(&threads[i], ring_loop_main, &ctx[i]));
  }
  for (i = 0; i < RING_LOOPS; i++) ASSERT_OK(uv_thread_join(&threads[i]));
  for (i = 0; i < RING_LOOPS; i++) {
    for (k = 0; k < RING_BURST; k++) runs += (uint64_t)ctx[i].reqs[k].runs;
    cancelled += (uint64_t)ctx[i].cancelled;
  }
  /* Every delivery was either a run or a successful cancel. */
  ASSERT_EQ(runs + cancelled, 2u * RING_LOOPS * RING_BURST * RING_ROUNDS);
  ASSERT_OK(uvt_pool_stats(pool, &st));
  ASSERT_EQ(st.submitted, 2u * RING_LOOPS * RING_BURST * RING_ROUNDS);
  ASSERT_EQ(st.completed, runs);
  ASSERT_EQ(st.cancelled, cancelled);
  ASSERT_EQ(st.queued, 0);
  ASSERT_EQ(st.running, 0);
  ASSERT_OK(uvt_pool_free(pool));
}

/* CTest runs this executable with UVT_POOL_SIZE=2. */
/* A worker that takes a backlog of short tasks alone (a sprint) and then
 * sits in a long task must not strand the tasks behind it while another
 * worker is parked: the watcher takes them. Here the long task waits for
 * the task queued right behind it, which only another worker can run; if
 * nobody relieved the sprinter, it would wait out its 10 s limit. Rounds
 * are put from outside callbacks and from inside a drain (a batch). */
#define STUCK_ROUNDS 40
#define STUCK_SHORT 300
#define STUCK_REQS (2 * STUCK_SHORT + 2)
static struct {
  uv_mutex_t mutex;
  uv_cond_t cond;
  int released, timed_out;
  long done;
  uvt_bridge_t b;
  uvt_work_t reqs[STUCK_REQS];
  uvt_work_t starter;
} stuck;

static void stuck_short_work(uvt_work_t* req) { (void)req; }
static void stuck_wait_work(uvt_work_t* req) {
  uint64_t deadline = uv_hrtime() + 10 * (uint64_t)1000000000;
  (void)req;
  uv_mutex_lock(&stuck.mutex);
  while (!stuck.released) {
    uint64_t now = uv_hrtime();
    if (now >= deadline) {
      stuck.timed_out = 1;
      break;
    }
    (void)uv_cond_timedwait(&stuck.cond, &stuck.mutex, deadline - now);
  }
  uv_mutex_unlock(&stuck.mutex);
}
static void stuck_release_work(uvt_work_t* req) {
  (void)req;
  uv_mutex_lock(&stuck.mutex);
  stuck.released = 1;
  uv_cond_signal(&stuck.cond);
  uv_mutex_unlock(&stuck.mutex);
}
static void stuck_after(uvt_work_t* req, int status) {
  (void)req;
  ASSERT_EQ(status, 0);
  stuck.done++;
}
static void stuck_put_round(void) {
  int i;
  stuck.released = 0;
  for (i = 0; i < STUCK_REQS; i++) {
    uvt_work_cb work = stuck_short_work;
    if (i == STUCK_SHORT) work = stuck_wait_work;
    if (i == STUCK_SHORT + 1) work = stuck_release_work;
    ASSERT_OK(uvt_threaded(&stuck.b, &stuck.reqs[i], work, stuck_after));
  }
}
static void stuck_starter_after(uvt_work_t* req, int status) {
  (void)req;
  ASSERT_EQ(status, 0);
  stuck_put_round(); /* from inside a drain */
}

static void test_stuck_sprinter(void) {
  uvt_pool_t* pool = test_pool(2, 2);
  uv_loop_t loop;
  int round;
  ASSERT_OK(uv_mutex_init(&stuck.mutex));
  ASSERT_OK(uv_cond_init(&stuck.cond));
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uvt_bridge_init(&loop, &stuck.b, pool));
  for (round = 0; round < STUCK_ROUNDS; round++) {
    stuck.done = 0;
    if (round % 2 == 0)
      stuck_put_round();
    else
      ASSERT_OK(uvt_threaded(&stuck.b, &stuck.starter, stuck_short_work, stuck_starter_after));
    ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
    ASSERT_EQ(stuck.done, STUCK_REQS);
    ASSERT_EQ(stuck.timed_out, 0);
  }
  ASSERT_OK(uvt_bridge_close(&stuck.b, NULL));
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_OK(uv_loop_close(&loop));
  ASSERT_OK(uvt_pool_free(pool));
  uv_cond_destroy(&stuck.cond);
  uv_mutex_destroy(&stuck.mutex);
}

static void test_default_pool(void) {
  uvt_pool_t* def = uvt_pool_default();
  uvt_pool_stats_t st;
  uv_loop_t loop;
  uvt_bridge_t b;
  test_gate_t gate;
  pjob_t jobs[4];
  const char* env = getenv("UVT_POOL_SIZE");
  int i;
  ASSERT(def != NULL);
  ASSERT_PTR_EQ(uvt_pool_default(), def);
  ASSERT_ERR(uvt_pool_free(def), UV_EINVAL);
  memset(jobs, 0, sizeof(jobs));
  gate_init(&gate);
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uvt_bridge_init(&loop, &b, NULL));
  ASSERT_PTR_EQ(b.pool, def);
  for (i = 0; i < 4; i++) {
    jobs[i].gate = &gate;
    ASSERT_OK(uvt_threaded(&b, &jobs[i].req, pjob_work, pjob_after));
  }
  if (env != NULL && strcmp(env, "2") == 0) {
    gate_await_waiters(&gate, 2);
    ASSERT_OK(uvt_pool_stats(def, &st));
    ASSERT_EQ(st.threads, 2);
    ASSERT_EQ(st.queued, 2);
  }
  gate_open(&gate);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  for (i = 0; i < 4; i++) ASSERT_EQ(jobs[i].done, 1);
  test_close_all(&loop, &b);
  gate_destroy(&gate);
}

TEST_MAIN(TEST(test_options_defaults), TEST(test_ring_stress), TEST(test_pool_errors), TEST(test_min_threads_start),
          TEST(test_elastic), TEST(test_stats_and_names), TEST(test_shared_pool),
          TEST(test_stuck_sprinter), TEST(test_default_pool))
