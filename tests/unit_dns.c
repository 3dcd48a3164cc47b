/* unit_dns.c - DNS answers as routing reads them (MX, null MX, NXDOMAIN
 * with the SOA negative TTL, NODATA, SERVFAIL, truncated and malformed
 * responses, A/AAAA, compression), MX order with equal preferences
 * shuffled, and the TTL cache (floor, cap, negative cap, expiry). */
#include <arpa/inet.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include "engine/dns.h"
#include "tests/check.h"

/* A small response builder: header, one question, records. */
struct msg {
    uint8_t b[1024];
    size_t n;
};

static void put16(struct msg *m, unsigned v) { m->b[m->n++] = (uint8_t)(v >> 8); m->b[m->n++] = (uint8_t)v; }
static void put32(struct msg *m, uint32_t v) { put16(m, v >> 16); put16(m, v & 0xFFFF); }

static void put_name(struct msg *m, const char *name)
{
    while (*name) {
        const char *dot = strchr(name, '.');
        size_t l = dot ? (size_t)(dot - name) : strlen(name);
        m->b[m->n++] = (uint8_t)l;
        memcpy(m->b + m->n, name, l);
        m->n += l;
        name += l + (dot != NULL);
    }
    m->b[m->n++] = 0;
}

static void header(struct msg *m, unsigned rcode, unsigned an, unsigned ns, int tc)
{
    m->n = 0;
    put16(m, 0x1234);
    put16(m, 0x8180 | rcode | (tc ? 0x0200 : 0));
    put16(m, 1);
    put16(m, an);
    put16(m, ns);
    put16(m, 0);
    put_name(m, "example.com");
    put16(m, DNS_TYPE_MX);
    put16(m, 1);
}

static void rr_head(struct msg *m, int type, uint32_t ttl, unsigned rdlen)
{
    put16(m, 0xC00C);   /* the question's name, compressed */
    put16(m, (unsigned)type);
    put16(m, 1);
    put32(m, ttl);
    put16(m, rdlen);
}

static void mx(struct msg *m, unsigned pref, const char *host, uint32_t ttl)
{
    struct msg tmp = {.n = 0};
    put_name(&tmp, host);
    rr_head(m, DNS_TYPE_MX, ttl, (unsigned)tmp.n + 2);
    put16(m, pref);
    memcpy(m->b + m->n, tmp.b, tmp.n);
    m->n += tmp.n;
}

static void soa(struct msg *m, uint32_t ttl, uint32_t minimum)
{
    struct msg tmp = {.n = 0};
    put_name(&tmp, "ns.example.com");
    put_name(&tmp, "admin.example.com");
    rr_head(m, 6, ttl, (unsigned)tmp.n + 20);
    memcpy(m->b + m->n, tmp.b, tmp.n);
    m->n += tmp.n;
    put32(m, 1); put32(m, 3600); put32(m, 600); put32(m, 86400); put32(m, minimum);
}

static void test_mx(void)
{
    struct msg m;
    struct dns_answer a;
    header(&m, 0, 2, 0, 0);
    mx(&m, 20, "mx2.example.com", 600);
    mx(&m, 10, "mx1.example.com", 300);
    dns_parse(m.b, m.n, DNS_TYPE_MX, &a);
    CHECK_INT(a.status, DNS_OK);
    CHECK_INT(a.n, 2);
    CHECK_INT(a.ttl, 300);
    CHECK_STR(a.mx[0].host, "mx2.example.com");
    CHECK_INT(a.mx[1].pref, 10);
    uint64_t rng = 1;
    dns_order_mx(&a, &rng);
    CHECK_STR(a.mx[0].host, "mx1.example.com");
}

static void test_null_mx(void)
{
    struct msg m;
    struct dns_answer a;
    header(&m, 0, 1, 0, 0);
    mx(&m, 0, "", 300);
    dns_parse(m.b, m.n, DNS_TYPE_MX, &a);
    CHECK_INT(a.status, DNS_NULL_MX);
    /* "0 ." beside a real MX is not a null MX (RFC 7505 says it must be alone) */
    header(&m, 0, 2, 0, 0);
    mx(&m, 0, "", 300);
    mx(&m, 10, "mx.example.com", 300);
    dns_parse(m.b, m.n, DNS_TYPE_MX, &a);
    CHECK_INT(a.status, DNS_OK);
}

static void test_negative(void)
{
    struct msg m;
    struct dns_answer a;
    header(&m, 3, 0, 1, 0);
    soa(&m, 900, 60);
    dns_parse(m.b, m.n, DNS_TYPE_MX, &a);
    CHECK_INT(a.status, DNS_NXDOMAIN);
    CHECK_INT(a.ttl, 60);          /* min(SOA TTL, MINIMUM) */
    header(&m, 0, 0, 1, 0);
    soa(&m, 30, 600);
    dns_parse(m.b, m.n, DNS_TYPE_MX, &a);
    CHECK_INT(a.status, DNS_NODATA);
    CHECK_INT(a.ttl, 30);
    header(&m, 2, 0, 0, 0);         /* SERVFAIL */
    dns_parse(m.b, m.n, DNS_TYPE_MX, &a);
    CHECK_INT(a.status, DNS_TEMPFAIL);
    header(&m, 0, 1, 0, 1);         /* truncated */
    mx(&m, 10, "mx.example.com", 300);
    dns_parse(m.b, m.n, DNS_TYPE_MX, &a);
    CHECK_INT(a.status, DNS_TEMPFAIL);
    dns_parse(NULL, 0, DNS_TYPE_MX, &a);   /* timeout: no answer at all */
    CHECK_INT(a.status, DNS_TEMPFAIL);
}

static void test_malformed(void)
{
    struct msg m;
    struct dns_answer a;
    header(&m, 0, 1, 0, 0);
    mx(&m, 10, "mx.example.com", 300);
    /* every truncation of a good answer is refused, never read past */
    for (size_t cut = 0; cut < m.n; cut++) {
        dns_parse(m.b, cut, DNS_TYPE_MX, &a);
        CHECK(a.status == DNS_TEMPFAIL || a.status == DNS_NODATA);
    }
    /* a compression pointer to itself */
    header(&m, 0, 1, 0, 0);
    size_t at = m.n;
    put16(&m, 0xC000 | (unsigned)at);
    dns_parse(m.b, m.n, DNS_TYPE_MX, &a);
    CHECK_INT(a.status, DNS_TEMPFAIL);
}

static void test_addresses(void)
{
    struct msg m;
    struct dns_answer a;
    header(&m, 0, 2, 0, 0);
    rr_head(&m, DNS_TYPE_AAAA, 120, 16);
    uint8_t v6[16];
    inet_pton(AF_INET6, "2001:db8::25", v6);
    memcpy(m.b + m.n, v6, 16);
    m.n += 16;
    rr_head(&m, DNS_TYPE_A, 60, 4);     /* not the asked type: skipped */
    put32(&m, 0x7F000002);
    dns_parse(m.b, m.n, DNS_TYPE_AAAA, &a);
    CHECK_INT(a.status, DNS_OK);
    CHECK_INT(a.n, 1);
    CHECK_INT(a.ttl, 120);
    CHECK_INT(a.addr[0].family, AF_INET6);
    CHECK(memcmp(a.addr[0].bytes, v6, 16) == 0);
    dns_parse(m.b, m.n, DNS_TYPE_A, &a);
    CHECK_INT(a.n, 1);
    CHECK_INT(a.addr[0].bytes[3], 2);
}

static void test_equal_shuffle(void)
{
    int first_b = 0;
    uint64_t rng = 42;
    for (int round = 0; round < 200; round++) {
        struct dns_answer a = {.status = DNS_OK, .n = 3};
        a.mx[0].pref = 10; strcpy(a.mx[0].host, "a");
        a.mx[1].pref = 10; strcpy(a.mx[1].host, "b");
        a.mx[2].pref = 5;  strcpy(a.mx[2].host, "c");
        dns_order_mx(&a, &rng);
        CHECK_STR(a.mx[0].host, "c");
        first_b += strcmp(a.mx[1].host, "b") == 0;
    }
    CHECK(first_b > 50 && first_b < 150);   /* both orders, seeded: deterministic */
}

static void test_cache(void)
{
    struct dns_cache_limits lim = {.ttl_min = 10, .ttl_max = 100, .negative_max = 20, .tempfail = 5};
    struct dns_cache *c = dns_cache_new(&lim);
    CHECK(c != NULL);
    struct dns_answer a = {.status = DNS_OK, .ttl = 1000, .n = 1}, out;
    strcpy(a.mx[0].host, "mx.example.com");
    dns_cache_put(c, "Example.COM", DNS_TYPE_MX, &a, 0);
    CHECK_INT(dns_cache_get(c, "example.com", DNS_TYPE_MX, 99000, &out), 1);   /* capped at 100 s */
    CHECK_STR(out.mx[0].host, "mx.example.com");
    CHECK_INT(dns_cache_get(c, "example.com", DNS_TYPE_A, 0, &out), 0);       /* other type */
    CHECK_INT(dns_cache_get(c, "example.com", DNS_TYPE_MX, 100000, &out), 0);  /* expired */
    a.ttl = 1;
    dns_cache_put(c, "floor.example", DNS_TYPE_A, &a, 0);
    CHECK_INT(dns_cache_expiry_ms(c, "floor.example", DNS_TYPE_A), 10000);
    struct dns_answer nx = {.status = DNS_NXDOMAIN, .ttl = 3600};
    dns_cache_put(c, "nx.example", DNS_TYPE_MX, &nx, 0);
    CHECK_INT(dns_cache_expiry_ms(c, "nx.example", DNS_TYPE_MX), 20000);
    CHECK_INT(dns_cache_get(c, "nx.example", DNS_TYPE_MX, 1000, &out), 1);
    CHECK_INT(out.status, DNS_NXDOMAIN);
    struct dns_answer tf = {.status = DNS_TEMPFAIL};
    dns_cache_put(c, "tf.example", DNS_TYPE_MX, &tf, 0);
    CHECK_INT(dns_cache_expiry_ms(c, "tf.example", DNS_TYPE_MX), 5000);
    /* many names: the table grows, all stay findable */
    char name[64];
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof(name), "d%d.example", i);
        dns_cache_put(c, name, DNS_TYPE_MX, &a, 0);
    }
    int found = 0;
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof(name), "d%d.example", i);
        found += dns_cache_get(c, name, DNS_TYPE_MX, 1, &out);
    }
    CHECK_INT(found, 5000);
    CHECK(dns_cache_stats(c)->hits >= 5000);
    dns_cache_free(c);
}

/* A full cache keeps taking answers (the worker reads each one back from
 * it): expired entries make room first, then live ones. */
static void test_cache_full(void)
{
    struct dns_cache_limits lim = {.ttl_min = 10, .ttl_max = 100, .negative_max = 20, .tempfail = 5};
    struct dns_cache *c = dns_cache_new(&lim);
    CHECK(c != NULL);
    struct dns_answer a = {.status = DNS_OK, .ttl = 10, .n = 1}, out;
    strcpy(a.mx[0].host, "mx.example.com");
    char name[64];
    for (int i = 0; i < DNS_CACHE_MAX; i++) {   /* one-off names, all expired by 10 s */
        snprintf(name, sizeof(name), "old%d.example", i);
        dns_cache_put(c, name, DNS_TYPE_MX, &a, 0);
    }
    CHECK_INT(dns_cache_stats(c)->inserts, DNS_CACHE_MAX);
    dns_cache_put(c, "new.example", DNS_TYPE_MX, &a, 20000);
    CHECK_INT(dns_cache_get(c, "new.example", DNS_TYPE_MX, 20001, &out), 1);
    CHECK(dns_cache_stats(c)->expired > 0);
    CHECK_INT(dns_cache_stats(c)->evicted, 0);
    /* full of live entries: one goes, the new answer is kept */
    for (int i = 0; dns_cache_stats(c)->inserts < 2 * (uint64_t)DNS_CACHE_MAX; i++) {
        snprintf(name, sizeof(name), "live%d.example", i);
        dns_cache_put(c, name, DNS_TYPE_MX, &a, 20000);
    }
    uint64_t before = dns_cache_stats(c)->evicted;
    dns_cache_put(c, "newest.example", DNS_TYPE_MX, &a, 21000);
    CHECK_INT(dns_cache_get(c, "newest.example", DNS_TYPE_MX, 21001, &out), 1);
    CHECK(dns_cache_stats(c)->evicted > before);
    int found = 0;   /* the rest of the live ones are still there */
    for (int i = 0; i < 1000; i++) {
        snprintf(name, sizeof(name), "live%d.example", i);
        found += dns_cache_get(c, name, DNS_TYPE_MX, 21001, &out);
    }
    CHECK(found >= 990);
    dns_cache_free(c);
}

int main(void)
{
    RUN(test_mx);
    RUN(test_null_mx);
    RUN(test_negative);
    RUN(test_malformed);
    RUN(test_addresses);
    RUN(test_equal_shuffle);
    RUN(test_cache);
    RUN(test_cache_full);
    return check_finish();
}
