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

/* Bytes handed to the reader at a time. The engine's hot replies are
 * queue_cmd_take_data's HMGETs: an array of six short fields and the
 * body. build/tern-resp-cost (bench/resp_cost.c), ns per reply of that
 * shape, 4 / 8 / 32 KiB slices: 1 KiB bodies 325 / 346 / 489, 4 KiB 543 /
 * 583 / 708, 100 KiB 5168 / 5015 / 4665; a whole 256 KiB receive ~2000,
 * ~2400, ~5600. In the bulk benchmark the engine spent 17% of its samples
 * in the reader's buffer moves with 32 KiB slices (perf, DWARF call
 * graphs), and ~3 us/msg more CPU than with 4 or 8 KiB.
 * A bulk string at the top level (an HGET's reply) is another matter:
 * when it spans several slices the reader is slow on it (4 KiB bodies in
 * 4 or 8 KiB slices ~1,400 ns, 100 KiB bodies ~32,000 ns, where 32 KiB
 * slices give ~450 / ~5,000); no hot reply has that shape now. */
#define RESP_FEED_SLICE (8 * 1024)

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
