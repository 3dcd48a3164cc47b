/* lat_hist.c - a latency histogram of fixed size; see lat_hist.h. */
#include "engine/lat_hist.h"

static size_t bucket_of(uint32_t v)
{
    if (v < LAT_HIST_EXACT)
        return v;
    unsigned e = 31u - (unsigned)__builtin_clz(v);   /* LAT_HIST_EXACT_BITS .. 31 */
    unsigned sub = (v >> (e - LAT_HIST_SUB_BITS)) & ((1u << LAT_HIST_SUB_BITS) - 1);
    return LAT_HIST_EXACT + (size_t)(e - LAT_HIST_EXACT_BITS) * (1u << LAT_HIST_SUB_BITS) + sub;
}

/* The lowest value that falls in bucket i. */
static uint32_t bucket_low(size_t i)
{
    if (i < LAT_HIST_EXACT)
        return (uint32_t)i;
    size_t k = i - LAT_HIST_EXACT;
    unsigned e = LAT_HIST_EXACT_BITS + (unsigned)(k >> LAT_HIST_SUB_BITS);
    uint32_t sub = (uint32_t)(k & ((1u << LAT_HIST_SUB_BITS) - 1));
    return ((1u << LAT_HIST_SUB_BITS) | sub) << (e - LAT_HIST_SUB_BITS);
}

void lat_hist_add(struct lat_hist *h, uint32_t ms)
{
    h->count[bucket_of(ms)]++;
    h->n++;
    if (ms > h->max)
        h->max = ms;
}

void lat_hist_merge(struct lat_hist *dst, const struct lat_hist *src)
{
    for (size_t i = 0; i < LAT_HIST_BUCKETS; i++)
        dst->count[i] += src->count[i];
    dst->n += src->n;
    if (src->max > dst->max)
        dst->max = src->max;
}

uint32_t lat_hist_at_rank(const struct lat_hist *h, uint64_t r)
{
    if (r >= h->n)
        return 0;
    uint64_t seen = 0;
    for (size_t i = 0; i < LAT_HIST_BUCKETS; i++) {
        seen += h->count[i];
        if (seen > r)
            return bucket_low(i);
    }
    return h->max;
}
