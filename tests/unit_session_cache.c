/* unit_session_cache.c - tests for tls/session_cache.c with real (blank)
 * SSL_SESSION objects whose version, time and timeout are set by hand. */
#include "tls/session_cache.h"

#include <stdio.h>

#include "tests/check.h"

#define NOW 1000000u

static SSL_CTX *g_ctx;   /* only to create sessions */

static SSL_SESSION *mk(uint16_t version, uint64_t t, uint32_t timeout)
{
    SSL_SESSION *s = SSL_SESSION_new(g_ctx);
    SSL_SESSION_set_protocol_version(s, version);
    SSL_SESSION_set_time(s, t);
    SSL_SESSION_set_timeout(s, timeout);
    return s;
}

static void test_put_get_tls12_reused(void)
{
    struct tls_session_cache *c = tls_session_cache_new(8, 0);
    SSL_SESSION *s = mk(TLS1_2_VERSION, NOW, 3600);
    tls_session_cache_put(c, "mx.a:25:verify", s, NOW);
    for (int i = 0; i < 3; i++) {
        SSL_SESSION *g = tls_session_cache_get(c, "mx.a:25:verify", NOW + 1);
        CHECK(g == s);   /* same session every time */
        SSL_SESSION_free(g);
    }
    CHECK(tls_session_cache_get(c, "mx.a:25:may", NOW) == NULL);
    struct tls_cache_stats st;
    tls_session_cache_stats(c, &st);
    CHECK_INT(st.puts, 1);
    CHECK_INT(st.hits, 3);
    CHECK_INT(st.misses, 1);
    CHECK_INT(st.keys, 1);
    tls_session_cache_free(c);
}

static void test_tls13_single_use(void)
{
    struct tls_session_cache *c = tls_session_cache_new(8, 0);
    SSL_SESSION *a = mk(TLS1_3_VERSION, NOW, 7200);
    SSL_SESSION *b = mk(TLS1_3_VERSION, NOW + 1, 7200);
    tls_session_cache_put(c, "k", a, NOW);
    tls_session_cache_put(c, "k", b, NOW + 1);
    SSL_SESSION *g1 = tls_session_cache_get(c, "k", NOW + 2);
    SSL_SESSION *g2 = tls_session_cache_get(c, "k", NOW + 2);
    SSL_SESSION *g3 = tls_session_cache_get(c, "k", NOW + 2);
    CHECK(g1 == b);      /* newest first */
    CHECK(g2 == a);
    CHECK(g3 == NULL);   /* each handed out once */
    struct tls_cache_stats st;
    tls_session_cache_stats(c, &st);
    CHECK_INT(st.keys, 0);
    CHECK_INT(st.hits, 2);
    CHECK_INT(st.misses, 1);
    SSL_SESSION_free(g1);
    SSL_SESSION_free(g2);
    tls_session_cache_free(c);
}

static void test_per_key_bound(void)
{
    struct tls_session_cache *c = tls_session_cache_new(8, 0);
    SSL_SESSION *s[TLS_CACHE_SESSIONS_PER_KEY + 2];
    for (int i = 0; i < TLS_CACHE_SESSIONS_PER_KEY + 2; i++) {
        s[i] = mk(TLS1_3_VERSION, NOW, 7200);
        tls_session_cache_put(c, "k", s[i], NOW);
    }
    /* Only the newest TLS_CACHE_SESSIONS_PER_KEY remain, newest first. */
    int got = 0;
    SSL_SESSION *g;
    while ((g = tls_session_cache_get(c, "k", NOW)) != NULL) {
        CHECK(g == s[TLS_CACHE_SESSIONS_PER_KEY + 1 - got]);
        SSL_SESSION_free(g);
        got++;
    }
    CHECK_INT(got, TLS_CACHE_SESSIONS_PER_KEY);
    tls_session_cache_free(c);
}

static void test_lru_eviction(void)
{
    struct tls_session_cache *c = tls_session_cache_new(3, 0);
    char key[32];
    for (int i = 0; i < 3; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        tls_session_cache_put(c, key, mk(TLS1_2_VERSION, NOW, 3600), NOW);
    }
    /* Touch k0 so k1 is the least recently used. */
    SSL_SESSION *g = tls_session_cache_get(c, "k0", NOW);
    CHECK(g != NULL);
    SSL_SESSION_free(g);
    tls_session_cache_put(c, "k3", mk(TLS1_2_VERSION, NOW, 3600), NOW);

    static const struct { const char *key; int present; } want[] = {
        { "k0", 1 }, { "k1", 0 }, { "k2", 1 }, { "k3", 1 },
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        g = tls_session_cache_get(c, want[i].key, NOW);
        if ((g != NULL) != want[i].present)
            CHECK_FAILF("key %s: present %d, want %d", want[i].key, g != NULL,
                        want[i].present);
        SSL_SESSION_free(g);
    }
    struct tls_cache_stats st;
    tls_session_cache_stats(c, &st);
    CHECK_INT(st.evictions, 1);
    CHECK_INT(st.keys, 3);
    tls_session_cache_free(c);
}

static void test_drop(void)
{
    struct tls_session_cache *c = tls_session_cache_new(8, 0);
    tls_session_cache_put(c, "a", mk(TLS1_2_VERSION, NOW, 3600), NOW);
    tls_session_cache_put(c, "a", mk(TLS1_3_VERSION, NOW, 3600), NOW);
    tls_session_cache_put(c, "b", mk(TLS1_2_VERSION, NOW, 3600), NOW);
    tls_session_cache_drop(c, "a");
    tls_session_cache_drop(c, "nonexistent");
    CHECK(tls_session_cache_get(c, "a", NOW) == NULL);
    SSL_SESSION *g = tls_session_cache_get(c, "b", NOW);
    CHECK(g != NULL);
    SSL_SESSION_free(g);
    struct tls_cache_stats st;
    tls_session_cache_stats(c, &st);
    CHECK_INT(st.dropped, 2);
    CHECK_INT(st.keys, 1);
    tls_session_cache_free(c);
}

static void test_expiry(void)
{
    struct tls_session_cache *c = tls_session_cache_new(8, 0);
    SSL_SESSION *old = mk(TLS1_2_VERSION, NOW, 100);
    SSL_SESSION *fresh = mk(TLS1_2_VERSION, NOW + 50, 100);
    tls_session_cache_put(c, "k", old, NOW);
    tls_session_cache_put(c, "k", fresh, NOW + 50);

    static const struct { uint64_t now; int want_fresh; int want_null; } cases[] = {
        { NOW + 60, 1, 0 },   /* both valid: newest */
        { NOW + 100, 1, 0 },  /* old expired exactly at time+timeout */
        { NOW + 149, 1, 0 },
        { NOW + 150, 0, 1 },  /* fresh expired too */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        SSL_SESSION *g = tls_session_cache_get(c, "k", cases[i].now);
        if (cases[i].want_null)
            CHECK(g == NULL);
        else
            CHECK(g == fresh);
        SSL_SESSION_free(g);
    }
    struct tls_cache_stats st;
    tls_session_cache_stats(c, &st);
    CHECK_INT(st.expired, 2);
    CHECK_INT(st.keys, 0);

    /* An already expired session is not stored at all. */
    tls_session_cache_put(c, "k", mk(TLS1_2_VERSION, NOW, 10), NOW + 10);
    CHECK(tls_session_cache_get(c, "k", NOW + 10) == NULL);
    tls_session_cache_free(c);
}

static void test_bad_keys(void)
{
    struct tls_session_cache *c = tls_session_cache_new(8, 0);
    char big[TLS_CACHE_KEY_MAX + 2];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    tls_session_cache_put(c, big, mk(TLS1_2_VERSION, NOW, 3600), NOW);
    tls_session_cache_put(c, "", mk(TLS1_2_VERSION, NOW, 3600), NOW);
    CHECK(tls_session_cache_get(c, big, NOW) == NULL);
    CHECK(tls_session_cache_get(c, "", NOW) == NULL);
    big[TLS_CACHE_KEY_MAX] = '\0';   /* exactly the maximum is fine */
    tls_session_cache_put(c, big, mk(TLS1_2_VERSION, NOW, 3600), NOW);
    SSL_SESSION *g = tls_session_cache_get(c, big, NOW);
    CHECK(g != NULL);
    SSL_SESSION_free(g);
    tls_session_cache_free(c);
}

/* The total bound: least recently used keys give up their oldest
 * sessions first; count reflects what get would hand out. */
static void test_total_bound_and_count(void)
{
    struct tls_session_cache *c = tls_session_cache_new(8, 4);
    for (int i = 0; i < 3; i++)
        tls_session_cache_put(c, "old", mk(TLS1_3_VERSION, NOW + (uint64_t)i, 7200), NOW);
    CHECK_INT(tls_session_cache_count(c, "old", NOW), 3);
    tls_session_cache_put(c, "new", mk(TLS1_3_VERSION, NOW, 7200), NOW);
    tls_session_cache_put(c, "new", mk(TLS1_3_VERSION, NOW + 1, 7200), NOW);
    CHECK_INT(tls_session_cache_count(c, "new", NOW), 2);
    CHECK_INT(tls_session_cache_count(c, "old", NOW), 2);   /* gave one up */
    SSL_SESSION *g = tls_session_cache_get(c, "old", NOW);
    CHECK(g != NULL && SSL_SESSION_get_time(g) == NOW + 2); /* its newest survived */
    SSL_SESSION_free(g);
    CHECK_INT(tls_session_cache_count(c, "old", NOW), 1);
    CHECK_INT(tls_session_cache_count(c, "old", NOW + 8000), 0);   /* expired ones go */
    CHECK_INT(tls_session_cache_count(c, "missing", NOW), 0);
    tls_session_cache_free(c);
}

/* A reusable (TLS 1.2) session resumes any number of connections: count
 * says so (the slow start held a route to one connection per tick when
 * it counted it as one), also behind single-use ones, and not once it
 * has expired. */
static void test_count_reusable(void)
{
    struct tls_session_cache *c = tls_session_cache_new(8, 0);
    tls_session_cache_put(c, "k", mk(TLS1_2_VERSION, NOW, 3600), NOW);
    CHECK(tls_session_cache_count(c, "k", NOW) == SIZE_MAX);
    tls_session_cache_put(c, "k", mk(TLS1_3_VERSION, NOW, 7200), NOW);
    CHECK(tls_session_cache_count(c, "k", NOW) == SIZE_MAX);
    CHECK_INT(tls_session_cache_count(c, "k", NOW + 4000), 1);   /* the 1.2 one expired */
    tls_session_cache_free(c);

    /* Nor once it has been evicted for the total bound (oldest first). */
    c = tls_session_cache_new(8, 2);
    tls_session_cache_put(c, "k", mk(TLS1_2_VERSION, NOW, 3600), NOW);
    tls_session_cache_put(c, "k", mk(TLS1_3_VERSION, NOW, 7200), NOW);
    CHECK(tls_session_cache_count(c, "k", NOW) == SIZE_MAX);
    tls_session_cache_put(c, "k", mk(TLS1_3_VERSION, NOW, 7200), NOW);
    CHECK_INT(tls_session_cache_count(c, "k", NOW), 2);
    /* A reusable session taken by get stays (and counts). */
    tls_session_cache_put(c, "k", mk(TLS1_2_VERSION, NOW, 3600), NOW);
    SSL_SESSION *g = tls_session_cache_get(c, "k", NOW);
    CHECK(g != NULL && !SSL_SESSION_should_be_single_use(g));
    SSL_SESSION_free(g);
    CHECK(tls_session_cache_count(c, "k", NOW) == SIZE_MAX);
    tls_session_cache_free(c);
}

int main(void)
{
    g_ctx = SSL_CTX_new(TLS_method());
    RUN(test_put_get_tls12_reused);
    RUN(test_count_reusable);
    RUN(test_tls13_single_use);
    RUN(test_per_key_bound);
    RUN(test_lru_eviction);
    RUN(test_drop);
    RUN(test_expiry);
    RUN(test_bad_keys);
    RUN(test_total_bound_and_count);
    SSL_CTX_free(g_ctx);
    return check_finish();
}
