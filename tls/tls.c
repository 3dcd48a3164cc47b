/*
 * tls.c - TLS over memory BIOs (BoringSSL); see tls.h.
 *
 * Layout: client/server contexts, connection setup, the custom verify
 * callback (chain + name, pins), the drive functions (handshake, read,
 * write, close) with error classification, then info and sessions.
 *
 * Every SSL call is bracketed the same way: ERR_clear_error() before (one
 * thread serves thousands of connections, a stale entry would be blamed
 * on the wrong peer), and drain_output() after (the wbio may hold records
 * or an alert even when the call failed).
 */
#include "tls/tls.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bytestring.h>
#include <openssl/err.h>
#include <openssl/mem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "tls/tls_tiers.h"

#define TLS_SYSTEM_CA_BUNDLE  "/etc/ssl/certs/ca-certificates.crt"
#define TLS_NAME_MAX          253   /* a DNS name, RFC 1035 */
#define TLS_CONN_SESSIONS_MAX 4     /* queued new sessions per conn */
#define TLS_READ_CHUNK        16384 /* one record's plaintext */
#define TLS_ERR_MAX           160
#define TLS_DETAIL_MAX        128   /* == sizeof(struct tls_info.verify_detail) */

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
    X509_STORE *store;                  /* trust anchors for our verify */
    int store_usable;                   /* 0: verification cannot succeed */
    char store_note[TLS_DETAIL_MAX];    /* why not usable */
    int has_client_cert;
    int sess_idx;                       /* SSL_SESSION ex_data index */
};

struct tls_server_ctx {
    SSL_CTX *ctx;
};

struct tls_conn {
    SSL *ssl;
    BIO *rbio, *wbio;                   /* owned by ssl */
    struct buf out;                     /* ciphertext to send */
    struct tls_client_ctx *cctx;        /* NULL for a server conn */
    enum tls_tier tier;
    enum tls_verify_mode mode;
    char *names[TLS_MAX_MATCH_NAMES];   /* reference identifiers */
    size_t nnames;
    uint8_t pins[TLS_MAX_PINS][32];
    size_t npins;
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

/* A reference name must be a plausible host name or IP literal: bounded,
 * no NUL games, no spaces. */
static int name_ok(const char *s)
{
    if (s == NULL)
        return 0;
    size_t n = strnlen(s, TLS_NAME_MAX + 1);
    if (n == 0 || n > TLS_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= ' ' || (unsigned char)s[i] >= 0x7f)
            return 0;
    return 1;
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
 * BoringSSL always matches that way, the flag documents intent). IP
 * literal names are used only when no DNS name is given. Returns 1 if
 * verified; otherwise writes the reason and the alert to send. */
static int pkix_check(const struct tls_conn *t, X509 *leaf,
                      STACK_OF(X509) *chain, char *detail, uint8_t *alert)
{
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
    } else {
        int e = X509_STORE_CTX_get_error(sc);
        copy_str(detail, TLS_DETAIL_MAX, x509_detail(e));
        *alert = x509_alert(e);
    }
    X509_STORE_CTX_free(sc);
    return verified;
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

/* verify_cb runs once per full client handshake. It always computes the
 * PKIX result (so RECORD can report it) and decides per mode. */
static enum ssl_verify_result_t verify_cb(SSL *ssl, uint8_t *out_alert)
{
    struct tls_conn *t = SSL_get_app_data(ssl);
    if (t == NULL || t->cctx == NULL)
        return ssl_verify_invalid;
    t->verify_ran = 1;
    t->vr.verified = 0;

    const STACK_OF(CRYPTO_BUFFER) *certs = SSL_get0_peer_certificates(ssl);
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
    } else {
        int pkix = pkix_check(t, leaf, chain, t->vr.detail, &alert);
        if (t->mode == TLS_VERIFY_FINGERPRINT) {
            int pin = pin_check(t, sk_CRYPTO_BUFFER_value(certs, 0), leaf);
            t->vr.verified = pin;
            copy_str(t->vr.detail, TLS_DETAIL_MAX, pin ? "ok" : "fingerprint mismatch");
            alert = SSL_AD_BAD_CERTIFICATE;
            pass = pin;
        } else {
            t->vr.verified = pkix;
            pass = pkix || t->mode == TLS_VERIFY_RECORD;
        }
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
    free(c);
}

int tls_client_ctx_store_usable(const struct tls_client_ctx *c)
{
    return c != NULL && c->store_usable;
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
    SSL_CTX *ctx = s->ctx = SSL_CTX_new(TLS_method());
    if (ctx == NULL) {
        set_errf(err, errlen, "SSL_CTX_new");
        goto fail;
    }
    uint16_t minv = cfg->min_version ? cfg->min_version : TLS1_VERSION;
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
    return s;
fail:
    tls_server_ctx_free(s);
    return NULL;
}

void tls_server_ctx_free(struct tls_server_ctx *s)
{
    if (s == NULL)
        return;
    SSL_CTX_free(s->ctx);
    free(s);
}

int tls_server_ctx_rotate_ticket_keys(struct tls_server_ctx *s)
{
    uint8_t keys[48];
    if (s == NULL)
        return 0;
    RAND_bytes(keys, sizeof(keys));
    int ok = SSL_CTX_set_tlsext_ticket_keys(s->ctx, keys, sizeof(keys));
    OPENSSL_cleanse(keys, sizeof(keys));
    /* Session-ID resumption (TLS 1.2, tickets off) must go too. */
    SSL_CTX_flush_sessions(s->ctx, UINT64_MAX);
    return ok;
}

/* ---- connections ------------------------------------------------------ */

static struct tls_conn *conn_new(SSL_CTX *ctx)
{
    struct tls_conn *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    buf_init(&t->out, 0);
    t->ssl = SSL_new(ctx);
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    if (t->ssl == NULL || t->rbio == NULL || t->wbio == NULL) {
        BIO_free(t->rbio);
        BIO_free(t->wbio);
        SSL_free(t->ssl);
        free(t);
        return NULL;
    }
    /* An empty rbio reads as "retry", i.e. SSL_ERROR_WANT_READ. */
    BIO_set_mem_eof_return(t->rbio, -1);
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
    if (p->sni && !name_ok(p->sni))
        return NULL;
    for (size_t i = 0; i < p->nmatch; i++)
        if (!name_ok(p->match_names[i]))
            return NULL;

    ERR_clear_error();
    struct tls_conn *t = conn_new(c->ctx[p->tier]);
    if (t == NULL)
        return NULL;
    t->cctx = c;
    t->tier = p->tier;
    t->mode = p->verify;
    if (p->nmatch > 0) {
        for (size_t i = 0; i < p->nmatch; i++)
            if ((t->names[t->nnames++] = strdup(p->match_names[i])) == NULL)
                goto fail;
    } else if (p->sni) {
        if ((t->names[t->nnames++] = strdup(p->sni)) == NULL)
            goto fail;
    }
    memcpy(t->pins, p->pins, p->npins * sizeof(p->pins[0]));
    t->npins = p->npins;

    SSL_set_connect_state(t->ssl);
    if (p->min_version && !SSL_set_min_proto_version(t->ssl, p->min_version))
        goto fail;
    if (p->sni && !is_ip_literal(p->sni) &&
        !SSL_set_tlsext_host_name(t->ssl, p->sni))
        goto fail;
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
    struct tls_conn *t = conn_new(s->ctx);
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
    free(t);
}

int tls_conn_feed(struct tls_conn *t, const uint8_t *p, size_t n)
{
    while (n > 0) {
        int k = n > INT_MAX ? INT_MAX : (int)n;
        if (BIO_write(t->rbio, p, k) != k)
            return 0;
        p += k;
        n -= (size_t)k;
    }
    return 1;
}

/* Move everything BoringSSL wrote into our output buffer. Reading the
 * whole mem BIO leaves no remainder, so its memmove costs nothing. */
static int drain_output(struct tls_conn *t)
{
    size_t pending;
    while ((pending = BIO_pending(t->wbio)) > 0) {
        if (pending > INT_MAX)
            pending = INT_MAX;
        uint8_t *d = buf_reserve(&t->out, pending);
        if (d == NULL)
            return 0;
        int k = BIO_read(t->wbio, d, (int)pending);
        if (k <= 0)
            return 0;
        buf_commit(&t->out, (size_t)k);
    }
    return 1;
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
    ERR_clear_error();
    int r = SSL_do_handshake(t->ssl);
    int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(t->ssl, r);
    if (!drain_output(t))
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
        ERR_clear_error();
        int r = SSL_read(t->ssl, d, (int)chunk);
        int e = r > 0 ? SSL_ERROR_NONE : SSL_get_error(t->ssl, r);
        if (!drain_output(t))
            return out_of_memory(t);
        if (r > 0) {
            buf_commit(plain, (size_t)r);
            got = 1;
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
        ERR_clear_error();
        int r = SSL_write(t->ssl, p, k);
        int e = r > 0 ? SSL_ERROR_NONE : SSL_get_error(t->ssl, r);
        if (!drain_output(t))
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
    if (!drain_output(t))
        (void)out_of_memory(t);
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

/* ---- info ------------------------------------------------------------- */

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
