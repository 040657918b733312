/* uvt-demo: a libuv program that uses SQLite, a blocking API, without ever
 * blocking its loop. It
 *
 *   1. creates a database in a temporary directory,
 *   2. inserts --rows rows on a dedicated thread (uvt_threaded_separate),
 *      drawing a progress bar from messages sent through a channel,
 *   3. streams a query over every row through uvt_threaded_iterable, with a
 *      bounded buffer (backpressure),
 *   4. serves range queries on 127.0.0.1 (a line protocol): rows are streamed
 *      to the socket, and the iterator is paused while the socket's write
 *      queue is long and resumed when it drains. A client thread in this
 *      process sends the queries and reads slowly at first,
 *   5. runs the same insert and query inline on the loop, for comparison,
 *
 * while a 1 ms timer measures how late the loop runs. It exits by itself and
 * prints a summary.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uvthreads.h>

#define CHECK(x)                                                                          \
  do {                                                                                    \
    int check_rc_ = (x);                                                                  \
    if (check_rc_ != 0) {                                                                 \
      fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, uv_strerror(check_rc_)); \
      exit(1);                                                                            \
    }                                                                                     \
  } while (0)

static struct {
  long rows;
  int tty;
} opt = {200000, 0};

static uv_loop_t* loop;
static uvt_bridge_t bridge;
static char dir[256], db_path[300], inline_path[300];

/* ---- The loop's lag: a 1 ms timer that notes its worst delay ------------ */

static struct {
  uv_timer_t timer;
  uint64_t last, worst;
  int done;
} lag;

static void lag_tick(uv_timer_t* t) {
  uint64_t now = uv_hrtime();
  if (lag.last != 0 && now - lag.last > lag.worst) lag.worst = now - lag.last;
  lag.last = now;
  if (lag.done) uv_timer_stop(t);
}
static void lag_start(void) {
  lag.last = 0;
  lag.worst = 0;
  lag.done = 0;
  uv_timer_start(&lag.timer, lag_tick, 1, 1);
}
/* The phase's work is over: the next tick measures the last gap (which a
 * blocked loop makes long) and stops the timer. */
static void lag_finish(void) { lag.done = 1; }
/* Worst delay beyond the 1 ms period, in ms, once the loop has returned. */
static double lag_result(void) {
  return lag.worst > 1000000 ? (double)(lag.worst - 1000000) / 1e6 : 0.0;
}

/* ---- SQLite, used only on worker threads (blocking calls) --------------- */

static sqlite3* db_open(const char* path, int readonly) {
  sqlite3* db = NULL;
  int flags = readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
  if (sqlite3_open_v2(path, &db, flags | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
    fprintf(stderr, "sqlite3_open_v2(%s): %s\n", path, sqlite3_errmsg(db));
    exit(1);
  }
  return db;
}

static void db_exec(sqlite3* db, const char* sql) {
  char* err = NULL;
  if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
    fprintf(stderr, "%s: %s\n", sql, err);
    exit(1);
  }
}

/* Creates the table and inserts opt.rows rows; report(i) every 1%. */
static void db_fill(const char* path, void (*report)(long done)) {
  sqlite3* db = db_open(path, 0);
  sqlite3_stmt* st;
  long i, step = opt.rows / 100 > 0 ? opt.rows / 100 : 1;
  db_exec(db, "PRAGMA journal_mode=WAL");
  db_exec(db, "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, value REAL)");
  db_exec(db, "BEGIN");
  sqlite3_prepare_v2(db, "INSERT INTO items(id, name, value) VALUES (?, ?, ?)", -1, &st, NULL);
  for (i = 1; i <= opt.rows; i++) {
    char name[32];
    snprintf(name, sizeof(name), "item-%ld", i);
    sqlite3_bind_int64(st, 1, i);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(st, 3, (double)(i % 1000) / 10.0);
    if (sqlite3_step(st) != SQLITE_DONE) exit(1);
    sqlite3_reset(st);
    if (report != NULL && i % step == 0) report(i);
  }
  sqlite3_finalize(st);
  db_exec(db, "COMMIT");
  sqlite3_close(db);
}

typedef struct {
  long id;
  double value;
  char name[24];
} row_t;

/* Runs SELECT over [lo, hi] and hands every row to emit (1 = stop). */
static int db_scan(const char* path, long lo, long hi, int (*emit)(void* ctx, row_t* row), void* ctx) {
  sqlite3* db = db_open(path, 1);
  sqlite3_stmt* st;
  int rc = 0;
  sqlite3_prepare_v2(db, "SELECT id, name, value FROM items WHERE id BETWEEN ? AND ? ORDER BY id",
                     -1, &st, NULL);
  sqlite3_bind_int64(st, 1, lo);
  sqlite3_bind_int64(st, 2, hi);
  while (sqlite3_step(st) == SQLITE_ROW) {
    row_t* row = malloc(sizeof(*row));
    row->id = (long)sqlite3_column_int64(st, 0);
    snprintf(row->name, sizeof(row->name), "%s", (const char*)sqlite3_column_text(st, 1));
    row->value = sqlite3_column_double(st, 2);
    if (emit(ctx, row)) {
      rc = UV_ECANCELED;
      break;
    }
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return rc;
}

/* ---- 2. Insert on a dedicated thread, progress through a channel ------- */

static uvt_chan_t progress;
static uvt_work_t insert_req;
static int insert_pending;
static double insert_seconds;
static uint64_t insert_start;

static void report_progress(long done) {
  /* Blocks if the loop falls behind: the channel holds at most 16. */
  CHECK(uvt_chan_put(&progress, (void*)(intptr_t)done));
}

static void insert_work(uvt_work_t* req) {
  (void)req;
  db_fill(db_path, report_progress);
  CHECK(uvt_chan_close(&progress));
}

static void phase_part_done(void) {
  if (--insert_pending == 0) lag_finish();
}

static void on_progress(uvt_chan_t* ch, int status, void* item) {
  static int last_pct = -1;
  int pct;
  (void)ch;
  if (status != 0) { /* UV_EOF: the inserting thread closed the channel */
    if (opt.tty) printf("\n");
    phase_part_done();
    return;
  }
  pct = (int)((intptr_t)item * 100 / opt.rows);
  if (pct == last_pct) return;
  last_pct = pct;
  if (opt.tty) {
    printf("\r   [%-50.*s] %3d%%", pct / 2, "##################################################", pct);
    fflush(stdout);
  } else if (pct % 25 == 0) {
    printf("   %d%%\n", pct);
  }
}

static void insert_after(uvt_work_t* req, int status) {
  (void)req;
  CHECK(status);
  insert_seconds = (double)(uv_hrtime() - insert_start) / 1e9;
  phase_part_done();
}

/* ---- 3. Stream every row through a generator --------------------------- */

typedef struct {
  uvt_iter_t it;
  long lo, hi;
  long rows;
  double sum;
  struct client_conn_s* conn; /* set when the rows go to a socket */
} scan_t;

static int yield_row(void* ctx, row_t* row) {
  if (uvt_yield(ctx, row) != 0) { /* closed early: the row was not taken */
    free(row);
    return 1;
  }
  return 0;
}
static int scan_gen(uvt_iter_t* it) {
  scan_t* s = (scan_t*)it;
  return db_scan(db_path, s->lo, s->hi, yield_row, it);
}

static scan_t full_scan;
static double scan_seconds;
static uint64_t scan_start;

static void on_scan_row(uvt_iter_t* it, int status, void* item) {
  scan_t* s = (scan_t*)it;
  if (item == NULL) {
    CHECK(status == UV_EOF ? 0 : status);
    scan_seconds = (double)(uv_hrtime() - scan_start) / 1e9;
    lag_finish();
    return;
  }
  s->rows++;
  s->sum += ((row_t*)item)->value;
  free(item);
}

/* ---- 4. A query server on 127.0.0.1 ------------------------------------ */

#define HIGH_WATER (64 * 1024)
#define LOW_WATER (16 * 1024)
#define OUT_CHUNK (32 * 1024)

typedef struct client_conn_s {
  uv_tcp_t tcp;
  char line[256];
  size_t line_len;
  scan_t scan;
  int scanning; /* an iterator runs: its final callback comes before the close */
  int closing;
  int paused;
  char* out;
  size_t out_len;
} client_conn_t;

typedef struct {
  uv_write_t req;
  char* buf;
} out_write_t;

static uv_tcp_t server;
static struct {
  long queries, rows_sent, pauses;
} served;

static void free_row(void* row) { free(row); }

static void on_conn_closed(uv_handle_t* h) {
  client_conn_t* c = h->data;
  free(c->out);
  free(c);
}

static void on_written(uv_write_t* req, int status) {
  out_write_t* w = (out_write_t*)req;
  client_conn_t* c = req->data;
  (void)status;
  free(w->buf);
  free(w);
  /* The socket drained: let the generator run again. */
  if (c->paused && !c->closing && c->tcp.write_queue_size < LOW_WATER) {
    c->paused = 0;
    CHECK(uvt_iter_resume(&c->scan.it));
  }
}

static void flush_out(client_conn_t* c) {
  out_write_t* w;
  uv_buf_t buf;
  if (c->out_len == 0) return;
  w = malloc(sizeof(*w));
  w->buf = c->out;
  w->req.data = c;
  buf = uv_buf_init(c->out, (unsigned)c->out_len);
  c->out = NULL;
  c->out_len = 0;
  CHECK(uv_write(&w->req, (uv_stream_t*)&c->tcp, &buf, 1, on_written));
}

static void out_append(client_conn_t* c, const char* text, size_t n) {
  if (c->out == NULL) c->out = malloc(OUT_CHUNK);
  memcpy(c->out + c->out_len, text, n);
  c->out_len += n;
  if (c->out_len > OUT_CHUNK - 128) flush_out(c);
}

static void on_query_row(uvt_iter_t* it, int status, void* item) {
  scan_t* s = (scan_t*)it;
  client_conn_t* c = s->conn;
  char line[128];
  int n;
  if (item == NULL) {
    c->scanning = 0;
    c->paused = 0;
    if (c->closing) { /* the connection went away mid-query */
      uv_close((uv_handle_t*)&c->tcp, on_conn_closed);
      return;
    }
    n = snprintf(line, sizeof(line), status == UV_EOF ? "END %ld\n" : "ERR %ld\n", s->rows);
    out_append(c, line, (size_t)n);
    flush_out(c);
    return;
  }
  {
    row_t* row = item;
    n = snprintf(line, sizeof(line), "%ld,%s,%.1f\n", row->id, row->name, row->value);
    free(row);
  }
  out_append(c, line, (size_t)n);
  s->rows++;
  served.rows_sent++;
  /* Backpressure: a slow reader makes the write queue grow; stop pulling
   * rows from the database until it drains. */
  if (!c->paused && c->tcp.write_queue_size > HIGH_WATER) {
    c->paused = 1;
    served.pauses++;
    CHECK(uvt_iter_pause(it));
  }
}

static void close_conn(client_conn_t* c) {
  if (c->closing) return;
  c->closing = 1;
  if (c->scanning)
    CHECK(uvt_iter_stop(&c->scan.it, free_row)); /* its final callback closes */
  else
    uv_close((uv_handle_t*)&c->tcp, on_conn_closed);
}

static void handle_line(client_conn_t* c, const char* line) {
  long lo, hi;
  if (strncmp(line, "QUIT", 4) == 0 || c->scanning) {
    close_conn(c); /* one query at a time per connection */
    return;
  }
  if (sscanf(line, "RANGE %ld %ld", &lo, &hi) != 2) {
    out_append(c, "ERR\n", 4);
    flush_out(c);
    return;
  }
  memset(&c->scan, 0, sizeof(c->scan));
  c->scan.lo = lo;
  c->scan.hi = hi;
  c->scan.conn = c;
  c->scanning = 1;
  served.queries++;
  CHECK(uvt_threaded_iterable(&bridge, &c->scan.it, 256, scan_gen, on_query_row));
}

static void alloc_cb(uv_handle_t* h, size_t size, uv_buf_t* buf) {
  (void)h;
  buf->base = malloc(size);
  buf->len = buf->base ? size : 0;
}

static void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
  client_conn_t* c = stream->data;
  ssize_t i;
  for (i = 0; i < nread; i++) {
    if (buf->base[i] == '\n' || c->line_len == sizeof(c->line) - 1) {
      c->line[c->line_len] = '\0';
      c->line_len = 0;
      handle_line(c, c->line);
    } else {
      c->line[c->line_len++] = buf->base[i];
    }
  }
  free(buf->base);
  if (nread < 0) close_conn(c);
}

static void on_connection(uv_stream_t* srv, int status) {
  client_conn_t* c;
  CHECK(status);
  c = calloc(1, sizeof(*c));
  CHECK(uv_tcp_init(loop, &c->tcp));
  c->tcp.data = c;
  CHECK(uv_accept(srv, (uv_stream_t*)&c->tcp));
  {
    /* A modest kernel send buffer, so that a slow reader shows up in the
     * stream's write queue (and so in the backpressure) quickly. */
    int sndbuf = 32 * 1024;
    uv_send_buffer_size((uv_handle_t*)&c->tcp, &sndbuf);
  }
  CHECK(uv_read_start((uv_stream_t*)&c->tcp, alloc_cb, on_read));
}

/* The client: a plain thread with blocking sockets, like another program. */
typedef struct {
  int port;
  long rows_received[3];
  int ok;
} client_t;

static client_t client;

static long client_query(int fd, long lo, long hi, int slow) {
  char req[64], buf[8192], line[256];
  size_t line_len = 0;
  long rows = 0, total = 0;
  int n = snprintf(req, sizeof(req), "RANGE %ld %ld\n", lo, hi);
  if (send(fd, req, (size_t)n, 0) != n) return -1;
  for (;;) {
    ssize_t got = recv(fd, buf, sizeof(buf), 0);
    ssize_t i;
    if (got <= 0) return -1;
    if (slow && total < 50) {
      total++;
      uv_sleep(2); /* a slow reader at first: the server must pause */
    }
    for (i = 0; i < got; i++) {
      if (buf[i] != '\n') {
        if (line_len < sizeof(line) - 1) line[line_len++] = buf[i];
        continue;
      }
      line[line_len] = '\0';
      line_len = 0;
      if (strncmp(line, "END ", 4) == 0) return atol(line + 4) == rows ? rows : -1;
      rows++;
    }
  }
}

static void client_done(void* arg) {
  (void)arg;
  uv_close((uv_handle_t*)&server, NULL); /* the demo's server has served its client */
  lag_finish();
  uvt_bridge_unref(&bridge);
}

static void client_main(void* arg) {
  client_t* cl = arg;
  struct sockaddr_in addr;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int window = 32 * 1024; /* a small receive window, like a slow remote peer */
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &window, sizeof(window));
  memset(&addr, 0, sizeof(addr));
  addr.sin_family = AF_INET;
  addr.sin_port = htons((uint16_t)cl->port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd >= 0 && connect(fd, (struct sockaddr*)&addr, sizeof(addr)) == 0) {
    cl->rows_received[0] = client_query(fd, 1, opt.rows, 1);
    cl->rows_received[1] = client_query(fd, 10, 19, 0);
    cl->rows_received[2] = client_query(fd, opt.rows / 2, opt.rows / 2 + 999, 0);
    cl->ok = cl->rows_received[0] == opt.rows && cl->rows_received[1] == 10;
    send(fd, "QUIT\n", 5, 0);
  }
  if (fd >= 0) close(fd);
  CHECK(uvt_call(&bridge, client_done, NULL));
}

/* ---- 5. The same work inline on the loop -------------------------------- */

static long inline_rows;
static int count_row(void* ctx, row_t* row) {
  (void)ctx;
  inline_rows++;
  free(row);
  return 0;
}
static void inline_work(uv_timer_t* t) {
  uv_close((uv_handle_t*)t, NULL);
  db_fill(inline_path, NULL); /* blocks the loop for the whole insert... */
  db_scan(inline_path, 1, opt.rows, count_row, NULL); /* ...and the query */
  lag_finish();
}

/* ---- main ---------------------------------------------------------------- */

static void remove_db(const char* path) {
  char p[320];
  uv_fs_t req;
  const char* suffix[] = {"", "-wal", "-shm", "-journal"};
  int i;
  for (i = 0; i < 4; i++) {
    snprintf(p, sizeof(p), "%s%s", path, suffix[i]);
    uv_fs_unlink(NULL, &req, p, NULL);
    uv_fs_req_cleanup(&req);
  }
}

int main(int argc, char** argv) {
  struct sockaddr_in addr;
  struct sockaddr_storage bound;
  int namelen = sizeof(bound);
  double lag_insert, lag_scan, lag_serve, lag_inline;
  uv_fs_t req;
  uv_thread_t client_thread;
  int i;

  for (i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--quick") == 0) {
      opt.rows = 20000;
    } else if (strcmp(argv[i], "--rows") == 0 && i + 1 < argc) {
      opt.rows = atol(argv[++i]);
      if (opt.rows < 100) opt.rows = 100;
    } else {
      printf("usage: uvt-demo [--rows N] [--quick]\n\n"
             "A libuv program using SQLite (a blocking API) through uvthreads: it creates a\n"
             "database in a temporary directory, inserts N rows on a dedicated thread with\n"
             "a progress bar fed by a channel, streams every row through a generator with\n"
             "backpressure, serves range queries on 127.0.0.1 (rows streamed to the socket,\n"
             "the generator paused while the socket's write queue is long), then does the\n"
             "same insert and query inline on the loop, and reports how late a 1 ms timer\n"
             "ran each time.\n\n"
             "  --rows N   rows to insert (default 200000)\n"
             "  --quick    20000 rows (used by the test suite)\n");
      return strcmp(argv[i], "--help") == 0 ? 0 : 2;
    }
  }
  opt.tty = isatty(1);
  loop = uv_default_loop();
  CHECK(uvt_bridge_init(loop, &bridge, NULL));
  CHECK(uv_timer_init(loop, &lag.timer));
  printf("uvthreads %s demo: SQLite %s from a libuv loop, %ld rows\n\n", uvt_version_string(),
         sqlite3_libversion(), opt.rows);

  /* 1. A temporary directory. */
  snprintf(dir, sizeof(dir), "%s/uvt-demo-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  if (uv_fs_mkdtemp(NULL, &req, dir, NULL) < 0) {
    fprintf(stderr, "cannot create a directory under %s\n", dir);
    return 1;
  }
  snprintf(dir, sizeof(dir), "%s", req.path);
  uv_fs_req_cleanup(&req);
  snprintf(db_path, sizeof(db_path), "%s/demo.db", dir);
  snprintf(inline_path, sizeof(inline_path), "%s/inline.db", dir);
  printf("1. database: %s\n", db_path);

  /* 2. Insert. */
  printf("2. inserting on a dedicated thread, progress through a channel\n");
  CHECK(uvt_chan_init(&bridge, &progress, 16, on_progress));
  insert_pending = 2; /* the work's after, and the channel's end */
  insert_start = uv_hrtime();
  lag_start();
  CHECK(uvt_threaded_separate(&bridge, &insert_req, insert_work, insert_after));
  CHECK(uv_run(loop, UV_RUN_DEFAULT));
  lag_insert = lag_result();
  printf("   %ld rows in %.2f s (%.0f rows/s); worst loop lag %.2f ms\n", opt.rows, insert_seconds,
         opt.rows / insert_seconds, lag_insert);

  /* 3. Stream every row. */
  printf("3. streaming every row through uvt_threaded_iterable (256 in flight)\n");
  full_scan.lo = 1;
  full_scan.hi = opt.rows;
  scan_start = uv_hrtime();
  lag_start();
  CHECK(uvt_threaded_iterable(&bridge, &full_scan.it, 256, scan_gen, on_scan_row));
  CHECK(uv_run(loop, UV_RUN_DEFAULT));
  lag_scan = lag_result();
  printf("   %ld rows, sum of values %.1f, in %.2f s; worst loop lag %.2f ms\n", full_scan.rows,
         full_scan.sum, scan_seconds, lag_scan);

  /* 4. Serve queries. */
  CHECK(uv_tcp_init(loop, &server));
  CHECK(uv_ip4_addr("127.0.0.1", 0, &addr));
  CHECK(uv_tcp_bind(&server, (const struct sockaddr*)&addr, 0));
  CHECK(uv_listen((uv_stream_t*)&server, 16, on_connection));
  CHECK(uv_tcp_getsockname(&server, (struct sockaddr*)&bound, &namelen));
  client.port = ntohs(((struct sockaddr_in*)&bound)->sin_port);
  printf("4. serving range queries on 127.0.0.1:%d; a client thread queries it\n", client.port);
  uvt_bridge_ref(&bridge); /* the client thread will call back into the loop */
  lag_start();
  CHECK(uv_thread_create(&client_thread, client_main, &client));
  CHECK(uv_run(loop, UV_RUN_DEFAULT));
  CHECK(uv_thread_join(&client_thread));
  lag_serve = lag_result();
  printf("   %ld queries, %ld rows sent, generator paused %ld times by the socket; "
         "worst loop lag %.2f ms\n",
         served.queries, served.rows_sent, served.pauses, lag_serve);

  /* 5. The same work inline. */
  printf("5. the same insert and query inline on the loop\n");
  {
    uv_timer_t start;
    CHECK(uv_timer_init(loop, &start));
    CHECK(uv_timer_start(&start, inline_work, 5, 0));
    lag_start();
    CHECK(uv_run(loop, UV_RUN_DEFAULT));
    lag_inline = lag_result();
  }
  printf("   %ld rows; worst loop lag %.2f ms\n\n", inline_rows, lag_inline);

  uv_close((uv_handle_t*)&lag.timer, NULL);
  CHECK(uvt_bridge_close(&bridge, NULL));
  CHECK(uv_run(loop, UV_RUN_DEFAULT));
  CHECK(uv_loop_close(loop));
  remove_db(db_path);
  remove_db(inline_path);
  uv_fs_rmdir(NULL, &req, dir, NULL);
  uv_fs_req_cleanup(&req);

  printf("summary: %ld rows inserted and streamed; %ld queries served (%ld rows, %ld pauses); "
         "worst loop lag with uvthreads %.2f ms, inline %.2f ms\n",
         opt.rows, served.queries, served.rows_sent, served.pauses,
         lag_insert > lag_scan ? (lag_insert > lag_serve ? lag_insert : lag_serve)
                               : (lag_scan > lag_serve ? lag_scan : lag_serve),
         lag_inline);
  return client.ok && full_scan.rows == opt.rows && inline_rows == opt.rows ? 0 : 1;
}
