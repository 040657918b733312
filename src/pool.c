/* The thread pool: run queue, parking, elastic sizing, stats.
 *
 * Submission is lock-free: a task is pushed onto the `incoming` stack, and
 * the submitter takes the pool's mutex only when it must wake or start a
 * worker. Workers own the mutex-guarded FIFO run queue: a worker that finds
 * it empty takes the whole incoming stack in one exchange and appends it in
 * submission order. Cancel and stats move the stack into the queue first, so
 * a queued task is always found in O(1) through its intrusive node. Nothing
 * allocates per task.
 *
 * Idle workers spin briefly (one at a time), then park on their own
 * condition variable in a LIFO list, so the most recently idle (cache-warm)
 * worker is woken first. At most one worker is "waking" at a time
 * (signalled, freshly started or spinning): a submitter wakes nobody while
 * one is on its way, and a worker that takes a task wakes the next one only
 * if work is still waiting, so a burst never wakes every thread at once.
 *
 * The lost-wake-up race between a submitter and a parking worker is closed
 * Dekker-style with sequentially consistent operations: the submitter pushes,
 * then reads `waking` and `parked`; a worker gives up `waking`, publishes
 * `parked`, then reads `incoming` again before it sleeps. In the single total
 * order either the worker sees the task or the submitter sees the worker. */
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define UVT__SPIN_NS 20000u /* how long an idle worker looks for work before parking */

typedef struct uvt__worker_s {
  uvt_pool_t* pool;
  uv_cond_t cond;
  uvt__qnode_t idle_node;
  uvt__qnode_t all_node; /* in pool->workers, for the stats */
  int signalled;
  unsigned index;
  /* Written only by this worker (relaxed stores, no read-modify-write),
   * read by uvt_pool_stats: no cache line is shared between workers. */
  _Alignas(UVT__CACHE_LINE) uint64_t completed;
  uint64_t run_ns_total, run_ns_max, wait_ns_total, wait_ns_max;
} uvt__worker_t;

struct uvt_pool_s {
  /* Pushed to by submitters. */
  _Alignas(UVT__CACHE_LINE) uvt__task_t* incoming;

  /* Read by submitters without the lock; written under it, atomically. */
  _Alignas(UVT__CACHE_LINE) unsigned parked; /* workers in the idle list */
  unsigned waking;  /* signalled, starting or spinning: will look for work */
  unsigned threads; /* workers alive */

  /* The run queue is not empty: read by spinners, written on change only. */
  _Alignas(UVT__CACHE_LINE) unsigned queued_hint;

  /* Guarded by mutex. */
  _Alignas(UVT__CACHE_LINE) uv_mutex_t mutex;
  uvt__qnode_t queue;
  uint64_t nqueued;
  uvt__qnode_t idle; /* parked workers, most recently idle first */
  unsigned spinning;
  unsigned spawned; /* dedicated (separate) threads not yet exiting */
  unsigned bridges;
  unsigned next_index;
  int shutdown;
  int is_default;
  uv_cond_t exited; /* uvt_pool_free waits here for the last thread */
  uvt__reap_t last_exited;
  uvt_pool_options_t opts;
  char name[16];
  uint64_t cancelled, started;
  uvt__qnode_t workers; /* every live worker */
  /* The counters of workers that exited. */
  uint64_t completed, run_ns_total, run_ns_max, wait_ns_total, wait_ns_max;

  /* Bumped by submitters without the lock (relaxed: a statistic). */
  _Alignas(UVT__CACHE_LINE) uint64_t submitted;
};

/* Single-writer counters: a relaxed load and store, no locked instruction. */
static void uvt__count_add(uint64_t* counter, uint64_t v) {
  uvt__store_relaxed(counter, uvt__load_relaxed(counter) + v);
}
static void uvt__count_max(uint64_t* counter, uint64_t v) {
  if (v > uvt__load_relaxed(counter)) uvt__store_relaxed(counter, v);
}

/* Sets the spinners' hint when it changes. Lock held. */
static void uvt__set_queued_hint_locked(uvt_pool_t* pool) {
  unsigned hint = pool->nqueued != 0;
  /* Relaxed: a hint; spinners take the lock before they touch a task. */
  if (uvt__load_relaxed(&pool->queued_hint) != hint) uvt__store_relaxed(&pool->queued_hint, hint);
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

/* Moves the submitted tasks, oldest first, to the run queue. Lock held. */
static void uvt__take_incoming_locked(uvt_pool_t* pool) {
  /* Acquire: pairs with the submitters' CAS, so the tasks' fields are seen. */
  uvt__task_t* stack = uvt__exchange_acquire(&pool->incoming, NULL);
  uvt__task_t* fifo = NULL;
  if (stack == NULL) return;
  while (stack != NULL) {
    uvt__task_t* next = stack->push_next;
    stack->push_next = fifo;
    fifo = stack;
    stack = next;
  }
  for (; fifo != NULL; fifo = fifo->push_next) {
    uvt__queue_insert_tail(&pool->queue, &fifo->node);
    pool->nqueued++;
  }
  uvt__set_queued_hint_locked(pool);
}

static int uvt__work_waiting_locked(uvt_pool_t* pool) {
  return !uvt__queue_empty(&pool->queue) || uvt__load_relaxed(&pool->incoming) != NULL;
}

/* Wakes the most recently parked worker. Lock held. */
static void uvt__wake_one_locked(uvt_pool_t* pool) {
  uvt__worker_t* w = uvt__container_of(pool->idle.next, uvt__worker_t, idle_node);
  uvt__queue_remove(&w->idle_node);
  uvt__fetch_sub_seq_cst(&pool->parked, 1u);
  uvt__fetch_add_seq_cst(&pool->waking, 1u);
  w->signalled = 1;
  uv_cond_signal(&w->cond);
}

/* Makes sure someone will take the waiting work: returns 1 when the caller
 * must start a new worker (already counted) after dropping the lock. */
static int uvt__ensure_taker_locked(uvt_pool_t* pool) {
  if (uvt__load_relaxed(&pool->waking) > 0 || !uvt__work_waiting_locked(pool)) return 0;
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

/* Starts a worker already counted in threads and waking. */
static int uvt__start_worker(uvt_pool_t* pool) {
  uvt__worker_t* w = uvt__calloc(1, sizeof(*w));
  int rc = UV_ENOMEM;
  if (w != NULL) {
    w->pool = pool;
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

static void uvt__run_task(uvt__worker_t* w, uvt__task_t* task) {
  uint64_t start = uv_hrtime();
  uint64_t waited = start - task->submit_ns;
  uint64_t took;
  task->work(task);
  took = uv_hrtime() - start;
  /* Relaxed: counters only. They are written before task->done publishes the
   * completion, and the bridge's release/acquire handoff orders them before
   * the loop's read of the stats. */
  uvt__count_add(&w->wait_ns_total, waited);
  uvt__count_max(&w->wait_ns_max, waited);
  uvt__count_add(&w->run_ns_total, took);
  uvt__count_max(&w->run_ns_max, took);
  uvt__count_add(&w->completed, 1);
  task->done(task); /* the last touch of task */
}

/* Spins briefly for new work with the lock dropped, counted as waking so
 * that submitters leave the work to it. Lock held on entry and exit. */
static void uvt__spin_locked(uvt_pool_t* pool) {
  pool->spinning++;
  uvt__fetch_add_seq_cst(&pool->waking, 1u);
  uv_mutex_unlock(&pool->mutex);
  /* Relaxed: hints; the tasks themselves are taken under the mutex. */
  UVT__SPIN_WHILE(uvt__load_relaxed(&pool->incoming) == NULL && !uvt__load_relaxed(&pool->queued_hint),
                  UVT__SPIN_NS);
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
  if (uvt__load_seq_cst(&pool->incoming) != NULL) {
    uvt__queue_remove(&w->idle_node);
    uvt__fetch_sub_seq_cst(&pool->parked, 1u);
    return 0;
  }
  while (!w->signalled && !pool->shutdown) {
    uint64_t now;
    if (!timed) {
      uv_cond_wait(&w->cond, &pool->mutex);
      continue;
    }
    now = uv_hrtime();
    if (now >= deadline) {
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
  uvt__reap_t prev;
  char name[32];

  snprintf(name, sizeof(name), "%s-%u", pool->name, w->index);
  uvt__thread_set_name(name);
  uvt__tls_pool = pool;

  uv_mutex_lock(&pool->mutex);
  uvt__queue_insert_tail(&pool->workers, &w->all_node);
  for (;;) {
    int timed_out;
    if (uvt__queue_empty(&pool->queue)) uvt__take_incoming_locked(pool);
    if (!uvt__queue_empty(&pool->queue)) {
      uvt__task_t* task = uvt__container_of(pool->queue.next, uvt__task_t, node);
      int spawn;
      uvt__queue_remove(&task->node);
      task->queued = 0;
      pool->nqueued--;
      uvt__set_queued_hint_locked(pool);
      pool->started++;
      if (waking) {
        uvt__fetch_sub_seq_cst(&pool->waking, 1u);
        waking = 0;
      }
      spun = 0;
      spawn = uvt__ensure_taker_locked(pool);
      uv_mutex_unlock(&pool->mutex);
      if (spawn) uvt__start_worker(pool);
      uvt__run_task(w, task);
      uv_mutex_lock(&pool->mutex);
      continue;
    }
    if (pool->shutdown) break;
    if (waking) {
      uvt__fetch_sub_seq_cst(&pool->waking, 1u);
      waking = 0;
    }
    if (!spun && pool->spinning == 0) {
      uvt__spin_locked(pool);
      spun = 1;
      waking = 1;
      continue;
    }
    if (uvt__park_locked(pool, w, &timed_out)) {
      waking = 1; /* the waker counted us in pool->waking */
      continue;
    }
    if (pool->shutdown) break;
    /* Threads above min_threads give up after idle_timeout_ms. */
    if (timed_out && uvt__load_relaxed(&pool->threads) > pool->opts.min_threads &&
        !uvt__work_waiting_locked(pool))
      break;
  }

  /* Exit: register as the last exited thread; the next one (or
   * uvt_pool_free) joins us. After the unlock nothing of the pool is touched. */
  uvt__fetch_sub_seq_cst(&pool->threads, 1u);
  uvt__queue_remove(&w->all_node);
  pool->completed += w->completed;
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

int uvt_pool_new(uvt_pool_t** out, const uvt_pool_options_t* opts) {
  uvt_pool_options_t defaults;
  uvt_pool_t* pool;
  unsigned i;
  int rc;

  if (out == NULL) return UV_EINVAL;
  if (opts == NULL) {
    uvt_pool_options_init(&defaults);
    opts = &defaults;
  }
  if (opts->max_threads == 0 || opts->min_threads > opts->max_threads) return UV_EINVAL;

  pool = uvt__aligned_alloc(UVT__CACHE_LINE, sizeof(*pool));
  if (pool == NULL) return UV_ENOMEM;
  memset(pool, 0, sizeof(*pool));
  pool->opts = *opts;
  snprintf(pool->name, sizeof(pool->name), "%.10s", opts->name ? opts->name : "uvt");
  pool->opts.name = pool->name;
  uvt__queue_init(&pool->queue);
  uvt__queue_init(&pool->idle);
  uvt__queue_init(&pool->workers);
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
  uvt__free(pool);
  return rc;
}

int uvt_pool_free(uvt_pool_t* pool) {
  uvt__qnode_t* n;
  if (pool == NULL || pool->is_default) return UV_EINVAL;
  if (uvt__tls_pool == pool) return UV_EBUSY;
  uv_mutex_lock(&pool->mutex);
  if (pool->bridges > 0) {
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
  uvt__free(pool);
  return 0;
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
  if (uvt_pool_new(&uvt__default_pool, &opts) == 0) uvt__default_pool->is_default = 1;
}

uvt_pool_t* uvt_pool_default(void) {
  uv_once(&uvt__default_once, uvt__default_pool_create);
  return uvt__default_pool;
}

int uvt_pool_stats(uvt_pool_t* pool, uvt_pool_stats_t* out) {
  uvt__qnode_t* n;
  uint64_t started;
  if (pool == NULL || out == NULL) return UV_EINVAL;
  memset(out, 0, sizeof(*out));
  uv_mutex_lock(&pool->mutex);
  uvt__take_incoming_locked(pool); /* so that queued counts them */
  /* started is counted (under the lock) before a task runs, completed after
   * it: reading started first keeps running = started - completed >= 0
   * while workers keep going. */
  started = pool->started;
  out->completed = pool->completed;
  out->run_ns_total = pool->run_ns_total;
  out->run_ns_max = pool->run_ns_max;
  out->wait_ns_total = pool->wait_ns_total;
  out->wait_ns_max = pool->wait_ns_max;
  for (n = pool->workers.next; n != &pool->workers; n = n->next) {
    uvt__worker_t* w = uvt__container_of(n, uvt__worker_t, all_node);
    uint64_t v;
    out->completed += uvt__load_relaxed(&w->completed);
    out->run_ns_total += uvt__load_relaxed(&w->run_ns_total);
    out->wait_ns_total += uvt__load_relaxed(&w->wait_ns_total);
    if ((v = uvt__load_relaxed(&w->run_ns_max)) > out->run_ns_max) out->run_ns_max = v;
    if ((v = uvt__load_relaxed(&w->wait_ns_max)) > out->wait_ns_max) out->wait_ns_max = v;
  }
  out->threads = uvt__load_relaxed(&pool->threads);
  out->idle_threads = uvt__load_relaxed(&pool->parked) + pool->spinning;
  out->submitted = uvt__load_relaxed(&pool->submitted);
  out->cancelled = pool->cancelled;
  out->queued = pool->nqueued;
  out->running = started - out->completed;
  uv_mutex_unlock(&pool->mutex);
  return 0;
}

/* Withdraws task if it is still waiting. Lock held. */
static int uvt__withdraw_locked(uvt_pool_t* pool, uvt__task_t* task) {
  uvt__take_incoming_locked(pool);
  if (!task->queued) return 0;
  uvt__queue_remove(&task->node);
  task->queued = 0;
  pool->nqueued--;
  uvt__set_queued_hint_locked(pool);
  return 1;
}

int uvt__pool_submit(uvt_pool_t* pool, uvt__task_t* task) {
  uvt__task_t* head;
  int spawn;
  int rc;
  task->submit_ns = uv_hrtime();
  /* Read and written under the mutex once the task is taken off the stack. */
  task->queued = 1;
  uvt__fetch_add_relaxed(&pool->submitted, 1u);
  head = uvt__load_relaxed(&pool->incoming);
  do {
    task->push_next = head;
    /* Seq_cst: publishes the task (release) and orders the push before the
     * loads of waking/parked below (see the top of the file). */
  } while (!uvt__cas_weak_seq_cst(&pool->incoming, &head, task));

  /* Fast path: someone is on the way, or every thread is busy at the cap. */
  if (uvt__load_seq_cst(&pool->waking) > 0) return 0;
  if (uvt__load_seq_cst(&pool->parked) == 0 &&
      uvt__load_relaxed(&pool->threads) >= pool->opts.max_threads)
    return 0;

  uv_mutex_lock(&pool->mutex);
  spawn = uvt__ensure_taker_locked(pool);
  uv_mutex_unlock(&pool->mutex);
  if (!spawn) return 0;
  rc = uvt__start_worker(pool);
  if (rc == 0) return 0;
  /* No new thread: the existing ones will get to the task, unless there are
   * none, in which case it is withdrawn and the caller told. */
  uv_mutex_lock(&pool->mutex);
  if (uvt__load_relaxed(&pool->threads) == 0 && uvt__withdraw_locked(pool, task))
    uvt__fetch_sub_seq_cst(&pool->submitted, 1u);
  else
    rc = 0;
  uv_mutex_unlock(&pool->mutex);
  return rc;
}

int uvt__pool_cancel(uvt_pool_t* pool, uvt__task_t* task) {
  int rc = UV_EBUSY;
  uv_mutex_lock(&pool->mutex);
  if (uvt__withdraw_locked(pool, task)) {
    pool->cancelled++;
    rc = 0;
  }
  uv_mutex_unlock(&pool->mutex);
  return rc;
}

void uvt__pool_attach(uvt_pool_t* pool) {
  uv_mutex_lock(&pool->mutex);
  pool->bridges++;
  uv_mutex_unlock(&pool->mutex);
}

void uvt__pool_detach(uvt_pool_t* pool) {
  uv_mutex_lock(&pool->mutex);
  pool->bridges--;
  uv_mutex_unlock(&pool->mutex);
}

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
