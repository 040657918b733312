/* The bridge: one uv_async_t per loop and the completion queue behind it.
 *
 * Producers (workers, generator and channel threads, uvt_call callers) push
 * message nodes onto a lock-free stack. Only the push that finds the stack
 * empty calls uv_async_send, so one wake-up serves a whole batch. The loop
 * takes the stack in one exchange, reverses it into submission order, and
 * delivers at most UVT__DRAIN_BUDGET callbacks per wake-up before re-arming
 * itself, so a flood of completions never starves timers and sockets.
 *
 * While a drain runs, the exchange leaves a marker in the stack instead of
 * emptying it: pushes land on the marker, see a non-empty stack and send
 * nothing, and the drain takes them before it ends (it ends only by
 * swapping the bare marker for NULL, or on a spent budget, which re-arms).
 * In a flood this saves the producers an eventfd write, and the loop a
 * trip through epoll, for every time the drain catches up with them. The
 * loop's short wait before it polls (uvt__bridge_prepare_cb) leaves the
 * same marker in the empty stack: a push during the wait sends nothing,
 * and the wait delivers it itself, then has the loop poll without
 * blocking (an idle handle) so that it comes back to wait again.
 *
 * The inbox lives in the caller's uvt_bridge_t, which stays valid until
 * close_cb starts, not in the impl that the end frees: a push touches only
 * the caller's struct. A producer still touches the impl after its push
 * makes the message visible if it calls uv_async_send, so a push that may
 * find the stack empty counts itself in `senders` (beside the inbox, on
 * the line its push writes anyway) around it. The end closes the inbox
 * (a CAS from empty to a closed marker, which later pushes find and fail
 * on), then waits for senders to reach zero before it closes the handles.
 * Producers the bridge waits for (tracked objects) never find it closed.
 * uvt_call needs nothing else of the bridge: a call either got into the
 * inbox before the end closed it, and is delivered, or fails. A
 * uvt_sync_await uses the bridge's record cache, so it passes a gate in
 * the caller's struct too: it enters before it touches the impl, and one
 * that finds the closing bit set leaves without touching it; the end waits
 * for the gate to empty before it closes the inbox.
 *
 * Deadlines sit in a pairing heap (internal.h) with one uv_timer armed for
 * the nearest: a start is O(1), a stop O(log n) amortised, however the
 * deadlines of the requests in flight interleave. The timer counts in
 * the loop's milliseconds, which come from the same monotonic clock as
 * uv_hrtime() but rounded down (and read at most a millisecond late), so
 * it is set for the deadline's millisecond rounded up: it never fires
 * early, and late by about a millisecond plus the loop's own delay. Its
 * callback still compares with uv_hrtime() and sets itself again for what
 * is not yet due. */
#include "bridge.h"

#define UVT__DRAIN_BUDGET 1000u

/* The inbox's bottom while a drain runs (see the top of the file). */
static uvt__msg_t uvt__drain_marker;
#define UVT__DRAIN_MARKER (&uvt__drain_marker)

/* The inbox's value once the bridge has ended: pushes find it and fail. */
static uvt__msg_t uvt__closed_marker;
#define UVT__CLOSED_MARKER (&uvt__closed_marker)

/* The inbox and the senders count live in the caller's struct. */
#define UVT__INBOX(impl) (&(impl)->bridge->uvt__inbox)
#define UVT__SENDERS(impl) (&(impl)->bridge->uvt__senders)

/* The gate (bridge->uvt__gate): threads inside, and this bit once closing. */
#define UVT__GATE_CLOSING 0x80000000u

uvt__bridge_impl_t* uvt__bridge_get(const uvt_bridge_t* bridge) {
  if (bridge == NULL) return NULL;
  /* Relaxed: the tag only tells live from garbage; a thread using a bridge
   * got its pointer through something that ordered it after the init. */
  (void)UVT__TAG_READ(bridge->uvt__tag);
  if (uvt__load_relaxed(&bridge->uvt__tag) != UVT__TAG(bridge, UVT__KIND_BRIDGE)) return NULL;
  /* Relaxed: the teardown clears it while late threads may still read it
   * (they then see NULL, or enter the gate and find it closing). */
  return uvt__load_relaxed(&bridge->uvt__impl);
}

uvt__bridge_impl_t* uvt__bridge_enter(uvt_bridge_t* bridge) {
  /* Seq_cst: uvt_bridge_close sets the closing bit with a seq_cst RMW,
   * then the teardown reads the count. In the single total order either
   * we see the bit, or the teardown sees us and waits for our leave. */
  unsigned gate = uvt__fetch_add_seq_cst(&bridge->uvt__gate, 1u);
  UVT__TEST_POINT("bridge.enter", bridge); /* a close may finish here */
  if (gate & UVT__GATE_CLOSING) {
    uvt__bridge_leave(bridge);
    return NULL;
  }
  return uvt__load_relaxed(&bridge->uvt__impl);
}

void uvt__bridge_leave(uvt_bridge_t* bridge) {
  /* Release: our last touch of the impl happens before the teardown's
   * acquire load sees the count drop. */
  uvt__fetch_sub_release(&bridge->uvt__gate, 1u);
}

int uvt__bridge_check_submit(uvt__bridge_impl_t* impl) {
  if (!uvt__bridge_on_loop_thread(impl)) return UV_EINVAL;
  if (impl->closing) return UV_EPIPE;
  return 0;
}

/* Recomputes whether the async handle keeps the loop alive. Loop thread. */
static void uvt__bridge_update_ref(uvt__bridge_impl_t* impl) {
  if (impl->finishing) return;
  if (impl->closing || impl->refs > 0 || impl->user_ref)
    uv_ref((uv_handle_t*)&impl->async);
  else
    uv_unref((uv_handle_t*)&impl->async);
}

void uvt__bridge_track(uvt__bridge_impl_t* impl, uvt__inflight_t* node) {
  uvt__queue_insert_tail(&impl->inflight, &node->node);
  node->ref = 1;
  /* Only the first ref'd object changes the handle's ref state. */
  if (impl->refs++ == 0) uvt__bridge_update_ref(impl);
}

void uvt__bridge_untrack(uvt__bridge_impl_t* impl, uvt__inflight_t* node) {
  uvt__queue_remove(&node->node);
  if (node->ref) impl->refs--;
  if (impl->closing)
    uv_async_send(&impl->async); /* the close may have been waiting for this */
  else if (impl->refs == 0)
    uvt__bridge_update_ref(impl);
}

void uvt__bridge_set_ref(uvt__bridge_impl_t* impl, uvt__inflight_t* node, int ref) {
  if (node->ref == ref) return;
  node->ref = ref;
  if (ref)
    impl->refs++;
  else
    impl->refs--;
  uvt__bridge_update_ref(impl);
}

/* Pushes msg and wakes the loop if the stack was empty; UV_EPIPE if the
 * bridge has ended (then nothing was pushed, and the impl not touched). If
 * hold_if_empty, the caller is not inside the gate: a push that may find
 * the stack empty counts itself in senders first (only that push touches
 * the impl afterwards, with uv_async_send), and releases it after. Once
 * the loop has taken msg the bridge may end, but not while we hold
 * senders: the end reads senders after it closed the inbox, which comes
 * after our push. */
static int uvt__bridge_push(uvt_bridge_t* bridge, uvt__msg_t* msg, int hold_if_empty) {
  uvt__msg_t* head = uvt__load_relaxed(&bridge->uvt__inbox);
  int held = 0;
  for (;;) {
    if (head == UVT__CLOSED_MARKER) {
      if (held) uvt__fetch_sub_release(&bridge->uvt__senders, 1u);
      return UV_EPIPE;
    }
    if (head == NULL && hold_if_empty && !held) {
      uvt__fetch_add_seq_cst(&bridge->uvt__senders, 1u);
      held = 1;
    }
    msg->next = head;
    /* Release: makes msg and everything the producer wrote before it (the
     * work's results, the items) visible to the loop's acquire exchange.
     * Seq_cst (which includes it) for the held push: it must come before
     * the end's closing CAS in the single total order, or fail on it. */
    if (__atomic_compare_exchange_n(&bridge->uvt__inbox, &head, msg, 1, __ATOMIC_SEQ_CST,
                                    __ATOMIC_RELAXED))
      break;
  }
  /* A non-empty stack means an earlier push already woke the loop and the
   * loop has not taken the stack yet: it will take this node too. Relaxed:
   * the impl is the one of the inbox we pushed to (a caller does not race
   * the end with close_cb). */
  if (head == NULL) {
    UVT__TEST_POINT("bridge.push", bridge); /* pushed, the wake-up still to send */
    uv_async_send(&uvt__load_relaxed(&bridge->uvt__impl)->async);
  }
  /* Release: our last touch of the impl happens before the end's acquire
   * load sees zero. */
  if (held) uvt__fetch_sub_release(&bridge->uvt__senders, 1u);
  return 0;
}

void uvt__bridge_post(uvt__bridge_impl_t* impl, uvt__msg_t* msg) {
  /* Most pushes find the stack non-empty and cost one CAS. A tracked
   * producer never finds the bridge ended: it waits for the producer. */
  int rc = uvt__bridge_push(impl->bridge, msg, 1);
  assert(rc == 0);
  (void)rc;
}

void uvt__bridge_post_entered(uvt__bridge_impl_t* impl, uvt__msg_t* msg) {
  int rc = uvt__bridge_push(impl->bridge, msg, 0); /* the end waits for the gate */
  assert(rc == 0);
  (void)rc;
}

int uvt__bridge_post_untracked(uvt_bridge_t* bridge, uvt__msg_t* msg) {
  /* Relaxed: a hint for the common case; the push itself fails once the
   * bridge has ended, and a push that lands before that is delivered. */
  if (uvt__load_relaxed(&bridge->uvt__gate) & UVT__GATE_CLOSING) return UV_EPIPE;
  return uvt__bridge_push(bridge, msg, 1);
}

/* Loop thread: msg goes to the back of the ready list. */
static void uvt__bridge_ready_append(uvt__bridge_impl_t* impl, uvt__msg_t* msg) {
  msg->next = NULL;
  if (impl->ready_tail != NULL)
    impl->ready_tail->next = msg;
  else
    impl->ready_head = msg;
  impl->ready_tail = msg;
}

void uvt__bridge_post_local(uvt__bridge_impl_t* impl, uvt__msg_t* msg) {
  if (impl->withdrawing) {
    msg->next = impl->close_posts; /* put in order by the close */
    impl->close_posts = msg;
    return;
  }
  uvt__bridge_ready_append(impl, msg);
  uv_async_send(&impl->async);
}

static void uvt__bridge_nudge_cb(uv_idle_t* nudge);

void uvt__bridge_poll(uvt__bridge_impl_t* impl, uvt__poll_t* poll) {
  /* Order does not matter here: each message is a different object. */
  poll->msg.next = impl->polled;
  impl->polled = &poll->msg;
  if (!impl->finishing) uv_idle_start(&impl->nudge, uvt__bridge_nudge_cb);
}

uvt__record_t* uvt__bridge_record_take(uvt__bridge_impl_t* impl, size_t size) {
  uvt__record_t* rec;
  uv_mutex_lock(&impl->records_mutex);
  rec = impl->records_free_head;
  if (rec != NULL) {
    impl->records_free_head = rec->next_free;
    if (impl->records_free_head == NULL) impl->records_free_tail = NULL;
    uv_mutex_unlock(&impl->records_mutex);
    return rec;
  }
  uv_mutex_unlock(&impl->records_mutex);

  if (size < UVT__RECORD_ALIGN) size = UVT__RECORD_ALIGN;
  rec = uvt__aligned_alloc(UVT__RECORD_ALIGN, size);
  if (rec == NULL) return NULL;
  memset(rec, 0, size);
  if (uv_sem_init(&rec->done, 0) != 0) {
    uvt__free(rec);
    return NULL;
  }
  uv_mutex_lock(&impl->records_mutex);
  rec->next_all = impl->records_all;
  impl->records_all = rec;
  uv_mutex_unlock(&impl->records_mutex);
  return rec;
}

/* Oldest first, so a stale pointer meets a reused record as late as possible. */
void uvt__bridge_record_give(uvt__bridge_impl_t* impl, uvt__record_t* rec) {
  uv_mutex_lock(&impl->records_mutex);
  rec->next_free = NULL;
  if (impl->records_free_tail != NULL)
    impl->records_free_tail->next_free = rec;
  else
    impl->records_free_head = rec;
  impl->records_free_tail = rec;
  uv_mutex_unlock(&impl->records_mutex);
}

static void uvt__bridge_records_free(uvt__bridge_impl_t* impl) {
  uvt__record_t* rec = impl->records_all;
  while (rec != NULL) {
    uvt__record_t* next = rec->next_all;
    uv_sem_destroy(&rec->done);
    uvt__free(rec);
    rec = next;
  }
  uv_mutex_destroy(&impl->records_mutex);
}

/* Moves the whole inbox, in push order, behind the ready list, leaving the
 * drain's marker in it. Returns 0 if it held nothing new: the inbox is then
 * NULL again, and the next push wakes the loop. */
static int uvt__bridge_take_inbox(uvt__bridge_impl_t* impl) {
  uvt__msg_t* stack;
  uvt__msg_t* fifo = NULL;
  uvt__msg_t* tail;
  for (;;) {
    uvt__msg_t* marker = UVT__DRAIN_MARKER;
    /* Acquire: pairs with the producers' release CAS. */
    if (uvt__load_relaxed(UVT__INBOX(impl)) == UVT__CLOSED_MARKER) return 0; /* ended */
    stack = uvt__exchange_acquire(UVT__INBOX(impl), UVT__DRAIN_MARKER);
    if (stack != NULL && stack != UVT__DRAIN_MARKER) break;
    /* Relaxed: no message comes with the marker. If a push landed on it
     * since the exchange, the CAS fails and we take that push. */
    if (uvt__cas_strong_relaxed(UVT__INBOX(impl), &marker, NULL)) return 0;
  }
  tail = stack;
  while (stack != NULL && stack != UVT__DRAIN_MARKER) {
    uvt__msg_t* next = stack->next;
    stack->next = fifo;
    fifo = stack;
    stack = next;
  }
  if (impl->ready_tail != NULL)
    impl->ready_tail->next = fifo;
  else
    impl->ready_head = fifo;
  impl->ready_tail = tail;
  return 1;
}

/* Runs once for each of the bridge's handles; the last frees it. */
static void uvt__bridge_closed_cb(uv_handle_t* handle) {
  uvt__bridge_impl_t* impl = handle->data;
  uvt_bridge_t* bridge = impl->bridge;
  uvt_close_cb cb = impl->close_cb;
  if (--impl->handles_open > 0) return;
  uvt__bridge_records_free(impl);
  uvt__store_relaxed(&bridge->uvt__tag, (uintptr_t)0);
  uvt__store_relaxed(&bridge->uvt__impl, (uvt__bridge_impl_t*)NULL);
  uvt__pool_detach(bridge->pool, impl->producer.sole);
  uvt__free(impl);
  UVT__TEST_POINT("bridge.ended", bridge); /* a late uvt_call finds the tag cleared */
  if (cb != NULL) cb(bridge);
}

/* Loop thread, bridge closing: ends it once nothing is left in flight. */
static void uvt__bridge_maybe_finish(uvt__bridge_impl_t* impl) {
  uvt__msg_t* expected = NULL;
  if (impl->finishing || !uvt__queue_empty(&impl->inflight) || impl->ready_head != NULL ||
      impl->polled != NULL)
    return;
  if (uvt__load_acquire(UVT__INBOX(impl)) != NULL) return;
  /* Every request has been delivered; a sync_await accepted just before the
   * close may still post (it then waits for the loop), so the wait ends on
   * a post too: the post sent a wake-up, and the drain that takes it comes
   * back here. */
  while ((uvt__load_acquire(&impl->bridge->uvt__gate) & ~UVT__GATE_CLOSING) != 0) {
    if (uvt__load_acquire(UVT__INBOX(impl)) != NULL) return;
    uvt__thread_yield();
  }
  /* Close the inbox: later pushes (uvt_call that missed the closing bit)
   * fail. A push that got in first woke the loop: come back then. Seq_cst:
   * see uvt__bridge_push. */
  if (!uvt__cas_strong_seq_cst(UVT__INBOX(impl), &expected, UVT__CLOSED_MARKER)) return;
  /* Pushes before it may still be on their way out (uv_async_send).
   * Acquire: pairs with their release. */
  while (uvt__load_acquire(UVT__SENDERS(impl)) != 0) uvt__thread_yield();
  impl->finishing = 1;
  uv_ref((uv_handle_t*)&impl->async);
  uv_close((uv_handle_t*)&impl->prepare, uvt__bridge_closed_cb);
  uv_close((uv_handle_t*)&impl->nudge, uvt__bridge_closed_cb);
  uv_close((uv_handle_t*)&impl->first, uvt__bridge_closed_cb);
  uv_close((uv_handle_t*)&impl->deadlines, uvt__bridge_closed_cb);
  uv_close((uv_handle_t*)&impl->async, uvt__bridge_closed_cb);
}

/* The loop may have moved to another thread since the init (one thread at
 * a time runs it). Relaxed: only the loop thread writes it (see
 * uvt__bridge_on_loop_thread). */
static void uvt__bridge_learn_loop_thread(uvt__bridge_impl_t* impl) {
  uv_thread_t self = uv_thread_self();
  uv_thread_t known = uvt__load_relaxed(&impl->loop_thread);
  /* Stored only when it changed: producers read this line on every put. */
  if (!uv_thread_equal(&self, &known)) uvt__store_relaxed(&impl->loop_thread, self);
}

/* How long the loop thread waits for the bridge's next message before it
 * polls (and sleeps), right after a drain that delivered something. In a
 * round trip (a task's after submits the next, a thread's sync_await
 * follows the last) the answer comes within microseconds, and a sleep and
 * wake-up of the loop thread cost 5-30 us on a VM. The wait only reads the
 * inbox's line (and, every few rounds, what polled messages' ready hooks
 * read). After a miss it is not tried again until a drain delivers, so an
 * idle loop, or one with only a long task in flight, never spins: at most
 * one miss (this long) per delivering drain. A polled message (a stream in
 * a flood) is delivered when its hook says it is ready, or when the wait
 * ends. */
#define UVT__LOOP_SPIN_NS 20000u

static void uvt__bridge_drain(uv_async_t* async);

/* Started for one iteration: an active idle handle makes the poll not block. */
static void uvt__bridge_nudge_cb(uv_idle_t* nudge) { uv_idle_stop(nudge); }

/* Whether a polled message is worth a visit now. */
static int uvt__bridge_polled_ready(uvt__bridge_impl_t* impl) {
  uvt__msg_t* msg;
  for (msg = impl->polled; msg != NULL; msg = msg->next) {
    uvt__poll_t* poll = uvt__container_of(msg, uvt__poll_t, msg);
    if (poll->ready(poll)) return 1;
  }
  return 0;
}

/* The wait: until a push lands on the marker, a polled message is ready,
 * or the time is up. The polled messages' hooks read lines that producers
 * write, so they are asked only every few rounds.
 *
 * Waiting for an answer, it yields its CPU every 16 rounds. The scheduler
 * may have put the thread that answers on the loop's CPU (this VM's
 * kernel now and then packs the loop and a worker onto one CPU while the
 * other idles): it then runs only once we yield, and a wait that never
 * yielded made every round trip as long as the whole wait plus a wake-up
 * (`uvt-bench packed`: a task's round trip p50 38 us, 0.09x
 * `uv_queue_work` pinned the same way; yielding after the first half
 * microsecond 2.2 us, 1.63x; from the first round, with the idle worker
 * yielding before its spin too, 1.6 us, 2.2x). Yielding from the first
 * round leaves the loop and a worker on one CPU more often (`uvt-bench
 * latency`, 3 runs of 3 at a p50 of 1.6 us against 0 of 3 at 0.7 us with
 * the half-microsecond delay; `uv_queue_work` 5-27 us in the same runs):
 * we take that for a round trip that wins in either state. */
static int uvt__bridge_wait(uvt__bridge_impl_t* impl) {
  uint64_t until;
  unsigned round;
  if (!uvt__spin_pays()) {
    /* One CPU: the thread that would answer runs only if we let it. */
    UVT__TEST_POINT("spin.yield", impl);
    uvt__thread_yield();
    /* Relaxed, as below. */
    return uvt__load_relaxed(UVT__INBOX(impl)) != UVT__DRAIN_MARKER ||
           (impl->polled != NULL && uvt__bridge_polled_ready(impl));
  }
  until = uv_hrtime() + UVT__LOOP_SPIN_NS;
  for (round = 1;; round++) {
    /* Relaxed: a hint; the drain's exchange acquires what was pushed. */
    if (uvt__load_relaxed(UVT__INBOX(impl)) != UVT__DRAIN_MARKER) return 1;
    uvt__cpu_relax();
    if ((round & 15) != 0) continue;
    if (impl->polled != NULL) {
      /* A stream in a flood: its producers keep their CPUs busy, and a
       * yield would hand ours to one of them for a whole time slice (2
       * producers, a buffer of 4096: 80 -> 9 M items/s when this yielded). */
      if (uvt__bridge_polled_ready(impl)) return 1;
      if ((round & 63) == 0 && uv_hrtime() > until) return 0;
      continue;
    }
    if (uv_hrtime() > until) return 0;
    uvt__thread_yield();
  }
}

/* Every loop iteration, before the loop polls for I/O: callbacks of this
 * iteration (I/O, check, close) and timers of the next know the thread;
 * then the short wait above. */
static void uvt__bridge_prepare_cb(uv_prepare_t* prepare) {
  uvt__bridge_impl_t* impl = uvt__container_of(prepare, uvt__bridge_impl_t, prepare);
  uvt__msg_t* expected = NULL;
  int marked;
  uvt__bridge_learn_loop_thread(impl);
  if (!impl->busy && impl->polled == NULL) return;
  /* The marker in the empty inbox: pushes during the wait wake nobody. A
   * non-empty inbox was pushed with a wake-up, which the poll finds.
   * Relaxed: the marker carries no data; the drain's exchange acquires. */
  marked = uvt__cas_strong_relaxed(UVT__INBOX(impl), &expected, UVT__DRAIN_MARKER);
  if (marked) {
    /* A wait that times out counts as a miss: the drain below waits again
     * next time only if it delivers (a trickle must not keep the loop
     * spinning twice per item). */
    if (!impl->closing && !uvt__bridge_wait(impl)) impl->busy = 0;
    expected = UVT__DRAIN_MARKER;
    /* Relaxed, as above. Nothing came: the next push wakes the poll. */
    if (uvt__cas_strong_relaxed(UVT__INBOX(impl), &expected, NULL) && impl->polled == NULL) {
      impl->busy = 0;
      return;
    }
  } else if (impl->polled == NULL) {
    return;
  }
  /* Deliver here what landed on the marker (it sent nothing) and the
   * polled messages, and poll without blocking so that this comes round
   * again. */
  while (impl->polled != NULL) {
    uvt__msg_t* msg = impl->polled;
    impl->polled = msg->next;
    uvt__bridge_ready_append(impl, msg);
  }
  uvt__bridge_drain(&impl->async);
  if (!impl->finishing) uv_idle_start(&impl->nudge, uvt__bridge_nudge_cb); /* a callback may close */
}

/* The first iteration runs timers before any prepare: a 0 ms timer started
 * by the init is due first among the timers started after it, so a loop
 * initialised on one thread and run on another is known there from its
 * first timer callback on. */
static void uvt__bridge_first_cb(uv_timer_t* first) {
  uvt__bridge_learn_loop_thread(uvt__container_of(first, uvt__bridge_impl_t, first));
}

static void uvt__bridge_deadlines_cb(uv_timer_t* timer);

/* Sets the deadline timer for the nearest deadline, or stops it. */
static void uvt__bridge_arm_deadlines(uvt__bridge_impl_t* impl) {
  uint64_t due_ms, now_ms;
  if (impl->timed == NULL) {
    uv_timer_stop(&impl->deadlines);
    return;
  }
  /* In the loop's time: its cached now may be stale, and the timer is due
   * at that now + the timeout (see the top of the file). */
  due_ms = impl->timed->key / 1000000u + (impl->timed->key % 1000000u != 0);
  now_ms = uv_now(impl->deadlines.loop);
  uv_timer_start(&impl->deadlines, uvt__bridge_deadlines_cb, due_ms > now_ms ? due_ms - now_ms : 0,
                 0);
}

static void uvt__bridge_deadlines_cb(uv_timer_t* timer) {
  uvt__bridge_impl_t* impl = uvt__container_of(timer, uvt__bridge_impl_t, deadlines);
  uint64_t now = uv_hrtime();
  while (impl->timed != NULL && impl->timed->key <= now) {
    uvt__timed_t* t = uvt__container_of(impl->timed, uvt__timed_t, node);
    uvt__heap_remove(&impl->timed, &t->node);
    t->armed = 0;
    t->expire(t);
  }
  uvt__bridge_arm_deadlines(impl);
}

void uvt__bridge_timed_start(uvt__bridge_impl_t* impl, uvt__timed_t* t) {
  uvt__heap_insert(&impl->timed, &t->node);
  t->armed = 1;
  /* Only a new nearest deadline moves the timer. */
  if (impl->timed == &t->node) uvt__bridge_arm_deadlines(impl);
}

void uvt__bridge_timed_stop(uvt__bridge_impl_t* impl, uvt__timed_t* t) {
  if (!t->armed) return;
  uvt__heap_remove(&impl->timed, &t->node);
  t->armed = 0;
  /* An earlier timer is left to fire and set itself again, unless nothing
   * is left to wait for. */
  if (impl->timed == NULL) uv_timer_stop(&impl->deadlines);
}

static void uvt__bridge_drain(uv_async_t* async) {
  uvt__bridge_impl_t* impl = uvt__container_of(async, uvt__bridge_impl_t, async);
  unsigned budget = UVT__DRAIN_BUDGET;

  uvt__bridge_learn_loop_thread(impl);

  /* Callbacks submit in a batch: one wake-up check at its end serves all. */
  impl->producer.batching = 1;
  while (budget > 0) {
    uvt__msg_t* msg = impl->ready_head;
    unsigned used;
    if (msg == NULL) {
      if (!uvt__bridge_take_inbox(impl)) break;
      continue;
    }
    impl->ready_head = msg->next;
    if (impl->ready_head == NULL) impl->ready_tail = NULL;
    used = msg->deliver(msg, budget);
    budget = used >= budget ? 0 : budget - used;
  }
  impl->producer.batching = 0;
  if (budget < UVT__DRAIN_BUDGET) impl->busy = 1; /* delivered: wait a little before sleeping */
  if (impl->in_batch) {
    impl->in_batch = 0;
    if (impl->batch_leave != NULL) impl->batch_leave(impl->bridge);
  }
  if (impl->producer.recheck) {
    impl->producer.recheck = 0;
    uvt__pool_recheck(impl->bridge->pool);
  }
  if (budget == 0 && (impl->ready_head != NULL || uvt__load_relaxed(UVT__INBOX(impl)) != NULL))
    uv_async_send(async);
  if (impl->closing)
    uvt__bridge_maybe_finish(impl);
  else
    uvt__bridge_update_ref(impl);
}

int uvt_bridge_init(uv_loop_t* loop, uvt_bridge_t* bridge, uvt_pool_t* pool) {
  uvt__bridge_impl_t* impl;
  int rc;
  if (loop == NULL || bridge == NULL) return UV_EINVAL;
  if (uvt__bridge_get(bridge) != NULL) return UV_EBUSY;
  uvt__spin_policy_update();
  if (pool == NULL) pool = uvt_pool_default();
  if (pool == NULL) return UV_ENOMEM;

  impl = uvt__aligned_alloc(UVT__CACHE_LINE, sizeof(*impl));
  if (impl == NULL) return UV_ENOMEM;
  memset(impl, 0, sizeof(*impl));
  rc = uv_mutex_init(&impl->records_mutex);
  if (rc != 0) goto fail;
  rc = uvt__pool_attach(pool);
  if (rc < 0) {
    uv_mutex_destroy(&impl->records_mutex);
    goto fail;
  }
  impl->producer.sole = rc;
  rc = uv_async_init(loop, &impl->async, uvt__bridge_drain);
  if (rc != 0) {
    uvt__pool_detach(pool, impl->producer.sole);
    uv_mutex_destroy(&impl->records_mutex);
    goto fail;
  }
  uv_unref((uv_handle_t*)&impl->async);
  /* Cannot fail on a live loop (libuv only links them in). */
  uv_prepare_init(loop, &impl->prepare);
  uv_prepare_start(&impl->prepare, uvt__bridge_prepare_cb);
  uv_unref((uv_handle_t*)&impl->prepare);
  uv_idle_init(loop, &impl->nudge);
  uv_unref((uv_handle_t*)&impl->nudge);
  uv_timer_init(loop, &impl->first);
  uv_timer_start(&impl->first, uvt__bridge_first_cb, 0, 0);
  uv_unref((uv_handle_t*)&impl->first);
  /* Requests with deadlines keep the loop alive themselves. */
  uv_timer_init(loop, &impl->deadlines);
  uv_unref((uv_handle_t*)&impl->deadlines);
  impl->async.data = impl->prepare.data = impl->nudge.data = impl->first.data =
      impl->deadlines.data = impl;
  impl->handles_open = 5;
  impl->bridge = bridge;
  impl->loop_thread = uv_thread_self();
  uvt__queue_init(&impl->inflight);

  bridge->loop = loop;
  bridge->pool = pool;
  bridge->uvt__gate = 0;
  bridge->uvt__senders = 0;
  bridge->uvt__inbox = NULL;
  uvt__store_relaxed(&bridge->uvt__impl, impl);
  uvt__store_relaxed(&bridge->uvt__tag, UVT__TAG(bridge, UVT__KIND_BRIDGE));
  return 0;

fail:
  uvt__free(impl);
  return rc;
}

int uvt_bridge_close(uvt_bridge_t* bridge, uvt_close_cb close_cb) {
  uvt__bridge_impl_t* impl = uvt__bridge_get(bridge);
  uvt__qnode_t* n;
  uvt__qnode_t* next;
  uvt__msg_t* msg;
  if (impl == NULL || !uvt__bridge_on_loop_thread(impl) || impl->closing) return UV_EINVAL;
  impl->closing = 1;
  /* Seq_cst: see uvt__bridge_enter. */
  uvt__fetch_or_seq_cst(&bridge->uvt__gate, UVT__GATE_CLOSING);
  impl->close_cb = close_cb;
  /* Two passes (bridge.h). In one pass, a request that stopped at once
   * freed its thread for a queued request whose hook had not run yet, and
   * that one ran although the close had begun; no one order avoids that
   * (a lane hands its older requests on to the pool behind newer plain
   * ones). The withdrawals go newest first: withdrawing a laned request
   * that waits in the pool gives its slot to the lane's next one, which
   * is newer, so already withdrawn. Their completions, posted locally,
   * wait here and are then queued oldest first. A hook may untrack its
   * own node (and no other). */
  impl->withdrawing = 1;
  for (n = impl->inflight.prev; n != &impl->inflight; n = next) {
    uvt__inflight_t* node = uvt__container_of(n, uvt__inflight_t, node);
    next = n->prev;
    if (node->closing != NULL) node->closing(node, UVT__CLOSE_WITHDRAW);
    UVT__TEST_POINT("bridge.close.withdrew", node); /* older nodes not yet */
  }
  impl->withdrawing = 0;
  while ((msg = impl->close_posts) != NULL) {
    impl->close_posts = msg->next;
    uvt__bridge_ready_append(impl, msg);
  }
  for (n = impl->inflight.next; n != &impl->inflight; n = next) {
    uvt__inflight_t* node = uvt__container_of(n, uvt__inflight_t, node);
    next = n->next;
    if (node->closing != NULL) node->closing(node, UVT__CLOSE_STOP);
    UVT__TEST_POINT("bridge.close.stopped", node);
  }
  uvt__bridge_update_ref(impl);
  uv_async_send(&impl->async); /* a drain ends the bridge once all is delivered */
  return 0;
}

int uvt_bridge_batch_hooks(uvt_bridge_t* bridge, uvt_batch_cb enter, uvt_batch_cb leave) {
  uvt__bridge_impl_t* impl = uvt__bridge_get(bridge);
  if (impl == NULL || !uvt__bridge_on_loop_thread(impl)) return UV_EINVAL;
  impl->batch_enter = enter;
  impl->batch_leave = leave;
  impl->batch_hooked = enter != NULL || leave != NULL;
  return 0;
}

void uvt_bridge_ref(uvt_bridge_t* bridge) {
  uvt__bridge_impl_t* impl = uvt__bridge_get(bridge);
  if (impl == NULL || !uvt__bridge_on_loop_thread(impl)) return;
  impl->user_ref = 1;
  uvt__bridge_update_ref(impl);
}

void uvt_bridge_unref(uvt_bridge_t* bridge) {
  uvt__bridge_impl_t* impl = uvt__bridge_get(bridge);
  if (impl == NULL || !uvt__bridge_on_loop_thread(impl)) return;
  impl->user_ref = 0;
  uvt__bridge_update_ref(impl);
}
