/*
 * lat_hist.h - a latency histogram of fixed size.
 *
 * DESCRIPTION
 *   The engine reports the p50, p99 and max of the time from enqueue to
 *   the receiver's 250. Keeping every sample (4 bytes per delivered
 *   message) grows without bound in a `tern run` that runs for weeks:
 *   17 GB a day at 50,000 msg/s. A histogram answers the same questions
 *   in ~30 KB per worker:
 *     - values below LAT_HIST_EXACT ms are counted exactly (one bucket
 *       per ms), so quantiles there are exact;
 *     - above, each power of two has 2^LAT_HIST_SUB_BITS buckets, so a
 *       quantile is reported as its bucket's lowest value, at most 1/128
 *       (0.8%) below the true one;
 *     - the maximum is kept exactly.
 *   Ranks follow a sorted array's: lat_hist_at_rank(h, r) is what
 *   sorted[r] would be (0 <= r < n), within the bucket's width.
 *
 * OWNERSHIP
 *   A plain value type: no allocations. Zero it (= {0} or memset) to
 *   start. One thread updates a histogram; merge after the threads stop.
 *
 * ERRORS
 *   None. Counts are 64-bit.
 */
#ifndef TERN_ENGINE_LAT_HIST_H
#define TERN_ENGINE_LAT_HIST_H

#include <stddef.h>
#include <stdint.h>

#define LAT_HIST_EXACT_BITS 10                        /* exact below 1024 ms */
#define LAT_HIST_EXACT      (1u << LAT_HIST_EXACT_BITS)
#define LAT_HIST_SUB_BITS   7                         /* 128 buckets per power of two above */
#define LAT_HIST_BUCKETS    (LAT_HIST_EXACT + (32 - LAT_HIST_EXACT_BITS) * (1u << LAT_HIST_SUB_BITS))

struct lat_hist {
    uint64_t n;                         /* samples */
    uint32_t max;                       /* largest sample, exact */
    uint64_t count[LAT_HIST_BUCKETS];
};

void lat_hist_add(struct lat_hist *h, uint32_t ms);
/* lat_hist_merge adds src's samples to dst. */
void lat_hist_merge(struct lat_hist *dst, const struct lat_hist *src);
/* lat_hist_at_rank: the r-th smallest sample (0-based), as the lowest
 * value of its bucket (exact below LAT_HIST_EXACT); 0 when r >= n. */
uint32_t lat_hist_at_rank(const struct lat_hist *h, uint64_t r);

#endif
