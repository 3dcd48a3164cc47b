/*
 * fuzz_queue_take.c - libFuzzer target for the take replies the engine
 * parses (queue/queue_cmd.c): queue_parse_take on the first reply decoded
 * from the input, then queue_take_data on each reply after it, for the
 * taken messages in turn, as engine/worker.c does with the HMGETs behind
 * a take.
 *
 * The replies are built from the bytes directly (decode_reply), not with
 * hiredis's RESP reader: that reader is hiredis's, and its 0.14 allocates
 * whatever element count a header claims, which the fuzzer reports as an
 * out-of-memory. What reaches tern's code is a redisReply tree.
 *
 * Invariants: a parsed take has at most QUEUE_TAKE_MAX messages, each with
 * an id of 1..QUEUE_ID_MAX-1 bytes and no metadata yet; after
 * queue_take_data returns 1 the message is either marked bad (no fields
 * set) or complete: from, domain and 1..QUEUE_RCPTS_MAX recipients, each
 * recipient's domain equal to the entry's, the body's length as the reply
 * had it. A return of 0 sets err and leaves the message as it was.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "queue/queue.h"

/* decode_reply: one reply from the bytes at *p: a type byte (string,
 * integer, nil, or at depth 0 an array), then a length / value byte and
 * the string's bytes. NULL when the input ends. Freed with
 * freeReplyObject, as hiredis's own replies are. */
static redisReply *decode_reply(const uint8_t **p, const uint8_t *end, int depth)
{
    if (*p >= end)
        return NULL;
    redisReply *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    int kind = *(*p)++ % (depth == 0 ? 4 : 3);
    size_t n = *p < end ? *(*p)++ : 0;
    if (kind == 0) {
        if (n > (size_t)(end - *p))
            n = (size_t)(end - *p);
        r->type = REDIS_REPLY_STRING;
        r->str = malloc(n + 1);
        if (r->str == NULL) {
            free(r);
            return NULL;
        }
        memcpy(r->str, *p, n);
        r->str[n] = '\0';
        r->len = n;
        *p += n;
    } else if (kind == 1) {
        r->type = REDIS_REPLY_INTEGER;
        r->integer = (long long)n - 8;
    } else if (kind == 2) {
        r->type = REDIS_REPLY_NIL;
    } else {
        r->type = REDIS_REPLY_ARRAY;
        r->element = calloc(n ? n : 1, sizeof(*r->element));
        if (r->element == NULL) {
            free(r);
            return NULL;
        }
        r->elements = n;
        for (size_t i = 0; i < n; i++) {
            r->element[i] = decode_reply(p, end, depth + 1);
            if (r->element[i] == NULL) {
                freeReplyObject(r);
                return NULL;
            }
        }
    }
    return r;
}

static void check_msg(const struct queue_msg *m, int done)
{
    size_t idl = strnlen(m->id, QUEUE_ID_MAX);
    if (idl == 0 || idl >= QUEUE_ID_MAX)
        abort();
    if (!done || m->bad != NULL) {
        if (m->from != NULL || m->rcpts != NULL || m->domain != NULL || m->data != NULL)
            abort();
        return;
    }
    if (m->from == NULL || m->domain == NULL || m->nrcpts < 1 || m->nrcpts > QUEUE_RCPTS_MAX)
        abort();
    if (m->data == NULL && m->data_len != 0)
        abort();
    size_t dl = strlen(m->domain);
    for (size_t i = 0; i < m->nrcpts; i++) {
        const char *at = strrchr(m->rcpts[i], '@');
        if (at == NULL || strlen(at + 1) != dl || strncasecmp(at + 1, m->domain, dl) != 0)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *p = data, *end = data + size;
    redisReply *reply = decode_reply(&p, end, 0);
    if (reply == NULL)
        return 0;
    struct queue_msg **msgs = NULL;
    size_t n = 0;
    long long left = -1;
    const char *err = NULL;
    int ok = queue_parse_take(reply, 3, &msgs, &n, &left, &err);
    freeReplyObject(reply);
    if (!ok && (err == NULL || msgs != NULL || n != 0))
        abort();
    if (ok && left < 0)
        abort();
    if (n > QUEUE_TAKE_MAX)
        abort();
    for (size_t i = 0; i < n; i++) {
        check_msg(msgs[i], 0);
        reply = decode_reply(&p, end, 0);
        if (reply == NULL)
            continue;
        struct queue_msg *before = msgs[i];
        err = NULL;
        if (queue_take_data(reply, &msgs[i], &err))
            check_msg(msgs[i], 1);
        else if (err == NULL || msgs[i] != before)
            abort();
        freeReplyObject(reply);
    }
    for (size_t i = 0; i < n; i++)
        queue_msg_free(msgs[i]);
    free(msgs);
    return 0;
}
