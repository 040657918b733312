/* The bounded buffer between producer threads and the loop (stream.h).
 *
 * Producers append to a ring of max_size slots under the stream's mutex;
 * the first item after a delivery queues the stream's message on the
 * bridge, so a whole batch costs one wake-up. The loop reads the batch in
 * place without the lock (producers never write slots that are counted as
 * buffered), passes each item to the owner's deliver hook, and commits
 * delivered items under the lock every quarter buffer and at the end: an
 * item stays counted against max_size until it was passed to the callback,
 * which keeps the bound exact, and producers refill the freed slots while
 * the rest of the batch is delivered. A pause, stop or close issued from
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

#define UVT__STREAM_GATE_OPEN 0x80000000u

#define UVT__KIND_STREAM_DONE (UVT__KIND_STREAM ^ (uintptr_t)0xd0d0)
#define UVT__PUT_SPIN_NS 10000u /* a full buffer: how long a producer spins before it sleeps */

/* stream->flags: written by any thread, always under stream->mutex. */
enum {
  UVT__STREAM_CLOSED = 1u << 0,       /* the producer side closed gracefully */
  UVT__STREAM_SCHEDULED = 1u << 1,    /* stream->msg is queued on the bridge */
  UVT__STREAM_PRODUCER_DONE = 1u << 2 /* the producer ended (or never will run) */
};
/* stream->lflags: written only by the loop thread, under stream->mutex, so
 * the loop may read them without the lock. */
enum {
  UVT__STREAM_PAUSED = 1u << 0,         /* no delivery until resumed */
  UVT__STREAM_STOPPED = 1u << 1,        /* aborted: buffer dropped, producers refused */
  UVT__STREAM_BRIDGE_CLOSING = 1u << 2, /* deliver the buffer, then end */
  UVT__STREAM_FINISHED = 1u << 3,       /* the final callback ran or is running */
  UVT__STREAM_JOINS_PRODUCER = 1u << 4  /* the end waits for PRODUCER_DONE (set at open) */
};

static int uvt__stream_refusing(const uvt__stream_t* stream) {
  return (stream->flags & UVT__STREAM_CLOSED) ||
         (stream->lflags & (UVT__STREAM_STOPPED | UVT__STREAM_BRIDGE_CLOSING | UVT__STREAM_FINISHED));
}

/* Items may be passed to the callback now (loop thread). */
static int uvt__stream_deliverable(const uvt__stream_t* stream) {
  if (stream->lflags & (UVT__STREAM_STOPPED | UVT__STREAM_FINISHED)) return 0;
  return !(stream->lflags & UVT__STREAM_PAUSED) || (stream->lflags & UVT__STREAM_BRIDGE_CLOSING);
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

/* Queues the stream's message on the bridge unless it is already queued.
 * Any thread, lock held: the stream is open, so the bridge is alive. */
static void uvt__stream_schedule_locked(uvt__stream_t* stream) {
  if (stream->flags & UVT__STREAM_SCHEDULED) return;
  stream->flags |= UVT__STREAM_SCHEDULED;
  uvt__bridge_post(stream->impl, &stream->msg);
}

/* Whether the final callback is due, and with which status. Lock held. */
static int uvt__stream_final_due(const uvt__stream_t* stream, int* status) {
  if (stream->lflags & UVT__STREAM_FINISHED) return 0;
  if (stream->waiters > 0) return 0;
  if ((stream->lflags & UVT__STREAM_JOINS_PRODUCER) && !(stream->flags & UVT__STREAM_PRODUCER_DONE))
    return 0;
  if (stream->lflags & UVT__STREAM_STOPPED) {
    *status = UV_ECANCELED;
    return 1;
  }
  if (stream->count > 0) return 0;
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

/* Commits the items of the current batch already passed to the callback.
 * Loop thread, lock held. */
static void uvt__stream_commit_locked(uvt__stream_t* stream) {
  if (stream->taken == 0) return;
  stream->head = (stream->head + stream->taken) % stream->cap;
  /* Relaxed store: producers spinning for space peek at count without the lock. */
  uvt__store_relaxed(&stream->count, stream->count - stream->taken);
  stream->taken = 0;
  if (stream->waiters > 0) uv_cond_broadcast(&stream->space);
}

static unsigned uvt__stream_deliver_msg(uvt__msg_t* msg, unsigned budget) {
  uvt__stream_t* stream = uvt__container_of(msg, uvt__stream_t, msg);
  size_t n, base, i, commit_every;
  unsigned used = 0;
  int status;

  uv_mutex_lock(&stream->mutex);
  stream->flags &= ~UVT__STREAM_SCHEDULED;
  if (stream->lflags & UVT__STREAM_FINISHED) {
    uv_mutex_unlock(&stream->mutex);
    return 0;
  }
  n = uvt__stream_deliverable(stream) ? stream->count : 0;
  if (n > budget) n = budget;
  base = stream->head;
  uv_mutex_unlock(&stream->mutex);

  /* Commit every quarter buffer, so that producers refill the freed slots
   * while the rest of the batch is delivered (the bound stays exact: only
   * items already passed to the callback are released). */
  commit_every = stream->cap / 4 > 0 ? stream->cap / 4 : 1;
  stream->taken = 0;
  for (i = 0; i < n && uvt__stream_deliverable(stream); i++) {
    void* item = stream->ring[(base + i) % stream->cap];
    stream->taken++;
    used++;
    uvt__bridge_before_callback(stream->impl);
    stream->deliver(stream, 0, item);
    if (stream->taken >= commit_every && i + 1 < n) {
      uv_mutex_lock(&stream->mutex);
      uvt__stream_commit_locked(stream);
      uv_mutex_unlock(&stream->mutex);
    }
  }

  uv_mutex_lock(&stream->mutex);
  uvt__stream_commit_locked(stream);
  /* Finish only while our message is not queued again (a callback may have
   * scheduled it): the final callback may free the memory it lives in. */
  if (!(stream->flags & UVT__STREAM_SCHEDULED) && uvt__stream_final_due(stream, &status)) {
    stream->lflags |= UVT__STREAM_FINISHED;
    uv_mutex_unlock(&stream->mutex);
    uvt__stream_finish(stream, status);
    return used + 1;
  }
  /* Out of budget with items left: come back on the next drain. */
  if (stream->count > 0 && uvt__stream_deliverable(stream)) uvt__stream_schedule_locked(stream);
  uv_mutex_unlock(&stream->mutex);
  return used;
}

/* The bridge is closing: producers are refused, the buffer is still
 * delivered (also while paused), then the stream ends with UV_ECANCELED. */
static void uvt__stream_bridge_closing(uvt__inflight_t* node) {
  uvt__stream_t* stream = uvt__container_of(node, uvt__stream_t, inflight);
  uv_mutex_lock(&stream->mutex);
  stream->lflags |= UVT__STREAM_BRIDGE_CLOSING;
  if (stream->waiters > 0) uv_cond_broadcast(&stream->space);
  uvt__stream_schedule_locked(stream);
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
   * stream never destroys them, since late producers may still lock them to
   * learn that it is finished; on the platforms libuv supports, pthread
   * mutexes and condvars hold no resources until used.) */
  if ((rc = uv_mutex_init(&stream->mutex)) != 0) goto fail;
  if ((rc = uv_cond_init(&stream->space)) != 0) {
    uv_mutex_destroy(&stream->mutex);
    goto fail;
  }
  stream->ring = ring;
  stream->cap = max_size;
  stream->head = stream->taken = 0;
  uvt__store_relaxed(&stream->count, (size_t)0);
  stream->waiters = 0;
  stream->flags = 0;
  stream->lflags = joins_producer ? UVT__STREAM_JOINS_PRODUCER : 0;
  stream->status = 0;
  stream->ctx = uvt_context_get();
  stream->impl = impl;
  stream->deliver = deliver;
  stream->closing = closing;
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

  if (timeout_ms != UINT64_MAX && timeout_ms != 0) deadline = uvt__deadline_after_ms(timeout_ms);
  uv_mutex_lock(&stream->mutex);
  UVT__TEST_POINT("stream.put.locked", stream); /* the loop may finish the stream */
  for (;;) {
    if (uvt__stream_refusing(stream)) {
      rc = UV_EPIPE;
      break;
    }
    if (stream->count < stream->cap) {
      stream->ring[(stream->head + stream->count) % stream->cap] = item;
      uvt__store_relaxed(&stream->count, stream->count + 1);
      if (!(stream->lflags & UVT__STREAM_PAUSED)) uvt__stream_schedule_locked(stream);
      rc = 0;
      break;
    }
    if (timeout_ms == 0) {
      rc = full_err;
      break;
    }
    if (!spun) {
      /* The loop frees a quarter of the buffer at a time: wait for that
       * briefly before sleeping, which saves two context switches. The
       * spinner counts as a waiter: the final callback, which may free the
       * stream, waits for it to come back and leave. */
      spun = 1;
      stream->waiters++;
      waited = 1;
      uv_mutex_unlock(&stream->mutex);
      UVT__TEST_POINT("stream.put.spin", stream); /* the stream may end here */
      UVT__SPIN_WHILE(uvt__load_relaxed(&stream->count) >= stream->cap, UVT__PUT_SPIN_NS);
      uv_mutex_lock(&stream->mutex);
      stream->waiters--;
      continue;
    }
    stream->waiters++;
    waited = 1;
    if (timeout_ms == UINT64_MAX || deadline == UINT64_MAX) {
      uv_cond_wait(&stream->space, &stream->mutex);
    } else {
      uint64_t now = uv_hrtime();
      if (now >= deadline ||
          uv_cond_timedwait(&stream->space, &stream->mutex, deadline - now) == UV_ETIMEDOUT) {
        stream->waiters--;
        if (stream->count < stream->cap || uvt__stream_refusing(stream)) continue;
        rc = full_err;
        break;
      }
    }
    stream->waiters--;
  }
  /* The last producer leaving a refusing stream may be what its end waits for. */
  if (waited && stream->waiters == 0 && rc == UV_EPIPE && !(stream->lflags & UVT__STREAM_FINISHED))
    uvt__stream_schedule_locked(stream);
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
    if (stream->waiters > 0) uv_cond_broadcast(&stream->space);
    uvt__stream_schedule_locked(stream);
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
  uvt__stream_schedule_locked(stream);
  uv_mutex_unlock(&stream->mutex);
}

int uvt__stream_pause(uvt__stream_t* stream, int pause) {
  uv_mutex_lock(&stream->mutex);
  if (stream->lflags & (UVT__STREAM_STOPPED | UVT__STREAM_FINISHED)) {
    uv_mutex_unlock(&stream->mutex);
    return UV_EINVAL; /* stopped or finished: not open any more */
  }
  if (pause) {
    stream->lflags |= UVT__STREAM_PAUSED;
  } else if (stream->lflags & UVT__STREAM_PAUSED) {
    stream->lflags &= ~UVT__STREAM_PAUSED;
    uvt__stream_schedule_locked(stream);
  }
  uv_mutex_unlock(&stream->mutex);
  return 0;
}

int uvt__stream_stop(uvt__stream_t* stream, uvt_drop_cb drop) {
  size_t n, base, i;
  uv_mutex_lock(&stream->mutex);
  if (stream->lflags & (UVT__STREAM_STOPPED | UVT__STREAM_FINISHED)) {
    uv_mutex_unlock(&stream->mutex);
    return UV_EINVAL;
  }
  uvt__stream_commit_locked(stream); /* stopped from inside the callback */
  stream->lflags |= UVT__STREAM_STOPPED;
  if (stream->waiters > 0) uv_cond_broadcast(&stream->space);
  n = stream->count;
  base = stream->head;
  uv_mutex_unlock(&stream->mutex);

  /* Producers are refused now, so nobody writes the ring: drop outside the
   * lock, so that drop may call back into the library. */
  for (i = 0; drop != NULL && i < n; i++) drop(stream->ring[(base + i) % stream->cap]);

  uv_mutex_lock(&stream->mutex);
  stream->head = (base + n) % stream->cap;
  uvt__store_relaxed(&stream->count, (size_t)0);
  uvt__stream_schedule_locked(stream); /* the final callback, once producers left */
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
