/* uvthreads: run blocking work, generators and thread messages next to a
 * libuv loop without ever blocking it.
 *
 * Conventions (the same as libuv's):
 *  - Every function that can fail returns 0 or a negative libuv error code
 *    (UV_EINVAL, UV_ENOMEM, UV_EAGAIN, UV_EBUSY, UV_EPIPE, UV_ECANCELED,
 *    UV_ETIMEDOUT, UV_EOF), so uv_strerror()/uv_err_name() explain it. When a
 *    function that takes a callback returns an error, that callback is never
 *    called.
 *  - Requests, iterators, channels and bridges are caller-allocated. They need
 *    no initialisation before first use and may be reused or freed from inside
 *    their final callback onward, not before. Fields after the "private" mark
 *    are the library's.
 *  - "Loop thread" is the thread running uv_run() on the bridge's loop. The
 *    bridge takes it to be the thread that called uvt_bridge_init, and learns
 *    it anew in every loop iteration (its own unref'd prepare handle, and a
 *    0 ms timer at init for the first iteration's timers). A loop-thread-only
 *    function called on another thread returns UV_EINVAL.
 *    Handing a loop to another thread (one thread at a time uses it): the
 *    new thread runs uv_run() before it calls loop-thread functions outside
 *    loop callbacks; inside callbacks it is known from the first iteration
 *    on, except in the callbacks of timers started before uvt_bridge_init,
 *    which may run before the bridge's own in that first iteration.
 *  - Calls from other threads on a closing bridge (uvt_call, uvt_sync_await,
 *    puts on its channels) are safe until close_cb starts: they return
 *    their documented result and never touch freed memory.
 *  - The context value current on the submitting thread (uvt_context_set) is
 *    current while that submission's callbacks run, on both sides.
 */
#ifndef UVTHREADS_H
#define UVTHREADS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The library is built with hidden symbols; only the API is exported. */
#if defined(UVT_BUILDING) && defined(__GNUC__)
#define UVT_EXTERN __attribute__((visibility("default")))
#else
#define UVT_EXTERN
#endif

/* ---- Version ------------------------------------------------------------ */

#define UVT_VERSION_MAJOR 0
#define UVT_VERSION_MINOR 2
#define UVT_VERSION_PATCH 0

/* (MAJOR << 16) | (MINOR << 8) | PATCH of the library actually linked. */
UVT_EXTERN unsigned int uvt_version(void);
/* "MAJOR.MINOR.PATCH"; static storage. */
UVT_EXTERN const char* uvt_version_string(void);

/* ---- Types -------------------------------------------------------------- */

typedef struct uvt_pool_s uvt_pool_t; /* opaque, library-allocated */
typedef struct uvt_lane_s uvt_lane_t; /* opaque, library-allocated */
typedef struct uvt_bridge_s uvt_bridge_t;
typedef struct uvt_work_s uvt_work_t;
typedef struct uvt_iter_s uvt_iter_t;
typedef struct uvt_chan_s uvt_chan_t;
typedef struct uvt_await_s uvt_await_t; /* opaque, owned by the bridge */

typedef void (*uvt_close_cb)(uvt_bridge_t* bridge);
typedef void (*uvt_batch_cb)(uvt_bridge_t* bridge);
typedef void (*uvt_work_cb)(uvt_work_t* req);
typedef void (*uvt_after_work_cb)(uvt_work_t* req, int status);
typedef int (*uvt_gen_cb)(uvt_iter_t* it);
typedef void (*uvt_iter_cb)(uvt_iter_t* it, int status, void* item);
typedef void (*uvt_drop_cb)(void* item);
typedef void (*uvt_chan_cb)(uvt_chan_t* ch, int status, void* item);
typedef void (*uvt_await_cb)(uvt_await_t* aw, void* arg);
typedef void (*uvt_call_cb)(void* arg);

/* ---- Private building blocks (layout may change between versions) ------- */

typedef struct uvt__qnode_s {
  struct uvt__qnode_s* next;
  struct uvt__qnode_s* prev;
} uvt__qnode_t;

/* A node of the bridge's completion queue. */
typedef struct uvt__msg_s {
  struct uvt__msg_s* next;
  unsigned (*deliver)(struct uvt__msg_s* msg, unsigned budget);
} uvt__msg_t;

/* A message the loop may also poll (uvt__bridge_poll). */
typedef struct uvt__poll_s {
  uvt__msg_t msg;
  int (*ready)(struct uvt__poll_s* poll); /* worth a visit now */
} uvt__poll_t;

/* A unit of work for the pool. */
typedef struct uvt__task_s {
  uvt__qnode_t node; /* in the pool's overflow queue */
  /* Worker thread: 0 once it ran, or UV_ETIMEDOUT if it found its queue
   * deadline passed and did not run. */
  int (*work)(struct uvt__task_s* task);
  void (*done)(struct uvt__task_s* task); /* worker thread, after the stats */
  uint64_t submit_ticks;
  uint64_t ring_pos; /* where it was put in the pool's ring */
  int where;         /* ring, overflow queue or neither (see pool.c) */
} uvt__task_t;

/* A node of an intrusive pairing heap, least key first (internal.h). */
typedef struct uvt__heap_node_s {
  struct uvt__heap_node_s* child;
  struct uvt__heap_node_s* next; /* the next sibling */
  struct uvt__heap_node_s* prev; /* the parent of a first child, else the previous sibling */
  uint64_t key;
} uvt__heap_node_t;

/* Something a bridge's loop acts on at a deadline (bridge.c). */
typedef struct uvt__timed_s {
  uvt__heap_node_t node; /* key: the uv_hrtime() it is due at */
  void (*expire)(struct uvt__timed_s* self); /* loop thread, once due */
  int armed; /* in the bridge's heap */
} uvt__timed_t;

/* What lane.c keeps of a pool task that has a lane, a queue deadline or
 * both. */
typedef struct uvt__lane_link_s {
  uvt__qnode_t node; /* in its lane's waiting queue, then in its active list */
  uvt_lane_t* lane;  /* NULL: a queue deadline only */
  uvt__task_t* task;
  uint64_t deadline;    /* the uv_hrtime() by which it must start; UINT64_MAX: none */
  uint64_t start_ticks; /* atomic: when it started (stats clock), 0 before */
  int state;            /* atomic (lane.c) */
} uvt__lane_link_t;

/* A node of a bridge's in-flight list: something that keeps the loop alive
 * and that the bridge's close must reach, through its own closing hook
 * (called twice: src/bridge.h). */
typedef struct uvt__inflight_s {
  uvt__qnode_t node;
  void (*closing)(struct uvt__inflight_s* self, int stage); /* may be NULL */
  int ref; /* keeps the loop alive (streams may be unref'd) */
} uvt__inflight_t;

/* The bounded buffer between producer threads and the loop, shared by
 * iterators and channels (src/stream.c). Producer- and loop-written words
 * are kept apart by padding (the struct is caller-allocated, so no
 * alignment). */
typedef struct uvt__stream_s {
  uv_mutex_t mutex; /* state changes; blocked producers */
  uv_cond_t space;  /* blocked producers wait here */
  void** ring;      /* the items, in slots (a power of two of them) */
  unsigned char* laps; /* per slot: published for the lap it says (stream.c) */
  size_t cap;       /* max_size: the bound */
  size_t mask;      /* slots - 1 */
  unsigned shift;   /* log2(slots): a position's lap */
  unsigned waiters; /* atomic: producers spinning or asleep for space */
  unsigned flags;   /* producer-side state, guarded by mutex */
  unsigned lflags;  /* loop-side state: written by the loop under mutex */
  int status;       /* the producer's own end (iterators: the generator's result) */
  int hold;         /* loop thread: why it holds the scheduled bit (stream.c) */
  int joined;       /* one producer, which the end waits for (set at open) */
  int may_bias;     /* a lone producer may claim without a CAS (set at open) */
  struct uvt__bridge_impl_s* impl;
  void* ctx;
  /* The owner's hooks, loop thread: an item or the final status; the
   * owner's part of a bridge close (may be NULL). */
  void (*deliver)(struct uvt__stream_s* stream, int status, void* item);
  void (*closing)(struct uvt__stream_s* stream);
  uvt__poll_t poll; /* its message */
  uvt__inflight_t inflight;
  unsigned gate; /* producers inside, and the open bit (stream.c) */
  uintptr_t tag;
  /* Producer side: positions claimed and the mode bits (atomic), the sole
   * producer's position, whether it is inside a claim and who it is
   * (atomic), head as last seen, and the thread that claimed last and how
   * many times in a row (atomic hints). */
  char uvt__pad1[64];
  uint64_t claim;
  uint64_t tail;
  unsigned putting;
  unsigned streak;
  uintptr_t owner;
  uintptr_t last_producer;
  uint64_t seen_head;
  /* Loop side: items passed to the callback and committed (atomic), items
   * of the current batch passed but not committed, items delivered since
   * the last heavy barrier. */
  char uvt__pad2[64];
  uint64_t head;
  size_t taken;
  uint64_t since_barrier;
} uvt__stream_t;

/* ---- Pool: the custom thread pool (any thread) --------------------------- */

typedef struct uvt_pool_options_s {
  unsigned int min_threads;     /* kept alive while idle */
  unsigned int max_threads;     /* upper bound; the pool grows on demand */
  unsigned int idle_timeout_ms; /* threads above min_threads exit after this idle time */
  size_t stack_size;            /* 0 = library default */
  const char* name;             /* thread name prefix (NULL = "uvt") */
} uvt_pool_options_t;

typedef struct uvt_pool_stats_s {
  unsigned int threads;      /* alive now */
  unsigned int idle_threads; /* parked or spinning without work */
  uint64_t submitted;        /* accepted tasks, ever */
  uint64_t completed;        /* tasks whose work function returned */
  uint64_t cancelled;        /* tasks cancelled before they ran */
  uint64_t queued;           /* waiting now */
  uint64_t running;          /* running now */
  uint64_t wait_ns_total, wait_ns_max; /* time from submit to start */
  uint64_t run_ns_total, run_ns_max;   /* time in the work function */
  uint64_t expired;           /* tasks that got UV_ETIMEDOUT (queue deadline passed) */
  uint64_t oldest_queued_ns;  /* age of the task waiting longest now (0 if none) */
  uint64_t oldest_running_ns; /* age of the task running longest now (0 if none) */
} uvt_pool_stats_t;

/* Fills opts with the defaults: min_threads 0, max_threads 16,
 * idle_timeout_ms 10000, stack_size 0 (the system's), name NULL ("uvt"). */
UVT_EXTERN void uvt_pool_options_init(uvt_pool_options_t* opts);

/* Creates a pool (opts NULL = defaults). min_threads threads start at once;
 * more start when work waits and no thread is idle, up to max_threads.
 * UV_EINVAL: pool NULL, max_threads 0, min_threads > max_threads.
 * UV_ENOMEM, or the thread-creation error if a min_threads thread fails. */
UVT_EXTERN int uvt_pool_new(uvt_pool_t** pool, const uvt_pool_options_t* opts);

/* Stops and joins every thread and frees the pool. UV_EBUSY while a bridge
 * still uses it, while a lane of it exists, or when called on one of its
 * own threads (also its dedicated ones); UV_EINVAL for NULL or the default
 * pool. */
UVT_EXTERN int uvt_pool_free(uvt_pool_t* pool);

/* The process-wide pool, created on first use with the defaults, except that
 * max_threads comes from the environment variable UVT_POOL_SIZE (1..1024)
 * when set. NULL if it could not be created. It lives until the library is
 * unloaded or the process exits; then, if no bridge uses it and no lane of
 * it exists, its threads are stopped and joined (a program that closed its
 * bridges and freed its lanes leaves no thread behind, and a plugin or
 * Node.js addon embedding the library can be dlclose()d); otherwise they
 * are left running.
 *
 * fork(): a child has only the thread that called fork(). It may always
 * exit or exec. It must not use the pools, bridges, iterators or channels
 * created before the fork (they are the parent's, like its loops); it may
 * create new ones, and uvt_pool_default() gives it a new default pool. If
 * the parent used libuv's own thread pool (uv_queue_work, uv_fs_*), end the
 * child with _exit() or exec: libuv's exit handler aborts in a child. */
UVT_EXTERN uvt_pool_t* uvt_pool_default(void);

/* Copies the pool's counters. They are updated before the corresponding
 * completion is delivered. Dedicated threads (uvt_threaded_separate,
 * uvt_threaded_iterable_separate) are not pool tasks: they are not counted
 * in submitted/completed. Tasks waiting in a lane of the pool count as
 * queued, and lane tasks count in completed, cancelled and expired, so
 * submitted == completed + cancelled + expired + queued + running. A
 * task's age is measured from its submission while it is queued and from
 * its start while it runs; the oldest_* figures are read now, so a stalled
 * queue or a stuck task shows while it lasts. UV_EINVAL for NULL. Any
 * thread. */
UVT_EXTERN int uvt_pool_stats(uvt_pool_t* pool, uvt_pool_stats_t* out);

/* ---- Bridge: one per loop (loop thread unless stated) --------------------- */

struct uvt_bridge_s {
  void* data;
  uv_loop_t* loop;   /* read-only */
  uvt_pool_t* pool;  /* read-only */
  /* private */
  uintptr_t uvt__tag;
  struct uvt__bridge_impl_s* uvt__impl;
  /* Valid until close_cb starts, so threads may touch them while the impl
   * goes away (bridge.c). Every producer writes them: padded off the
   * fields above (read on every submission) and whatever follows. */
  char uvt__pad1[64];
  uvt__msg_t* uvt__inbox; /* the Treiber stack of messages, newest first */
  unsigned uvt__senders;  /* producers between a push and its wake-up */
  unsigned uvt__gate;     /* threads inside, and the closing bit */
  char uvt__pad2[64];
};

/* Binds a bridge to loop, using pool (NULL = uvt_pool_default()). Call it on
 * the thread that will run the loop. UV_EINVAL: loop or bridge NULL;
 * UV_EBUSY: bridge already initialised and not yet closed; UV_ENOMEM; or the
 * error of uv_async_init. An idle bridge does not keep uv_run() alive.
 * Completions, items and calls are delivered in batches of at most 1000
 * callbacks per loop iteration, so timers and sockets keep their turn; a
 * uv_stop() from one of these callbacks takes effect after its batch.
 * After an iteration whose drain delivered something, the loop thread
 * waits up to 20 us for the bridge's next message before it polls (a round
 * trip's answer comes within microseconds, and a sleep and wake-up cost
 * more); after a wait that found nothing it does not wait again until a
 * drain delivers, so an idle loop never spins. While items flow into an
 * iterator or channel, the loop does not sleep between batches: each
 * iteration it waits up to those 20 us for half the buffer to fill, then
 * delivers what is there (polling I/O without blocking in between); it
 * sleeps again once a look finds nothing new. Within an iteration, a
 * stream that has delivered a chunk (half its buffer, at most 128 items)
 * keeps the loop waiting up to 10 us for each next chunk, at most 50 us
 * an iteration, while the 1000-callback budget lasts. An iterator that
 * has delivered 65536 items since its last membarrier(2) call (Linux)
 * spares its generator's puts any locked instruction during its next
 * flood; when that flood ends the loop thread makes one such call (about
 * 1 us, up to 50 us on some VMs): at most one per 65536 items. A channel
 * producer that put 65536 items in a row, with no other producer's in
 * between, claims without a locked instruction from then on (as a
 * generator does); the next put of another producer takes that back with
 * one membarrier(2) call on its own thread, and so do a stop and the
 * channel's end on the loop thread: at most one call per 65536 items.
 * These waits, and every other spin of the library (producers facing a
 * full buffer, sync_await callers, idle pool threads), are replaced by one
 * sched_yield() while the thread that last called uvt_bridge_init or
 * uvt_pool_new may run on one CPU only (taskset, a cpuset, a one-CPU VM,
 * or its own pinning, which the threads it starts inherit): there the
 * thread waited for cannot run during a spin. */
UVT_EXTERN int uvt_bridge_init(uv_loop_t* loop, uvt_bridge_t* bridge, uvt_pool_t* pool);

/* Starts closing: new submissions return UV_EPIPE, queued work never starts
 * and completes with UV_ECANCELED (in submission order), running work is
 * flagged cancelled and completes normally, iterators and channels stop
 * (buffered items are still delivered, then the final callback carries
 * UV_ECANCELED), accepted uvt_calls still run, and
 * sync_awaits whose function has not started return UV_ECANCELED. close_cb
 * (may be NULL) runs on the loop thread once every final callback has run and
 * no library thread touches the bridge; then the memory may be freed.
 * UV_EINVAL: NULL, not initialised, already closing, or not the loop thread. */
UVT_EXTERN int uvt_bridge_close(uvt_bridge_t* bridge, uvt_close_cb close_cb);

/* Make an idle bridge keep uv_run() alive (ref) or not (unref, the default),
 * for programs whose threads call uvt_call/uvt_sync_await while the loop has
 * nothing else to do. Loop thread; ignored for an invalid or closing bridge. */
UVT_EXTERN void uvt_bridge_ref(uvt_bridge_t* bridge);
UVT_EXTERN void uvt_bridge_unref(uvt_bridge_t* bridge);

/* Loop thread. Hooks around each batch of callbacks: enter runs before the
 * first callback that one drain of the bridge delivers (completions, items,
 * final callbacks, calls, await functions), leave after its last one; a
 * drain that delivers nothing calls neither. NULL removes a hook. A host
 * runtime opens and closes a callback scope here once per batch instead of
 * once per callback (Node: napi_open_callback_scope). Drop callbacks and
 * close_cb run outside batches. UV_EINVAL: bridge NULL, not initialised,
 * or not the loop thread. */
UVT_EXTERN int uvt_bridge_batch_hooks(uvt_bridge_t* bridge, uvt_batch_cb enter,
                                      uvt_batch_cb leave);

/* ---- threaded / threaded_separate (loop thread) -------------------------- */

struct uvt_work_s {
  void* data;
  uvt_bridge_t* bridge; /* read-only */
  /* private */
  uintptr_t uvt__tag;
  uvt_work_cb uvt__work;
  uvt_after_work_cb uvt__after;
  void* uvt__ctx;
  uintptr_t uvt__cancel; /* atomic: a tag of its own once cancelled (uvt_is_cancelled) */
  int uvt__status;
  int uvt__kind; /* on the pool, separate, or through lane.c (work.c) */
  uvt__task_t uvt__task;
  uvt__msg_t uvt__msg;
  uvt__inflight_t uvt__inflight;
  uvt__lane_link_t uvt__link; /* with a lane or a queue deadline only */
  uvt__timed_t uvt__timed;    /* with a queue deadline only */
};

/* Runs work(req) on the bridge's pool, then after(req, status) on the loop
 * thread: status 0 if work ran, UV_ECANCELED if it was cancelled before it
 * started. after may be NULL. UV_EINVAL: bridge/req/work NULL or not the loop
 * thread; UV_EBUSY: req still in flight; UV_EPIPE: bridge closing; UV_EAGAIN
 * if the pool has no thread and cannot start one. */
UVT_EXTERN int uvt_threaded(uvt_bridge_t* bridge, uvt_work_t* req,
                            uvt_work_cb work, uvt_after_work_cb after);

/* As uvt_threaded, but on a new dedicated thread (joined by the library), so
 * a long job never holds a pool slot; it starts even when the pool is busy.
 * The thread-creation error is returned if the thread cannot start. */
UVT_EXTERN int uvt_threaded_separate(uvt_bridge_t* bridge, uvt_work_t* req,
                                     uvt_work_cb work, uvt_after_work_cb after);

/* Loop thread. 0 if req was still queued (its after gets UV_ECANCELED, or
 * UV_ETIMEDOUT if its queue deadline had passed: see uvt_threaded_ex), also
 * when called again on it; UV_EBUSY if it is running or has run but its after
 * is not delivered yet, and always for separate work; in both UV_EBUSY cases
 * the request is flagged so uvt_is_cancelled(req) turns true. UV_EINVAL: NULL,
 * not in flight, or not the loop thread. */
UVT_EXTERN int uvt_cancel(uvt_work_t* req);

/* 1 once req was cancelled or its bridge started closing, else 0 (also for
 * NULL). Any thread, typically the work function polling for early exit. */
UVT_EXTERN int uvt_is_cancelled(const uvt_work_t* req);

/* ---- Lanes: bounded concurrency, back-pressure and queue deadlines -------- */

/* A lane caps how many of its tasks run at once on a pool, without
 * reserving threads: idle threads serve whichever lane, or plain
 * submission, has work, and tasks a saturated lane holds back wait in the
 * lane, not on a thread. A lane with max_running 1 is a serial queue: its
 * tasks run one at a time, in submission order (from one bridge), each
 * seeing the memory effects of the one before, on whatever thread is free
 * (one SQLite connection, one non-thread-safe library handle). */

typedef struct uvt_lane_options_s {
  unsigned int max_running; /* >= 1: tasks of this lane running at once (1 = serial, FIFO) */
  unsigned int max_queued;  /* tasks waiting in the lane beyond which submission fails with
                               UV_EAGAIN (the request is not taken); 0 = unbounded */
} uvt_lane_options_t;

typedef struct uvt_work_options_s {
  uvt_lane_t* lane;          /* NULL: the pool directly, as uvt_threaded */
  uint64_t queue_timeout_ms; /* 0 = none. If work has not started within this time of
                                the submission, it never runs and after gets UV_ETIMEDOUT */
} uvt_work_options_t;

typedef struct uvt_lane_stats_s {
  uint64_t submitted, completed, cancelled; /* as for the pool */
  uint64_t expired;           /* tasks that got UV_ETIMEDOUT */
  uint64_t rejected;          /* submissions refused with UV_EAGAIN (max_queued) */
  uint64_t queued, running;   /* now; queued includes tasks handed to the pool, not started */
  uint64_t oldest_queued_ns;  /* age of the task waiting longest now (0 if none) */
  uint64_t oldest_running_ns; /* age of the task running longest now (0 if none) */
} uvt_lane_stats_t;

/* Fills opts with the defaults: max_running 1 (serial), max_queued 0
 * (unbounded). Ignores NULL. */
UVT_EXTERN void uvt_lane_options_init(uvt_lane_options_t* opts);

/* Creates a lane on pool (NULL = uvt_pool_default()) with opts (NULL =
 * the defaults). Any bridge on that pool may submit to it. Any thread.
 * UV_EINVAL: lane NULL, max_running 0; UV_ENOMEM. */
UVT_EXTERN int uvt_lane_new(uvt_pool_t* pool, const uvt_lane_options_t* opts, uvt_lane_t** lane);

/* Frees the lane. UV_EBUSY while a task of it is queued, running, or done
 * but its after not yet called (from inside the after of its last task it
 * returns 0, and the lane is gone once it does); UV_EINVAL for NULL. Any
 * thread; the program makes sure nothing submits to it meanwhile. */
UVT_EXTERN int uvt_lane_free(uvt_lane_t* lane);

/* Copies the lane's counters, as uvt_pool_stats does (submitted ==
 * completed + cancelled + expired + queued + running). UV_EINVAL for NULL.
 * Any thread. */
UVT_EXTERN int uvt_lane_stats(uvt_lane_t* lane, uvt_lane_stats_t* out);

/* As uvt_threaded (opts NULL, or neither a lane nor a timeout: exactly
 * uvt_threaded), with a lane, a queue deadline, or both. Loop thread.
 * - A task of a lane with fewer than max_running tasks handed to the pool
 *   goes to the pool now; otherwise it waits in the lane, and when one of
 *   the lane's tasks ends the lane hands its next task to the back of the
 *   pool's queue.
 * - With a queue_timeout_ms, a task that has not started by then never
 *   runs: after(req, UV_ETIMEDOUT) comes within a few milliseconds of the
 *   deadline, also while every pool thread is busy (the bridge keeps a timer
 *   on its nearest deadline). A task starts when its worker reads the clock
 *   before running it; a task that started in time runs to the end.
 * - uvt_cancel of a task that waits in its lane or in the pool's queue: 0,
 *   after gets UV_ECANCELED; of a task whose deadline has passed but whose
 *   after has not run: 0, and after gets UV_ETIMEDOUT. A cancelled or
 *   expired task's after comes without waiting for its lane or a thread.
 *   A bridge close cancels the queued and lane-waiting tasks (a pending
 *   deadline never holds it up).
 * Nothing is allocated per task. UV_EINVAL: bridge/req/work NULL, not the
 * loop thread, or a lane of another pool than the bridge's; UV_EAGAIN: the
 * lane's max_queued tasks wait already (counted in rejected), or as for
 * uvt_threaded; UV_EBUSY: req in flight; UV_EPIPE: bridge closing. */
UVT_EXTERN int uvt_threaded_ex(uvt_bridge_t* bridge, uvt_work_t* req,
                               const uvt_work_options_t* opts, uvt_work_cb work,
                               uvt_after_work_cb after);

/* ---- threaded_iterable: a blocking generator, async-iterated --------------- */

struct uvt_iter_s {
  void* data;
  uvt_bridge_t* bridge; /* read-only */
  /* private */
  uvt_gen_cb uvt__gen;
  uvt_iter_cb uvt__cb;
  int uvt__separate;
  uvt__task_t uvt__task;
  uvt__stream_t uvt__stream;
};

/* Runs gen(it) on the pool (or, for _separate, on its own thread). Each
 * uvt_yield(it, item) in gen leads to cb(it, 0, item) on the loop thread, in
 * order and batched per wake-up; then exactly one final cb(it, status, NULL):
 * UV_EOF when gen returned 0, gen's negative code when it failed (after the
 * items it yielded), UV_ECANCELED when stopped early or by the bridge's close.
 * The final callback comes after gen returned; it may free the iterator.
 * At most max_size items are accepted by uvt_yield and not yet passed to cb;
 * the buffer of max_size pointers is allocated here. An open iterator keeps
 * the loop alive. Loop thread. UV_EINVAL: NULL bridge/it/gen/cb, max_size 0,
 * not the loop thread; UV_EBUSY: it still open; UV_EPIPE: bridge closing;
 * UV_ENOMEM; UV_EAGAIN or the thread-creation error if gen cannot start. */
UVT_EXTERN int uvt_threaded_iterable(uvt_bridge_t* bridge, uvt_iter_t* it, size_t max_size,
                                     uvt_gen_cb gen, uvt_iter_cb cb);
UVT_EXTERN int uvt_threaded_iterable_separate(uvt_bridge_t* bridge, uvt_iter_t* it,
                                              size_t max_size, uvt_gen_cb gen,
                                              uvt_iter_cb cb);

/* Generator thread only: hands item to the loop, blocking while max_size items
 * are outstanding. 0, or UV_EPIPE once the iterator was stopped (the item was
 * not taken: the generator cleans up and returns). UV_EINVAL when it is NULL
 * or the caller is not its generator. */
UVT_EXTERN int uvt_yield(uvt_iter_t* it, void* item);

/* Loop thread. Stop / restart delivery, like uv_read_stop/uv_read_start: a
 * paused iterator delivers nothing, also not the rest of a batch already
 * taken, and its generator blocks once the buffer is full. A paused
 * iterator also holds back its final callback, even after the generator
 * returned: resume or stop it to end it. Idempotent.
 * UV_EINVAL: NULL, stopped, after the final callback, not the loop thread. */
UVT_EXTERN int uvt_iter_pause(uvt_iter_t* it);
UVT_EXTERN int uvt_iter_resume(uvt_iter_t* it);

/* Loop thread. Stops early (the loop-side abort, like uvt_chan_stop):
 * buffered items go to drop (may be NULL) before this returns, a pending or
 * later uvt_yield returns UV_EPIPE at once, and the final callback
 * (UV_ECANCELED) follows once gen returned. If gen has not started it never
 * runs. May be called from inside cb. On Linux it makes one membarrier(2)
 * call (the generator's puts take no locked instruction) and waits for a
 * put in progress to publish its item, which it then drops. UV_EINVAL:
 * NULL, already stopped, after the final callback, not the loop thread. */
UVT_EXTERN int uvt_iter_stop(uvt_iter_t* it, uvt_drop_cb drop);

/* Deprecated alias of uvt_iter_stop (its 0.1 name), kept until 1.0. */
UVT_EXTERN int uvt_iter_close(uvt_iter_t* it, uvt_drop_cb drop);

/* Loop thread. An iterator is ref'd when it starts: while open it keeps
 * uv_run() alive. unref makes it stop doing so (a background producer must
 * not keep a program from exiting); ref undoes it. Like uv_ref/uv_unref:
 * idempotent, and ignored on a NULL, stopped or finished iterator or on
 * another thread. It still delivers whenever the loop runs. */
UVT_EXTERN void uvt_iter_ref(uvt_iter_t* it);
UVT_EXTERN void uvt_iter_unref(uvt_iter_t* it);

/* ---- Channel: from any threads to the loop -------------------------------- */

struct uvt_chan_s {
  void* data;
  uvt_bridge_t* bridge; /* read-only */
  /* private */
  uvt_chan_cb uvt__cb;
  uvt__stream_t uvt__stream;
};

/* Loop thread. Opens a channel: cb(ch, 0, item) per item in each producer's
 * order, then one final cb(ch, UV_EOF or UV_ECANCELED, NULL). max_size bounds
 * the items accepted and not yet passed to cb (allocated here). An open
 * channel keeps the loop alive. UV_EINVAL: NULL, max_size 0, not the loop
 * thread; UV_EBUSY: ch still open; UV_EPIPE: bridge closing; UV_ENOMEM. */
UVT_EXTERN int uvt_chan_init(uvt_bridge_t* bridge, uvt_chan_t* ch, size_t max_size,
                             uvt_chan_cb cb);

/* Any thread but the loop's (which gets UV_EBUSY, full or not). Blocks while
 * the channel is full. 0, or UV_EPIPE once it is closed, stopped or finished
 * (the item was not taken). UV_EINVAL for NULL. */
UVT_EXTERN int uvt_chan_put(uvt_chan_t* ch, void* item);

/* As uvt_chan_put, giving up with UV_ETIMEDOUT after timeout_ms. A timeout
 * too large to add to the clock saturates: it means "wait forever". */
UVT_EXTERN int uvt_chan_put_timeout(uvt_chan_t* ch, void* item, uint64_t timeout_ms);

/* Any thread, never blocks: UV_EAGAIN when full or paused and full. */
UVT_EXTERN int uvt_chan_try_put(uvt_chan_t* ch, void* item);

/* Any thread. Graceful producer-side close: later puts get UV_EPIPE (also
 * those blocked now); items already put are delivered, then cb(ch, UV_EOF,
 * NULL). UV_EPIPE if already closed, stopped or finished; UV_EINVAL for NULL. */
UVT_EXTERN int uvt_chan_close(uvt_chan_t* ch);

/* Loop thread. Stop / restart delivery; while paused the buffer fills,
 * putters block and try_put returns UV_EAGAIN. A paused channel also holds
 * back its final callback, even after uvt_chan_close: resume or stop it to
 * end it. Idempotent. UV_EINVAL: NULL, stopped, finished, not the loop
 * thread. */
UVT_EXTERN int uvt_chan_pause(uvt_chan_t* ch);
UVT_EXTERN int uvt_chan_resume(uvt_chan_t* ch);

/* Loop thread. Abort: blocked and later putters get UV_EPIPE, buffered items
 * go to drop (may be NULL) before this returns, then cb(ch, UV_ECANCELED,
 * NULL) once every blocked put has returned. When a lone producer put the
 * last 65536 items (uvt_bridge_init), this makes one membarrier(2) call
 * and waits for its put in progress to publish the item, which it then
 * drops. UV_EINVAL: NULL, already stopped or finished, not the loop
 * thread. */
UVT_EXTERN int uvt_chan_stop(uvt_chan_t* ch, uvt_drop_cb drop);

/* Loop thread. As uvt_iter_ref/uvt_iter_unref, for a channel: an unref'd
 * open channel does not keep uv_run() alive. Ignored on a NULL, closed,
 * stopped or finished channel or on another thread. */
UVT_EXTERN void uvt_chan_ref(uvt_chan_t* ch);
UVT_EXTERN void uvt_chan_unref(uvt_chan_t* ch);

/* ---- Calling loop work from threads ---------------------------------------- */

/* Any thread: runs fn(arg) on the loop thread soon (call_soon_threadsafe),
 * in submission order per calling thread, never dropped. UV_EINVAL: NULL
 * bridge or fn, or bridge not initialised; UV_EPIPE: bridge closing;
 * UV_ENOMEM. An idle bridge does not keep the loop alive for it: see
 * uvt_bridge_ref. It never waits for the loop, and allocates only while
 * the thread has more calls in flight than ever before; a thread with
 * 16384 calls in flight and none delivered since its last call yields
 * its CPU (sched_yield) once per call, so that calling threads cannot
 * starve the loop thread of CPU on a busy machine. */
UVT_EXTERN int uvt_call(uvt_bridge_t* bridge, uvt_call_cb fn, void* arg);

/* Any thread but the loop's: runs fn(aw, arg) on the loop thread and blocks
 * until the loop side calls uvt_await_resolve(aw, status), now or from a later
 * loop callback; returns that status. UV_EBUSY on the loop thread (at once,
 * no deadlock); UV_EINVAL: NULL bridge/fn; UV_EPIPE: bridge closing;
 * UV_ECANCELED if the bridge closed before fn started (fn never runs);
 * UV_ENOMEM. Once fn started, the bridge's close waits for the resolve.
 * The caller blocks meanwhile: if fn needs the pool (it submits work and
 * resolves in the work's after) and every pool thread is busy, it waits for
 * one to free, and forever when the caller is the only thread of its pool. */
UVT_EXTERN int uvt_sync_await(uvt_bridge_t* bridge, uvt_await_cb fn, void* arg);

/* Loop thread, exactly once per await; aw is invalid afterwards. A second
 * call on the same await is a programming error: debug builds assert, release
 * builds ignore it (awaits are owned by the bridge, and each use of one gets
 * a handle of its own, so a stale handle resolves nothing: that holds until
 * the same record has served another 128 awaits). */
UVT_EXTERN void uvt_await_resolve(uvt_await_t* aw, int status);

/* ---- Context propagation (like contextvars) -------------------------------- */

/* The calling thread's current context value (NULL at first). It is captured
 * by every submission and is current while that submission's callbacks run,
 * on both threads; the previous value is restored afterwards. */
UVT_EXTERN void uvt_context_set(void* ctx);
UVT_EXTERN void* uvt_context_get(void);

#ifdef __cplusplus
}
#endif
#endif /* UVTHREADS_H */
