/*
 * listener.c - the SMTP injection listener's thread; see listener.h.
 *
 * The ring, the receive buffers, connection slots, op tags and the
 * send/close mechanics (one send in flight, a connection freed when closing
 * and at zero ops) are engine/srv_io.h's, shared with the test sink; this
 * file adds the listener's limits, deadlines, AUTH and Redis.
 *
 * Completions are handled in batches: every CQE of one io_uring_enter is
 * handled, then (finish_batch) buffers are returned, Redis commands of
 * the whole batch leave in one send, and connection sends and closes are
 * started: replies to everything pipelined in one batch leave together.
 *
 * Redis: one link (struct llink) to `redis =`, or one per cluster master;
 * on each, commands appended to pending, replies matched in order against
 * a FIFO of expectations (struct rexp). A message's transactions (one per
 * partition on a cluster) share one struct lmsg, answered by the last.
 * Ring tags of a link's recv and send carry its index (the slot field)
 * and its connection's generation.
 */
#include "engine/listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <liburing.h>

#include "engine/auth.h"
#include "engine/auth_cache.h"
#include "engine/fifo.h"
#include "engine/auth_pool.h"
#include "engine/resp_feed.h"
#include "engine/resp_pool.h"
#include "engine/smtp_server.h"
#include "engine/srv_io.h"
#include "engine/worker.h"
#include "tls/tls.h"

#define LS_SQ_ENTRIES      512
#define LS_CQ_ENTRIES      4096
#define LS_BUF_SIZE        (16 * 1024)   /* one recv; <= TLS_FEED_MAX */
#define LS_NBUFS           256           /* power of two */
#define LS_BGID            7
#define LS_BACKLOG         1024
#define LS_TICK_MS         100
#define LS_REDIS_RECV      (64 * 1024)
#define LS_REDIS_TIMEOUT_MS 10000        /* an enqueue unanswered this long: Redis is gone */
#define LS_REDIS_RETRY_MS  1000          /* reconnect at most this often */
#define LS_STOP_GRACE_MS   10000         /* answers still due from Redis at stop */
#define LS_RECEIVED_MAX    1024          /* one Received: header */
#define LS_AUTH_TAKE       64            /* password results handled per read */

_Static_assert(LS_BUF_SIZE <= TLS_FEED_MAX, "one recv must fit one TLS feed");
_Static_assert((LS_NBUFS & (LS_NBUFS - 1)) == 0, "buffer ring size is a power of two");

/* Ops of the listener; receive, send and cancel are srv_io's. */
enum op_kind { OP_ACCEPT = SRV_OP_USER, OP_WAKE, OP_TICK, OP_RRECV, OP_RSEND, OP_AUTH };

struct lconn {
    struct srv_conn io;         /* first: the slot table holds these */
    unsigned counted : 1;       /* counts against the connection limits */
    unsigned redis_wait : 1;    /* message handed to Redis, reply pending */
    unsigned auth_wait : 1;     /* password handed to the auth pool */
    unsigned auth_follow : 1;   /* ...by another session: waits for that check */
    uint8_t auth_digest[AUTH_CACHE_DIGEST];   /* while auth_wait: its cache key */
    int lidx;                   /* which listen line */
    struct tls_gen *tls_gen;    /* the contexts its TLS came from (NULL: none yet) */
    struct smtp_server smtp;
    char ip[INET6_ADDRSTRLEN];
    int64_t deadline_ms;        /* monotonic */
};

/* One set of the listen lines' TLS contexts (certificates, keys, ticket
 * keys). listener_reload (SIGHUP) makes a new set from the same files; a
 * connection keeps the set it started TLS with (its BIOs and SSL use it),
 * and a replaced set is freed with its last connection. Only the
 * listener's thread counts and frees. */
struct tls_gen {
    struct tls_server_ctx *tls[LISTEN_MAX];
    int conns;                  /* connections whose TLS came from it */
    int retired;                /* replaced: freed at conns == 0 */
};

/* One queue entry of a message in flight: enough to remove its body
 * again (queue_cmd_enqueue_undo) if its script does not make the entry. */
struct lentry {
    char id[QUEUE_ID_MAX];
    int partition;
};

/* A message in flight. Its entries may belong to partitions on several
 * cluster masters, and one MULTI cannot span nodes: it goes out as one
 * transaction per master (link), all pointing here. The last
 * transaction's reply answers the client: 250 only when every one made
 * all its entries. Owned by its transactions: the last one frees it. */
struct lmsg {
    uint32_t slot, gen;         /* the client's connection */
    int txs;                    /* transactions not answered yet */
    int failed;
    char id[QUEUE_ID_MAX];      /* the first entry's id, for the 250 */
};

enum rexp_kind {
    REXP_TX,                    /* MULTI, a message's entries on this link, EXEC */
    REXP_SCRIPT,                /* a SCRIPT LOAD, nothing waits on it */
    REXP_UNDO,                  /* an HDEL of a body without entry, nothing waits on it */
    REXP_SLOTS,                 /* CLUSTER SLOTS: the map is read again */
};

/* What the next reply of a link belongs to. */
struct rexp {
    enum rexp_kind kind;
    struct lmsg *msg;           /* REXP_TX: shared with its other transactions */
    int left;                   /* replies still due: MULTI, QUEUED..., EXEC */
    int ndomains;               /* entries in this transaction */
    int failed;
    int64_t sent_ms;
    struct lentry *entries;     /* ndomains of them; owned, freed by tx_done */
};

/* A Redis connection: to `redis =`, or one per cluster master. Commands
 * are appended to pending, replies matched in order against rq. Links
 * are never freed before the listener (a node that serves nothing any
 * more keeps an idle link), so an index names one for good. */
struct llink {
    uint32_t idx;               /* in listener.links; the slot of its ring tags */
    char addr[CONFIG_PATH_MAX];
    int fd;
    uint32_t gen;               /* of its ring tags; a new one per connection */
    redisReader *reader;        /* replaced at each connect */
    uint8_t *recv;
    struct buf sending, pending;
    int send_inflight, recv_armed;
    int64_t retry_ms;
    struct rexp *rq;
    size_t rq_head, rq_len, rq_cap;
};

struct listener {
    const struct tern_config *cfg;
    const struct listen_config *lc;
    struct queue_scripts scripts;
    struct auth_creds *creds;   /* the pool's (auth_pool_set_creds replaces them) */
    int has_creds;
    struct auth_pool *pool;     /* password checks, off this thread */
    struct auth_cache *auth_cache;   /* checks that passed (NULL: listen_auth_cache = 0) */
    /* checks in the pool, by the digest of what they check: a session
     * with the same credentials waits for that check instead of adding
     * one (AUTH_POOL_QUEUE_MAX of them at most, the pool's own bound) */
    struct auth_flight {
        uint64_t tag;
        uint64_t gen;           /* creds_gen when it was asked */
        uint8_t digest[AUTH_CACHE_DIGEST];
    } *flights;
    size_t nflights;
    uint64_t creds_gen;         /* credentials files read (listener_reload) */
    uint64_t auth_val;
    int lfd[LISTEN_MAX];
    struct tls_gen *gen;        /* the TLS contexts new connections get */
    pthread_mutex_t reload_mu;  /* guards reload_next */
    struct tls_gen *reload_next;   /* made by listener_reload, taken by the thread */
    int reload_creds;           /* ...and the pool has new credentials: forget the old */
    struct smtp_server_config scfg[LISTEN_MAX];
    int wake_fd;
    pthread_t thread;
    int started;
    _Atomic int stop_asked;
    struct listener_stats_atomic {
        _Atomic uint64_t connections, refused_conns, messages, rejected_redis, tls, auth_ok,
            auth_failed, auth_cached, auth_checks, reloads;
    } st;

    /* thread state */
    struct srv_io io;           /* ring, receive buffers, connection slots */
    int live;                   /* counted connections */
    int accept_armed[LISTEN_MAX];
    struct buf plain;           /* TLS plaintext scratch */
    struct buf msg;             /* Received: + message data */
    uint64_t wake_val;
    struct __kernel_timespec tick_ts;
    int64_t now_ms;             /* monotonic */
    int stopping;
    int64_t stop_deadline_ms;
    int done;

    /* Redis: links[0] to `redis =`; with a cluster one more per master */
    struct llink **links;
    uint32_t nlinks;
    struct queue_cluster_map *map;   /* private copy; NULL: one Redis */
    uint32_t *part_link;        /* every partition's link (queue.partitions); map only */
    int slots_stale;            /* a MOVED/ASK came: the map is read again */
    int slots_asked;            /* ...and CLUSTER SLOTS is on a link */
    /* A master could not be reached: the map is read again, messages not
     * held for it (a replica may have taken over its slots). */
    int slots_wanted;
    int64_t slots_next_ms;      /* after a reply that was no map: ask again then */
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

_Static_assert(offsetof(struct lconn, io) == 0, "struct lconn starts with its srv_conn");

/* The connection whose srv_conn this is (its first member). */
static struct lconn *lconn_from(struct srv_conn *b)
{
    return (struct lconn *)b;
}

static void count(_Atomic uint64_t *c)
{
    atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

static void logf_ls(const char *what, const char *detail)
{
    fprintf(stderr, "tern: listener: %s: %s\n", what, detail);
}

/* --- connections: output and closing ------------------------------------ */

static void flush_smtp(struct listener *l, struct lconn *c)
{
    size_t n;
    const uint8_t *p = smtp_server_output(&c->smtp, &n);
    srv_conn_write(&l->io, &c->io, p, n);  /* a TLS failure closes it */
    smtp_server_output_consume(&c->smtp, n);
}

/* Say a last line (421) and close. */
static void say_and_close(struct listener *l, struct lconn *c, const char *text)
{
    if (c->io.tls && !c->io.tls_done) {   /* mid-handshake: no place for a reply */
        srv_conn_close(&l->io, &c->io, SRV_CLOSE_GRACEFUL);
        return;
    }
    char line[SMTP_SERVER_REPLY_MAX];
    int n = snprintf(line, sizeof(line), "421 %s %s\r\n", l->cfg->hostname, text);
    if (n > 0)
        srv_conn_write(&l->io, &c->io, (const uint8_t *)line,
                       (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
    srv_conn_finish(&l->io, &c->io);
}

static void set_deadline(struct listener *l, struct lconn *c)
{
    enum smtp_server_state st = c->smtp.state;
    int64_t to = (st == SMTP_SRV_ST_DATA || st == SMTP_SRV_ST_BDAT) ? l->lc->data_timeout_ms
                                                                   : l->lc->command_timeout_ms;
    c->deadline_ms = c->redis_wait || c->auth_wait ? INT64_MAX : l->now_ms + to;
}

/* --- Redis --------------------------------------------------------------- */

static struct rexp *rq_push(struct llink *k)
{
    void *rq = k->rq;
    if (!fifo_make_room(&rq, sizeof(*k->rq), &k->rq_head, k->rq_len, &k->rq_cap))
        return NULL;
    k->rq = rq;
    struct rexp *e = &k->rq[(k->rq_head + k->rq_len) % k->rq_cap];
    memset(e, 0, sizeof(*e));
    k->rq_len++;
    return e;
}

/* rq_pop: the oldest expectation, copied out (handling it may push more). */
static struct rexp rq_pop(struct llink *k)
{
    struct rexp e = k->rq[k->rq_head];
    k->rq_head = (k->rq_head + 1) % k->rq_cap;
    k->rq_len--;
    return e;
}

static struct lconn *conn_at(struct listener *l, uint32_t slot, uint32_t gen)
{
    struct srv_conn *b = srv_conn_at(&l->io, slot, gen);
    return b ? lconn_from(b) : NULL;
}

static void run_smtp(struct listener *l, struct lconn *c);

/* How the log names a link: "Redis", or "Redis 127.0.0.1:7001" in a cluster. */
static void log_link(const struct listener *l, const struct llink *k, const char *what,
                     const char *detail)
{
    if (l->map == NULL)
        fprintf(stderr, "tern: listener: Redis %s: %s\n", what, detail);
    else
        fprintf(stderr, "tern: listener: Redis %s %s: %s\n", k->addr, what, detail);
}

/* tx_release frees a transaction's entries and returns its message when
 * it was the message's last transaction (then the caller answers and
 * frees it), else NULL. */
static struct lmsg *tx_release(struct rexp *e, int ok)
{
    free(e->entries);
    e->entries = NULL;
    struct lmsg *m = e->msg;
    e->msg = NULL;
    if (m == NULL)
        return NULL;
    m->failed |= !ok;
    return --m->txs == 0 ? m : NULL;
}

/* One transaction of a message answered (ok: all its entries made). When
 * it is the last, the client gets the queue's answer, 250 or 451, then
 * whatever it pipelined behind. */
static void tx_done(struct listener *l, struct rexp *e, int ok)
{
    struct lmsg *m = tx_release(e, ok);
    if (m == NULL)
        return;     /* another master's transaction is still out */
    ok = !m->failed;
    struct lconn *c = conn_at(l, m->slot, m->gen);
    if (ok)
        count(&l->st.messages);
    else
        count(&l->st.rejected_redis);
    char line[96];
    if (ok)
        snprintf(line, sizeof(line), "250 2.0.0 Ok: queued as %s", m->id);
    else
        snprintf(line, sizeof(line), "451 4.3.0 Error: queue unavailable, try again later");
    free(m);
    if (c == NULL || !c->redis_wait)
        return;     /* the client left; its message is stored (or not) all the same */
    c->redis_wait = 0;
    smtp_server_message_reply(&c->smtp, line);
    set_deadline(l, c);
    if (!c->io.closing)
        run_smtp(l, c);
}

static void link_down(struct listener *l, struct llink *k, const char *why)
{
    if (k->fd < 0)
        return;
    log_link(l, k, "connection lost", why);
    shutdown(k->fd, SHUT_RDWR);
    close(k->fd);
    k->fd = -1;
    k->gen++;                   /* completions still on the ring are stale */
    k->recv_armed = 0;
    buf_reset(&k->pending);
    if (!k->send_inflight)
        buf_reset(&k->sending);
    k->retry_ms = l->now_ms + LS_REDIS_RETRY_MS;
    /* Whatever was sent may or may not have run; the clients are told to
     * try again (at-least-once), never told 250 for a message not stored.
     * (Answering runs the client's next message: it finds this link down
     * until retry_ms, so nothing is pushed here while this drains.) */
    while (k->rq_len) {
        struct rexp e = rq_pop(k);
        if (e.kind == REXP_TX)
            tx_done(l, &e, 0);
        else if (e.kind == REXP_SLOTS)
            l->slots_asked = 0;   /* asked again on another link */
    }
}

static void script_load(struct listener *l, struct llink *k)
{
    struct rexp *e = rq_push(k);
    if (e == NULL || !queue_cmd_script_load(&k->pending, queue_script_enqueue_src())) {
        link_down(l, k, "out of memory");
        return;
    }
    e->kind = REXP_SCRIPT;
    e->sent_ms = l->now_ms;
}

/* A usable connection on link k, connecting when it is time to. The
 * first thing a new connection gets is SCRIPT LOAD (a restarted Redis, a
 * master met for the first time: the script may be missing); the
 * commands behind it run after it. */
static int link_ready(struct listener *l, struct llink *k)
{
    if (k->fd >= 0)
        return 1;
    if (l->now_ms < k->retry_ms)
        return 0;
    k->retry_ms = l->now_ms + LS_REDIS_RETRY_MS;
    redisReader *r = resp_pool_reader_new();   /* its resp_splice bounds arrays (resp_splice.h) */
    if (r == NULL) {
        log_link(l, k, "connect", "out of memory");
        return 0;
    }
    r->maxbuf = 0;
    char err[256];
    int fd = worker_redis_connect(k->addr, err, sizeof(err));
    if (fd < 0) {
        resp_pool_reader_free(r);
        logf_ls("Redis", err);
        if (l->map)
            l->slots_wanted = 1;   /* failed over? the other masters know */
        return 0;
    }
    /* The old reader may hold half a reply of the lost connection. It is
     * not in use now: a connection is made only outside its feed (the
     * feed's link is down until retry_ms, after this batch). */
    if (k->reader)
        resp_pool_reader_free(k->reader);
    k->reader = r;
    k->fd = fd;
    script_load(l, k);
    return k->fd >= 0;
}

/* undo_entry removes the body an entry's HSETNX stored when its script
 * did not make the entry, so a refused message leaves nothing behind. */
static void undo_entry(struct listener *l, struct llink *k, const struct lentry *le)
{
    struct rexp *u = rq_push(k);
    size_t mark = k->pending.len;
    if (u == NULL || !queue_cmd_enqueue_undo(&k->pending, &l->cfg->queue, le->partition, le->id)) {
        if (u != NULL)
            k->rq_len--;            /* the expectation just pushed */
        k->pending.len = mark;
        k->pending.err = 0;
        logf_ls("cannot remove the body of unqueued entry", le->id);
        return;
    }
    u->kind = REXP_UNDO;
    u->sent_ms = l->now_ms;
}

/* A MOVED error: the slot map is out of date (a slot has a new master).
 * The command was not run; the map is read again (link_refresh) and
 * messages get 451 until then. ASK (a slot being migrated) changes no
 * map: that message got 451, and the partition's enqueues keep getting
 * it until the move ends (its keys are split between two masters, which
 * no transaction can span); the other partitions carry on. */
static void note_redirect(struct listener *l, const redisReply *r)
{
    if (l->map == NULL || r->type != REDIS_REPLY_ERROR || r->str == NULL ||
        strncmp(r->str, "MOVED ", 6) != 0)
        return;
    if (!l->slots_stale)
        logf_ls("Redis Cluster", "a redirection; reading the slot map again");
    l->slots_stale = 1;
}

/* Check one reply of a transaction: MULTI, QUEUE_ENQUEUE_CMDS QUEUED per
 * entry, then the EXEC's array, the script's elements saying whether each
 * entry was made. */
static void tx_reply(struct listener *l, struct llink *k, struct rexp *e, redisReply *r)
{
    const char *err = NULL, *text = "";
    if (e->left > 0) {
        if (r->type == REDIS_REPLY_ERROR) {
            if (!e->failed)         /* the cause; the EXEC says only EXECABORT */
                log_link(l, k, "enqueue refused", r->str ? r->str : "?");
            e->failed = 1;
            note_redirect(l, r);
        }
        return;
    }
    note_redirect(l, r);
    int ok = !e->failed && r->type == REDIS_REPLY_ARRAY &&
             r->elements == (size_t)e->ndomains * QUEUE_ENQUEUE_CMDS;
    int ran = ok, noscript = 0;     /* ran: the EXEC ran every command */
    for (int i = 0; ran && i < e->ndomains; i++) {
        const char *why = NULL, *t;
        int wrote;
        if (queue_parse_enqueue((const redisReply *const *)r->element + (size_t)i * QUEUE_ENQUEUE_CMDS,
                                &wrote, &why, &t))
            continue;
        if (ok) {
            err = why;
            text = t;
        }
        ok = 0;
        noscript |= strcmp(why, "NOSCRIPT") == 0;
        if (wrote)
            undo_entry(l, k, &e->entries[i]);
    }
    if (noscript)
        script_load(l, k);
    if (!ok && !e->failed)
        log_link(l, k, "enqueue failed", r->type == REDIS_REPLY_ERROR ? r->str
                                         : text[0] ? text : err ? err : "aborted");
    tx_done(l, e, ok);
}

static void slots_reply(struct listener *l, struct llink *k, const redisReply *r);

static void on_redis_reply(struct listener *l, struct llink *k, redisReply *r)
{
    if (k->rq_len == 0) {
        log_link(l, k, "reply", "unexpected");
        return;
    }
    struct rexp *e = &k->rq[k->rq_head];
    if (e->kind == REXP_TX && --e->left > 0) {
        tx_reply(l, k, e, r);
        return;
    }
    struct rexp done = rq_pop(k);
    switch (done.kind) {
    case REXP_TX:
        tx_reply(l, k, &done, r);
        break;
    case REXP_SLOTS:
        slots_reply(l, k, r);
        break;
    default:
        if (r->type == REDIS_REPLY_ERROR)
            log_link(l, k, done.kind == REXP_SCRIPT ? "SCRIPT LOAD failed"
                                                    : "removing an unqueued body failed", r->str);
        break;
    }
}

struct feed_ctx {
    struct listener *l;
    struct llink *k;
    uint32_t gen;
};

static int redis_reply_cb(void *ctx, redisReply *r)
{
    struct feed_ctx *f = ctx;
    on_redis_reply(f->l, f->k, r);
    return f->k->gen == f->gen;   /* dropped while handling it: the rest is moot */
}

static void redis_on_recv(struct listener *l, struct io_uring_cqe *cqe)
{
    uint32_t i = srv_tag_slot(cqe->user_data);
    if (i >= l->nlinks || srv_tag_gen(cqe->user_data) != l->links[i]->gen)
        return;
    struct llink *k = l->links[i];
    k->recv_armed = 0;
    if (cqe->res <= 0) {
        link_down(l, k, cqe->res == 0 ? "EOF" : strerror(-cqe->res));
        return;
    }
    struct feed_ctx f = {l, k, k->gen};
    if (resp_feed(k->reader, k->recv, (size_t)cqe->res, redis_reply_cb, &f) < 0 && k->gen == f.gen)
        link_down(l, k, k->reader->err ? k->reader->errstr : "protocol error");
}

static void redis_on_send(struct listener *l, struct io_uring_cqe *cqe)
{
    uint32_t i = srv_tag_slot(cqe->user_data);
    if (i >= l->nlinks)
        return;
    struct llink *k = l->links[i];
    k->send_inflight = 0;
    if (srv_tag_gen(cqe->user_data) != k->gen) {
        buf_reset(&k->sending);     /* for a connection already gone */
        return;
    }
    if (cqe->res < 0) {
        buf_reset(&k->sending);
        link_down(l, k, strerror(-cqe->res));
        return;
    }
    buf_consume(&k->sending, (size_t)cqe->res);
}

/* Once per batch: start a send of what is queued; keep a recv armed. */
static void link_kick(struct listener *l, struct llink *k)
{
    if (k->fd < 0)
        return;
    if (!k->send_inflight) {
        if (buf_used(&k->sending) == 0 && buf_used(&k->pending) > 0) {
            struct buf t = k->sending;
            k->sending = k->pending;
            k->pending = t;
        }
        if (buf_used(&k->sending) > 0) {
            struct io_uring_sqe *sqe = srv_io_sqe(&l->io);
            io_uring_prep_send(sqe, k->fd, buf_peek(&k->sending), buf_used(&k->sending),
                               MSG_NOSIGNAL);
            io_uring_sqe_set_data64(sqe, srv_tag(OP_RSEND, k->idx, k->gen));
            k->send_inflight = 1;
        }
    }
    if (!k->recv_armed) {  /* also while idle: a lost connection shows at once */
        struct io_uring_sqe *sqe = srv_io_sqe(&l->io);
        io_uring_prep_recv(sqe, k->fd, k->recv, LS_REDIS_RECV, 0);
        io_uring_sqe_set_data64(sqe, srv_tag(OP_RRECV, k->idx, k->gen));
        k->recv_armed = 1;
    }
}

static void redis_kick(struct listener *l)
{
    for (uint32_t i = 0; i < l->nlinks; i++)
        link_kick(l, l->links[i]);
}

/* --- Redis Cluster: links per master ------------------------------------ */

/* link_add makes a link to addr, not connected yet (link_ready connects
 * it when a message needs it), or NULL when out of memory. */
static struct llink *link_add(struct listener *l, const char *addr)
{
    struct llink **nl = realloc(l->links, (size_t)(l->nlinks + 1) * sizeof(*nl));
    if (nl == NULL)
        return NULL;
    l->links = nl;
    struct llink *k = calloc(1, sizeof(*k));
    if (k == NULL || (k->recv = malloc(LS_REDIS_RECV)) == NULL) {
        free(k);
        return NULL;
    }
    k->idx = l->nlinks;
    k->fd = -1;
    snprintf(k->addr, sizeof(k->addr), "%s", addr);
    buf_init(&k->sending, 0);
    buf_init(&k->pending, 0);
    l->links[l->nlinks++] = k;
    return k;
}

static void link_free(struct llink *k)
{
    /* The connections are gone: a message is freed with its last transaction. */
    for (size_t i = 0; i < k->rq_len; i++) {
        struct rexp *e = &k->rq[(k->rq_head + i) % k->rq_cap];
        free(tx_release(e, 0));
    }
    free(k->rq);
    free(k->recv);
    buf_free(&k->sending);
    buf_free(&k->pending);
    if (k->reader)
        resp_pool_reader_free(k->reader);
    if (k->fd >= 0)
        close(k->fd);
    free(k);
}

/* point_partitions: every partition at the link of the master serving
 * its slot (a new master gets a new link); a slot no master serves keeps
 * its link (its commands get errors, and 451, until the cluster is whole
 * again). Returns 0 when out of memory. */
static int point_partitions(struct listener *l)
{
    for (int p = 0; p < l->cfg->queue.partitions; p++) {
        int node = queue_cluster_node_of(l->map, p);
        if (node < 0)
            continue;
        char addr[QUEUE_CLUSTER_ADDR_MAX];
        queue_cluster_node_addr(l->map, node, addr);
        uint32_t i = 0;
        while (i < l->nlinks && strcmp(l->links[i]->addr, addr) != 0)
            i++;
        if (i == l->nlinks && link_add(l, addr) == NULL)
            return 0;
        l->part_link[p] = i;
    }
    return 1;
}

/* The map is out of date: ask CLUSTER SLOTS on a live link (a connected
 * one first, else the first that connects). Called for every message and
 * every tick while stale. */
static void link_refresh(struct listener *l)
{
    if ((!l->slots_stale && !l->slots_wanted) || l->slots_asked || l->now_ms < l->slots_next_ms)
        return;
    struct llink *k = NULL;
    for (uint32_t i = 0; i < l->nlinks && k == NULL; i++)
        if (l->links[i]->fd >= 0)
            k = l->links[i];
    for (uint32_t i = 0; i < l->nlinks && k == NULL; i++)
        if (link_ready(l, l->links[i]))
            k = l->links[i];
    if (k == NULL)
        return;
    struct rexp *e = rq_push(k);
    if (e == NULL)
        return;                     /* asked again on the next tick */
    size_t mark = k->pending.len;
    if (!buf_append_str(&k->pending, QUEUE_CLUSTER_SLOTS_CMD) || k->pending.err) {
        k->rq_len--;
        k->pending.len = mark;
        k->pending.err = 0;
        return;
    }
    e->kind = REXP_SLOTS;
    e->sent_ms = l->now_ms;
    l->slots_asked = 1;
}

static void slots_reply(struct listener *l, struct llink *k, const redisReply *r)
{
    l->slots_asked = 0;
    l->slots_wanted = 0;        /* asked again at the next failed connect */
    struct queue_cluster_map *m = malloc(sizeof(*m));
    if (m == NULL) {
        l->slots_next_ms = l->now_ms + LS_REDIS_RETRY_MS;
        return;                     /* still stale: asked again */
    }
    /* A node announcing no address is the one we asked. */
    char host[QUEUE_CLUSTER_HOST_MAX];
    queue_cluster_addr_host(k->addr, host);
    int standalone = 0;
    const char *err = NULL;
    if (!queue_cluster_parse_slots(r, host, m, &standalone, &err)) {
        /* e.g. -CLUSTERDOWN, -LOADING: not every tick */
        logf_ls("Redis Cluster slot map", standalone ? "no cluster any more" : err);
        l->slots_next_ms = l->now_ms + LS_REDIS_RETRY_MS;
        free(m);
        return;
    }
    int changed = memcmp(l->map, m, sizeof(*m)) != 0;
    memcpy(l->map, m, sizeof(*m));
    free(m);
    if (!point_partitions(l)) {
        logf_ls("Redis Cluster slot map", "out of memory; asking again");
        l->slots_next_ms = l->now_ms + LS_REDIS_RETRY_MS;
        return;
    }
    l->slots_stale = 0;
    if (changed)
        fprintf(stderr, "tern: listener: Redis Cluster slot map read again: %d masters\n",
                l->map->nnodes);
}

/* The link of partition p's master (links[0] without a cluster). */
static struct llink *link_of(const struct listener *l, int p)
{
    return l->part_link ? l->links[l->part_link[p]] : l->links[0];
}

/* --- messages ------------------------------------------------------------ */

struct rcpt_group {
    char a[QUEUE_ADDR_MAX + 1];
    const char *domain;     /* inside a, lower-cased */
    int group;              /* index of the first recipient of its domain */
    int partition;          /* of the domain (first recipient of a group only) */
    struct llink *link;     /* its master's link (first recipient of a group only) */
    int tx;                 /* its transaction: the partition, or 0 without a cluster */
    char id[QUEUE_ID_MAX];  /* its entry's id (first recipient of a group only) */
};

/* "Received:" trace header (RFC 5321 4.4) into l->msg. */
static void add_received(struct listener *l, struct lconn *c, const struct smtp_server_envelope *e,
                         const char *id)
{
    char date[64], line[LS_RECEIVED_MAX];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
    const char *with = e->tls ? (c->smtp.authed ? "ESMTPSA" : "ESMTPS")
                              : (c->smtp.authed ? "ESMTPA" : "ESMTP");
    int n = snprintf(line, sizeof(line),
                     "Received: from %s ([%s])\r\n\tby %s (tern) with %s id %s;\r\n\t%s\r\n",
                     e->helo, c->ip, l->cfg->hostname, with, id, date);
    if (n > 0 && (size_t)n < sizeof(line))
        buf_append(&l->msg, line, (size_t)n);
}

/* One transaction per partition the message has entries in (on a
 * cluster; one for all on a standalone Redis, all-or-nothing): MULTI, the
 * enqueues of its recipient domains, EXEC, appended to the link of the
 * partition's master with an expectation pointing to m. Per partition,
 * not per master: a cluster refuses a transaction whose keys are in more
 * than one slot (CROSSSLOT), and a partition is one slot. Every link is
 * checked first: when one cannot be used, nothing is sent anywhere (no
 * entry made on one master for a message refused on another). Returns
 * the number of transactions, or 0 (nothing appended, m untouched) when
 * the message cannot be queued. */
static int build_txs(struct listener *l, const struct smtp_server_envelope *e,
                     struct rcpt_group *g, size_t nr, const char **list, struct lmsg *m)
{
    for (size_t i = 0; i < nr; i++)
        if (g[i].group == (int)i && !link_ready(l, g[i].link))
            return 0;
    /* Where each transaction's link buffer stood, to take it all back. */
    struct mark {
        struct llink *k;
        size_t len;
    } *marks = calloc(nr, sizeof(*marks));
    if (marks == NULL)
        return 0;
    int nt = 0, ok = 1;
    int64_t now = wall_ms();
    for (size_t i = 0; i < nr && ok; i++) {
        if (g[i].group != (int)i)
            continue;
        int seen = 0;
        for (size_t j = 0; j < i && !seen; j++)
            seen = g[j].group == (int)j && g[j].tx == g[i].tx;
        if (seen)
            continue;                   /* it went with the first domain of its partition */
        struct llink *k = g[i].link;
        size_t nd = 0;
        for (size_t j = i; j < nr; j++)
            nd += g[j].group == (int)j && g[j].tx == g[i].tx;
        struct rexp *x = rq_push(k);
        if (x == NULL) {
            ok = 0;
            break;
        }
        marks[nt].k = k;
        marks[nt++].len = k->pending.len;
        x->kind = REXP_TX;
        x->msg = m;
        x->sent_ms = l->now_ms;
        x->entries = calloc(nd, sizeof(*x->entries));
        if (x->entries == NULL) {
            ok = 0;
            break;
        }
        buf_append_str(&k->pending, "*1\r\n$5\r\nMULTI\r\n");
        for (size_t j = i; j < nr && ok; j++) {
            if (g[j].group != (int)j || g[j].tx != g[i].tx)
                continue;
            size_t n = 0;
            for (size_t t = j; t < nr; t++)
                if (g[t].group == (int)j)
                    list[n++] = g[t].a;
            ok = queue_cmd_enqueue(&k->pending, &l->cfg->queue, &l->scripts, g[j].id, e->mail_from,
                                   list, n, g[j].domain, buf_peek(&l->msg), buf_used(&l->msg), now);
            memcpy(x->entries[x->ndomains].id, g[j].id, QUEUE_ID_MAX);
            x->entries[x->ndomains++].partition = g[j].partition;
        }
        buf_append_str(&k->pending, "*1\r\n$4\r\nEXEC\r\n");
        x->left = x->ndomains * QUEUE_ENQUEUE_CMDS + 2;
        ok = ok && !k->pending.err;
    }
    if (!ok) {
        /* Nothing of this message goes out: every link as it was, the
         * last transaction first (each is its link's last expectation). */
        for (int j = nt - 1; j >= 0; j--) {
            struct llink *k = marks[j].k;
            struct rexp *x = &k->rq[(k->rq_head + k->rq_len - 1) % k->rq_cap];
            free(x->entries);
            k->rq_len--;
            k->pending.len = marks[j].len;
            k->pending.err = 0;
        }
        nt = 0;
    }
    free(marks);
    return nt;
}

/* Build the message's transactions (build_txs) after grouping its
 * recipients by domain (one entry each) and making its body. Returns the
 * number of transactions, or 0 when it cannot be queued. */
static int build_enqueue(struct listener *l, struct lconn *c, const struct smtp_server_envelope *e,
                         struct lmsg *m)
{
    size_t n = e->nrcpts;
    struct rcpt_group *g = calloc(n, sizeof(*g));
    const char **list = calloc(n, sizeof(*list));
    int nt = 0;
    size_t nr = 0;
    if (g == NULL || list == NULL)
        goto out;
    for (size_t i = 0; i < n; i++) {
        snprintf(g[nr].a, sizeof(g[nr].a), "%s", e->rcpts[i]);
        char *at = strrchr(g[nr].a, '@');
        if (at == NULL)
            goto out;   /* the session checked addresses: cannot happen */
        for (char *p = at + 1; *p; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p + 32);
        g[nr].domain = at + 1;
        g[nr].group = (int)nr;
        int dup = 0;
        for (size_t j = 0; j < nr && !dup; j++) {
            dup = strcmp(g[j].a, g[nr].a) == 0;
            if (!dup && strcmp(g[j].domain, g[nr].domain) == 0)
                g[nr].group = g[j].group;
        }
        if (!dup)
            nr++;
    }
    buf_reset(&l->msg);
    int first = 1;
    for (size_t i = 0; i < nr; i++) {
        if (g[i].group != (int)i)
            continue;
        queue_new_id(g[i].id);
        g[i].partition = queue_partition_of(&l->cfg->queue, g[i].domain, strlen(g[i].domain));
        g[i].link = link_of(l, g[i].partition);
        g[i].tx = l->map ? g[i].partition : 0;
        if (first) {
            first = 0;
            memcpy(m->id, g[i].id, sizeof(m->id));
            if (l->lc->received)
                add_received(l, c, e, g[i].id);
            buf_append(&l->msg, e->data, e->data_len);
        }
    }
    if (!first && !l->msg.err)
        nt = build_txs(l, e, g, nr, list, m);
    if (l->msg.cap > LS_BUF_SIZE * 64)
        buf_free(&l->msg);          /* do not pin the largest message */
out:
    free(g);
    free(list);
    return nt;
}

static void on_message(struct listener *l, struct lconn *c)
{
    struct smtp_server_envelope e;
    if (!smtp_server_envelope(&c->smtp, &e))
        return;
    /* A stale cluster map would send entries to masters that no longer
     * serve them: 451 (the client retries) until it is read again. */
    link_refresh(l);
    struct lmsg *m = l->slots_stale ? NULL : calloc(1, sizeof(*m));
    int nt = m ? build_enqueue(l, c, &e, m) : 0;
    if (nt == 0) {
        free(m);
        count(&l->st.rejected_redis);
        smtp_server_message_reply(&c->smtp, "451 4.3.0 Error: queue unavailable, try again later");
        return;
    }
    m->slot = c->io.slot;
    m->gen = c->io.gen;
    m->txs = nt;
    c->redis_wait = 1;
    set_deadline(l, c);
}

/* ok: 1, 0, or SMTP_SERVER_AUTH_UNAVAILABLE (the check could not run) */
static void auth_answer(struct listener *l, struct lconn *c, int ok)
{
    count(ok == 1 ? &l->st.auth_ok : &l->st.auth_failed);
    if (ok != 1)
        fprintf(stderr, "tern: listener: AUTH %s for \"%s\" from %s\n",
                ok ? "not checked (password checks queue full)" : "failed", c->smtp.auth_user, c->ip);
    smtp_server_auth_result(&c->smtp, ok);
}

static struct auth_flight *flight_of(struct listener *l, const uint8_t *digest)
{
    for (size_t i = 0; i < l->nflights; i++)
        if (l->flights[i].gen == l->creds_gen &&
            memcmp(l->flights[i].digest, digest, AUTH_CACHE_DIGEST) == 0)
            return &l->flights[i];
    return NULL;
}

/* Credentials that passed within listen_auth_cache are accepted at once;
 * credentials a check in the pool is already checking wait for it (a
 * hundred clients that reconnect at once with one account cost one
 * check, not a hundred); others go to the auth pool. The session waits
 * (paused in AUTH_PENDING) for on_auth_results. */
static void on_auth(struct listener *l, struct lconn *c)
{
    const char *user, *pass;
    if (!smtp_server_auth_creds(&c->smtp, &user, &pass))
        return;
    if (l->auth_cache) {
        auth_cache_digest(l->auth_cache, user, pass, c->auth_digest);
        if (auth_cache_hit(l->auth_cache, c->auth_digest, l->now_ms)) {
            explicit_bzero(c->auth_digest, sizeof(c->auth_digest));
            count(&l->st.auth_cached);
            auth_answer(l, c, 1);
            return;
        }
        if (flight_of(l, c->auth_digest)) {
            c->auth_wait = c->auth_follow = 1;
            set_deadline(l, c);
            return;
        }
    }
    uint64_t tag = (uint64_t)c->io.slot << 32 | c->io.gen;
    if (l->pool && (!l->auth_cache || l->nflights < AUTH_POOL_QUEUE_MAX) &&
        auth_pool_submit(l->pool, tag, user, pass)) {
        count(&l->st.auth_checks);
        if (l->auth_cache) {
            l->flights[l->nflights].tag = tag;
            l->flights[l->nflights].gen = l->creds_gen;
            memcpy(l->flights[l->nflights++].digest, c->auth_digest, AUTH_CACHE_DIGEST);
        }
        c->auth_wait = 1;
        set_deadline(l, c);
        return;
    }
    explicit_bzero(c->auth_digest, sizeof(c->auth_digest));
    /* no credentials file: refused; the checks' queue full: try later */
    auth_answer(l, c, l->pool ? SMTP_SERVER_AUTH_UNAVAILABLE : 0);
}

/* A check came back: the session that asked, and those that waited for
 * the same credentials, get its answer. */
static void auth_done(struct listener *l, struct lconn *c, int ok)
{
    c->auth_wait = c->auth_follow = 0;
    explicit_bzero(c->auth_digest, sizeof(c->auth_digest));
    auth_answer(l, c, ok);
    set_deadline(l, c);
    if (!c->io.closing)
        run_smtp(l, c);
}

static void arm_auth_read(struct listener *l)
{
    struct io_uring_sqe *sqe = srv_io_sqe(&l->io);
    io_uring_prep_read(sqe, auth_pool_fd(l->pool), &l->auth_val, sizeof(l->auth_val), 0);
    io_uring_sqe_set_data64(sqe, srv_tag(OP_AUTH, 0, 0));
}

static void on_auth_results(struct listener *l)
{
    struct auth_result r[LS_AUTH_TAKE];
    size_t n;
    while ((n = auth_pool_take(l->pool, r, LS_AUTH_TAKE)) > 0) {
        for (size_t i = 0; i < n; i++) {
            struct lconn *c = conn_at(l, (uint32_t)(r[i].tag >> 32), (uint32_t)r[i].tag);
            /* The check's flight first, and the cache: answering a
             * session runs it on, and what it pipelined behind may be
             * another AUTH (after a 535) that must not join this flight. */
            size_t f = 0;
            while (f < l->nflights && l->flights[f].tag != r[i].tag)
                f++;
            int flown = f < l->nflights;
            uint8_t digest[AUTH_CACHE_DIGEST];
            if (flown) {
                memcpy(digest, l->flights[f].digest, sizeof(digest));
                /* a check asked for before the credentials were read
                 * again answers its sessions but is not remembered */
                if (r[i].ok && l->auth_cache && l->flights[f].gen == l->creds_gen)
                    auth_cache_put(l->auth_cache, digest, l->now_ms);
                l->flights[f] = l->flights[--l->nflights];
            }
            if (c != NULL && c->auth_wait && !c->auth_follow)
                auth_done(l, c, r[i].ok);
            if (!flown)
                continue;   /* no cache: nobody else waits */
            /* the sessions that waited for it (even if the one that asked
             * has left) */
            for (uint32_t k = 0; k < l->io.nconns; k++) {
                struct lconn *w = lconn_from(l->io.conns[k]);
                if (w->io.in_use && w->auth_follow &&
                    memcmp(w->auth_digest, digest, sizeof(digest)) == 0)
                    auth_done(l, w, r[i].ok);
            }
            explicit_bzero(digest, sizeof(digest));
        }
    }
    arm_auth_read(l);
}

static void run_smtp(struct listener *l, struct lconn *c)
{
    for (;;) {
        struct smtp_server_event ev = smtp_server_next(&c->smtp);
        if (ev.kind == SMTP_SRV_EV_NONE)
            break;
        if (ev.kind == SMTP_SRV_EV_MESSAGE) {
            on_message(l, c);
            if (c->redis_wait)
                break;
        } else if (ev.kind == SMTP_SRV_EV_AUTH) {
            on_auth(l, c);
        } else if (ev.kind == SMTP_SRV_EV_STARTTLS) {
            flush_smtp(l, c);       /* the 220 goes out in plaintext */
            c->io.tls = tls_conn_server_new(l->gen->tls[c->lidx]);
            if (c->io.tls) {
                c->tls_gen = l->gen;
                l->gen->conns++;
            }
            if (c->io.tls == NULL)
                srv_conn_close(&l->io, &c->io, SRV_CLOSE_ABORT);
            return;
        } else {                    /* CLOSE */
            flush_smtp(l, c);
            if (c->io.tls && c->io.tls_done) {
                tls_conn_close(c->io.tls);
                srv_conn_take_tls(&c->io);
            }
            srv_conn_close(&l->io, &c->io, SRV_CLOSE_GRACEFUL);
            return;
        }
    }
    flush_smtp(l, c);
}

static void feed_smtp(struct listener *l, struct lconn *c, const uint8_t *p, size_t n)
{
    smtp_server_feed(&c->smtp, p, n);   /* refusals surface as CLOSE */
    if (!c->redis_wait)
        run_smtp(l, c);
    set_deadline(l, c);
}

/* srv_tls_hooks of the listener. */
static void tls_hook_up(void *ctx, struct srv_conn *b)
{
    struct listener *l = ctx;
    count(&l->st.tls);
    smtp_server_tls_started(&lconn_from(b)->smtp);
}

/* A failed handshake is logged and closed quietly; a failed read aborts. */
static void tls_hook_failed(void *ctx, struct srv_conn *b, int in_handshake)
{
    struct listener *l = ctx;
    if (!in_handshake) {
        srv_conn_close(&l->io, b, SRV_CLOSE_ABORT);
        return;
    }
    fprintf(stderr, "tern: listener: TLS handshake from %s: %s\n", lconn_from(b)->ip,
            tls_conn_error(b->tls));
    srv_conn_close(&l->io, b, SRV_CLOSE_GRACEFUL);
}

static void tls_hook_plain(void *ctx, struct srv_conn *b, const uint8_t *p, size_t n)
{
    feed_smtp(ctx, lconn_from(b), p, n);
}

static const struct srv_tls_hooks tls_hooks = {tls_hook_up, tls_hook_failed, tls_hook_plain};

/* --- connection slots ---------------------------------------------------- */

static void gen_free(struct tls_gen *g)
{
    if (g == NULL)
        return;
    for (int i = 0; i < LISTEN_MAX; i++)
        tls_server_ctx_free(g->tls[i]);
    free(g);
}

static void conn_free(struct listener *l, struct lconn *c)
{
    smtp_server_cleanup(&c->smtp);
    if (c->counted)
        l->live--;
    srv_conn_release(&l->io, &c->io);   /* the TLS connection first: it uses its set */
    struct tls_gen *g = c->tls_gen;
    c->tls_gen = NULL;
    if (g && --g->conns == 0 && g->retired)
        gen_free(g);
}

/* On the thread, at a wake: the set listener_reload made replaces the
 * current one for connections from now on. */
static void take_reload(struct listener *l)
{
    pthread_mutex_lock(&l->reload_mu);
    struct tls_gen *g = l->reload_next;
    int creds = l->reload_creds;
    l->reload_next = NULL;
    l->reload_creds = 0;
    pthread_mutex_unlock(&l->reload_mu);
    if (creds) {
        /* what verified against the old file is forgotten (a password
         * changed or a user removed must not pass from the cache) */
        l->creds_gen++;
        if (l->auth_cache) {
            auth_cache_free(l->auth_cache);
            if ((l->auth_cache = auth_cache_new(l->lc->auth_cache_ms)) == NULL)
                logf_ls("reload", "out of memory: AUTH is checked every time from now on");
        }
    }
    if (g == NULL)
        return;
    struct tls_gen *old = l->gen;
    l->gen = g;
    old->retired = 1;
    if (old->conns == 0)
        gen_free(old);
    count(&l->st.reloads);
}

static int same_ip_count(struct listener *l, const char *ip)
{
    int n = 0;
    for (uint32_t i = 0; i < l->io.nconns; i++) {
        struct lconn *o = lconn_from(l->io.conns[i]);
        n += o->io.in_use && o->counted && strcmp(o->ip, ip) == 0;
    }
    return n;
}

static void on_accept(struct listener *l, int lidx, int fd)
{
    struct srv_conn *b = srv_conn_new(&l->io, fd);
    if (b == NULL) {
        logf_ls("accept", "out of memory");
        close(fd);
        return;
    }
    struct lconn *c = lconn_from(b);
    c->lidx = lidx;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    int have_peer = getpeername(fd, (struct sockaddr *)&ss, &sl) == 0;
    if (have_peer && ss.ss_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, c->ip, sizeof(c->ip));
    else if (have_peer && ss.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, c->ip, sizeof(c->ip));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (!smtp_server_init(&c->smtp, &l->scfg[lidx])) {
        srv_conn_close(&l->io, &c->io, SRV_CLOSE_ABORT);
        return;
    }
    if (l->live >= l->lc->max_connections || same_ip_count(l, c->ip) >= l->lc->max_per_ip ||
        l->stopping) {
        count(&l->st.refused_conns);
        size_t n;
        smtp_server_output(&c->smtp, &n);
        smtp_server_output_consume(&c->smtp, n);     /* no greeting */
        say_and_close(l, c, l->stopping ? "Service shutting down"
                                        : "Error: too many connections, try again later");
        return;
    }
    count(&l->st.connections);
    c->counted = 1;
    l->live++;
    smtp_server_set_relay(&c->smtp, have_peer && auth_nets_match(&l->lc->allow,
                                                                (struct sockaddr *)&ss));
    flush_smtp(l, c);
    set_deadline(l, c);
    if (!srv_conn_arm_recv(&l->io, &c->io))
        srv_conn_close(&l->io, &c->io, SRV_CLOSE_ABORT);
}

/* --- completions --------------------------------------------------------- */

/* Received bytes of a live connection (srv_io_cqe). */
static void on_data(void *ctx, struct srv_conn *b, const uint8_t *p, size_t n)
{
    struct listener *l = ctx;
    struct lconn *c = lconn_from(b);
    if (c->io.tls)
        srv_conn_tls_data(&l->io, b, p, n, &l->plain, &tls_hooks, l);
    else
        feed_smtp(l, c, p, n);
}

static void arm_accept(struct listener *l, int i)
{
    struct io_uring_sqe *sqe = srv_io_sqe(&l->io);
    io_uring_prep_multishot_accept(sqe, l->lfd[i], NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, srv_tag(OP_ACCEPT, (uint32_t)i, 0));
    l->accept_armed[i] = 1;
}

static void arm_wake(struct listener *l)
{
    struct io_uring_sqe *sqe = srv_io_sqe(&l->io);
    io_uring_prep_read(sqe, l->wake_fd, &l->wake_val, sizeof(l->wake_val), 0);
    io_uring_sqe_set_data64(sqe, srv_tag(OP_WAKE, 0, 0));
}

static void arm_tick(struct listener *l)
{
    l->tick_ts.tv_sec = 0;
    l->tick_ts.tv_nsec = LS_TICK_MS * 1000000LL;
    struct io_uring_sqe *sqe = srv_io_sqe(&l->io);
    io_uring_prep_timeout(sqe, &l->tick_ts, 0, 0);
    io_uring_sqe_set_data64(sqe, srv_tag(OP_TICK, 0, 0));
}

static void begin_stop(struct listener *l)
{
    l->stopping = 1;
    l->stop_deadline_ms = l->now_ms + LS_STOP_GRACE_MS;
    for (int i = 0; i < l->lc->n; i++) {
        if (l->lfd[i] < 0)
            continue;
        struct io_uring_sqe *sqe = srv_io_sqe(&l->io);
        io_uring_prep_cancel64(sqe, srv_tag(OP_ACCEPT, (uint32_t)i, 0), 0);
        io_uring_sqe_set_data64(sqe, srv_tag(SRV_OP_CANCEL, 0, 0));
    }
}

/* Deadlines, Redis timeouts, and stopping: every tick. */
static void on_tick(struct listener *l)
{
    for (uint32_t i = 0; i < l->nlinks; i++) {
        struct llink *k = l->links[i];
        if (k->rq_len > 0 && l->now_ms - k->rq[k->rq_head].sent_ms > LS_REDIS_TIMEOUT_MS)
            link_down(l, k, "no reply in time");
    }
    if (!l->stopping)
        link_refresh(l);
    for (uint32_t i = 0; i < l->io.nconns; i++) {
        struct lconn *c = lconn_from(l->io.conns[i]);
        if (!c->io.in_use || c->io.closing)
            continue;
        if (l->stopping && !c->redis_wait)
            say_and_close(l, c, "Service shutting down");
        else if (l->now_ms > c->deadline_ms)
            say_and_close(l, c, "Error: timeout exceeded");
    }
    if (l->stopping && (l->live == 0 || l->now_ms > l->stop_deadline_ms))
        l->done = 1;
    else
        arm_tick(l);
}

static void handle_cqe(struct listener *l, struct io_uring_cqe *cqe)
{
    if (srv_io_cqe(&l->io, cqe, on_data, l))
        return;
    switch (srv_tag_kind(cqe->user_data)) {
    case OP_ACCEPT: {
        int i = (int)srv_tag_slot(cqe->user_data);
        if (cqe->res >= 0)
            on_accept(l, i, cqe->res);
        else if (cqe->res != -EINTR && cqe->res != -ECONNABORTED && cqe->res != -ECANCELED)
            logf_ls("accept", strerror(-cqe->res));
        if (!(cqe->flags & IORING_CQE_F_MORE))
            l->accept_armed[i] = 0;
        break;
    }
    case OP_RRECV:
        redis_on_recv(l, cqe);
        break;
    case OP_RSEND:
        redis_on_send(l, cqe);
        break;
    case OP_WAKE:
        take_reload(l);
        if (atomic_load(&l->stop_asked))
            begin_stop(l);
        else
            arm_wake(l);
        break;
    case OP_TICK:
        on_tick(l);
        break;
    case OP_AUTH:
        on_auth_results(l);
        break;
    default:
        break;
    }
}

/* Start sends and closes for the connections touched in this batch. */
static void service_conn(void *ctx, struct srv_conn *b)
{
    struct listener *l = ctx;
    srv_conn_service(&l->io, b);
    if (srv_conn_done(b))
        conn_free(l, lconn_from(b));
}

/* srv_io_free: a connection still open at the end. */
static void drop_conn(void *ctx, struct srv_conn *b)
{
    conn_free(ctx, lconn_from(b));
}

static void finish_batch(struct listener *l)
{
    srv_io_return_bufs(&l->io);
    redis_kick(l);
    srv_io_each_dirty(&l->io, service_conn, l);
    for (int i = 0; i < l->lc->n && !l->stopping; i++)
        if (!l->accept_armed[i])
            arm_accept(l, i);
}

/* --- setup ------------------------------------------------------------- */

static int ring_setup(struct listener *l, char *err, size_t errlen)
{
    static const struct srv_io_params p = {
        .sq_entries = LS_SQ_ENTRIES, .cq_entries = LS_CQ_ENTRIES,
        .buf_size = LS_BUF_SIZE, .nbufs = LS_NBUFS, .bgid = LS_BGID,
        .sqe_block = 1, .conn_size = sizeof(struct lconn), .first_slots = 64,
    };
    return srv_io_init(&l->io, &p, err, errlen);
}

static void *listener_main(void *arg)
{
    struct listener *l = arg;
    char err[256];
    if (!ring_setup(l, err, sizeof(err))) {
        logf_ls("stopped", err);
        return NULL;
    }
    l->now_ms = mono_ms();
    arm_wake(l);
    arm_tick(l);
    if (l->pool)
        arm_auth_read(l);
    for (int i = 0; i < l->lc->n; i++)
        arm_accept(l, i);
    while (!l->done) {
        int ret = io_uring_submit_and_wait(&l->io.ring, 1);
        if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY) {
            logf_ls("io_uring_submit_and_wait", strerror(-ret));
            break;
        }
        l->now_ms = mono_ms();
        struct io_uring_cqe *cqe;
        unsigned head, n = 0;
        io_uring_for_each_cqe(&l->io.ring, head, cqe) {
            handle_cqe(l, cqe);
            n++;
        }
        io_uring_cq_advance(&l->io.ring, n);
        finish_batch(l);
    }
    return NULL;
}

static int open_listen_socket(const struct listen_addr *a, char *err, size_t errlen)
{
    int fd = socket(a->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "listen %s: socket: %s", a->text, strerror(errno));
        return -1;
    }
    int one = 1, zero = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (a->addr.ss_family == AF_INET6 &&
        IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)&a->addr)->sin6_addr))
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
    if (bind(fd, (const struct sockaddr *)&a->addr, a->addrlen) != 0 ||
        listen(fd, LS_BACKLOG) != 0) {
        snprintf(err, errlen, "listen %s: %s", a->text, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* The listen lines' TLS contexts, read from their files now. */
static struct tls_gen *gen_new(const struct listen_config *lc, char *err, size_t errlen)
{
    struct tls_gen *g = calloc(1, sizeof(*g));
    if (g == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    for (int i = 0; i < lc->n; i++) {
        const struct listen_addr *a = &lc->addrs[i];
        if (a->tls == LISTEN_TLS_NONE)
            continue;
        struct tls_server_config tc = {
            .cert_file = a->cert, .key_file = a->key, .tickets = 1,
            .use_tier = 1, .tier = (enum tls_tier)lc->tls_profile,
            .cert2_file = a->cert2[0] ? a->cert2 : NULL,
            .key2_file = a->key2[0] ? a->key2 : NULL,
        };
        char terr[256];
        if ((g->tls[i] = tls_server_ctx_new(&tc, terr, sizeof(terr))) == NULL) {
            snprintf(err, errlen, "listen %s: %s", a->text, terr);
            gen_free(g);
            return NULL;
        }
    }
    return g;
}

int listener_reload(struct listener *l, char *err, size_t errlen)
{
    struct tls_gen *g = gen_new(l->lc, err, errlen);
    if (g == NULL)
        return 0;
    struct auth_creds *creds = NULL;
    if (l->has_creds) {
        if ((creds = calloc(1, sizeof(*creds))) == NULL) {
            snprintf(err, errlen, "out of memory");
            gen_free(g);
            return 0;
        }
        if (!auth_creds_load(creds, l->lc->auth_file, err, errlen)) {
            free(creds);
            gen_free(g);
            return 0;
        }
        /* the pool checks against the new file from its next check on;
         * the old one is ours again once no check uses it */
        auth_pool_set_creds(l->pool, creds);
        auth_creds_free(l->creds);
        free(l->creds);
        l->creds = creds;
    }
    pthread_mutex_lock(&l->reload_mu);
    struct tls_gen *unused = l->reload_next;   /* an earlier reload not taken yet */
    l->reload_next = g;
    l->reload_creds |= creds != NULL;
    pthread_mutex_unlock(&l->reload_mu);
    gen_free(unused);
    uint64_t one = 1;
    if (l->started && write(l->wake_fd, &one, sizeof(one)) < 0)
        logf_ls("reload", strerror(errno));
    return 1;
}

struct listener *listener_new(const struct tern_config *cfg, const struct queue_scripts *scripts,
                              const struct queue_cluster_map *cluster, char *err, size_t errlen)
{
    struct listener *l = calloc(1, sizeof(*l));
    if (l == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    l->cfg = cfg;
    l->lc = &cfg->listen;
    l->scripts = *scripts;
    l->wake_fd = -1;
    pthread_mutex_init(&l->reload_mu, NULL);
    for (int i = 0; i < LISTEN_MAX; i++)
        l->lfd[i] = -1;
    buf_init(&l->plain, 0);
    buf_init(&l->msg, 0);
    /* links[0] is `redis =`; with a cluster, one more per other master. */
    if (link_add(l, cfg->redis) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (cluster != NULL) {
        l->map = malloc(sizeof(*l->map));
        l->part_link = calloc((size_t)cfg->queue.partitions, sizeof(*l->part_link));
        if (l->map == NULL || l->part_link == NULL) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        memcpy(l->map, cluster, sizeof(*l->map));
        if (!point_partitions(l)) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
    }
    if (l->lc->auth_file[0]) {
        if ((l->creds = calloc(1, sizeof(*l->creds))) == NULL) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        if (!auth_creds_load(l->creds, l->lc->auth_file, err, errlen))
            goto fail;
        l->has_creds = 1;
        l->pool = auth_pool_new(l->creds);
        if (l->pool == NULL) {
            snprintf(err, errlen, "cannot start the password-check thread");
            goto fail;
        }
        if (l->lc->auth_cache_ms > 0 &&
            ((l->auth_cache = auth_cache_new(l->lc->auth_cache_ms)) == NULL ||
             (l->flights = calloc(AUTH_POOL_QUEUE_MAX, sizeof(*l->flights))) == NULL)) {
            snprintf(err, errlen, "out of memory (auth cache)");
            goto fail;
        }
    }
    if ((l->gen = gen_new(l->lc, err, errlen)) == NULL)
        goto fail;
    for (int i = 0; i < l->lc->n; i++) {
        const struct listen_addr *a = &l->lc->addrs[i];
        l->scfg[i] = (struct smtp_server_config){
            .hostname = cfg->hostname,
            .offer_starttls = a->tls != LISTEN_TLS_NONE,
            .offer_pipelining = 1,
            .offer_chunking = 1,
            .max_message_size = (uint64_t)l->lc->max_message_size,
            .max_rcpts = (size_t)l->lc->max_rcpts,
            .max_errors = l->lc->max_errors,
            .relay_check = 1,
            .require_tls = a->tls == LISTEN_TLS_REQUIRED,
            .offer_auth = l->has_creds && a->tls != LISTEN_TLS_NONE,
            .strict_data = 1,
            .check_addrs = 1,
        };
        l->lfd[i] = open_listen_socket(a, err, errlen);
        if (l->lfd[i] < 0)
            goto fail;
    }
    l->wake_fd = eventfd(0, EFD_CLOEXEC);
    if (l->wake_fd < 0) {
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        goto fail;
    }
    return l;
fail:
    listener_free(l);
    return NULL;
}

int listener_start(struct listener *l, char *err, size_t errlen)
{
    if (pthread_create(&l->thread, NULL, listener_main, l) != 0) {
        snprintf(err, errlen, "cannot start the listener thread");
        return 0;
    }
    /* Named so that its CPU can be told from the workers' (bench/run). */
    pthread_setname_np(l->thread, "tern-listener");
    l->started = 1;
    return 1;
}

void listener_stop(struct listener *l)
{
    if (l == NULL || !l->started)
        return;
    atomic_store(&l->stop_asked, 1);
    uint64_t one = 1;
    if (write(l->wake_fd, &one, sizeof(one)) < 0)
        logf_ls("stop", strerror(errno));
    pthread_join(l->thread, NULL);
    l->started = 0;
}

void listener_get_stats(const struct listener *l, struct listener_stats *o)
{
    o->connections = atomic_load(&l->st.connections);
    o->refused_conns = atomic_load(&l->st.refused_conns);
    o->messages = atomic_load(&l->st.messages);
    o->rejected_redis = atomic_load(&l->st.rejected_redis);
    o->tls = atomic_load(&l->st.tls);
    o->auth_ok = atomic_load(&l->st.auth_ok);
    o->auth_failed = atomic_load(&l->st.auth_failed);
    o->auth_cached = atomic_load(&l->st.auth_cached);
    o->auth_checks = atomic_load(&l->st.auth_checks);
    o->reloads = atomic_load(&l->st.reloads);
}

void listener_free(struct listener *l)
{
    if (l == NULL)
        return;
    listener_stop(l);
    srv_io_free(&l->io, drop_conn, l);   /* the ring first, then the connections */
    auth_pool_free(l->pool);
    auth_cache_free(l->auth_cache);
    free(l->flights);
    for (int i = 0; i < LISTEN_MAX; i++)
        if (l->lfd[i] >= 0)
            close(l->lfd[i]);
    gen_free(l->gen);           /* every connection is gone: no set is still in use */
    gen_free(l->reload_next);
    pthread_mutex_destroy(&l->reload_mu);
    if (l->wake_fd >= 0)
        close(l->wake_fd);
    for (uint32_t i = 0; i < l->nlinks; i++)
        link_free(l->links[i]);
    free(l->links);
    free(l->part_link);
    free(l->map);
    buf_free(&l->plain);
    buf_free(&l->msg);
    if (l->creds) {
        auth_creds_free(l->creds);
        free(l->creds);
    }
    free(l);
}
