/* Fault injection: allocation failure and thread-creation failure.
 *
 * This executable interposes the malloc family and pthread_create (the
 * library resolves to these, and libuv's allocator is replaced with them
 * through uv_replace_allocator), and arms a failure only around the
 * call under test. Every call must fail with UV_ENOMEM or UV_EAGAIN (its
 * callback never runs) or degrade gracefully, lose nothing, and work again
 * once the fault is gone. Not built under sanitizers, which own malloc and
 * pthread_create. */
#define _GNU_SOURCE /* RTLD_NEXT */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>

#include "test.h"

extern void* __libc_malloc(size_t size);
extern void* __libc_calloc(size_t n, size_t size);
extern void* __libc_realloc(void* ptr, size_t size);
extern void* __libc_memalign(size_t align, size_t size);

static int alloc_budget = -1; /* atomic: allocations left before failing; -1 = no fault */
static long alloc_failures;   /* atomic */
static int threads_fail;      /* atomic */
static long thread_failures;  /* atomic */

/* A failing allocation sets errno like the real one (glibc relies on it). */
static int alloc_fails(void) {
  int left = __atomic_load_n(&alloc_budget, __ATOMIC_RELAXED);
  while (left >= 0) {
    if (left == 0) {
      __atomic_add_fetch(&alloc_failures, 1, __ATOMIC_RELAXED);
      errno = ENOMEM;
      return 1;
    }
    if (__atomic_compare_exchange_n(&alloc_budget, &left, left - 1, 0, __ATOMIC_RELAXED,
                                    __ATOMIC_RELAXED))
      return 0;
  }
  return 0;
}

void* malloc(size_t size) { return alloc_fails() ? NULL : __libc_malloc(size); }
void* calloc(size_t n, size_t size) { return alloc_fails() ? NULL : __libc_calloc(n, size); }
void* realloc(void* ptr, size_t size) { return alloc_fails() ? NULL : __libc_realloc(ptr, size); }
void* aligned_alloc(size_t align, size_t size) {
  return alloc_fails() ? NULL : __libc_memalign(align, size);
}
int posix_memalign(void** out, size_t align, size_t size) {
  if (alloc_fails()) return ENOMEM;
  *out = __libc_memalign(align, size);
  return *out ? 0 : ENOMEM;
}

typedef int (*pthread_create_fn)(pthread_t*, const pthread_attr_t*, void* (*)(void*), void*);
int pthread_create(pthread_t* t, const pthread_attr_t* attr, void* (*fn)(void*), void* arg) {
  static pthread_create_fn real;
  if (real == NULL) real = (pthread_create_fn)dlsym(RTLD_NEXT, "pthread_create");
  if (__atomic_load_n(&threads_fail, __ATOMIC_RELAXED)) {
    __atomic_add_fetch(&thread_failures, 1, __ATOMIC_RELAXED);
    return EAGAIN;
  }
  return real(t, attr, fn, arg);
}

/* Fail the allocation after n more succeed. */
static void fail_allocs_after(int n) { __atomic_store_n(&alloc_budget, n, __ATOMIC_RELAXED); }
static void allocs_ok(void) { __atomic_store_n(&alloc_budget, -1, __ATOMIC_RELAXED); }
static void fail_threads(int on) { __atomic_store_n(&threads_fail, on, __ATOMIC_RELAXED); }

/* ---- helpers ---------------------------------------------------------- */

typedef struct {
  uvt_work_t req;
  int runs, afters, status;
} job_t;

static void job_work(uvt_work_t* req) { ((job_t*)req)->runs++; }
static void job_after(uvt_work_t* req, int status) {
  job_t* j = (job_t*)req;
  j->afters++;
  j->status = status;
}

static int chan_items, chan_finals;
static void chan_cb(uvt_chan_t* ch, int status, void* item) {
  (void)ch;
  (void)status;
  if (item != NULL) chan_items++;
  else chan_finals++;
}

static int gen_runs, iter_items, iter_finals;
static int gen_three(uvt_iter_t* it) {
  gen_runs++;
  uvt_yield(it, &gen_runs);
  uvt_yield(it, &gen_runs);
  uvt_yield(it, &gen_runs);
  return 0;
}
static void iter_cb(uvt_iter_t* it, int status, void* item) {
  (void)it;
  (void)status;
  if (item != NULL) iter_items++;
  else iter_finals++;
}

static int calls_run;
static void count_call(void* arg) {
  (void)arg;
  calls_run++;
}

static void resolve_7(uvt_await_t* aw, void* arg) {
  (void)arg;
  uvt_await_resolve(aw, 7);
}
typedef struct {
  uvt_bridge_t* b;
  uv_sem_t go;
  int rc;
} await_arg_t;
static void await_done(void* arg) { uvt_bridge_unref(arg); }
static void await_thread(void* arg) {
  await_arg_t* a = arg;
  uv_sem_wait(&a->go); /* the fault, if any, is armed now */
  a->rc = uvt_sync_await(a->b, resolve_7, NULL);
  allocs_ok();
  ASSERT_OK(uvt_call(a->b, await_done, a->b));
}
/* One uvt_sync_await from a thread that exists before any fault is armed. */
static int await_once(uv_loop_t* loop, uvt_bridge_t* b, int fail_allocs) {
  await_arg_t a;
  uv_thread_t t;
  a.b = b;
  a.rc = 1;
  ASSERT_OK(uv_sem_init(&a.go, 0));
  uvt_bridge_ref(b); /* until the thread's last call */
  ASSERT_OK(uv_thread_create(&t, await_thread, &a));
  if (fail_allocs) fail_allocs_after(0);
  uv_sem_post(&a.go);
  ASSERT_OK(uv_run(loop, UV_RUN_DEFAULT));
  ASSERT_OK(uv_thread_join(&t));
  uv_sem_destroy(&a.go);
  return a.rc;
}

/* ---- allocation failures ---------------------------------------------- */

static void test_alloc_failures(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = NULL;
  uvt_pool_options_t o;
  uvt_chan_t ch;
  uvt_iter_t it;
  job_t j;
  int n, rc;

  /* uvt_pool_new: every allocation it makes can fail, in turn. */
  uvt_pool_options_init(&o);
  o.min_threads = 2;
  for (n = 0;; n++) {
    fail_allocs_after(n);
    rc = uvt_pool_new(&pool, &o);
    allocs_ok();
    if (rc == 0) break;
    /* Our allocations fail with UV_ENOMEM; one inside pthread_create makes
     * the thread start fail (UV_EAGAIN). */
    ASSERT(rc == UV_ENOMEM || rc == UV_EAGAIN);
    ASSERT_LT(n, 100);
  }
  ASSERT_GT(n, 0);

  ASSERT_OK(uv_loop_init(&loop));
  fail_allocs_after(0);
  ASSERT_ERR(uvt_bridge_init(&loop, &b, pool), UV_ENOMEM);
  allocs_ok();
  ASSERT_ERR(uvt_bridge_close(&b, NULL), UV_EINVAL); /* was never initialised */
  ASSERT_OK(uvt_bridge_init(&loop, &b, pool));

  /* Submitting work allocates nothing: it works with every allocation failing. */
  memset(&j, 0, sizeof(j));
  fail_allocs_after(0);
  ASSERT_OK(uvt_threaded(&b, &j.req, job_work, job_after));
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  allocs_ok();
  ASSERT_EQ(j.afters, 1);
  ASSERT_EQ(j.status, 0);

  /* Channels and iterators allocate their buffer at open. */
  fail_allocs_after(0);
  ASSERT_ERR(uvt_chan_init(&b, &ch, 4, chan_cb), UV_ENOMEM);
  ASSERT_ERR(uvt_threaded_iterable(&b, &it, 4, gen_three, iter_cb), UV_ENOMEM);
  ASSERT_ERR(uvt_call(&b, count_call, NULL), UV_ENOMEM);
  allocs_ok();
  ASSERT_EQ(chan_finals + iter_finals + gen_runs + calls_run, 0); /* nothing ran */

  /* The first sync_await on a bridge allocates its record. */
  ASSERT_EQ(await_once(&loop, &b, 1), UV_ENOMEM);
  ASSERT_EQ(await_once(&loop, &b, 0), 7);

  /* All of it works once the fault is gone. */
  ASSERT_OK(uvt_chan_init(&b, &ch, 4, chan_cb));
  ASSERT_OK(uvt_chan_try_put(&ch, &ch));
  ASSERT_OK(uvt_chan_close(&ch));
  ASSERT_OK(uvt_threaded_iterable(&b, &it, 4, gen_three, iter_cb));
  ASSERT_OK(uvt_call(&b, count_call, NULL));
  uvt_bridge_ref(&b);
  while (chan_finals + iter_finals + calls_run < 3) ASSERT_GE(uv_run(&loop, UV_RUN_ONCE), 0);
  uvt_bridge_unref(&b);
  ASSERT_EQ(chan_items, 1);
  ASSERT_EQ(iter_items, 3);
  test_close_all(&loop, &b);
  ASSERT_OK(uvt_pool_free(pool));
  printf("allocation failures injected: %ld\n", alloc_failures);
}

/* ---- thread-creation failures ------------------------------------------ */

static void test_thread_failures(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = NULL;
  uvt_pool_options_t o;
  uvt_pool_stats_t st;
  uvt_iter_t it;
  job_t j[10];
  int i;

  iter_finals = gen_runs = 0;
  uvt_pool_options_init(&o);
  o.min_threads = 2;
  fail_threads(1);
  ASSERT_ERR(uvt_pool_new(&pool, &o), UV_EAGAIN);

  /* A pool with no thread that cannot start one refuses work. */
  o.min_threads = 0;
  o.max_threads = 4;
  ASSERT_OK(uvt_pool_new(&pool, &o));
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uvt_bridge_init(&loop, &b, pool));
  memset(j, 0, sizeof(j));
  ASSERT_ERR(uvt_threaded(&b, &j[0].req, job_work, job_after), UV_EAGAIN);
  ASSERT_ERR(uvt_threaded_separate(&b, &j[0].req, job_work, job_after), UV_EAGAIN);
  ASSERT_ERR(uvt_threaded_iterable(&b, &it, 2, gen_three, iter_cb), UV_EAGAIN);
  ASSERT_ERR(uvt_threaded_iterable_separate(&b, &it, 2, gen_three, iter_cb), UV_EAGAIN);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ(j[0].afters, 0);
  ASSERT_EQ(iter_finals + gen_runs, 0); /* nothing started */
  ASSERT_OK(uvt_pool_stats(pool, &st));
  ASSERT_EQ(st.submitted, 0); /* the withdrawn tasks do not count */

  /* With one thread running and no more to be had, the pool degrades: all
   * the work still completes, on the thread it has. */
  fail_threads(0);
  ASSERT_OK(uvt_threaded(&b, &j[0].req, job_work, job_after));
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  fail_threads(1);
  for (i = 0; i < 10; i++) ASSERT_OK(uvt_threaded(&b, &j[i].req, job_work, job_after));
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  for (i = 0; i < 10; i++) {
    ASSERT_EQ(j[i].status, 0);
    ASSERT_EQ(j[i].runs, i == 0 ? 2 : 1);
  }
  ASSERT_OK(uvt_pool_stats(pool, &st));
  ASSERT_EQ(st.threads, 1);

  /* Once threads can be had again, iterators start and the pool grows. */
  fail_threads(0);
  ASSERT_OK(uvt_threaded_iterable_separate(&b, &it, 2, gen_three, iter_cb));
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ(iter_finals, 1);
  ASSERT_EQ(gen_runs, 1);
  test_close_all(&loop, &b);
  ASSERT_OK(uvt_pool_free(pool));
  printf("thread-creation failures injected: %ld\n", thread_failures);
}

/* libuv's own allocations go through the same failing functions. */
__attribute__((constructor)) static void install_libuv_allocator(void) {
  if (uv_replace_allocator(malloc, realloc, calloc, free) != 0) abort();
}

TEST_MAIN(TEST(test_alloc_failures), TEST(test_thread_failures))
