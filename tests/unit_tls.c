/* unit_tls.c - real TLS in memory: a tern client conn and a tern server
 * conn in one process, ciphertext shuttled between them. Certificates come
 * from scripts/gen-test-certs.sh, generated into a mktemp dir (tests run
 * from the repository root). */
#include "tls/tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "tests/check.h"
#include "tests/test_certs.h"

#define MAX_ROUNDS   16
#define TLS_TEST_ERR_MAX 200

static struct tls_client_ctx *g_client;        /* trusts ca.pem, has client cert */

/* A server context for leaf NAME (NAME.pem, NAME.key) with the rest of
 * cfg as given. */
static struct tls_server_ctx *server_ctx_cfg(const char *leaf, struct tls_server_config cfg)
{
    char pem[64], key[64], err[256] = "";
    snprintf(pem, sizeof(pem), "%s.pem", leaf);
    snprintf(key, sizeof(key), "%s.key", leaf);
    cfg.cert_file = cert_path(pem);
    cfg.key_file = cert_path(key);
    struct tls_server_ctx *s = tls_server_ctx_new(&cfg, err, sizeof(err));
    if (s == NULL)
        printf("  server_ctx(%s): %s\n", leaf, err);
    return s;
}

static struct tls_server_ctx *server_ctx(const char *leaf, uint16_t minv,
                                         uint16_t maxv, const char *ciphers,
                                         int tickets, int require_cert)
{
    struct tls_server_config cfg = {
        .min_version = minv,
        .max_version = maxv,
        .cipher_list = ciphers,
        .tickets = tickets,
        .require_client_cert = require_cert,
        .client_ca_file = require_cert ? cert_path("ca.pem") : NULL,
    };
    return server_ctx_cfg(leaf, cfg);
}

/* Move one side's output into the other side's input. */
static void shuttle(struct tls_conn *from, struct tls_conn *to)
{
    size_t n;
    const uint8_t *p = tls_conn_output(from, &n);
    if (n) {
        tls_conn_feed(to, p, n);
        tls_conn_output_consume(from, n);
    }
}

static void run_handshake(struct tls_conn *c, struct tls_conn *s,
                          enum tls_status *cr, enum tls_status *sr)
{
    *cr = *sr = TLS_WANT_IO;
    for (int i = 0; i < MAX_ROUNDS; i++) {
        if (*cr == TLS_WANT_IO)
            *cr = tls_conn_handshake(c);
        shuttle(c, s);
        if (*sr == TLS_WANT_IO)
            *sr = tls_conn_handshake(s);
        shuttle(s, c);
        if (*cr != TLS_WANT_IO && *sr != TLS_WANT_IO)
            break;
    }
}

/* from writes msg; to reads it all (appended to got). */
static enum tls_status send_msg(struct tls_conn *from, struct tls_conn *to,
                                const char *msg, size_t n, struct buf *got)
{
    if (tls_conn_write(from, (const uint8_t *)msg, n) != TLS_OK)
        return TLS_ERROR;
    shuttle(from, to);
    enum tls_status st = tls_conn_read(to, got);
    shuttle(to, from);
    return st;
}

struct hs {
    struct tls_conn *c, *s;
    enum tls_status cr, sr;
    struct tls_info ci, si;
};

static void hs_run(struct hs *h, struct tls_client_ctx *cc, struct tls_server_ctx *sc,
                   const struct tls_client_params *p)
{
    memset(h, 0, sizeof(*h));
    h->c = tls_conn_client_new(cc, p);
    h->s = tls_conn_server_new(sc);
    if (h->c == NULL || h->s == NULL) {
        CHECK_FAILF("conn_new failed");
        h->cr = h->sr = TLS_ERROR;
        return;
    }
    run_handshake(h->c, h->s, &h->cr, &h->sr);
    tls_conn_info(h->c, &h->ci);
    tls_conn_info(h->s, &h->si);
}

static void hs_free(struct hs *h)
{
    tls_conn_free(h->c);
    tls_conn_free(h->s);
}

static struct tls_client_params params(enum tls_tier tier, enum tls_verify_mode m,
                                       const char *sni)
{
    struct tls_client_params p;
    memset(&p, 0, sizeof(p));
    p.tier = tier;
    p.verify = m;
    p.sni = sni;
    return p;
}

/* ---- protocol and tiers ------------------------------------------------ */

static void test_tier_names(void)
{
    CHECK_STR(tls_tier_name(TLS_TIER_PREFERRED), "preferred");
    CHECK_STR(tls_tier_name(TLS_TIER_SUFFICIENT), "sufficient");
    CHECK_STR(tls_tier_name(TLS_TIER_LEGACY), "legacy");
    CHECK_STR(tls_tier_name(TLS_TIER_PLAINTEXT), "plaintext");
}

static void test_tls13_preferred(void)
{
    struct tls_server_ctx *sc = server_ctx("server", 0, 0, NULL, 1, 0);
    struct tls_client_params p = params(TLS_TIER_PREFERRED, TLS_VERIFY_RECORD, "mx.test");
    struct hs h;
    hs_run(&h, g_client, sc, &p);
    CHECK_INT(h.cr, TLS_OK);
    CHECK_INT(h.sr, TLS_OK);
    CHECK_STR(h.ci.protocol, "TLSv1.3");
    CHECK_STR(h.ci.group, "X25519");
    CHECK(strncmp(h.ci.cipher, "TLS_", 4) == 0);
    CHECK_INT(h.ci.tier, TLS_TIER_PREFERRED);
    CHECK_INT(h.ci.verified, 1);
    CHECK_STR(h.ci.verify_detail, "ok");
    CHECK_INT(h.ci.peer_cert_present, 1);
    CHECK_INT(h.ci.resumed, 0);
    CHECK_STR(h.si.protocol, "TLSv1.3");
    CHECK_INT(h.si.peer_cert_present, 0);   /* no client cert asked */
    CHECK_INT(h.si.verified, 0);
    hs_free(&h);
    tls_server_ctx_free(sc);
}

/* Table: server restrictions x client tier -> outcome. */
static void test_tier_negotiation(void)
{
    static const struct {
        const char *name;
        uint16_t smin, smax;
        const char *sciphers;
        enum tls_tier tier;
        int want_ok;
        const char *want_protocol;   /* when ok */
        const char *want_cipher;     /* when ok, NULL: don't check */
        const char *leaf;            /* server certificate */
    } cases[] = {
        { "tls12 aead / preferred", 0, TLS1_2_VERSION, NULL, TLS_TIER_PREFERRED, 1,
          "TLSv1.2", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "server" },
        { "tls12 chacha only / preferred", 0, TLS1_2_VERSION,
          "ECDHE-ECDSA-CHACHA20-POLY1305", TLS_TIER_PREFERRED, 1,
          "TLSv1.2", "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "server" },
        { "tls12 cbc / preferred", 0, TLS1_2_VERSION, "ECDHE-ECDSA-AES128-SHA",
          TLS_TIER_PREFERRED, 0, NULL, NULL, "server" },
        { "tls12 cbc / sufficient", 0, TLS1_2_VERSION, "ECDHE-ECDSA-AES128-SHA",
          TLS_TIER_SUFFICIENT, 1, "TLSv1.2", "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", "server" },
        { "tls10 / preferred", TLS1_VERSION, TLS1_VERSION, "ECDHE-ECDSA-AES128-SHA",
          TLS_TIER_PREFERRED, 0, NULL, NULL, "server" },
        { "tls10 / sufficient", TLS1_VERSION, TLS1_VERSION, "ECDHE-ECDSA-AES128-SHA",
          TLS_TIER_SUFFICIENT, 0, NULL, NULL, "server" },
        { "tls10 / legacy", TLS1_VERSION, TLS1_VERSION, "ECDHE-ECDSA-AES128-SHA",
          TLS_TIER_LEGACY, 1, "TLSv1", "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", "server" },
        { "tls11 / legacy", TLS1_1_VERSION, TLS1_1_VERSION, NULL,
          TLS_TIER_LEGACY, 1, "TLSv1.1", NULL, "server" },
        { "default server / legacy", 0, 0, NULL,
          TLS_TIER_LEGACY, 1, "TLSv1.3", NULL, "server" },
        { "rsa ecdhe / preferred", 0, TLS1_2_VERSION, NULL, TLS_TIER_PREFERRED, 1,
          "TLSv1.2", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "rsa2048" },
        { "static rsa / sufficient", 0, TLS1_2_VERSION, "AES128-SHA",
          TLS_TIER_SUFFICIENT, 0, NULL, NULL, "rsa2048" },
        { "static rsa / legacy", 0, TLS1_2_VERSION, "AES128-SHA",
          TLS_TIER_LEGACY, 1, "TLSv1.2", "TLS_RSA_WITH_AES_128_CBC_SHA", "rsa2048" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct tls_server_ctx *sc = server_ctx(cases[i].leaf,
                                               cases[i].smin, cases[i].smax,
                                               cases[i].sciphers, 1, 0);
        if (sc == NULL) {
            CHECK_FAILF("%s: no server ctx", cases[i].name);
            continue;
        }
        struct tls_client_params p = params(cases[i].tier, TLS_VERIFY_RECORD, "mx.test");
        struct hs h;
        hs_run(&h, g_client, sc, &p);
        if (cases[i].want_ok) {
            if (h.cr != TLS_OK || h.sr != TLS_OK)
                CHECK_FAILF("%s: client %d server %d (%s / %s), want ok", cases[i].name,
                            h.cr, h.sr, tls_conn_error(h.c), tls_conn_error(h.s));
            if (strcmp(h.ci.protocol, cases[i].want_protocol) != 0)
                CHECK_FAILF("%s: protocol %s, want %s", cases[i].name, h.ci.protocol,
                            cases[i].want_protocol);
            if (cases[i].want_cipher && strcmp(h.ci.cipher, cases[i].want_cipher) != 0)
                CHECK_FAILF("%s: cipher %s, want %s", cases[i].name, h.ci.cipher,
                            cases[i].want_cipher);
            if (h.ci.verified != 1)
                CHECK_FAILF("%s: verified %d (%s)", cases[i].name, h.ci.verified,
                            h.ci.verify_detail);
        } else {
            if (h.cr != TLS_ERROR)
                CHECK_FAILF("%s: client %d, want TLS_ERROR", cases[i].name, h.cr);
            if (!tls_conn_error_is_negotiation(h.c))
                CHECK_FAILF("%s: error \"%s\" not classified as negotiation",
                            cases[i].name, tls_conn_error(h.c));
            if (getenv("TLS_TEST_VERBOSE"))
                printf("  %s: %s\n", cases[i].name, tls_conn_error(h.c));
        }
        hs_free(&h);
        tls_server_ctx_free(sc);
    }
}

/* A client min_version above what the server does fails as negotiation. */
static void test_min_version_override(void)
{
    struct tls_server_ctx *sc = server_ctx("server", 0, TLS1_2_VERSION, NULL, 1, 0);
    struct tls_client_params p = params(TLS_TIER_LEGACY, TLS_VERIFY_RECORD, "mx.test");
    p.min_version = TLS1_3_VERSION;
    struct hs h;
    hs_run(&h, g_client, sc, &p);
    CHECK_INT(h.cr, TLS_ERROR);
    CHECK_INT(tls_conn_error_is_negotiation(h.c), 1);
    hs_free(&h);
    tls_server_ctx_free(sc);
}

/* ---- verification ------------------------------------------------------ */

static void test_verification_table(void)
{
    static const struct {
        const char *leaf;
        enum tls_verify_mode mode;
        const char *sni;
        const char *names[2];
        int want_ok;                /* handshake succeeds */
        int want_verified;
        const char *want_detail;
    } cases[] = {
        { "server", TLS_VERIFY_RECORD, "mx.test", {0}, 1, 1, "ok" },
        { "server", TLS_VERIFY_RECORD, "localhost", {0}, 1, 1, "ok" },
        { "wrongname", TLS_VERIFY_RECORD, "mx.test", {0}, 1, 0, "hostname mismatch" },
        { "server", TLS_VERIFY_RECORD, "other.test", {0}, 1, 0, "hostname mismatch" },
        { "expired", TLS_VERIFY_RECORD, "mx.test", {0}, 1, 0, "certificate has expired" },
        { "untrusted", TLS_VERIFY_RECORD, "mx.test", {0}, 1, 0,
          "unable to get local issuer certificate" },
        { "server", TLS_VERIFY_PKIX, "mx.test", {0}, 1, 1, "ok" },
        { "rsa2048", TLS_VERIFY_PKIX, "mx.test", {0}, 1, 1, "ok" },
        { "wrongname", TLS_VERIFY_PKIX, "mx.test", {0}, 0, 0, "hostname mismatch" },
        { "expired", TLS_VERIFY_PKIX, "mx.test", {0}, 0, 0, "certificate has expired" },
        { "notyet", TLS_VERIFY_PKIX, "mx.test", {0}, 0, 0, "certificate is not yet valid" },
        { "untrusted", TLS_VERIFY_PKIX, "mx.test", {0}, 0, 0,
          "unable to get local issuer certificate" },
        { "nointer", TLS_VERIFY_PKIX, "mx.test", {0}, 0, 0,
          "unable to get local issuer certificate" },
        { "selfsigned", TLS_VERIFY_PKIX, "mx.test", {0}, 0, 0, "self signed certificate" },
        /* wildcard: exactly one whole left-most label */
        { "server", TLS_VERIFY_PKIX, "a.wild.test", {0}, 1, 1, "ok" },
        { "server", TLS_VERIFY_PKIX, "a.b.wild.test", {0}, 0, 0, "hostname mismatch" },
        { "server", TLS_VERIFY_PKIX, "wild.test", {0}, 0, 0, "hostname mismatch" },
        /* the root dot is dropped before matching */
        { "server", TLS_VERIFY_PKIX, "mx.test.", {0}, 1, 1, "ok" },
        { "server", TLS_VERIFY_PKIX, "a.wild.test.", {0}, 1, 1, "ok" },
        /* match names replace the SNI; any one may match */
        { "server", TLS_VERIFY_PKIX, "sni.example", {"nomatch.test", "mx.test"}, 1, 1, "ok" },
        { "server", TLS_VERIFY_PKIX, "mx.test", {"other.test"}, 0, 0, "hostname mismatch" },
        /* IP literal: no SNI sent, matched against the iPAddress SAN */
        { "server", TLS_VERIFY_PKIX, "127.0.0.1", {0}, 1, 1, "ok" },
        { "server", TLS_VERIFY_PKIX, "127.0.0.2", {0}, 0, 0, "IP address mismatch" },
        /* nothing to check a name against */
        { "server", TLS_VERIFY_PKIX, NULL, {0}, 0, 0, "no reference name to check" },
        { "server", TLS_VERIFY_RECORD, NULL, {0}, 1, 0, "no reference name to check" },
    };
    struct tls_server_ctx *sctx[16] = {0};
    const char *sname[16] = {0};
    /* Twice over the table with one client context: the second pass finds
     * the chains that verified in its cache (tls/verify_cache.h), and every
     * outcome must be the same as the first time. */
    uint64_t cached0, checked0, cached1, checked1;
    tls_client_ctx_verify_stats(g_client, &cached0, &checked0);
    const size_t ncases = sizeof(cases) / sizeof(cases[0]);
    for (size_t pass = 0; pass < 2 * ncases; pass++) {
        size_t i = pass % ncases;
        struct tls_server_ctx *sc = NULL;
        for (size_t k = 0; k < 16; k++) {
            if (sname[k] == NULL) {
                sname[k] = cases[i].leaf;
                sc = sctx[k] = server_ctx(cases[i].leaf, 0, 0, NULL, 1, 0);
                break;
            }
            if (strcmp(sname[k], cases[i].leaf) == 0) {
                sc = sctx[k];
                break;
            }
        }
        if (sc == NULL) {
            CHECK_FAILF("case %zu: no server ctx", i);
            continue;
        }
        struct tls_client_params p = params(TLS_TIER_PREFERRED, cases[i].mode, cases[i].sni);
        for (size_t k = 0; k < 2 && cases[i].names[k]; k++)
            p.match_names[p.nmatch++] = cases[i].names[k];
        struct hs h;
        hs_run(&h, g_client, sc, &p);
        const char *label = cases[i].sni ? cases[i].sni : "(no sni)";
        if (cases[i].want_ok) {
            if (h.cr != TLS_OK || h.sr != TLS_OK)
                CHECK_FAILF("case %zu %s/%s: client %d (%s), want ok", i, cases[i].leaf,
                            label, h.cr, tls_conn_error(h.c));
            if (h.ci.verified != cases[i].want_verified)
                CHECK_FAILF("case %zu %s/%s: verified %d, want %d", i, cases[i].leaf,
                            label, h.ci.verified, cases[i].want_verified);
            if (strcmp(h.ci.verify_detail, cases[i].want_detail) != 0)
                CHECK_FAILF("case %zu %s/%s: detail \"%s\", want \"%s\"", i,
                            cases[i].leaf, label, h.ci.verify_detail, cases[i].want_detail);
        } else {
            char want_err[200];
            snprintf(want_err, sizeof(want_err), "certificate verify failed: %s",
                     cases[i].want_detail);
            if (h.cr != TLS_ERROR)
                CHECK_FAILF("case %zu %s/%s: client %d, want TLS_ERROR", i,
                            cases[i].leaf, label, h.cr);
            if (strcmp(tls_conn_error(h.c), want_err) != 0)
                CHECK_FAILF("case %zu %s/%s: error \"%s\", want \"%s\"", i,
                            cases[i].leaf, label, tls_conn_error(h.c), want_err);
            if (tls_conn_error_is_negotiation(h.c))
                CHECK_FAILF("case %zu: verification failure classified as negotiation", i);
            if (h.sr != TLS_ERROR)   /* the server got our alert */
                CHECK_FAILF("case %zu: server %d, want TLS_ERROR", i, h.sr);
            if (h.ci.verified)
                CHECK_FAILF("case %zu: failed handshake reports verified", i);
        }
        hs_free(&h);
    }
    tls_client_ctx_verify_stats(g_client, &cached1, &checked1);
    if (cached1 - cached0 < 5)   /* the verified cases with a name, again */
        CHECK_FAILF("second pass: %llu verdicts from the cache, want >= 5",
                    (unsigned long long)(cached1 - cached0));
    for (size_t k = 0; k < 16; k++)
        tls_server_ctx_free(sctx[k]);
}

/* The verdict cache (tls/verify_cache.h) on a fresh context: a chain that
 * verified for a name is not checked again for that name; for another
 * name it is, and a failure is checked every time and never remembered. */
static void test_verify_cache(void)
{
    char err[256] = "";
    struct tls_client_config cfg = {.ca_file = cert_path("ca.pem")};
    struct tls_client_ctx *cc = tls_client_ctx_new(&cfg, err, sizeof(err));
    struct tls_server_ctx *good = server_ctx("server", 0, 0, NULL, 0, 0);
    struct tls_server_ctx *bad = server_ctx("wrongname", 0, 0, NULL, 0, 0);
    if (cc == NULL || good == NULL || bad == NULL) {
        CHECK_FAILF("setup: %s", err);
        goto out;
    }
    const struct {
        struct tls_server_ctx **sc;
        enum tls_verify_mode mode;
        const char *sni;
        int verified;
        uint64_t cached, checked;   /* the context's counts after it */
    } steps[] = {
        { &good, TLS_VERIFY_RECORD, "mx.test", 1, 0, 1 },
        { &good, TLS_VERIFY_RECORD, "mx.test", 1, 1, 1 },
        { &good, TLS_VERIFY_PKIX, "mx.test", 1, 2, 1 },     /* same verdict */
        { &good, TLS_VERIFY_RECORD, "other.test", 0, 2, 2 },
        { &good, TLS_VERIFY_RECORD, "other.test", 0, 2, 3 },
        { &bad, TLS_VERIFY_RECORD, "mx.test", 0, 2, 4 },
        { &bad, TLS_VERIFY_RECORD, "mx.test", 0, 2, 5 },
        { &good, TLS_VERIFY_RECORD, "a.wild.test", 1, 2, 6 },
        { &good, TLS_VERIFY_RECORD, "a.wild.test", 1, 3, 6 },
    };
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        struct tls_client_params p = params(TLS_TIER_PREFERRED, steps[i].mode, steps[i].sni);
        struct hs h;
        hs_run(&h, cc, *steps[i].sc, &p);
        uint64_t cached, checked;
        tls_client_ctx_verify_stats(cc, &cached, &checked);
        if (h.cr != TLS_OK || h.ci.verified != steps[i].verified || cached != steps[i].cached ||
            checked != steps[i].checked)
            CHECK_FAILF("step %zu (%s): client %d verified %d (%s), cached %llu checked %llu; "
                        "want ok, %d, %llu, %llu", i, steps[i].sni, h.cr, h.ci.verified,
                        h.ci.verify_detail, (unsigned long long)cached, (unsigned long long)checked,
                        steps[i].verified, (unsigned long long)steps[i].cached,
                        (unsigned long long)steps[i].checked);
        if (steps[i].verified && strcmp(h.ci.verify_detail, "ok") != 0)
            CHECK_FAILF("step %zu: detail \"%s\"", i, h.ci.verify_detail);
        hs_free(&h);
    }
out:
    tls_server_ctx_free(good);
    tls_server_ctx_free(bad);
    tls_client_ctx_free(cc);
}

/* SHA-256 of a PEM certificate's DER (spki=0) or of its SPKI (spki=1). */
static int pin_of(const char *file, int spki, uint8_t out[32])
{
    FILE *f = fopen(file, "r");
    if (f == NULL)
        return 0;
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (x == NULL)
        return 0;
    uint8_t *der = NULL;
    int n = spki ? i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &der) : i2d_X509(x, &der);
    X509_free(x);
    if (n <= 0)
        return 0;
    SHA256(der, (size_t)n, out);
    OPENSSL_free(der);
    return 1;
}

static void test_fingerprint(void)
{
    static const struct {
        const char *leaf;
        const char *pin_from;   /* certificate whose hash is pinned */
        int spki;
        int want_ok;
    } cases[] = {
        { "server", "server-leaf.pem", 1, 1 },
        { "server", "server-leaf.pem", 0, 1 },
        { "server", "wrongname.pem", 1, 0 },
        { "server", "wrongname.pem", 0, 0 },
        /* A pin authenticates even where PKIX fails. */
        { "selfsigned", "selfsigned.pem", 1, 1 },
        { "expired", "expired.pem", 0, 1 },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct tls_server_ctx *sc = server_ctx(cases[i].leaf, 0, 0, NULL, 1, 0);
        struct tls_client_params p = params(TLS_TIER_PREFERRED, TLS_VERIFY_FINGERPRINT,
                                            "mx.test");
        memset(p.pins[0], 0xab, 32);   /* a decoy pin first */
        CHECK(pin_of(cert_path(cases[i].pin_from), cases[i].spki, p.pins[1]));
        p.npins = 2;
        struct hs h;
        hs_run(&h, g_client, sc, &p);
        if (cases[i].want_ok) {
            if (h.cr != TLS_OK || !h.ci.verified || strcmp(h.ci.verify_detail, "ok"))
                CHECK_FAILF("case %zu: client %d verified %d detail %s, want ok", i, h.cr,
                            h.ci.verified, h.ci.verify_detail);
        } else {
            if (h.cr != TLS_ERROR)
                CHECK_FAILF("case %zu: client %d, want TLS_ERROR", i, h.cr);
            CHECK_STR(tls_conn_error(h.c), "certificate verify failed: fingerprint mismatch");
            CHECK_INT(tls_conn_error_is_negotiation(h.c), 0);
        }
        hs_free(&h);
        tls_server_ctx_free(sc);
    }
}

/* A self-signed leaf for a key type the shared test PKI lacks:
 * NAME.pem/.key, key from `openssl genpkey GENPKEY_ARGS`. (A P-224 leaf
 * cannot be tested: BoringSSL refuses an ECDSA leaf on a curve the tier
 * does not offer before our check runs.) */
static int make_selfsigned(const char *name, const char *genpkey_args)
{
    char cmd[4 * TEST_CERTS_PATH_MAX], key[64], pem[64];
    snprintf(key, sizeof(key), "%s.key", name);
    snprintf(pem, sizeof(pem), "%s.pem", name);
    snprintf(cmd, sizeof(cmd),
             "openssl genpkey %s -out '%s' 2>/dev/null && "
             "openssl req -x509 -new -key '%s' -subj /CN=mx.test -days 30 "
             "-addext subjectAltName=DNS:mx.test -out '%s' 2>/dev/null",
             genpkey_args, cert_path(key), cert_path(key), cert_path(pem));
    return system(cmd) == 0;
}

static void test_weak_keys(void)
{
    static const struct {
        const char *leaf;
        enum tls_verify_mode mode;
        int want_ok;
        int want_verified;
        const char *want_detail;
    } cases[] = {
        { "rsa1024", TLS_VERIFY_RECORD, 1, 0, "weak key: RSA 1024 bits" },
        { "rsa1024", TLS_VERIFY_PKIX, 0, 0, "weak key: RSA 1024 bits" },
        /* A matching pin is the operator's decision: the size is not checked. */
        { "rsa1024", TLS_VERIFY_FINGERPRINT, 1, 1, "ok" },
        { "rsa2048", TLS_VERIFY_RECORD, 1, 1, "ok" },
        { "rsa2048", TLS_VERIFY_PKIX, 1, 1, "ok" },
        /* strong keys, so the chain is what fails */
        { "p384", TLS_VERIFY_RECORD, 1, 0, "self signed certificate" },
        { "p521", TLS_VERIFY_RECORD, 1, 0, "self signed certificate" },
    };
    if (!make_selfsigned("p384", "-algorithm EC -pkeyopt ec_paramgen_curve:P-384") ||
        !make_selfsigned("p521", "-algorithm EC -pkeyopt ec_paramgen_curve:P-521")) {
        CHECK_FAILF("openssl could not make the P-384/P-521 certificates");
        return;
    }
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct tls_server_ctx *sc = server_ctx(cases[i].leaf, 0, 0, NULL, 1, 0);
        struct tls_client_params p = params(TLS_TIER_PREFERRED, cases[i].mode, "mx.test");
        if (cases[i].mode == TLS_VERIFY_FINGERPRINT) {
            char pem[64];
            snprintf(pem, sizeof(pem), "%s.pem", cases[i].leaf);
            CHECK(pin_of(cert_path(pem), 1, p.pins[0]));
            p.npins = 1;
        }
        struct hs h;
        hs_run(&h, g_client, sc, &p);
        if (cases[i].want_ok) {
            if (h.cr != TLS_OK)
                CHECK_FAILF("case %zu %s: client %d (%s), want ok", i, cases[i].leaf,
                            h.cr, tls_conn_error(h.c));
            if (h.ci.verified != cases[i].want_verified ||
                strcmp(h.ci.verify_detail, cases[i].want_detail) != 0)
                CHECK_FAILF("case %zu %s: verified %d \"%s\", want %d \"%s\"", i,
                            cases[i].leaf, h.ci.verified, h.ci.verify_detail,
                            cases[i].want_verified, cases[i].want_detail);
        } else {
            char want[TLS_TEST_ERR_MAX];
            snprintf(want, sizeof(want), "certificate verify failed: %s",
                     cases[i].want_detail);
            CHECK_INT(h.cr, TLS_ERROR);
            CHECK_STR(tls_conn_error(h.c), want);
            CHECK_INT(tls_conn_error_is_negotiation(h.c), 0);
            CHECK_INT(tls_conn_error_is_client_cert(h.c), 0);
        }
        hs_free(&h);
        tls_server_ctx_free(sc);
    }
}

/* ---- data -------------------------------------------------------------- */

static void test_data_and_close(void)
{
    struct tls_server_ctx *sc = server_ctx("server", 0, 0, NULL, 1, 0);
    struct tls_client_params p = params(TLS_TIER_PREFERRED, TLS_VERIFY_PKIX, "mx.test");
    struct hs h;
    hs_run(&h, g_client, sc, &p);
    CHECK_INT(h.cr, TLS_OK);
    struct buf got;
    buf_init(&got, 0);

    /* nothing to read yet */
    CHECK_INT(tls_conn_read(h.c, &got), TLS_WANT_IO);

    CHECK_INT(send_msg(h.c, h.s, "EHLO client.test\r\n", 18, &got), TLS_OK);
    CHECK_MEM(buf_peek(&got), buf_used(&got), "EHLO client.test\r\n");
    buf_reset(&got);
    CHECK_INT(send_msg(h.s, h.c, "250 ok\r\n", 8, &got), TLS_OK);
    CHECK_MEM(buf_peek(&got), buf_used(&got), "250 ok\r\n");
    buf_reset(&got);

    /* A large body crosses many records and arrives whole, in order. */
    size_t big = 200 * 1024 + 7;
    char *body = malloc(big);
    for (size_t i = 0; i < big; i++)
        body[i] = (char)('a' + i % 23);
    CHECK_INT(tls_conn_write(h.c, (const uint8_t *)body, big), TLS_OK);
    size_t n;
    const uint8_t *out = tls_conn_output(h.c, &n);
    CHECK(n > big);   /* ciphertext with record overhead */
    /* Feed in 4 KiB slices, like partial recvs. */
    for (size_t off = 0; off < n; off += 4096) {
        size_t k = n - off < 4096 ? n - off : 4096;
        tls_conn_feed(h.s, out + off, k);
        enum tls_status st = tls_conn_read(h.s, &got);
        CHECK(st == TLS_OK || st == TLS_WANT_IO);
    }
    tls_conn_output_consume(h.c, n);
    CHECK_INT(buf_used(&got), big);
    CHECK(buf_used(&got) == big && memcmp(buf_peek(&got), body, big) == 0);
    buf_reset(&got);

    /* Lent instead of fed (read in place): slices that split records,
     * each scribbled over once unlent, as a receive buffer is reused; the
     * unread part of a record must have been kept. A reader with a small
     * limit leaves lent bytes unread too. */
    CHECK_INT(tls_conn_write(h.c, (const uint8_t *)body, big), TLS_OK);
    out = tls_conn_output(h.c, &n);
    uint8_t slice[7001];
    struct buf lim;
    buf_init(&lim, 20000);
    for (size_t off = 0; off < n; off += sizeof(slice)) {
        size_t k = n - off < sizeof(slice) ? n - off : sizeof(slice);
        memcpy(slice, out + off, k);
        CHECK(tls_conn_lend(h.s, slice, k));
        enum tls_status st = tls_conn_read(h.s, &lim);
        CHECK(st == TLS_OK || st == TLS_WANT_IO);
        CHECK(tls_conn_unlend(h.s));
        memset(slice, 0xEE, sizeof(slice));
        buf_append(&got, buf_peek(&lim), buf_used(&lim));
        buf_reset(&lim);
    }
    for (int i = 0; i < 100 && buf_used(&got) < big; i++) {   /* what the limit held back */
        enum tls_status st = tls_conn_read(h.s, &lim);
        CHECK(st == TLS_OK || st == TLS_WANT_IO);
        buf_append(&got, buf_peek(&lim), buf_used(&lim));
        buf_reset(&lim);
    }
    tls_conn_output_consume(h.c, n);
    CHECK_INT(buf_used(&got), big);
    CHECK(buf_used(&got) == big && memcmp(buf_peek(&got), body, big) == 0);
    buf_reset(&got);
    buf_free(&lim);
    free(body);

    /* A reader with a small limit gets what fits, then the rest. */
    struct buf small;
    buf_init(&small, 5);
    CHECK_INT(tls_conn_write(h.s, (const uint8_t *)"250-one\r\n", 9), TLS_OK);
    shuttle(h.s, h.c);
    CHECK_INT(tls_conn_read(h.c, &small), TLS_OK);
    CHECK_MEM(buf_peek(&small), buf_used(&small), "250-o");
    buf_consume(&small, buf_used(&small));
    CHECK_INT(tls_conn_read(h.c, &small), TLS_OK);
    CHECK_MEM(buf_peek(&small), buf_used(&small), "ne\r\n");
    CHECK_INT(tls_conn_read(h.c, &small), TLS_WANT_IO);  /* room 1, no data */
    buf_append(&small, "x", 1);
    CHECK_INT(tls_conn_read(h.c, &small), TLS_ERROR);    /* full, no room */
    CHECK_STR(tls_conn_error(h.c), "read: buffer full or out of memory");
    buf_free(&small);
    tls_conn_free(h.c);
    h.c = NULL;
    hs_free(&h);
    hs_run(&h, g_client, sc, &p);
    CHECK_INT(h.cr, TLS_OK);

    /* Data then close_notify in one flight: data first, then CLOSED. */
    CHECK_INT(tls_conn_write(h.s, (const uint8_t *)"221 bye\r\n", 9), TLS_OK);
    tls_conn_close(h.s);
    shuttle(h.s, h.c);
    CHECK_INT(tls_conn_read(h.c, &got), TLS_OK);
    CHECK_MEM(buf_peek(&got), buf_used(&got), "221 bye\r\n");
    CHECK_INT(tls_conn_read(h.c, &got), TLS_CLOSED);
    CHECK_INT(tls_conn_read(h.c, &got), TLS_CLOSED);

    /* The client's close reaches the server as CLOSED. */
    tls_conn_close(h.c);
    shuttle(h.c, h.s);
    buf_reset(&got);
    CHECK_INT(tls_conn_read(h.s, &got), TLS_CLOSED);
    CHECK_INT(buf_used(&got), 0);
    buf_free(&got);
    hs_free(&h);
    tls_server_ctx_free(sc);
}

/* Garbage instead of a ServerHello is an error, not a hang. */
static void test_garbage_peer(void)
{
    struct tls_client_params p = params(TLS_TIER_PREFERRED, TLS_VERIFY_RECORD, "mx.test");
    struct tls_conn *c = tls_conn_client_new(g_client, &p);
    CHECK_INT(tls_conn_handshake(c), TLS_WANT_IO);
    size_t n;
    tls_conn_output(c, &n);
    CHECK(n > 0);   /* ClientHello */
    tls_conn_output_consume(c, n);
    static const char junk[] = "220 mx.test ESMTP not really TLS\r\n";
    tls_conn_feed(c, (const uint8_t *)junk, sizeof(junk) - 1);
    CHECK_INT(tls_conn_handshake(c), TLS_ERROR);
    CHECK(strncmp(tls_conn_error(c), "handshake: ", 11) == 0);
    CHECK_INT(tls_conn_handshake(c), TLS_ERROR);   /* sticky */
    tls_conn_free(c);
}

/* ---- resumption -------------------------------------------------------- */

/* First connection: handshake, then one server write so TLS 1.3 tickets
 * reach the client; returns the client's first new session. */
static SSL_SESSION *first_session(struct tls_server_ctx *sc,
                                  const struct tls_client_params *p, struct hs *h,
                                  SSL_SESSION **second)
{
    hs_run(h, g_client, sc, p);
    CHECK_INT(h->cr, TLS_OK);
    struct buf got;
    buf_init(&got, 0);
    CHECK_INT(send_msg(h->s, h->c, "220 hi\r\n", 8, &got), TLS_OK);
    CHECK_MEM(buf_peek(&got), buf_used(&got), "220 hi\r\n");
    buf_free(&got);
    SSL_SESSION *s = tls_conn_take_session(h->c);
    if (second)
        *second = tls_conn_take_session(h->c);
    return s;
}

static void test_resumption(void)
{
    static const struct {
        const char *name;
        uint16_t smax;
        int tickets;
        int single_use;
    } cases[] = {
        { "tls13", 0, 1, 1 },
        { "tls12 ticket", TLS1_2_VERSION, 1, 0 },
        { "tls12 session id", TLS1_2_VERSION, 0, 0 },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct tls_server_ctx *sc = server_ctx("server", 0, cases[i].smax, NULL,
                                               cases[i].tickets, 0);
        struct tls_client_params p = params(TLS_TIER_PREFERRED, TLS_VERIFY_PKIX, "mx.test");
        struct hs h1, h2, h3;
        SSL_SESSION *spare = NULL;
        SSL_SESSION *s = first_session(sc, &p, &h1, &spare);
        CHECK(s != NULL);
        if (s == NULL) {
            hs_free(&h1);
            tls_server_ctx_free(sc);
            continue;
        }
        CHECK_INT(SSL_SESSION_should_be_single_use(s), cases[i].single_use);
        if (cases[i].single_use)
            CHECK(spare != NULL);   /* BoringSSL servers send two tickets */

        p.session = s;
        hs_run(&h2, g_client, sc, &p);
        if (h2.cr != TLS_OK || h2.ci.resumed != 1)
            CHECK_FAILF("%s: second conn %d resumed %d", cases[i].name, h2.cr,
                        h2.ci.resumed);
        CHECK_INT(h2.si.resumed, 1);
        /* Verification did not run, the result comes with the session. */
        CHECK_INT(h2.ci.verified, 1);
        CHECK_STR(h2.ci.verify_detail, "ok");

        /* New keys: old sessions no longer resume, the handshake is full. */
        CHECK_INT(tls_server_ctx_rotate_ticket_keys(sc), 1);
        p.session = spare ? spare : s;
        hs_run(&h3, g_client, sc, &p);
        CHECK_INT(h3.cr, TLS_OK);
        CHECK_INT(h3.sr, TLS_OK);
        if (h3.ci.resumed != 0)
            CHECK_FAILF("%s: resumed after key rotation", cases[i].name);
        CHECK_INT(h3.ci.verified, 1);

        SSL_SESSION_free(s);
        SSL_SESSION_free(spare);
        hs_free(&h1);
        hs_free(&h2);
        hs_free(&h3);
        tls_server_ctx_free(sc);
    }
}

/* An unverified session stays unverified on resumption, and a session
 * whose record was lost (serialised) is reported as not checked. */
static void test_resumption_never_upgrades(void)
{
    struct tls_server_ctx *sc = server_ctx("server", 0, 0, NULL, 1, 0);
    struct tls_client_params p = params(TLS_TIER_PREFERRED, TLS_VERIFY_RECORD, "other.test");
    struct hs h1, h2, h3;
    SSL_SESSION *spare = NULL;
    SSL_SESSION *s = first_session(sc, &p, &h1, &spare);
    CHECK(s != NULL && spare != NULL);
    CHECK_INT(h1.ci.verified, 0);

    p.session = s;
    hs_run(&h2, g_client, sc, &p);
    CHECK_INT(h2.ci.resumed, 1);
    CHECK_INT(h2.ci.verified, 0);
    CHECK_STR(h2.ci.verify_detail, "hostname mismatch");

    /* Round trip through bytes: the verification record does not travel. */
    uint8_t *der = NULL;
    size_t len = 0;
    CHECK(SSL_SESSION_to_bytes(spare, &der, &len));
    SSL_CTX *tmp = SSL_CTX_new(TLS_method());
    SSL_SESSION *back = SSL_SESSION_from_bytes(der, len, tmp);
    OPENSSL_free(der);
    CHECK(back != NULL);
    struct tls_client_params p3 = params(TLS_TIER_PREFERRED, TLS_VERIFY_RECORD, "mx.test");
    p3.session = back;
    hs_run(&h3, g_client, sc, &p3);
    CHECK_INT(h3.ci.resumed, 1);
    CHECK_INT(h3.ci.verified, 0);
    CHECK_STR(h3.ci.verify_detail, "not checked: resumed session");

    SSL_SESSION_free(back);
    SSL_CTX_free(tmp);
    SSL_SESSION_free(s);
    SSL_SESSION_free(spare);
    hs_free(&h1);
    hs_free(&h2);
    hs_free(&h3);
    tls_server_ctx_free(sc);
}

static void test_tickets_off(void)
{
    struct tls_server_ctx *sc = server_ctx("server", 0, 0, NULL, 0, 0);
    struct tls_client_params p = params(TLS_TIER_PREFERRED, TLS_VERIFY_PKIX, "mx.test");
    struct hs h;
    SSL_SESSION *s = first_session(sc, &p, &h, NULL);
    CHECK(s == NULL);   /* TLS 1.3 without tickets: nothing to resume */
    SSL_SESSION_free(s);
    hs_free(&h);
    tls_server_ctx_free(sc);

    /* TLS 1.2 without tickets resumes by session id (test_resumption),
     * unless the server keeps no sessions either: then it gives the client
     * no session id, and nothing to resume. */
    struct tls_server_config cfg = {.max_version = TLS1_2_VERSION, .no_session_ids = 1};
    sc = server_ctx_cfg("server", cfg);
    s = first_session(sc, &p, &h, NULL);
    CHECK(s == NULL);
    CHECK_STR(h.ci.protocol, "TLSv1.2");
    SSL_SESSION_free(s);
    hs_free(&h);
    tls_server_ctx_free(sc);
}

/* ---- server-side ticket tracking ---------------------------------------- */

static struct tls_ticket_stats ticket_stats(const struct tls_server_ctx *sc)
{
    struct tls_ticket_stats st;
    tls_server_ctx_ticket_stats(sc, &st);
    return st;
}

#define CHECK_TICKETS(sc, want_issued, want_opened, want_reused, want_rejected)    \
    do {                                                                          \
        struct tls_ticket_stats st_ = ticket_stats(sc);                           \
        if (st_.issued != (want_issued) || st_.opened != (want_opened) ||         \
            st_.reused != (want_reused) || st_.rejected != (want_rejected))       \
            CHECK_FAILF("tickets issued %llu opened %llu reused %llu rejected %llu, " \
                        "want %d %d %d %d", (unsigned long long)st_.issued,       \
                        (unsigned long long)st_.opened, (unsigned long long)st_.reused, \
                        (unsigned long long)st_.rejected, (want_issued), (want_opened), \
                        (want_reused), (want_rejected));                          \
    } while (0)

/* One more connection offering session s; the server writes once so
 * TLS 1.3 tickets flow. Returns whether it resumed. */
static int resume_with(struct tls_server_ctx *sc, SSL_SESSION *s)
{
    struct tls_client_params p = params(TLS_TIER_PREFERRED, TLS_VERIFY_PKIX, "mx.test");
    p.session = s;
    struct hs h;
    SSL_SESSION *fresh = first_session(sc, &p, &h, NULL);
    SSL_SESSION_free(fresh);
    int resumed = h.cr == TLS_OK && h.ci.resumed && h.si.resumed;
    if (h.ci.resumed != h.si.resumed)
        CHECK_FAILF("client resumed %d, server resumed %d", h.ci.resumed, h.si.resumed);
    hs_free(&h);
    return resumed;
}

static struct tls_server_ctx *tracking_server(uint16_t maxv)
{
    struct tls_server_config cfg = { .max_version = maxv, .tickets = 1, .track_tickets = 1 };
    return server_ctx_cfg("server", cfg);
}

static void test_ticket_tracking_tls13(void)
{
    struct tls_server_ctx *sc = tracking_server(0);
    CHECK(sc != NULL);
    CHECK_TICKETS(sc, 0, 0, 0, 0);
    struct tls_client_params p = params(TLS_TIER_PREFERRED, TLS_VERIFY_PKIX, "mx.test");
    struct hs h;
    SSL_SESSION *spare = NULL;
    SSL_SESSION *s = first_session(sc, &p, &h, &spare);
    hs_free(&h);
    CHECK(s != NULL && spare != NULL);
    CHECK_TICKETS(sc, 2, 0, 0, 0);   /* a BoringSSL server sends two */

    CHECK_INT(resume_with(sc, s), 1);
    CHECK_TICKETS(sc, 4, 1, 0, 0);
    /* The same TLS 1.3 ticket offered twice: accepted, but counted. */
    CHECK_INT(resume_with(sc, s), 1);
    CHECK_TICKETS(sc, 6, 2, 1, 0);

    /* New key: the spare ticket cannot be opened, the handshake is full. */
    CHECK_INT(tls_server_ctx_rotate_ticket_keys(sc), 1);
    CHECK_INT(resume_with(sc, spare), 0);
    CHECK_TICKETS(sc, 8, 2, 1, 1);

    /* Tickets under the new key resume again. */
    SSL_SESSION *s2 = first_session(sc, &p, &h, NULL);
    hs_free(&h);
    CHECK_INT(resume_with(sc, s2), 1);
    CHECK_TICKETS(sc, 12, 3, 1, 1);

    SSL_SESSION_free(s);
    SSL_SESSION_free(spare);
    SSL_SESSION_free(s2);
    tls_server_ctx_free(sc);
}

static void test_ticket_tracking_tls12(void)
{
    struct tls_server_ctx *sc = tracking_server(TLS1_2_VERSION);
    struct tls_client_params p = params(TLS_TIER_PREFERRED, TLS_VERIFY_PKIX, "mx.test");
    struct hs h;
    SSL_SESSION *s = first_session(sc, &p, &h, NULL);
    hs_free(&h);
    CHECK(s != NULL);
    CHECK_TICKETS(sc, 1, 0, 0, 0);
    CHECK_INT(resume_with(sc, s), 1);
    CHECK_TICKETS(sc, 1, 1, 0, 0);
    /* TLS 1.2 allows presenting a ticket again; it still counts as reused. */
    CHECK_INT(resume_with(sc, s), 1);
    CHECK_TICKETS(sc, 1, 2, 1, 0);
    CHECK_INT(tls_server_ctx_rotate_ticket_keys(sc), 1);
    CHECK_INT(resume_with(sc, s), 0);
    CHECK_TICKETS(sc, 2, 2, 1, 1);
    SSL_SESSION_free(s);
    tls_server_ctx_free(sc);

    /* Without tracking there is nothing to count. */
    sc = server_ctx("server", 0, 0, NULL, 1, 0);
    s = first_session(sc, &p, &h, NULL);
    hs_free(&h);
    CHECK_INT(resume_with(sc, s), 1);
    CHECK_TICKETS(sc, 0, 0, 0, 0);
    CHECK_TICKETS(NULL, 0, 0, 0, 0);
    SSL_SESSION_free(s);
    tls_server_ctx_free(sc);
}

/* ---- peer certificates ------------------------------------------------- */

static void check_server_chain(const struct tls_conn *c, const char *what)
{
    uint8_t want[32], got[32];
    CHECK(pin_of(cert_path("server-leaf.pem"), 0, want));
    if (tls_conn_peer_cert_count(c) != 2) {
        CHECK_FAILF("%s: %zu peer certificates, want 2", what, tls_conn_peer_cert_count(c));
        return;
    }
    char cn[64] = "";
    X509_NAME_get_text_by_NID(X509_get_subject_name(tls_conn_peer_cert(c, 0)),
                              NID_commonName, cn, sizeof(cn));
    CHECK_STR(cn, "mx.test");
    X509_NAME_get_text_by_NID(X509_get_subject_name(tls_conn_peer_cert(c, 1)),
                              NID_commonName, cn, sizeof(cn));
    CHECK_STR(cn, "tern test intermediate");
    CHECK(tls_conn_peer_cert(c, 2) == NULL);
    CHECK_INT(tls_conn_peer_leaf_sha256(c, got), 1);
    if (memcmp(got, want, sizeof(want)) != 0)
        CHECK_FAILF("%s: leaf SHA-256 differs from server-leaf.pem", what);
}

static void test_peer_certs(void)
{
    uint8_t h[32];
    CHECK_INT(tls_conn_peer_cert_count(NULL), 0);
    CHECK(tls_conn_peer_cert(NULL, 0) == NULL);
    CHECK_INT(tls_conn_peer_leaf_sha256(NULL, h), 0);

    static const struct { const char *name; uint16_t smax; } versions[] = {
        { "tls13", 0 }, { "tls12", TLS1_2_VERSION },
    };
    for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
        struct tls_server_ctx *sc = server_ctx("server", 0, versions[i].smax, NULL, 1, 0);
        struct tls_client_params p = params(TLS_TIER_PREFERRED, TLS_VERIFY_RECORD, "mx.test");
        struct tls_conn *fresh = tls_conn_client_new(g_client, &p);
        CHECK_INT(tls_conn_peer_cert_count(fresh), 0);   /* no handshake yet */
        CHECK_INT(tls_conn_peer_leaf_sha256(fresh, h), 0);
        tls_conn_free(fresh);

        struct hs h1, h2;
        SSL_SESSION *s = first_session(sc, &p, &h1, NULL);
        check_server_chain(h1.c, versions[i].name);
        /* The server asked for no client certificate. */
        CHECK_INT(tls_conn_peer_cert_count(h1.s), 0);
        CHECK_INT(tls_conn_peer_leaf_sha256(h1.s, h), 0);

        /* A resumed session keeps the chain it was made with. */
        p.session = s;
        hs_run(&h2, g_client, sc, &p);
        CHECK_INT(h2.ci.resumed, 1);
        check_server_chain(h2.c, versions[i].name);
        SSL_SESSION_free(s);
        hs_free(&h1);
        hs_free(&h2);
        tls_server_ctx_free(sc);
    }
}

/* ---- client certificates ----------------------------------------------- */

/* First read on the client after the handshake: in TLS 1.3 that is
 * where the server's verdict on our certificate shows. */
static enum tls_status client_first_read(struct hs *h)
{
    if (h->cr != TLS_OK)
        return h->cr;
    struct buf got;
    buf_init(&got, 0);
    enum tls_status st = tls_conn_read(h->c, &got);
    buf_free(&got);
    return st;
}

static void test_client_cert(void)
{
    static const struct {
        const char *name;
        uint16_t smax;
        const char *client_ca;  /* the server trusts client certs from this CA */
        int present;
        const char *want_err;   /* NULL: the connection works */
    } cases[] = {
        { "tls13 cert", 0, "ca.pem", 1, NULL },
        { "tls12 cert", TLS1_2_VERSION, "ca.pem", 1, NULL },
        { "tls13 none", 0, "ca.pem", 0,
          "peer requires a client certificate (none presented)" },
        { "tls12 none", TLS1_2_VERSION, "ca.pem", 0,
          "peer requires a client certificate (none presented)" },
        { "tls13 rejected", 0, "untrusted-ca.pem", 1,
          "client certificate rejected by peer: unknown CA" },
        { "tls12 rejected", TLS1_2_VERSION, "untrusted-ca.pem", 1,
          "client certificate rejected by peer: unknown CA" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct tls_server_config cfg = {
            .max_version = cases[i].smax,
            .tickets = 1,
            .require_client_cert = 1,
            .client_ca_file = cert_path(cases[i].client_ca),
        };
        struct tls_server_ctx *sc = server_ctx_cfg("server", cfg);
        struct tls_client_params p = params(TLS_TIER_PREFERRED, TLS_VERIFY_PKIX, "mx.test");
        p.present_client_cert = cases[i].present;
        struct hs h;
        hs_run(&h, g_client, sc, &p);
        if (cases[i].want_err == NULL) {
            if (h.cr != TLS_OK || h.sr != TLS_OK)
                CHECK_FAILF("%s: client %d (%s) server %d (%s)", cases[i].name,
                            h.cr, tls_conn_error(h.c), h.sr, tls_conn_error(h.s));
            CHECK_INT(h.si.peer_cert_present, 1);
            CHECK_INT(h.si.verified, 1);
            CHECK_STR(h.si.verify_detail, "ok");
            struct buf got;
            buf_init(&got, 0);
            CHECK_INT(send_msg(h.s, h.c, "220 ok\r\n", 8, &got), TLS_OK);
            buf_free(&got);
        } else {
            CHECK_INT(h.sr, TLS_ERROR);
            /* TLS 1.3: the client's handshake succeeds, its first read fails. */
            if (cases[i].smax == 0)
                CHECK_INT(h.cr, TLS_OK);
            CHECK_INT(client_first_read(&h), TLS_ERROR);
            if (strcmp(tls_conn_error(h.c), cases[i].want_err) != 0)
                CHECK_FAILF("%s: error \"%s\", want \"%s\"", cases[i].name,
                            tls_conn_error(h.c), cases[i].want_err);
            CHECK_INT(tls_conn_error_is_negotiation(h.c), 0);
            CHECK_INT(tls_conn_error_is_client_cert(h.c), 1);
        }
        hs_free(&h);
        tls_server_ctx_free(sc);
    }
}

/* A bare BoringSSL server for what a tern server conn never does: send
 * a fatal alert at a moment of the test's choosing. It asks for a client
 * certificate and accepts any. */
struct raw_server {
    SSL_CTX *ctx;
    SSL *ssl;
    BIO *in, *out;      /* owned by ssl */
};

static enum ssl_verify_result_t accept_any(SSL *ssl, uint8_t *alert)
{
    (void)ssl;
    (void)alert;
    return ssl_verify_ok;
}

static int raw_server_init(struct raw_server *r)
{
    memset(r, 0, sizeof(*r));
    r->ctx = SSL_CTX_new(TLS_method());
    if (r->ctx == NULL ||
        SSL_CTX_use_certificate_chain_file(r->ctx, cert_path("server.pem")) != 1 ||
        SSL_CTX_use_PrivateKey_file(r->ctx, cert_path("server.key"), SSL_FILETYPE_PEM) != 1)
        return 0;
    SSL_CTX_set_custom_verify(r->ctx, SSL_VERIFY_PEER, accept_any);
    if ((r->ssl = SSL_new(r->ctx)) == NULL)
        return 0;
    r->in = BIO_new(BIO_s_mem());
    r->out = BIO_new(BIO_s_mem());
    if (r->in == NULL || r->out == NULL) {
        BIO_free(r->in);
        BIO_free(r->out);
        return 0;
    }
    BIO_set_mem_eof_return(r->in, -1);
    SSL_set_bio(r->ssl, r->in, r->out);
    SSL_set_accept_state(r->ssl);
    return 1;
}

static void raw_server_free(struct raw_server *r)
{
    SSL_free(r->ssl);   /* and its BIOs, once set */
    SSL_CTX_free(r->ctx);
}

/* Both directions once: client output to the raw server and back. */
static void raw_shuttle(struct tls_conn *c, struct raw_server *r)
{
    size_t n;
    const uint8_t *p = tls_conn_output(c, &n);
    if (n) {
        BIO_write(r->in, p, (int)n);
        tls_conn_output_consume(c, n);
    }
    uint8_t tmp[16384];
    int k;
    while ((k = BIO_read(r->out, tmp, sizeof(tmp))) > 0)
        tls_conn_feed(c, tmp, (size_t)k);
}

/* Handshake (with our certificate), optionally one line of data from the
 * server, then a bad_certificate alert: is it blamed on the certificate? */
static int alert_blames_cert(int data_first, char *err, size_t errlen)
{
    struct raw_server r;
    struct tls_client_params p = params(TLS_TIER_PREFERRED, TLS_VERIFY_PKIX, "mx.test");
    p.present_client_cert = 1;
    struct tls_conn *c = tls_conn_client_new(g_client, &p);
    int blamed = -1;
    if (c == NULL || !raw_server_init(&r)) {
        CHECK_FAILF("setup failed");
        tls_conn_free(c);
        raw_server_free(&r);
        return -1;
    }
    enum tls_status cr = TLS_WANT_IO;
    for (int i = 0; i < MAX_ROUNDS && cr == TLS_WANT_IO; i++) {
        cr = tls_conn_handshake(c);
        raw_shuttle(c, &r);
        (void)SSL_do_handshake(r.ssl);
        raw_shuttle(c, &r);
    }
    CHECK_INT(cr, TLS_OK);
    CHECK_INT(SSL_do_handshake(r.ssl), 1);
    struct buf got;
    buf_init(&got, 0);
    if (data_first) {
        CHECK_INT(SSL_write(r.ssl, "220 ok\r\n", 8), 8);
        raw_shuttle(c, &r);
        CHECK_INT(tls_conn_read(c, &got), TLS_OK);
    }
    SSL_send_fatal_alert(r.ssl, SSL_AD_BAD_CERTIFICATE);
    raw_shuttle(c, &r);
    if (tls_conn_read(c, &got) == TLS_ERROR) {
        blamed = tls_conn_error_is_client_cert(c);
        CHECK_INT(tls_conn_error_is_negotiation(c), 0);
        snprintf(err, errlen, "%s", tls_conn_error(c));
    } else {
        CHECK_FAILF("alert did not fail the read");
    }
    buf_free(&got);
    tls_conn_free(c);
    raw_server_free(&r);
    return blamed;
}

/* Only the server's first word after the handshake is its verdict on our
 * certificate; an alert after it sent data is not. A handshake_failure
 * without a certificate request stays a negotiation failure. */
static void test_client_cert_not_blamed(void)
{
    char err[TLS_TEST_ERR_MAX] = "";
    CHECK_INT(alert_blames_cert(0, err, sizeof(err)), 1);
    CHECK_STR(err, "client certificate rejected by peer: bad certificate");
    CHECK_INT(alert_blames_cert(1, err, sizeof(err)), 0);
    CHECK_STR(err, "read: sslv3 alert bad certificate");

    struct tls_server_ctx *sc = server_ctx("server", 0, TLS1_2_VERSION,
                                           "ECDHE-ECDSA-AES128-SHA", 1, 0);
    struct tls_client_params p = params(TLS_TIER_PREFERRED, TLS_VERIFY_PKIX, "mx.test");
    p.present_client_cert = 1;
    struct hs h;
    hs_run(&h, g_client, sc, &p);
    CHECK_INT(h.cr, TLS_ERROR);
    CHECK_INT(tls_conn_error_is_negotiation(h.c), 1);
    CHECK_INT(tls_conn_error_is_client_cert(h.c), 0);
    hs_free(&h);
    tls_server_ctx_free(sc);
}

/* ---- API edges --------------------------------------------------------- */

static void test_bad_params(void)
{
    struct tls_client_params p = params(TLS_TIER_PLAINTEXT, TLS_VERIFY_RECORD, "mx.test");
    CHECK(tls_conn_client_new(g_client, &p) == NULL);
    p = params(TLS_TIER_PREFERRED, TLS_VERIFY_FINGERPRINT, "mx.test");
    CHECK(tls_conn_client_new(g_client, &p) == NULL);   /* no pins */
    static const char *const bad_names[] = {
        "bad name", "*.wild.test", "mx..test", ".mx.test", "mx.test..", ".", "",
    };
    for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
        p = params(TLS_TIER_PREFERRED, TLS_VERIFY_PKIX, bad_names[i]);
        if (tls_conn_client_new(g_client, &p) != NULL)
            CHECK_FAILF("sni \"%s\" accepted", bad_names[i]);
        p = params(TLS_TIER_PREFERRED, TLS_VERIFY_PKIX, "mx.test");
        p.match_names[p.nmatch++] = bad_names[i];
        if (tls_conn_client_new(g_client, &p) != NULL)
            CHECK_FAILF("match name \"%s\" accepted", bad_names[i]);
    }
    p = params(TLS_TIER_PREFERRED, TLS_VERIFY_PKIX, "mx.test");
    p.nmatch = TLS_MAX_MATCH_NAMES + 1;
    CHECK(tls_conn_client_new(g_client, &p) == NULL);

    char err[256] = "";
    struct tls_client_config cfg = { .ca_file = cert_path("nonexistent.pem") };
    CHECK(tls_client_ctx_new(&cfg, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "nonexistent.pem") != NULL);
    struct tls_client_config cfg2 = { .ca_file = cert_path("ca.pem"),
                                      .cert_file = cert_path("client.pem"),
                                      .key_file = cert_path("server.key") };
    err[0] = '\0';
    CHECK(tls_client_ctx_new(&cfg2, err, sizeof(err)) == NULL);   /* key mismatch */
    CHECK(err[0] != '\0');
    struct tls_server_config scfg = { .cert_file = cert_path("server.pem"),
                                      .key_file = cert_path("server.key"),
                                      .cipher_list = "HIGH:!aNULL" };
    CHECK(tls_server_ctx_new(&scfg, err, sizeof(err)) == NULL);   /* strict list */
}

int main(void)
{
    if (!test_certs_make("unit-tls"))
        return 1;
    char err[256] = "";
    struct tls_client_config cfg = {
        .ca_file = cert_path("ca.pem"),
        .cert_file = cert_path("client.pem"),
        .key_file = cert_path("client.key"),
    };
    g_client = tls_client_ctx_new(&cfg, err, sizeof(err));
    if (g_client == NULL) {
        printf("FAIL setup: client ctx: %s\n", err);
        return 1;
    }
    CHECK_INT(tls_client_ctx_store_usable(g_client), 1);

    RUN(test_tier_names);
    RUN(test_tls13_preferred);
    RUN(test_tier_negotiation);
    RUN(test_min_version_override);
    RUN(test_verification_table);
    RUN(test_verify_cache);
    RUN(test_fingerprint);
    RUN(test_weak_keys);
    RUN(test_data_and_close);
    RUN(test_garbage_peer);
    RUN(test_resumption);
    RUN(test_resumption_never_upgrades);
    RUN(test_tickets_off);
    RUN(test_ticket_tracking_tls13);
    RUN(test_ticket_tracking_tls12);
    RUN(test_peer_certs);
    RUN(test_client_cert);
    RUN(test_client_cert_not_blamed);
    RUN(test_bad_params);

    tls_client_ctx_free(g_client);
    test_certs_remove();
    return check_finish();
}
