/* Reliability regressions: one test per finding of the reliability review
 * (the contract is API.md). Each one fails on the code before its fix, as a
 * bounded failure: an ASSERT, a watchdog, or a sanitizer report.
 *
 * Races are forced, not hoped for: the library is built with UVT_TEST_HOOKS
 * (target uvthreads_hooked), which calls uvt__test_hook at a few named stall
 * points (UVT__TEST_POINT in src/). A test arms one point; the first thread
 * that reaches it stalls there until the test releases it, or until the
 * stall's timeout passes (so that a fixed library, which may legitimately
 * wait for the stalled thread, never deadlocks with the test).
 *
 * Usage: test_reliability [name]  runs every finding's test, or the named
 * one (also a sub-case such as chan_final_waits_for_put_stop). */
#define _GNU_SOURCE /* syscall(2), for the membarrier query */
#include "test.h"

#if defined(__linux__)
#include <linux/membarrier.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

extern void (*uvt__test_hook)(const char*, const void*);

#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif
#ifndef TEST_ASAN
#define TEST_ASAN 0
#endif

#define WAIT_MS 5000u  /* how long a test waits for something that must happen */
#define STALL_MS 500u  /* how long a stalled thread waits for its release */
#define WATCHDOG_MS 2000u

#define LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

/* ---- Events: a flag one thread sets and another waits for, bounded ------ */

typedef struct {
  uv_mutex_t mutex;
  uv_cond_t cond;
  int set;
} event_t;

static void event_init(event_t* e) {
  ASSERT_OK(uv_mutex_init(&e->mutex));
  ASSERT_OK(uv_cond_init(&e->cond));
  e->set = 0;
}

static void event_set(event_t* e) {
  uv_mutex_lock(&e->mutex);
  e->set = 1;
  uv_cond_broadcast(&e->cond);
  uv_mutex_unlock(&e->mutex);
}

/* 1 once set, 0 if ms passed first. */
static int event_wait(event_t* e, unsigned ms) {
  uint64_t deadline = uv_hrtime() + (uint64_t)ms * 1000000u;
  int set;
  uv_mutex_lock(&e->mutex);
  while (!e->set) {
    uint64_t now = uv_hrtime();
    if (now >= deadline) break;
    uv_cond_timedwait(&e->cond, &e->mutex, deadline - now);
  }
  set = e->set;
  uv_mutex_unlock(&e->mutex);
  return set;
}

static void event_destroy(event_t* e) {
  uv_cond_destroy(&e->cond);
  uv_mutex_destroy(&e->mutex);
}

/* ---- The stall: one armed stall point at a time ------------------------- */

typedef struct {
  uv_mutex_t mutex;
  uv_cond_t cond;
  int ready;
  /* Set before arming (the release store of armed publishes them). */
  const char* point;
  const void* obj;     /* only a hit with this object (NULL: any) */
  int has_thread;
  uv_thread_t thread;  /* only a hit on this thread (if has_thread) */
  unsigned timeout_ms; /* the stall ends by itself after this */
  int armed;           /* atomic: the next matching hit stalls (once) */
  /* Guarded by mutex. */
  int arrived;   /* a thread reached the point */
  int inside;    /* it is stalled there now */
  int released;  /* the test let it go */
  int timed_out; /* it went on by itself */
  int done;      /* the test's own mark: the stalled call returned */
} stall_t;

static stall_t stall;
/* A test's own hook (test 9), called for every point; set before any thread. */
static void (*custom_hook)(const char* point, const void* obj);

static void test_hook(const char* point, const void* obj) {
  stall_t* s = &stall;
  int one = 1;
  uint64_t deadline;
  if (custom_hook != NULL) custom_hook(point, obj);
  if (!LOAD(&s->armed)) return;
  if (strcmp(point, s->point) != 0 || (s->obj != NULL && s->obj != obj)) return;
  if (s->has_thread) {
    uv_thread_t self = uv_thread_self();
    if (!uv_thread_equal(&self, &s->thread)) return;
  }
  if (!__atomic_compare_exchange_n(&s->armed, &one, 0, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
    return; /* another thread took this stall */
  uv_mutex_lock(&s->mutex);
  s->arrived = 1;
  s->inside = 1;
  uv_cond_broadcast(&s->cond);
  deadline = uv_hrtime() + (uint64_t)s->timeout_ms * 1000000u;
  while (!s->released) {
    uint64_t now = uv_hrtime();
    if (now >= deadline) {
      s->timed_out = 1;
      break;
    }
    uv_cond_timedwait(&s->cond, &s->mutex, deadline - now);
  }
  s->inside = 0;
  uv_cond_broadcast(&s->cond);
  uv_mutex_unlock(&s->mutex);
}

/* Every test starts here: installs the hook (no library thread runs yet). */
static void hooks_reset(void) {
  if (!stall.ready) {
    ASSERT_OK(uv_mutex_init(&stall.mutex));
    ASSERT_OK(uv_cond_init(&stall.cond));
    stall.ready = 1;
  }
  STORE(&stall.armed, 0);
  uv_mutex_lock(&stall.mutex);
  stall.point = "";
  stall.obj = NULL;
  stall.has_thread = 0;
  stall.arrived = stall.inside = stall.released = stall.timed_out = stall.done = 0;
  uv_mutex_unlock(&stall.mutex);
  custom_hook = NULL;
  uvt__test_hook = test_hook;
}

/* The next hit of point (with obj, on thread, when given) stalls. */
static void stall_arm(const char* point, const void* obj, const uv_thread_t* thread,
                      unsigned timeout_ms) {
  uv_mutex_lock(&stall.mutex);
  stall.point = point;
  stall.obj = obj;
  stall.has_thread = thread != NULL;
  if (thread != NULL) stall.thread = *thread;
  stall.timeout_ms = timeout_ms;
  stall.arrived = stall.inside = stall.released = stall.timed_out = stall.done = 0;
  uv_mutex_unlock(&stall.mutex);
  STORE(&stall.armed, 1);
}

enum { UNTIL_ARRIVED = 1, UNTIL_DONE = 2 };

/* Waits until a thread stalled at the point (UNTIL_ARRIVED) and/or the test
 * marked the call done (UNTIL_DONE); 1 if one of them happened within ms. */
static int stall_wait(int until, unsigned ms) {
  uint64_t deadline = uv_hrtime() + (uint64_t)ms * 1000000u;
  int ok;
  uv_mutex_lock(&stall.mutex);
  for (;;) {
    uint64_t now;
    ok = ((until & UNTIL_ARRIVED) && stall.arrived) || ((until & UNTIL_DONE) && stall.done);
    if (ok || (now = uv_hrtime()) >= deadline) break;
    uv_cond_timedwait(&stall.cond, &stall.mutex, deadline - now);
  }
  uv_mutex_unlock(&stall.mutex);
  return ok;
}

/* Whether a thread is stalled at the point right now (not yet released and
 * not timed out): the call it is in has certainly not returned. */
static int stall_holding(void) {
  int inside;
  uv_mutex_lock(&stall.mutex);
  inside = stall.inside;
  uv_mutex_unlock(&stall.mutex);
  return inside;
}

static void stall_release(void) {
  STORE(&stall.armed, 0);
  uv_mutex_lock(&stall.mutex);
  stall.released = 1;
  uv_cond_broadcast(&stall.cond);
  uv_mutex_unlock(&stall.mutex);
}

static void stall_set_done(void) {
  uv_mutex_lock(&stall.mutex);
  stall.done = 1;
  uv_cond_broadcast(&stall.cond);
  uv_mutex_unlock(&stall.mutex);
}

/* ---- Shared helpers ------------------------------------------------------- */

static int closed_count;
static void on_closed(uvt_bridge_t* b) {
  (void)b;
  closed_count++;
}

static void on_handle_closed(uv_handle_t* h) { (void)h; }

static void noop_work(uvt_work_t* req) { (void)req; }

static uvt_pool_t* pool_with(unsigned min_threads, unsigned max_threads, unsigned idle_ms) {
  uvt_pool_options_t opts;
  uvt_pool_t* pool = NULL;
  uvt_pool_options_init(&opts);
  opts.min_threads = min_threads;
  opts.max_threads = max_threads;
  opts.idle_timeout_ms = idle_ms;
  opts.name = "rel";
  ASSERT_OK(uvt_pool_new(&pool, &opts));
  return pool;
}

/* ==== 1. Reopening a channel from its final callback while a late producer
 * ==== holds its mutex =======================================================
 *
 * The item callback stops the channel on its first item; the final callback
 * reopens the same struct with uvt_chan_init. A late try_put of the producer
 * (called after the final callback started) is stalled at "stream.put.locked",
 * holding the finished core's mutex, while the reopen runs. The late call
 * must return UV_EPIPE: the channel it called was finished. Old code: the
 * reopen re-initialises the held mutex and resets the state, the late put
 * then finds an open empty channel, lands its item in the new channel and
 * returns 0. */

typedef struct {
  uvt_chan_t ch; /* first: the callbacks cast back */
  uvt_bridge_t* bridge;
  uv_thread_t producer;
  event_t final_started;
  int items1, finals1, items2, finals2;
  int late_rc;
} reopen_t;

static void reopen_cb2(uvt_chan_t* ch, int status, void* item) {
  reopen_t* r = (reopen_t*)ch;
  if (item != NULL) {
    r->items2++; /* the late producer's item landed in the new channel */
    return;
  }
  ASSERT_EQ(status, UV_ECANCELED);
  r->finals2++;
  ASSERT_OK(uvt_bridge_close(r->bridge, on_closed));
}

static void reopen_cb1(uvt_chan_t* ch, int status, void* item) {
  reopen_t* r = (reopen_t*)ch;
  if (item != NULL) {
    ASSERT_EQ(status, 0);
    r->items1++;
    ASSERT_OK(uvt_chan_stop(ch, NULL));
    return;
  }
  ASSERT_EQ(status, UV_ECANCELED);
  r->finals1++;
  /* The late put stalls holding the finished core's mutex. */
  stall_arm("stream.put.locked", NULL, &r->producer, STALL_MS);
  event_set(&r->final_started);
  /* (A library that refuses a finished channel before locking returns at once.) */
  ASSERT(stall_wait(UNTIL_ARRIVED | UNTIL_DONE, WAIT_MS));
  /* Reuse from inside the final callback, as the contract allows. */
  ASSERT_OK(uvt_chan_init(r->bridge, ch, 4, reopen_cb2));
  stall_release();
  ASSERT(stall_wait(UNTIL_DONE, WAIT_MS));
  if (r->late_rc != UV_EPIPE)
    fprintf(stderr, "chan_reopen: a put on the finished channel, stalled holding its mutex while "
                    "the final callback reopened it, returned %d (%s)\n",
            r->late_rc, r->late_rc ? uv_err_name(r->late_rc) : "0");
  ASSERT_ERR(r->late_rc, UV_EPIPE);
  ASSERT_OK(uvt_chan_stop(ch, NULL));
}

static void reopen_producer(void* arg) {
  reopen_t* r = arg;
  ASSERT_OK(uvt_chan_try_put(&r->ch, (void*)1));
  ASSERT(event_wait(&r->final_started, WAIT_MS));
  r->late_rc = uvt_chan_try_put(&r->ch, (void*)2); /* the channel is finished */
  stall_set_done();
}

static void chan_reopen(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = pool_with(0, 1, 1000);
  reopen_t r;
  hooks_reset();
  memset(&r, 0, sizeof(r));
  event_init(&r.final_started);
  r.late_rc = 1;
  r.bridge = &b;
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uvt_bridge_init(&loop, &b, pool));
  ASSERT_OK(uvt_chan_init(&b, &r.ch, 4, reopen_cb1));
  ASSERT_OK(uv_thread_create(&r.producer, reopen_producer, &r));
  closed_count = 0;
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_OK(uv_thread_join(&r.producer));
  ASSERT_EQ(r.items1, 1);
  ASSERT_EQ(r.finals1, 1);
  ASSERT_EQ(r.items2, 0);
  ASSERT_EQ(r.finals2, 1);
  ASSERT_EQ(closed_count, 1);
  ASSERT_OK(uv_loop_close(&loop));
  ASSERT_OK(uvt_pool_free(pool));
  event_destroy(&r.final_started);
}

/* ==== 2. The final callback runs only after every blocked put returned ======
 *
 * A producer puts into a full, paused channel (max_size 1) and is stalled at
 * "stream.put.spin": it is about to spin (outside the lock, not counted in
 * waiters, inside the channel's gate) before sleeping. Then the
 * channel ends: uvt_chan_stop (loop), uvt_chan_close (another thread) or
 * uvt_bridge_close. The channel is heap-allocated and its final callback
 * frees it, as the contract allows. Old code: the spinning producer is not
 * counted in `waiters`, so the final callback runs while the put is still in
 * progress. Plain and TSan builds assert that the put had returned; ASan
 * builds free the channel and release the producer, which then reads the
 * freed core (heap-use-after-free in uvt__stream_put). */

enum { END_STOP, END_CLOSE, END_BRIDGE_CLOSE };

typedef struct {
  uvt_chan_t* ch; /* heap: freed by its final callback */
  uvt_bridge_t* bridge;
  int how;
  int items, finals, final_status;
  int put_rc;
} fput_t;

static void fput_cb(uvt_chan_t* ch, int status, void* item) {
  fput_t* f = ch->data;
  if (item != NULL) {
    ASSERT_EQ(status, 0);
    f->items++;
    return;
  }
  f->finals++;
  f->final_status = status;
  if (stall_holding()) {
    fprintf(stderr, "chan_final_waits_for_put: the final callback (%s) runs while a put that "
                    "was blocked at the end has not returned\n", uv_err_name(status));
#if TEST_ASAN
    free(ch); /* allowed from the final callback on */
    stall_release();
    /* ASan reports the producer's use of the freed channel here. */
    ASSERT(stall_wait(UNTIL_DONE, WAIT_MS));
#endif
    ASSERT(!"final callback before the blocked put returned");
  }
  /* The put is on its way out (a fixed library let it go first). */
  ASSERT(stall_wait(UNTIL_DONE, WAIT_MS));
  ASSERT_ERR(f->put_rc, UV_EPIPE);
  free(ch);
  f->ch = NULL;
  if (f->how != END_BRIDGE_CLOSE) ASSERT_OK(uvt_bridge_close(f->bridge, on_closed));
}

static void fput_producer(void* arg) {
  fput_t* f = arg;
  uvt_chan_t* ch = f->ch;
  ASSERT_OK(uvt_chan_put(ch, (void*)1)); /* fills the paused channel */
  f->put_rc = uvt_chan_put(ch, (void*)2); /* full: stalls in the spin */
  stall_set_done();
}

static void fput_close(void* arg) { ASSERT_OK(uvt_chan_close(arg)); }

static void chan_final_case(int how) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = pool_with(0, 1, 1000);
  uv_thread_t producer;
  fput_t f;
  hooks_reset();
  memset(&f, 0, sizeof(f));
  f.how = how;
  f.put_rc = 1;
  f.bridge = &b;
  f.ch = malloc(sizeof(*f.ch));
  ASSERT(f.ch != NULL);
  f.ch->data = &f;
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uvt_bridge_init(&loop, &b, pool));
  ASSERT_OK(uvt_chan_init(&b, f.ch, 1, fput_cb));
  f.ch->data = &f;
  ASSERT_OK(uvt_chan_pause(f.ch));
  stall_arm("stream.put.spin", NULL, NULL, STALL_MS);
  ASSERT_OK(uv_thread_create(&producer, fput_producer, &f));
  ASSERT(stall_wait(UNTIL_ARRIVED, WAIT_MS)); /* blocked on the full channel */
  switch (how) {
    case END_STOP:
      ASSERT_OK(uvt_chan_stop(f.ch, NULL));
      break;
    case END_CLOSE:
      run_on_thread(fput_close, f.ch);
      ASSERT_OK(uvt_chan_resume(f.ch)); /* the buffered item, then the end */
      break;
    default:
      ASSERT_OK(uvt_bridge_close(&b, on_closed));
      break;
  }
  closed_count = 0;
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_OK(uv_thread_join(&producer));
  ASSERT_EQ(f.finals, 1);
  ASSERT_EQ(f.items, how == END_STOP ? 0 : 1);
  ASSERT_EQ(f.final_status, how == END_CLOSE ? UV_EOF : UV_ECANCELED);
  ASSERT_EQ(closed_count, 1);
  ASSERT_OK(uv_loop_close(&loop));
  ASSERT_OK(uvt_pool_free(pool));
}

static void chan_final_waits_for_put_stop(void) { chan_final_case(END_STOP); }
static void chan_final_waits_for_put_close(void) { chan_final_case(END_CLOSE); }
static void chan_final_waits_for_put_bridge_close(void) { chan_final_case(END_BRIDGE_CLOSE); }

static void chan_final_waits_for_put(void) {
  chan_final_waits_for_put_stop();
  chan_final_waits_for_put_close();
  chan_final_waits_for_put_bridge_close();
}

/* ==== 3. A submit racing the last worker's idle exit is not lost ===========
 *
 * Pool min 0, max 1, idle timeout 1 ms. After a first task the worker times
 * out and decides to exit; it is stalled at "pool.worker.exit" (holding the
 * pool's mutex, still counted in threads). A timer on the loop then submits
 * a second task, which takes the lock-free "no taker to add" path, and
 * releases the worker. The task must run. Old code: nobody runs it; the
 * watchdog fails the test after 2 s (closing the bridge cancels the task so
 * that the loop ends and the failure is reported). */

static struct {
  uvt_bridge_t b;
  uvt_pool_t* pool;
  uv_timer_t timer, watchdog;
  uvt_work_t t1, t2;
  int t2_ran, t2_after, t2_status, watchdog_fired;
} ie;

static void ie_mark_work(uvt_work_t* req) {
  (void)req;
  STORE(&ie.t2_ran, 1);
}

static void ie_watchdog(uv_timer_t* t) {
  (void)t;
  fprintf(stderr, "pool_idle_exit_wakeup: watchdog: the task submitted while the last worker "
                  "was exiting did not run within %u ms\n", WATCHDOG_MS);
  ie.watchdog_fired = 1;
  ASSERT_OK(uvt_bridge_close(&ie.b, on_closed)); /* cancels the lost task */
}

static void ie_t2_after(uvt_work_t* req, int status) {
  (void)req;
  ie.t2_after++;
  ie.t2_status = status;
  uv_close((uv_handle_t*)&ie.watchdog, on_handle_closed);
  uv_close((uv_handle_t*)&ie.timer, on_handle_closed);
  if (!ie.watchdog_fired) ASSERT_OK(uvt_bridge_close(&ie.b, on_closed));
}

static void ie_timer(uv_timer_t* t) {
  (void)t;
  /* The worker timed out, found the queue empty and stalls on its way out. */
  ASSERT(stall_wait(UNTIL_ARRIVED, WAIT_MS));
  ASSERT_OK(uvt_threaded(&ie.b, &ie.t2, ie_mark_work, ie_t2_after));
  stall_release();
  ASSERT_OK(uv_timer_start(&ie.watchdog, ie_watchdog, WATCHDOG_MS, 0));
}

static void ie_t1_after(uvt_work_t* req, int status) {
  (void)req;
  ASSERT_EQ(status, 0);
  /* Submit from a timer, outside the bridge's batch of callbacks. */
  ASSERT_OK(uv_timer_start(&ie.timer, ie_timer, 0, 0));
}

static void pool_idle_exit_wakeup(void) {
  uv_loop_t loop;
  hooks_reset();
  memset(&ie, 0, sizeof(ie));
  ie.t2_status = 1;
  ie.pool = pool_with(0, 1, 1);
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uv_timer_init(&loop, &ie.timer));
  ASSERT_OK(uv_timer_init(&loop, &ie.watchdog));
  ASSERT_OK(uvt_bridge_init(&loop, &ie.b, ie.pool));
  stall_arm("pool.worker.exit", ie.pool, NULL, STALL_MS);
  ASSERT_OK(uvt_threaded(&ie.b, &ie.t1, noop_work, ie_t1_after));
  closed_count = 0;
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ(ie.watchdog_fired, 0);
  ASSERT_EQ(ie.t2_after, 1);
  ASSERT_EQ(ie.t2_status, 0);
  ASSERT_EQ(LOAD(&ie.t2_ran), 1);
  ASSERT_EQ(closed_count, 1);
  ASSERT_OK(uv_loop_close(&loop));
  ASSERT_OK(uvt_pool_free(ie.pool));
}

/* ==== 4. A thread calling into a closing bridge ============================
 *
 * A thread calls uvt_sync_await and is stalled at "bridge.enter": it is
 * inside the call and has not touched the impl yet (the old code's point,
 * "bridge.get", was right after it read bridge->uvt__impl; the gate it
 * enters now is in the bridge's own struct). Or it calls uvt_call, which
 * passes no gate, and is stalled at "bridge.push": its message is in the
 * inbox and it has yet to wake the loop through the impl.
 * The loop then closes the bridge. The call must be safe, and the bridge's
 * teardown (which frees the impl, then runs close_cb) waits for it; its
 * outcome is that of a call accepted before the close, or refused.
 * Old code: the teardown frees the impl and runs close_cb while the call is
 * in progress. Plain and TSan builds assert in close_cb that the call had
 * returned; ASan builds release the thread there, which then uses the freed
 * impl (heap-use-after-free in uvt__bridge_post_if_open for uvt_call, in
 * uvt__bridge_on_loop_thread for uvt_sync_await). */

typedef struct {
  uvt_bridge_t b;
  int use_await;
  uv_thread_t thread;
  event_t go;
  int rc;
  int close_cb_ran;
} bc_t;

/* The call entered the bridge before or after the close began: accepted
 * (a uvt_call still runs; a sync_await returns UV_ECANCELED, its function
 * never starting on a closing bridge) or refused (UV_EPIPE, nothing runs). */
static int bc_ran;
static void bc_call(void* arg) {
  (void)arg;
  bc_ran++;
}
static void bc_await(uvt_await_t* aw, void* arg) {
  (void)arg;
  bc_ran++;
  uvt_await_resolve(aw, 0);
}

static void bc_check_outcome(bc_t* c) {
  if (c->use_await) {
    ASSERT_EQ(bc_ran, 0);
    ASSERT(c->rc == UV_ECANCELED || c->rc == UV_EPIPE);
  } else {
    ASSERT((c->rc == 0 && bc_ran == 1) || (c->rc == UV_EPIPE && bc_ran == 0));
  }
}

static void bc_caller(void* arg) {
  bc_t* c = arg;
  ASSERT(event_wait(&c->go, WAIT_MS));
  c->rc = c->use_await ? uvt_sync_await(&c->b, bc_await, NULL) : uvt_call(&c->b, bc_call, NULL);
  stall_set_done();
}

static void bc_close_cb(uvt_bridge_t* b) {
  bc_t* c = (bc_t*)b;
  const char* fn = c->use_await ? "uvt_sync_await" : "uvt_call";
  c->close_cb_ran++;
  if (stall_holding()) {
    fprintf(stderr, "bridge_close_vs_caller: close_cb runs (the impl is freed) while a thread's "
                    "%s on the closing bridge has not returned\n", fn);
#if TEST_ASAN
    stall_release();
    /* ASan reports the caller's use of the freed impl here. */
    ASSERT(stall_wait(UNTIL_DONE, WAIT_MS));
#endif
    ASSERT(!"close_cb before the call on the closing bridge returned");
  }
  ASSERT(stall_wait(UNTIL_DONE, WAIT_MS));
  bc_check_outcome(c);
}

static void bc_case(int use_await) {
  uv_loop_t loop;
  uvt_pool_t* pool = pool_with(0, 1, 1000);
  bc_t c;
  hooks_reset();
  memset(&c, 0, sizeof(c));
  c.use_await = use_await;
  c.rc = 1;
  bc_ran = 0;
  event_init(&c.go);
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uvt_bridge_init(&loop, &c.b, pool));
  ASSERT_OK(uv_thread_create(&c.thread, bc_caller, &c));
  stall_arm(use_await ? "bridge.enter" : "bridge.push", &c.b, &c.thread, STALL_MS);
  event_set(&c.go);
  ASSERT(stall_wait(UNTIL_ARRIVED, WAIT_MS)); /* the caller holds the impl pointer */
  ASSERT_OK(uvt_bridge_close(&c.b, bc_close_cb));
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_OK(uv_thread_join(&c.thread));
  ASSERT_EQ(c.close_cb_ran, 1);
  bc_check_outcome(&c);
  ASSERT_OK(uv_loop_close(&loop));
  ASSERT_OK(uvt_pool_free(pool));
  event_destroy(&c.go);
}

static void bridge_close_vs_caller_call(void) { bc_case(0); }
static void bridge_close_vs_caller_sync_await(void) { bc_case(1); }

static void bridge_close_vs_caller(void) {
  bridge_close_vs_caller_call();
  bridge_close_vs_caller_sync_await();
}

/* ==== 5. Threads left behind at exit: see test/exit_clean.c ================ */

/* ==== 6. A huge put timeout means "wait forever", never "expired" ===========
 *
 * A thread calls uvt_chan_put_timeout on a full, paused channel with a
 * timeout too large to add to the clock; the loop resumes delivery after
 * 50 ms, which makes room. The put must return 0. Old code: the deadline
 * wraps and the put returns UV_ETIMEDOUT at once. */

typedef struct {
  uvt_chan_t ch; /* first: the callback casts back */
  uvt_bridge_t* bridge;
  uv_timer_t timer;
  uint64_t timeout_ms;
  int rc;
  uint64_t waited_ms;
  int items, finals, final_status;
} ht_t;

static void ht_cb(uvt_chan_t* ch, int status, void* item) {
  ht_t* h = (ht_t*)ch;
  if (item != NULL) {
    h->items++;
    return;
  }
  h->finals++;
  h->final_status = status;
  ASSERT_OK(uvt_bridge_close(h->bridge, on_closed));
}

static void ht_resume(uv_timer_t* t) {
  ht_t* h = t->data;
  ASSERT_OK(uvt_chan_resume(&h->ch));
  uv_close((uv_handle_t*)t, on_handle_closed);
}

static void ht_producer(void* arg) {
  ht_t* h = arg;
  uint64_t start = uv_hrtime();
  h->rc = uvt_chan_put_timeout(&h->ch, (void*)2, h->timeout_ms);
  h->waited_ms = (uv_hrtime() - start) / 1000000u;
  ASSERT_OK(uvt_chan_close(&h->ch));
}

static void put_timeout_case(uint64_t timeout_ms) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = pool_with(0, 1, 1000);
  uv_thread_t producer;
  ht_t h;
  hooks_reset();
  memset(&h, 0, sizeof(h));
  h.bridge = &b;
  h.timeout_ms = timeout_ms;
  h.rc = 1;
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uvt_bridge_init(&loop, &b, pool));
  ASSERT_OK(uvt_chan_init(&b, &h.ch, 1, ht_cb));
  ASSERT_OK(uvt_chan_pause(&h.ch));
  ASSERT_OK(uvt_chan_try_put(&h.ch, (void*)1)); /* full */
  ASSERT_OK(uv_timer_init(&loop, &h.timer));
  h.timer.data = &h;
  ASSERT_OK(uv_timer_start(&h.timer, ht_resume, 50, 0));
  ASSERT_OK(uv_thread_create(&producer, ht_producer, &h));
  closed_count = 0;
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_OK(uv_thread_join(&producer));
  if (h.rc != 0)
    fprintf(stderr, "put_timeout_huge: uvt_chan_put_timeout(%llu ms) on a full channel returned "
                    "%s after %llu ms, before the loop made room (50 ms)\n",
            (unsigned long long)timeout_ms, uv_err_name(h.rc), (unsigned long long)h.waited_ms);
  ASSERT_OK(h.rc);
  ASSERT_EQ(h.items, 2);
  ASSERT_EQ(h.finals, 1);
  ASSERT_EQ(h.final_status, UV_EOF);
  ASSERT_EQ(closed_count, 1);
  ASSERT_OK(uv_loop_close(&loop));
  ASSERT_OK(uvt_pool_free(pool));
}

static void put_timeout_huge_max(void) { put_timeout_case(UINT64_MAX - 1); }
static void put_timeout_huge_2pow63(void) { put_timeout_case((uint64_t)1 << 63); }
/* The smallest timeout whose nanoseconds overflow 64 bits. */
static void put_timeout_huge_min_overflow(void) { put_timeout_case(UINT64_MAX / 1000000u + 1); }

static void put_timeout_huge(void) {
  put_timeout_huge_max();
  put_timeout_huge_2pow63();
  put_timeout_huge_min_overflow();
}

/* ==== 7. A stray second uvt_await_resolve must not resolve another await ===
 *
 * Release builds only: debug builds assert on the second resolve (the
 * contract calls it a programming error), so the test is compiled only
 * #ifdef NDEBUG and reports itself skipped otherwise. One thread awaits A
 * (resolved with 1; the loop keeps A's pointer), then B, which takes A's
 * recycled record. While B runs, a timer resolves the stale A with 7, then
 * B with 2. B must return 2. Old code: the stale pointer is B's record in
 * state RUNNING, so B returns 7 (and B's own resolve is ignored). */

#ifdef NDEBUG
static struct {
  uvt_bridge_t b;
  uv_timer_t timer;
  uvt_await_t* stale;
  uvt_await_t* awb;
  int rc_a, rc_b;
} sr;

static void sr_fn_a(uvt_await_t* aw, void* arg) {
  (void)arg;
  sr.stale = aw;
  uvt_await_resolve(aw, 1);
}

static void sr_timer(uv_timer_t* t) {
  (void)t;
  uvt_await_resolve(sr.stale, 7); /* stray: A was resolved already */
  uvt_await_resolve(sr.awb, 2);
}

static void sr_fn_b(uvt_await_t* aw, void* arg) {
  (void)arg;
  sr.awb = aw;
  ASSERT_OK(uv_timer_start(&sr.timer, sr_timer, 0, 0)); /* B stays RUNNING until then */
}

static void sr_close(void* arg) {
  (void)arg;
  uv_close((uv_handle_t*)&sr.timer, on_handle_closed);
  ASSERT_OK(uvt_bridge_close(&sr.b, on_closed));
}

static void sr_thread(void* arg) {
  (void)arg;
  sr.rc_a = uvt_sync_await(&sr.b, sr_fn_a, NULL);
  sr.rc_b = uvt_sync_await(&sr.b, sr_fn_b, NULL);
  ASSERT_OK(uvt_call(&sr.b, sr_close, NULL));
}

static void await_stray_resolve(void) {
  uv_loop_t loop;
  uvt_pool_t* pool = pool_with(0, 1, 1000);
  uv_thread_t t;
  hooks_reset();
  memset(&sr, 0, sizeof(sr));
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uv_timer_init(&loop, &sr.timer));
  ASSERT_OK(uvt_bridge_init(&loop, &sr.b, pool));
  uvt_bridge_ref(&sr.b); /* the loop waits for the thread's awaits */
  ASSERT_OK(uv_thread_create(&t, sr_thread, NULL));
  closed_count = 0;
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_OK(uv_thread_join(&t));
  ASSERT_EQ(sr.rc_a, 1);
  if (sr.rc_b == 7)
    fprintf(stderr, "await_stray_resolve: a stray second resolve of a finished await (%s "
                    "record) resolved the await running now\n",
            sr.stale == sr.awb ? "its recycled" : "another");
  ASSERT_NE(sr.rc_b, 7);
  ASSERT_EQ(sr.rc_b, 2);
  ASSERT_EQ(closed_count, 1);
  ASSERT_OK(uv_loop_close(&loop));
  ASSERT_OK(uvt_pool_free(pool));
}
#else
static void await_stray_resolve(void) {
  printf("[ SKIP ] await_stray_resolve: debug builds assert on a second uvt_await_resolve\n");
}
#endif

/* ==== 8. uvt_is_cancelled on a request never submitted ==================== */

static void is_cancelled_garbage(void) {
  uvt_work_t req;
  hooks_reset();
  memset(&req, 0xff, sizeof(req)); /* needs no initialisation: garbage is not in flight */
  ASSERT_EQ(uvt_is_cancelled(&req), 0);
  memset(&req, 0x01, sizeof(req));
  ASSERT_EQ(uvt_is_cancelled(&req), 0);
}

/* ==== 9. uvt_cancel from the worker running the request ===================
 *
 * The work function calls uvt_cancel on its own request: not the loop
 * thread, so UV_EINVAL, and without a data race. The loop thread is held at
 * "work.submit.published" (the task is published, the request's tag is not
 * written yet) until the worker's uvt_cancel returned; the hold polls a
 * relaxed flag and sleeps, so it orders nothing for TSan. Old code: the
 * worker reads the in-flight tag that the loop then writes unordered: TSan
 * reports a data race (uvt__work_in_flight vs uvt__work_submit). Plain and
 * ASan builds pass. */

static struct {
  uvt_bridge_t b;
  uvt_work_t req;
  int cancel_rc, cancel_returned; /* relaxed atomics */
  int after_status, after_count;
} cw;

static void cw_hook(const char* point, const void* obj) {
  uint64_t deadline;
  if (strcmp(point, "work.submit.published") != 0 || obj != &cw.req) return;
  deadline = uv_hrtime() + (uint64_t)WAIT_MS * 1000000u;
  while (!__atomic_load_n(&cw.cancel_returned, __ATOMIC_RELAXED) && uv_hrtime() < deadline)
    uv_sleep(1);
}

static void cw_work(uvt_work_t* req) {
  int rc = uvt_cancel(req); /* a worker, not the loop thread */
  __atomic_store_n(&cw.cancel_rc, rc, __ATOMIC_RELAXED);
  __atomic_store_n(&cw.cancel_returned, 1, __ATOMIC_RELAXED);
}

static void cw_after(uvt_work_t* req, int status) {
  (void)req;
  cw.after_count++;
  cw.after_status = status;
  ASSERT_OK(uvt_bridge_close(&cw.b, on_closed));
}

static void cancel_from_worker(void) {
  uv_loop_t loop;
  uvt_pool_t* pool;
  hooks_reset();
  memset(&cw, 0, sizeof(cw));
  custom_hook = cw_hook;
  pool = pool_with(0, 1, 1000);
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uvt_bridge_init(&loop, &cw.b, pool));
  ASSERT_OK(uvt_threaded(&cw.b, &cw.req, cw_work, cw_after));
  ASSERT_EQ(__atomic_load_n(&cw.cancel_returned, __ATOMIC_RELAXED), 1);
  closed_count = 0;
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ(cw.after_count, 1);
  ASSERT_EQ(cw.after_status, 0);
  ASSERT_ERR(__atomic_load_n(&cw.cancel_rc, __ATOMIC_RELAXED), UV_EINVAL);
  ASSERT_EQ(closed_count, 1);
  ASSERT_OK(uv_loop_close(&loop));
  ASSERT_OK(uvt_pool_free(pool));
}

/* ==== 10. A loop moved to another thread =================================
 *
 * The bridge is initialised on this thread (A); the loop then runs on
 * thread B, whose first iteration runs a timer before any of the bridge's
 * own callbacks. From that timer, uvt_threaded must be accepted, and
 * uvt_sync_await must return UV_EBUSY at once (B is the loop thread). Old
 * code: uvt_threaded returns UV_EINVAL (asserted); uvt_sync_await blocks
 * forever waiting for its own loop: a watchdog thread reports it after 2 s
 * and aborts (the blocked loop thread cannot be unblocked cleanly). */

static struct {
  uv_loop_t loop;
  uvt_bridge_t b;
  uv_timer_t timer, watchdog;
  uvt_work_t req;
  int use_await;
  int rc;
  int after_count, after_status;
  event_t returned;
} mv;

static void mv_close_all(void) {
  uv_close((uv_handle_t*)&mv.watchdog, on_handle_closed);
  ASSERT_OK(uvt_bridge_close(&mv.b, on_closed));
}

static void mv_after(uvt_work_t* req, int status) {
  (void)req;
  mv.after_count++;
  mv.after_status = status;
  mv_close_all();
}

static void mv_watchdog(uv_timer_t* t) {
  (void)t;
  fprintf(stderr, "loop_moved_thread: watchdog: the work accepted on the loop's new thread was "
                  "not delivered within %u ms\n", WATCHDOG_MS);
  ASSERT(!"watchdog");
}

static void mv_call_close(void* arg) {
  (void)arg;
  mv_close_all(); /* a bridge callback on B */
}

static void mv_await_fn(uvt_await_t* aw, void* arg) {
  (void)arg;
  uvt_await_resolve(aw, 0);
}

static void mv_await_watchdog(void* arg) {
  (void)arg;
  if (event_wait(&mv.returned, WATCHDOG_MS)) return;
  fprintf(stderr, "loop_moved_thread: watchdog: uvt_sync_await called on the thread now running "
                  "the loop did not return within %u ms (it waits for its own loop: deadlock; "
                  "expected UV_EBUSY at once)\n", WATCHDOG_MS);
  abort();
}

static void mv_timer(uv_timer_t* t) {
  uv_close((uv_handle_t*)t, on_handle_closed);
  if (!mv.use_await) {
    mv.rc = uvt_threaded(&mv.b, &mv.req, noop_work, mv_after);
    if (mv.rc != 0)
      fprintf(stderr, "loop_moved_thread: uvt_threaded on the thread now running the loop "
                      "returned %s\n", uv_err_name(mv.rc));
    ASSERT_OK(mv.rc);
    ASSERT_OK(uv_timer_start(&mv.watchdog, mv_watchdog, WATCHDOG_MS, 0));
  } else {
    uv_thread_t w;
    ASSERT_OK(uv_thread_create(&w, mv_await_watchdog, NULL));
    mv.rc = uvt_sync_await(&mv.b, mv_await_fn, NULL);
    event_set(&mv.returned);
    ASSERT_OK(uv_thread_join(&w));
    ASSERT_ERR(mv.rc, UV_EBUSY);
    ASSERT_OK(uvt_call(&mv.b, mv_call_close, NULL));
  }
}

static void mv_run(void* arg) {
  (void)arg;
  ASSERT_OK(uv_run(&mv.loop, UV_RUN_DEFAULT));
}

static void mv_case(int use_await) {
  uvt_pool_t* pool = pool_with(0, 1, 1000);
  uv_thread_t b_thread;
  hooks_reset();
  memset(&mv, 0, sizeof(mv));
  mv.use_await = use_await;
  mv.rc = 1;
  event_init(&mv.returned);
  ASSERT_OK(uv_loop_init(&mv.loop));
  ASSERT_OK(uvt_bridge_init(&mv.loop, &mv.b, pool)); /* on A */
  uvt_bridge_ref(&mv.b); /* the loop runs until the close */
  ASSERT_OK(uv_timer_init(&mv.loop, &mv.timer));
  ASSERT_OK(uv_timer_init(&mv.loop, &mv.watchdog));
  ASSERT_OK(uv_timer_start(&mv.timer, mv_timer, 0, 0));
  closed_count = 0;
  ASSERT_OK(uv_thread_create(&b_thread, mv_run, NULL)); /* the loop moves to B */
  ASSERT_OK(uv_thread_join(&b_thread));
  if (!use_await) {
    ASSERT_EQ(mv.after_count, 1);
    ASSERT_EQ(mv.after_status, 0);
  }
  ASSERT_EQ(closed_count, 1);
  ASSERT_OK(uv_loop_close(&mv.loop)); /* back on A */
  ASSERT_OK(uvt_pool_free(pool));
  event_destroy(&mv.returned);
}

static void loop_moved_thread_threaded(void) { mv_case(0); }
static void loop_moved_thread_sync_await(void) { mv_case(1); }

static void loop_moved_thread(void) {
  loop_moved_thread_threaded();
  loop_moved_thread_sync_await();
}

/* ---- Runner: every finding's test, or the one named (also a sub-case) ---- */

typedef struct {
  const char* name;
  void (*fn)(void);
  int subcase; /* run only when named */
} rel_test_t;

/* ==== Lanes: a queue deadline racing the worker that took the task ========
 *
 * Defined in lane.c: a task starts when its worker, having read the clock
 * before the deadline, moves it to RUNNING with a CAS. At the deadline the
 * loop withdraws it from the pool, or, if a worker holds it unstarted,
 * moves it to EXPIRED with a CAS of its own: the first CAS decides.
 * _expired: the worker read the clock in time, then stalls ("lane.start")
 * past the deadline; the loop's timer expires it meanwhile, so once let go
 * the worker must not run it: after gets UV_ETIMEDOUT, and uvt_cancel in
 * between returns 0. A design that checks the deadline only at dequeue, or
 * trusts the worker's earlier clock read, runs it (status 0).
 * _started: the worker started it and stalls ("lane.started") past the
 * deadline: the timer must leave it alone; it runs, after gets 0, and
 * uvt_cancel in between returns UV_EBUSY. */

static struct {
  uvt_bridge_t b;
  uvt_work_t req;
  uv_timer_t release;
  int ran; /* written by the worker before its completion is posted */
  int after_count, after_status;
  int cancel_rc;
} ld;

static void ld_work(uvt_work_t* req) {
  (void)req;
  ld.ran++;
}

static void ld_after(uvt_work_t* req, int status) {
  (void)req;
  ld.after_count++;
  ld.after_status = status;
  ASSERT_OK(uvt_bridge_close(&ld.b, on_closed));
}

static void ld_release(uv_timer_t* t) {
  ASSERT(stall_holding()); /* the deadline (20 ms) passed with the worker held */
  ASSERT_EQ(ld.after_count, 0);
  ld.cancel_rc = uvt_cancel(&ld.req);
  stall_release();
  uv_close((uv_handle_t*)t, on_handle_closed);
}

static void lane_deadline_case(const char* point, int want_status, int want_cancel_rc) {
  uv_loop_t loop;
  uvt_pool_t* pool;
  uvt_lane_t* lane;
  uvt_work_options_t o;
  uvt_pool_stats_t ps;
  uvt_lane_stats_t ls;
  hooks_reset();
  memset(&ld, 0, sizeof(ld));
  pool = pool_with(0, 1, 1000);
  ASSERT_OK(uvt_lane_new(pool, NULL, &lane));
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uvt_bridge_init(&loop, &ld.b, pool));
  stall_arm(point, &ld.req.uvt__link, NULL, WAIT_MS);
  o.lane = lane;
  o.queue_timeout_ms = 20;
  ASSERT_OK(uvt_threaded_ex(&ld.b, &ld.req, &o, ld_work, ld_after));
  ASSERT(stall_wait(UNTIL_ARRIVED, WAIT_MS));
  ASSERT_OK(uv_timer_init(&loop, &ld.release));
  ASSERT_OK(uv_timer_start(&ld.release, ld_release, 100, 0));
  closed_count = 0;
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ(closed_count, 1);
  ASSERT_EQ(ld.after_count, 1);
  ASSERT_ERR(ld.after_status, want_status);
  ASSERT_ERR(ld.cancel_rc, want_cancel_rc);
  ASSERT_EQ(ld.ran, want_status == 0);
  ASSERT_OK(uvt_pool_stats(pool, &ps));
  ASSERT_EQ(ps.expired, want_status != 0);
  ASSERT_EQ(ps.completed, want_status == 0);
  ASSERT_EQ(ps.submitted, 1);
  ASSERT_OK(uvt_lane_stats(lane, &ls));
  ASSERT_EQ(ls.expired, want_status != 0);
  ASSERT_EQ(ls.completed, want_status == 0);
  ASSERT_OK(uv_loop_close(&loop));
  ASSERT_OK(uvt_lane_free(lane));
  ASSERT_OK(uvt_pool_free(pool));
}

static void lane_deadline_vs_worker_expired(void) {
  lane_deadline_case("lane.start", UV_ETIMEDOUT, 0);
}

static void lane_deadline_vs_worker_started(void) {
  lane_deadline_case("lane.started", 0, UV_EBUSY);
}

static void lane_deadline_vs_worker(void) {
  lane_deadline_vs_worker_expired();
  lane_deadline_vs_worker_started();
}

/* ==== 11. A claimed slot not yet published ==================================
 *
 * A put claims its slot with one CAS and publishes it with a later store
 * (stream.c); "stream.fill" stalls a producer between the two.
 *
 * stop_waits_for_publish: the loop stops the channel while a put is stalled
 * there. The stop must wait for the item and drop it before it returns, and
 * the put returns 0 (its item was taken, then dropped). A stop that did not
 * wait would return first and the item would be lost or delivered after the
 * final callback.
 *
 * unpublished_slot_polled: while the loop holds the stream in a flood (a
 * visit is delivering item 0), producer A claims slot 1 and stalls before
 * publishing it, and producer B claims and publishes slot 2. Neither claim
 * queued the stream (the loop held it), so only the loop's own polling can
 * bring it back: items 1 and 2 must arrive, in order, once A publishes, and
 * item 2 never before item 1. */

typedef struct {
  uvt_chan_t ch; /* first: the callbacks cast back */
  uvt_bridge_t* bridge;
  uv_thread_t producer, releaser;
  event_t stalled; /* the stall is armed */
  int put_rc;
  int stop_returned; /* atomic: set by the loop after uvt_chan_stop returned */
  int released_while_stopping; /* the releaser saw the stop still waiting */
  int dropped, delivered, finals, final_status;
} pub_t;

static pub_t* pub_dropping;
static void pub_drop(void* item) {
  ASSERT_EQ((intptr_t)item, 7);
  pub_dropping->dropped++;
}

static void pub_stop_cb(uvt_chan_t* ch, int status, void* item) {
  pub_t* p = (pub_t*)ch;
  if (item != NULL) {
    p->delivered++;
    return;
  }
  p->finals++;
  p->final_status = status;
  ASSERT_OK(uvt_bridge_close(p->bridge, on_closed));
}

static void pub_stop_producer(void* arg) {
  pub_t* p = arg;
  ASSERT(event_wait(&p->stalled, WAIT_MS)); /* the stall is armed */
  p->put_rc = uvt_chan_put(&p->ch, (void*)7); /* stalls in stream.fill */
}

/* Releases the stalled thread after the loop has been in a stop a while;
 * whether the stop was still waiting for it then (stop_returned is set by
 * the loop once the stop returned). */
static int release_while_stopping(int* stop_returned) {
  int waiting;
  uv_sleep(50);
  waiting = !LOAD(stop_returned) && stall_holding();
  stall_release();
  return waiting;
}

static void pub_releaser(void* arg) {
  pub_t* p = arg;
  ASSERT(stall_wait(UNTIL_ARRIVED, WAIT_MS));
  p->released_while_stopping = release_while_stopping(&p->stop_returned);
}

static void pub_stop_timer(uv_timer_t* t) {
  pub_t* p = t->data;
  /* The producer is stalled between its claim and its publish. */
  ASSERT(stall_wait(UNTIL_ARRIVED, WAIT_MS));
  ASSERT_OK(uv_thread_create(&p->releaser, pub_releaser, p));
  pub_dropping = p;
  ASSERT_OK(uvt_chan_stop(&p->ch, pub_drop));
  STORE(&p->stop_returned, 1);
  ASSERT_EQ(p->dropped, 1); /* before the stop returned */
  uv_close((uv_handle_t*)t, on_handle_closed);
}

static void stream_stop_waits_for_publish(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uv_timer_t timer;
  uvt_pool_t* pool = pool_with(0, 1, 1000);
  pub_t p;
  hooks_reset();
  memset(&p, 0, sizeof(p));
  event_init(&p.stalled);
  p.bridge = &b;
  p.put_rc = 1;
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uvt_bridge_init(&loop, &b, pool));
  ASSERT_OK(uvt_chan_init(&b, &p.ch, 4, pub_stop_cb));
  ASSERT_OK(uv_thread_create(&p.producer, pub_stop_producer, &p));
  /* Armed for the producer's thread before it can reach the point. */
  stall_arm("stream.fill", NULL, &p.producer, STALL_MS * 4);
  event_set(&p.stalled);
  ASSERT_OK(uv_timer_init(&loop, &timer));
  timer.data = &p;
  ASSERT_OK(uv_timer_start(&timer, pub_stop_timer, 0, 0));
  closed_count = 0;
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_OK(uv_thread_join(&p.producer));
  ASSERT_OK(uv_thread_join(&p.releaser));
  ASSERT_EQ(p.released_while_stopping, 1);
  ASSERT_EQ(p.put_rc, 0);
  ASSERT_EQ(p.dropped, 1);
  ASSERT_EQ(p.delivered, 0);
  ASSERT_EQ(p.finals, 1);
  ASSERT_ERR(p.final_status, UV_ECANCELED);
  ASSERT_EQ(closed_count, 1);
  ASSERT_OK(uv_loop_close(&loop));
  ASSERT_OK(uvt_pool_free(pool));
  event_destroy(&p.stalled);
}

typedef struct {
  uvt_chan_t ch; /* first: the callbacks cast back */
  uvt_bridge_t* bridge;
  uv_thread_t a, b, releaser;
  event_t go_a, go_b, b_done;
  int n;
  intptr_t order[4];
  int finals;
} poll_t;

static void poll_release_later(void* arg) {
  (void)arg;
  uv_sleep(50); /* the loop polls meanwhile, and must deliver nothing */
  stall_release();
}

static void poll_cb(uvt_chan_t* ch, int status, void* item) {
  poll_t* p = (poll_t*)ch;
  if (item == NULL) {
    ASSERT_ERR(status, UV_EOF);
    p->finals++;
    ASSERT_OK(uvt_bridge_close(p->bridge, on_closed));
    return;
  }
  ASSERT(p->n < 4);
  p->order[p->n++] = (intptr_t)item;
  if ((intptr_t)item != 100) return;
  /* Inside the visit that delivers item 0: the loop holds the stream. */
  event_set(&p->go_a);
  ASSERT(stall_wait(UNTIL_ARRIVED, WAIT_MS)); /* A claimed slot 1 */
  event_set(&p->go_b);
  ASSERT(event_wait(&p->b_done, WAIT_MS)); /* B claimed and published slot 2 */
  ASSERT_OK(uv_thread_create(&p->releaser, poll_release_later, NULL));
}

static void poll_a(void* arg) {
  poll_t* p = arg;
  ASSERT(event_wait(&p->go_a, WAIT_MS));
  ASSERT_OK(uvt_chan_put(&p->ch, (void*)101)); /* stalls in stream.fill */
  ASSERT_OK(uvt_chan_close(&p->ch));           /* after B's item: its claim came first */
}

static void poll_b(void* arg) {
  poll_t* p = arg;
  ASSERT(event_wait(&p->go_b, WAIT_MS));
  ASSERT_OK(uvt_chan_put(&p->ch, (void*)102));
  event_set(&p->b_done);
}

static void stream_unpublished_slot_polled(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uvt_pool_t* pool = pool_with(0, 1, 1000);
  poll_t p;
  hooks_reset();
  memset(&p, 0, sizeof(p));
  event_init(&p.go_a);
  event_init(&p.go_b);
  event_init(&p.b_done);
  p.bridge = &b;
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uvt_bridge_init(&loop, &b, pool));
  ASSERT_OK(uvt_chan_init(&b, &p.ch, 4, poll_cb));
  ASSERT_OK(uv_thread_create(&p.a, poll_a, &p));
  ASSERT_OK(uv_thread_create(&p.b, poll_b, &p));
  stall_arm("stream.fill", NULL, &p.a, STALL_MS * 4);
  ASSERT_OK(uvt_chan_try_put(&p.ch, (void*)100)); /* item 0, from the loop thread */
  closed_count = 0;
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_OK(uv_thread_join(&p.a));
  ASSERT_OK(uv_thread_join(&p.b));
  ASSERT_OK(uv_thread_join(&p.releaser));
  /* Not timed out: the test released A. */
  ASSERT_EQ(stall.timed_out, 0);
  ASSERT_EQ(p.n, 3);
  ASSERT_EQ(p.order[0], 100);
  ASSERT_EQ(p.order[1], 101);
  ASSERT_EQ(p.order[2], 102);
  ASSERT_EQ(p.finals, 1);
  ASSERT_EQ(closed_count, 1);
  ASSERT_OK(uv_loop_close(&loop));
  ASSERT_OK(uvt_pool_free(pool));
  event_destroy(&p.go_a);
  event_destroy(&p.go_b);
  event_destroy(&p.b_done);
}

static void stream_claim_publish(void) {
  stream_stop_waits_for_publish();
  stream_unpublished_slot_polled();
}

/* ==== 12. A generator's puts without a locked instruction ===================
 *
 * An iterator's generator is its stream's sole producer: it claims a slot
 * with plain loads and stores (where membarrier exists), and in a long
 * flood (FAST) it does not even tell the loop (stream.c).
 *
 * iter_stop_vs_sole_put: the generator has checked that the stream takes
 * items and is stalled at "stream.claim.sole" when the loop stops the
 * iterator. No CAS of the generator's can fail now, so the stop must wait
 * for the claim to publish and drop the item before it returns (as for a
 * channel's claimed slot, test 11); the yield returns 0 and the next one
 * UV_EPIPE. A stop that read tail without waiting would return with
 * nothing dropped, and the item would be lost. Without membarrier the
 * generator claims with a CAS and the point is never reached: skipped.
 *
 * iter_fast_then_trickle: a flood long enough for FAST, then a pause, then
 * one more item, which the generator waits for the loop to receive. The
 * loop must leave FAST when the flood ends (its heavy barrier) and deliver
 * the last item at once; a let-go that missed it would strand it until the
 * generator's next put, which never comes. */

typedef struct {
  uvt_iter_t it; /* first: the callbacks cast back */
  uvt_bridge_t* bridge;
  uv_thread_t releaser;
  int yield_rc[2];
  int stop_returned;           /* atomic: set by the loop after uvt_iter_stop returned */
  int released_while_stopping; /* the releaser saw the stop still waiting */
  int delivered, dropped, finals, final_status;
} sole_t;

static sole_t* sole_dropping;
static void sole_drop(void* item) {
  ASSERT_EQ((intptr_t)item, 1);
  sole_dropping->dropped++;
}

static int sole_gen(uvt_iter_t* it) {
  sole_t* s = (sole_t*)it;
  s->yield_rc[0] = uvt_yield(it, (void*)1); /* stalls in the claim; the loop stops */
  s->yield_rc[1] = uvt_yield(it, (void*)2); /* refused */
  return 0;
}

static void sole_cb(uvt_iter_t* it, int status, void* item) {
  sole_t* s = (sole_t*)it;
  if (item != NULL) {
    s->delivered++;
    return;
  }
  s->finals++;
  s->final_status = status;
  ASSERT_OK(uvt_bridge_close(s->bridge, on_closed));
}

static void sole_releaser(void* arg) {
  sole_t* s = arg;
  s->released_while_stopping = release_while_stopping(&s->stop_returned);
}

static void sole_stop_timer(uv_timer_t* t) {
  sole_t* s = t->data;
  /* The generator passed the checks of its claim and waits there. */
  ASSERT(stall_wait(UNTIL_ARRIVED, WAIT_MS));
  ASSERT_OK(uv_thread_create(&s->releaser, sole_releaser, s));
  sole_dropping = s;
  ASSERT_OK(uvt_iter_stop(&s->it, sole_drop));
  STORE(&s->stop_returned, 1);
  ASSERT_EQ(s->dropped, 1); /* before the stop returned */
  uv_close((uv_handle_t*)t, on_handle_closed);
}

static int sole_claims_without_cas(void) {
#if defined(__linux__) && defined(__NR_membarrier)
  long cmds = syscall(__NR_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
  return cmds > 0 && (cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED) != 0;
#else
  return 0;
#endif
}

static void iter_stop_vs_sole_put(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  uv_timer_t timer;
  sole_t s;
  if (!sole_claims_without_cas()) {
    printf("(no membarrier here: a generator claims with a CAS, test 11 covers it)\n");
    return;
  }
  hooks_reset();
  memset(&s, 0, sizeof(s));
  s.bridge = &b;
  s.yield_rc[0] = s.yield_rc[1] = 1;
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uvt_bridge_init(&loop, &b, NULL));
  stall_arm("stream.claim.sole", NULL, NULL, STALL_MS * 4);
  ASSERT_OK(uvt_threaded_iterable_separate(&b, &s.it, 4, sole_gen, sole_cb));
  ASSERT_OK(uv_timer_init(&loop, &timer));
  timer.data = &s;
  ASSERT_OK(uv_timer_start(&timer, sole_stop_timer, 0, 0));
  closed_count = 0;
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_OK(uv_thread_join(&s.releaser));
  ASSERT_EQ(s.released_while_stopping, 1);
  ASSERT_EQ(s.yield_rc[0], 0); /* its item was taken, then dropped */
  ASSERT_ERR(s.yield_rc[1], UV_EPIPE);
  ASSERT_EQ(s.dropped, 1);
  ASSERT_EQ(s.delivered, 0);
  ASSERT_EQ(s.finals, 1);
  ASSERT_ERR(s.final_status, UV_ECANCELED);
  ASSERT_EQ(closed_count, 1);
  ASSERT_OK(uv_loop_close(&loop));
}

#define TRICKLE_FLOOD_MAX 20000000
typedef struct {
  uvt_iter_t it; /* first: the callbacks cast back */
  uvt_bridge_t* bridge;
  event_t got_last;
  intptr_t flooded; /* atomic: items of the flood (the last one is flooded + 1) */
  intptr_t next;    /* loop: the item expected next */
  int last_in_time; /* generator: the loop had the last item within WAIT_MS */
  int finals, final_status;
} trickle_t;

static int fast_entered, fast_left; /* atomic: counted by trickle_hook */
static void trickle_hook(const char* point, const void* obj) {
  (void)obj;
  if (strcmp(point, "stream.fast.enter") == 0) __atomic_fetch_add(&fast_entered, 1, __ATOMIC_RELEASE);
  if (strcmp(point, "stream.fast.leave") == 0) __atomic_fetch_add(&fast_left, 1, __ATOMIC_RELEASE);
}

static int trickle_gen(uvt_iter_t* it) {
  trickle_t* t = (trickle_t*)it;
  intptr_t i;
  /* Flood until the loop went FAST (and a little more), then pause. */
  for (i = 1; i <= TRICKLE_FLOOD_MAX; i++) {
    ASSERT_OK(uvt_yield(it, (void*)i));
    if ((i & 4095) == 0 && LOAD(&fast_entered) > 0 && i > 200000) break;
  }
  if (i > TRICKLE_FLOOD_MAX) i = TRICKLE_FLOOD_MAX;
  STORE(&t->flooded, i);
  uv_sleep(30); /* the flood ends: the loop lets go */
  ASSERT_OK(uvt_yield(it, (void*)(i + 1)));
  t->last_in_time = event_wait(&t->got_last, WAIT_MS);
  return 0;
}

static void trickle_cb(uvt_iter_t* it, int status, void* item) {
  trickle_t* t = (trickle_t*)it;
  if (item != NULL) {
    ASSERT_EQ((intptr_t)item, t->next); /* in order, none lost */
    t->next++;
    if ((intptr_t)item == LOAD(&t->flooded) + 1) event_set(&t->got_last);
    return;
  }
  t->finals++;
  t->final_status = status;
  ASSERT_OK(uvt_bridge_close(t->bridge, on_closed));
}

static void iter_fast_then_trickle(void) {
  uv_loop_t loop;
  uvt_bridge_t b;
  trickle_t t;
  hooks_reset();
  custom_hook = trickle_hook;
  STORE(&fast_entered, 0);
  STORE(&fast_left, 0);
  memset(&t, 0, sizeof(t));
  event_init(&t.got_last);
  t.bridge = &b;
  t.next = 1;
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uvt_bridge_init(&loop, &b, NULL));
  ASSERT_OK(uvt_threaded_iterable_separate(&b, &t.it, 1024, trickle_gen, trickle_cb));
  closed_count = 0;
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ(t.last_in_time, 1);
  ASSERT_EQ(t.next, t.flooded + 2);
  ASSERT_EQ(t.finals, 1);
  ASSERT_ERR(t.final_status, UV_EOF);
  ASSERT_EQ(closed_count, 1);
  if (sole_claims_without_cas()) {
    /* The flood went FAST and its end left it. */
    ASSERT(LOAD(&fast_entered) >= 1);
    ASSERT(LOAD(&fast_left) >= 1);
  } else {
    printf("(no membarrier here: streams never go FAST; the trickle still checked)\n");
  }
  ASSERT_OK(uv_loop_close(&loop));
  event_destroy(&t.got_last);
}

static void iter_sole_producer(void) {
  iter_stop_vs_sole_put();
  iter_fast_then_trickle();
}

/* ==== 13. A channel's lone producer claims without a CAS ===================
 *
 * A thread that makes UVT__BIAS_AFTER (65536) claims on a channel in a row,
 * with no other producer's between them, becomes its owner: its claims are
 * plain stores, as a generator's are (finding 12). Taking that back (a
 * second producer's first put, a stop, the end of the stream) must wait
 * for the owner's claim in progress. The owner is stalled at
 * "stream.claim.sole" (it passed its checks; its item is not in tail yet)
 * while
 * - a second producer puts: its put waits, and its item comes after the
 *   owner's (without the wait it claims the owner's slot: an item is lost);
 * - another thread closes the channel: the final callback waits, and the
 *   owner's item is delivered before it (without the wait the end comes
 *   while the owner is inside, and its item is lost);
 * - the loop stops the channel: the stop waits and drops the item before
 *   it returns.
 * And the role passes to another thread only once the last owner has seen
 * it taken back (a thread that read "I own it" may still be about to
 * claim): lone_handover. */

#define LONE_FLOOD 70000 /* more than UVT__BIAS_AFTER claims in a row */

static int bias_count, unbias_count; /* atomic: counted by lone_hook */
static void lone_hook(const char* point, const void* obj) {
  (void)obj;
  if (strcmp(point, "stream.bias") == 0) __atomic_fetch_add(&bias_count, 1, __ATOMIC_ACQ_REL);
  if (strcmp(point, "stream.unbias") == 0) __atomic_fetch_add(&unbias_count, 1, __ATOMIC_ACQ_REL);
}

/* Whether *count reached at least want within ms. */
static int count_reaches(int* count, int want, unsigned ms) {
  uint64_t deadline = uv_hrtime() + (uint64_t)ms * 1000000u;
  while (LOAD(count) < want) {
    if (uv_hrtime() >= deadline) return 0;
    uv_sleep(1);
  }
  return 1;
}

/* Items: the producer in bit 0 (A = 0, B = 1), its own count above. */
#define LONE_ITEM(who, i) ((void*)(((intptr_t)(i) << 1) | (who)))
#define LONE_X LONE_ITEM(0, LONE_FLOOD + 1) /* the owner's stalled item */

enum { LONE_SECOND_PRODUCER, LONE_CLOSE, LONE_STOP };

typedef struct {
  uvt_chan_t ch; /* first: the callbacks cast back */
  uvt_bridge_t* bridge;
  int mode;
  uv_thread_t a, b, controller;
  event_t a_flooded, a_go;
  intptr_t next[2];    /* loop: each producer's item expected next */
  intptr_t delivered;  /* loop: items delivered, both producers */
  intptr_t x_at, y_at; /* loop: when X and B's first item came (1-based) */
  intptr_t dropped, x_dropped;
  int a_rc, a_rc2, b_rc;
  int b_returned, stop_returned, finals; /* atomic */
  int final_status;
  int waited; /* the controller saw the other side waiting for the owner */
} lone_t;

static void lone_cb(uvt_chan_t* ch, int status, void* item) {
  lone_t* l = (lone_t*)ch;
  if (item != NULL) {
    intptr_t v = (intptr_t)item;
    int who = (int)(v & 1);
    ASSERT_EQ(v >> 1, l->next[who]); /* each producer's order; nothing lost or twice */
    l->next[who]++;
    l->delivered++;
    if (item == LONE_X) l->x_at = l->delivered;
    if (item == LONE_ITEM(1, 1)) l->y_at = l->delivered;
    return;
  }
  ASSERT_EQ(stall_holding(), 0); /* no owner inside its claim: the end waited for it */
  l->final_status = status;
  STORE(&l->finals, LOAD(&l->finals) + 1);
  ASSERT_OK(uvt_bridge_close(l->bridge, on_closed));
}

static lone_t* lone_dropping;
static void lone_drop(void* item) {
  lone_t* l = lone_dropping;
  intptr_t v = (intptr_t)item;
  ASSERT_EQ(v & 1, 0);
  ASSERT_EQ(v >> 1, l->next[0]); /* A's items go on in order here */
  l->next[0]++;
  l->dropped++;
  if (item == LONE_X) l->x_dropped++;
}

/* The loop thread, through uvt_call: the stop waits for the owner. */
static void lone_stop_call(void* arg) {
  lone_t* l = arg;
  lone_dropping = l;
  ASSERT_OK(uvt_chan_stop(&l->ch, lone_drop));
  STORE(&l->stop_returned, 1);
  ASSERT_EQ(l->x_dropped, 1); /* before the stop returned */
}

/* A: the flood that makes it the owner; then, told to, X (stalled in its
 * claim) and, for the stop, one more that must be refused. */
static void lone_a(void* arg) {
  lone_t* l = arg;
  intptr_t i;
  for (i = 1; i <= LONE_FLOOD; i++) ASSERT_OK(uvt_chan_put(&l->ch, LONE_ITEM(0, i)));
  event_set(&l->a_flooded);
  ASSERT(event_wait(&l->a_go, WAIT_MS));
  l->a_rc = uvt_chan_put(&l->ch, LONE_X);
  if (l->mode == LONE_STOP) l->a_rc2 = uvt_chan_put(&l->ch, LONE_ITEM(0, LONE_FLOOD + 2));
}

static void lone_b(void* arg) {
  lone_t* l = arg;
  l->b_rc = uvt_chan_put(&l->ch, LONE_ITEM(1, 1));
  STORE(&l->b_returned, 1);
}

static void lone_controller(void* arg) {
  lone_t* l = arg;
  ASSERT(event_wait(&l->a_flooded, WAIT_MS * 4));
  ASSERT_EQ(LOAD(&bias_count), 1); /* A owns the channel */
  ASSERT_EQ(LOAD(&unbias_count), 0);
  stall_arm("stream.claim.sole", NULL, &l->a, STALL_MS * 4);
  event_set(&l->a_go);
  ASSERT(stall_wait(UNTIL_ARRIVED, WAIT_MS));
  if (l->mode == LONE_SECOND_PRODUCER) ASSERT_OK(uv_thread_create(&l->b, lone_b, l));
  if (l->mode == LONE_CLOSE) ASSERT_OK(uvt_chan_close(&l->ch)); /* X passed its check: it is in */
  if (l->mode == LONE_STOP) ASSERT_OK(uvt_call(l->bridge, lone_stop_call, l));
  /* The other side began to take the role back; give it time to be wrong. */
  ASSERT(count_reaches(&unbias_count, 1, WAIT_MS));
  uv_sleep(50);
  if (l->mode == LONE_SECOND_PRODUCER) l->waited = !LOAD(&l->b_returned);
  if (l->mode == LONE_CLOSE) l->waited = !LOAD(&l->finals);
  if (l->mode == LONE_STOP) l->waited = !LOAD(&l->stop_returned);
  l->waited = l->waited && stall_holding();
  stall_release();
  ASSERT_OK(uv_thread_join(&l->a));
  if (l->mode == LONE_SECOND_PRODUCER) {
    ASSERT_OK(uv_thread_join(&l->b));
    ASSERT_OK(uvt_chan_close(&l->ch));
  }
}

static void lone_run(int mode) {
  uv_loop_t loop;
  uvt_bridge_t b;
  lone_t l;
  if (!sole_claims_without_cas()) {
    printf("(no membarrier here: channel producers always claim with a CAS)\n");
    return;
  }
  hooks_reset();
  custom_hook = lone_hook;
  STORE(&bias_count, 0);
  STORE(&unbias_count, 0);
  memset(&l, 0, sizeof(l));
  l.mode = mode;
  l.bridge = &b;
  l.next[0] = l.next[1] = 1;
  l.a_rc = l.a_rc2 = l.b_rc = 1;
  event_init(&l.a_flooded);
  event_init(&l.a_go);
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uvt_bridge_init(&loop, &b, NULL));
  ASSERT_OK(uvt_chan_init(&b, &l.ch, 1024, lone_cb));
  ASSERT_OK(uv_thread_create(&l.a, lone_a, &l));
  ASSERT_OK(uv_thread_create(&l.controller, lone_controller, &l));
  closed_count = 0;
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_OK(uv_thread_join(&l.controller));
  ASSERT_EQ(l.waited, 1);
  ASSERT_EQ(l.a_rc, 0); /* X was taken */
  ASSERT_EQ(LOAD(&bias_count), 1);
  ASSERT_EQ(LOAD(&unbias_count), 1);
  ASSERT_EQ(LOAD(&l.finals), 1);
  ASSERT_EQ(closed_count, 1);
  if (mode == LONE_STOP) {
    ASSERT_ERR(l.a_rc2, UV_EPIPE);
    ASSERT_EQ(l.x_dropped, 1);
    ASSERT_EQ(l.x_at, 0); /* dropped, never delivered */
    ASSERT_EQ(l.delivered + l.dropped, LONE_FLOOD + 1);
    ASSERT_ERR(l.final_status, UV_ECANCELED);
  } else {
    ASSERT_EQ(l.x_at > 0, 1);
    ASSERT_EQ(l.delivered, LONE_FLOOD + 1 + (mode == LONE_SECOND_PRODUCER));
    if (mode == LONE_SECOND_PRODUCER) {
      ASSERT_EQ(l.b_rc, 0);
      ASSERT_EQ(l.y_at > l.x_at, 1); /* B claimed after the owner's item */
    }
    ASSERT_ERR(l.final_status, UV_EOF);
  }
  ASSERT_OK(uv_loop_close(&loop));
  event_destroy(&l.a_flooded);
  event_destroy(&l.a_go);
}

static void chan_owner_vs_second_producer(void) { lone_run(LONE_SECOND_PRODUCER); }
static void chan_owner_vs_close(void) { lone_run(LONE_CLOSE); }
static void chan_owner_vs_stop(void) { lone_run(LONE_STOP); }

/* Two producer threads that put when told (a count), in order of their own. */
typedef struct {
  uvt_chan_t* ch;
  int who;
  intptr_t next;
  intptr_t count; /* the next order; -1: return */
  uv_sem_t go, done;
  uv_thread_t thread;
} runner_t;

static void runner_main(void* arg) {
  runner_t* r = arg;
  for (;;) {
    intptr_t i;
    uv_sem_wait(&r->go);
    if (r->count < 0) return;
    for (i = 0; i < r->count; i++) ASSERT_OK(uvt_chan_put(r->ch, LONE_ITEM(r->who, r->next++)));
    uv_sem_post(&r->done);
  }
}

static void runner_order(runner_t* r, intptr_t count) {
  r->count = count;
  uv_sem_post(&r->go);
  if (count >= 0) uv_sem_wait(&r->done);
}

typedef struct {
  lone_t l;
  runner_t a, b;
  int biases[5], unbiases[5]; /* after each step */
} handover_t;

static void handover_controller(void* arg) {
  handover_t* h = arg;
  int step = 0;
#define HANDOVER_STEP(runner, count)                       \
  do {                                                     \
    runner_order((runner), (count));                       \
    h->biases[step] = LOAD(&bias_count);                   \
    h->unbiases[step] = LOAD(&unbias_count);               \
    step++;                                                \
  } while (0)
  HANDOVER_STEP(&h->a, LONE_FLOOD); /* A becomes the owner */
  HANDOVER_STEP(&h->b, LONE_FLOOD); /* B takes it back, but A has not seen that: B may not own */
  HANDOVER_STEP(&h->a, 1);          /* A sees it was taken back and gives the role up */
  HANDOVER_STEP(&h->b, LONE_FLOOD); /* now B becomes the owner */
  HANDOVER_STEP(&h->a, 1);          /* and A takes it back */
#undef HANDOVER_STEP
  runner_order(&h->a, -1);
  runner_order(&h->b, -1);
  ASSERT_OK(uv_thread_join(&h->a.thread));
  ASSERT_OK(uv_thread_join(&h->b.thread));
  ASSERT_OK(uvt_chan_close(&h->l.ch));
}

static void runner_start(runner_t* r, uvt_chan_t* ch, int who) {
  r->ch = ch;
  r->who = who;
  r->next = 1;
  ASSERT_OK(uv_sem_init(&r->go, 0));
  ASSERT_OK(uv_sem_init(&r->done, 0));
  ASSERT_OK(uv_thread_create(&r->thread, runner_main, r));
}

static void chan_bias_handover(void) {
  static const int biases[5] = {1, 1, 1, 2, 2}, unbiases[5] = {0, 1, 1, 1, 2};
  uv_loop_t loop;
  uvt_bridge_t b;
  handover_t h;
  int i;
  if (!sole_claims_without_cas()) {
    printf("(no membarrier here: channel producers always claim with a CAS)\n");
    return;
  }
  hooks_reset();
  custom_hook = lone_hook;
  STORE(&bias_count, 0);
  STORE(&unbias_count, 0);
  memset(&h, 0, sizeof(h));
  h.l.bridge = &b;
  h.l.next[0] = h.l.next[1] = 1;
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uvt_bridge_init(&loop, &b, NULL));
  ASSERT_OK(uvt_chan_init(&b, &h.l.ch, 1024, lone_cb));
  runner_start(&h.a, &h.l.ch, 0);
  runner_start(&h.b, &h.l.ch, 1);
  ASSERT_OK(uv_thread_create(&h.l.controller, handover_controller, &h));
  closed_count = 0;
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_OK(uv_thread_join(&h.l.controller));
  for (i = 0; i < 5; i++) {
    ASSERT_EQ(h.biases[i], biases[i]);
    ASSERT_EQ(h.unbiases[i], unbiases[i]);
  }
  ASSERT_EQ(h.l.delivered, 3 * LONE_FLOOD + 2);
  ASSERT_EQ(h.l.next[0], LONE_FLOOD + 3);
  ASSERT_EQ(h.l.next[1], 2 * LONE_FLOOD + 1);
  ASSERT_EQ(LOAD(&h.l.finals), 1);
  ASSERT_ERR(h.l.final_status, UV_EOF);
  ASSERT_EQ(closed_count, 1);
  ASSERT_OK(uv_loop_close(&loop));
  for (i = 0; i < 2; i++) {
    runner_t* r = i == 0 ? &h.a : &h.b;
    uv_sem_destroy(&r->go);
    uv_sem_destroy(&r->done);
  }
}

static void chan_lone_producer(void) {
  chan_owner_vs_second_producer();
  chan_owner_vs_close();
  chan_owner_vs_stop();
  chan_bias_handover();
}

/* ---- Finding 14: confined to one CPU, every wait spun -----------------
 *
 * A process confined to one CPU (taskset, a cpuset, a one-CPU VM or
 * container) runs one thread at a time, so a wait that spins for another
 * thread only delays it. Every wait spun anyway: the loop 20 us before it
 * polled and for each chunk of a stream, producers 10 us per full buffer,
 * sync_await callers, idle workers. Under `taskset -c 0` streams ran at
 * 0.16x-0.58x the hand-written ring and a sync_await round trip took 48 us
 * against 18 for a condvar (uvt-bench). Now a wait yields the CPU once
 * where it would spin (src/spin.c). The test confines itself to one CPU
 * and runs every waiting path (a channel of 16 with three producers, an
 * iterator of 4, sync_await round trips, tasks), checks their results, and
 * that the waits yielded ("spin.yield"). Back on all its CPUs, a new bridge
 * spins again: nothing yields that way while it runs. Without the policy
 * it fails: `__atomic_load_n((&spin_yields), 2) > 0 failed: 0 > 0`. */

#define ONE_PRODUCERS 3
#define ONE_ITEMS 20000 /* per producer */
#define ONE_AWAITS 200
#define ONE_TASKS 2000

static int spin_yields; /* atomic: counted by one_hook */
static void one_hook(const char* point, const void* obj) {
  (void)obj;
  if (strcmp(point, "spin.yield") == 0) __atomic_fetch_add(&spin_yields, 1, __ATOMIC_ACQ_REL);
}

typedef struct {
  uvt_chan_t ch; /* first: the callback casts back */
  uvt_iter_t it;
  uvt_bridge_t bridge;
  uvt_work_t tasks[16];
  intptr_t next[ONE_PRODUCERS]; /* loop: each producer's next item */
  intptr_t chan_items, iter_next, tasks_done, tasks_started;
  int chan_status, iter_status, awaits_ok;
  int ends; /* loop: final callbacks and the awaiter's end */
  uv_thread_t producers[ONE_PRODUCERS], awaiter;
} one_t;

static one_t* one_run_state;

static void one_maybe_close(one_t* o) {
  if (++o->ends == 3 && o->tasks_done == ONE_TASKS) ASSERT_OK(uvt_bridge_close(&o->bridge, on_closed));
}

static void one_chan_cb(uvt_chan_t* ch, int status, void* item) {
  one_t* o = (one_t*)ch;
  if (item != NULL) {
    intptr_t v = (intptr_t)item;
    int who = (int)(v % ONE_PRODUCERS);
    ASSERT_EQ(v / ONE_PRODUCERS - 1, o->next[who]); /* each producer's order, nothing lost */
    o->next[who]++;
    o->chan_items++;
    return;
  }
  o->chan_status = status;
  one_maybe_close(o);
}

static void one_producer(void* arg) {
  one_t* o = one_run_state;
  intptr_t who = (intptr_t)arg, i;
  for (i = 0; i < ONE_ITEMS; i++) ASSERT_OK(uvt_chan_put(&o->ch, (void*)((i + 1) * ONE_PRODUCERS + who)));
  if (who == 0) {
    for (i = 1; i < ONE_PRODUCERS; i++) ASSERT_OK(uv_thread_join(&o->producers[i]));
    ASSERT_OK(uvt_chan_close(&o->ch));
  }
}

static int one_gen(uvt_iter_t* it) {
  intptr_t i;
  for (i = 1; i <= ONE_ITEMS; i++) ASSERT_OK(uvt_yield(it, (void*)i));
  return 0;
}

static void one_iter_cb(uvt_iter_t* it, int status, void* item) {
  one_t* o = one_run_state;
  (void)it;
  if (item != NULL) {
    ASSERT_EQ((intptr_t)item, ++o->iter_next);
    return;
  }
  o->iter_status = status;
  one_maybe_close(o);
}

static void one_resolve(uvt_await_t* aw, void* arg) {
  (void)arg;
  uvt_await_resolve(aw, 7);
}

static void one_awaiter(void* arg) {
  one_t* o = arg;
  int i;
  for (i = 0; i < ONE_AWAITS; i++) ASSERT_EQ(uvt_sync_await(&o->bridge, one_resolve, NULL), 7);
  STORE(&o->awaits_ok, 1);
}

static void one_await_done(uvt_await_t* aw, void* arg) {
  one_t* o = arg;
  uvt_await_resolve(aw, 0);
  one_maybe_close(o); /* the awaiter's last call: every earlier one returned 7 */
}

static void one_work(uvt_work_t* req) { (void)req; }
static void one_after(uvt_work_t* req, int status) {
  one_t* o = one_run_state;
  ASSERT_OK(status);
  o->tasks_done++;
  if (o->tasks_started < ONE_TASKS) {
    o->tasks_started++;
    ASSERT_OK(uvt_threaded(&o->bridge, req, one_work, one_after));
  } else if (o->tasks_done == ONE_TASKS && o->ends == 3) {
    ASSERT_OK(uvt_bridge_close(&o->bridge, on_closed));
  }
}

static void one_awaiter_then_done(void* arg) {
  one_t* o = arg;
  one_awaiter(o);
  ASSERT_OK(uvt_sync_await(&o->bridge, one_await_done, o));
}

/* Runs every waiting path once on a fresh loop, bridge and pool. */
static void one_run(void) {
  uv_loop_t loop;
  uvt_pool_t* pool = test_pool(1, 2);
  one_t* o = calloc(1, sizeof(*o));
  intptr_t i;
  ASSERT(o != NULL);
  one_run_state = o;
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uvt_bridge_init(&loop, &o->bridge, pool));
  /* The awaiter calls in with nothing of its own in flight between two
   * awaits: once the channel, the iterator and the tasks are done, only a
   * ref keeps the loop running for its next one (uvt_bridge_ref). Without
   * it the loop could return first and leave the awaiter waiting for
   * good; the close below ends the loop. */
  uvt_bridge_ref(&o->bridge);
  ASSERT_OK(uvt_chan_init(&o->bridge, &o->ch, 16, one_chan_cb));
  ASSERT_OK(uvt_threaded_iterable_separate(&o->bridge, &o->it, 4, one_gen, one_iter_cb));
  for (i = 0; i < 16; i++) {
    o->tasks_started++;
    ASSERT_OK(uvt_threaded(&o->bridge, &o->tasks[i], one_work, one_after));
  }
  for (i = ONE_PRODUCERS - 1; i >= 0; i--)
    ASSERT_OK(uv_thread_create(&o->producers[i], one_producer, (void*)i));
  ASSERT_OK(uv_thread_create(&o->awaiter, one_awaiter_then_done, o));
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_OK(uv_thread_join(&o->producers[0]));
  ASSERT_OK(uv_thread_join(&o->awaiter));
  ASSERT_OK(uv_loop_close(&loop));
  ASSERT_OK(uvt_pool_free(pool));
  for (i = 0; i < ONE_PRODUCERS; i++) ASSERT_EQ(o->next[i], ONE_ITEMS);
  ASSERT_EQ(o->chan_items, ONE_PRODUCERS * ONE_ITEMS);
  ASSERT_EQ(o->chan_status, UV_EOF);
  ASSERT_EQ(o->iter_next, ONE_ITEMS);
  ASSERT_EQ(o->iter_status, UV_EOF);
  ASSERT_EQ(LOAD(&o->awaits_ok), 1);
  ASSERT_EQ(o->tasks_done, ONE_TASKS);
  free(o);
}

#if defined(__linux__)
/* Confines the calling thread to the first CPU it may use; threads it
 * starts from here on inherit that (the pool's among them). *all gets the
 * affinity to restore. */
static void pin_to_one_cpu(cpu_set_t* all) {
  cpu_set_t one;
  int cpu;
  ASSERT_OK(sched_getaffinity(0, sizeof(*all), all));
  for (cpu = 0; !CPU_ISSET(cpu, all); cpu++) {
  }
  CPU_ZERO(&one);
  CPU_SET(cpu, &one);
  ASSERT_OK(sched_setaffinity(0, sizeof(one), &one));
}
#endif

static void one_cpu(void) {
#if defined(__linux__)
  cpu_set_t all;
  int yields;
  hooks_reset();
  custom_hook = one_hook;
  pin_to_one_cpu(&all);
  STORE(&spin_yields, 0);
  one_run();
  ASSERT_GT(LOAD(&spin_yields), 0);
  ASSERT_OK(sched_setaffinity(0, sizeof(all), &all));
  if (CPU_COUNT(&all) < 2) {
    printf("(one CPU only: the second half needs two)\n");
    return;
  }
  yields = LOAD(&spin_yields);
  one_run();
  ASSERT_EQ(LOAD(&spin_yields), yields);
#else
  printf("(skipped: needs sched_setaffinity)\n");
#endif
}

/* One CPU, a kept batch. There a visit that stops at its budget with
 * another budget's worth left keeps its batch uncommitted (stream.c: the
 * room would bring the producers back to preempt the loop); the next
 * visit commits it. This one pauses the stream in between, so that the
 * next visit delivers nothing, and checks that the batch is committed and
 * the producer woken all the same: while the stream is paused it fills the
 * buffer again (a paused channel still takes items up to max_size). If
 * the commit were lost, it would sleep on with room free, and this fails
 * at its 10 s guard (stream.c committing only after a visit that
 * delivered: "woken while paused" failed, 4096 put, 1000 delivered). */
#define KEPT_CAP 4096
#define KEPT_ITEMS (3 * KEPT_CAP)

static struct {
  uvt_chan_t ch;
  uv_check_t check;
  uv_timer_t timer;
  uvt_bridge_t bridge;
  uv_thread_t producer;
  intptr_t puts;      /* atomic: items the producer has put */
  int kept;           /* atomic: "stream.batch.kept" points */
  int blocked;        /* atomic: the producer found the buffer full */
  intptr_t delivered; /* loop */
  int paused, refilled, status;
  uint64_t guard; /* uv_now() after which the test fails */
} kp;

static void kept_hook(const char* point, const void* obj) {
  (void)obj;
  if (strcmp(point, "stream.batch.kept") == 0) __atomic_fetch_add(&kp.kept, 1, __ATOMIC_ACQ_REL);
  if (strcmp(point, "stream.put.locked") == 0) STORE(&kp.blocked, 1);
}

static void kept_producer(void* arg) {
  intptr_t i;
  (void)arg;
  for (i = 1; i <= KEPT_ITEMS; i++) {
    ASSERT_OK(uvt_chan_put(&kp.ch, (void*)i));
    STORE(&kp.puts, i);
  }
  ASSERT_OK(uvt_chan_close(&kp.ch));
}

static void kept_chan_cb(uvt_chan_t* ch, int status, void* item) {
  (void)ch;
  if (item != NULL) {
    ASSERT_EQ((intptr_t)item, ++kp.delivered); /* in order, nothing lost */
    return;
  }
  kp.status = status;
  uv_close((uv_handle_t*)&kp.check, NULL);
  uv_close((uv_handle_t*)&kp.timer, NULL);
  ASSERT_OK(uvt_bridge_close(&kp.bridge, on_closed));
}

/* After the iteration's poll: pause once a visit kept its batch. */
static void kept_check(uv_check_t* check) {
  (void)check;
  if (kp.paused || LOAD(&kp.kept) == 0) return;
  ASSERT_OK(uvt_chan_pause(&kp.ch));
  kp.paused = 1;
}

/* While paused: the producer refills the buffer, then resume. */
static void kept_timer(uv_timer_t* timer) {
  (void)timer;
  if (!kp.paused || kp.refilled) return;
  if (LOAD(&kp.puts) == kp.delivered + KEPT_CAP) {
    kp.refilled = 1;
    ASSERT_OK(uvt_chan_resume(&kp.ch));
    return;
  }
  if (uv_now(timer->loop) > kp.guard) {
    fprintf(stderr, "woken while paused: %ld put, %ld delivered\n", (long)LOAD(&kp.puts),
            (long)kp.delivered);
    ASSERT(!"woken while paused");
  }
}

static void one_cpu_kept_batch(void) {
#if defined(__linux__)
  cpu_set_t all;
  uv_loop_t loop;
  hooks_reset();
  memset(&kp, 0, sizeof(kp));
  custom_hook = kept_hook;
  pin_to_one_cpu(&all); /* the producer inherits it */
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uvt_bridge_init(&loop, &kp.bridge, NULL)); /* reads the affinity */
  ASSERT_OK(uvt_chan_init(&kp.bridge, &kp.ch, KEPT_CAP, kept_chan_cb));
  ASSERT_OK(uv_check_init(&loop, &kp.check));
  ASSERT_OK(uv_check_start(&kp.check, kept_check));
  ASSERT_OK(uv_timer_init(&loop, &kp.timer));
  ASSERT_OK(uv_timer_start(&kp.timer, kept_timer, 1, 1));
  kp.guard = uv_now(&loop) + 10000;
  ASSERT_OK(uv_thread_create(&kp.producer, kept_producer, NULL));
  /* Until the producer filled the buffer and went to wait for room: the
   * loop's first visit then stops at its budget with items left. */
  while (!LOAD(&kp.blocked)) sched_yield();
  ASSERT_EQ(LOAD(&kp.puts), KEPT_CAP);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_OK(uv_thread_join(&kp.producer));
  ASSERT_OK(uv_loop_close(&loop));
  ASSERT_OK(sched_setaffinity(0, sizeof(all), &all));
  ASSERT_GT(LOAD(&kp.kept), 0);
  ASSERT_EQ(kp.paused, 1);
  ASSERT_EQ(kp.refilled, 1);
  ASSERT_EQ(kp.delivered, KEPT_ITEMS);
  ASSERT_EQ(kp.status, UV_EOF);
#else
  printf("(skipped: needs sched_setaffinity)\n");
#endif
}

/* One CPU, producers woken one at a time. There a commit wakes one
 * blocked producer, not all (stream.c), and the next commit the next one.
 * Eight producers put 1 to 8 items each into a channel of 2, so that most
 * of them wait, and a woken one often leaves with room to spare while the
 * others sleep on: each item it put must still bring the wake-up of the
 * next. Every item arrives, in each producer's order, and the channel
 * ends; a lost wake-up would leave producers asleep and fail at the 10 s
 * guard (stream.c waking one only while two or more wait: "producers
 * asleep with room: 34 delivered"). */
#define CHAIN_PRODUCERS 8
#define CHAIN_CAP 2

static struct {
  uvt_chan_t ch;
  uvt_bridge_t bridge;
  uv_timer_t guard;
  uv_thread_t producers[CHAIN_PRODUCERS];
  int blocked;  /* atomic: entries into a wait for room */
  int left;     /* atomic: producers not done */
  intptr_t next[CHAIN_PRODUCERS]; /* loop: each producer's next item */
  intptr_t delivered;
  int status, ended;
} ch8;

static void chain_hook(const char* point, const void* obj) {
  (void)obj;
  if (strcmp(point, "stream.put.locked") == 0) __atomic_fetch_add(&ch8.blocked, 1, __ATOMIC_ACQ_REL);
}

static void chain_producer(void* arg) {
  intptr_t who = (intptr_t)arg, i;
  for (i = 0; i <= who; i++) ASSERT_OK(uvt_chan_put(&ch8.ch, (void*)((i + 1) * CHAIN_PRODUCERS + who)));
  if (__atomic_sub_fetch(&ch8.left, 1, __ATOMIC_ACQ_REL) == 0) ASSERT_OK(uvt_chan_close(&ch8.ch));
}

static void chain_cb(uvt_chan_t* ch, int status, void* item) {
  (void)ch;
  if (item != NULL) {
    intptr_t v = (intptr_t)item;
    int who = (int)(v % CHAIN_PRODUCERS);
    ASSERT_EQ(v / CHAIN_PRODUCERS - 1, ch8.next[who]); /* in order, nothing lost */
    ch8.next[who]++;
    ch8.delivered++;
    return;
  }
  ch8.status = status;
  ch8.ended = 1;
  uv_close((uv_handle_t*)&ch8.guard, NULL);
  ASSERT_OK(uvt_bridge_close(&ch8.bridge, on_closed));
}

static void chain_guard(uv_timer_t* timer) {
  (void)timer;
  fprintf(stderr, "producers asleep with room: %ld delivered\n", (long)ch8.delivered);
  ASSERT(!"producers asleep with room");
}

static void one_cpu_wake_chain(void) {
#if defined(__linux__)
  cpu_set_t all;
  uv_loop_t loop;
  intptr_t i;
  hooks_reset();
  memset(&ch8, 0, sizeof(ch8));
  custom_hook = chain_hook;
  pin_to_one_cpu(&all); /* the producers inherit it */
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uvt_bridge_init(&loop, &ch8.bridge, NULL)); /* reads the affinity */
  ASSERT_OK(uvt_chan_init(&ch8.bridge, &ch8.ch, CHAIN_CAP, chain_cb));
  ASSERT_OK(uv_timer_init(&loop, &ch8.guard));
  ASSERT_OK(uv_timer_start(&ch8.guard, chain_guard, 10000, 0));
  STORE(&ch8.left, CHAIN_PRODUCERS);
  for (i = 0; i < CHAIN_PRODUCERS; i++)
    ASSERT_OK(uv_thread_create(&ch8.producers[i], chain_producer, (void*)i));
  /* Until all but the first CAP producers wait for room (each of those has
   * put one item at least, or waits too). */
  while (LOAD(&ch8.blocked) < CHAIN_PRODUCERS - CHAIN_CAP) sched_yield();
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  for (i = 0; i < CHAIN_PRODUCERS; i++) ASSERT_OK(uv_thread_join(&ch8.producers[i]));
  ASSERT_OK(uv_loop_close(&loop));
  ASSERT_OK(sched_setaffinity(0, sizeof(all), &all));
  for (i = 0; i < CHAIN_PRODUCERS; i++) ASSERT_EQ(ch8.next[i], i + 1);
  ASSERT_EQ(ch8.delivered, CHAIN_PRODUCERS * (CHAIN_PRODUCERS + 1) / 2);
  ASSERT_EQ(ch8.ended, 1);
  ASSERT_EQ(ch8.status, UV_EOF);
#else
  printf("(skipped: needs sched_setaffinity)\n");
#endif
}

/* ==== 14. A queued request started during the bridge's close ==============
 *
 * uvt_bridge_close promises that work still queued never runs and
 * completes with UV_ECANCELED. The close called each in-flight object's
 * hook once, oldest first: it flagged the running request A cancelled
 * before it withdrew the queued request B, and A's worker (A stops as
 * soon as it sees the flag) took B and started it in between: B ran and
 * completed with 0 (the uvt-shutdown example under ThreadSanitizer, 1 run
 * in 40 under load). Newest first was no cure: a lane hands an older
 * request on to the pool behind newer plain ones (_handed_on). The stall:
 * right after the close flagged A (or C), the loop thread waits up to
 * HANDOFF_MS for B's work to start. Old code, with that stall point after
 * each hook: B starts (asserted not to). Sub-cases: plain, the same through
 * a lane of max_running 1 (A's end hands B to the pool), and B handed on by
 * its lane behind a newer running plain request C. */

#define HANDOFF_MS 500u /* a freed worker starts a queued task within this */

static struct {
  uvt_bridge_t b;
  uvt_work_t a, r, c;
  const uvt__inflight_t* stopper; /* whose flag frees a thread */
  int a_go, a_started, c_started, r_started; /* atomic */
  int a_status, r_status, c_status, afters;
} qc;

static void qc_hook(const char* point, const void* obj) {
  if (strcmp(point, "bridge.close.stopped") != 0 || obj != qc.stopper) return;
  (void)count_reaches(&qc.r_started, 1, HANDOFF_MS);
}

/* Runs until cancelled (A, C), or until the test lets it end (A in _handed_on). */
static void qc_work_until(uvt_work_t* req) {
  STORE(req == &qc.a ? &qc.a_started : &qc.c_started, 1);
  while (!uvt_is_cancelled(req) && !(req == &qc.a && LOAD(&qc.a_go))) uv_sleep(1);
}

static void qc_work_r(uvt_work_t* req) {
  (void)req;
  STORE(&qc.r_started, 1);
}

static void qc_after(uvt_work_t* req, int status) {
  if (req == &qc.a)
    qc.a_status = status;
  else if (req == &qc.r)
    qc.r_status = status;
  else
    qc.c_status = status;
  qc.afters++;
}

enum { QC_PLAIN, QC_LANED, QC_HANDED_ON };

static void qc_run(int mode) {
  uv_loop_t loop;
  uvt_pool_t* pool;
  uvt_lane_t* lane = NULL;
  uvt_work_options_t opts;
  uint64_t deadline;
  int threads = mode == QC_PLAIN ? 1 : 2;
  hooks_reset();
  memset(&qc, 0, sizeof(qc));
  custom_hook = qc_hook;
  pool = pool_with((unsigned)threads, (unsigned)threads, 1000);
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uvt_bridge_init(&loop, &qc.b, pool));
  memset(&opts, 0, sizeof(opts));
  if (mode != QC_PLAIN) ASSERT_OK(uvt_lane_new(pool, NULL, &lane)); /* max_running 1 */
  opts.lane = lane;
  ASSERT_OK(uvt_threaded_ex(&qc.b, &qc.a, &opts, qc_work_until, qc_after));
  ASSERT_OK(uvt_threaded_ex(&qc.b, &qc.r, &opts, qc_work_r, qc_after));
  if (mode == QC_HANDED_ON) ASSERT_OK(uvt_threaded(&qc.b, &qc.c, qc_work_until, qc_after));
  deadline = uv_hrtime() + (uint64_t)WAIT_MS * 1000000u;
  while (!(LOAD(&qc.a_started) && (mode != QC_HANDED_ON || LOAD(&qc.c_started))) &&
         uv_hrtime() < deadline)
    uv_sleep(1);
  ASSERT(LOAD(&qc.a_started)); /* A runs, B waits for the one thread (or the lane) */
  qc.stopper = &qc.a.uvt__inflight;
  if (mode == QC_HANDED_ON) {
    /* A ends by itself: its worker hands B on to the pool, then stalls in
     * A's post, so B waits in the pool's queue while C holds the other
     * thread. The close's flag of C frees that thread. */
    ASSERT(LOAD(&qc.c_started));
    qc.stopper = &qc.c.uvt__inflight;
    stall_arm("bridge.push", &qc.b, NULL, 3000);
    STORE(&qc.a_go, 1);
    ASSERT(stall_wait(UNTIL_ARRIVED, WAIT_MS));
    ASSERT_EQ(LOAD(&qc.r_started), 0);
  }
  closed_count = 0;
  ASSERT_OK(uvt_bridge_close(&qc.b, on_closed));
  if (mode == QC_HANDED_ON) stall_release();
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ(LOAD(&qc.r_started), 0);
  ASSERT_EQ(qc.afters, mode == QC_HANDED_ON ? 3 : 2);
  ASSERT_EQ(qc.a_status, 0);
  ASSERT_ERR(qc.r_status, UV_ECANCELED);
  ASSERT_EQ(qc.c_status, 0);
  ASSERT_EQ(closed_count, 1);
  ASSERT_OK(uv_loop_close(&loop));
  if (lane != NULL) ASSERT_OK(uvt_lane_free(lane));
  ASSERT_OK(uvt_pool_free(pool));
}

/* _lane_hand_on (found in review): the first pass oldest first handed a
 * lane's waiting request on to the pool. A 1-thread pool runs plain C; X
 * (laned, max_running 1) waits in the pool's queue, iterator I's generator
 * too, Y (laned) waits in its lane. Withdrawing X gave its lane slot to Y,
 * whose own hook came later in the pass; a thread that freed up in between
 * started Y. The stall: I's withdrawal posts the stream's message from the
 * loop thread (the bridge.push point), and there C ends by itself and the
 * loop thread waits up to HANDOFF_MS for Y to start. X itself is not
 * asserted: it was in the pool's queue, and a thread that frees up by
 * itself may take it while the close runs. */
static struct {
  uvt_bridge_t b;
  uvt_work_t c, x, y;
  uvt_iter_t it;
  uv_thread_t loop_thread;
  int armed, c_go, c_started, y_started; /* atomic */
  int y_status, afters, finals;
} lh;

static void lh_hook(const char* point, const void* obj) {
  uv_thread_t self = uv_thread_self();
  if (strcmp(point, "bridge.push") != 0 || obj != &lh.b || !LOAD(&lh.armed) ||
      !uv_thread_equal(&self, &lh.loop_thread))
    return;
  STORE(&lh.armed, 0);
  STORE(&lh.c_go, 1); /* C ends by itself: its thread is free */
  (void)count_reaches(&lh.y_started, 1, HANDOFF_MS);
}

static void lh_work_c(uvt_work_t* req) {
  STORE(&lh.c_started, 1);
  while (!uvt_is_cancelled(req) && !LOAD(&lh.c_go)) uv_sleep(1);
}
static void lh_work_x(uvt_work_t* req) { (void)req; }
static void lh_work_y(uvt_work_t* req) {
  (void)req;
  STORE(&lh.y_started, 1);
}
static void lh_after(uvt_work_t* req, int status) {
  if (req == &lh.y) lh.y_status = status;
  lh.afters++;
}
static int lh_gen(uvt_iter_t* it) {
  (void)it;
  return 0;
}
static void lh_iter_cb(uvt_iter_t* it, int status, void* item) {
  (void)it;
  if (item == NULL && status != 0) lh.finals++;
}

static void bridge_close_queued_never_starts_lane_hand_on(void) {
  uv_loop_t loop;
  uvt_pool_t* pool;
  uvt_lane_t* lane = NULL;
  uvt_work_options_t opts;
  hooks_reset();
  memset(&lh, 0, sizeof(lh));
  lh.loop_thread = uv_thread_self();
  custom_hook = lh_hook;
  pool = pool_with(1, 1, 1000);
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uvt_bridge_init(&loop, &lh.b, pool));
  ASSERT_OK(uvt_lane_new(pool, NULL, &lane)); /* max_running 1 */
  memset(&opts, 0, sizeof(opts));
  opts.lane = lane;
  ASSERT_OK(uvt_threaded(&lh.b, &lh.c, lh_work_c, lh_after));
  ASSERT(count_reaches(&lh.c_started, 1, WAIT_MS)); /* the one thread is busy */
  ASSERT_OK(uvt_threaded_ex(&lh.b, &lh.x, &opts, lh_work_x, lh_after)); /* in the pool's queue */
  ASSERT_OK(uvt_threaded_iterable(&lh.b, &lh.it, 4, lh_gen, lh_iter_cb)); /* queued too */
  ASSERT_OK(uvt_threaded_ex(&lh.b, &lh.y, &opts, lh_work_y, lh_after)); /* waits in the lane */
  closed_count = 0;
  STORE(&lh.armed, 1);
  ASSERT_OK(uvt_bridge_close(&lh.b, on_closed));
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ(LOAD(&lh.armed), 0); /* the stall ran */
  ASSERT_EQ(lh.afters, 3);
  ASSERT_EQ(lh.finals, 1);
  ASSERT_EQ(LOAD(&lh.y_started), 0);
  ASSERT_ERR(lh.y_status, UV_ECANCELED);
  ASSERT_EQ(closed_count, 1);
  ASSERT_OK(uv_loop_close(&loop));
  ASSERT_OK(uvt_lane_free(lane));
  ASSERT_OK(uvt_pool_free(pool));
}

/* _held_expired (found in review): the first pass expired a request that a
 * worker had taken but not started, once its queue deadline had passed;
 * the worker then went on at once to the next task, an older request of
 * the bridge whose hook had not run yet. A 2-thread pool: W2 runs P (lane
 * L1); R1 (L1) waits behind it; W1 takes X (lane L2, a deadline of
 * DL_MS) and stalls before it marks X started. P ends: W2 hands R1 on to
 * the pool and stalls in P's post. Once X's deadline has passed, the
 * close: right after X's withdrawal, W1 goes on and the loop thread waits
 * up to HANDOFF_MS for R1 to start. Old code: W1 finds X expired and
 * starts R1. */
#define DL_MS 300u

static struct {
  uvt_bridge_t b;
  uvt_work_t p, r1, x;
  int p_go, p_started, x_held, x_release, r1_started; /* atomic */
  int r1_status, afters;
} he;

static void he_hook(const char* point, const void* obj) {
  if (strcmp(point, "lane.start") == 0 && obj == &he.x.uvt__link) {
    STORE(&he.x_held, 1);
    (void)count_reaches(&he.x_release, 1, WAIT_MS);
  } else if (strcmp(point, "bridge.close.withdrew") == 0 && obj == &he.x.uvt__inflight) {
    STORE(&he.x_release, 1);
    (void)count_reaches(&he.r1_started, 1, HANDOFF_MS);
  }
}

static void he_work_until(uvt_work_t* req) {
  if (req == &he.p) STORE(&he.p_started, 1);
  while (!uvt_is_cancelled(req) && !(req == &he.p && LOAD(&he.p_go))) uv_sleep(1);
}
static void he_work_r1(uvt_work_t* req) {
  (void)req;
  STORE(&he.r1_started, 1);
}
static void he_after(uvt_work_t* req, int status) {
  if (req == &he.r1) he.r1_status = status;
  he.afters++;
}

static void bridge_close_queued_never_starts_held_expired(void) {
  uv_loop_t loop;
  uvt_pool_t* pool;
  uvt_lane_t *l1, *l2;
  uvt_work_options_t opts;
  uint64_t deadline, x_due;
  hooks_reset();
  memset(&he, 0, sizeof(he));
  custom_hook = he_hook;
  pool = pool_with(2, 2, 1000);
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uvt_bridge_init(&loop, &he.b, pool));
  ASSERT_OK(uvt_lane_new(pool, NULL, &l1)); /* max_running 1 */
  ASSERT_OK(uvt_lane_new(pool, NULL, &l2));
  memset(&opts, 0, sizeof(opts));
  opts.lane = l1;
  ASSERT_OK(uvt_threaded_ex(&he.b, &he.p, &opts, he_work_until, he_after));
  deadline = uv_hrtime() + (uint64_t)WAIT_MS * 1000000u;
  while (!LOAD(&he.p_started) && uv_hrtime() < deadline) uv_sleep(1);
  ASSERT(LOAD(&he.p_started));
  ASSERT_OK(uvt_threaded_ex(&he.b, &he.r1, &opts, he_work_r1, he_after)); /* waits in L1 */
  opts.lane = l2;
  opts.queue_timeout_ms = DL_MS;
  x_due = uv_hrtime() + (uint64_t)DL_MS * 1000000u;
  ASSERT_OK(uvt_threaded_ex(&he.b, &he.x, &opts, he_work_until, he_after));
  while (!LOAD(&he.x_held) && uv_hrtime() < deadline) uv_sleep(1);
  ASSERT(LOAD(&he.x_held)); /* W1 holds X, not started */
  stall_arm("bridge.push", &he.b, NULL, 3000);
  STORE(&he.p_go, 1);
  ASSERT(stall_wait(UNTIL_ARRIVED, WAIT_MS)); /* W2 handed R1 on, stalled in P's post */
  ASSERT_EQ(LOAD(&he.r1_started), 0);
  while (uv_hrtime() <= x_due + 2000000u) uv_sleep(1); /* X's deadline has passed */
  closed_count = 0;
  ASSERT_OK(uvt_bridge_close(&he.b, on_closed));
  stall_release();
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ(LOAD(&he.r1_started), 0);
  ASSERT_ERR(he.r1_status, UV_ECANCELED);
  ASSERT_EQ(he.afters, 3);
  ASSERT_EQ(closed_count, 1);
  ASSERT_OK(uv_loop_close(&loop));
  ASSERT_OK(uvt_lane_free(l1));
  ASSERT_OK(uvt_lane_free(l2));
  ASSERT_OK(uvt_pool_free(pool));
}

static void bridge_close_queued_never_starts_plain(void) { qc_run(QC_PLAIN); }
static void bridge_close_queued_never_starts_laned(void) { qc_run(QC_LANED); }
static void bridge_close_queued_never_starts_handed_on(void) { qc_run(QC_HANDED_ON); }
static void bridge_close_queued_never_starts(void) {
  bridge_close_queued_never_starts_plain();
  bridge_close_queued_never_starts_laned();
  bridge_close_queued_never_starts_handed_on();
  bridge_close_queued_never_starts_lane_hand_on();
  bridge_close_queued_never_starts_held_expired();
}

/* ==== 15. A late uvt_call reads the tag that the end clears ===============
 *
 * uvt_call is safe from any thread until close_cb starts. The end clears
 * the bridge's tag (an atomic store) before close_cb, and uvt__bridge_get
 * read the tag with a plain read first (for valgrind's sake) before its
 * atomic load: ThreadSanitizer reports that read as a race with the clear
 * (found in review). The stall: between the clear and close_cb, the loop
 * thread waits for a thread's one uvt_call, which must fail with
 * UV_EINVAL; the two sides signal each other through relaxed atomics, which
 * order nothing for ThreadSanitizer. Old code: a data race report under
 * TSan in a Debug build (optimised, the compiler drops the unused read;
 * elsewhere the test cannot tell). */

static struct {
  uvt_bridge_t b;
  int go, called, rc; /* relaxed atomics */
} lc;

static void lc_fn(void* arg) { (void)arg; }

static void lc_hook(const char* point, const void* obj) {
  uint64_t deadline;
  if (strcmp(point, "bridge.ended") != 0 || obj != &lc.b) return;
  __atomic_store_n(&lc.go, 1, __ATOMIC_RELAXED);
  deadline = uv_hrtime() + (uint64_t)WAIT_MS * 1000000u;
  while (!__atomic_load_n(&lc.called, __ATOMIC_RELAXED) && uv_hrtime() < deadline) sched_yield();
}

static void lc_caller(void* arg) {
  uint64_t deadline = uv_hrtime() + (uint64_t)WAIT_MS * 1000000u;
  (void)arg;
  while (!__atomic_load_n(&lc.go, __ATOMIC_RELAXED) && uv_hrtime() < deadline) sched_yield();
  __atomic_store_n(&lc.rc, uvt_call(&lc.b, lc_fn, NULL), __ATOMIC_RELAXED);
  __atomic_store_n(&lc.called, 1, __ATOMIC_RELAXED);
}

static void late_call_vs_end(void) {
  uv_loop_t loop;
  uv_thread_t t;
  hooks_reset();
  memset(&lc, 0, sizeof(lc));
  custom_hook = lc_hook;
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uvt_bridge_init(&loop, &lc.b, NULL));
  ASSERT_OK(uv_thread_create(&t, lc_caller, NULL));
  closed_count = 0;
  ASSERT_OK(uvt_bridge_close(&lc.b, on_closed));
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_OK(uv_thread_join(&t));
  ASSERT_EQ(__atomic_load_n(&lc.called, __ATOMIC_RELAXED), 1);
  ASSERT_ERR(__atomic_load_n(&lc.rc, __ATOMIC_RELAXED), UV_EINVAL);
  ASSERT_EQ(closed_count, 1);
  ASSERT_OK(uv_loop_close(&loop));
}

/* ==== 16. A caller far ahead of the loop reads the freed impl ==============
 *
 * A thread with more than 4096 calls in flight and none back yields before
 * it allocates, unless it is the loop thread: uvt_call asked the bridge's
 * impl for the loop thread's identity without holding anything of the
 * bridge, and the end frees the impl once every call is delivered (found
 * in review, as a TSan report). The stall: the caller makes FA_CALLS
 * calls while the loop does not run, then its next call stops right
 * before that question; the loop delivers them all and ends the bridge,
 * and at the end (before close_cb, where calls are still allowed) the
 * caller goes on. Old code: ASan reports a heap use after free. */
#define FA_CALLS 4200

static struct {
  uvt_bridge_t b;
  int armed, held, release, returned, rc; /* atomic */
  long ran;
} fa;

static void fa_fn(void* arg) {
  (void)arg;
  fa.ran++;
}

static void fa_hook(const char* point, const void* obj) {
  if (strcmp(point, "call.far_ahead") == 0 && obj == &fa.b && LOAD(&fa.armed)) {
    STORE(&fa.armed, 0);
    STORE(&fa.held, 1);
    (void)count_reaches(&fa.release, 1, WAIT_MS);
  } else if (strcmp(point, "bridge.ended") == 0 && obj == &fa.b) {
    STORE(&fa.release, 1);
    (void)count_reaches(&fa.returned, 1, WAIT_MS);
  }
}

static void fa_caller(void* arg) {
  int i;
  (void)arg;
  for (i = 0; i < FA_CALLS; i++) ASSERT_OK(uvt_call(&fa.b, fa_fn, NULL));
  STORE(&fa.armed, 1);
  STORE(&fa.rc, uvt_call(&fa.b, fa_fn, NULL));
  STORE(&fa.returned, 1);
}

static void late_call_far_ahead(void) {
  uv_loop_t loop;
  uv_thread_t t;
  hooks_reset();
  memset(&fa, 0, sizeof(fa));
  custom_hook = fa_hook;
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uvt_bridge_init(&loop, &fa.b, NULL));
  ASSERT_OK(uv_thread_create(&t, fa_caller, NULL));
  /* FA_CALLS in flight, none back: the next call stopped. */
  ASSERT(count_reaches(&fa.held, 1, WAIT_MS));
  closed_count = 0;
  ASSERT_OK(uvt_bridge_close(&fa.b, on_closed));
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_OK(uv_thread_join(&t));
  ASSERT_EQ(fa.ran, FA_CALLS);
  ASSERT_ERR(LOAD(&fa.rc), UV_EPIPE);
  ASSERT_EQ(closed_count, 1);
  ASSERT_OK(uv_loop_close(&loop));
}

#define FINDING(fn) {#fn, fn, 0}
#define SUBCASE(fn) {#fn, fn, 1}

int main(int argc, char** argv) {
  static const rel_test_t tests[] = {
      FINDING(chan_reopen),
      FINDING(chan_final_waits_for_put),
      SUBCASE(chan_final_waits_for_put_stop),
      SUBCASE(chan_final_waits_for_put_close),
      SUBCASE(chan_final_waits_for_put_bridge_close),
      FINDING(pool_idle_exit_wakeup),
      FINDING(bridge_close_vs_caller),
      SUBCASE(bridge_close_vs_caller_call),
      SUBCASE(bridge_close_vs_caller_sync_await),
      FINDING(put_timeout_huge),
      SUBCASE(put_timeout_huge_max),
      SUBCASE(put_timeout_huge_2pow63),
      SUBCASE(put_timeout_huge_min_overflow),
      FINDING(await_stray_resolve),
      FINDING(is_cancelled_garbage),
      FINDING(cancel_from_worker),
      FINDING(loop_moved_thread),
      SUBCASE(loop_moved_thread_threaded),
      SUBCASE(loop_moved_thread_sync_await),
      FINDING(lane_deadline_vs_worker),
      SUBCASE(lane_deadline_vs_worker_expired),
      SUBCASE(lane_deadline_vs_worker_started),
      FINDING(stream_claim_publish),
      SUBCASE(stream_stop_waits_for_publish),
      SUBCASE(stream_unpublished_slot_polled),
      FINDING(iter_sole_producer),
      SUBCASE(iter_stop_vs_sole_put),
      SUBCASE(iter_fast_then_trickle),
      FINDING(chan_lone_producer),
      SUBCASE(chan_owner_vs_second_producer),
      SUBCASE(chan_owner_vs_close),
      SUBCASE(chan_owner_vs_stop),
      SUBCASE(chan_bias_handover),
      FINDING(one_cpu),
      FINDING(one_cpu_kept_batch),
      FINDING(one_cpu_wake_chain),
      FINDING(bridge_close_queued_never_starts),
      SUBCASE(bridge_close_queued_never_starts_plain),
      SUBCASE(bridge_close_queued_never_starts_laned),
      SUBCASE(bridge_close_queued_never_starts_handed_on),
      SUBCASE(bridge_close_queued_never_starts_lane_hand_on),
      SUBCASE(bridge_close_queued_never_starts_held_expired),
      FINDING(late_call_vs_end),
      FINDING(late_call_far_ahead),
  };
  size_t i, ran = 0;
  setvbuf(stdout, NULL, _IONBF, 0);
  for (i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
    if (argc > 1 ? strcmp(argv[1], tests[i].name) != 0 : tests[i].subcase) continue;
    printf("[ RUN  ] %s\n", tests[i].name);
    tests[i].fn();
    printf("[  OK  ] %s\n", tests[i].name);
    ran++;
  }
  if (ran == 0) {
    fprintf(stderr, "no test named %s\n", argc > 1 ? argv[1] : "");
    return 1;
  }
  return 0;
}
