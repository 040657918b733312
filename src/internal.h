/* Private to uvthreads: never installed, nothing here is API.
 *
 * The ground floor every source file stands on: compiler- and OS-specific
 * code (atomics, thread-locals, pause, thread names, fork hooks, the TSC
 * and the kernel's clock source), tags, the bounded spin, the intrusive
 * list and heap, and the allocation hooks. No other file holds compiler- or
 * OS-specific code. Atomics are named operations on plain fields (the
 * public header stays plain C so that C++ programs can include it); each
 * call site says why its order is enough. */
#ifndef UVT_INTERNAL_H
#define UVT_INTERNAL_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* Before reading a caller's tag: by contract the struct may be
 * uninitialised, and a garbage tag never matches. Tells valgrind's memcheck
 * that the read that follows is meant (its header ships with valgrind;
 * elsewhere this compiles to nothing). It reads nothing itself: the tag is
 * read with an atomic load, as the end clears it while late threads look. */
#if defined(__has_include)
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#define UVT__TAG_READ(field) VALGRIND_MAKE_MEM_DEFINED(&(field), sizeof(field))
#endif
#endif
#ifndef UVT__TAG_READ
#define UVT__TAG_READ(field) 0
#endif
#define UVT__KIND_BRIDGE ((uintptr_t)0x6272696467650001u)
#define UVT__KIND_WORK ((uintptr_t)0x776f726b00000002u)
#define UVT__KIND_WORK_CANCELLED ((uintptr_t)0x63616e6300000004u)
#define UVT__KIND_STREAM ((uintptr_t)0x6368616e00000003u)

/* Test-only stall points (tests built with UVT_TEST_HOOKS): a test's hook
 * may block there to force an interleaving. Compiled out of the library. */
#if defined(UVT_TEST_HOOKS)
extern UVT_EXTERN void (*uvt__test_hook)(const char* point, const void* obj);
#define UVT__TEST_POINT(point, obj)                         \
  do {                                                      \
    if (uvt__test_hook != NULL) uvt__test_hook((point), (obj)); \
  } while (0)
#else
#define UVT__TEST_POINT(point, obj) ((void)0)
#endif

/* ---- Atomics (gcc and clang builtins) ---------------------------------- */

#define uvt__load_relaxed(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define uvt__load_acquire(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define uvt__load_seq_cst(p) __atomic_load_n((p), __ATOMIC_SEQ_CST)
#define uvt__store_relaxed(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define uvt__store_release(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define uvt__fetch_add_seq_cst(p, v) __atomic_fetch_add((p), (v), __ATOMIC_SEQ_CST)
#define uvt__fetch_add_relaxed(p, v) __atomic_fetch_add((p), (v), __ATOMIC_RELAXED)
#define uvt__fetch_sub_release(p, v) __atomic_fetch_sub((p), (v), __ATOMIC_RELEASE)
#define uvt__fetch_sub_seq_cst(p, v) __atomic_fetch_sub((p), (v), __ATOMIC_SEQ_CST)
#define uvt__fetch_or_seq_cst(p, v) __atomic_fetch_or((p), (v), __ATOMIC_SEQ_CST)
#define uvt__exchange_acquire(p, v) __atomic_exchange_n((p), (v), __ATOMIC_ACQUIRE)
#define uvt__fence_seq_cst() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define uvt__fence_acquire() __atomic_thread_fence(__ATOMIC_ACQUIRE)
/* Weak CAS without ordering (the caller orders through another access). */
#define uvt__cas_weak_relaxed(p, expected, desired) \
  __atomic_compare_exchange_n((p), (expected), (desired), 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED)
/* Strong CAS, sequentially consistent: fails only if *p != *expected. */
#define uvt__cas_strong_seq_cst(p, expected, desired) \
  __atomic_compare_exchange_n((p), (expected), (desired), 0, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)
/* Strong CAS without ordering. */
#define uvt__cas_strong_relaxed(p, expected, desired) \
  __atomic_compare_exchange_n((p), (expected), (desired), 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)
/* Weak CAS that acquires on success; *expected is refreshed on failure. */
#define uvt__cas_weak_acquire(p, expected, desired) \
  __atomic_compare_exchange_n((p), (expected), (desired), 1, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)
#define uvt__fetch_and_relaxed(p, v) __atomic_fetch_and((p), (v), __ATOMIC_RELAXED)
#define uvt__fetch_or_relaxed(p, v) __atomic_fetch_or((p), (v), __ATOMIC_RELAXED)
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

/* Asks for the cache line at p for writing (a hint). On x86 only CPUs
 * that have PREFETCHW (CPUID 0x80000001 ECX bit 8) are given it: older
 * ones may fault on it, and prefetcht0, which fetches the line for
 * reading, did not help (measured). The answer is cached; relaxed: every
 * thread computes the same one. */
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
static inline int uvt__has_prefetchw(void) {
  static int known; /* 0 not asked yet, 1 no, 2 yes */
  int k = __atomic_load_n(&known, __ATOMIC_RELAXED);
  if (k == 0) {
    unsigned a, b, c, d;
    k = (__get_cpuid(0x80000001u, &a, &b, &c, &d) && (c & (1u << 8))) ? 2 : 1;
    __atomic_store_n(&known, k, __ATOMIC_RELAXED);
  }
  return k == 2;
}
static inline void uvt__prefetch_write(const void* p) {
  if (uvt__has_prefetchw()) __asm__ __volatile__("prefetchw %0" : : "m"(*(const char*)p));
}
#else
static inline void uvt__prefetch_write(const void* p) { __builtin_prefetch(p, 1, 3); }
#endif

/* ---- Threads ------------------------------------------------------------ */

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

/* A thread-local slot whose destructor runs with its value when a thread
 * that set it exits (a non-NULL value only). */
typedef pthread_key_t uvt__thread_key_t;
static inline int uvt__thread_key_create(uvt__thread_key_t* key, void (*destructor)(void*)) {
  return pthread_key_create(key, destructor) == 0 ? 0 : UV_ENOMEM;
}
static inline void uvt__thread_key_set(uvt__thread_key_t key, void* value) {
  pthread_setspecific(key, value);
}

/* Runs a function when the library is unloaded or the process exits. */
#if defined(__GNUC__)
#define UVT__DESTRUCTOR __attribute__((destructor))
#else
#error "uvthreads needs a compiler with __attribute__((destructor)) (gcc, clang)"
#endif

/* Runs fn in the child after fork() (best effort where there is no fork). */
static inline void uvt__at_fork_child(void (*fn)(void)) {
#if defined(__unix__) || defined(__APPLE__)
  pthread_atfork(NULL, NULL, fn);
#else
  (void)fn;
#endif
}

/* Whether waiting threads may spin: not when the process is confined to
 * one CPU, where the thread waited for cannot run meanwhile (spin.c).
 * Updated at every uvt_bridge_init and uvt_pool_new, from the calling
 * thread's affinity. */
extern int uvt__spin_pays_flag;
void uvt__spin_policy_update(void);
static inline int uvt__spin_pays(void) { return uvt__load_relaxed(&uvt__spin_pays_flag); }

/* Spins while cond holds, for at most ns nanoseconds (the clock is read
 * every 64 rounds only). The one bounded-spin policy of the library: idle
 * workers, producers facing a full buffer and sync_await callers use it
 * before they sleep. With yield, the spinner reads the clock and yields
 * its CPU every 16 rounds: the scheduler may have put the thread it waits
 * for on the same CPU, where it runs only once we yield (uvt__spin_locked
 * in pool.c, uvt__bridge_wait in bridge.c; a yield with nobody else to
 * run costs about 150 ns on this VM; a task's round trip with the loop
 * and the worker on one CPU took 3.3 us at p50 with yields every 64
 * rounds, 2.2 us every 16, with the loop's wait yielding after half a
 * microsecond). Where spinning does not pay (uvt__spin_pays),
 * a wait that cond says is still needed yields the CPU once instead: to
 * the thread waited for, if it is runnable. */
#define UVT__SPIN_WHILE_YIELDING(cond, ns, yield)                  \
  do {                                                             \
    uint64_t uvt__spin_until;                                      \
    unsigned uvt__spin_round;                                      \
    if (!uvt__spin_pays()) {                                       \
      if (cond) {                                                  \
        UVT__TEST_POINT("spin.yield", NULL);                       \
        uvt__thread_yield();                                       \
      }                                                            \
      break;                                                       \
    }                                                              \
    uvt__spin_until = uv_hrtime() + (ns);                          \
    for (uvt__spin_round = 1; (cond); uvt__spin_round++) {         \
      uvt__cpu_relax();                                            \
      if ((uvt__spin_round & ((yield) ? 15 : 63)) != 0) continue;  \
      if (uv_hrtime() > uvt__spin_until) break;                    \
      if (yield) uvt__thread_yield();                              \
    }                                                              \
  } while (0)
#define UVT__SPIN_WHILE(cond, ns) UVT__SPIN_WHILE_YIELDING(cond, ns, 0)

/* uv_hrtime() + ms, saturating: a timeout too large to add to the clock
 * means "never" (UINT64_MAX), not a deadline in the past. */
static inline uint64_t uvt__deadline_after_ms(uint64_t ms) {
  uint64_t now = uv_hrtime();
  if (ms > (UINT64_MAX - now) / 1000000u) return UINT64_MAX;
  return now + ms * 1000000u;
}

/* ---- The CPU's time-stamp counter (for the stats clock, clock.h) --------- */

#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__))
#include <x86intrin.h>
#define UVT__HAVE_TSC 1
static inline uint64_t uvt__rdtsc(void) { return __rdtsc(); }

/* Linux keeps time with the TSC only if it is invariant and synchronised
 * across CPUs, which is exactly what timing across threads needs. */
static inline int uvt__kernel_clock_is_tsc(void) {
  char name[16] = {0};
  FILE* f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "r");
  if (f == NULL) return 0;
  if (fgets(name, sizeof(name), f) == NULL) name[0] = '\0';
  fclose(f);
  return strcmp(name, "tsc\n") == 0;
}
#endif

/* ---- Allocation (alloc.c: one place, so tests can inject failures) ------- */

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

/* ---- Intrusive pairing heap, least key first --------------------------- */

/* A heap is a pointer to its root (NULL when empty). Insert and meld take
 * O(1), removing any node O(log n) amortised (Fredman, Sedgewick, Sleator
 * and Tarjan, 1986), and nothing is allocated. Equal keys come out in no
 * particular order. Single-threaded: the caller owns the heap. */

/* Melds two heaps given by their roots (either may be NULL). */
static inline uvt__heap_node_t* uvt__heap_meld(uvt__heap_node_t* a, uvt__heap_node_t* b) {
  uvt__heap_node_t* t;
  if (a == NULL) return b;
  if (b == NULL) return a;
  if (b->key < a->key) {
    t = a;
    a = b;
    b = t;
  }
  /* b becomes a's first child. */
  b->prev = a;
  b->next = a->child;
  if (a->child != NULL) a->child->prev = b;
  a->child = b;
  return a;
}

/* Melds a list of siblings into one heap: pairs left to right, then the
 * pairs right to left (the two passes that give the amortised bound),
 * without recursion. */
static inline uvt__heap_node_t* uvt__heap_meld_siblings(uvt__heap_node_t* first) {
  uvt__heap_node_t* pairs = NULL; /* melded pairs, the last first, through next */
  uvt__heap_node_t* root = NULL;
  while (first != NULL) {
    uvt__heap_node_t* a = first;
    uvt__heap_node_t* b = a->next;
    first = b != NULL ? b->next : NULL;
    a->next = a->prev = NULL;
    if (b != NULL) {
      b->next = b->prev = NULL;
      a = uvt__heap_meld(a, b);
    }
    a->next = pairs;
    pairs = a;
  }
  while (pairs != NULL) {
    uvt__heap_node_t* p = pairs;
    pairs = p->next;
    p->next = NULL;
    root = uvt__heap_meld(root, p);
  }
  return root;
}

static inline void uvt__heap_insert(uvt__heap_node_t** heap, uvt__heap_node_t* n) {
  n->child = n->next = n->prev = NULL;
  *heap = uvt__heap_meld(*heap, n);
}

/* Removes n, which is in the heap. */
static inline void uvt__heap_remove(uvt__heap_node_t** heap, uvt__heap_node_t* n) {
  uvt__heap_node_t* children = n->child;
  if (children != NULL) children->prev = NULL;
  n->child = NULL;
  if (n == *heap) {
    *heap = uvt__heap_meld_siblings(children);
    return;
  }
  /* Unlink n from its parent's list of children. */
  if (n->prev->child == n)
    n->prev->child = n->next;
  else
    n->prev->next = n->next;
  if (n->next != NULL) n->next->prev = n->prev;
  n->next = n->prev = NULL;
  *heap = uvt__heap_meld(*heap, uvt__heap_meld_siblings(children));
}

#endif /* UVT_INTERNAL_H */
