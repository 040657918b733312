/* uvt_threaded_iterable[_separate]: a blocking generator run as a pool task
 * (or on its own thread) that feeds a stream (stream.c).
 *
 * The end of the generator is reported from the task's done hook, which is
 * the pool's last touch of the iterator: the final callback, which may free
 * the iterator, waits for it (the stream joins its producer). */
#include "context.h"
#include "stream.h"

/* The iterator whose generator runs on this thread: uvt_yield accepts only it. */
static UVT__THREAD_LOCAL uvt_iter_t* uvt__tls_iter;

static void uvt__iter_deliver(uvt__stream_t* stream, int status, void* item) {
  uvt_iter_t* it = uvt__container_of(stream, uvt_iter_t, uvt__stream);
  void* prev = uvt__context_swap(stream->ctx);
  it->uvt__cb(it, status, item);
  uvt__context_swap(prev);
}

/* Runs the generator unless the iterator was stopped before it started. */
static int uvt__iter_run_gen(uvt_iter_t* it) {
  uvt_iter_t* prev_it;
  void* prev_ctx;
  int rc;
  if (!uvt__stream_producer_may_start(&it->uvt__stream)) return UV_ECANCELED;
  prev_ctx = uvt__context_swap(it->uvt__stream.ctx);
  prev_it = uvt__tls_iter;
  uvt__tls_iter = it;
  rc = it->uvt__gen(it);
  uvt__tls_iter = prev_it;
  uvt__context_swap(prev_ctx);
  return rc;
}

static int uvt__iter_task_work(uvt__task_t* task) {
  uvt_iter_t* it = uvt__container_of(task, uvt_iter_t, uvt__task);
  /* Read by the loop only after the done hook reports it under the lock. */
  it->uvt__stream.status = uvt__iter_run_gen(it);
  return 0; /* a generator has no queue deadline: it ran */
}

static void uvt__iter_task_done(uvt__task_t* task) {
  uvt_iter_t* it = uvt__container_of(task, uvt_iter_t, uvt__task);
  uvt__stream_producer_done(&it->uvt__stream, it->uvt__stream.status);
}

static void uvt__iter_separate_main(void* arg) {
  uvt_iter_t* it = arg;
  uvt__reap_t reap;
  int rc;
  uvt__pool_thread_started(it->bridge->pool);
  uvt__thread_set_name("uvt-generator");
  rc = uvt__iter_run_gen(it);
  /* Register the exit before the end is reported: after it the bridge and
   * then the pool may go away. */
  reap = uvt__pool_thread_exiting(it->bridge->pool);
  uvt__stream_producer_done(&it->uvt__stream, rc);
  uvt__reap(reap);
}

/* A generator still waiting in the pool queue will never run. Loop thread. */
static void uvt__iter_withdraw(uvt_iter_t* it) {
  if (!it->uvt__separate && uvt__pool_cancel(it->bridge->pool, &it->uvt__task) == 0)
    uvt__stream_producer_done(&it->uvt__stream, UV_ECANCELED);
}

/* The stream's closing hook: the bridge closes. */
static void uvt__iter_bridge_closing(uvt__stream_t* stream) {
  uvt__iter_withdraw(uvt__container_of(stream, uvt_iter_t, uvt__stream));
}

static int uvt__iter_start(uvt_bridge_t* bridge, uvt_iter_t* it, size_t max_size, uvt_gen_cb gen,
                           uvt_iter_cb cb, int separate) {
  uvt__bridge_impl_t* impl = uvt__bridge_get(bridge);
  int rc;
  if (impl == NULL || it == NULL || gen == NULL || cb == NULL || max_size == 0) return UV_EINVAL;
  if ((rc = uvt__bridge_check_submit(impl)) != 0) return rc;
  if (uvt__stream_is_open(&it->uvt__stream)) return UV_EBUSY;
  it->bridge = bridge;
  it->uvt__gen = gen;
  it->uvt__cb = cb;
  it->uvt__separate = separate;
  it->uvt__task.work = uvt__iter_task_work;
  it->uvt__task.done = uvt__iter_task_done;
  it->uvt__task.where = 0;
  /* Open the stream first: the generator may yield at once. */
  rc = uvt__stream_open(impl, &it->uvt__stream, max_size, uvt__iter_deliver,
                        uvt__iter_bridge_closing, 1);
  if (rc != 0) return rc;
  if (separate)
    rc = uvt__pool_spawn(bridge->pool, uvt__iter_separate_main, it);
  else
    rc = uvt__pool_submit(bridge->pool, &it->uvt__task, &impl->producer);
  if (rc != 0) uvt__stream_discard(&it->uvt__stream);
  return rc;
}

int uvt_threaded_iterable(uvt_bridge_t* bridge, uvt_iter_t* it, size_t max_size, uvt_gen_cb gen,
                          uvt_iter_cb cb) {
  return uvt__iter_start(bridge, it, max_size, gen, cb, 0);
}

int uvt_threaded_iterable_separate(uvt_bridge_t* bridge, uvt_iter_t* it, size_t max_size,
                                   uvt_gen_cb gen, uvt_iter_cb cb) {
  return uvt__iter_start(bridge, it, max_size, gen, cb, 1);
}

int uvt_yield(uvt_iter_t* it, void* item) {
  if (it == NULL || uvt__tls_iter != it) return UV_EINVAL;
  return uvt__stream_put(&it->uvt__stream, item, UINT64_MAX, UV_EAGAIN, 0);
}

/* Whether it is open and this is its loop thread. */
static int uvt__iter_loop_side(uvt_iter_t* it) {
  return it != NULL && uvt__stream_on_loop_side(&it->uvt__stream);
}

int uvt_iter_pause(uvt_iter_t* it) {
  if (!uvt__iter_loop_side(it)) return UV_EINVAL;
  return uvt__stream_pause(&it->uvt__stream, 1);
}

int uvt_iter_resume(uvt_iter_t* it) {
  if (!uvt__iter_loop_side(it)) return UV_EINVAL;
  return uvt__stream_pause(&it->uvt__stream, 0);
}

int uvt_iter_stop(uvt_iter_t* it, uvt_drop_cb drop) {
  if (!uvt__iter_loop_side(it)) return UV_EINVAL;
  if (uvt__stream_stop(&it->uvt__stream, drop) != 0) return UV_EINVAL;
  uvt__iter_withdraw(it);
  return 0;
}

int uvt_iter_close(uvt_iter_t* it, uvt_drop_cb drop) { return uvt_iter_stop(it, drop); }

void uvt_iter_ref(uvt_iter_t* it) {
  if (it != NULL) uvt__stream_set_ref(&it->uvt__stream, 1);
}

void uvt_iter_unref(uvt_iter_t* it) {
  if (it != NULL) uvt__stream_set_ref(&it->uvt__stream, 0);
}
