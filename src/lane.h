/* Private to uvthreads: lanes (concurrency caps, back-pressure) and queue
 * deadlines, between the pool and the requests that use them.
 *
 * A pool task with a lane, a queue deadline or both carries a link
 * (uvt__lane_link_t, embedded in its request). Its owner submits it here
 * instead of to the pool, calls uvt__lane_start first thing in the task's
 * work hook and uvt__lane_finish in its done hook, withdraws it with
 * uvt__lane_withdraw (a cancel, or its deadline's timer), and reports its
 * delivery with uvt__lane_delivered. Lane.c knows nothing of requests,
 * bridges or loops. */
#ifndef UVT_LANE_H
#define UVT_LANE_H

#include "pool.h"

/* The pool lane belongs to. */
uvt_pool_t* uvt__lane_pool(uvt_lane_t* lane);

/* A submitting thread (a loop thread with its producer). Accepts task,
 * whose link is link, for pool: with lane NULL it goes to the pool now;
 * with a lane it goes to the pool now if fewer than max_running of the
 * lane's tasks are in the pool and none waits, else it waits in the lane.
 * deadline is the uv_hrtime() by which it must start (UINT64_MAX: none).
 * 0; UV_EAGAIN if max_queued tasks wait in the lane already (counted as
 * rejected); or the pool's error. The task is not taken on an error. */
int uvt__lane_submit(uvt_pool_t* pool, uvt_lane_t* lane, uvt__lane_link_t* link,
                     uvt__task_t* task, uint64_t deadline, uvt__producer_t* producer);

/* Worker, in the task's work hook before anything else: 0 if the task may
 * run (it has started), or UV_ETIMEDOUT if it must not (its deadline had
 * passed when the worker read the clock, or the loop expired it first):
 * the hook then returns UV_ETIMEDOUT without running it. */
int uvt__lane_start(uvt__lane_link_t* link);

/* Worker, in the task's done hook, before the completion is posted: the
 * task leaves its lane, which hands its next waiting task, if any, to the
 * back of the pool's queue. */
void uvt__lane_finish(uvt__lane_link_t* link);

/* The loop thread of the bridge that submitted the task: makes sure it
 * never runs if it has not started. Returns
 *  - UV_ECANCELED, or UV_ETIMEDOUT if its deadline has passed: it was
 *    taken out of its lane or the pool now, and the caller delivers it
 *    with that status (its lane has handed on its next task);
 *  - UV_EALREADY: it will not run, but it is not the caller's to deliver
 *    now (a worker holding it reports it expired, or an earlier withdraw
 *    took it out already);
 *  - UV_EBUSY: it started (it runs or has run), or a worker holds it and
 *    from_worker is 0.
 * A task that a worker has taken but not started is expired here only
 * with from_worker, and only if its deadline has passed: that worker then
 * goes on to the next task at once (the bridge's close withdraws without
 * it, so as not to free a thread while older requests still wait). */
int uvt__lane_withdraw(uvt_pool_t* pool, uvt__lane_link_t* link, int from_worker);

/* The loop thread, once the task's completion is in: its status (0 if it
 * ran, UV_ECANCELED or UV_ETIMEDOUT if not). */
int uvt__lane_status(const uvt__lane_link_t* link);

/* The loop thread, before the task's final callback: the lane no longer
 * waits for it (uvt_lane_free may succeed from here on). The caller's last
 * touch of the lane. */
void uvt__lane_delivered(uvt__lane_link_t* link);

#endif /* UVT_LANE_H */
