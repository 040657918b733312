/* No allocation per task, item or message on the hot paths: malloc and
 * friends are interposed (the library and libuv resolve them to these), and
 * libuv's own allocator is replaced with a counting one as well. Not built
 * under sanitizers, which own malloc. */
#include "test.h"

extern void* __libc_malloc(size_t size);
extern void* __libc_calloc(size_t n, size_t size);
extern void* __libc_realloc(void* ptr, size_t size);
extern void* __libc_memalign(size_t align, size_t size);
extern void __libc_free(void* ptr);

static long allocations; /* atomic: any thread may allocate */

void* malloc(size_t size) {
  __atomic_add_fetch(&allocations, 1, __ATOMIC_RELAXED);
  return __libc_malloc(size);
}
void* calloc(size_t n, size_t size) {
  __atomic_add_fetch(&allocations, 1, __ATOMIC_RELAXED);
  return __libc_calloc(n, size);
}
void* realloc(void* ptr, size_t size) {
  __atomic_add_fetch(&allocations, 1, __ATOMIC_RELAXED);
  return __libc_realloc(ptr, size);
}
void* aligned_alloc(size_t align, size_t size) {
  __atomic_add_fetch(&allocations, 1, __ATOMIC_RELAXED);
  return __libc_memalign(align, size);
}
int posix_memalign(void** out, size_t align, size_t size) {
  __atomic_add_fetch(&allocations, 1, __ATOMIC_RELAXED);
  *out = __libc_memalign(align, size);
  return *out ? 0 : 12 /* ENOMEM */;
}
void free(void* ptr) { __libc_free(ptr); }

static long uv_allocations;
static void* uv_counting_malloc(size_t size) {
  __atomic_add_fetch(&uv_allocations, 1, __ATOMIC_RELAXED);
  return __libc_malloc(size);
}
static void* uv_counting_realloc(void* ptr, size_t size) {
  __atomic_add_fetch(&uv_allocations, 1, __ATOMIC_RELAXED);
  return __libc_realloc(ptr, size);
}
static void* uv_counting_calloc(size_t n, size_t size) {
  __atomic_add_fetch(&uv_allocations, 1, __ATOMIC_RELAXED);
  return __libc_calloc(n, size);
}

static long count(void) {
  return __atomic_load_n(&allocations, __ATOMIC_RELAXED) +
         __atomic_load_n(&uv_allocations, __ATOMIC_RELAXED);
}

#define ROUNDS 20000
#define IN_FLIGHT 64
static struct {
  uvt_work_t reqs[IN_FLIGHT];
  long left, done;
  uvt_bridge_t* b;
} run;

static void noop_work(uvt_work_t* req) { (void)req; }
static void again(uvt_work_t* req, int status) {
  ASSERT_EQ(status, 0);
  run.done++;
  if (run.left > 0) {
    run.left--;
    ASSERT_OK(uvt_threaded(run.b, req, noop_work, again));
  }
}

static long threaded_round(uv_loop_t* loop, uvt_bridge_t* b, long n) {
  long before;
  int i;
  run.b = b;
  run.done = 0;
  run.left = n - IN_FLIGHT;
  before = count();
  for (i = 0; i < IN_FLIGHT; i++) ASSERT_OK(uvt_threaded(b, &run.reqs[i], noop_work, again));
  ASSERT_OK(uv_run(loop, UV_RUN_DEFAULT));
  ASSERT_EQ(run.done, n);
  return count() - before;
}

static void test_threaded_allocates_nothing(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(2, 2); /* threads start here, not during the run */
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uvt_bridge_init(&loop, &b, pool));
  threaded_round(&loop, &b, 1000); /* warm up */
  ASSERT_EQ(threaded_round(&loop, &b, ROUNDS), 0);
  test_close_all(&loop, &b);
  ASSERT_OK(uvt_pool_free(pool));
}

/* Lane submissions: a serial lane (most tasks wait in it and are handed on
 * by workers), a capped one, queue deadlines (the bridge's heap and timer),
 * and cancels of waiting tasks. */
static struct {
  uvt_lane_t* lanes[2];
  long submitted, cancelled;
} lanes_run;

static void lane_again(uvt_work_t* req, int status);
static void lane_submit(uvt_work_t* req) {
  uvt_work_options_t o;
  long n = lanes_run.submitted++;
  o.lane = lanes_run.lanes[n % 2];
  o.queue_timeout_ms = n % 3 == 0 ? 0 : 60000;
  ASSERT_OK(uvt_threaded_ex(run.b, req, &o, noop_work, lane_again));
  if (n % 16 == 0 && uvt_cancel(req) == 0) lanes_run.cancelled++;
}
static void lane_again(uvt_work_t* req, int status) {
  ASSERT(status == 0 || status == UV_ECANCELED);
  run.done++;
  if (run.left > 0) {
    run.left--;
    lane_submit(req);
  }
}

static long lane_round(uv_loop_t* loop, uvt_bridge_t* b, long n) {
  long before;
  int i;
  run.b = b;
  run.done = 0;
  run.left = n - IN_FLIGHT;
  before = count();
  for (i = 0; i < IN_FLIGHT; i++) lane_submit(&run.reqs[i]);
  ASSERT_OK(uv_run(loop, UV_RUN_DEFAULT));
  ASSERT_EQ(run.done, n);
  return count() - before;
}

static void test_lanes_allocate_nothing(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(2, 2);
  uvt_lane_options_t o;
  uvt_lane_options_init(&o);
  ASSERT_OK(uvt_lane_new(pool, &o, &lanes_run.lanes[0]));
  o.max_running = 2;
  ASSERT_OK(uvt_lane_new(pool, &o, &lanes_run.lanes[1]));
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uvt_bridge_init(&loop, &b, pool));
  lane_round(&loop, &b, 1000); /* warm up */
  ASSERT_EQ(lane_round(&loop, &b, ROUNDS), 0);
  ASSERT_GT(lanes_run.cancelled, 0);
  test_close_all(&loop, &b);
  ASSERT_OK(uvt_lane_free(lanes_run.lanes[0]));
  ASSERT_OK(uvt_lane_free(lanes_run.lanes[1]));
  ASSERT_OK(uvt_pool_free(pool));
}

static long items;
static void count_item(uvt_chan_t* ch, int status, void* item) {
  (void)ch;
  (void)item;
  if (status == 0) items++;
}
static void put_many(void* arg) {
  uvt_chan_t* ch = arg;
  long i;
  for (i = 1; i <= ROUNDS; i++) ASSERT_OK(uvt_chan_put(ch, (void*)i));
  ASSERT_OK(uvt_chan_close(ch));
}

/* The channel's buffer is allocated by uvt_chan_init; items cost nothing. */
static void test_channel_allocates_nothing_per_item(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_chan_t ch;
  uvt_pool_t* pool = test_pool(0, 1);
  uv_thread_t t;
  long before;
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uvt_bridge_init(&loop, &b, pool));
  ASSERT_OK(uvt_chan_init(&b, &ch, 16, count_item));
  ASSERT_OK(uv_thread_create(&t, put_many, &ch)); /* creating a thread allocates */
  before = count();
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ(count() - before, 0);
  ASSERT_OK(uv_thread_join(&t));
  ASSERT_EQ(items, ROUNDS);
  test_close_all(&loop, &b);
  ASSERT_OK(uvt_pool_free(pool));
}

/* uvt_call's records come from the calling thread's cache: once it holds
 * as many as can be out at once, calls allocate nothing. The thread keeps
 * at most IN_FLIGHT calls in flight (it waits for each batch's delivery),
 * but the loop hands a run of records back after the run's last callback
 * (call.c), the one that posts `delivered`, so the next batch can find the
 * whole last batch still out: 2 * IN_FLIGHT records. The warm-up makes
 * that many and one more exist, with a first call that holds the loop
 * until the thread has made all the others (no record can come back in
 * between, whatever the scheduling), then one more call: the loop hands
 * the warm-up's run back before it takes that call from the inbox. */
#define CALLS (IN_FLIGHT * 16)
static struct {
  uvt_bridge_t* b;
  uv_sem_t delivered; /* posted after each batch's last call */
  uv_sem_t all_made; /* the warm-up's first call waits for it */
  long done;
  long allocated; /* during the measured round, both threads */
} calls;
static void counted_call(void* arg) {
  (void)arg;
  if (++calls.done % IN_FLIGHT == 0) uv_sem_post(&calls.delivered);
}
static void holding_call(void* arg) {
  (void)arg;
  uv_sem_wait(&calls.all_made);
}
static void settle_call(void* arg) {
  (void)arg;
  uv_sem_post(&calls.delivered);
}
static void last_call(void* arg) { uvt_bridge_unref(arg); }
static void call_round(void) {
  long i;
  for (i = 1; i <= CALLS; i++) {
    ASSERT_OK(uvt_call(calls.b, counted_call, NULL));
    if (i % IN_FLIGHT == 0) uv_sem_wait(&calls.delivered);
  }
}
static void caller(void* arg) {
  long before, i;
  (void)arg;
  ASSERT_OK(uvt_call(calls.b, holding_call, NULL)); /* warm up: 2 * IN_FLIGHT + 1 records */
  for (i = 0; i < 2 * IN_FLIGHT; i++) ASSERT_OK(uvt_call(calls.b, counted_call, NULL));
  uv_sem_post(&calls.all_made);
  uv_sem_wait(&calls.delivered);
  uv_sem_wait(&calls.delivered);
  ASSERT_OK(uvt_call(calls.b, settle_call, NULL));
  uv_sem_wait(&calls.delivered);
  before = count();
  call_round();
  calls.allocated = count() - before;
  ASSERT_OK(uvt_call(calls.b, last_call, calls.b));
}

static void test_call_allocates_nothing(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = test_pool(0, 1);
  uv_thread_t t;
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uvt_bridge_init(&loop, &b, pool));
  ASSERT_OK(uv_sem_init(&calls.delivered, 0));
  ASSERT_OK(uv_sem_init(&calls.all_made, 0));
  calls.b = &b;
  uvt_bridge_ref(&b); /* the thread calls in while the loop has nothing else */
  ASSERT_OK(uv_thread_create(&t, caller, NULL));
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_OK(uv_thread_join(&t));
  ASSERT_EQ(calls.done, 2 * IN_FLIGHT + CALLS);
  ASSERT_EQ(calls.allocated, 0);
  uv_sem_destroy(&calls.delivered);
  uv_sem_destroy(&calls.all_made);
  test_close_all(&loop, &b);
  ASSERT_OK(uvt_pool_free(pool));
}

int main(void) {
  ASSERT_OK(uv_replace_allocator(uv_counting_malloc, uv_counting_realloc, uv_counting_calloc,
                                 __libc_free));
  /* The interposer sees the library's allocations at all. */
  {
    uvt_pool_t* pool;
    long before = count();
    ASSERT_OK(uvt_pool_new(&pool, NULL));
    ASSERT_GT(count() - before, 0);
    ASSERT_OK(uvt_pool_free(pool));
  }
  printf("[ RUN  ] test_threaded_allocates_nothing\n");
  test_threaded_allocates_nothing();
  printf("[  OK  ] test_threaded_allocates_nothing\n");
  printf("[ RUN  ] test_lanes_allocate_nothing\n");
  test_lanes_allocate_nothing();
  printf("[  OK  ] test_lanes_allocate_nothing\n");
  printf("[ RUN  ] test_channel_allocates_nothing_per_item\n");
  test_channel_allocates_nothing_per_item();
  printf("[  OK  ] test_channel_allocates_nothing_per_item\n");
  printf("[ RUN  ] test_call_allocates_nothing\n");
  test_call_allocates_nothing();
  printf("[  OK  ] test_call_allocates_nothing\n");
  return 0;
}
