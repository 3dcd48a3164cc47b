/*
 * inject.c - tern-bench-inject: the benchmark's injector. It enqueues
 * synthetic mail into a tern queue like `tern inject --generate`, and adds
 * what the benchmark workloads need on top: many recipients per message,
 * any number of destination domains, and a fixed enqueue rate.
 *
 * SYNOPSIS
 *   tern-bench-inject -c FILE --messages N [--domains D] [--size BYTES]
 *                     [--rcpts R] [--rate MSGS_PER_S]
 *
 * DESCRIPTION
 *   Enqueues N messages (queue_cmd_enqueue: the HSETNX of the body and the
 *   same Lua script as every producer) of about BYTES bytes (default 4096) into the Redis queue of
 *   the tern configuration FILE, round robin over the D domains
 *   bench1.test ... benchD.test (default 100), each message to R
 *   recipients user0..user<R-1> of its domain (default 1: one queue entry
 *   per message either way).
 *   Without --rate, enqueues go out pipelined in windows of
 *   INJ_WINDOW_MSGS messages. With --rate the injector paces itself: it keeps the
 *   number enqueued at rate x elapsed time, sending what is due about
 *   every millisecond (each message's `created` is the time its batch
 *   left), so that latency measured from `created` is that of a steady
 *   arrival stream, not of a queue filled in advance.
 *   Prints one line at the end:
 *     enqueued=N seconds=S rate=R
 *   Exits 0 when all N were enqueued, 1 on a Redis error (why on stderr,
 *   some may have been stored), 2 on bad usage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "engine/buf.h"
#include "engine/config.h"
#include "queue/queue.h"

#define INJ_WINDOW_MSGS    512
#define INJ_MESSAGES_MAX   100000000L
#define INJ_DOMAINS_MAX    1000000L
#define INJ_RCPTS_MAX      QUEUE_RCPTS_MAX
#define INJ_RATE_MAX       10000000L
#define INJ_SIZE_MIN       64
#define INJ_LINE_LEN       76
#define INJ_TICK_NS        1000000L       /* pacing granularity: 1 ms */
#define INJ_FROM           "bench@tern.test"
#define INJ_DOMAIN_MAX     64

struct inj_opts {
    const char *config;
    long messages, domains, rcpts, rate, size;
};

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int parse_opts(int argc, char **argv, struct inj_opts *o)
{
    *o = (struct inj_opts){.domains = 100, .rcpts = 1, .size = 4096};
    int n;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) {
            fprintf(stderr, "tern-bench-inject: %s needs a value\n", a);
            return 0;
        }
        const char *v = argv[++i];
        if (strcmp(a, "-c") == 0) o->config = v;
        else if (strcmp(a, "--messages") == 0 && config_parse_int(v, 1, INJ_MESSAGES_MAX, &n)) o->messages = n;
        else if (strcmp(a, "--domains") == 0 && config_parse_int(v, 1, INJ_DOMAINS_MAX, &n)) o->domains = n;
        else if (strcmp(a, "--rcpts") == 0 && config_parse_int(v, 1, INJ_RCPTS_MAX, &n)) o->rcpts = n;
        else if (strcmp(a, "--rate") == 0 && config_parse_int(v, 1, INJ_RATE_MAX, &n)) o->rate = n;
        else if (strcmp(a, "--size") == 0 && config_parse_int(v, INJ_SIZE_MIN, INT32_MAX, &n)) o->size = n;
        else {
            fprintf(stderr, "tern-bench-inject: bad option or value: %s %s\n", a, v);
            return 0;
        }
    }
    if (o->config == NULL || o->messages == 0) {
        fprintf(stderr, "usage: tern-bench-inject -c FILE --messages N [--domains D] [--size BYTES]\n"
                        "                         [--rcpts R] [--rate MSGS_PER_S]\n");
        return 0;
    }
    return 1;
}

/* The body (printable lines that differ, so nothing in the path can
 * flatter the numbers by compressing) sized so that the message with its
 * headers comes to about `size` bytes. */
static void make_body(struct buf *b, long size)
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    size_t want = size > 240 ? (size_t)size - 240 : INJ_LINE_LEN + 2;
    for (size_t l = 0; l == 0 || (l + 1) * (INJ_LINE_LEN + 2) <= want; l++) {
        uint8_t *d = buf_reserve(b, INJ_LINE_LEN + 2);
        if (d == NULL)
            return;
        for (size_t i = 0; i < INJ_LINE_LEN; i++)
            d[i] = (uint8_t)alphabet[(l + i) % (sizeof(alphabet) - 1)];
        d[INJ_LINE_LEN] = '\r';
        d[INJ_LINE_LEN + 1] = '\n';
        buf_commit(b, INJ_LINE_LEN + 2);
    }
}

/* Append message i's enqueue command to the batch. */
static int add_message(struct queue_batch *bt, const struct queue_conn *q, const struct inj_opts *o,
                       long i, const struct buf *body, struct buf *msg, char (*rcpt)[QUEUE_ADDR_MAX + 1],
                       const char **rp, int64_t now)
{
    char dom[INJ_DOMAIN_MAX], id[QUEUE_ID_MAX], hdr[512];
    snprintf(dom, sizeof(dom), "bench%ld.test", i % o->domains + 1);
    for (long r = 0; r < o->rcpts; r++) {
        snprintf(rcpt[r], QUEUE_ADDR_MAX + 1, "user%ld@%s", r, dom);
        rp[r] = rcpt[r];
    }
    queue_new_id(id);
    int k = snprintf(hdr, sizeof(hdr),
                     "From: <" INJ_FROM ">\r\nTo: <%s>\r\nSubject: tern benchmark message %ld\r\n"
                     "Message-ID: <%s@tern.test>\r\n\r\n",
                     rcpt[0], i, id);
    buf_reset(msg);
    buf_append(msg, hdr, (size_t)k);
    buf_append(msg, buf_peek(body), buf_used(body));
    if (msg->err || !queue_cmd_enqueue(&bt->cmds, &q->qc, &q->scripts, id, INJ_FROM, rp,
                                       (size_t)o->rcpts, dom, buf_peek(msg), buf_used(msg), now))
        return 0;
    /* One unit per enqueue, sent to its partition's node (a cluster's). */
    return queue_batch_add(bt, queue_partition_of(&q->qc, dom, strlen(dom)), QUEUE_ENQUEUE_CMDS);
}

/* Send the batch (queue_batch_run: each enqueue to its partition's
 * node, all nodes' commands written before the replies are read), check
 * every reply. Returns 1, or 0 with err set. */
static int flush(struct queue_conn *q, struct queue_batch *bt, char *err, size_t errlen)
{
    int ok = queue_batch_run(q, bt, err, errlen);
    for (size_t i = 0; ok && i < bt->n; i++) {
        const redisReply *r[QUEUE_ENQUEUE_CMDS];
        for (size_t k = 0; k < QUEUE_ENQUEUE_CMDS; k++)
            r[k] = queue_batch_reply(bt, i, k);
        const char *why, *text;
        int wrote;
        if (!queue_parse_enqueue(r, &wrote, &why, &text)) {
            snprintf(err, errlen, "enqueue: %s %s", why, text);
            ok = 0;
        }
    }
    queue_batch_reset(bt);
    return ok;
}

/* Sleep until the next tick (pacing only). */
static void tick(void)
{
    struct timespec ts = {0, INJ_TICK_NS};
    nanosleep(&ts, NULL);
}

int main(int argc, char **argv)
{
    struct inj_opts o;
    if (!parse_opts(argc, argv, &o))
        return 2;
    static struct tern_config cfg;
    char err[512];
    if (!config_load(&cfg, o.config, err, sizeof(err))) {
        fprintf(stderr, "tern-bench-inject: %s\n", err);
        return 2;
    }
    if (o.size > cfg.queue.max_message_size) {
        fprintf(stderr, "tern-bench-inject: --size exceeds max_message_size\n");
        return 2;
    }
    struct queue_conn q;
    if (!queue_open(&q, &cfg.queue, cfg.redis, err, sizeof(err))) {
        fprintf(stderr, "tern-bench-inject: %s\n", err);
        return 1;
    }
    char (*rcpt)[QUEUE_ADDR_MAX + 1] = calloc((size_t)o.rcpts, sizeof(*rcpt));
    const char **rp = calloc((size_t)o.rcpts, sizeof(*rp));
    struct queue_batch *bt = calloc(1, sizeof(*bt));
    struct buf body, msg;
    buf_init(&body, 0);
    buf_init(&msg, 0);
    make_body(&body, o.size);
    if (rcpt == NULL || rp == NULL || bt == NULL || body.err) {
        fprintf(stderr, "tern-bench-inject: out of memory\n");
        return 1;
    }
    queue_batch_init(bt);

    int rc = 0;
    long done = 0;
    double t0 = mono_s();
    while (done < o.messages && rc == 0) {
        long due = o.messages;
        if (o.rate) {
            due = (long)((mono_s() - t0) * (double)o.rate) + 1;
            if (due > o.messages)
                due = o.messages;
            if (due <= done) {
                tick();
                continue;
            }
        }
        int64_t now = wall_ms();
        while (done < due && bt->n < INJ_WINDOW_MSGS) {
            if (!add_message(bt, &q, &o, done, &body, &msg, rcpt, rp, now)) {
                snprintf(err, sizeof(err), "building message %ld failed", done);
                rc = 1;
                break;
            }
            done++;
        }
        if (rc == 0 && !flush(&q, bt, err, sizeof(err)))
            rc = 1;
    }
    double dt = mono_s() - t0;
    if (rc)
        fprintf(stderr, "tern-bench-inject: %s\n", err);
    printf("enqueued=%ld seconds=%.3f rate=%.0f\n", rc ? 0 : done, dt, dt > 0 ? (double)done / dt : 0.0);
    queue_close(&q);
    queue_batch_free(bt);
    buf_free(&body);
    buf_free(&msg);
    free(bt);
    free(rp);
    free(rcpt);
    return rc;
}
