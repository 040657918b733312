/* uvt_threaded, uvt_threaded_separate, uvt_threaded_ex, uvt_cancel.
 *
 * A request lives in the caller's struct: the pool task, the bridge message
 * and the bridge's in-flight list node are all embedded, so a submission
 * allocates nothing. Its tag (derived from its address) marks it in flight
 * from submission until just before its after callback.
 *
 * A request with a lane or a queue deadline (uvt_threaded_ex) goes through
 * lane.c with the link embedded in it, and a deadline is a node of its
 * bridge's deadline heap whose expire hook withdraws it. Its hooks are
 * their own (uvt__work_laned_*), so a plain request's path has no branch
 * for them. */
#include "bridge.h"
#include "context.h"
#include "lane.h"

/* How a request runs (req->uvt__kind). */
enum { UVT__WORK_POOL = 0, UVT__WORK_SEPARATE = 1, UVT__WORK_LANED = 2 };

/* Relaxed: the tag is written on the loop thread before the task is
 * published, so the worker running it reads it ordered by the pool's
 * handoff; a read from anywhere else only tells live from not. */
static int uvt__work_in_flight(const uvt_work_t* req) {
  (void)UVT__TAG_READ(req->uvt__tag);
  return uvt__load_relaxed(&req->uvt__tag) == UVT__TAG(req, UVT__KIND_WORK);
}

/* The cancel flag is a tag too, so garbage in a never-submitted request
 * never reads as cancelled. Relaxed: a hint the work function polls; it
 * publishes no data. */
static void uvt__work_flag_cancel(uvt_work_t* req) {
  uvt__store_relaxed(&req->uvt__cancel, UVT__TAG(req, UVT__KIND_WORK_CANCELLED));
}

static unsigned uvt__work_deliver(uvt__msg_t* msg, unsigned budget) {
  uvt_work_t* req = uvt__container_of(msg, uvt_work_t, uvt__msg);
  (void)budget;
  uvt__bridge_untrack(req->bridge->uvt__impl, &req->uvt__inflight);
  uvt__store_relaxed(&req->uvt__tag, (uintptr_t)0); /* reusable from inside after onward */
  if (req->uvt__after != NULL) {
    void* prev;
    uvt__bridge_before_callback(req->bridge->uvt__impl);
    prev = uvt__context_swap(req->uvt__ctx);
    req->uvt__after(req, req->uvt__status);
    uvt__context_swap(prev);
  }
  return 1;
}

static void uvt__work_call(uvt_work_t* req) {
  void* prev = uvt__context_swap(req->uvt__ctx);
  req->uvt__work(req);
  uvt__context_swap(prev);
}

static int uvt__work_task_run(uvt__task_t* task) {
  uvt__work_call(uvt__container_of(task, uvt_work_t, uvt__task));
  return 0;
}

static void uvt__work_task_done(uvt__task_t* task) {
  uvt_work_t* req = uvt__container_of(task, uvt_work_t, uvt__task);
  uvt__bridge_post(req->bridge->uvt__impl, &req->uvt__msg);
}

/* A request through lane.c: the lane (or the deadline) decides whether it
 * runs, and its end hands on the lane's next task. */
static int uvt__work_laned_run(uvt__task_t* task) {
  uvt_work_t* req = uvt__container_of(task, uvt_work_t, uvt__task);
  int rc = uvt__lane_start(&req->uvt__link);
  if (rc == 0) uvt__work_call(req);
  return rc;
}

static void uvt__work_laned_done(uvt__task_t* task) {
  uvt_work_t* req = uvt__container_of(task, uvt_work_t, uvt__task);
  uvt__lane_finish(&req->uvt__link);
  uvt__bridge_post(req->bridge->uvt__impl, &req->uvt__msg);
}

static unsigned uvt__work_laned_deliver(uvt__msg_t* msg, unsigned budget) {
  uvt_work_t* req = uvt__container_of(msg, uvt_work_t, uvt__msg);
  uvt__bridge_timed_stop(req->bridge->uvt__impl, &req->uvt__timed);
  req->uvt__status = uvt__lane_status(&req->uvt__link);
  uvt__lane_delivered(&req->uvt__link); /* after may free the lane from here on */
  return uvt__work_deliver(msg, budget);
}

/* Withdraws a request through lane.c; 0 if it will not run (its after
 * comes without waiting for its lane or a thread), else UV_EBUSY.
 * from_worker: see uvt__lane_withdraw. */
static int uvt__work_laned_withdraw(uvt__bridge_impl_t* impl, uvt_work_t* req, int from_worker) {
  int rc = uvt__lane_withdraw(req->bridge->pool, &req->uvt__link, from_worker);
  if (rc == UV_ECANCELED || rc == UV_ETIMEDOUT) {
    uvt__bridge_post_local(impl, &req->uvt__msg);
    return 0;
  }
  return rc == UV_EALREADY ? 0 : UV_EBUSY;
}

/* The deadline's hook: the request has not started in time. */
static void uvt__work_laned_expire(uvt__timed_t* timed) {
  uvt_work_t* req = uvt__container_of(timed, uvt_work_t, uvt__timed);
  uvt__work_laned_withdraw(req->bridge->uvt__impl, req, 1);
}

static void uvt__work_separate_main(void* arg) {
  uvt_work_t* req = arg;
  uvt__bridge_impl_t* impl = req->bridge->uvt__impl;
  uvt__reap_t reap;
  uvt__pool_thread_started(req->bridge->pool);
  uvt__thread_set_name("uvt-separate");
  uvt__work_call(req);
  /* Register the exit first: once the completion is posted, the bridge and
   * then the pool may go away. */
  reap = uvt__pool_thread_exiting(req->bridge->pool);
  uvt__bridge_post(impl, &req->uvt__msg);
  uvt__reap(reap);
}

/* Withdraws req from the pool queue (or its lane) if it has not started:
 * 0 if it will not run (its after is posted, or was), UV_EBUSY if it runs
 * (or a worker holds it and from_worker is 0: uvt__lane_withdraw). Loop
 * thread. */
static int uvt__work_withdraw(uvt__bridge_impl_t* impl, uvt_work_t* req, int from_worker) {
  if (req->uvt__kind == UVT__WORK_LANED) return uvt__work_laned_withdraw(impl, req, from_worker);
  if (req->uvt__status == UV_ECANCELED) return 0; /* cancelled before */
  if (req->uvt__kind == UVT__WORK_POOL &&
      uvt__pool_cancel(req->bridge->pool, &req->uvt__task) == 0) {
    req->uvt__status = UV_ECANCELED;
    uvt__work_flag_cancel(req);
    uvt__bridge_post_local(impl, &req->uvt__msg);
    return 0;
  }
  return UV_EBUSY;
}

/* Withdraws req, or flags it cancelled if it runs. A laned request is
 * flagged first: a worker that starts it meanwhile sees the flag. Loop
 * thread. */
static int uvt__work_try_cancel(uvt__bridge_impl_t* impl, uvt_work_t* req) {
  int rc;
  if (req->uvt__kind == UVT__WORK_LANED) uvt__work_flag_cancel(req);
  rc = uvt__work_withdraw(impl, req, 1);
  if (rc != 0) uvt__work_flag_cancel(req);
  return rc;
}

/* The in-flight node's closing hook: the bridge closes (two stages,
 * bridge.h). The first withdraws only what no worker holds; the second
 * is a cancel (uvt_cancel's), once no queued request of the bridge is
 * left to take a thread it frees. */
static void uvt__work_bridge_closing(uvt__inflight_t* node, int stage) {
  uvt_work_t* req = uvt__container_of(node, uvt_work_t, uvt__inflight);
  if (stage == UVT__CLOSE_WITHDRAW)
    (void)uvt__work_withdraw(req->bridge->uvt__impl, req, 0);
  else
    (void)uvt__work_try_cancel(req->bridge->uvt__impl, req);
}

/* The checks every submission makes first: 0 or its error. */
static int uvt__work_check(uvt__bridge_impl_t* impl, uvt_work_t* req, uvt_work_cb work) {
  int rc;
  if (impl == NULL || req == NULL || work == NULL) return UV_EINVAL;
  if ((rc = uvt__bridge_check_submit(impl)) != 0) return rc;
  if (uvt__work_in_flight(req)) return UV_EBUSY;
  return 0;
}

/* Fills req (with the pool's hooks) and marks it in flight: it is so
 * before the task is published, since the work function may ask
 * (uvt_cancel from the worker reads the tag). */
static void uvt__work_prepare(uvt_bridge_t* bridge, uvt_work_t* req, uvt_work_cb work,
                              uvt_after_work_cb after, int kind) {
  req->bridge = bridge;
  req->uvt__work = work;
  req->uvt__after = after;
  req->uvt__ctx = uvt__context_current();
  req->uvt__status = 0;
  uvt__store_relaxed(&req->uvt__cancel, (uintptr_t)0);
  req->uvt__kind = kind;
  req->uvt__msg.deliver = uvt__work_deliver;
  req->uvt__task.work = uvt__work_task_run;
  req->uvt__task.done = uvt__work_task_done;
  req->uvt__task.where = 0;
  req->uvt__inflight.closing = uvt__work_bridge_closing;
  uvt__store_relaxed(&req->uvt__tag, UVT__TAG(req, UVT__KIND_WORK));
}

/* After the submit that returned rc: the request is in flight, or not. */
static int uvt__work_submitted(uvt__bridge_impl_t* impl, uvt_work_t* req, int rc) {
  if (rc != 0) {
    uvt__store_relaxed(&req->uvt__tag, (uintptr_t)0);
    return rc;
  }
  UVT__TEST_POINT("work.submit.published", req); /* a worker may run req already */
  /* The completion is delivered on this thread, after we return, so the
   * bookkeeping below cannot race with it. */
  uvt__bridge_track(impl, &req->uvt__inflight);
  return 0;
}

static int uvt__work_submit(uvt_bridge_t* bridge, uvt_work_t* req, uvt_work_cb work,
                            uvt_after_work_cb after, int kind) {
  uvt__bridge_impl_t* impl = uvt__bridge_get(bridge);
  int rc;
  if ((rc = uvt__work_check(impl, req, work)) != 0) return rc;
  uvt__work_prepare(bridge, req, work, after, kind);
  if (kind == UVT__WORK_SEPARATE)
    rc = uvt__pool_spawn(bridge->pool, uvt__work_separate_main, req);
  else
    rc = uvt__pool_submit(bridge->pool, &req->uvt__task, &impl->producer);
  return uvt__work_submitted(impl, req, rc);
}

/* Through lane.c: a lane, a queue deadline, or both. */
static int uvt__work_submit_laned(uvt_bridge_t* bridge, uvt_work_t* req,
                                  const uvt_work_options_t* opts, uvt_work_cb work,
                                  uvt_after_work_cb after) {
  uvt__bridge_impl_t* impl = uvt__bridge_get(bridge);
  uint64_t deadline = UINT64_MAX;
  int rc;
  if ((rc = uvt__work_check(impl, req, work)) != 0) return rc;
  if (opts->lane != NULL && uvt__lane_pool(opts->lane) != bridge->pool) return UV_EINVAL;
  if (opts->queue_timeout_ms != 0) deadline = uvt__deadline_after_ms(opts->queue_timeout_ms);
  uvt__work_prepare(bridge, req, work, after, UVT__WORK_LANED);
  req->uvt__msg.deliver = uvt__work_laned_deliver;
  req->uvt__task.work = uvt__work_laned_run;
  req->uvt__task.done = uvt__work_laned_done;
  req->uvt__timed.armed = 0;
  rc = uvt__lane_submit(bridge->pool, opts->lane, &req->uvt__link, &req->uvt__task, deadline,
                        &impl->producer);
  if ((rc = uvt__work_submitted(impl, req, rc)) != 0) return rc;
  /* A timeout too large for the clock means none. */
  if (deadline != UINT64_MAX) {
    req->uvt__timed.node.key = deadline;
    req->uvt__timed.expire = uvt__work_laned_expire;
    uvt__bridge_timed_start(impl, &req->uvt__timed);
  }
  return 0;
}

int uvt_threaded(uvt_bridge_t* bridge, uvt_work_t* req, uvt_work_cb work,
                 uvt_after_work_cb after) {
  return uvt__work_submit(bridge, req, work, after, UVT__WORK_POOL);
}

int uvt_threaded_separate(uvt_bridge_t* bridge, uvt_work_t* req, uvt_work_cb work,
                          uvt_after_work_cb after) {
  return uvt__work_submit(bridge, req, work, after, UVT__WORK_SEPARATE);
}

int uvt_threaded_ex(uvt_bridge_t* bridge, uvt_work_t* req, const uvt_work_options_t* opts,
                    uvt_work_cb work, uvt_after_work_cb after) {
  if (opts == NULL || (opts->lane == NULL && opts->queue_timeout_ms == 0))
    return uvt__work_submit(bridge, req, work, after, UVT__WORK_POOL);
  return uvt__work_submit_laned(bridge, req, opts, work, after);
}

int uvt_cancel(uvt_work_t* req) {
  uvt__bridge_impl_t* impl;
  if (req == NULL || !uvt__work_in_flight(req)) return UV_EINVAL;
  impl = uvt__bridge_get(req->bridge);
  if (impl == NULL || !uvt__bridge_on_loop_thread(impl)) return UV_EINVAL;
  return uvt__work_try_cancel(impl, req);
}

int uvt_is_cancelled(const uvt_work_t* req) {
  if (req == NULL) return 0;
  (void)UVT__TAG_READ(req->uvt__cancel);
  return uvt__load_relaxed(&req->uvt__cancel) == UVT__TAG(req, UVT__KIND_WORK_CANCELLED);
}

