/*
 * redis_cost.c - what each step of a delivery costs Redis's main thread
 * per message, with the engine's own command builders and scripts: the
 * take (pop, lease, body size), the HMGET of fields and body, and the ack,
 * once with the event fields a delivered TLS message carries and once
 * without, so the event's share shows; and the Redis memory one such event
 * takes in its stream (MEMORY USAGE over XLEN of fresh streams), for
 * sizing events_maxlen. Run it through bench/redis_cost.sh,
 * which starts a private redis-server: the tool enqueues its own messages
 * and leaves the queue empty, but it is not meant for a Redis in use.
 * A standalone Redis only: it refuses a Redis Cluster node (exit 2).
 *
 *   build/tern-redis-cost REDIS_ADDR [--messages N] [--size BYTES] [--rounds R]
 *   take_us=N hmget_us=N ack_us=N ack_no_event_us=N event_us=N total_us=N event_bytes=N
 *
 * Figures are Redis's main-thread CPU (INFO cpu: used_cpu_user_main_thread
 * + used_cpu_sys_main_thread) per message, medians over the rounds. Takes
 * of up to 256 messages and acks of 128 outcomes, as the engine's defaults
 * (`batch`, ACK_FLUSH_MIN); the HMGETs pipelined 256 at a time.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "queue/queue.h"

#define TAKE_BATCH 256
#define ACK_BATCH  128
#define ROUNDS_MAX 20

/* The fields of a delivered message's event as the engine writes them
 * (engine/worker_outcome.c): 16 pairs. */
static const char *const event_fields[] = {
    "reply", "250 2.0.0 Ok: queued as 4F2A1C0B7E", "esc", "2.0.0",
    "delivered", "user17@d3.example", "mx", "mx.d3.example:25", "ip", "127.0.0.1",
    "domain", "d3.example", "policy", "encrypt", "tier", "preferred",
    "tls", "TLSv1.3", "cipher", "TLS_AES_128_GCM_SHA256", "group", "X25519",
    "verified", "not checked", "verify", "not checked: policy encrypt",
    "resumed", "yes", "attempt", "1", "conn_msgs", "42",
};

static double redis_cpu(redisContext *rc)
{
    redisReply *r = redisCommand(rc, "INFO cpu");
    double user = -1, sys = -1;
    if (r && r->type == REDIS_REPLY_STRING) {
        const char *u = strstr(r->str, "used_cpu_user_main_thread:");
        const char *s = strstr(r->str, "used_cpu_sys_main_thread:");
        if (u && s) {
            user = strtod(u + strlen("used_cpu_user_main_thread:"), NULL);
            sys = strtod(s + strlen("used_cpu_sys_main_thread:"), NULL);
        }
    }
    freeReplyObject(r);
    return user < 0 || sys < 0 ? -1 : user + sys;
}

/* send_buf hands the RESP commands in b to hiredis and reads n replies,
 * passing each to on_reply (which may keep it: it frees it or not). */
static int send_buf(redisContext *rc, struct buf *b, size_t n,
                    int (*on_reply)(void *ctx, redisReply *r), void *ctx)
{
    if (b->err || redisAppendFormattedCommand(rc, (const char *)buf_peek(b), buf_used(b)) != REDIS_OK)
        return 0;
    buf_reset(b);
    for (size_t i = 0; i < n; i++) {
        void *r = NULL;
        if (redisGetReply(rc, &r) != REDIS_OK || r == NULL)
            return 0;
        if (!on_reply(ctx, r))
            return 0;
    }
    return 1;
}

struct taken {
    struct queue_msg **m;
    size_t n, cap;
    int partition;
};

static int on_take(void *ctx, redisReply *r)
{
    struct taken *t = ctx;
    struct queue_msg **msgs = NULL;
    size_t n = 0;
    long long left;
    const char *err = NULL;
    int ok = queue_parse_take(r, t->partition, &msgs, &n, &left, &err);
    freeReplyObject(r);
    if (!ok) {
        fprintf(stderr, "tern-redis-cost: take: %s\n", err);
        return 0;
    }
    if (t->n + n > t->cap) {
        size_t cap = (t->n + n) * 2;
        struct queue_msg **g = realloc(t->m, cap * sizeof(*g));
        if (g == NULL)
            return 0;
        t->m = g;
        t->cap = cap;
    }
    memcpy(t->m + t->n, msgs, n * sizeof(*msgs));
    t->n += n;
    free(msgs);
    return 1;
}

struct fetch {
    struct queue_msg **m;
    size_t at;
};

static int on_fetch(void *ctx, redisReply *r)
{
    struct fetch *f = ctx;
    const char *err = NULL;
    int ok = queue_take_data(r, &f->m[f->at], &err) && f->m[f->at]->bad == NULL;
    if (!ok)
        fprintf(stderr, "tern-redis-cost: read %s: %s\n", f->m[f->at]->id, err ? err : "malformed");
    f->at++;
    freeReplyObject(r);
    return ok;
}

static int on_simple(void *ctx, redisReply *r)
{
    (void)ctx;
    const char *err = NULL;
    int ok = queue_parse_simple(r, &err);
    if (!ok)
        fprintf(stderr, "tern-redis-cost: %s\n", err);
    freeReplyObject(r);
    return ok;
}

/* One round: enqueue n, then time each step; us per message into out[3]
 * (take, hmget, ack); with_events 0 acks without event fields. */
static int round_once(struct queue_conn *q, long n, size_t size, int with_events, double out[3])
{
    static const char *const domains[] = {"d1.example", "d2.example", "d3.example", "d4.example"};
    char err[256];
    if (queue_generate(q, n, domains, 4, size, err, sizeof(err)) != n) {
        fprintf(stderr, "tern-redis-cost: enqueue: %s\n", err);
        return 0;
    }
    struct buf b;
    buf_init(&b, 0);
    int ok = 1;
    struct taken all = {0};
    int64_t now_ms = (int64_t)time(NULL) * 1000;
    double t0 = redis_cpu(q->rc);
    for (int p = 0; ok && p < q->qc.partitions; p++) {
        size_t before;
        do {
            before = all.n;
            all.partition = p;
            ok = queue_cmd_take(&b, &q->qc, &q->scripts, p, TAKE_BATCH, now_ms, 0) &&
                 send_buf(q->rc, &b, 1, on_take, &all);
        } while (ok && all.n - before == TAKE_BATCH);
    }
    double t1 = redis_cpu(q->rc);
    struct fetch f = {all.m, 0};
    for (size_t i = 0; ok && i < all.n; i += TAKE_BATCH) {
        size_t k = all.n - i < TAKE_BATCH ? all.n - i : TAKE_BATCH;
        for (size_t j = 0; j < k; j++)
            ok = ok && queue_cmd_take_data(&b, &q->qc, all.m[i + j]);
        ok = ok && send_buf(q->rc, &b, k, on_fetch, &f);
    }
    double t2 = redis_cpu(q->rc);
    struct queue_outcome o[ACK_BATCH];
    size_t nf = with_events ? sizeof(event_fields) / sizeof(event_fields[0]) : 0;
    /* Acks go per partition, as the engine batches them. */
    for (int p = 0; ok && p < q->qc.partitions; p++) {
        size_t no = 0;
        for (size_t i = 0; ok && i <= all.n; i++) {
            if (i < all.n && all.m[i]->partition == p)
                o[no++] = (struct queue_outcome){.id = all.m[i]->id, .kind = QUEUE_DELIVERED,
                                                 .fields = event_fields, .nfields = nf,
                                                 .lease_until_ms = all.m[i]->lease_until_ms};
            if (no == ACK_BATCH || (i == all.n && no > 0)) {
                ok = queue_cmd_ack(&b, &q->qc, &q->scripts, p, o, no, now_ms) &&
                     send_buf(q->rc, &b, 1, on_simple, NULL);
                no = 0;
            }
        }
    }
    double t3 = redis_cpu(q->rc);
    if (ok && all.n != (size_t)n) {
        fprintf(stderr, "tern-redis-cost: took %zu of %ld messages\n", all.n, n);
        ok = 0;
    }
    for (size_t i = 0; i < all.n; i++)
        queue_msg_free(all.m[i]);
    free(all.m);
    buf_free(&b);
    if (!ok || t0 < 0 || t3 < 0)
        return 0;
    out[0] = (t1 - t0) * 1e6 / (double)n;
    out[1] = (t2 - t1) * 1e6 / (double)n;
    out[2] = (t3 - t2) * 1e6 / (double)n;
    return 1;
}

/* event_bytes: Redis memory per event entry of a delivered TLS message
 * (the fields above), from fresh streams: MEMORY USAGE of every
 * partition's events stream over its length. -1 on failure. */
static double event_bytes(struct queue_conn *q, long n, size_t size)
{
    char key[QUEUE_PREFIX_MAX + 32];
    for (int p = 0; p < q->qc.partitions; p++) {
        if (queue_key(key, sizeof(key), &q->qc, p, "events") == 0)
            return -1;
        freeReplyObject(redisCommand(q->rc, "DEL %s", key));
    }
    double unused[3];
    if (!round_once(q, n, size, 1, unused))
        return -1;
    long long bytes = 0, entries = 0;
    for (int p = 0; p < q->qc.partitions; p++) {
        queue_key(key, sizeof(key), &q->qc, p, "events");
        redisReply *m = redisCommand(q->rc, "MEMORY USAGE %s SAMPLES 0", key);
        redisReply *l = redisCommand(q->rc, "XLEN %s", key);
        if (m && m->type == REDIS_REPLY_INTEGER && l && l->type == REDIS_REPLY_INTEGER) {
            bytes += m->integer;
            entries += l->integer;
        }
        freeReplyObject(m);
        freeReplyObject(l);
    }
    return entries ? (double)bytes / (double)entries : -1;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp);
    return v[n / 2];
}

int main(int argc, char **argv)
{
    long n = 40000;
    long size = 4096;
    int rounds = 5;
    const char *addr = NULL;
    int bad = 0;
    for (int i = 1; i < argc && !bad; i++) {
        if (strcmp(argv[i], "--messages") == 0 && i + 1 < argc)
            n = atol(argv[++i]);
        else if (strcmp(argv[i], "--size") == 0 && i + 1 < argc)
            size = atol(argv[++i]);
        else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (addr == NULL && argv[i][0] != '-')
            addr = argv[i];
        else
            bad = 1;
    }
    if (bad || addr == NULL || n < 1 || size < 1 || rounds < 1 || rounds > ROUNDS_MAX) {
        fprintf(stderr, "usage: tern-redis-cost REDIS_ADDR [--messages N] [--size BYTES] [--rounds 1..%d]\n"
                        "       (REDIS_ADDR: a standalone Redis, not a Redis Cluster)\n",
                ROUNDS_MAX);
        return 2;
    }
    struct queue_config qc;
    queue_config_defaults(&qc);
    qc.events_queued = 0;   /* the enqueue is not measured here */
    struct queue_conn q;
    char err[256];
    if (!queue_open(&q, &qc, addr, err, sizeof(err))) {
        fprintf(stderr, "tern-redis-cost: %s\n", err);
        return 1;
    }
    if (q.map != NULL) {
        /* It measures one server's CPU (INFO cpu) and sends every
         * partition's commands over one connection: a cluster would
         * answer MOVED, and its CPU is spread over nodes. */
        fprintf(stderr, "tern-redis-cost: %s is a Redis Cluster node; give a standalone Redis\n",
                addr);
        queue_close(&q);
        return 2;
    }
    double take[ROUNDS_MAX], hmget[ROUNDS_MAX], ack[ROUNDS_MAX], ack0[ROUNDS_MAX];
    for (int r = 0; r < rounds; r++) {   /* with and without events, alternating */
        double a[3], b[3];
        if (!round_once(&q, n, (size_t)size, 1, a) || !round_once(&q, n, (size_t)size, 0, b)) {
            queue_close(&q);
            return 1;
        }
        take[r] = (a[0] + b[0]) / 2;
        hmget[r] = (a[1] + b[1]) / 2;
        ack[r] = a[2];
        ack0[r] = b[2];
    }
    double eb = event_bytes(&q, n, (size_t)size);
    queue_close(&q);
    double t = median(take, rounds), h = median(hmget, rounds);
    double a = median(ack, rounds), a0 = median(ack0, rounds);
    printf("take_us=%.2f hmget_us=%.2f ack_us=%.2f ack_no_event_us=%.2f event_us=%.2f total_us=%.2f "
           "event_bytes=%.0f\n",
           t, h, a, a0, a - a0, t + h + a, eb);
    return 0;
}
