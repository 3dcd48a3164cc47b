/*
 * fuzz_dns.c - libFuzzer target for dns_parse (engine/dns.h): any bytes,
 * as any question type, give a bounded answer: a known status, at most
 * the kept records (none unless OK or null MX), names NUL-terminated,
 * address families set; and a
 * cache round trip returns the same records.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "engine/dns.h"

static void check(const struct dns_answer *a, int qtype)
{
    if (a->status > DNS_TEMPFAIL)
        abort();
    if (qtype == DNS_TYPE_MX) {
        if (a->n > DNS_MX_MAX)
            abort();
        for (size_t i = 0; i < a->n; i++)
            if (strnlen(a->mx[i].host, DNS_NAME_MAX) == DNS_NAME_MAX)
                abort();
    } else {
        if (a->n > DNS_ADDRS_MAX)
            abort();
        for (size_t i = 0; i < a->n; i++)
            if (a->addr[i].family != (qtype == DNS_TYPE_A ? AF_INET : AF_INET6))
                abort();
    }
    if (a->status != DNS_OK && a->status != DNS_NULL_MX && a->n != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int types[] = {DNS_TYPE_MX, DNS_TYPE_A, DNS_TYPE_AAAA};
    struct dns_cache_limits lim = {.ttl_min = 1, .ttl_max = 10, .negative_max = 10, .tempfail = 1};
    struct dns_cache *c = dns_cache_new(&lim);
    for (size_t t = 0; t < 3; t++) {
        struct dns_answer a, back;
        dns_parse(data, size, types[t], &a);
        check(&a, types[t]);
        if (c == NULL)
            continue;
        dns_cache_put(c, "fuzz.example", types[t], &a, 0);
        if (dns_cache_get(c, "fuzz.example", types[t], 0, &back)) {
            if (back.status != a.status || back.n != a.n)
                abort();
            if (types[t] == DNS_TYPE_MX && memcmp(back.mx, a.mx, a.n * sizeof(a.mx[0])) != 0)
                abort();
        }
        uint64_t rng = size;
        dns_order_mx(&a, &rng);
    }
    dns_cache_free(c);
    return 0;
}
