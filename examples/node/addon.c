/* A Node.js N-API addon that uses uvthreads as its thread-offload engine.
 *
 * One bridge per Node environment (the main thread and every worker_thread
 * has its own loop): created in the module's init on that environment's
 * loop, kept in the instance data, closed by an async cleanup hook when the
 * environment is torn down. Every bridge shares uvthreads' default pool.
 *
 * What JS gets (index.js wraps it):
 *  - run(n, sleepMs)        a blocking job on the pool, resolved as a Promise
 *  - noop() / noopAsyncWork()   the same no-op job via uvthreads and via
 *                           napi_create_async_work, for bench.js
 *  - iterStart(...)         a blocking generator (uvt_threaded_iterable)
 *                           delivered item by item to a JS callback, with
 *                           iterPause / iterResume / iterClose
 *  - syncAwait(n, fn)       a separate thread that calls uvt_sync_await n
 *                           times; each loop function calls fn(i) and
 *                           resolves the await when the Promise it returns
 *                           settles
 *  - tickerStart(...)       a channel fed by a thread of our own, with
 *                           tickerStop and (once the library has them)
 *                           tickerRef / tickerUnref
 *
 * Which uv.h. This file and the library's sources compile against the
 * system's libuv header (/usr/include/uv.h, 1.44 on Debian 12), not the copy
 * node ships (/usr/include/node/uv.h, 1.46): CMakeLists.txt adds node's
 * include directory with -idirafter, which is searched after the system
 * directories, so <uv.h> resolves to the system's while <node_api.h>, which
 * only node's directory has, still resolves. At run time the process has one
 * libuv, node's own (statically linked into the node binary and exported
 * from it): the addon is linked without -luv and its uv_* references bind to
 * node's when it is loaded. That is safe because libuv keeps its ABI within
 * major version 1: the types uvthreads embeds or passes (uv_async_t,
 * uv_mutex_t, uv_cond_t, uv_sem_t, uv_thread_t, uv_once_t, and uv_loop_t
 * only by pointer) have the same size and layout in 1.44 and 1.46, and every
 * function the library calls exists in 1.44, hence in any later 1.x. The init
 * refuses a runtime libuv older than the header (uv_version() <
 * UV_VERSION_HEX), and `versions` shows both.
 *
 * Callback scopes. Resolving a Promise from a libuv callback only queues its
 * reactions; Node runs them (and process.nextTick callbacks) when the
 * outermost callback scope closes. Every delivery into JS therefore runs
 * inside js_enter/js_leave, which open a handle scope and, unless a batch
 * scope is open, a callback scope on the environment's async context.
 */
#define NAPI_VERSION 8
#include <node_api.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uvthreads.h>

#if UV_VERSION_MAJOR != 1
#error "uvthreads' Node addon expects libuv 1.x headers"
#endif
#define STR_(x) #x
#define STR(x) STR_(x)
/* The version of the uv.h compiled against, "1.44.2". */
#define UV_HEADER_VERSION STR(UV_VERSION_MAJOR) "." STR(UV_VERSION_MINOR) "." STR(UV_VERSION_PATCH)

/* The status a sync_await gets when the JS function threw or its Promise
 * rejected (anything but UV_ECANCELED, which means "cancelled by teardown"). */
#define SA_REJECTED UV_EIO

typedef struct addon_s addon_t;
typedef struct pending_s pending_t;

struct addon_s {
  uvt_bridge_t bridge; /* bridge.data == this */
  napi_env env;
  napi_async_context actx; /* the async context of every callback scope */
  napi_ref resource;       /* its resource object */
  napi_async_cleanup_hook_handle cleanup;
  int bridge_open;  /* from uvt_bridge_init until its close_cb */
  int tearing_down; /* the cleanup hook ran: no JS from here on */
  /* The scopes opened once per drain by the batch hooks. */
  int batch_open;
  napi_handle_scope batch_hs;
  napi_callback_scope batch_cs;
  pending_t* pending; /* sync_awaits waiting for a JS promise */
  int64_t live_jobs;  /* run/noop jobs submitted and not yet delivered */
  int64_t live_iters;
  int64_t live_tickers;
  int64_t live_awaits;
};

/* ---- Small helpers --------------------------------------------------------- */

/* Throws an Error with code "E..." for a libuv/uvthreads error code. */
static napi_value throw_uv(napi_env env, int rc, const char* what) {
  char msg[256];
  snprintf(msg, sizeof msg, "%s: %s", what, uv_strerror(rc));
  napi_throw_error(env, uv_err_name(rc), msg);
  return NULL;
}

/* Throws for a failed N-API call unless an exception is already pending. */
static napi_value throw_napi(napi_env env, const char* what) {
  bool pending = false;
  const napi_extended_error_info* info = NULL;
  napi_is_exception_pending(env, &pending);
  if (!pending) {
    char msg[256];
    napi_get_last_error_info(env, &info);
    snprintf(msg, sizeof msg, "%s failed: %s", what,
             info != NULL && info->error_message != NULL ? info->error_message : "?");
    napi_throw_error(env, NULL, msg);
  }
  return NULL;
}

#define NAPI_CALL(env, call)                           \
  do {                                                 \
    if ((call) != napi_ok) return throw_napi(env, #call); \
  } while (0)

static napi_value make_uv_error(napi_env env, int rc, const char* what) {
  char msg[256];
  napi_value code, text, err, num;
  snprintf(msg, sizeof msg, "%s: %s", what, uv_strerror(rc));
  napi_create_string_utf8(env, uv_err_name(rc), NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &text);
  napi_create_error(env, code, text, &err);
  napi_create_int32(env, rc, &num);
  napi_set_named_property(env, err, "errno", num);
  return err;
}

static addon_t* get_addon(napi_env env) {
  void* data = NULL;
  napi_get_instance_data(env, &data);
  return data;
}

/* Reads args, the addon and the callback's data in one go. */
static addon_t* get_args(napi_env env, napi_callback_info info, size_t want, napi_value* argv,
                         void** data) {
  size_t argc = want;
  size_t i;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, data) != napi_ok) return NULL;
  for (i = argc; i < want; i++) napi_get_undefined(env, &argv[i]);
  return get_addon(env);
}

static double arg_double(napi_env env, napi_value v, double dflt) {
  double d;
  return napi_get_value_double(env, v, &d) == napi_ok ? d : dflt;
}

/* A JS-callable status: 0 or a negative libuv code. */
static napi_value js_int(napi_env env, int64_t n) {
  napi_value v;
  napi_create_int64(env, n, &v);
  return v;
}

static void set_num(napi_env env, napi_value obj, const char* name, double n) {
  napi_value v;
  napi_create_double(env, n, &v);
  napi_set_named_property(env, obj, name, v);
}

/* Drops a pending exception (from a JS call that failed): the JS glue in
 * index.js catches user errors itself, so what lands here is a termination
 * (worker.terminate(), process.exit() in a worker), which must not be
 * reported as an uncaught exception. */
static void clear_exception(napi_env env) {
  bool pending = false;
  napi_value ignored;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending)
    napi_get_and_clear_last_exception(env, &ignored);
}

/* ---- Scopes around deliveries into JS ------------------------------------- */

typedef struct {
  napi_handle_scope hs;
  napi_callback_scope cs; /* NULL when a batch scope covers this delivery */
} js_scope_t;

/* Opens the scopes a delivery into JS needs; 0 if JS may not run any more
 * (the environment is being torn down), and then nothing is open. */
static int js_enter(addon_t* a, js_scope_t* s) {
  napi_value resource;
  s->cs = NULL;
  if (a->tearing_down) return 0;
  if (napi_open_handle_scope(a->env, &s->hs) != napi_ok) return 0;
  /* Inside a drain, batch_enter opened one callback scope for the whole
   * batch; this per-delivery scope is for deliveries outside a drain. */
  if (!a->batch_open) {
    if (napi_get_reference_value(a->env, a->resource, &resource) != napi_ok ||
        napi_open_callback_scope(a->env, resource, a->actx, &s->cs) != napi_ok)
      s->cs = NULL;
  }
  return 1;
}

/* Closing the outermost callback scope runs process.nextTick callbacks and
 * the microtask queue: .then handlers of what we resolved run here. The
 * handle scope closes last (the callback scope's close needs one). */
static void js_leave(addon_t* a, js_scope_t* s) {
  if (s->cs != NULL) napi_close_callback_scope(a->env, s->cs);
  napi_close_handle_scope(a->env, s->hs);
}

/* One handle scope and one callback scope around everything one drain of
 * the bridge delivers, instead of one per delivery (js_enter). */
static void batch_enter(uvt_bridge_t* bridge) {
  addon_t* a = bridge->data;
  napi_value resource;
  if (a->tearing_down || a->batch_open) return;
  if (napi_open_handle_scope(a->env, &a->batch_hs) != napi_ok) return;
  if (napi_get_reference_value(a->env, a->resource, &resource) != napi_ok ||
      napi_open_callback_scope(a->env, resource, a->actx, &a->batch_cs) != napi_ok) {
    napi_close_handle_scope(a->env, a->batch_hs);
    return;
  }
  a->batch_open = 1;
}

static void batch_leave(uvt_bridge_t* bridge) {
  addon_t* a = bridge->data;
  if (!a->batch_open) return;
  a->batch_open = 0;
  napi_close_callback_scope(a->env, a->batch_cs); /* runs the reactions */
  napi_close_handle_scope(a->env, a->batch_hs);
}

/* Calls fn(argv...) with undefined as this; 0 if it threw (cleared). */
static int js_call(napi_env env, napi_ref fn_ref, size_t argc, const napi_value* argv,
                   napi_value* result) {
  napi_value fn, recv;
  if (napi_get_reference_value(env, fn_ref, &fn) != napi_ok || fn == NULL) return 0;
  napi_get_undefined(env, &recv);
  if (napi_call_function(env, recv, fn, argc, argv, result) != napi_ok) {
    clear_exception(env);
    return 0;
  }
  return 1;
}

/* ---- run(n, sleepMs) and noop(): Promises from uvt_threaded ---------------- */

typedef struct {
  uvt_work_t req; /* req.data == this */
  addon_t* a;
  napi_deferred deferred;
  uint64_t n;
  unsigned sleep_ms;
  double result;
  int noop;
} job_t;

static void job_work(uvt_work_t* req) { /* a pool thread */
  job_t* j = req->data;
  uint64_t i, acc = 0;
  for (i = 0; i < j->n; i++) acc += i; /* sum 0..n-1, the slow way */
  if (j->sleep_ms > 0) uv_sleep(j->sleep_ms);
  j->result = (double)acc;
}

static void noop_work(uvt_work_t* req) { (void)req; }

static void job_after(uvt_work_t* req, int status) { /* the loop thread */
  job_t* j = req->data;
  addon_t* a = j->a;
  js_scope_t s;
  a->live_jobs--;
  /* Torn down: JS cannot run and the deferred cannot be settled any more
   * (N-API refuses once the environment stops calling into JS). */
  if (js_enter(a, &s)) {
    napi_value v;
    if (status == 0) {
      if (j->noop)
        napi_get_undefined(a->env, &v);
      else
        napi_create_double(a->env, j->result, &v);
      napi_resolve_deferred(a->env, j->deferred, v);
    } else {
      napi_reject_deferred(a->env, j->deferred, make_uv_error(a->env, status, "uvt_threaded"));
    }
    js_leave(a, &s);
  }
  free(j);
}

static napi_value submit_job(napi_env env, addon_t* a, job_t* j, uvt_work_cb work) {
  napi_value promise;
  int rc;
  if (napi_create_promise(env, &j->deferred, &promise) != napi_ok) {
    free(j);
    return throw_napi(env, "napi_create_promise");
  }
  j->a = a;
  j->req.data = j;
  rc = uvt_threaded(&a->bridge, &j->req, work, job_after);
  if (rc != 0) {
    napi_reject_deferred(env, j->deferred, make_uv_error(env, rc, "uvt_threaded"));
    free(j);
    return promise;
  }
  a->live_jobs++;
  return promise;
}

static napi_value js_run(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  addon_t* a = get_args(env, info, 2, argv, NULL);
  job_t* j;
  double n = arg_double(env, argv[0], -1), ms = arg_double(env, argv[1], 0);
  if (a == NULL) return throw_napi(env, "get_args");
  if (!(n >= 0 && n <= 1e12) || !(ms >= 0 && ms <= 60000))
    return napi_throw_range_error(env, NULL, "run(n, sleepMs): 0 <= n <= 1e12, 0 <= sleepMs <= 60000"),
           NULL;
  j = calloc(1, sizeof *j);
  if (j == NULL) return throw_uv(env, UV_ENOMEM, "run");
  j->n = (uint64_t)n;
  j->sleep_ms = (unsigned)ms;
  return submit_job(env, a, j, job_work);
}

static napi_value js_noop(napi_env env, napi_callback_info info) {
  addon_t* a = get_args(env, info, 0, NULL, NULL);
  job_t* j;
  if (a == NULL) return throw_napi(env, "get_args");
  j = calloc(1, sizeof *j);
  if (j == NULL) return throw_uv(env, UV_ENOMEM, "noop");
  j->noop = 1;
  return submit_job(env, a, j, noop_work);
}

/* The same no-op through napi_create_async_work (libuv's thread pool), the
 * baseline of bench.js. Node opens a callback scope around each complete. */
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
} aw_job_t;

static void aw_execute(napi_env env, void* data) {
  (void)env;
  (void)data;
}

static void aw_complete(napi_env env, napi_status status, void* data) {
  aw_job_t* j = data;
  napi_value v;
  napi_get_undefined(env, &v);
  if (status == napi_ok)
    napi_resolve_deferred(env, j->deferred, v);
  else
    napi_reject_deferred(env, j->deferred, v);
  napi_delete_async_work(env, j->work);
  free(j);
}

static napi_value js_noop_async_work(napi_env env, napi_callback_info info) {
  addon_t* a = get_args(env, info, 0, NULL, NULL);
  napi_value promise, name;
  aw_job_t* j;
  if (a == NULL) return throw_napi(env, "get_args");
  j = calloc(1, sizeof *j);
  if (j == NULL) return throw_uv(env, UV_ENOMEM, "noopAsyncWork");
  NAPI_CALL(env, napi_create_promise(env, &j->deferred, &promise));
  /* (Node 20 refers to objects only: the name cannot be kept in a napi_ref.) */
  NAPI_CALL(env, napi_create_string_utf8(env, "uvthreads.noopAsyncWork", NAPI_AUTO_LENGTH, &name));
  NAPI_CALL(env, napi_create_async_work(env, NULL, name, aw_execute, aw_complete, j, &j->work));
  NAPI_CALL(env, napi_queue_async_work(env, j->work));
  return promise;
}

/* ---- An async iterator over uvt_threaded_iterable -------------------------- */

typedef struct iter_s {
  uvt_iter_t it; /* it.data == this */
  addon_t* a;
  napi_ref on_item, on_end;
  int64_t count;   /* items to yield; < 0: endless */
  int64_t fail_at; /* the generator fails with UV_EIO before this item; < 0: never */
  unsigned interval_ms;
  uint64_t allocated, refused; /* the generator's thread; read after the end */
  uint64_t delivered, dropped; /* the loop thread */
  int finished; /* the final callback ran */
  int js_gone;  /* the JS handle was collected */
} iter_t;

typedef struct {
  uint64_t seq;
  iter_t* owner;
} item_t;

static int iter_gen(uvt_iter_t* it) { /* a pool thread */
  iter_t* s = it->data;
  int64_t i;
  for (i = 0; s->count < 0 || i < s->count; i++) {
    item_t* item;
    if (s->fail_at >= 0 && i == s->fail_at) return UV_EIO;
    if (s->interval_ms > 0) uv_sleep(s->interval_ms);
    item = malloc(sizeof *item);
    if (item == NULL) return UV_ENOMEM;
    item->seq = (uint64_t)i;
    item->owner = s;
    s->allocated++;
    if (uvt_yield(it, item) != 0) { /* closed early: the item was not taken */
      free(item);
      s->refused++;
      return 0;
    }
  }
  return 0;
}

/* Frees an item uvt_iter_stop took out of the buffer (loop thread, inside
 * uvt_iter_stop). */
static void iter_drop(void* item) {
  item_t* x = item;
  x->owner->dropped++;
  free(x);
}

static void iter_free_if_done(iter_t* s) {
  if (s->finished && s->js_gone) free(s);
}

static void iter_cb(uvt_iter_t* it, int status, void* item) { /* the loop thread */
  iter_t* s = it->data;
  addon_t* a = s->a;
  js_scope_t sc;
  if (item != NULL) {
    item_t* x = item;
    uint64_t seq = x->seq;
    free(x);
    s->delivered++;
    if (js_enter(a, &sc)) {
      napi_value v;
      napi_create_double(a->env, (double)seq, &v);
      js_call(a->env, s->on_item, 1, &v, NULL);
      js_leave(a, &sc);
    }
    return;
  }
  /* The final callback: UV_EOF, the generator's error, or UV_ECANCELED.
   * `finished` is set last: a finalizer of the handle, if one ever ran
   * during the JS call, must not free s before we are done with it. */
  a->live_iters--;
  if (js_enter(a, &sc)) {
    napi_value argv[2];
    napi_create_int32(a->env, status, &argv[0]);
    napi_create_object(a->env, &argv[1]);
    set_num(a->env, argv[1], "allocated", (double)s->allocated);
    set_num(a->env, argv[1], "delivered", (double)s->delivered);
    set_num(a->env, argv[1], "dropped", (double)s->dropped);
    set_num(a->env, argv[1], "refused", (double)s->refused);
    js_call(a->env, s->on_end, 2, argv, NULL);
    js_leave(a, &sc);
  }
  napi_delete_reference(a->env, s->on_item);
  napi_delete_reference(a->env, s->on_end);
  s->on_item = s->on_end = NULL;
  s->finished = 1;
  iter_free_if_done(s);
}

static void iter_finalize(napi_env env, void* data, void* hint) {
  iter_t* s = data;
  (void)env;
  (void)hint;
  s->js_gone = 1;
  iter_free_if_done(s);
}

/* iterStart(count, maxSize, intervalMs, failAt, onItem, onEnd) -> handle */
static napi_value js_iter_start(napi_env env, napi_callback_info info) {
  napi_value argv[6], handle;
  addon_t* a = get_args(env, info, 6, argv, NULL);
  double max_size = arg_double(env, argv[1], 16);
  iter_t* s;
  int rc;
  if (a == NULL) return throw_napi(env, "get_args");
  if (!(max_size >= 1 && max_size <= 1e6))
    return napi_throw_range_error(env, NULL, "maxSize must be in 1..1e6"), NULL;
  s = calloc(1, sizeof *s);
  if (s == NULL) return throw_uv(env, UV_ENOMEM, "iterate");
  s->a = a;
  s->it.data = s;
  s->count = (int64_t)arg_double(env, argv[0], -1);
  s->interval_ms = (unsigned)arg_double(env, argv[2], 0);
  s->fail_at = (int64_t)arg_double(env, argv[3], -1);
  if (napi_create_reference(env, argv[4], 1, &s->on_item) != napi_ok ||
      napi_create_reference(env, argv[5], 1, &s->on_end) != napi_ok ||
      napi_create_external(env, s, iter_finalize, NULL, &handle) != napi_ok) {
    if (s->on_item != NULL) napi_delete_reference(env, s->on_item);
    if (s->on_end != NULL) napi_delete_reference(env, s->on_end);
    free(s);
    return throw_napi(env, "iterate");
  }
  /* From here the external owns s until the final callback also ran. */
  rc = uvt_threaded_iterable(&a->bridge, &s->it, (size_t)max_size, iter_gen, iter_cb);
  if (rc != 0) {
    napi_delete_reference(env, s->on_item);
    napi_delete_reference(env, s->on_end);
    s->on_item = s->on_end = NULL;
    s->finished = 1;
    return throw_uv(env, rc, "uvt_threaded_iterable");
  }
  a->live_iters++;
  return handle;
}

static iter_t* get_iter(napi_env env, napi_value v) {
  void* p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok) return NULL;
  return p;
}

/* iterPause/iterResume/iterClose(handle) -> 0 or a negative libuv code (EINVAL
 * once the iterator finished). */
static napi_value iter_op(napi_env env, napi_callback_info info, int op) {
  napi_value argv[1];
  iter_t* s;
  int rc;
  get_args(env, info, 1, argv, NULL);
  s = get_iter(env, argv[0]);
  if (s == NULL) return napi_throw_type_error(env, NULL, "not an iterator handle"), NULL;
  if (s->finished) return js_int(env, UV_EINVAL);
  switch (op) {
    case 0: rc = uvt_iter_pause(&s->it); break;
    case 1: rc = uvt_iter_resume(&s->it); break;
    case 2: rc = uvt_iter_stop(&s->it, iter_drop); break; /* drops the buffer */
    /* An unref'd iterator no longer keeps the loop alive. */
    case 3: uvt_iter_ref(&s->it); rc = 0; break;
    case 4: uvt_iter_unref(&s->it); rc = 0; break;
    default: rc = UV_ENOSYS; break;
  }
  return js_int(env, rc);
}

static napi_value js_iter_pause(napi_env env, napi_callback_info info) { return iter_op(env, info, 0); }
static napi_value js_iter_resume(napi_env env, napi_callback_info info) { return iter_op(env, info, 1); }
static napi_value js_iter_close(napi_env env, napi_callback_info info) { return iter_op(env, info, 2); }
static napi_value js_iter_ref(napi_env env, napi_callback_info info) { return iter_op(env, info, 3); }
static napi_value js_iter_unref(napi_env env, napi_callback_info info) { return iter_op(env, info, 4); }

/* ---- uvt_sync_await into JS from a thread ---------------------------------- */

typedef struct {
  uvt_work_t req; /* req.data == this */
  addon_t* a;
  napi_deferred deferred;
  napi_ref fn;
  int n, done;
  int* statuses;
  double* values;
} sa_job_t;

/* One uvt_sync_await call, on the waiting thread's stack. */
typedef struct {
  sa_job_t* job;
  int index;
  double value;
} sa_call_t;

/* An await whose loop function is waiting for a JS promise. Owned by up to
 * three: the addon's pending list (until it is resolved) and the two settle
 * functions (until they are collected), so neither a late settle nor the
 * teardown can meet freed memory. */
struct pending_s {
  pending_t* next;
  pending_t* prev;
  uvt_await_t* aw;
  sa_call_t* call;
  addon_t* a;
  int refs;
  int resolved;
};

static void pending_unref(pending_t* p) {
  if (--p->refs == 0) free(p);
}

static void pending_unlink(pending_t* p) {
  addon_t* a = p->a;
  if (p->prev != NULL)
    p->prev->next = p->next;
  else
    a->pending = p->next;
  if (p->next != NULL) p->next->prev = p->prev;
  p->next = p->prev = NULL;
}

/* Resolves the await once; the waiting thread may return at once. */
static void pending_resolve(pending_t* p, int status) {
  if (p->resolved) return;
  p->resolved = 1;
  pending_unlink(p);
  p->a->live_awaits--;
  uvt_await_resolve(p->aw, status);
  pending_unref(p);
}

static void pending_fn_finalize(napi_env env, void* data, void* hint) {
  (void)env;
  (void)hint;
  pending_unref(data);
}

static napi_value sa_settled(napi_env env, napi_callback_info info, int ok) {
  napi_value v;
  void* data = NULL;
  pending_t* p;
  size_t argc = 1;
  napi_get_cb_info(env, info, &argc, &v, NULL, &data);
  p = data;
  if (p->resolved) return NULL;
  if (ok && argc >= 1) p->call->value = arg_double(env, v, 0);
  pending_resolve(p, ok ? 0 : SA_REJECTED);
  return NULL;
}

static napi_value sa_fulfilled(napi_env env, napi_callback_info info) { return sa_settled(env, info, 1); }
static napi_value sa_rejected(napi_env env, napi_callback_info info) { return sa_settled(env, info, 0); }

/* Attaches then(fulfilled, rejected) to promise; 0 on failure. */
static int sa_attach(napi_env env, pending_t* p, napi_value promise) {
  napi_value fns[2], then;
  if (napi_create_function(env, "fulfilled", NAPI_AUTO_LENGTH, sa_fulfilled, p, &fns[0]) != napi_ok ||
      napi_create_function(env, "rejected", NAPI_AUTO_LENGTH, sa_rejected, p, &fns[1]) != napi_ok)
    return 0;
  if (napi_add_finalizer(env, fns[0], p, pending_fn_finalize, NULL, NULL) != napi_ok) return 0;
  p->refs++;
  if (napi_add_finalizer(env, fns[1], p, pending_fn_finalize, NULL, NULL) != napi_ok) return 0;
  p->refs++;
  if (napi_get_named_property(env, promise, "then", &then) != napi_ok ||
      napi_call_function(env, promise, then, 2, fns, NULL) != napi_ok) {
    clear_exception(env);
    return 0;
  }
  return 1;
}

/* The loop function of each uvt_sync_await (the loop thread): calls fn(i);
 * a Promise resolves the await when it settles, any other value at once. */
static void sa_loop_fn(uvt_await_t* aw, void* arg) {
  sa_call_t* c = arg;
  addon_t* a = c->job->a;
  napi_env env = a->env;
  napi_value index, result;
  pending_t* p;
  bool is_promise = false;
  js_scope_t sc;
  if (!js_enter(a, &sc)) {
    uvt_await_resolve(aw, UV_ECANCELED);
    return;
  }
  napi_create_int32(env, c->index, &index);
  if (!js_call(env, c->job->fn, 1, &index, &result)) {
    uvt_await_resolve(aw, SA_REJECTED);
  } else if (napi_is_promise(env, result, &is_promise) != napi_ok || !is_promise) {
    c->value = arg_double(env, result, 0);
    uvt_await_resolve(aw, 0);
  } else if ((p = calloc(1, sizeof *p)) == NULL) {
    uvt_await_resolve(aw, UV_ENOMEM);
  } else {
    p->aw = aw;
    p->call = c;
    p->a = a;
    p->refs = 1; /* the pending list's */
    p->next = a->pending;
    if (a->pending != NULL) a->pending->prev = p;
    a->pending = p;
    a->live_awaits++;
    /* The bridge's close waits for this await: it must be resolved on every
     * path, here if the handlers cannot be attached, otherwise when the
     * promise settles or, failing that, by the cleanup hook. */
    if (!sa_attach(env, p, result)) pending_resolve(p, UV_ECANCELED);
  }
  js_leave(a, &sc);
}

static void sa_work(uvt_work_t* req) { /* a separate thread */
  sa_job_t* j = req->data;
  int i;
  for (i = 0; i < j->n; i++) {
    sa_call_t c = {j, i, 0};
    int rc = uvt_sync_await(&j->a->bridge, sa_loop_fn, &c);
    j->statuses[i] = rc;
    j->values[i] = c.value;
    j->done = i + 1;
    if (rc == UV_ECANCELED || rc == UV_EPIPE) break; /* the bridge is closing */
  }
}

static void sa_after(uvt_work_t* req, int status) { /* the loop thread */
  sa_job_t* j = req->data;
  addon_t* a = j->a;
  js_scope_t sc;
  a->live_jobs--;
  if (js_enter(a, &sc)) {
    napi_value result, statuses, values, v;
    int i;
    if (status != 0) {
      napi_reject_deferred(a->env, j->deferred, make_uv_error(a->env, status, "syncAwait"));
    } else {
      napi_create_object(a->env, &result);
      napi_create_array_with_length(a->env, (size_t)j->done, &statuses);
      napi_create_array_with_length(a->env, (size_t)j->done, &values);
      for (i = 0; i < j->done; i++) {
        napi_create_int32(a->env, j->statuses[i], &v);
        napi_set_element(a->env, statuses, (uint32_t)i, v);
        napi_create_double(a->env, j->values[i], &v);
        napi_set_element(a->env, values, (uint32_t)i, v);
      }
      napi_set_named_property(a->env, result, "statuses", statuses);
      napi_set_named_property(a->env, result, "values", values);
      napi_resolve_deferred(a->env, j->deferred, result);
    }
    js_leave(a, &sc);
  }
  napi_delete_reference(a->env, j->fn);
  free(j->statuses);
  free(j->values);
  free(j);
}

/* syncAwait(n, fn) -> Promise<{statuses, values}> */
static napi_value js_sync_await(napi_env env, napi_callback_info info) {
  napi_value argv[2], promise;
  addon_t* a = get_args(env, info, 2, argv, NULL);
  double n = arg_double(env, argv[0], -1);
  sa_job_t* j;
  int rc;
  if (a == NULL) return throw_napi(env, "get_args");
  if (!(n >= 1 && n <= 1e7)) return napi_throw_range_error(env, NULL, "n must be in 1..1e7"), NULL;
  j = calloc(1, sizeof *j);
  if (j == NULL) return throw_uv(env, UV_ENOMEM, "syncAwait");
  j->a = a;
  j->n = (int)n;
  j->req.data = j;
  j->statuses = calloc((size_t)j->n, sizeof *j->statuses);
  j->values = calloc((size_t)j->n, sizeof *j->values);
  if (j->statuses == NULL || j->values == NULL ||
      napi_create_reference(env, argv[1], 1, &j->fn) != napi_ok ||
      napi_create_promise(env, &j->deferred, &promise) != napi_ok) {
    if (j->fn != NULL) napi_delete_reference(env, j->fn);
    free(j->statuses);
    free(j->values);
    free(j);
    return throw_uv(env, UV_ENOMEM, "syncAwait");
  }
  /* A dedicated thread: it blocks for as long as JS takes. */
  rc = uvt_threaded_separate(&a->bridge, &j->req, sa_work, sa_after);
  if (rc != 0) {
    napi_reject_deferred(env, j->deferred, make_uv_error(env, rc, "uvt_threaded_separate"));
    napi_delete_reference(env, j->fn);
    free(j->statuses);
    free(j->values);
    free(j);
    return promise;
  }
  a->live_jobs++;
  return promise;
}

/* ---- A background channel: a thread of ours feeds it ----------------------- */

typedef struct ticker_s {
  uvt_chan_t ch; /* ch.data == this */
  addon_t* a;
  napi_ref on_tick, on_end;
  uv_thread_t thread;
  uv_mutex_t mu;
  uv_cond_t cv;
  int stop; /* guarded by mu */
  int thread_started;
  int64_t count; /* < 0: endless */
  unsigned interval_ms;
  uint64_t put, refused;      /* the producer thread; read after the join */
  uint64_t delivered, dropped; /* the loop thread */
  int finished, js_gone;
} ticker_t;

typedef struct {
  uint64_t seq;
  ticker_t* owner;
} tick_t;

static void ticker_main(void* arg) { /* the producer: not a library thread */
  ticker_t* t = arg;
  int64_t i;
  int rc = 0;
  for (i = 0; t->count < 0 || i < t->count; i++) {
    tick_t* tick;
    int stop;
    if (i > 0 && t->interval_ms > 0) {
      uint64_t until = uv_hrtime() + (uint64_t)t->interval_ms * 1000000u;
      uv_mutex_lock(&t->mu);
      while (!t->stop) {
        uint64_t now = uv_hrtime();
        if (now >= until) break;
        uv_cond_timedwait(&t->cv, &t->mu, until - now);
      }
      uv_mutex_unlock(&t->mu);
    }
    uv_mutex_lock(&t->mu);
    stop = t->stop;
    uv_mutex_unlock(&t->mu);
    if (stop) return;
    tick = malloc(sizeof *tick);
    if (tick == NULL) break;
    tick->seq = (uint64_t)i;
    tick->owner = t;
    rc = uvt_chan_put(&t->ch, tick); /* blocks while the channel is full */
    if (rc != 0) { /* stopped, or the bridge is closing: not taken */
      free(tick);
      t->refused++;
      return;
    }
    t->put++;
  }
  uvt_chan_close(&t->ch); /* graceful: the loop gets UV_EOF after the buffer */
}

static void ticker_drop(void* item) {
  tick_t* tick = item;
  tick->owner->dropped++;
  free(tick);
}

static void ticker_free_if_done(ticker_t* t) {
  if (t->finished && t->js_gone) free(t);
}

static void ticker_cb(uvt_chan_t* ch, int status, void* item) { /* the loop thread */
  ticker_t* t = ch->data;
  addon_t* a = t->a;
  js_scope_t sc;
  if (item != NULL) {
    tick_t* tick = item;
    uint64_t seq = tick->seq;
    free(tick);
    t->delivered++;
    if (js_enter(a, &sc)) {
      napi_value v;
      napi_create_double(a->env, (double)seq, &v);
      js_call(a->env, t->on_tick, 1, &v, NULL);
      js_leave(a, &sc);
    }
    return;
  }
  /* Final: stop the producer (its puts now fail with UV_EPIPE and touch only
   * the channel's memory) and join it before the memory can go. It is not
   * blocked in a put any more, so the join is short. */
  uv_mutex_lock(&t->mu);
  t->stop = 1;
  uv_cond_signal(&t->cv);
  uv_mutex_unlock(&t->mu);
  if (t->thread_started) uv_thread_join(&t->thread);
  uv_cond_destroy(&t->cv);
  uv_mutex_destroy(&t->mu);
  a->live_tickers--;
  if (js_enter(a, &sc)) {
    napi_value argv[2];
    napi_create_int32(a->env, status, &argv[0]);
    napi_create_object(a->env, &argv[1]);
    set_num(a->env, argv[1], "put", (double)t->put);
    set_num(a->env, argv[1], "delivered", (double)t->delivered);
    set_num(a->env, argv[1], "dropped", (double)t->dropped);
    set_num(a->env, argv[1], "refused", (double)t->refused);
    js_call(a->env, t->on_end, 2, argv, NULL);
    js_leave(a, &sc);
  }
  napi_delete_reference(a->env, t->on_tick);
  napi_delete_reference(a->env, t->on_end);
  t->on_tick = t->on_end = NULL;
  t->finished = 1; /* last, as for iterators */
  ticker_free_if_done(t);
}

static void ticker_finalize(napi_env env, void* data, void* hint) {
  ticker_t* t = data;
  (void)env;
  (void)hint;
  t->js_gone = 1;
  ticker_free_if_done(t);
}

/* tickerStart(count, intervalMs, maxSize, onTick, onEnd) -> handle */
static napi_value js_ticker_start(napi_env env, napi_callback_info info) {
  napi_value argv[5], handle;
  addon_t* a = get_args(env, info, 5, argv, NULL);
  double max_size = arg_double(env, argv[2], 4);
  ticker_t* t;
  int rc;
  if (a == NULL) return throw_napi(env, "get_args");
  if (!(max_size >= 1 && max_size <= 1e6))
    return napi_throw_range_error(env, NULL, "maxSize must be in 1..1e6"), NULL;
  t = calloc(1, sizeof *t);
  if (t == NULL) return throw_uv(env, UV_ENOMEM, "ticker");
  t->a = a;
  t->ch.data = t;
  t->count = (int64_t)arg_double(env, argv[0], -1);
  t->interval_ms = (unsigned)arg_double(env, argv[1], 10);
  if (uv_mutex_init(&t->mu) != 0) {
    free(t);
    return throw_uv(env, UV_ENOMEM, "ticker");
  }
  if (uv_cond_init(&t->cv) != 0) {
    uv_mutex_destroy(&t->mu);
    free(t);
    return throw_uv(env, UV_ENOMEM, "ticker");
  }
  if (napi_create_reference(env, argv[3], 1, &t->on_tick) != napi_ok ||
      napi_create_reference(env, argv[4], 1, &t->on_end) != napi_ok ||
      napi_create_external(env, t, ticker_finalize, NULL, &handle) != napi_ok) {
    if (t->on_tick != NULL) napi_delete_reference(env, t->on_tick);
    if (t->on_end != NULL) napi_delete_reference(env, t->on_end);
    uv_cond_destroy(&t->cv);
    uv_mutex_destroy(&t->mu);
    free(t);
    return throw_napi(env, "ticker");
  }
  /* From here the external owns t until the final callback also ran. */
  rc = uvt_chan_init(&a->bridge, &t->ch, (size_t)max_size, ticker_cb);
  if (rc != 0) {
    napi_delete_reference(env, t->on_tick);
    napi_delete_reference(env, t->on_end);
    t->on_tick = t->on_end = NULL;
    uv_cond_destroy(&t->cv);
    uv_mutex_destroy(&t->mu);
    t->finished = 1;
    return throw_uv(env, rc, "uvt_chan_init");
  }
  a->live_tickers++;
  rc = uv_thread_create(&t->thread, ticker_main, t);
  if (rc != 0) {
    uvt_chan_stop(&t->ch, ticker_drop); /* the final callback follows */
    return throw_uv(env, rc, "uv_thread_create");
  }
  t->thread_started = 1;
  return handle;
}

static napi_value ticker_op(napi_env env, napi_callback_info info, int op) {
  napi_value argv[1];
  ticker_t* t = NULL;
  int rc;
  get_args(env, info, 1, argv, NULL);
  if (napi_get_value_external(env, argv[0], (void**)&t) != napi_ok || t == NULL)
    return napi_throw_type_error(env, NULL, "not a ticker handle"), NULL;
  if (t->finished) return js_int(env, UV_EINVAL);
  switch (op) {
    case 0: rc = uvt_chan_stop(&t->ch, ticker_drop); break;
    /* An unref'd channel no longer keeps the loop alive, so a background
     * producer does not keep Node from exiting. */
    case 1: uvt_chan_ref(&t->ch); rc = 0; break;
    case 2: uvt_chan_unref(&t->ch); rc = 0; break;
    default: rc = UV_ENOSYS; break;
  }
  return js_int(env, rc);
}

static napi_value js_ticker_stop(napi_env env, napi_callback_info info) { return ticker_op(env, info, 0); }
static napi_value js_ticker_ref(napi_env env, napi_callback_info info) { return ticker_op(env, info, 1); }
static napi_value js_ticker_unref(napi_env env, napi_callback_info info) { return ticker_op(env, info, 2); }

/* ---- Introspection ---------------------------------------------------------- */

static napi_value js_stats(napi_env env, napi_callback_info info) {
  addon_t* a = get_args(env, info, 0, NULL, NULL);
  uvt_pool_stats_t ps;
  napi_value o;
  if (a == NULL) return throw_napi(env, "get_args");
  NAPI_CALL(env, napi_create_object(env, &o));
  set_num(env, o, "liveJobs", (double)a->live_jobs);
  set_num(env, o, "liveIters", (double)a->live_iters);
  set_num(env, o, "liveTickers", (double)a->live_tickers);
  set_num(env, o, "pendingAwaits", (double)a->live_awaits);
  if (a->bridge_open && uvt_pool_stats(a->bridge.pool, &ps) == 0) {
    set_num(env, o, "poolThreads", ps.threads);
    set_num(env, o, "poolSubmitted", (double)ps.submitted);
    set_num(env, o, "poolCompleted", (double)ps.completed);
    set_num(env, o, "poolQueued", (double)ps.queued);
    set_num(env, o, "poolRunning", (double)ps.running);
  }
  return o;
}

static napi_value js_errname(napi_env env, napi_callback_info info) {
  napi_value argv[1], s;
  int code;
  get_args(env, info, 1, argv, NULL);
  code = (int)arg_double(env, argv[0], 0);
  NAPI_CALL(env, napi_create_string_utf8(env, code == 0 ? "OK" : uv_err_name(code), NAPI_AUTO_LENGTH, &s));
  return s;
}

/* ---- Teardown: the async cleanup hook -------------------------------------- */

static void on_bridge_closed(uvt_bridge_t* bridge) {
  addon_t* a = bridge->data;
  napi_handle_scope hs;
  napi_async_cleanup_hook_handle cleanup = a->cleanup;
  int scoped = napi_open_handle_scope(a->env, &hs) == napi_ok;
  a->bridge_open = 0;
  napi_async_destroy(a->env, a->actx);
  napi_delete_reference(a->env, a->resource);
  if (scoped) napi_close_handle_scope(a->env, hs);
  a->cleanup = NULL;
  /* Last: tells Node the hook is done, after which it may free the
   * environment and our instance data (a) from a later immediate. */
  if (cleanup != NULL) napi_remove_async_cleanup_hook(cleanup);
}

/* Runs when the environment is torn down (process exit, worker.terminate(),
 * process.exit() in a worker), on the loop thread. Node keeps running the
 * loop until the hook removes itself, which on_bridge_closed does once the
 * bridge's handle is closed: only then may the worker's uv_loop_close()
 * succeed. A plain napi_add_env_cleanup_hook cannot wait like this, and a
 * worker then aborts in uv_loop_close() with the bridge's handle open. */
static void on_cleanup(napi_async_cleanup_hook_handle handle, void* arg) {
  addon_t* a = arg;
  int rc;
  (void)handle;
  a->tearing_down = 1; /* no JS from here on: callbacks only free memory */
  /* Awaits whose loop function started are waiting for a JS promise that can
   * no longer settle, and the bridge's close waits for every started await:
   * resolve them with UV_ECANCELED first, or the close never finishes. */
  while (a->pending != NULL) pending_resolve(a->pending, UV_ECANCELED);
  rc = a->bridge_open ? uvt_bridge_close(&a->bridge, on_bridge_closed) : UV_EINVAL;
  if (rc != 0) {
    fprintf(stderr, "uvthreads addon: uvt_bridge_close: %s\n", uv_err_name(rc));
    a->cleanup = NULL;
    napi_remove_async_cleanup_hook(handle);
  }
}

static void addon_finalize(napi_env env, void* data, void* hint) {
  addon_t* a = data;
  (void)env;
  (void)hint;
  /* The hook holds the environment until the bridge closed, so this cannot
   * happen with the bridge open; if it ever did, leaking beats freeing a
   * handle libuv still links. */
  if (a->bridge_open) {
    fprintf(stderr, "uvthreads addon: environment freed with its bridge open\n");
    return;
  }
  free(a);
}

/* ---- Module init: one bridge per environment ------------------------------- */

static void free_on_close(uvt_bridge_t* bridge) { free(bridge->data); }

static napi_value set_fn(napi_env env, napi_value exports, const char* name, napi_callback cb) {
  napi_value fn;
  NAPI_CALL(env, napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn));
  NAPI_CALL(env, napi_set_named_property(env, exports, name, fn));
  return fn;
}

NAPI_MODULE_INIT() {
  uv_loop_t* loop = NULL;
  addon_t* a;
  napi_value resource, name, versions, v;
  char buf[64];
  int rc;

  if (uv_version() < UV_VERSION_HEX) {
    snprintf(buf, sizeof buf, "libuv %s at run time, older than the header (%s)",
             uv_version_string(), UV_HEADER_VERSION);
    napi_throw_error(env, NULL, buf);
    return NULL;
  }
  NAPI_CALL(env, napi_get_uv_event_loop(env, &loop));
  a = calloc(1, sizeof *a);
  if (a == NULL) return throw_uv(env, UV_ENOMEM, "uvthreads addon");
  a->env = env;
  if (napi_create_object(env, &resource) != napi_ok ||
      napi_create_reference(env, resource, 1, &a->resource) != napi_ok ||
      napi_create_string_utf8(env, "uvthreads", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_async_init(env, resource, name, &a->actx) != napi_ok) {
    free(a); /* the refs and context go with the environment */
    return throw_napi(env, "uvthreads addon init");
  }

  /* The bridge of this environment's loop, on this (its loop) thread, on the
   * default pool shared by every environment. Idle, it does not keep Node
   * alive; jobs, iterators, channels and awaits in flight do. */
  rc = uvt_bridge_init(loop, &a->bridge, NULL);
  if (rc != 0) {
    free(a);
    return throw_uv(env, rc, "uvt_bridge_init");
  }
  a->bridge.data = a;
  a->bridge_open = 1;
  /* One callback scope per drain instead of one per delivery. */
  rc = uvt_bridge_batch_hooks(&a->bridge, batch_enter, batch_leave);
  if (rc != 0) fprintf(stderr, "uvthreads addon: uvt_bridge_batch_hooks: %s\n", uv_err_name(rc));
  if (napi_add_async_cleanup_hook(env, on_cleanup, a, &a->cleanup) != napi_ok ||
      napi_set_instance_data(env, a, addon_finalize, NULL) != napi_ok) {
    if (a->cleanup != NULL) napi_remove_async_cleanup_hook(a->cleanup);
    a->cleanup = NULL;
    uvt_bridge_close(&a->bridge, free_on_close);
    return throw_napi(env, "uvthreads addon init");
  }

  set_fn(env, exports, "run", js_run);
  set_fn(env, exports, "noop", js_noop);
  set_fn(env, exports, "noopAsyncWork", js_noop_async_work);
  set_fn(env, exports, "iterStart", js_iter_start);
  set_fn(env, exports, "iterPause", js_iter_pause);
  set_fn(env, exports, "iterResume", js_iter_resume);
  set_fn(env, exports, "iterClose", js_iter_close);
  set_fn(env, exports, "iterRef", js_iter_ref);
  set_fn(env, exports, "iterUnref", js_iter_unref);
  set_fn(env, exports, "syncAwait", js_sync_await);
  set_fn(env, exports, "tickerStart", js_ticker_start);
  set_fn(env, exports, "tickerStop", js_ticker_stop);
  set_fn(env, exports, "tickerRef", js_ticker_ref);
  set_fn(env, exports, "tickerUnref", js_ticker_unref);
  set_fn(env, exports, "stats", js_stats);
  set_fn(env, exports, "errname", js_errname);

  NAPI_CALL(env, napi_create_object(env, &versions));
  NAPI_CALL(env, napi_create_string_utf8(env, uvt_version_string(), NAPI_AUTO_LENGTH, &v));
  NAPI_CALL(env, napi_set_named_property(env, versions, "uvthreads", v));
  NAPI_CALL(env, napi_create_string_utf8(env, UV_HEADER_VERSION, NAPI_AUTO_LENGTH, &v));
  NAPI_CALL(env, napi_set_named_property(env, versions, "uvHeader", v));
  NAPI_CALL(env, napi_create_string_utf8(env, uv_version_string(), NAPI_AUTO_LENGTH, &v));
  NAPI_CALL(env, napi_set_named_property(env, versions, "uvRuntime", v));
  NAPI_CALL(env, napi_set_named_property(env, exports, "versions", versions));

  return exports;
}
