/*
 * resp_cost.c - what handing Redis replies to hiredis's reader costs per
 * reply: one receive's worth of pipelined replies fed whole against
 * engine/resp_feed.c's RESP_FEED_SLICE slices. hiredis moves the unread
 * rest of its buffer after each reply taken out, so fed whole the cost
 * grows with the receive size. A third figure, `engine_ns`, is the engine's
 * own reader: resp_feed with a pool reader (engine/resp_pool.h), which also
 * takes bodies of RESP_SPLICE_MIN_TAKE or more out of the stream
 * (engine/resp_splice.h; the engine's receives straight into a body are
 * not counted here). Two shapes: `fields`, what the engine
 * reads after a take (queue_cmd_take_data's HMGET: an array of six short
 * fields and the body), and `bulk`, a body alone (an HGET, as before).
 *
 *   build/tern-resp-cost [ROUNDS]     (default 300)
 *   shape=fields body=4096 recv=262144 slice=S whole_ns=N sliced_ns=N engine_ns=N
 *                                    (per reply; one line per shape and size)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/resp_feed.h"
#include "engine/resp_pool.h"
#include "bench/bench_clock.h"

#define RECV_BYTES (256 * 1024)   /* the engine's Redis receive (REDIS_RECV_SIZE) */
#define ROUNDS_DEFAULT 300
#define RUNS 5

/* The fields before the body in a `fields` reply, as Redis writes them. */
#define FIELDS_HEAD "*7\r\n$11\r\ns@x.example\r\n$14\r\nu17@d3.example\r\n$10\r\nd3.example\r\n" \
                    "$1\r\n0\r\n$13\r\n1764000000000\r\n$-1\r\n"

/* As many replies of the shape (fields: 1, bulk: 0) as fit RECV_BYTES;
 * returns the count. */
static size_t fill(char *b, size_t body, int fields, size_t *len)
{
    size_t n = 0, off = 0;
    for (;;) {
        char head[160];
        int h = snprintf(head, sizeof(head), "%s$%zu\r\n", fields ? FIELDS_HEAD : "", body);
        if (off + (size_t)h + body + 2 > RECV_BYTES)
            break;
        memcpy(b + off, head, (size_t)h);
        memset(b + off + h, 'x', body);
        memcpy(b + off + h + body, "\r\n", 2);
        off += (size_t)h + body + 2;
        n++;
    }
    *len = off;
    return n;
}

static int count_reply(void *ctx, redisReply *r)
{
    (void)r;
    (*(size_t *)ctx)++;
    return 1;
}

enum how { WHOLE, SLICED, ENGINE };

/* ns per reply over rounds receives: fed whole to a plain reader, through
 * resp_feed to a plain reader, or through resp_feed to a pool reader. */
static double run(const char *b, size_t len, size_t per, int rounds, enum how how)
{
    redisReader *rd = how == ENGINE ? resp_pool_reader_new() : redisReaderCreate();
    rd->maxbuf = 0;   /* as the engine keeps it */
    size_t got = 0;
    double t = (bench_now_s() * 1e9);
    for (int i = 0; i < rounds; i++) {
        if (how != WHOLE) {
            resp_feed(rd, b, len, count_reply, &got);
            continue;
        }
        redisReaderFeed(rd, b, len);
        void *r;
        while (redisReaderGetReply(rd, &r) == REDIS_OK && r != NULL) {
            freeReplyObject(r);
            got++;
        }
    }
    t = (bench_now_s() * 1e9) - t;
    if (how == ENGINE)
        resp_pool_reader_free(rd);
    else
        redisReaderFree(rd);
    if (got != per * (size_t)rounds)
        fprintf(stderr, "tern-resp-cost: %zu replies, expected %zu\n", got, per * (size_t)rounds);
    return t / (double)got;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : ROUNDS_DEFAULT;
    if (rounds < 1)
        rounds = ROUNDS_DEFAULT;
    static const size_t bodies[] = {1024, 4096, 102400};
    char *b = malloc(RECV_BYTES);
    if (b == NULL)
        return 1;
    for (int fields = 1; fields >= 0; fields--) {
    for (size_t k = 0; k < sizeof(bodies) / sizeof(bodies[0]); k++) {
        size_t len, per = fill(b, bodies[k], fields, &len);
        double whole[RUNS], sliced[RUNS], engine[RUNS];
        for (int i = 0; i < RUNS; i++) {   /* interleaved; medians */
            whole[i] = run(b, len, per, rounds, WHOLE);
            sliced[i] = run(b, len, per, rounds, SLICED);
            engine[i] = run(b, len, per, rounds, ENGINE);
        }
        qsort(whole, RUNS, sizeof(double), cmp);
        qsort(sliced, RUNS, sizeof(double), cmp);
        qsort(engine, RUNS, sizeof(double), cmp);
        printf("shape=%s body=%zu recv=%d slice=%d whole_ns=%.0f sliced_ns=%.0f engine_ns=%.0f\n",
               fields ? "fields" : "bulk", bodies[k], RECV_BYTES, RESP_FEED_SLICE, whole[RUNS / 2],
               sliced[RUNS / 2], engine[RUNS / 2]);
    }
    }
    free(b);
    return 0;
}
