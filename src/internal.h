/* Private to uvthreads: never installed, nothing here is API.
 *
 * The only place for compiler- or OS-specific code. Atomics are named
 * operations on plain fields (the public header stays plain C so that C++
 * programs can include it); each call site says why its order is enough. */
#ifndef UVT_INTERNAL_H
#define UVT_INTERNAL_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "uvthreads.h"

#define uvt__container_of(ptr, type, member) \
  ((type*)((char*)(ptr) - offsetof(type, member)))

#define UVT__CACHE_LINE 64

/* Thread-locals of this library: the initial-exec model avoids a
 * __tls_get_addr call per access in the shared library (a few pointers fit
 * the static TLS space glibc reserves for libraries). */
#if defined(__GNUC__)
#define UVT__THREAD_LOCAL _Thread_local __attribute__((tls_model("initial-exec")))
#else
#define UVT__THREAD_LOCAL _Thread_local
#endif

/* Tags mark a caller-allocated struct as live. They are derived from the
 * struct's own address, so stale or uninitialised memory (or a copy) does not
 * pass for a live object. */
#define UVT__TAG(ptr, kind) ((uintptr_t)(ptr) ^ (uintptr_t)(kind))

/* Reading a caller's tag: by contract the struct may be uninitialised, and
 * a garbage tag never matches. Tell valgrind's memcheck that this read is
 * meant (its header ships with valgrind; elsewhere this compiles to nothing). */
#if defined(__has_include)
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#define UVT__TAG_READ(field) (VALGRIND_MAKE_MEM_DEFINED(&(field), sizeof(field)), (field))
#endif
#endif
#ifndef UVT__TAG_READ
#define UVT__TAG_READ(field) (field)
#endif
#define UVT__KIND_BRIDGE ((uintptr_t)0x6272696467650001u)
#define UVT__KIND_WORK ((uintptr_t)0x776f726b00000002u)
#define UVT__KIND_CHAN ((uintptr_t)0x6368616e00000003u)

/* ---- Atomics (gcc and clang builtins) ---------------------------------- */

#define uvt__load_relaxed(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define uvt__load_acquire(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define uvt__load_seq_cst(p) __atomic_load_n((p), __ATOMIC_SEQ_CST)
#define uvt__store_relaxed(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define uvt__store_release(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define uvt__store_seq_cst(p, v) __atomic_store_n((p), (v), __ATOMIC_SEQ_CST)
#define uvt__fetch_add_relaxed(p, v) __atomic_fetch_add((p), (v), __ATOMIC_RELAXED)
#define uvt__fetch_add_seq_cst(p, v) __atomic_fetch_add((p), (v), __ATOMIC_SEQ_CST)
#define uvt__fetch_sub_release(p, v) __atomic_fetch_sub((p), (v), __ATOMIC_RELEASE)
#define uvt__fetch_sub_seq_cst(p, v) __atomic_fetch_sub((p), (v), __ATOMIC_SEQ_CST)
#define uvt__exchange_acquire(p, v) __atomic_exchange_n((p), (v), __ATOMIC_ACQUIRE)
#define uvt__fence_seq_cst() __atomic_thread_fence(__ATOMIC_SEQ_CST)
/* Weak CAS, sequentially consistent on success. */
#define uvt__cas_weak_seq_cst(p, expected, desired) \
  __atomic_compare_exchange_n((p), (expected), (desired), 1, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)
/* Weak CAS without ordering (the caller orders through another access). */
#define uvt__cas_weak_relaxed(p, expected, desired) \
  __atomic_compare_exchange_n((p), (expected), (desired), 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED)
/* Strong CAS, sequentially consistent: fails only if *p != *expected. */
#define uvt__cas_strong_seq_cst(p, expected, desired) \
  __atomic_compare_exchange_n((p), (expected), (desired), 0, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)
/* Strong CAS without ordering. */
#define uvt__cas_strong_relaxed(p, expected, desired) \
  __atomic_compare_exchange_n((p), (expected), (desired), 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)
/* Weak CAS that publishes on success; *expected is refreshed on failure. */
#define uvt__cas_weak_release(p, expected, desired) \
  __atomic_compare_exchange_n((p), (expected), (desired), 1, __ATOMIC_RELEASE, __ATOMIC_RELAXED)

static inline void uvt__cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

/* Spins while cond holds, for at most ns nanoseconds (the clock is read
 * every 64 rounds only). The one bounded-spin policy of the library: idle
 * workers, producers facing a full buffer and sync_await callers use it
 * before they sleep. With yield, the spinner also yields its CPU every 64
 * rounds (see uvt__spin_locked in pool.c for why). */
#define UVT__SPIN_WHILE_YIELDING(cond, ns, yield)                  \
  do {                                                             \
    uint64_t uvt__spin_until = uv_hrtime() + (ns);                 \
    unsigned uvt__spin_round;                                      \
    for (uvt__spin_round = 1; (cond); uvt__spin_round++) {         \
      uvt__cpu_relax();                                            \
      if ((uvt__spin_round & 63) != 0) continue;                   \
      if (uv_hrtime() > uvt__spin_until) break;                    \
      if (yield) uvt__thread_yield();                              \
    }                                                              \
  } while (0)
#define UVT__SPIN_WHILE(cond, ns) UVT__SPIN_WHILE_YIELDING(cond, ns, 0)

/* ---- The stats clock ---------------------------------------------------
 *
 * Pool stats time every task three times (submit, start, end). uv_hrtime()
 * costs about 24 ns on a VM's vDSO; the TSC costs 10, and what is saved is
 * a third of a no-op task. Ticks are the TSC where the kernel itself keeps
 * time with it (so it is invariant and synchronised across CPUs), else
 * nanoseconds. Stats multiply by uvt__ns_per_tick() when read; uvt__clock_init
 * must have run (uvt_pool_new does it) before the first tick is taken. */
#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__))
#include <x86intrin.h>
#define UVT__HAVE_TSC 1
extern int uvt__clock_is_tsc;
static inline uint64_t uvt__ticks(void) { return uvt__clock_is_tsc ? __rdtsc() : uv_hrtime(); }
#else
static inline uint64_t uvt__ticks(void) { return uv_hrtime(); }
#endif
void uvt__clock_init(void);
double uvt__ns_per_tick(void);
/* end - start, or 0 if a clock read on another CPU was behind. */
static inline uint64_t uvt__ticks_since(uint64_t start, uint64_t end) {
  return end > start ? end - start : 0;
}

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#endif
#include <sched.h>

/* Names the calling thread for debuggers and top (best effort, 15 chars). */
static inline void uvt__thread_set_name(const char* name) {
#if defined(__linux__)
  char buf[16];
  size_t i;
  for (i = 0; i < sizeof(buf) - 1 && name[i] != '\0'; i++) buf[i] = name[i];
  buf[i] = '\0';
  pthread_setname_np(pthread_self(), buf);
#else
  (void)name;
#endif
}

static inline void uvt__thread_yield(void) { sched_yield(); }

/* Runs fn in the child after fork() (best effort where there is no fork). */
static inline void uvt__at_fork_child(void (*fn)(void)) {
#if defined(__unix__) || defined(__APPLE__)
  pthread_atfork(NULL, NULL, fn);
#else
  (void)fn;
#endif
}

/* ---- Allocation (one place, so tests can inject failures) ---------------- */

void* uvt__malloc(size_t size);
void* uvt__calloc(size_t n, size_t size);
void* uvt__aligned_alloc(size_t align, size_t size); /* size rounded up to align */
void uvt__free(void* ptr);

/* ---- Intrusive circular doubly linked list ------------------------------ */

static inline void uvt__queue_init(uvt__qnode_t* q) { q->next = q->prev = q; }
static inline int uvt__queue_empty(const uvt__qnode_t* q) { return q->next == q; }
static inline void uvt__queue_insert_tail(uvt__qnode_t* q, uvt__qnode_t* n) {
  n->next = q;
  n->prev = q->prev;
  q->prev->next = n;
  q->prev = n;
}
static inline void uvt__queue_insert_head(uvt__qnode_t* q, uvt__qnode_t* n) {
  n->next = q->next;
  n->prev = q;
  q->next->prev = n;
  q->next = n;
}
static inline void uvt__queue_remove(uvt__qnode_t* n) {
  n->prev->next = n->next;
  n->next->prev = n->prev;
  n->next = n->prev = n;
}

/* ---- Context ----------------------------------------------------------- */

/* Swaps the calling thread's context; returns the previous one. */
void* uvt__context_swap(void* ctx);

/* ---- Pool (pool.c): the replaceable engine behind the public pool ------- */

/* How one loop thread submits to a pool (a bridge holds one). */
typedef struct uvt__producer_s {
  int sole;     /* the sole producer of the pool's own ring (uvt__pool_attach) */
  int batching; /* in a batch that ends with uvt__pool_recheck */
  int recheck;  /* a submit of the batch left its wake-up check to the end */
} uvt__producer_t;

/* Queues task; 0, or UV_EAGAIN (or the thread error) when the pool has no
 * thread and cannot start one. The producer's loop thread only (any thread
 * with a producer that is neither sole nor batching). */
int uvt__pool_submit(uvt_pool_t* pool, uvt__task_t* task, uvt__producer_t* producer);
/* Ends a batch of submits: does the wake-up check they left to it. */
void uvt__pool_recheck(uvt_pool_t* pool);
/* 0 and the task is removed if it was still queued, else UV_EBUSY. */
int uvt__pool_cancel(uvt_pool_t* pool, uvt__task_t* task);
/* A bridge starts or stops using pool. Attach returns 1 if the bridge is
 * now the sole producer of the pool's own ring (its producer's `sole`, kept
 * until it detaches with that value), 0, or UV_ENOMEM. */
int uvt__pool_attach(uvt_pool_t* pool);
void uvt__pool_detach(uvt_pool_t* pool, int sole_producer);
/* Starts fn(arg) on a new thread that the pool reaps: the thread calls
 * uvt__pool_thread_exiting() before it reports its end (after which the pool
 * may be freed), then uvt__reap() on what that returned. */
int uvt__pool_spawn(uvt_pool_t* pool, void (*fn)(void*), void* arg);
typedef struct uvt__reap_s {
  uv_thread_t thread;
  int valid;
} uvt__reap_t;
uvt__reap_t uvt__pool_thread_exiting(uvt_pool_t* pool);
/* Joins the thread that exited before the caller (after the caller's last
 * touch of shared memory). Each thread is joined exactly once: by the next
 * exiting thread, or by uvt_pool_free. */
void uvt__reap(uvt__reap_t reap);

/* ---- Bridge (bridge.c) ------------------------------------------------- */

typedef struct uvt__bridge_impl_s {
  /* Written by every producer thread: on its own cache line. */
  _Alignas(UVT__CACHE_LINE) uvt__msg_t* inbox; /* Treiber stack, newest first */
  unsigned senders; /* threads that may still touch this bridge */

  /* Loop-side state, on another line. */
  _Alignas(UVT__CACHE_LINE) uv_async_t async;
  uvt_bridge_t* bridge;
  uv_thread_t loop_thread; /* atomic: read by any thread */
  uvt__msg_t* ready_head;  /* loop-local FIFO of messages to deliver */
  uvt__msg_t* ready_tail;
  unsigned active; /* things that keep the loop alive */
  int user_ref;
  int closing;     /* atomic: read by any thread */
  uvt__producer_t producer; /* how this loop submits to the pool */
  int finishing;
  uvt_close_cb close_cb;
  uvt__qnode_t works; /* in-flight uvt_work_t */
  uvt__qnode_t chans; /* open channels and iterators */

  uv_mutex_t await_mutex; /* guards the await free list */
  struct uvt_await_s* await_free_head; /* recycled oldest first */
  struct uvt_await_s* await_free_tail;
  struct uvt_await_s* await_all; /* every record, freed at teardown */
} uvt__bridge_impl_t;

/* The live impl of bridge, or NULL if bridge is NULL or not initialised. */
uvt__bridge_impl_t* uvt__bridge_get(const uvt_bridge_t* bridge);
int uvt__bridge_on_loop_thread(uvt__bridge_impl_t* impl);
/* Checks shared by every loop-thread submission: 0, UV_EINVAL or UV_EPIPE. */
int uvt__bridge_check_submit(uvt__bridge_impl_t* impl);

/* Any thread: queues msg for delivery on the loop thread and wakes the loop
 * if it was idle. Only for senders the bridge already waits for (work in
 * flight, open channels): they cannot race with its teardown. */
void uvt__bridge_post(uvt__bridge_impl_t* impl, uvt__msg_t* msg);
/* Any thread: as uvt__bridge_post, but refuses with UV_EPIPE once the bridge
 * is closing. For uvt_call and uvt_sync_await. */
int uvt__bridge_post_if_open(uvt__bridge_impl_t* impl, uvt__msg_t* msg);
/* Loop thread: queues msg behind the current batch and schedules a drain. */
void uvt__bridge_post_local(uvt__bridge_impl_t* impl, uvt__msg_t* msg);
/* Loop thread: recompute whether the async handle keeps the loop alive. */
void uvt__bridge_update_ref(uvt__bridge_impl_t* impl);

/* Hooks run by uvt_bridge_close for each in-flight object (loop thread). */
void uvt__work_bridge_closing(uvt__bridge_impl_t* impl, uvt__qnode_t* node);
void uvt__chan_bridge_closing(uvt__bridge_impl_t* impl, uvt__qnode_t* node);
/* iter.c: an iterator whose bridge closes: a queued generator never runs. */
void uvt__iter_bridge_closing(uvt__chan_core_t* core);
void uvt__await_free_all(uvt__bridge_impl_t* impl);

/* ---- Channel core (chan.c), shared by iterators (iter.c) ---------------- */

/* core->flags: written by any thread, always under core->mutex. */
enum {
  UVT__CORE_CLOSED = 1u << 0,      /* producer closed gracefully */
  UVT__CORE_SCHEDULED = 1u << 1,   /* core->msg is queued on the bridge */
  UVT__CORE_GEN_STARTED = 1u << 2, /* the generator was called */
  UVT__CORE_GEN_DONE = 1u << 3     /* the generator returned (or never will run) */
};
/* core->lflags: written only by the loop thread, under core->mutex, so the loop
 * may read them without the lock. */
enum {
  UVT__CORE_PAUSED = 1u << 0,   /* no delivery until resumed */
  UVT__CORE_STOPPED = 1u << 1,  /* aborted: buffer dropped, producers refused */
  UVT__CORE_DRAINING = 1u << 2, /* bridge closing: deliver the buffer, then end */
  UVT__CORE_FINISHED = 1u << 3, /* the final callback ran or is running */
  UVT__CORE_ITER = 1u << 4      /* an iterator: the end waits for its generator (set at open) */
};

/* Delivery of one item or of the final status, on the loop thread. */
typedef void (*uvt__core_cb)(uvt__chan_core_t* core, int status, void* item);

int uvt__core_open(uvt__bridge_impl_t* impl, uvt__chan_core_t* core, size_t max_size,
                   int is_iter);
int uvt__core_is_open(const uvt__chan_core_t* core);
/* Undoes uvt__core_open when the producer could not be started. Loop thread. */
void uvt__core_discard(uvt__chan_core_t* core);
/* Producer side. timeout_ms UINT64_MAX blocks forever; when the buffer stays
 * full past timeout_ms, returns full_err (UV_EAGAIN for try_put). */
int uvt__core_put(uvt__chan_core_t* core, void* item, uint64_t timeout_ms, int full_err);
int uvt__core_pause(uvt__chan_core_t* core, int pause);
/* Loop side abort: drops the buffer; UV_EINVAL if already stopped/finished. */
int uvt__core_stop(uvt__chan_core_t* core, uvt_drop_cb drop);
/* The generator returned (iterators). Any thread. */
void uvt__core_gen_done(uvt__chan_core_t* core, int status);

/* Implemented by chan.c and iter.c: deliver to the user's callback. */
void uvt__chan_deliver(uvt__chan_core_t* core, int status, void* item);
void uvt__iter_deliver(uvt__chan_core_t* core, int status, void* item);

#endif /* UVT_INTERNAL_H */
