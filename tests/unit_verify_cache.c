/* unit_verify_cache.c - tests for tls/verify_cache.c: verdicts held until
 * their expiry, keys told apart, a full set giving up the entry that
 * expires first, the counters. */
#include "tls/verify_cache.h"

#include <string.h>

#include "tests/check.h"

#define NOW 1000000

/* A key whose first bytes (the set index) are `set` and whose last byte
 * is `tag`: several keys in one set. */
static void mk(uint8_t key[VERIFY_CACHE_KEY_LEN], uint32_t set, uint8_t tag)
{
    memset(key, 0xab, VERIFY_CACHE_KEY_LEN);
    key[0] = (uint8_t)set;
    key[1] = (uint8_t)(set >> 8);
    key[2] = key[3] = 0;
    key[VERIFY_CACHE_KEY_LEN - 1] = tag;
}

static void test_held_until_expiry(void)
{
    struct verify_cache *vc = verify_cache_new();
    uint8_t a[VERIFY_CACHE_KEY_LEN], b[VERIFY_CACHE_KEY_LEN];
    mk(a, 7, 1);
    mk(b, 7, 2);
    CHECK_INT(verify_cache_get(vc, a, NOW), 0);
    verify_cache_put(vc, a, NOW, NOW + 600);
    CHECK_INT(verify_cache_get(vc, a, NOW + 1), 1);
    CHECK_INT(verify_cache_get(vc, a, NOW + 599), 1);
    CHECK_INT(verify_cache_get(vc, b, NOW + 1), 0);     /* same set, another key */
    CHECK_INT(verify_cache_get(vc, a, NOW + 600), 0);   /* expired */
    verify_cache_put(vc, a, NOW + 700, NOW + 700);      /* no time left: ignored */
    CHECK_INT(verify_cache_get(vc, a, NOW + 700), 0);
    verify_cache_put(vc, a, NOW + 700, NOW + 1300);     /* held again, new expiry */
    CHECK_INT(verify_cache_get(vc, a, NOW + 1299), 1);
    struct verify_cache_stats st;
    verify_cache_stats(vc, &st);
    CHECK_INT(st.hits, 3);
    CHECK_INT(st.misses, 4);
    CHECK_INT(st.stored, 2);
    verify_cache_free(vc);
}

/* A full set replaces the entry that expires first; a key put again
 * takes its own slot, not another one. */
static void test_full_set(void)
{
    struct verify_cache *vc = verify_cache_new();
    uint8_t k[VERIFY_CACHE_WAYS + 1][VERIFY_CACHE_KEY_LEN];
    for (int i = 0; i <= VERIFY_CACHE_WAYS; i++)
        mk(k[i], 3, (uint8_t)i);
    for (int i = 0; i < VERIFY_CACHE_WAYS; i++)
        verify_cache_put(vc, k[i], NOW, NOW + 100 + i);     /* k[0] expires first */
    verify_cache_put(vc, k[1], NOW, NOW + 50);              /* now k[1] does */
    for (int i = 0; i < VERIFY_CACHE_WAYS; i++)
        CHECK_INT(verify_cache_get(vc, k[i], NOW), 1);
    verify_cache_put(vc, k[VERIFY_CACHE_WAYS], NOW, NOW + 500);
    CHECK_INT(verify_cache_get(vc, k[VERIFY_CACHE_WAYS], NOW), 1);
    CHECK_INT(verify_cache_get(vc, k[1], NOW), 0);          /* gave way */
    CHECK_INT(verify_cache_get(vc, k[0], NOW), 1);
    /* another set is untouched */
    uint8_t other[VERIFY_CACHE_KEY_LEN];
    mk(other, 4, 1);
    verify_cache_put(vc, other, NOW, NOW + 10);
    CHECK_INT(verify_cache_get(vc, other, NOW), 1);
    CHECK_INT(verify_cache_get(vc, k[2], NOW), 1);
    verify_cache_free(vc);
}

static void test_null_stats(void)
{
    struct verify_cache_stats st = {1, 2, 3};
    verify_cache_stats(NULL, &st);
    CHECK_INT(st.hits + st.misses + st.stored, 0);
}

int main(void)
{
    RUN(test_held_until_expiry);
    RUN(test_full_set);
    RUN(test_null_stats);
    return check_finish();
}
