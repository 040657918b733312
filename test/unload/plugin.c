/* A plugin that embeds uvthreads (built from its sources) and uses the
 * default pool: one job, then the bridge and the loop are closed. */
#include <uvthreads.h>

static void work(uvt_work_t* req) { (void)req; }

int plugin_run(void);
int plugin_run(void) {
  uv_loop_t loop;
  uvt_bridge_t bridge;
  uvt_work_t req;
  int rc;
  if ((rc = uv_loop_init(&loop)) != 0) return rc;
  if ((rc = uvt_bridge_init(&loop, &bridge, NULL)) != 0) return rc;
  if ((rc = uvt_threaded(&bridge, &req, work, NULL)) != 0) return rc;
  uv_run(&loop, UV_RUN_DEFAULT);
  if ((rc = uvt_bridge_close(&bridge, NULL)) != 0) return rc;
  uv_run(&loop, UV_RUN_DEFAULT);
  return uv_loop_close(&loop);
}
