/* The bounded buffer between producer threads and the loop, and the public
 * channel built on it (iterators use the same core, see iter.c).
 *
 * Producers append to a ring of max_size slots under the core's mutex; the
 * first item after a delivery queues the core's message on the bridge, so a
 * whole batch costs one wake-up. The loop reads the batch in place without
 * the lock (producers never write slots that are counted as buffered), passes
 * each item to the callback, and commits delivered items under the lock every
 * quarter buffer and at the end: an item stays counted against max_size until
 * it was passed to the callback, which keeps the bound exact, and producers
 * refill the freed slots while the rest of the batch is delivered. A pause, stop or close issued from inside a callback takes
 * effect before the next item. */
#include <string.h>

#include "internal.h"

#define UVT__KIND_CHAN_DONE (UVT__KIND_CHAN ^ (uintptr_t)0xd0d0)
#define UVT__PUT_SPIN_NS 10000u /* a full buffer: how long a producer spins before it sleeps */

static int uvt__core_refusing(const uvt__chan_core_t* core) {
  return (core->flags & UVT__CORE_CLOSED) ||
         (core->lflags & (UVT__CORE_STOPPED | UVT__CORE_DRAINING | UVT__CORE_FINISHED));
}

/* Items may be passed to the callback now (loop thread). */
static int uvt__core_deliverable(const uvt__chan_core_t* core) {
  if (core->lflags & (UVT__CORE_STOPPED | UVT__CORE_FINISHED)) return 0;
  return !(core->lflags & UVT__CORE_PAUSED) || (core->lflags & UVT__CORE_DRAINING);
}

int uvt__core_is_open(const uvt__chan_core_t* core) {
  (void)UVT__TAG_READ(core->tag);
  return uvt__load_acquire(&core->tag) == UVT__TAG(core, UVT__KIND_CHAN);
}

/* Open or finished: producers may call (finished ones get UV_EPIPE). */
static int uvt__core_known(const uvt__chan_core_t* core) {
  uintptr_t tag;
  (void)UVT__TAG_READ(core->tag);
  tag = uvt__load_acquire(&core->tag);
  return tag == UVT__TAG(core, UVT__KIND_CHAN) || tag == UVT__TAG(core, UVT__KIND_CHAN_DONE);
}

/* Queues the core's message on the bridge unless it is already queued.
 * Any thread, lock held: the core is open, so the bridge is alive. */
static void uvt__core_schedule_locked(uvt__chan_core_t* core) {
  if (core->flags & UVT__CORE_SCHEDULED) return;
  core->flags |= UVT__CORE_SCHEDULED;
  uvt__bridge_post(core->impl, &core->msg);
}

static void uvt__core_deliver(uvt__chan_core_t* core, int status, void* item) {
  if (core->lflags & UVT__CORE_ITER)
    uvt__iter_deliver(core, status, item);
  else
    uvt__chan_deliver(core, status, item);
}

/* Whether the final callback is due, and with which status. Lock held. */
static int uvt__core_final_due(const uvt__chan_core_t* core, int* status) {
  if (core->lflags & UVT__CORE_FINISHED) return 0;
  if (core->waiters > 0) return 0;
  if ((core->lflags & UVT__CORE_ITER) && !(core->flags & UVT__CORE_GEN_DONE)) return 0;
  if (core->lflags & UVT__CORE_STOPPED) {
    *status = UV_ECANCELED;
    return 1;
  }
  if (core->count > 0) return 0;
  if (core->lflags & UVT__CORE_DRAINING) {
    *status = UV_ECANCELED;
    return 1;
  }
  if (core->lflags & UVT__CORE_PAUSED) return 0;
  if (core->lflags & UVT__CORE_ITER) {
    *status = core->status < 0 ? core->status : UV_EOF;
    return 1;
  }
  if (core->flags & UVT__CORE_CLOSED) {
    *status = UV_EOF;
    return 1;
  }
  return 0;
}

/* Loop thread, FINISHED already set under the lock: no producer touches the
 * ring or the bridge through this core any more. */
static void uvt__core_finish(uvt__chan_core_t* core, int status) {
  uvt__bridge_impl_t* impl = core->impl;
  uvt__queue_remove(&core->bridge_node);
  impl->active--;
  uvt__free(core->ring);
  core->ring = NULL;
  /* Release: a producer that sees the finished tag sees the state above. */
  uvt__store_release(&core->tag, UVT__TAG(core, UVT__KIND_CHAN_DONE));
  uvt__core_deliver(core, status, NULL); /* may free the core's owner */
}

/* Commits the items of the current batch already passed to the callback.
 * Loop thread, lock held. */
static void uvt__core_commit_locked(uvt__chan_core_t* core) {
  if (core->taken == 0) return;
  core->head = (core->head + core->taken) % core->cap;
  /* Relaxed store: producers spinning for space peek at count without the lock. */
  uvt__store_relaxed(&core->count, core->count - core->taken);
  core->taken = 0;
  if (core->waiters > 0) uv_cond_broadcast(&core->space);
}

static unsigned uvt__core_deliver_msg(uvt__msg_t* msg, unsigned budget) {
  uvt__chan_core_t* core = uvt__container_of(msg, uvt__chan_core_t, msg);
  size_t n, base, i, commit_every;
  unsigned used = 0;
  int status;

  uv_mutex_lock(&core->mutex);
  core->flags &= ~UVT__CORE_SCHEDULED;
  if (core->lflags & UVT__CORE_FINISHED) {
    uv_mutex_unlock(&core->mutex);
    return 0;
  }
  n = uvt__core_deliverable(core) ? core->count : 0;
  if (n > budget) n = budget;
  base = core->head;
  uv_mutex_unlock(&core->mutex);

  /* Commit every quarter buffer, so that producers refill the freed slots
   * while the rest of the batch is delivered (the bound stays exact: only
   * items already passed to the callback are released). */
  commit_every = core->cap / 4 > 0 ? core->cap / 4 : 1;
  core->taken = 0;
  for (i = 0; i < n && uvt__core_deliverable(core); i++) {
    void* item = core->ring[(base + i) % core->cap];
    core->taken++;
    used++;
    uvt__core_deliver(core, 0, item);
    if (core->taken >= commit_every && i + 1 < n) {
      uv_mutex_lock(&core->mutex);
      uvt__core_commit_locked(core);
      uv_mutex_unlock(&core->mutex);
    }
  }

  uv_mutex_lock(&core->mutex);
  uvt__core_commit_locked(core);
  /* Finish only while our message is not queued again (a callback may have
   * scheduled it): the final callback may free the memory it lives in. */
  if (!(core->flags & UVT__CORE_SCHEDULED) && uvt__core_final_due(core, &status)) {
    core->lflags |= UVT__CORE_FINISHED;
    uv_mutex_unlock(&core->mutex);
    uvt__core_finish(core, status);
    return used + 1;
  }
  /* Out of budget with items left: come back on the next drain. */
  if (core->count > 0 && uvt__core_deliverable(core)) uvt__core_schedule_locked(core);
  uv_mutex_unlock(&core->mutex);
  return used;
}

int uvt__core_open(uvt__bridge_impl_t* impl, uvt__chan_core_t* core, size_t max_size,
                   int is_iter) {
  void** ring;
  int rc;
  if (uvt__core_is_open(core)) return UV_EBUSY;
  if (max_size > SIZE_MAX / sizeof(void*)) return UV_ENOMEM;
  ring = uvt__malloc(max_size * sizeof(void*));
  if (ring == NULL) return UV_ENOMEM;
  /* Always initialised afresh: memory reused since a finish may still carry
   * the finished tag while its mutex bytes were overwritten. (A finished core
   * never destroys them, since late producers may still lock them to learn
   * that it is finished; on the platforms libuv supports, pthread mutexes and
   * condvars hold no resources until used.) */
  if ((rc = uv_mutex_init(&core->mutex)) != 0) goto fail;
  if ((rc = uv_cond_init(&core->space)) != 0) {
    uv_mutex_destroy(&core->mutex);
    goto fail;
  }
  core->ring = ring;
  core->cap = max_size;
  core->head = core->taken = 0;
  uvt__store_relaxed(&core->count, (size_t)0);
  core->waiters = 0;
  core->flags = 0;
  core->lflags = is_iter ? UVT__CORE_ITER : 0;
  core->status = 0;
  core->ctx = uvt_context_get();
  core->impl = impl;
  core->msg.deliver = uvt__core_deliver_msg;
  uvt__queue_insert_tail(&impl->chans, &core->bridge_node);
  impl->active++;
  uvt__bridge_update_ref(impl);
  uvt__store_release(&core->tag, UVT__TAG(core, UVT__KIND_CHAN));
  return 0;

fail:
  uvt__free(ring);
  return rc;
}

void uvt__core_discard(uvt__chan_core_t* core) {
  uvt__bridge_impl_t* impl = core->impl;
  uvt__queue_remove(&core->bridge_node);
  impl->active--;
  uvt__bridge_update_ref(impl);
  uvt__free(core->ring);
  core->ring = NULL;
  uvt__store_release(&core->tag, (uintptr_t)0);
  uv_cond_destroy(&core->space);
  uv_mutex_destroy(&core->mutex);
}

int uvt__core_put(uvt__chan_core_t* core, void* item, uint64_t timeout_ms, int full_err) {
  uint64_t deadline = 0;
  int waited = 0;
  int spun = 0;
  int rc;

  if (timeout_ms != UINT64_MAX && timeout_ms != 0) deadline = uv_hrtime() + timeout_ms * 1000000u;
  uv_mutex_lock(&core->mutex);
  for (;;) {
    if (uvt__core_refusing(core)) {
      rc = UV_EPIPE;
      break;
    }
    if (core->count < core->cap) {
      core->ring[(core->head + core->count) % core->cap] = item;
      uvt__store_relaxed(&core->count, core->count + 1);
      if (!(core->lflags & UVT__CORE_PAUSED)) uvt__core_schedule_locked(core);
      rc = 0;
      break;
    }
    if (timeout_ms == 0) {
      rc = full_err;
      break;
    }
    if (!spun) {
      /* The loop frees a quarter of the buffer at a time: wait for that
       * briefly before sleeping, which saves two context switches. */
      spun = 1;
      uv_mutex_unlock(&core->mutex);
      UVT__SPIN_WHILE(uvt__load_relaxed(&core->count) >= core->cap, UVT__PUT_SPIN_NS);
      uv_mutex_lock(&core->mutex);
      continue;
    }
    core->waiters++;
    waited = 1;
    if (timeout_ms == UINT64_MAX) {
      uv_cond_wait(&core->space, &core->mutex);
    } else {
      uint64_t now = uv_hrtime();
      if (now >= deadline ||
          uv_cond_timedwait(&core->space, &core->mutex, deadline - now) == UV_ETIMEDOUT) {
        core->waiters--;
        if (core->count < core->cap || uvt__core_refusing(core)) continue;
        rc = full_err;
        break;
      }
    }
    core->waiters--;
  }
  /* The last producer leaving a refusing core may be what its end waits for. */
  if (waited && core->waiters == 0 && rc == UV_EPIPE && !(core->lflags & UVT__CORE_FINISHED))
    uvt__core_schedule_locked(core);
  uv_mutex_unlock(&core->mutex);
  return rc;
}

int uvt__core_pause(uvt__chan_core_t* core, int pause) {
  uv_mutex_lock(&core->mutex);
  if (core->lflags & (UVT__CORE_STOPPED | UVT__CORE_FINISHED)) {
    uv_mutex_unlock(&core->mutex);
    return UV_EINVAL; /* stopped or closed: not open any more */
  }
  if (pause) {
    core->lflags |= UVT__CORE_PAUSED;
  } else if (core->lflags & UVT__CORE_PAUSED) {
    core->lflags &= ~UVT__CORE_PAUSED;
    uvt__core_schedule_locked(core);
  }
  uv_mutex_unlock(&core->mutex);
  return 0;
}

int uvt__core_stop(uvt__chan_core_t* core, uvt_drop_cb drop) {
  size_t n, base, i;
  uv_mutex_lock(&core->mutex);
  if (core->lflags & (UVT__CORE_STOPPED | UVT__CORE_FINISHED)) {
    uv_mutex_unlock(&core->mutex);
    return UV_EINVAL;
  }
  uvt__core_commit_locked(core); /* stopped from inside the callback */
  core->lflags |= UVT__CORE_STOPPED;
  if (core->waiters > 0) uv_cond_broadcast(&core->space);
  n = core->count;
  base = core->head;
  uv_mutex_unlock(&core->mutex);

  /* Producers are refused now, so nobody writes the ring: drop outside the
   * lock, so that drop may call back into the library. */
  for (i = 0; drop != NULL && i < n; i++) drop(core->ring[(base + i) % core->cap]);

  uv_mutex_lock(&core->mutex);
  core->head = (base + n) % core->cap;
  uvt__store_relaxed(&core->count, (size_t)0);
  uvt__core_schedule_locked(core); /* the final callback, once producers left */
  uv_mutex_unlock(&core->mutex);
  return 0;
}

void uvt__core_gen_done(uvt__chan_core_t* core, int status) {
  uv_mutex_lock(&core->mutex);
  core->status = status;
  core->flags |= UVT__CORE_GEN_DONE;
  uvt__core_schedule_locked(core);
  uv_mutex_unlock(&core->mutex);
}

void uvt__chan_bridge_closing(uvt__bridge_impl_t* impl, uvt__qnode_t* node) {
  uvt__chan_core_t* core = uvt__container_of(node, uvt__chan_core_t, bridge_node);
  (void)impl;
  uv_mutex_lock(&core->mutex);
  core->lflags |= UVT__CORE_DRAINING;
  if (core->waiters > 0) uv_cond_broadcast(&core->space);
  uvt__core_schedule_locked(core);
  uv_mutex_unlock(&core->mutex);
  if (core->lflags & UVT__CORE_ITER) uvt__iter_bridge_closing(core);
}

/* ---- The public channel ------------------------------------------------- */

void uvt__chan_deliver(uvt__chan_core_t* core, int status, void* item) {
  uvt_chan_t* ch = uvt__container_of(core, uvt_chan_t, uvt__core);
  void* prev = uvt__context_swap(core->ctx);
  ch->uvt__cb(ch, status, item);
  uvt__context_swap(prev);
}

/* The channel's bridge if ch is open and this is its loop thread. */
static uvt__bridge_impl_t* uvt__chan_loop_side(uvt_chan_t* ch) {
  if (ch == NULL || !uvt__core_is_open(&ch->uvt__core)) return NULL;
  if (!uvt__bridge_on_loop_thread(ch->uvt__core.impl)) return NULL;
  return ch->uvt__core.impl;
}

int uvt_chan_init(uvt_bridge_t* bridge, uvt_chan_t* ch, size_t max_size, uvt_chan_cb cb) {
  uvt__bridge_impl_t* impl = uvt__bridge_get(bridge);
  int rc;
  if (impl == NULL || ch == NULL || cb == NULL || max_size == 0) return UV_EINVAL;
  if ((rc = uvt__bridge_check_submit(impl)) != 0) return rc;
  if (uvt__core_is_open(&ch->uvt__core)) return UV_EBUSY;
  ch->bridge = bridge;
  ch->uvt__cb = cb;
  return uvt__core_open(impl, &ch->uvt__core, max_size, 0);
}

static int uvt__chan_put_common(uvt_chan_t* ch, void* item, uint64_t timeout_ms, int full_err,
                                int may_block) {
  uvt__chan_core_t* core;
  if (ch == NULL || !uvt__core_known(&ch->uvt__core)) return UV_EINVAL;
  core = &ch->uvt__core;
  if (may_block) {
    /* A blocking put on the loop thread would deadlock: refuse it, full or
     * not. The bridge is alive while the channel is open. */
    int on_loop = 0;
    uv_mutex_lock(&core->mutex);
    if (uvt__core_refusing(core)) {
      uv_mutex_unlock(&core->mutex);
      return UV_EPIPE;
    }
    on_loop = uvt__bridge_on_loop_thread(core->impl);
    uv_mutex_unlock(&core->mutex);
    if (on_loop) return UV_EBUSY;
  }
  return uvt__core_put(core, item, timeout_ms, full_err);
}

int uvt_chan_put(uvt_chan_t* ch, void* item) {
  return uvt__chan_put_common(ch, item, UINT64_MAX, UV_ETIMEDOUT, 1);
}

int uvt_chan_put_timeout(uvt_chan_t* ch, void* item, uint64_t timeout_ms) {
  return uvt__chan_put_common(ch, item, timeout_ms, UV_ETIMEDOUT, 1);
}

int uvt_chan_try_put(uvt_chan_t* ch, void* item) {
  return uvt__chan_put_common(ch, item, 0, UV_EAGAIN, 0);
}

int uvt_chan_close(uvt_chan_t* ch) {
  uvt__chan_core_t* core;
  int rc = 0;
  if (ch == NULL || !uvt__core_known(&ch->uvt__core)) return UV_EINVAL;
  core = &ch->uvt__core;
  uv_mutex_lock(&core->mutex);
  if (uvt__core_refusing(core)) {
    rc = UV_EPIPE;
  } else {
    core->flags |= UVT__CORE_CLOSED;
    if (core->waiters > 0) uv_cond_broadcast(&core->space);
    uvt__core_schedule_locked(core);
  }
  uv_mutex_unlock(&core->mutex);
  return rc;
}

int uvt_chan_pause(uvt_chan_t* ch) {
  if (uvt__chan_loop_side(ch) == NULL) return UV_EINVAL;
  return uvt__core_pause(&ch->uvt__core, 1);
}

int uvt_chan_resume(uvt_chan_t* ch) {
  if (uvt__chan_loop_side(ch) == NULL) return UV_EINVAL;
  return uvt__core_pause(&ch->uvt__core, 0);
}

int uvt_chan_stop(uvt_chan_t* ch, uvt_drop_cb drop) {
  if (uvt__chan_loop_side(ch) == NULL) return UV_EINVAL;
  return uvt__core_stop(&ch->uvt__core, drop);
}
