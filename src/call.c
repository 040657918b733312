/* uvt_call and uvt_sync_await: threads calling into the loop.
 *
 * uvt_call takes a record from its thread's cache (it is fire and forget:
 * the caller keeps nothing), so the steady path allocates nothing.
 * uvt_sync_await borrows a record from its bridge
 * (bridge.h) and gives it back when it wakes; records stay owned by the
 * bridge until it closes, so a stray second uvt_await_resolve finds a
 * record that is still memory. The handle the loop function gets is a
 * pointer into the record whose low bits are a ticket, new for each use of
 * the record: a stray resolve carries an old ticket and is ignored
 * (asserting in debug builds), also when the record already serves another
 * await, unless that record has been reused a multiple of UVT__AWAIT_TICKETS
 * times since. Tickets step by the struct's alignment, so a handle is a
 * correctly aligned pointer. */
#include "bridge.h"
#include "context.h"

/* ---- uvt_call ----------------------------------------------------------- *
 *
 * A call's record comes from its calling thread's cache, not from malloc:
 * the thread keeps a free list of the records it allocated, and the loop
 * that delivered one gives it back through the cache's `returned` stack,
 * which any loop pushes to and only the owner empties, all at once with an
 * exchange (so no pop ever meets a recycled node: no ABA). When the thread
 * exits, its cache frees what it holds and marks `returned` orphaned: a
 * record delivered later is freed by its loop, and the last one out frees
 * the cache (`records` counts the live records, plus one for the owner).
 *
 * A thread that calls faster than the loop delivers needs a record for
 * every call in flight. Once it has UVT__CALL_YIELD_AT of them and none
 * came back, each call that would allocate yields the CPU once first:
 * with more calling threads than cores, the scheduler gives the loop
 * thread one share among them all, and the backlog, whose memory the
 * heap must grow for (page faults, and at the threads' exit trims that
 * flush every core's TLB), cost more than the calls (8 threads on 2 cores,
 * fast host mode: 12 -> 22 M calls/s). The bound is small enough that the
 * loop finds a backlog still in the cache when it walks it (reverses the
 * inbox, delivers): 16384 records (1.3 MB) against 4096, one CPU, 1, 4, 8
 * threads: 1.7x-1.9x against 1.9x-2.0x the hand-written list; two CPUs:
 * 2.9-5.3e7 against 4.0-5.9e7 calls/s. A call never waits for the loop. */

#define UVT__CALLS_ORPHANED ((uintptr_t)1)
#define UVT__CALL_YIELD_AT 4096 /* 320 KB of records */

typedef struct uvt__call_cache_s uvt__call_cache_t;

typedef struct uvt__call_s {
  uvt__msg_t msg;
  uvt__bridge_impl_t* impl;
  uvt_call_cb fn;
  void* arg;
  void* ctx;
  uvt__call_cache_t* cache; /* the calling thread's, which owns the record */
  /* Free: the cache's list. In flight: the records of the same cache that
   * the loop delivered just before this one, to hand back with it (NULL
   * unless the loop set it); chain_tail is then the last of them. */
  struct uvt__call_s* next_free;
  struct uvt__call_s* chain_tail;
} uvt__call_t;

struct uvt__call_cache_s {
  uvt__call_t* free; /* the owner thread only */
  /* Pushed by the loops, taken by the owner: on a line of its own. */
  _Alignas(UVT__CACHE_LINE) uintptr_t returned; /* uvt__call_t*, or ORPHANED */
  unsigned long records; /* atomic: live records, + 1 while the owner lives */
};

static UVT__THREAD_LOCAL uvt__call_cache_t* uvt__tls_calls;
static uvt__thread_key_t uvt__calls_key;
static uv_once_t uvt__calls_key_once = UV_ONCE_INIT;
static int uvt__calls_key_rc;

static void uvt__calls_release(uvt__call_cache_t* cache, unsigned long n) {
  /* Acq_rel: the last one out sees every other release before it frees. */
  if (__atomic_fetch_sub(&cache->records, n, __ATOMIC_ACQ_REL) == n) uvt__free(cache);
}

/* The owner thread exits: free what it holds, orphan the rest. */
static void uvt__calls_thread_exit(void* arg) {
  uvt__call_cache_t* cache = arg;
  unsigned long freed = 0;
  uvt__call_t* rec = cache->free;
  uvt__call_t* next;
  /* Acquire: the records the loops pushed, with their last writes. */
  uvt__call_t* back = (uvt__call_t*)__atomic_exchange_n(&cache->returned, UVT__CALLS_ORPHANED,
                                                        __ATOMIC_ACQUIRE);
  for (; rec != NULL; rec = next, freed++) {
    next = rec->next_free;
    uvt__free(rec);
  }
  for (rec = back; rec != NULL; rec = next, freed++) {
    next = rec->next_free;
    uvt__free(rec);
  }
  uvt__tls_calls = NULL;
  uvt__calls_release(cache, freed + 1);
}

static void uvt__calls_key_init(void) {
  uvt__calls_key_rc = uvt__thread_key_create(&uvt__calls_key, uvt__calls_thread_exit);
}

/* Whether a caller far ahead of the loop should yield: not on the loop
 * thread, which cannot deliver meanwhile. Asked inside the bridge's gate:
 * a call holds nothing else of the bridge, and the end frees the impl
 * once every accepted call is delivered. Closing: no (the push fails). */
static int uvt__call_may_yield(uvt_bridge_t* bridge) {
  uvt__bridge_impl_t* impl = uvt__bridge_enter(bridge);
  int yield;
  if (impl == NULL) return 0;
  yield = !uvt__bridge_on_loop_thread(impl);
  uvt__bridge_leave(bridge);
  return yield;
}

/* A record for the calling thread, or NULL when out of memory. */
static uvt__call_t* uvt__call_take(uvt_bridge_t* bridge) {
  uvt__call_cache_t* cache = uvt__tls_calls;
  uvt__call_t* rec;
  if (cache == NULL) {
    uv_once(&uvt__calls_key_once, uvt__calls_key_init);
    if (uvt__calls_key_rc != 0) return NULL;
    cache = uvt__aligned_alloc(UVT__CACHE_LINE, sizeof(*cache));
    if (cache == NULL) return NULL;
    memset(cache, 0, sizeof(*cache));
    cache->records = 1; /* the owner */
    uvt__thread_key_set(uvt__calls_key, cache);
    uvt__tls_calls = cache;
  }
  if (cache->free == NULL) {
    /* Far ahead of the loop (UVT__CALL_YIELD_AT records out, none back):
     * give the CPU away once before allocating (top of the section), then
     * look again. Relaxed: a hint; the exchange acquires what came back. */
    if (uvt__load_relaxed(&cache->returned) == 0 &&
        uvt__load_relaxed(&cache->records) > UVT__CALL_YIELD_AT) {
      UVT__TEST_POINT("call.far_ahead", bridge); /* the bridge may end here */
      if (uvt__call_may_yield(bridge)) uvt__thread_yield();
    }
    if (uvt__load_relaxed(&cache->returned) != 0)
      /* Acquire: pairs with the loops' release CAS. */
      cache->free = (uvt__call_t*)uvt__exchange_acquire(&cache->returned, (uintptr_t)0);
  }
  if ((rec = cache->free) != NULL) {
    cache->free = rec->next_free;
    return rec;
  }
  if ((rec = uvt__malloc(sizeof(*rec))) == NULL) return NULL;
  /* Relaxed: only the count matters (see uvt__calls_release). */
  __atomic_fetch_add(&cache->records, 1ul, __ATOMIC_RELAXED);
  rec->cache = cache;
  return rec;
}

/* Any thread: the records head .. tail (linked by next_free) go back to
 * their owner's cache in one push (freed if the owner left). */
static void uvt__call_give_back(uvt__call_t* head, uvt__call_t* tail) {
  uvt__call_cache_t* cache = head->cache;
  uintptr_t old = uvt__load_relaxed(&cache->returned);
  do {
    if (old == UVT__CALLS_ORPHANED) {
      unsigned long n = 0;
      tail->next_free = NULL;
      while (head != NULL) {
        uvt__call_t* next = head->next_free;
        uvt__free(head);
        head = next;
        n++;
      }
      uvt__calls_release(cache, n);
      return;
    }
    tail->next_free = (uvt__call_t*)old;
    /* Release: our reads of the records happen before their owner reuses them. */
  } while (!uvt__cas_weak_release(&cache->returned, &old, (uintptr_t)head));
}

/* The loop delivers a flood of calls from one thread back to back, so a
 * record is not handed back alone (a CAS on the line its owner reads, per
 * call) when the next message in the ready list is a call of the same
 * owner: that one carries it, and the last of the run hands the whole run
 * back. A run ends where the ready list does: records wait at most until
 * the calls queued behind them are delivered (a run that a drain's budget
 * cuts, until the next drain). An owner that waits for a callback before
 * it calls again may so find its whole last run still out, and the cache
 * holds up to twice what it keeps in flight (test_alloc). */
static unsigned uvt__call_deliver(uvt__msg_t* msg, unsigned budget) {
  uvt__call_t* call = uvt__container_of(msg, uvt__call_t, msg);
  uvt__bridge_impl_t* impl = call->impl;
  uvt__call_t* tail;
  uvt__call_t* next;
  void* prev;
  (void)budget;
  uvt__bridge_before_callback(impl);
  prev = uvt__context_swap(call->ctx);
  call->fn(call->arg);
  uvt__context_swap(prev);
  tail = call->next_free == NULL ? call : call->chain_tail;
  /* Read after fn: what fn posted on this thread is behind it, and the
   * drain delivers ready_head next. */
  next = impl->ready_head == NULL || impl->ready_head->deliver != uvt__call_deliver
             ? NULL
             : uvt__container_of(impl->ready_head, uvt__call_t, msg);
  if (next != NULL && next->cache == call->cache) {
    next->next_free = call;
    next->chain_tail = tail;
    return 1;
  }
  uvt__call_give_back(call, tail);
  return 1;
}

/* A call needs nothing of the bridge but its delivery, so it does not pass
 * the bridge's gate: one push (bridge.c), which fails once the bridge
 * ended, and a call that got in before is still delivered. */
int uvt_call(uvt_bridge_t* bridge, uvt_call_cb fn, void* arg) {
  uvt__bridge_impl_t* impl = uvt__bridge_get(bridge);
  uvt__call_t* call;
  if (impl == NULL || fn == NULL) return UV_EINVAL;
  if ((call = uvt__call_take(bridge)) == NULL) return UV_ENOMEM;
  call->msg.deliver = uvt__call_deliver;
  call->fn = fn;
  call->arg = arg;
  call->ctx = uvt__context_current();
  call->impl = impl; /* read only if delivered: then the impl lives */
  call->next_free = NULL; /* no run of delivered records yet */
  if (uvt__bridge_post_untracked(bridge, &call->msg) != 0) {
    call->next_free = call->cache->free; /* ours: straight back */
    call->cache->free = call;
    return UV_EPIPE;
  }
  return 0;
}

/* ---- uvt_sync_await ----------------------------------------------------- */

enum { UVT__AWAIT_QUEUED = 1, UVT__AWAIT_RUNNING, UVT__AWAIT_RESOLVED };

#define UVT__AWAIT_SPIN_NS 20000u /* how long a waiter spins before it sleeps */
#define UVT__AWAIT_TICKET_STEP ((unsigned)_Alignof(uvt_await_t))
#define UVT__AWAIT_TICKETS (UVT__RECORD_ALIGN / UVT__AWAIT_TICKET_STEP) /* 128 */

struct uvt_await_s {
  uvt__record_t rec; /* first: the bridge's record */
  uvt__bridge_impl_t* impl; /* set once, when the record is new */
  unsigned ticket; /* atomic: this use's ticket; a stray resolve reads it */
  uvt_await_cb fn;
  void* arg;
  void* ctx;
  uvt__inflight_t inflight; /* while fn runs: the close waits for the resolve */
  int status;
  int state; /* atomic: the waiter spins on it; written by the loop, or by
              * the waiting thread before it posts */
};

/* The handle of aw's current use: a pointer into the record, offset by the
 * ticket (the record is UVT__RECORD_ALIGN bytes or more). Never dereferenced. */
_Static_assert(UVT__RECORD_ALIGN % _Alignof(uvt_await_t) == 0 && UVT__AWAIT_TICKETS >= 128,
               "tickets keep handles aligned, and there are enough of them");
static uvt_await_t* uvt__await_handle(uvt_await_t* aw) {
  return (uvt_await_t*)((char*)aw + uvt__load_relaxed(&aw->ticket));
}

static unsigned uvt__await_deliver(uvt__msg_t* msg, unsigned budget) {
  uvt_await_t* aw = uvt__container_of(msg, uvt_await_t, rec.msg);
  uvt__bridge_impl_t* impl = aw->impl;
  void* prev;
  (void)budget;
  if (impl->closing) {
    aw->status = UV_ECANCELED;
    uvt__store_release(&aw->state, UVT__AWAIT_RESOLVED); /* publishes status */
    uv_sem_post(&aw->rec.done);
    return 1;
  }
  uvt__store_relaxed(&aw->state, UVT__AWAIT_RUNNING);
  aw->inflight.closing = NULL; /* nothing to cancel: the close waits */
  uvt__bridge_track(impl, &aw->inflight);
  uvt__bridge_before_callback(impl);
  prev = uvt__context_swap(aw->ctx);
  aw->fn(uvt__await_handle(aw), aw->arg);
  uvt__context_swap(prev);
  return 1;
}

int uvt_sync_await(uvt_bridge_t* bridge, uvt_await_cb fn, void* arg) {
  uvt__bridge_impl_t* impl;
  uvt_await_t* aw;
  int rc;
  if (uvt__bridge_get(bridge) == NULL || fn == NULL) return UV_EINVAL;
  /* Inside the gate for the whole call: the record goes back to the bridge
   * after we wake. A closing bridge is not touched at all. */
  if ((impl = uvt__bridge_enter(bridge)) == NULL) return UV_EPIPE;
  if (uvt__bridge_on_loop_thread(impl)) {
    rc = UV_EBUSY; /* waiting here would deadlock the loop */
    goto out;
  }
  aw = (uvt_await_t*)uvt__bridge_record_take(impl, sizeof(uvt_await_t));
  if (aw == NULL) {
    rc = UV_ENOMEM;
    goto out;
  }
  aw->rec.msg.deliver = uvt__await_deliver;
  if (aw->impl == NULL) aw->impl = impl; /* new: no stray handle points here yet */
  /* Relaxed: published with the post; a stray resolve only compares it. */
  uvt__store_relaxed(&aw->ticket, (aw->ticket + UVT__AWAIT_TICKET_STEP) & (UVT__RECORD_ALIGN - 1u));
  aw->fn = fn;
  aw->arg = arg;
  aw->ctx = uvt__context_current();
  aw->status = 0;
  uvt__store_relaxed(&aw->state, UVT__AWAIT_QUEUED);
  uvt__bridge_post_entered(impl, &aw->rec.msg);
  /* A loop function that resolves at once answers within microseconds:
   * spin for that briefly, so the post finds nobody asleep. The wait below
   * then returns at once; either way it consumes the post. The spin
   * yields: the loop thread may share our CPU (internal.h). */
  UVT__SPIN_WHILE_YIELDING(uvt__load_acquire(&aw->state) != UVT__AWAIT_RESOLVED,
                           UVT__AWAIT_SPIN_NS, 1);
  uv_sem_wait(&aw->rec.done);
  rc = aw->status; /* ordered by the acquire load or the semaphore */
  uvt__bridge_record_give(impl, &aw->rec);
out:
  uvt__bridge_leave(bridge);
  return rc;
}

void uvt_await_resolve(uvt_await_t* handle, int status) {
  uvt_await_t* aw;
  unsigned ticket;
  if (handle == NULL) return;
  aw = (uvt_await_t*)((uintptr_t)handle & ~(uintptr_t)(UVT__RECORD_ALIGN - 1u));
  ticket = (unsigned)((uintptr_t)handle & (UVT__RECORD_ALIGN - 1u));
  if (uvt__load_relaxed(&aw->ticket) != ticket ||
      uvt__load_relaxed(&aw->state) != UVT__AWAIT_RUNNING ||
      !uvt__bridge_on_loop_thread(aw->impl)) {
    assert(!"uvt_await_resolve: await not running (resolved twice?) or not the loop thread");
    return;
  }
  aw->status = status;
  uvt__bridge_untrack(aw->impl, &aw->inflight);
  uvt__store_release(&aw->state, UVT__AWAIT_RESOLVED); /* publishes status */
  uv_sem_post(&aw->rec.done); /* the waiter may reuse aw from here on */
}
