/* Offloading blocking SQLite calls.
 *
 * An SQLite connection must not be used by two threads at once, so it gets
 * a pool of one thread: every job on that pool runs in submission order on
 * the same thread, and the loop never blocks on the database. A serial
 * lane on a shared pool does the same without a thread of its own
 * (examples/lanes.c). */
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include <uvthreads.h>

typedef struct {
  uvt_work_t req;   /* first: a job is its request */
  const char* sql;  /* what to run */
  long long answer; /* the first column of the first row */
  int rc;           /* the SQLite result code */
} query_t;

static sqlite3* db; /* touched only by the pool's single thread */

static void run_query(uvt_work_t* req) { /* on the database thread */
  query_t* q = (query_t*)req;
  sqlite3_stmt* st;
  q->rc = sqlite3_prepare_v2(db, q->sql, -1, &st, NULL);
  if (q->rc != SQLITE_OK) return;
  while ((q->rc = sqlite3_step(st)) == SQLITE_ROW) q->answer = sqlite3_column_int64(st, 0);
  if (q->rc == SQLITE_DONE) q->rc = SQLITE_OK;
  sqlite3_finalize(st);
}

static void print_answer(uvt_work_t* req, int status) { /* on the loop */
  query_t* q = (query_t*)req;
  if (status == 0 && q->rc == SQLITE_OK)
    printf("%-60s -> %lld\n", q->sql, q->answer);
  else
    printf("%-60s failed: %s\n", q->sql, status ? uv_err_name(status) : sqlite3_errstr(q->rc));
}

static void open_db(uvt_work_t* req) {
  (void)req;
  sqlite3_open(":memory:", &db);
}

int main(void) {
  uv_loop_t* loop = uv_default_loop();
  uvt_pool_options_t opts;
  uvt_pool_t* db_pool;
  uvt_bridge_t bridge;
  uvt_work_t open_req;
  query_t queries[] = {
      {.sql = "CREATE TABLE t(x INTEGER)"},
      {.sql = "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 100000) "
              "INSERT INTO t SELECT i FROM c"},
      {.sql = "SELECT count(*) FROM t"},
      {.sql = "SELECT sum(x) FROM t"},
      {.sql = "SELECT * FROM no_such_table"},
  };
  size_t i;

  uvt_pool_options_init(&opts);
  opts.max_threads = 1; /* one connection, one thread */
  opts.name = "sqlite";
  if (uvt_pool_new(&db_pool, &opts) != 0 || uvt_bridge_init(loop, &bridge, db_pool) != 0) return 1;

  /* Submitted in order, run in order on the one database thread. */
  uvt_threaded(&bridge, &open_req, open_db, NULL);
  for (i = 0; i < sizeof(queries) / sizeof(queries[0]); i++)
    uvt_threaded(&bridge, &queries[i].req, run_query, print_answer);
  uv_run(loop, UV_RUN_DEFAULT);

  uvt_bridge_close(&bridge, NULL);
  uv_run(loop, UV_RUN_DEFAULT);
  sqlite3_close(db); /* the pool's thread is idle now */
  uvt_pool_free(db_pool);
  return uv_loop_close(loop) == 0 && queries[3].answer == 5000050000LL ? 0 : 1;
}
