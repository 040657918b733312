/* The thread pool: workers, wake-up policy, parking, elastic sizing, stats.
 *
 * The run queue is a pair of lock-free rings (ring.h). Submissions come
 * from loop threads, nearly always one per pool: the first bridge attached
 * is the sole producer of the pool's own ring and puts with plain stores,
 * no locked instruction. Bridges attached beside it share a second ring
 * (made when the first of them attaches) and claim cells with a CAS.
 * Workers take from both, alternating which comes first. When a ring is
 * full, tasks go to an overflow queue under the pool's mutex, and so do all
 * submissions until it is empty again (so that the overflow is not
 * starved). Nothing allocates per task.
 *
 * Idle workers spin briefly (one at a time), then park on their own
 * condition variable in a LIFO list, so the most recently idle (cache-warm)
 * worker is woken first. At most one worker is "waking" at a time
 * (signalled, freshly started or spinning): a submitter wakes nobody while
 * one is on its way, and a waking worker that takes a task wakes the next
 * one only if work is still waiting, so a burst never wakes every thread at
 * once. If its last task was short, it takes the waiting work alone
 * instead (a sprint, see uvt__try_sprint), watched by a parked worker
 * that steps in if the sprinter gets stuck in a long task. The only awake
 * worker, when it catches up with a flood, lets the submitter get ahead
 * for a few microseconds before it looks again (UVT__CATCH_UP_NS).
 *
 * The lost-wake-up race between a submitter and a parking worker is closed
 * Dekker-style: the submitter publishes its task, then reads `waking`,
 * `sprint` and `parked`; a worker gives up `waking` or `sprint` or
 * publishes `parked`, then looks at the queues again. With a sequentially
 * consistent fence between each side's store and its load, either the
 * worker sees the task or the submitter sees the worker.
 *
 * The submitter's fence is most of a submit's cost (it waits for the stores
 * to the request's lines, which a worker's cache had last), so a loop
 * delivering a batch of completions leaves it out: its callbacks' submits
 * read waking and parked unfenced, and the batch ends with one fence and
 * the check again (uvt__pool_recheck). A stale read in between can only
 * leave a task to a worker that has just taken a task of its own or just
 * parked: it then waits for the end of the batch (or of that worker's
 * task); it is never lost.
 *
 * Lanes (lane.c) keep tasks back above the pool and hand them in later,
 * from any thread, through the shared ring; the pool counts what they hold
 * through their backlogs (pool.h) and knows nothing else of them. A task
 * whose queue deadline has passed tells the worker so from its work hook,
 * and the pool counts it as expired. */
#include "pool.h"

#include "clock.h"
#include "ring.h"

/* How long the last awake worker looks for work before it parks: long
 * enough to catch a loop's next request in a sequence of round trips. A
 * worker that goes idle while others are awake parks at once: they are
 * running tasks they will come back from, and a spinner beside them would
 * only take CPU from them and from the loop (measured: the 4-thread no-op
 * throughput doubles on 2 cores). */
#define UVT__SPIN_NS 20000u

/* How long the only awake worker, having caught up with a flood (it ran two
 * or more tasks in a row and the queue is empty), waits before it looks at
 * the queue again. A submitter puts tasks one at a time, and a worker right
 * behind it takes each one as soon as it is published: then every cell's
 * line, and every request's lines (which a caller's array packs side by
 * side), cross between the two CPUs once per task instead of once per
 * line, and every catch-up runs the sprint's end, the lock and the spin.
 * Waiting a few microseconds, without touching shared memory, lets the
 * submitter get a hundred or more tasks ahead. Measured with this and the
 * two-long-tasks rule of uvt__sprint_task_done, no-op floods of 2 M tasks
 * on fresh pools, medians of 18: 1 thread 24 -> 39 M tasks/s, 2 threads
 * 27 -> 32 M, 4 threads 18 -> 29 M. Waits of 2.5, 5 and 10 us measured
 * alike at 1 thread; a yield in the wait made it slower. */
#define UVT__CATCH_UP_NS 5000u

/* Sprints (see uvt__try_sprint): a worker whose last task ran at most
 * UVT__SPRINT_TASK_NS may take a backlog alone instead of waking the next
 * worker (until two tasks in a row run longer), while a parked watcher
 * looks every UVT__WATCH_NS whether the queue still moves. A sprinter
 * stuck in one task thus holds up the tasks behind it for at most about
 * two watch periods. */
#define UVT__SPRINT_TASK_NS 5000u
#define UVT__WATCH_NS 100000u

/* Where a task is queued (task->where). The submitting thread writes it
 * when it puts the task; a worker that takes a task from the overflow
 * queue sets it to OUT under the mutex while the submitter may be reading
 * it, hence relaxed atomics (a ring task's is written by its submitter
 * only, so reading a ring's value without the lock is exact). */
enum {
  UVT__TASK_OUT = 0,
  UVT__TASK_IN_OWN_RING = 1,
  UVT__TASK_IN_SHARED_RING = 2,
  UVT__TASK_IN_OVERFLOW = 3
};

typedef struct uvt__worker_s {
  uvt_pool_t* pool;
  uv_cond_t cond;
  uvt__qnode_t idle_node;
  uvt__qnode_t all_node; /* in pool->workers, for the stats */
  int signalled;
  unsigned index;
  unsigned takes; /* which ring a take tries first */
  int sprinting;         /* it started the pool's sprint (which may have ended) */
  unsigned long_runs;    /* tasks in a row that ran longer than sprint_ticks */
  uint64_t sprint_ticks; /* UVT__SPRINT_TASK_NS in ticks, set when it started */
  uint64_t last_run;     /* ticks its last task ran; UINT64_MAX before the first */
  /* Written only by this worker (relaxed stores, no read-modify-write),
   * read by uvt_pool_stats: no cache line is shared between workers. Times
   * are in ticks of the stats clock (see clock.c). */
  _Alignas(UVT__CACHE_LINE) uint64_t started;
  uint64_t completed;
  uint64_t skipped; /* taken, but their queue deadline had passed: not run */
  uint64_t running_since; /* the start of the task it runs now; 0 between tasks */
  uint64_t run_ns_total, run_ns_max, wait_ns_total, wait_ns_max;
} uvt__worker_t;

struct uvt_pool_s {
  uvt__ring_t own;     /* put by the sole producer (see uvt__pool_attach) */
  uvt__ring_t* shared; /* put by the other bridges; made on demand, atomic */

  /* Read by submitters without the lock; written under it, atomically. */
  _Alignas(UVT__CACHE_LINE) unsigned parked; /* workers in the idle list */
  unsigned waking;  /* signalled, starting or spinning: will look for work */
  unsigned threads; /* workers alive */
  unsigned sprint;  /* the sprinting worker's index + 1, or 0 */

  /* The overflow queue is not empty: read without the lock, written under it. */
  _Alignas(UVT__CACHE_LINE) unsigned overflowing;

  /* Guarded by mutex. */
  _Alignas(UVT__CACHE_LINE) uv_mutex_t mutex;
  uvt__qnode_t overflow;
  uvt__qnode_t idle; /* parked workers, most recently idle first */
  unsigned spinning;
  struct uvt__worker_s* watcher; /* the parked worker that watches sprints */
  unsigned spawned; /* dedicated (separate) threads not yet exiting */
  unsigned bridges;
  int has_sole_producer;
  unsigned next_index;
  int shutdown;
  int is_default;
  uv_cond_t exited; /* uvt_pool_free waits here for the last thread */
  uvt__reap_t last_exited;
  uvt_pool_options_t opts;
  char name[16];
  uint64_t cancelled;
  uint64_t expired;    /* withdrawn from the queue at their deadline */
  uint64_t overflowed; /* submissions that went to the overflow queue */
  uint64_t refused;    /* submissions withdrawn because no thread could start */
  uvt__qnode_t workers; /* every live worker */
  /* The counters of workers that exited (times in ticks). */
  uint64_t started, completed, skipped, run_ns_total, run_ns_max, wait_ns_total, wait_ns_max;
  uvt__qnode_t backlogs; /* of the lanes on this pool (uvt__backlog_t) */
  uint64_t held_cancelled, held_expired; /* of the backlogs removed */
};

/* Single-writer counters: a relaxed load and store, no locked instruction. */
static void uvt__count_add(uint64_t* counter, uint64_t v) {
  uvt__store_relaxed(counter, uvt__load_relaxed(counter) + v);
}
static void uvt__count_max(uint64_t* counter, uint64_t v) {
  if (v > uvt__load_relaxed(counter)) uvt__store_relaxed(counter, v);
}

/* Acquire: pairs with the release store that publishes the shared ring,
 * so its cells are seen initialised. */
static uvt__ring_t* uvt__shared_ring(uvt_pool_t* pool) {
  return uvt__load_acquire(&pool->shared);
}

/* Whether work waits: the worker's side of the handshake (see the top of
 * the file). The caller has just run a seq_cst fence (or holds the lock
 * that the overflow path writes under). */
static int uvt__work_waiting(uvt_pool_t* pool) {
  uvt__ring_t* shared = uvt__shared_ring(pool);
  return uvt__ring_busy(&pool->own) || (shared != NULL && uvt__ring_busy(shared)) ||
         uvt__load_relaxed(&pool->overflowing);
}

/* For spinners: a hint (see uvt__ring_next_full). */
static int uvt__work_hint(uvt_pool_t* pool) {
  uvt__ring_t* shared = uvt__shared_ring(pool);
  return uvt__ring_next_full(&pool->own) || (shared != NULL && uvt__ring_next_full(shared)) ||
         uvt__load_relaxed(&pool->overflowing);
}

/* Someone will take a task put now: a waking worker, or a sprinter (which
 * comes back to the queue after its task, or is relieved by the watcher).
 * Relaxed: the callers fenced first (see the top of the file) or only
 * skip a fence that a batch's end makes up for. */
static int uvt__taker_on_way(uvt_pool_t* pool) {
  return uvt__load_relaxed(&pool->waking) > 0 || uvt__load_relaxed(&pool->sprint) != 0;
}

/* How many tasks workers have taken from the rings: the watcher's sign
 * that a sprint moves. Relaxed: a hint. */
static uint64_t uvt__pool_takes(uvt_pool_t* pool) {
  uvt__ring_t* shared = uvt__shared_ring(pool);
  return uvt__ring_takes(&pool->own) + (shared != NULL ? uvt__ring_takes(shared) : 0);
}

/* Takes the next task: from the rings (alternating which comes first, so
 * that neither starves the other), else from the overflow queue. */
static uvt__task_t* uvt__take(uvt_pool_t* pool, uvt__worker_t* w) {
  uvt__ring_t* shared = uvt__shared_ring(pool);
  uvt__ring_t* first = &pool->own;
  uvt__ring_t* second = shared;
  uvt__task_t* task;
  if (shared != NULL && (w->takes++ & 1)) {
    first = shared;
    second = &pool->own;
  }
  task = uvt__ring_take(first);
  if (task == NULL && second != NULL) task = uvt__ring_take(second);
  if (task != NULL || !uvt__load_relaxed(&pool->overflowing)) return task;
  uv_mutex_lock(&pool->mutex);
  if (!uvt__queue_empty(&pool->overflow)) {
    task = uvt__container_of(pool->overflow.next, uvt__task_t, node);
    uvt__queue_remove(&task->node);
    uvt__store_relaxed(&task->where, UVT__TASK_OUT);
    if (uvt__queue_empty(&pool->overflow)) uvt__store_relaxed(&pool->overflowing, 0u);
  }
  uv_mutex_unlock(&pool->mutex);
  return task;
}

static UVT__THREAD_LOCAL uvt_pool_t* uvt__tls_pool; /* the pool owning this thread */

void uvt_pool_options_init(uvt_pool_options_t* opts) {
  if (opts == NULL) return;
  memset(opts, 0, sizeof(*opts));
  opts->min_threads = 0;
  opts->max_threads = 16;
  opts->idle_timeout_ms = 10000;
  opts->stack_size = 0;
  opts->name = NULL;
}

static int uvt__thread_start(uvt_pool_t* pool, void (*fn)(void*), void* arg) {
  uv_thread_t tid;
  uv_thread_options_t topts;
  topts.flags = pool->opts.stack_size ? UV_THREAD_HAS_STACK_SIZE : UV_THREAD_NO_FLAGS;
  topts.stack_size = pool->opts.stack_size;
  return uv_thread_create_ex(&tid, &topts, fn, arg);
}

/* Tells uvt_pool_free that the last thread is gone. Lock held. */
static void uvt__signal_if_empty_locked(uvt_pool_t* pool) {
  if (uvt__load_relaxed(&pool->threads) == 0 && pool->spawned == 0) uv_cond_signal(&pool->exited);
}

/* Registers the calling thread as the last one to exit and returns the one
 * before it, for the caller to join once it is done. Lock held. */
static uvt__reap_t uvt__register_exit_locked(uvt_pool_t* pool) {
  uvt__reap_t prev = pool->last_exited;
  pool->last_exited.thread = uv_thread_self();
  pool->last_exited.valid = 1;
  uvt__signal_if_empty_locked(pool);
  return prev;
}

uvt__reap_t uvt__pool_thread_exiting(uvt_pool_t* pool) {
  uvt__reap_t prev;
  uv_mutex_lock(&pool->mutex);
  pool->spawned--;
  prev = uvt__register_exit_locked(pool);
  uv_mutex_unlock(&pool->mutex);
  return prev;
}

void uvt__reap(uvt__reap_t reap) {
  if (reap.valid) uv_thread_join(&reap.thread);
}

/* Takes parked worker w off the idle list as a waking worker (it stops
 * watching: the callers end or saw no sprint, and sprints start under the
 * lock). Lock held. */
static void uvt__unpark_locked(uvt_pool_t* pool, uvt__worker_t* w) {
  if (pool->watcher == w) pool->watcher = NULL;
  uvt__queue_remove(&w->idle_node);
  uvt__fetch_sub_seq_cst(&pool->parked, 1u);
  uvt__fetch_add_seq_cst(&pool->waking, 1u);
  w->signalled = 1;
}

/* Wakes the most recently parked worker. Lock held. */
static void uvt__wake_one_locked(uvt_pool_t* pool) {
  uvt__worker_t* w = uvt__container_of(pool->idle.next, uvt__worker_t, idle_node);
  uvt__unpark_locked(pool, w);
  uv_cond_signal(&w->cond);
}

/* Makes sure someone will take the waiting work: returns 1 when the caller
 * must start a new worker (already counted) after dropping the lock. */
static int uvt__ensure_taker_locked(uvt_pool_t* pool) {
  if (uvt__taker_on_way(pool) || !uvt__work_waiting(pool)) return 0;
  if (!uvt__queue_empty(&pool->idle)) {
    uvt__wake_one_locked(pool);
    return 0;
  }
  if (uvt__load_relaxed(&pool->threads) < pool->opts.max_threads && !pool->shutdown) {
    uvt__fetch_add_seq_cst(&pool->threads, 1u);
    uvt__fetch_add_seq_cst(&pool->waking, 1u);
    return 1;
  }
  return 0;
}

static void uvt__worker_main(void* arg);

/* Nobody is parked and there is no room for a new thread. Relaxed: the
 * caller fenced between publishing its task (or dropping waking) and these
 * loads, or checks again after the fence (see the top of the file). */
static int uvt__no_taker_to_add(uvt_pool_t* pool) {
  return uvt__load_relaxed(&pool->parked) == 0 &&
         uvt__load_relaxed(&pool->threads) >= pool->opts.max_threads;
}

/* uvt__ensure_taker_locked from outside the lock, which it skips when
 * there is no taker to add. */
static int uvt__ensure_taker(uvt_pool_t* pool) {
  int spawn;
  if (uvt__no_taker_to_add(pool)) return 0;
  uv_mutex_lock(&pool->mutex);
  spawn = uvt__ensure_taker_locked(pool);
  uv_mutex_unlock(&pool->mutex);
  return spawn;
}

/* Starts a worker already counted in threads and waking. */
static int uvt__start_worker(uvt_pool_t* pool) {
  uvt__worker_t* w = uvt__calloc(1, sizeof(*w));
  int rc = UV_ENOMEM;
  if (w != NULL) {
    w->pool = pool;
    w->last_run = UINT64_MAX;
    rc = uv_cond_init(&w->cond);
    if (rc == 0) {
      uv_mutex_lock(&pool->mutex);
      w->index = pool->next_index++;
      uv_mutex_unlock(&pool->mutex);
      rc = uvt__thread_start(pool, uvt__worker_main, w);
      if (rc == 0) return 0;
      uv_cond_destroy(&w->cond);
    }
    uvt__free(w);
  }
  uv_mutex_lock(&pool->mutex);
  uvt__fetch_sub_seq_cst(&pool->threads, 1u);
  uvt__fetch_sub_seq_cst(&pool->waking, 1u);
  uvt__signal_if_empty_locked(pool);
  uv_mutex_unlock(&pool->mutex);
  return rc;
}

/* Runs task and returns the clock at its end. `now` is the end of the task
 * run just before, when this one was taken right after it, else 0: back to
 * back, one clock read serves as the end of one and the start of the next
 * (a read is 7 ns on this VM, a tenth of a no-op task's whole cost). The
 * start is never put before the task's submit. */
static uint64_t uvt__run_task(uvt__worker_t* w, uvt__task_t* task, uint64_t now) {
  uint64_t start = now == 0 ? uvt__ticks() : now > task->submit_ticks ? now : task->submit_ticks;
  uint64_t waited = uvt__ticks_since(task->submit_ticks, start);
  uint64_t end, took;
  uvt__count_add(&w->started, 1);
  /* Relaxed, like the counters: the stats read it as a snapshot. */
  uvt__store_relaxed(&w->running_since, start);
  if (task->work(task) != 0) {
    /* Its queue deadline had passed: it did not run. */
    uvt__store_relaxed(&w->running_since, (uint64_t)0);
    uvt__count_add(&w->skipped, 1);
    task->done(task);
    return 0;
  }
  end = uvt__ticks();
  took = uvt__ticks_since(start, end);
  uvt__store_relaxed(&w->running_since, (uint64_t)0);
  /* Relaxed: counters only. They are written before task->done publishes the
   * completion, and the bridge's release/acquire handoff orders them before
   * the loop's read of the stats. */
  uvt__count_add(&w->wait_ns_total, waited);
  uvt__count_max(&w->wait_ns_max, waited);
  uvt__count_add(&w->run_ns_total, took);
  uvt__count_max(&w->run_ns_max, took);
  uvt__count_add(&w->completed, 1);
  w->last_run = took;
  task->done(task); /* the last touch of task */
  return end;
}

/* Instead of waking the next worker for the work behind the task it took,
 * a worker whose last task was short takes that work alone: a sprint. In
 * a flood of short tasks the next worker would only park again moments
 * later, and on a machine with few cores the wake-ups, parks and extra
 * runnable threads cost more than they help. While the sprint runs,
 * submitters wake nobody (uvt__taker_on_way). It ends when the queue is
 * empty or two tasks in a row run long (uvt__end_sprint), or when the
 * watcher, a parked worker that looks every UVT__WATCH_NS, finds the queue
 * has not moved while work waits: the sprinter is stuck in a task, and the
 * watcher takes the work instead. So a sprint needs a parked worker; it
 * returns 1 if the waiting work is covered (by this sprint or another). */
static int uvt__try_sprint(uvt_pool_t* pool, uvt__worker_t* w) {
  uint64_t sprint_ticks = (uint64_t)((double)UVT__SPRINT_TASK_NS / uvt__ns_per_tick());
  int covered = 0;
  if (w->last_run > sprint_ticks) return 0;
  uv_mutex_lock(&pool->mutex);
  if (uvt__load_relaxed(&pool->sprint) != 0) {
    covered = 1; /* another worker sprints, watched */
  } else if (!uvt__queue_empty(&pool->idle) && !pool->shutdown) {
    if (pool->watcher == NULL) {
      pool->watcher = uvt__container_of(pool->idle.next, uvt__worker_t, idle_node);
      uv_cond_signal(&pool->watcher->cond); /* it waits again, for a watch period */
    }
    w->sprinting = 1;
    w->long_runs = 0;
    w->sprint_ticks = sprint_ticks;
    /* Relaxed: submitters that miss it only wake a worker needlessly; ours
     * is on its way (it takes from the queue right after this). */
    uvt__store_relaxed(&pool->sprint, w->index + 1u);
    covered = 1;
  }
  uv_mutex_unlock(&pool->mutex);
  return covered;
}

/* Ends the worker's sprint unless the watcher ended it already; then, if
 * hand_on, makes sure someone takes the work still waiting. */
static void uvt__end_sprint(uvt_pool_t* pool, uvt__worker_t* w, int hand_on) {
  unsigned mine = w->index + 1u;
  w->sprinting = 0;
  if (!uvt__cas_strong_seq_cst(&pool->sprint, &mine, 0u)) return;
  /* Seq_cst: a submitter that saw the sprint and left its task to us is
   * seen by uvt__work_waiting, here or in the caller's look at the queue
   * (see the top of the file). */
  uvt__fence_seq_cst();
  if (hand_on && uvt__work_waiting(pool) && uvt__ensure_taker(pool)) uvt__start_worker(pool);
}

/* A waking worker found work: it is no longer on its way, so if more work
 * waits it sprints or hands the waking role on (to a parked worker or a
 * new one). */
static void uvt__worker_found_work(uvt_pool_t* pool, uvt__worker_t* w) {
  /* The sprint starts before waking drops, so that submitters never see
   * nobody on the way (they would wake a worker for nothing). */
  int tried = uvt__work_hint(pool);
  if (tried && uvt__try_sprint(pool, w)) {
    uvt__fetch_sub_seq_cst(&pool->waking, 1u);
    return;
  }
  uvt__fetch_sub_seq_cst(&pool->waking, 1u);
  /* Seq_cst: a submitter that left its task to us is seen by
   * uvt__work_waiting (see the top of the file). Work that came in after
   * the hint gets a sprint too (a submitter may have woken a worker in
   * between, which costs a wake-up but loses nothing): in a flood the
   * loop puts its next task just after a spinner took the only one. A
   * sprint already refused above is not asked for twice. */
  uvt__fence_seq_cst();
  if (!uvt__work_waiting(pool) || (!tried && uvt__try_sprint(pool, w))) return;
  if (uvt__ensure_taker(pool)) uvt__start_worker(pool);
}

/* The watcher's wait: one watch period. Returns 1 if it relieved a
 * sprinter stuck in a task (it is then waking and off the idle list), 0
 * otherwise (it may have stopped watching). Lock held. */
static int uvt__watch_locked(uvt_pool_t* pool, uvt__worker_t* w) {
  uint64_t takes = uvt__pool_takes(pool);
  uv_cond_timedwait(&w->cond, &pool->mutex, UVT__WATCH_NS);
  if (w->signalled || pool->shutdown || pool->watcher != w) return 0;
  if (uvt__load_relaxed(&pool->sprint) == 0) {
    pool->watcher = NULL; /* the next sprint appoints one again */
    return 0;
  }
  if (uvt__pool_takes(pool) != takes || !uvt__work_waiting(pool)) return 0;
  /* Relaxed, like the sprint's start: it only makes submitters wake
   * workers again. The sprinter's own end (a CAS) then fails. */
  uvt__store_relaxed(&pool->sprint, 0u);
  uvt__unpark_locked(pool, w);
  return 1;
}

/* After a sprinter's task: a sprint is for short tasks, so it ends (and the
 * work behind is handed on) once two tasks in a row have run long. One is
 * not enough: a short task whose worker was preempted in the middle looks
 * long too, and on a machine with few cores that happens whenever a timer
 * or a woken thread lands on the sprinter's CPU; each such end woke another
 * worker, which then parked again (4-thread no-op flood, 2 M tasks, medians
 * of 18, both with the catch-up wait: 24 -> 30 M tasks/s). */
static void uvt__sprint_task_done(uvt_pool_t* pool, uvt__worker_t* w) {
  if (w->last_run <= w->sprint_ticks) {
    w->long_runs = 0;
  } else if (++w->long_runs >= 2) {
    uvt__end_sprint(pool, w, 1);
  }
}

/* Every other worker is parked. Relaxed: a hint for spinning. */
static int uvt__alone_awake(uvt_pool_t* pool) {
  return uvt__load_relaxed(&pool->parked) + 1u >= uvt__load_relaxed(&pool->threads);
}

/* Spins briefly for new work with the lock dropped, counted as waking so
 * that submitters leave the work to it. Lock held on entry and exit.
 * It yields its CPU now and then: a scheduler may wake the loop thread
 * onto the spinner's CPU (this machine's VM kernel packs threads onto a
 * busy CPU while the other idles), and the loop, whose next submit is the
 * only thing that ends the spin, then runs at once instead of after it
 * (measured when this spin came in, 4-thread no-op flood: 10.6 -> 16.4 M
 * tasks/s median). */
static void uvt__spin_locked(uvt_pool_t* pool, uvt__worker_t* w) {
  pool->spinning++;
  uvt__fetch_add_seq_cst(&pool->waking, 1u);
  /* A sprinter stays on the way without a gap: waking first, then the end. */
  if (w->sprinting) uvt__end_sprint(pool, w, 0);
  uv_mutex_unlock(&pool->mutex);
  /* A yield first: a loop thread on our CPU (internal.h) has just been
   * handed what we posted, and its answer is the next task (a task's
   * round trip with the loop and the worker on one CPU: p50 1.8 -> 1.6
   * us). Alone on the CPU, a yield costs about 150 ns. */
  if (!uvt__work_hint(pool)) uvt__thread_yield();
  UVT__SPIN_WHILE_YIELDING(!uvt__work_hint(pool), UVT__SPIN_NS, 1);
  uv_mutex_lock(&pool->mutex);
  pool->spinning--;
}

/* Parks the worker until it is signalled, the pool shuts down or (if timed)
 * the idle timeout passes. Returns 1 if it was signalled. Lock held. */
static int uvt__park_locked(uvt_pool_t* pool, uvt__worker_t* w, int* timed_out) {
  int timed = uvt__load_relaxed(&pool->threads) > pool->opts.min_threads;
  uint64_t deadline = uv_hrtime() + (uint64_t)pool->opts.idle_timeout_ms * 1000000u;
  *timed_out = 0;
  w->signalled = 0;
  uvt__queue_insert_head(&pool->idle, &w->idle_node); /* LIFO: woken first */
  uvt__fetch_add_seq_cst(&pool->parked, 1u);
  /* Seq_cst: published parked, now look again (see the top of the file). */
  uvt__fence_seq_cst();
  if (uvt__work_waiting(pool)) {
    uvt__queue_remove(&w->idle_node);
    uvt__fetch_sub_seq_cst(&pool->parked, 1u);
    return 0;
  }
  while (!w->signalled && !pool->shutdown) {
    uint64_t now;
    if (pool->watcher == w) {
      if (uvt__watch_locked(pool, w)) return 1;
      continue;
    }
    if (!timed) {
      uv_cond_wait(&w->cond, &pool->mutex);
      continue;
    }
    now = uv_hrtime();
    if (now >= deadline) {
      /* Others exited meanwhile and the pool is down to min_threads: stay
       * parked (and counted idle), untimed, rather than leave the idle
       * list only to come back to it. */
      if (uvt__load_relaxed(&pool->threads) <= pool->opts.min_threads) {
        timed = 0;
        continue;
      }
      *timed_out = 1;
      break;
    }
    uv_cond_timedwait(&w->cond, &pool->mutex, deadline - now);
  }
  if (w->signalled) return 1; /* the waker took us off the list */
  uvt__queue_remove(&w->idle_node);
  uvt__fetch_sub_seq_cst(&pool->parked, 1u);
  return 0;
}

static void uvt__worker_main(void* arg) {
  uvt__worker_t* w = arg;
  uvt_pool_t* pool = w->pool;
  int waking = 1; /* counted in pool->waking by whoever started us */
  int spun = 0;   /* spun once since the last task: park next */
  int counted = 1; /* still counted in pool->threads */
  uvt__reap_t prev;
  char name[32];

  snprintf(name, sizeof(name), "%s-%u", pool->name, w->index);
  uvt__thread_set_name(name);
  uvt__tls_pool = pool;

  uv_mutex_lock(&pool->mutex);
  uvt__queue_insert_tail(&pool->workers, &w->all_node);
  for (;;) {
    uvt__task_t* task;
    unsigned in_a_row = 0; /* tasks run since the queue was last found empty */
    uint64_t now = 0;      /* the last task's end, if nothing came after it */
    int timed_out;
    uv_mutex_unlock(&pool->mutex);
    while ((task = uvt__take(pool, w)) != NULL) {
      if (waking) {
        waking = 0;
        uvt__worker_found_work(pool, w);
      }
      spun = 0;
      now = uvt__run_task(w, task, now);
      if (w->sprinting) {
        uvt__sprint_task_done(pool, w);
        now = 0;
      }
      /* Caught up with a flood: let the submitter get ahead (see
       * UVT__CATCH_UP_NS). The wait only reads the clock. */
      if (++in_a_row >= 2 && uvt__alone_awake(pool) && !uvt__work_hint(pool)) {
        UVT__SPIN_WHILE(1, UVT__CATCH_UP_NS);
        now = 0;
      }
    }
    /* A sprint outlasts an empty queue until the worker spins or parks:
     * both look at the queue again after it ends. */
    uv_mutex_lock(&pool->mutex);
    if (uvt__work_waiting(pool)) {
      /* A task came in since the take, or a put to the shared ring claimed
       * its cell but has not filled it yet: it is a few instructions from
       * done, unless its thread was preempted. */
      uv_mutex_unlock(&pool->mutex);
      UVT__SPIN_WHILE(!uvt__work_hint(pool), 2000u);
      if (!uvt__work_hint(pool)) uvt__thread_yield();
      uv_mutex_lock(&pool->mutex);
      continue;
    }
    if (pool->shutdown) {
      if (w->sprinting) uvt__end_sprint(pool, w, 0);
      break;
    }
    if (waking) {
      uvt__fetch_sub_seq_cst(&pool->waking, 1u);
      waking = 0;
    }
    if (!spun && pool->spinning == 0 && uvt__alone_awake(pool)) {
      uvt__spin_locked(pool, w);
      spun = 1;
      waking = 1;
      continue;
    }
    if (w->sprinting) uvt__end_sprint(pool, w, 0);
    if (uvt__park_locked(pool, w, &timed_out)) {
      waking = 1; /* the waker counted us in pool->waking */
      continue;
    }
    if (pool->shutdown) break;
    /* Threads above min_threads give up after idle_timeout_ms. The count
     * drops before the last look at the queue, Dekker-style (see the top
     * of the file): a submitter that published a task and then read the
     * old count (no room for a thread, nobody parked: it wakes nobody) has
     * its task seen here; one that reads the new count starts a thread. */
    if (timed_out && uvt__load_relaxed(&pool->threads) > pool->opts.min_threads) {
      UVT__TEST_POINT("pool.worker.exit", pool); /* a submit lands here */
      /* Seq_cst RMW: the count is published before the queue is read. */
      uvt__fetch_sub_seq_cst(&pool->threads, 1u);
      if (!uvt__work_waiting(pool)) {
        counted = 0;
        break;
      }
      uvt__fetch_add_seq_cst(&pool->threads, 1u);
    }
  }

  /* Exit: register as the last exited thread; the next one (or
   * uvt_pool_free) joins us. After the unlock nothing of the pool is touched. */
  if (counted) uvt__fetch_sub_seq_cst(&pool->threads, 1u);
  if (pool->watcher == w) pool->watcher = NULL;
  uvt__queue_remove(&w->all_node);
  pool->started += w->started;
  pool->completed += w->completed;
  pool->skipped += w->skipped;
  pool->run_ns_total += w->run_ns_total;
  pool->wait_ns_total += w->wait_ns_total;
  if (w->run_ns_max > pool->run_ns_max) pool->run_ns_max = w->run_ns_max;
  if (w->wait_ns_max > pool->wait_ns_max) pool->wait_ns_max = w->wait_ns_max;
  prev = uvt__register_exit_locked(pool);
  uv_mutex_unlock(&pool->mutex);
  uv_cond_destroy(&w->cond);
  uvt__free(w);
  uvt__reap(prev);
}

static int uvt__pool_create(uvt_pool_t** out, const uvt_pool_options_t* opts, int is_default) {
  uvt_pool_options_t defaults;
  uvt_pool_t* pool;
  unsigned i;
  int rc;

  if (out == NULL) return UV_EINVAL;
  uvt__spin_policy_update();
  if (opts == NULL) {
    uvt_pool_options_init(&defaults);
    opts = &defaults;
  }
  if (opts->max_threads == 0 || opts->min_threads > opts->max_threads) return UV_EINVAL;
  uvt__clock_init();

  pool = uvt__aligned_alloc(UVT__CACHE_LINE, sizeof(*pool));
  if (pool == NULL) return UV_ENOMEM;
  memset(pool, 0, sizeof(*pool));
  if (uvt__ring_init(&pool->own) != 0) {
    uvt__free(pool);
    return UV_ENOMEM;
  }
  pool->opts = *opts;
  pool->is_default = is_default;
  snprintf(pool->name, sizeof(pool->name), "%.10s", opts->name ? opts->name : "uvt");
  pool->opts.name = pool->name;
  uvt__queue_init(&pool->overflow);
  uvt__queue_init(&pool->idle);
  uvt__queue_init(&pool->workers);
  uvt__queue_init(&pool->backlogs);
  if ((rc = uv_mutex_init(&pool->mutex)) != 0) goto fail_mutex;
  if ((rc = uv_cond_init(&pool->exited)) != 0) goto fail_cond;

  for (i = 0; i < opts->min_threads; i++) {
    uvt__fetch_add_seq_cst(&pool->threads, 1u);
    uvt__fetch_add_seq_cst(&pool->waking, 1u);
    if ((rc = uvt__start_worker(pool)) != 0) {
      uvt_pool_free(pool);
      return rc;
    }
  }
  *out = pool;
  return 0;

fail_cond:
  uv_mutex_destroy(&pool->mutex);
fail_mutex:
  uvt__ring_destroy(&pool->own);
  uvt__free(pool);
  return rc;
}

/* Stops and joins every thread and frees the pool, unless a bridge or a
 * lane uses it or the caller is one of its threads (UV_EBUSY). */
static int uvt__pool_stop(uvt_pool_t* pool) {
  uvt__qnode_t* n;
  if (uvt__tls_pool == pool) return UV_EBUSY;
  uv_mutex_lock(&pool->mutex);
  if (pool->bridges > 0 || !uvt__queue_empty(&pool->backlogs)) {
    uv_mutex_unlock(&pool->mutex);
    return UV_EBUSY;
  }
  pool->shutdown = 1;
  for (n = pool->idle.next; n != &pool->idle; n = n->next)
    uv_cond_signal(&uvt__container_of(n, uvt__worker_t, idle_node)->cond);
  while (uvt__load_relaxed(&pool->threads) > 0 || pool->spawned > 0)
    uv_cond_wait(&pool->exited, &pool->mutex);
  uv_mutex_unlock(&pool->mutex);
  uvt__reap(pool->last_exited);
  uv_cond_destroy(&pool->exited);
  uv_mutex_destroy(&pool->mutex);
  if (pool->shared != NULL) {
    uvt__ring_destroy(pool->shared);
    uvt__free(pool->shared);
  }
  uvt__ring_destroy(&pool->own);
  uvt__free(pool);
  return 0;
}

int uvt_pool_free(uvt_pool_t* pool) {
  if (pool == NULL || pool->is_default) return UV_EINVAL;
  return uvt__pool_stop(pool);
}

int uvt_pool_new(uvt_pool_t** out, const uvt_pool_options_t* opts) {
  return uvt__pool_create(out, opts, 0);
}

static uvt_pool_t* uvt__default_pool;
static uv_once_t uvt__default_once = UV_ONCE_INIT;

/* In a child after fork() the default pool has no threads (and its lock
 * may be held by a thread that is gone): the child starts afresh with a new
 * default pool on first use. The parent's pool is left alone. */
static void uvt__default_pool_forget(void) {
  uv_once_t fresh = UV_ONCE_INIT;
  uvt__default_pool = NULL;
  memcpy(&uvt__default_once, &fresh, sizeof(fresh));
}

static void uvt__default_pool_create(void) {
  uvt_pool_options_t opts;
  const char* env = getenv("UVT_POOL_SIZE");
  static int at_fork_registered; /* under uv_once; survives into children */
  if (!at_fork_registered) {
    at_fork_registered = 1;
    uvt__at_fork_child(uvt__default_pool_forget);
  }
  uvt_pool_options_init(&opts);
  if (env != NULL && *env != '\0') {
    char* end;
    unsigned long n = strtoul(env, &end, 10);
    if (*end == '\0' && n >= 1 && n <= 1024) opts.max_threads = (unsigned)n;
  }
  if (uvt__pool_create(&uvt__default_pool, &opts, 1) != 0) uvt__default_pool = NULL;
}

uvt_pool_t* uvt_pool_default(void) {
  uv_once(&uvt__default_once, uvt__default_pool_create);
  return uvt__default_pool;
}

/* The library is unloaded (dlclose of a plugin or a Node addon that embeds
 * it) or the process exits: the default pool's threads must not outlive
 * the library's code, and a program that closed everything must leave no
 * thread unjoined (ThreadSanitizer reports one as a leak). If no bridge or
 * lane uses the pool any more, it is stopped and its threads joined;
 * otherwise (a program exiting with bridges open or lanes not freed, or
 * exit() called on one of its threads) it is left as it is. */
UVT__DESTRUCTOR static void uvt__default_pool_unload(void) {
  if (uvt__default_pool != NULL && uvt__pool_stop(uvt__default_pool) == 0)
    uvt__default_pool = NULL;
}

int uvt_pool_stats(uvt_pool_t* pool, uvt_pool_stats_t* out) {
  uvt__qnode_t* n;
  uint64_t started, skipped, entered_pool, held = 0, held_cancelled, held_expired;
  uint64_t oldest_queued, oldest_running = 0, now;
  uvt__ring_t* shared;
  double ns_per_tick;
  if (pool == NULL || out == NULL) return UV_EINVAL;
  ns_per_tick = uvt__ns_per_tick();
  memset(out, 0, sizeof(*out));
  uv_mutex_lock(&pool->mutex);
  /* Every counter only grows, and a task is counted in completed after
   * started, and in started or cancelled after submitted: reading them in
   * that order keeps running and queued from going negative (they are
   * clamped anyway, since relaxed reads of different threads' counters
   * promise no order). */
  out->completed = pool->completed;
  started = pool->started;
  skipped = pool->skipped;
  out->run_ns_total = pool->run_ns_total;
  out->run_ns_max = pool->run_ns_max;
  out->wait_ns_total = pool->wait_ns_total;
  out->wait_ns_max = pool->wait_ns_max;
  for (n = pool->workers.next; n != &pool->workers; n = n->next) {
    uvt__worker_t* w = uvt__container_of(n, uvt__worker_t, all_node);
    uint64_t v;
    out->completed += uvt__load_relaxed(&w->completed);
    skipped += uvt__load_relaxed(&w->skipped);
    started += uvt__load_relaxed(&w->started);
    out->run_ns_total += uvt__load_relaxed(&w->run_ns_total);
    out->wait_ns_total += uvt__load_relaxed(&w->wait_ns_total);
    if ((v = uvt__load_relaxed(&w->run_ns_max)) > out->run_ns_max) out->run_ns_max = v;
    if ((v = uvt__load_relaxed(&w->wait_ns_max)) > out->wait_ns_max) out->wait_ns_max = v;
    oldest_running = uvt__ticks_earliest(oldest_running, uvt__load_relaxed(&w->running_since));
  }
  /* What the lanes hold back (see uvt__backlog_t). Relaxed: each field is
   * a snapshot, written under its lane's mutex, which we do not take; the
   * sums may be off by a task in flight between fields (clamped). */
  held_cancelled = pool->held_cancelled;
  held_expired = pool->held_expired;
  oldest_queued = 0;
  for (n = pool->backlogs.next; n != &pool->backlogs; n = n->next) {
    uvt__backlog_t* b = uvt__container_of(n, uvt__backlog_t, node);
    uint64_t cancelled = uvt__load_relaxed(&b->cancelled);
    uint64_t expired = uvt__load_relaxed(&b->expired);
    uint64_t left = uvt__load_relaxed(&b->handed) + cancelled + expired;
    uint64_t entered = uvt__load_relaxed(&b->entered);
    held += entered > left ? entered - left : 0;
    held_cancelled += cancelled;
    held_expired += expired;
    oldest_queued = uvt__ticks_earliest(oldest_queued, uvt__load_relaxed(&b->oldest));
  }
  shared = uvt__shared_ring(pool);
  oldest_queued = uvt__ticks_earliest(oldest_queued, uvt__ring_oldest(&pool->own));
  if (shared != NULL) oldest_queued = uvt__ticks_earliest(oldest_queued, uvt__ring_oldest(shared));
  if (!uvt__queue_empty(&pool->overflow))
    oldest_queued = uvt__ticks_earliest(
        oldest_queued, uvt__container_of(pool->overflow.next, uvt__task_t, node)->submit_ticks);
  now = uvt__ticks();
  /* Tasks that entered the pool's own queue. */
  entered_pool = uvt__load_relaxed(&pool->own.enq_pos) + pool->overflowed - pool->refused;
  if (shared != NULL) entered_pool += uvt__load_relaxed(&shared->enq_pos);
  out->submitted = entered_pool + held + held_cancelled + held_expired;
  out->cancelled = pool->cancelled + held_cancelled;
  out->expired = pool->expired + skipped + held_expired;
  out->run_ns_total = (uint64_t)((double)out->run_ns_total * ns_per_tick);
  out->run_ns_max = (uint64_t)((double)out->run_ns_max * ns_per_tick);
  out->wait_ns_total = (uint64_t)((double)out->wait_ns_total * ns_per_tick);
  out->wait_ns_max = (uint64_t)((double)out->wait_ns_max * ns_per_tick);
  if (oldest_queued != 0)
    out->oldest_queued_ns = (uint64_t)((double)uvt__ticks_since(oldest_queued, now) * ns_per_tick);
  if (oldest_running != 0)
    out->oldest_running_ns =
        (uint64_t)((double)uvt__ticks_since(oldest_running, now) * ns_per_tick);
  out->threads = uvt__load_relaxed(&pool->threads);
  out->idle_threads = uvt__load_relaxed(&pool->parked) + pool->spinning;
  out->running = started > out->completed + skipped ? started - out->completed - skipped : 0;
  {
    uint64_t gone = started + pool->cancelled + pool->expired;
    out->queued = (entered_pool > gone ? entered_pool - gone : 0) + held;
  }
  uv_mutex_unlock(&pool->mutex);
  return 0;
}

/* Withdraws task if no worker has taken it yet. Called by the thread that
 * submitted it, or after it under a lock both held (only they may read
 * ring_pos). */
static int uvt__withdraw(uvt_pool_t* pool, uvt__task_t* task) {
  int withdrawn = 0;
  int where = uvt__load_relaxed(&task->where);
  if (where == UVT__TASK_IN_OWN_RING || where == UVT__TASK_IN_SHARED_RING) {
    uvt__ring_t* ring = where == UVT__TASK_IN_OWN_RING ? &pool->own : uvt__shared_ring(pool);
    withdrawn = uvt__ring_withdraw(ring, task);
  } else {
    uv_mutex_lock(&pool->mutex);
    if (uvt__load_relaxed(&task->where) == UVT__TASK_IN_OVERFLOW) {
      uvt__queue_remove(&task->node);
      if (uvt__queue_empty(&pool->overflow)) uvt__store_relaxed(&pool->overflowing, 0u);
      withdrawn = 1;
    }
    uv_mutex_unlock(&pool->mutex);
  }
  if (withdrawn) uvt__store_relaxed(&task->where, UVT__TASK_OUT);
  return withdrawn;
}

/* Puts a stamped task (see uvt__pool_submit). Inline: both entry points
 * keep the whole submit path in one function. */
static inline int uvt__pool_put(uvt_pool_t* pool, uvt__task_t* task, uvt__producer_t* producer) {
  int spawn = 0;
  int rc;
  /* Set before the put publishes the task; the overflow path below
   * overwrites it if the put fails. */
  uvt__store_relaxed(&task->where, producer->sole ? UVT__TASK_IN_OWN_RING : UVT__TASK_IN_SHARED_RING);
  /* Relaxed: a hint. Missing a fresh overflow only reorders a task. */
  if (uvt__load_relaxed(&pool->overflowing) ||
      !(producer->sole ? uvt__ring_put_sole(&pool->own, task)
                      : uvt__ring_put_shared(uvt__shared_ring(pool), task))) {
    uv_mutex_lock(&pool->mutex);
    uvt__queue_insert_tail(&pool->overflow, &task->node);
    uvt__store_relaxed(&task->where, UVT__TASK_IN_OVERFLOW);
    pool->overflowed++;
    /* Parking workers hold the lock; for a worker dropping waking, the
     * fence orders the store before the load of waking below. */
    uvt__store_relaxed(&pool->overflowing, 1u);
    uvt__fence_seq_cst();
    spawn = uvt__ensure_taker_locked(pool);
    uv_mutex_unlock(&pool->mutex);
  } else {
    /* In a batch, no fence (see the top of the file) if someone is on the
     * way or nobody can be woken or started: the end of the batch checks
     * again. */
    if (producer->batching && (uvt__taker_on_way(pool) || uvt__no_taker_to_add(pool))) {
      producer->recheck = 1;
      return 0;
    }
    /* Seq_cst: the task is published before we read waking and parked. */
    uvt__fence_seq_cst();
    if (uvt__taker_on_way(pool)) return 0;
    spawn = uvt__ensure_taker(pool);
  }
  if (!spawn) return 0;
  rc = uvt__start_worker(pool);
  if (rc == 0) return 0;
  /* No new thread: the existing ones will get to the task, unless there are
   * none, in which case it is withdrawn and the caller told. */
  if (uvt__load_seq_cst(&pool->threads) == 0 && uvt__withdraw(pool, task)) {
    uv_mutex_lock(&pool->mutex);
    pool->refused++;
    uv_mutex_unlock(&pool->mutex);
    return rc;
  }
  return 0;
}

int uvt__pool_submit(uvt_pool_t* pool, uvt__task_t* task, uvt__producer_t* producer) {
  task->submit_ticks = uvt__ticks();
  return uvt__pool_put(pool, task, producer);
}

int uvt__pool_submit_stamped(uvt_pool_t* pool, uvt__task_t* task, uvt__producer_t* producer) {
  return uvt__pool_put(pool, task, producer);
}

void uvt__pool_recheck(uvt_pool_t* pool) {
  /* Seq_cst: the fence the batch's submits left out, then their check. */
  uvt__fence_seq_cst();
  if (uvt__taker_on_way(pool) || !uvt__work_waiting(pool)) return;
  /* If the new worker fails to start, the threads that exist get to the
   * tasks: a batch's submit saw at least one. */
  if (uvt__ensure_taker(pool)) uvt__start_worker(pool);
}

/* Withdraws task and counts it in *counter. */
static int uvt__withdraw_counted(uvt_pool_t* pool, uvt__task_t* task, uint64_t* counter) {
  if (!uvt__withdraw(pool, task)) return UV_EBUSY;
  uv_mutex_lock(&pool->mutex);
  (*counter)++;
  uv_mutex_unlock(&pool->mutex);
  return 0;
}

int uvt__pool_cancel(uvt_pool_t* pool, uvt__task_t* task) {
  return uvt__withdraw_counted(pool, task, &pool->cancelled);
}

int uvt__pool_expire(uvt_pool_t* pool, uvt__task_t* task) {
  return uvt__withdraw_counted(pool, task, &pool->expired);
}

/* Makes the ring that producers other than the sole one share. Lock held. */
static int uvt__make_shared_ring_locked(uvt_pool_t* pool) {
  uvt__ring_t* ring;
  if (pool->shared != NULL) return 0;
  ring = uvt__aligned_alloc(UVT__CACHE_LINE, sizeof(*ring));
  if (ring == NULL || uvt__ring_init(ring) != 0) {
    uvt__free(ring);
    return UV_ENOMEM;
  }
  /* Release: workers see the cells initialised (uvt__shared_ring). */
  uvt__store_release(&pool->shared, ring);
  return 0;
}

int uvt__pool_attach(uvt_pool_t* pool) {
  int sole = 0;
  uv_mutex_lock(&pool->mutex);
  if (!pool->has_sole_producer) {
    /* The previous sole producer detached under this lock, so its last put
     * happens before our first. */
    pool->has_sole_producer = sole = 1;
  } else if (uvt__make_shared_ring_locked(pool) != 0) {
    uv_mutex_unlock(&pool->mutex);
    return UV_ENOMEM;
  }
  pool->bridges++;
  uv_mutex_unlock(&pool->mutex);
  return sole;
}

int uvt__pool_add_backlog(uvt_pool_t* pool, uvt__backlog_t* backlog) {
  int rc;
  memset(backlog, 0, sizeof(*backlog));
  uv_mutex_lock(&pool->mutex);
  rc = uvt__make_shared_ring_locked(pool);
  if (rc == 0) uvt__queue_insert_tail(&pool->backlogs, &backlog->node);
  uv_mutex_unlock(&pool->mutex);
  return rc;
}

void uvt__pool_remove_backlog(uvt_pool_t* pool, uvt__backlog_t* backlog) {
  uv_mutex_lock(&pool->mutex);
  uvt__queue_remove(&backlog->node);
  pool->held_cancelled += uvt__load_relaxed(&backlog->cancelled);
  pool->held_expired += uvt__load_relaxed(&backlog->expired);
  uv_mutex_unlock(&pool->mutex);
}

void uvt__pool_detach(uvt_pool_t* pool, int sole_producer) {
  uv_mutex_lock(&pool->mutex);
  if (sole_producer) pool->has_sole_producer = 0;
  pool->bridges--;
  uv_mutex_unlock(&pool->mutex);
}

/* The thread belongs to pool: it may not stop the pool (which would wait
 * for itself), also not by calling exit() (see uvt__default_pool_unload). */
void uvt__pool_thread_started(uvt_pool_t* pool) { uvt__tls_pool = pool; }

int uvt__pool_spawn(uvt_pool_t* pool, void (*fn)(void*), void* arg) {
  int rc;
  uv_mutex_lock(&pool->mutex);
  pool->spawned++;
  uv_mutex_unlock(&pool->mutex);
  rc = uvt__thread_start(pool, fn, arg);
  if (rc != 0) {
    uv_mutex_lock(&pool->mutex);
    pool->spawned--;
    uvt__signal_if_empty_locked(pool);
    uv_mutex_unlock(&pool->mutex);
  }
  return rc;
}
