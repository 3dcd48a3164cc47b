/* resp_feed.c - slice-wise feeding of a hiredis reader; see resp_feed.h. */
#include "engine/resp_feed.h"

#include "engine/resp_pool.h"

int resp_feed(redisReader *reader, const void *p, size_t len, resp_reply_fn on_reply, void *ctx)
{
    const char *b = p;
    size_t off = 0;
    do {
        size_t n = len - off < RESP_FEED_SLICE ? len - off : RESP_FEED_SLICE;
        if (redisReaderFeed(reader, b + off, n) != REDIS_OK)
            return -1;
        off += n;
        void *reply;
        for (;;) {
            if (redisReaderGetReply(reader, &reply) != REDIS_OK)
                return -1;
            if (reply == NULL)
                break;
            int go_on = on_reply(ctx, reply);
            resp_reply_free(reader, reply);
            if (!go_on)
                return 0;
        }
    } while (off < len);
    return 1;
}
