/*
 * session_cache.h - per-thread cache of TLS client sessions.
 *
 * DESCRIPTION
 *   Keyed by an opaque string the caller builds from everything that was
 *   checked when the session was made (MX host, port, SNI, policy level,
 *   match names or pins, client certificate), so a session made under a
 *   weaker policy is never offered under a stronger one. Each key keeps up
 *   to TLS_CACHE_SESSIONS_PER_KEY sessions, newest first. A TLS 1.3 session
 *   (SSL_SESSION_should_be_single_use) is removed when handed out, so it is
 *   offered at most once; a TLS 1.2 session stays and is reused. Expired
 *   sessions are dropped on lookup. The number of keys is bounded; the
 *   least recently used key is evicted.
 *
 *   The cache belongs to one worker thread and takes no locks.
 *
 * OWNERSHIP
 *   put takes ownership of the caller's reference. get returns a reference
 *   the caller owns (SSL_SESSION_free it).
 */
#ifndef TERN_TLS_SESSION_CACHE_H
#define TERN_TLS_SESSION_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#define TLS_CACHE_SESSIONS_PER_KEY 4
#define TLS_CACHE_KEY_MAX          512

struct tls_session_cache;

struct tls_cache_stats {
    uint64_t puts, hits, misses, evictions, expired, dropped;
    size_t keys;
};

struct tls_session_cache *tls_session_cache_new(size_t max_keys);
void tls_session_cache_free(struct tls_session_cache *c);

void tls_session_cache_put(struct tls_session_cache *c, const char *key,
                           SSL_SESSION *s, uint64_t now_s);
SSL_SESSION *tls_session_cache_get(struct tls_session_cache *c, const char *key,
                                   uint64_t now_s);
/* drop every session under key (resumption refused, certificate changed). */
void tls_session_cache_drop(struct tls_session_cache *c, const char *key);
void tls_session_cache_stats(const struct tls_session_cache *c,
                             struct tls_cache_stats *out);

#endif
