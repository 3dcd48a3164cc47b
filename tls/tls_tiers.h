/*
 * tls_tiers.h - internal: build an SSL_CTX configured for one TLS tier.
 *
 * DESCRIPTION
 *   tls/tls_tiers.c is the only place where cipher, group and signature
 *   algorithm strings live (see the tier table in tls/tls.h). tls.c adds
 *   verification, sessions and certificates on top.
 */
#ifndef TERN_TLS_TLS_TIERS_H
#define TERN_TLS_TLS_TIERS_H

#include <stddef.h>

#include <openssl/ssl.h>

#include "tls/tls.h"

/* tls_tier_ctx_new returns a new client SSL_CTX (TLS_method) whose
 * versions, TLS <= 1.2 cipher list (strict), groups and signature
 * algorithms are those of tier t, or NULL with a reason in err when t is
 * not a TLS tier or BoringSSL rejects a string. The caller owns the
 * context (SSL_CTX_free). */
SSL_CTX *tls_tier_ctx_new(enum tls_tier t, char *err, size_t errlen);

/* tls_tier_min_version returns the lowest protocol version tier t allows
 * (TLS1_VERSION, TLS1_2_VERSION), or 0 for PLAINTEXT or an unknown tier. */
uint16_t tls_tier_min_version(enum tls_tier t);

#endif
