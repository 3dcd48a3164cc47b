/*
 * byte_cost.c - what moving one message body costs on this machine, step
 * by step, with nothing of tern's around it: the floor under the `large`
 * workload (bench/README.md, "The floor under large").
 *
 * A `large` message goes from Redis's memory into a Redis reply, through
 * a unix socket into the engine, is sealed with AES-128-GCM, crosses
 * loopback TCP to the sink, and is opened there. Each of those steps is
 * timed alone, per body of BYTES (default 102400, the workload's size):
 *
 *   memcpy_cold_us   a copy whose source and destination were last
 *                    touched BYTE_COST_POOL bytes ago (out of the caches:
 *                    the body Redis copies into its reply)
 *   memcpy_hot_us    the same copy again and again (in the cache)
 *   seal_us, open_us AES-128-GCM over the body in 16 KiB records
 *   unix_us, tcp_us  one end sends the body, a thread at the other end
 *                    receives it: the CPU of both ends (getrusage of the
 *                    process), through a socketpair and through a
 *                    loopback TCP connection
 *
 *   build/tern-byte-cost [ITERATIONS [BYTES]]     (defaults 5000, 102400)
 *   memcpy_cold_us=N memcpy_hot_us=N seal_us=N open_us=N unix_us=N tcp_us=N
 *
 * ERRORS
 *   Exit 2 on bad arguments, 1 when memory, a socket or a BoringSSL call
 *   fails.
 *
 * OWNERSHIP
 *   Everything is allocated in main and lives until exit.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/aead.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine/config.h"
#include "bench/bench_clock.h"

#define ITERATIONS_DEFAULT 5000
#define BYTES_DEFAULT      102400
#define BYTES_MAX          (16 * 1024 * 1024)
#define BYTE_COST_POOL     (128 * 1024 * 1024)   /* well over the last-level cache */
#define RECORD_MAX         16384                 /* TLS plaintext per record */
#define RECV_CHUNK         (256 * 1024)          /* the engine's receive size */

struct body_set {
    uint8_t *pool;       /* BYTE_COST_POOL bytes, every page touched */
    uint8_t *dst;        /* as large */
    size_t bytes;        /* one body */
    int iterations;
};

/* The i-th body's place in the pool: consecutive bodies never overlap
 * until the pool wraps, so each copy reads and writes cold lines. */
static size_t body_at(const struct body_set *s, int i)
{
    return ((size_t)i * s->bytes) % (BYTE_COST_POOL - s->bytes);
}

static double cpu_s(void)
{
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return (double)r.ru_utime.tv_sec + (double)r.ru_utime.tv_usec / 1e6 +
           (double)r.ru_stime.tv_sec + (double)r.ru_stime.tv_usec / 1e6;
}

static double memcpy_us(const struct body_set *s, int cold)
{
    double t = bench_now_s();
    for (int i = 0; i < s->iterations; i++) {
        size_t at = cold ? body_at(s, i) : 0;
        memcpy(s->dst + at, s->pool + at, s->bytes);
    }
    return (bench_now_s() - t) / s->iterations * 1e6;
}

/* The plaintext length of record r of a body. */
static size_t record_len(const struct body_set *s, size_t r)
{
    size_t left = s->bytes - r * RECORD_MAX;
    return left < RECORD_MAX ? left : RECORD_MAX;
}

/* Seal (or open what was sealed) each body in records of RECORD_MAX. */
static double aead_us(const struct body_set *s, int open)
{
    uint8_t key[16] = {7}, nonce[12] = {0};
    EVP_AEAD_CTX ctx;
    if (!EVP_AEAD_CTX_init(&ctx, EVP_aead_aes_128_gcm(), key, sizeof(key), 16, NULL))
        return -1;
    size_t nrec = (s->bytes + RECORD_MAX - 1) / RECORD_MAX;
    size_t cap = s->bytes + nrec * 16;
    uint8_t *sealed = malloc(cap), *plain = malloc(s->bytes);
    size_t *len = malloc(nrec * sizeof(*len));
    double us = -1;
    if (sealed == NULL || plain == NULL || len == NULL)
        goto out;
    size_t off = 0;
    for (size_t r = 0; r < nrec; r++) {   /* one body sealed, for the opens */
        if (!EVP_AEAD_CTX_seal(&ctx, sealed + off, &len[r], cap - off, nonce, sizeof(nonce),
                               s->pool + r * RECORD_MAX, record_len(s, r), NULL, 0))
            goto out;
        off += len[r];
    }
    double t = bench_now_s();
    for (int i = 0; i < s->iterations; i++) {
        const uint8_t *in = s->pool + body_at(s, i);
        off = 0;
        for (size_t r = 0; r < nrec; r++) {
            size_t n = record_len(s, r), got;
            int ok = open ? EVP_AEAD_CTX_open(&ctx, plain + r * RECORD_MAX, &got, n, nonce,
                                              sizeof(nonce), sealed + off, len[r], NULL, 0)
                          : EVP_AEAD_CTX_seal(&ctx, sealed + off, &got, cap - off, nonce,
                                              sizeof(nonce), in + r * RECORD_MAX, n, NULL, 0);
            if (!ok)
                goto out;
            off += len[r];
        }
    }
    us = (bench_now_s() - t) / s->iterations * 1e6;
out:
    EVP_AEAD_CTX_cleanup(&ctx);
    free(sealed);
    free(plain);
    free(len);
    return us;
}

struct drain {
    int fd;
    size_t want;
    int ok;
};

static void *drain_main(void *p)
{
    struct drain *d = p;
    uint8_t *b = malloc(RECV_CHUNK);
    size_t got = 0;
    while (b && got < d->want) {
        ssize_t r = recv(d->fd, b, RECV_CHUNK, 0);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    d->ok = got == d->want;
    free(b);
    return NULL;
}

/* A connected pair: a socketpair, or loopback TCP (Nagle off, as tern's). */
static int connected_pair(int tcp, int fd[2])
{
    if (!tcp)
        return socketpair(AF_UNIX, SOCK_STREAM, 0, fd) == 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    fd[0] = fd[1] = -1;
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(l, 1) != 0 ||
        getsockname(l, (struct sockaddr *)&a, &alen) != 0 ||
        (fd[0] = socket(AF_INET, SOCK_STREAM, 0)) < 0 ||
        connect(fd[0], (struct sockaddr *)&a, sizeof(a)) != 0 || (fd[1] = accept(l, NULL, NULL)) < 0) {
        if (l >= 0)
            close(l);
        if (fd[0] >= 0)
            close(fd[0]);
        return 0;
    }
    close(l);
    setsockopt(fd[0], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return 1;
}

static double transfer_us(const struct body_set *s, int tcp)
{
    int fd[2];
    if (!connected_pair(tcp, fd))
        return -1;
    struct drain d = {.fd = fd[1], .want = s->bytes * (size_t)s->iterations};
    pthread_t th;
    if (pthread_create(&th, NULL, drain_main, &d) != 0) {
        close(fd[0]);
        close(fd[1]);
        return -1;
    }
    double c = cpu_s();
    for (int i = 0; i < s->iterations; i++) {
        const uint8_t *p = s->pool + body_at(s, i);
        size_t off = 0;
        while (off < s->bytes) {
            ssize_t w = send(fd[0], p + off, s->bytes - off, MSG_NOSIGNAL);
            if (w <= 0)
                break;
            off += (size_t)w;
        }
        if (off < s->bytes)
            break;
    }
    shutdown(fd[0], SHUT_WR);   /* a send that failed must not leave the reader waiting */
    pthread_join(th, NULL);
    double us = (cpu_s() - c) / s->iterations * 1e6;
    close(fd[0]);
    close(fd[1]);
    return d.ok ? us : -1;
}

int main(int argc, char **argv)
{
    struct body_set s = {.iterations = ITERATIONS_DEFAULT, .bytes = BYTES_DEFAULT};
    int bytes = BYTES_DEFAULT;
    if (argc > 3 || (argc >= 2 && !config_parse_int(argv[1], 1, 10000000, &s.iterations)) ||
        (argc == 3 && !config_parse_int(argv[2], 1, BYTES_MAX, &bytes))) {
        fprintf(stderr, "usage: tern-byte-cost [ITERATIONS [BYTES]]\n");
        return 2;
    }
    s.bytes = (size_t)bytes;
    s.pool = malloc(BYTE_COST_POOL);
    s.dst = malloc(BYTE_COST_POOL);
    if (s.pool == NULL || s.dst == NULL) {
        fprintf(stderr, "tern-byte-cost: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < BYTE_COST_POOL; i++)   /* every page touched, text-like bytes */
        s.pool[i] = (uint8_t)('a' + i % 26);
    memset(s.dst, 0, BYTE_COST_POOL);
    double cold = memcpy_us(&s, 1), hot = memcpy_us(&s, 0);
    double seal = aead_us(&s, 0), open = aead_us(&s, 1);
    double unix_us = transfer_us(&s, 0), tcp_us = transfer_us(&s, 1);
    if (seal < 0 || open < 0 || unix_us < 0 || tcp_us < 0) {
        fprintf(stderr, "tern-byte-cost: a BoringSSL or socket call failed\n");
        return 1;
    }
    printf("memcpy_cold_us=%.2f memcpy_hot_us=%.2f seal_us=%.2f open_us=%.2f unix_us=%.2f tcp_us=%.2f\n",
           cold, hot, seal, open, unix_us, tcp_us);
    return 0;
}
