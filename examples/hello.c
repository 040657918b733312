/* Count the bytes of a file with blocking stdio, off the loop thread. */
#include <stdio.h>
#include <uvthreads.h>

typedef struct {
  uvt_work_t req; /* first, so the request and the job share an address */
  const char* path;
  long bytes;
} count_job_t;

static void count_bytes(uvt_work_t* req) { /* on a pool thread: may block */
  count_job_t* job = (count_job_t*)req;
  FILE* f = fopen(job->path, "rb");
  if (f == NULL) return;
  while (fgetc(f) != EOF) job->bytes++;
  fclose(f);
}

static void done(uvt_work_t* req, int status) { /* on the loop thread */
  count_job_t* job = (count_job_t*)req;
  printf("%s: %ld bytes (status %s)\n", job->path, job->bytes, status ? uv_err_name(status) : "ok");
}

int main(int argc, char** argv) {
  uv_loop_t* loop = uv_default_loop();
  uvt_bridge_t bridge;
  count_job_t job = {.path = argc > 1 ? argv[1] : argv[0]};

  uvt_bridge_init(loop, &bridge, NULL); /* NULL: the default pool */
  uvt_threaded(&bridge, &job.req, count_bytes, done);
  uv_run(loop, UV_RUN_DEFAULT); /* returns once the job is delivered */

  uvt_bridge_close(&bridge, NULL);
  uv_run(loop, UV_RUN_DEFAULT);
  return uv_loop_close(loop);
}
