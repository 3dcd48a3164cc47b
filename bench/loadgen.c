/*
 * loadgen.c - tern-loadgen: a direct SMTP load generator, to measure a
 * receiver (tern-sink, or any SMTP server) without tern in the path: the
 * sink's own ceiling, which every benchmark run must stay well below.
 *
 * SYNOPSIS
 *   tern-loadgen --host H --port P [--messages N] [--conns C] [--size BYTES]
 *                [--rcpts R] [--starttls] [--ca-file F] [--auth USER:PASS]
 *                [--no-pipeline] [--from A] [--to-domain D] [--msgs-per-conn K]
 *
 * DESCRIPTION
 *   Opens C connections to H:P (default 10), and sends N messages
 *   (default 10000) of about BYTES bytes (default 4096) with R recipients
 *   each (default 1, user<i>@D, D default loadgen.test) over them, each
 *   connection taking the next message as soon as its last one got its
 *   final reply, until N have been taken; then QUIT. With --starttls every
 *   connection upgrades after the first EHLO (TLS 1.3 preferred, through
 *   tls/tls.h; with --ca-file the server's certificate must verify against
 *   it and match H, without it the result is only recorded). --auth sends
 *   AUTH PLAIN after EHLO (after TLS with --starttls). Commands of one
 *   transaction are pipelined (MAIL, every RCPT and DATA in one write)
 *   unless --no-pipeline, which waits for each reply. --msgs-per-conn K:
 *   a connection says QUIT after K messages and a new one takes its place
 *   while messages are left, resuming the TLS session of the last one
 *   that brought a ticket (the receiver's cost of a connection per
 *   message, as tern's `tail` workload makes it pay).
 *
 *   Prints one line when every connection has finished:
 *     sent=N refused=M seconds=S msgs_per_s=R cpu_us_per_msg=U
 *   sent: messages whose final dot got a 2xx; refused: messages taken
 *   that did not (a non-2xx to DATA or to the dot, or the connection
 *   failed while they were in flight); seconds: from the first connect
 *   to the last connection's end; cpu_us_per_msg: this process's CPU
 *   (getrusage, user + system) per sent message. Exits 0 when all N were
 *   sent, 1 otherwise (why on stderr), 2 on bad usage.
 *
 * DESIGN
 *   One thread, one io_uring ring; per connection one recv (into its own
 *   buffer) and at most one send in flight: new output goes to `pending`
 *   and is swapped into `sending` when the previous send completes.
 *   Connections are opened with a blocking connect() before the loop
 *   (loopback: immediate). Replies are parsed on (pointer, length) with a
 *   bound on the line length and on the bytes waiting for a reply.
 */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <liburing.h>
#include <openssl/base64.h>

#include "engine/config.h"
#include "engine/buf.h"
#include "tls/tls.h"
#include "bench/bench_clock.h"

#define LG_CONNS_MAX       4096
#define LG_RCPTS_MAX       1000
#define LG_SIZE_MIN        64
#define LG_SIZE_MAX        (64L * 1024 * 1024)
#define LG_MESSAGES_MAX    1000000000L
#define LG_RECV_SIZE       (16 * 1024)          /* one recv; <= TLS_FEED_MAX */
#define LG_IN_MAX          (64 * 1024)          /* reply bytes waiting to be parsed */
#define LG_LINE_MAX        1024                 /* one reply line, CRLF included */
#define LG_ADDR_MAX        256
#define LG_AUTH_MAX        512
#define LG_LINE_LEN        76                   /* body line, without CRLF */

_Static_assert(LG_RECV_SIZE <= TLS_FEED_MAX, "one recv must fit one TLS feed");

enum phase {
    PH_GREETING,    /* waiting for 220 */
    PH_EHLO,        /* first EHLO sent */
    PH_STARTTLS,    /* STARTTLS sent */
    PH_HANDSHAKE,   /* TLS handshake running */
    PH_EHLO_TLS,    /* EHLO after TLS */
    PH_AUTH,        /* AUTH PLAIN sent */
    PH_TXN,         /* MAIL, RCPTs, DATA: `replied` of them answered */
    PH_BODY,        /* body and dot sent */
    PH_RSET,        /* RSET after a refused transaction */
    PH_QUIT,        /* QUIT sent */
    PH_CLOSING,     /* shut down; waiting for our ops to complete */
};

enum op { OP_RECV = 1, OP_SEND = 2 };

struct opts {
    const char *host, *port, *ca_file, *auth, *from, *to_domain;
    long messages;
    int conns, rcpts, starttls, pipeline;
    long size;
    long per_conn;              /* messages per connection; 0: no limit */
};

struct conn {
    int fd;
    enum phase phase;
    int recv_inflight, send_inflight;
    int has_msg;                /* a message is taken and not yet settled */
    int txn_failed;             /* the DATA reply was not 354 */
    int replied;                /* replies to this transaction's commands */
    int sent_cmds;              /* commands of this transaction sent */
    int failed;                 /* connection-level failure */
    long msgs;                  /* messages taken on this connection */
    long quota;                 /* messages reserved for it (see open_conn) */
    struct tls_conn *tls;
    uint8_t *rbuf;              /* LG_RECV_SIZE, the recv's target */
    struct buf in;              /* plaintext replies not yet parsed */
    struct buf sending;         /* read by the kernel: untouched until done */
    struct buf pending;         /* output queued behind it */
};

struct gen {
    struct opts o;
    struct io_uring ring;
    struct tls_client_ctx *tls;
    SSL_SESSION *session;       /* the newest ticket, to resume with */
    const struct addrinfo *ai;  /* where to (re)connect */
    struct conn *conns;
    int live;                   /* connections not yet closed */
    long taken, sent, refused;
    long reserved;              /* sum of the open connections' quotas and
                                   of the messages closed ones took */
    long conn_failures;
    char first_error[256];
    struct buf txn;             /* MAIL, RCPT x R, DATA (CRLF-terminated lines) */
    size_t *cmd_off;            /* start of command i in txn; R + 3 entries */
    struct buf body;            /* the message and the final dot */
    char auth_line[LG_AUTH_MAX];
};

static void usage(FILE *f)
{
    fprintf(f, "usage: tern-loadgen --host H --port P [--messages N] [--conns C] [--size BYTES]\n"
               "                    [--rcpts R] [--starttls] [--ca-file F] [--auth USER:PASS]\n"
               "                    [--no-pipeline] [--from A] [--to-domain D] [--msgs-per-conn K]\n");
}

static void note_error(struct gen *g, const char *what, const char *detail)
{
    if (g->first_error[0] == '\0')
        snprintf(g->first_error, sizeof(g->first_error), "%s: %s", what, detail);
}

static uint64_t tag(enum op k, size_t idx) { return ((uint64_t)idx << 2) | (uint64_t)k; }

static struct io_uring_sqe *get_sqe(struct gen *g)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&g->ring);
    if (sqe == NULL) {
        io_uring_submit(&g->ring);
        sqe = io_uring_get_sqe(&g->ring);
    }
    return sqe;
}

static void arm_recv(struct gen *g, struct conn *c)
{
    struct io_uring_sqe *sqe = get_sqe(g);
    if (sqe == NULL) {
        note_error(g, "io_uring", "no submission entry");
        exit(1);
    }
    io_uring_prep_recv(sqe, c->fd, c->rbuf, LG_RECV_SIZE, 0);
    io_uring_sqe_set_data64(sqe, tag(OP_RECV, (size_t)(c - g->conns)));
    c->recv_inflight = 1;
}

/* Start a send of everything pending unless one is in flight. */
static void flush_out(struct gen *g, struct conn *c)
{
    if (c->send_inflight || buf_used(&c->pending) == 0 || c->phase == PH_CLOSING)
        return;
    struct buf t = c->sending;
    c->sending = c->pending;
    c->pending = t;
    buf_reset(&c->pending);
    struct io_uring_sqe *sqe = get_sqe(g);
    if (sqe == NULL) {
        note_error(g, "io_uring", "no submission entry");
        exit(1);
    }
    io_uring_prep_send(sqe, c->fd, buf_peek(&c->sending), buf_used(&c->sending), MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, tag(OP_SEND, (size_t)(c - g->conns)));
    c->send_inflight = 1;
}

static void conn_fail(struct gen *g, struct conn *c, const char *what, const char *detail)
{
    if (c->phase == PH_CLOSING)
        return;
    note_error(g, what, detail);
    c->failed = 1;
    g->conn_failures++;
    if (c->has_msg) {
        g->refused++;
        c->has_msg = 0;
    }
    c->phase = PH_CLOSING;
    shutdown(c->fd, SHUT_RDWR);
}

/* Queue bytes for the peer: through TLS once it is up. */
static void out(struct gen *g, struct conn *c, const void *p, size_t n)
{
    if (c->tls && c->phase != PH_HANDSHAKE) {
        if (tls_conn_write(c->tls, p, n) != TLS_OK) {
            conn_fail(g, c, "TLS write", tls_conn_error(c->tls));
            return;
        }
        size_t k;
        const uint8_t *o = tls_conn_output(c->tls, &k);
        buf_append(&c->pending, o, k);
        tls_conn_output_consume(c->tls, k);
    } else {
        buf_append(&c->pending, p, n);
    }
    if (c->pending.err)
        conn_fail(g, c, "output", "out of memory");
}

static void out_str(struct gen *g, struct conn *c, const char *s) { out(g, c, s, strlen(s)); }

/* One complete reply off the front of in: 1 with *code set, 0 when more
 * bytes are needed, -1 on a malformed reply (line too long, no code). */
static int next_reply(struct buf *in, int *code)
{
    const uint8_t *p = buf_peek(in);
    size_t n = buf_used(in), pos = 0;
    while (pos < n) {
        const uint8_t *nl = memchr(p + pos, '\n', n - pos);
        size_t len = nl ? (size_t)(nl - (p + pos)) + 1 : n - pos;
        if (len > LG_LINE_MAX)
            return -1;
        if (nl == NULL)
            return 0;
        const uint8_t *l = p + pos;
        if (len < 5 || l[0] < '2' || l[0] > '5' || l[1] < '0' || l[1] > '9' || l[2] < '0' ||
            l[2] > '9')
            return -1;
        pos += len;
        if (l[3] != '-') {
            *code = (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0');
            buf_consume(in, pos);
            return 1;
        }
    }
    return 0;
}

static void send_cmd(struct gen *g, struct conn *c, int i)
{
    out(g, c, buf_peek(&g->txn) + g->cmd_off[i], g->cmd_off[i + 1] - g->cmd_off[i]);
}

/* Take the next message, or say goodbye when none is left. */
static void start_txn(struct gen *g, struct conn *c)
{
    if (g->taken >= g->o.messages || c->msgs >= c->quota) {
        out_str(g, c, "QUIT\r\n");
        c->phase = PH_QUIT;
        return;
    }
    g->taken++;
    c->msgs++;
    c->has_msg = 1;
    c->txn_failed = 0;
    c->replied = 0;
    c->phase = PH_TXN;
    int ncmds = g->o.rcpts + 2;
    if (g->o.pipeline) {
        out(g, c, buf_peek(&g->txn), buf_used(&g->txn));
        c->sent_cmds = ncmds;
    } else {
        send_cmd(g, c, 0);
        c->sent_cmds = 1;
    }
}

static void after_ehlo(struct gen *g, struct conn *c)
{
    if (g->o.auth) {
        out_str(g, c, g->auth_line);
        c->phase = PH_AUTH;
    } else {
        start_txn(g, c);
    }
}

static void start_tls(struct gen *g, struct conn *c)
{
    struct tls_client_params p = {.tier = TLS_TIER_PREFERRED, .sni = g->o.host,
                                  .session = g->session};
    if (g->o.ca_file) {
        p.verify = TLS_VERIFY_PKIX;
        p.match_names[0] = g->o.host;
        p.nmatch = 1;
    } else {
        p.verify = TLS_VERIFY_RECORD;
    }
    c->tls = tls_conn_client_new(g->tls, &p);
    if (c->tls == NULL) {
        conn_fail(g, c, "TLS", "cannot create a connection");
        return;
    }
    c->phase = PH_HANDSHAKE;
    buf_reset(&c->in);     /* nothing may follow the 220 in plaintext */
}

/* Advance the handshake; on success send the EHLO that follows it. */
static void handshake(struct gen *g, struct conn *c)
{
    enum tls_status st = tls_conn_handshake(c->tls);
    size_t k;
    const uint8_t *o = tls_conn_output(c->tls, &k);
    buf_append(&c->pending, o, k);
    tls_conn_output_consume(c->tls, k);
    if (st == TLS_ERROR) {
        conn_fail(g, c, "TLS handshake", tls_conn_error(c->tls));
    } else if (st == TLS_OK) {
        c->phase = PH_EHLO_TLS;
        out_str(g, c, "EHLO loadgen.tern.test\r\n");
    }
}

/* One reply arrived in the current phase. */
static void on_reply(struct gen *g, struct conn *c, int code)
{
    char why[64];
    snprintf(why, sizeof(why), "unexpected reply %d", code);
    switch (c->phase) {
    case PH_GREETING:
        if (code != 220) {
            conn_fail(g, c, "greeting", why);
            return;
        }
        out_str(g, c, "EHLO loadgen.tern.test\r\n");
        c->phase = PH_EHLO;
        return;
    case PH_EHLO:
        if (code != 250) {
            conn_fail(g, c, "EHLO", why);
            return;
        }
        if (g->o.starttls) {
            out_str(g, c, "STARTTLS\r\n");
            c->phase = PH_STARTTLS;
        } else {
            after_ehlo(g, c);
        }
        return;
    case PH_STARTTLS:
        if (code != 220) {
            conn_fail(g, c, "STARTTLS", why);
            return;
        }
        start_tls(g, c);
        if (c->tls)
            handshake(g, c);
        return;
    case PH_EHLO_TLS:
        if (code != 250) {
            conn_fail(g, c, "EHLO after STARTTLS", why);
            return;
        }
        after_ehlo(g, c);
        return;
    case PH_AUTH:
        if (code != 235) {
            conn_fail(g, c, "AUTH", why);
            return;
        }
        start_txn(g, c);
        return;
    case PH_TXN: {
        int last = g->o.rcpts + 1;      /* the DATA command */
        int i = c->replied++;
        if (i < last) {
            if (!g->o.pipeline)
                send_cmd(g, c, ++c->sent_cmds - 1);
            return;
        }
        if (code == 354) {
            out(g, c, buf_peek(&g->body), buf_used(&g->body));
            c->phase = PH_BODY;
        } else {
            g->refused++;
            c->has_msg = 0;
            out_str(g, c, "RSET\r\n");
            c->phase = PH_RSET;
        }
        return;
    }
    case PH_BODY:
        if (code >= 200 && code < 300)
            g->sent++;
        else
            g->refused++;
        c->has_msg = 0;
        start_txn(g, c);
        return;
    case PH_RSET:
        start_txn(g, c);
        return;
    case PH_QUIT:
        c->phase = PH_CLOSING;
        shutdown(c->fd, SHUT_RDWR);
        return;
    case PH_HANDSHAKE:
    case PH_CLOSING:
        return;
    }
}

static void on_recv(struct gen *g, struct conn *c, int res)
{
    c->recv_inflight = 0;
    if (c->phase == PH_CLOSING)
        return;
    if (res <= 0) {
        conn_fail(g, c, "connection", res == 0 ? "closed by the peer" : strerror(-res));
        return;
    }
    int peer_closed = 0;    /* close_notify: after the replies before it */
    if (c->tls) {
        if (!tls_conn_feed(c->tls, c->rbuf, (size_t)res)) {
            conn_fail(g, c, "TLS", "out of memory");
            return;
        }
        if (c->phase == PH_HANDSHAKE)
            handshake(g, c);
        /* Also after the handshake: TLS 1.3 tickets arrive as records. */
        if (c->phase != PH_HANDSHAKE && c->phase != PH_CLOSING) {
            enum tls_status st;
            while ((st = tls_conn_read(c->tls, &c->in)) == TLS_OK && buf_used(&c->in) < LG_IN_MAX)
                ;
            if (st == TLS_ERROR) {
                conn_fail(g, c, "TLS read", tls_conn_error(c->tls));
                return;
            }
            peer_closed = st == TLS_CLOSED;
        }
    } else {
        buf_append(&c->in, c->rbuf, (size_t)res);
    }
    if (c->in.err) {
        conn_fail(g, c, "replies", "more than the limit waiting");
        return;
    }
    int code, r;
    while (c->phase != PH_CLOSING && c->phase != PH_HANDSHAKE && (r = next_reply(&c->in, &code)) != 0) {
        if (r < 0) {
            conn_fail(g, c, "reply", "malformed");
            return;
        }
        on_reply(g, c, code);
    }
    if (peer_closed && c->phase != PH_CLOSING)
        conn_fail(g, c, "TLS read", "close_notify before QUIT was answered");
    if (c->phase != PH_CLOSING)
        arm_recv(g, c);
}

static void on_send(struct gen *g, struct conn *c, int res)
{
    c->send_inflight = 0;
    if (res < 0) {
        conn_fail(g, c, "send", strerror(-res));
        return;
    }
    buf_consume(&c->sending, (size_t)res);
    if (buf_used(&c->sending) > 0 && c->phase != PH_CLOSING) {
        /* A short send: the rest goes before anything pending. */
        buf_append(&c->sending, buf_peek(&c->pending), buf_used(&c->pending));
        buf_reset(&c->pending);
        struct buf t = c->pending;
        c->pending = c->sending;
        c->sending = t;
    }
}

/* With --msgs-per-conn a connection reserves its K messages (or what is
 * left) when it opens, so that a replacement never opens while its
 * siblings are about to take the last messages: it would open, find none
 * and QUIT, one connection more than N / K. Without it a connection may
 * take any message left, and none is replaced. */
static long unreserved(const struct gen *g)
{
    return g->o.messages - g->reserved;
}

static int open_conn(struct gen *g, struct conn *c)
{
    const struct addrinfo *ai = g->ai;
    *c = (struct conn){.fd = -1, .quota = g->o.messages};
    c->fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (c->fd < 0 || connect(c->fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        note_error(g, "connect", strerror(errno));
        if (c->fd >= 0)
            close(c->fd);
        c->fd = -1;
        return 0;
    }
    c->rbuf = malloc(LG_RECV_SIZE);
    if (c->rbuf == NULL) {
        close(c->fd);
        c->fd = -1;
        return 0;
    }
    buf_init(&c->in, LG_IN_MAX);
    buf_init(&c->sending, 0);
    buf_init(&c->pending, 0);
    c->phase = PH_GREETING;
    if (g->o.per_conn) {
        c->quota = g->o.per_conn < unreserved(g) ? g->o.per_conn : unreserved(g);
        g->reserved += c->quota;
    }
    arm_recv(g, c);
    g->live++;
    return 1;
}

static void close_conn(struct gen *g, struct conn *c)
{
    close(c->fd);
    c->fd = -1;
    if (g->o.per_conn)
        g->reserved -= c->quota - c->msgs;   /* a failed one's unused share */
    if (c->tls) {
        SSL_SESSION *s, *newest = NULL;
        while ((s = tls_conn_take_session(c->tls)) != NULL) {
            SSL_SESSION_free(newest);
            newest = s;
        }
        if (newest) {
            SSL_SESSION_free(g->session);
            g->session = newest;
        }
    }
    tls_conn_free(c->tls);
    c->tls = NULL;
    free(c->rbuf);
    buf_free(&c->in);
    buf_free(&c->sending);
    buf_free(&c->pending);
    g->live--;
}

/* The transaction's commands and the message, built once. */
static int build_messages(struct gen *g)
{
    char line[LG_ADDR_MAX + 32];
    buf_init(&g->txn, 0);
    buf_init(&g->body, 0);
    g->cmd_off = calloc((size_t)g->o.rcpts + 3, sizeof(*g->cmd_off));
    if (g->cmd_off == NULL)
        return 0;
    int k = 0;
    snprintf(line, sizeof(line), "MAIL FROM:<%s>\r\n", g->o.from);
    g->cmd_off[k++] = buf_used(&g->txn);
    buf_append_str(&g->txn, line);
    for (int i = 0; i < g->o.rcpts; i++) {
        snprintf(line, sizeof(line), "RCPT TO:<user%d@%s>\r\n", i, g->o.to_domain);
        g->cmd_off[k++] = buf_used(&g->txn);
        buf_append_str(&g->txn, line);
    }
    g->cmd_off[k++] = buf_used(&g->txn);
    buf_append_str(&g->txn, "DATA\r\n");
    g->cmd_off[k] = buf_used(&g->txn);

    snprintf(line, sizeof(line),
             "From: <%s>\r\nTo: <user0@%s>\r\nSubject: tern-loadgen\r\n"
             "Message-ID: <loadgen@tern.test>\r\n\r\n",
             g->o.from, g->o.to_domain);
    buf_append_str(&g->body, line);
    /* Body lines never start with '.', so no dot-stuffing is needed. */
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    for (size_t l = 0; buf_used(&g->body) + LG_LINE_LEN + 2 <= (size_t)g->o.size || l == 0; l++) {
        uint8_t *d = buf_reserve(&g->body, LG_LINE_LEN + 2);
        if (d == NULL)
            return 0;
        for (size_t i = 0; i < LG_LINE_LEN; i++)
            d[i] = (uint8_t)alphabet[(l + i) % (sizeof(alphabet) - 1)];
        d[LG_LINE_LEN] = '\r';
        d[LG_LINE_LEN + 1] = '\n';
        buf_commit(&g->body, LG_LINE_LEN + 2);
    }
    buf_append_str(&g->body, ".\r\n");
    return !g->txn.err && !g->body.err;
}

static int build_auth(struct gen *g)
{
    const char *colon = strchr(g->o.auth, ':');
    size_t n = strlen(g->o.auth);
    if (colon == NULL || n + 2 > 256)
        return 0;
    /* PLAIN (RFC 4616): authzid empty, NUL, user, NUL, password. */
    uint8_t raw[256];
    size_t ul = (size_t)(colon - g->o.auth);
    raw[0] = 0;
    memcpy(raw + 1, g->o.auth, ul);
    raw[1 + ul] = 0;
    memcpy(raw + 2 + ul, colon + 1, n - ul - 1);
    size_t rawlen = n + 1;
    uint8_t b64[400];
    size_t bl = EVP_EncodeBlock(b64, raw, rawlen);
    snprintf(g->auth_line, sizeof(g->auth_line), "AUTH PLAIN %.*s\r\n", (int)bl, (const char *)b64);
    return 1;
}

/* Returns 1, or 0 after printing why. */
static int parse_opts(int argc, char **argv, struct opts *o)
{
    *o = (struct opts){.messages = 10000, .conns = 10, .rcpts = 1, .pipeline = 1, .size = 4096,
                       .from = "loadgen@tern.test", .to_domain = "loadgen.test"};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int v;
        int flag = strcmp(a, "--starttls") == 0 || strcmp(a, "--no-pipeline") == 0 ||
                   strcmp(a, "--help") == 0;
        if (!flag && i + 1 >= argc) {
            fprintf(stderr, "tern-loadgen: %s needs a value\n", a);
            return 0;
        }
        const char *val = flag ? NULL : argv[++i];
        if (strcmp(a, "--help") == 0) {
            usage(stdout);
            exit(0);
        } else if (strcmp(a, "--starttls") == 0) o->starttls = 1;
        else if (strcmp(a, "--no-pipeline") == 0) o->pipeline = 0;
        else if (strcmp(a, "--host") == 0) o->host = val;
        else if (strcmp(a, "--port") == 0) o->port = val;
        else if (strcmp(a, "--ca-file") == 0) o->ca_file = val;
        else if (strcmp(a, "--auth") == 0) o->auth = val;
        else if (strcmp(a, "--from") == 0) o->from = val;
        else if (strcmp(a, "--to-domain") == 0) o->to_domain = val;
        else if (strcmp(a, "--messages") == 0 && config_parse_int(val, 1, LG_MESSAGES_MAX, &v)) o->messages = v;
        else if (strcmp(a, "--conns") == 0 && config_parse_int(val, 1, LG_CONNS_MAX, &v)) o->conns = (int)v;
        else if (strcmp(a, "--rcpts") == 0 && config_parse_int(val, 1, LG_RCPTS_MAX, &v)) o->rcpts = (int)v;
        else if (strcmp(a, "--size") == 0 && config_parse_int(val, LG_SIZE_MIN, LG_SIZE_MAX, &v)) o->size = v;
        else if (strcmp(a, "--msgs-per-conn") == 0 && config_parse_int(val, 1, LG_MESSAGES_MAX, &v)) o->per_conn = v;
        else {
            fprintf(stderr, "tern-loadgen: bad option or value: %s %s\n", a, val ? val : "");
            return 0;
        }
    }
    if (o->host == NULL || o->port == NULL) {
        fprintf(stderr, "tern-loadgen: --host and --port are required\n");
        return 0;
    }
    if (strlen(o->from) > LG_ADDR_MAX / 2 || strlen(o->to_domain) > LG_ADDR_MAX / 2) {
        fprintf(stderr, "tern-loadgen: --from or --to-domain too long\n");
        return 0;
    }
    if (o->auth && strchr(o->auth, ':') == NULL) {
        fprintf(stderr, "tern-loadgen: --auth wants USER:PASS\n");
        return 0;
    }
    if (o->conns > o->messages)
        o->conns = (int)o->messages;
    return 1;
}

static void run_loop(struct gen *g)
{
    while (g->live > 0) {
        io_uring_submit_and_wait(&g->ring, 1);
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&g->ring, head, cqe) {
            seen++;
            struct conn *c = &g->conns[cqe->user_data >> 2];
            if ((cqe->user_data & 3) == OP_RECV)
                on_recv(g, c, cqe->res);
            else
                on_send(g, c, cqe->res);
            flush_out(g, c);
            if (c->phase == PH_CLOSING && !c->recv_inflight && !c->send_inflight && c->fd >= 0) {
                int again = !c->failed && g->taken < g->o.messages &&
                            (!g->o.per_conn || unreserved(g) > 0);
                close_conn(g, c);
                if (again && !open_conn(g, c))
                    g->conn_failures++;
            }
        }
        io_uring_cq_advance(&g->ring, seen);
    }
}

int main(int argc, char **argv)
{
    static struct gen g;
    if (!parse_opts(argc, argv, &g.o)) {
        usage(stderr);
        return 2;
    }
    if (!build_messages(&g) || (g.o.auth && !build_auth(&g))) {
        fprintf(stderr, "tern-loadgen: cannot build the messages\n");
        return 2;
    }
    char err[256];
    if (g.o.starttls) {
        struct tls_client_config tc = {.ca_file = g.o.ca_file};
        g.tls = tls_client_ctx_new(&tc, err, sizeof(err));
        if (g.tls == NULL) {
            fprintf(stderr, "tern-loadgen: %s\n", err);
            return 1;
        }
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
    int rc = getaddrinfo(g.o.host, g.o.port, &hints, &ai);
    if (rc != 0) {
        fprintf(stderr, "tern-loadgen: %s:%s: %s\n", g.o.host, g.o.port, gai_strerror(rc));
        return 1;
    }
    unsigned entries = 2u * (unsigned)g.o.conns + 16;
    struct io_uring_params p = {.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN};
    if (io_uring_queue_init_params(entries, &g.ring, &p) < 0) {
        p.flags = 0;
        if ((rc = io_uring_queue_init_params(entries, &g.ring, &p)) < 0) {
            fprintf(stderr, "tern-loadgen: io_uring_queue_init: %s\n", strerror(-rc));
            return 1;
        }
    }
    g.conns = calloc((size_t)g.o.conns, sizeof(*g.conns));
    if (g.conns == NULL)
        return 1;
    double t0 = bench_now_s();
    g.ai = ai;
    for (int i = 0; i < g.o.conns && (!g.o.per_conn || unreserved(&g) > 0); i++)
        if (!open_conn(&g, &g.conns[i]))
            g.conn_failures++;
    run_loop(&g);
    freeaddrinfo(ai);
    double wall = bench_now_s() - t0;

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                 (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    printf("sent=%ld refused=%ld seconds=%.3f msgs_per_s=%.0f cpu_us_per_msg=%.1f\n", g.sent,
           g.refused, wall, wall > 0 ? (double)g.sent / wall : 0.0,
           g.sent ? cpu * 1e6 / (double)g.sent : 0.0);
    if (g.sent < g.o.messages)
        fprintf(stderr, "tern-loadgen: %ld of %ld sent; %ld connection(s) failed%s%s\n", g.sent,
                g.o.messages, g.conn_failures, g.first_error[0] ? "; first: " : "", g.first_error);
    io_uring_queue_exit(&g.ring);
    SSL_SESSION_free(g.session);
    tls_client_ctx_free(g.tls);
    free(g.conns);
    free(g.cmd_off);
    buf_free(&g.txn);
    buf_free(&g.body);
    return g.sent == g.o.messages ? 0 : 1;
}
