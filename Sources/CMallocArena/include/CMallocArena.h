#ifndef C_MALLOC_ARENA_H
#define C_MALLOC_ARENA_H

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

#endif
