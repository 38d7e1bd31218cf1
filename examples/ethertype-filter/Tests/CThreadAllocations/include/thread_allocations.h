#pragma once
#include <stdint.h>

/// Allocations made by the calling thread so far (malloc, calloc, realloc, memalign family).
uint64_t thread_allocations(void);
