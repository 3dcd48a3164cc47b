/* resolver.c - next hops from the static route table; see resolver.h. */
#include "engine/resolver.h"

#include <string.h>

size_t resolver_lookup(const struct resolver *r, const char *domain,
                       struct nexthop *out, size_t max, const char **why)
{
    const struct tern_route *rt = config_route(r->cfg, domain);
    if (rt == NULL) {
        *why = "no route for domain";
        return 0;
    }
    if (max == 0)
        return 0;
    memset(&out[0], 0, sizeof(out[0]));
    memcpy(out[0].host, rt->host, sizeof(out[0].host));
    out[0].addr = rt->addr;
    out[0].addrlen = rt->addrlen;
    out[0].port = rt->port;
    out[0].host_slot = rt->host_slot;
    return 1;
}
