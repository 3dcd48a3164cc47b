/* policy.c - TLS policy entries, the table lookup, and handshake
 * parameters per level; see policy.h. */
#include "engine/policy.h"

#include <ctype.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "engine/text.h"

static const char *const level_names[] = {
    [POLICY_NONE] = "none",       [POLICY_MAY] = "may",       [POLICY_ENCRYPT] = "encrypt",
    [POLICY_FINGERPRINT] = "fingerprint", [POLICY_VERIFY] = "verify", [POLICY_SECURE] = "secure",
};

const char *policy_level_name(enum policy_level l)
{
    return (size_t)l < sizeof(level_names) / sizeof(level_names[0]) ? level_names[l] : "?";
}

int policy_level_mandatory(enum policy_level l)
{
    return l > POLICY_MAY;
}

static int word_eq(const char *p, size_t n, const char *s)
{
    return strlen(s) == n && strncasecmp(p, s, n) == 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c = (char)tolower((unsigned char)c);
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* 64 hex digits, colons between byte pairs allowed. */
static int parse_pin(const char *p, size_t n, uint8_t out[32])
{
    size_t got = 0;
    for (size_t i = 0; i < n;) {
        if (p[i] == ':') {
            i++;
            continue;
        }
        if (i + 1 >= n || got == 32)
            return 0;
        int hi = hexval(p[i]), lo = hexval(p[i + 1]);
        if (hi < 0 || lo < 0)
            return 0;
        out[got++] = (uint8_t)(hi << 4 | lo);
        i += 2;
    }
    return got == 32;
}

static int valid_name(const char *p, size_t n)
{
    if (n == 0 || n >= POLICY_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (!(isalnum(c) || c == '-' || c == '.' || c == '_' || c == '*' || c == ':'))
            return 0;
    }
    return 1;
}

static int parse_match(const char *v, size_t n, struct policy_entry *e)
{
    size_t i = 0;
    while (i <= n) {
        size_t j = i;
        while (j < n && v[j] != ',')
            j++;
        if (e->nmatch == TLS_MAX_MATCH_NAMES || !valid_name(v + i, j - i))
            return 0;
        text_copy_n(e->match[e->nmatch++], POLICY_NAME_MAX, v + i, j - i);
        i = j + 1;
    }
    return 1;
}

static int parse_version(const char *v, size_t n, uint16_t *out)
{
    static const struct { const char *name; uint16_t v; } vs[] = {
        {"1.0", TLS1_VERSION}, {"1.1", TLS1_1_VERSION}, {"1.2", TLS1_2_VERSION}, {"1.3", TLS1_3_VERSION},
    };
    for (size_t i = 0; i < sizeof(vs) / sizeof(vs[0]); i++)
        if (word_eq(v, n, vs[i].name)) {
            *out = vs[i].v;
            return 1;
        }
    return 0;
}

/* One "name=value" option; returns NULL or why not. */
static const char *parse_option(const char *w, size_t n, struct policy_entry *e)
{
    const char *eq = memchr(w, '=', n);
    if (eq == NULL)
        return "expected option=value";
    size_t kn = (size_t)(eq - w), vn = n - kn - 1;
    const char *v = eq + 1;
    if (vn == 0)
        return "empty option value";
    if (word_eq(w, kn, "match"))
        return parse_match(v, vn, e) ? NULL : "bad match= names (at most 8, host names)";
    if (word_eq(w, kn, "min"))
        return parse_version(v, vn, &e->min_version) ? NULL : "min= must be 1.0, 1.1, 1.2 or 1.3";
    if (word_eq(w, kn, "pin")) {
        if (e->npins == TLS_MAX_PINS)
            return "too many pins (at most 8)";
        return parse_pin(v, vn, e->pins[e->npins++]) ? NULL : "pin= wants 64 hex digits (SHA-256)";
    }
    if (word_eq(w, kn, "ca_file"))
        return text_copy_n(e->ca_file, sizeof(e->ca_file), v, vn) ? NULL : "ca_file= too long";
    if (word_eq(w, kn, "cert"))
        return text_copy_n(e->cert_file, sizeof(e->cert_file), v, vn) ? NULL : "cert= too long";
    if (word_eq(w, kn, "key"))
        return text_copy_n(e->key_file, sizeof(e->key_file), v, vn) ? NULL : "key= too long";
    if (word_eq(w, kn, "client_cert")) {
        if (word_eq(v, vn, "yes")) e->client_cert = 1;
        else if (word_eq(v, vn, "no")) e->client_cert = 0;
        else return "client_cert= must be yes or no";
        return NULL;
    }
    return "unknown option (match, min, pin, ca_file, cert, key, client_cert)";
}

static const char *parse_level(const char *w, size_t n, enum policy_level *out)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++)
        if (word_eq(w, n, level_names[i])) {
            *out = (enum policy_level)i;
            return NULL;
        }
    if (word_eq(w, n, "dane") || word_eq(w, n, "dane-only"))
        return "dane levels need DNSSEC-validated TLSA lookups, not supported yet";
    return "unknown level (none, may, encrypt, fingerprint, verify, secure)";
}

int policy_entry_parse(const char *text, size_t len, struct policy_entry *e, char *err, size_t errlen)
{
    char domain[POLICY_DOMAIN_MAX];
    memcpy(domain, e->domain, sizeof(domain));
    memset(e, 0, sizeof(*e));
    memcpy(e->domain, domain, sizeof(domain));
    e->client_cert = 1;
    size_t i = 0, nwords = 0;
    const char *why = NULL;
    while (why == NULL) {
        while (i < len && isspace((unsigned char)text[i]))
            i++;
        if (i == len)
            break;
        size_t j = i;
        while (j < len && !isspace((unsigned char)text[j]))
            j++;
        why = nwords == 0 ? parse_level(text + i, j - i, &e->level) : parse_option(text + i, j - i, e);
        if (why)
            snprintf(err, errlen, "%.*s: %s", (int)(j - i > 64 ? 64 : j - i), text + i, why);
        nwords++;
        i = j;
    }
    if (why)
        return 0;
    if (nwords == 0) {
        snprintf(err, errlen, "empty policy (want a level)");
        return 0;
    }
    if (e->level == POLICY_FINGERPRINT && e->npins == 0) {
        snprintf(err, errlen, "fingerprint needs at least one pin=");
        return 0;
    }
    if (e->npins && e->level != POLICY_FINGERPRINT) {
        snprintf(err, errlen, "pin= only applies to level fingerprint");
        return 0;
    }
    if ((e->cert_file[0] != '\0') != (e->key_file[0] != '\0')) {
        snprintf(err, errlen, "cert= and key= go together");
        return 0;
    }
    return 1;
}

_Static_assert(offsetof(struct policy_entry, domain) == 0, "domain_table_match reads the key first");

static const char *key_at(const void *base, size_t stride, size_t i)
{
    return (const char *)base + i * stride;
}

long domain_table_match(const void *base, size_t n, size_t stride, const char *domain)
{
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(key_at(base, stride, i), domain) == 0)
            return (long)i;
    /* Closest parent first: ".b.example.com" before ".example.com". */
    for (const char *d = strchr(domain, '.'); d; d = strchr(d + 1, '.'))
        for (size_t i = 0; i < n; i++)
            if (strcasecmp(key_at(base, stride, i), d) == 0)
                return (long)i;
    for (size_t i = 0; i < n; i++)
        if (strcmp(key_at(base, stride, i), "*") == 0)
            return (long)i;
    return -1;
}

const struct policy_entry *policy_lookup(const struct policy_table *t, const char *domain)
{
    long i = domain_table_match(t->entries, t->n, sizeof(t->entries[0]), domain);
    return i < 0 ? &t->fallback : &t->entries[i];
}

void policy_client_params(const struct policy_entry *e, const char *mx_host, const char *domain,
                          enum tls_tier tier, struct tls_client_params *p)
{
    memset(p, 0, sizeof(*p));
    p->tier = tier;
    p->sni = mx_host;
    p->min_version = e->min_version;
    if (p->min_version == 0 && policy_level_mandatory(e->level))
        p->min_version = TLS1_2_VERSION;
    p->present_client_cert = e->client_cert;
    switch (e->level) {
    case POLICY_FINGERPRINT:
        p->verify = TLS_VERIFY_FINGERPRINT;
        memcpy(p->pins, e->pins, sizeof(p->pins));
        p->npins = e->npins;
        break;
    case POLICY_VERIFY:
    case POLICY_SECURE:
        p->verify = TLS_VERIFY_PKIX;
        for (size_t i = 0; i < e->nmatch; i++)
            p->match_names[p->nmatch++] = e->match[i];
        /* verify trusts the MX name DNS gave us; secure never does. */
        if (e->level == POLICY_VERIFY && p->nmatch < TLS_MAX_MATCH_NAMES && e->nmatch == 0)
            p->match_names[p->nmatch++] = mx_host;
        if (e->level == POLICY_SECURE && e->nmatch == 0)
            p->match_names[p->nmatch++] = domain;
        break;
    default:
        p->verify = TLS_VERIFY_RECORD;
        break;
    }
}
