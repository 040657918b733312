/* Lanes: three uses on one shared pool.
 *
 * 1. A serial lane for one SQLite connection. A connection must not be used
 *    by two threads at once: in a lane of max_running 1 its statements run
 *    one at a time, in order, each seeing what the one before did, on
 *    whichever pool thread is free (no pool of its own, idle when the
 *    database is).
 * 2. A capped lane for slow network calls (simulated with sleeps): at most
 *    2 run at once, so the pool's other threads stay free for quick work.
 * 3. A queue deadline for load shedding: a burst of requests beyond what a
 *    backend can serve in time. A request not started within 50 ms gets
 *    UV_ETIMEDOUT at once, instead of being served late. */
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include <uvthreads.h>

static uvt_pool_t* pool;
static uvt_bridge_t bridge;

/* ---- 1. one SQLite connection in a serial lane --------------------------- */

typedef struct {
  uvt_work_t req;   /* first: a statement is its request */
  const char* sql;
  long long answer; /* the first column of the last row */
  int rc;           /* the SQLite result code */
} statement_t;

static sqlite3* db; /* used by one lane task at a time: the lane orders them */

static void run_statement(uvt_work_t* req) { /* a pool thread */
  statement_t* s = (statement_t*)req;
  sqlite3_stmt* st;
  if (db == NULL && sqlite3_open(":memory:", &db) != SQLITE_OK) {
    s->rc = SQLITE_CANTOPEN;
    return;
  }
  s->rc = sqlite3_prepare_v2(db, s->sql, -1, &st, NULL);
  if (s->rc != SQLITE_OK) return;
  while ((s->rc = sqlite3_step(st)) == SQLITE_ROW) s->answer = sqlite3_column_int64(st, 0);
  if (s->rc == SQLITE_DONE) s->rc = SQLITE_OK;
  sqlite3_finalize(st);
}

static void print_statement(uvt_work_t* req, int status) { /* the loop */
  statement_t* s = (statement_t*)req;
  if (status == 0 && s->rc == SQLITE_OK)
    printf("sqlite: %-40.40s -> %lld\n", s->sql, s->answer);
  else
    printf("sqlite: %-40.40s failed: %s\n", s->sql,
           status ? uv_err_name(status) : sqlite3_errstr(s->rc));
}

static int sqlite_lane(uv_loop_t* loop) {
  statement_t statements[] = {
      {.sql = "CREATE TABLE t(x INTEGER)"},
      {.sql = "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 100000) "
              "INSERT INTO t SELECT i FROM c"},
      {.sql = "SELECT count(*) FROM t"},
      {.sql = "SELECT sum(x) FROM t"},
  };
  uvt_lane_t* db_lane;
  uvt_work_options_t opts = {NULL, 0};
  size_t i;
  if (uvt_lane_new(pool, NULL, &db_lane) != 0) return 1; /* defaults: max_running 1 */
  opts.lane = db_lane;
  /* Submitted at once, run in order: no statement waits in the loop. */
  for (i = 0; i < sizeof(statements) / sizeof(statements[0]); i++)
    uvt_threaded_ex(&bridge, &statements[i].req, &opts, run_statement, print_statement);
  uv_run(loop, UV_RUN_DEFAULT);
  uvt_lane_free(db_lane);
  return statements[3].answer == 5000050000LL ? 0 : 1;
}

/* ---- 2. slow network calls in a capped lane ------------------------------ */

static int calls_now, calls_max; /* atomics: calls in progress */
static int quick_done, calls_done; /* the loop */

static void network_call(uvt_work_t* req) {
  int now = __atomic_add_fetch(&calls_now, 1, __ATOMIC_RELAXED);
  int max = __atomic_load_n(&calls_max, __ATOMIC_RELAXED);
  (void)req;
  while (now > max && !__atomic_compare_exchange_n(&calls_max, &max, now, 1, __ATOMIC_RELAXED,
                                                   __ATOMIC_RELAXED)) {
  }
  uv_sleep(30); /* waiting for a slow server */
  __atomic_sub_fetch(&calls_now, 1, __ATOMIC_RELAXED);
}

static void call_done(uvt_work_t* req, int status) {
  (void)req;
  if (status == 0) calls_done++;
}

static void quick_job(uvt_work_t* req) { (void)req; }
static void quick_after(uvt_work_t* req, int status) {
  (void)req;
  (void)status;
  if (calls_done < 8) quick_done++; /* finished while calls were still going on */
}

static int network_lane(uv_loop_t* loop) {
  uvt_lane_options_t lo;
  uvt_lane_t* net_lane;
  uvt_work_options_t opts = {NULL, 0};
  uvt_work_t calls[8], quick[100];
  int i;
  uvt_lane_options_init(&lo);
  lo.max_running = 2;
  if (uvt_lane_new(pool, &lo, &net_lane) != 0) return 1;
  opts.lane = net_lane;
  for (i = 0; i < 8; i++) uvt_threaded_ex(&bridge, &calls[i], &opts, network_call, call_done);
  for (i = 0; i < 100; i++) uvt_threaded(&bridge, &quick[i], quick_job, quick_after);
  uv_run(loop, UV_RUN_DEFAULT);
  uvt_lane_free(net_lane);
  printf("network: %d calls, at most %d at once; %d quick jobs done meanwhile\n", calls_done,
         calls_max, quick_done);
  return calls_done == 8 && calls_max <= 2 ? 0 : 1;
}

/* ---- 3. load shedding with a queue deadline ------------------------------ */

static int served, shed;

static void serve(uvt_work_t* req) {
  (void)req;
  uv_sleep(20); /* the backend takes 20 ms per request, one at a time */
}

static void answer(uvt_work_t* req, int status) {
  (void)req;
  if (status == 0)
    served++;
  else if (status == UV_ETIMEDOUT)
    shed++; /* a real server answers "503, try later" here, at once */
}

static int load_shedding(uv_loop_t* loop) {
  uvt_lane_t* backend;
  uvt_work_options_t opts = {NULL, 50};
  uvt_work_t requests[20];
  uvt_lane_stats_t st;
  int i;
  if (uvt_lane_new(pool, NULL, &backend) != 0) return 1;
  opts.lane = backend;
  for (i = 0; i < 20; i++) uvt_threaded_ex(&bridge, &requests[i], &opts, serve, answer);
  uv_run(loop, UV_RUN_DEFAULT);
  uvt_lane_stats(backend, &st);
  uvt_lane_free(backend);
  printf("shedding: 20 requests, %d served, %d shed (ETIMEDOUT; the lane counted %llu)\n", served,
         shed, (unsigned long long)st.expired);
  return served + shed == 20 && served > 0 && shed > 0 ? 0 : 1;
}

int main(void) {
  uv_loop_t* loop = uv_default_loop();
  uvt_pool_options_t opts;
  int failed = 0;

  uvt_pool_options_init(&opts);
  opts.max_threads = 4; /* one pool for everything */
  if (uvt_pool_new(&pool, &opts) != 0 || uvt_bridge_init(loop, &bridge, pool) != 0) return 1;

  failed |= sqlite_lane(loop);
  failed |= network_lane(loop);
  failed |= load_shedding(loop);

  uvt_bridge_close(&bridge, NULL);
  uv_run(loop, UV_RUN_DEFAULT);
  sqlite3_close(db); /* every statement has run: the lane's last after came */
  uvt_pool_free(pool);
  return uv_loop_close(loop) == 0 && !failed ? 0 : 1;
}
