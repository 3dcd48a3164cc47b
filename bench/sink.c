/*
 * sink.c - tern-sink: an io_uring SMTP receiving server for benchmarks and
 * tests. It accepts every message (or answers a configured reply) and can
 * record what it received. Without --record a body is parsed (dot
 * unstuffing, BDAT chunks, the size limit) and counted, not kept, as a
 * discarding sink such as Postfix's smtp-sink does.
 *
 * SYNOPSIS
 *   tern-sink --listen HOST:PORT [--port-file FILE] [--threads N]
 *             [--cert FILE --key FILE] [--no-starttls]
 *             [--tls-min V] [--tls-max V] [--ciphers LIST] [--no-tickets]
 *             [--no-session-ids]
 *             [--require-client-cert CAFILE]
 *             [--data-reply "451 4.3.0 busy"] [--starttls-reply "454 ..."]
 *             [--no-pipelining] [--chunking] [--max-size BYTES]
 *             [--hostname NAME] [--record FILE] [--stats-file FILE] [--quiet]
 *             [--drop-rate P [--drop-seed S]] [--reply-delay MS] [--latency MS]
 *             [--abort-handshake] [--track-tickets]
 *
 * DESCRIPTION
 *   PORT 0 picks a free port. Once listening, "tern-sink: listening on
 *   HOST:PORT" is printed on stdout and the port number is written to
 *   --port-file (atomically: temp file + rename). Each of N threads has its
 *   own io_uring ring and SO_REUSEPORT listener on the same port. STARTTLS
 *   is offered when --cert/--key are given (and not --no-starttls). V is
 *   1.0, 1.1, 1.2 or 1.3.
 *
 *   On SIGTERM or SIGINT the sink stops, prints one summary line on stdout
 *   and exits 0:
 *     tern-sink: messages=N rejected=N bytes=N connections=N tls_full=N
 *     tls_resumed=N tls_failed=N peak_conns=N drops_greeting=N
 *     drops_mail=N drops_data=N drops_dot=N pipelined=N tls_v13=N
 *     tls_v12=N tls_v_older=N   (one line)
 *   followed, with --track-tickets, by tickets_issued=N tickets_reused=N
 *   tickets_rejected=N.
 *   --stats-file FILE is rewritten (temp + rename) about every 200 ms and at
 *   exit with the same counters, one key=value per line, plus conns_open=N.
 *   messages and bytes count accepted (2xx) messages; rejected counts
 *   messages answered with a non-2xx --data-reply. conns_open counts the
 *   connections open now and peak_conns the most open at once, each from
 *   its accept until the sink closes it. tls_failed counts failed and
 *   (--abort-handshake) aborted handshakes. pipelined counts messages that
 *   came in the same read as the one before them on their connection: the
 *   client sent them before that one's reply (pipelined transactions).
 *   tls_v13, tls_v12 and tls_v_older count the handshakes that completed
 *   by the version they negotiated (1.0 and 1.1 are older).
 *
 *   On SIGUSR1 the session-ticket keys of the TLS context (one, shared by
 *   every thread) are replaced and its session cache flushed: no session
 *   issued before resumes. The threads pause for it (between completions),
 *   since the keys may only change while no handshake runs. Then
 *   "tern-sink: ticket keys rotated" goes to stderr.
 *
 * TEST KNOBS
 *   --drop-rate P (0..1) drops the connection (no reply, no QUIT, no TLS
 *   close_notify; replies already queued still go out) in a fraction P of
 *   transactions, at a point chosen uniformly among those still ahead:
 *     greeting  right after the 220 greeting, nothing read (a
 *               connection's first transaction only: later ones choose
 *               among the other three)
 *     mail      MAIL FROM was accepted; its reply is withheld (with
 *               whatever was pipelined behind it)
 *     data      body bytes arrived, the message is not complete: at the
 *               first body read after DATA's 354 or inside a BDAT chunk
 *               (a BDAT message whose body came whole with its command
 *               is dropped when it completes), not recorded
 *     dot       the whole message and its final dot arrived; it IS
 *               recorded (with a trailing "dropped-after-dot" field: a real
 *               receiver may have kept it) but not counted in messages
 *   Each kind is counted (drops_greeting= ... in the summary and stats).
 *   Draws come from one generator per thread seeded with --drop-seed S
 *   (default 0) plus the thread number: one thread and one client give the
 *   same drops every run.
 *
 *   --reply-delay MS answers each final dot MS milliseconds late (an
 *   io_uring timeout: the thread goes on serving other connections), so a
 *   client's connections overlap.
 *
 *   --latency MS holds everything the sink sends (greeting, replies, TLS
 *   handshake messages, alerts) MS milliseconds before sending it, in
 *   order, as a network with that round-trip time would: each exchange
 *   the client waits on takes MS longer. The client's bytes and the TCP
 *   handshake are not delayed; instead a connection's first send (the
 *   greeting) is held 2 x MS, the round trip the connect would have cost.
 *   Output queued in one batch of completions is held as one piece
 *   (sink.h, sink_pace.c).
 *
 *   --reply-first N gives --data-reply to the first N messages (all threads
 *   together) and 250 to the rest: a receiver that says "421 rate limited"
 *   for a while, then recovers.
 *
 *   --per-client adds to the stats file one line per client address:
 *     client IP conns_open=N peak_conns=N messages=N max_messages_per_s=N
 *     max_conns_per_s=N
 *   (max_*_per_s: the most messages accepted, connections accepted, in
 *   one clock second).
 *
 *   --abort-handshake offers STARTTLS (with or without --cert), answers it
 *   220, reads the ClientHello record and closes the connection without a
 *   TLS alert.
 *
 *   --track-tickets makes the TLS context seal its own tickets and count
 *   them (tls_server_ctx_ticket_stats, tls/tls.h): tickets_issued (sent),
 *   tickets_reused (presented again after a resumption: a TLS 1.3 ticket
 *   used twice), tickets_rejected (could not be opened: an old key). The
 *   context is shared by the threads, so these are its totals.
 *
 * RECORD FORMAT
 *   --record FILE (opened O_APPEND) gets one line per accepted message,
 *   written once per batch of completions with one write(). Fields are
 *   separated by TAB:
 *     1 envelope sender, "<>" for the null sender
 *     2 recipients, comma-separated
 *     3 data size in bytes
 *     4 SHA-256 (lower-case hex) of the data: the bytes after DATA up to
 *       and including the CRLF before the final ".", dot-unstuffed, line
 *       endings exactly as received (CRLF); for BDAT the chunks
 *       concatenated
 *     5 TLS protocol ("TLSv1.3") or "-"
 *     6 TLS cipher (standard name) or "-"
 *     7 TLS session resumed: 1 or 0
 *     8 client address "ip:port" ("[ip]:port" for IPv6)
 *     9 Message-ID header value (first line, trimmed) or "-"
 *    10 only on a message dropped after its dot: "dropped-after-dot"
 *   Addresses never contain TAB or control bytes (the session refuses
 *   them); a quoted local part could hold a comma.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bench/sink.h"

#define SINK_BACKLOG          4096
#define SINK_STATS_PERIOD_MS  200
#define SINK_HOST_MAX         256
#define SINK_PATH_MAX         4096
#define SINK_DELAY_MAX_MS     600000    /* --reply-delay: ten minutes */
#define SINK_LATENCY_MAX_MS   10000     /* --latency: ten seconds */
#define SINK_KV_MAX           24        /* counters in the summary/stats */

static void usage(void)
{
    fprintf(stderr,
            "usage: tern-sink --listen HOST:PORT [--port-file FILE] [--threads N]\n"
            "  [--cert FILE --key FILE] [--no-starttls] [--tls-min V] [--tls-max V]\n"
            "  [--ciphers LIST] [--no-tickets] [--no-session-ids]\n"
            "  [--require-client-cert CAFILE]\n"
            "  [--data-reply REPLY] [--starttls-reply REPLY] [--no-pipelining]\n"
            "  [--chunking] [--max-size BYTES] [--hostname NAME] [--record FILE]\n"
            "  [--stats-file FILE] [--quiet]\n"
            "  [--drop-rate P [--drop-seed S]]   drop a fraction P (0..1) of transactions\n"
            "                                    at greeting, mail, data or dot\n"
            "  [--reply-delay MS]                answer each final dot MS ms late\n"
            "  [--latency MS]                    send everything MS ms late (a round trip)\n"
            "  [--abort-handshake]               close after the ClientHello, no alert\n"
            "  [--track-tickets]                 count tickets issued, reused, rejected\n"
            "  [--reply-first N]                 --data-reply to the first N messages, then 250\n"
            "  [--per-client]                    per client address counters in the stats file\n"
            "SIGUSR1 rotates the session-ticket keys; SIGTERM prints a summary and exits.\n");
}

static int parse_version(const char *s, uint16_t *v)
{
    static const struct {
        const char *name;
        uint16_t v;
    } t[] = {
        {"1.0", TLS1_VERSION}, {"1.1", TLS1_1_VERSION},
        {"1.2", TLS1_2_VERSION}, {"1.3", TLS1_3_VERSION},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        if (strcmp(s, t[i].name) == 0) {
            *v = t[i].v;
            return 1;
        }
    return 0;
}

/* A reply override must be one line starting with a 2xx..5xx code. */
static int reply_ok(const char *r)
{
    size_t n = strlen(r);
    if (n < 3 || n >= SMTP_SERVER_REPLY_MAX || r[0] < '2' || r[0] > '5' ||
        r[1] < '0' || r[1] > '9' || r[2] < '0' || r[2] > '9')
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)r[i] < 0x20)
            return 0;
    return 1;
}

static int parse_u64_arg(const char *s, uint64_t *v)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (errno || end == s || *end != '\0' || s[0] == '-')
        return 0;
    *v = x;
    return 1;
}

/* A probability: a plain decimal number in [0, 1]. */
static int parse_rate(const char *s, double *v)
{
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (errno || end == s || *end != '\0' || !(x >= 0 && x <= 1))
        return 0;
    *v = x;
    return 1;
}

static int parse_args(int argc, char **argv, struct sink_cfg *cfg, const char **cert,
                      const char **key, int *no_starttls)
{
    enum {
        O_LISTEN = 256, O_PORT_FILE, O_THREADS, O_CERT, O_KEY, O_NO_STARTTLS, O_TLS_MIN,
        O_TLS_MAX, O_CIPHERS, O_NO_TICKETS, O_CLIENT_CA, O_DATA_REPLY, O_STARTTLS_REPLY,
        O_NO_PIPELINING, O_CHUNKING, O_RECORD, O_MAX_SIZE, O_QUIET, O_STATS, O_HOSTNAME,
        O_DROP_RATE, O_DROP_SEED, O_REPLY_DELAY, O_LATENCY, O_ABORT_HS, O_TRACK_TICKETS,
        O_PER_CLIENT, O_REPLY_FIRST, O_NO_SESSION_IDS,
    };
    static const struct option opts[] = {
        {"listen", required_argument, NULL, O_LISTEN},
        {"port-file", required_argument, NULL, O_PORT_FILE},
        {"threads", required_argument, NULL, O_THREADS},
        {"cert", required_argument, NULL, O_CERT},
        {"key", required_argument, NULL, O_KEY},
        {"no-starttls", no_argument, NULL, O_NO_STARTTLS},
        {"tls-min", required_argument, NULL, O_TLS_MIN},
        {"tls-max", required_argument, NULL, O_TLS_MAX},
        {"ciphers", required_argument, NULL, O_CIPHERS},
        {"no-tickets", no_argument, NULL, O_NO_TICKETS},
        {"no-session-ids", no_argument, NULL, O_NO_SESSION_IDS},
        {"require-client-cert", required_argument, NULL, O_CLIENT_CA},
        {"data-reply", required_argument, NULL, O_DATA_REPLY},
        {"starttls-reply", required_argument, NULL, O_STARTTLS_REPLY},
        {"no-pipelining", no_argument, NULL, O_NO_PIPELINING},
        {"chunking", no_argument, NULL, O_CHUNKING},
        {"record", required_argument, NULL, O_RECORD},
        {"max-size", required_argument, NULL, O_MAX_SIZE},
        {"quiet", no_argument, NULL, O_QUIET},
        {"stats-file", required_argument, NULL, O_STATS},
        {"hostname", required_argument, NULL, O_HOSTNAME},
        {"drop-rate", required_argument, NULL, O_DROP_RATE},
        {"drop-seed", required_argument, NULL, O_DROP_SEED},
        {"reply-delay", required_argument, NULL, O_REPLY_DELAY},
        {"latency", required_argument, NULL, O_LATENCY},
        {"abort-handshake", no_argument, NULL, O_ABORT_HS},
        {"track-tickets", no_argument, NULL, O_TRACK_TICKETS},
        {"per-client", no_argument, NULL, O_PER_CLIENT},
        {"reply-first", required_argument, NULL, O_REPLY_FIRST},
        {NULL, 0, NULL, 0},
    };
    int o;
    uint64_t v;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case O_LISTEN: cfg->listen = optarg; break;
        case O_PORT_FILE: cfg->port_file = optarg; break;
        case O_THREADS:
            if (!parse_u64_arg(optarg, &v) || v < 1 || v > SINK_MAX_THREADS) {
                fprintf(stderr, "tern-sink: --threads must be 1..%d\n", SINK_MAX_THREADS);
                return 0;
            }
            cfg->threads = (int)v;
            break;
        case O_CERT: *cert = optarg; break;
        case O_KEY: *key = optarg; break;
        case O_NO_STARTTLS: *no_starttls = 1; break;
        case O_TLS_MIN:
        case O_TLS_MAX:
            if (!parse_version(optarg, o == O_TLS_MIN ? &cfg->tls.min_version
                                                      : &cfg->tls.max_version)) {
                fprintf(stderr, "tern-sink: TLS version must be 1.0, 1.1, 1.2 or 1.3\n");
                return 0;
            }
            break;
        case O_CIPHERS: cfg->tls.cipher_list = optarg; break;
        case O_NO_TICKETS: cfg->tls.tickets = 0; break;
        case O_NO_SESSION_IDS: cfg->tls.no_session_ids = 1; break;
        case O_CLIENT_CA:
            cfg->tls.require_client_cert = 1;
            cfg->tls.client_ca_file = optarg;
            break;
        case O_DATA_REPLY:
        case O_STARTTLS_REPLY:
            if (!reply_ok(optarg)) {
                fprintf(stderr, "tern-sink: a reply must look like \"451 4.3.0 text\"\n");
                return 0;
            }
            if (o == O_DATA_REPLY)
                cfg->smtp.data_reply = optarg;
            else
                cfg->smtp.starttls_reply = optarg;
            break;
        case O_NO_PIPELINING: cfg->smtp.offer_pipelining = 0; break;
        case O_CHUNKING: cfg->smtp.offer_chunking = 1; break;
        case O_RECORD: cfg->record_file = optarg; break;
        case O_MAX_SIZE:
            if (!parse_u64_arg(optarg, &v) || v == 0) {
                fprintf(stderr, "tern-sink: bad --max-size\n");
                return 0;
            }
            cfg->smtp.max_message_size = v;
            break;
        case O_QUIET: cfg->quiet = 1; break;
        case O_STATS: cfg->stats_file = optarg; break;
        case O_HOSTNAME: cfg->smtp.hostname = optarg; break;
        case O_DROP_RATE:
            if (!parse_rate(optarg, &cfg->drop_rate)) {
                fprintf(stderr, "tern-sink: --drop-rate must be 0..1\n");
                return 0;
            }
            break;
        case O_DROP_SEED:
            if (!parse_u64_arg(optarg, &cfg->drop_seed)) {
                fprintf(stderr, "tern-sink: bad --drop-seed\n");
                return 0;
            }
            break;
        case O_REPLY_DELAY:
            if (!parse_u64_arg(optarg, &v) || v > SINK_DELAY_MAX_MS) {
                fprintf(stderr, "tern-sink: --reply-delay must be 0..%d ms\n",
                        SINK_DELAY_MAX_MS);
                return 0;
            }
            cfg->reply_delay_ms = v;
            break;
        case O_LATENCY:
            if (!parse_u64_arg(optarg, &v) || v > SINK_LATENCY_MAX_MS) {
                fprintf(stderr, "tern-sink: --latency must be 0..%d ms\n", SINK_LATENCY_MAX_MS);
                return 0;
            }
            cfg->latency_ms = v;
            break;
        case O_ABORT_HS: cfg->abort_handshake = 1; break;
        case O_TRACK_TICKETS: cfg->tls.track_tickets = 1; break;
        case O_PER_CLIENT: cfg->per_client = 1; break;
        case O_REPLY_FIRST:
            if (!parse_u64_arg(optarg, &cfg->reply_first) || cfg->reply_first == 0) {
                fprintf(stderr, "tern-sink: --reply-first needs a count > 0\n");
                return 0;
            }
            break;
        default:
            usage();
            return 0;
        }
    }
    if (optind != argc || cfg->listen == NULL) {
        usage();
        return 0;
    }
    if ((*cert == NULL) != (*key == NULL)) {
        fprintf(stderr, "tern-sink: --cert and --key go together\n");
        return 0;
    }
    return 1;
}

/* Split "host:port" or "[v6]:port". */
static int split_hostport(const char *s, char *host, size_t hcap, const char **port)
{
    const char *colon;
    const char *h = s;
    size_t hl;
    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (rb == NULL || rb[1] != ':')
            return 0;
        h = s + 1;
        hl = (size_t)(rb - h);
        colon = rb + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL)
            return 0;
        hl = (size_t)(colon - s);
    }
    if (hl == 0 || hl >= hcap || colon[1] == '\0')
        return 0;
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = colon + 1;
    return 1;
}

/* One SO_REUSEPORT listener bound to host:port. Returns the fd or -1. */
static int make_listener(const char *host, const char *port, char *err, size_t errlen)
{
    struct addrinfo hints, *ai = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int rc = getaddrinfo(host, port, &hints, &ai);
    if (rc != 0) {
        snprintf(err, errlen, "%s:%s: %s", host, port, gai_strerror(rc));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
        /* accepted sockets inherit it: replies must not wait for Nagle */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, SINK_BACKLOG) != 0) {
        snprintf(err, errlen, "listen %s:%s: %s", host, port, strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    return fd;
}

static int bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
        return -1;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

/* Write text to path via path.tmp + rename, so readers never see a half
 * file. */
static int write_atomic(const char *path, const char *text)
{
    char tmp[SINK_PATH_MAX];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
        return 0;
    FILE *f = fopen(tmp, "w");
    if (f == NULL)
        return 0;
    int ok = fputs(text, f) >= 0;
    ok = (fclose(f) == 0) && ok;
    return ok && rename(tmp, path) == 0;
}

struct totals {
    uint64_t messages, rejected, bytes, connections, tls_full, tls_resumed, tls_failed, pipelined;
    uint64_t tls_v13, tls_v12, tls_v_older;
    uint64_t drops[SINK_DROP_COUNT];
    uint64_t active, peak;
    int tickets_tracked;            /* the tickets_* below mean something */
    struct tls_ticket_stats tickets;
};

static void sum(const struct sink *sk, const struct sink_thread *th, int n, struct totals *t)
{
    memset(t, 0, sizeof(*t));
    for (int i = 0; i < n; i++) {
        const struct sink_counters *c = &th[i].c;
        t->messages += atomic_load_explicit(&c->messages, memory_order_relaxed);
        t->rejected += atomic_load_explicit(&c->rejected, memory_order_relaxed);
        t->bytes += atomic_load_explicit(&c->bytes, memory_order_relaxed);
        t->connections += atomic_load_explicit(&c->connections, memory_order_relaxed);
        t->tls_full += atomic_load_explicit(&c->tls_full, memory_order_relaxed);
        t->tls_resumed += atomic_load_explicit(&c->tls_resumed, memory_order_relaxed);
        t->tls_failed += atomic_load_explicit(&c->tls_failed, memory_order_relaxed);
        t->pipelined += atomic_load_explicit(&c->pipelined, memory_order_relaxed);
        t->tls_v13 += atomic_load_explicit(&c->tls_v13, memory_order_relaxed);
        t->tls_v12 += atomic_load_explicit(&c->tls_v12, memory_order_relaxed);
        t->tls_v_older += atomic_load_explicit(&c->tls_v_older, memory_order_relaxed);
        for (int d = 0; d < SINK_DROP_COUNT; d++)
            t->drops[d] += atomic_load_explicit(&c->drops[d], memory_order_relaxed);
    }
    t->active = atomic_load_explicit(&sk->active, memory_order_relaxed);
    t->peak = atomic_load_explicit(&sk->peak, memory_order_relaxed);
    /* One context serves every thread: its counters are the totals. */
    t->tickets_tracked = sk->tls != NULL && sk->cfg.tls.track_tickets;
    if (t->tickets_tracked)
        tls_server_ctx_ticket_stats(sk->tls, &t->tickets);
}

struct kv {
    const char *key;
    uint64_t v;
};

/* The counters in output order: tickets_* only when tracked, conns_open
 * only when asked (the stats file; the summary comes once the threads
 * have stopped, when it is always 0). */
static size_t totals_kv(const struct totals *t, int with_open, struct kv *kv, size_t cap)
{
    const struct kv tickets[] = {
        {"tickets_issued", t->tickets.issued}, {"tickets_reused", t->tickets.reused},
        {"tickets_rejected", t->tickets.rejected},
    };
    const struct kv all[] = {
        {"messages", t->messages}, {"rejected", t->rejected}, {"bytes", t->bytes},
        {"connections", t->connections}, {"tls_full", t->tls_full},
        {"tls_resumed", t->tls_resumed}, {"tls_failed", t->tls_failed},
        {"peak_conns", t->peak}, {"drops_greeting", t->drops[SINK_DROP_GREETING]},
        {"drops_mail", t->drops[SINK_DROP_MAIL]}, {"drops_data", t->drops[SINK_DROP_DATA]},
        {"drops_dot", t->drops[SINK_DROP_DOT]}, {"pipelined", t->pipelined},
        {"tls_v13", t->tls_v13}, {"tls_v12", t->tls_v12}, {"tls_v_older", t->tls_v_older},
    };
    size_t n = 0;
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]) && n < cap; i++)
        kv[n++] = all[i];
    for (size_t i = 0; t->tickets_tracked && i < sizeof(tickets) / sizeof(tickets[0]) && n < cap;
         i++)
        kv[n++] = tickets[i];
    if (with_open && n < cap)
        kv[n++] = (struct kv){"conns_open", t->active};
    return n;
}

/* "key=value" pairs, each preceded by lead (summary: " ") or followed by
 * tail (stats file: "\n"). */
static void format_totals(struct buf *out, const struct totals *t, const char *lead,
                          const char *tail, int with_open)
{
    struct kv kv[SINK_KV_MAX];
    size_t n = totals_kv(t, with_open, kv, SINK_KV_MAX);
    for (size_t i = 0; i < n; i++) {
        buf_append_str(out, lead);
        buf_append_str(out, kv[i].key);
        buf_append(out, "=", 1);
        buf_append_u64(out, kv[i].v);
        buf_append_str(out, tail);
    }
}

static void write_stats(const char *path, const struct totals *t, struct sink *sk)
{
    struct buf b;
    buf_init(&b, 0);
    format_totals(&b, t, "", "\n", 1);
    if (sk->cfg.per_client)
        sink_clients_format(&sk->clients, &b);
    buf_append(&b, "", 1);      /* NUL */
    if (!b.err)
        write_atomic(path, (const char *)buf_peek(&b));
    buf_free(&b);
}

static void print_summary(const struct totals *t)
{
    struct buf b;
    buf_init(&b, 0);
    buf_append_str(&b, "tern-sink:");
    format_totals(&b, t, " ", "", 0);
    buf_append(&b, "\n", 1);
    if (!b.err)
        fwrite(buf_peek(&b), 1, buf_used(&b), stdout);
    fflush(stdout);
    buf_free(&b);
}

/* Wake every thread's loop (it then reads sk->stopping and sk->pause). */
static void wake_all(struct sink_thread *th, int n)
{
    for (int i = 0; i < n; i++) {
        uint64_t one = 1;
        if (write(th[i].wake_fd, &one, sizeof(one)) != sizeof(one))
            fprintf(stderr, "tern-sink: cannot wake thread %d\n", i);
    }
}

/* SIGUSR1: pause every running thread, rotate, release them. */
static void rotate_ticket_keys(struct sink *sk, struct sink_thread *th, int n)
{
    if (sk->tls == NULL) {
        fprintf(stderr, "tern-sink: SIGUSR1: no TLS, no ticket keys to rotate\n");
        return;
    }
    struct sink_pause *p = &sk->pause;
    pthread_mutex_lock(&p->mu);
    p->round++;
    pthread_mutex_unlock(&p->mu);
    wake_all(th, n);
    pthread_mutex_lock(&p->mu);
    while (p->parked < p->live)
        pthread_cond_wait(&p->cv, &p->mu);
    int ok = tls_server_ctx_rotate_ticket_keys(sk->tls);
    p->parked = 0;
    p->released = p->round;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    fprintf(stderr, ok ? "tern-sink: ticket keys rotated\n"
                       : "tern-sink: ticket key rotation failed\n");
}

int main(int argc, char **argv)
{
    static struct sink sk;                  /* big; lives for the process */
    static struct sink_thread th[SINK_MAX_THREADS];
    const char *cert = NULL, *key = NULL;
    int no_starttls = 0;

    sk.cfg.threads = 1;
    sk.cfg.smtp.offer_pipelining = 1;
    sk.cfg.tls.tickets = 1;
    sk.record_fd = -1;
    pthread_mutex_init(&sk.pause.mu, NULL);
    pthread_mutex_init(&sk.clients.mu, NULL);
    pthread_cond_init(&sk.pause.cv, NULL);
    if (!parse_args(argc, argv, &sk.cfg, &cert, &key, &no_starttls))
        return 2;

    char err[512];
    if (cert && !no_starttls) {
        sk.cfg.tls.cert_file = cert;
        sk.cfg.tls.key_file = key;
        sk.tls = tls_server_ctx_new(&sk.cfg.tls, err, sizeof(err));
        if (sk.tls == NULL) {
            fprintf(stderr, "tern-sink: TLS: %s\n", err);
            return 1;
        }
        sk.cfg.smtp.offer_starttls = 1;
    } else if (sk.cfg.tls.track_tickets) {
        fprintf(stderr, "tern-sink: --track-tickets needs TLS (--cert, --key)\n");
        return 2;
    } else if (sk.cfg.smtp.starttls_reply || sk.cfg.abort_handshake) {
        /* Advertise STARTTLS only to refuse it or to cut the handshake
         * short: tests of the client. */
        sk.cfg.smtp.offer_starttls = 1;
    }
    /* Without --record nothing reads a body: it is counted, not copied
     * (as a discarding sink such as Postfix's smtp-sink does). */
    sk.cfg.smtp.discard_data = sk.cfg.record_file == NULL;
    if (sk.cfg.record_file) {
        sk.record_fd = open(sk.cfg.record_file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (sk.record_fd < 0) {
            fprintf(stderr, "tern-sink: %s: %s\n", sk.cfg.record_file, strerror(errno));
            return 1;
        }
    }

    char host[SINK_HOST_MAX];
    const char *port;
    if (!split_hostport(sk.cfg.listen, host, sizeof(host), &port)) {
        fprintf(stderr, "tern-sink: --listen wants HOST:PORT\n");
        return 2;
    }
    /* The first listener picks the port (maybe 0 -> any); the others
     * join it through SO_REUSEPORT. */
    char portbuf[16];
    int n = sk.cfg.threads;
    for (int i = 0; i < n; i++) {
        th[i].sk = &sk;
        th[i].id = i;
        th[i].listen_fd = make_listener(host, i ? portbuf : port, err, sizeof(err));
        if (th[i].listen_fd < 0) {
            fprintf(stderr, "tern-sink: %s\n", err);
            return 1;
        }
        if (i == 0)
            snprintf(portbuf, sizeof(portbuf), "%d", bound_port(th[0].listen_fd));
        th[i].wake_fd = eventfd(0, EFD_CLOEXEC);
        if (th[i].wake_fd < 0) {
            fprintf(stderr, "tern-sink: eventfd: %s\n", strerror(errno));
            return 1;
        }
    }

    /* Signals go to the main thread only, through sigtimedwait. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    for (int i = 0; i < n; i++) {
        if (pthread_create(&th[i].tid, NULL, sink_thread_main, &th[i]) != 0) {
            fprintf(stderr, "tern-sink: pthread_create failed\n");
            return 1;
        }
    }
    /* Announce the port only once every thread serves it. */
    for (int i = 0; i < n; i++) {
        while (atomic_load(&th[i].ready) == 0)
            nanosleep(&(struct timespec){0, 1000000L}, NULL);
        if (atomic_load(&th[i].ready) < 0) {
            fprintf(stderr, "tern-sink: thread %d: %s\n", i, th[i].err);
            return 1;
        }
    }
    printf("tern-sink: listening on %s:%s\n", host, portbuf);
    fflush(stdout);
    char portline[24];
    snprintf(portline, sizeof(portline), "%s\n", portbuf);
    if (sk.cfg.port_file && !write_atomic(sk.cfg.port_file, portline))
        fprintf(stderr, "tern-sink: cannot write %s\n", sk.cfg.port_file);

    struct totals t;
    if (sk.cfg.stats_file) {
        sum(&sk, th, n, &t);
        write_stats(sk.cfg.stats_file, &t, &sk);
    }
    struct timespec period = {0, SINK_STATS_PERIOD_MS * 1000000L};
    for (;;) {
        int sig = sigtimedwait(&sigs, NULL, &period);
        if (sig == SIGTERM || sig == SIGINT)
            break;
        if (sig == SIGUSR1)
            rotate_ticket_keys(&sk, th, n);
        if (sk.cfg.stats_file) {
            sum(&sk, th, n, &t);
            write_stats(sk.cfg.stats_file, &t, &sk);
        }
    }

    int rc = 0;
    atomic_store(&sk.stopping, 1);
    wake_all(th, n);
    for (int i = 0; i < n; i++) {
        pthread_join(th[i].tid, NULL);
        if (th[i].err[0]) {
            fprintf(stderr, "tern-sink: thread %d: %s\n", i, th[i].err);
            rc = 1;
        }
        close(th[i].listen_fd);
        close(th[i].wake_fd);
    }
    sum(&sk, th, n, &t);
    if (sk.cfg.stats_file)
        write_stats(sk.cfg.stats_file, &t, &sk);
    print_summary(&t);
    if (sk.record_fd >= 0)
        close(sk.record_fd);
    tls_server_ctx_free(sk.tls);
    return rc;
}
