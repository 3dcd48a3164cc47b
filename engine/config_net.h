/*
 * config_net.h - the routing, DNS, traffic-shaping and egress settings of
 * the configuration file (see docs/config.md), parsed here for config.c.
 *
 *   dns_servers = 127.0.0.1:5353 [::1]:53   # default: /etc/resolv.conf
 *   mx_port = 25                 # port of DNS-routed MX hosts (test/lab)
 *   dns_timeout = 2s             # per try
 *   dns_tries = 3
 *   dns_ttl_min = 5s             # cache floor
 *   dns_ttl_max = 1h             # cache cap
 *   dns_negative_ttl = 5m        # cap for NXDOMAIN / no data / null MX
 *   max_message_rate = 100/s     # per destination
 *   max_connection_rate = 10/s   # per destination
 *   max_message_rate_per_host = 200/s      # per MX host, all workers
 *   max_connection_rate_per_host = 20/s    # per MX host, all workers
 *   source_address = 127.0.0.2 127.0.0.3   # egress pool, round robin
 *   backoff_pattern = "rate limit"         # repeatable
 *   backoff_pause = 30s
 *
 *   and, per destination: destination D = max_message_rate=5/s
 *   max_connection_rate=1/s source_address=127.0.0.2,127.0.0.3
 *
 * OWNERSHIP
 *   Plain values inside struct tern_config; read-only once loaded.
 */
#ifndef TERN_ENGINE_CONFIG_NET_H
#define TERN_ENGINE_CONFIG_NET_H

#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>

#include "engine/shaping.h"

#define NET_SERVERS_MAX   512     /* the dns_servers value */
#define NET_SOURCES_MAX   16      /* egress addresses per pool */
#define NET_PATTERNS_MAX  16
#define NET_PATTERN_MAX   128

/* What a destination gets: global values, then its override. */
struct net_dest {
    struct rate msg_rate, conn_rate;  /* 0: no limit */
    int nsources;                     /* 0: no bind, the kernel chooses */
    struct sockaddr_storage sources[NET_SOURCES_MAX];
};

struct net_config {
    char dns_servers[NET_SERVERS_MAX];  /* "a:p,b:p" for c-ares; "" : resolv.conf */
    int mx_port;
    int64_t dns_timeout_ms;
    int dns_tries;
    int64_t dns_ttl_min_ms, dns_ttl_max_ms, dns_negative_ttl_ms;
    struct net_dest dflt;
    struct rate host_msg_rate, host_conn_rate;
    char backoff_patterns[NET_PATTERNS_MAX][NET_PATTERN_MAX];
    int npatterns;
    int64_t backoff_pause_ms;
    unsigned seen;                    /* keys set once */
};

void config_net_defaults(struct net_config *n);

/* config_net_apply sets one "key = value" line if key is one of ours:
 * *handled = 1 and the reason (NULL: fine). *handled = 0 otherwise. */
const char *config_net_apply(struct net_config *n, const char *key, const char *val,
                             int *handled);

/* config_net_dest_option: one option=value of a destination line. */
const char *config_net_dest_option(struct net_dest *d, const char *opt, const char *val,
                                   int *handled);

/* config_net_merge: global values with an override's (NULL: none). */
void config_net_merge(const struct net_dest *global, const struct net_dest *o,
                      struct net_dest *out);

/* config_net_source_len: the sockaddr length of a source address. */
socklen_t config_net_source_len(const struct sockaddr_storage *ss);

/* config_net_backoff_match: the reply text contains a backoff pattern
 * (case-insensitive). */
int config_net_backoff_match(const struct net_config *n, const char *text);

#endif
