/* unit_policy.c - policy entries, table lookup and handshake parameters. */
#include "engine/policy.h"

#include <string.h>

#include "tests/check.h"

static int parse(const char *text, struct policy_entry *e, char *err)
{
    memset(e, 0, sizeof(*e));
    return policy_entry_parse(text, strlen(text), e, err, 256);
}

static void test_parse(void)
{
    struct policy_entry e;
    char err[256] = "";
    CHECK_INT(parse("verify match=mx1.example.com,mx2.example.com min=1.3 client_cert=no", &e, err), 1);
    CHECK_INT(e.level, POLICY_VERIFY);
    CHECK_INT(e.nmatch, 2);
    CHECK_STR(e.match[1], "mx2.example.com");
    CHECK_INT(e.min_version, TLS1_3_VERSION);
    CHECK_INT(e.client_cert, 0);
    CHECK_INT(parse("fingerprint pin=AB:CD:" "EF0123456789abcdef0123456789abcdef0123456789abcdef01234567", &e, err), 0);   /* 31 bytes */
    CHECK_INT(parse("fingerprint pin=" "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF", &e, err), 1);
    CHECK_INT(e.npins, 1);
    CHECK_INT(e.pins[0][31], 0xff);
    CHECK_INT(e.client_cert, 1);                      /* default: present when asked */
    CHECK_INT(parse("may pin=" "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff", &e, err), 0);
    CHECK_STR(err, "pin= only applies to level fingerprint");
    CHECK_INT(parse("encrypt cert=/a.pem", &e, err), 0);
    CHECK_STR(err, "cert= and key= go together");
    CHECK_INT(parse("", &e, err), 0);
    CHECK_INT(parse("secure match=", &e, err), 0);
    CHECK_INT(parse("secure match=a b", &e, err), 0);   /* "b" is not option=value */
    CHECK_INT(parse("dane-only", &e, err), 0);
    CHECK(strstr(err, "not supported yet") != NULL);
    CHECK_INT(parse("SECURE", &e, err), 1);            /* case-insensitive level */
    CHECK_INT(policy_level_mandatory(POLICY_MAY), 0);
    CHECK_INT(policy_level_mandatory(POLICY_ENCRYPT), 1);
}

static void add(struct policy_table *t, const char *domain, enum policy_level l)
{
    struct policy_entry *e = &t->entries[t->n++];
    memset(e, 0, sizeof(*e));
    snprintf(e->domain, sizeof(e->domain), "%s", domain);
    e->level = l;
}

static void test_lookup(void)
{
    static struct policy_table t;
    memset(&t, 0, sizeof(t));
    t.fallback.level = POLICY_MAY;
    add(&t, "example.com", POLICY_SECURE);
    add(&t, ".example.com", POLICY_VERIFY);
    add(&t, ".b.example.com", POLICY_ENCRYPT);
    add(&t, "plain.org", POLICY_NONE);
    CHECK_INT(policy_lookup(&t, "example.com")->level, POLICY_SECURE);     /* exact */
    CHECK_INT(policy_lookup(&t, "EXAMPLE.COM")->level, POLICY_SECURE);
    CHECK_INT(policy_lookup(&t, "a.example.com")->level, POLICY_VERIFY);   /* parent */
    CHECK_INT(policy_lookup(&t, "x.b.example.com")->level, POLICY_ENCRYPT); /* closest parent */
    CHECK_INT(policy_lookup(&t, "b.example.com")->level, POLICY_VERIFY);   /* .b covers below b only */
    CHECK_INT(policy_lookup(&t, "notexample.com")->level, POLICY_MAY);     /* not a parent */
    CHECK_INT(policy_lookup(&t, "plain.org")->level, POLICY_NONE);
    CHECK_INT(policy_lookup(&t, "sub.plain.org")->level, POLICY_MAY);      /* exact only */
    CHECK(policy_lookup(&t, "other.net") == &t.fallback);
}

static void test_params(void)
{
    struct policy_entry e;
    char err[256];
    struct tls_client_params p;

    parse("may", &e, err);
    policy_client_params(&e, "mx.example.com", "example.com", TLS_TIER_PREFERRED, &p);
    CHECK_INT(p.verify, TLS_VERIFY_RECORD);
    CHECK_INT(p.min_version, 0);                      /* may: the tier decides */
    CHECK_STR(p.sni, "mx.example.com");

    parse("encrypt", &e, err);
    policy_client_params(&e, "mx.example.com", "example.com", TLS_TIER_SUFFICIENT, &p);
    CHECK_INT(p.verify, TLS_VERIFY_RECORD);
    CHECK_INT(p.min_version, TLS1_2_VERSION);         /* mandatory: never below 1.2 */
    CHECK_INT(p.tier, TLS_TIER_SUFFICIENT);

    parse("encrypt min=1.0", &e, err);
    policy_client_params(&e, "mx.example.com", "example.com", TLS_TIER_LEGACY, &p);
    CHECK_INT(p.min_version, TLS1_VERSION);           /* unless the entry says so */

    parse("verify", &e, err);
    policy_client_params(&e, "mx.example.com", "example.com", TLS_TIER_PREFERRED, &p);
    CHECK_INT(p.verify, TLS_VERIFY_PKIX);
    CHECK_INT(p.nmatch, 1);
    CHECK_STR(p.match_names[0], "mx.example.com");    /* the MX name */

    parse("secure", &e, err);
    policy_client_params(&e, "mx.evil.net", "example.com", TLS_TIER_PREFERRED, &p);
    CHECK_INT(p.nmatch, 1);
    CHECK_STR(p.match_names[0], "example.com");       /* never the MX name from DNS */

    parse("secure match=mx.example.com", &e, err);
    policy_client_params(&e, "mx.evil.net", "example.com", TLS_TIER_PREFERRED, &p);
    CHECK_INT(p.nmatch, 1);
    CHECK_STR(p.match_names[0], "mx.example.com");

    parse("fingerprint client_cert=no pin=" "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
          &e, err);
    policy_client_params(&e, "mx.example.com", "example.com", TLS_TIER_PREFERRED, &p);
    CHECK_INT(p.verify, TLS_VERIFY_FINGERPRINT);
    CHECK_INT(p.npins, 1);
    CHECK_INT(p.present_client_cert, 0);
}

int main(void)
{
    RUN(test_parse);
    RUN(test_lookup);
    RUN(test_params);
    return check_finish();
}
