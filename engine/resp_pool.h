/*
 * resp_pool.h - a hiredis reader whose reply objects are recycled.
 *
 * DESCRIPTION
 *   hiredis's default reader mallocs every reply object and every array's
 *   element list, and freeReplyObject frees them: after a take the engine
 *   reads one HMGET reply of seven fields per message, nine objects and a
 *   list allocated and freed each time. This reader keeps freed objects
 *   on a free list instead, and an array of up to RESP_POOL_ELEMS elements
 *   keeps its list inside its object. A string shorter than
 *   RESP_POOL_INLINE bytes is kept inside its object too (six of the seven
 *   fields of that HMGET: their mallocs and frees were ~4% of the engine's
 *   CPU in the bulk benchmark); longer ones are malloc'd, one per string
 *   reply, because callers may take them over (queue_take_data keeps a
 *   long body's string and sets the reply's str to NULL; it copies bodies
 *   under QUEUE_TAKE_OVER_MIN, which is why RESP_POOL_INLINE may not be
 *   larger).
 *
 * OWNERSHIP
 *   resp_pool_reader_new returns a reader that owns its pool (its
 *   privdata); free it with resp_pool_reader_free, never with
 *   redisReaderFree alone. A reply it produced is freed with
 *   resp_reply_free(reader, reply) (resp_feed does so for every reader),
 *   never with freeReplyObject, and before the reader is freed. One
 *   thread uses a reader and its replies.
 *
 * ERRORS
 *   resp_pool_reader_new returns NULL when out of memory. An object that
 *   cannot be allocated makes the reader fail with REDIS_ERR_OOM, as
 *   hiredis's own reader does.
 */
#ifndef TERN_ENGINE_RESP_POOL_H
#define TERN_ENGINE_RESP_POOL_H

#include <hiredis/hiredis.h>

#include "engine/resp_splice.h"

#define RESP_POOL_ELEMS 8      /* arrays this long keep their element list inline */
#define RESP_POOL_KEEP  1024   /* free objects kept per reader; more are freed */
#define RESP_POOL_INLINE 64    /* strings shorter than this live in their object */

redisReader *resp_pool_reader_new(void);
void resp_pool_reader_free(redisReader *r);

/* resp_reply_free frees a reply of reader r: through r's own functions,
 * so it serves readers made by hiredis too. */
void resp_reply_free(redisReader *r, void *reply);

/* resp_pool_splice: the splice state of a reader made by
 * resp_pool_reader_new; NULL for any other reader (resp_feed then feeds it
 * everything). */
struct resp_splice *resp_pool_splice(redisReader *r);

/* resp_pool_stash: payload (malloc'd, len + 1 bytes, NUL-terminated;
 * ownership passes) becomes the string of the next string reply the reader
 * creates, which must be an empty bulk string fed right after: any other
 * string reply fails the reader (REDIS_ERR_OOM). r must be a pool reader. */
void resp_pool_stash(redisReader *r, char *payload, size_t len);

#endif
