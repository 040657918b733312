/* Lanes: concurrency caps, back-pressure and queue deadlines (lane.h).
 *
 * A lane is a mutex, the FIFO of its tasks that wait for a slot, the list
 * of its tasks in the pool (at most max_running: queued there or running),
 * and counters. Links are intrusive (one node, in one list at a time), so
 * nothing is allocated per task. A submission to a lane with a free slot
 * and nothing waiting goes to the pool at once, through the submitting
 * loop's own producer. Otherwise it waits in the lane, holding no thread:
 * when a task of the lane ends (on its worker) or is taken out (a cancel,
 * a deadline), the lane hands its next waiting task to the back of the
 * pool's queue, through the ring any thread may put to. Work queued
 * meanwhile by others goes first, and a lane's tasks do not run back to
 * back on one worker while other work waits.
 *
 * A serial lane's order and memory effects: task n+1 is handed to the pool
 * by whoever ends task n (its worker, after the work returned), under the
 * lane's mutex, and the pool's put and take are a release/acquire pair, so
 * task n's writes happen before task n+1 starts.
 *
 * Where a task is (link->state, atomic):
 *   WAITING    in its lane's FIFO;
 *   QUEUED     in the pool: in its queue, or taken by a worker that has not
 *              started it yet;
 *   RUNNING    started by its worker;
 *   CANCELLED, EXPIRED   it never runs.
 * WAITING changes only under the lane's mutex. QUEUED ends one of three
 * ways. The worker that took it reads the clock and moves it with a CAS to
 * RUNNING, or to EXPIRED if the deadline has passed (then it does not run
 * it, and reports it through its done hook like a task that ran). The loop
 * thread that submitted it withdraws it from the pool's queue (the pool's
 * withdraw and a worker's take settle which of them gets it) and reports
 * it itself, CANCELLED or EXPIRED. Or, if a worker has taken it but not
 * started it and the deadline has passed, the loop moves it to EXPIRED
 * with a CAS, racing the worker's: if the loop's comes first, the worker
 * finds EXPIRED and reports it without running it. So a task that has not
 * started by its deadline never runs, and one that started in time runs
 * to its end; "started" is the worker's clock read before its CAS.
 *
 * Locks: a lane's mutex is taken before the pool's, never after it; the
 * pool reads what the lane holds (its backlog) through relaxed atomics
 * without the lane's mutex. */
#include "lane.h"

#include "clock.h"

enum {
  UVT__LINK_WAITING = 1,
  UVT__LINK_QUEUED,
  UVT__LINK_RUNNING,
  UVT__LINK_CANCELLED,
  UVT__LINK_EXPIRED
};

struct uvt_lane_s {
  uv_mutex_t mutex;
  uvt_pool_t* pool;
  unsigned max_running, max_queued;
  /* Guarded by mutex. */
  uvt__qnode_t waiting; /* links waiting for a slot, oldest first */
  uvt__qnode_t active;  /* links in the pool: queued there or running */
  unsigned nactive;
  uint64_t nwaiting;
  uint64_t submitted, completed, cancelled, expired, rejected;
  /* Accepted tasks whose final callback has not been reached (atomic:
   * uvt_lane_free reads it without the mutex). */
  uint64_t pending;
  uvt__backlog_t backlog; /* what the pool's stats see of the waiting tasks */
};

/* Counts one in a backlog field: written only under the lane's mutex, read
 * by the pool's stats, hence a relaxed load and store, no locked RMW. */
static void uvt__backlog_count(uint64_t* counter) {
  uvt__store_relaxed(counter, uvt__load_relaxed(counter) + 1);
}

static uvt__lane_link_t* uvt__lane_link_of(uvt__qnode_t* node) {
  return uvt__container_of(node, uvt__lane_link_t, node);
}

/* The pool's stats see the submit time of the task waiting longest. Relaxed:
 * a snapshot (see uvt__backlog_t). Lock held. */
static void uvt__lane_update_oldest_locked(uvt_lane_t* lane) {
  uint64_t oldest = 0;
  if (!uvt__queue_empty(&lane->waiting))
    oldest = uvt__lane_link_of(lane->waiting.next)->task->submit_ticks;
  uvt__store_relaxed(&lane->backlog.oldest, oldest);
}

/* Hands waiting tasks to the pool while the lane has free slots. Any
 * thread: the put goes to the ring every thread may put to. If the pool
 * has no thread and cannot start one, the task stays first in line, to be
 * handed on at the lane's next event (a submission, an end, a withdraw).
 * Lock held. */
static void uvt__lane_hand_on_locked(uvt_lane_t* lane) {
  uvt__producer_t any = {0, 0, 0};
  int moved = 0;
  while (lane->nactive < lane->max_running && !uvt__queue_empty(&lane->waiting)) {
    uvt__lane_link_t* link = uvt__lane_link_of(lane->waiting.next);
    /* Relaxed: the pool's put publishes it to the worker; the loop reads
     * it under the mutex. */
    uvt__store_relaxed(&link->state, UVT__LINK_QUEUED);
    if (uvt__pool_submit_stamped(lane->pool, link->task, &any) != 0) {
      uvt__store_relaxed(&link->state, UVT__LINK_WAITING);
      break;
    }
    /* A worker may run it already; it ends under the mutex we hold. */
    uvt__queue_remove(&link->node);
    uvt__queue_insert_tail(&lane->active, &link->node);
    lane->nactive++;
    lane->nwaiting--;
    uvt__backlog_count(&lane->backlog.handed);
    moved = 1;
  }
  if (moved) uvt__lane_update_oldest_locked(lane);
}

uvt_pool_t* uvt__lane_pool(uvt_lane_t* lane) { return lane->pool; }

int uvt__lane_submit(uvt_pool_t* pool, uvt_lane_t* lane, uvt__lane_link_t* link,
                     uvt__task_t* task, uint64_t deadline, uvt__producer_t* producer) {
  int rc = 0;
  link->lane = lane;
  link->task = task;
  link->deadline = deadline;
  /* Relaxed: the pool's put publishes both with the task (or, for a task
   * that waits, the lane's mutex does). */
  uvt__store_relaxed(&link->start_ticks, (uint64_t)0);
  uvt__store_relaxed(&link->state, UVT__LINK_QUEUED);
  if (lane == NULL) return uvt__pool_submit(pool, task, producer);

  /* Its age counts from here, also while it waits in the lane. */
  task->submit_ticks = uvt__ticks();
  uv_mutex_lock(&lane->mutex);
  if (lane->nactive < lane->max_running && uvt__queue_empty(&lane->waiting)) {
    rc = uvt__pool_submit_stamped(pool, task, producer);
    if (rc == 0) {
      lane->nactive++;
      uvt__queue_insert_tail(&lane->active, &link->node);
    }
  } else if (lane->max_queued != 0 && lane->nwaiting >= lane->max_queued) {
    lane->rejected++;
    rc = UV_EAGAIN;
  } else {
    uvt__store_relaxed(&link->state, UVT__LINK_WAITING);
    uvt__queue_insert_tail(&lane->waiting, &link->node);
    lane->nwaiting++;
    uvt__backlog_count(&lane->backlog.entered);
    if (lane->nwaiting == 1) uvt__lane_update_oldest_locked(lane);
    /* Free slots with tasks waiting: a hand-on failed before. */
    uvt__lane_hand_on_locked(lane);
  }
  if (rc == 0) {
    lane->submitted++;
    /* Relaxed: uvt_lane_free racing a submission is the program's error;
     * the decrements publish (uvt__lane_delivered). */
    uvt__fetch_add_relaxed(&lane->pending, (uint64_t)1);
  }
  uv_mutex_unlock(&lane->mutex);
  return rc;
}

int uvt__lane_start(uvt__lane_link_t* link) {
  int queued = UVT__LINK_QUEUED;
  int next;
  next = link->deadline != UINT64_MAX && uv_hrtime() >= link->deadline ? UVT__LINK_EXPIRED
                                                                      : UVT__LINK_RUNNING;
  UVT__TEST_POINT("lane.start", link); /* its deadline may pass and the loop expire it */
  /* Relaxed: the state only decides who reports the task and with what
   * status; the task's data travel with the pool's handoff and the
   * bridge's post. A failed CAS found EXPIRED, set by the loop (which sets
   * CANCELLED only on a task it withdrew, which no worker holds). */
  if (!uvt__cas_strong_relaxed(&link->state, &queued, next) || next == UVT__LINK_EXPIRED)
    return UV_ETIMEDOUT;
  /* Relaxed: read by the lane's stats as a snapshot. */
  if (link->lane != NULL) uvt__store_relaxed(&link->start_ticks, uvt__ticks());
  UVT__TEST_POINT("lane.started", link); /* its deadline may pass here */
  return 0;
}

void uvt__lane_finish(uvt__lane_link_t* link) {
  uvt_lane_t* lane = link->lane;
  if (lane == NULL) return;
  uv_mutex_lock(&lane->mutex);
  uvt__queue_remove(&link->node);
  lane->nactive--;
  /* Relaxed: this worker's own CAS settled it (uvt__lane_start). */
  if (uvt__load_relaxed(&link->state) == UVT__LINK_RUNNING)
    lane->completed++;
  else
    lane->expired++; /* found expired at its start */
  uvt__lane_hand_on_locked(lane);
  uv_mutex_unlock(&lane->mutex);
}

int uvt__lane_withdraw(uvt_pool_t* pool, uvt__lane_link_t* link, int from_worker) {
  uvt_lane_t* lane = link->lane;
  int expired = link->deadline != UINT64_MAX && uv_hrtime() >= link->deadline;
  int gone = expired ? UVT__LINK_EXPIRED : UVT__LINK_CANCELLED;
  int rc = expired ? UV_ETIMEDOUT : UV_ECANCELED;
  int state;
  if (lane != NULL) uv_mutex_lock(&lane->mutex);
  /* Relaxed: every writer but a worker's CAS held the lane's mutex or was
   * this thread; a worker's CAS is settled below (the pool's withdraw, then
   * our own CAS, and a fresh load). */
  state = uvt__load_relaxed(&link->state);
  if (state == UVT__LINK_WAITING) {
    uvt__queue_remove(&link->node);
    lane->nwaiting--;
    uvt__backlog_count(expired ? &lane->backlog.expired : &lane->backlog.cancelled);
    uvt__lane_update_oldest_locked(lane);
    if (expired)
      lane->expired++;
    else
      lane->cancelled++;
    uvt__store_relaxed(&link->state, gone);
  } else if (state == UVT__LINK_QUEUED && (expired ? uvt__pool_expire(pool, link->task)
                                                   : uvt__pool_cancel(pool, link->task)) == 0) {
    /* No worker has it, and none will. */
    uvt__store_relaxed(&link->state, gone);
    if (lane != NULL) {
      uvt__queue_remove(&link->node);
      lane->nactive--;
      if (expired)
        lane->expired++;
      else
        lane->cancelled++;
      uvt__lane_hand_on_locked(lane);
    }
  } else {
    if (state == UVT__LINK_QUEUED && expired && from_worker) {
      /* A worker has it: expire it unless the worker started it first
       * (see uvt__lane_start). Relaxed, as there. */
      int queued = UVT__LINK_QUEUED;
      uvt__cas_strong_relaxed(&link->state, &queued, UVT__LINK_EXPIRED);
    }
    state = uvt__load_relaxed(&link->state);
    rc = state == UVT__LINK_CANCELLED || state == UVT__LINK_EXPIRED ? UV_EALREADY : UV_EBUSY;
  }
  if (lane != NULL) uv_mutex_unlock(&lane->mutex);
  return rc;
}

int uvt__lane_status(const uvt__lane_link_t* link) {
  /* Relaxed: its last writer was this thread, or a worker whose post of
   * the completion this thread has acquired. */
  int state = uvt__load_relaxed(&link->state);
  if (state == UVT__LINK_EXPIRED) return UV_ETIMEDOUT;
  if (state == UVT__LINK_CANCELLED) return UV_ECANCELED;
  return 0;
}

void uvt__lane_delivered(uvt__lane_link_t* link) {
  /* Release: every touch of the lane for this task (by its worker, then by
   * this thread) happens before uvt_lane_free's acquire load sees the
   * count drop. */
  if (link->lane != NULL) uvt__fetch_sub_release(&link->lane->pending, (uint64_t)1);
}

void uvt_lane_options_init(uvt_lane_options_t* opts) {
  if (opts == NULL) return;
  memset(opts, 0, sizeof(*opts));
  opts->max_running = 1;
  opts->max_queued = 0;
}

int uvt_lane_new(uvt_pool_t* pool, const uvt_lane_options_t* opts, uvt_lane_t** out) {
  uvt_lane_options_t defaults;
  uvt_lane_t* lane;
  int rc;
  if (out == NULL) return UV_EINVAL;
  if (opts == NULL) {
    uvt_lane_options_init(&defaults);
    opts = &defaults;
  }
  if (opts->max_running == 0) return UV_EINVAL;
  if (pool == NULL) pool = uvt_pool_default();
  if (pool == NULL) return UV_ENOMEM;
  lane = uvt__calloc(1, sizeof(*lane));
  if (lane == NULL) return UV_ENOMEM;
  if ((rc = uv_mutex_init(&lane->mutex)) != 0) {
    uvt__free(lane);
    return rc;
  }
  lane->pool = pool;
  lane->max_running = opts->max_running;
  lane->max_queued = opts->max_queued;
  uvt__queue_init(&lane->waiting);
  uvt__queue_init(&lane->active);
  if ((rc = uvt__pool_add_backlog(pool, &lane->backlog)) != 0) {
    uv_mutex_destroy(&lane->mutex);
    uvt__free(lane);
    return rc;
  }
  *out = lane;
  return 0;
}

int uvt_lane_free(uvt_lane_t* lane) {
  if (lane == NULL) return UV_EINVAL;
  /* Acquire: pairs with uvt__lane_delivered's release. */
  if (uvt__load_acquire(&lane->pending) != 0) return UV_EBUSY;
  uvt__pool_remove_backlog(lane->pool, &lane->backlog);
  uv_mutex_destroy(&lane->mutex);
  uvt__free(lane);
  return 0;
}

int uvt_lane_stats(uvt_lane_t* lane, uvt_lane_stats_t* out) {
  uvt__qnode_t* n;
  uint64_t oldest_queued = 0, oldest_running = 0, now;
  double ns_per_tick;
  if (lane == NULL || out == NULL) return UV_EINVAL;
  ns_per_tick = uvt__ns_per_tick();
  memset(out, 0, sizeof(*out));
  uv_mutex_lock(&lane->mutex);
  out->submitted = lane->submitted;
  out->completed = lane->completed;
  out->cancelled = lane->cancelled;
  out->expired = lane->expired;
  out->rejected = lane->rejected;
  out->queued = lane->nwaiting;
  if (!uvt__queue_empty(&lane->waiting))
    oldest_queued = uvt__lane_link_of(lane->waiting.next)->task->submit_ticks;
  now = uvt__ticks();
  for (n = lane->active.next; n != &lane->active; n = n->next) {
    uvt__lane_link_t* link = uvt__lane_link_of(n);
    /* Relaxed: a snapshot; the worker moves these without the mutex. */
    if (uvt__load_relaxed(&link->state) == UVT__LINK_RUNNING) {
      uint64_t start = uvt__load_relaxed(&link->start_ticks);
      out->running++;
      oldest_running = uvt__ticks_earliest(oldest_running, start != 0 ? start : now);
    } else {
      /* Queued in the pool, or found expired by its worker, which has not
       * counted it yet: not started either way. */
      out->queued++;
      oldest_queued = uvt__ticks_earliest(oldest_queued, link->task->submit_ticks);
    }
  }
  uv_mutex_unlock(&lane->mutex);
  if (oldest_queued != 0)
    out->oldest_queued_ns = (uint64_t)((double)uvt__ticks_since(oldest_queued, now) * ns_per_tick);
  if (oldest_running != 0)
    out->oldest_running_ns =
        (uint64_t)((double)uvt__ticks_since(oldest_running, now) * ns_per_tick);
  return 0;
}
