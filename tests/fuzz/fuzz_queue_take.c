/*
 * fuzz_queue_take.c - libFuzzer target for the take replies the engine
 * parses (queue/queue_cmd.c): queue_parse_take on the first reply decoded
 * from the input, then queue_take_data on each reply after it, for the
 * taken messages in turn, as engine/worker.c does with the HMGETs behind
 * a take.
 *
 * The replies are built from the bytes directly (tests/fuzz/fuzz_reply.h).
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
#include "tests/fuzz/fuzz_reply.h"

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
    redisReply *reply = fuzz_reply(&p, end, 0, 1);
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
        reply = fuzz_reply(&p, end, 0, 1);
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
