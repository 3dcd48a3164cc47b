/*
 * tls_tiers.c - the TLS tiers as BoringSSL strings; see tls_tiers.h.
 *
 * TLS 1.3 suites are fixed in this BoringSSL (AES-128-GCM, AES-256-GCM,
 * ChaCha20-Poly1305) so tiers differ in versions, the TLS <= 1.2 list,
 * groups and signature algorithms. Lists go through the strict setter:
 * the lax SSL_CTX_set_cipher_list silently ignores unknown words, which
 * would turn a typo into a weaker tier.
 */
#include "tls/tls_tiers.h"

#include <stdio.h>
#include <string.h>

#include <openssl/err.h>

struct tier_def {
    const char *name;
    uint16_t min_version, max_version;
    const char *ciphers;    /* strict TLS <= 1.2 list */
    const char *curves;     /* NULL: library default */
    const char *sigalgs;    /* NULL: library default */
};

#define TIER_AEAD                                                       \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"        \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"        \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

#define TIER_ECDHE_CBC                                                  \
    "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:"                      \
    "ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES256-SHA"

/* SHA-2 only: no RSA+SHA1 / ECDSA+SHA1 for the tiers that mean it. */
#define TIER_SHA2_SIGALGS                                               \
    "ECDSA+SHA256:ECDSA+SHA384:ECDSA+SHA512:"                           \
    "RSA-PSS+SHA256:RSA-PSS+SHA384:RSA-PSS+SHA512:"                     \
    "RSA+SHA256:RSA+SHA384:RSA+SHA512"

static const struct tier_def tier_defs[TLS_TIER_COUNT] = {
    [TLS_TIER_PREFERRED] = {
        .name = "preferred",
        .min_version = TLS1_2_VERSION, .max_version = TLS1_3_VERSION,
        .ciphers = TIER_AEAD,
        .curves = "X25519:P-256:P-384",
        .sigalgs = TIER_SHA2_SIGALGS,
    },
    [TLS_TIER_SUFFICIENT] = {
        .name = "sufficient",
        .min_version = TLS1_2_VERSION, .max_version = TLS1_3_VERSION,
        .ciphers = TIER_AEAD ":" TIER_ECDHE_CBC,
        .curves = "X25519:P-256:P-384",
        .sigalgs = TIER_SHA2_SIGALGS,
    },
    /* Opportunistic only (RFC 7435, RFC 9325 5.2): anything beats
     * cleartext, so old versions, static RSA and 3DES are allowed, and
     * the default signature algorithms (with RSA+SHA1) are kept. */
    [TLS_TIER_LEGACY] = {
        .name = "legacy",
        .min_version = TLS1_VERSION, .max_version = TLS1_3_VERSION,
        .ciphers = TIER_AEAD ":" TIER_ECDHE_CBC ":"
                   "AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-SHA:AES256-SHA:"
                   "DES-CBC3-SHA",
        .curves = "X25519:P-256:P-384:P-521",
        .sigalgs = NULL,
    },
    [TLS_TIER_PLAINTEXT] = { .name = "plaintext" },
};

const char *tls_tier_name(enum tls_tier t)
{
    if ((unsigned)t >= TLS_TIER_COUNT)
        return "unknown";
    return tier_defs[t].name;
}

uint16_t tls_tier_min_version(enum tls_tier t)
{
    if ((unsigned)t >= TLS_TIER_COUNT)
        return 0;
    return tier_defs[t].min_version;
}

static void set_err(char *err, size_t errlen, const char *what,
                    const char *tier)
{
    if (err == NULL || errlen == 0)
        return;
    unsigned long e = ERR_get_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    snprintf(err, errlen, "tier %s: %s%s%s", tier, what, r ? ": " : "",
             r ? r : "");
}

SSL_CTX *tls_tier_ctx_new(enum tls_tier t, char *err, size_t errlen)
{
    if ((unsigned)t >= TLS_TIER_COUNT || tier_defs[t].ciphers == NULL) {
        set_err(err, errlen, "not a TLS tier", tls_tier_name(t));
        return NULL;
    }
    const struct tier_def *d = &tier_defs[t];
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    if (ctx == NULL) {
        set_err(err, errlen, "SSL_CTX_new", d->name);
        return NULL;
    }
    const char *what = NULL;
    if (!SSL_CTX_set_min_proto_version(ctx, d->min_version) ||
        !SSL_CTX_set_max_proto_version(ctx, d->max_version))
        what = "versions";
    else if (!SSL_CTX_set_strict_cipher_list(ctx, d->ciphers))
        what = "cipher list";
    else if (d->curves && !SSL_CTX_set1_curves_list(ctx, d->curves))
        what = "curves";
    else if (d->sigalgs && !SSL_CTX_set1_sigalgs_list(ctx, d->sigalgs))
        what = "sigalgs";
    if (what) {
        set_err(err, errlen, what, d->name);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

enum tls_tier tls_info_tier(const struct tls_info *t)
{
    /* What a handshake reached, whatever tier was offered: a legacy-tier
     * context that negotiated TLS 1.3 reached the preferred profile. */
    if (strcmp(t->protocol, "TLSv1.3") == 0)
        return TLS_TIER_PREFERRED;
    if (strcmp(t->protocol, "TLSv1.2") == 0 && strstr(t->cipher, "ECDHE")) {
        if (strstr(t->cipher, "GCM") || strstr(t->cipher, "CHACHA20"))
            return TLS_TIER_PREFERRED;
        return TLS_TIER_SUFFICIENT;
    }
    return TLS_TIER_LEGACY;
}
