/* auth_cache.c - verified credentials, as keyed digests; see auth_cache.h. */
#include "engine/auth_cache.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/hmac.h>
#include <openssl/mem.h>
#include <openssl/rand.h>

#include "tls/verify_cache.h"

_Static_assert(AUTH_CACHE_DIGEST == VERIFY_CACHE_KEY_LEN, "a digest is the table's key");

struct auth_cache {
    uint8_t key[32];
    int64_t ttl_s;
    struct verify_cache *set;
};

struct auth_cache *auth_cache_new(int64_t ttl_ms)
{
    if (ttl_ms <= 0)
        return NULL;
    struct auth_cache *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->set = verify_cache_new();
    if (c->set == NULL || !RAND_bytes(c->key, sizeof(c->key))) {
        verify_cache_free(c->set);
        free(c);
        return NULL;
    }
    c->ttl_s = (ttl_ms + 999) / 1000;
    return c;
}

void auth_cache_free(struct auth_cache *c)
{
    if (c == NULL)
        return;
    verify_cache_free(c->set);
    OPENSSL_cleanse(c->key, sizeof(c->key));
    free(c);
}

void auth_cache_digest(const struct auth_cache *c, const char *user, const char *pass,
                       uint8_t out[AUTH_CACHE_DIGEST])
{
    HMAC_CTX h;
    HMAC_CTX_init(&h);
    unsigned len = 0;
    /* user NUL pass: neither holds a NUL (auth_plain_decode), so no two
     * pairs give the same input */
    if (!HMAC_Init_ex(&h, c->key, sizeof(c->key), EVP_sha256(), NULL) ||
        !HMAC_Update(&h, (const uint8_t *)user, strlen(user) + 1) ||
        !HMAC_Update(&h, (const uint8_t *)pass, strlen(pass)) || !HMAC_Final(&h, out, &len) ||
        len != AUTH_CACHE_DIGEST)
        RAND_bytes(out, AUTH_CACHE_DIGEST);   /* matches nothing */
    HMAC_CTX_cleanup(&h);
}

int auth_cache_hit(const struct auth_cache *c, const uint8_t digest[AUTH_CACHE_DIGEST],
                   int64_t now_ms)
{
    return verify_cache_get(c->set, digest, now_ms / 1000);
}

void auth_cache_put(struct auth_cache *c, const uint8_t digest[AUTH_CACHE_DIGEST], int64_t now_ms)
{
    verify_cache_put(c->set, digest, now_ms / 1000, now_ms / 1000 + c->ttl_s);
}
