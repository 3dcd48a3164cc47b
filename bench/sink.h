/*
 * sink.h - internal interfaces of bench/sink (tern-sink), shared by
 * sink.c (options, threads, signals, stats), sink_loop.c (the io_uring
 * loop of one thread), sink_record.c (record lines) and sink_drop.c
 * (where --drop-rate drops a connection).
 */
#ifndef TERN_BENCH_SINK_H
#define TERN_BENCH_SINK_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/buf.h"
#include "engine/smtp_server.h"
#include "engine/srv_io.h"
#include "tls/tls.h"

#define SINK_MAX_THREADS   64

/* Where --drop-rate drops a connection (close, no reply); sink.c's header
 * comment defines each point. */
enum sink_drop {
    SINK_DROP_NONE,
    SINK_DROP_GREETING,     /* after the 220 greeting, before any read */
    SINK_DROP_MAIL,         /* MAIL FROM accepted, its reply withheld */
    SINK_DROP_DATA,         /* body bytes arrived, message incomplete */
    SINK_DROP_DOT,          /* message complete and recorded, no reply */
    SINK_DROP_COUNT
};

#define SINK_CLIENTS_MAX   64      /* --per-client: addresses tracked */
#define SINK_CLIENT_IP_MAX 48

/* --per-client counters of one client address (sink_clients.c). */
struct sink_client {
    char ip[SINK_CLIENT_IP_MAX];
    uint64_t open, peak;        /* connections open now, most at once */
    uint64_t msgs;              /* accepted messages */
    int64_t sec;                /* the second in_sec counts */
    uint64_t in_sec, max_per_s; /* messages in that second, most in any */
    int64_t conn_sec;           /* the same for accepted connections */
    uint64_t conns_in_sec, max_conns_per_s;
};

/* All client addresses, shared by the threads under mu (a test knob:
 * the lock is taken only with --per-client). */
struct sink_clients {
    pthread_mutex_t mu;
    int n;
    struct sink_client c[SINK_CLIENTS_MAX];
};

/* peer is "ip:port" (c->peer); the counters key on the ip. */
void sink_clients_open(struct sink_clients *t, const char *peer);
void sink_clients_close(struct sink_clients *t, const char *peer);
void sink_clients_message(struct sink_clients *t, const char *peer);
/* One line per address for the stats file:
 *   client IP conns_open=N peak_conns=N messages=N max_messages_per_s=N
 *   max_conns_per_s=N */
void sink_clients_format(struct sink_clients *t, struct buf *out);

/* Everything from the command line, read-only once threads run. */
struct sink_cfg {
    const char *listen;         /* HOST:PORT */
    const char *port_file;
    const char *stats_file;
    const char *record_file;
    int threads;
    int quiet;
    double drop_rate;           /* 0..1, per transaction */
    uint64_t drop_seed;
    uint64_t reply_delay_ms;    /* before the reply to the final dot */
    uint64_t latency_ms;        /* --latency: every byte sent this late */
    int abort_handshake;        /* close after the ClientHello */
    int per_client;             /* --per-client counters */
    uint64_t reply_first;       /* --reply-first N: data_reply only to the
                                   first N messages, then 250 (0: all) */
    struct smtp_server_config smtp;
    /* TLS (enabled when cert_file is set and STARTTLS is offered) */
    struct tls_server_config tls;
};

/* Counters of one thread: written by that thread only, read by the main
 * thread for the stats file (relaxed atomics: no locks, no tearing). */
struct sink_counters {
    _Atomic uint64_t messages;      /* accepted (2xx) */
    _Atomic uint64_t rejected;      /* completed but answered non-2xx */
    _Atomic uint64_t bytes;         /* data bytes of accepted messages */
    _Atomic uint64_t connections;   /* accepted connections */
    _Atomic uint64_t tls_full;
    _Atomic uint64_t tls_resumed;
    _Atomic uint64_t tls_failed;    /* includes --abort-handshake */
    _Atomic uint64_t tls_v13, tls_v12, tls_v_older;    /* handshakes by version */
    _Atomic uint64_t pipelined;     /* messages whose commands came before the
                                       reply to the one before them (pipelined
                                       transactions: one read, several messages) */
    _Atomic uint64_t drops[SINK_DROP_COUNT];    /* by point; [NONE] unused */
};

/* SIGUSR1 pauses every thread (between two of its completions) while the
 * main thread rotates the ticket keys: the TLS context is shared and
 * BoringSSL's SSL_CTX_set_tlsext_ticket_keys takes no lock, so no thread
 * may be inside a handshake then. Guarded by mu. */
struct sink_pause {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t round;             /* pauses requested by main */
    uint64_t released;          /* pauses main has ended */
    int parked;                 /* threads waiting in this round */
    int live;                   /* threads running their loop */
};

/* Shared by all threads. */
struct sink {
    struct sink_cfg cfg;
    struct tls_server_ctx *tls;     /* one context for every thread so a
                                       ticket resumes on any thread
                                       (BoringSSL SSL_CTX is thread-safe
                                       for handshakes; changing its
                                       ticket keys is not: sink_pause) */
    int record_fd;                  /* -1: no record */
    _Atomic uint64_t active;        /* open connections, all threads:
                                       from accept until our close() */
    _Atomic uint64_t peak;          /* highest `active` seen */
    _Atomic int stopping;           /* main asks every thread to stop */
    _Atomic uint64_t replied;       /* messages given --data-reply so far */
    struct sink_clients clients;    /* --per-client */
    struct sink_pause pause;
};

struct sink_thread {
    struct sink *sk;
    int id;
    int listen_fd;
    int wake_fd;                    /* eventfd: main writes to stop or
                                       pause us (see stopping, pause) */
    pthread_t tid;
    struct sink_counters c;
    _Atomic int ready;              /* 1 serving, -1 setup failed */
    char err[256];                  /* why the thread failed */
};

/* sink_thread_main runs one thread's io_uring loop until woken through
 * wake_fd with sk->stopping set. Returns NULL; on a setup failure it
 * writes th->err. */
void *sink_thread_main(void *arg);

/* sink_record_line appends one record line (format in sink.c) for the
 * message in *e to out. peer is "ip:port"; proto/cipher may be NULL (no
 * TLS). dropped: the connection is dropped after the dot (an extra
 * field says so). */
void sink_record_line(struct buf *out, const struct smtp_server_envelope *e,
                      const char *proto, const char *cipher, int resumed,
                      const char *peer, int dropped);

/* --latency (sink_pace.c): what a connection queues for the client is
 * held latency_ms before it is sent, as across a network with that round
 * trip; the client's bytes arrive at once. A connection's first mark is
 * held twice that: the round trip of the TCP handshake, which the kernel
 * completes at once on loopback. The output one batch queued
 * on a connection is one mark (its length and its time); marks are let go
 * in order by raising the connection's may_send (srv_io.h). Marks beyond
 * SINK_PACE_MARKS join the last one (they leave a little early). */
#define SINK_PACE_MARKS 16

struct sink_pace_conn {
    size_t bytes[SINK_PACE_MARKS];
    int64_t due_ns[SINK_PACE_MARKS];
    unsigned head, n;
    size_t seen;                /* bytes of pending already marked */
    unsigned marked : 1;        /* the first mark (held two holds) is made */
};

/* The thread's marks in the order they were made, which is the order they
 * fall due (the latency is one constant). An entry names its connection
 * by slot and generation: one closed since is skipped. */
struct sink_pace_entry {
    uint32_t slot, gen;
    int64_t due_ns;
};
struct sink_pace_queue {
    struct sink_pace_entry *e;
    size_t cap, head, n;        /* a ring of cap entries */
};

/* sink_pace_mark: the bytes c->pending gained since the last call form a
 * mark falling due at due_ns. Returns 1 when a new mark was made (queue
 * it: sink_pace_push), 0 when there was nothing new or it joined the last
 * mark. */
int sink_pace_mark(struct sink_pace_conn *p, const struct srv_conn *c, int64_t due_ns);
/* sink_pace_release lets the marks due by now go (c->may_send). */
void sink_pace_release(struct sink_pace_conn *p, struct srv_conn *c, int64_t now_ns);
/* sink_pace_sent: call after srv_conn_service, which may have moved the
 * released head of pending out. */
void sink_pace_sent(struct sink_pace_conn *p, const struct srv_conn *c);

/* 0 when out of memory. */
int sink_pace_push(struct sink_pace_queue *q, uint32_t slot, uint32_t gen, int64_t due_ns);
/* The earliest due time queued; -1 when empty. */
int64_t sink_pace_next(const struct sink_pace_queue *q);
/* Take the first entry if it is due by now: 1 and *e, else 0. */
int sink_pace_pop_due(struct sink_pace_queue *q, int64_t now_ns, struct sink_pace_entry *e);
void sink_pace_queue_free(struct sink_pace_queue *q);

/* A small deterministic generator (splitmix64), one per thread. */
struct sink_rng {
    uint64_t state;
};

/* sink_rng_seed: thread `thread`'s sequence for --drop-seed seed. */
void sink_rng_seed(struct sink_rng *r, uint64_t seed, int thread);

/* sink_drop_draw decides the drop for one transaction: SINK_DROP_NONE
 * with probability 1 - rate, else a point chosen uniformly among those
 * still ahead: all four on a connection's first transaction (first != 0),
 * MAIL, DATA and DOT on later ones (the greeting is behind them). */
enum sink_drop sink_drop_draw(struct sink_rng *r, double rate, int first);

/* sink_message_id copies the Message-ID header value of data (first line
 * only, trimmed, tabs and controls replaced by spaces) into out; returns 0
 * and writes "-" when there is none. */
int sink_message_id(const uint8_t *data, size_t len, char *out, size_t cap);

#endif
