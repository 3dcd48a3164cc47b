/* config_net.c - routing, DNS, shaping and egress settings; see config_net.h. */
#include "engine/config_net.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "engine/config.h"

#define NET_TTL_MAX_S (7 * 86400)

void config_net_defaults(struct net_config *n)
{
    memset(n, 0, sizeof(*n));
    n->mx_port = 25;
    n->dns_timeout_ms = 2000;
    n->dns_tries = 3;
    n->dns_ttl_min_ms = 5000;
    n->dns_ttl_max_ms = 3600000;
    n->dns_negative_ttl_ms = 300000;
    n->backoff_pause_ms = 30000;
}

/* One address ("127.0.0.2", "::1") with port 0 into ss. */
static int parse_source(const char *s, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, s, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        return 1;
    }
    if (inet_pton(AF_INET6, s, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        return 1;
    }
    return 0;
}

socklen_t config_net_source_len(const struct sockaddr_storage *ss)
{
    return ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

/* The address is one of this machine's: a socket can be bound to it. */
static int bindable(const struct sockaddr_storage *ss)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    int ok = bind(fd, (const struct sockaddr *)ss, config_net_source_len(ss)) == 0;
    close(fd);
    return ok;
}

/* A list of addresses separated by spaces or commas. */
static const char *parse_sources(const char *val, struct net_dest *d)
{
    char buf[NET_SERVERS_MAX];
    if (strlen(val) >= sizeof(buf))
        return "value too long";
    memcpy(buf, val, strlen(val) + 1);
    d->nsources = 0;
    for (char *save = NULL, *w = strtok_r(buf, " \t,", &save); w; w = strtok_r(NULL, " \t,", &save)) {
        if (d->nsources >= NET_SOURCES_MAX)
            return "too many source addresses";
        if (!parse_source(w, &d->sources[d->nsources]))
            return "bad source address (an IPv4 or IPv6 address)";
        if (!bindable(&d->sources[d->nsources]))
            return "source address is not an address of this machine (cannot bind)";
        d->nsources++;
    }
    return d->nsources ? NULL : "empty source address list";
}

/* dns_servers: HOST:PORT items (numeric; [v6]:port), to c-ares' CSV. */
static const char *parse_servers(const char *val, char *out, size_t cap)
{
    char buf[NET_SERVERS_MAX];
    if (strlen(val) >= sizeof(buf))
        return "value too long";
    memcpy(buf, val, strlen(val) + 1);
    size_t used = 0;
    out[0] = '\0';
    for (char *save = NULL, *w = strtok_r(buf, " \t,", &save); w; w = strtok_r(NULL, " \t,", &save)) {
        char host[CONFIG_HOST_MAX];
        int port;
        const char *why = NULL;
        unsigned char tmp[16];
        if (!config_split_hostport(w, host, sizeof(host), &port, &why))
            return why;
        int v6 = inet_pton(AF_INET6, host, tmp) == 1;
        if (!v6 && inet_pton(AF_INET, host, tmp) != 1)
            return "a DNS server is a numeric address (127.0.0.1:5353, [::1]:53)";
        int n = snprintf(out + used, cap - used, "%s%s%s%s:%d", used ? "," : "", v6 ? "[" : "",
                         host, v6 ? "]" : "", port ? port : 53);
        if (n < 0 || (size_t)n >= cap - used)
            return "value too long";
        used += (size_t)n;
    }
    return used ? NULL : "no server";
}

static const char *parse_ttl(const char *val, int64_t *out)
{
    if (!config_parse_duration_ms(val, out) || *out > (int64_t)NET_TTL_MAX_S * 1000)
        return "bad duration (e.g. 5s, 1h; at most 7d)";
    return NULL;
}

static const char *parse_pattern(const char *val, struct net_config *n)
{
    size_t len = strlen(val);
    if (len >= 2 && val[0] == '"' && val[len - 1] == '"') {
        val++;
        len -= 2;
    }
    if (len == 0 || len >= NET_PATTERN_MAX)
        return "a pattern is 1..127 characters";
    if (n->npatterns >= NET_PATTERNS_MAX)
        return "too many backoff patterns";
    memcpy(n->backoff_patterns[n->npatterns], val, len);
    n->backoff_patterns[n->npatterns][len] = '\0';
    n->npatterns++;
    return NULL;
}

enum net_key {
    NK_DNS_SERVERS, NK_MX_PORT, NK_DNS_TIMEOUT, NK_DNS_TRIES, NK_TTL_MIN, NK_TTL_MAX,
    NK_TTL_NEG, NK_MSG_RATE, NK_CONN_RATE, NK_HOST_MSG_RATE, NK_HOST_CONN_RATE, NK_SOURCE,
    NK_BACKOFF_PATTERN, NK_BACKOFF_PAUSE, NK_COUNT
};

static const char *const net_keys[NK_COUNT] = {
    "dns_servers", "mx_port", "dns_timeout", "dns_tries", "dns_ttl_min", "dns_ttl_max",
    "dns_negative_ttl", "max_message_rate", "max_connection_rate", "max_message_rate_per_host",
    "max_connection_rate_per_host", "source_address", "backoff_pattern", "backoff_pause",
};

static const char *rate_or(const char *val, struct rate *r)
{
    return rate_parse(val, r) ? NULL : "bad rate (e.g. 100/s, 10/m, 5/h)";
}

const char *config_net_apply(struct net_config *n, const char *key, const char *val,
                             int *handled)
{
    int k = 0;
    while (k < NK_COUNT && strcmp(net_keys[k], key) != 0)
        k++;
    *handled = k < NK_COUNT;
    if (!*handled)
        return NULL;
    if (k != NK_BACKOFF_PATTERN) {
        if (n->seen & (1u << k))
            return "duplicate setting";
        n->seen |= 1u << k;
    }
    switch ((enum net_key)k) {
    case NK_DNS_SERVERS:
        return parse_servers(val, n->dns_servers, sizeof(n->dns_servers));
    case NK_MX_PORT:
        return config_parse_int(val, 1, 65535, &n->mx_port) ? NULL : "bad port";
    case NK_DNS_TIMEOUT:
        return config_parse_duration_ms(val, &n->dns_timeout_ms) && n->dns_timeout_ms >= 10 &&
                       n->dns_timeout_ms <= 60000
                   ? NULL : "bad duration (10ms..60s)";
    case NK_DNS_TRIES:
        return config_parse_int(val, 1, 10, &n->dns_tries) ? NULL : "tries must be 1..10";
    case NK_TTL_MIN:
        return parse_ttl(val, &n->dns_ttl_min_ms);
    case NK_TTL_MAX:
        return parse_ttl(val, &n->dns_ttl_max_ms);
    case NK_TTL_NEG:
        return parse_ttl(val, &n->dns_negative_ttl_ms);
    case NK_MSG_RATE:
        return rate_or(val, &n->dflt.msg_rate);
    case NK_CONN_RATE:
        return rate_or(val, &n->dflt.conn_rate);
    case NK_HOST_MSG_RATE:
        return rate_or(val, &n->host_msg_rate);
    case NK_HOST_CONN_RATE:
        return rate_or(val, &n->host_conn_rate);
    case NK_SOURCE:
        return parse_sources(val, &n->dflt);
    case NK_BACKOFF_PATTERN:
        return parse_pattern(val, n);
    case NK_BACKOFF_PAUSE:
        return config_parse_duration_ms(val, &n->backoff_pause_ms) ? NULL : "bad duration";
    case NK_COUNT:
        break;
    }
    return "internal: unhandled key";
}

const char *config_net_dest_option(struct net_dest *d, const char *opt, const char *val,
                                   int *handled)
{
    *handled = 1;
    if (strcmp(opt, "max_message_rate") == 0)
        return rate_or(val, &d->msg_rate);
    if (strcmp(opt, "max_connection_rate") == 0)
        return rate_or(val, &d->conn_rate);
    if (strcmp(opt, "source_address") == 0)
        return parse_sources(val, d);
    *handled = 0;
    return NULL;
}

void config_net_merge(const struct net_dest *global, const struct net_dest *o,
                      struct net_dest *out)
{
    *out = *global;
    if (o == NULL)
        return;
    if (o->msg_rate.per_sec > 0)
        out->msg_rate = o->msg_rate;
    if (o->conn_rate.per_sec > 0)
        out->conn_rate = o->conn_rate;
    if (o->nsources) {
        out->nsources = o->nsources;
        memcpy(out->sources, o->sources, sizeof(out->sources));
    }
}

int config_net_backoff_match(const struct net_config *n, const char *text)
{
    for (int i = 0; i < n->npatterns; i++)
        if (strcasestr(text, n->backoff_patterns[i]) != NULL)
            return 1;
    return 0;
}
