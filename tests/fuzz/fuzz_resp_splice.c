/*
 * fuzz_resp_splice.c - libFuzzer target for engine/resp_splice.c.
 *
 * The first input byte picks the take threshold (1..64 bytes, so that
 * short inputs take strings too) and the receive sizes; the rest is the
 * stream, fed in pieces. Every event is written back out, a taken string
 * as "$<len>\r\n<payload>\r\n": what comes out must be exactly the input
 * bytes consumed so far (a prefix of the input; all of it when the scanner
 * ends at an item boundary), whether the scanner accepts the input or
 * stops on an error. Then the same stream goes through a pool reader with
 * resp_feed (crashes, leaks and undefined behaviour are what ASan/UBSan
 * look for there).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/resp_feed.h"
#include "engine/resp_pool.h"
#include "engine/resp_splice.h"

struct echo {
    uint8_t *out;
    size_t len, cap;
};

static void echo_put(struct echo *e, const void *p, size_t n)
{
    if (e->len + n > e->cap)
        abort();   /* more out than went in */
    memcpy(e->out + e->len, p, n);
    e->len += n;
}

static int echo_pass(void *ctx, const char *p, size_t n)
{
    echo_put(ctx, p, n);
    return 1;
}

static int echo_took(void *ctx, char *payload, size_t len)
{
    char head[32];
    int h = snprintf(head, sizeof(head), "$%zu\r\n", len);
    if (payload[len] != '\0')
        abort();
    echo_put(ctx, head, (size_t)h);
    echo_put(ctx, payload, len);
    echo_put(ctx, "\r\n", 2);
    free(payload);
    return 1;
}

static int drop_reply(void *ctx, redisReply *r)
{
    (void)ctx;
    (void)r;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t min_take = 1 + (data[0] & 63);
    size_t step = 1 + (data[0] >> 6) * 5;   /* 1, 6, 11, 16 */
    const char *in = (const char *)data + 1;
    size_t n = size - 1;

    struct resp_splice s;
    resp_splice_init(&s, min_take);
    struct echo e = {malloc(n + 1), 0, n};
    const struct resp_splice_sink sink = {echo_pass, echo_took, &e};
    size_t off = 0;
    int rc = 1;
    while (off < n && rc == 1) {
        size_t k = n - off < step ? n - off : step;
        rc = resp_splice_feed(&s, in + off, k, &sink);
        off += k;
    }
    if (e.len > off || memcmp(e.out, in, e.len) != 0)
        abort();
    if (rc == 1 && s.state == RESP_SPLICE_ITEM && e.len != n)
        abort();
    resp_splice_reset(&s);
    free(e.out);

    redisReader *rd = resp_pool_reader_new();
    if (rd == NULL)
        return 0;
    for (off = 0, rc = 1; off < n && rc == 1; off += step) {
        size_t k = n - off < step ? n - off : step;
        rc = resp_feed(rd, in + off, k, drop_reply, NULL);
    }
    resp_pool_reader_free(rd);
    return 0;
}
