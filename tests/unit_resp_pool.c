/*
 * unit_resp_pool.c - engine/resp_pool.c: a pool reader gives the same
 * replies as hiredis's own (strings, status, errors, integers, nil, empty
 * and nested arrays, arrays longer than RESP_POOL_ELEMS), a string taken
 * over by a caller survives the reply's free, freed objects are used again,
 * and a reader freed in the middle of a reply leaks nothing (the ASan
 * build runs this too).
 */
#include <stdlib.h>
#include <string.h>

#include "engine/resp_feed.h"
#include "engine/resp_pool.h"
#include "tests/check.h"

static redisReply *one(redisReader *rd, const char *resp)
{
    void *reply = NULL;
    CHECK_INT(redisReaderFeed(rd, resp, strlen(resp)), REDIS_OK);
    CHECK_INT(redisReaderGetReply(rd, &reply), REDIS_OK);
    CHECK(reply != NULL);
    return reply;
}

static void test_shapes(void)
{
    redisReader *rd = resp_pool_reader_new();
    CHECK(rd != NULL);
    redisReply *r = one(rd, "$5\r\nhello\r\n");
    CHECK_INT(r->type, REDIS_REPLY_STRING);
    CHECK_MEM(r->str, r->len, "hello");
    resp_reply_free(rd, r);
    r = one(rd, "+OK\r\n");
    CHECK_INT(r->type, REDIS_REPLY_STATUS);
    CHECK_STR(r->str, "OK");
    resp_reply_free(rd, r);
    r = one(rd, "-ERR no\r\n");
    CHECK_INT(r->type, REDIS_REPLY_ERROR);
    CHECK_STR(r->str, "ERR no");
    resp_reply_free(rd, r);
    r = one(rd, ":-42\r\n");
    CHECK_INT(r->type, REDIS_REPLY_INTEGER);
    CHECK_INT(r->integer, -42);
    resp_reply_free(rd, r);
    r = one(rd, "$-1\r\n");
    CHECK_INT(r->type, REDIS_REPLY_NIL);
    resp_reply_free(rd, r);
    r = one(rd, "*0\r\n");
    CHECK_INT(r->type, REDIS_REPLY_ARRAY);
    CHECK_INT(r->elements, 0);
    resp_reply_free(rd, r);
    r = one(rd, "*3\r\n$1\r\na\r\n*2\r\n:1\r\n$-1\r\n+x\r\n");
    CHECK_INT(r->type, REDIS_REPLY_ARRAY);
    CHECK_INT(r->elements, 3);
    if (r->elements == 3) {
        CHECK_STR(r->element[0]->str, "a");
        CHECK_INT(r->element[1]->type, REDIS_REPLY_ARRAY);
        CHECK_INT(r->element[1]->elements, 2);
        CHECK_INT(r->element[1]->element[0]->integer, 1);
        CHECK_INT(r->element[1]->element[1]->type, REDIS_REPLY_NIL);
        CHECK_INT(r->element[2]->type, REDIS_REPLY_STATUS);
    }
    resp_reply_free(rd, r);
    resp_pool_reader_free(rd);
}

static void test_long_array_and_reuse(void)
{
    redisReader *rd = resp_pool_reader_new();
    char resp[1024] = "*20\r\n";
    for (int i = 0; i < 20; i++)
        strcat(resp, i % 2 ? ":7\r\n" : "$2\r\nab\r\n");
    redisReply *r = one(rd, resp);
    CHECK_INT(r->elements, 20);
    for (size_t i = 0; i < r->elements; i++)
        CHECK_INT(r->element[i]->type, i % 2 ? REDIS_REPLY_INTEGER : REDIS_REPLY_STRING);
    resp_reply_free(rd, r);
    /* The next reply's objects are the ones just freed. */
    r = one(rd, "*1\r\n$3\r\nxyz\r\n");
    redisReply *first = r;
    resp_reply_free(rd, r);
    r = one(rd, "*1\r\n$3\r\nxyz\r\n");
    CHECK(r == first);
    resp_reply_free(rd, r);
    /* A long string (malloc'd) taken over survives its reply; a short
     * one sits in its object and goes with it. */
    char lng[RESP_POOL_INLINE + 1];
    memset(lng, 'L', sizeof(lng) - 1);
    lng[sizeof(lng) - 1] = '\0';
    char msg[256];
    snprintf(msg, sizeof(msg), "*2\r\n$%zu\r\n%s\r\n$%d\r\n%.*s\r\n", strlen(lng), lng,
             RESP_POOL_INLINE - 1, RESP_POOL_INLINE - 1, lng);
    r = one(rd, msg);
    CHECK_INT(r->element[0]->len, RESP_POOL_INLINE);
    CHECK_INT(r->element[1]->len, RESP_POOL_INLINE - 1);
    CHECK_INT(strlen(r->element[1]->str), RESP_POOL_INLINE - 1);
    CHECK((char *)r->element[1]->str > (char *)r->element[1] &&
          (char *)r->element[1]->str < (char *)r->element[1] + 1024);   /* inside its object */
    char *kept = r->element[0]->str;
    r->element[0]->str = NULL;
    resp_reply_free(rd, r);
    CHECK_STR(kept, lng);
    free(kept);
    resp_pool_reader_free(rd);
}

static int count_reply(void *ctx, redisReply *r)
{
    (void)r;
    (*(int *)ctx)++;
    return 1;
}

static void test_feed_and_partial_free(void)
{
    redisReader *rd = resp_pool_reader_new();
    static const char many[] = "*2\r\n$1\r\na\r\n$1\r\nb\r\n:1\r\n*1\r\n$-1\r\n";
    int got = 0;
    CHECK_INT(resp_feed(rd, many, sizeof(many) - 1, count_reply, &got), 1);
    CHECK_INT(got, 3);
    /* Half an array held when the reader goes: its objects are freed. */
    static const char half[] = "*3\r\n$1\r\na\r\n$5\r\nhel";
    CHECK_INT(resp_feed(rd, half, sizeof(half) - 1, count_reply, &got), 1);
    CHECK_INT(got, 3);
    resp_pool_reader_free(rd);
    resp_pool_reader_free(NULL);
}

int main(void)
{
    RUN(test_shapes);
    RUN(test_long_array_and_reuse);
    RUN(test_feed_and_partial_free);
    return check_finish();
}
