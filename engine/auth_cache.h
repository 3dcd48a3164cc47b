/*
 * auth_cache.h - the listener's memory of credentials that verified, so
 * that a client that authenticates on every connection does not cost a
 * yescrypt check (tens of milliseconds of CPU, one helper thread: a few
 * dozen AUTHs a second in all) each time.
 *
 * DESCRIPTION
 *   An entry is HMAC-SHA256(key, user NUL password) under a random key
 *   drawn when the cache is made: neither the password nor anything that
 *   could be checked against a guess without that key is kept. Only
 *   successful checks go in. A failed AUTH always takes the slow check,
 *   so the cache speeds up no guessing; a password that is wrong for one
 *   user never matches another's entry (the user is in the digest).
 *
 *   Entries live ttl_ms (whole seconds, at least one) from the check that
 *   put them there (the credentials file is read once, at start: a
 *   changed password needs a restart, which empties the cache). The
 *   digests are held in a tls/verify_cache.h table, a fixed set of 32-byte
 *   keys with expiries (VERIFY_CACHE_SETS x VERIFY_CACHE_WAYS entries; a
 *   full set drops its entry that expires first): no allocation after
 *   auth_cache_new.
 *
 * OWNERSHIP
 *   auth_cache_new returns a cache the caller owns (auth_cache_free wipes
 *   and frees it); NULL on failure (memory, or no randomness). One thread
 *   uses it: the listener's. Digests the caller holds are its to wipe.
 */
#ifndef TERN_ENGINE_AUTH_CACHE_H
#define TERN_ENGINE_AUTH_CACHE_H

#include <stddef.h>
#include <stdint.h>

#define AUTH_CACHE_DIGEST 32

struct auth_cache;

/* auth_cache_new: ttl_ms > 0. */
struct auth_cache *auth_cache_new(int64_t ttl_ms);
void auth_cache_free(struct auth_cache *c);

/* auth_cache_digest: the entry's key for (user, pass). */
void auth_cache_digest(const struct auth_cache *c, const char *user, const char *pass,
                       uint8_t out[AUTH_CACHE_DIGEST]);
/* auth_cache_hit: 1 when digest verified less than ttl_ms before now_ms
 * (any clock, the same for every call: the listener's monotonic one). */
int auth_cache_hit(const struct auth_cache *c, const uint8_t digest[AUTH_CACHE_DIGEST],
                   int64_t now_ms);
/* auth_cache_put: digest verified at now_ms. */
void auth_cache_put(struct auth_cache *c, const uint8_t digest[AUTH_CACHE_DIGEST], int64_t now_ms);

#endif
