/* unit_cert_check.c - every finding of tls/cert_check.c, on certificates
 * from scripts/gen-test-certs.sh generated into a mktemp dir (tests run
 * from the repository root). Each check names the finding it expects, by
 * severity and a piece of its text, so a finding that disappears, changes
 * severity or fires where it should not fails the test. */
#include "tls/cert_check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tests/check.h"
#include "tests/test_certs.h"

#define DAY           86400
#define LEAF_COPIES   12      /* more than CERT_CHAIN_MAX */

static int64_t g_now;

/* Findings of severity sev whose text contains part. */
static int count(const struct cert_report *r, enum cert_severity sev, const char *part)
{
    int n = 0;
    for (size_t i = 0; i < r->n; i++)
        if (r->f[i].sev == sev && strstr(r->f[i].text, part) != NULL)
            n++;
    return n;
}

/* Findings of any severity whose text contains part. */
static int count_any(const struct cert_report *r, const char *part)
{
    return count(r, CERT_NOTE, part) + count(r, CERT_WARN, part) + count(r, CERT_ERROR, part);
}

static void dump(const struct cert_report *r)
{
    for (size_t i = 0; i < r->n; i++)
        printf("    %s: %s\n", cert_severity_name(r->f[i].sev), r->f[i].text);
}

/* Runs a check of NAME.pem / NAME.key against ca.pem for mx.test, server
 * role, now; returns the pass/fail result. */
static int check_named(const char *name, struct cert_report *r)
{
    char pem[64], key[64];
    snprintf(pem, sizeof(pem), "%s.pem", name);
    snprintf(key, sizeof(key), "%s.key", name);
    return cert_check_files(CERT_ROLE_SERVER, cert_path(pem), cert_path(key),
                            cert_path("ca.pem"), "mx.test", g_now, r);
}

#define EXPECT(r, sev, part, want)                                            \
    do {                                                                      \
        int got_ = count((r), (sev), (part));                                 \
        if (got_ != (want)) {                                                 \
            CHECK_FAILF("%s \"%s\": %d findings, want %d",                    \
                        cert_severity_name(sev), (part), got_, (want));       \
            dump(r);                                                          \
        }                                                                     \
    } while (0)

static void test_good_server(void)
{
    struct cert_report r;
    CHECK_INT(check_named("server", &r), 1);
    CHECK_INT(r.errors, 0);
    CHECK_STR(r.subject, "CN=mx.test");
    CHECK(strlen(r.not_after) == strlen("2036-01-01 00:00:00 UTC"));
    EXPECT(&r, CERT_NOTE, "subject CN=mx.test", 1);
    EXPECT(&r, CERT_NOTE, "key EC P-256", 1);
    EXPECT(&r, CERT_NOTE, "valid until ", 1);
    /* Only the private-CA warning: names, EKU, dates, key are fine. */
    CHECK_INT(r.warnings, 1);
    EXPECT(&r, CERT_WARN, "private CA", 1);
    CHECK_INT(r.dropped, 0);

    CHECK_INT(cert_check_files(CERT_ROLE_SERVER, cert_path("rsa2048.pem"), cert_path("rsa2048.key"),
                               cert_path("ca.pem"), "mx.test", g_now, &r), 1);
    EXPECT(&r, CERT_NOTE, "key RSA 2048 bits", 1);
    CHECK_INT(r.errors, 0);
}

static void test_unreadable(void)
{
    struct cert_report r;
    CHECK_INT(cert_check_files(CERT_ROLE_CLIENT, cert_path("missing.pem"), cert_path("server.key"),
                               NULL, NULL, g_now, &r), 0);
    EXPECT(&r, CERT_ERROR, "cannot read certificate file", 1);
    EXPECT(&r, CERT_ERROR, "No such file", 1);
    CHECK_STR(r.subject, "");

    /* A key is PEM but not a certificate. */
    CHECK_INT(cert_check_files(CERT_ROLE_CLIENT, cert_path("server.key"), cert_path("server.key"),
                               NULL, NULL, g_now, &r), 0);
    EXPECT(&r, CERT_ERROR, "holds no PEM certificate", 1);
    CHECK_INT(r.errors, 1);

    CHECK_INT(cert_check_files(CERT_ROLE_CLIENT, NULL, NULL, NULL, NULL, g_now, &r), 0);
    EXPECT(&r, CERT_ERROR, "no certificate file given", 1);
}

static void test_key_file(void)
{
    struct cert_report r;
    CHECK_INT(cert_check_files(CERT_ROLE_SERVER, cert_path("server.pem"), cert_path("missing.key"),
                               cert_path("ca.pem"), "mx.test", g_now, &r), 0);
    EXPECT(&r, CERT_ERROR, "cannot read private key", 1);
    CHECK_INT(r.errors, 1);

    /* A certificate where the key should be. */
    CHECK_INT(cert_check_files(CERT_ROLE_SERVER, cert_path("server.pem"), cert_path("ca.pem"),
                               cert_path("ca.pem"), "mx.test", g_now, &r), 0);
    EXPECT(&r, CERT_ERROR, "holds no readable PEM private key", 1);

    CHECK_INT(cert_check_files(CERT_ROLE_SERVER, cert_path("server.pem"), cert_path("wrongname.key"),
                               cert_path("ca.pem"), "mx.test", g_now, &r), 0);
    EXPECT(&r, CERT_ERROR, "does not match the certificate", 1);
    CHECK_INT(r.errors, 1);

    CHECK_INT(cert_check_files(CERT_ROLE_SERVER, cert_path("server.pem"), NULL,
                               cert_path("ca.pem"), "mx.test", g_now, &r), 1);
    EXPECT(&r, CERT_NOTE, "key not checked", 1);
}

static void test_key_types(void)
{
    struct cert_report r;
    CHECK_INT(check_named("rsa1024", &r), 0);
    EXPECT(&r, CERT_ERROR, "RSA 1024 bits: RSA keys need at least 2048 bits", 1);
    CHECK_INT(r.errors, 1);

    CHECK_INT(check_named("ec521", &r), 0);
    EXPECT(&r, CERT_ERROR, "EC P-521: EC keys must be on P-256 or P-384", 1);
    CHECK_INT(r.errors, 1);

    CHECK_INT(check_named("dsa", &r), 0);
    EXPECT(&r, CERT_ERROR, "key is DSA 2048 bits", 1);
    CHECK_INT(r.errors, 1);
}

static void test_weak_signatures(void)
{
    struct cert_report r;
    CHECK_INT(check_named("sha1", &r), 0);
    EXPECT(&r, CERT_ERROR, "certificate is signed with SHA-1", 1);
    CHECK_INT(r.errors, 1);

    CHECK_INT(check_named("sha1inter", &r), 0);
    EXPECT(&r, CERT_ERROR, "chain certificate 2 (CN=tern test sha1 intermediate) is signed with SHA-1", 1);
    CHECK_INT(r.errors, 1);

    CHECK_INT(check_named("md5", &r), 0);
    EXPECT(&r, CERT_ERROR, "signed with MD5", 1);
    CHECK_INT(r.errors, 1);

    /* A SHA-1 self-signature on the root is nobody's concern. */
    CHECK_INT(cert_check_files(CERT_ROLE_SERVER, cert_path("sha1root.pem"), cert_path("sha1root.key"),
                               cert_path("sha1root-ca.pem"), "mx.test", g_now, &r), 1);
    CHECK_INT(r.errors, 0);
    EXPECT(&r, CERT_WARN, "private CA: the chain builds only to CN=tern sha1 root", 1);
}

static void test_validity(void)
{
    struct cert_report r;
    CHECK_INT(check_named("expired", &r), 0);
    EXPECT(&r, CERT_ERROR, "certificate expired on 2020-01-01 00:00:00 UTC", 1);
    CHECK_INT(r.errors, 1);
    /* Reported once: the chain check lets the leaf's dates through. */
    EXPECT(&r, CERT_WARN, "does not build", 0);

    CHECK_INT(check_named("notyet", &r), 0);
    EXPECT(&r, CERT_ERROR, "certificate is not yet valid (valid from 2099-01-01 00:00:00 UTC)", 1);
    CHECK_INT(r.errors, 1);

    CHECK_INT(check_named("soon", &r), 1);
    EXPECT(&r, CERT_WARN, "certificate expires on ", 1);
    /* Generated moments ago for 10 days: 9 full days are left (10 when
     * generated within the same second). */
    CHECK_INT(count(&r, CERT_WARN, "(9 days left)") + count(&r, CERT_WARN, "(10 days left)"), 1);
}

/* now_s, not the clock, decides: the same file read at other times. */
static void test_fixed_time(void)
{
    struct cert_report r;
    int64_t late = g_now + 3640LL * DAY;    /* 10 days before the leaf ends */
    CHECK_INT(cert_check_files(CERT_ROLE_SERVER, cert_path("server.pem"), cert_path("server.key"),
                               cert_path("ca.pem"), "mx.test", late, &r), 1);
    EXPECT(&r, CERT_WARN, "certificate expires on ", 1);
    CHECK_INT(count(&r, CERT_WARN, "(9 days left)") + count(&r, CERT_WARN, "(10 days left)"), 2);
    /* The intermediate (made first, same 3650 days) ends about then too. */
    EXPECT(&r, CERT_WARN, "chain certificate 2 (CN=tern test intermediate) expires on", 1);

    int64_t after = g_now + 3652LL * DAY;
    CHECK_INT(cert_check_files(CERT_ROLE_SERVER, cert_path("server.pem"), cert_path("server.key"),
                               cert_path("ca.pem"), "mx.test", after, &r), 0);
    EXPECT(&r, CERT_ERROR, "certificate expired on", 1);
    EXPECT(&r, CERT_ERROR, "chain certificate 2 (CN=tern test intermediate) expired on", 1);
    CHECK_INT(r.errors, 2);
    /* The root comes from the trust store: its expiry is the chain's. */
    EXPECT(&r, CERT_WARN, "does not build to the trust store", 1);
    EXPECT(&r, CERT_WARN, "certificate has expired", 1);

    int64_t before = g_now - 2 * DAY;
    CHECK_INT(cert_check_files(CERT_ROLE_SERVER, cert_path("server.pem"), cert_path("server.key"),
                               cert_path("ca.pem"), "mx.test", before, &r), 0);
    EXPECT(&r, CERT_ERROR, "certificate is not yet valid", 1);
}

static void test_trust(void)
{
    struct cert_report r;
    CHECK_INT(cert_check_files(CERT_ROLE_SERVER, cert_path("selfsigned.pem"),
                               cert_path("selfsigned.key"), NULL, "mx.test", g_now, &r), 1);
    EXPECT(&r, CERT_WARN, "self-signed", 1);
    EXPECT(&r, CERT_WARN, "does not build", 0);   /* said once, as self-signed */
    CHECK_INT(r.warnings, 1);

    CHECK_INT(check_named("untrusted", &r), 1);
    EXPECT(&r, CERT_WARN, "does not build to the trust store", 1);
    EXPECT(&r, CERT_WARN, "unable to get local issuer certificate", 1);
    EXPECT(&r, CERT_WARN, "self-signed", 0);

    /* The leaf alone, without the intermediate that links it to the root. */
    CHECK_INT(check_named("nointer", &r), 1);
    EXPECT(&r, CERT_WARN, "unable to get local issuer certificate", 1);
    EXPECT(&r, CERT_WARN, "private CA", 0);

    /* Trusting the untrusted root makes it a private CA. */
    CHECK_INT(cert_check_files(CERT_ROLE_SERVER, cert_path("untrusted.pem"),
                               cert_path("untrusted.key"), cert_path("untrusted-ca.pem"),
                               "mx.test", g_now, &r), 1);
    EXPECT(&r, CERT_WARN, "private CA: the chain builds only to CN=tern untrusted root", 1);

    CHECK_INT(cert_check_files(CERT_ROLE_SERVER, cert_path("server.pem"), cert_path("server.key"),
                               cert_path("missing-ca.pem"), "mx.test", g_now, &r), 1);
    EXPECT(&r, CERT_WARN, "cannot be read: the chain was not checked", 1);
}

/* The system bundle decides "private CA": a chain that builds there is
 * public. The bundle's own first root serves as the certificate (its key
 * is not needed for the trust findings). */
static void test_system_bundle(void)
{
    if (access(CERT_SYSTEM_BUNDLE, R_OK) != 0) {
        printf("  skipped: no %s\n", CERT_SYSTEM_BUNDLE);
        return;
    }
    struct cert_report r;
    cert_check_files(CERT_ROLE_SERVER, CERT_SYSTEM_BUNDLE, NULL, CERT_SYSTEM_BUNDLE, NULL, g_now, &r);
    EXPECT(&r, CERT_NOTE, "(in the system bundle too)", 1);
    EXPECT(&r, CERT_WARN, "private CA", 0);
    EXPECT(&r, CERT_WARN, "only the first 10 were checked", 1);

    cert_check_files(CERT_ROLE_SERVER, CERT_SYSTEM_BUNDLE, NULL, NULL, NULL, g_now, &r);
    EXPECT(&r, CERT_NOTE, "(system bundle)", 1);

    /* Our test root is in no system bundle. */
    CHECK_INT(check_named("server", &r), 1);
    EXPECT(&r, CERT_WARN, "not to the system bundle", 1);
    cert_check_files(CERT_ROLE_SERVER, cert_path("server.pem"), cert_path("server.key"), NULL,
                     "mx.test", g_now, &r);
    EXPECT(&r, CERT_WARN, "does not build to the trust store " CERT_SYSTEM_BUNDLE, 1);
}

static void test_names(void)
{
    struct cert_report r;
    CHECK_INT(check_named("wrongname", &r), 1);
    EXPECT(&r, CERT_WARN, "hostname mx.test is not covered by the certificate's DNS names "
                          "(DNS:other.test)", 1);

    /* Wildcards cover exactly one whole left-most label. */
    cert_check_files(CERT_ROLE_SERVER, cert_path("server.pem"), cert_path("server.key"),
                     cert_path("ca.pem"), "a.wild.test", g_now, &r);
    CHECK_INT(count_any(&r, "not covered"), 0);
    cert_check_files(CERT_ROLE_SERVER, cert_path("server.pem"), cert_path("server.key"),
                     cert_path("ca.pem"), "a.b.wild.test", g_now, &r);
    EXPECT(&r, CERT_WARN, "hostname a.b.wild.test is not covered", 1);

    /* No common-name fallback: CN=mx.test without any SAN covers nothing. */
    cert_check_files(CERT_ROLE_SERVER, cert_path("nosan.pem"), cert_path("nosan.key"),
                     cert_path("ca.pem"), "mx.test", g_now, &r);
    EXPECT(&r, CERT_WARN, "hostname mx.test is not covered by the certificate's DNS names "
                          "((none))", 1);

    /* DNS-IDs only: the IP SAN 127.0.0.1 does not cover a name. */
    cert_check_files(CERT_ROLE_SERVER, cert_path("server.pem"), cert_path("server.key"),
                     cert_path("ca.pem"), "127.0.0.1", g_now, &r);
    EXPECT(&r, CERT_WARN, "hostname 127.0.0.1 is not covered", 1);

    /* Client role: a note, not a warning. */
    CHECK_INT(cert_check_files(CERT_ROLE_CLIENT, cert_path("client.pem"), cert_path("client.key"),
                               cert_path("ca.pem"), "tern.test", g_now, &r), 1);
    EXPECT(&r, CERT_NOTE, "hostname tern.test is not covered", 1);
    EXPECT(&r, CERT_WARN, "not covered", 0);

    /* NULL hostname: not checked. */
    cert_check_files(CERT_ROLE_SERVER, cert_path("wrongname.pem"), cert_path("wrongname.key"),
                     cert_path("ca.pem"), NULL, g_now, &r);
    CHECK_INT(count_any(&r, "not covered"), 0);
}

static void test_eku(void)
{
    struct cert_report r;
    cert_check_files(CERT_ROLE_CLIENT, cert_path("client-serverauth.pem"),
                     cert_path("client-serverauth.key"), cert_path("ca.pem"), "client.test", g_now, &r);
    EXPECT(&r, CERT_WARN, "extended key usage lacks clientAuth", 1);

    cert_check_files(CERT_ROLE_CLIENT, cert_path("client.pem"), cert_path("client.key"),
                     cert_path("ca.pem"), "client.test", g_now, &r);
    CHECK_INT(count_any(&r, "extended key usage"), 0);
    CHECK_INT(r.warnings, 1);   /* the private CA */

    cert_check_files(CERT_ROLE_SERVER, cert_path("client.pem"), cert_path("client.key"),
                     cert_path("ca.pem"), "client.test", g_now, &r);
    EXPECT(&r, CERT_WARN, "extended key usage lacks serverAuth", 1);

    cert_check_files(CERT_ROLE_CLIENT, cert_path("server.pem"), cert_path("server.key"),
                     cert_path("ca.pem"), "mx.test", g_now, &r);
    EXPECT(&r, CERT_WARN, "extended key usage lacks clientAuth", 1);
}

/* Writes the first certificate of src n times into dst. */
static int write_copies(const char *src, const char *dst, int n)
{
    static const char end[] = "-----END CERTIFICATE-----\n";
    char pem[8192];
    FILE *in = fopen(src, "r");
    size_t len = in ? fread(pem, 1, sizeof(pem) - 1, in) : 0;
    if (in)
        fclose(in);
    pem[len] = '\0';
    char *stop = strstr(pem, end);
    FILE *out = fopen(dst, "w");
    if (stop == NULL || out == NULL) {
        if (out)
            fclose(out);
        return 0;
    }
    size_t one = (size_t)(stop - pem) + strlen(end);
    for (int i = 0; i < n; i++)
        fwrite(pem, 1, one, out);
    return fclose(out) == 0;
}

/* More findings than fit: the counts stay true, the overflow is counted. */
static void test_overflow(void)
{
    const char *many = cert_path("many-expired.pem");
    CHECK(write_copies(cert_path("expired.pem"), many, LEAF_COPIES));
    struct cert_report r;
    CHECK_INT(cert_check_files(CERT_ROLE_SERVER, many, cert_path("server.key"), cert_path("ca.pem"),
                               "nomatch.test", g_now, &r), 0);
    CHECK_INT(r.n, CERT_FINDINGS_MAX);
    CHECK(r.dropped > 0);
    /* 10 expired copies (the rest were not read) and the key mismatch. */
    CHECK_INT(r.errors, CERT_CHAIN_MAX + 1);
    EXPECT(&r, CERT_WARN, "holds more than 10 certificates", 1);
}

static void test_fmt_helpers(void)
{
    char buf[256];
    CHECK_STR(cert_severity_name(CERT_NOTE), "note");
    CHECK_STR(cert_severity_name(CERT_WARN), "warning");
    CHECK_STR(cert_severity_name(CERT_ERROR), "error");
    cert_fmt_sans(NULL, buf, sizeof(buf));
    CHECK_STR(buf, "(none)");
    cert_fmt_key(NULL, buf, sizeof(buf));
    CHECK_STR(buf, "unparsable public key");
    char tiny[8];
    cert_fmt_name(NULL, tiny, sizeof(tiny));
    CHECK_STR(tiny, "?");
}

int main(void)
{
    if (!test_certs_make("unit-cert"))
        return 1;
    g_now = (int64_t)time(NULL);

    RUN(test_good_server);
    RUN(test_unreadable);
    RUN(test_key_file);
    RUN(test_key_types);
    RUN(test_weak_signatures);
    RUN(test_validity);
    RUN(test_fixed_time);
    RUN(test_trust);
    RUN(test_system_bundle);
    RUN(test_names);
    RUN(test_eku);
    RUN(test_overflow);
    RUN(test_fmt_helpers);

    test_certs_remove();
    return check_finish();
}
