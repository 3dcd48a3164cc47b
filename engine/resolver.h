/*
 * resolver.h - where mail for a domain goes: the next hops to try.
 *
 * DESCRIPTION
 *   The static half of routing: next hops from the route table in the
 *   configuration (route DOMAIN = HOST:PORT, parent domains, then "*"),
 *   resolved when the configuration is loaded, so a lookup never blocks.
 *   A domain with no static route is routed through DNS by its worker
 *   (engine/worker_dns.c: MX, A and AAAA with c-ares on the worker's ring),
 *   which fills the same struct nexthop.
 *
 * OWNERSHIP
 *   struct nexthop is a value copied into the caller's array.
 */
#ifndef TERN_ENGINE_RESOLVER_H
#define TERN_ENGINE_RESOLVER_H

#include <stddef.h>

#include "engine/config.h"

#define RESOLVER_NEXTHOPS_MAX 8

struct nexthop {
    char host[CONFIG_HOST_MAX];     /* MX host name (or address as written) */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    uint16_t port;
    int host_slot;                  /* shared per-host counter index: < CONFIG_ROUTES_MAX for
                                       static routes, then DNS hosts by hash (worker.h) */
};

struct resolver {
    const struct tern_config *cfg;
};

/* resolver_lookup fills up to max next hops for domain, best first, and
 * returns how many; 0 with *why set when there is no route. */
size_t resolver_lookup(const struct resolver *r, const char *domain,
                       struct nexthop *out, size_t max, const char **why);

#endif
