/*
 * sink_loop.c - one tern-sink thread: an io_uring ring serving SMTP.
 *
 * Per thread: one ring (SINGLE_ISSUER|DEFER_TASKRUN when the kernel has
 * them), a multishot accept on this thread's SO_REUSEPORT listener, one
 * provided-buffer ring that every connection's multishot recv draws from,
 * and an eventfd read that the main thread completes to stop us.
 *
 * Completions are handled in batches: for every io_uring_enter we walk
 * all CQEs, feed the bytes to the connections' SMTP sessions (through TLS
 * when on) and only then, once per batch, return the receive buffers,
 * start sends and close connections. Replies to everything a client
 * pipelined in one batch therefore leave in one send.
 *
 * Lifetimes: user_data carries (op kind, connection slot, generation). A
 * connection counts its ops in flight (the multishot recv until its final
 * CQE, the one send) and is freed only when it is closing and that count
 * is zero; a CQE whose generation does not match its slot is stale and
 * ignored.
 *
 * Sends: one in flight per connection from `sending`, which is never
 * touched while the kernel reads it; new output goes to `pending` and the
 * two swap when the send completes.
 *
 * Test knobs (sink.c documents them): --drop-rate draws a drop point per
 * transaction (sink_drop.c) checked where the session reaches it;
 * --reply-delay holds the final reply behind an io_uring timeout, one
 * more op in flight; --abort-handshake reads the ClientHello record and
 * closes. The wake eventfd also pauses the thread for SIGUSR1 (sink.h,
 * struct sink_pause).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <liburing.h>

#include "bench/sink.h"

#define SINK_SQ_ENTRIES   1024
#define SINK_CQ_ENTRIES   8192
#define SINK_BUF_SIZE     (16 * 1024)   /* one recv; <= TLS_FEED_MAX */
#define SINK_NBUFS        1024          /* power of two */
#define SINK_BGID         1
#define SINK_SLOT_BITS    24
#define SINK_MAX_CONNS    (1u << SINK_SLOT_BITS)
#define SINK_TLS_HEADER   5             /* TLS record: type, version, length */
#define SINK_TLS_HANDSHAKE 0x16         /* record type of a ClientHello */

_Static_assert(SINK_BUF_SIZE <= TLS_FEED_MAX, "one recv must fit one TLS feed");
_Static_assert((SINK_NBUFS & (SINK_NBUFS - 1)) == 0, "buffer ring size is a power of two");

enum op_kind { OP_ACCEPT = 1, OP_RECV, OP_SEND, OP_WAKE, OP_CANCEL, OP_DELAY };

enum close_kind { CLOSE_NONE, CLOSE_GRACEFUL, CLOSE_ABORT };

struct conn {
    int fd;
    uint32_t slot;
    uint32_t gen;
    int inflight;               /* ops whose last CQE has not arrived */
    unsigned recv_armed : 1;
    unsigned send_inflight : 1;
    unsigned dirty : 1;         /* on the batch's dirty list */
    unsigned shut : 1;          /* shutdown() done */
    unsigned in_use : 1;
    unsigned delay_armed : 1;   /* --reply-delay timeout in flight */
    unsigned hello_abort : 1;   /* --abort-handshake: reading the hello */
    unsigned accept_msg : 1;    /* --reply-first spent: this one gets 250 */
    enum close_kind closing;
    struct buf sending;         /* bytes of the send in flight: read-only */
    struct buf pending;         /* output queued behind it */
    struct smtp_server smtp;
    struct tls_conn *tls;       /* after STARTTLS */
    int tls_done;               /* handshake finished */
    struct tls_info tinfo;
    char peer[64];              /* "ip:port" when recording */
    enum sink_drop drop;        /* --drop-rate plan, this transaction */
    struct __kernel_timespec delay_ts;  /* read by the kernel at submit */
    uint8_t hello_hdr[SINK_TLS_HEADER];
    size_t hello_got;           /* ClientHello bytes read */
};

struct loop {
    struct sink_thread *th;
    struct sink *sk;
    struct io_uring ring;
    int ring_ok;
    struct io_uring_buf_ring *br;
    size_t br_bytes;
    uint8_t *bufs;
    size_t bufs_bytes;
    unsigned br_mask;
    unsigned br_added;          /* buffers returned this batch */
    struct conn **conns;        /* slots; freed slots keep their struct */
    uint32_t nconns, capconns;
    uint32_t *freelist;
    uint32_t nfree;
    uint32_t *dirty;            /* capacity capconns: each conn once */
    uint32_t ndirty;
    struct buf plain;           /* TLS plaintext scratch */
    struct buf rec;             /* record lines of this batch */
    uint64_t wake_val;
    uint64_t seen_round;        /* last sink_pause round we joined */
    struct sink_rng rng;        /* --drop-rate draws */
    int accept_armed;
    int stop;
};

static uint64_t tag(enum op_kind k, uint32_t slot, uint32_t gen)
{
    return ((uint64_t)k << 56) | ((uint64_t)(slot & (SINK_MAX_CONNS - 1)) << 32) | gen;
}
static enum op_kind tag_kind(uint64_t t) { return (enum op_kind)(t >> 56); }
static uint32_t tag_slot(uint64_t t) { return (uint32_t)(t >> 32) & (SINK_MAX_CONNS - 1); }
static uint32_t tag_gen(uint64_t t) { return (uint32_t)t; }

static void logf_err(struct loop *l, const char *what, const char *detail)
{
    if (!l->sk->cfg.quiet)
        fprintf(stderr, "tern-sink[%d]: %s: %s\n", l->th->id, what, detail);
}

/* An SQE, submitting what is queued when the SQ is full. */
static struct io_uring_sqe *get_sqe(struct loop *l)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&l->ring);
    if (sqe == NULL) {
        io_uring_submit(&l->ring);
        sqe = io_uring_get_sqe(&l->ring);
    }
    return sqe;
}

static void arm_accept(struct loop *l)
{
    struct io_uring_sqe *sqe = get_sqe(l);
    if (sqe == NULL)
        return;     /* retried after the next batch */
    io_uring_prep_multishot_accept(sqe, l->th->listen_fd, NULL, NULL, 0);
    io_uring_sqe_set_data64(sqe, tag(OP_ACCEPT, 0, 0));
    l->accept_armed = 1;
}

static void arm_wake(struct loop *l)
{
    struct io_uring_sqe *sqe = get_sqe(l);
    if (sqe == NULL)
        return;
    io_uring_prep_read(sqe, l->th->wake_fd, &l->wake_val, sizeof(l->wake_val), 0);
    io_uring_sqe_set_data64(sqe, tag(OP_WAKE, 0, 0));
}

static int arm_recv(struct loop *l, struct conn *c)
{
    struct io_uring_sqe *sqe = get_sqe(l);
    if (sqe == NULL)
        return 0;
    io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = SINK_BGID;
    io_uring_sqe_set_data64(sqe, tag(OP_RECV, c->slot, c->gen));
    c->recv_armed = 1;
    c->inflight++;
    return 1;
}

static void mark_dirty(struct loop *l, struct conn *c)
{
    if (!c->dirty) {
        c->dirty = 1;
        l->dirty[l->ndirty++] = c->slot;
    }
}

static void conn_close(struct loop *l, struct conn *c, enum close_kind k)
{
    if (k > c->closing)
        c->closing = k;
    mark_dirty(l, c);
}

/* Move ciphertext TLS produced to the connection's output. */
static void take_tls_output(struct conn *c)
{
    size_t n;
    const uint8_t *p = tls_conn_output(c->tls, &n);
    if (n) {
        buf_append(&c->pending, p, n);
        tls_conn_output_consume(c->tls, n);
    }
}

/* Move the SMTP replies to the output, encrypting once TLS is up. */
static void flush_smtp(struct loop *l, struct conn *c)
{
    size_t n;
    const uint8_t *p = smtp_server_output(&c->smtp, &n);
    if (n == 0)
        return;
    if (c->tls && c->tls_done) {
        if (tls_conn_write(c->tls, p, n) != TLS_OK) {
            logf_err(l, "TLS write", tls_conn_error(c->tls));
            conn_close(l, c, CLOSE_ABORT);
        }
        take_tls_output(c);
    } else {
        buf_append(&c->pending, p, n);
    }
    smtp_server_output_consume(&c->smtp, n);
    if (c->pending.err)
        conn_close(l, c, CLOSE_ABORT);
    mark_dirty(l, c);
}

static void count(_Atomic uint64_t *ctr, uint64_t n)
{
    atomic_fetch_add_explicit(ctr, n, memory_order_relaxed);
}

/* --drop-rate: close now without answering what is pending (replies
 * already queued still go out, then shutdown: no QUIT, no close_notify). */
static void drop_now(struct loop *l, struct conn *c)
{
    size_t n;
    smtp_server_output(&c->smtp, &n);
    smtp_server_output_consume(&c->smtp, n);
    count(&l->th->c.drops[c->drop], 1);
    c->drop = SINK_DROP_NONE;
    conn_close(l, c, CLOSE_GRACEFUL);
}

/* Answer the pending message, draw the next transaction's drop (only
 * now: until the reply the session still shows this one's MAIL FROM) and
 * queue the reply at once, so that a drop at a MAIL FROM pipelined behind
 * it cannot withhold it. */
static void reply_message(struct loop *l, struct conn *c)
{
    smtp_server_message_reply(&c->smtp, c->accept_msg ? "250 2.0.0 Ok: queued" : NULL);
    c->accept_msg = 0;
    c->drop = sink_drop_draw(&l->rng, l->sk->cfg.drop_rate, 0);
    flush_smtp(l, c);
}

/* --reply-delay: the reply waits for a timeout op (reply_message in
 * on_delay); the thread goes on serving the others. */
static void arm_delay(struct loop *l, struct conn *c)
{
    uint64_t ms = l->sk->cfg.reply_delay_ms;
    struct io_uring_sqe *sqe = get_sqe(l);
    if (sqe == NULL) {
        conn_close(l, c, CLOSE_ABORT);
        return;
    }
    c->delay_ts.tv_sec = (long long)(ms / 1000);
    c->delay_ts.tv_nsec = (long long)(ms % 1000) * 1000000;
    io_uring_prep_timeout(sqe, &c->delay_ts, 0, 0);
    io_uring_sqe_set_data64(sqe, tag(OP_DELAY, c->slot, c->gen));
    c->delay_armed = 1;
    c->inflight++;
}

static void record(struct loop *l, struct conn *c, const struct smtp_server_envelope *e,
                   int dropped)
{
    if (l->sk->record_fd >= 0)
        sink_record_line(&l->rec, e, c->tls_done ? c->tinfo.protocol : NULL,
                         c->tls_done ? c->tinfo.cipher : NULL, c->tls_done && c->tinfo.resumed,
                         c->peer, dropped);
}

static void on_message(struct loop *l, struct conn *c)
{
    struct sink *sk = l->sk;
    struct smtp_server_envelope e;
    if (!smtp_server_envelope(&c->smtp, &e))
        return;
    if (c->drop == SINK_DROP_DATA) {
        /* A body that came whole with its command (BDAT; DATA
         * pipelined against RFC 2920) had no mid-body moment: dropped at
         * its end, unrecorded, like a partial one. */
        drop_now(l, c);
        return;
    }
    if (c->drop == SINK_DROP_DOT) {
        record(l, c, &e, 1);    /* a real receiver may have kept it */
        drop_now(l, c);
        return;
    }
    const char *r = sk->cfg.smtp.data_reply;
    if (r && sk->cfg.reply_first &&
        atomic_fetch_add_explicit(&sk->replied, 1, memory_order_relaxed) >= sk->cfg.reply_first) {
        r = NULL;
        c->accept_msg = 1;
    }
    if (r == NULL || r[0] == '2') {
        if (sk->cfg.per_client)
            sink_clients_message(&sk->clients, c->peer);
        count(&l->th->c.messages, 1);
        count(&l->th->c.bytes, e.data_len);
        record(l, c, &e, 0);
    } else {
        count(&l->th->c.rejected, 1);
    }
    if (sk->cfg.reply_delay_ms)
        arm_delay(l, c);
    else
        reply_message(l, c);
}

/* Run the SMTP session over what it was fed. */
static void run_smtp(struct loop *l, struct conn *c)
{
    for (;;) {
        struct smtp_server_event ev = smtp_server_next(&c->smtp);
        /* mail_done (public in struct smtp_server) turns 1 when MAIL FROM
         * is accepted; its reply is still in the session's output. */
        if (c->drop == SINK_DROP_MAIL && c->smtp.mail_done) {
            drop_now(l, c);
            return;
        }
        if (ev.kind == SMTP_SRV_EV_NONE)
            break;
        if (ev.kind == SMTP_SRV_EV_MESSAGE) {
            on_message(l, c);
            if (c->closing)
                return;
        } else if (ev.kind == SMTP_SRV_EV_STARTTLS) {
            flush_smtp(l, c);   /* the 220 goes out in plaintext */
            if (l->sk->cfg.abort_handshake) {
                c->hello_abort = 1;
                return;
            }
            c->tls = tls_conn_server_new(l->sk->tls);
            if (c->tls == NULL) {
                logf_err(l, "STARTTLS", "cannot create TLS connection");
                conn_close(l, c, CLOSE_ABORT);
            }
            return;
        } else {    /* CLOSE: the last reply, then close_notify */
            flush_smtp(l, c);
            if (c->tls && c->tls_done) {
                tls_conn_close(c->tls);
                take_tls_output(c);
            }
            conn_close(l, c, CLOSE_GRACEFUL);
            return;
        }
    }
    flush_smtp(l, c);
}

static void feed_smtp(struct loop *l, struct conn *c, const uint8_t *p, size_t n)
{
    if (c->drop == SINK_DROP_DATA &&
        (c->smtp.state == SMTP_SRV_ST_DATA || c->smtp.state == SMTP_SRV_ST_BDAT)) {
        drop_now(l, c);     /* body bytes came; the message is not whole */
        return;
    }
    if (!smtp_server_feed(&c->smtp, p, n))
        logf_err(l, "SMTP input refused", smtp_server_close_reason(&c->smtp)
                                                 ? smtp_server_close_reason(&c->smtp)
                                                 : "?");
    run_smtp(l, c);
}

/* --abort-handshake: read the ClientHello's record (its header says how
 * long it is; anything else than a handshake record ends it at once),
 * then close without an alert. Reading it all first makes the close a
 * FIN, not a reset for unread bytes. */
static void take_hello(struct loop *l, struct conn *c, const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n && c->hello_got < SINK_TLS_HEADER)
        c->hello_hdr[c->hello_got++] = p[i++];
    c->hello_got += n - i;
    if (c->hello_got < SINK_TLS_HEADER)
        return;
    size_t len = SINK_TLS_HEADER + ((size_t)c->hello_hdr[3] << 8 | c->hello_hdr[4]);
    if (c->hello_hdr[0] == SINK_TLS_HANDSHAKE && c->hello_got < len)
        return;
    count(&l->th->c.tls_failed, 1);
    conn_close(l, c, CLOSE_GRACEFUL);
}

static void tls_failed(struct loop *l, struct conn *c, const char *stage)
{
    char what[128];
    snprintf(what, sizeof(what), "TLS %s from %s", stage, c->peer[0] ? c->peer : "client");
    logf_err(l, what, tls_conn_error(c->tls));
    take_tls_output(c);         /* the alert, if any */
    conn_close(l, c, CLOSE_GRACEFUL);
}

static void on_tls_data(struct loop *l, struct conn *c, const uint8_t *p, size_t n)
{
    if (!tls_conn_feed(c->tls, p, n)) {
        conn_close(l, c, CLOSE_ABORT);
        return;
    }
    if (!c->tls_done) {
        enum tls_status st = tls_conn_handshake(c->tls);
        take_tls_output(c);
        mark_dirty(l, c);
        if (st == TLS_WANT_IO)
            return;
        if (st != TLS_OK) {
            count(&l->th->c.tls_failed, 1);
            tls_failed(l, c, "handshake");
            return;
        }
        c->tls_done = 1;
        tls_conn_info(c->tls, &c->tinfo);
        count(c->tinfo.resumed ? &l->th->c.tls_resumed : &l->th->c.tls_full, 1);
        smtp_server_tls_started(&c->smtp);
    }
    buf_reset(&l->plain);
    enum tls_status st = tls_conn_read(c->tls, &l->plain);
    take_tls_output(c);
    mark_dirty(l, c);
    if (buf_used(&l->plain))
        feed_smtp(l, c, buf_peek(&l->plain), buf_used(&l->plain));
    if (c->closing)
        return;
    if (st == TLS_CLOSED) {
        tls_conn_close(c->tls);
        take_tls_output(c);
        conn_close(l, c, CLOSE_GRACEFUL);
    } else if (st == TLS_ERROR) {
        tls_failed(l, c, "read");
    }
}

/* --- connections ------------------------------------------------------- */

static struct conn *conn_new(struct loop *l, int fd)
{
    uint32_t slot;
    if (l->nfree) {
        slot = l->freelist[--l->nfree];
    } else {
        if (l->nconns == l->capconns) {
            uint32_t ncap = l->capconns ? l->capconns * 2 : 256;
            if (ncap > SINK_MAX_CONNS)
                return NULL;
            struct conn **nc = realloc(l->conns, ncap * sizeof(*nc));
            if (nc == NULL)
                return NULL;
            l->conns = nc;
            uint32_t *nf = realloc(l->freelist, ncap * sizeof(*nf));
            if (nf == NULL)
                return NULL;
            l->freelist = nf;
            uint32_t *nd = realloc(l->dirty, ncap * sizeof(*nd));
            if (nd == NULL)
                return NULL;
            l->dirty = nd;
            l->capconns = ncap;
        }
        l->conns[l->nconns] = calloc(1, sizeof(struct conn));
        if (l->conns[l->nconns] == NULL)
            return NULL;
        l->conns[l->nconns]->slot = l->nconns;
        slot = l->nconns++;
    }
    struct conn *c = l->conns[slot];
    uint32_t gen = c->gen;
    memset(c, 0, sizeof(*c));
    c->slot = slot;
    c->gen = gen;
    c->fd = fd;
    c->in_use = 1;
    buf_init(&c->sending, 0);
    buf_init(&c->pending, 0);
    return c;
}

static void conn_free(struct loop *l, struct conn *c)
{
    close(c->fd);
    smtp_server_cleanup(&c->smtp);
    tls_conn_free(c->tls);
    c->tls = NULL;
    buf_free(&c->sending);
    buf_free(&c->pending);
    c->in_use = 0;
    c->gen++;
    l->freelist[l->nfree++] = c->slot;
}

/* The connection ends for the client once we shut it down (our FIN goes
 * out): from then on it no longer counts as open, so the peak measures
 * what the client kept open, not how soon this loop got to free it. */
static void conn_shut(struct loop *l, struct conn *c)
{
    c->shut = 1;
    atomic_fetch_sub_explicit(&l->sk->active, 1, memory_order_relaxed);
    if (l->sk->cfg.per_client)
        sink_clients_close(&l->sk->clients, c->peer);
}

static void peer_name(int fd, char *out, size_t cap)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char ip[INET6_ADDRSTRLEN];
    out[0] = '\0';
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) != 0)
        return;
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        if (inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip)))
            snprintf(out, cap, "%s:%u", ip, ntohs(a->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        if (inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip)))
            snprintf(out, cap, "[%s]:%u", ip, ntohs(a->sin6_port));
    }
}

static void on_accept(struct loop *l, int fd)
{
    struct sink *sk = l->sk;
    struct conn *c = conn_new(l, fd);
    if (c == NULL) {
        logf_err(l, "accept", "out of connection slots or memory");
        close(fd);
        return;
    }
    count(&l->th->c.connections, 1);
    uint64_t now = atomic_fetch_add_explicit(&sk->active, 1, memory_order_relaxed) + 1;
    uint64_t peak = atomic_load_explicit(&sk->peak, memory_order_relaxed);
    while (now > peak &&
           !atomic_compare_exchange_weak_explicit(&sk->peak, &peak, now, memory_order_relaxed,
                                                  memory_order_relaxed))
        ;
    if (sk->record_fd >= 0 || !sk->cfg.quiet || sk->cfg.per_client)
        peer_name(fd, c->peer, sizeof(c->peer));
    if (sk->cfg.per_client)
        sink_clients_open(&sk->clients, c->peer);
    if (!smtp_server_init(&c->smtp, &sk->cfg.smtp)) {
        conn_close(l, c, CLOSE_ABORT);
        conn_shut(l, c);    /* nothing armed: free at once in finish_batch */
        return;
    }
    flush_smtp(l, c);
    c->drop = sink_drop_draw(&l->rng, sk->cfg.drop_rate, 1);
    if (c->drop == SINK_DROP_GREETING)
        drop_now(l, c);     /* the greeting goes out; nothing is read */
    else if (!arm_recv(l, c))
        conn_close(l, c, CLOSE_ABORT);
}

/* --- completions ------------------------------------------------------- */

static void recycle_buffer(struct loop *l, unsigned bid)
{
    io_uring_buf_ring_add(l->br, l->bufs + (size_t)bid * SINK_BUF_SIZE, SINK_BUF_SIZE,
                          (unsigned short)bid, l->br_mask, (int)l->br_added);
    l->br_added++;
}

static struct conn *conn_of(struct loop *l, uint64_t t)
{
    uint32_t slot = tag_slot(t);
    if (slot >= l->nconns)
        return NULL;
    struct conn *c = l->conns[slot];
    if (!c->in_use || c->gen != tag_gen(t))
        return NULL;
    return c;
}

static void on_recv(struct loop *l, struct io_uring_cqe *cqe)
{
    struct conn *c = conn_of(l, cqe->user_data);
    int more = (cqe->flags & IORING_CQE_F_MORE) != 0;
    if (cqe->flags & IORING_CQE_F_BUFFER) {
        unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
        if (c && cqe->res > 0 && !c->closing) {
            const uint8_t *p = l->bufs + (size_t)bid * SINK_BUF_SIZE;
            if (c->hello_abort)
                take_hello(l, c, p, (size_t)cqe->res);
            else if (c->tls)
                on_tls_data(l, c, p, (size_t)cqe->res);
            else
                feed_smtp(l, c, p, (size_t)cqe->res);
        }
        recycle_buffer(l, bid);
    }
    if (c == NULL || more)
        return;
    /* The multishot recv ended. */
    c->recv_armed = 0;
    c->inflight--;
    mark_dirty(l, c);
    if (c->closing)
        return;
    if (cqe->res == -ENOBUFS || cqe->res > 0) {
        /* Out of buffers (they come back at the end of this batch) or the
         * kernel ended the multishot for its own reasons: re-arm. */
        if (!arm_recv(l, c))
            conn_close(l, c, CLOSE_ABORT);
    } else if (cqe->res == 0) {
        conn_close(l, c, CLOSE_GRACEFUL);   /* client closed */
    } else {
        conn_close(l, c, CLOSE_ABORT);
    }
}

static void on_send(struct loop *l, struct io_uring_cqe *cqe)
{
    struct conn *c = conn_of(l, cqe->user_data);
    if (c == NULL)
        return;
    c->send_inflight = 0;
    c->inflight--;
    mark_dirty(l, c);
    if (cqe->res < 0) {
        buf_reset(&c->sending);
        conn_close(l, c, CLOSE_ABORT);
        return;
    }
    buf_consume(&c->sending, (size_t)cqe->res);
}

/* The --reply-delay timeout ended (or was cancelled by a close). */
static void on_delay(struct loop *l, struct io_uring_cqe *cqe)
{
    struct conn *c = conn_of(l, cqe->user_data);
    if (c == NULL)
        return;
    c->delay_armed = 0;
    c->inflight--;
    mark_dirty(l, c);
    if (c->closing)
        return;
    reply_message(l, c);
    run_smtp(l, c);     /* commands pipelined behind the message */
}

/* Join a pause that main asked for (SIGUSR1): wait, holding no TLS state
 * in use, until main has rotated the ticket keys. */
static void pause_if_asked(struct loop *l)
{
    struct sink_pause *p = &l->sk->pause;
    pthread_mutex_lock(&p->mu);
    if (p->round != l->seen_round) {
        l->seen_round = p->round;
        p->parked++;
        pthread_cond_broadcast(&p->cv);
        while (p->released != l->seen_round)
            pthread_cond_wait(&p->cv, &p->mu);
    }
    pthread_mutex_unlock(&p->mu);
}

static void on_wake(struct loop *l)
{
    pause_if_asked(l);
    if (atomic_load(&l->sk->stopping))
        l->stop = 1;
    else
        arm_wake(l);
}

static void handle_cqe(struct loop *l, struct io_uring_cqe *cqe)
{
    switch (tag_kind(cqe->user_data)) {
    case OP_ACCEPT:
        if (cqe->res >= 0)
            on_accept(l, cqe->res);
        else if (cqe->res != -EINTR && cqe->res != -ECONNABORTED)
            logf_err(l, "accept", strerror(-cqe->res));
        if (!(cqe->flags & IORING_CQE_F_MORE))
            l->accept_armed = 0;
        break;
    case OP_RECV:
        on_recv(l, cqe);
        break;
    case OP_SEND:
        on_send(l, cqe);
        break;
    case OP_WAKE:
        on_wake(l);
        break;
    case OP_DELAY:
        on_delay(l, cqe);
        break;
    case OP_CANCEL:
    default:
        break;      /* cancel results (ENOENT, EALREADY) need nothing */
    }
}

/* Start sends and closes for the connections touched in this batch. */
static void service_conn(struct loop *l, struct conn *c)
{
    /* c->dirty stays set until the end: conn_close below must not put
     * the connection on the list a second time. */
    if (c->closing == CLOSE_ABORT)
        buf_reset(&c->pending);
    if (!c->send_inflight && c->closing != CLOSE_ABORT) {
        if (buf_used(&c->sending) == 0 && buf_used(&c->pending) > 0) {
            struct buf t = c->sending;
            c->sending = c->pending;
            c->pending = t;
        }
        if (buf_used(&c->sending) > 0) {
            struct io_uring_sqe *sqe = get_sqe(l);
            if (sqe == NULL) {
                conn_close(l, c, CLOSE_ABORT);
            } else {
                io_uring_prep_send(sqe, c->fd, buf_peek(&c->sending),
                                   buf_used(&c->sending), MSG_NOSIGNAL);
                io_uring_sqe_set_data64(sqe, tag(OP_SEND, c->slot, c->gen));
                c->send_inflight = 1;
                c->inflight++;
            }
        }
    }
    if (c->closing && !c->shut &&
        (c->closing == CLOSE_ABORT ||
         (!c->send_inflight && buf_used(&c->sending) == 0 && buf_used(&c->pending) == 0))) {
        /* shutdown wakes the pending recv (it ends with 0); the cancel
         * covers a recv that is not waiting on the socket. */
        shutdown(c->fd, SHUT_RDWR);
        conn_shut(l, c);
        if (c->recv_armed) {
            struct io_uring_sqe *sqe = get_sqe(l);
            if (sqe) {
                io_uring_prep_cancel64(sqe, tag(OP_RECV, c->slot, c->gen), 0);
                sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
                io_uring_sqe_set_data64(sqe, tag(OP_CANCEL, c->slot, c->gen));
            }
        }
        if (c->delay_armed) {   /* close now, not when the delay ends */
            struct io_uring_sqe *sqe = get_sqe(l);
            if (sqe) {
                io_uring_prep_timeout_remove(sqe, tag(OP_DELAY, c->slot, c->gen), 0);
                sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
                io_uring_sqe_set_data64(sqe, tag(OP_CANCEL, c->slot, c->gen));
            }
        }
    }
    c->dirty = 0;
    if (c->closing && c->shut && c->inflight == 0)
        conn_free(l, c);
}

static void write_records(struct loop *l)
{
    size_t n = buf_used(&l->rec);
    const uint8_t *p = buf_peek(&l->rec);
    while (n > 0) {
        ssize_t w = write(l->sk->record_fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            logf_err(l, "record write", strerror(errno));
            break;
        }
        p += w;
        n -= (size_t)w;
    }
    buf_reset(&l->rec);
}

static void finish_batch(struct loop *l)
{
    if (l->br_added) {
        io_uring_buf_ring_advance(l->br, (int)l->br_added);
        l->br_added = 0;
    }
    /* Records first: a client never sees 250 before its record line is
     * in the file. */
    if (buf_used(&l->rec))
        write_records(l);
    for (uint32_t i = 0; i < l->ndirty; i++) {
        struct conn *c = l->conns[l->dirty[i]];
        if (c->in_use && c->dirty)
            service_conn(l, c);
    }
    l->ndirty = 0;
    if (!l->accept_armed && !l->stop)
        arm_accept(l);
}

/* --- setup ------------------------------------------------------------- */

static int ring_setup(struct loop *l)
{
    struct io_uring_params p;
    memset(&p, 0, sizeof(p));
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE;
    p.cq_entries = SINK_CQ_ENTRIES;
    int ret = io_uring_queue_init_params(SINK_SQ_ENTRIES, &l->ring, &p);
    if (ret < 0) {
        /* Older kernel: plain ring. */
        memset(&p, 0, sizeof(p));
        p.flags = IORING_SETUP_CQSIZE;
        p.cq_entries = SINK_CQ_ENTRIES;
        ret = io_uring_queue_init_params(SINK_SQ_ENTRIES, &l->ring, &p);
    }
    if (ret < 0) {
        snprintf(l->th->err, sizeof(l->th->err), "io_uring_queue_init: %s", strerror(-ret));
        return 0;
    }
    l->ring_ok = 1;
    (void)io_uring_register_ring_fd(&l->ring);  /* an optimisation only */

    /* liburing 2.3 has no io_uring_setup_buf_ring: map the ring ourselves. */
    l->br_bytes = SINK_NBUFS * sizeof(struct io_uring_buf);
    void *m = mmap(NULL, l->br_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    l->bufs_bytes = (size_t)SINK_NBUFS * SINK_BUF_SIZE;
    void *b = mmap(NULL, l->bufs_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (m == MAP_FAILED || b == MAP_FAILED) {
        if (m != MAP_FAILED)
            munmap(m, l->br_bytes);
        if (b != MAP_FAILED)
            munmap(b, l->bufs_bytes);
        snprintf(l->th->err, sizeof(l->th->err), "mmap: %s", strerror(errno));
        return 0;
    }
    l->br = m;
    l->bufs = b;
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (unsigned long)l->br;
    reg.ring_entries = SINK_NBUFS;
    reg.bgid = SINK_BGID;
    ret = io_uring_register_buf_ring(&l->ring, &reg, 0);
    if (ret < 0) {
        snprintf(l->th->err, sizeof(l->th->err), "io_uring_register_buf_ring: %s",
                 strerror(-ret));
        return 0;
    }
    io_uring_buf_ring_init(l->br);
    l->br_mask = (unsigned)io_uring_buf_ring_mask(SINK_NBUFS);
    for (unsigned i = 0; i < SINK_NBUFS; i++)
        io_uring_buf_ring_add(l->br, l->bufs + (size_t)i * SINK_BUF_SIZE, SINK_BUF_SIZE,
                              (unsigned short)i, l->br_mask, (int)i);
    io_uring_buf_ring_advance(l->br, SINK_NBUFS);
    return 1;
}

static void loop_teardown(struct loop *l)
{
    /* Exiting the ring cancels every op; only then is it safe to free
     * the memory they point into. */
    if (l->ring_ok)
        io_uring_queue_exit(&l->ring);
    for (uint32_t i = 0; i < l->nconns; i++) {
        struct conn *c = l->conns[i];
        if (c->in_use) {
            c->inflight = 0;
            conn_free(l, c);
        }
        free(c);
    }
    free(l->conns);
    free(l->freelist);
    free(l->dirty);
    if (l->br)
        munmap(l->br, l->br_bytes);
    if (l->bufs)
        munmap(l->bufs, l->bufs_bytes);
    buf_free(&l->plain);
    if (buf_used(&l->rec))
        write_records(l);
    buf_free(&l->rec);
}

void *sink_thread_main(void *arg)
{
    struct sink_thread *th = arg;
    struct loop l;
    memset(&l, 0, sizeof(l));
    l.th = th;
    l.sk = th->sk;
    buf_init(&l.plain, 0);
    buf_init(&l.rec, 0);
    sink_rng_seed(&l.rng, l.sk->cfg.drop_seed, th->id);
    if (!ring_setup(&l)) {
        loop_teardown(&l);
        atomic_store(&th->ready, -1);
        return NULL;
    }
    arm_wake(&l);
    arm_accept(&l);
    pthread_mutex_lock(&l.sk->pause.mu);
    l.sk->pause.live++;
    pthread_mutex_unlock(&l.sk->pause.mu);
    atomic_store(&th->ready, 1);
    while (!l.stop) {
        int ret = io_uring_submit_and_wait(&l.ring, 1);
        if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY) {
            snprintf(th->err, sizeof(th->err), "io_uring_submit_and_wait: %s", strerror(-ret));
            break;
        }
        struct io_uring_cqe *cqe;
        unsigned head, n = 0;
        io_uring_for_each_cqe(&l.ring, head, cqe) {
            handle_cqe(&l, cqe);
            n++;
        }
        io_uring_cq_advance(&l.ring, n);
        finish_batch(&l);
    }
    /* No longer counted: a pause must not wait for us. */
    pthread_mutex_lock(&l.sk->pause.mu);
    l.sk->pause.live--;
    pthread_cond_broadcast(&l.sk->pause.cv);
    pthread_mutex_unlock(&l.sk->pause.mu);
    loop_teardown(&l);
    return NULL;
}
