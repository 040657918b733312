/* uvt_call, uvt_sync_await and context propagation.
 *
 * uvt_call allocates one small record per call (it is fire and forget: the
 * caller keeps nothing). uvt_sync_await borrows a record from its bridge and
 * returns it when it wakes; records stay owned by the bridge until it closes,
 * so a stray second uvt_await_resolve finds a record that is still memory,
 * sees that it is not running and ignores it (asserting in debug builds). */
#include "internal.h"

static UVT__THREAD_LOCAL void* uvt__tls_ctx;

void uvt_context_set(void* ctx) { uvt__tls_ctx = ctx; }

void* uvt_context_get(void) { return uvt__tls_ctx; }

void* uvt__context_swap(void* ctx) {
  void* prev = uvt__tls_ctx;
  uvt__tls_ctx = ctx;
  return prev;
}

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
  call->ctx = uvt__tls_ctx;
  rc = uvt__bridge_post_if_open(impl, &call->msg);
  if (rc != 0) uvt__free(call);
  return rc;
}

/* ---- uvt_sync_await ----------------------------------------------------- */

enum { UVT__AWAIT_FREE, UVT__AWAIT_QUEUED, UVT__AWAIT_RUNNING, UVT__AWAIT_RESOLVED };

#define UVT__AWAIT_SPIN_NS 20000u /* how long a waiter spins before it sleeps */

struct uvt_await_s {
  uvt__msg_t msg;
  uvt__bridge_impl_t* impl;
  uvt_await_cb fn;
  void* arg;
  void* ctx;
  uv_sem_t done;
  int status;
  int state; /* atomic: the waiter spins on it; written by the loop, or by
              * the waiting thread before it posts */
  struct uvt_await_s* next_free;
  struct uvt_await_s* next_all;
};

static uvt_await_t* uvt__await_take(uvt__bridge_impl_t* impl) {
  uvt_await_t* aw;
  uv_mutex_lock(&impl->await_mutex);
  aw = impl->await_free_head;
  if (aw != NULL) {
    impl->await_free_head = aw->next_free;
    if (impl->await_free_head == NULL) impl->await_free_tail = NULL;
    uv_mutex_unlock(&impl->await_mutex);
    return aw;
  }
  uv_mutex_unlock(&impl->await_mutex);

  aw = uvt__calloc(1, sizeof(*aw));
  if (aw == NULL) return NULL;
  if (uv_sem_init(&aw->done, 0) != 0) {
    uvt__free(aw);
    return NULL;
  }
  aw->impl = impl;
  uv_mutex_lock(&impl->await_mutex);
  aw->next_all = impl->await_all;
  impl->await_all = aw;
  uv_mutex_unlock(&impl->await_mutex);
  return aw;
}

/* Oldest first, so a stale pointer meets a reused record as late as possible. */
static void uvt__await_give_back(uvt__bridge_impl_t* impl, uvt_await_t* aw) {
  uv_mutex_lock(&impl->await_mutex);
  aw->next_free = NULL;
  if (impl->await_free_tail != NULL)
    impl->await_free_tail->next_free = aw;
  else
    impl->await_free_head = aw;
  impl->await_free_tail = aw;
  uv_mutex_unlock(&impl->await_mutex);
}

void uvt__await_free_all(uvt__bridge_impl_t* impl) {
  uvt_await_t* aw = impl->await_all;
  while (aw != NULL) {
    uvt_await_t* next = aw->next_all;
    uv_sem_destroy(&aw->done);
    uvt__free(aw);
    aw = next;
  }
  impl->await_all = impl->await_free_head = impl->await_free_tail = NULL;
}

static unsigned uvt__await_deliver(uvt__msg_t* msg, unsigned budget) {
  uvt_await_t* aw = uvt__container_of(msg, uvt_await_t, msg);
  uvt__bridge_impl_t* impl = aw->impl;
  void* prev;
  (void)budget;
  if (impl->closing) {
    aw->status = UV_ECANCELED;
    uvt__store_release(&aw->state, UVT__AWAIT_RESOLVED); /* publishes status */
    uv_sem_post(&aw->done);
    return 1;
  }
  uvt__store_relaxed(&aw->state, UVT__AWAIT_RUNNING);
  impl->active++; /* the close waits for the resolve */
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
  aw = uvt__await_take(impl);
  if (aw == NULL) {
    rc = UV_ENOMEM;
    goto out;
  }
  aw->msg.deliver = uvt__await_deliver;
  aw->fn = fn;
  aw->arg = arg;
  aw->ctx = uvt__tls_ctx;
  aw->status = 0;
  uvt__store_relaxed(&aw->state, UVT__AWAIT_QUEUED);
  rc = uvt__bridge_post_if_open(impl, &aw->msg);
  if (rc == 0) {
    /* A loop function that resolves at once answers within microseconds:
     * spin for that briefly, so the post finds nobody asleep. The wait
     * below then returns at once; either way it consumes the post. */
    UVT__SPIN_WHILE(uvt__load_acquire(&aw->state) != UVT__AWAIT_RESOLVED, UVT__AWAIT_SPIN_NS);
    uv_sem_wait(&aw->done);
    rc = aw->status; /* ordered by the acquire load or the semaphore */
  }
  uvt__await_give_back(impl, aw);
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
  uvt__store_release(&aw->state, UVT__AWAIT_RESOLVED); /* publishes status */
  impl->active--;
  uv_sem_post(&aw->done); /* the waiter may reuse aw from here on */
  if (impl->closing)
    uv_async_send(&impl->async); /* the close may have been waiting for this */
  else
    uvt__bridge_update_ref(impl);
}
