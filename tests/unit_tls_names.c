/* unit_tls_names.c - tls_name_matches, table-driven, and checked against
 * the matcher the PKIX check really uses (BoringSSL's, with the flags
 * tls/tls.c sets): for every name tls_conn_client_new accepts, both must
 * give the same answer; every name it refuses must match nothing. */
#include "tls/tls.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "tests/check.h"

#define NAME_BUF 300   /* longer than any name the table or the length test builds */

/* The flags tls/tls.c gives X509_VERIFY_PARAM_set_hostflags. */
#define PKIX_HOST_FLAGS \
    (X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS | X509_CHECK_FLAG_NEVER_CHECK_SUBJECT)

static struct tls_client_ctx *g_client;

struct name_case {
    const char *pattern;
    size_t plen;        /* 0: strlen(pattern) */
    const char *name;
    size_t nlen;        /* 0: strlen(name) */
    int want;
};

static const struct name_case cases[] = {
    /* literal DNS-IDs */
    { "mx.test", 0, "mx.test", 0, 1 },
    { "MX.Test", 0, "mx.TEST", 0, 1 },
    { "mx.test", 0, "mx.test.", 0, 1 },            /* the root dot is ignored */
    { "mx.test.", 0, "mx.test", 0, 0 },            /* a DNS-ID is never absolute */
    { "mx.test.", 0, "mx.test.", 0, 0 },
    { "mx.test", 0, "mx.test..", 0, 0 },           /* empty label */
    { "mx.test", 0, "mx.tes", 0, 0 },
    { "mx.test", 0, "mx.testx", 0, 0 },
    { "mx.test", 0, "xmx.test", 0, 0 },
    { "mx.test", 0, "mx-test", 0, 0 },
    { "a_b.example.com", 0, "a_b.example.com", 0, 1 },
    { "_x.example.com", 0, "_x.example.com", 0, 1 },
    { "a..com", 0, "a..com", 0, 0 },
    { ".example.com", 0, "a.example.com", 0, 0 },
    { ".example.com", 0, ".example.com", 0, 0 },
    { "", 0, "mx.test", 0, 0 },
    { "mx.test", 0, "", 0, 0 },
    { "mx.test", 0, ".", 0, 0 },
    { "127.0.0.1", 0, "127.0.0.1", 0, 1 },
    { "127.0.0.1", 0, "127.0.0.2", 0, 0 },
    /* lengths bound both strings */
    { "mx.test.evil.example", 7, "mx.test", 0, 1 },
    { "mx.test", 0, "mx.test.evil.example", 7, 1 },
    { "mx.test", 0, "mx.test.", 8, 1 },
    { "mx.test\0.evil.example", 21, "mx.test", 0, 0 },   /* NUL in a DNS-ID */
    { "mx.test\0.evil.example", 21, "mx.test.evil.example", 0, 0 },
    { "mx.test", 0, "mx.test\0.evil", 13, 0 },          /* NUL in a name */
    /* letters fold, ASCII only; other bytes and spaces never reach a match */
    { "\xc3\xa4.example.com", 0, "\xc3\xa4.example.com", 0, 0 },
    { "a b.example.com", 0, "a b.example.com", 0, 0 },
    { "mx.test", 0, "mx.test\t", 0, 0 },

    /* a wildcard: the whole left-most label */
    { "*.example.com", 0, "a.example.com", 0, 1 },
    { "*.example.com", 0, "mail-1.example.com", 0, 1 },
    { "*.example.com", 0, "A.EXAMPLE.COM", 0, 1 },
    { "*.EXAMPLE.com", 0, "a.example.COM", 0, 1 },
    { "*.example.com", 0, "a.example.com.", 0, 1 },
    { "*.example.com", 0, "example.com", 0, 0 },
    { "*.example.com", 0, ".example.com", 0, 0 },
    { "*.example.com", 0, "a.b.example.com", 0, 0 },
    { "*.example.com", 0, "a.example.org", 0, 0 },
    { "*.example.com", 0, "aexample.com", 0, 0 },
    { "*.example.com", 0, "a.example.com.evil", 0, 0 },
    { "*.example.com", 0, "*.example.com", 0, 0 },   /* a name is no pattern */
    { "*.example.com", 0, "-a.example.com", 0, 1 },  /* letters, digits, hyphens */
    { "*.example.com", 0, "a-.example.com", 0, 1 },
    { "*.example.com", 0, "a_b.example.com", 0, 0 },
    { "*.wild.test", 0, "a.wild.test", 0, 1 },
    { "*.1.2.3", 0, "a.1.2.3", 0, 1 },
    { "*.co.uk", 0, "a.co.uk", 0, 1 },               /* two labels: no suffix list */
    /* fewer than two labels after the wildcard, or "*" alone */
    { "*", 0, "a", 0, 0 },
    { "*", 0, "*", 0, 0 },
    { "*.", 0, "a.", 0, 0 },
    { "*.com", 0, "a.com", 0, 0 },
    { "*.test", 0, "mx.test", 0, 0 },
    /* partial-label and misplaced wildcards match nothing */
    { "f*.example.com", 0, "foo.example.com", 0, 0 },
    { "*o.example.com", 0, "foo.example.com", 0, 0 },
    { "f*o.example.com", 0, "foo.example.com", 0, 0 },
    { "b*.example.com", 0, "b.example.com", 0, 0 },
    { "**.example.com", 0, "a.example.com", 0, 0 },
    { "*.*.example.com", 0, "a.b.example.com", 0, 0 },
    { "a.*.example.com", 0, "a.b.example.com", 0, 0 },
    { "example.*", 0, "example.com", 0, 0 },
    /* the labels after "*." must be letter-digit-hyphen labels */
    { "*.ex-.com", 0, "a.ex-.com", 0, 0 },
    { "*.-ex.com", 0, "a.-ex.com", 0, 0 },
    { "*._x.example.com", 0, "a._x.example.com", 0, 0 },
    { "*.a..com", 0, "b.a..com", 0, 0 },
    { "*.example.com.", 0, "a.example.com", 0, 0 },
    { "*.example.com.", 0, "a.example.com.", 0, 0 },
    /* IDNA A-labels (RFC 6125 6.4.3) */
    { "*.example.com", 0, "xn--bcher-kva.example.com", 0, 1 },
    { "*.xn--bcher-kva.example", 0, "mail.xn--bcher-kva.example", 0, 1 },
    { "*.XN--bcher-kva.example", 0, "mail.xn--bcher-kva.example", 0, 1 },
    { "*.xn--bcher-kva.example", 0, "mail.xn--bcher-kvb.example", 0, 0 },
    { "*.xn---a.example", 0, "b.xn---a.example", 0, 1 },
    { "xn--*.example.com", 0, "xn--a.example.com", 0, 0 },
    { "xn--bcher-kva.example", 0, "XN--BCHER-KVA.example", 0, 1 },
};

static size_t len_or_strlen(const char *s, size_t n)
{
    return n ? n : strlen(s);
}

/* Would tls_conn_client_new take this name (as the SNI)? */
static int conn_accepts(const char *name, size_t nlen)
{
    char z[NAME_BUF];
    if (nlen >= sizeof(z) || memchr(name, '\0', nlen) != NULL)
        return 0;
    memcpy(z, name, nlen);
    z[nlen] = '\0';
    struct tls_client_params p;
    memset(&p, 0, sizeof(p));
    p.tier = TLS_TIER_PREFERRED;
    p.verify = TLS_VERIFY_PKIX;
    p.sni = z;
    struct tls_conn *t = tls_conn_client_new(g_client, &p);
    tls_conn_free(t);
    return t != NULL;
}

/* A certificate whose only DNS-ID is pattern[0..plen). */
static X509 *cert_with_dns_id(const char *pattern, size_t plen)
{
    X509 *x = X509_new();
    GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
    GENERAL_NAME *g = GENERAL_NAME_new();
    ASN1_IA5STRING *ia5 = ASN1_IA5STRING_new();
    int ok = x && gens && g && ia5 && ASN1_STRING_set(ia5, pattern, (int)plen);
    if (ok) {
        GENERAL_NAME_set0_value(g, GEN_DNS, ia5);
        ia5 = NULL;
        ok = sk_GENERAL_NAME_push(gens, g) != 0;
        if (ok)
            g = NULL;
    }
    ok = ok && X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, 0) == 1;
    ASN1_IA5STRING_free(ia5);
    GENERAL_NAME_free(g);
    GENERAL_NAMES_free(gens);
    if (!ok) {
        X509_free(x);
        return NULL;
    }
    return x;
}

/* BoringSSL's answer for the name as the PKIX check hands it over:
 * without its trailing dot. -1 if it could not be asked. */
static int x509_matches(const char *pattern, size_t plen, const char *name, size_t nlen)
{
    if (nlen > 0 && name[nlen - 1] == '.')
        nlen--;
    X509 *x = cert_with_dns_id(pattern, plen);
    if (x == NULL)
        return -1;
    int r = X509_check_host(x, name, nlen, PKIX_HOST_FLAGS, NULL);
    X509_free(x);
    return r < 0 ? -1 : r;
}

static void check_case(const struct name_case *c, size_t i)
{
    size_t plen = len_or_strlen(c->pattern, c->plen);
    size_t nlen = len_or_strlen(c->name, c->nlen);
    int got = tls_name_matches(c->pattern, plen, c->name, nlen);
    if (got != c->want)
        CHECK_FAILF("case %zu: tls_name_matches(\"%.*s\", \"%.*s\") = %d, want %d", i,
                    (int)plen, c->pattern, (int)nlen, c->name, got, c->want);
    if (!conn_accepts(c->name, nlen))
        return;   /* the PKIX check never sees it; tls_name_matches says 0 */
    int x = x509_matches(c->pattern, plen, c->name, nlen);
    if (x != got)
        CHECK_FAILF("case %zu: \"%.*s\" / \"%.*s\": BoringSSL says %d, tls_name_matches %d",
                    i, (int)plen, c->pattern, (int)nlen, c->name, x, got);
}

static void test_table(void)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_case(&cases[i], i);
}

/* Every name the conn refuses matches nothing, whatever the pattern. */
static void test_refused_names_match_nothing(void)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t nlen = len_or_strlen(cases[i].name, cases[i].nlen);
        if (conn_accepts(cases[i].name, nlen))
            continue;
        for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
            size_t plen = len_or_strlen(cases[k].pattern, cases[k].plen);
            if (tls_name_matches(cases[k].pattern, plen, cases[i].name, nlen))
                CHECK_FAILF("refused name %zu matched pattern %zu", i, k);
        }
    }
}

/* 253 bytes is the longest name (254 with the root dot). */
static void test_lengths(void)
{
    char name[NAME_BUF];
    /* "a.a.a. ... a" with the last label longer: 253 bytes in all */
    size_t n = 0;
    while (n < 240) {
        name[n++] = 'a';
        name[n++] = '.';
    }
    while (n < 253)
        name[n++] = 'b';
    CHECK_INT(tls_name_matches(name, 253, name, 253), 1);
    CHECK_INT(conn_accepts(name, 253), 1);
    CHECK_INT(x509_matches(name, 253, name, 253), 1);
    /* the same with the root dot */
    name[253] = '.';
    CHECK_INT(tls_name_matches(name, 253, name, 254), 1);
    CHECK_INT(conn_accepts(name, 254), 1);
    /* one byte more */
    name[253] = 'b';
    CHECK_INT(tls_name_matches(name, 254, name, 254), 0);
    CHECK_INT(conn_accepts(name, 254), 0);
    /* a wildcard DNS-ID covering a 253-byte name */
    char pattern[NAME_BUF];
    pattern[0] = '*';
    memcpy(pattern + 1, name + 1, 252);   /* name[1] is the first '.' */
    CHECK_INT(tls_name_matches(pattern, 253, name, 253), 1);
    CHECK_INT(x509_matches(pattern, 253, name, 253), 1);
    CHECK_INT(tls_name_matches(NULL, 0, name, 253), 0);
    CHECK_INT(tls_name_matches(pattern, 253, NULL, 0), 0);
}

/* Deterministic pseudo-random choices (a fixed LCG: reproducible). */
static uint32_t g_rand = 12345;

static size_t pick(size_t n)
{
    g_rand = g_rand * 1103515245u + 12345u;
    return (g_rand >> 16) % n;
}

static void append(char *buf, size_t *len, const char *s)
{
    size_t n = strlen(s);
    if (*len + n < NAME_BUF) {
        memcpy(buf + *len, s, n);
        *len += n;
    }
}

#define AGREE_ROUNDS 20000

/* Patterns built from awkward labels, names from the same pattern with
 * labels kept, recased or replaced: for every name the conn accepts,
 * tls_name_matches and BoringSSL must agree. */
static void test_agrees_with_boringssl(void)
{
    static const char *const plabels[] = {
        "*", "a", "A", "xn--a", "xn---a", "a-", "-a", "a_b", "f*", "*o", "",
        "0", "ab-c", "mx", "xn--", "**",
    };
    static const char *const nlabels[] = { "a", "b-c", "xn--q", "-", "_", "", "A", "Mx" };
    size_t nplabels = sizeof(plabels) / sizeof(plabels[0]);
    size_t nnlabels = sizeof(nlabels) / sizeof(nlabels[0]);
    int compared = 0, matched = 0, wildcard_matched = 0;
    for (int round = 0; round < AGREE_ROUNDS; round++) {
        char pattern[NAME_BUF], name[NAME_BUF];
        size_t plen = 0, nlen = 0, labels = 1 + pick(4);
        for (size_t l = 0; l < labels; l++) {
            /* Mostly a wildcard up front: that is where the rules are. */
            const char *pl = l == 0 && pick(2) ? "*" : plabels[pick(nplabels)];
            const char *nl = pick(3) ? pl : nlabels[pick(nnlabels)];
            if (l > 0) {
                append(pattern, &plen, ".");
                append(name, &nlen, ".");
            }
            append(pattern, &plen, pl);
            if (strchr(nl, '*') != NULL)   /* what the wildcard stands for */
                nl = nlabels[pick(nnlabels)];
            append(name, &nlen, pick(4) ? nl : (pick(2) ? "Q" : "q"));
        }
        if (pick(8) == 0)
            append(pattern, &plen, ".");
        if (pick(4) == 0)
            append(name, &nlen, ".");
        int got = tls_name_matches(pattern, plen, name, nlen);
        if (!conn_accepts(name, nlen)) {
            if (got)
                CHECK_FAILF("refused name \"%.*s\" matched \"%.*s\"", (int)nlen, name,
                            (int)plen, pattern);
            continue;
        }
        int x = x509_matches(pattern, plen, name, nlen);
        compared++;
        matched += got;
        wildcard_matched += got && pattern[0] == '*';
        if (x != got)
            CHECK_FAILF("\"%.*s\" / \"%.*s\": BoringSSL says %d, tls_name_matches %d",
                        (int)plen, pattern, (int)nlen, name, x, got);
    }
    /* The generator must produce both answers in numbers to mean much. */
    if (compared < AGREE_ROUNDS / 4 || matched < AGREE_ROUNDS / 50 ||
        wildcard_matched < AGREE_ROUNDS / 400)
        CHECK_FAILF("weak sample: %d compared, %d matched, %d by a wildcard", compared,
                    matched, wildcard_matched);
}

int main(void)
{
    char err[256] = "";
    struct tls_client_config cfg = { 0 };   /* the system trust store, if any */
    g_client = tls_client_ctx_new(&cfg, err, sizeof(err));
    if (g_client == NULL) {
        printf("FAIL setup: client ctx: %s\n", err);
        return 1;
    }
    RUN(test_table);
    RUN(test_refused_names_match_nothing);
    RUN(test_lengths);
    RUN(test_agrees_with_boringssl);
    tls_client_ctx_free(g_client);
    return check_finish();
}
