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

/* Bytes handed to the reader at a time: small, because each reply taken
 * out moves what is left of the slice, and in the engine those moves are
 * slower per byte than in a micro-benchmark (cache-cold). The engine's hot
 * replies are queue_cmd_take_data's HMGETs (an array of six short fields
 * and the body). Bulk benchmark, engine us/msg, interleaved pairs: 32 KiB
 * slices 17.0 / 17.6 (17% of the engine's samples in the reader's buffer
 * moves), 8 KiB 15.0 / 14.8 / 13.7, 2 KiB 12.8 / 13.2 / 12.9 / 13.3 /
 * 13.2, 1 KiB 12.0 / 12.2. build/tern-resp-cost (bench/resp_cost.c), ns
 * per reply with 1 KiB slices: HMGET shape 349 (1 KiB bodies), 609
 * (4 KiB), 6,202 (100 KiB); a bulk string alone 95 / 253 / 5,802. Some
 * larger slices make the reader slow on a bulk string several slices long
 * (4 or 8 KiB slices: 4 KiB bodies ~1,400 ns, 100 KiB ~32,000). */
#define RESP_FEED_SLICE 1024

/* on_reply handles one reply; it returns 0 to stop taking replies (e.g.
 * the connection was dropped while handling it), 1 to go on. */
typedef int (*resp_reply_fn)(void *ctx, redisReply *reply);

/* resp_feed feeds p[0..len) to reader and passes every reply it completes
 * to on_reply, in order. Returns 1 when all bytes were fed, 0 when
 * on_reply asked to stop (the bytes not fed yet are dropped: the caller
 * is abandoning the connection), -1 on a protocol error or out of memory
 * (reader->err / errstr say which; for a pool reader also when its
 * resp_splice refused the stream). */
int resp_feed(redisReader *reader, const void *p, size_t len, resp_reply_fn on_reply, void *ctx);

/* resp_feed_direct: where the next receive may write to land in the long
 * bulk string being taken, and how much of it is still to come; returns 0
 * when the next bytes should go through resp_feed (resp_splice_direct).
 * The place stays valid until the string is complete or the reader is
 * freed. resp_feed_direct_done(reader, got) accounts for what a receive
 * wrote there. */
int resp_feed_direct(redisReader *reader, void **dst, size_t *len);
void resp_feed_direct_done(redisReader *reader, size_t got);

#endif
