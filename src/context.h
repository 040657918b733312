/* Private to uvthreads: context propagation (like Python's contextvars).
 *
 * Every kind of submission captures the submitting thread's context value
 * (uvt_context_get) and makes it current around each of its callbacks, on
 * either thread, with uvt__context_swap. */
#ifndef UVT_CONTEXT_H
#define UVT_CONTEXT_H

#include "internal.h"

/* Makes ctx the calling thread's context; returns the previous one. */
void* uvt__context_swap(void* ctx);

#endif /* UVT_CONTEXT_H */
