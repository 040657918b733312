/* Every allocation of the library goes through here, so that tests can make
 * them fail and leak checks see one owner. */
#include "internal.h"

void* uvt__malloc(size_t size) { return malloc(size); }

void* uvt__calloc(size_t n, size_t size) { return calloc(n, size); }

void* uvt__aligned_alloc(size_t align, size_t size) {
  return aligned_alloc(align, (size + align - 1) / align * align);
}

void uvt__free(void* ptr) { free(ptr); }

#if defined(UVT_TEST_HOOKS)
void (*uvt__test_hook)(const char* point, const void* obj);
#endif
