/*
 * worker_redis.c - the worker's Redis links: connecting with a bounded
 * wait, noticing a loss, reconnecting with exponential backoff, and with
 * a Redis Cluster one link per master, kept in step with the slot map.
 *
 * DESCRIPTION
 *   Losing Redis (restart, failover, network) must not stop delivery: the
 *   worker keeps its SMTP connections going and keeps the outcomes they
 *   produce (ack records, with any bounce attached) in its partitions'
 *   ack lists until Redis is back. Nothing is written to the command
 *   buffer while the link is down, so at reconnect the buffer and the
 *   expected-reply queue are simply emptied: what was in flight at the
 *   loss either reached Redis or did not, and either way the lease makes
 *   it at-least-once. The held outcomes are bounded by max_in_memory
 *   (no take runs while Redis is away, and every held outcome was a job).
 *
 *   The loss is noticed on a ring completion (EOF, error, bad reply). The
 *   socket is shut down so any operation still in flight on it completes;
 *   the old descriptor is closed and a new one made only once no ring
 *   operation refers to it. The first thing sent on a new connection is
 *   SCRIPT LOAD for the three scripts (a restarted Redis has none; the
 *   SHAs do not change). Until all three are loaded ("warming") nothing
 *   else is sent: a Redis still loading its data set answers -LOADING to
 *   everything, and an ack sent then would be lost. A failed load is
 *   retried with the same backoff. Then the held acks go out.
 *
 *   Each link fails and recovers on its own: with a cluster, a master
 *   that restarts holds up only the partitions it serves.
 *
 *   Redis Cluster. Every key of partition p has the hash tag {p}, so the
 *   partition is one slot (queue_cluster.h). The worker starts from the
 *   map tern run read (engine.cluster) and sends each partition's
 *   commands to its master. A MOVED or ASK reply means slots are moving
 *   (resharding): the worker then sends nothing but CLUSTER SLOTS until
 *   the answer comes, points every partition at its master's link (a new
 *   master gets a new link, its scripts loaded first) and carries on. The
 *   redirected command itself was not applied: a take or a body fetch is
 *   simply made again; an ack or a bounce is not resent, so its messages
 *   come back when their leases expire (docs/queue.md, "Redis Cluster").
 */
#include "engine/resp_pool.h"
#include "engine/worker_int.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* Wait for a TCP connect; connect() to a black-holed host would block
 * the whole worker for minutes otherwise. */
#define REDIS_CONNECT_TIMEOUT_MS  1000
#define REDIS_HOST_MAX            256

static int connect_wait(int fd, const struct sockaddr *sa, socklen_t len, int timeout_ms)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -1;
    int rc = connect(fd, sa, len);
    if (rc != 0 && errno == EINPROGRESS) {
        struct pollfd pf = {.fd = fd, .events = POLLOUT};
        rc = poll(&pf, 1, timeout_ms);
        if (rc == 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        if (rc < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0)
            return -1;
        if (soerr != 0) {
            errno = soerr;
            return -1;
        }
        rc = 0;
    }
    if (rc != 0)
        return -1;
    /* The ring does the I/O; blocking mode keeps its semantics simple. */
    return fcntl(fd, F_SETFL, fl);
}

int worker_redis_connect(const char *addr, char *err, size_t errlen)
{
    if (strncmp(addr, "unix:", 5) == 0) {
        struct sockaddr_un su = {.sun_family = AF_UNIX};
        if (strlen(addr + 5) >= sizeof(su.sun_path)) {
            snprintf(err, errlen, "redis socket path too long");
            return -1;
        }
        memcpy(su.sun_path, addr + 5, strlen(addr + 5) + 1);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect_wait(fd, (struct sockaddr *)&su, sizeof(su),
                                   REDIS_CONNECT_TIMEOUT_MS) != 0) {
            snprintf(err, errlen, "redis %s: %s", addr, strerror(errno));
            if (fd >= 0)
                close(fd);
            return -1;
        }
        return fd;
    }
    char host[REDIS_HOST_MAX];
    const char *colon = strrchr(addr, ':');
    if (colon == NULL || (size_t)(colon - addr) >= sizeof(host)) {
        snprintf(err, errlen, "redis address must be HOST:PORT or unix:PATH");
        return -1;
    }
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
    if (getaddrinfo(host, colon + 1, &hints, &res) != 0) {
        snprintf(err, errlen, "redis %s: cannot resolve", addr);
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect_wait(fd, res->ai_addr, res->ai_addrlen, REDIS_CONNECT_TIMEOUT_MS) != 0) {
        snprintf(err, errlen, "redis %s: %s", addr, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

/* backoff_next: the next attempt after a failed one, twice as far off
 * (REDIS_BACKOFF_MIN_MS .. REDIS_BACKOFF_MAX_MS). */
static void backoff_next(struct worker *w, struct redis_link *l)
{
    l->backoff_ms = l->backoff_ms ? l->backoff_ms * 2 : REDIS_BACKOFF_MIN_MS;
    if (l->backoff_ms > REDIS_BACKOFF_MAX_MS)
        l->backoff_ms = REDIS_BACKOFF_MAX_MS;
    l->retry_ms = w->now_ms + l->backoff_ms;
}

/* How the log names a link: "Redis", or "Redis 127.0.0.1:7001" in a cluster. */
static const char *link_name(const struct worker *w, const struct redis_link *l, char *out, size_t n)
{
    if (w->cluster == NULL)
        snprintf(out, n, "Redis");
    else
        snprintf(out, n, "Redis %s", l->addr);
    return out;
}

void worker_redis_lost(struct worker *w, struct redis_link *l, const char *why)
{
    if (l->down || w->redis_dead)
        return;
    char nm[CONFIG_PATH_MAX + 8];
    fprintf(stderr, "tern: worker %d: %s connection lost (%s); reconnecting\n", w->id,
            link_name(w, l, nm, sizeof(nm)), why);
    l->down = 1;
    l->warming = 0;
    l->scripts_pending = 0;
    w->st.redis_losses++;
    backoff_next(w, l);
    /* Make any receive or send still on the ring complete now. */
    shutdown(l->fd, SHUT_RDWR);
    /* Replies to what was sent will never come. A take in flight leaves
     * its messages leased: their lease brings them back. */
    for (size_t i = 0; i < l->rq_len; i++) {
        const struct redis_pending *pr = &l->rq[(l->rq_head + i) % l->rq_cap];
        if (pr->kind == RQ_SLOTS)
            w->slots_asked = 0;   /* asked again on another link */
        if (pr->kind != RQ_TAKE)
            continue;
        for (int k = 0; k < w->nparts; k++) {
            struct partition *p = &w->parts[k];
            if (p->id == pr->partition && p->take_inflight) {
                w->in_take -= (size_t)p->take_asked;
                p->take_inflight = 0;
                p->take_asked = 0;
            }
        }
    }
    worker_rq_drop(w, l);
    for (int i = 0; i < w->nparts; i++)
        if (w->part_link[w->parts[i].id] == l->idx)
            w->parts[i].empty = 0;   /* unknown until Redis answers again */
}

static void load_scripts(struct worker *w, struct redis_link *l)
{
    l->scripts_failed = 0;
    l->scripts_pending = worker_redis_load_scripts(w, l);
}

void worker_redis_script_reply(struct worker *w, struct redis_link *l, const redisReply *r)
{
    int failed = r->type == REDIS_REPLY_ERROR;
    if (failed)
        fprintf(stderr, "tern: worker %d: SCRIPT LOAD failed: %s\n", w->id, r->str ? r->str : "?");
    if (!l->warming || l->scripts_pending == 0)
        return;
    l->scripts_failed |= failed;
    if (--l->scripts_pending > 0)
        return;
    if (l->scripts_failed) {   /* e.g. -LOADING: try again later */
        backoff_next(w, l);
        return;
    }
    l->warming = 0;
    l->backoff_ms = 0;
    if (l->reopened) {   /* a first connection is not news */
        char nm[CONFIG_PATH_MAX + 8];
        fprintf(stderr, "tern: worker %d: %s ready\n", w->id, link_name(w, l, nm, sizeof(nm)));
    }
}

/* link_open connects l (down until it did) and queues its scripts. A
 * first connection is not a reconnect: only a link that was lost counts. */
static void link_open(struct worker *w, struct redis_link *l, int first)
{
    char err[256];
    int fd = worker_redis_connect(l->addr, err, sizeof(err));
    if (fd < 0) {
        backoff_next(w, l);
        fprintf(stderr, "tern: worker %d: Redis %s failed: %s; next try in %lld ms\n", w->id,
                first ? "connect" : "reconnect", err, (long long)l->backoff_ms);
        l->down = 1;
        if (w->cluster)
            w->slots_wanted = 1;   /* failed over? the other masters know */
        return;
    }
    redisReader *r = resp_pool_reader_new();
    if (r == NULL) {
        close(fd);
        backoff_next(w, l);
        l->down = 1;
        return;
    }
    r->maxbuf = 0;   /* keep the read buffer: replies are large */
    if (l->reader)
        resp_pool_reader_free(l->reader);
    l->reader = r;
    l->fd = fd;
    /* Commands built before the loss went with it (see above). */
    buf_reset(&l->out.active);
    buf_reset(&l->out.pending);
    l->down = 0;
    l->reopened = !first;
    if (!first) {
        w->st.redis_reconnects++;
        char nm[CONFIG_PATH_MAX + 8];
        fprintf(stderr, "tern: worker %d: %s reconnected\n", w->id, link_name(w, l, nm, sizeof(nm)));
    }
    /* A fresh link loads the scripts too: the first one's were loaded by
     * tern run, but a new cluster master may not have them. */
    l->warming = 1;
    load_scripts(w, l);
    if (w->ring_ok)
        worker_redis_arm_recv(w, l);
}

/* link_add makes a link to addr (connecting it when now), or NULL when
 * out of memory. */
static struct redis_link *link_add(struct worker *w, const char *addr)
{
    struct redis_link **nl = realloc(w->links, (size_t)(w->nlinks + 1) * sizeof(*nl));
    if (nl == NULL)
        return NULL;
    w->links = nl;
    struct redis_link *l = calloc(1, sizeof(*l));
    if (l == NULL || (l->recv = malloc(REDIS_RECV_SIZE)) == NULL) {
        free(l);
        return NULL;
    }
    l->idx = w->nlinks;
    l->fd = -1;
    snprintf(l->addr, sizeof(l->addr), "%s", addr);
    l->op_recv.kind = OP_REDIS_RECV;
    l->op_send.kind = OP_REDIS_SEND;
    buf_init(&l->out.active, 0);
    buf_init(&l->out.pending, 0);
    w->links[w->nlinks++] = l;
    return l;
}

/* The link for cluster node i of w->cluster, made when new. */
static struct redis_link *node_link(struct worker *w, int i, int connect)
{
    char addr[QUEUE_CLUSTER_ADDR_MAX];
    queue_cluster_node_addr(w->cluster, i, addr);
    for (int k = 0; k < w->nlinks; k++)
        if (strcmp(w->links[k]->addr, addr) == 0)
            return w->links[k];
    struct redis_link *l = link_add(w, addr);
    if (l && connect)
        link_open(w, l, 1);
    return l;
}

/* point_partitions: every partition at the link of the master serving
 * its slot; a slot no master serves keeps its link (its commands get
 * errors until the cluster is whole again). Returns 0 when out of memory. */
static int point_partitions(struct worker *w, int connect)
{
    for (int p = 0; p < w->cfg->queue.partitions; p++) {
        int node = queue_cluster_node_of(w->cluster, p);
        if (node < 0)
            continue;
        struct redis_link *l = node_link(w, node, connect);
        if (l == NULL)
            return 0;
        w->part_link[p] = l->idx;
    }
    return 1;
}

int worker_links_init(struct worker *w, char *err, size_t errlen)
{
    w->part_link = calloc((size_t)w->cfg->queue.partitions, sizeof(*w->part_link));
    if (w->part_link == NULL)
        goto oom;
    if (w->e->cluster == NULL) {
        struct redis_link *l = link_add(w, w->cfg->redis);
        if (l == NULL)
            goto oom;
        link_open(w, l, 1);
        return 1;
    }
    w->cluster = malloc(sizeof(*w->cluster));
    if (w->cluster == NULL)
        goto oom;
    memcpy(w->cluster, w->e->cluster, sizeof(*w->cluster));
    /* Link 0 is the address of `redis =` when it is a master, so that a
     * slot without a master still has a link to report errors from. */
    if (link_add(w, w->cfg->redis) == NULL || !point_partitions(w, 0))
        goto oom;
    for (int i = 0; i < w->nlinks; i++)
        link_open(w, w->links[i], 1);
    return 1;
oom:
    snprintf(err, errlen, "out of memory");
    return 0;
}

void worker_links_free(struct worker *w)
{
    for (int i = 0; i < w->nlinks; i++) {
        struct redis_link *l = w->links[i];
        worker_rq_drop(w, l);
        free(l->rq);
        free(l->recv);
        buf_free(&l->out.active);
        buf_free(&l->out.pending);
        if (l->reader)
            resp_pool_reader_free(l->reader);
        if (l->fd >= 0)
            close(l->fd);
        free(l);
    }
    free(w->links);
    w->links = NULL;
    w->nlinks = 0;
    free(w->part_link);
    w->part_link = NULL;
    free(w->cluster);
    w->cluster = NULL;
}

int worker_redis_redirected(struct worker *w, const redisReply *r)
{
    if (w->cluster == NULL || r->type != REDIS_REPLY_ERROR || r->str == NULL)
        return 0;
    if (strncmp(r->str, "ASK ", 4) == 0) {
        w->st.cluster_redirects++;
        return WORKER_REDIRECT_ASK;
    }
    if (strncmp(r->str, "MOVED ", 6) != 0)
        return 0;
    if (!w->slots_stale)
        fprintf(stderr, "tern: worker %d: Redis Cluster: %s; reading the slot map again\n", w->id,
                r->str);
    w->slots_stale = 1;
    w->st.cluster_redirects++;
    return WORKER_REDIRECT_MOVED;
}

int worker_redis_ask(struct worker *w, const redisReply *r, struct queue_msg *m)
{
    unsigned slot;
    char host[QUEUE_CLUSTER_HOST_MAX];
    int port, ask;
    if (!queue_cluster_parse_redirect(r->str, r->len, "", &slot, host, &port, &ask) || !ask ||
        host[0] == '\0')
        return 0;
    char addr[QUEUE_CLUSTER_ADDR_MAX];
    queue_cluster_addr(host, port, addr);
    struct redis_link *l = NULL;
    for (int k = 0; k < w->nlinks && l == NULL; k++)
        if (strcmp(w->links[k]->addr, addr) == 0)
            l = w->links[k];
    if (l == NULL && (l = link_add(w, addr)) != NULL)
        link_open(w, l, 1);
    if (l == NULL || !worker_link_ready(w, l))
        return 0;   /* a new master's link warms up first: asked again later */
    struct buf *out = outq_tail(&l->out);
    size_t mark = out->len;
    buf_append_str(out, "*1\r\n$6\r\nASKING\r\n");
    if (!queue_cmd_take_data(out, &w->cfg->queue, m) || out->err) {
        out->len = mark;
        out->err = 0;
        return 0;
    }
    worker_link_push(w, l, RQ_ASKING, m->partition, -1, NULL);
    worker_link_push(w, l, RQ_DATA, m->partition, -1, m);
    w->st.cluster_asks++;
    return 1;
}

int worker_redis_not_run(const redisReply *r)
{
    /* Errors Redis gives before running a command at all. */
    static const char *const pre[] = {"TRYAGAIN", "CLUSTERDOWN", "MOVED ", "ASK ", "LOADING",
                                      "NOSCRIPT", "BUSY ", "READONLY", "MASTERDOWN"};
    if (r->type != REDIS_REPLY_ERROR || r->str == NULL)
        return 0;
    for (size_t i = 0; i < sizeof(pre) / sizeof(pre[0]); i++)
        if (strncmp(r->str, pre[i], strlen(pre[i])) == 0)
            return 1;
    return 0;
}

void worker_redis_refresh(struct worker *w)
{
    if ((!w->slots_stale && !w->slots_wanted) || w->slots_asked || w->redis_dead)
        return;
    for (int i = 0; i < w->nlinks; i++) {
        struct redis_link *l = w->links[i];
        if (l->down || l->warming)
            continue;
        buf_append_str(outq_tail(&l->out), QUEUE_CLUSTER_SLOTS_CMD);
        worker_link_push(w, l, RQ_SLOTS, -1, -1, NULL);
        w->slots_asked = 1;
        return;
    }
}

void worker_redis_slots_reply(struct worker *w, struct redis_link *l, const redisReply *r)
{
    w->slots_asked = 0;
    w->slots_wanted = 0;   /* asked again at the next failed connect */
    struct queue_cluster_map *m = malloc(sizeof(*m));
    if (m == NULL)
        return;   /* asked again on the next tick */
    /* A node announcing no address is the one we asked. */
    char host[QUEUE_CLUSTER_HOST_MAX];
    queue_cluster_addr_host(l->addr, host);
    int standalone = 0;
    const char *err = NULL;
    if (!queue_cluster_parse_slots(r, host, m, &standalone, &err)) {
        fprintf(stderr, "tern: worker %d: Redis Cluster slot map: %s; asking again\n", w->id, err);
        free(m);
        return;   /* still stale: worker_redis_refresh asks again */
    }
    int changed = memcmp(w->cluster, m, sizeof(*m)) != 0;
    memcpy(w->cluster, m, sizeof(*m));
    free(m);
    if (!point_partitions(w, 1)) {
        fprintf(stderr, "tern: worker %d: Redis Cluster: out of memory; asking again\n", w->id);
        return;
    }
    w->slots_stale = 0;
    w->st.cluster_maps++;
    if (changed)
        fprintf(stderr, "tern: worker %d: Redis Cluster slot map read again: %d masters\n", w->id,
                w->cluster->nnodes);
    /* Takes on moved partitions start again at once. */
    for (int i = 0; i < w->nparts; i++) {
        w->parts[i].empty = 0;
        w->parts[i].next_poll_ms = 0;
    }
}

/* link_serves: some partition's commands go to l (always, with one Redis). */
static int link_serves(const struct worker *w, const struct redis_link *l)
{
    if (w->cluster == NULL)
        return 1;
    for (int p = 0; p < w->cfg->queue.partitions; p++)
        if (w->part_link[p] == l->idx)
            return 1;
    return 0;
}

static void link_tick(struct worker *w, struct redis_link *l)
{
    if (!l->down && !l->warming)
        return;
    if (!l->down) {   /* warming: load the scripts again after a failure */
        if (l->scripts_pending == 0 && w->now_ms >= l->retry_ms)
            load_scripts(w, l);
        return;
    }
    /* The old descriptor may only go once no ring operation uses it. A
     * master that serves no partition any more (failed over, its slots
     * moved) is not called again: its link stays, idle. */
    if (l->recv_armed || l->out.inflight || w->now_ms < l->retry_ms || !link_serves(w, l))
        return;
    if (l->fd >= 0) {
        close(l->fd);
        l->fd = -1;
    }
    link_open(w, l, 0);
}

void worker_redis_tick(struct worker *w)
{
    if (w->redis_dead)
        return;
    int waiting = 0;   /* a link its partitions wait for (not one failed over) */
    for (int i = 0; i < w->nlinks; i++)
        waiting |= (w->links[i]->down || w->links[i]->warming) && link_serves(w, w->links[i]);
    if (waiting && w->stopping && w->now_ms > w->stop_deadline_ms) {
        /* Stopping, and Redis did not come back in the grace period: the
         * held outcomes are dropped; their leases make them at-least-once. */
        fprintf(stderr, "tern: worker %d: Redis still not usable at the end of the grace "
                        "period; held outcomes left to their leases\n", w->id);
        w->redis_dead = 1;
        return;
    }
    for (int i = 0; i < w->nlinks; i++)
        link_tick(w, w->links[i]);
    worker_redis_refresh(w);
}
