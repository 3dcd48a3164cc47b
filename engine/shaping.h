/*
 * shaping.h - traffic shaping: rate limits (message rate, connection
 * rate) and the backoff state that 421s and matching replies bring.
 *
 * DESCRIPTION
 *   A rate is written "N/s", "N/m" or "N/h" (a bare N means per second)
 *   and enforced as a GCRA token bucket: one atomic "theoretical arrival
 *   time" per bucket, so a bucket keyed by MX host is shared by every
 *   worker thread without a lock, and one keyed by destination (owned by
 *   one worker) costs the same. The burst is one interval: events are
 *   spaced evenly, never more than N in any period plus one.
 *
 *   Backoff (struct shaping_backoff): a 421, or a reply matching one of
 *   the configured backoff patterns, halves the destination's concurrency
 *   (to at least 1) and pauses new connections for backoff_pause; every
 *   delivered message after that raises the concurrency by one again,
 *   until it is back at max_connections.
 *
 * OWNERSHIP
 *   Plain values. struct rate_bucket may live in shared memory (struct
 *   engine) and be used from any thread.
 */
#ifndef TERN_ENGINE_SHAPING_H
#define TERN_ENGINE_SHAPING_H

#include <stdatomic.h>
#include <stdint.h>

/* events per second, as parsed; 0 means no limit */
struct rate {
    double per_sec;
};

struct rate_bucket {
    _Atomic int64_t tat_us;       /* theoretical arrival time, microseconds */
};

/* rate_parse: "100/s", "10/m", "5/h" or "100" (per second); > 0. */
int rate_parse(const char *s, struct rate *out);

/* rate_take: one event now (microseconds, any monotonic clock) if the
 * rate allows it: returns 0 and counts it. Otherwise returns how many
 * microseconds until one would be allowed, and counts nothing. A zero
 * rate always allows. */
int64_t rate_take(struct rate_bucket *b, struct rate r, int64_t now_us);

/* Backoff state of one destination. */
struct shaping_backoff {
    int limit;                    /* concurrency now: 0 means not backed off */
    int64_t paused_until_ms;      /* no new connection before */
    uint64_t events;              /* backoffs so far (for stats and tests) */
};

/* shaping_backoff_hit: a 421 or matching reply with `open` connections
 * open; pause_ms from now. */
void shaping_backoff_hit(struct shaping_backoff *b, int open, int64_t now_ms, int64_t pause_ms);
/* shaping_backoff_ok: a delivery went through; step back up towards max. */
void shaping_backoff_ok(struct shaping_backoff *b, int max);
/* shaping_concurrency: the connections allowed now out of max. */
int shaping_concurrency(const struct shaping_backoff *b, int max);

#endif
