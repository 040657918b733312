/* A thread that calls into the loop with uvt_sync_await.
 *
 * Only the loop may touch its streams. A worker thread that produces lines
 * asks the loop to write each one and waits for the write's real outcome:
 * the loop function starts a uv_write and resolves the await from the
 * write callback. The other end of a socket pair, also on the loop, counts
 * what arrives. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <uvthreads.h>

#define LINES 200

static uv_loop_t* loop;
static uvt_bridge_t bridge;
static uv_pipe_t writer_end, reader_end;
static long bytes_read;

typedef struct {
  uv_write_t req;
  uvt_await_t* aw;
  char text[64];
} line_write_t;

static void on_written(uv_write_t* req, int status) {
  line_write_t* w = (line_write_t*)req;
  uvt_await_resolve(w->aw, status); /* the thread learns the write's result */
  free(w);
}

static void write_line(uvt_await_t* aw, void* arg) { /* on the loop */
  line_write_t* w = malloc(sizeof(*w));
  uv_buf_t buf;
  int rc;
  w->aw = aw;
  snprintf(w->text, sizeof(w->text), "%s", (const char*)arg);
  buf = uv_buf_init(w->text, (unsigned)strlen(w->text));
  rc = uv_write(&w->req, (uv_stream_t*)&writer_end, &buf, 1, on_written);
  if (rc != 0) { /* resolve now with the error */
    free(w);
    uvt_await_resolve(aw, rc);
  }
}

static void finish(void* arg) { /* on the loop, after the thread is done */
  (void)arg;
  uv_close((uv_handle_t*)&writer_end, NULL); /* the reader sees EOF */
  uvt_bridge_unref(&bridge);
}

static int failures;
static void producer(void* arg) { /* a plain thread, not the loop */
  char line[64];
  int i;
  (void)arg;
  for (i = 1; i <= LINES; i++) {
    snprintf(line, sizeof(line), "line %d from the producer thread\n", i);
    if (uvt_sync_await(&bridge, write_line, line) != 0) failures++;
  }
  uvt_call(&bridge, finish, NULL);
}

static void alloc_cb(uv_handle_t* h, size_t size, uv_buf_t* buf) {
  static char storage[65536];
  (void)h;
  buf->base = storage;
  buf->len = size < sizeof(storage) ? size : sizeof(storage);
}

static void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
  (void)buf;
  if (n > 0) bytes_read += n;
  if (n < 0) uv_close((uv_handle_t*)s, NULL);
}

int main(void) {
  int fds[2];
  uv_thread_t thread;
  long expected = 0;
  int i;
  loop = uv_default_loop();
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0) return 1;
  uv_pipe_init(loop, &writer_end, 0);
  uv_pipe_init(loop, &reader_end, 0);
  uv_pipe_open(&writer_end, fds[0]);
  uv_pipe_open(&reader_end, fds[1]);
  uv_read_start((uv_stream_t*)&reader_end, alloc_cb, on_read);
  if (uvt_bridge_init(loop, &bridge, NULL) != 0) return 1;

  uvt_bridge_ref(&bridge); /* the thread keeps calling in */
  uv_thread_create(&thread, producer, NULL);
  uv_run(loop, UV_RUN_DEFAULT);
  uv_thread_join(&thread);

  for (i = 1; i <= LINES; i++) {
    char line[64];
    expected += snprintf(line, sizeof(line), "line %d from the producer thread\n", i);
  }
  printf("%d lines written by the loop for a thread, %ld bytes read, %d failures\n", LINES,
         bytes_read, failures);
  uvt_bridge_close(&bridge, NULL);
  uv_run(loop, UV_RUN_DEFAULT);
  return uv_loop_close(loop) == 0 && bytes_read == expected && failures == 0 ? 0 : 1;
}
