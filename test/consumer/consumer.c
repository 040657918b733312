/* An outside program: built against an installed uvthreads, runs a job. */
#include <stdio.h>
#include <uvthreads.h>

typedef struct {
  uvt_work_t req;
  long input, result;
} job_t;

static void work(uvt_work_t* req) {
  job_t* job = (job_t*)req;
  long i;
  for (i = 1; i <= job->input; i++) job->result += i;
}

static void after(uvt_work_t* req, int status) {
  job_t* job = (job_t*)req;
  printf("uvthreads %s: status %d, sum 1..%ld = %ld\n", uvt_version_string(), status,
         job->input, job->result);
}

int main(void) {
  uv_loop_t loop;
  uvt_bridge_t bridge;
  job_t job = {.input = 1000};
  if (uv_loop_init(&loop) || uvt_bridge_init(&loop, &bridge, NULL)) return 1;
  if (uvt_threaded(&bridge, &job.req, work, after)) return 1;
  uv_run(&loop, UV_RUN_DEFAULT);
  uvt_bridge_close(&bridge, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  return uv_loop_close(&loop) == 0 && job.result == 500500 ? 0 : 1;
}
