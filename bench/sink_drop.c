/* sink_drop.c - --drop-rate: whether, and where, the sink drops the
 * connection during a transaction (points defined in sink.c). */
#include "bench/sink.h"

/* splitmix64 (Steele, Lea, Flood 2014): one add and a mix per draw, good
 * enough statistics for test traffic, reproducible from one seed. */
#define SINK_RNG_GAMMA 0x9e3779b97f4a7c15ULL

/* sink_drop_draw counts points back from DOT; GREETING is the first. */
_Static_assert(SINK_DROP_GREETING == SINK_DROP_NONE + 1 && SINK_DROP_DOT == SINK_DROP_COUNT - 1,
               "drop points are contiguous, greeting first, dot last");

static uint64_t rng_next(struct sink_rng *r)
{
    uint64_t z = (r->state += SINK_RNG_GAMMA);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void sink_rng_seed(struct sink_rng *r, uint64_t seed, int thread)
{
    r->state = seed + (uint64_t)thread;
}

/* A uniform double in [0, 1) from the top 53 bits. */
static double rng_unit(struct sink_rng *r)
{
    return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

enum sink_drop sink_drop_draw(struct sink_rng *r, double rate, int first)
{
    if (rate <= 0 || rng_unit(r) >= rate)
        return SINK_DROP_NONE;
    /* Points in order, SINK_DROP_GREETING first: a later transaction
     * skips it. The modulo bias (2^64 mod 4 or 3) is below 1e-18. */
    uint64_t npoints = SINK_DROP_COUNT - 1 - (first ? 0 : 1);
    uint64_t k = rng_next(r) % npoints;
    return (enum sink_drop)(SINK_DROP_DOT - (int)k);
}
