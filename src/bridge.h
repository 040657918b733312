/* Private to uvthreads: the bridge between a loop and the threads that
 * report to it.
 *
 * Everything that crosses towards the loop is a uvt__msg_t pushed onto the
 * bridge's inbox; the loop calls each message's own deliver hook. Every
 * object that keeps the loop alive is a uvt__inflight_t on the bridge's one
 * in-flight list, whose own closing hook the bridge calls when it closes.
 * Everything that must happen at a deadline is a uvt__timed_t in the
 * bridge's heap, whose own expire hook one timer of the bridge calls.
 * The bridge knows no kind of object that lives on it. */
#ifndef UVT_BRIDGE_H
#define UVT_BRIDGE_H

#include "internal.h"
#include "pool.h"

/* A record that a thread borrows from the bridge to call into its loop: a
 * message to post and a semaphore to wait on. Records stay owned by the
 * bridge until it closes, so a stale pointer to one is still memory.
 * They are aligned to UVT__RECORD_ALIGN and at least that large, so the
 * low bits of a pointer into one can carry a ticket (call.c). */
#define UVT__RECORD_ALIGN 1024u
typedef struct uvt__record_s {
  uvt__msg_t msg;
  uv_sem_t done;
  struct uvt__record_s* next_free;
  struct uvt__record_s* next_all;
} uvt__record_t;

typedef struct uvt__bridge_impl_s {
  /* Loop-side state (the inbox is in the caller's uvt_bridge_t). */
  _Alignas(UVT__CACHE_LINE) uv_async_t async;
  uv_prepare_t prepare; /* learns the loop thread every iteration (unref'd) */
  uv_idle_t nudge;      /* after the prepare delivered: the next poll must not block */
  uv_timer_t first;     /* learns it at the first iteration's timers (unref'd) */
  uv_timer_t deadlines; /* due at the nearest deadline in the heap (unref'd) */
  uvt__heap_node_t* timed; /* the heap of uvt__timed_t, nearest first */
  int handles_open;     /* async, prepare, nudge, first, deadlines, until all are closed */
  uvt_bridge_t* bridge;
  uv_thread_t loop_thread; /* atomic: read by any thread; stored when it changes */
  uvt__msg_t* ready_head;  /* loop-local FIFO of messages to deliver */
  uvt__msg_t* ready_tail;
  uvt__msg_t* polled;      /* loop-local: uvt__poll_t messages delivered again next iteration */
  uvt__qnode_t inflight; /* what is in flight (uvt__inflight_t) */
  unsigned refs;         /* nodes of it that keep the loop alive */
  uvt_batch_cb batch_enter, batch_leave;
  int batch_hooked; /* either hook is set */
  int in_batch;     /* this drain delivered a callback: leave is due */
  int busy;         /* a drain delivered since the last missed spin (bridge.c) */
  int user_ref;
  int closing; /* loop thread; other threads read the gate's closing bit */
  int withdrawing; /* the close's first pass runs: local posts wait in close_posts */
  uvt__msg_t* close_posts; /* newest first */
  uvt__producer_t producer; /* how this loop submits to the pool */
  int finishing;
  uvt_close_cb close_cb;

  uv_mutex_t records_mutex; /* guards the record lists */
  uvt__record_t* records_free_head; /* recycled oldest first */
  uvt__record_t* records_free_tail;
  uvt__record_t* records_all; /* every record, freed at teardown */
} uvt__bridge_impl_t;

/* The live impl of bridge, or NULL if bridge is NULL or not initialised. */
uvt__bridge_impl_t* uvt__bridge_get(const uvt_bridge_t* bridge);
/* Whether the caller is the loop's thread. Relaxed: only the loop thread
 * writes loop_thread; another thread never reads its own identity there
 * unless it wrote it itself earlier. A channel's put asks on every item:
 * where uv_thread_t is pthread_t, one call (uv_thread_self and
 * uv_thread_equal are two more, 1.5x the whole put of a lone producer). */
static inline int uvt__bridge_on_loop_thread(uvt__bridge_impl_t* impl) {
#if defined(__linux__)
  return pthread_self() == uvt__load_relaxed(&impl->loop_thread);
#else
  uv_thread_t self = uv_thread_self();
  uv_thread_t loop = uvt__load_relaxed(&impl->loop_thread);
  return uv_thread_equal(&self, &loop);
#endif
}
/* Checks shared by every loop-thread submission: 0, UV_EINVAL or UV_EPIPE. */
int uvt__bridge_check_submit(uvt__bridge_impl_t* impl);

/* Loop thread: node (with its closing hook set) keeps the loop alive until
 * it is untracked; the bridge's close calls its closing hook twice, each
 * time for every node: with UVT__CLOSE_WITHDRAW, newest first, a hook
 * withdraws what has not started and must not stop anything that runs;
 * then with UVT__CLOSE_STOP, oldest first, it stops what runs. So no
 * queued request starts because the close stopped a running one, or
 * withdrew an older one of its lane, and freed a thread or a lane's slot
 * for it. What the first pass posts locally is delivered oldest first. */
enum { UVT__CLOSE_WITHDRAW = 1, UVT__CLOSE_STOP = 2 };
void uvt__bridge_track(uvt__bridge_impl_t* impl, uvt__inflight_t* node);
void uvt__bridge_untrack(uvt__bridge_impl_t* impl, uvt__inflight_t* node);
/* Loop thread: whether a tracked node keeps the loop alive (ref'd when tracked). */
void uvt__bridge_set_ref(uvt__bridge_impl_t* impl, uvt__inflight_t* node, int ref);

/* Loop thread: calls t->expire(t) on the loop thread once uv_hrtime() has
 * reached t->node.key (set by the caller), within about a millisecond even
 * while the pool is busy, unless stopped first. The timer behind it keeps
 * no loop alive. Stop is idempotent (t->armed says whether it is pending);
 * an expire hook may start and stop deadlines. */
void uvt__bridge_timed_start(uvt__bridge_impl_t* impl, uvt__timed_t* t);
void uvt__bridge_timed_stop(uvt__bridge_impl_t* impl, uvt__timed_t* t);

/* Loop thread, in a drain: a user callback is about to run. Opens the
 * drain's batch (the enter hook) before the first one. */
static inline void uvt__bridge_before_callback(uvt__bridge_impl_t* impl) {
  if (impl->batch_hooked && !impl->in_batch) {
    impl->in_batch = 1;
    if (impl->batch_enter != NULL) impl->batch_enter(impl->bridge);
  }
}

/* Any thread: queues msg for delivery on the loop thread and wakes the loop
 * if it was idle. Only for threads the bridge already waits for (tracked
 * objects): they cannot race with its teardown. */
void uvt__bridge_post(uvt__bridge_impl_t* impl, uvt__msg_t* msg);
/* Any thread, for threads the bridge does not wait for (uvt_call,
 * uvt_sync_await): enter returns the live impl and holds the bridge until
 * leave, or NULL (nothing held, nothing of the bridge touched but its own
 * struct) once the bridge is closing. Safe until close_cb starts. */
uvt__bridge_impl_t* uvt__bridge_enter(uvt_bridge_t* bridge);
void uvt__bridge_leave(uvt_bridge_t* bridge);
/* Between enter and leave: queues msg and wakes the loop if it was idle. */
void uvt__bridge_post_entered(uvt__bridge_impl_t* impl, uvt__msg_t* msg);
/* Any thread, without enter: queues msg unless the bridge is closing (then
 * UV_EPIPE, nothing of the impl touched). For messages that need nothing
 * of the bridge but their delivery (uvt_call): a message queued before the
 * bridge's end is still delivered. Safe until close_cb starts. */
int uvt__bridge_post_untracked(uvt_bridge_t* bridge, uvt__msg_t* msg);
/* Loop thread: queues msg behind the current batch and schedules a drain. */
void uvt__bridge_post_local(uvt__bridge_impl_t* impl, uvt__msg_t* msg);
/* Loop thread: delivers poll's message again at the next loop iteration,
 * once its ready hook says so or after a short wait (bridge.c); the loop does not
 * block in between. */
void uvt__bridge_poll(uvt__bridge_impl_t* impl, uvt__poll_t* poll);

/* Any thread: borrows a record of size bytes (the same size for every
 * record of a bridge; a record's first member is a uvt__record_t; zeroed
 * when new), or NULL when out of memory. Give it back when done; it is
 * freed with the bridge. */
uvt__record_t* uvt__bridge_record_take(uvt__bridge_impl_t* impl, size_t size);
void uvt__bridge_record_give(uvt__bridge_impl_t* impl, uvt__record_t* rec);

#endif /* UVT_BRIDGE_H */
