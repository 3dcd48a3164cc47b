/*
 * fuzz_reply.h - redisReply trees built from fuzzer bytes, for the targets
 * that test what tern does with Redis's replies (fuzz_queue_take,
 * fuzz_queue_cluster).
 *
 * The replies are built from the bytes directly, not with hiredis's RESP
 * reader: that reader is hiredis's, and its 0.14 allocates whatever
 * element count a header claims, which the fuzzer reports as an
 * out-of-memory. What reaches tern's code is a redisReply tree.
 */
#ifndef TERN_TESTS_FUZZ_FUZZ_REPLY_H
#define TERN_TESTS_FUZZ_FUZZ_REPLY_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

/* fuzz_reply: one reply from the bytes at *p: a type byte (string,
 * integer, nil, or, above array_depth levels of nesting, an array), then
 * a length / value byte and the string's bytes. NULL when the input ends. Freed with
 * freeReplyObject, as hiredis's own replies are. */
static inline redisReply *fuzz_reply(const uint8_t **p, const uint8_t *end, int depth, int array_depth)
{
    if (*p >= end)
        return NULL;
    redisReply *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    int kind = *(*p)++ % (depth < array_depth ? 4 : 3);
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
            r->element[i] = fuzz_reply(p, end, depth + 1, array_depth);
            if (r->element[i] == NULL) {
                freeReplyObject(r);
                return NULL;
            }
        }
    }
    return r;
}

#endif
