#ifndef C_MALLOC_TUNING_H
#define C_MALLOC_TUNING_H

#if defined(__linux__)
#include <malloc.h>
#endif

/// Limits glibc's malloc to `count` arenas (mallopt M_ARENA_MAX). Returns 1 on success, 0 where there is no such
/// setting.
static inline int ferry_limit_malloc_arenas(int count) {
#if defined(__GLIBC__) && defined(M_ARENA_MAX)
    return mallopt(M_ARENA_MAX, count);
#else
    (void)count;
    return 0;
#endif
}

/// Serves allocations of up to `largest` bytes from the heap rather than from fresh mappings (M_MMAP_THRESHOLD),
/// and keeps up to `retained` bytes of freed memory at the top of the heap rather than returning it to the system
/// at once (M_TRIM_THRESHOLD). Returns 1 on success, 0 where there are no such settings.
static inline int ferry_keep_buffers_in_heap(int largest, int retained) {
#if defined(__GLIBC__) && defined(M_MMAP_THRESHOLD) && defined(M_TRIM_THRESHOLD)
    return mallopt(M_MMAP_THRESHOLD, largest) && mallopt(M_TRIM_THRESHOLD, retained);
#else
    (void)largest;
    (void)retained;
    return 0;
#endif
}

/// Returns the heap's free memory to the system (glibc `malloc_trim(0)`, which also releases free pages in the
/// middle of the heap). Returns 1 if memory was released, 0 otherwise or where there is no such call.
static inline int ferry_release_free_memory(void) {
#if defined(__GLIBC__)
    return malloc_trim(0);
#else
    return 0;
#endif
}

#endif
