/* unit_auth_cache.c - tests for engine/auth_cache.c: verified credentials
 * accepted again until their time is up, told apart by user and password,
 * keyed per cache (the digest depends on the cache's random key). */
#include "engine/auth_cache.h"

#include <string.h>

#include "tests/check.h"

#define NOW 5000000   /* ms on the listener's monotonic clock */

static void test_hit_until_ttl(void)
{
    struct auth_cache *c = auth_cache_new(300000);
    CHECK(c != NULL);
    uint8_t d[AUTH_CACHE_DIGEST];
    auth_cache_digest(c, "alice", "s3cret pass", d);
    CHECK_INT(auth_cache_hit(c, d, NOW), 0);          /* nothing verified yet */
    auth_cache_put(c, d, NOW);
    CHECK_INT(auth_cache_hit(c, d, NOW), 1);
    CHECK_INT(auth_cache_hit(c, d, NOW + 299000), 1);
    CHECK_INT(auth_cache_hit(c, d, NOW + 300000), 0);  /* five minutes on: checked again */
    auth_cache_put(c, d, NOW + 300000);                /* verified again: renewed */
    CHECK_INT(auth_cache_hit(c, d, NOW + 500000), 1);
    auth_cache_free(c);
}

static void test_user_and_password_told_apart(void)
{
    struct auth_cache *c = auth_cache_new(60000);
    uint8_t ok[AUTH_CACHE_DIGEST], d[AUTH_CACHE_DIGEST];
    auth_cache_digest(c, "alice", "pw", ok);
    auth_cache_put(c, ok, NOW);
    auth_cache_digest(c, "alice", "pw", d);
    CHECK(memcmp(ok, d, sizeof(d)) == 0);              /* the same pair: the same key */
    auth_cache_digest(c, "alice", "pW", d);
    CHECK_INT(auth_cache_hit(c, d, NOW), 0);           /* another password */
    auth_cache_digest(c, "bob", "pw", d);
    CHECK_INT(auth_cache_hit(c, d, NOW), 0);           /* another user */
    auth_cache_digest(c, "alic", "epw", d);
    CHECK_INT(auth_cache_hit(c, d, NOW), 0);           /* the NUL between them counts */
    auth_cache_free(c);
}

static void test_key_per_cache(void)
{
    struct auth_cache *a = auth_cache_new(60000), *b = auth_cache_new(60000);
    uint8_t da[AUTH_CACHE_DIGEST], db[AUTH_CACHE_DIGEST];
    auth_cache_digest(a, "alice", "pw", da);
    auth_cache_digest(b, "alice", "pw", db);
    CHECK(memcmp(da, db, sizeof(da)) != 0);            /* nothing to check a guess against */
    auth_cache_put(a, da, NOW);
    CHECK_INT(auth_cache_hit(b, db, NOW), 0);
    auth_cache_free(a);
    auth_cache_free(b);
}

static void test_short_ttl_and_off(void)
{
    CHECK(auth_cache_new(0) == NULL);                  /* listen_auth_cache = 0: none */
    struct auth_cache *c = auth_cache_new(1);          /* rounds up to one second */
    uint8_t d[AUTH_CACHE_DIGEST];
    auth_cache_digest(c, "u", "p", d);
    auth_cache_put(c, d, NOW);
    CHECK_INT(auth_cache_hit(c, d, NOW + 500), 1);
    CHECK_INT(auth_cache_hit(c, d, NOW + 1000), 0);
    auth_cache_free(c);
}

int main(void)
{
    RUN(test_hit_until_ttl);
    RUN(test_user_and_password_told_apart);
    RUN(test_key_per_cache);
    RUN(test_short_ttl_and_off);
    return check_finish();
}
