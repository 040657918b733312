#!/usr/bin/env bash
# Why the addon is linked with -z nodelete, without node: a plugin that
# embeds uvthreads and uses the default pool cannot be unloaded. The plugin
# runs one job, closes its bridge and its loop (uv_loop_close returns 0), the
# host dlclose()s it, and the default pool's threads, which the library
# never stops, run on in unmapped code: SIGSEGV (exit 139) at once.
# Node does the same dlclose when the last environment that loaded an addon
# is freed (an addon required only in worker_threads).
#
#   bash examples/node/repro-dlclose.sh            # crashes (139)
#   bash examples/node/repro-dlclose.sh nodelete   # plugin linked -z nodelete: survives (0)
set -u
src=$(cd "$(dirname "$0")/../.." && pwd)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cat > "$dir/plugin.c" <<'EOF'
#include <uvthreads.h>
static void work(uvt_work_t* req) { (void)req; }
int plugin_run(void) {
  uv_loop_t loop;
  uvt_bridge_t bridge;
  uvt_work_t req = {0};
  uv_loop_init(&loop);
  uvt_bridge_init(&loop, &bridge, NULL); /* the default pool */
  uvt_threaded(&bridge, &req, work, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  uvt_bridge_close(&bridge, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  return uv_loop_close(&loop);
}
EOF
cat > "$dir/main.c" <<'EOF'
#include <dlfcn.h>
#include <stdio.h>
#include <unistd.h>
int main(int argc, char** argv) {
  void* h = dlopen(argv[1], RTLD_NOW);
  int (*run)(void);
  (void)argc;
  if (h == NULL) return puts(dlerror()), 1;
  run = (int (*)(void))dlsym(h, "plugin_run");
  printf("plugin_run() = %d (bridge and loop closed)\n", run());
  dlclose(h);
  puts("dlclose() done; sleeping 12 s (past the pool's 10 s idle timeout)");
  fflush(stdout);
  sleep(12);
  puts("survived");
  return 0;
}
EOF
extra=""
[ "${1:-}" = nodelete ] && extra="-Wl,-z,nodelete"
cc=${CC:-gcc}
"$cc" -std=gnu11 -O1 -g -fPIC -shared -D_GNU_SOURCE -DUVT_BUILDING -I"$src/include" \
  -o "$dir/plugin.so" "$dir/plugin.c" "$src"/src/*.c -luv -lpthread $extra || exit 2
"$cc" -std=gnu11 -o "$dir/main" "$dir/main.c" -ldl || exit 2
"$dir/main" "$dir/plugin.so"
rc=$?
echo "exit status $rc"
exit $rc
