/* Private to uvthreads: context propagation (like Python's contextvars).
 *
 * Every kind of submission captures the submitting thread's context value
 * (uvt__context_current) and makes it current around each of its
 * callbacks, on either thread, with uvt__context_swap. Both are inline:
 * uvt_call captures and swaps on every call. */
#ifndef UVT_CONTEXT_H
#define UVT_CONTEXT_H

#include "internal.h"

extern UVT__THREAD_LOCAL void* uvt__tls_ctx;

/* The calling thread's context (what uvt_context_get returns). */
static inline void* uvt__context_current(void) { return uvt__tls_ctx; }

/* Makes ctx the calling thread's context; returns the previous one. */
static inline void* uvt__context_swap(void* ctx) {
  void* prev = uvt__tls_ctx;
  uvt__tls_ctx = ctx;
  return prev;
}

#endif /* UVT_CONTEXT_H */
