/* resp_feed.c - slice-wise feeding of a hiredis reader; see resp_feed.h. */
#include "engine/resp_feed.h"

#include <stdio.h>

#include "engine/resp_pool.h"
#include "engine/resp_splice.h"

struct feed {
    redisReader *reader;
    resp_reply_fn on_reply;
    void *ctx;
};

/* Feeds p[0..len) in slices, passing each completed reply on: 1, 0 (asked
 * to stop) or -1 as resp_feed. */
static int feed_slices(void *arg, const char *p, size_t len)
{
    struct feed *f = arg;
    size_t off = 0;
    do {
        size_t n = len - off < RESP_FEED_SLICE ? len - off : RESP_FEED_SLICE;
        if (redisReaderFeed(f->reader, p + off, n) != REDIS_OK)
            return -1;
        off += n;
        void *reply;
        for (;;) {
            if (redisReaderGetReply(f->reader, &reply) != REDIS_OK)
                return -1;
            if (reply == NULL)
                break;
            int go_on = f->on_reply(f->ctx, reply);
            resp_reply_free(f->reader, reply);
            if (!go_on)
                return 0;
        }
    } while (off < len);
    return 1;
}

/* A taken payload goes to the reader as an empty bulk string whose reply
 * gets the payload (resp_pool_stash). */
static int feed_taken(void *arg, char *payload, size_t len)
{
    struct feed *f = arg;
    static const char stand_in[] = "$0\r\n\r\n";
    resp_pool_stash(f->reader, payload, len);
    return feed_slices(f, stand_in, sizeof(stand_in) - 1);
}

int resp_feed(redisReader *reader, const void *p, size_t len, resp_reply_fn on_reply, void *ctx)
{
    struct feed f = {reader, on_reply, ctx};
    struct resp_splice *sp = resp_pool_splice(reader);
    if (sp == NULL)
        return feed_slices(&f, p, len);
    const struct resp_splice_sink sink = {feed_slices, feed_taken, &f};
    sp->err = NULL;
    int rc = resp_splice_feed(sp, p, len, &sink);
    if (rc < 0 && !reader->err && sp->err) {
        /* Said where callers look for a reader's errors. */
        reader->err = REDIS_ERR_PROTOCOL;
        snprintf(reader->errstr, sizeof(reader->errstr), "Protocol error: %s", sp->err);
    }
    return rc;
}

int resp_feed_direct(redisReader *reader, void **dst, size_t *len)
{
    struct resp_splice *sp = resp_pool_splice(reader);
    return sp != NULL && resp_splice_direct(sp, dst, len);
}

void resp_feed_direct_done(redisReader *reader, size_t got)
{
    struct resp_splice *sp = resp_pool_splice(reader);
    if (sp != NULL)
        resp_splice_direct_done(sp, got);
}
