/* The library's version, from the one definition in uvthreads.h. */
#include "internal.h"

#define UVT__STR2(x) #x
#define UVT__STR(x) UVT__STR2(x)

unsigned int uvt_version(void) {
  return (UVT_VERSION_MAJOR << 16) | (UVT_VERSION_MINOR << 8) | UVT_VERSION_PATCH;
}

const char* uvt_version_string(void) {
  return UVT__STR(UVT_VERSION_MAJOR) "." UVT__STR(UVT_VERSION_MINOR) "." UVT__STR(UVT_VERSION_PATCH);
}
