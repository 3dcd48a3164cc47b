/*
 * fuzz_config.c - libFuzzer target for engine/config.c (with
 * config_net.c and listen_config.c behind it): the input is a
 * configuration file, loaded through a memfd as `tern -c` loads one.
 *
 * Invariants checked (abort on violation): config_load returns 0 or 1;
 * on 0 its error is a non-empty NUL-terminated string within the buffer;
 * on 1 the counts stay within their arrays, every string the lookups
 * return is NUL-terminated within its field, and the lookups (route, pool
 * limits, network settings) answer for a few domains without fault.
 * No crash, no leak, no undefined behaviour (ASan/UBSan).
 *
 * A route's host is resolved at load (getaddrinfo): here only numeric
 * addresses are, so no input makes the fuzzer send a DNS query.
 */
#include <dlfcn.h>
#include <netdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "engine/config.h"

typedef int (*getaddrinfo_fn)(const char *, const char *, const struct addrinfo *,
                              struct addrinfo **);

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res)
{
    static getaddrinfo_fn real;
    if (real == NULL)
        real = (getaddrinfo_fn)dlsym(RTLD_NEXT, "getaddrinfo");
    if (real == NULL)
        return EAI_FAIL;
    struct addrinfo h = {0};
    if (hints)
        h = *hints;
    h.ai_flags |= AI_NUMERICHOST;
    return real(node, service, &h, res);
}

static int fuzz_fd = -1;
static char fuzz_path[64];

static void check_str(const char *s, size_t cap)
{
    if (memchr(s, '\0', cap) == NULL)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    if (fuzz_fd < 0) {
        fuzz_fd = memfd_create("fuzz_config", 0);
        if (fuzz_fd < 0)
            return 0;
        snprintf(fuzz_path, sizeof(fuzz_path), "/proc/self/fd/%d", fuzz_fd);
    }
    if (ftruncate(fuzz_fd, 0) != 0 || (n > 0 && pwrite(fuzz_fd, d, n, 0) != (ssize_t)n))
        return 0;
    static struct tern_config c;
    char err[512];
    memset(err, 0x55, sizeof(err));
    int ok = config_load(&c, fuzz_path, err, sizeof(err));
    if (ok != 0 && ok != 1)
        abort();
    if (!ok) {
        if (memchr(err, '\0', sizeof(err)) == NULL || err[0] == '\0')
            abort();
        return 0;
    }
    if (c.nroutes < 0 || c.nroutes > CONFIG_ROUTES_MAX)
        abort();
    check_str(c.hostname, sizeof(c.hostname));
    check_str(c.redis, sizeof(c.redis));
    static const char *const domains[] = {"example.com", "a.example.com", "x.test", "*", ""};
    for (size_t i = 0; i < sizeof(domains) / sizeof(domains[0]); i++) {
        const struct tern_route *r = config_route(&c, domains[i]);
        if (r != NULL) {
            check_str(r->domain, sizeof(r->domain));
            check_str(r->host, sizeof(r->host));
        }
        struct dest_limits lim;
        config_dest_limits(&c, domains[i], &lim);
        struct net_dest nd;
        config_dest_net(&c, domains[i], &nd);
    }
    return 0;
}
