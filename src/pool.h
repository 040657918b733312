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

/* Queues task; 0, or UV_EAGAIN (or the thread error) when the pool has no
 * thread and cannot start one. The producer's loop thread only (any thread
 * with a producer that is neither sole nor batching). task->work runs on a
 * worker, then task->done, the pool's last touch of the task. */
int uvt__pool_submit(uvt_pool_t* pool, uvt__task_t* task, uvt__producer_t* producer);
/* Ends a batch of submits: does the wake-up check they left to it. */
void uvt__pool_recheck(uvt_pool_t* pool);
/* 0 and the task is removed if it was still queued, else UV_EBUSY. The
 * thread that submitted it only. */
int uvt__pool_cancel(uvt_pool_t* pool, uvt__task_t* task);

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
