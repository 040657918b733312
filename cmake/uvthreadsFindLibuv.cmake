# Defines the imported target uvthreads::libuv from the system's libuv, found
# with pkg-config or, failing that, find_path/find_library, and
# uvthreads::libuv_headers with its include directories only (for a library
# loaded into a host that brings libuv itself, such as Node.js). Never
# downloads. Used by the build and installed next to uvthreadsConfig.cmake.
if(NOT TARGET uvthreads::libuv)
  find_package(PkgConfig QUIET)
  if(PKG_CONFIG_FOUND)
    pkg_check_modules(UVT_LIBUV QUIET IMPORTED_TARGET libuv>=1.44)
  endif()
  add_library(uvthreads::libuv INTERFACE IMPORTED)
  if(UVT_LIBUV_FOUND)
    set_target_properties(uvthreads::libuv PROPERTIES INTERFACE_LINK_LIBRARIES PkgConfig::UVT_LIBUV)
  else()
    find_path(UVT_LIBUV_INCLUDE_DIR uv.h)
    find_library(UVT_LIBUV_LIBRARY NAMES uv libuv)
    if(NOT UVT_LIBUV_INCLUDE_DIR OR NOT UVT_LIBUV_LIBRARY)
      message(FATAL_ERROR
        "uvthreads needs libuv >= 1.44 (uv.h and libuv). On Debian/Ubuntu: "
        "apt-get install libuv1-dev pkg-config")
    endif()
    set_target_properties(uvthreads::libuv PROPERTIES
      INTERFACE_INCLUDE_DIRECTORIES "${UVT_LIBUV_INCLUDE_DIR}"
      INTERFACE_LINK_LIBRARIES "${UVT_LIBUV_LIBRARY}")
    set(UVT_LIBUV_INCLUDE_DIRS "${UVT_LIBUV_INCLUDE_DIR}")
  endif()
  add_library(uvthreads::libuv_headers INTERFACE IMPORTED)
  if(UVT_LIBUV_INCLUDE_DIRS)
    set_target_properties(uvthreads::libuv_headers PROPERTIES
      INTERFACE_INCLUDE_DIRECTORIES "${UVT_LIBUV_INCLUDE_DIRS}")
  endif()
endif()
