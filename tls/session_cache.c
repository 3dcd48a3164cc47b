/*
 * session_cache.c - per-thread TLS client session cache; see session_cache.h.
 *
 * A chained hash table (FNV-1a over the key) finds entries; an age_list
 * (engine/age_list.h) orders them by use, least recent first, so eviction
 * takes the oldest. Each entry holds up to TLS_CACHE_SESSIONS_PER_KEY
 * sessions, newest at index 0.
 */
#include "tls/session_cache.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/age_list.h"

#define CACHE_MAX_KEYS_LIMIT (1u << 20)   /* bounds the bucket array */

struct entry {
    struct entry *hnext;            /* hash chain */
    struct age_node lru;            /* on the cache's use order */
    uint64_t hash;
    SSL_SESSION *s[TLS_CACHE_SESSIONS_PER_KEY];
    size_t n;
    size_t reusable;                /* how many of s[] are not single-use */
    uint64_t pruned;                /* 1 + the second of the last prune; 0: never */
    size_t keylen;
    char key[];                     /* NUL-terminated */
};

struct tls_session_cache {
    struct entry **buckets;
    size_t nbuckets;                /* power of two */
    size_t max_keys;
    size_t max_sessions, nsessions;
    struct age_list lru;            /* entries by last use, least recent first */
    struct tls_cache_stats st;
};

static uint64_t fnv1a(const char *p, size_t n)
{
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* key_len returns the key's length, or 0 if it is empty or longer than
 * TLS_CACHE_KEY_MAX (such keys are never stored). */
static size_t key_len(const char *key)
{
    if (key == NULL)
        return 0;
    size_t n = strnlen(key, TLS_CACHE_KEY_MAX + 1);
    return n > TLS_CACHE_KEY_MAX ? 0 : n;
}

struct tls_session_cache *tls_session_cache_new(size_t max_keys, size_t max_sessions)
{
    if (max_keys == 0)
        max_keys = 1;
    if (max_keys > CACHE_MAX_KEYS_LIMIT)
        max_keys = CACHE_MAX_KEYS_LIMIT;
    struct tls_session_cache *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    size_t nb = 16;
    while (nb < max_keys * 2)
        nb *= 2;
    c->buckets = calloc(nb, sizeof(c->buckets[0]));
    if (c->buckets == NULL) {
        free(c);
        return NULL;
    }
    c->nbuckets = nb;
    c->max_keys = max_keys;
    c->max_sessions = max_sessions ? max_sessions : max_keys * TLS_CACHE_SESSIONS_PER_KEY;
    return c;
}

/* The entry whose lru node this is. */
static struct entry *entry_of(struct age_node *a)
{
    return a ? (struct entry *)(void *)((char *)a - offsetof(struct entry, lru)) : NULL;
}

/* The least recently used entry (NULL: none). */
static struct entry *lru_oldest(const struct tls_session_cache *c)
{
    return entry_of(age_list_oldest(&c->lru));
}

/* e was used at now_s: to the young end. */
static void lru_touch(struct tls_session_cache *c, struct entry *e, uint64_t now_s)
{
    age_list_remove(&c->lru, &e->lru);
    age_list_push(&c->lru, &e->lru, (int64_t)(now_s * 1000));
}

static struct entry *lookup(const struct tls_session_cache *c, const char *key,
                            size_t n, uint64_t h)
{
    for (struct entry *e = c->buckets[h & (c->nbuckets - 1)]; e; e = e->hnext)
        if (e->hash == h && e->keylen == n && memcmp(e->key, key, n) == 0)
            return e;
    return NULL;
}

/* Remove e from the table and the list and free it with its sessions. */
static void entry_remove(struct tls_session_cache *c, struct entry *e)
{
    struct entry **pp = &c->buckets[e->hash & (c->nbuckets - 1)];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    age_list_remove(&c->lru, &e->lru);
    for (size_t i = 0; i < e->n; i++)
        SSL_SESSION_free(e->s[i]);
    c->nsessions -= e->n;
    free(e);
    c->st.keys--;
}

/* entry_drop frees one of e's sessions (already out of s[]), keeping the
 * count of reusable ones, which tls_session_cache_count reads instead of
 * walking sessions that have left the CPU's caches (2% of the engine's
 * CPU with a connection per message, bench/README.md). */
static void entry_drop(struct entry *e, SSL_SESSION *s)
{
    if (!SSL_SESSION_should_be_single_use(s))
        e->reusable--;
    SSL_SESSION_free(s);
}

static int expired(const SSL_SESSION *s, uint64_t now_s)
{
    uint64_t life = SSL_SESSION_get_timeout(s);
    uint32_t hint = SSL_SESSION_get_ticket_lifetime_hint(s);
    if (hint != 0 && hint < life)
        life = hint;
    return now_s >= SSL_SESSION_get_time(s) + life;
}

/* Drop expired sessions of e, keeping order. Once per second at most:
 * expiry has a resolution of seconds and put takes no expired session,
 * so a second walk in the same second finds nothing, and the walk over
 * up to TLS_CACHE_SESSIONS_PER_KEY sessions on every get and put was 2%
 * of the engine's CPU with a connection per message (bench/README.md). */
static void prune(struct tls_session_cache *c, struct entry *e, uint64_t now_s)
{
    if (e->pruned == now_s + 1)
        return;
    e->pruned = now_s + 1;
    size_t k = 0;
    for (size_t i = 0; i < e->n; i++) {
        if (expired(e->s[i], now_s)) {
            entry_drop(e, e->s[i]);
            c->nsessions--;
            c->st.expired++;
        } else {
            e->s[k++] = e->s[i];
        }
    }
    e->n = k;
}

void tls_session_cache_put(struct tls_session_cache *c, const char *key,
                           SSL_SESSION *s, uint64_t now_s)
{
    if (s == NULL)
        return;
    size_t n = key_len(key);
    if (c == NULL || n == 0 || expired(s, now_s)) {
        SSL_SESSION_free(s);   /* put always consumes the reference */
        return;
    }
    uint64_t h = fnv1a(key, n);
    struct entry *e = lookup(c, key, n, h);
    if (e == NULL) {
        if (c->st.keys >= c->max_keys && lru_oldest(c)) {
            entry_remove(c, lru_oldest(c));
            c->st.evictions++;
        }
        e = calloc(1, sizeof(*e) + n + 1);
        if (e == NULL) {
            SSL_SESSION_free(s);
            return;
        }
        memcpy(e->key, key, n);
        e->keylen = n;
        e->hash = h;
        struct entry **b = &c->buckets[h & (c->nbuckets - 1)];
        e->hnext = *b;
        *b = e;
        c->st.keys++;
    } else {
        prune(c, e, now_s);
    }
    lru_touch(c, e, now_s);
    if (e->n == TLS_CACHE_SESSIONS_PER_KEY) {
        entry_drop(e, e->s[--e->n]);   /* oldest goes */
        c->nsessions--;
        c->st.evictions++;
    }
    memmove(&e->s[1], &e->s[0], e->n * sizeof(e->s[0]));
    e->s[0] = s;
    e->n++;
    e->reusable += !SSL_SESSION_should_be_single_use(s);
    c->nsessions++;
    c->st.puts++;
    /* Over the total: the least recently used keys give up their oldest
     * sessions (never the key just stored, unless it is the only one). */
    while (c->nsessions > c->max_sessions && lru_oldest(c)) {
        struct entry *t = lru_oldest(c);   /* e is the youngest: last */
        entry_drop(t, t->s[--t->n]);
        c->nsessions--;
        c->st.evictions++;
        if (t->n == 0)
            entry_remove(c, t);
        if (t == e)
            break;
    }
}

size_t tls_session_cache_count(struct tls_session_cache *c, const char *key, uint64_t now_s)
{
    size_t n = key_len(key);
    struct entry *e = (c && n) ? lookup(c, key, n, fnv1a(key, n)) : NULL;
    if (e == NULL)
        return 0;
    prune(c, e, now_s);
    return e->reusable ? SIZE_MAX : e->n;
}

SSL_SESSION *tls_session_cache_get(struct tls_session_cache *c, const char *key,
                                   uint64_t now_s)
{
    size_t n = key_len(key);
    if (c == NULL)
        return NULL;
    struct entry *e = n ? lookup(c, key, n, fnv1a(key, n)) : NULL;
    if (e)
        prune(c, e, now_s);
    if (e == NULL || e->n == 0) {
        if (e)
            entry_remove(c, e);
        c->st.misses++;
        return NULL;
    }
    SSL_SESSION *s = e->s[0];
    if (SSL_SESSION_should_be_single_use(s)) {
        /* TLS 1.3 ticket: offered once, the caller's reference is ours. */
        memmove(&e->s[0], &e->s[1], (e->n - 1) * sizeof(e->s[0]));
        e->n--;
        c->nsessions--;
    } else {
        SSL_SESSION_up_ref(s);
    }
    c->st.hits++;
    if (e->n == 0) {
        entry_remove(c, e);
    } else {
        lru_touch(c, e, now_s);
    }
    return s;
}

void tls_session_cache_drop(struct tls_session_cache *c, const char *key)
{
    size_t n = key_len(key);
    if (c == NULL || n == 0)
        return;
    struct entry *e = lookup(c, key, n, fnv1a(key, n));
    if (e) {
        c->st.dropped += e->n;
        entry_remove(c, e);
    }
}

void tls_session_cache_stats(const struct tls_session_cache *c,
                             struct tls_cache_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (c)
        *out = c->st;
}

void tls_session_cache_free(struct tls_session_cache *c)
{
    if (c == NULL)
        return;
    while (lru_oldest(c))
        entry_remove(c, lru_oldest(c));
    free(c->buckets);
    free(c);
}
