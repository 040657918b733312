/* The bounded buffer between producer threads and the loop (stream.h).
 *
 * A ring of max_size slots with two positions: `tail`, the items producers
 * have published, and `head`, the items the loop has passed to the owner's
 * deliver hook and committed. Each side writes only its own position (with
 * a release store) and reads the other's (with an acquire load), so items
 * cross without a lock: an iterator's generator, the one producer of its
 * stream, puts with no locked instruction at all; a channel's producers
 * serialise on the stream's mutex among themselves, never with the loop.
 * An item stays counted against max_size (tail - head) until it was passed
 * to the callback, which keeps the bound exact; the loop commits every
 * quarter buffer and at the end of a batch, so producers refill the freed
 * slots while the rest of the batch is delivered.
 *
 * Wake-ups. The first item after a delivery queues the stream's message on
 * the bridge, so a whole batch costs one wake-up: `scheduled` says the
 * message is queued. A producer publishes, then reads `scheduled`; the loop
 * clears it, then reads `tail`. The lock-free producer and the loop have a
 * sequentially consistent fence between their store and their load, so
 * either the loop sees the item or the producer sees the flag clear and
 * queues the message; producers that publish under the mutex need no
 * fence, as the loop clears the flag under the mutex too. Producers
 * that find the ring full sleep on `space` after counting themselves in
 * `waiters`; the loop, after it moves head, fences and wakes them if any
 * is counted (the same handshake the other way).
 *
 * A stop snapshots tail under the mutex (after a fence) and drops exactly
 * the items up to it before it returns; a generator whose put raced the
 * stop sees STOPPED after its publish (its fence) and, if its item lies
 * past the snapshot, takes it back and returns UV_EPIPE (not taken).
 *
 * State changes (pause, stop, close, the producer's end, the bridge's
 * close, the final callback) take the mutex. `state` mirrors the loop-side
 * flags a lock-free producer must see. A pause, stop or close issued from
 * inside a callback takes effect before the next item.
 *
 * Channel producers may call at any time, also while the loop finishes the
 * stream and its final callback frees or reopens it. They pass the stream's
 * gate: a count of producers inside and an open bit, entered by a CAS only
 * while the bit is set. The finish clears the bit and waits for the count
 * to drop (those inside are refused at once: they hold the mutex for a few
 * instructions), so the final callback runs with no producer inside, and
 * a reopen's fresh mutex is never one that somebody holds. */
#include "stream.h"

#define UVT__KIND_STREAM_DONE (UVT__KIND_STREAM ^ (uintptr_t)0xd0d0)
#define UVT__PUT_SPIN_NS 10000u /* a full buffer: how long a producer spins before it sleeps */
#define UVT__STREAM_GATE_OPEN 0x80000000u

/* stream->flags: written by any thread, always under stream->mutex. */
enum {
  UVT__STREAM_CLOSED = 1u << 0,       /* the producer side closed gracefully */
  UVT__STREAM_PRODUCER_DONE = 1u << 1 /* the producer ended (or never will run) */
};
/* stream->lflags: written only by the loop thread, under stream->mutex, so
 * the loop may read them without the lock. The same bits in stream->state
 * (written with them) are what producers read without the lock. */
enum {
  UVT__STREAM_PAUSED = 1u << 0,         /* no delivery until resumed */
  UVT__STREAM_STOPPED = 1u << 1,        /* aborted: buffer dropped, producers refused */
  UVT__STREAM_BRIDGE_CLOSING = 1u << 2, /* deliver the buffer, then end */
  UVT__STREAM_FINISHED = 1u << 3,       /* the final callback ran or is running */
  UVT__STREAM_JOINS_PRODUCER = 1u << 4  /* one producer, joined by the end (set at open) */
};
#define UVT__STREAM_REFUSING (UVT__STREAM_STOPPED | UVT__STREAM_BRIDGE_CLOSING | UVT__STREAM_FINISHED)

/* Loop thread, lock held: changes lflags and publishes them to producers. */
static void uvt__stream_set_lflags_locked(uvt__stream_t* stream, unsigned set, unsigned clear) {
  stream->lflags = (stream->lflags | set) & ~clear;
  /* Release: a producer that sees a bit sees what the loop did before. */
  uvt__store_release(&stream->state, stream->lflags);
}

/* Lock held. */
static int uvt__stream_refusing(const uvt__stream_t* stream) {
  return (stream->flags & UVT__STREAM_CLOSED) || (stream->lflags & UVT__STREAM_REFUSING);
}

/* Items may be passed to the callback now (loop thread). */
static int uvt__stream_deliverable(const uvt__stream_t* stream) {
  if (stream->lflags & (UVT__STREAM_STOPPED | UVT__STREAM_FINISHED)) return 0;
  return !(stream->lflags & UVT__STREAM_PAUSED) || (stream->lflags & UVT__STREAM_BRIDGE_CLOSING);
}

/* Items published and not yet committed (loop thread). Acquire: pairs with
 * the producers' release of tail, so the items' slots are written. */
static uint64_t uvt__stream_buffered(const uvt__stream_t* stream) {
  return uvt__load_acquire(&stream->tail) - stream->head;
}

int uvt__stream_is_open(const uvt__stream_t* stream) {
  (void)UVT__TAG_READ(stream->tag);
  return uvt__load_acquire(&stream->tag) == UVT__TAG(stream, UVT__KIND_STREAM);
}

int uvt__stream_enter(uvt__stream_t* stream) {
  uintptr_t tag;
  unsigned gate;
  (void)UVT__TAG_READ(stream->tag);
  /* Acquire: pairs with the release stores of the tag, so an open tag
   * shows the gate it was opened with. */
  tag = uvt__load_acquire(&stream->tag);
  if (tag == UVT__TAG(stream, UVT__KIND_STREAM_DONE)) return UV_EPIPE;
  if (tag != UVT__TAG(stream, UVT__KIND_STREAM)) return UV_EINVAL;
  gate = uvt__load_relaxed(&stream->gate);
  do {
    /* Closed for this incarnation: the finish may already be waiting. */
    if (!(gate & UVT__STREAM_GATE_OPEN)) return UV_EPIPE;
    /* Acquire on success: the stream's state (mutex, ring) as opened.
     * The count and the open bit share one word, so no producer gets in
     * once the finish has cleared the bit. */
  } while (!uvt__cas_weak_acquire(&stream->gate, &gate, gate + 1));
  return 0;
}

void uvt__stream_leave(uvt__stream_t* stream) {
  /* Release: everything we did inside happens before the finish sees the
   * count drop. */
  uvt__fetch_sub_release(&stream->gate, 1u);
}

int uvt__stream_on_loop_side(const uvt__stream_t* stream) {
  return uvt__stream_is_open(stream) && uvt__bridge_on_loop_thread(stream->impl);
}

/* Queues the stream's message on the bridge unless it is queued already.
 * Any thread while the stream is open (the bridge is alive); a producer
 * fences between its publish and this (see the top of the file). */
static void uvt__stream_schedule(uvt__stream_t* stream) {
  /* Relaxed peek: in a flood the message is queued and this is one load. */
  if (uvt__load_relaxed(&stream->scheduled)) return;
  /* Acq_rel exchange: one of the racing schedulers posts. */
  if (__atomic_exchange_n(&stream->scheduled, 1, __ATOMIC_ACQ_REL) == 0)
    uvt__bridge_post(stream->impl, &stream->msg);
}

/* Producer side: writes item into the next slot and publishes it. The
 * caller checked for room (and holds the mutex unless it is the stream's
 * one producer). */
static void uvt__stream_publish(uvt__stream_t* stream, void* item) {
  stream->ring[stream->tail_slot] = item;
  if (++stream->tail_slot == stream->cap) stream->tail_slot = 0;
  /* Release: the slot is written before the loop sees the item. */
  uvt__store_release(&stream->tail, stream->tail + 1);
}

/* The lock-free producer published the item at pos, and then found the
 * stream stopped: if the stop took the buffer before our item (its
 * snapshot of tail, under the mutex), the item was not taken: take it back
 * (nobody reads past the snapshot once stopped) and refuse it. */
static int uvt__stream_retract(uvt__stream_t* stream, uint64_t pos) {
  int rc = 0;
  uv_mutex_lock(&stream->mutex);
  if (pos >= stream->stop_tail) {
    stream->tail_slot = stream->tail_slot == 0 ? stream->cap - 1 : stream->tail_slot - 1;
    uvt__store_release(&stream->tail, pos);
    rc = UV_EPIPE;
  }
  uv_mutex_unlock(&stream->mutex);
  return rc;
}

/* The lock-free producer, after publishing the item at pos: wakes the loop
 * unless it is paused, and settles a race with a stop. Seq_cst fence: the
 * publish comes before the reads of state and scheduled, and the loop sets
 * STOPPED or clears PAUSED or scheduled before it reads tail (a fence in
 * the stop and in the delivery): either it sees the item, or we see the
 * state it set. Relaxed reads after the fence. */
static int uvt__stream_published(uvt__stream_t* stream, uint64_t pos) {
  unsigned state;
  uvt__fence_seq_cst();
  state = uvt__load_relaxed(&stream->state);
  if (state & UVT__STREAM_STOPPED) return uvt__stream_retract(stream, pos);
  if (!(state & UVT__STREAM_PAUSED)) uvt__stream_schedule(stream); /* else resume schedules */
  return 0;
}

/* A producer holding the mutex, after a publish: no fence, since the loop
 * clears scheduled (and PAUSED) under the same mutex, so either its clear
 * comes first and we see it, or our publish comes first and it sees that. */
static void uvt__stream_published_locked(uvt__stream_t* stream) {
  if (!(stream->lflags & UVT__STREAM_PAUSED)) uvt__stream_schedule(stream);
}

/* Producer side: whether a slot is free, refreshing the view of head. */
static int uvt__stream_has_room(uvt__stream_t* stream) {
  if (stream->tail - stream->seen_head < stream->cap) return 1;
  /* Acquire: the loop read the slots it freed before it moved head. */
  stream->seen_head = uvt__load_acquire(&stream->head);
  return stream->tail - stream->seen_head < stream->cap;
}

/* Commits the items of the current batch already passed to the callback,
 * and wakes producers waiting for space. Loop thread. */
static void uvt__stream_commit(uvt__stream_t* stream) {
  size_t taken = stream->taken;
  if (taken == 0) return;
  stream->taken = 0;
  stream->head_slot += taken;
  if (stream->head_slot >= stream->cap) stream->head_slot -= stream->cap;
  /* Release: our reads of the slots happen before producers refill them. */
  uvt__store_release(&stream->head, stream->head + taken);
  /* Seq_cst: head before the read of waiters (top of the file). */
  uvt__fence_seq_cst();
  if (uvt__load_relaxed(&stream->waiters) > 0) {
    uv_mutex_lock(&stream->mutex);
    uv_cond_broadcast(&stream->space);
    uv_mutex_unlock(&stream->mutex);
  }
}

/* Loop thread: passes the next n buffered items to drop, or discards them. */
static void uvt__stream_drop(uvt__stream_t* stream, uint64_t n, uvt_drop_cb drop) {
  for (; n > 0; n--) {
    void* item = stream->ring[stream->head_slot];
    if (++stream->head_slot == stream->cap) stream->head_slot = 0;
    if (drop != NULL) drop(item);
  }
}

/* Whether the final callback is due, and with which status. Lock held. */
static int uvt__stream_final_due(const uvt__stream_t* stream, int* status) {
  if (stream->lflags & UVT__STREAM_FINISHED) return 0;
  if (uvt__load_relaxed(&stream->waiters) > 0) return 0;
  if ((stream->lflags & UVT__STREAM_JOINS_PRODUCER) && !(stream->flags & UVT__STREAM_PRODUCER_DONE))
    return 0;
  if (stream->lflags & UVT__STREAM_STOPPED) {
    *status = UV_ECANCELED;
    return 1;
  }
  if (uvt__stream_buffered(stream) > 0) return 0;
  if (stream->lflags & UVT__STREAM_BRIDGE_CLOSING) {
    *status = UV_ECANCELED;
    return 1;
  }
  if (stream->lflags & UVT__STREAM_PAUSED) return 0;
  if (stream->lflags & UVT__STREAM_JOINS_PRODUCER) {
    *status = stream->status < 0 ? stream->status : UV_EOF;
    return 1;
  }
  if (stream->flags & UVT__STREAM_CLOSED) {
    *status = UV_EOF;
    return 1;
  }
  return 0;
}

/* Loop thread, FINISHED already set under the lock: no producer touches the
 * ring or the bridge through this stream any more. */
static void uvt__stream_finish(uvt__stream_t* stream, int status) {
  /* Close the gate, then wait out the producers inside: they find the
   * stream finished and leave at once. Relaxed: the wait's acquire loads
   * order what follows. */
  uvt__fetch_and_relaxed(&stream->gate, ~UVT__STREAM_GATE_OPEN);
  UVT__TEST_POINT("stream.finish", stream); /* producers may be inside */
  /* Acquire: pairs with the leaves' release. */
  while (uvt__load_acquire(&stream->gate) != 0) uvt__thread_yield();
  uvt__bridge_untrack(stream->impl, &stream->inflight);
  uvt__free(stream->ring);
  stream->ring = NULL;
  /* Release: a producer that sees the finished tag sees the state above. */
  uvt__store_release(&stream->tag, UVT__TAG(stream, UVT__KIND_STREAM_DONE));
  uvt__bridge_before_callback(stream->impl);
  stream->deliver(stream, status, NULL); /* may free the stream's owner */
}

static unsigned uvt__stream_deliver_msg(uvt__msg_t* msg, unsigned budget) {
  uvt__stream_t* stream = uvt__container_of(msg, uvt__stream_t, msg);
  uint64_t n, i;
  size_t slot, commit_every;
  unsigned used = 0;
  int status;

  /* Clear the flag before reading tail (top of the file): a producer that
   * publishes after our read queues the message again. Under the mutex,
   * for the producers that publish under it; the fence, for the lock-free
   * one. Release: the bridge's last writes to the message (its link) happen
   * before the producer's exchange that finds the flag clear re-links it. */
  uv_mutex_lock(&stream->mutex);
  uvt__store_release(&stream->scheduled, 0);
  uv_mutex_unlock(&stream->mutex);
  uvt__fence_seq_cst();
  if (stream->lflags & UVT__STREAM_FINISHED) return 0;
  n = uvt__stream_deliverable(stream) ? uvt__stream_buffered(stream) : 0;
  if (n > budget) n = budget;

  /* Commit every quarter buffer, so that producers refill the freed slots
   * while the rest of the batch is delivered (the bound stays exact: only
   * items already passed to the callback are released). */
  commit_every = stream->cap / 4 > 0 ? stream->cap / 4 : 1;
  slot = stream->head_slot;
  stream->taken = 0;
  for (i = 0; i < n && uvt__stream_deliverable(stream); i++) {
    void* item = stream->ring[slot];
    if (++slot == stream->cap) slot = 0;
    stream->taken++;
    used++;
    uvt__bridge_before_callback(stream->impl);
    stream->deliver(stream, 0, item);
    if (stream->taken >= commit_every && i + 1 < n) uvt__stream_commit(stream);
  }
  uvt__stream_commit(stream);

  uv_mutex_lock(&stream->mutex);
  /* Finish only while our message is not queued again (a state change
   * queued it under this lock; the generator's lock-free puts all come
   * before its PRODUCER_DONE): the final callback may free the stream. */
  if (!uvt__load_relaxed(&stream->scheduled) && uvt__stream_final_due(stream, &status)) {
    uvt__stream_set_lflags_locked(stream, UVT__STREAM_FINISHED, 0);
    uv_mutex_unlock(&stream->mutex);
    uvt__stream_finish(stream, status);
    return used + 1;
  }
  /* Out of budget with items left: come back on the next drain. */
  if (uvt__stream_buffered(stream) > 0 && uvt__stream_deliverable(stream))
    uvt__stream_schedule(stream);
  uv_mutex_unlock(&stream->mutex);
  return used;
}

/* The bridge is closing: producers are refused, the buffer is still
 * delivered (also while paused), then the stream ends with UV_ECANCELED. */
static void uvt__stream_bridge_closing(uvt__inflight_t* node) {
  uvt__stream_t* stream = uvt__container_of(node, uvt__stream_t, inflight);
  uv_mutex_lock(&stream->mutex);
  uvt__stream_set_lflags_locked(stream, UVT__STREAM_BRIDGE_CLOSING, 0);
  if (uvt__load_relaxed(&stream->waiters) > 0) uv_cond_broadcast(&stream->space);
  uvt__stream_schedule(stream);
  uv_mutex_unlock(&stream->mutex);
  if (stream->closing != NULL) stream->closing(stream);
}

int uvt__stream_open(uvt__bridge_impl_t* impl, uvt__stream_t* stream, size_t max_size,
                     uvt__stream_deliver_cb deliver, uvt__stream_closing_cb closing,
                     int joins_producer) {
  void** ring;
  int rc;
  if (uvt__stream_is_open(stream)) return UV_EBUSY;
  if (max_size > SIZE_MAX / sizeof(void*)) return UV_ENOMEM;
  ring = uvt__malloc(max_size * sizeof(void*));
  if (ring == NULL) return UV_ENOMEM;
  /* Always initialised afresh: memory reused since a finish may still carry
   * the finished tag while its mutex bytes were overwritten. (A finished
   * stream never destroys them: its final callback may reopen it; on the
   * platforms libuv supports, pthread mutexes and condvars hold no
   * resources until used.) No producer is inside a finished stream's gate,
   * so none holds this mutex (see the top of the file). */
  if ((rc = uv_mutex_init(&stream->mutex)) != 0) goto fail;
  if ((rc = uv_cond_init(&stream->space)) != 0) {
    uv_mutex_destroy(&stream->mutex);
    goto fail;
  }
  stream->ring = ring;
  stream->cap = max_size;
  stream->tail = stream->head = stream->seen_head = 0;
  stream->tail_slot = stream->head_slot = stream->taken = 0;
  stream->waiters = 0;
  stream->scheduled = 0;
  stream->flags = 0;
  stream->lflags = stream->state = joins_producer ? UVT__STREAM_JOINS_PRODUCER : 0;
  stream->status = 0;
  stream->ctx = uvt_context_get();
  stream->impl = impl;
  stream->deliver = deliver;
  stream->closing = closing;
  stream->stop_tail = UINT64_MAX;
  stream->msg.deliver = uvt__stream_deliver_msg;
  stream->inflight.closing = uvt__stream_bridge_closing;
  uvt__bridge_track(impl, &stream->inflight);
  /* A finished stream's gate is closed and empty, and nobody enters a
   * closed gate: this store races with no producer. */
  uvt__store_relaxed(&stream->gate, UVT__STREAM_GATE_OPEN);
  /* Release: producers that see the open tag see the state above. */
  uvt__store_release(&stream->tag, UVT__TAG(stream, UVT__KIND_STREAM));
  return 0;

fail:
  uvt__free(ring);
  return rc;
}

void uvt__stream_discard(uvt__stream_t* stream) {
  uvt__bridge_untrack(stream->impl, &stream->inflight);
  uvt__free(stream->ring);
  stream->ring = NULL;
  uvt__store_relaxed(&stream->gate, 0u);
  uvt__store_release(&stream->tag, (uintptr_t)0);
  uv_cond_destroy(&stream->space);
  uv_mutex_destroy(&stream->mutex);
}

int uvt__stream_put(uvt__stream_t* stream, void* item, uint64_t timeout_ms, int full_err) {
  uint64_t deadline = 0;
  int waited = 0;
  int spun = 0;
  int rc;

  /* The one producer of a joined stream (a generator) needs no lock while
   * there is room. Acquire: pairs with the loop's release of state. */
  unsigned state = uvt__load_acquire(&stream->state);
  if (state & UVT__STREAM_JOINS_PRODUCER) {
    if (state & UVT__STREAM_REFUSING) return UV_EPIPE;
    if (uvt__stream_has_room(stream)) {
      uint64_t pos = stream->tail;
      uvt__stream_publish(stream, item);
      return uvt__stream_published(stream, pos);
    }
  }

  if (timeout_ms != UINT64_MAX && timeout_ms != 0) deadline = uvt__deadline_after_ms(timeout_ms);
  uv_mutex_lock(&stream->mutex);
  UVT__TEST_POINT("stream.put.locked", stream); /* the loop may finish the stream */
  for (;;) {
    if (uvt__stream_refusing(stream)) {
      rc = UV_EPIPE;
      break;
    }
    if (uvt__stream_has_room(stream)) {
      uvt__stream_publish(stream, item);
      uvt__stream_published_locked(stream);
      rc = 0;
      break;
    }
    if (timeout_ms == 0) {
      rc = full_err;
      break;
    }
    /* Counted, then a fence, then the last look at head: the loop moves
     * head, fences, then reads waiters, so either it sees us or we see
     * head moved (and it wakes us under the mutex we hold until we wait). */
    uvt__fetch_add_seq_cst(&stream->waiters, 1u);
    uvt__fence_seq_cst();
    waited = 1;
    if (!spun) {
      /* The loop frees a quarter of the buffer at a time: wait for that
       * briefly before sleeping, which saves two context switches. The
       * spinner counts as a waiter: the final callback, which may free the
       * stream, waits for it to come back and leave. */
      spun = 1;
      uv_mutex_unlock(&stream->mutex);
      UVT__TEST_POINT("stream.put.spin", stream); /* the stream may end here */
      UVT__SPIN_WHILE(uvt__load_relaxed(&stream->tail) - uvt__load_relaxed(&stream->head) >=
                          stream->cap,
                      UVT__PUT_SPIN_NS);
      uv_mutex_lock(&stream->mutex);
      uvt__fetch_sub_seq_cst(&stream->waiters, 1u);
      continue;
    }
    if (uvt__stream_has_room(stream) || uvt__stream_refusing(stream)) {
      uvt__fetch_sub_seq_cst(&stream->waiters, 1u);
      continue;
    }
    if (timeout_ms == UINT64_MAX || deadline == UINT64_MAX) {
      uv_cond_wait(&stream->space, &stream->mutex);
    } else {
      uint64_t now = uv_hrtime();
      if (now >= deadline ||
          uv_cond_timedwait(&stream->space, &stream->mutex, deadline - now) == UV_ETIMEDOUT) {
        uvt__fetch_sub_seq_cst(&stream->waiters, 1u);
        if (uvt__stream_has_room(stream) || uvt__stream_refusing(stream)) continue;
        rc = full_err;
        break;
      }
    }
    uvt__fetch_sub_seq_cst(&stream->waiters, 1u);
  }
  /* The last producer leaving a refusing stream may be what its end waits for. */
  if (waited && uvt__load_relaxed(&stream->waiters) == 0 && rc == UV_EPIPE &&
      !(stream->lflags & UVT__STREAM_FINISHED))
    uvt__stream_schedule(stream);
  uv_mutex_unlock(&stream->mutex);
  return rc;
}

int uvt__stream_check_blocking_put(uvt__stream_t* stream) {
  int rc = 0;
  uv_mutex_lock(&stream->mutex);
  /* Under the lock: the bridge is alive while the stream accepts items. */
  if (uvt__stream_refusing(stream))
    rc = UV_EPIPE;
  else if (uvt__bridge_on_loop_thread(stream->impl))
    rc = UV_EBUSY;
  uv_mutex_unlock(&stream->mutex);
  return rc;
}

int uvt__stream_close(uvt__stream_t* stream) {
  int rc = 0;
  uv_mutex_lock(&stream->mutex);
  if (uvt__stream_refusing(stream)) {
    rc = UV_EPIPE;
  } else {
    stream->flags |= UVT__STREAM_CLOSED;
    if (uvt__load_relaxed(&stream->waiters) > 0) uv_cond_broadcast(&stream->space);
    uvt__stream_schedule(stream);
  }
  uv_mutex_unlock(&stream->mutex);
  return rc;
}

int uvt__stream_producer_may_start(uvt__stream_t* stream) {
  int run;
  uv_mutex_lock(&stream->mutex);
  run = !(stream->lflags & (UVT__STREAM_STOPPED | UVT__STREAM_BRIDGE_CLOSING));
  uv_mutex_unlock(&stream->mutex);
  return run;
}

void uvt__stream_producer_done(uvt__stream_t* stream, int status) {
  uv_mutex_lock(&stream->mutex);
  stream->status = status;
  stream->flags |= UVT__STREAM_PRODUCER_DONE;
  uvt__stream_schedule(stream);
  uv_mutex_unlock(&stream->mutex);
}

int uvt__stream_pause(uvt__stream_t* stream, int pause) {
  uv_mutex_lock(&stream->mutex);
  if (stream->lflags & (UVT__STREAM_STOPPED | UVT__STREAM_FINISHED)) {
    uv_mutex_unlock(&stream->mutex);
    return UV_EINVAL; /* stopped or finished: not open any more */
  }
  if (pause) {
    uvt__stream_set_lflags_locked(stream, UVT__STREAM_PAUSED, 0);
  } else if (stream->lflags & UVT__STREAM_PAUSED) {
    uvt__stream_set_lflags_locked(stream, 0, UVT__STREAM_PAUSED);
    uvt__stream_schedule(stream);
  }
  uv_mutex_unlock(&stream->mutex);
  return 0;
}

int uvt__stream_stop(uvt__stream_t* stream, uvt_drop_cb drop) {
  uint64_t n;
  /* Stopped from inside the callback: what it was given is delivered. */
  uvt__stream_commit(stream);
  uv_mutex_lock(&stream->mutex);
  if (stream->lflags & (UVT__STREAM_STOPPED | UVT__STREAM_FINISHED)) {
    uv_mutex_unlock(&stream->mutex);
    return UV_EINVAL;
  }
  uvt__stream_set_lflags_locked(stream, UVT__STREAM_STOPPED, 0);
  /* Seq_cst: STOPPED before the read of tail, as the lock-free producer's
   * publish before its read of state: an item published after this
   * snapshot is taken back by its producer (uvt__stream_retract). */
  uvt__fence_seq_cst();
  stream->stop_tail = uvt__load_acquire(&stream->tail);
  if (uvt__load_relaxed(&stream->waiters) > 0) uv_cond_broadcast(&stream->space);
  uv_mutex_unlock(&stream->mutex);

  /* Producers are refused now; nothing past the snapshot is read. Drop
   * outside the lock, so that drop may call back into the library. */
  n = stream->stop_tail - stream->head;
  uvt__stream_drop(stream, n, drop);
  uvt__store_release(&stream->head, stream->head + n);

  uv_mutex_lock(&stream->mutex);
  uvt__stream_schedule(stream); /* the final callback, once producers left */
  uv_mutex_unlock(&stream->mutex);
  return 0;
}

void uvt__stream_set_ref(uvt__stream_t* stream, int ref) {
  int refusing;
  if (!uvt__stream_on_loop_side(stream)) return;
  uv_mutex_lock(&stream->mutex);
  refusing = uvt__stream_refusing(stream);
  uv_mutex_unlock(&stream->mutex);
  if (!refusing) uvt__bridge_set_ref(stream->impl, &stream->inflight, ref);
}
