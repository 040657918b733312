/* A pool of jobs reporting progress to the loop through a channel.
 *
 * Each job runs on the pool and puts a message per step; the loop owns the
 * terminal and draws one status line. The channel is bounded, so jobs slow
 * down instead of piling up messages if the loop falls behind. */
#include <stdio.h>
#include <stdlib.h>

#include <uvthreads.h>

#define JOBS 4
#define STEPS 25

typedef struct {
  uvt_work_t req;
  int id;
} job_t;

typedef struct {
  int job, step;
} progress_msg_t;

static uvt_chan_t progress;
static int steps_done[JOBS];
static int jobs_left = JOBS;

static void job_work(uvt_work_t* req) { /* on a pool thread */
  job_t* job = (job_t*)req;
  int step;
  for (step = 1; step <= STEPS; step++) {
    progress_msg_t* msg = malloc(sizeof(*msg));
    uv_sleep(2); /* the real work */
    msg->job = job->id;
    msg->step = step;
    if (uvt_chan_put(&progress, msg) != 0) free(msg); /* stopped: not taken */
  }
}

static void job_after(uvt_work_t* req, int status) {
  (void)req;
  (void)status;
  if (--jobs_left == 0) uvt_chan_close(&progress); /* the last report is queued */
}

static void on_progress(uvt_chan_t* ch, int status, void* item) {
  progress_msg_t* msg = item;
  int i;
  (void)ch;
  if (msg == NULL) {
    printf("all jobs done (%s)\n", uv_err_name(status));
    return;
  }
  steps_done[msg->job] = msg->step;
  free(msg);
  printf("progress:");
  for (i = 0; i < JOBS; i++) printf("  job %d %3d%%", i, steps_done[i] * 100 / STEPS);
  printf("\n");
}

int main(void) {
  uv_loop_t* loop = uv_default_loop();
  uvt_bridge_t bridge;
  job_t jobs[JOBS];
  int i;
  if (uvt_bridge_init(loop, &bridge, NULL) != 0) return 1;
  uvt_chan_init(&bridge, &progress, 4, on_progress);
  for (i = 0; i < JOBS; i++) {
    jobs[i].id = i;
    uvt_threaded(&bridge, &jobs[i].req, job_work, job_after);
  }
  uv_run(loop, UV_RUN_DEFAULT);
  uvt_bridge_close(&bridge, NULL);
  uv_run(loop, UV_RUN_DEFAULT);
  for (i = 0; i < JOBS; i++)
    if (steps_done[i] != STEPS) return 1;
  return uv_loop_close(loop);
}
