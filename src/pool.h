/* Private to uvthreads: the pool engine behind the public uvt_pool_t.
 *
 * Bridges submit tasks (uvt__task_t, embedded in the caller's request) and
 * get each one back through the task's own done hook on the worker that
 * ran it; the pool knows nothing of bridges, requests or loops. */
#ifndef UVT_POOL_H
#define UVT_POOL_H

#include "internal.h"

/* How one loop thread submits to a pool (a bridge holds one). */
typedef struct uvt__producer_s {
  int sole;     /* the sole producer of the pool's own ring (uvt__pool_attach) */
  int batching; /* in a batch that ends with uvt__pool_recheck */
  int recheck;  /* a submit of the batch left its wake-up check to the end */
} uvt__producer_t;

/* Queues task, stamped with its submit time (the stats clock); 0, or
 * UV_EAGAIN (or the thread error) when the pool has no thread and cannot
 * start one. The producer's loop thread only (any thread with a producer
 * that is neither sole nor batching, once a backlog is added: see below).
 * task->work runs on a worker, then task->done, the pool's last touch of
 * the task. A work hook that returns non-zero did not run the task (its
 * queue deadline had passed): it counts as expired, not completed. */
int uvt__pool_submit(uvt_pool_t* pool, uvt__task_t* task, uvt__producer_t* producer);
/* As uvt__pool_submit, for a task whose submit_ticks the caller has set
 * (it was accepted earlier, by a lane). */
int uvt__pool_submit_stamped(uvt_pool_t* pool, uvt__task_t* task, uvt__producer_t* producer);
/* Ends a batch of submits: does the wake-up check they left to it. */
void uvt__pool_recheck(uvt_pool_t* pool);
/* 0 and the task is removed if it was still queued, else UV_EBUSY. The
 * thread that submitted it only, or one whose call is ordered after the
 * submit (by a lock both held). Counted as cancelled, or with _expire as
 * expired (its queue deadline passed). */
int uvt__pool_cancel(uvt_pool_t* pool, uvt__task_t* task);
int uvt__pool_expire(uvt_pool_t* pool, uvt__task_t* task);

/* Tasks that a layer above the pool (a lane) has accepted and keeps back
 * until it hands them to the pool: the pool's stats count them as queued
 * (and, if they leave without reaching the pool, as cancelled or expired).
 * The holder writes the fields below node with relaxed atomic stores (under
 * a lock of its own); uvt_pool_stats reads them the same way, so the pool
 * never waits for the holder. */
typedef struct uvt__backlog_s {
  uvt__qnode_t node;  /* in the pool's list of backlogs (pool mutex) */
  uint64_t entered;   /* tasks that began to wait, ever */
  uint64_t handed;    /* of those, handed to the pool */
  uint64_t cancelled; /* of those, cancelled while waiting */
  uint64_t expired;   /* of those, expired while waiting */
  uint64_t oldest;    /* submit_ticks of the task waiting longest, 0 if none */
} uvt__backlog_t;

/* Any thread. Adds backlog (zeroed) to the pool, which then refuses to be
 * freed (UV_EBUSY) until it is removed, and makes sure any thread may
 * submit with a producer that is neither sole nor batching (it makes the
 * shared ring). 0 or UV_ENOMEM. */
int uvt__pool_add_backlog(uvt_pool_t* pool, uvt__backlog_t* backlog);
/* Any thread, once nothing waits in backlog: the pool keeps its counts. */
void uvt__pool_remove_backlog(uvt_pool_t* pool, uvt__backlog_t* backlog);

/* A bridge starts or stops using pool. Attach returns 1 if the bridge is
 * now the sole producer of the pool's own ring (its producer's `sole`, kept
 * until it detaches with that value), 0, or UV_ENOMEM. */
int uvt__pool_attach(uvt_pool_t* pool);
void uvt__pool_detach(uvt_pool_t* pool, int sole_producer);

/* Starts fn(arg) on a new dedicated thread that the pool accounts for:
 * the thread calls uvt__pool_thread_started() first, and
 * uvt__pool_thread_exiting() before it reports its end (after which the
 * pool may be freed), then uvt__reap() on what that returned. */
int uvt__pool_spawn(uvt_pool_t* pool, void (*fn)(void*), void* arg);
void uvt__pool_thread_started(uvt_pool_t* pool);
typedef struct uvt__reap_s {
  uv_thread_t thread;
  int valid;
} uvt__reap_t;
uvt__reap_t uvt__pool_thread_exiting(uvt_pool_t* pool);
/* Joins the thread that exited before the caller (after the caller's last
 * touch of shared memory). Each thread is joined exactly once: by the next
 * exiting thread, or by uvt_pool_free. */
void uvt__reap(uvt__reap_t reap);

#endif /* UVT_POOL_H */
