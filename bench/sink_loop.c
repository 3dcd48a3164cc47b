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
 * The ring, the receive buffers, the connection slots, op tags and the
 * send/close mechanics are engine/srv_io.h's (shared with the injection
 * listener); this file adds the sink's counters, records and test knobs.
 *
 * Test knobs (sink.c documents them): --drop-rate draws a drop point per
 * transaction (sink_drop.c) checked where the session reaches it;
 * --reply-delay holds the final reply behind an io_uring timeout, one
 * more op in flight; --abort-handshake reads the ClientHello record and
 * closes. --latency holds each batch's output for a connection until its
 * time (sink_pace.c): the loop's wait ends at the first mark due, which
 * marks its connection dirty, and the service at the end of the batch
 * lets the due bytes go. The wake eventfd also pauses the thread for
 * SIGUSR1 (sink.h, struct sink_pause).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <liburing.h>

#include "bench/bench_clock.h"
#include "bench/sink.h"
#include "engine/srv_io.h"

#define SINK_SQ_ENTRIES   1024
#define SINK_CQ_ENTRIES   8192
#define SINK_BUF_SIZE     (16 * 1024)   /* one recv; <= TLS_FEED_MAX */
#define SINK_NBUFS        1024          /* power of two */
#define SINK_BGID         1
#define SINK_TLS_HEADER   5             /* TLS record: type, version, length */
#define SINK_TLS_HANDSHAKE 0x16         /* record type of a ClientHello */

_Static_assert(SINK_BUF_SIZE <= TLS_FEED_MAX, "one recv must fit one TLS feed");
_Static_assert((SINK_NBUFS & (SINK_NBUFS - 1)) == 0, "buffer ring size is a power of two");

/* Ops of this loop; receive, send and cancel are srv_io's. */
enum op_kind { OP_ACCEPT = SRV_OP_USER, OP_WAKE, OP_DELAY };

struct conn {
    struct srv_conn io;         /* first: the slot table holds these */
    unsigned delay_armed : 1;   /* --reply-delay timeout in flight */
    unsigned hello_abort : 1;   /* --abort-handshake: reading the hello */
    unsigned accept_msg : 1;    /* --reply-first spent: this one gets 250 */
    struct smtp_server smtp;
    struct tls_info tinfo;
    char peer[64];              /* "ip:port" when recording */
    enum sink_drop drop;        /* --drop-rate plan, this transaction */
    struct __kernel_timespec delay_ts;  /* read by the kernel at submit */
    uint8_t hello_hdr[SINK_TLS_HEADER];
    size_t hello_got;           /* ClientHello bytes read */
    struct sink_pace_conn pace; /* --latency: output waiting its time */
};

struct loop {
    struct sink_thread *th;
    struct sink *sk;
    struct srv_io io;           /* ring, receive buffers, connection slots */
    struct buf plain;           /* TLS plaintext scratch */
    struct buf rec;             /* record lines of this batch */
    uint64_t wake_val;
    uint64_t seen_round;        /* last sink_pause round we joined */
    struct sink_rng rng;        /* --drop-rate draws */
    int64_t latency_ns;         /* --latency; 0: off */
    int64_t now_ns;             /* this batch's time (with --latency) */
    struct sink_pace_queue pace;    /* marks waiting, in due order */
    struct sink_pace_queue pace_open;   /* connections' first marks (two holds) */
    int accept_armed;
    int stop;
};

_Static_assert(offsetof(struct conn, io) == 0, "struct conn starts with its srv_conn");

/* The connection whose srv_conn this is (its first member). */
static struct conn *conn_from(struct srv_conn *b)
{
    return (struct conn *)b;
}

static void logf_err(struct loop *l, const char *what, const char *detail)
{
    if (!l->sk->cfg.quiet)
        fprintf(stderr, "tern-sink[%d]: %s: %s\n", l->th->id, what, detail);
}

static void arm_accept(struct loop *l)
{
    struct io_uring_sqe *sqe = srv_io_sqe(&l->io);
    if (sqe == NULL)
        return;     /* retried after the next batch */
    io_uring_prep_multishot_accept(sqe, l->th->listen_fd, NULL, NULL, 0);
    io_uring_sqe_set_data64(sqe, srv_tag(OP_ACCEPT, 0, 0));
    l->accept_armed = 1;
}

static void arm_wake(struct loop *l)
{
    struct io_uring_sqe *sqe = srv_io_sqe(&l->io);
    if (sqe == NULL)
        return;
    io_uring_prep_read(sqe, l->th->wake_fd, &l->wake_val, sizeof(l->wake_val), 0);
    io_uring_sqe_set_data64(sqe, srv_tag(OP_WAKE, 0, 0));
}

/* Move the SMTP replies to the output, encrypting once TLS is up. */
static void flush_smtp(struct loop *l, struct conn *c)
{
    size_t n;
    const uint8_t *p = smtp_server_output(&c->smtp, &n);
    if (n == 0)
        return;
    if (!srv_conn_write(&l->io, &c->io, p, n))
        logf_err(l, "TLS write", tls_conn_error(c->io.tls));
    smtp_server_output_consume(&c->smtp, n);
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
    srv_conn_close(&l->io, &c->io, SRV_CLOSE_GRACEFUL);
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
    struct io_uring_sqe *sqe = srv_io_sqe(&l->io);
    if (sqe == NULL) {
        srv_conn_close(&l->io, &c->io, SRV_CLOSE_ABORT);
        return;
    }
    c->delay_ts.tv_sec = (long long)(ms / 1000);
    c->delay_ts.tv_nsec = (long long)(ms % 1000) * 1000000;
    io_uring_prep_timeout(sqe, &c->delay_ts, 0, 0);
    io_uring_sqe_set_data64(sqe, srv_tag(OP_DELAY, c->io.slot, c->io.gen));
    c->delay_armed = 1;
    c->io.inflight++;
}

static void record(struct loop *l, struct conn *c, const struct smtp_server_envelope *e,
                   int dropped)
{
    if (l->sk->record_fd >= 0)
        sink_record_line(&l->rec, e, c->io.tls_done ? c->tinfo.protocol : NULL,
                         c->io.tls_done ? c->tinfo.cipher : NULL, c->io.tls_done && c->tinfo.resumed,
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
    int msgs = 0;   /* messages out of this one read */
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
            if (msgs++ > 0)
                count(&l->th->c.pipelined, 1);
            on_message(l, c);
            if (c->io.closing)
                return;
        } else if (ev.kind == SMTP_SRV_EV_STARTTLS) {
            flush_smtp(l, c);   /* the 220 goes out in plaintext */
            if (l->sk->cfg.abort_handshake) {
                c->hello_abort = 1;
                return;
            }
            c->io.tls = tls_conn_server_new(l->sk->tls);
            if (c->io.tls == NULL) {
                logf_err(l, "STARTTLS", "cannot create TLS connection");
                srv_conn_close(&l->io, &c->io, SRV_CLOSE_ABORT);
            }
            return;
        } else {    /* CLOSE: the last reply, then close_notify */
            flush_smtp(l, c);
            srv_conn_finish(&l->io, &c->io);
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
    srv_conn_close(&l->io, &c->io, SRV_CLOSE_GRACEFUL);
}

static void tls_failed(struct loop *l, struct conn *c, const char *stage)
{
    char what[128];
    snprintf(what, sizeof(what), "TLS %s from %s", stage, c->peer[0] ? c->peer : "client");
    logf_err(l, what, tls_conn_error(c->io.tls));
    srv_conn_take_tls(&c->io);         /* the alert, if any */
    srv_conn_close(&l->io, &c->io, SRV_CLOSE_GRACEFUL);
}

/* srv_tls_hooks of the sink. */
static void tls_hook_up(void *ctx, struct srv_conn *b)
{
    struct loop *l = ctx;
    struct conn *c = conn_from(b);
    tls_conn_info(c->io.tls, &c->tinfo);
    count(c->tinfo.resumed ? &l->th->c.tls_resumed : &l->th->c.tls_full, 1);
    count(strcmp(c->tinfo.protocol, "TLSv1.3") == 0   ? &l->th->c.tls_v13
          : strcmp(c->tinfo.protocol, "TLSv1.2") == 0 ? &l->th->c.tls_v12
                                                      : &l->th->c.tls_v_older,
          1);
    smtp_server_tls_started(&c->smtp);
}

static void tls_hook_failed(void *ctx, struct srv_conn *b, int in_handshake)
{
    struct loop *l = ctx;
    if (in_handshake)
        count(&l->th->c.tls_failed, 1);
    tls_failed(l, conn_from(b), in_handshake ? "handshake" : "read");
}

static void tls_hook_plain(void *ctx, struct srv_conn *b, const uint8_t *p, size_t n)
{
    feed_smtp(ctx, conn_from(b), p, n);
}

static const struct srv_tls_hooks tls_hooks = {tls_hook_up, tls_hook_failed, tls_hook_plain};

/* --- connections ------------------------------------------------------- */

static void conn_free(struct loop *l, struct conn *c)
{
    smtp_server_cleanup(&c->smtp);
    srv_conn_release(&l->io, &c->io);
}

/* The connection ends for the client once we shut it down (our FIN goes
 * out): from then on it no longer counts as open, so the peak measures
 * what the client kept open, not how soon this loop got to free it. */
static void conn_shut(struct loop *l, struct conn *c)
{
    c->io.shut = 1;
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
    struct srv_conn *b = srv_conn_new(&l->io, fd);
    if (b == NULL) {
        logf_err(l, "accept", "out of connection slots or memory");
        close(fd);
        return;
    }
    struct conn *c = conn_from(b);
    count(&l->th->c.connections, 1);
    uint64_t now = atomic_fetch_add_explicit(&sk->active, 1, memory_order_relaxed) + 1;
    uint64_t peak = atomic_load_explicit(&sk->peak, memory_order_relaxed);
    while (now > peak &&
           !atomic_compare_exchange_weak_explicit(&sk->peak, &peak, now, memory_order_relaxed,
                                                  memory_order_relaxed))
        ;
    c->io.paced = l->latency_ns > 0;
    if (sk->record_fd >= 0 || !sk->cfg.quiet || sk->cfg.per_client)
        peer_name(fd, c->peer, sizeof(c->peer));
    if (sk->cfg.per_client)
        sink_clients_open(&sk->clients, c->peer);
    if (!smtp_server_init(&c->smtp, &sk->cfg.smtp)) {
        srv_conn_close(&l->io, &c->io, SRV_CLOSE_ABORT);
        conn_shut(l, c);    /* nothing armed: free at once in finish_batch */
        return;
    }
    flush_smtp(l, c);
    c->drop = sink_drop_draw(&l->rng, sk->cfg.drop_rate, 1);
    if (c->drop == SINK_DROP_GREETING)
        drop_now(l, c);     /* the greeting goes out; nothing is read */
    else if (!srv_conn_arm_recv(&l->io, &c->io))
        srv_conn_close(&l->io, &c->io, SRV_CLOSE_ABORT);
}

/* --- completions ------------------------------------------------------- */

/* Received bytes of a live connection (srv_io_cqe). */
static void on_data(void *ctx, struct srv_conn *b, const uint8_t *p, size_t n)
{
    struct loop *l = ctx;
    struct conn *c = conn_from(b);
    if (c->hello_abort)
        take_hello(l, c, p, n);
    else if (c->io.tls)
        srv_conn_tls_data(&l->io, b, p, n, &l->plain, &tls_hooks, l);
    else
        feed_smtp(l, c, p, n);
}

/* The --reply-delay timeout ended (or was cancelled by a close). */
static void on_delay(struct loop *l, struct io_uring_cqe *cqe)
{
    struct srv_conn *b = srv_conn_of(&l->io, cqe->user_data);
    if (b == NULL)
        return;
    struct conn *c = conn_from(b);
    c->delay_armed = 0;
    c->io.inflight--;
    srv_conn_dirty(&l->io, &c->io);
    if (c->io.closing)
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
    if (srv_io_cqe(&l->io, cqe, on_data, l))
        return;
    switch (srv_tag_kind(cqe->user_data)) {
    case OP_ACCEPT:
        if (cqe->res >= 0)
            on_accept(l, cqe->res);
        else if (cqe->res != -EINTR && cqe->res != -ECONNABORTED)
            logf_err(l, "accept", strerror(-cqe->res));
        if (!(cqe->flags & IORING_CQE_F_MORE))
            l->accept_armed = 0;
        break;
    case OP_WAKE:
        on_wake(l);
        break;
    case OP_DELAY:
        on_delay(l, cqe);
        break;
    default:
        break;
    }
}

/* Start sends and closes for the connections touched in this batch. */
static void service_conn(void *ctx, struct srv_conn *b)
{
    struct loop *l = ctx;
    struct conn *c = conn_from(b);
    if (b->paced) {
        /* A connection's first send (the greeting) is held two round
         * trips: across a network the client's connect would have taken
         * one before the server could send anything. Every first mark has
         * the same offset, so they have a queue of their own in due order. */
        int first = !c->pace.marked;
        int64_t due = l->now_ns + l->latency_ns * (first ? 2 : 1);
        if (sink_pace_mark(&c->pace, b, due) &&
            !sink_pace_push(first ? &l->pace_open : &l->pace, b->slot, b->gen, due)) {
            logf_err(l, "latency", "out of memory");
            srv_conn_close(&l->io, b, SRV_CLOSE_ABORT);
        }
        sink_pace_release(&c->pace, b, l->now_ns);
    }
    int shut = srv_conn_service(&l->io, b);
    if (b->paced)
        sink_pace_sent(&c->pace, b);
    if (shut) {
        conn_shut(l, c);
        if (c->delay_armed) {   /* close now, not when the delay ends */
            struct io_uring_sqe *sqe = srv_io_sqe(&l->io);
            if (sqe) {
                io_uring_prep_timeout_remove(sqe, srv_tag(OP_DELAY, b->slot, b->gen), 0);
                sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
                io_uring_sqe_set_data64(sqe, srv_tag(SRV_OP_CANCEL, b->slot, b->gen));
            }
        }
    }
    if (srv_conn_done(b))
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

/* --latency: the connections whose marks fell due get serviced. */
static void pace_due(struct loop *l)
{
    struct sink_pace_entry e;
    l->now_ns = bench_now_ns();
    while (sink_pace_pop_due(&l->pace, l->now_ns, &e) ||
           sink_pace_pop_due(&l->pace_open, l->now_ns, &e)) {
        struct srv_conn *b = srv_conn_at(&l->io, e.slot, e.gen);
        if (b)
            srv_conn_dirty(&l->io, b);
    }
}

/* Wait for a completion, with --latency no later than the first mark due. */
static int wait_batch(struct loop *l)
{
    int64_t due = -1;
    if (l->latency_ns) {
        int64_t a = sink_pace_next(&l->pace), b = sink_pace_next(&l->pace_open);
        due = a < 0 || (b >= 0 && b < a) ? b : a;
    }
    if (due < 0)
        return io_uring_submit_and_wait(&l->io.ring, 1);
    int64_t wait = due - bench_now_ns();
    if (wait < 0)
        wait = 0;
    struct __kernel_timespec ts = {.tv_sec = wait / 1000000000, .tv_nsec = wait % 1000000000};
    struct io_uring_cqe *cqe;
    int ret = io_uring_submit_and_wait_timeout(&l->io.ring, &cqe, 1, &ts, NULL);
    return ret == -ETIME ? 0 : ret;
}

static void finish_batch(struct loop *l)
{
    srv_io_return_bufs(&l->io);
    if (l->latency_ns)
        pace_due(l);
    /* Records first: a client never sees 250 before its record line is
     * in the file. */
    if (buf_used(&l->rec))
        write_records(l);
    srv_io_each_dirty(&l->io, service_conn, l);
    if (!l->accept_armed && !l->stop)
        arm_accept(l);
}

/* --- setup ------------------------------------------------------------- */

static int ring_setup(struct loop *l)
{
    static const struct srv_io_params p = {
        .sq_entries = SINK_SQ_ENTRIES, .cq_entries = SINK_CQ_ENTRIES,
        .buf_size = SINK_BUF_SIZE, .nbufs = SINK_NBUFS, .bgid = SINK_BGID,
        .sqe_block = 0, .conn_size = sizeof(struct conn), .first_slots = 256,
    };
    return srv_io_init(&l->io, &p, l->th->err, sizeof(l->th->err));
}

/* srv_io_free: a connection still open at the end. */
static void drop_conn(void *ctx, struct srv_conn *b)
{
    conn_free(ctx, conn_from(b));
}

static void loop_teardown(struct loop *l)
{
    /* Exiting the ring cancels every op; only then is it safe to free
     * the memory they point into. */
    srv_io_free(&l->io, drop_conn, l);
    buf_free(&l->plain);
    if (buf_used(&l->rec))
        write_records(l);
    buf_free(&l->rec);
    sink_pace_queue_free(&l->pace);
    sink_pace_queue_free(&l->pace_open);
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
    l.latency_ns = (int64_t)l.sk->cfg.latency_ms * 1000000;
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
        int ret = wait_batch(&l);
        if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY) {
            snprintf(th->err, sizeof(th->err), "io_uring_submit_and_wait: %s", strerror(-ret));
            break;
        }
        struct io_uring_cqe *cqe;
        unsigned head, n = 0;
        io_uring_for_each_cqe(&l.io.ring, head, cqe) {
            handle_cqe(&l, cqe);
            n++;
        }
        io_uring_cq_advance(&l.io.ring, n);
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
