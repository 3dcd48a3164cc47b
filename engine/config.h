/*
 * config.h - tern's configuration file: one file, validated up front.
 *
 * FORMAT
 *   Lines of "key = value"; '#' starts a comment; blank lines are ignored.
 *   A key may take one argument before the '=':
 *
 *     hostname = tern.example.net          # EHLO name and listener name
 *     threads = 2                          # worker threads (0: one per core)
 *     redis = unix:run/redis.sock          # or HOST:PORT
 *     partitions = 16
 *     route example.com = 127.0.0.1:2525   # next hop for a domain
 *     route * = 127.0.0.1:2525             # the default route
 *     tls = may                            # the default policy entry
 *     policy partner.example = secure match=mx.partner.example min=1.2
 *     destination big.example = max_connections=50 idle=10s
 *     ca_file = /etc/ssl/certs/ca-certificates.crt
 *     timeout connect = 30s                # see struct tern_timeouts
 *     max_connections = 20                 # per destination
 *     ...
 *
 *   Durations take a unit suffix (ms, s, m, h, d); a bare number means
 *   seconds. Sizes take k, m, g (KiB, MiB, GiB). Every key is listed in
 *   docs/config.md and in the table in config.c.
 *
 * ERRORS
 *   config_load() returns 0 and writes "FILE:LINE: reason" into err for the
 *   first problem: unknown key, bad value, missing '=', duplicate setting,
 *   a route whose host cannot be resolved, a line over CONFIG_LINE_MAX.
 *
 * OWNERSHIP
 *   struct tern_config is a plain value filled by config_load and never
 *   changed afterwards; workers read it concurrently without locks.
 */
#ifndef TERN_ENGINE_CONFIG_H
#define TERN_ENGINE_CONFIG_H

#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>

#include "queue/queue.h"
#include "engine/policy.h"
#include "engine/smtp_client.h"
#include "engine/listen_config.h"
#include "engine/config_net.h"

#define CONFIG_LINE_MAX    4096
#define CONFIG_ROUTES_MAX  1024
#define CONFIG_PATH_MAX    1024
#define CONFIG_HOST_MAX    256
#define CONFIG_DESTS_MAX   1024    /* destination override lines */
#define CONFIG_TLS_CTX_MAX 16      /* distinct (ca_file, cert, key) sets */
#define CONFIG_RETRY_STEPS_MAX 32  /* retry_schedule entries */
#define CONFIG_SCHEDULE_TEXT_MAX 512
#define CONFIG_TXNS_IN_FLIGHT_DEFAULT 4   /* max_transactions_in_flight */
/* max_bytes_in_memory unset: this much per worker (bench/README.md,
 * "Optimisations": 32 MiB per worker kept Redis's CPU lowest in `large`). */
#define CONFIG_WORKER_BYTES_IN_MEMORY_DEFAULT (32LL * 1024 * 1024)

/* RFC 5321 section 4.5.3.2 defaults, in milliseconds. */
struct tern_timeouts {
    int64_t connect;   /* TCP connect: 30 s (not in the RFC) */
    int64_t greeting;  /* initial 220: 5 min */
    int64_t command;   /* EHLO, STARTTLS, MAIL, RCPT, RSET, QUIT: 5 min */
    int64_t tls;       /* TLS handshake: 5 min */
    int64_t data;      /* DATA initiation (354): 2 min */
    int64_t block;     /* each data block sent: 3 min */
    int64_t final;     /* reply to the final dot: 10 min */
    int64_t idle;      /* an idle pooled connection is closed after: 5 s */
    int64_t ehlo;      /* EHLO/HELO reply; 0: as command */
    int64_t mail;      /* MAIL reply: 5 min; 0: as command */
    int64_t rcpt;      /* each RCPT reply: 5 min; 0: as command */
};

/* A next hop: where mail for a domain goes. */
struct tern_route {
    char domain[CONFIG_HOST_MAX];     /* "example.com", or "*" */
    char host[CONFIG_HOST_MAX];       /* as written; used for SNI */
    struct sockaddr_storage addr;     /* resolved at load time */
    socklen_t addrlen;
    uint16_t port;
    int host_slot;                    /* the first route with this host:port */
};

/* Connection pool limits for a destination: the global values, then a
 * `destination DOMAIN = ...` override (matched like the policy table). */
struct dest_limits {
    int max_connections;              /* per destination */
    int max_connections_per_host;     /* per MX host:port, all destinations */
    int max_messages_per_connection;
    int64_t idle_ms;                  /* idle pooled connection closed after */
    int max_txns_in_flight;           /* pipelined transactions per connection
                                         (PIPELINING + CHUNKING peers) */
};

struct dest_override {
    char domain[CONFIG_HOST_MAX];     /* first: "example.com", ".example.com", "*" */
    struct dest_limits set;           /* 0 / -1: not set, use the global */
    struct net_dest net;              /* rates, egress (config_net.h) */
};

/* One TLS client context the workers build: the trust store and client
 * certificate a set of policy entries use. Index 0 is the global one. */
struct tls_ctx_spec {
    char ca_file[CONFIG_PATH_MAX];    /* "" : system bundle */
    char cert_file[CONFIG_PATH_MAX];  /* "" : none */
    char key_file[CONFIG_PATH_MAX];
};

#define CONFIG_RECV_BUFFERS_MAX 32768   /* the kernel's ring limit is 65536 */

struct tern_config {
    char path[CONFIG_PATH_MAX];
    char hostname[SMTP_HELO_NAME_MAX + 1];
    int threads;                      /* resolved: >= 1 */
    char redis[CONFIG_PATH_MAX];      /* "unix:/path" or "host:port" */
    int64_t redis_wait_ms;            /* `tern run --drain` waits this long for Redis at start */
    int64_t idle_poll_ms;             /* an empty partition's next take, without a notice */
    int recv_multishot;               /* SMTP receives from a provided buffer ring (default 1) */
    int recv_buffers;                 /* that ring's buffers per worker (<= CONFIG_RECV_BUFFERS_MAX) */
    struct queue_config queue;
    struct policy_table policy;       /* `tls = ` sets the default entry */
    struct tls_ctx_spec tls_ctx[CONFIG_TLS_CTX_MAX];
    int ntls_ctx;
    int tls_resumption;               /* offer cached sessions (default 1) */
    int share_connections;            /* destinations on one site share connections (default 1) */
    int policy_default_set;           /* `tls =` or `policy * =` seen */
    char ca_file[CONFIG_PATH_MAX];    /* "" : system bundle */
    char client_cert[CONFIG_PATH_MAX];
    char client_key[CONFIG_PATH_MAX];
    struct tern_timeouts timeouts;
    struct dest_limits limits;        /* global pool limits */
    struct dest_override dest_overrides[CONFIG_DESTS_MAX];
    int ndest_overrides;
    int batch;                        /* messages per take */
    int max_in_memory;                /* messages held per worker */
    int max_rcpts_per_txn;            /* recipients per SMTP transaction */
    int min_data_rate;                /* bytes/s while sending a body; 0: off */
    int max_messages_in_memory;       /* whole engine (0: unset); sets max_in_memory */
    int64_t max_bytes_in_memory;      /* body bytes the whole engine holds (0: unset) */
    int64_t max_bytes_in_memory_worker; /* derived: max_bytes_in_memory / threads */
    int64_t retry_base_ms;            /* first retry delay; doubles */
    int64_t retry_max_ms;
    int64_t max_age_ms;               /* deferred longer than this: bounce */
    /* retry_schedule: the delay after attempt n is retry_schedule_ms[n],
     * the last one repeating; nretry_schedule 0: retry_base doubling */
    char retry_schedule_text[CONFIG_SCHEDULE_TEXT_MAX];
    int64_t retry_schedule_ms[CONFIG_RETRY_STEPS_MAX];
    int nretry_schedule;
    int64_t delay_warning_ms;         /* deferred this long: warn the sender once (0: off) */
    int64_t tier_memory_ms;           /* how long a fallback tier is remembered */
    int64_t destination_forget_ms;    /* a destination unused this long is freed (0: never) */
    struct tern_route routes[CONFIG_ROUTES_MAX];
    int nroutes;
    struct listen_config listen;      /* the SMTP listener (listen_config.h) */
    struct net_config net;            /* DNS, shaping, egress (config_net.h) */
};

/* config_defaults fills every default (no routes). */
void config_defaults(struct tern_config *c);

/* config_load reads and validates path into *c (defaults first). */
int config_load(struct tern_config *c, const char *path, char *err, size_t errlen);

/* config_route finds the route for a domain: exact match (case-
 * insensitive), then parent domains, then "*". NULL if none. */
const struct tern_route *config_route(const struct tern_config *c, const char *domain);

/* config_dest_limits: the pool limits for a next-hop domain. */
void config_dest_limits(const struct tern_config *c, const char *domain, struct dest_limits *out);

/* config_dest_net: rates and egress addresses for a next-hop domain. */
void config_dest_net(const struct tern_config *c, const char *domain, struct net_dest *out);

/* Parsers shared with the CLI; 1 on success. config_parse_int: a whole
 * decimal string in lo..hi. config_split_hostport: "host:port",
 * "[v6]:port", "host", "[v6]" or a bare IPv6 address into host (cap bytes)
 * and port (0 when absent); *why says what was wrong. */
int config_parse_int(const char *s, long lo, long hi, int *out);
int config_split_hostport(const char *v, char *host, size_t cap, int *port, const char **why);
int config_parse_duration_ms(const char *s, int64_t *out);
int config_parse_size(const char *s, int64_t *out);

#endif
