/* A host that dlopen()s a plugin embedding uvthreads, runs it, dlclose()s
 * it and lives on (as Node does with an addon used only by workers): the
 * library's threads must be gone with its code. Before the default pool was
 * stopped at unload, its threads ran on in unmapped code (SIGSEGV). */
#include <dlfcn.h>
#include <stdio.h>
#include <uv.h>

int main(int argc, char** argv) {
  int cycle;
  if (argc != 2) return 2;
  for (cycle = 0; cycle < 5; cycle++) {
    void* plugin = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    int (*run)(void);
    int rc;
    if (plugin == NULL) return fprintf(stderr, "%s\n", dlerror()), 1;
    *(void**)&run = dlsym(plugin, "plugin_run");
    if (run == NULL) return fprintf(stderr, "%s\n", dlerror()), 1;
    rc = run();
    if (rc != 0) return fprintf(stderr, "plugin_run: %s\n", uv_strerror(rc)), 1;
    if (dlclose(plugin) != 0) return fprintf(stderr, "%s\n", dlerror()), 1;
    uv_sleep(100); /* long enough for a thread left behind to run and crash */
  }
  puts("loaded, run and unloaded 5 times, no thread left behind");
  return 0;
}
