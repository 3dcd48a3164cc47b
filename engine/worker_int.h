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

#include "engine/buf.h"
#include "engine/resolver.h"
#include "engine/smtp_client.h"
#include "engine/worker.h"
#include "tls/session_cache.h"
#include "tls/tls.h"

#define RECV_BUF_SIZE        (16 * 1024)
#define REDIS_RECV_SIZE      (256 * 1024)
#define TICK_MS              50
#define CONN_LINGER_MS       1000    /* wait for the peer's FIN after 221 */
#define HOST_STEAL_IDLE_MS   250     /* an only connection idle this long may go to a waiting destination */
#define EMPTY_POLL_MS        100     /* re-poll an empty partition */
#define CONN_FAILURES_MAX    3       /* then the destination's mail is deferred */
#define JOB_LOST_CONNS_MAX   3       /* a message that keeps losing its connection is deferred */
#define SESSION_CACHE_KEYS   4096
#define SESSION_CACHE_SESSIONS 16384  /* about 2-3 KB each */
#define EV_FIELDS_MAX        32      /* strings (pairs * 2) per event */
#define HOST_BUCKETS         1024    /* MX host table (power of two) */
#define DEST_REPORT_MAX      20      /* per-destination summary lines per worker */
#define DEST_STATS_EVERY_MS  10000   /* per-destination counters to the events stream */

enum op_kind {
    OP_CONNECT, OP_RECV, OP_SEND,       /* on a struct conn */
    OP_REDIS_RECV, OP_REDIS_SEND, OP_WAKE,
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

struct job {
    struct queue_msg *m;
    struct dest *d;
    struct job *next;
    struct smtp_msg sm;
    size_t ntx;            /* recipients in this transaction (<= limit) */
    int lost_conns;        /* connections lost with this message in flight */
};

/* An MX host:port, shared by every destination routed to it: the
 * per-host connection count and what worked with it. */
struct mxhost {
    char key[CONFIG_HOST_MAX + 8];   /* "host:port" */
    int nconns;                      /* this worker's */
    atomic_int *all_conns;           /* every worker's (struct engine) */
    atomic_int *all_waiting;         /* destinations on every worker's wait list */
    /* what worked at level may, remembered until *_until_ms */
    enum tls_tier tier;              /* the tier to start with */
    int64_t tier_until_ms;
    int plaintext;                   /* TLS failed altogether */
    int64_t plaintext_until_ms;
    /* destinations held back by max_connections_per_host, woken in
     * order as this host's connections close */
    struct dest *wait_head, *wait_tail;
    struct mxhost *next;
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
    struct dest *host_wait_next;
    int64_t cert_plaintext_until_ms;   /* at may: our client certificate was the problem */
    uint8_t leaf_sha256[32];   /* the peer's certificate, to notice a change */
    int have_leaf;
    struct dest_counters n;
    int counters_dirty;        /* changed since the last stats event */
    struct nexthop hop;
    int have_hop;
    const char *no_route;      /* why there is no next hop */
    struct job *ready_head, *ready_tail;
    size_t nready;
    int nconns;                /* open (connecting, busy or idle) */
    int nconnecting;           /* not yet READY */
    int consecutive_failures;
    int64_t next_connect_ms;   /* reconnect backoff */
    int64_t backoff_until_ms;  /* dead destination: defer new mail until */
    char last_error[256];
    struct dest *hnext;        /* hash chain */
    struct dest *dnext;        /* all destinations list */
    int dirty;                 /* on the worker's dirty list */
    struct dest *dirty_next;
};

enum conn_state { CONN_CONNECTING, CONN_SMTP, CONN_CLOSING };

struct conn {
    struct dest *d;
    int fd;
    enum conn_state state;
    int ops;                   /* ring operations in flight */
    struct op op_connect, op_recv, op_send;
    int recv_armed;
    uint8_t rbuf[RECV_BUF_SIZE];
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
    struct buf plain;          /* decrypted input scratch */
    int established;
    int idle;
    struct job *job;
    uint64_t msgs;
    int64_t deadline_ms;
    int quitting;
    int lingering;             /* 221 received, waiting for the peer's FIN */
    int peer_eof;              /* the peer closed its side */
    struct conn *next, *prev;  /* worker's connection list */
};

struct ack_item {
    char id[QUEUE_ID_MAX];
    enum queue_outcome_kind kind;
    char *remaining;
    int64_t retry_at;
    int64_t lease_until;       /* the lease this ack settles */
    char *fields[EV_FIELDS_MAX];
    size_t nfields;
};

struct partition {
    int id;
    int take_inflight;
    int64_t next_poll_ms;
    int empty;                 /* last take returned nothing */
    struct ack_item *acks;
    size_t nacks, acks_cap;
};

enum redis_req { RQ_TAKE, RQ_ACK, RQ_ENQUEUE, RQ_SCRIPT, RQ_EVENT };

struct redis_pending {
    enum redis_req kind;
    int partition;
};

struct worker {
    const struct engine *e;
    const struct tern_config *cfg;
    int id;
    struct io_uring ring;
    int ring_ok;
    struct resolver resolver;
    struct tls_client_ctx *tls[CONFIG_TLS_CTX_MAX];   /* per config tls_ctx spec */
    struct tls_session_cache *sessions;
    struct mxhost *hosts[HOST_BUCKETS];
    int64_t next_dest_stats_ms;

    /* Redis */
    int rfd;
    struct outq rout;
    redisReader *reader;
    uint8_t *rrecv;
    struct op op_rrecv, op_rsend;
    int rrecv_armed;
    struct redis_pending *rq;
    size_t rq_head, rq_len, rq_cap;
    struct queue_scripts scripts;
    int redis_dead;

    struct partition *parts;
    int nparts;

    struct dest **dtab;
    size_t dtab_size, ndests;
    struct dest *dests;
    struct dest *dirty;

    struct conn *conns;
    int nconns;
    int reap_pending;          /* a closed connection may be freeable */
    size_t in_memory;          /* jobs held */

    int wake_fd;
    uint64_t wake_val;
    struct op op_wake;
    atomic_int stop_requested;
    int stopping;
    int64_t stop_deadline_ms;
    int done;

    int64_t now_ms;
    struct worker_stats st;
};

/* worker.c */
int64_t worker_clock_ms(void);
struct buf *worker_redis_buf(struct worker *w);
void worker_rq_push(struct worker *w, enum redis_req kind, int partition);
struct ack_item *worker_ack_slot(struct worker *w, int partition);
void worker_mark_dirty(struct worker *w, struct dest *d);
/* host_wake: a connection to h closed; the longest-waiting destination
 * held back by the per-host limit gets to schedule. */
void host_wake(struct worker *w, struct mxhost *h);
struct io_uring_sqe *worker_sqe(struct worker *w);
struct buf *outq_tail(struct outq *q);
void outq_append(struct outq *q, const void *p, size_t n);
/* outq_next returns the buffer to send now (NULL: a send is in flight or
 * nothing is queued), swapping in the pending bytes once active is sent. */
struct buf *outq_next(struct outq *q);

/* worker_conn.c */
struct conn *conn_open(struct worker *w, struct dest *d);
/* dest_level: the policy level this connection runs at (may becomes none
 * when plaintext is remembered for the host). */
enum policy_level dest_level(const struct dest *d);
/* dest_tls_expected: a new connection will try STARTTLS. */
int dest_tls_expected(const struct worker *w, const struct dest *d);
/* dest_start_tier: the tier a new connection to d offers. */
enum tls_tier dest_start_tier(const struct worker *w, const struct dest *d);
/* dest_session_key: the session cache key for d's connections at tier. */
void dest_session_key(const struct worker *w, const struct dest *d, enum tls_tier tier,
                      char *out, size_t cap);
void conn_on_cqe(struct worker *w, struct op *op, int res);
void conn_check_deadline(struct worker *w, struct conn *c);
void conn_hand_job(struct worker *w, struct conn *c);
void conn_quit_or_close(struct worker *w, struct conn *c);
void conn_abort(struct worker *w, struct conn *c, const char *reason);
/* conn_reap frees closed connections with no operation in flight. */
void conn_reap(struct worker *w);

/* worker_outcome.c */
void outcome_txn(struct worker *w, struct conn *c, struct job *j);
void outcome_return(struct worker *w, struct job *j, const char *reason);
void outcome_defer(struct worker *w, struct job *j, const char *reason);
void outcome_fail(struct worker *w, struct job *j, const char *reason);
void dest_requeue_front(struct dest *d, struct job *j);
void dest_defer_all(struct worker *w, struct dest *d, const char *reason);
void job_free(struct worker *w, struct job *j);
void stats_tls_mix(struct worker_stats *st, const char *name);

#endif
