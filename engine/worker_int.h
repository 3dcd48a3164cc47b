/*
 * worker_int.h - the worker's internal types, shared by engine/worker*.c
 * only. See worker.h for the public contract.
 *
 * OWNERSHIP
 *   A struct job owns its struct queue_msg. A job sits in exactly one place:
 *   its destination's ready list, or a connection (c->job), until its
 *   outcome is recorded (outcome_*), which frees it.
 *   A struct conn is freed only when it is closed and no ring operation
 *   refers to it any more (c->ops == 0).
 */
#ifndef TERN_ENGINE_WORKER_INT_H
#define TERN_ENGINE_WORKER_INT_H

#include <liburing.h>
#include <stdatomic.h>

#include <hiredis/hiredis.h>

#include "engine/age_list.h"
#include "engine/arena.h"
#include "engine/buf.h"
#include "engine/resolver.h"
#include "engine/shaping.h"
#include "engine/smtp_client.h"
#include "engine/worker.h"
#include "queue/queue_cluster.h"
#include "tls/session_cache.h"
#include "tls/tls.h"

#define RECV_BUF_SIZE        (16 * 1024)
#define FETCH_WINDOW_BYTES   (2 * 1024 * 1024)   /* body bytes asked for at once (fetch_waiting) */
#define REDIS_RECV_SIZE      (256 * 1024)
#define TICK_MS              50
#define CONN_LINGER_MS       1000    /* wait for the peer's FIN after 221 */
#define HOST_STEAL_IDLE_MS   250     /* an only connection idle this long may go to a waiting destination */
#define NOTICE_RECV_SIZE     4096    /* ready notices are ~60 bytes each */
#define CONN_FAILURES_MAX    3       /* then the destination's mail is deferred */
#define JOB_LOST_CONNS_MAX   3       /* a message that keeps losing its connection is deferred */
#define SESSION_CACHE_KEYS   4096
#define SESSION_CACHE_SESSIONS 16384  /* about 2-3 KB each */
#define EV_FIELDS_MAX        32      /* strings (pairs * 2) per event */
#define DEST_REPORT_MAX      20      /* per-destination summary lines per worker */
#define DEST_STATS_EVERY_MS  10000   /* per-destination counters to the events stream */
#define SEND_CHUNK_MAX       (256 * 1024)  /* bytes per send on a connection */
#define DATA_RATE_GRACE_MS   2000    /* min_data_rate is judged after this much of the body */
#define ACK_FLUSH_MIN        128     /* outcomes that make an ack call at once */
#define ACK_FLUSH_MS         20      /* or the oldest outcome waits this long */
#define REDIS_BACKOFF_MIN_MS 100     /* first reconnect delay after losing Redis; doubles */
#define REDIS_BACKOFF_MAX_MS 5000    /* reconnect delay cap */
/* The provided buffer ring (worker_bufs.c). A buffer is as large as the
 * 16 KiB each connection used to embed: a TLS record (16 KiB of plaintext
 * plus its overhead) mostly arrives in one, an SMTP reply always does. A
 * buffer is back in the ring as soon as its bytes are fed to the state
 * machines, so the ring only needs to cover what arrives between two
 * reaps of the completion queue: 1024 (16 MiB of address space per
 * worker, about 4 MiB resident with SMTP-sized replies, instead of 16 KiB
 * times each connection open) lets a thousand connections each deliver a
 * buffer in one reap before a receive has to re-arm (-ENOBUFS; bulk and
 * tail never ran dry). The count is the config key recv_buffers. */
#define WORKER_RECV_BUF_SIZE (16 * 1024)
#define WORKER_RECV_BUFS_MAX CONFIG_RECV_BUFFERS_MAX
#define WORKER_RECV_BGID     1       /* the buffer group of the worker's ring */

enum op_kind {
    OP_CONNECT, OP_RECV, OP_SEND,       /* on a struct conn */
    OP_REDIS_RECV, OP_REDIS_SEND, OP_WAKE,
    OP_NOTICE_RECV,                     /* ready notices (worker_notice.c) */
    OP_DNS,                             /* a c-ares socket (worker_dns.c) */
};

struct op {
    enum op_kind kind;
    struct conn *conn;
};

/* Two buffers so that appends never move bytes a send is reading. */
struct outq {
    struct buf active;     /* being sent */
    struct buf pending;    /* appended to while a send is in flight */
    int inflight;
};

/* A recipient's result in this delivery attempt (worker_txn.c). */
enum rcpt_state {
    RCPT_TODO,             /* to send (in the next transaction) */
    RCPT_OK,               /* delivered */
    RCPT_FAILED,           /* permanent failure: bounced */
    RCPT_LATER,            /* temporary failure: the retry schedule */
};

struct rcpt_result {
    enum rcpt_state state;
    int code;
    char esc[SMTP_ESC_MAX];
    char *diag;            /* FAILED: the reply, for the bounce (owned) */
};

#define JOB_INLINE_RCPTS 4          /* recipients a job holds without allocating */
#define JOB_POOL_KEEP    1024       /* freed jobs a worker keeps for reuse */

struct job {
    struct queue_msg *m;
    struct dest *d;
    struct job *next;
    struct smtp_msg sm;
    size_t ntx;            /* recipients in this transaction (<= limit) */
    int64_t started_us;    /* its transaction's last write: taken (BDAT), or
                              its 354 came and the body went (DATA) */
    int lost_conns;        /* connections lost with this message in flight */
    /* Set up by the first job_next_batch (NULL before): per recipient of
     * m, and this transaction's recipients with their index in m. They
     * point at the inline arrays below when m has at most
     * JOB_INLINE_RCPTS recipients (most messages: no allocation), else
     * at allocated ones. */
    struct rcpt_result *rr;
    const char **txr;
    size_t *txi;
    struct rcpt_result rr_inline[JOB_INLINE_RCPTS];
    const char *txr_inline[JOB_INLINE_RCPTS];
    size_t txi_inline[JOB_INLINE_RCPTS];
};

/* A site (worker_site.c): destinations whose mail may share connections
 * because everything a connection was opened and checked for is the same
 * for them: one MX host and address, one TLS policy entry (that does not
 * check the domain's own name), the same limits, no egress binding. Its
 * connections carry any of its destinations' mail, and it counts as one
 * destination for max_connections, plus what the round trip earns it
 * (extra; worker_site.c). Per worker; owned by its host, freed with it. */
struct site {
    struct site *next;               /* the host's list */
    const struct policy_entry *pol;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    struct dest_limits lim;
    int nconns;                      /* open connections of its destinations */
    int nconnecting, npre_tls;       /* of those: not yet READY, not yet at STARTTLS */
    /* established connections that take mail (c->snode), the most
     * recent to become available youngest */
    struct age_list avail;
    /* destinations with ready mail that their own connections did not
     * take, oldest first (d->snode) */
    struct age_list ready;
    int ndests;                      /* destinations attached (d->site) */
    /* Connections beyond max_connections while the round trip, not a
     * queue, holds the site back (worker_site.c, site_txn_time): the
     * transaction times seen, their least over two windows, and this
     * period's sum; waited: mail found no room and the limit stopped a
     * connection from opening in this period. */
    int extra;
    /* Transactions in flight beyond max_transactions_in_flight on each of
     * its connections, once it holds all it may open (with CHUNKING: DATA
     * stacks one at most); chunking: one of its sessions offered it. */
    int depth_extra;
    int chunking;
    int waited;
    int64_t min_cur_us, min_prev_us, min_since_us;
    int64_t period_since_us, period_sum_us;
    int period_n;
};

/* An MX host:port, shared by every destination routed to it: the
 * per-host connection count and what worked with it. */
struct mxhost {
    char key[CONFIG_HOST_MAX + 8];   /* "host:port" */
    int nconns;                      /* this worker's */
    int nconnecting, npre_tls;       /* of those: not yet READY, not yet at STARTTLS */
    atomic_int *all_conns;           /* every worker's (struct engine) */
    atomic_int *all_waiting;         /* destinations on every worker's wait list */
    /* what worked at level may, remembered until *_until_ms */
    enum tls_tier tier;              /* the tier to start with */
    int64_t tier_until_ms;
    int plaintext;                   /* TLS failed altogether */
    int64_t plaintext_until_ms;
    /* destinations held back by max_connections_per_host, woken in
     * order as this host's connections close (host_wait, host_wake) */
    struct age_list wait;
    /* destinations held back by the resumption slow start, woken in
     * order as sessions come back (worker_slowstart.c) */
    struct age_list ss_wait;
    int slot;                        /* index into struct engine's per-host arrays */
    struct mxhost *next;             /* table chain */
    uint64_t hash;                   /* of key */
    int refs;                        /* destinations with d->host == this (dest_set_host) */
    /* on the worker's list of hosts with waiters (host_waiters_changed) */
    struct age_node wnode;
    struct age_node age;             /* listed while no destination uses it (worker_hosts.c) */
    struct site *sites;              /* this worker's sites on the host (worker_site.c) */
};

/* Per-destination counters: the summary and the events stream. */
struct dest_counters {
    uint64_t conns, hs_full, hs_resumed, resume_refused, msgs;
};

struct dest {
    char *domain;
    const struct policy_entry *pol;
    struct dest_limits lim;
    struct mxhost *host;
    int no_sessions;           /* the last connection yielded no TLS session */
    int npre_tls;              /* connections open, not yet at STARTTLS */
    int host_waiting;          /* on its host's wait list */
    struct age_node host_wait_node;   /* on wait_host's wait list */
    struct mxhost *wait_host;  /* the host whose wait list holds it (d->host may move on) */
    struct age_node ss_node;   /* on its host's slow-start list (worker_slowstart.c) */
    int64_t cert_plaintext_until_ms;   /* at may: our client certificate was the problem */
    uint8_t leaf_sha256[32];   /* the peer's certificate, to notice a change */
    int have_leaf;
    struct dest_counters n;
    int counters_dirty;        /* changed since the last stats event */
    struct nexthop hop;
    int have_hop;
    const char *no_route;      /* why there is no next hop */
    /* DNS routing (worker_dns.c): no static route, hops from MX lookups */
    int use_dns;
    struct nexthop *hops;      /* MX order, each host's IPv6 then IPv4 addresses */
    size_t nhops, hop_idx, hops_tried;
    int hop_failed;            /* the current hop failed: move on once its
                                  other connections have closed */
    int64_t hops_expire_ms;    /* re-resolve (with no connection open) after */
    char route_error[160];     /* no_route points here for DNS failures */
    const char *bounce_status; /* set: mail bounces with this status (5.1.2, 5.1.10) */
    int dns_waiting;           /* a query it waits for is in flight */
    /* shaping (worker_shaping.c) */
    struct net_dest net;
    struct rate_bucket msg_bucket, conn_bucket;
    struct shaping_backoff bo;
    int msg_limited;           /* the message rate held the last job back */
    unsigned src_next;         /* egress pool round robin */
    struct job *ready_head, *ready_tail;
    size_t nready;
    int nconns;                /* open (connecting, busy or idle) */
    struct conn *conns;        /* its connections until conn_free, closing
                                  ones too (c->dnext, c->dprev) */
    int nconnecting;           /* not yet READY */
    int consecutive_failures;
    int64_t next_connect_ms;   /* reconnect backoff */
    int64_t backoff_until_ms;  /* dead destination: defer new mail until */
    char last_error[256];
    struct dest *hnext;        /* hash chain */
    struct dest *dnext;        /* all destinations list */
    int dirty;                 /* on the worker's dirty list */
    struct dest *dirty_next;
    int tick_listed;           /* on the worker's tick list */
    struct dest *tick_next;
    /* forgetting (worker_forget.c): what says whether it may be freed */
    struct dest *dprev;        /* all destinations list, backwards */
    struct age_node age;       /* on the worker's dest_ages */
    int64_t last_used_ms;      /* last scheduled, or a connection of it freed */
    int conn_refs;             /* struct conns pointing to it, closing ones too */
    int dns_refs;              /* DNS questions in flight listing it as a waiter */
    /* sharing (worker_site.c): its site (NULL: its mail rides only its
     * own connections), whether it is on the site's ready list, and its
     * jobs in flight on any connection (job->d points here) */
    struct site *site;
    struct age_node snode;     /* on site->ready (snode.listed) */
    size_t inflight;
};

enum conn_state { CONN_CONNECTING, CONN_SMTP, CONN_CLOSING };

struct conn {
    struct dest *d;
    int fd;
    enum conn_state state;
    int ops;                   /* ring operations in flight */
    struct op op_connect, op_recv, op_send;
    int recv_armed;
    uint8_t *rbuf;             /* RECV_BUF_SIZE; only without the buffer ring
                                  (single-shot receives) */
    struct outq out;
    struct smtp_client smtp;
    struct tls_conn *tls;
    int tls_done;
    int took_session;          /* STARTTLS reached: a cached session was looked up */
    int got_session;           /* the peer gave us a session to cache */
    enum tls_tier tier;        /* tier offered on this connection */
    int tls_mode_none;         /* this connection does not try TLS */
    struct tls_info tinfo;
    char cache_key[TLS_CACHE_KEY_MAX];
    int resume_offered;
    int established;
    int idle;
    /* Jobs whose transactions are in flight, oldest first (linked by
     * job->next): one, or up to max_transactions_in_flight when the peer
     * takes pipelined transactions (smtp_client.h). c->job is the one
     * the replies being read belong to. */
    struct job *job, *job_tail;
    size_t njobs;
    uint64_t msgs;
    int64_t deadline_ms;
    int quitting;
    int lingering;             /* 221 received, waiting for the peer's FIN */
    int peer_eof;              /* the peer closed its side */
    int64_t body_start_ms;     /* the 354 came (0: no body going out) */
    uint64_t body_bytes;       /* bytes sent since then */
    /* The event fields describing the session (mx, ip, domain, policy,
     * TLS), RESP-encoded at the first outcome (worker_outcome.c): the
     * same for every message the connection carries. */
    struct buf ev;
    size_t ev_nfields;
    struct conn *next, *prev;  /* worker's connection list */
    struct conn *dnext, *dprev;   /* c->d's (d->conns) */
    struct conn *cnext;        /* w->closing, once CONN_CLOSING */
    /* its destination's site when opened (NULL: none), and whether it is
     * on the site's list of connections that take mail */
    struct site *site;
    struct age_node snode;     /* on site->avail (snode.listed) */
};

struct ack_item {
    char id[QUEUE_ID_MAX];
    enum queue_outcome_kind kind;
    char *remaining;
    int64_t retry_at;
    int64_t lease_until;       /* the lease this ack settles */
    const char *fields[EV_FIELDS_MAX];   /* names: string literals; values: in arena */
    size_t nfields;
    const uint8_t *raw;        /* the connection's encoded fields, in arena */
    size_t raw_len, raw_nfields;
    struct arena *arena;       /* the partition's: freed with the batch */
    /* enqueue commands (RESP) of the bounce or delay warning this outcome
     * sends, written just before this ack */
    uint8_t *bounce;
    size_t bounce_len;
    int bounce_partition;
    int bounce_cmds;           /* queue_cmd_enqueue_report calls in bounce:
                                  each gets QUEUE_REPORT_CMDS replies */
    int bounce_sent;           /* sent ahead on another link (flush_acks) */
};

struct partition {
    int id;
    int take_inflight;
    int take_asked;            /* messages the take in flight may bring */
    int64_t next_poll_ms;
    int64_t moved_ms;          /* the last take that moved due and expired entries */
    int empty;                 /* last take returned nothing */
    int refilled;              /* mail added (bounce, returned) since the take in flight was sent */
    struct ack_item *acks;
    size_t nacks, acks_cap;
    struct arena ack_strs;     /* the event fields of acks[] */
    int bounce_holds;          /* replies to bounces sent ahead, awaited before the ack */
    int bounce_failed;         /* one of those failed or was lost */
    int64_t first_ack_ms;      /* when the oldest unsent outcome was recorded */
};

/* RQ_DATA: the HMGET of one taken message (queue_cmd_take_data);
 * msg is that message, owned by the entry until the reply comes. */
/* RQ_SLOTS: CLUSTER SLOTS, asked after a MOVED or ASK (worker_redis.c). */
/* RQ_ASKING: the +OK of an ASKING before a command sent after an ASK. */
enum redis_req { RQ_TAKE, RQ_DATA, RQ_ACK, RQ_ENQUEUE, RQ_SCRIPT, RQ_EVENT, RQ_SLOTS, RQ_ASKING };

struct redis_pending {
    enum redis_req kind;
    int partition;
    /* RQ_ENQUEUE of a bounce sent on another link than its message's ack
     * (a cluster): the partition whose ack waits for this reply, else -1
     * (flush_acks, worker.c). */
    int hold;
    struct queue_msg *msg;
    /* RQ_ACK on a cluster: a copy of the command, owned, sent again if
     * Redis redirects or refuses it before running it (MOVED, ASK,
     * TRYAGAIN, CLUSTERDOWN) or the link is lost: an ack sent twice is
     * harmless, the second finds its ids no longer leased. NULL: none. */
    uint8_t *cmd;
    size_t cmd_len;
};

/* An ack waiting to be sent again (worker.c, acks_resend), at due_ms. */
struct ack_resend {
    int partition;
    uint8_t *cmd;
    size_t cmd_len;
    int64_t due_ms;
};

/* One Redis connection of a worker (worker_redis.c): to the Redis of
 * `redis =`, or, with a Redis Cluster, to one master. Commands for a
 * partition go to the link that serves it (worker.part_link); each
 * link's replies come in the order of its commands (rq). The worker owns
 * its links; a link is never freed before the worker (a cluster node
 * that serves nothing any more keeps an idle link). */
struct redis_link {
    int idx;                   /* in worker.links */
    char addr[CONFIG_PATH_MAX];   /* for worker_redis_connect */
    int fd;
    struct outq out;
    redisReader *reader;
    uint8_t *recv;
    struct op op_recv, op_send;
    int recv_armed;
    int recv_direct;           /* the armed receive writes into a body being taken */
    struct redis_pending *rq;
    size_t rq_head, rq_len, rq_cap;
    int down;                  /* lost; reconnecting */
    int warming;               /* reconnected, scripts not loaded yet (Redis may be LOADING) */
    int scripts_pending;       /* SCRIPT LOAD replies awaited while warming */
    int scripts_failed;        /* one of them was an error */
    int reopened;              /* connected again after a loss (the log says when it is ready) */
    int64_t retry_ms;          /* next reconnect attempt */
    int64_t backoff_ms;
};

/* The worker's provided buffer ring (worker_bufs.c): nbufs buffers of
 * WORKER_RECV_BUF_SIZE at mem, lent to the kernel through br. A buffer a
 * completion names is the worker's (counted in held) until
 * worker_bufs_put gives it back. */
struct worker_bufs {
    int on;                    /* registered: connections use multishot receives */
    struct io_uring_buf_ring *br;
    uint8_t *mem;
    size_t br_bytes, mem_bytes;
    unsigned nbufs, mask;
    unsigned held;             /* taken from completions, not yet put back */
};

struct worker {
    const struct engine *e;
    const struct tern_config *cfg;
    int id;
    struct io_uring ring;
    int ring_ok;
    struct worker_bufs bufs;
    struct resolver resolver;
    struct tls_client_ctx *tls[CONFIG_TLS_CTX_MAX];   /* per config tls_ctx spec */
    struct tls_session_cache *sessions;
    /* MX hosts (worker_hosts.c): the table (doubling), those with
     * destinations waiting for a slot, those no destination uses */
    struct mxhost **htab;
    size_t htab_size, nhosts;
    struct age_list waiting_hosts;
    struct age_list host_ages;
    struct worker_dns *dns;    /* c-ares on this ring (worker_dns.c) */
    int64_t next_dest_stats_ms;
    /* record_outcome's recipient lists by result, kept between calls so a
     * message's outcome allocates nothing once they have grown */
    struct buf rcpts_ok, rcpts_later, rcpts_failed;
    /* freed jobs kept for the next take (linked by next; at most
     * JOB_POOL_KEEP): a take of hundreds of messages otherwise allocates
     * hundreds of jobs at once, past what malloc keeps at hand */
    struct job *job_pool;
    size_t job_pool_n;

    /* Redis: one link, or one per cluster master (worker_redis.c) */
    struct redis_link **links;
    int nlinks;
    int *part_link;            /* every partition's link (queue.partitions) */
    struct queue_cluster_map *cluster;   /* NULL: one Redis */
    int slots_stale;           /* a MOVED/ASK came: the map is refreshed first */
    int slots_asked;           /* CLUSTER SLOTS in flight */
    /* A master could not be reached: the map is read again without
     * holding commands (a replica may have taken over its slots). */
    int slots_wanted;
    int64_t fetch_hold_ms;     /* body fetches wait until then (an ASK with no link ready) */
    struct ack_resend *resend; /* acks to send again (cluster only) */
    size_t nresend, resend_cap;
    struct queue_scripts scripts;
    int redis_dead;            /* given up: the worker stops */
    /* Ready notices (worker_notice.c): a subscribed connection of its own. */
    int notice_fd;
    redisReader *notice_reader;
    struct op op_notice;
    int notice_armed;
    int64_t notice_retry_ms;
    uint8_t notice_recv[NOTICE_RECV_SIZE];

    struct partition *parts;
    int nparts;

    struct dest **dtab;
    size_t dtab_size, ndests;
    struct dest *dests;
    struct dest *dirty;
    /* Destinations left with ready mail by their last schedule and not on
     * a host's wait list: the tick wakes these only, not all dests. */
    struct dest *tick_dests;
    /* Every destination, by when it was last looked at for forgetting
     * (worker_forget.c). */
    struct age_list dest_ages;
    /* Decrypted input of the connection being read (on_bytes), empty in
     * between: one per worker rather than 16 KiB allocated and freed with
     * every connection. */
    struct buf plain;

    struct conn *conns;
    int nconns;
    int reap_pending;          /* a closed connection may be freeable */
    struct conn *closing;      /* closed, not yet freed (c->cnext): what
                                  conn_reap walks, not every connection */
    size_t in_memory;          /* jobs held */
    size_t in_take;            /* room promised to takes in flight */
    /* Body bytes held (sizes the takes reported, counted from the HMGET on)
     * and the messages taken whose body is not asked for yet because that
     * would pass max_bytes_in_memory: a FIFO, emptied before the next take. */
    size_t bytes_in_memory;
    size_t fetch_inflight;     /* of those: asked for, not come yet (FETCH_WINDOW_BYTES) */
    struct queue_msg **fetch_wait;
    size_t fetch_wait_head, fetch_wait_len, fetch_wait_cap;

    int wake_fd;
    uint64_t wake_val;
    struct op op_wake;
    atomic_int stop_requested;
    int stopping;
    int64_t stop_deadline_ms;
    int done;

    int64_t now_ms;
    int64_t now_us;                  /* monotonic, read with now_ms */
    struct worker_stats st;
};

/* worker.c */
/* worker_msg_release frees a message the worker held (in_memory and its
 * body bytes counted). */
void worker_msg_release(struct worker *w, struct queue_msg *m);
/* The link serving partition (any partition of the queue, not only this
 * worker's), and whether commands for it may be sent now: the link is
 * up with its scripts loaded and no cluster map refresh is pending. */
static inline struct redis_link *worker_link_of(const struct worker *w, int partition)
{
    return w->links[w->part_link[partition]];
}
static inline int worker_link_ready(const struct worker *w, const struct redis_link *l)
{
    return !w->redis_dead && !w->slots_stale && !l->down && !l->warming;
}
static inline int worker_redis_ready(const struct worker *w, int partition)
{
    return worker_link_ready(w, worker_link_of(w, partition));
}
/* The command buffer of partition's link: builders append one command,
 * then worker_rq_push records the reply it expects. */
struct buf *worker_redis_buf(struct worker *w, int partition);
void worker_rq_push(struct worker *w, enum redis_req kind, int partition);
/* worker_link_push: the same on a given link (SCRIPT LOAD, CLUSTER SLOTS). */
void worker_link_push(struct worker *w, struct redis_link *l, enum redis_req kind, int partition,
                      int hold, struct queue_msg *msg);
/* worker_rq_drop forgets every reply l still expects (it is lost). */
void worker_rq_drop(struct worker *w, struct redis_link *l);
/* Replies still expected on any link, and whether every link is idle
 * (nothing queued or in flight). */
size_t worker_rq_pending(const struct worker *w);
int worker_redis_idle(const struct worker *w);
struct ack_item *worker_ack_slot(struct worker *w, int partition);
void worker_mark_dirty(struct worker *w, struct dest *d);
/* host_wake: a connection to h closed; the longest-waiting destination
 * held back by the per-host limit gets to schedule. */
void host_wake(struct worker *w, struct mxhost *h);
/* host_first_waiting: the destination first in h's wait line (NULL: none). */
static inline struct dest *host_first_waiting(const struct mxhost *h)
{
    struct age_node *a = age_list_oldest(&h->wait);
    return a ? (struct dest *)(void *)((char *)a - offsetof(struct dest, host_wait_node)) : NULL;
}
struct io_uring_sqe *worker_sqe(struct worker *w);
struct buf *outq_tail(struct outq *q);
void outq_append(struct outq *q, const void *p, size_t n);
/* outq_next returns the buffer to send now (NULL: a send is in flight or
 * nothing is queued), swapping in the pending bytes once active is sent. */
struct buf *outq_next(struct outq *q);

void worker_redis_arm_recv(struct worker *w, struct redis_link *l);
/* worker_redis_load_scripts queues SCRIPT LOAD for every queue script on
 * l and returns how many (the replies to wait for). */
int worker_redis_load_scripts(struct worker *w, struct redis_link *l);

/* worker_bufs.c - the provided buffer ring.
 * worker_bufs_init registers it on w->ring (after the ring exists); 0 when
 * recv_multishot is off or the kernel refuses (connections then use
 * single-shot receives into a buffer of their own). worker_bufs_free
 * unmaps it, after io_uring_queue_exit. worker_bufs_arm queues a multishot
 * receive on fd completing to op. worker_bufs_take: the buffer a
 * completion's flags name (NULL, bid -1: none); the caller must give it
 * back with worker_bufs_put(bid) once nothing reads it any more. */
int worker_bufs_init(struct worker *w);
void worker_bufs_free(struct worker *w);
void worker_bufs_arm(struct worker *w, int fd, struct op *op);
const uint8_t *worker_bufs_take(struct worker *w, unsigned cqe_flags, int *bid);
void worker_bufs_put(struct worker *w, int bid);

/* worker_notice.c */
/* worker_notice_open connects and subscribes when not connected (at most
 * every NOTICE_RETRY_MS); worker_notice_on_recv handles its receive;
 * worker_notice_free closes it (after the ring is gone). */
void worker_notice_open(struct worker *w);
void worker_notice_on_recv(struct worker *w, int res);
void worker_notice_free(struct worker *w);

/* worker_redis.c */
/* worker_links_init makes the worker's links: one to `redis =`, or with a
 * cluster map (engine.cluster) one per master, and every partition's
 * link. A link that cannot connect yet starts down and is reconnected
 * from worker_redis_tick. Returns 0 with err when out of memory. */
int worker_links_init(struct worker *w, char *err, size_t errlen);
void worker_links_free(struct worker *w);
/* worker_redis_lost: l failed (why: for the log); the worker keeps
 * delivering, holds its outcomes and reconnects from worker_redis_tick. */
void worker_redis_lost(struct worker *w, struct redis_link *l, const char *why);
void worker_redis_tick(struct worker *w);
/* worker_redis_script_reply: the reply to a SCRIPT LOAD on l. After a
 * reconnect, nothing else is sent on l until all of them loaded. */
void worker_redis_script_reply(struct worker *w, struct redis_link *l, const redisReply *r);
/* worker_redis_redirected: r (any reply) is checked for MOVED or ASK.
 * MOVED (a slot has a new master) makes the worker hold its commands and
 * read its cluster map again (CLUSTER SLOTS): WORKER_REDIRECT_MOVED. ASK
 * (the slot is being migrated, this key has gone already) changes
 * nothing: WORKER_REDIRECT_ASK, the caller tries again later or asks the
 * new master (worker_redis_ask). 0: no redirection. */
#define WORKER_REDIRECT_MOVED 1
#define WORKER_REDIRECT_ASK   2
int worker_redis_redirected(struct worker *w, const redisReply *r);
/* worker_redis_ask sends m's HMGET to the master an ASK reply r names,
 * behind ASKING (the one command that master serves for a slot it is
 * still importing). Returns 1, or 0 when that master's link is not ready
 * yet (it is made and connected for next time). */
int worker_redis_ask(struct worker *w, const redisReply *r, struct queue_msg *m);
/* worker_redis_not_run: r is an error Redis gives a command before
 * running it: a cluster's (MOVED, ASK, TRYAGAIN, CLUSTERDOWN) or a
 * Redis's that is loading, lost its scripts, is busy or is a replica
 * (LOADING, NOSCRIPT, BUSY, READONLY, MASTERDOWN). */
int worker_redis_not_run(const redisReply *r);
/* worker_redis_slots_reply: the reply to CLUSTER SLOTS asked on l: the
 * map is replaced, partitions moved to the links of their new nodes
 * (made when new), and commands flow again. */
void worker_redis_slots_reply(struct worker *w, struct redis_link *l, const redisReply *r);
/* worker_redis_refresh asks for the map when one is due (tick and loop). */
void worker_redis_refresh(struct worker *w);

/* worker_conn.c */
struct conn *conn_open(struct worker *w, struct dest *d);
/* dest_level: the policy level this connection runs at (may becomes none
 * when plaintext is remembered for the host). */
enum policy_level dest_level(const struct dest *d);
/* dest_tls_expected: a new connection will try STARTTLS. */
int dest_tls_expected(const struct worker *w, const struct dest *d);
/* dest_start_tier: the tier a new connection to d offers. */
enum tls_tier dest_start_tier(const struct worker *w, const struct dest *d);
/* dest_session_key: the session cache key for d's connections at tier;
 * empty (never stored) when it does not fit in cap. */
void dest_session_key(const struct worker *w, const struct dest *d, enum tls_tier tier,
                      char *out, size_t cap);
/* flags: the completion's (a multishot receive's buffer and F_MORE). */
void conn_on_cqe(struct worker *w, struct op *op, int res, unsigned flags);
void conn_check_deadline(struct worker *w, struct conn *c);
void conn_hand_job(struct worker *w, struct conn *c);
void conn_quit_or_close(struct worker *w, struct conn *c);
void conn_abort(struct worker *w, struct conn *c, const char *reason);
/* conn_reap frees closed connections with no operation in flight. */
void conn_reap(struct worker *w);

/* worker_txn.c - a message's recipients across transactions.
 * job_next_batch: the next transaction's recipients (up to max, the
 * still-to-send ones in order) into j->sm / j->ntx; 0 when none is left
 * or memory ran out. job_record_txn: merge a transaction's replies into
 * the recipients' results (reply: the ending reply on one line, for
 * bounces); returns 1 when recipients are left to send now (a 452 or the
 * per-transaction limit) and the transaction made progress, else settles
 * the rest (later, or failed with 4.4.7 when expired) and returns 0.
 * job_settle_rest: every recipient still to send (and, for FAILED, every
 * deferred one) gets st. job_progress: some recipient is delivered or
 * bounced already, so the message can no longer be returned or deferred
 * whole. job_txn_free: the per-recipient state (job_free calls it). */
int job_next_batch(struct job *j, size_t max);
int job_record_txn(struct job *j, const struct smtp_txn_result *t, const char *reply, int expired);
void job_settle_rest(struct job *j, enum rcpt_state st, const char *esc, const char *reason);
int job_progress(const struct job *j);
void job_txn_free(struct job *j);

/* worker.c: dest_remove takes d out of the hash table and the all
 * destinations list (ndests counts it no more); the caller frees it.
 * worker_dest_stats_event queues d's dest-stats event now: 0 when the
 * command cannot be built (d stays counters_dirty). */
void dest_remove(struct worker *w, struct dest *d);
int worker_dest_stats_event(struct worker *w, struct dest *d);

/* worker_forget.c - destinations unused for destination_forget are freed.
 * dest_forget_track: a new destination (after dest_get linked it) joins
 * the sweep. worker_forget_tick: on the tick, looks at a bounded number
 * of the destinations looked at longest ago and frees those that nothing
 * uses or points to (see the file for the conditions). */
void dest_forget_track(struct worker *w, struct dest *d);
void worker_forget_tick(struct worker *w);

/* worker_slowstart.c - the resumption slow start. slow_start_may_open:
 * may d open one more connection now (sessions: -1 at the start of a
 * schedule, then the cached sessions counted once)? slow_start_wait puts a
 * destination it held back on its host's list, slow_start_unwait takes
 * it off (it opened, its host changes, it is freed); slow_start_sessions:
 * a connection to h cached single_use TLS 1.3 sessions (and reusable: a
 * TLS 1.2 one), so as many waiting destinations are woken (all for a
 * reusable one). */
int slow_start_may_open(struct worker *w, struct dest *d, long *sessions);
void slow_start_wait(struct worker *w, struct dest *d);
void slow_start_unwait(struct dest *d);
void slow_start_sessions(struct worker *w, struct mxhost *h, int single_use, int reusable);

/* worker_hosts.c - MX hosts. host_get: the host of hop, made on first
 * use (NULL: out of memory). dest_set_host: d->host = h (either may be
 * NULL), keeping h->refs; the only way d->host changes. A host's wait
 * list changed: host_waiters_changed keeps the list the tick walks
 * (hosts_wake_waiting). worker_hosts_forget_tick frees hosts unused for
 * destination_forget; worker_hosts_free frees all at the end. */
struct mxhost *host_get(struct worker *w, const struct nexthop *hop);
void dest_set_host(struct worker *w, struct dest *d, struct mxhost *h);
void host_waiters_changed(struct worker *w, struct mxhost *h);
void hosts_wake_waiting(struct worker *w);
void worker_hosts_forget_tick(struct worker *w);
void worker_hosts_free(struct worker *w);

/* worker_site.c - destinations sharing connections (struct site).
 * site_dest_update: d's site from its current route and policy (NULL
 * when it may not share: share_connections off, an egress binding, a
 * policy that checks the domain's own name, no route yet); leaves the old
 * site's ready list when it changes. site_dest_detach: d leaves its site
 * (its host changes, or it is freed). site_offer: d's ready mail that its
 * own connections left waits on the site's list, and the site's
 * connections with room take it now; returns how many of those
 * connections are busy and may take more (they count, like d's own, as
 * soon free: no connection opens for mail they will take). site_next_ready: the first
 * destination on the list with ready mail (those without leave it).
 * site_rotate: d to the back of the list (its rate holds it back).
 * site_conn_avail: c starts (on = 1) or stops taking the site's mail.
 * site_unlist: d leaves the list (a connection of its own will take its
 * mail). site_slot_wait: d, without a connection of its own, waits on
 * the list for one of the site's connections to close (the site is at
 * site_max_conns; nothing else holds it back): like a destination
 * waiting for a host slot, it is off the tick's list, and conn_close
 * wakes the first in line. (One with connections stays on the tick's
 * list: its limit may climb back after a backoff.)
 * sites_free: a host's sites, with it. */
void site_dest_update(struct worker *w, struct dest *d);
void site_dest_detach(struct dest *d);
size_t site_offer(struct worker *w, struct dest *d);
struct dest *site_next_ready(struct site *s);
void site_rotate(struct site *s, struct dest *d);
void site_conn_avail(struct conn *c, int on);
void site_unlist(struct dest *d);
int site_slot_wait(const struct worker *w, const struct dest *d);
/* site_max_conns: the connections d's site may hold now (max_connections,
 * plus what the round trip earned it: site_txn_time). site_txn_time: one
 * transaction of the site took us microseconds from its start to its
 * final reply. */
int site_max_conns(const struct dest *d);
/* site_depth: the transactions a connection of s may have in flight. */
int site_depth(const struct site *s);
void site_txn_time(struct worker *w, struct site *s, int64_t us);
void sites_free(struct mxhost *h);

/* worker_dns.c - c-ares on the worker's ring, and a destination's next
 * hops from MX/A/AAAA answers (cached; see engine/dns.h). */
enum route_state { ROUTE_READY, ROUTE_WAIT, ROUTE_DEFER, ROUTE_BOUNCE };
int worker_dns_init(struct worker *w, char *err, size_t errlen);
void worker_dns_free(struct worker *w);
void worker_dns_on_cqe(struct worker *w, struct op *op, int res);
/* worker_dns_tick: c-ares timeouts and retries. */
void worker_dns_tick(struct worker *w);
/* dest_route: READY when d has a next hop (static or from DNS); WAIT while
 * lookups run (d is marked dirty when they answer); DEFER or BOUNCE with
 * d->no_route (and d->bounce_status) set. */
enum route_state dest_route(struct worker *w, struct dest *d);
/* dest_route_stale: d's DNS answers expired and nothing is open to it. */
int dest_route_stale(const struct worker *w, const struct dest *d);
/* dest_hop_failed: a connection to the current hop failed before the
 * session was ready. 1 when another address is left to try (the failure
 * does not count against the destination), 0 when all have been tried. */
int dest_hop_failed(struct worker *w, struct dest *d);
/* dest_hop_settled: 0 while a failed hop still has connections open (open
 * nothing new); moves to the next hop once they have closed. */
int dest_hop_settled(struct worker *w, struct dest *d);

/* worker_shaping.c - rate limits, backoff and egress addresses. */
void dest_shaping_init(struct worker *w, struct dest *d);
/* dest_may_connect: the connection rates (destination, MX host) allow a
 * new connection now (and count it). */
int dest_may_connect(struct worker *w, struct dest *d);
/* dest_may_send: the message rates allow handing one more message now. */
int dest_may_send(struct worker *w, struct dest *d);
/* dest_max_conns: max_connections, lowered while backing off. */
int dest_max_conns(const struct dest *d);
/* dest_paused: a backoff pause is running. */
int dest_paused(const struct worker *w, const struct dest *d);
/* dest_surplus_conn: d has more live connections (not closing, not
 * saying QUIT) than dest_max_conns allows: a backoff lowered the limit,
 * and a connection finishing a message should leave. */
int dest_surplus_conn(const struct dest *d);
/* dest_reply_seen: a reply from d's host: a 421 or a backoff pattern
 * backs off; a 2xx after a backoff steps back up. */
void dest_reply_seen(struct worker *w, struct dest *d, int code, const char *text);
/* dest_shaping_idle: no pause is running and both of d's rate buckets
 * are back where a new destination's start (forgetting loses nothing). */
int dest_shaping_idle(const struct worker *w, const struct dest *d);
/* dest_bind_source: bind fd to d's next egress address of the family
 * (round robin); 0 with errno on failure; 1 also when there is none. */
int dest_bind_source(struct dest *d, int fd, int family);

/* worker_outcome.c */
/* outcome_fail_status: bounce with an enhanced status (e.g. 5.1.10). */
void outcome_fail_status(struct worker *w, struct job *j, const char *status, const char *reason);
void outcome_txn(struct worker *w, struct conn *c, struct job *j);
void outcome_return(struct worker *w, struct job *j, const char *reason);
void outcome_defer(struct worker *w, struct job *j, const char *reason);
void outcome_fail(struct worker *w, struct job *j, const char *reason);
/* outcome_bad: a malformed entry (m->bad) is set aside; frees m. */
void outcome_bad(struct worker *w, struct queue_msg *m);
void dest_requeue_front(struct dest *d, struct job *j);
/* job_requeue: j, taken off connection c, goes back to the front of its
 * own destination's ready list, to be sent again by c or another
 * connection; a site's message (j->d is not c->d) has its destination
 * scheduled again. */
void job_requeue(struct worker *w, const struct conn *c, struct job *j);
void dest_defer_all(struct worker *w, struct dest *d, const char *reason);
/* job_new: a zeroed job, from the worker's pool when it has one; NULL
 * when out of memory. job_free: releases the job's message and keeps the
 * job for reuse (or frees it). job_pool_free: the pool, at the end. */
struct job *job_new(struct worker *w);
void job_free(struct worker *w, struct job *j);
void job_pool_free(struct worker *w);
void stats_tls_mix(struct worker_stats *st, const char *name);

#endif
