/*
 * verify_cache.h - remembered PKIX verdicts for certificate chains.
 *
 * DESCRIPTION
 *   A full handshake with a receiver that offers no resumption verifies
 *   the same chain for the same names again and again: on this BoringSSL
 *   (P-256 in portable C) the chain's signature check alone was ~300 us of
 *   a full handshake's ~1,260 us of engine CPU (bench/README.md, "What a
 *   handshake costs"). The cache keeps, per client context, the chains that
 *   verified: a key is a SHA-256 the caller computes over everything the
 *   verdict depends on (the reference names and every certificate the peer
 *   sent, in order; the trust store is the context's own), and an entry
 *   holds until its expiry. Only successes are kept: a failure is checked
 *   again every time, so its reason is always fresh.
 *
 *   What it does not skip: the peer's proof that it holds the leaf's key
 *   (TLS 1.3 CertificateVerify, TLS 1.2 ServerKeyExchange) is checked by
 *   BoringSSL on every handshake, outside the verify callback. A cached
 *   verdict only says "this exact chain builds to our store and covers
 *   these names", which stays true until a certificate of the path
 *   expires; the caller sets the expiry no later than that.
 *
 *   Fixed size: VERIFY_CACHE_SETS sets of VERIFY_CACHE_WAYS entries; a full
 *   set replaces the entry that expires first. No allocation after new.
 *
 * OWNERSHIP
 *   One cache per client context, used by the thread that owns the
 *   context (the engine: one worker); no locks.
 *
 * ERRORS
 *   verify_cache_new returns NULL when out of memory (the context then
 *   runs without a cache: every chain is checked).
 */
#ifndef TERN_TLS_VERIFY_CACHE_H
#define TERN_TLS_VERIFY_CACHE_H

#include <stdint.h>

#define VERIFY_CACHE_KEY_LEN 32     /* SHA-256 */
#define VERIFY_CACHE_SETS    1024   /* power of two */
#define VERIFY_CACHE_WAYS    4
#define VERIFY_CACHE_TTL_S   600    /* a verdict is kept at most this long */

struct verify_cache;

struct verify_cache_stats {
    uint64_t hits;      /* get found an unexpired verdict */
    uint64_t misses;    /* get found none: the chain was checked */
    uint64_t stored;    /* put */
};

struct verify_cache *verify_cache_new(void);
void verify_cache_free(struct verify_cache *vc);

/* verify_cache_get: 1 when key verified before and its entry has not
 * expired at now_s (wall-clock seconds), else 0. Counts a hit or a miss. */
int verify_cache_get(struct verify_cache *vc, const uint8_t key[VERIFY_CACHE_KEY_LEN], int64_t now_s);

/* verify_cache_put remembers that key verified, until expires_s (a time
 * not after now_s is ignored). A key already held gets the new expiry. */
void verify_cache_put(struct verify_cache *vc, const uint8_t key[VERIFY_CACHE_KEY_LEN],
                      int64_t now_s, int64_t expires_s);

void verify_cache_stats(const struct verify_cache *vc, struct verify_cache_stats *out);

#endif
