/* Test harness: ASSERT macros that print both operands and abort, a tiny
 * runner, and helpers shared by the test executables. */
#ifndef UVT_TEST_H
#define UVT_TEST_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uvthreads.h>

#define ASSERT_CMP(a, op, b)                                                              \
  do {                                                                                    \
    long long assert_a_ = (long long)(a);                                                 \
    long long assert_b_ = (long long)(b);                                                 \
    if (!(assert_a_ op assert_b_)) {                                                      \
      fprintf(stderr, "%s:%d: ASSERT %s %s %s failed: %lld %s %lld\n", __FILE__, __LINE__, \
              #a, #op, #b, assert_a_, #op, assert_b_);                                     \
      abort();                                                                            \
    }                                                                                     \
  } while (0)

#define ASSERT_EQ(a, b) ASSERT_CMP(a, ==, b)
#define ASSERT_NE(a, b) ASSERT_CMP(a, !=, b)
#define ASSERT_LT(a, b) ASSERT_CMP(a, <, b)
#define ASSERT_LE(a, b) ASSERT_CMP(a, <=, b)
#define ASSERT_GT(a, b) ASSERT_CMP(a, >, b)
#define ASSERT_GE(a, b) ASSERT_CMP(a, >=, b)
#define ASSERT(x) ASSERT_NE(!!(x), 0)
#define ASSERT_PTR_EQ(a, b) ASSERT_EQ((uintptr_t)(a), (uintptr_t)(b))

/* An error code, printed by name. */
#define ASSERT_ERR(expr, want)                                                        \
  do {                                                                                \
    int assert_rc_ = (expr);                                                          \
    int assert_want_ = (want);                                                        \
    if (assert_rc_ != assert_want_) {                                                 \
      fprintf(stderr, "%s:%d: %s returned %d (%s), expected %d (%s)\n", __FILE__,     \
              __LINE__, #expr, assert_rc_, assert_rc_ ? uv_err_name(assert_rc_) : "0", \
              assert_want_, assert_want_ ? uv_err_name(assert_want_) : "0");          \
      abort();                                                                        \
    }                                                                                 \
  } while (0)
#define ASSERT_OK(expr) ASSERT_ERR(expr, 0)

typedef struct {
  const char* name;
  void (*fn)(void);
} test_entry_t;

#define TEST_MAIN(...)                                                   \
  int main(int argc, char** argv) {                                      \
    static const test_entry_t tests[] = {__VA_ARGS__};                   \
    size_t i, ran = 0;                                                   \
    setvbuf(stdout, NULL, _IONBF, 0);                                    \
    for (i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {             \
      if (argc > 1 && strcmp(argv[1], tests[i].name) != 0) continue;     \
      printf("[ RUN  ] %s\n", tests[i].name);                            \
      tests[i].fn();                                                     \
      printf("[  OK  ] %s\n", tests[i].name);                            \
      ran++;                                                             \
    }                                                                    \
    if (ran == 0) {                                                      \
      fprintf(stderr, "no test named %s\n", argc > 1 ? argv[1] : "");    \
      return 1;                                                          \
    }                                                                    \
    return 0;                                                            \
  }
#define TEST(name) {#name, name}

/* ---- Helpers ------------------------------------------------------------ */

static inline uvt_pool_t* test_pool(unsigned min_threads, unsigned max_threads) {
  uvt_pool_options_t opts;
  uvt_pool_t* pool = NULL;
  uvt_pool_options_init(&opts);
  opts.min_threads = min_threads;
  opts.max_threads = max_threads;
  opts.name = "test";
  ASSERT_OK(uvt_pool_new(&pool, &opts));
  return pool;
}

static int test_closed_count;
static inline void test_on_bridge_closed(uvt_bridge_t* b) {
  (void)b;
  test_closed_count++;
}

/* Closes the bridge, runs the loop to the end and checks that nothing is left. */
static inline void test_close_all(uv_loop_t* loop, uvt_bridge_t* bridge) {
  test_closed_count = 0;
  ASSERT_OK(uvt_bridge_close(bridge, test_on_bridge_closed));
  ASSERT_OK(uv_run(loop, UV_RUN_DEFAULT));
  ASSERT_EQ(test_closed_count, 1);
  ASSERT_OK(uv_loop_close(loop));
}

/* A gate worker threads can wait on. */
typedef struct {
  uv_mutex_t mutex;
  uv_cond_t cond;
  int open;
  int waiting;
} test_gate_t;

static inline void gate_init(test_gate_t* g) {
  ASSERT_OK(uv_mutex_init(&g->mutex));
  ASSERT_OK(uv_cond_init(&g->cond));
  g->open = 0;
  g->waiting = 0;
}
static inline void gate_wait(test_gate_t* g) {
  uv_mutex_lock(&g->mutex);
  g->waiting++;
  uv_cond_broadcast(&g->cond);
  while (!g->open) uv_cond_wait(&g->cond, &g->mutex);
  g->waiting--;
  uv_cond_broadcast(&g->cond);
  uv_mutex_unlock(&g->mutex);
}
/* Blocks until n threads wait at the gate. */
static inline void gate_await_waiters(test_gate_t* g, int n) {
  uv_mutex_lock(&g->mutex);
  while (g->waiting < n) uv_cond_wait(&g->cond, &g->mutex);
  uv_mutex_unlock(&g->mutex);
}
static inline void gate_open(test_gate_t* g) {
  uv_mutex_lock(&g->mutex);
  g->open = 1;
  uv_cond_broadcast(&g->cond);
  uv_mutex_unlock(&g->mutex);
}
static inline void gate_close(test_gate_t* g) {
  uv_mutex_lock(&g->mutex);
  g->open = 0;
  uv_mutex_unlock(&g->mutex);
}
static inline void gate_destroy(test_gate_t* g) {
  uv_mutex_lock(&g->mutex);
  while (g->waiting > 0) uv_cond_wait(&g->cond, &g->mutex);
  uv_mutex_unlock(&g->mutex);
  uv_cond_destroy(&g->cond);
  uv_mutex_destroy(&g->mutex);
}

/* Runs fn(arg) on a new thread and joins it. */
static inline void run_on_thread(void (*fn)(void*), void* arg) {
  uv_thread_t t;
  ASSERT_OK(uv_thread_create(&t, fn, arg));
  ASSERT_OK(uv_thread_join(&t));
}

#endif
