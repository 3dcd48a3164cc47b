/*
 * rate_window.c - deliveries per time slot; see rate_window.h.
 */
#include "engine/rate_window.h"

void rate_window_add(struct rate_window *w, int64_t ms)
{
    int64_t s = ms < 0 ? 0 : ms / RATE_WINDOW_SLOT_MS;
    if (s >= RATE_WINDOW_SLOTS) {
        w->late++;
        return;
    }
    w->slot[s]++;
    w->n++;
}

void rate_window_merge(struct rate_window *dst, const struct rate_window *src)
{
    for (int s = 0; s < RATE_WINDOW_SLOTS; s++)
        dst->slot[s] += src->slot[s];
    dst->n += src->n;
    dst->late += src->late;
}

/* slot_of_rank: the slot of the rank-th delivery (1-based), and how many
 * were delivered up to and including that slot. */
static int slot_of_rank(const struct rate_window *w, uint64_t rank, uint64_t *upto)
{
    uint64_t cum = 0;
    for (int s = 0; s < RATE_WINDOW_SLOTS; s++) {
        cum += w->slot[s];
        if (cum >= rank) {
            *upto = cum;
            return s;
        }
    }
    *upto = cum;
    return RATE_WINDOW_SLOTS - 1;
}

double rate_window_steady(const struct rate_window *w, double lo, double hi)
{
    if (w->n < RATE_WINDOW_MIN || w->late > 0 || !(lo > 0 && lo < hi && hi <= 1))
        return 0;
    uint64_t lo_rank = (uint64_t)(lo * (double)w->n + 0.5), hi_rank = (uint64_t)(hi * (double)w->n + 0.5);
    if (lo_rank < 1)
        lo_rank = 1;
    uint64_t lo_upto, hi_upto;
    int a = slot_of_rank(w, lo_rank, &lo_upto);
    int b = slot_of_rank(w, hi_rank, &hi_upto);
    if (b <= a)
        return 0;
    /* The slots after a up to and including b: what came in that time. */
    return (double)(hi_upto - lo_upto) * 1000.0 / ((double)(b - a) * RATE_WINDOW_SLOT_MS);
}
