/*
 * session_cache.h - per-thread cache of TLS client sessions.
 *
 * DESCRIPTION
 *   Keyed by an opaque string the caller builds from everything that was
 *   checked when the session was made (MX host, port, SNI, policy level,
 *   match names or pins, client certificate), so a session made under a
 *   weaker policy is never offered under a stronger one. Each key keeps up
 *   to TLS_CACHE_SESSIONS_PER_KEY sessions, newest first: a peer sends
 *   about two TLS 1.3 tickets per handshake and each is used once, so a
 *   route with many parallel connections needs a stock of them. A TLS 1.3 session
 *   (SSL_SESSION_should_be_single_use) is removed when handed out, so it is
 *   offered at most once; a TLS 1.2 session stays and is reused. Expired
 *   sessions are dropped on lookup. The number of keys is bounded; the
 *   least recently used key is evicted.
 *
 *   The cache belongs to one worker thread and takes no locks.
 *
 *   A key with no sessions left is removed. Keys must be 1 to
 *   TLS_CACHE_KEY_MAX bytes; other keys are never stored (put frees the
 *   session, get misses). now_s is wall-clock seconds since the epoch
 *   (time(NULL)), the clock SSL_SESSION_get_time uses; a session expires
 *   at its time plus the smaller of its timeout and its ticket lifetime
 *   hint (when non-zero).
 *
 * STATISTICS
 *   puts (sessions stored), hits/misses (get), evictions (keys or sessions evicted by
 *   LRU), expired (sessions found expired), dropped (sessions removed by
 *   tls_session_cache_drop), keys (keys now held).
 *
 * OWNERSHIP
 *   put takes ownership of the caller's reference, always (also when the
 *   session is rejected: expired, bad key, allocation failure). get
 *   returns a reference the caller owns (SSL_SESSION_free it).
 */
#ifndef TERN_TLS_SESSION_CACHE_H
#define TERN_TLS_SESSION_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#define TLS_CACHE_SESSIONS_PER_KEY 256  /* room for a busy route's parallel connections */
#define TLS_CACHE_KEY_MAX          512

struct tls_session_cache;

struct tls_cache_stats {
    uint64_t puts, hits, misses, evictions, expired, dropped;
    size_t keys;
};

/* tls_session_cache_new returns an empty cache holding at most max_keys
 * keys (0 is taken as 1; at most 2^20) and at most max_sessions sessions
 * in all (0: max_keys * TLS_CACHE_SESSIONS_PER_KEY), or NULL when out of
 * memory. Over max_sessions, the least recently used keys lose their
 * oldest sessions first. */
struct tls_session_cache *tls_session_cache_new(size_t max_keys, size_t max_sessions);
void tls_session_cache_free(struct tls_session_cache *c);

/* tls_session_cache_put stores s as the newest session under key; the
 * oldest of a full key's sessions is freed, and a new key beyond max_keys
 * evicts the least recently used key. */
void tls_session_cache_put(struct tls_session_cache *c, const char *key,
                           SSL_SESSION *s, uint64_t now_s);
/* tls_session_cache_get returns the newest unexpired session under key,
 * or NULL. A single-use (TLS 1.3) session is removed as it is returned;
 * others stay. Marks the key most recently used. */
SSL_SESSION *tls_session_cache_get(struct tls_session_cache *c, const char *key,
                                   uint64_t now_s);
/* tls_session_cache_count: how many connections the unexpired sessions
 * under key can resume (expired ones are dropped): one per single-use
 * (TLS 1.3) session, and SIZE_MAX when a reusable one (TLS 1.2) is among
 * them, since get hands that one out again and again. Does not change
 * the LRU order. */
size_t tls_session_cache_count(struct tls_session_cache *c, const char *key, uint64_t now_s);
/* drop every session under key (resumption refused, certificate changed). */
void tls_session_cache_drop(struct tls_session_cache *c, const char *key);
void tls_session_cache_stats(const struct tls_session_cache *c,
                             struct tls_cache_stats *out);

#endif
