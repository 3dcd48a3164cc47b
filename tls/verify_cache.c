/*
 * verify_cache.c - remembered PKIX verdicts (see verify_cache.h).
 */
#include "tls/verify_cache.h"

#include <stdlib.h>
#include <string.h>

struct verify_entry {
    uint8_t key[VERIFY_CACHE_KEY_LEN];
    int64_t expires_s;      /* 0: empty */
};

struct verify_cache {
    struct verify_entry e[VERIFY_CACHE_SETS][VERIFY_CACHE_WAYS];
    struct verify_cache_stats st;
};

_Static_assert((VERIFY_CACHE_SETS & (VERIFY_CACHE_SETS - 1)) == 0, "sets: a power of two");

struct verify_cache *verify_cache_new(void)
{
    return calloc(1, sizeof(struct verify_cache));
}

void verify_cache_free(struct verify_cache *vc)
{
    if (vc)
        explicit_bzero(vc, sizeof(*vc));   /* the listener keeps credential digests here */
    free(vc);
}

/* The key is a SHA-256: its first bytes are as good as any hash. */
static struct verify_entry *set_of(struct verify_cache *vc, const uint8_t *key)
{
    uint32_t h = (uint32_t)key[0] | (uint32_t)key[1] << 8 | (uint32_t)key[2] << 16 |
                 (uint32_t)key[3] << 24;
    return vc->e[h & (VERIFY_CACHE_SETS - 1)];
}

int verify_cache_get(struct verify_cache *vc, const uint8_t key[VERIFY_CACHE_KEY_LEN], int64_t now_s)
{
    struct verify_entry *set = set_of(vc, key);
    for (int i = 0; i < VERIFY_CACHE_WAYS; i++) {
        if (set[i].expires_s > now_s && memcmp(set[i].key, key, VERIFY_CACHE_KEY_LEN) == 0) {
            vc->st.hits++;
            return 1;
        }
    }
    vc->st.misses++;
    return 0;
}

void verify_cache_put(struct verify_cache *vc, const uint8_t key[VERIFY_CACHE_KEY_LEN],
                      int64_t now_s, int64_t expires_s)
{
    if (expires_s <= now_s)
        return;
    struct verify_entry *set = set_of(vc, key);
    struct verify_entry *slot = &set[0];
    for (int i = 0; i < VERIFY_CACHE_WAYS; i++) {
        if (set[i].expires_s > 0 && memcmp(set[i].key, key, VERIFY_CACHE_KEY_LEN) == 0) {
            slot = &set[i];
            break;
        }
        if (set[i].expires_s < slot->expires_s)   /* empty (0) or expiring first */
            slot = &set[i];
    }
    memcpy(slot->key, key, VERIFY_CACHE_KEY_LEN);
    slot->expires_s = expires_s;
    vc->st.stored++;
}

void verify_cache_stats(const struct verify_cache *vc, struct verify_cache_stats *out)
{
    if (vc == NULL) {
        memset(out, 0, sizeof(*out));
        return;
    }
    *out = vc->st;
}
