/* uvt_call and uvt_sync_await: threads calling into the loop.
 *
 * uvt_call allocates one small record per call (it is fire and forget: the
 * caller keeps nothing). uvt_sync_await borrows a record from its bridge
 * (bridge.h) and gives it back when it wakes; records stay owned by the
 * bridge until it closes, so a stray second uvt_await_resolve finds a record
 * that is still memory, sees that it is not running and ignores it
 * (asserting in debug builds). */
#include "bridge.h"
#include "context.h"

/* ---- uvt_call ----------------------------------------------------------- */

typedef struct uvt__call_s {
  uvt__msg_t msg;
  uvt_call_cb fn;
  void* arg;
  void* ctx;
} uvt__call_t;

static unsigned uvt__call_deliver(uvt__msg_t* msg, unsigned budget) {
  uvt__call_t* call = uvt__container_of(msg, uvt__call_t, msg);
  void* prev = uvt__context_swap(call->ctx);
  (void)budget;
  call->fn(call->arg);
  uvt__context_swap(prev);
  uvt__free(call);
  return 1;
}

int uvt_call(uvt_bridge_t* bridge, uvt_call_cb fn, void* arg) {
  uvt__bridge_impl_t* impl = uvt__bridge_get(bridge);
  uvt__call_t* call;
  int rc;
  if (impl == NULL || fn == NULL) return UV_EINVAL;
  call = uvt__malloc(sizeof(*call));
  if (call == NULL) return UV_ENOMEM;
  call->msg.deliver = uvt__call_deliver;
  call->fn = fn;
  call->arg = arg;
  call->ctx = uvt_context_get();
  rc = uvt__bridge_post_if_open(impl, &call->msg);
  if (rc != 0) uvt__free(call);
  return rc;
}

/* ---- uvt_sync_await ----------------------------------------------------- */

enum { UVT__AWAIT_QUEUED = 1, UVT__AWAIT_RUNNING, UVT__AWAIT_RESOLVED };

#define UVT__AWAIT_SPIN_NS 20000u /* how long a waiter spins before it sleeps */

struct uvt_await_s {
  uvt__record_t rec; /* first: the bridge's record */
  uvt__bridge_impl_t* impl;
  uvt_await_cb fn;
  void* arg;
  void* ctx;
  uvt__inflight_t inflight; /* while fn runs: the close waits for the resolve */
  int status;
  int state; /* atomic: the waiter spins on it; written by the loop, or by
              * the waiting thread before it posts */
};

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
  prev = uvt__context_swap(aw->ctx);
  aw->fn(aw, aw->arg);
  uvt__context_swap(prev);
  return 1;
}

int uvt_sync_await(uvt_bridge_t* bridge, uvt_await_cb fn, void* arg) {
  uvt__bridge_impl_t* impl = uvt__bridge_get(bridge);
  uvt_await_t* aw;
  int rc;
  if (impl == NULL || fn == NULL) return UV_EINVAL;
  if (uvt__bridge_on_loop_thread(impl)) return UV_EBUSY;

  /* Hold the bridge for the whole call: the record goes back to the bridge
   * after we wake. Seq_cst pairs with uvt_bridge_close, see
   * uvt__bridge_post_if_open. */
  uvt__fetch_add_seq_cst(&impl->senders, 1u);
  if (uvt__load_seq_cst(&impl->closing)) {
    rc = UV_EPIPE;
    goto out;
  }
  aw = (uvt_await_t*)uvt__bridge_record_take(impl, sizeof(uvt_await_t));
  if (aw == NULL) {
    rc = UV_ENOMEM;
    goto out;
  }
  aw->rec.msg.deliver = uvt__await_deliver;
  aw->impl = impl;
  aw->fn = fn;
  aw->arg = arg;
  aw->ctx = uvt_context_get();
  aw->status = 0;
  uvt__store_relaxed(&aw->state, UVT__AWAIT_QUEUED);
  rc = uvt__bridge_post_if_open(impl, &aw->rec.msg);
  if (rc == 0) {
    /* A loop function that resolves at once answers within microseconds:
     * spin for that briefly, so the post finds nobody asleep. The wait
     * below then returns at once; either way it consumes the post. */
    UVT__SPIN_WHILE(uvt__load_acquire(&aw->state) != UVT__AWAIT_RESOLVED, UVT__AWAIT_SPIN_NS);
    uv_sem_wait(&aw->rec.done);
    rc = aw->status; /* ordered by the acquire load or the semaphore */
  }
  uvt__bridge_record_give(impl, &aw->rec);
out:
  uvt__fetch_sub_release(&impl->senders, 1u);
  return rc;
}

void uvt_await_resolve(uvt_await_t* aw, int status) {
  uvt__bridge_impl_t* impl;
  if (aw == NULL) return;
  impl = aw->impl;
  if (uvt__load_relaxed(&aw->state) != UVT__AWAIT_RUNNING || !uvt__bridge_on_loop_thread(impl)) {
    assert(!"uvt_await_resolve: await not running (resolved twice?) or not the loop thread");
    return;
  }
  aw->status = status;
  uvt__bridge_untrack(impl, &aw->inflight);
  uvt__store_release(&aw->state, UVT__AWAIT_RESOLVED); /* publishes status */
  uv_sem_post(&aw->rec.done); /* the waiter may reuse aw from here on */
}
