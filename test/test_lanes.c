/* Lanes and queue deadlines: uvt_lane_*, uvt_threaded_ex (API.md, "Lanes").
 *
 * No timing assertions, except where the contract is about time: an
 * expired task's after comes "within a few milliseconds" of its deadline
 * even while every thread is busy. Those tests allow DEADLINE_SLACK_MS:
 * the timer has millisecond resolution and the loop may be descheduled on
 * a loaded 2-core CI machine, more so under a sanitizer, so the window is
 * generous; it still fails a design that waits for a free thread (the
 * threads stay busy for seconds). */
#define _GNU_SOURCE /* src/internal.h, for the heap test */
#include "test.h"

#include "../src/internal.h"

#define DEADLINE_SLACK_MS 50

typedef struct lane_watch_s {
  int running; /* atomic: tasks of the lane in their work function */
  int max;     /* atomic: the most seen at once */
} lane_watch_t;

typedef struct job_s {
  uvt_work_t req; /* first */
  int id;
  int ran;    /* work ran (read on the loop after the after: ordered) */
  int afters; /* loop thread */
  int status;
  uint64_t submitted_ns, delivered_ns;
  test_gate_t* gate;
  lane_watch_t* watch;
  unsigned sleep_ms;
  uv_sem_t* finished; /* posted at the end of work */
  void* work_ctx;
  void* after_ctx;
} job_t;

static uv_thread_t loop_thread;
static int afters_seen; /* loop thread: every after in the current test */

static void watch_enter(lane_watch_t* w) {
  int now = __atomic_add_fetch(&w->running, 1, __ATOMIC_SEQ_CST);
  int max = __atomic_load_n(&w->max, __ATOMIC_SEQ_CST);
  while (now > max &&
         !__atomic_compare_exchange_n(&w->max, &max, now, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
  }
}

static void job_work(uvt_work_t* req) {
  job_t* j = (job_t*)req;
  j->ran++;
  j->work_ctx = uvt_context_get();
  if (j->watch != NULL) watch_enter(j->watch);
  if (j->gate != NULL) gate_wait(j->gate);
  if (j->sleep_ms != 0) uv_sleep(j->sleep_ms);
  if (j->watch != NULL) __atomic_sub_fetch(&j->watch->running, 1, __ATOMIC_SEQ_CST);
  if (j->finished != NULL) uv_sem_post(j->finished);
}

static void job_after(uvt_work_t* req, int status) {
  job_t* j = (job_t*)req;
  uv_thread_t self = uv_thread_self();
  ASSERT(uv_thread_equal(&self, &loop_thread));
  j->afters++;
  j->status = status;
  j->delivered_ns = uv_hrtime();
  j->after_ctx = uvt_context_get();
  afters_seen++;
}

static int submit(uvt_bridge_t* b, job_t* j, uvt_lane_t* lane, uint64_t timeout_ms) {
  uvt_work_options_t o;
  o.lane = lane;
  o.queue_timeout_ms = timeout_ms;
  j->submitted_ns = uv_hrtime();
  return uvt_threaded_ex(b, &j->req, &o, job_work, job_after);
}

static void setup(uv_loop_t* loop, uvt_bridge_t* b, uvt_pool_t* pool) {
  loop_thread = uv_thread_self();
  afters_seen = 0;
  ASSERT_OK(uv_loop_init(loop));
  ASSERT_OK(uvt_bridge_init(loop, b, pool));
}

/* Runs the loop until n afters have been seen in this test. */
static void run_until_afters(uv_loop_t* loop, int n) {
  while (afters_seen < n) ASSERT_GE(uv_run(loop, UV_RUN_ONCE), 0);
}

static uvt_lane_t* lane_on(uvt_pool_t* pool, unsigned max_running, unsigned max_queued) {
  uvt_lane_options_t o;
  uvt_lane_t* lane = NULL;
  uvt_lane_options_init(&o);
  o.max_running = max_running;
  o.max_queued = max_queued;
  ASSERT_OK(uvt_lane_new(pool, &o, &lane));
  return lane;
}

/* submitted == completed + cancelled + expired + queued + running. */
static void assert_lane_books(uvt_lane_t* lane) {
  uvt_lane_stats_t st;
  ASSERT_OK(uvt_lane_stats(lane, &st));
  ASSERT_EQ(st.submitted, st.completed + st.cancelled + st.expired + st.queued + st.running);
}

static void assert_pool_books(uvt_pool_t* pool) {
  uvt_pool_stats_t st;
  ASSERT_OK(uvt_pool_stats(pool, &st));
  ASSERT_EQ(st.submitted, st.completed + st.cancelled + st.expired + st.queued + st.running);
}

/* ---- the pairing heap behind the bridge's deadlines ---------------------- */

static unsigned heap_seed = 12345u;
static unsigned heap_rnd(unsigned n) {
  heap_seed = heap_seed * 1103515245u + 12345u;
  return (heap_seed >> 8) % n;
}

/* Random inserts and removals of arbitrary nodes against a plain array:
 * the root is always the least key in the heap. */
static void test_deadline_heap(void) {
  enum { N = 512 };
  static uvt__heap_node_t nodes[N];
  static int in[N];
  uvt__heap_node_t* heap = NULL;
  int round, i, count = 0;
  memset(in, 0, sizeof(in));
  for (round = 0; round < 200000; round++) {
    int k = (int)heap_rnd(N);
    if (!in[k]) {
      nodes[k].key = heap_rnd(4) == 0 ? 1000 : heap_rnd(100000); /* some equal keys */
      uvt__heap_insert(&heap, &nodes[k]);
      in[k] = 1;
      count++;
    } else if (heap_rnd(3) == 0) {
      int min = (int)(heap - nodes);
      ASSERT(in[min]);
      uvt__heap_remove(&heap, heap); /* pop the least */
      in[min] = 0;
      count--;
    } else {
      uvt__heap_remove(&heap, &nodes[k]);
      in[k] = 0;
      count--;
    }
    if (round % 97 == 0 || count < 3) {
      uint64_t least = UINT64_MAX;
      for (i = 0; i < N; i++)
        if (in[i] && nodes[i].key < least) least = nodes[i].key;
      if (count == 0)
        ASSERT(heap == NULL);
      else
        ASSERT_EQ(heap->key, least);
    }
  }
  /* Drain in order. */
  {
    uint64_t last = 0;
    while (heap != NULL) {
      ASSERT_GE(heap->key, last);
      last = heap->key;
      uvt__heap_remove(&heap, heap);
      count--;
    }
    ASSERT_EQ(count, 0);
  }
}

/* ---- options, new, free ---------------------------------------------------- */

static void test_lane_new_and_free(void) {
  uvt_lane_options_t o;
  uvt_lane_t* lane;
  uvt_lane_stats_t st;
  uvt_pool_t* pool = test_pool(0, 2);
  memset(&o, 0xA5, sizeof(o));
  uvt_lane_options_init(&o);
  ASSERT_EQ(o.max_running, 1);
  ASSERT_EQ(o.max_queued, 0);
  uvt_lane_options_init(NULL); /* ignored */

  /* NULL pool: the default pool; NULL options: the defaults. */
  ASSERT_OK(uvt_lane_new(NULL, NULL, &lane));
  ASSERT_OK(uvt_lane_stats(lane, &st));
  ASSERT_EQ(st.submitted, 0);
  ASSERT_EQ(st.oldest_queued_ns, 0);
  ASSERT_OK(uvt_lane_free(lane));

  ASSERT_OK(uvt_lane_new(pool, &o, &lane));
  ASSERT_ERR(uvt_pool_free(pool), UV_EBUSY); /* a lane of it exists */
  ASSERT_OK(uvt_lane_free(lane));
  ASSERT_OK(uvt_pool_free(pool));
}

/* ---- a lane caps, it does not reserve ------------------------------------- */

static void test_cap_respected(void) {
  enum { N = 24 };
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(4, 4);
  uvt_lane_t* two = lane_on(pool, 2, 0);
  uvt_lane_t* three = lane_on(pool, 3, 0);
  lane_watch_t w2 = {0, 0}, w3 = {0, 0};
  static job_t jobs[2 * N];
  int i;
  memset(jobs, 0, sizeof(jobs));
  setup(&loop, &b, pool);
  for (i = 0; i < 2 * N; i++) {
    jobs[i].watch = i % 2 ? &w3 : &w2;
    jobs[i].sleep_ms = 2;
    ASSERT_OK(submit(&b, &jobs[i], i % 2 ? three : two, 0));
  }
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  for (i = 0; i < 2 * N; i++) {
    ASSERT_EQ(jobs[i].ran, 1);
    ASSERT_EQ(jobs[i].afters, 1);
    ASSERT_EQ(jobs[i].status, 0);
  }
  ASSERT_LE(w2.max, 2);
  ASSERT_LE(w3.max, 3);
  ASSERT_GE(w2.max, 1);
  test_close_all(&loop, &b);
  ASSERT_OK(uvt_lane_free(two));
  ASSERT_OK(uvt_lane_free(three));
  ASSERT_OK(uvt_pool_free(pool));
}

/* A lane saturated with blocked tasks holds only its max_running threads:
 * plain tasks and another lane's tasks complete meanwhile. */
static void test_saturated_lane_holds_no_thread(void) {
  enum { SLOW = 6, PLAIN = 20, OTHER = 5 };
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(0, 3);
  uvt_lane_t* slow = lane_on(pool, 2, 0);
  uvt_lane_t* other = lane_on(pool, 1, 0);
  test_gate_t gate;
  static job_t jobs[SLOW + PLAIN + OTHER];
  uvt_lane_stats_t st;
  uvt_pool_stats_t ps;
  int i;
  memset(jobs, 0, sizeof(jobs));
  gate_init(&gate);
  setup(&loop, &b, pool);
  for (i = 0; i < SLOW; i++) {
    jobs[i].gate = &gate;
    ASSERT_OK(submit(&b, &jobs[i], slow, 0));
  }
  gate_await_waiters(&gate, 2);
  for (i = SLOW; i < SLOW + PLAIN; i++)
    ASSERT_OK(uvt_threaded(&b, &jobs[i].req, job_work, job_after));
  for (; i < SLOW + PLAIN + OTHER; i++) ASSERT_OK(submit(&b, &jobs[i], other, 0));
  run_until_afters(&loop, PLAIN + OTHER); /* the slow lane is still blocked */
  ASSERT_OK(uvt_lane_stats(slow, &st));
  ASSERT_EQ(st.running, 2);
  ASSERT_EQ(st.queued, SLOW - 2);
  ASSERT_EQ(st.completed, 0);
  ASSERT_OK(uvt_pool_stats(pool, &ps));
  ASSERT_LE(ps.threads, 3);
  ASSERT_EQ(ps.running, 2);
  ASSERT_EQ(ps.queued, SLOW - 2); /* waiting in the lane counts as queued */
  ASSERT_EQ(ps.completed, PLAIN + OTHER);
  for (i = 0; i < SLOW; i++) ASSERT_EQ(jobs[i].afters, 0);
  gate_open(&gate);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  for (i = 0; i < SLOW + PLAIN + OTHER; i++) {
    ASSERT_EQ(jobs[i].afters, 1);
    ASSERT_EQ(jobs[i].status, 0);
  }
  test_close_all(&loop, &b);
  gate_destroy(&gate);
  assert_lane_books(slow);
  ASSERT_OK(uvt_lane_free(slow));
  ASSERT_OK(uvt_lane_free(other));
  ASSERT_OK(uvt_pool_free(pool));
}

/* ---- a serial lane ---------------------------------------------------------- */

enum { SERIAL_N = 300 };
static struct {
  int in_lane; /* plain ints: the lane's happens-before makes them safe */
  int order[SERIAL_N];
  int n;
  long sum;
} serial;

static void serial_work(uvt_work_t* req) {
  job_t* j = (job_t*)req;
  ASSERT_EQ(serial.in_lane, 0); /* one at a time */
  serial.in_lane = 1;
  serial.order[serial.n++] = j->id;
  serial.sum += j->id; /* sees every earlier task's write */
  if (j->id % 50 == 0) uv_sleep(1);
  serial.in_lane = 0;
  j->ran++;
}

static void test_serial_fifo_and_visibility(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(0, 4);
  uvt_lane_t* lane = lane_on(pool, 1, 0);
  static job_t jobs[SERIAL_N], plain[SERIAL_N];
  uvt_work_options_t o = {lane, 0};
  int i;
  memset(jobs, 0, sizeof(jobs));
  memset(plain, 0, sizeof(plain));
  memset(&serial, 0, sizeof(serial));
  setup(&loop, &b, pool);
  for (i = 0; i < SERIAL_N; i++) {
    jobs[i].id = i;
    ASSERT_OK(uvt_threaded_ex(&b, &jobs[i].req, &o, serial_work, job_after));
    /* Other work keeps the other threads busy and in between. */
    plain[i].sleep_ms = i % 10 == 0 ? 1 : 0;
    ASSERT_OK(uvt_threaded(&b, &plain[i].req, job_work, job_after));
  }
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ(serial.n, SERIAL_N);
  for (i = 0; i < SERIAL_N; i++) {
    ASSERT_EQ(serial.order[i], i);
    ASSERT_EQ(jobs[i].afters, 1);
    ASSERT_EQ(jobs[i].ran, 1);
  }
  ASSERT_EQ(serial.sum, (long)SERIAL_N * (SERIAL_N - 1) / 2);
  test_close_all(&loop, &b);
  ASSERT_OK(uvt_lane_free(lane));
  ASSERT_OK(uvt_pool_free(pool));
}

/* A lane hands its next task to the back of the pool's queue: with one
 * thread, work queued behind the lane's first task is not held up until
 * every task of the lane has run. */
enum { FAIR_N = 5 };
static int fair_order[4 * FAIR_N], fair_n;
static void fair_work(uvt_work_t* req) { fair_order[fair_n++] = ((job_t*)req)->id; }

static void test_lane_hands_on_to_the_back(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(1, 1);
  uvt_lane_t* lane = lane_on(pool, 1, 0);
  test_gate_t gate;
  job_t first;
  static job_t lj[FAIR_N], pj[FAIR_N];
  uvt_work_options_t o = {lane, 0};
  int i, pos_first_plain = -1, pos_last_lane = -1;
  memset(&first, 0, sizeof(first));
  memset(lj, 0, sizeof(lj));
  memset(pj, 0, sizeof(pj));
  fair_n = 0;
  gate_init(&gate);
  setup(&loop, &b, pool);
  first.gate = &gate;
  ASSERT_OK(uvt_threaded(&b, &first.req, job_work, job_after));
  gate_await_waiters(&gate, 1);
  for (i = 0; i < FAIR_N; i++) {
    lj[i].id = 100 + i;
    ASSERT_OK(uvt_threaded_ex(&b, &lj[i].req, &o, fair_work, job_after));
  }
  for (i = 0; i < FAIR_N; i++) {
    pj[i].id = 200 + i;
    ASSERT_OK(uvt_threaded(&b, &pj[i].req, fair_work, job_after));
  }
  gate_open(&gate);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ(fair_n, 2 * FAIR_N);
  for (i = 0; i < fair_n; i++) {
    if (fair_order[i] == 200 && pos_first_plain < 0) pos_first_plain = i;
    if (fair_order[i] == 100 + FAIR_N - 1) pos_last_lane = i;
  }
  ASSERT_LT(pos_first_plain, pos_last_lane);
  test_close_all(&loop, &b);
  gate_destroy(&gate);
  ASSERT_OK(uvt_lane_free(lane));
  ASSERT_OK(uvt_pool_free(pool));
}

/* ---- back-pressure ----------------------------------------------------------- */

static void test_max_queued(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(0, 1);
  uvt_lane_t* lane = lane_on(pool, 1, 2);
  test_gate_t gate;
  job_t j[5];
  uvt_lane_stats_t st;
  memset(j, 0, sizeof(j));
  gate_init(&gate);
  setup(&loop, &b, pool);
  j[0].gate = &gate;
  ASSERT_OK(submit(&b, &j[0], lane, 0)); /* runs */
  ASSERT_OK(submit(&b, &j[1], lane, 0)); /* waits */
  ASSERT_OK(submit(&b, &j[2], lane, 0)); /* waits: 2 = max_queued */
  ASSERT_ERR(submit(&b, &j[3], lane, 0), UV_EAGAIN);
  ASSERT_ERR(submit(&b, &j[3], lane, 1000), UV_EAGAIN);
  /* Not taken: the request is free for another submission. */
  ASSERT_OK(uvt_threaded(&b, &j[3].req, job_work, job_after));
  ASSERT_OK(uvt_lane_stats(lane, &st));
  ASSERT_EQ(st.rejected, 2);
  ASSERT_EQ(st.submitted, 3);
  gate_open(&gate);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ(j[3].afters, 1); /* once, for the plain submission */
  ASSERT_EQ(j[3].ran, 1);
  /* Room again. */
  ASSERT_OK(submit(&b, &j[4], lane, 0));
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_OK(uvt_lane_stats(lane, &st));
  ASSERT_EQ(st.completed, 4);
  ASSERT_EQ(st.rejected, 2);
  test_close_all(&loop, &b);
  gate_destroy(&gate);
  ASSERT_OK(uvt_lane_free(lane));
  ASSERT_OK(uvt_pool_free(pool));
}

/* ---- deadlines ---------------------------------------------------------------- */

static void assert_expired_in_time(job_t* j, uint64_t timeout_ms) {
  uint64_t took_ms = (j->delivered_ns - j->submitted_ns) / 1000000u;
  ASSERT_EQ(j->afters, 1);
  ASSERT_ERR(j->status, UV_ETIMEDOUT);
  ASSERT_EQ(j->ran, 0);
  ASSERT_GE(j->delivered_ns - j->submitted_ns, timeout_ms * 1000000u); /* never early */
  ASSERT_LE(took_ms, timeout_ms + DEADLINE_SLACK_MS);
}

/* Every thread is busy (for seconds, behind a gate): deadlines are still
 * delivered on time, for a plain task, a lane task queued in the pool and
 * one waiting in its lane. */
static void test_deadline_while_all_busy(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(0, 2);
  uvt_lane_t* lane = lane_on(pool, 1, 0);
  test_gate_t gate;
  job_t busy[2], plain, in_pool, in_lane;
  uvt_pool_stats_t ps;
  uvt_lane_stats_t ls;
  int i;
  memset(busy, 0, sizeof(busy));
  memset(&plain, 0, sizeof(plain));
  memset(&in_pool, 0, sizeof(in_pool));
  memset(&in_lane, 0, sizeof(in_lane));
  gate_init(&gate);
  setup(&loop, &b, pool);
  for (i = 0; i < 2; i++) {
    busy[i].gate = &gate;
    ASSERT_OK(uvt_threaded(&b, &busy[i].req, job_work, job_after));
  }
  gate_await_waiters(&gate, 2);
  ASSERT_OK(submit(&b, &plain, NULL, 40));
  ASSERT_OK(submit(&b, &in_pool, lane, 60)); /* the lane has room: into the pool */
  ASSERT_OK(submit(&b, &in_lane, lane, 80)); /* waits in the lane */
  run_until_afters(&loop, 3);
  assert_expired_in_time(&plain, 40);
  assert_expired_in_time(&in_pool, 60);
  assert_expired_in_time(&in_lane, 80);
  ASSERT_LT(plain.delivered_ns, in_pool.delivered_ns);
  ASSERT_LT(in_pool.delivered_ns, in_lane.delivered_ns);
  ASSERT_EQ(busy[0].afters + busy[1].afters, 0);
  ASSERT_OK(uvt_pool_stats(pool, &ps));
  ASSERT_EQ(ps.expired, 3);
  ASSERT_EQ(ps.queued, 0);
  ASSERT_EQ(ps.running, 2);
  ASSERT_OK(uvt_lane_stats(lane, &ls));
  ASSERT_EQ(ls.expired, 2);
  ASSERT_EQ(ls.queued, 0);
  gate_open(&gate);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  assert_pool_books(pool);
  test_close_all(&loop, &b);
  gate_destroy(&gate);
  ASSERT_OK(uvt_lane_free(lane));
  ASSERT_OK(uvt_pool_free(pool));
}

/* Many deadlines in random order, some cancelled: each expires on its own
 * time and in deadline order (the bridge's heap), none early. */
static void test_many_deadlines(void) {
  enum { N = 200 };
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(0, 1);
  uvt_lane_t* lane = lane_on(pool, 1, 0);
  test_gate_t gate;
  job_t busy;
  static job_t jobs[N];
  static uint64_t timeout[N];
  int i, cancelled = 0, expired = 0;
  memset(&busy, 0, sizeof(busy));
  memset(jobs, 0, sizeof(jobs));
  gate_init(&gate);
  setup(&loop, &b, pool);
  busy.gate = &gate;
  ASSERT_OK(uvt_threaded(&b, &busy.req, job_work, job_after));
  gate_await_waiters(&gate, 1);
  for (i = 0; i < N; i++) {
    timeout[i] = 1 + heap_rnd(60);
    ASSERT_OK(submit(&b, &jobs[i], i % 3 == 0 ? NULL : lane, timeout[i]));
  }
  for (i = 0; i < N; i += 7) {
    ASSERT_OK(uvt_cancel(&jobs[i].req));
    cancelled++;
  }
  run_until_afters(&loop, N);
  for (i = 0; i < N; i++) {
    ASSERT_EQ(jobs[i].afters, 1);
    ASSERT_EQ(jobs[i].ran, 0);
    if (i % 7 == 0) {
      ASSERT_ERR(jobs[i].status, UV_ECANCELED);
      continue;
    }
    expired++;
    ASSERT_ERR(jobs[i].status, UV_ETIMEDOUT);
    ASSERT_GE(jobs[i].delivered_ns - jobs[i].submitted_ns, timeout[i] * 1000000u);
  }
  /* In deadline order: a task due a millisecond or more before another
   * was delivered before it (equal milliseconds may come either way). */
  for (i = 1; i < N; i++) {
    int k;
    if (i % 7 == 0) continue;
    for (k = 1; k < N; k++) {
      if (k % 7 == 0) continue;
      if (jobs[k].submitted_ns + timeout[k] * 1000000u + 1000000u <
          jobs[i].submitted_ns + timeout[i] * 1000000u)
        ASSERT_LE(jobs[k].delivered_ns, jobs[i].delivered_ns);
    }
  }
  gate_open(&gate);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  {
    uvt_pool_stats_t ps;
    ASSERT_OK(uvt_pool_stats(pool, &ps));
    ASSERT_EQ(ps.expired, expired);
    ASSERT_EQ(ps.cancelled, cancelled);
    ASSERT_EQ(ps.completed, 1);
    ASSERT_EQ(ps.submitted, N + 1);
  }
  assert_lane_books(lane);
  test_close_all(&loop, &b);
  gate_destroy(&gate);
  ASSERT_OK(uvt_lane_free(lane));
  ASSERT_OK(uvt_pool_free(pool));
}

/* A task started in time runs to its end, however long: its deadline is
 * about the queue only. */
static void test_started_task_runs_past_deadline(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(0, 1);
  job_t j;
  memset(&j, 0, sizeof(j));
  setup(&loop, &b, pool);
  j.sleep_ms = 60;
  ASSERT_OK(submit(&b, &j, NULL, 20));
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ(j.ran, 1);
  ASSERT_EQ(j.status, 0);
  test_close_all(&loop, &b);
  ASSERT_OK(uvt_pool_free(pool));
}

/* ---- cancel ------------------------------------------------------------------- */

static void test_cancel_lane_task(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(0, 1);
  uvt_lane_t* lane = lane_on(pool, 1, 0);
  uvt_lane_t* other = lane_on(pool, 1, 0);
  test_gate_t gate;
  job_t running, waiting, queued, behind;
  uvt_lane_stats_t st;
  memset(&running, 0, sizeof(running));
  memset(&waiting, 0, sizeof(waiting));
  memset(&queued, 0, sizeof(queued));
  memset(&behind, 0, sizeof(behind));
  gate_init(&gate);
  setup(&loop, &b, pool);
  running.gate = &gate;
  ASSERT_OK(submit(&b, &running, lane, 0));
  gate_await_waiters(&gate, 1);
  ASSERT_OK(submit(&b, &waiting, lane, 0)); /* waits in the lane */
  ASSERT_OK(submit(&b, &queued, other, 0)); /* in the pool's queue, the thread busy */
  ASSERT_OK(submit(&b, &behind, other, 0)); /* waits behind it */

  ASSERT_OK(uvt_cancel(&waiting.req));
  ASSERT_OK(uvt_cancel(&waiting.req)); /* again: still 0 */
  ASSERT_EQ(uvt_is_cancelled(&waiting.req), 1);
  ASSERT_OK(uvt_cancel(&queued.req)); /* out of the pool; its lane hands on behind */
  ASSERT_ERR(uvt_cancel(&running.req), UV_EBUSY);
  ASSERT_EQ(uvt_is_cancelled(&running.req), 1);
  /* The cancelled afters come while the only thread is still blocked. */
  run_until_afters(&loop, 2);
  ASSERT_ERR(waiting.status, UV_ECANCELED);
  ASSERT_ERR(queued.status, UV_ECANCELED);
  ASSERT_EQ(running.afters + behind.afters, 0);
  ASSERT_ERR(uvt_cancel(&waiting.req), UV_EINVAL); /* delivered: no longer in flight */
  ASSERT_OK(uvt_lane_stats(other, &st));
  ASSERT_EQ(st.cancelled, 1);
  ASSERT_EQ(st.queued, 1); /* behind, handed to the pool */
  gate_open(&gate);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ(running.status, 0);
  ASSERT_EQ(running.ran, 1);
  ASSERT_EQ(behind.status, 0);
  ASSERT_EQ(waiting.ran + queued.ran, 0);
  ASSERT_OK(uvt_lane_stats(lane, &st));
  ASSERT_EQ(st.submitted, 2);
  ASSERT_EQ(st.completed, 1);
  ASSERT_EQ(st.cancelled, 1);
  test_close_all(&loop, &b);
  gate_destroy(&gate);
  ASSERT_OK(uvt_lane_free(lane));
  ASSERT_OK(uvt_lane_free(other));
  ASSERT_OK(uvt_pool_free(pool));
}

/* uvt_cancel of a task that expired but whose after has not run: 0, and
 * the status stays UV_ETIMEDOUT. Two ways: the deadline passed while the
 * loop was not running (nobody noticed yet), and the deadline passed in a
 * loop iteration whose timers have run (the bridge's timer expired it, its
 * after comes in the poll phase): a prepare handle runs in between. */
static job_t* prepare_target;
static uint64_t prepare_due;
static int prepare_cancel_rc = 1;
static void cancel_in_prepare(uv_prepare_t* p) {
  (void)p;
  if (prepare_target == NULL || prepare_target->afters != 0 || uv_hrtime() < prepare_due) return;
  prepare_cancel_rc = uvt_cancel(&prepare_target->req);
  prepare_target = NULL;
}

static void test_cancel_after_expiry(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(0, 1);
  uvt_lane_t* lane = lane_on(pool, 1, 0);
  test_gate_t gate;
  uv_prepare_t prepare;
  job_t busy, unnoticed, posted;
  memset(&busy, 0, sizeof(busy));
  memset(&unnoticed, 0, sizeof(unnoticed));
  memset(&posted, 0, sizeof(posted));
  gate_init(&gate);
  setup(&loop, &b, pool);
  busy.gate = &gate;
  ASSERT_OK(uvt_threaded(&b, &busy.req, job_work, job_after));
  gate_await_waiters(&gate, 1);

  ASSERT_OK(submit(&b, &unnoticed, lane, 5));
  uv_sleep(20); /* the loop does not run: nobody has noticed */
  ASSERT_OK(uvt_cancel(&unnoticed.req));
  ASSERT_OK(uvt_cancel(&unnoticed.req));
  run_until_afters(&loop, 1);
  ASSERT_ERR(unnoticed.status, UV_ETIMEDOUT);

  ASSERT_OK(uv_prepare_init(&loop, &prepare));
  ASSERT_OK(uv_prepare_start(&prepare, cancel_in_prepare));
  prepare_target = &posted;
  ASSERT_OK(submit(&b, &posted, lane, 5));
  prepare_due = posted.submitted_ns + 5000000u;
  run_until_afters(&loop, 2);
  ASSERT_OK(prepare_cancel_rc);
  ASSERT_ERR(posted.status, UV_ETIMEDOUT);
  uv_close((uv_handle_t*)&prepare, NULL);

  gate_open(&gate);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  {
    uvt_lane_stats_t st;
    ASSERT_OK(uvt_lane_stats(lane, &st));
    ASSERT_EQ(st.expired, 2);
    ASSERT_EQ(st.cancelled, 0);
  }
  test_close_all(&loop, &b);
  gate_destroy(&gate);
  ASSERT_OK(uvt_lane_free(lane));
  ASSERT_OK(uvt_pool_free(pool));
}

/* ---- bridge close ------------------------------------------------------------- */

static int close_cb_calls;
static uint64_t close_cb_ns;
static void on_close(uvt_bridge_t* b) {
  (void)b;
  close_cb_calls++;
  close_cb_ns = uv_hrtime();
}

static void test_close_cancels_lane_and_deadline_tasks(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(0, 1);
  uvt_lane_t* lane = lane_on(pool, 1, 0);
  test_gate_t gate;
  job_t running, w[3], plain_deadline;
  uint64_t t0;
  int i;
  memset(&running, 0, sizeof(running));
  memset(w, 0, sizeof(w));
  memset(&plain_deadline, 0, sizeof(plain_deadline));
  gate_init(&gate);
  setup(&loop, &b, pool);
  running.gate = &gate;
  ASSERT_OK(submit(&b, &running, lane, 10000));
  gate_await_waiters(&gate, 1);
  for (i = 0; i < 3; i++) ASSERT_OK(submit(&b, &w[i], lane, i == 0 ? 0 : 10000));
  ASSERT_OK(submit(&b, &plain_deadline, NULL, 10000));
  t0 = uv_hrtime();
  close_cb_calls = 0;
  ASSERT_OK(uvt_bridge_close(&b, on_close));
  ASSERT_ERR(submit(&b, &w[0], lane, 0), UV_EPIPE);
  run_until_afters(&loop, 4); /* while the thread is still blocked */
  for (i = 0; i < 3; i++) ASSERT_ERR(w[i].status, UV_ECANCELED);
  ASSERT_ERR(plain_deadline.status, UV_ECANCELED);
  ASSERT_EQ(running.afters, 0);
  ASSERT_EQ(uvt_is_cancelled(&running.req), 1); /* flagged, runs on */
  gate_open(&gate);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ(close_cb_calls, 1);
  ASSERT_EQ(running.status, 0);
  /* No pending deadline (10 s) held the close up. */
  ASSERT_LT(close_cb_ns - t0, 5000000000u);
  ASSERT_OK(uv_loop_close(&loop));
  gate_destroy(&gate);
  {
    uvt_lane_stats_t st;
    ASSERT_OK(uvt_lane_stats(lane, &st));
    ASSERT_EQ(st.cancelled, 3);
    ASSERT_EQ(st.completed, 1);
    ASSERT_EQ(st.queued + st.running, 0);
  }
  assert_pool_books(pool);
  ASSERT_OK(uvt_lane_free(lane));
  ASSERT_OK(uvt_pool_free(pool));
}

/* ---- several bridges, one lane -------------------------------------------------- */

enum { SHARED_PER_LOOP = 200 };
static struct {
  uvt_lane_t* lane;
  uvt_pool_t* pool;
  int in_lane; /* atomic: exclusive use check */
  long counter; /* plain: the serial lane orders every access */
} shared;

typedef struct {
  uv_loop_t loop;
  uvt_bridge_t b;
  job_t jobs[SHARED_PER_LOOP];
  int afters;
} shared_loop_t;

static void shared_work(uvt_work_t* req) {
  int zero = 0;
  ASSERT(__atomic_compare_exchange_n(&shared.in_lane, &zero, 1, 0, __ATOMIC_SEQ_CST,
                                     __ATOMIC_SEQ_CST));
  shared.counter++;
  __atomic_store_n(&shared.in_lane, 0, __ATOMIC_SEQ_CST);
  ((job_t*)req)->ran++;
}

static void shared_after(uvt_work_t* req, int status) {
  shared_loop_t* l = req->bridge->data;
  ASSERT_EQ(status, 0);
  l->afters++;
}

/* Both loop threads have opened their loops before either closes one.
 * Debian's libuv closes descriptors with a raw syscall that ThreadSanitizer
 * does not see, so a loop opened on one thread after the other closed its
 * own reuses descriptor numbers that TSan still believes belong to the
 * finished thread, and reports a race on them (seen once in CI: epoll_create1
 * and pipe2 on numbers that eventfd and epoll_create1 had given out). */
static uv_barrier_t shared_opened;

static void shared_loop_main(void* arg) {
  shared_loop_t* l = arg;
  uvt_work_options_t o = {shared.lane, 0};
  int i;
  ASSERT_OK(uv_loop_init(&l->loop));
  ASSERT_OK(uvt_bridge_init(&l->loop, &l->b, shared.pool));
  l->b.data = l;
  uv_barrier_wait(&shared_opened);
  for (i = 0; i < SHARED_PER_LOOP; i++)
    ASSERT_OK(uvt_threaded_ex(&l->b, &l->jobs[i].req, &o, shared_work, shared_after));
  ASSERT_OK(uv_run(&l->loop, UV_RUN_DEFAULT));
  ASSERT_EQ(l->afters, SHARED_PER_LOOP);
  ASSERT_OK(uvt_bridge_close(&l->b, NULL));
  ASSERT_OK(uv_run(&l->loop, UV_RUN_DEFAULT));
  ASSERT_OK(uv_loop_close(&l->loop));
}

static void test_two_bridges_share_a_lane(void) {
  static shared_loop_t loops[2];
  uv_thread_t t[2];
  uvt_lane_stats_t st;
  uvt_pool_t* other_pool = test_pool(0, 1);
  uv_loop_t loop;
  uvt_bridge_t b;
  job_t j;
  uvt_work_options_t o;
  int i;
  memset(loops, 0, sizeof(loops));
  memset(&shared, 0, sizeof(shared));
  shared.pool = test_pool(0, 4);
  shared.lane = lane_on(shared.pool, 1, 0);
  ASSERT_OK(uv_barrier_init(&shared_opened, 2));
  for (i = 0; i < 2; i++) ASSERT_OK(uv_thread_create(&t[i], shared_loop_main, &loops[i]));
  for (i = 0; i < 2; i++) ASSERT_OK(uv_thread_join(&t[i]));
  uv_barrier_destroy(&shared_opened);
  ASSERT_EQ(shared.counter, 2 * SHARED_PER_LOOP);
  ASSERT_OK(uvt_lane_stats(shared.lane, &st));
  ASSERT_EQ(st.submitted, 2 * SHARED_PER_LOOP);
  ASSERT_EQ(st.completed, 2 * SHARED_PER_LOOP);

  /* A bridge on another pool may not use the lane. */
  memset(&j, 0, sizeof(j));
  setup(&loop, &b, other_pool);
  o.lane = shared.lane;
  o.queue_timeout_ms = 0;
  ASSERT_ERR(uvt_threaded_ex(&b, &j.req, &o, job_work, job_after), UV_EINVAL);
  o.queue_timeout_ms = 100;
  ASSERT_ERR(uvt_threaded_ex(&b, &j.req, &o, job_work, job_after), UV_EINVAL);
  test_close_all(&loop, &b);
  ASSERT_EQ(j.afters, 0);

  ASSERT_OK(uvt_lane_free(shared.lane));
  ASSERT_OK(uvt_pool_free(shared.pool));
  ASSERT_OK(uvt_pool_free(other_pool));
}

/* ---- uvt_lane_free ---------------------------------------------------------------- */

static uvt_lane_t* free_lane;
static int free_rc_in_after = 1;
static void free_in_after(uvt_work_t* req, int status) {
  job_after(req, status);
  free_rc_in_after = uvt_lane_free(free_lane);
}

static void test_lane_free_rules(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(0, 1);
  test_gate_t gate;
  uv_sem_t finished;
  job_t a, c;
  uvt_work_options_t o;
  memset(&a, 0, sizeof(a));
  memset(&c, 0, sizeof(c));
  gate_init(&gate);
  ASSERT_OK(uv_sem_init(&finished, 0));
  setup(&loop, &b, pool);
  free_lane = lane_on(pool, 1, 0);
  ASSERT_ERR(uvt_lane_free(NULL), UV_EINVAL);

  a.gate = &gate;
  ASSERT_OK(submit(&b, &a, free_lane, 0));
  ASSERT_OK(submit(&b, &c, free_lane, 0));
  gate_await_waiters(&gate, 1);
  ASSERT_ERR(uvt_lane_free(free_lane), UV_EBUSY); /* one running, one queued */
  gate_open(&gate);
  run_until_afters(&loop, 2);
  ASSERT_OK(uvt_lane_free(free_lane));

  /* Done, but its after not yet called. */
  free_lane = lane_on(pool, 1, 0);
  memset(&a, 0, sizeof(a));
  a.finished = &finished;
  ASSERT_OK(submit(&b, &a, free_lane, 0));
  uv_sem_wait(&finished);
  ASSERT_ERR(uvt_lane_free(free_lane), UV_EBUSY);
  ASSERT_EQ(a.afters, 0);

  /* From inside the after of the lane's last task: 0. */
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ(a.afters, 1);
  memset(&c, 0, sizeof(c));
  o.lane = free_lane;
  o.queue_timeout_ms = 0;
  ASSERT_OK(uvt_threaded_ex(&b, &c.req, &o, job_work, free_in_after));
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_OK(free_rc_in_after);
  ASSERT_EQ(c.afters, 1);

  /* Also for a task that expired waiting. */
  free_lane = lane_on(pool, 1, 0);
  free_rc_in_after = 1;
  memset(&a, 0, sizeof(a));
  memset(&c, 0, sizeof(c));
  a.gate = &gate;
  gate_close(&gate);
  ASSERT_OK(uvt_threaded(&b, &a.req, job_work, job_after));
  gate_await_waiters(&gate, 1);
  o.lane = free_lane;
  o.queue_timeout_ms = 5;
  ASSERT_OK(uvt_threaded_ex(&b, &c.req, &o, job_work, free_in_after));
  run_until_afters(&loop, 5);
  ASSERT_ERR(c.status, UV_ETIMEDOUT);
  ASSERT_OK(free_rc_in_after);
  gate_open(&gate);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));

  test_close_all(&loop, &b);
  gate_destroy(&gate);
  uv_sem_destroy(&finished);
  ASSERT_OK(uvt_pool_free(pool)); /* no lane left */
}

/* ---- the books --------------------------------------------------------------------- */

static void test_exact_books(void) {
  enum { N = 400 };
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(0, 2);
  uvt_lane_t* lanes[2];
  static job_t jobs[N];
  uvt_pool_stats_t ps;
  uvt_lane_stats_t ls;
  long ok = 0, canc = 0, exp = 0;
  int i, k;
  lanes[0] = lane_on(pool, 1, 0);
  lanes[1] = lane_on(pool, 2, 50);
  memset(jobs, 0, sizeof(jobs));
  setup(&loop, &b, pool);
  for (i = 0; i < N; i++) {
    uvt_lane_t* lane = heap_rnd(3) == 0 ? NULL : lanes[heap_rnd(2)];
    int rc;
    jobs[i].sleep_ms = heap_rnd(8) == 0 ? 1 : 0;
    rc = submit(&b, &jobs[i], lane, heap_rnd(3) ? 0 : 1 + heap_rnd(5));
    if (rc == UV_EAGAIN) {
      jobs[i].afters = -1; /* not taken */
      continue;
    }
    ASSERT_OK(rc);
    if (heap_rnd(5) == 0) {
      rc = uvt_cancel(&jobs[heap_rnd((unsigned)i + 1)].req);
      ASSERT(rc == 0 || rc == UV_EBUSY || rc == UV_EINVAL);
    }
    if (i % 50 == 0) ASSERT_GE(uv_run(&loop, UV_RUN_NOWAIT), 0);
  }
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  for (i = 0; i < N; i++) {
    if (jobs[i].afters < 0) continue;
    ASSERT_EQ(jobs[i].afters, 1);
    if (jobs[i].status == 0)
      ok++;
    else if (jobs[i].status == UV_ECANCELED)
      canc++;
    else if (jobs[i].status == UV_ETIMEDOUT)
      exp++;
    else
      ASSERT(!"unexpected status");
    ASSERT_EQ(jobs[i].ran, jobs[i].status == 0);
  }
  ASSERT_OK(uvt_pool_stats(pool, &ps));
  ASSERT_EQ(ps.queued, 0);
  ASSERT_EQ(ps.running, 0);
  ASSERT_EQ(ps.completed, ok);
  ASSERT_EQ(ps.cancelled, canc);
  ASSERT_EQ(ps.expired, exp);
  ASSERT_EQ(ps.submitted, ps.completed + ps.cancelled + ps.expired);
  ASSERT_EQ(ps.oldest_queued_ns, 0);
  ASSERT_EQ(ps.oldest_running_ns, 0);
  for (k = 0; k < 2; k++) {
    ASSERT_OK(uvt_lane_stats(lanes[k], &ls));
    ASSERT_EQ(ls.queued + ls.running, 0);
    ASSERT_EQ(ls.submitted, ls.completed + ls.cancelled + ls.expired);
    ASSERT_EQ(ls.oldest_queued_ns + ls.oldest_running_ns, 0);
    ASSERT_OK(uvt_lane_free(lanes[k]));
  }
  test_close_all(&loop, &b);
  ASSERT_OK(uvt_pool_free(pool));
}

/* ---- stats ages --------------------------------------------------------------------- */

static void test_stats_ages(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(0, 1);
  uvt_lane_t* lane = lane_on(pool, 1, 0);
  test_gate_t gate;
  job_t stuck, waiting, plain;
  uvt_pool_stats_t ps;
  uvt_lane_stats_t ls;
  uint64_t t0, waited;
  memset(&stuck, 0, sizeof(stuck));
  memset(&waiting, 0, sizeof(waiting));
  memset(&plain, 0, sizeof(plain));
  gate_init(&gate);
  setup(&loop, &b, pool);
  t0 = uv_hrtime();
  stuck.gate = &gate;
  ASSERT_OK(submit(&b, &stuck, lane, 0));
  gate_await_waiters(&gate, 1);
  ASSERT_OK(submit(&b, &waiting, lane, 0));
  ASSERT_OK(uvt_threaded(&b, &plain.req, job_work, job_after)); /* in the pool's ring */
  uv_sleep(30);
  ASSERT_OK(uvt_pool_stats(pool, &ps));
  ASSERT_EQ(ps.running, 1);
  ASSERT_EQ(ps.queued, 2);
  /* The stuck task and the stalled queue show now, not once they end. */
  ASSERT_GE(ps.oldest_running_ns, 25000000u);
  ASSERT_GE(ps.oldest_queued_ns, 25000000u);
  ASSERT_OK(uvt_lane_stats(lane, &ls));
  ASSERT_EQ(ls.running, 1);
  ASSERT_EQ(ls.queued, 1);
  ASSERT_GE(ls.oldest_running_ns, 25000000u);
  ASSERT_GE(ls.oldest_queued_ns, 25000000u);
  waited = uv_hrtime() - t0; /* no age can be more */
  ASSERT_LE(ps.oldest_running_ns, waited);
  ASSERT_LE(ps.oldest_queued_ns, waited);
  ASSERT_LE(ls.oldest_running_ns, waited);
  ASSERT_LE(ls.oldest_queued_ns, waited);

  /* Only the plain task queued in the ring: its age comes from the ring. */
  ASSERT_OK(uvt_cancel(&waiting.req));
  run_until_afters(&loop, 1);
  ASSERT_OK(uvt_pool_stats(pool, &ps));
  ASSERT_EQ(ps.queued, 1);
  ASSERT_GE(ps.oldest_queued_ns, 25000000u);
  ASSERT_OK(uvt_lane_stats(lane, &ls));
  ASSERT_EQ(ls.queued, 0);
  ASSERT_EQ(ls.oldest_queued_ns, 0);

  gate_open(&gate);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_OK(uvt_pool_stats(pool, &ps));
  ASSERT_EQ(ps.oldest_queued_ns, 0);
  ASSERT_EQ(ps.oldest_running_ns, 0);
  ASSERT_GE(ps.wait_ns_max, 25000000u); /* the plain task's */
  test_close_all(&loop, &b);
  gate_destroy(&gate);
  ASSERT_OK(uvt_lane_free(lane));
  ASSERT_OK(uvt_pool_free(pool));
}

/* ---- context ------------------------------------------------------------------------ */

static void test_context_propagation(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(0, 1);
  uvt_lane_t* lane = lane_on(pool, 1, 0);
  test_gate_t gate;
  job_t first, second, expires, cancelled;
  int c1, c2, c3, c4;
  memset(&first, 0, sizeof(first));
  memset(&second, 0, sizeof(second));
  memset(&expires, 0, sizeof(expires));
  memset(&cancelled, 0, sizeof(cancelled));
  gate_init(&gate);
  setup(&loop, &b, pool);
  first.gate = &gate;
  uvt_context_set(&c1);
  ASSERT_OK(submit(&b, &first, lane, 0));
  uvt_context_set(&c2);
  ASSERT_OK(submit(&b, &second, lane, 10000)); /* waits in the lane */
  uvt_context_set(&c3);
  ASSERT_OK(submit(&b, &expires, lane, 5));
  uvt_context_set(&c4);
  ASSERT_OK(submit(&b, &cancelled, lane, 0));
  uvt_context_set(NULL);
  ASSERT_OK(uvt_cancel(&cancelled.req));
  gate_await_waiters(&gate, 1);
  run_until_afters(&loop, 2); /* expires and cancelled, the thread still blocked */
  gate_open(&gate);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_PTR_EQ(first.work_ctx, &c1);
  ASSERT_PTR_EQ(first.after_ctx, &c1);
  ASSERT_PTR_EQ(second.work_ctx, &c2);
  ASSERT_PTR_EQ(second.after_ctx, &c2);
  ASSERT_ERR(expires.status, UV_ETIMEDOUT);
  ASSERT_PTR_EQ(expires.after_ctx, &c3);
  ASSERT_ERR(cancelled.status, UV_ECANCELED);
  ASSERT_PTR_EQ(cancelled.after_ctx, &c4);
  ASSERT_PTR_EQ(uvt_context_get(), NULL);
  test_close_all(&loop, &b);
  gate_destroy(&gate);
  ASSERT_OK(uvt_lane_free(lane));
  ASSERT_OK(uvt_pool_free(pool));
}

/* opts NULL, or neither a lane nor a timeout: exactly uvt_threaded. */
static void test_threaded_ex_plain(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(0, 2);
  uvt_work_options_t none = {NULL, 0};
  job_t a, c;
  memset(&a, 0, sizeof(a));
  memset(&c, 0, sizeof(c));
  setup(&loop, &b, pool);
  ASSERT_OK(uvt_threaded_ex(&b, &a.req, NULL, job_work, job_after));
  ASSERT_OK(uvt_threaded_ex(&b, &c.req, &none, job_work, NULL));
  ASSERT_ERR(uvt_threaded_ex(&b, &a.req, NULL, job_work, job_after), UV_EBUSY);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ(a.afters, 1);
  ASSERT_EQ(a.ran + c.ran, 2);
  test_close_all(&loop, &b);
  ASSERT_OK(uvt_pool_free(pool));
}

TEST_MAIN(TEST(test_deadline_heap), TEST(test_lane_new_and_free), TEST(test_cap_respected),
          TEST(test_saturated_lane_holds_no_thread), TEST(test_serial_fifo_and_visibility),
          TEST(test_lane_hands_on_to_the_back), TEST(test_max_queued),
          TEST(test_deadline_while_all_busy), TEST(test_many_deadlines),
          TEST(test_started_task_runs_past_deadline), TEST(test_cancel_lane_task),
          TEST(test_cancel_after_expiry), TEST(test_close_cancels_lane_and_deadline_tasks),
          TEST(test_two_bridges_share_a_lane), TEST(test_lane_free_rules), TEST(test_exact_books),
          TEST(test_stats_ages), TEST(test_context_propagation), TEST(test_threaded_ex_plain))
