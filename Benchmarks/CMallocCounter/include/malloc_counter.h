#ifndef TAPSWITCH_MALLOC_COUNTER_H
#define TAPSWITCH_MALLOC_COUNTER_H
#include <stdint.h>

/// Heap allocations (malloc, calloc, realloc, posix_memalign, aligned_alloc, memalign) made by any
/// thread since the process started. Linking this target replaces glibc's allocator entry points
/// with counting wrappers around glibc's own (__libc_*) implementation.
uint64_t malloc_counter_allocations(void);
/// Turns counting on or off (it is on from start-up).
void malloc_counter_set_enabled(int enabled);

#endif
