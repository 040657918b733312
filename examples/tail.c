/* Tailing a growing file with uvt_threaded_iterable_separate.
 *
 * The generator follows the file forever (like tail -f) on a thread of its
 * own, so it never holds a pool slot. A timer on the loop keeps appending
 * lines; after --lines N lines the loop closes the iterator, which wakes the
 * generator (its uvt_yield returns UV_EPIPE) so it can close the file.
 *
 *   uvt-tail [--lines N] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uvthreads.h>

typedef struct {
  uvt_iter_t it;
  char path[256];
  long seen, wanted;
} tail_t;

static int follow(uvt_iter_t* it) { /* on its own thread: blocking reads */
  tail_t* t = (tail_t*)it;
  char buf[512];
  FILE* f = fopen(t->path, "r");
  if (f == NULL) return UV_ENOENT;
  for (;;) {
    if (fgets(buf, sizeof(buf), f) == NULL) { /* at the end: wait for more */
      clearerr(f);
      uv_sleep(5);
      continue;
    }
    char* line = strdup(buf);
    if (uvt_yield(it, line) != 0) { /* closed: the line was not taken */
      free(line);
      break;
    }
  }
  fclose(f);
  return 0;
}

static void free_line(void* line) { free(line); }

static uv_timer_t writer;
static FILE* out;
static long written;

static void on_line(uvt_iter_t* it, int status, void* line) {
  tail_t* t = (tail_t*)it;
  if (line == NULL) { /* the final callback: UV_ECANCELED, we closed it */
    printf("tail ended (%s) after %ld lines\n", uv_err_name(status), t->seen);
    uv_timer_stop(&writer);
    uv_close((uv_handle_t*)&writer, NULL);
    return;
  }
  printf("tail: %s", (char*)line);
  free(line);
  if (++t->seen == t->wanted) uvt_iter_stop(it, free_line); /* buffered lines are dropped */
}

static void append_line(uv_timer_t* timer) {
  (void)timer;
  fprintf(out, "line %ld written at %llu ms\n", ++written,
          (unsigned long long)(uv_hrtime() / 1000000));
  fflush(out);
}

int main(int argc, char** argv) {
  uv_loop_t* loop = uv_default_loop();
  uvt_bridge_t bridge;
  tail_t t;
  memset(&t, 0, sizeof(t));
  t.wanted = argc > 2 && strcmp(argv[1], "--lines") == 0 ? atol(argv[2]) : 20;
  snprintf(t.path, sizeof(t.path), "%s/uvt-tail-%d.log", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp",
           (int)uv_os_getpid());
  out = fopen(t.path, "w");
  if (out == NULL || uvt_bridge_init(loop, &bridge, NULL) != 0) return 1;

  uv_timer_init(loop, &writer);
  uv_timer_start(&writer, append_line, 0, 2); /* the file grows every 2 ms */
  uvt_threaded_iterable_separate(&bridge, &t.it, 8, follow, on_line);
  uv_run(loop, UV_RUN_DEFAULT);

  fclose(out);
  remove(t.path);
  uvt_bridge_close(&bridge, NULL);
  uv_run(loop, UV_RUN_DEFAULT);
  return uv_loop_close(loop) == 0 && t.seen == t.wanted ? 0 : 1;
}
