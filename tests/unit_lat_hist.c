/*
 * unit_lat_hist.c - engine/lat_hist.c: ranks exact below 1024 ms and
 * within one bucket (< 0.8%, never above the true value) up to the top
 * of uint32, the maximum exact, merging the same as adding.
 */
#include <stdlib.h>
#include <string.h>

#include "engine/lat_hist.h"
#include "tests/check.h"

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static uint32_t rnd(uint32_t *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    return *seed;
}

/* Every rank of a set against the sorted set: exact below the exact
 * range, else at most 1/128 below and never above. */
static int check_ranks(const struct lat_hist *h, uint32_t *v, size_t n)
{
    qsort(v, n, sizeof(*v), cmp_u32);
    if (h->n != n || (n && h->max != v[n - 1])) {
        CHECK_FAILF("n %llu max %u, want %zu and %u", (unsigned long long)h->n, h->max, n,
                    n ? v[n - 1] : 0);
        return 0;
    }
    for (size_t r = 0; r < n; r++) {
        uint32_t got = lat_hist_at_rank(h, r), want = v[r];
        int ok = want < LAT_HIST_EXACT ? got == want
                                       : got <= want && (uint64_t)(want - got) * 128 <= want;
        if (!ok) {
            CHECK_FAILF("rank %zu of %zu: %u, want %u", r, n, got, want);
            return 0;
        }
    }
    return 1;
}

static void test_exact_small(void)
{
    struct lat_hist h;
    memset(&h, 0, sizeof(h));
    CHECK_INT(lat_hist_at_rank(&h, 0), 0);    /* empty */
    uint32_t v[] = {5, 0, 1023, 2, 2, 700};
    for (size_t i = 0; i < 6; i++)
        lat_hist_add(&h, v[i]);
    CHECK(check_ranks(&h, v, 6));
    CHECK_INT(lat_hist_at_rank(&h, 6), 0);    /* past the end */
}

static void test_bucket_edges(void)
{
    /* Powers of two and their neighbours, up to the largest value. */
    static uint32_t v[3 * 32];
    size_t n = 0;
    struct lat_hist h;
    memset(&h, 0, sizeof(h));
    for (unsigned e = 0; e < 32; e++) {
        uint32_t p = 1u << e;
        uint32_t c[3] = {p - 1, p, p + 1 == 0 ? p : p + 1};
        for (int k = 0; k < 3; k++) {
            v[n++] = c[k];
            lat_hist_add(&h, c[k]);
        }
    }
    lat_hist_add(&h, UINT32_MAX);
    static uint32_t all[3 * 32 + 1];
    memcpy(all, v, n * sizeof(*v));
    all[n] = UINT32_MAX;
    CHECK(check_ranks(&h, all, n + 1));
    CHECK_INT(h.max, UINT32_MAX);
}

static void test_random_and_merge(void)
{
    enum { N = 20000 };
    static uint32_t v[N];
    struct lat_hist *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b)), *all = calloc(1, sizeof(*all));
    uint32_t seed = 99;
    for (size_t i = 0; i < N; i++) {
        /* mostly small, some seconds, a few huge */
        uint32_t r = rnd(&seed);
        v[i] = r % 10 < 6 ? r % 900 : r % 10 < 9 ? r % 120000 : r;
        lat_hist_add(i % 2 ? a : b, v[i]);
        lat_hist_add(all, v[i]);
    }
    lat_hist_merge(a, b);
    CHECK(memcmp(a, all, sizeof(*a)) == 0);
    CHECK(check_ranks(a, v, N));
    free(a);
    free(b);
    free(all);
}

int main(void)
{
    RUN(test_exact_small);
    RUN(test_bucket_edges);
    RUN(test_random_and_merge);
    return check_finish();
}
