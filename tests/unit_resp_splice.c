/*
 * unit_resp_splice.c - engine/resp_splice.c and its use by resp_feed:
 *   - the scanner passes a stream on byte for byte except the long bulk
 *     strings, which it hands over whole, whatever the receive sizes
 *     (random streams, every item kind, cuts anywhere, lines split);
 *   - a pool reader fed through resp_feed gives the same replies as a
 *     plain hiredis reader, also when receives write straight into the
 *     string being taken (resp_feed_direct);
 *   - malformed length lines, arrays longer than RESP_SPLICE_ARRAY_MAX and
 *     a taken payload without its CRLF are errors; a stop from a callback
 *     stops; a reset frees a partial take.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/buf.h"
#include "engine/resp_feed.h"
#include "engine/resp_pool.h"
#include "engine/resp_splice.h"
#include "tests/check.h"

static uint64_t rng = 88172645463325252ULL;

static uint32_t rnd(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return n ? (uint32_t)(rng % n) : 0;
}

/* A random stream: `in` the RESP bytes, `want` what the scanner must pass
 * on given min_take (a taken bulk string replaced by nothing), `taken` the
 * taken payloads in order, each followed by its length in `lens`. */
struct gen {
    struct buf in, want, taken;
    size_t lens[4096];
    size_t ntaken;
    size_t min_take;
};

static void put(struct gen *g, const char *s, size_t n, int to_want)
{
    buf_append(&g->in, s, n);
    if (to_want)
        buf_append(&g->want, s, n);
}

static void gen_item(struct gen *g, int depth)
{
    char line[64];
    int n;
    switch (rnd(depth < 3 ? 7 : 6)) {
    case 0:
        put(g, "+OK\r\n", 5, 1);
        break;
    case 1:
        put(g, "-ERR no such key\r\n", 18, 1);
        break;
    case 2:
        n = snprintf(line, sizeof(line), ":%d\r\n", (int)rnd(100000) - 50000);
        put(g, line, (size_t)n, 1);
        break;
    case 3:
        put(g, "$-1\r\n", 5, 1);
        break;
    case 4:
    case 5: {
        /* Sizes around the take threshold and the direct minimum. */
        static const size_t sizes[] = {0, 1, 3, 100, 4095, 4096, 4097, 9000, 16383, 16384, 16385, 40000, 102400};
        size_t len = sizes[rnd(sizeof(sizes) / sizeof(sizes[0]))];
        int take = len >= g->min_take && g->ntaken < sizeof(g->lens) / sizeof(g->lens[0]);
        n = snprintf(line, sizeof(line), "$%zu\r\n", len);
        put(g, line, (size_t)n, !take);
        uint8_t *payload = buf_reserve(&g->in, len + 1);
        for (size_t k = 0; k < len; k++)
            payload[k] = (uint8_t)rnd(256);
        buf_commit(&g->in, len);
        if (take) {
            buf_append(&g->taken, payload, len);
            g->lens[g->ntaken++] = len;
        } else {
            buf_append(&g->want, payload, len);
        }
        put(g, "\r\n", 2, !take);
        break;
    }
    default: {
        int k = (int)rnd(9);
        n = snprintf(line, sizeof(line), "*%d\r\n", k == 8 ? -1 : k);
        put(g, line, (size_t)n, 1);
        for (int i = 0; i < k && k != 8; i++)
            gen_item(g, depth + 1);
        break;
    }
    }
}

static void gen_stream(struct gen *g, size_t min_take, int items)
{
    memset(g, 0, sizeof(*g));
    g->min_take = min_take;
    for (int i = 0; i < items; i++)
        gen_item(g, 0);
}

static void gen_free(struct gen *g)
{
    buf_free(&g->in);
    buf_free(&g->want);
    buf_free(&g->taken);
}

struct out {
    struct buf passed, taken;
    size_t lens[4096];
    size_t ntaken;
    int stop_after_took;   /* 0: never */
};

static int on_pass(void *ctx, const char *p, size_t n)
{
    struct out *o = ctx;
    buf_append(&o->passed, p, n);
    return 1;
}

static int on_took(void *ctx, char *payload, size_t len)
{
    struct out *o = ctx;
    int ok = payload[len] == '\0';
    buf_append(&o->taken, payload, len);
    if (o->ntaken < sizeof(o->lens) / sizeof(o->lens[0]))
        o->lens[o->ntaken++] = ok ? len : (size_t)-1;
    free(payload);
    return o->stop_after_took == 0 || (int)o->ntaken < o->stop_after_took;
}

/* The scanner alone, thresholds from 1 byte up, random cuts. */
static void test_scanner_random_streams(void)
{
    static const size_t min_takes[] = {1, 4096, RESP_SPLICE_MIN_TAKE};
    for (int round = 0; round < 60; round++) {
        struct gen g;
        gen_stream(&g, min_takes[round % 3], 40);
        struct resp_splice s;
        resp_splice_init(&s, g.min_take);
        struct out o = {0};
        const struct resp_splice_sink sink = {on_pass, on_took, &o};
        size_t len = buf_used(&g.in), off = 0;
        int rc = 1;
        while (off < len && rc == 1) {
            size_t max = round % 4 == 0 ? 1 : round % 4 == 1 ? 7 : 70000;
            size_t n = 1 + rnd((uint32_t)max);
            if (n > len - off)
                n = len - off;
            rc = resp_splice_feed(&s, (const char *)buf_peek(&g.in) + off, n, &sink);
            off += n;
        }
        CHECK_INT(rc, 1);
        CHECK_INT(s.state, RESP_SPLICE_ITEM);
        CHECK(buf_used(&o.passed) == buf_used(&g.want) &&
              memcmp(buf_peek(&o.passed), buf_peek(&g.want), buf_used(&g.want)) == 0);
        CHECK_INT(o.ntaken, g.ntaken);
        CHECK(buf_used(&o.taken) == buf_used(&g.taken) &&
              memcmp(buf_peek(&o.taken), buf_peek(&g.taken), buf_used(&g.taken)) == 0);
        CHECK(memcmp(o.lens, g.lens, g.ntaken * sizeof(size_t)) == 0);
        resp_splice_reset(&s);
        buf_free(&o.passed);
        buf_free(&o.taken);
        gen_free(&g);
    }
}

/* --- replies: a pool reader through resp_feed against plain hiredis ------ */

static int same(const redisReply *a, const redisReply *b)
{
    if (a->type != b->type)
        return 0;
    switch (a->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        return a->len == b->len && memcmp(a->str, b->str, (size_t)a->len) == 0 &&
               a->str[a->len] == '\0';
    case REDIS_REPLY_INTEGER:
        return a->integer == b->integer;
    case REDIS_REPLY_ARRAY:
        if (a->elements != b->elements)
            return 0;
        for (size_t i = 0; i < a->elements; i++)
            if (!same(a->element[i], b->element[i]))
                return 0;
        return 1;
    default:
        return 1;
    }
}

struct against {
    redisReply **ref;
    int nref;
    int n;
    int bad;
};

static int check_against(void *ctx, redisReply *r)
{
    struct against *a = ctx;
    if (a->n >= a->nref || !same(r, a->ref[a->n]))
        a->bad++;
    a->n++;
    return 1;
}

static int reference(const struct gen *g, redisReply **ref, int max)
{
    redisReader *rd = redisReaderCreate();
    rd->maxbuf = 0;
    redisReaderFeed(rd, (const char *)buf_peek(&g->in), buf_used(&g->in));
    int n = 0;
    void *reply;
    while (n < max && redisReaderGetReply(rd, &reply) == REDIS_OK && reply != NULL)
        ref[n++] = reply;
    redisReaderFree(rd);
    return n;
}

/* direct: when resp_feed_direct offers a place, receive there (a random
 * part of what is left of the string), as the worker does. */
static void test_pool_reader_same_replies(void)
{
    for (int round = 0; round < 40; round++) {
        struct gen g;
        gen_stream(&g, RESP_SPLICE_MIN_TAKE, 60);
        static redisReply *ref[8192];
        int nref = reference(&g, ref, 8192);
        CHECK(nref == 60);
        redisReader *rd = resp_pool_reader_new();
        rd->maxbuf = 0;
        struct against a = {ref, nref, 0, 0};
        size_t len = buf_used(&g.in), off = 0;
        int rc = 1, direct = round % 2, directs = 0;
        while (off < len && rc == 1) {
            void *dst;
            size_t want;
            if (direct && resp_feed_direct(rd, &dst, &want)) {
                size_t n = 1 + rnd((uint32_t)want);
                memcpy(dst, buf_peek(&g.in) + off, n);
                resp_feed_direct_done(rd, n);
                off += n;
                directs++;
                continue;
            }
            size_t n = 1 + rnd(round % 3 == 0 ? 300 : 256 * 1024);
            if (n > len - off)
                n = len - off;
            rc = resp_feed(rd, buf_peek(&g.in) + off, n, check_against, &a);
            off += n;
        }
        CHECK_INT(rc, 1);
        CHECK_INT(a.n, nref);
        CHECK_INT(a.bad, 0);
        if (direct && g.ntaken > 0)
            CHECK(directs > 0);
        resp_pool_reader_free(rd);
        for (int i = 0; i < nref; i++)
            freeReplyObject(ref[i]);
        gen_free(&g);
    }
}

/* --- errors, stops, resets --------------------------------------------- */

static int feed_all(struct resp_splice *s, const char *in, struct out *o)
{
    const struct resp_splice_sink sink = {on_pass, on_took, o};
    return resp_splice_feed(s, in, strlen(in), &sink);
}

static void test_bad_lines(void)
{
    static const char *const bad[] = {
        "$abc\r\n",
        "$-2\r\n",
        "$12x\r\nhello world!\r\n",
        "$536870913\r\n",
        "$99999999999\r\n",
        "$\r\n",
        "$012\r\n",
        "$5\n",
        "$00000000000000000000000000000\r\n",   /* longer than a line may be */
        "$5\r\nhelloXX",                        /* a taken payload without CRLF */
        "$5\r\nhello\rX",
        "*65537\r\n",                          /* more elements than RESP_SPLICE_ARRAY_MAX */
        "*999999991\r\n",                      /* hiredis would allocate 8 GB for its list */
        "*abc\r\n",
        "*-3\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct resp_splice s;
        resp_splice_init(&s, 1);
        struct out o = {0};
        CHECK_INT(feed_all(&s, bad[i], &o), -1);
        resp_splice_reset(&s);   /* frees a payload taken so far (ASan) */
        buf_free(&o.passed);
        buf_free(&o.taken);
    }
    /* "$0" with a take threshold of one is passed on; "$-1" always. */
    struct resp_splice s;
    resp_splice_init(&s, 1);
    struct out o = {0};
    CHECK_INT(feed_all(&s, "$0\r\n\r\n$-1\r\n", &o), 1);
    CHECK_MEM(o.passed.data, buf_used(&o.passed), "$0\r\n\r\n$-1\r\n");
    buf_free(&o.passed);
    /* The longest array allowed, and a nil one, are passed on. */
    struct out o2 = {0};
    CHECK_INT(feed_all(&s, "*-1\r\n*65536\r\n", &o2), 1);
    CHECK_MEM(o2.passed.data, buf_used(&o2.passed), "*-1\r\n*65536\r\n");
    buf_free(&o2.passed);
}

/* Lines end at CRLF, as the reader's do: a bare LF inside a status or an
 * error line is text, so what follows it is no item of its own, while an
 * array after the CRLF is one (and is checked), also split anywhere. */
static void test_lines_end_at_crlf(void)
{
    static const char text[] = "+x\n*999999\r\n-a\rb\n\r\n:5\r\n";
    for (size_t cut = 0; cut <= strlen(text); cut++) {
        struct resp_splice s;
        resp_splice_init(&s, 1);
        struct out o = {0};
        const struct resp_splice_sink sink = {on_pass, on_took, &o};
        CHECK_INT(resp_splice_feed(&s, text, cut, &sink), 1);
        CHECK_INT(resp_splice_feed(&s, text + cut, strlen(text) - cut, &sink), 1);
        CHECK_INT(s.state, RESP_SPLICE_ITEM);
        CHECK_MEM(o.passed.data, buf_used(&o.passed), text);
        buf_free(&o.passed);
    }
    struct resp_splice s;
    resp_splice_init(&s, 1);
    struct out o = {0};
    CHECK_INT(feed_all(&s, "-ERR a\nb\r\n*70000\r\n", &o), -1);
    buf_free(&o.passed);
}

/* An unknown type byte: the rest goes to the reader as it is. */
static void test_unknown_type_passes_through(void)
{
    struct resp_splice s;
    resp_splice_init(&s, 1);
    struct out o = {0};
    CHECK_INT(feed_all(&s, "+OK\r\n!weird\r\n$3\r\nabc\r\n", &o), 1);
    CHECK_MEM(o.passed.data, buf_used(&o.passed), "+OK\r\n!weird\r\n$3\r\nabc\r\n");
    CHECK_INT(o.ntaken, 0);
    buf_free(&o.passed);

    /* and the pool reader reports the reader's protocol error */
    redisReader *rd = resp_pool_reader_new();
    struct against a = {NULL, 0, 0, 0};
    CHECK_INT(resp_feed(rd, "!x\r\n", 4, check_against, &a), -1);
    resp_pool_reader_free(rd);

    /* and the scanner's own refusal, where callers read a reader's errors */
    rd = resp_pool_reader_new();
    CHECK_INT(resp_feed(rd, "*70000\r\n", 8, check_against, &a), -1);
    CHECK_INT(rd->err, REDIS_ERR_PROTOCOL);
    CHECK(strstr(rd->errstr, "array count") != NULL);
    resp_pool_reader_free(rd);
}

static void test_stop_after_take(void)
{
    struct resp_splice s;
    resp_splice_init(&s, 2);
    struct out o = {.stop_after_took = 1};
    CHECK_INT(feed_all(&s, "$2\r\nab\r\n+OK\r\n", &o), 0);
    CHECK_INT(o.ntaken, 1);
    CHECK_INT(buf_used(&o.passed), 0);   /* nothing after the stop */
    buf_free(&o.taken);
}

/* A reader freed in the middle of a long string frees what it took. */
static void test_free_mid_take(void)
{
    redisReader *rd = resp_pool_reader_new();
    char head[64];
    int n = snprintf(head, sizeof(head), "*2\r\n:1\r\n$%d\r\n", RESP_SPLICE_MIN_TAKE * 2);
    struct against a = {NULL, 0, 0, 0};
    CHECK_INT(resp_feed(rd, head, (size_t)n, check_against, &a), 1);
    void *dst;
    size_t want;
    CHECK(resp_feed_direct(rd, &dst, &want));
    CHECK_INT(want, RESP_SPLICE_MIN_TAKE * 2);
    memset(dst, 'x', 100);
    resp_feed_direct_done(rd, 100);
    CHECK(resp_feed_direct(rd, &dst, &want));
    CHECK_INT(want, RESP_SPLICE_MIN_TAKE * 2 - 100);
    CHECK_INT(a.n, 0);
    resp_pool_reader_free(rd);
}

int main(void)
{
    RUN(test_scanner_random_streams);
    RUN(test_pool_reader_same_replies);
    RUN(test_bad_lines);
    RUN(test_lines_end_at_crlf);
    RUN(test_unknown_type_passes_through);
    RUN(test_stop_after_take);
    RUN(test_free_mid_take);
    return check_finish();
}
