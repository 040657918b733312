/* libFuzzer harness: input bytes become a sequence of API calls on a fresh
 * loop and bridge over a small shared pool (work, separate work, work
 * through uvt_threaded_ex in two lanes (the first byte sets the second's
 * caps) or none, with queue deadlines or none, cancels, iterators with
 * pause/resume/close, channels fed from the loop with try_put, closed,
 * stopped, paused, ref'd and unref'd, uvt_call, batch hooks set and
 * removed, loop steps and a bridge close at any point). Every call must
 * return one of its documented codes; after each input the loop is run to
 * the end and the books must balance: every accepted request got one final
 * callback with a status it may get, the lanes' and the pool's counters
 * add up and show nothing queued or running, and the lanes can be freed.
 *
 *   cmake -DCMAKE_C_COMPILER=clang -DUVT_FUZZ=ON ...; build/test/fuzz_api CORPUS_DIR */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uvthreads.h>

#define CHECK(cond)                                                  \
  do {                                                               \
    if (!(cond)) {                                                   \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      abort();                                                       \
    }                                                                \
  } while (0)
#define CHECK_RC(rc, ...) CHECK(rc_in((rc), (int[]){__VA_ARGS__, 1}))

/* rc is one of the listed codes (the list ends with 1). */
static int rc_in(int rc, const int* allowed) {
  for (; *allowed != 1; allowed++)
    if (rc == *allowed) return 1;
  return 0;
}

#define WORKS 8
#define ITERS 4
#define CHANS 2

static struct {
  uvt_work_t work[WORKS];
  int work_open[WORKS];
  int work_timed[WORKS]; /* submitted with a queue deadline */
  int work_lane[WORKS];  /* its lane + 1, or 0 */
  long lane_finals[2][3]; /* per lane: status 0, UV_ECANCELED, UV_ETIMEDOUT */
  struct {
    uvt_iter_t it;
    int open, limit;
    long yielded, delivered, dropped;
  } iters[ITERS];
  struct {
    uvt_chan_t ch;
    int open;
    long accepted, delivered, dropped;
  } chans[CHANS];
  long accepted, finals, calls, calls_run;
  long batches_entered, batches_left; /* the batch hooks' calls */
  int in_batch;
  int closing; /* uvt_bridge_close was called */
  int closed;  /* and its close callback ran: the bridge is gone */
} s;

static void batch_enter(uvt_bridge_t* b) {
  (void)b;
  CHECK(!s.in_batch); /* never nested */
  s.in_batch = 1;
  s.batches_entered++;
}
static void batch_leave(uvt_bridge_t* b) {
  (void)b;
  CHECK(s.in_batch);
  s.in_batch = 0;
  s.batches_left++;
}

static void on_closed(uvt_bridge_t* b) {
  (void)b;
  s.closed = 1;
}

static void work_fn(uvt_work_t* req) { (void)req; }
static void after_fn(uvt_work_t* req, int status) {
  int i = (int)(req - s.work);
  CHECK(status == 0 || status == UV_ECANCELED || (s.work_timed[i] && status == UV_ETIMEDOUT));
  CHECK(s.work_open[i]);
  if (s.work_lane[i] != 0)
    s.lane_finals[s.work_lane[i] - 1][status == 0 ? 0 : status == UV_ECANCELED ? 1 : 2]++;
  s.work_open[i] = 0;
  s.finals++;
}

static int gen_fn(uvt_iter_t* it) {
  int i;
  for (i = 0; i < ITERS && &s.iters[i].it != it; i++) {
  }
  while (s.iters[i].limit < 0 || s.iters[i].yielded < s.iters[i].limit) {
    if (uvt_yield(it, it) != 0) return 0;
    s.iters[i].yielded++;
  }
  return s.iters[i].limit % 2 ? UV_EIO : 0;
}
static long* dropped_counter;
static void count_drop(void* item) {
  (void)item;
  (*dropped_counter)++;
}
static void iter_cb(uvt_iter_t* it, int status, void* item) {
  int i;
  for (i = 0; i < ITERS && &s.iters[i].it != it; i++) {
  }
  CHECK(i < ITERS && s.iters[i].open);
  if (item != NULL) {
    CHECK(status == 0);
    s.iters[i].delivered++;
    return;
  }
  CHECK(status == UV_EOF || status == UV_EIO || status == UV_ECANCELED);
  CHECK(s.iters[i].yielded == s.iters[i].delivered + s.iters[i].dropped);
  s.iters[i].open = 0;
  s.finals++;
}

static void chan_cb(uvt_chan_t* ch, int status, void* item) {
  int i = ch == &s.chans[0].ch ? 0 : 1;
  CHECK(s.chans[i].open);
  if (item != NULL) {
    CHECK(status == 0);
    s.chans[i].delivered++;
    return;
  }
  CHECK(status == UV_EOF || status == UV_ECANCELED);
  CHECK(s.chans[i].accepted == s.chans[i].delivered + s.chans[i].dropped);
  s.chans[i].open = 0;
  s.finals++;
}

static void call_fn(void* arg) {
  (void)arg;
  s.calls_run++;
}

static uvt_pool_t* pool;
static uvt_lane_t* lanes[2];

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  uv_loop_t loop;
  uvt_bridge_t bridge;
  size_t i;
  int rc;

  if (pool == NULL) {
    uvt_pool_options_t o;
    uvt_pool_options_init(&o);
    o.max_threads = 2;
    CHECK(uvt_pool_new(&pool, &o) == 0);
  }
  memset(&s, 0, sizeof(s));
  {
    uvt_lane_options_t lo;
    uvt_lane_options_init(&lo);
    CHECK(uvt_lane_new(pool, &lo, &lanes[0]) == 0); /* serial */
    lo.max_running = size > 0 ? 1 + data[0] % 3 : 2;
    lo.max_queued = size > 0 ? (data[0] >> 2) % 4 : 0;
    CHECK(uvt_lane_new(pool, &lo, &lanes[1]) == 0);
  }
  CHECK(uv_loop_init(&loop) == 0);
  CHECK(uvt_bridge_init(&loop, &bridge, pool) == 0);

  for (i = 0; i + 1 < size && i < 4000; i += 2) {
    unsigned op = data[i] % 16, arg = data[i + 1];
    int closing = s.closing;
    int gone = closing ? (s.closed ? UV_EINVAL : UV_EPIPE) : 0; /* a submission's answer */
    switch (op) {
      case 0:
      case 1: { /* work, on the pool or separate */
        int k = (int)(arg % WORKS);
        rc = op == 0 ? uvt_threaded(&bridge, &s.work[k], work_fn, after_fn)
                     : uvt_threaded_separate(&bridge, &s.work[k], work_fn, after_fn);
        if (closing) CHECK_RC(rc, gone);
        else if (s.work_open[k]) CHECK_RC(rc, UV_EBUSY);
        else CHECK_RC(rc, 0);
        if (rc == 0) {
          s.work_open[k] = 1;
          s.work_timed[k] = 0;
          s.work_lane[k] = 0;
          s.accepted++;
        }
        break;
      }
      case 15: { /* work through uvt_threaded_ex: a lane or none, a deadline or none */
        static const uint64_t timeouts[4] = {0, 1, 3, 20};
        int k = (int)(arg % WORKS);
        int lane = (int)((arg >> 3) % 3); /* 0: none */
        uvt_work_options_t o;
        o.lane = lane ? lanes[lane - 1] : NULL;
        o.queue_timeout_ms = timeouts[(arg >> 5) % 4];
        rc = uvt_threaded_ex(&bridge, &s.work[k], (arg >> 7) ? &o : NULL, work_fn, after_fn);
        if (closing) CHECK_RC(rc, gone);
        else if (s.work_open[k]) CHECK_RC(rc, UV_EBUSY);
        else if (lane == 2 && (arg >> 7)) CHECK_RC(rc, 0, UV_EAGAIN); /* max_queued may be set */
        else CHECK_RC(rc, 0);
        if (rc == 0) {
          s.work_open[k] = 1;
          s.work_timed[k] = (arg >> 7) && o.queue_timeout_ms != 0;
          s.work_lane[k] = (arg >> 7) ? lane : 0;
          s.accepted++;
        }
        break;
      }
      case 2: { /* cancel */
        int k = (int)(arg % WORKS);
        rc = uvt_cancel(&s.work[k]);
        if (s.work_open[k]) CHECK_RC(rc, 0, UV_EBUSY);
        else CHECK_RC(rc, UV_EINVAL);
        break;
      }
      case 3:
      case 4: { /* an iterator */
        int k = (int)(arg % ITERS);
        size_t max_size = 1 + (arg >> 2) % 4;
        int was_open = s.iters[k].open;
        if (!was_open) {
          long limit = (long)(arg >> 4) - 2; /* -2..13; < 0 endless */
          s.iters[k].limit = (int)(limit < 0 ? -1 : limit);
          s.iters[k].yielded = s.iters[k].delivered = s.iters[k].dropped = 0;
        }
        rc = op == 3 ? uvt_threaded_iterable(&bridge, &s.iters[k].it, max_size, gen_fn, iter_cb)
                     : uvt_threaded_iterable_separate(&bridge, &s.iters[k].it, max_size, gen_fn, iter_cb);
        if (closing) CHECK_RC(rc, gone);
        else if (was_open) CHECK_RC(rc, UV_EBUSY);
        else CHECK_RC(rc, 0);
        if (rc == 0) {
          s.iters[k].open = 1;
          s.accepted++;
        }
        break;
      }
      case 5: { /* pause, resume or close an iterator */
        int k = (int)(arg % ITERS);
        switch ((arg >> 2) % 3) {
          case 0:
            rc = uvt_iter_pause(&s.iters[k].it);
            break;
          case 1:
            rc = uvt_iter_resume(&s.iters[k].it);
            break;
          default:
            dropped_counter = &s.iters[k].dropped;
            rc = uvt_iter_stop(&s.iters[k].it, count_drop);
            break;
        }
        CHECK_RC(rc, 0, UV_EINVAL);
        if (!s.iters[k].open) CHECK_RC(rc, UV_EINVAL);
        break;
      }
      case 6: { /* open a channel */
        int k = (int)(arg % CHANS);
        int was_open = s.chans[k].open;
        rc = uvt_chan_init(&bridge, &s.chans[k].ch, 1 + (arg >> 1) % 4, chan_cb);
        if (closing) CHECK_RC(rc, gone);
        else if (was_open) CHECK_RC(rc, UV_EBUSY);
        else CHECK_RC(rc, 0);
        if (rc == 0) {
          s.chans[k].open = 1;
          s.chans[k].accepted = s.chans[k].delivered = s.chans[k].dropped = 0;
          s.accepted++;
        }
        break;
      }
      case 7:
      case 8: { /* put from the loop thread */
        int k = (int)(arg % CHANS);
        rc = op == 7 ? uvt_chan_try_put(&s.chans[k].ch, &s) : uvt_chan_put(&s.chans[k].ch, &s);
        /* EINVAL: never opened; EPIPE: closed, stopped or finished; a
         * blocking put on the loop thread: EBUSY. */
        if (op == 7) CHECK_RC(rc, 0, UV_EAGAIN, UV_EPIPE, UV_EINVAL);
        else CHECK_RC(rc, UV_EBUSY, UV_EPIPE, UV_EINVAL);
        if (rc == 0) {
          CHECK(s.chans[k].open);
          s.chans[k].accepted++;
        }
        break;
      }
      case 9: { /* close, stop, pause or resume a channel */
        int k = (int)(arg % CHANS);
        switch ((arg >> 1) % 4) {
          case 0:
            CHECK_RC(uvt_chan_close(&s.chans[k].ch), 0, UV_EPIPE, UV_EINVAL);
            break;
          case 1:
            dropped_counter = &s.chans[k].dropped;
            CHECK_RC(uvt_chan_stop(&s.chans[k].ch, count_drop), 0, UV_EINVAL);
            break;
          case 2:
            CHECK_RC(uvt_chan_pause(&s.chans[k].ch), 0, UV_EINVAL);
            break;
          default:
            CHECK_RC(uvt_chan_resume(&s.chans[k].ch), 0, UV_EINVAL);
            break;
        }
        break;
      }
      case 10:
        rc = uvt_call(&bridge, call_fn, NULL);
        CHECK_RC(rc, gone);
        if (rc == 0) s.calls++;
        break;
      case 11:
      case 12:
        CHECK(uv_run(&loop, UV_RUN_NOWAIT) >= 0);
        break;
      case 13:
        if (arg % 8 == 0) {
          rc = uvt_bridge_close(&bridge, on_closed);
          CHECK_RC(rc, closing ? UV_EINVAL : 0);
          s.closing = 1;
        }
        break;
      case 14: { /* batch hooks set or removed; a stream ref'd or unref'd */
        unsigned k = (arg >> 3) % (ITERS + CHANS);
        switch (arg % 8) {
          case 0:
            CHECK_RC(uvt_bridge_batch_hooks(&bridge, batch_enter, batch_leave), s.closed ? UV_EINVAL : 0);
            break;
          case 1:
            CHECK_RC(uvt_bridge_batch_hooks(&bridge, NULL, NULL), s.closed ? UV_EINVAL : 0);
            break;
          case 2:
          case 3:
            if (k < ITERS) {
              if (arg % 8 == 2) uvt_iter_unref(&s.iters[k].it);
              else uvt_iter_ref(&s.iters[k].it);
            } else {
              if (arg % 8 == 2) uvt_chan_unref(&s.chans[k - ITERS].ch);
              else uvt_chan_ref(&s.chans[k - ITERS].ch);
            }
            break;
          default:
            uvt_context_set((void*)(uintptr_t)arg);
            break;
        }
        break;
      }
      default:
        uvt_context_set((void*)(uintptr_t)arg);
        break;
    }
  }

  /* The end: close (if not yet), run everything out, check the books. */
  if (!s.closing) CHECK(uvt_bridge_close(&bridge, on_closed) == 0);
  CHECK(uv_run(&loop, UV_RUN_DEFAULT) == 0);
  CHECK(s.closed);
  CHECK(uv_loop_close(&loop) == 0);
  CHECK(s.finals == s.accepted);
  CHECK(s.calls_run == s.calls);
  CHECK(!s.in_batch && s.batches_entered == s.batches_left);
  {
    uvt_pool_stats_t ps;
    int k;
    for (k = 0; k < 2; k++) {
      uvt_lane_stats_t ls;
      CHECK(uvt_lane_stats(lanes[k], &ls) == 0);
      CHECK(ls.queued == 0 && ls.running == 0);
      CHECK(ls.submitted == ls.completed + ls.cancelled + ls.expired);
      CHECK(ls.completed == (uint64_t)s.lane_finals[k][0]);
      CHECK(ls.cancelled == (uint64_t)s.lane_finals[k][1]);
      CHECK(ls.expired == (uint64_t)s.lane_finals[k][2]);
      CHECK(uvt_lane_free(lanes[k]) == 0);
    }
    CHECK(uvt_pool_stats(pool, &ps) == 0);
    CHECK(ps.queued == 0 && ps.running == 0);
    CHECK(ps.submitted == ps.completed + ps.cancelled + ps.expired);
  }
  uvt_context_set(NULL);
  return 0;
}
