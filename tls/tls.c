/*
 * tls.c - TLS over in-memory BIOs (BoringSSL); see tls.h.
 *
 * Layout: client/server contexts, connection setup, the custom verify
 * callback (chain + name, pins), the drive functions (handshake, read,
 * write, close) with error classification, then info and sessions.
 *
 * Every SSL call is bracketed the same way: the thread's error queue
 * empty before (one thread serves thousands of connections, a stale entry
 * would be blamed on the wrong peer), and output_ok() after (writing
 * records or an alert to the output may have failed for memory, even when
 * the call did not). SSL_do_handshake, SSL_read and SSL_write empty the
 * queue themselves on entry (BoringSSL's ssl_reset_error_state, seen in
 * profiles), so they are called bare: a second ERR_clear_error, which
 * walks and frees all sixteen slots, was ~2% of the engine's CPU when made
 * before every record. Other calls are preceded by ERR_clear_error().
 */
#include "tls/tls.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/aead.h>
#include <openssl/bio.h>
#include <openssl/bytestring.h>
#include <openssl/ec.h>
#include <openssl/ec_key.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/mem.h>
#include <openssl/nid.h>
#include <openssl/obj.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "tls/tls_tiers.h"
#include "tls/tls_hello.h"
#include "tls/verify_cache.h"

#define TLS_SYSTEM_CA_BUNDLE  "/etc/ssl/certs/ca-certificates.crt"
#define TLS_NAME_MAX          253   /* a DNS name, RFC 1035 */
#define TLS_CONN_SESSIONS_MAX 4     /* queued new sessions per conn */
#define TLS_READ_CHUNK        16384 /* one record's plaintext */
#define TLS_ERR_MAX           160
#define TLS_DETAIL_MAX        128   /* == sizeof(struct tls_info.verify_detail) */
#define TLS_TICKET_KEY_LEN    32    /* AES-256-GCM */
#define TLS_TICKET_ID_LEN     12    /* the GCM nonce, random: the ticket's id */
#define TLS_TICKET_SEEN_MAX   (1u << 16)    /* ticket ids remembered */
#define TLS_TICKET_NONE       UINT32_MAX    /* end of a bucket chain */

_Static_assert(TLS_DETAIL_MAX == sizeof(((struct tls_info *)0)->verify_detail),
               "verify detail sizes differ");

/* What a client handshake established about the server's identity. It is
 * also attached to every session the conn receives (SSL_SESSION ex_data)
 * because BoringSSL does not run custom verification on resumption: a
 * resumed connection reports what the full handshake found. */
struct verify_record {
    int verified;
    char detail[TLS_DETAIL_MAX];
};

struct tls_client_ctx {
    SSL_CTX *ctx[TLS_TIER_PLAINTEXT];   /* one per TLS tier */
    BIO_METHOD *buf_method;             /* each conn's write BIO (out_bio_*) */
    X509_STORE *store;                  /* trust anchors for our verify */
    int store_usable;                   /* 0: verification cannot succeed */
    char store_note[TLS_DETAIL_MAX];    /* why not usable */
    int has_client_cert;
    int sess_idx;                       /* SSL_SESSION ex_data index */
    struct verify_cache *verified;      /* chains that verified (NULL: none kept) */
};

/* One remembered ticket id, in a ring; chained into its hash bucket. */
struct ticket_seen {
    uint8_t id[TLS_TICKET_ID_LEN];
    uint32_t next;                      /* next in the bucket, or NONE */
};

/* Server-side ticket tracking (track_tickets): our own ticket AEAD, so
 * every ticket a client presents passes through ticket_open. A ticket is
 * id (the nonce) || AES-256-GCM(session). The ids of opened tickets are
 * kept in a bounded set; when it is full the oldest is forgotten. The
 * lock covers key and set (the sink shares one context between
 * threads); the counters are atomics so they can be read without it. */
struct ticket_book {
    pthread_mutex_t lock;
    EVP_AEAD_CTX aead;
    struct ticket_seen seen[TLS_TICKET_SEEN_MAX];   /* ring, insertion order */
    uint32_t bucket[TLS_TICKET_SEEN_MAX];           /* head index, or NONE */
    uint32_t nseen, oldest;
    _Atomic uint64_t issued, opened, reused, rejected;
};

struct tls_server_ctx {
    SSL_CTX *ctx;
    BIO_METHOD *buf_method;             /* each conn's write BIO (out_bio_*) */
    struct ticket_book *book;           /* NULL unless track_tickets */
    struct tls_server_ctx *alt;         /* the RSA certificate beside an
                                           ECDSA one (cfg.cert2_file) */
};

struct tls_conn {
    SSL *ssl;
    BIO *rbio, *wbio;                   /* owned by ssl */
    struct buf out;                     /* ciphertext to send (the wbio appends) */
    struct buf in;                      /* ciphertext fed, not yet read (the rbio reads) */
    const uint8_t *lent;                /* tls_conn_lend: the caller's bytes, read after in */
    size_t lent_len;
    struct tls_client_ctx *cctx;        /* NULL for a server conn */
    enum tls_tier tier;
    enum tls_verify_mode mode;
    char *names[TLS_MAX_MATCH_NAMES];   /* reference identifiers */
    size_t nnames;
    uint8_t pins[TLS_MAX_PINS][32];
    size_t npins;
    int has_cert;                       /* a client cert would be presented */
    int cert_requested;                 /* the server sent CertificateRequest */
    int data_seen;                      /* application data was read */
    int verify_ran;                     /* our callback ran (full handshake) */
    int verify_failed;                  /* ... and failed the handshake */
    struct verify_record vr;            /* its result */
    int offered_has_record;             /* params.session carried a record */
    struct verify_record offered;
    SSL_SESSION *sessions[TLS_CONN_SESSIONS_MAX];   /* oldest first */
    size_t nsessions;
    int peer_closed;
    int failed;                         /* a TLS_ERROR was returned */
    int err_negotiation;
    int err_client_cert;
    char err[TLS_ERR_MAX];
};

/* ---- small helpers ---------------------------------------------------- */

static void set_errf(char *err, size_t errlen, const char *what)
{
    if (err == NULL || errlen == 0)
        return;
    unsigned long e = ERR_get_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    snprintf(err, errlen, "%s%s%s", what, r ? ": " : "", r ? r : "");
}

static void copy_str(char *dst, size_t dstlen, const char *src)
{
    snprintf(dst, dstlen, "%s", src ? src : "");
}

static int is_ip_literal(const char *s)
{
    unsigned char tmp[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, s, tmp) == 1 || inet_pton(AF_INET6, s, tmp) == 1;
}

/* host_name_len returns the length of reference name s[0..n) without
 * its one optional trailing dot (the root label), or 0 when it is no
 * name to match a certificate against: empty, longer than TLS_NAME_MAX,
 * an empty label, a space, a control or non-ASCII byte, or a '*' (which
 * would let a wildcard DNS-ID match a "name" that is itself a pattern). */
static size_t host_name_len(const char *s, size_t n)
{
    if (n > 0 && s[n - 1] == '.')
        n--;
    if (n == 0 || n > TLS_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= ' ' || c >= 0x7f || c == '*')
            return 0;
        if (c == '.' && (i == 0 || i == n - 1 || s[i - 1] == '.'))
            return 0;
    }
    return n;
}

/* A reference name (SNI, match name) must be a plausible host name or IP
 * literal; returns its length without the trailing dot, 0 if not. */
static size_t name_ok(const char *s)
{
    return s == NULL ? 0 : host_name_len(s, strnlen(s, TLS_NAME_MAX + 2));
}

static void session_record_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad,
                                int index, long argl, void *argp)
{
    (void)parent; (void)ad; (void)index; (void)argl; (void)argp;
    free(ptr);
}

/* ---- verification ----------------------------------------------------- */

static const char *x509_detail(int err)
{
    switch (err) {
    case X509_V_ERR_HOSTNAME_MISMATCH: return "hostname mismatch";
    case X509_V_ERR_IP_ADDRESS_MISMATCH: return "IP address mismatch";
    default: return X509_verify_cert_error_string(err);
    }
}

static uint8_t x509_alert(int err)
{
    switch (err) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_CERT_NOT_YET_VALID:
        return SSL_AD_CERTIFICATE_EXPIRED;
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
        return SSL_AD_UNKNOWN_CA;
    default:
        return SSL_AD_BAD_CERTIFICATE;
    }
}

/* pkix_check builds leaf + untrusted chain to the store and checks the
 * reference names (DNS-IDs, wildcard only as the whole left-most label;
 * BoringSSL always matches that way, the flag documents intent). The
 * names were normalised by name_ok (no trailing dot, no '*'), and for
 * such names BoringSSL's matcher and tls_name_matches follow the same
 * rule (tests/unit_tls_names.c checks both over one table). IP literal
 * names are used only when no DNS name is given. Returns 1 if verified;
 * otherwise writes the reason and the alert to send. When verified,
 * *keep_until is how long the verdict may be remembered (verify_cache.h):
 * VERIFY_CACHE_TTL_S from now, or 0 when a certificate of the path built
 * expires before then (it is checked again each time). */
static int pkix_check(const struct tls_conn *t, X509 *leaf,
                      STACK_OF(X509) *chain, char *detail, uint8_t *alert,
                      int64_t now_s, int64_t *keep_until)
{
    *keep_until = 0;
    const struct tls_client_ctx *c = t->cctx;
    *alert = SSL_AD_BAD_CERTIFICATE;
    if (!c->store_usable) {
        copy_str(detail, TLS_DETAIL_MAX, c->store_note);
        *alert = SSL_AD_UNKNOWN_CA;
        return 0;
    }
    if (t->nnames == 0) {
        copy_str(detail, TLS_DETAIL_MAX, "no reference name to check");
        return 0;
    }
    X509_STORE_CTX *sc = X509_STORE_CTX_new();
    if (sc == NULL || !X509_STORE_CTX_init(sc, c->store, leaf, chain) ||
        !X509_STORE_CTX_set_default(sc, "ssl_server")) {
        X509_STORE_CTX_free(sc);
        copy_str(detail, TLS_DETAIL_MAX, "verification setup failed");
        *alert = SSL_AD_INTERNAL_ERROR;
        return 0;
    }
    X509_VERIFY_PARAM *vp = X509_STORE_CTX_get0_param(sc);
    X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS |
                                        X509_CHECK_FLAG_NEVER_CHECK_SUBJECT);
    int ok = 1, ndns = 0;
    for (size_t i = 0; i < t->nnames && ok; i++) {
        const char *n = t->names[i];
        if (is_ip_literal(n))
            continue;
        /* Explicit length: 0 would poison the param in this build. */
        ok = ndns == 0 ? X509_VERIFY_PARAM_set1_host(vp, n, strlen(n))
                       : X509_VERIFY_PARAM_add1_host(vp, n, strlen(n));
        ndns++;
    }
    if (ok && ndns == 0)
        ok = X509_VERIFY_PARAM_set1_ip_asc(vp, t->names[0]);
    if (!ok) {
        X509_STORE_CTX_free(sc);
        copy_str(detail, TLS_DETAIL_MAX, "bad reference name");
        return 0;
    }
    int verified = X509_verify_cert(sc) == 1;
    if (verified) {
        copy_str(detail, TLS_DETAIL_MAX, "ok");
        time_t until = (time_t)(now_s + VERIFY_CACHE_TTL_S);
        STACK_OF(X509) *path = X509_STORE_CTX_get0_chain(sc);
        int lasts = path != NULL && sk_X509_num(path) > 0;
        for (size_t i = 0; lasts && i < sk_X509_num(path); i++)
            lasts = X509_cmp_time(X509_get0_notAfter(sk_X509_value(path, i)), &until) > 0;
        if (lasts)
            *keep_until = now_s + VERIFY_CACHE_TTL_S;
    } else {
        int e = X509_STORE_CTX_get_error(sc);
        copy_str(detail, TLS_DETAIL_MAX, x509_detail(e));
        *alert = x509_alert(e);
    }
    X509_STORE_CTX_free(sc);
    return verified;
}

/* ---- DNS-ID matching (tls_name_matches; see tls.h) ---------------------- */

/* Host names compare letters without case (RFC 4343), ASCII only: no
 * locale, no folding of other bytes. A NUL in the pattern never matches
 * (names cannot hold one). */
static int ascii_equal_nocase(const char *pattern, const char *name, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char a = (unsigned char)pattern[i], b = (unsigned char)name[i];
        if (a == '\0')
            return 0;
        if (a >= 'A' && a <= 'Z')
            a = (unsigned char)(a - 'A' + 'a');
        if (b >= 'A' && b <= 'Z')
            b = (unsigned char)(b - 'A' + 'a');
        if (a != b)
            return 0;
    }
    return 1;
}

static int is_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* A letter-digit-hyphen label: non-empty, starts with a letter or digit,
 * does not end with a hyphen (an A-label "xn--..." is one too). */
static int ldh_label_ok(const char *l, size_t n)
{
    if (n == 0 || !is_alnum(l[0]) || l[n - 1] == '-')
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!is_alnum(l[i]) && l[i] != '-')
            return 0;
    return 1;
}

/* Is pattern "*." followed by at least two LDH labels? Anything else
 * holding a '*' is not a wildcard and is compared literally, so it
 * matches no host name. */
static int is_wildcard(const char *pattern, size_t plen)
{
    if (plen < 2 || pattern[0] != '*' || pattern[1] != '.')
        return 0;
    size_t labels = 0, start = 2;
    for (size_t i = 2; i <= plen; i++) {
        if (i < plen && pattern[i] != '.')
            continue;
        if (!ldh_label_ok(pattern + start, i - start))
            return 0;
        labels++;
        start = i + 1;
    }
    return labels >= 2;
}

int tls_name_matches(const char *pattern, size_t plen, const char *name, size_t nlen)
{
    if (pattern == NULL || name == NULL || (nlen = host_name_len(name, nlen)) == 0)
        return 0;
    if (!is_wildcard(pattern, plen))
        return plen == nlen && ascii_equal_nocase(pattern, name, nlen);
    /* "*" stands for exactly one whole, non-empty label of letters,
     * digits and hyphens (an A-label included); the rest is literal. */
    const char *suffix = pattern + 1;   /* ".example.com" */
    size_t slen = plen - 1;
    if (nlen <= slen || !ascii_equal_nocase(suffix, name + (nlen - slen), slen))
        return 0;
    for (size_t i = 0; i < nlen - slen; i++)
        if (!is_alnum(name[i]) && name[i] != '-')
            return 0;
    return 1;
}

/* pin_check: SHA-256 of the leaf DER or of its SubjectPublicKeyInfo DER
 * equals one of the pins. */
static int pin_check(const struct tls_conn *t, const CRYPTO_BUFFER *leaf_buf,
                     X509 *leaf)
{
    uint8_t cert_h[SHA256_DIGEST_LENGTH], spki_h[SHA256_DIGEST_LENGTH];
    SHA256(CRYPTO_BUFFER_data(leaf_buf), CRYPTO_BUFFER_len(leaf_buf), cert_h);
    uint8_t *spki = NULL;
    int spki_len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(leaf), &spki);
    if (spki_len <= 0)
        return 0;
    SHA256(spki, (size_t)spki_len, spki_h);
    OPENSSL_free(spki);
    int match = 0;
    for (size_t i = 0; i < t->npins; i++)
        if (CRYPTO_memcmp(t->pins[i], cert_h, sizeof(cert_h)) == 0 ||
            CRYPTO_memcmp(t->pins[i], spki_h, sizeof(spki_h)) == 0)
            match = 1;
    return match;
}

/* weak_key: is the leaf's public key too weak to authenticate anyone?
 * If so, writes the specific reason into detail and returns 1. Curves
 * other than P-256/P-384/P-521 are refused as well: they are either weak
 * (P-224) or not what a TLS certificate is expected to carry. (BoringSSL
 * already refuses an ECDSA leaf on a group the tier does not offer; the
 * check here states the rule instead of relying on the tier lists.) */
static int weak_key(X509 *leaf, char *detail)
{
    EVP_PKEY *k = X509_get_pubkey(leaf);
    if (k == NULL) {
        copy_str(detail, TLS_DETAIL_MAX, "weak key: unreadable public key");
        return 1;
    }
    int weak = 1, id = EVP_PKEY_id(k);
    if (id == EVP_PKEY_RSA) {
        int bits = EVP_PKEY_bits(k);
        weak = bits < TLS_RSA_MIN_BITS;
        snprintf(detail, TLS_DETAIL_MAX, "weak key: RSA %d bits", bits);
    } else if (id == EVP_PKEY_EC) {
        const EC_GROUP *g = EC_KEY_get0_group(EVP_PKEY_get0_EC_KEY(k));
        int nid = g ? EC_GROUP_get_curve_name(g) : NID_undef;
        weak = nid != NID_X9_62_prime256v1 && nid != NID_secp384r1 &&
               nid != NID_secp521r1;
        snprintf(detail, TLS_DETAIL_MAX, "weak key: EC curve %s",
                 nid != NID_undef ? OBJ_nid2sn(nid) : "unnamed");
    } else if (id == EVP_PKEY_ED25519) {
        weak = 0;
    } else if (id == EVP_PKEY_DSA) {
        copy_str(detail, TLS_DETAIL_MAX, "weak key: DSA");
    } else {
        snprintf(detail, TLS_DETAIL_MAX, "weak key: unsupported key type %s",
                 OBJ_nid2sn(id) ? OBJ_nid2sn(id) : "unknown");
    }
    EVP_PKEY_free(k);
    return weak;
}

/* verify_cb runs once per full client handshake and decides per mode:
 * RECORD and PKIX check the key strength, then chain and names (RECORD
 * only records the result); FINGERPRINT checks the pins alone. */
static void put_be32(uint8_t out[4], uint32_t v)
{
    out[0] = (uint8_t)(v >> 24);
    out[1] = (uint8_t)(v >> 16);
    out[2] = (uint8_t)(v >> 8);
    out[3] = (uint8_t)v;
}

/* chain_key: the verify cache's key for this conn's reference names and
 * the certificates the peer sent (verify_cache.h), length-prefixed so no
 * two inputs share a hash. 0 when there is nothing to key. */
static int chain_key(const struct tls_conn *t, const STACK_OF(CRYPTO_BUFFER) *certs,
                     uint8_t key[VERIFY_CACHE_KEY_LEN])
{
    if (certs == NULL || sk_CRYPTO_BUFFER_num(certs) == 0 || t->nnames == 0)
        return 0;
    SHA256_CTX h;
    uint8_t len[4];
    SHA256_Init(&h);
    SHA256_Update(&h, "tern pkix 1", 12);
    for (size_t i = 0; i < t->nnames; i++) {
        size_t n = strlen(t->names[i]);
        put_be32(len, (uint32_t)n);
        SHA256_Update(&h, len, sizeof(len));
        SHA256_Update(&h, t->names[i], n);
    }
    SHA256_Update(&h, "", 1);   /* names end: no name counts as a cert */
    for (size_t i = 0; i < sk_CRYPTO_BUFFER_num(certs); i++) {
        const CRYPTO_BUFFER *b = sk_CRYPTO_BUFFER_value(certs, i);
        put_be32(len, (uint32_t)CRYPTO_BUFFER_len(b));
        SHA256_Update(&h, len, sizeof(len));
        SHA256_Update(&h, CRYPTO_BUFFER_data(b), CRYPTO_BUFFER_len(b));
    }
    SHA256_Final(key, &h);
    return 1;
}

static enum ssl_verify_result_t verify_cb(SSL *ssl, uint8_t *out_alert)
{
    struct tls_conn *t = SSL_get_app_data(ssl);
    if (t == NULL || t->cctx == NULL)
        return ssl_verify_invalid;
    t->verify_ran = 1;
    t->vr.verified = 0;

    const STACK_OF(CRYPTO_BUFFER) *certs = SSL_get0_peer_certificates(ssl);
    /* A chain that verified for these names before is not checked again
     * (verify_cache.h: the peer's proof of its key still is, by BoringSSL).
     * Pins are compared every time: they are cheap and their own check. */
    uint8_t key[VERIFY_CACHE_KEY_LEN];
    int64_t now_s = (int64_t)time(NULL);
    int keyed = t->mode != TLS_VERIFY_FINGERPRINT && t->cctx->verified != NULL &&
                t->cctx->store_usable && chain_key(t, certs, key);
    if (keyed && verify_cache_get(t->cctx->verified, key, now_s)) {
        t->vr.verified = 1;
        copy_str(t->vr.detail, TLS_DETAIL_MAX, "ok");
        return ssl_verify_ok;
    }
    X509 *leaf = NULL;
    STACK_OF(X509) *chain = sk_X509_new_null();
    int parsed = chain != NULL && certs != NULL && sk_CRYPTO_BUFFER_num(certs) > 0;
    for (size_t i = 0; parsed && i < sk_CRYPTO_BUFFER_num(certs); i++) {
        X509 *x = X509_parse_from_buffer(sk_CRYPTO_BUFFER_value(certs, i));
        if (x == NULL) {
            parsed = 0;
        } else if (i == 0) {
            leaf = x;
        } else if (!sk_X509_push(chain, x)) {
            X509_free(x);
            parsed = 0;
        }
    }

    uint8_t alert = SSL_AD_BAD_CERTIFICATE;
    int pass;
    if (!parsed) {
        copy_str(t->vr.detail, TLS_DETAIL_MAX, "unparsable peer certificate");
        pass = 0;
    } else if (t->mode == TLS_VERIFY_FINGERPRINT) {
        /* A matching pin is the operator's explicit decision about this
         * very key: neither the chain nor the key size overrides it. */
        t->vr.verified = pin_check(t, sk_CRYPTO_BUFFER_value(certs, 0), leaf);
        copy_str(t->vr.detail, TLS_DETAIL_MAX,
                 t->vr.verified ? "ok" : "fingerprint mismatch");
        pass = t->vr.verified;
    } else {
        int64_t keep_until = 0;
        t->vr.verified = !weak_key(leaf, t->vr.detail) &&
                         pkix_check(t, leaf, chain, t->vr.detail, &alert, now_s, &keep_until);
        if (t->vr.verified && keyed && keep_until)
            verify_cache_put(t->cctx->verified, key, now_s, keep_until);
        pass = t->vr.verified || t->mode == TLS_VERIFY_RECORD;
    }
    X509_free(leaf);
    sk_X509_pop_free(chain, X509_free);
    if (pass)
        return ssl_verify_ok;
    t->verify_failed = 1;
    *out_alert = alert;
    return ssl_verify_invalid;
}

/* What this conn can truthfully say about the server's identity now. */
static struct verify_record effective_record(const struct tls_conn *t)
{
    struct verify_record r = { 0, "" };
    if (t->verify_ran)
        return t->vr;
    if (SSL_session_reused(t->ssl)) {
        if (t->offered_has_record)
            return t->offered;
        copy_str(r.detail, sizeof(r.detail), "not checked: resumed session");
        return r;
    }
    copy_str(r.detail, sizeof(r.detail), "not checked");
    return r;
}

/* ---- client certificates ---------------------------------------------- */

/* BoringSSL calls the certificate callback on a client only when the
 * server sent a CertificateRequest, just before our Certificate message
 * goes out; whether it carries a certificate was fixed at conn setup. */
static int client_cert_cb(SSL *ssl, void *arg)
{
    (void)arg;
    struct tls_conn *t = SSL_get_app_data(ssl);
    if (t != NULL)
        t->cert_requested = 1;
    return 1;
}

/* Alerts a server answers a client certificate (or its absence) with. */
static int alert_refuses_client_cert(int alert)
{
    switch (alert) {
    case SSL_AD_HANDSHAKE_FAILURE:
    case SSL_AD_BAD_CERTIFICATE:
    case SSL_AD_UNSUPPORTED_CERTIFICATE:
    case SSL_AD_CERTIFICATE_REVOKED:
    case SSL_AD_CERTIFICATE_EXPIRED:
    case SSL_AD_CERTIFICATE_UNKNOWN:
    case SSL_AD_UNKNOWN_CA:
    case SSL_AD_ACCESS_DENIED:
    case SSL_AD_DECRYPT_ERROR:          /* our CertificateVerify refused */
    case SSL_AD_CERTIFICATE_REQUIRED:
        return 1;
    default:
        return 0;
    }
}

/* client_cert_failure: does library error e mean the server refused our
 * client certificate, or its absence? Only a fatal alert from the server
 * after it asked for a certificate and before it sent any data counts:
 * in TLS 1.3 its verdict arrives after our handshake finished, on the
 * first read. If so, writes the error text into t->err. */
static int client_cert_failure(struct tls_conn *t, unsigned long e)
{
    int alert = ERR_GET_REASON(e) - SSL_AD_REASON_OFFSET;
    if (!t->cert_requested || t->data_seen || ERR_GET_LIB(e) != ERR_LIB_SSL ||
        !alert_refuses_client_cert(alert))
        return 0;
    if (t->has_cert)
        snprintf(t->err, sizeof(t->err), "client certificate rejected by peer: %s",
                 SSL_alert_desc_string_long(alert));
    else
        copy_str(t->err, sizeof(t->err),
                 "peer requires a client certificate (none presented)");
    return 1;
}

/* ---- sessions --------------------------------------------------------- */

static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    struct tls_conn *t = SSL_get_app_data(ssl);
    if (t == NULL || t->cctx == NULL)
        return 0;   /* not ours: BoringSSL keeps (and frees) it */
    struct verify_record *rec = malloc(sizeof(*rec));
    if (rec == NULL)
        return 0;
    *rec = effective_record(t);
    if (!SSL_SESSION_set_ex_data(sess, t->cctx->sess_idx, rec)) {
        free(rec);
        return 0;   /* a session without its record is not worth caching */
    }
    if (t->nsessions == TLS_CONN_SESSIONS_MAX) {
        /* The caller is not taking them; keep the newest. */
        SSL_SESSION_free(t->sessions[0]);
        memmove(&t->sessions[0], &t->sessions[1],
                (TLS_CONN_SESSIONS_MAX - 1) * sizeof(t->sessions[0]));
        t->nsessions--;
    }
    t->sessions[t->nsessions++] = sess;
    return 1;   /* we own the reference now */
}

SSL_SESSION *tls_conn_take_session(struct tls_conn *t)
{
    if (t == NULL || t->nsessions == 0)
        return NULL;
    SSL_SESSION *s = t->sessions[0];
    memmove(&t->sessions[0], &t->sessions[1],
            (t->nsessions - 1) * sizeof(t->sessions[0]));
    t->nsessions--;
    return s;
}

/* ---- contexts --------------------------------------------------------- */

static int load_store(struct tls_client_ctx *c, const char *ca_file,
                      char *err, size_t errlen)
{
    c->store = X509_STORE_new();
    if (c->store == NULL) {
        set_errf(err, errlen, "X509_STORE_new");
        return 0;
    }
    const char *path = ca_file ? ca_file : TLS_SYSTEM_CA_BUNDLE;
    if (ca_file == NULL && access(path, R_OK) != 0) {
        /* No system bundle: opportunistic delivery still works, but
         * nothing can ever be reported as verified. */
        snprintf(c->store_note, sizeof(c->store_note),
                 "no trust store (%s missing)", path);
        return 1;
    }
    if (!X509_STORE_load_locations(c->store, path, NULL)) {
        if (ca_file == NULL) {
            snprintf(c->store_note, sizeof(c->store_note),
                     "no trust store (%s unreadable)", path);
            ERR_clear_error();
            return 1;
        }
        char what[TLS_ERR_MAX];
        snprintf(what, sizeof(what), "load CA file %s", path);
        set_errf(err, errlen, what);
        return 0;
    }
    c->store_usable = 1;
    return 1;
}

/*
 * The conn's BIOs are views of two struct bufs (BIO_get_data): the write
 * BIO appends each record BoringSSL writes straight to the output buffer,
 * the read BIO hands it what tls_conn_feed appended to the input buffer,
 * then what tls_conn_lend lent (read where it lies, in the caller's
 * receive buffer).
 * Mem BIOs cost more: one more copy of every byte sent (in on SSL_write,
 * out to our buffer; with 100 KiB bodies the engine spent a third of its
 * CPU in memmove), and on the receiving side a move of all unread bytes
 * after each read BoringSSL makes (two per record, header and body): 19%
 * of the sink's CPU in `large` was memmove. A buf consumes by moving its
 * read offset.
 */
static int buf_bio_write(BIO *b, const char *p, int n)
{
    struct buf *out = BIO_get_data(b);
    if (n < 0 || !buf_append(out, p, (size_t)n))
        return -1;
    return n;
}

/* The read BIO's data is the conn: the fed buffer first, then the bytes
 * lent by the caller (tls_conn_lend), read in place. */
static int buf_bio_read(BIO *b, char *p, int n)
{
    struct tls_conn *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    size_t want = (size_t)(n > 0 ? n : 0);
    size_t k;
    if (buf_used(&t->in)) {
        k = buf_used(&t->in) < want ? buf_used(&t->in) : want;
        memcpy(p, buf_peek(&t->in), k);
        buf_consume(&t->in, k);
    } else {
        k = t->lent_len < want ? t->lent_len : want;
        if (k)
            memcpy(p, t->lent, k);
        t->lent += k;
        t->lent_len -= k;
    }
    if (k == 0) {
        BIO_set_retry_read(b);   /* SSL_ERROR_WANT_READ: feed more */
        return -1;
    }
    return (int)k;
}

static long buf_bio_ctrl(BIO *b, int cmd, long larg, void *parg)
{
    (void)larg;
    (void)parg;
    if (cmd == BIO_CTRL_PENDING) {   /* only the read BIO is asked */
        const struct tls_conn *t = BIO_get_data(b);
        return (long)(buf_used(&t->in) + t->lent_len);
    }
    return cmd == BIO_CTRL_FLUSH;   /* nothing is held back: flushed */
}

static BIO_METHOD *buf_method_new(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_TYPE_SOURCE_SINK, "tern buffer");
    if (m && (!BIO_meth_set_write(m, buf_bio_write) || !BIO_meth_set_read(m, buf_bio_read) ||
              !BIO_meth_set_ctrl(m, buf_bio_ctrl))) {
        BIO_meth_free(m);
        m = NULL;
    }
    return m;
}

struct tls_client_ctx *tls_client_ctx_new(const struct tls_client_config *cfg,
                                          char *err, size_t errlen)
{
    ERR_clear_error();
    if (cfg == NULL || (cfg->cert_file == NULL) != (cfg->key_file == NULL)) {
        copy_str(err, errlen, "client config: cert_file and key_file go together");
        return NULL;
    }
    struct tls_client_ctx *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        copy_str(err, errlen, "out of memory");
        return NULL;
    }
    if ((c->buf_method = buf_method_new()) == NULL) {
        set_errf(err, errlen, "BIO method");
        goto fail;
    }
    c->sess_idx = SSL_SESSION_get_ex_new_index(0, NULL, NULL, NULL,
                                               session_record_free);
    if (c->sess_idx < 0) {
        set_errf(err, errlen, "session ex_data index");
        goto fail;
    }
    if (!load_store(c, cfg->ca_file, err, errlen))
        goto fail;
    for (int i = 0; i < TLS_TIER_PLAINTEXT; i++) {
        SSL_CTX *ctx = tls_tier_ctx_new((enum tls_tier)i, err, errlen);
        if (ctx == NULL)
            goto fail;
        c->ctx[i] = ctx;
        SSL_CTX_set_custom_verify(ctx, SSL_VERIFY_PEER, verify_cb);
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
                                            SSL_SESS_CACHE_NO_INTERNAL);
        SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
        SSL_CTX_set_cert_cb(ctx, client_cert_cb, NULL);
        if (cfg->cert_file) {
            if (SSL_CTX_use_certificate_chain_file(ctx, cfg->cert_file) != 1 ||
                SSL_CTX_use_PrivateKey_file(ctx, cfg->key_file, SSL_FILETYPE_PEM) != 1 ||
                SSL_CTX_check_private_key(ctx) != 1) {
                set_errf(err, errlen, "client certificate/key");
                goto fail;
            }
            c->has_client_cert = 1;
        }
    }
    c->verified = verify_cache_new();
    return c;
fail:
    tls_client_ctx_free(c);
    return NULL;
}

void tls_client_ctx_free(struct tls_client_ctx *c)
{
    if (c == NULL)
        return;
    for (int i = 0; i < TLS_TIER_PLAINTEXT; i++)
        SSL_CTX_free(c->ctx[i]);
    X509_STORE_free(c->store);
    if (c->buf_method)
        BIO_meth_free(c->buf_method);
    verify_cache_free(c->verified);
    free(c);
}

void tls_client_ctx_verify_stats(const struct tls_client_ctx *c, uint64_t *cached, uint64_t *checked)
{
    struct verify_cache_stats st;
    verify_cache_stats(c ? c->verified : NULL, &st);
    *cached = st.hits;
    *checked = st.misses;
}

int tls_client_ctx_store_usable(const struct tls_client_ctx *c)
{
    return c != NULL && c->store_usable;
}

/* ---- server-side ticket tracking --------------------------------------- */

static int ticket_key_new(struct ticket_book *b)
{
    uint8_t key[TLS_TICKET_KEY_LEN];
    RAND_bytes(key, sizeof(key));
    int ok = EVP_AEAD_CTX_init(&b->aead, EVP_aead_aes_256_gcm(), key, sizeof(key),
                               EVP_AEAD_DEFAULT_TAG_LENGTH, NULL);
    OPENSSL_cleanse(key, sizeof(key));
    return ok;
}

static struct ticket_book *ticket_book_of(SSL *ssl)
{
    const struct tls_server_ctx *s = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    return s ? s->book : NULL;
}

static uint32_t ticket_bucket(const uint8_t *id)
{
    uint32_t h;
    memcpy(&h, id, sizeof(h));   /* ids are random: any 4 bytes hash well */
    return h & (TLS_TICKET_SEEN_MAX - 1);
}

/* ticket_seen_before: was id opened before? Remembers it if not,
 * forgetting the oldest id when the set is full. Called locked. */
static int ticket_seen_before(struct ticket_book *b, const uint8_t *id)
{
    uint32_t *head = &b->bucket[ticket_bucket(id)];
    for (uint32_t i = *head; i != TLS_TICKET_NONE; i = b->seen[i].next)
        if (memcmp(b->seen[i].id, id, TLS_TICKET_ID_LEN) == 0)
            return 1;
    uint32_t slot;
    if (b->nseen < TLS_TICKET_SEEN_MAX) {
        slot = b->nseen++;
    } else {
        slot = b->oldest;
        b->oldest = (b->oldest + 1) % TLS_TICKET_SEEN_MAX;
        uint32_t *link = &b->bucket[ticket_bucket(b->seen[slot].id)];
        while (*link != slot)
            link = &b->seen[*link].next;
        *link = b->seen[slot].next;
    }
    memcpy(b->seen[slot].id, id, TLS_TICKET_ID_LEN);
    b->seen[slot].next = *head;
    *head = slot;
    return 0;
}

static size_t ticket_max_overhead(SSL *ssl)
{
    (void)ssl;
    return TLS_TICKET_ID_LEN + EVP_AEAD_max_overhead(EVP_aead_aes_256_gcm());
}

/* in and out may be the same buffer: the session moves behind the id
 * first and is sealed in place. */
static int ticket_seal(SSL *ssl, uint8_t *out, size_t *out_len, size_t max_out_len,
                       const uint8_t *in, size_t in_len)
{
    struct ticket_book *b = ticket_book_of(ssl);
    if (b == NULL || max_out_len < TLS_TICKET_ID_LEN + in_len)
        return 0;
    uint8_t id[TLS_TICKET_ID_LEN];
    RAND_bytes(id, sizeof(id));
    memmove(out + TLS_TICKET_ID_LEN, in, in_len);
    size_t n = 0;
    pthread_mutex_lock(&b->lock);
    int ok = EVP_AEAD_CTX_seal(&b->aead, out + TLS_TICKET_ID_LEN, &n,
                               max_out_len - TLS_TICKET_ID_LEN, id, sizeof(id),
                               out + TLS_TICKET_ID_LEN, in_len, NULL, 0);
    pthread_mutex_unlock(&b->lock);
    if (!ok)
        return 0;
    memcpy(out, id, sizeof(id));
    *out_len = TLS_TICKET_ID_LEN + n;
    atomic_fetch_add_explicit(&b->issued, 1, memory_order_relaxed);
    return 1;
}

/* A ticket we cannot open (another key, damaged) is ignored: the
 * handshake goes on in full. One opened before is still accepted (the
 * client's behaviour is what the counters are for) but counted. */
static enum ssl_ticket_aead_result_t ticket_open(SSL *ssl, uint8_t *out, size_t *out_len,
                                                 size_t max_out_len, const uint8_t *in,
                                                 size_t in_len)
{
    struct ticket_book *b = ticket_book_of(ssl);
    if (b == NULL)
        return ssl_ticket_aead_error;
    uint8_t id[TLS_TICKET_ID_LEN];
    if (in_len < ticket_max_overhead(ssl)) {
        atomic_fetch_add_explicit(&b->rejected, 1, memory_order_relaxed);
        return ssl_ticket_aead_ignore_ticket;
    }
    memcpy(id, in, sizeof(id));
    /* Open needs its input and output equal or apart: when BoringSSL
     * hands one buffer, move the sealed part to its start first. */
    const uint8_t *sealed = in + TLS_TICKET_ID_LEN;
    size_t sealed_len = in_len - TLS_TICKET_ID_LEN;
    if (out == in) {
        memmove(out, sealed, sealed_len);
        sealed = out;
    }
    pthread_mutex_lock(&b->lock);
    int ok = EVP_AEAD_CTX_open(&b->aead, out, out_len, max_out_len, id, sizeof(id),
                               sealed, sealed_len, NULL, 0);
    int again = ok && ticket_seen_before(b, id);
    pthread_mutex_unlock(&b->lock);
    if (!ok) {
        ERR_clear_error();   /* the handshake goes on: not an error to report */
        atomic_fetch_add_explicit(&b->rejected, 1, memory_order_relaxed);
        return ssl_ticket_aead_ignore_ticket;
    }
    atomic_fetch_add_explicit(&b->opened, 1, memory_order_relaxed);
    if (again)
        atomic_fetch_add_explicit(&b->reused, 1, memory_order_relaxed);
    return ssl_ticket_aead_success;
}

static const SSL_TICKET_AEAD_METHOD ticket_method = {
    .max_overhead = ticket_max_overhead,
    .seal = ticket_seal,
    .open = ticket_open,
};

static struct ticket_book *ticket_book_new(void)
{
    struct ticket_book *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return NULL;
    EVP_AEAD_CTX_zero(&b->aead);
    if (pthread_mutex_init(&b->lock, NULL) != 0) {
        free(b);
        return NULL;
    }
    for (uint32_t i = 0; i < TLS_TICKET_SEEN_MAX; i++)
        b->bucket[i] = TLS_TICKET_NONE;
    if (!ticket_key_new(b)) {
        pthread_mutex_destroy(&b->lock);
        free(b);
        return NULL;
    }
    return b;
}

static void ticket_book_free(struct ticket_book *b)
{
    if (b == NULL)
        return;
    EVP_AEAD_CTX_cleanup(&b->aead);
    pthread_mutex_destroy(&b->lock);
    free(b);
}

/* A fresh key: every ticket sealed before can no longer be opened. */
static int ticket_book_rotate(struct ticket_book *b)
{
    pthread_mutex_lock(&b->lock);
    EVP_AEAD_CTX_cleanup(&b->aead);
    int ok = ticket_key_new(b);
    pthread_mutex_unlock(&b->lock);
    return ok;
}

void tls_server_ctx_ticket_stats(const struct tls_server_ctx *s, struct tls_ticket_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (s == NULL || s->book == NULL)
        return;
    out->issued = atomic_load_explicit(&s->book->issued, memory_order_relaxed);
    out->opened = atomic_load_explicit(&s->book->opened, memory_order_relaxed);
    out->reused = atomic_load_explicit(&s->book->reused, memory_order_relaxed);
    out->rejected = atomic_load_explicit(&s->book->rejected, memory_order_relaxed);
}

/* ---- server context ---------------------------------------------------- */

/* A client that cannot verify ECDSA is moved to the RSA certificate's
 * context (same versions, ciphers and tickets: those stay the first
 * context's, BoringSSL keeps the session context). */
static enum ssl_select_cert_result_t select_cert(const SSL_CLIENT_HELLO *ch)
{
    struct tls_server_ctx *s = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ch->ssl));
    if (s && s->alt && !tls_hello_accepts_ecdsa(ch))
        SSL_set_SSL_CTX(ch->ssl, s->alt->ctx);
    return ssl_select_cert_success;
}

static int key_id(SSL_CTX *ctx)
{
    EVP_PKEY *k = SSL_CTX_get0_privatekey(ctx);
    return k ? EVP_PKEY_id(k) : EVP_PKEY_NONE;
}

/* cfg.cert2_file: a second context for the other key type; the ECDSA one
 * is the context clients start in. */
static int add_second_cert(struct tls_server_ctx *s, const struct tls_server_config *cfg,
                           char *err, size_t errlen)
{
    if (cfg->track_tickets || cfg->key2_file == NULL) {
        copy_str(err, errlen, "server config: cert2 needs key2 and no track_tickets");
        return 0;
    }
    struct tls_server_config c2 = *cfg;
    c2.cert_file = cfg->cert2_file;
    c2.key_file = cfg->key2_file;
    c2.cert2_file = c2.key2_file = NULL;
    s->alt = tls_server_ctx_new(&c2, err, errlen);
    if (s->alt == NULL)
        return 0;
    int k1 = key_id(s->ctx), k2 = key_id(s->alt->ctx);
    if (!((k1 == EVP_PKEY_EC && k2 == EVP_PKEY_RSA) || (k1 == EVP_PKEY_RSA && k2 == EVP_PKEY_EC))) {
        copy_str(err, errlen, "server config: of cert and cert2 one must be ECDSA, the other RSA");
        return 0;
    }
    if (k1 == EVP_PKEY_RSA) {
        SSL_CTX *t = s->ctx;
        s->ctx = s->alt->ctx;
        s->alt->ctx = t;
        SSL_CTX_set_app_data(s->ctx, s);
        SSL_CTX_set_app_data(s->alt->ctx, s->alt);
    }
    SSL_CTX_set_select_certificate_cb(s->ctx, select_cert);
    return 1;
}

struct tls_server_ctx *tls_server_ctx_new(const struct tls_server_config *cfg,
                                          char *err, size_t errlen)
{
    ERR_clear_error();
    if (cfg == NULL || cfg->cert_file == NULL || cfg->key_file == NULL) {
        copy_str(err, errlen, "server config: cert_file and key_file required");
        return NULL;
    }
    if (cfg->require_client_cert && cfg->client_ca_file == NULL) {
        copy_str(err, errlen, "server config: require_client_cert needs client_ca_file");
        return NULL;
    }
    struct tls_server_ctx *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        copy_str(err, errlen, "out of memory");
        return NULL;
    }
    if ((s->buf_method = buf_method_new()) == NULL) {
        set_errf(err, errlen, "BIO method");
        goto fail;
    }
    SSL_CTX *ctx = s->ctx = cfg->use_tier ? tls_tier_ctx_new(cfg->tier, err, errlen)
                                          : SSL_CTX_new(TLS_method());
    if (ctx == NULL) {
        if (!cfg->use_tier)
            set_errf(err, errlen, "SSL_CTX_new");
        goto fail;
    }
    uint16_t minv = cfg->min_version ? cfg->min_version
                    : cfg->use_tier  ? tls_tier_min_version(cfg->tier)
                                     : TLS1_VERSION;
    uint16_t maxv = cfg->max_version ? cfg->max_version : TLS1_3_VERSION;
    if (!SSL_CTX_set_min_proto_version(ctx, minv) ||
        !SSL_CTX_set_max_proto_version(ctx, maxv)) {
        set_errf(err, errlen, "server versions");
        goto fail;
    }
    if (cfg->cipher_list && !SSL_CTX_set_strict_cipher_list(ctx, cfg->cipher_list)) {
        set_errf(err, errlen, "server cipher list");
        goto fail;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->cert_file) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, cfg->key_file, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        set_errf(err, errlen, "server certificate/key");
        goto fail;
    }
    if (!cfg->tickets)
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    if (cfg->no_session_ids)
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_app_data(ctx, s);
    if (cfg->track_tickets) {
        if ((s->book = ticket_book_new()) == NULL) {
            set_errf(err, errlen, "ticket tracking");
            goto fail;
        }
        SSL_CTX_set_ticket_aead_method(ctx, &ticket_method);
    }
    /* Resumption with client certificates needs a session id context. */
    static const uint8_t sid_ctx[] = "tern-sink";
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
    if (cfg->require_client_cert) {
        if (SSL_CTX_load_verify_locations(ctx, cfg->client_ca_file, NULL) != 1) {
            set_errf(err, errlen, "client CA file");
            goto fail;
        }
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->client_ca_file);
        if (names)
            SSL_CTX_set_client_CA_list(ctx, names);
        ERR_clear_error();
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                           NULL);
    }
    if (cfg->cert2_file && !add_second_cert(s, cfg, err, errlen))
        goto fail;
    return s;
fail:
    tls_server_ctx_free(s);
    return NULL;
}

void tls_server_ctx_free(struct tls_server_ctx *s)
{
    if (s == NULL)
        return;
    tls_server_ctx_free(s->alt);
    SSL_CTX_free(s->ctx);
    if (s->buf_method)
        BIO_meth_free(s->buf_method);
    ticket_book_free(s->book);
    free(s);
}

int tls_server_ctx_rotate_ticket_keys(struct tls_server_ctx *s)
{
    if (s == NULL)
        return 0;
    int ok;
    if (s->book) {
        ok = ticket_book_rotate(s->book);
    } else {
        uint8_t keys[48];
        RAND_bytes(keys, sizeof(keys));
        ok = SSL_CTX_set_tlsext_ticket_keys(s->ctx, keys, sizeof(keys));
        OPENSSL_cleanse(keys, sizeof(keys));
    }
    /* Session-ID resumption (TLS 1.2, tickets off) must go too. */
    SSL_CTX_flush_sessions(s->ctx, UINT64_MAX);
    return ok;
}

/* ---- connections ------------------------------------------------------ */

static struct tls_conn *conn_new(SSL_CTX *ctx, const BIO_METHOD *buf_method)
{
    struct tls_conn *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    buf_init(&t->out, 0);
    buf_init(&t->in, 0);
    t->ssl = SSL_new(ctx);
    t->rbio = BIO_new(buf_method);
    t->wbio = BIO_new(buf_method);
    if (t->ssl == NULL || t->rbio == NULL || t->wbio == NULL) {
        BIO_free(t->rbio);
        BIO_free(t->wbio);
        SSL_free(t->ssl);
        free(t);
        return NULL;
    }
    BIO_set_data(t->wbio, &t->out);
    BIO_set_init(t->wbio, 1);
    BIO_set_data(t->rbio, t);   /* nothing fed: reads as "retry" (buf_bio_read) */
    BIO_set_init(t->rbio, 1);
    SSL_set_bio(t->ssl, t->rbio, t->wbio);
    SSL_set_app_data(t->ssl, t);
    return t;
}

struct tls_conn *tls_conn_client_new(struct tls_client_ctx *c,
                                     const struct tls_client_params *p)
{
    if (c == NULL || p == NULL || (unsigned)p->tier >= TLS_TIER_PLAINTEXT ||
        p->nmatch > TLS_MAX_MATCH_NAMES || p->npins > TLS_MAX_PINS)
        return NULL;
    if (p->verify != TLS_VERIFY_RECORD && p->verify != TLS_VERIFY_PKIX &&
        p->verify != TLS_VERIFY_FINGERPRINT)
        return NULL;
    if (p->verify == TLS_VERIFY_FINGERPRINT && p->npins == 0)
        return NULL;
    size_t sni_len = p->sni ? name_ok(p->sni) : 0;
    if (p->sni && sni_len == 0)
        return NULL;
    for (size_t i = 0; i < p->nmatch; i++)
        if (!name_ok(p->match_names[i]))
            return NULL;

    ERR_clear_error();
    struct tls_conn *t = conn_new(c->ctx[p->tier], c->buf_method);
    if (t == NULL)
        return NULL;
    t->cctx = c;
    t->tier = p->tier;
    t->mode = p->verify;
    if (p->nmatch > 0) {
        for (size_t i = 0; i < p->nmatch; i++) {
            const char *m = p->match_names[i];
            if ((t->names[t->nnames++] = strndup(m, name_ok(m))) == NULL)
                goto fail;
        }
    } else if (p->sni) {
        if ((t->names[t->nnames++] = strndup(p->sni, sni_len)) == NULL)
            goto fail;
    }
    memcpy(t->pins, p->pins, p->npins * sizeof(p->pins[0]));
    t->npins = p->npins;

    SSL_set_connect_state(t->ssl);
    if (p->min_version && !SSL_set_min_proto_version(t->ssl, p->min_version))
        goto fail;
    if (p->sni) {
        char sni[TLS_NAME_MAX + 1];   /* sent without the trailing dot */
        memcpy(sni, p->sni, sni_len);
        sni[sni_len] = '\0';
        if (!is_ip_literal(sni) && !SSL_set_tlsext_host_name(t->ssl, sni))
            goto fail;
    }
    t->has_cert = p->present_client_cert && c->has_client_cert;
    if (!p->present_client_cert && c->has_client_cert)
        SSL_certs_clear(t->ssl);
    if (p->session) {
        const struct verify_record *rec =
            SSL_SESSION_get_ex_data(p->session, c->sess_idx);
        if (rec) {
            t->offered = *rec;
            t->offered_has_record = 1;
        }
        if (!SSL_set_session(t->ssl, p->session))
            goto fail;
    }
    ERR_clear_error();
    return t;
fail:
    tls_conn_free(t);
    ERR_clear_error();
    return NULL;
}

struct tls_conn *tls_conn_server_new(struct tls_server_ctx *s)
{
    if (s == NULL)
        return NULL;
    ERR_clear_error();
    struct tls_conn *t = conn_new(s->ctx, s->buf_method);
    if (t == NULL)
        return NULL;
    SSL_set_accept_state(t->ssl);
    return t;
}

void tls_conn_free(struct tls_conn *t)
{
    if (t == NULL)
        return;
    SSL_free(t->ssl);   /* frees both BIOs */
    for (size_t i = 0; i < t->nsessions; i++)
        SSL_SESSION_free(t->sessions[i]);
    for (size_t i = 0; i < t->nnames; i++)
        free(t->names[i]);
    buf_free(&t->out);
    buf_free(&t->in);
    free(t);
}

int tls_conn_feed(struct tls_conn *t, const uint8_t *p, size_t n)
{
    /* behind anything still lent: the reader takes in before lent */
    return tls_conn_unlend(t) && buf_append(&t->in, p, n);   /* read through t->rbio */
}

int tls_conn_lend(struct tls_conn *t, const uint8_t *p, size_t n)
{
    if (t->lent_len || buf_used(&t->in))
        return tls_conn_unlend(t) && buf_append(&t->in, p, n);   /* behind what waits */
    t->lent = p;
    t->lent_len = n;
    return 1;
}

int tls_conn_unlend(struct tls_conn *t)
{
    size_t n = t->lent_len;
    const uint8_t *p = t->lent;
    t->lent = NULL;
    t->lent_len = 0;
    return n == 0 || buf_append(&t->in, p, n);
}

/* output_ok: everything BoringSSL wrote reached the output buffer (an
 * append fails only for memory; the buffer's error bit is sticky). */
static int output_ok(const struct tls_conn *t)
{
    return !t->out.err;
}

/* Library reasons that mean "no common protocol/cipher/group/sigalg": a
 * lower tier might succeed. */
static int reason_is_negotiation(int reason)
{
    switch (reason) {
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_NO_SUPPORTED_VERSIONS_ENABLED:
    case SSL_R_WRONG_VERSION_NUMBER:
    case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
    case SSL_R_NO_SHARED_CIPHER:
    case SSL_R_NO_CIPHERS_AVAILABLE:
    case SSL_R_WRONG_CIPHER_RETURNED:
    case SSL_R_UNKNOWN_CIPHER_RETURNED:
    case SSL_R_NO_SHARED_GROUP:
    case SSL_R_WRONG_CURVE:
    case SSL_R_UNSUPPORTED_ELLIPTIC_CURVE:
    case SSL_R_NO_COMMON_SIGNATURE_ALGORITHMS:
    case SSL_R_WRONG_SIGNATURE_TYPE:
    case SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE:
    case SSL_R_TLSV1_ALERT_INSUFFICIENT_SECURITY:
        return 1;
    default:
        return 0;
    }
}

/* Record why the last call failed, from the verify result or the first
 * error in the queue ("TLSV1_ALERT_PROTOCOL_VERSION" -> "tlsv1 alert
 * protocol version"), then empty the queue. */
static enum tls_status fail(struct tls_conn *t, const char *stage, int sslerr)
{
    t->failed = 1;
    t->err_negotiation = 0;
    unsigned long e = ERR_get_error();
    if (t->verify_failed) {
        snprintf(t->err, sizeof(t->err), "certificate verify failed: %s",
                 t->vr.detail);
    } else if (client_cert_failure(t, e)) {
        t->err_client_cert = 1;
    } else if (sslerr == SSL_ERROR_ZERO_RETURN) {
        snprintf(t->err, sizeof(t->err), "%s: peer closed", stage);
    } else if (e != 0) {
        char reason[64];
        const char *r = ERR_reason_error_string(e);
        copy_str(reason, sizeof(reason), r ? r : "unknown error");
        for (char *q = reason; *q; q++)
            *q = *q == '_' ? ' ' : (char)tolower((unsigned char)*q);
        snprintf(t->err, sizeof(t->err), "%s: %s", stage, reason);
        t->err_negotiation = ERR_GET_LIB(e) == ERR_LIB_SSL &&
                             reason_is_negotiation(ERR_GET_REASON(e));
    } else {
        snprintf(t->err, sizeof(t->err), "%s: error %d", stage, sslerr);
    }
    ERR_clear_error();
    return TLS_ERROR;
}

static enum tls_status out_of_memory(struct tls_conn *t)
{
    t->failed = 1;
    t->err_negotiation = 0;
    copy_str(t->err, sizeof(t->err), "output buffer: out of memory");
    ERR_clear_error();
    return TLS_ERROR;
}

enum tls_status tls_conn_handshake(struct tls_conn *t)
{
    if (t->failed)
        return TLS_ERROR;
    int r = SSL_do_handshake(t->ssl);
    int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(t->ssl, r);
    if (!output_ok(t))
        return out_of_memory(t);
    if (r == 1)
        return TLS_OK;
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return TLS_WANT_IO;
    return fail(t, "handshake", e);
}

enum tls_status tls_conn_read(struct tls_conn *t, struct buf *plain)
{
    if (t->failed)
        return TLS_ERROR;
    if (t->peer_closed)
        return TLS_CLOSED;
    int got = 0;
    for (;;) {
        /* Respect the caller's limit: read only what still fits. */
        size_t chunk = TLS_READ_CHUNK;
        if (plain->limit) {
            size_t room = plain->limit > buf_used(plain) ? plain->limit - buf_used(plain) : 0;
            if (room < chunk)
                chunk = room;
        }
        if (chunk == 0 && got)
            return TLS_OK;   /* full: the caller consumes and calls again */
        uint8_t *d = chunk ? buf_reserve(plain, chunk) : NULL;
        if (d == NULL) {
            t->failed = 1;
            t->err_negotiation = 0;
            copy_str(t->err, sizeof(t->err), "read: buffer full or out of memory");
            return TLS_ERROR;
        }
        int r = SSL_read(t->ssl, d, (int)chunk);
        int e = r > 0 ? SSL_ERROR_NONE : SSL_get_error(t->ssl, r);
        if (!output_ok(t))
            return out_of_memory(t);
        if (r > 0) {
            buf_commit(plain, (size_t)r);
            got = 1;
            t->data_seen = 1;
            /* Every byte fed has been read and BoringSSL holds nothing
             * back: another call could only say WANT_READ. Not making it
             * saves a pass through the record layer per receive (in
             * DATA, one receive per message). */
            if (buf_used(&t->in) == 0 && t->lent_len == 0 && !SSL_has_pending(t->ssl))
                return TLS_OK;
            continue;
        }
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
            return got ? TLS_OK : TLS_WANT_IO;
        if (e == SSL_ERROR_ZERO_RETURN) {
            /* Hand over the data first; the close shows next call. */
            t->peer_closed = 1;
            return got ? TLS_OK : TLS_CLOSED;
        }
        return fail(t, "read", e);
    }
}

enum tls_status tls_conn_write(struct tls_conn *t, const uint8_t *p, size_t n)
{
    if (t->failed)
        return TLS_ERROR;
    while (n > 0) {
        int k = n > INT_MAX ? INT_MAX : (int)n;
        int r = SSL_write(t->ssl, p, k);
        int e = r > 0 ? SSL_ERROR_NONE : SSL_get_error(t->ssl, r);
        if (!output_ok(t))
            return out_of_memory(t);
        if (r <= 0) {
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                return TLS_WANT_IO;
            return fail(t, "write", e);
        }
        p += r;
        n -= (size_t)r;
    }
    return TLS_OK;
}

void tls_conn_close(struct tls_conn *t)
{
    if (t->failed)
        return;
    ERR_clear_error();
    (void)SSL_shutdown(t->ssl);
    ERR_clear_error();
    if (!output_ok(t))
        (void)out_of_memory(t);
}

int tls_conn_output_move(struct tls_conn *t, struct buf *dst)
{
    return buf_move(dst, &t->out);
}

const uint8_t *tls_conn_output(struct tls_conn *t, size_t *n)
{
    *n = buf_used(&t->out);
    return *n ? buf_peek(&t->out) : NULL;
}

void tls_conn_output_consume(struct tls_conn *t, size_t n)
{
    if (n > buf_used(&t->out))
        n = buf_used(&t->out);
    buf_consume(&t->out, n);
}

const char *tls_conn_error(const struct tls_conn *t)
{
    return t->failed ? t->err : "no error";
}

int tls_conn_error_is_negotiation(const struct tls_conn *t)
{
    return t->failed && t->err_negotiation;
}

int tls_conn_error_is_client_cert(const struct tls_conn *t)
{
    return t->failed && t->err_client_cert;
}

/* ---- info ------------------------------------------------------------- */

/* The chain lives in the conn's session (BoringSSL parses it once and
 * keeps it there, also in a resumed session that carried it), so the
 * pointers stay valid as long as the SSL object. */
static STACK_OF(X509) *peer_chain(const struct tls_conn *t)
{
    return t == NULL ? NULL : SSL_get_peer_full_cert_chain(t->ssl);
}

size_t tls_conn_peer_cert_count(const struct tls_conn *t)
{
    STACK_OF(X509) *chain = peer_chain(t);
    return chain ? sk_X509_num(chain) : 0;
}

X509 *tls_conn_peer_cert(const struct tls_conn *t, size_t i)
{
    STACK_OF(X509) *chain = peer_chain(t);
    return chain && i < sk_X509_num(chain) ? sk_X509_value(chain, i) : NULL;
}

int tls_conn_peer_leaf_sha256(const struct tls_conn *t, uint8_t out[32])
{
    const STACK_OF(CRYPTO_BUFFER) *certs =
        t == NULL ? NULL : SSL_get0_peer_certificates(t->ssl);
    if (certs == NULL || sk_CRYPTO_BUFFER_num(certs) == 0)
        return 0;
    const CRYPTO_BUFFER *leaf = sk_CRYPTO_BUFFER_value(certs, 0);
    SHA256(CRYPTO_BUFFER_data(leaf), CRYPTO_BUFFER_len(leaf), out);
    return 1;
}

void tls_conn_info(const struct tls_conn *t, struct tls_info *out)
{
    memset(out, 0, sizeof(*out));
    out->tier = t->tier;
    SSL *ssl = t->ssl;
    copy_str(out->protocol, sizeof(out->protocol), SSL_get_version(ssl));
    const SSL_CIPHER *c = SSL_get_current_cipher(ssl);
    if (c) {
        const char *name = SSL_CIPHER_standard_name(c);
        copy_str(out->cipher, sizeof(out->cipher), name ? name : SSL_CIPHER_get_name(c));
    }
    uint16_t curve = SSL_get_curve_id(ssl);
    if (curve) {
        const char *g = SSL_get_curve_name(curve);
        copy_str(out->group, sizeof(out->group), g ? g : "");
    }
    snprintf(out->mix, sizeof(out->mix), "%s %s %s", out->protocol, out->cipher, out->group);
    out->resumed = SSL_session_reused(ssl);
    const STACK_OF(CRYPTO_BUFFER) *certs = SSL_get0_peer_certificates(ssl);
    out->peer_cert_present = certs != NULL && sk_CRYPTO_BUFFER_num(certs) > 0;

    if (t->cctx) {
        struct verify_record r = effective_record(t);
        out->verified = r.verified;
        copy_str(out->verify_detail, sizeof(out->verify_detail), r.detail);
        return;
    }
    /* Server: "verified" is about the client certificate; tier stays
     * PREFERRED (calloc), it has no meaning here. */
    if (!out->peer_cert_present) {
        copy_str(out->verify_detail, sizeof(out->verify_detail), "no client certificate");
        return;
    }
    long vr = SSL_get_verify_result(ssl);
    out->verified = vr == X509_V_OK;
    copy_str(out->verify_detail, sizeof(out->verify_detail),
             vr == X509_V_OK ? "ok" : x509_detail((int)vr));
}
