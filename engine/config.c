/* config.c - load and validate tern's configuration file; see config.h. */
#include "engine/config.h"

#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

void config_defaults(struct tern_config *c)
{
    memset(c, 0, sizeof(*c));
    if (gethostname(c->hostname, sizeof(c->hostname) - 1) != 0 || c->hostname[0] == '\0')
        snprintf(c->hostname, sizeof(c->hostname), "localhost");
    c->threads = 0;
    snprintf(c->redis, sizeof(c->redis), "127.0.0.1:6379");
    queue_config_defaults(&c->queue);
    c->policy.fallback.level = POLICY_MAY;
    c->policy.fallback.client_cert = 1;
    snprintf(c->policy.fallback.domain, sizeof(c->policy.fallback.domain), "*");
    c->tls_resumption = 1;
    c->share_connections = 1;
    c->timeouts = (struct tern_timeouts){
        .connect = 30000, .greeting = 300000, .command = 300000,
        .tls = 300000, .data = 120000, .block = 180000, .final = 600000,
        .idle = 5000,
    };
    c->limits = (struct dest_limits){
        .max_connections = 20, .max_connections_per_host = 100,
        .max_messages_per_connection = 10000, .idle_ms = 5000,
        .max_txns_in_flight = CONFIG_TXNS_IN_FLIGHT_DEFAULT,
    };
    c->batch = 256;
    c->max_in_memory = 8192;
    c->max_rcpts_per_txn = SMTP_MAX_RCPTS_PER_TXN;
    c->min_data_rate = 1024;
    c->retry_base_ms = 300000;        /* 5m 10m 20m 40m 80m 160m 4h 4h ... */
    c->retry_max_ms = 4 * 3600000;
    c->max_age_ms = 5LL * 86400 * 1000;
    c->tier_memory_ms = 3600000;
    c->destination_forget_ms = 600000;
    c->redis_wait_ms = 60000;
    c->idle_poll_ms = 1000;
    c->recv_multishot = 1;
    c->recv_buffers = 1024;
    listen_config_defaults(&c->listen);
    config_net_defaults(&c->net);
}

struct unit_suffix {
    const char *suffix;   /* "" for a bare number */
    int64_t mul;
};

/* A non-negative integer followed by one of the suffixes (compared without
 * case), scaled without overflow. */
static int parse_scaled(const char *s, const struct unit_suffix *u, size_t n, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || errno || v < 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (strcasecmp(end, u[i].suffix) == 0) {
            if (v > INT64_MAX / u[i].mul)
                return 0;
            *out = v * u[i].mul;
            return 1;
        }
    }
    return 0;
}

int config_parse_duration_ms(const char *s, int64_t *out)
{
    static const struct unit_suffix u[] = {
        {"", 1000}, {"s", 1000}, {"ms", 1}, {"m", 60000}, {"h", 3600000}, {"d", 86400000},
    };
    return parse_scaled(s, u, sizeof(u) / sizeof(u[0]), out);
}

int config_parse_size(const char *s, int64_t *out)
{
    static const struct unit_suffix u[] = {
        {"", 1}, {"k", 1024}, {"m", 1024 * 1024}, {"g", 1024LL * 1024 * 1024},
    };
    return parse_scaled(s, u, sizeof(u) / sizeof(u[0]), out);
}

int config_parse_int(const char *s, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end != '\0' || errno || v < lo || v > hi)
        return 0;
    *out = (int)v;
    return 1;
}

static int copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap)
        return 0;
    memcpy(dst, src, n + 1);
    return 1;
}

int config_split_hostport(const char *v, char *host, size_t cap, int *port, const char **why)
{
    const char *h = v, *p = NULL;
    size_t hl;
    if (v[0] == '[') {
        const char *rb = strchr(v, ']');
        if (rb == NULL || (rb[1] != '\0' && rb[1] != ':')) { *why = "bad [address]:port"; return 0; }
        h = v + 1;
        hl = (size_t)(rb - h);
        p = rb[1] == ':' ? rb + 2 : NULL;
    } else {
        /* one colon: host:port; none, or several (a bare IPv6 address): no port */
        const char *colon = strchr(v, ':');
        int one = colon != NULL && strchr(colon + 1, ':') == NULL;
        hl = one ? (size_t)(colon - v) : strlen(v);
        p = one ? colon + 1 : NULL;
    }
    if (hl == 0 || hl >= cap) { *why = "bad host"; return 0; }
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = 0;
    if (p && !config_parse_int(p, 1, 65535, port)) { *why = "bad port"; return 0; }
    return 1;
}

/* "host:port" or "[v6]:port" -> resolved numeric address. */
static int parse_hostport(const char *v, struct tern_route *r, const char **why)
{
    char host[CONFIG_HOST_MAX];
    int port;
    if (!config_split_hostport(v, host, sizeof(host), &port, why))
        return 0;
    if (port == 0) { *why = "expected HOST:PORT"; return 0; }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_ADDRCONFIG}, *res;
    char portstr[8];
    snprintf(portstr, sizeof(portstr), "%d", port);
    /* Routes are resolved once at load time; real MX lookups belong to the
     * resolver (engine/resolver.h) and will not block. */
    if (getaddrinfo(host, portstr, &hints, &res) != 0 || res == NULL) {
        *why = "cannot resolve route host";
        return 0;
    }
    memcpy(&r->addr, res->ai_addr, res->ai_addrlen);
    r->addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    copy_str(r->host, sizeof(r->host), host);
    r->port = (uint16_t)port;
    return 1;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

enum key_kind {
    K_STR, K_INT, K_BOOL, K_DURATION, K_SIZE, K_TLS, K_THREADS, K_PARTITIONS,
    K_ROUTE, K_TIMEOUT, K_POLICY, K_DEST,     /* these take an argument */
};

struct key_def {
    const char *name;
    enum key_kind kind;
    size_t off;          /* offset into struct tern_config */
    size_t size;         /* for K_STR */
    long lo, hi;         /* for K_INT */
};

#define F(field) offsetof(struct tern_config, field)
static const struct key_def keys[] = {
    {"hostname", K_STR, F(hostname), sizeof(((struct tern_config *)0)->hostname), 0, 0},
    {"threads", K_THREADS, F(threads), 0, 0, 256},
    {"redis", K_STR, F(redis), CONFIG_PATH_MAX, 0, 0},
    {"partitions", K_PARTITIONS, 0, 0, 1, QUEUE_PARTITIONS_MAX},
    {"tls", K_TLS, 0, 0, 0, 0},
    {"ca_file", K_STR, F(ca_file), CONFIG_PATH_MAX, 0, 0},
    {"client_cert", K_STR, F(client_cert), CONFIG_PATH_MAX, 0, 0},
    {"client_key", K_STR, F(client_key), CONFIG_PATH_MAX, 0, 0},
    {"tls_resumption", K_BOOL, F(tls_resumption), 0, 0, 0},
    {"share_connections", K_BOOL, F(share_connections), 0, 0, 0},
    {"max_connections", K_INT, F(limits.max_connections), 0, 1, 100000},
    {"max_connections_per_host", K_INT, F(limits.max_connections_per_host), 0, 1, 100000},
    {"max_messages_per_connection", K_INT, F(limits.max_messages_per_connection), 0, 1, 100000000},
    {"batch", K_INT, F(batch), 0, 1, QUEUE_TAKE_MAX},
    {"max_in_memory", K_INT, F(max_in_memory), 0, 1, 10000000},
    {"max_recipients_per_transaction", K_INT, F(max_rcpts_per_txn), 0, 1, SMTP_MAX_RCPTS_PER_TXN},
    {"max_transactions_in_flight", K_INT, F(limits.max_txns_in_flight), 0, 1, SMTP_PIPELINE_MAX},
    {"min_data_rate", K_INT, F(min_data_rate), 0, 0, 1000000000},
    {"max_messages_in_memory", K_INT, F(max_messages_in_memory), 0, 1, 100000000},
    {"retry_base", K_DURATION, F(retry_base_ms), 0, 0, 0},
    {"retry_max", K_DURATION, F(retry_max_ms), 0, 0, 0},
    {"max_age", K_DURATION, F(max_age_ms), 0, 0, 0},
    {"retry_schedule", K_STR, F(retry_schedule_text), CONFIG_SCHEDULE_TEXT_MAX, 0, 0},
    {"delay_warning", K_DURATION, F(delay_warning_ms), 0, 0, 0},
    {"events_maxlen", K_INT, F(queue.events_maxlen), 0, QUEUE_EVENTS_MAXLEN_MIN, 1000000000},
    {"events_queued", K_BOOL, F(queue.events_queued), 0, 0, 0},
    {"tier_memory", K_DURATION, F(tier_memory_ms), 0, 0, 0},
    {"destination_forget", K_DURATION, F(destination_forget_ms), 0, 0, 0},
    {"redis_wait", K_DURATION, F(redis_wait_ms), 0, 0, 0},
    {"idle_poll", K_DURATION, F(idle_poll_ms), 0, 0, 0},
    {"recv_multishot", K_BOOL, F(recv_multishot), 0, 0, 0},
    {"recv_buffers", K_INT, F(recv_buffers), 0, 1, CONFIG_RECV_BUFFERS_MAX},
    {"lease", K_DURATION, 0, 0, 0, 0},
    {"max_message_size", K_SIZE, F(queue.max_message_size), 0, 0, 0},
    {"max_bytes_in_memory", K_SIZE, F(max_bytes_in_memory), 0, 0, 0},
    {"route", K_ROUTE, 0, 0, 0, 0},
    {"timeout", K_TIMEOUT, 0, 0, 0, 0},
    {"policy", K_POLICY, 0, 0, 0, 0},
    {"destination", K_DEST, 0, 0, 0, 0},
};
#undef F

static const struct { const char *name; size_t off; } timeout_names[] = {
    {"connect", offsetof(struct tern_timeouts, connect)},
    {"greeting", offsetof(struct tern_timeouts, greeting)},
    {"command", offsetof(struct tern_timeouts, command)},
    {"tls", offsetof(struct tern_timeouts, tls)},
    {"data", offsetof(struct tern_timeouts, data)},
    {"block", offsetof(struct tern_timeouts, block)},
    {"final", offsetof(struct tern_timeouts, final)},
    {"idle", offsetof(struct tern_timeouts, idle)},
    {"ehlo", offsetof(struct tern_timeouts, ehlo)},
    {"mail", offsetof(struct tern_timeouts, mail)},
    {"rcpt", offsetof(struct tern_timeouts, rcpt)},
};

static int valid_domain_arg(const char *d)
{
    if (strcmp(d, "*") == 0)
        return 1;
    size_t n = strlen(d);
    if (n == 0 || n >= CONFIG_HOST_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)d[i];
        if (!(isalnum(ch) || ch == '-' || ch == '.' || ch == '_'))
            return 0;
    }
    return 1;
}

/* Domain keys of the policy and destination tables: "example.com",
 * ".example.com" (subdomains) or "*". */
static int valid_table_domain(const char *d)
{
    return valid_domain_arg(d[0] == '.' && d[1] ? d + 1 : d);
}

#define DETAIL_MAX 256   /* room for a reason built at parse time */

static const char *set_policy(struct tern_config *c, const char *domain, const char *val,
                              char *detail)
{
    if (!valid_table_domain(domain))
        return "bad policy domain (example.com, .example.com or *)";
    struct policy_table *t = &c->policy;
    struct policy_entry *e;
    if (strcmp(domain, "*") == 0) {
        if (c->policy_default_set)
            return "the default policy is set twice (tls = and policy * =)";
        c->policy_default_set = 1;
        e = &t->fallback;
    } else {
        for (size_t i = 0; i < t->n; i++)
            if (strcasecmp(t->entries[i].domain, domain) == 0)
                return "duplicate policy";
        if (t->n >= POLICY_ENTRIES_MAX)
            return "too many policy entries";
        e = &t->entries[t->n];
    }
    copy_str(e->domain, sizeof(e->domain), domain);
    if (!policy_entry_parse(val, strlen(val), e, detail, DETAIL_MAX))
        return detail;
    if (e != &t->fallback)
        t->n++;
    return NULL;
}

static const char *set_dest_override(struct tern_config *c, const char *domain, const char *val)
{
    if (!valid_table_domain(domain))
        return "bad destination domain (example.com, .example.com or *)";
    for (int i = 0; i < c->ndest_overrides; i++)
        if (strcasecmp(c->dest_overrides[i].domain, domain) == 0)
            return "duplicate destination";
    if (c->ndest_overrides >= CONFIG_DESTS_MAX)
        return "too many destination lines";
    struct dest_override *o = &c->dest_overrides[c->ndest_overrides];
    memset(o, 0, sizeof(*o));
    copy_str(o->domain, sizeof(o->domain), domain);
    char buf[CONFIG_LINE_MAX];
    if (!copy_str(buf, sizeof(buf), val))
        return "value too long";
    const char *why;
    for (char *save = NULL, *w = strtok_r(buf, " \t", &save); w; w = strtok_r(NULL, " \t", &save)) {
        char *eq = strchr(w, '=');
        if (eq == NULL)
            return "expected option=value (max_connections, max_connections_per_host, "
                   "max_messages_per_connection, max_transactions_in_flight, idle)";
        *eq = '\0';
        const char *v = eq + 1;
        int ok;
        if (strcmp(w, "max_connections") == 0)
            ok = config_parse_int(v, 1, 100000, &o->set.max_connections);
        else if (strcmp(w, "max_connections_per_host") == 0)
            ok = config_parse_int(v, 1, 100000, &o->set.max_connections_per_host);
        else if (strcmp(w, "max_messages_per_connection") == 0)
            ok = config_parse_int(v, 1, 100000000, &o->set.max_messages_per_connection);
        else if (strcmp(w, "max_transactions_in_flight") == 0)
            ok = config_parse_int(v, 1, SMTP_PIPELINE_MAX, &o->set.max_txns_in_flight);
        else if (strcmp(w, "idle") == 0)
            ok = config_parse_duration_ms(v, &o->set.idle_ms) && o->set.idle_ms > 0;
        else if ((why = config_net_dest_option(&o->net, w, v, &ok)) != NULL)
            return why;
        else if (!ok)
            return "unknown option (max_connections, max_connections_per_host, "
                   "max_messages_per_connection, max_transactions_in_flight, idle, max_message_rate, "
                   "max_connection_rate, source_address)";
        if (!ok)
            return "bad number or duration";
    }
    c->ndest_overrides++;
    return NULL;
}

/* The TLS client context an entry needs; identical sets share one. */
static int assign_tls_ctx(struct tern_config *c, struct policy_entry *e)
{
    struct tls_ctx_spec want;
    memset(&want, 0, sizeof(want));
    copy_str(want.ca_file, sizeof(want.ca_file), e->ca_file[0] ? e->ca_file : c->ca_file);
    copy_str(want.cert_file, sizeof(want.cert_file), e->cert_file[0] ? e->cert_file : c->client_cert);
    copy_str(want.key_file, sizeof(want.key_file), e->cert_file[0] ? e->key_file : c->client_key);
    for (int i = 0; i < c->ntls_ctx; i++)
        if (memcmp(&c->tls_ctx[i], &want, sizeof(want)) == 0) {
            e->ctx_index = i;
            return 1;
        }
    if (c->ntls_ctx >= CONFIG_TLS_CTX_MAX)
        return 0;
    c->tls_ctx[c->ntls_ctx] = want;
    e->ctx_index = c->ntls_ctx++;
    return 1;
}

/* retry_schedule = "5m 10m 20m 40m 1h 2h 4h": durations separated by
 * spaces or commas, each above zero. */
static int parse_retry_schedule(struct tern_config *c, char *err, size_t errlen, const char *path)
{
    char text[CONFIG_SCHEDULE_TEXT_MAX];
    copy_str(text, sizeof(text), c->retry_schedule_text);
    c->nretry_schedule = 0;
    char *save = NULL;
    for (char *t = strtok_r(text, " \t,", &save); t; t = strtok_r(NULL, " \t,", &save)) {
        int64_t v;
        if (c->nretry_schedule >= CONFIG_RETRY_STEPS_MAX || !config_parse_duration_ms(t, &v) || v <= 0) {
            snprintf(err, errlen, "%s: retry_schedule: %s (durations such as 5m, at most %d)", path,
                     c->nretry_schedule >= CONFIG_RETRY_STEPS_MAX ? "too many steps" : "bad duration",
                     CONFIG_RETRY_STEPS_MAX);
            return 0;
        }
        c->retry_schedule_ms[c->nretry_schedule++] = v;
    }
    return 1;
}

_Static_assert(sizeof(keys) / sizeof(keys[0]) <= 64, "config: the duplicate check has 64 bits");

/* apply one "key [arg] = value" setting; returns NULL or the reason. */
static const char *apply(struct tern_config *c, const char *key, const char *arg,
                         const char *val, uint64_t *seen, char *detail)
{
    size_t i;
    for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        if (strcmp(keys[i].name, key) == 0)
            break;
    if (i == sizeof(keys) / sizeof(keys[0])) {
        int mine = 0;
        const char *why = arg ? NULL : config_net_apply(&c->net, key, val, &mine);
        if (mine)
            return why;
        return listen_config_apply(&c->listen, key, arg, val);  /* or "unknown key" */
    }
    const struct key_def *k = &keys[i];
    int takes_arg = k->kind >= K_ROUTE;
    if (takes_arg != (arg != NULL))
        return arg ? "this key takes no argument" : "this key needs an argument (key ARG = value)";
    if (!takes_arg) {
        if (*seen & ((uint64_t)1 << i))
            return "duplicate setting";
        *seen |= (uint64_t)1 << i;
    }
    if (*val == '\0')
        return "empty value";
    char *base = (char *)c;
    int64_t v64;
    switch (k->kind) {
    case K_STR:
        return copy_str(base + k->off, k->size, val) ? NULL : "value too long";
    case K_INT:
        return config_parse_int(val, k->lo, k->hi, (int *)(base + k->off)) ? NULL : "bad number or out of range";
    case K_THREADS:
        return config_parse_int(val, k->lo, k->hi, &c->threads) ? NULL : "threads must be 0..256";
    case K_PARTITIONS:
        return config_parse_int(val, k->lo, k->hi, &c->queue.partitions) ? NULL : "partitions must be 1..1024";
    case K_DURATION:
        if (!config_parse_duration_ms(val, &v64))
            return "bad duration (use e.g. 30s, 5m, 500ms)";
        if (strcmp(key, "lease") == 0) {
            if (v64 < 1000 || v64 > INT32_MAX)
                return "lease must be 1s..24d";
            c->queue.lease_ms = (int)v64;
        } else {
            *(int64_t *)(base + k->off) = v64;
        }
        return NULL;
    case K_SIZE:
        if (!config_parse_size(val, &v64) || v64 < 1024)
            return "bad size (use e.g. 10m; at least 1k)";
        *(int64_t *)(base + k->off) = v64;
        return NULL;
    case K_BOOL:
        if (strcmp(val, "yes") == 0) *(int *)(base + k->off) = 1;
        else if (strcmp(val, "no") == 0) *(int *)(base + k->off) = 0;
        else return "must be yes or no";
        return NULL;
    case K_TLS:
        return set_policy(c, "*", val, detail);
    case K_POLICY:
        return set_policy(c, arg, val, detail);
    case K_DEST:
        return set_dest_override(c, arg, val);
    case K_TIMEOUT:
        for (size_t t = 0; t < sizeof(timeout_names) / sizeof(timeout_names[0]); t++) {
            if (strcmp(timeout_names[t].name, arg) == 0) {
                if (!config_parse_duration_ms(val, &v64) || v64 == 0)
                    return "bad duration (use e.g. 30s, 5m, 500ms)";
                *(int64_t *)((char *)&c->timeouts + timeout_names[t].off) = v64;
                return NULL;
            }
        }
        return "unknown timeout (connect, greeting, command, ehlo, mail, rcpt, tls, data, "
               "block, final, idle)";
    case K_ROUTE: {
        if (!valid_domain_arg(arg))
            return "bad route domain";
        for (int r = 0; r < c->nroutes; r++)
            if (strcasecmp(c->routes[r].domain, arg) == 0)
                return "duplicate route";
        if (c->nroutes >= CONFIG_ROUTES_MAX)
            return "too many routes";
        struct tern_route *r = &c->routes[c->nroutes];
        memset(r, 0, sizeof(*r));
        copy_str(r->domain, sizeof(r->domain), arg);
        const char *why = NULL;
        if (!parse_hostport(val, r, &why))
            return why;
        c->nroutes++;
        return NULL;
    }
    }
    return "internal: unhandled key kind";
}

int config_load(struct tern_config *c, const char *path, char *err, size_t errlen)
{
    config_defaults(c);
    copy_str(c->path, sizeof(c->path), path);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return 0;
    }
    char line[CONFIG_LINE_MAX + 2];
    uint64_t seen = 0;   /* one bit per key: a setting given twice is an error */
    int lineno = 0;
    int ok = 1;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        size_t n = strlen(line);
        if (n > 0 && line[n - 1] != '\n' && !feof(f)) {
            snprintf(err, errlen, "%s:%d: line longer than %d bytes", path, lineno, CONFIG_LINE_MAX);
            ok = 0;
            break;
        }
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *s = trim(line);
        if (*s == '\0')
            continue;
        char *eq = strchr(s, '=');
        if (eq == NULL) {
            snprintf(err, errlen, "%s:%d: expected \"key = value\"", path, lineno);
            ok = 0;
            break;
        }
        *eq = '\0';
        char *lhs = trim(s), *val = trim(eq + 1);
        char *arg = NULL;
        char *sp = lhs;
        while (*sp && !isspace((unsigned char)*sp))
            sp++;
        if (*sp) {
            *sp = '\0';
            arg = trim(sp + 1);
            if (strpbrk(arg, " \t")) {
                snprintf(err, errlen, "%s:%d: too many words before '='", path, lineno);
                ok = 0;
                break;
            }
        }
        char detail[DETAIL_MAX];
        const char *why = apply(c, lhs, arg, val, &seen, detail);
        if (why) {
            snprintf(err, errlen, "%s:%d: %s: %s", path, lineno, lhs, why);
            ok = 0;
            break;
        }
    }
    fclose(f);
    if (!ok)
        return 0;
    if (c->threads == 0) {
        long nc = sysconf(_SC_NPROCESSORS_ONLN);
        c->threads = nc > 0 ? (int)nc : 1;
    }
    if (c->threads > c->queue.partitions)
        c->threads = c->queue.partitions;   /* a worker owns >= 1 partition */
    if (c->max_messages_in_memory) {   /* the engine's cap, split across the workers */
        c->max_in_memory = c->max_messages_in_memory / c->threads;
        if (c->max_in_memory < 1)
            c->max_in_memory = 1;
    }
    /* Split like max_messages_in_memory; a body larger than a worker's
     * share is still fetched, alone. */
    c->max_bytes_in_memory_worker = c->max_bytes_in_memory ? c->max_bytes_in_memory / c->threads
                                                           : CONFIG_WORKER_BYTES_IN_MEMORY_DEFAULT;
    if (c->max_bytes_in_memory_worker < 1024)
        c->max_bytes_in_memory_worker = 1024;
    if (c->retry_schedule_text[0] && !parse_retry_schedule(c, err, errlen, path))
        return 0;
    if (c->batch > c->max_in_memory)
        c->batch = c->max_in_memory;   /* a take must fit the room a worker has */
    if ((c->client_cert[0] != '\0') != (c->client_key[0] != '\0')) {
        snprintf(err, errlen, "%s: client_cert and client_key go together", path);
        return 0;
    }
    c->limits.idle_ms = c->timeouts.idle;
    const char *lwhy = listen_config_finish(&c->listen, c->queue.max_message_size);
    if (lwhy) {
        snprintf(err, errlen, "%s: %s", path, lwhy);
        return 0;
    }
    for (int i = 0; i < c->nroutes; i++) {
        struct tern_route *r = &c->routes[i];
        r->host_slot = i;
        for (int j = 0; j < i; j++)
            if (c->routes[j].port == r->port && strcasecmp(c->routes[j].host, r->host) == 0) {
                r->host_slot = j;
                break;
            }
    }
    c->ntls_ctx = 0;
    int ctx_ok = assign_tls_ctx(c, &c->policy.fallback);
    for (size_t i = 0; ctx_ok && i < c->policy.n; i++)
        ctx_ok = assign_tls_ctx(c, &c->policy.entries[i]);
    if (!ctx_ok) {
        snprintf(err, errlen, "%s: more than %d distinct ca_file/cert sets in policy entries", path,
                 CONFIG_TLS_CTX_MAX);
        return 0;
    }
    return 1;
}

/* Table lookup shared by the destination overrides: exact, closest
 * ".parent", then "*". */
_Static_assert(offsetof(struct dest_override, domain) == 0, "domain_table_match reads the key first");

static const struct dest_override *find_override(const struct tern_config *c, const char *domain)
{
    long i = domain_table_match(c->dest_overrides, (size_t)c->ndest_overrides,
                                sizeof(c->dest_overrides[0]), domain);
    return i < 0 ? NULL : &c->dest_overrides[i];
}

void config_dest_limits(const struct tern_config *c, const char *domain, struct dest_limits *out)
{
    *out = c->limits;
    const struct dest_override *o = find_override(c, domain);
    if (o == NULL)
        return;
    if (o->set.max_connections)
        out->max_connections = o->set.max_connections;
    if (o->set.max_connections_per_host)
        out->max_connections_per_host = o->set.max_connections_per_host;
    if (o->set.max_messages_per_connection)
        out->max_messages_per_connection = o->set.max_messages_per_connection;
    if (o->set.idle_ms)
        out->idle_ms = o->set.idle_ms;
    if (o->set.max_txns_in_flight)
        out->max_txns_in_flight = o->set.max_txns_in_flight;
}

void config_dest_net(const struct tern_config *c, const char *domain, struct net_dest *out)
{
    const struct dest_override *o = find_override(c, domain);
    config_net_merge(&c->net.dflt, o ? &o->net : NULL, out);
}

const struct tern_route *config_route(const struct tern_config *c, const char *domain)
{
    const char *d = domain;
    while (d) {
        for (int i = 0; i < c->nroutes; i++)
            if (strcasecmp(c->routes[i].domain, d) == 0)
                return &c->routes[i];
        d = strchr(d, '.');
        if (d)
            d++;
    }
    for (int i = 0; i < c->nroutes; i++)
        if (strcmp(c->routes[i].domain, "*") == 0)
            return &c->routes[i];
    return NULL;
}
