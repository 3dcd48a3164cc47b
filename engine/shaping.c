/* shaping.c - rate buckets and backoff; see shaping.h. */
#include "engine/shaping.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define RATE_MAX_PER_SEC 1e6

int rate_parse(const char *s, struct rate *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || !(v > 0) || v > RATE_MAX_PER_SEC * 3600)
        return 0;
    double per = 1;
    if (strcmp(end, "/s") == 0 || *end == '\0')
        per = 1;
    else if (strcmp(end, "/m") == 0)
        per = 60;
    else if (strcmp(end, "/h") == 0)
        per = 3600;
    else
        return 0;
    out->per_sec = v / per;
    return out->per_sec <= RATE_MAX_PER_SEC;
}

int64_t rate_take(struct rate_bucket *b, struct rate r, int64_t now_us)
{
    if (r.per_sec <= 0)
        return 0;
    int64_t interval = (int64_t)(1e6 / r.per_sec);
    if (interval < 1)
        interval = 1;
    int64_t tat = atomic_load(&b->tat_us);
    for (;;) {
        int64_t start = tat > now_us ? tat : now_us;
        /* burst of one: allowed while the bucket's time is not ahead of now */
        if (start > now_us)
            return start - now_us;
        if (atomic_compare_exchange_weak(&b->tat_us, &tat, start + interval))
            return 0;
    }
}

void shaping_backoff_hit(struct shaping_backoff *b, int open, int64_t now_ms, int64_t pause_ms)
{
    int cur = b->limit ? b->limit : open;
    int half = cur / 2;
    b->limit = half < 1 ? 1 : half;
    b->paused_until_ms = now_ms + pause_ms;
    b->events++;
}

void shaping_backoff_ok(struct shaping_backoff *b, int max)
{
    if (b->limit == 0)
        return;
    b->limit++;
    if (b->limit >= max)
        b->limit = 0;
}

int shaping_concurrency(const struct shaping_backoff *b, int max)
{
    return b->limit && b->limit < max ? b->limit : max;
}
