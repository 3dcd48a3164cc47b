/*
 * listen_config.h - the SMTP listener's part of tern's configuration file.
 *
 * DESCRIPTION
 *   Keys (docs/config.md, docs/listener.md):
 *
 *     listen = ADDR:PORT [tls=none|optional|required] [cert=PEM key=PEM]
 *              [cert2=PEM key2=PEM]            # repeatable, LISTEN_MAX
 *     listen_allow = CIDR [CIDR ...]           # repeatable; relay without AUTH
 *     auth_file = PATH                         # user:hash lines (auth.h)
 *     listen_tls_profile = preferred|sufficient|legacy
 *     listen_max_connections = 1000            # all clients together
 *     listen_max_connections_per_ip = 50
 *     listen_max_rcpts = 100                   # per message
 *     listen_max_message_size = 32m            # 0/unset: max_message_size
 *     listen_max_errors = 10                   # then 421 and close
 *     listen_command_timeout = 5m              # waiting for a command
 *     listen_data_timeout = 10m                # between DATA/BDAT bytes
 *     listen_received = yes                    # prepend a Received: header
 *     listen_auth_cache = 5m                   # a verified AUTH is remembered (0: off)
 *
 *   ADDR is an IPv4 address, [IPv6] or "*" (every IPv4 and IPv6
 *   address). tls defaults to optional when a certificate is given, none
 *   otherwise; required needs a certificate. cert2/key2 add a second
 *   certificate of the other key type (ECDSA and RSA): a client that
 *   supports ECDSA gets the ECDSA one.
 *
 * ERRORS
 *   listen_config_apply returns NULL, or a static reason; "unknown key"
 *   when the key is not the listener's. listen_config_finish checks what
 *   needs the whole file.
 *
 * OWNERSHIP
 *   Plain values inside struct tern_config.
 */
#ifndef TERN_ENGINE_LISTEN_CONFIG_H
#define TERN_ENGINE_LISTEN_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "engine/auth.h"

#define LISTEN_MAX        8
#define LISTEN_PATH_MAX   1024

enum listen_tls { LISTEN_TLS_NONE, LISTEN_TLS_OPTIONAL, LISTEN_TLS_REQUIRED };

struct listen_addr {
    struct sockaddr_storage addr;   /* numeric; "*" is [::] dual-stack */
    socklen_t addrlen;
    char text[80];                  /* as written, for logs */
    enum listen_tls tls;
    char cert[LISTEN_PATH_MAX], key[LISTEN_PATH_MAX];
    char cert2[LISTEN_PATH_MAX], key2[LISTEN_PATH_MAX];
};

struct listen_config {
    struct listen_addr addrs[LISTEN_MAX];
    int n;
    struct auth_nets allow;
    char auth_file[LISTEN_PATH_MAX];
    int tls_profile;                /* enum tls_tier: PREFERRED.. LEGACY */
    int max_connections;
    int max_per_ip;
    int max_rcpts;
    int64_t max_message_size;       /* 0: the queue's max_message_size */
    int max_errors;
    int64_t command_timeout_ms;
    int64_t data_timeout_ms;
    int received;                   /* prepend Received: */
    int64_t auth_cache_ms;          /* verified credentials kept (auth_cache.h); 0: off */
    unsigned seen;                  /* single-valued keys already set */
};

void listen_config_defaults(struct listen_config *lc);
const char *listen_config_apply(struct listen_config *lc, const char *key, const char *arg,
                                const char *val);
/* listen_config_finish: after the whole file; NULL or why not. */
const char *listen_config_finish(struct listen_config *lc, int64_t queue_max_size);

#endif
