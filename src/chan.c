/* The public channel: any number of producer threads put items that the
 * loop receives through a stream (stream.c). */
#include "context.h"
#include "stream.h"

static void uvt__chan_deliver(uvt__stream_t* stream, int status, void* item) {
  uvt_chan_t* ch = uvt__container_of(stream, uvt_chan_t, uvt__stream);
  void* prev = uvt__context_swap(stream->ctx);
  ch->uvt__cb(ch, status, item);
  uvt__context_swap(prev);
}

/* Whether ch is open and this is its loop thread. */
static int uvt__chan_loop_side(uvt_chan_t* ch) {
  return ch != NULL && uvt__stream_on_loop_side(&ch->uvt__stream);
}

/* Whether producers may call on ch (open or finished). */
static int uvt__chan_known(uvt_chan_t* ch) {
  return ch != NULL && uvt__stream_known(&ch->uvt__stream);
}

int uvt_chan_init(uvt_bridge_t* bridge, uvt_chan_t* ch, size_t max_size, uvt_chan_cb cb) {
  uvt__bridge_impl_t* impl = uvt__bridge_get(bridge);
  int rc;
  if (impl == NULL || ch == NULL || cb == NULL || max_size == 0) return UV_EINVAL;
  if ((rc = uvt__bridge_check_submit(impl)) != 0) return rc;
  if (uvt__stream_is_open(&ch->uvt__stream)) return UV_EBUSY;
  ch->bridge = bridge;
  ch->uvt__cb = cb;
  return uvt__stream_open(impl, &ch->uvt__stream, max_size, uvt__chan_deliver, NULL, 0);
}

static int uvt__chan_put_blocking(uvt_chan_t* ch, void* item, uint64_t timeout_ms) {
  int rc;
  if (!uvt__chan_known(ch)) return UV_EINVAL;
  /* A blocking put on the loop thread would deadlock: refuse it, full or not. */
  if ((rc = uvt__stream_check_blocking_put(&ch->uvt__stream)) != 0) return rc;
  return uvt__stream_put(&ch->uvt__stream, item, timeout_ms, UV_ETIMEDOUT);
}

int uvt_chan_put(uvt_chan_t* ch, void* item) {
  return uvt__chan_put_blocking(ch, item, UINT64_MAX);
}

int uvt_chan_put_timeout(uvt_chan_t* ch, void* item, uint64_t timeout_ms) {
  return uvt__chan_put_blocking(ch, item, timeout_ms);
}

int uvt_chan_try_put(uvt_chan_t* ch, void* item) {
  if (!uvt__chan_known(ch)) return UV_EINVAL;
  return uvt__stream_put(&ch->uvt__stream, item, 0, UV_EAGAIN);
}

int uvt_chan_close(uvt_chan_t* ch) {
  if (!uvt__chan_known(ch)) return UV_EINVAL;
  return uvt__stream_close(&ch->uvt__stream);
}

int uvt_chan_pause(uvt_chan_t* ch) {
  if (!uvt__chan_loop_side(ch)) return UV_EINVAL;
  return uvt__stream_pause(&ch->uvt__stream, 1);
}

int uvt_chan_resume(uvt_chan_t* ch) {
  if (!uvt__chan_loop_side(ch)) return UV_EINVAL;
  return uvt__stream_pause(&ch->uvt__stream, 0);
}

int uvt_chan_stop(uvt_chan_t* ch, uvt_drop_cb drop) {
  if (!uvt__chan_loop_side(ch)) return UV_EINVAL;
  return uvt__stream_stop(&ch->uvt__stream, drop);
}
