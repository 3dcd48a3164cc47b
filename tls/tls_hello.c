/* tls_hello.c - ECDSA or RSA from a ClientHello; see tls_hello.h. */
#include "tls/tls_hello.h"

#include <openssl/bytestring.h>

#define HELLO_EXT_SIGALGS          13
#define HELLO_EXT_SUPPORTED_VERS   43
#define HELLO_SIG_ECDSA            0x03     /* low byte of an ECDSA scheme */
#define HELLO_TLS13                0x0304

/* ECDHE-ECDSA suites a client might offer (TLS 1.0..1.2). */
static int ecdsa_suite(uint16_t s)
{
    static const uint16_t suites[] = {0xc02b, 0xc02c, 0xcca9, 0xc009, 0xc00a, 0xc023, 0xc024};
    for (size_t i = 0; i < sizeof(suites) / sizeof(suites[0]); i++)
        if (s == suites[i])
            return 1;
    return 0;
}

static int offers_tls13(const SSL_CLIENT_HELLO *ch)
{
    const uint8_t *p;
    size_t n;
    if (!SSL_early_callback_ctx_extension_get(ch, HELLO_EXT_SUPPORTED_VERS, &p, &n))
        return 0;
    CBS ext, list;
    CBS_init(&ext, p, n);
    if (!CBS_get_u8_length_prefixed(&ext, &list))
        return 0;
    uint16_t v;
    while (CBS_get_u16(&list, &v))
        if (v == HELLO_TLS13)
            return 1;
    return 0;
}

static int offers_ecdsa_suite(const SSL_CLIENT_HELLO *ch)
{
    CBS suites;
    CBS_init(&suites, ch->cipher_suites, ch->cipher_suites_len);
    uint16_t s;
    while (CBS_get_u16(&suites, &s))
        if (ecdsa_suite(s))
            return 1;
    return 0;
}

int tls_hello_accepts_ecdsa(const SSL_CLIENT_HELLO *ch)
{
    int tls13 = offers_tls13(ch);
    if (!tls13 && !offers_ecdsa_suite(ch))
        return 0;
    const uint8_t *p;
    size_t n;
    if (!SSL_early_callback_ctx_extension_get(ch, HELLO_EXT_SIGALGS, &p, &n))
        return !tls13;      /* TLS 1.2 default: the suite's own algorithm */
    CBS ext, list;
    CBS_init(&ext, p, n);
    if (!CBS_get_u16_length_prefixed(&ext, &list))
        return 0;
    uint16_t alg;
    while (CBS_get_u16(&list, &alg))
        if ((alg & 0xff) == HELLO_SIG_ECDSA)
            return 1;
    return 0;
}
