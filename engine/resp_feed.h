/*
 * resp_feed.h - hand received Redis bytes to a hiredis reader in slices.
 *
 * DESCRIPTION
 *   hiredis 0.14's reader keeps the unparsed bytes in one buffer and, each
 *   time a reply is taken out after 1 KiB or more was consumed, moves the
 *   rest of that buffer to its front. Fed a whole 256 KiB receive holding
 *   sixty 4 KiB message bodies, it moves ~128 KiB per reply: a perf
 *   profile of the bulk benchmark had that memmove as the engine's largest
 *   symbol. Feeding RESP_FEED_SLICE bytes at a time and taking the replies
 *   out after each slice bounds each move by about one slice; the bytes
 *   are still copied into the reader once, as before.
 *
 * OWNERSHIP
 *   The caller owns the reader and the bytes. Each reply is passed to
 *   on_reply, which only borrows it: resp_feed frees it when on_reply
 *   returns.
 */
#ifndef TERN_ENGINE_RESP_FEED_H
#define TERN_ENGINE_RESP_FEED_H

#include <hiredis/hiredis.h>
#include <stddef.h>

/* Bytes handed to the reader at a time: a few typical bodies, small
 * against the 256 KiB receives. build/tern-resp-cost (bench/resp_cost.c),
 * ns per reply, whole 256 KiB receive / 16 / 32 / 64 KiB slices: 4 KiB
 * bodies 1792 / 299 / 531 / 631; 100 KiB bodies 4997 / 32229 / 5134 /
 * 4375. 16 KiB slices make hiredis much slower on bodies several slices
 * long; 32 KiB is near the best for both. */
#define RESP_FEED_SLICE (32 * 1024)

/* on_reply handles one reply; it returns 0 to stop taking replies (e.g.
 * the connection was dropped while handling it), 1 to go on. */
typedef int (*resp_reply_fn)(void *ctx, redisReply *reply);

/* resp_feed feeds p[0..len) to reader and passes every reply it completes
 * to on_reply, in order. Returns 1 when all bytes were fed, 0 when
 * on_reply asked to stop (the bytes not fed yet are dropped: the caller
 * is abandoning the connection), -1 on a protocol error or out of memory
 * (reader->err / errstr say which when the reader set them). */
int resp_feed(redisReader *reader, const void *p, size_t len, resp_reply_fn on_reply, void *ctx);

#endif
