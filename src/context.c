/* Context propagation: one thread-local value (see context.h). */
#include "context.h"

UVT__THREAD_LOCAL void* uvt__tls_ctx;

void uvt_context_set(void* ctx) { uvt__tls_ctx = ctx; }

void* uvt_context_get(void) { return uvt__tls_ctx; }
