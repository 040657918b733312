/* A well-behaved program: separate work and a separate generator on the
 * default pool, everything closed before main returns. It must exit with 0
 * and leave no thread behind: under ThreadSanitizer an unjoined thread is
 * reported as a "thread leak" (exit code 66), under valgrind its thread
 * memory is "possibly lost" (see test/CMakeLists.txt). */
#include <stdio.h>
#include <stdlib.h>

#include <uvthreads.h>

static int work_ran, after_status = 1, items, iter_final = 1, closed;

static void work(uvt_work_t* req) {
  (void)req;
  work_ran = 1;
}

static void after(uvt_work_t* req, int status) {
  (void)req;
  after_status = status;
}

static int gen(uvt_iter_t* it) {
  int i;
  for (i = 1; i <= 3; i++)
    if (uvt_yield(it, (void*)(intptr_t)i) != 0) return UV_ECANCELED;
  return 0;
}

static void iter_cb(uvt_iter_t* it, int status, void* item) {
  (void)it;
  if (item != NULL)
    items++;
  else
    iter_final = status;
}

static void on_closed(uvt_bridge_t* bridge) {
  (void)bridge;
  closed = 1;
}

#define CHECK(cond)                                             \
  do {                                                          \
    if (!(cond)) {                                              \
      fprintf(stderr, "exit_clean: %s failed (line %d)\n", #cond, __LINE__); \
      return 1;                                                 \
    }                                                           \
  } while (0)

int main(void) {
  uv_loop_t loop;
  uvt_bridge_t bridge;
  uvt_work_t req;
  uvt_iter_t it;
  CHECK(uv_loop_init(&loop) == 0);
  CHECK(uvt_bridge_init(&loop, &bridge, NULL) == 0); /* the default pool */
  CHECK(uvt_threaded_separate(&bridge, &req, work, after) == 0);
  CHECK(uvt_threaded_iterable_separate(&bridge, &it, 2, gen, iter_cb) == 0);
  CHECK(uv_run(&loop, UV_RUN_DEFAULT) == 0);
  CHECK(work_ran == 1 && after_status == 0);
  CHECK(items == 3 && iter_final == UV_EOF);
  CHECK(uvt_bridge_close(&bridge, on_closed) == 0);
  CHECK(uv_run(&loop, UV_RUN_DEFAULT) == 0);
  CHECK(closed == 1);
  CHECK(uv_loop_close(&loop) == 0);
  /* Every completion was delivered and the bridge is closed: no library
   * thread has anything left to do. The pause only lets a thread that the
   * library failed to join finish, so that the leak check reports it as
   * leaked rather than as still running (a fixed library joined it). */
  uv_sleep(100);
  return 0;
}
