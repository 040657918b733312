/* Private to uvthreads: the bounded buffer between producer threads and the
 * loop, shared by iterators (iter.c) and channels (chan.c).
 *
 * A stream knows its owner only through the hooks it was opened with:
 * deliver (each item, then the final status) and closing (the owner's part
 * of a bridge close: withdrawing a producer that has not started). */
#ifndef UVT_STREAM_H
#define UVT_STREAM_H

#include "bridge.h"

typedef void (*uvt__stream_deliver_cb)(uvt__stream_t* stream, int status, void* item);
typedef void (*uvt__stream_closing_cb)(uvt__stream_t* stream);

/* Loop thread. Opens stream on the bridge with a buffer of max_size items.
 * With joins_producer, the final callback also waits for
 * uvt__stream_producer_done (an iterator's generator must have returned);
 * otherwise the producer side ends with uvt__stream_close. UV_EBUSY if
 * open, UV_ENOMEM. */
int uvt__stream_open(uvt__bridge_impl_t* impl, uvt__stream_t* stream, size_t max_size,
                     uvt__stream_deliver_cb deliver, uvt__stream_closing_cb closing,
                     int joins_producer);
/* Undoes uvt__stream_open when the producer could not be started. Loop thread. */
void uvt__stream_discard(uvt__stream_t* stream);
/* Open (not finished). Any thread. */
int uvt__stream_is_open(const uvt__stream_t* stream);
/* The stream is open and this is its loop thread. */
int uvt__stream_on_loop_side(const uvt__stream_t* stream);

/* Producer side, for producers the stream does not join (channels), around
 * calls other than put: enter returns 0, UV_EPIPE once the stream is
 * finished (nothing but its tag and gate touched), or UV_EINVAL if it was
 * never opened. The final callback waits for every producer inside to
 * leave, so it may free or reopen the stream. */
int uvt__stream_enter(uvt__stream_t* stream);
void uvt__stream_leave(uvt__stream_t* stream);

/* Producer side, any thread, no enter needed. timeout_ms UINT64_MAX blocks
 * forever, 0 never blocks; when the buffer stays full past timeout_ms,
 * returns full_err. UV_EPIPE once the stream refuses items (or is
 * finished), UV_EINVAL if it was never opened; with refuse_loop, UV_EBUSY
 * on the loop thread (a put that may block would deadlock there). */
int uvt__stream_put(uvt__stream_t* stream, void* item, uint64_t timeout_ms, int full_err,
                    int refuse_loop);
/* Producer side, graceful: later puts get UV_EPIPE; the buffer is still
 * delivered, then the final callback gets UV_EOF. UV_EPIPE if it already
 * refuses items. Any thread. */
int uvt__stream_close(uvt__stream_t* stream);
/* Whether the producer may start (not stopped, bridge not closing). */
int uvt__stream_producer_may_start(uvt__stream_t* stream);
/* The producer ended with status (joins_producer streams). Any thread: the
 * producer's last touch of the stream. */
void uvt__stream_producer_done(uvt__stream_t* stream, int status);

/* Loop side. Pause or resume delivery; UV_EINVAL once stopped or finished. */
int uvt__stream_pause(uvt__stream_t* stream, int pause);
/* Loop-side abort: drops the buffer; UV_EINVAL if already stopped/finished. */
int uvt__stream_stop(uvt__stream_t* stream, uvt_drop_cb drop);
/* Loop side: whether the open stream keeps the loop alive; ignored on a
 * stream that refuses items (closed, stopped, finished) or that is not open
 * on this thread's loop. */
void uvt__stream_set_ref(uvt__stream_t* stream, int ref);

#endif /* UVT_STREAM_H */
