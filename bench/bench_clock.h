/*
 * bench_clock.h - the monotonic clock the bench tools time with.
 *
 * OWNERSHIP
 *   Nothing is allocated.
 */
#ifndef TERN_BENCH_CLOCK_H
#define TERN_BENCH_CLOCK_H

#include <time.h>

/* bench_now_s: CLOCK_MONOTONIC in seconds. */
static inline double bench_now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

#endif
