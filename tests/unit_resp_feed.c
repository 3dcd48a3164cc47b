/*
 * unit_resp_feed.c - engine/resp_feed.c: every reply of a stream comes out
 * once, in order and intact, whatever the receive sizes (bodies larger than
 * a slice, replies split across receives, sixty bodies in one receive);
 * a stop from the callback stops at once; a protocol error is reported.
 */
#include <stdlib.h>
#include <string.h>

#include "engine/resp_feed.h"
#include "tests/check.h"

#define NREPLIES 300

struct seen {
    int n;
    int bad;
    int stop_at;   /* 0: never */
};

/* Reply i is a bulk string of size_of(i) bytes, each byte (i + k) % 251,
 * except every seventh, an integer i. */
static size_t size_of(int i)
{
    static const size_t sizes[] = {0, 1, 5, 4096, 16383, 16384, 16385, 102400, 40000, 3};
    return sizes[i % 10];
}

static size_t put_reply(char *out, int i)
{
    if (i % 7 == 6)
        return (size_t)snprintf(out, 32, ":%d\r\n", i);
    size_t n = size_of(i);
    size_t h = (size_t)snprintf(out, 32, "$%zu\r\n", n);
    for (size_t k = 0; k < n; k++)
        out[h + k] = (char)((i + k) % 251);
    memcpy(out + h + n, "\r\n", 2);
    return h + n + 2;
}

static int check_reply(void *ctx, redisReply *r)
{
    struct seen *s = ctx;
    int i = s->n++;
    if (i % 7 == 6) {
        s->bad += r->type != REDIS_REPLY_INTEGER || r->integer != i;
    } else {
        size_t n = size_of(i);
        int ok = r->type == REDIS_REPLY_STRING && (size_t)r->len == n;
        for (size_t k = 0; ok && k < n; k++)
            ok = (unsigned char)r->str[k] == (i + k) % 251;
        s->bad += !ok;
    }
    return s->stop_at == 0 || s->n < s->stop_at;
}

static char *stream(size_t *len)
{
    char *b = malloc((size_t)NREPLIES * (102400 + 64));
    size_t n = 0;
    for (int i = 0; i < NREPLIES; i++)
        n += put_reply(b + n, i);
    *len = n;
    return b;
}

/* The same stream cut into receives of each size, from one byte (every
 * reply split) to far more than a slice. */
static void test_all_replies_in_order(void)
{
    size_t len;
    char *b = stream(&len);
    static const size_t recv_sizes[] = {1, 7, 1000, RESP_FEED_SLICE - 1, RESP_FEED_SLICE,
                                        RESP_FEED_SLICE + 1, 256 * 1024, 4 * 1024 * 1024};
    for (size_t t = 0; t < sizeof(recv_sizes) / sizeof(recv_sizes[0]); t++) {
        redisReader *rd = redisReaderCreate();
        rd->maxbuf = 0;
        struct seen s = {0};
        int rc = 1;
        for (size_t off = 0; off < len && rc == 1; off += recv_sizes[t]) {
            size_t n = len - off < recv_sizes[t] ? len - off : recv_sizes[t];
            rc = resp_feed(rd, b + off, n, check_reply, &s);
        }
        CHECK_INT(rc, 1);
        CHECK_INT(s.n, NREPLIES);
        CHECK_INT(s.bad, 0);
        redisReaderFree(rd);
    }
    free(b);
}

static void test_stop_from_callback(void)
{
    size_t len;
    char *b = stream(&len);
    redisReader *rd = redisReaderCreate();
    struct seen s = {.stop_at = 3};
    CHECK_INT(resp_feed(rd, b, len, check_reply, &s), 0);
    CHECK_INT(s.n, 3);   /* nothing handed over after the stop */
    CHECK_INT(s.bad, 0);
    redisReaderFree(rd);
    free(b);
}

static void test_protocol_error(void)
{
    static const char junk[] = "+OK\r\n!not resp\r\n";
    redisReader *rd = redisReaderCreate();
    struct seen s = {0};
    /* The reply before the junk is still delivered. */
    CHECK_INT(resp_feed(rd, junk, sizeof(junk) - 1, check_reply, &s), -1);
    CHECK_INT(s.n, 1);
    CHECK(rd->err != 0);
    redisReaderFree(rd);
}

int main(void)
{
    RUN(test_all_replies_in_order);
    RUN(test_stop_from_callback);
    RUN(test_protocol_error);
    return check_finish();
}
