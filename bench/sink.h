/*
 * sink.h - internal interfaces of bench/sink (tern-sink), shared by
 * sink.c (options, threads, signals, stats), sink_loop.c (the io_uring
 * loop of one thread) and sink_record.c (record lines).
 */
#ifndef TERN_BENCH_SINK_H
#define TERN_BENCH_SINK_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/buf.h"
#include "engine/smtp_server.h"
#include "tls/tls.h"

#define SINK_MAX_THREADS   64

/* Everything from the command line, read-only once threads run. */
struct sink_cfg {
    const char *listen;         /* HOST:PORT */
    const char *port_file;
    const char *stats_file;
    const char *record_file;
    int threads;
    int quiet;
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
    _Atomic uint64_t tls_failed;
};

/* Shared by all threads. */
struct sink {
    struct sink_cfg cfg;
    struct tls_server_ctx *tls;     /* one context for every thread so a
                                       ticket resumes on any thread
                                       (BoringSSL SSL_CTX is thread-safe) */
    int record_fd;                  /* -1: no record */
    _Atomic uint64_t active;        /* open connections, all threads */
    _Atomic uint64_t peak;          /* highest `active` seen */
};

struct sink_thread {
    struct sink *sk;
    int id;
    int listen_fd;
    int wake_fd;                    /* eventfd: main writes to stop us */
    pthread_t tid;
    struct sink_counters c;
    _Atomic int ready;              /* 1 serving, -1 setup failed */
    char err[256];                  /* why the thread failed */
};

/* sink_thread_main runs one thread's io_uring loop until woken through
 * wake_fd. Returns NULL; on a setup failure it writes th->err. */
void *sink_thread_main(void *arg);

/* sink_record_line appends one record line (format in sink.c) for the
 * message in *e to out. peer is "ip:port"; proto/cipher may be NULL (no
 * TLS). */
void sink_record_line(struct buf *out, const struct smtp_server_envelope *e,
                      const char *proto, const char *cipher, int resumed,
                      const char *peer);

/* sink_message_id copies the Message-ID header value of data (first line
 * only, trimmed, tabs and controls replaced by spaces) into out; returns 0
 * and writes "-" when there is none. */
int sink_message_id(const uint8_t *data, size_t len, char *out, size_t cap);

#endif
