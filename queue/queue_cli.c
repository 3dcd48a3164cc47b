/*
 * queue_cli.c - blocking queue calls for the CLI (tern inject, stats):
 * connect, load scripts, enqueue, generate load, read counters.
 *
 * Writes are pipelined: enqueues are built with queue_cmd_enqueue into a
 * buffer, handed to hiredis with redisAppendFormattedCommand in windows
 * (WINDOW_ENTRIES enqueues or WINDOW_BYTES bytes, whichever first), and
 * their QUEUE_ENQUEUE_CMDS replies each read back in order. A window whose
 * enqueues come back NOSCRIPT (Redis restarted, SCRIPT FLUSH) reloads the
 * scripts and resends just those enqueues once: NOSCRIPT means the script
 * did not run, a script's SHA depends only on its text, so the bytes are
 * still valid, and the resent HSETNX finds the same body in place. An
 * enqueue that fails for good has the body its HSETNX stored removed
 * again (queue_cmd_enqueue_undo), so nothing is left half-stored.
 *
 * Redis Cluster: queue_open asks CLUSTER SLOTS; with a slot map it holds
 * one connection per master and sends each partition's commands to the
 * node serving its slot (queue_conn_unit, queue_batch_run). A window's
 * enqueues then go to several nodes at once; each node's replies come back
 * in the order it was sent its commands. A MOVED (the slot was resharded)
 * or ASK (it is being migrated) reply is followed once, synchronously,
 * after the window is read: the redirected commands did not run there.
 */
#include "queue/queue.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#define WINDOW_ENTRIES   512
#define WINDOW_BYTES     (8u * 1024 * 1024)
#define CONNECT_TIMEOUT_S 10
#define HOST_MAX         QUEUE_CLUSTER_HOST_MAX   /* q->host */
#define GEN_FROM         "generator@tern.test"
#define GEN_LINE_LEN     76
#define GEN_HEADER_GUESS 240   /* typical header bytes, for sizing the body */

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* --- connection --- */

_Static_assert(sizeof(((struct queue_conn *)0)->nodes) / sizeof(redisContext *) ==
                   QUEUE_CLUSTER_NODES_MAX,
               "one context per node a map can name");

static int load_one(redisContext *rc, const char *src, char sha[41],
                    char *err, size_t errlen)
{
    const char *argv[3] = {"SCRIPT", "LOAD", src};
    size_t lens[3] = {6, 4, strlen(src)};
    redisReply *r = redisCommandArgv(rc, 3, argv, lens);
    const char *why = NULL;
    int ok = r != NULL && queue_parse_script_load(r, sha, &why);
    if (!ok)
        seterr(err, errlen, "SCRIPT LOAD: %s%s%s",
               r == NULL ? rc->errstr : why,
               r && r->type == REDIS_REPLY_ERROR ? ": " : "",
               r && r->type == REDIS_REPLY_ERROR ? r->str : "");
    freeReplyObject(r);
    return ok;
}

/* The four scripts on one server. A script's SHA is that of its text, so
 * every node of a cluster gives the same ones. */
static int load_scripts(redisContext *rc, struct queue_scripts *s, char *err, size_t errlen)
{
    return load_one(rc, queue_script_enqueue_src(), s->enqueue, err, errlen) &&
           load_one(rc, queue_script_take_src(), s->take, err, errlen) &&
           load_one(rc, queue_script_ack_src(), s->ack, err, errlen) &&
           load_one(rc, queue_script_report_src(), s->report, err, errlen);
}

int queue_reload_scripts(struct queue_conn *q, char *err, size_t errlen)
{
    if (q->map == NULL)
        return load_scripts(q->rc, &q->scripts, err, errlen);
    for (int i = 0; i < q->map->nnodes; i++)
        if (q->nodes[i] != NULL && !load_scripts(q->nodes[i], &q->scripts, err, errlen))
            return 0;
    return 1;
}

/* Split "host:port", "[v6]:port", "host" or a bare IPv6 address. */
static int parse_host_port(const char *a, char host[HOST_MAX], int *port)
{
    const char *colon;
    size_t hl;
    *port = 6379;
    if (a[0] == '[') {
        const char *close = strchr(a, ']');
        if (close == NULL)
            return 0;
        hl = (size_t)(close - a - 1);
        if (hl == 0 || hl >= HOST_MAX)
            return 0;
        memcpy(host, a + 1, hl);
        host[hl] = '\0';
        colon = close[1] == ':' ? close + 1 : NULL;
        if (colon == NULL && close[1] != '\0')
            return 0;
    } else {
        colon = strrchr(a, ':');
        if (colon != NULL && strchr(a, ':') != colon)
            colon = NULL;   /* several colons: a bare IPv6 address */
        hl = colon ? (size_t)(colon - a) : strlen(a);
        if (hl == 0 || hl >= HOST_MAX)
            return 0;
        memcpy(host, a, hl);
        host[hl] = '\0';
    }
    if (colon != NULL) {
        char *end;
        long p = strtol(colon + 1, &end, 10);
        if (colon[1] == '\0' || *end != '\0' || p < 1 || p > 65535)
            return 0;
        *port = (int)p;
    }
    return 1;
}

/* Connect to node i of the map (same timeouts as queue_open's own
 * connection) and load the scripts there. */
static int open_node(struct queue_conn *q, int i, char *err, size_t errlen)
{
    char addr[QUEUE_CLUSTER_ADDR_MAX];
    queue_cluster_node_addr(q->map, i, addr);
    struct timeval tv = {CONNECT_TIMEOUT_S, 0};
    redisContext *c = redisConnectWithTimeout(q->map->nodes[i].host, q->map->nodes[i].port, tv);
    if (c == NULL || c->err) {
        seterr(err, errlen, "cannot connect to Redis Cluster node %s: %s", addr,
               c ? c->errstr : "out of memory");
        if (c != NULL)
            redisFree(c);
        return 0;
    }
    redisSetTimeout(c, tv);
    char why[256];
    if (!load_scripts(c, &q->scripts, why, sizeof(why))) {
        seterr(err, errlen, "Redis Cluster node %s: %s", addr, why);
        redisFree(c);
        return 0;
    }
    q->nodes[i] = c;
    return 1;
}

/* The index of node host:port, connected (added to the map's nodes, with
 * no slot, when new). -1 with err set. */
static int node_for(struct queue_conn *q, const char *host, int port, char *err, size_t errlen)
{
    int i = queue_cluster_add_node(q->map, host, port);
    if (i < 0) {
        seterr(err, errlen, "Redis Cluster node %s:%d: bad address or more than %d masters", host,
               port, QUEUE_CLUSTER_NODES_MAX);
        return -1;
    }
    if (q->nodes[i] == NULL && !open_node(q, i, err, errlen))
        return -1;
    return i;
}

/* CLUSTER SLOTS answered with the map (r): read it, check that every
 * partition's slot is served, connect every master. */
static int open_cluster(struct queue_conn *q, const redisReply *r, char *err, size_t errlen)
{
    const char *why;
    int standalone;
    q->map = malloc(sizeof(*q->map));
    if (q->map == NULL) {
        seterr(err, errlen, "out of memory");
        return 0;
    }
    if (!queue_cluster_parse_slots(r, q->host, q->map, &standalone, &why)) {
        seterr(err, errlen, "Redis Cluster: %s%s", why,
               q->host[0] ? "" : " (connected by a unix socket, a node without an address "
                                 "cannot be reached)");
        return 0;
    }
    for (int p = 0; p < q->qc.partitions; p++) {
        if (queue_cluster_node_of(q->map, p) < 0) {
            seterr(err, errlen, "Redis Cluster: slot %u (partition %d) is served by no node",
                   queue_partition_slot(p), p);
            return 0;
        }
    }
    for (int i = 0; i < q->map->nnodes; i++)
        if (!open_node(q, i, err, errlen))
            return 0;
    return 1;
}

int queue_open(struct queue_conn *q, const struct queue_config *qc,
               const char *redis_addr, char *err, size_t errlen)
{
    const char *why;
    memset(q, 0, sizeof(*q));
    if (!queue_config_check(qc, &why)) {
        seterr(err, errlen, "queue config: %s", why);
        return 0;
    }
    q->qc = *qc;
    struct timeval tv = {CONNECT_TIMEOUT_S, 0};
    if (strncmp(redis_addr, "unix:", 5) == 0) {
        if (redis_addr[5] == '\0') {
            seterr(err, errlen, "redis address %s: empty socket path", redis_addr);
            return 0;
        }
        q->rc = redisConnectUnixWithTimeout(redis_addr + 5, tv);
    } else {
        int port;
        if (!parse_host_port(redis_addr, q->host, &port)) {
            seterr(err, errlen, "redis address %s: want host:port or unix:/path",
                   redis_addr);
            return 0;
        }
        q->rc = redisConnectWithTimeout(q->host, port, tv);
    }
    if (q->rc == NULL || q->rc->err) {
        seterr(err, errlen, "cannot connect to Redis at %s: %s", redis_addr,
               q->rc ? q->rc->errstr : "out of memory");
        queue_close(q);
        return 0;
    }
    redisSetTimeout(q->rc, tv);
    /* A standalone Redis answers an error ("cluster support disabled"),
     * as does one with CLUSTER renamed away, or a proxy: all get the one
     * connection, as before. Only the slot map itself means a cluster. */
    redisReply *r = redisCommand(q->rc, "CLUSTER SLOTS");
    if (r == NULL) {
        seterr(err, errlen, "Redis at %s: CLUSTER SLOTS: %s", redis_addr, q->rc->errstr);
        queue_close(q);
        return 0;
    }
    int ok = r->type == REDIS_REPLY_ARRAY ? open_cluster(q, r, err, errlen)
                                          : queue_reload_scripts(q, err, errlen);
    freeReplyObject(r);
    if (!ok)
        queue_close(q);
    return ok;
}

void queue_close(struct queue_conn *q)
{
    if (q->rc != NULL)
        redisFree(q->rc);
    q->rc = NULL;
    for (int i = 0; i < QUEUE_CLUSTER_NODES_MAX; i++) {
        if (q->nodes[i] != NULL)
            redisFree(q->nodes[i]);
        q->nodes[i] = NULL;
    }
    free(q->map);
    q->map = NULL;
}

/* --- routing --- */

/* The node (index into q->nodes; 0, meaning rc, when standalone) that
 * serves partition p. */
static int node_of(const struct queue_conn *q, int p)
{
    return q->map ? queue_cluster_node_of(q->map, p) : 0;
}

static redisContext *node_ctx(struct queue_conn *q, int node)
{
    return q->map ? q->nodes[node] : q->rc;
}

redisContext *queue_conn_rc(struct queue_conn *q, int partition)
{
    return node_ctx(q, node_of(q, partition));
}

int queue_conn_nnodes(const struct queue_conn *q)
{
    return q->map ? q->map->nnodes : 1;
}

redisContext *queue_conn_node(struct queue_conn *q, int i, char *addr, size_t addrlen)
{
    if (q->map == NULL) {
        if (addrlen)
            addr[0] = '\0';
        return i == 0 ? q->rc : NULL;
    }
    if (i < 0 || i >= q->map->nnodes)
        return NULL;
    char a[QUEUE_CLUSTER_ADDR_MAX];
    queue_cluster_node_addr(q->map, i, a);
    snprintf(addr, addrlen, "%s", a);
    return q->nodes[i];
}

int queue_reply_redirect(const redisReply *r)
{
    return r != NULL && r->type == REDIS_REPLY_ERROR && r->str != NULL &&
           ((r->len > 6 && memcmp(r->str, "MOVED ", 6) == 0) ||
            (r->len > 4 && memcmp(r->str, "ASK ", 4) == 0));
}

/* read_count reads "<kind><decimal>\r\n" at s[*i..len) and moves *i past
 * it. */
static int read_count(const char *s, size_t len, size_t *i, char kind, size_t *v)
{
    size_t j = *i + 1, x = 0, digits = 0;
    if (*i >= len || s[*i] != kind)
        return 0;
    for (; j < len && s[j] >= '0' && s[j] <= '9' && digits < 12; j++, digits++)
        x = x * 10 + (size_t)(s[j] - '0');
    if (digits == 0 || j + 1 >= len || s[j] != '\r' || s[j + 1] != '\n')
        return 0;
    *i = j + 2;
    *v = x;
    return 1;
}

/* The length of the first whole RESP command (an array of bulk strings,
 * what the builders write) in s[0..len), 0 if there is none: a
 * redirected command is resent alone, cut out of its unit. */
static size_t resp_cmd_len(const char *s, size_t len)
{
    size_t i = 0, n, bl;
    if (!read_count(s, len, &i, '*', &n))
        return 0;
    for (size_t a = 0; a < n; a++) {
        if (!read_count(s, len, &i, '$', &bl) || bl > len - i || len - i - bl < 2)
            return 0;
        i += bl + 2;
    }
    return i;
}

static void free_replies(redisReply **r, size_t k)
{
    for (size_t i = 0; i < k; i++) {
        freeReplyObject(r[i]);
        r[i] = NULL;
    }
}

/* Send the k commands cmd[0..len) to node and read their replies into
 * r[]. With ask (k is then 1) the command goes behind an ASKING, whose
 * reply is dropped: the command's own reply says it all. 1, or 0 with err
 * set and r[] empty. */
static int exchange(struct queue_conn *q, int node, int ask, const char *cmd, size_t len,
                    size_t k, redisReply **r, char *err, size_t errlen)
{
    static const char asking[] = "*1\r\n$6\r\nASKING\r\n";
    redisContext *c = node_ctx(q, node);
    if ((ask && redisAppendFormattedCommand(c, asking, sizeof(asking) - 1) != REDIS_OK) ||
        redisAppendFormattedCommand(c, cmd, len) != REDIS_OK) {
        seterr(err, errlen, "redis: %s", c->errstr);
        return 0;
    }
    size_t skip = ask ? 1 : 0;   /* ASKING's reply comes first */
    for (size_t i = 0; i < k + skip; i++) {
        void *rv = NULL;
        if (redisGetReply(c, &rv) != REDIS_OK) {
            seterr(err, errlen, "redis: %s", c->errstr);
            free_replies(r, i > skip ? i - skip : 0);
            return 0;
        }
        if (i < skip)
            freeReplyObject(rv);
        else
            r[i - skip] = rv;
    }
    return 1;
}

/* The node a redirection rd points to, connected; for MOVED the map
 * learns the slot's new node (resharding), for ASK (*ask set: the slot
 * is being migrated, this one command goes there) it does not. -1 with
 * err set. */
static int redirect_target(struct queue_conn *q, const redisReply *rd, int *ask, char *err,
                           size_t errlen)
{
    unsigned slot;
    char host[QUEUE_CLUSTER_HOST_MAX];
    int port;
    if (!queue_cluster_parse_redirect(rd->str, rd->len, q->host, &slot, host, &port, ask)) {
        seterr(err, errlen, "unreadable redirection: %.200s", rd->str);
        return -1;
    }
    int to = node_for(q, host, port, err, errlen);
    if (to >= 0 && !*ask)
        queue_cluster_set_slot(q->map, slot, host, port);
    return to;
}

/* r[0..k) are the replies of the k commands cmd[0..len). In a cluster,
 * each that is a redirection (MOVED, ASK) is sent once more, alone and in
 * order, where it points; its reply replaces the redirection. A
 * redirected command did not run, so this never runs one twice. 1, or 0
 * with err set and r[] empty. */
static int follow(struct queue_conn *q, const char *cmd, size_t len, size_t k, redisReply **r,
                  char *err, size_t errlen)
{
    size_t at = 0;
    for (size_t i = 0; q->map != NULL && i < k; i++) {
        size_t cl = resp_cmd_len(cmd + at, len - at);
        int ask, to = -1;
        redisReply *again = NULL;
        if (cl == 0) {
            seterr(err, errlen, "redirection: cannot split the commands");
        } else if (!queue_reply_redirect(r[i])) {
            at += cl;
            continue;
        } else if ((to = redirect_target(q, r[i], &ask, err, errlen)) >= 0 &&
                   exchange(q, to, ask, cmd + at, cl, 1, &again, err, errlen)) {
            freeReplyObject(r[i]);
            r[i] = again;
            at += cl;
            continue;
        }
        free_replies(r, k);
        return 0;
    }
    return 1;
}

int queue_conn_unit(struct queue_conn *q, int partition, const char *cmd, size_t len,
                    size_t k, redisReply **r, char *err, size_t errlen)
{
    return exchange(q, node_of(q, partition), 0, cmd, len, k, r, err, errlen) &&
           follow(q, cmd, len, k, r, err, errlen);
}

/* One command as RESP (an array of bulk strings) appended to b. */
static int resp_argv(struct buf *b, int argc, const char **argv, const size_t *lens)
{
    char h[32];
    int n = snprintf(h, sizeof(h), "*%d\r\n", argc);
    buf_append(b, h, (size_t)n);
    for (int i = 0; i < argc; i++) {
        size_t l = lens ? lens[i] : strlen(argv[i]);
        n = snprintf(h, sizeof(h), "$%zu\r\n", l);
        buf_append(b, h, (size_t)n);
        buf_append(b, argv[i], l);
        buf_append(b, "\r\n", 2);
    }
    return !b->err;
}

redisReply *queue_conn_command_argv(struct queue_conn *q, int partition, int argc,
                                    const char **argv, const size_t *lens, char *err,
                                    size_t errlen)
{
    struct buf b;
    redisReply *r = NULL;
    buf_init(&b, 0);
    if (!resp_argv(&b, argc, argv, lens))
        seterr(err, errlen, "out of memory");
    else if (!queue_conn_unit(q, partition, (const char *)buf_peek(&b), buf_used(&b), 1, &r, err,
                              errlen))
        r = NULL;
    buf_free(&b);
    return r;
}

/* --- pipelined batches --- */

void queue_batch_init(struct queue_batch *b)
{
    memset(b, 0, sizeof(*b));
    buf_init(&b->cmds, 0);
}

int queue_batch_add(struct queue_batch *b, int partition, unsigned k)
{
    if (b->n == b->cap) {
        size_t ncap = b->cap ? b->cap * 2 : 64;
        struct queue_batch_unit *nu = realloc(b->u, ncap * sizeof(*nu));
        if (nu == NULL) {
            b->oom = 1;
            return 0;
        }
        b->u = nu;
        b->cap = ncap;
    }
    size_t end = buf_used(&b->cmds);
    b->u[b->n++] = (struct queue_batch_unit){.off = b->closed, .len = end - b->closed,
                                             .partition = partition, .node = -1, .k = k};
    b->closed = end;
    return 1;
}

int queue_batch_append_argv(struct queue_batch *b, int argc, const char **argv,
                            const size_t *lens)
{
    return resp_argv(&b->cmds, argc, argv, lens);
}

int queue_batch_add_argv(struct queue_batch *b, int partition, int argc, const char **argv,
                         const size_t *lens)
{
    return resp_argv(&b->cmds, argc, argv, lens) && queue_batch_add(b, partition, 1);
}

/* Write every connection's pending commands, so that all the nodes of a
 * cluster work while the replies of the first are read. */
static int write_all(struct queue_conn *q, char *err, size_t errlen)
{
    for (int i = 0; i < queue_conn_nnodes(q); i++) {
        redisContext *c = node_ctx(q, i);
        int done = 0;
        while (c != NULL && !done) {
            if (redisBufferWrite(c, &done) != REDIS_OK) {
                seterr(err, errlen, "redis: %s", c->errstr);
                return 0;
            }
        }
    }
    return 1;
}

int queue_batch_run(struct queue_conn *q, struct queue_batch *b, char *err, size_t errlen)
{
    size_t total = 0;
    for (size_t i = 0; i < b->n; i++) {
        b->u[i].first = total;
        total += b->u[i].k;
    }
    if (total > b->rcap) {
        redisReply **nr = realloc(b->r, total * sizeof(*nr));
        if (nr == NULL)
            b->oom = 1;
        else {
            b->r = nr;
            b->rcap = total;
        }
    }
    if (b->oom || b->cmds.err || b->closed != buf_used(&b->cmds)) {
        seterr(err, errlen, b->closed != buf_used(&b->cmds) ? "batch: commands outside a unit"
                                                            : "out of memory building commands");
        return 0;
    }
    const char *base = (const char *)buf_peek(&b->cmds);
    for (size_t i = 0; i < b->n; i++) {
        struct queue_batch_unit *u = &b->u[i];
        u->node = node_of(q, u->partition);
        redisContext *c = node_ctx(q, u->node);
        if (redisAppendFormattedCommand(c, base + u->off, u->len) != REDIS_OK) {
            seterr(err, errlen, "redis: %s", c->errstr);
            return 0;
        }
    }
    if (!write_all(q, err, errlen))
        return 0;
    /* Each node answers in the order it was sent to, and units are read
     * in the order they were sent: each read finds its own reply. */
    for (size_t i = 0; i < b->n; i++) {
        redisContext *c = node_ctx(q, b->u[i].node);
        for (unsigned j = 0; j < b->u[i].k; j++) {
            void *rv = NULL;
            if (redisGetReply(c, &rv) != REDIS_OK) {
                seterr(err, errlen, "redis: %s", c->errstr);
                return 0;
            }
            b->r[b->nr++] = rv;
        }
    }
    for (size_t i = 0; i < b->n; i++)
        if (!follow(q, base + b->u[i].off, b->u[i].len, b->u[i].k, b->r + b->u[i].first, err,
                    errlen))
            return 0;
    return 1;
}

redisReply *queue_batch_reply(const struct queue_batch *b, size_t i, size_t j)
{
    return i < b->n && j < b->u[i].k && b->u[i].first + j < b->nr ? b->r[b->u[i].first + j]
                                                                   : NULL;
}

redisReply *queue_batch_take(struct queue_batch *b, size_t i, size_t j)
{
    redisReply *r = queue_batch_reply(b, i, j);
    if (r != NULL)
        b->r[b->u[i].first + j] = NULL;
    return r;
}

void queue_batch_reset(struct queue_batch *b)
{
    free_replies(b->r, b->nr);
    b->nr = 0;
    b->n = 0;
    b->closed = 0;
    b->oom = 0;
    buf_reset(&b->cmds);
}

void queue_batch_free(struct queue_batch *b)
{
    queue_batch_reset(b);
    free(b->r);
    free(b->u);
    buf_free(&b->cmds);
    memset(b, 0, sizeof(*b));
}

/* --- pipelined windows --- */

/* A window: one batch unit (QUEUE_ENQUEUE_CMDS commands) per enqueue. */
struct window {
    struct queue_batch b;
    char ids[WINDOW_ENTRIES][QUEUE_ID_MAX];
    int parts[WINDOW_ENTRIES];             /* their partitions */
    int wrote[WINDOW_ENTRIES];             /* its HSETNX stored the body */
};

static void window_reset(struct window *w)
{
    queue_batch_reset(&w->b);
}

/* Call after queue_cmd_enqueue appended an enqueue (id, domain) to w->b.cmds
 * successfully. 0 when out of memory. */
static int window_commit(struct window *w, const struct queue_config *qc, const char *id,
                         const char *domain)
{
    size_t n = w->b.n;
    memcpy(w->ids[n], id, strlen(id) + 1);
    w->parts[n] = queue_partition_of(qc, domain, strlen(domain));
    w->wrote[n] = 0;
    return queue_batch_add(&w->b, w->parts[n], QUEUE_ENQUEUE_CMDS);
}

static int window_full(const struct window *w)
{
    return w->b.n >= WINDOW_ENTRIES || buf_used(&w->b.cmds) >= WINDOW_BYTES;
}

/* Sort out enqueue c's replies r[]: 1 when it made its entry; else 0, c
 * going to retry[] (NOSCRIPT, when retry is not NULL) or to gone[] with
 * *failed counted (the first refusal copied to err). */
static int judge(struct window *w, size_t c, redisReply **r, size_t *retry, size_t *nretry,
                 size_t *gone, size_t *ngone, long *failed, char *err, size_t errlen)
{
    const char *why, *text;
    int wrote;
    if (queue_parse_enqueue((const redisReply *const *)r, &wrote, &why, &text))
        return 1;
    w->wrote[c] |= wrote;
    int noscript = strcmp(why, "NOSCRIPT") == 0;
    if (noscript && retry != NULL) {
        retry[(*nretry)++] = c;
        return 0;
    }
    gone[(*ngone)++] = c;
    if (*failed == 0) {
        if (noscript)
            seterr(err, errlen, "enqueue: NOSCRIPT after reloading scripts");
        else
            seterr(err, errlen, "enqueue: %s%s%s", why, text[0] ? ": " : "", text);
    }
    (*failed)++;
    return 0;
}

/* Remove the bodies stored by the enqueues in gone[0..k) that made no
 * entry. Returns 0 on a connection error. The HDEL replies are read but
 * not checked: one Redis refused leaves a lone body that nothing refers
 * to, and the enqueue's own error is the one to report. */
static int undo_some(struct queue_conn *q, const struct window *w, const size_t *gone,
                     size_t k, char *err, size_t errlen)
{
    struct queue_batch b;
    queue_batch_init(&b);
    for (size_t i = 0; i < k; i++)
        if (w->wrote[gone[i]] &&
            queue_cmd_enqueue_undo(&b.cmds, &q->qc, w->parts[gone[i]], w->ids[gone[i]]))
            queue_batch_add(&b, w->parts[gone[i]], 1);
    char why[256] = "";
    int ok = queue_batch_run(q, &b, why, sizeof(why));
    if (!ok)
        seterr(err, errlen, "%s", why);
    queue_batch_free(&b);
    return ok;
}

/* Flush the window: returns the number of enqueues that succeeded, -1 on
 * a connection error; *failed counts enqueues Redis refused. A window
 * whose enqueues come back NOSCRIPT reloads the scripts and resends just
 * those, once each. */
static long window_flush(struct queue_conn *q, struct window *w, long *failed,
                        char *err, size_t errlen)
{
    size_t retry[WINDOW_ENTRIES], gone[WINDOW_ENTRIES], nretry = 0, ngone = 0;
    long ok = 0;
    if (!queue_batch_run(q, &w->b, err, errlen)) {
        window_reset(w);
        return -1;
    }
    for (size_t i = 0; i < w->b.n; i++) {
        redisReply *r[QUEUE_ENQUEUE_CMDS];
        for (size_t j = 0; j < QUEUE_ENQUEUE_CMDS; j++)
            r[j] = queue_batch_reply(&w->b, i, j);
        ok += judge(w, i, r, retry, &nretry, gone, &ngone, failed, err, errlen);
    }
    if (nretry > 0 && !queue_reload_scripts(q, err, errlen))
        ok = -1;
    const char *base = (const char *)buf_peek(&w->b.cmds);
    for (size_t i = 0; i < nretry && ok >= 0; i++) {
        const struct queue_batch_unit *u = &w->b.u[retry[i]];
        redisReply *r[QUEUE_ENQUEUE_CMDS];
        if (!queue_conn_unit(q, u->partition, base + u->off, u->len, QUEUE_ENQUEUE_CMDS, r, err,
                             errlen)) {
            ok = -1;
            break;
        }
        ok += judge(w, retry[i], r, NULL, NULL, gone, &ngone, failed, err, errlen);
        free_replies(r, QUEUE_ENQUEUE_CMDS);
    }
    if (ok >= 0 && ngone > 0 && !undo_some(q, w, gone, ngone, err, errlen))
        ok = -1;
    window_reset(w);
    return ok;
}

/* --- enqueue --- */

struct rcpt_copy {
    char a[QUEUE_ADDR_MAX + 1];   /* bare address, domain lower-cased */
    const char *domain;           /* into a */
    int group;                    /* -1 until grouped */
};

int queue_enqueue(struct queue_conn *q, const char *from,
                  const char *const *rcpts, size_t nrcpts,
                  const uint8_t *data, size_t len, char *err, size_t errlen)
{
    const char *why, *bare;
    size_t blen;
    char bfrom[QUEUE_ADDR_MAX + 1];

    /* Every check before anything is written. */
    if (from == NULL || !queue_addr_bare(from, strlen(from), 0, &bare, &blen, &why)) {
        seterr(err, errlen, "sender %s: %s", from ? from : "(null)",
               from ? why : "missing");
        return -1;
    }
    memcpy(bfrom, bare, blen);
    bfrom[blen] = '\0';
    if (nrcpts < 1 || nrcpts > QUEUE_RCPTS_MAX) {
        seterr(err, errlen, "need 1..%d recipients, got %zu", QUEUE_RCPTS_MAX, nrcpts);
        return -1;
    }
    if ((int64_t)len > q->qc.max_message_size) {
        seterr(err, errlen, "message of %zu bytes exceeds the limit of %lld",
               len, (long long)q->qc.max_message_size);
        return -1;
    }
    struct rcpt_copy *rc = calloc(nrcpts, sizeof(*rc));
    const char **group = calloc(nrcpts, sizeof(*group));
    if (rc == NULL || group == NULL) {
        free(rc);
        free(group);
        seterr(err, errlen, "out of memory");
        return -1;
    }
    size_t nr = 0;
    int ret = -1;
    for (size_t i = 0; i < nrcpts; i++) {
        if (rcpts[i] == NULL ||
            !queue_addr_bare(rcpts[i], strlen(rcpts[i]), 1, &bare, &blen, &why)) {
            seterr(err, errlen, "recipient %s: %s", rcpts[i] ? rcpts[i] : "(null)",
                   rcpts[i] ? why : "missing");
            goto out;
        }
        struct rcpt_copy *c = &rc[nr];
        memcpy(c->a, bare, blen);
        c->a[blen] = '\0';
        char *at = strrchr(c->a, '@');
        for (char *p = at + 1; *p; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p + 32);
        c->domain = at + 1;
        c->group = -1;
        /* Drop exact duplicates: each would be delivered twice. */
        int dup = 0;
        for (size_t j = 0; j < nr && !dup; j++)
            dup = strcmp(rc[j].a, c->a) == 0;
        if (!dup)
            nr++;
    }

    struct window *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        seterr(err, errlen, "out of memory");
        goto out;
    }
    queue_batch_init(&w->b);
    int64_t now = now_ms();
    size_t ngroups = 0;
    for (size_t i = 0; i < nr; i++) {
        if (rc[i].group >= 0)
            continue;
        size_t ng = 0;
        for (size_t j = i; j < nr; j++) {
            if (rc[j].group < 0 && strcmp(rc[j].domain, rc[i].domain) == 0) {
                rc[j].group = (int)ngroups;
                group[ng++] = rc[j].a;
            }
        }
        char id[QUEUE_ID_MAX];
        queue_new_id(id);
        if (!queue_cmd_enqueue(&w->b.cmds, &q->qc, &q->scripts, id, bfrom, group, ng,
                               rc[i].domain, data, len, now) ||
            !window_commit(w, &q->qc, id, rc[i].domain)) {
            seterr(err, errlen, "building enqueue for %s failed", rc[i].domain);
            goto out_w;
        }
        ngroups++;
        /* A message has at most QUEUE_RCPTS_MAX domains; a window holds
         * WINDOW_ENTRIES, so flush when full (atomicity is per entry anyway). */
        if (w->b.n >= WINDOW_ENTRIES) {
            long failed = 0;
            long ok = window_flush(q, w, &failed, err, errlen);
            if (ok < 0 || failed > 0)
                goto out_w;
        }
    }
    long failed = 0;
    long ok = window_flush(q, w, &failed, err, errlen);
    if (ok >= 0 && failed == 0)
        ret = (int)ngroups;
out_w:
    queue_batch_free(&w->b);
    free(w);
out:
    free(rc);
    free(group);
    return ret;
}

/* --- generate --- */

/* Body of printable lines, GEN_LINE_LEN characters + CRLF each, about
 * `want` bytes (at least one line). Lines differ so compression and
 * dedup in the path do not flatter the numbers. */
static void gen_body(struct buf *b, size_t want)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    size_t nlines = want / (GEN_LINE_LEN + 2);
    if (nlines == 0)
        nlines = 1;
    for (size_t l = 0; l < nlines; l++) {
        uint8_t *d = buf_reserve(b, GEN_LINE_LEN + 2);
        if (d == NULL)
            return;
        for (size_t i = 0; i < GEN_LINE_LEN; i++)
            d[i] = (uint8_t)alphabet[(l + i) % (sizeof(alphabet) - 1)];
        d[GEN_LINE_LEN] = '\r';
        d[GEN_LINE_LEN + 1] = '\n';
        buf_commit(b, GEN_LINE_LEN + 2);
    }
}

static void gen_headers(struct buf *m, const char *id, const char *from, const char *rcpt,
                        long i, const char *date)
{
    char h[1024 + 2 * QUEUE_ADDR_MAX];
    int k = snprintf(h, sizeof(h),
                     "Date: %s\r\n"
                     "From: <%s>\r\n"
                     "To: <%s>\r\n"
                     "Subject: tern load test message %ld\r\n"
                     "Message-ID: <%s@tern.test>\r\n"
                     "\r\n",
                     date, from, rcpt, i, id);
    if (k < 0 || (size_t)k >= sizeof(h)) {
        m->err = 1;
        return;
    }
    buf_append(m, h, (size_t)k);
}

long queue_generate(struct queue_conn *q, long n, const char *const *domains,
                    size_t ndomains, size_t size, char *err, size_t errlen)
{
    return queue_generate_from(q, NULL, n, domains, ndomains, size, err, errlen);
}

long queue_generate_from(struct queue_conn *q, const char *from, long n,
                         const char *const *domains, size_t ndomains, size_t size,
                         char *err, size_t errlen)
{
    const char *why, *bare;
    size_t blen;
    char rcpt[QUEUE_ADDR_MAX + 1], bfrom[QUEUE_ADDR_MAX + 1];
    if (from == NULL)
        from = GEN_FROM;
    if (!queue_addr_bare(from, strlen(from), 0, &bare, &blen, &why)) {
        seterr(err, errlen, "sender %s: %s", from, why);
        return -1;
    }
    memcpy(bfrom, bare, blen);
    bfrom[blen] = '\0';
    /* The null sender still needs a From: header; the generator's stands in. */
    const char *hfrom = blen ? bfrom : GEN_FROM;
    if (n < 0) {
        seterr(err, errlen, "negative message count");
        return -1;
    }
    if (n > 0 && (domains == NULL || ndomains == 0)) {
        seterr(err, errlen, "no domains");
        return -1;
    }
    if ((int64_t)size > q->qc.max_message_size) {
        seterr(err, errlen, "size %zu exceeds the limit of %lld", size,
               (long long)q->qc.max_message_size);
        return -1;
    }
    for (size_t d = 0; d < ndomains; d++) {
        int k = snprintf(rcpt, sizeof(rcpt), "user%ld@%s", n, domains[d]);
        if (k < 0 || (size_t)k >= sizeof(rcpt) ||
            !queue_addr_check(rcpt, (size_t)k, 1, &why) ||
            strchr(domains[d], '@') != NULL || domains[d][0] == '<') {
            seterr(err, errlen, "domain %s: %s", domains[d],
                   k > 0 && (size_t)k < sizeof(rcpt) ? why : "too long");
            return -1;
        }
    }
    struct buf body, msg;
    buf_init(&body, 0);
    buf_init(&msg, 0);
    gen_body(&body, size > GEN_HEADER_GUESS ? size - GEN_HEADER_GUESS : 0);
    struct window *w = calloc(1, sizeof(*w));
    if (w == NULL || body.err) {
        seterr(err, errlen, "out of memory");
        free(w);
        buf_free(&body);
        return -1;
    }
    queue_batch_init(&w->b);

    char date[64];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);

    long done = 0, failed = 0;
    int64_t now = now_ms();
    for (long i = 0; i < n; i++) {
        const char *dom = domains[(size_t)i % ndomains];
        char id[QUEUE_ID_MAX];
        queue_new_id(id);
        snprintf(rcpt, sizeof(rcpt), "user%ld@%s", i, dom);
        buf_reset(&msg);
        gen_headers(&msg, id, hfrom, rcpt, i, date);
        buf_append(&msg, buf_peek(&body), buf_used(&body));
        const char *rp = rcpt;
        if (msg.err ||
            !queue_cmd_enqueue(&w->b.cmds, &q->qc, &q->scripts, id, bfrom, &rp, 1,
                               dom, buf_peek(&msg), buf_used(&msg), now) ||
            !window_commit(w, &q->qc, id, dom)) {
            seterr(err, errlen, "building message %ld failed", i);
            done = -1;
            break;
        }
        if (window_full(w)) {
            long ok = window_flush(q, w, &failed, err, errlen);
            if (ok < 0) {
                done = -1;
                break;
            }
            done += ok;
        }
    }
    if (done >= 0) {
        long ok = window_flush(q, w, &failed, err, errlen);
        done = ok < 0 ? -1 : done + ok;
    }
    if (done >= 0 && failed > 0)
        done = -1;   /* err holds the first refusal */
    queue_batch_free(&w->b);
    free(w);
    buf_free(&body);
    buf_free(&msg);
    return done;
}

/* --- stats --- */

static int add_counter(struct queue_stats *st, const redisReply *name,
                       const redisReply *val)
{
    static const struct {
        const char *name;
        size_t off;
    } fields[] = {
        {"enqueued", offsetof(struct queue_stats, enqueued)},
        {"delivered", offsetof(struct queue_stats, delivered)},
        {"deferred", offsetof(struct queue_stats, deferred)},
        {"failed", offsetof(struct queue_stats, failed)},
        {"returned", offsetof(struct queue_stats, returned)},
        {"expired", offsetof(struct queue_stats, expired)},
        {"deleted", offsetof(struct queue_stats, deleted)},
    };
    if (name->type != REDIS_REPLY_STRING || val->type != REDIS_REPLY_STRING)
        return 0;
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        if (name->len == strlen(fields[i].name) &&
            memcmp(name->str, fields[i].name, name->len) == 0) {
            char *end;
            long long v = strtoll(val->str, &end, 10);
            if (end != val->str + val->len)
                return 0;
            *(long long *)((char *)st + fields[i].off) += v;
        }
    }
    return 1;   /* unknown counters are skipped: other tools may add some */
}

/* One partition's four replies (LLEN ready, ZCARD leased, ZCARD sched,
 * HGETALL stats) added to st. 0 on a reply of the wrong shape. */
static int add_partition(struct queue_stats *st, redisReply **r)
{
    long long *counts[3] = {&st->ready, &st->leased, &st->scheduled};
    int ok = 1;
    for (int c = 0; c < 3; c++) {
        if (r[c]->type == REDIS_REPLY_INTEGER)
            *counts[c] += r[c]->integer;
        else
            ok = 0;
    }
    if (r[3]->type != REDIS_REPLY_ARRAY || r[3]->elements % 2 != 0)
        return 0;
    for (size_t i = 0; i < r[3]->elements; i += 2)
        if (!add_counter(st, r[3]->element[i], r[3]->element[i + 1]))
            ok = 0;
    return ok;
}

int queue_stats(struct queue_conn *q, struct queue_stats *st, char *err, size_t errlen)
{
    static const char *const cmds[4] = {"LLEN", "ZCARD", "ZCARD", "HGETALL"};
    static const char *const names[4] = {"ready", "leased", "sched", "stats"};
    memset(st, 0, sizeof(*st));
    /* One unit of four commands per partition, each to its node. */
    struct queue_batch b;
    queue_batch_init(&b);
    for (int p = 0; p < q->qc.partitions; p++) {
        for (int c = 0; c < 4; c++) {
            char key[QUEUE_PREFIX_MAX + 32];
            size_t kl = queue_key(key, sizeof(key), &q->qc, p, names[c]);
            const char *argv[2] = {cmds[c], key};
            size_t lens[2] = {strlen(cmds[c]), kl};
            queue_batch_append_argv(&b, 2, argv, lens);
        }
        queue_batch_add(&b, p, 4);
    }
    int ok = queue_batch_run(q, &b, err, errlen);
    for (int p = 0; ok && p < q->qc.partitions; p++) {
        redisReply *r[4];
        for (int c = 0; c < 4; c++)
            r[c] = queue_batch_reply(&b, (size_t)p, (size_t)c);
        if (!add_partition(st, r)) {
            /* An error reply says why (TRYAGAIN, CLUSTERDOWN, WRONGTYPE, ...). */
            const redisReply *e = NULL;
            for (int c = 0; c < 4 && e == NULL; c++)
                if (r[c]->type == REDIS_REPLY_ERROR)
                    e = r[c];
            if (e != NULL)
                seterr(err, errlen, "stats: partition %d: %s", p, e->str);
            else
                seterr(err, errlen, "stats: unexpected reply (wrong key type?)");
            ok = 0;
        }
    }
    queue_batch_free(&b);
    return ok;
}
