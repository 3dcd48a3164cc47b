/*
 * resp_cost.c - what handing Redis replies to hiredis's reader costs per
 * reply: one receive's worth of pipelined HGET replies (the bodies after a
 * take) fed whole, as the engine did, against engine/resp_feed.c's
 * RESP_FEED_SLICE slices. hiredis moves the unread rest of its buffer after
 * each reply taken out, so fed whole the cost grows with the receive size.
 *
 *   build/tern-resp-cost [ROUNDS]     (default 300)
 *   body=4096 recv=262144 whole_ns=N sliced_ns=N      (per reply; one line per size)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/resp_feed.h"
#include "bench/bench_clock.h"

#define RECV_BYTES (256 * 1024)   /* the engine's Redis receive (REDIS_RECV_SIZE) */
#define ROUNDS_DEFAULT 300
#define RUNS 5

/* As many "$<n>\r\n<body>\r\n" replies as fit RECV_BYTES; returns the count. */
static size_t fill(char *b, size_t body, size_t *len)
{
    size_t n = 0, off = 0;
    for (;;) {
        char head[32];
        int h = snprintf(head, sizeof(head), "$%zu\r\n", body);
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

/* ns per reply over rounds receives; sliced: through resp_feed. */
static double run(const char *b, size_t len, size_t per, int rounds, int sliced)
{
    redisReader *rd = redisReaderCreate();
    rd->maxbuf = 0;   /* as the engine keeps it */
    size_t got = 0;
    double t = (bench_now_s() * 1e9);
    for (int i = 0; i < rounds; i++) {
        if (sliced) {
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
    for (size_t k = 0; k < sizeof(bodies) / sizeof(bodies[0]); k++) {
        size_t len, per = fill(b, bodies[k], &len);
        double whole[RUNS], sliced[RUNS];
        for (int i = 0; i < RUNS; i++) {   /* interleaved; medians */
            whole[i] = run(b, len, per, rounds, 0);
            sliced[i] = run(b, len, per, rounds, 1);
        }
        qsort(whole, RUNS, sizeof(double), cmp);
        qsort(sliced, RUNS, sizeof(double), cmp);
        printf("body=%zu recv=%d whole_ns=%.0f sliced_ns=%.0f\n", bodies[k], RECV_BYTES, whole[RUNS / 2],
               sliced[RUNS / 2]);
    }
    free(b);
    return 0;
}
