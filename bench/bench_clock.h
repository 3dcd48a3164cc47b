/*
 * bench_clock.h - the monotonic clock the bench tools time with.
 *
 * OWNERSHIP
 *   Nothing is allocated.
 */
#ifndef TERN_BENCH_CLOCK_H
#define TERN_BENCH_CLOCK_H

#include <stdint.h>
#include <time.h>

/* bench_now_s: CLOCK_MONOTONIC in seconds. */
static inline double bench_now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* bench_now_ns: CLOCK_MONOTONIC in nanoseconds (tern-sink's --latency). */
static inline int64_t bench_now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

#endif
