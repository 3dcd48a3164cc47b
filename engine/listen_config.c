/* listen_config.c - the listener's configuration keys; see listen_config.h. */
#include "engine/listen_config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "engine/config.h"
#include "engine/text.h"
#include "tls/tls.h"

#define LISTEN_WORD_MAX 1100

void listen_config_defaults(struct listen_config *lc)
{
    memset(lc, 0, sizeof(*lc));
    lc->tls_profile = TLS_TIER_PREFERRED;
    lc->max_connections = 1000;
    lc->max_per_ip = 50;
    lc->max_rcpts = 100;
    lc->max_errors = 10;
    lc->command_timeout_ms = 300000;
    lc->data_timeout_ms = 600000;
    lc->received = 1;
    lc->auth_cache_ms = 300000;
}

/* "127.0.0.1:2525", "[::1]:2525", "*:2525" into a numeric address. */
static const char *parse_listen_addr(struct listen_addr *a, const char *w, size_t n)
{
    char text[sizeof(a->text)], host[64];
    int port;
    const char *why = "bad address";
    if (!text_copy_n(text, sizeof(text), w, n) ||
        !config_split_hostport(text, host, sizeof(host), &port, &why))
        return why;
    if (port == 0)
        return "expected ADDR:PORT";
    memcpy(a->text, text, n + 1);
    memset(&a->addr, 0, sizeof(a->addr));
    struct sockaddr_in *v4 = (struct sockaddr_in *)&a->addr;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&a->addr;
    if (strcmp(host, "*") == 0) {
        v6->sin6_family = AF_INET6;
        v6->sin6_addr = in6addr_any;
        v6->sin6_port = htons((uint16_t)port);
        a->addrlen = sizeof(*v6);
    } else if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        a->addrlen = sizeof(*v4);
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        a->addrlen = sizeof(*v6);
    } else {
        return "listen address must be numeric (or *)";
    }
    return NULL;
}

static const char *listen_option(struct listen_addr *a, const char *w, size_t n)
{
    const char *eq = memchr(w, '=', n);
    if (eq == NULL)
        return "expected option=value (tls, cert, key, cert2, key2)";
    size_t kl = (size_t)(eq - w), vl = n - kl - 1;
    const char *v = eq + 1;
    char *dst = NULL;
    if (kl == 3 && memcmp(w, "tls", 3) == 0) {
        if (vl == 4 && memcmp(v, "none", 4) == 0)
            a->tls = LISTEN_TLS_NONE;
        else if (vl == 8 && memcmp(v, "optional", 8) == 0)
            a->tls = LISTEN_TLS_OPTIONAL;
        else if (vl == 8 && memcmp(v, "required", 8) == 0)
            a->tls = LISTEN_TLS_REQUIRED;
        else
            return "tls must be none, optional or required";
        return NULL;
    }
    if (kl == 4 && memcmp(w, "cert", 4) == 0)
        dst = a->cert;
    else if (kl == 3 && memcmp(w, "key", 3) == 0)
        dst = a->key;
    else if (kl == 5 && memcmp(w, "cert2", 5) == 0)
        dst = a->cert2;
    else if (kl == 4 && memcmp(w, "key2", 4) == 0)
        dst = a->key2;
    else
        return "unknown listen option (tls, cert, key, cert2, key2)";
    return text_copy_n(dst, LISTEN_PATH_MAX, v, vl) ? NULL : "bad file name";
}

/* Next space-separated word of (*p); its length, 0 at the end. */
static size_t next_word(const char **p, const char **w)
{
    while (**p == ' ' || **p == '\t')
        (*p)++;
    *w = *p;
    while (**p && **p != ' ' && **p != '\t')
        (*p)++;
    return (size_t)(*p - *w);
}

static const char *apply_listen(struct listen_config *lc, const char *val)
{
    if (lc->n >= LISTEN_MAX)
        return "too many listen lines";
    struct listen_addr *a = &lc->addrs[lc->n];
    memset(a, 0, sizeof(*a));
    a->tls = -1;
    const char *p = val, *w;
    size_t n = next_word(&p, &w);
    const char *why = parse_listen_addr(a, w, n);
    while (why == NULL && (n = next_word(&p, &w)) > 0)
        why = n < LISTEN_WORD_MAX ? listen_option(a, w, n) : "option too long";
    if (why)
        return why;
    if (!a->cert[0] != !a->key[0] || !a->cert2[0] != !a->key2[0])
        return "cert and key (cert2 and key2) go together";
    if (a->cert2[0] && !a->cert[0])
        return "cert2 needs cert";
    if ((int)a->tls == -1)
        a->tls = a->cert[0] ? LISTEN_TLS_OPTIONAL : LISTEN_TLS_NONE;
    if (a->tls != LISTEN_TLS_NONE && !a->cert[0])
        return "tls=optional/required needs cert= and key=";
    lc->n++;
    return NULL;
}

static const char *apply_allow(struct listen_config *lc, const char *val)
{
    const char *p = val, *w;
    size_t n;
    while ((n = next_word(&p, &w)) > 0) {
        if (lc->allow.n >= AUTH_NETS_MAX)
            return "too many listen_allow networks";
        if (!auth_cidr_parse(w, n, &lc->allow.net[lc->allow.n]))
            return "bad network (e.g. 192.0.2.0/24, 2001:db8::/32; no host bits past the prefix)";
        lc->allow.n++;
    }
    return NULL;
}

enum { SEEN_AUTH, SEEN_PROFILE, SEEN_MAXC, SEEN_PERIP, SEEN_RCPTS, SEEN_SIZE, SEEN_ERRORS,
       SEEN_CMD_TO, SEEN_DATA_TO, SEEN_RECEIVED, SEEN_AUTH_CACHE };

static const char *apply_single(struct listen_config *lc, int bit, const char *val)
{
    if (lc->seen & (1u << bit))
        return "duplicate setting";
    lc->seen |= 1u << bit;
    int64_t v64;
    switch (bit) {
    case SEEN_AUTH:
        return text_copy_n(lc->auth_file, sizeof(lc->auth_file), val, strlen(val)) ? NULL
                                                                                : "value too long";
    case SEEN_PROFILE:
        if (strcmp(val, "preferred") == 0)
            lc->tls_profile = TLS_TIER_PREFERRED;
        else if (strcmp(val, "sufficient") == 0)
            lc->tls_profile = TLS_TIER_SUFFICIENT;
        else if (strcmp(val, "legacy") == 0)
            lc->tls_profile = TLS_TIER_LEGACY;
        else
            return "must be preferred, sufficient or legacy";
        return NULL;
    case SEEN_MAXC:
        return config_parse_int(val, 1, 1000000, &lc->max_connections) ? NULL : "must be 1..1000000";
    case SEEN_PERIP:
        return config_parse_int(val, 1, 1000000, &lc->max_per_ip) ? NULL : "must be 1..1000000";
    case SEEN_RCPTS:
        return config_parse_int(val, 1, QUEUE_RCPTS_MAX, &lc->max_rcpts) ? NULL : "must be 1..1000";
    case SEEN_ERRORS:
        return config_parse_int(val, 1, 1000, &lc->max_errors) ? NULL : "must be 1..1000";
    case SEEN_SIZE:
        if (!config_parse_size(val, &v64) || (v64 != 0 && v64 < 1024))
            return "bad size (use e.g. 10m; at least 1k)";
        lc->max_message_size = v64;
        return NULL;
    case SEEN_CMD_TO:
    case SEEN_DATA_TO:
        if (!config_parse_duration_ms(val, &v64) || v64 == 0)
            return "bad duration (use e.g. 30s, 5m)";
        *(bit == SEEN_CMD_TO ? &lc->command_timeout_ms : &lc->data_timeout_ms) = v64;
        return NULL;
    case SEEN_AUTH_CACHE:
        if (!config_parse_duration_ms(val, &v64) || v64 > 86400000)
            return "bad duration (0 for off, at most 1d; e.g. 5m)";
        lc->auth_cache_ms = v64;
        return NULL;
    case SEEN_RECEIVED:
        if (strcmp(val, "yes") == 0)
            lc->received = 1;
        else if (strcmp(val, "no") == 0)
            lc->received = 0;
        else
            return "must be yes or no";
        return NULL;
    }
    return "unknown key";
}

const char *listen_config_apply(struct listen_config *lc, const char *key, const char *arg,
                                const char *val)
{
    static const struct { const char *name; int bit; } singles[] = {
        {"auth_file", SEEN_AUTH},
        {"listen_tls_profile", SEEN_PROFILE},
        {"listen_max_connections", SEEN_MAXC},
        {"listen_max_connections_per_ip", SEEN_PERIP},
        {"listen_max_rcpts", SEEN_RCPTS},
        {"listen_max_message_size", SEEN_SIZE},
        {"listen_max_errors", SEEN_ERRORS},
        {"listen_command_timeout", SEEN_CMD_TO},
        {"listen_data_timeout", SEEN_DATA_TO},
        {"listen_received", SEEN_RECEIVED},
        {"listen_auth_cache", SEEN_AUTH_CACHE},
    };
    int is_listen = strcmp(key, "listen") == 0, is_allow = strcmp(key, "listen_allow") == 0;
    int bit = -1;
    for (size_t i = 0; i < sizeof(singles) / sizeof(singles[0]); i++)
        if (strcmp(singles[i].name, key) == 0)
            bit = singles[i].bit;
    if (!is_listen && !is_allow && bit < 0)
        return "unknown key";
    if (arg)
        return "this key takes no argument";
    if (*val == '\0')
        return "empty value";
    if (is_listen)
        return apply_listen(lc, val);
    if (is_allow)
        return apply_allow(lc, val);
    return apply_single(lc, bit, val);
}

const char *listen_config_finish(struct listen_config *lc, int64_t queue_max_size)
{
    if (lc->max_message_size == 0 || lc->max_message_size > queue_max_size)
        lc->max_message_size = queue_max_size;
    if (lc->n == 0)
        return NULL;
    int any_tls = 0;
    for (int i = 0; i < lc->n; i++)
        any_tls |= lc->addrs[i].tls != LISTEN_TLS_NONE;
    if (lc->allow.n == 0 && lc->auth_file[0] == '\0')
        return "listen: nobody may relay (set listen_allow, auth_file, or both)";
    if (lc->auth_file[0] && !any_tls)
        return "auth_file: AUTH is only offered over TLS, and no listen line has a cert";
    return NULL;
}
