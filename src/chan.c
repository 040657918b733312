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

/* A producer's put on ch. With refuse_on_loop, a put that may block
 * refuses the loop thread, full or not: it would deadlock. */
static int uvt__chan_produce(uvt_chan_t* ch, void* item, uint64_t timeout_ms, int full_err,
                             int refuse_on_loop) {
  if (ch == NULL) return UV_EINVAL;
  return uvt__stream_put(&ch->uvt__stream, item, timeout_ms, full_err, refuse_on_loop);
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

int uvt_chan_put(uvt_chan_t* ch, void* item) {
  return uvt__chan_produce(ch, item, UINT64_MAX, UV_ETIMEDOUT, 1);
}

int uvt_chan_put_timeout(uvt_chan_t* ch, void* item, uint64_t timeout_ms) {
  return uvt__chan_produce(ch, item, timeout_ms, UV_ETIMEDOUT, 1);
}

int uvt_chan_try_put(uvt_chan_t* ch, void* item) {
  return uvt__chan_produce(ch, item, 0, UV_EAGAIN, 0);
}

int uvt_chan_close(uvt_chan_t* ch) {
  int rc;
  if (ch == NULL) return UV_EINVAL;
  if ((rc = uvt__stream_enter(&ch->uvt__stream)) != 0) return rc;
  rc = uvt__stream_close(&ch->uvt__stream);
  uvt__stream_leave(&ch->uvt__stream);
  return rc;
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

void uvt_chan_ref(uvt_chan_t* ch) {
  if (ch != NULL) uvt__stream_set_ref(&ch->uvt__stream, 1);
}

void uvt_chan_unref(uvt_chan_t* ch) {
  if (ch != NULL) uvt__stream_set_ref(&ch->uvt__stream, 0);
}
