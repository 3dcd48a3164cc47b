/*
 * resp_splice.h - take long bulk strings out of a RESP byte stream before
 * they reach the hiredis reader.
 *
 * DESCRIPTION
 *   The hiredis reader copies every byte it is fed into a buffer of its
 *   own, growing it as a bulk string arrives, then copies a completed bulk
 *   string once more into the reply object. For a 100 KiB message body
 *   that was two copies, the buffer's growth and a hundred incomplete
 *   parses (one per 1 KiB slice, resp_feed.h): 14% of the engine's CPU in
 *   the `large` benchmark (bench/README.md). This scanner follows the
 *   stream's framing (RESP2: each item a type byte and a line; a bulk
 *   string's line gives the length of the payload and its CRLF that
 *   follow; lines end at CRLF, as the reader reads them) and hands
 *   everything through unchanged, except a bulk string
 *   of at least min_take bytes: its payload is collected into a buffer of
 *   its own (or received straight into it: resp_splice_direct) and handed
 *   over whole, in place of its bytes. The caller gives the reader a
 *   zero-length bulk string in its place and attaches the buffer to that
 *   reply (resp_pool.h, resp_feed.h).
 *
 *   The scanner checks only what it needs to keep its place, and the one
 *   bound the reader lacks: a bulk string's length line (digits, or -1),
 *   the CRLF after a taken payload, and an array's count, which must not
 *   pass RESP_SPLICE_ARRAY_MAX (hiredis allocates an element list of the
 *   count it reads before any element arrives: "*999999999" was 8 GB).
 *   Everything else, and any type byte it does not know, it passes on for
 *   the reader to judge; after an unknown type byte it passes the rest of
 *   the stream as it is (the reader fails on it).
 *
 * OWNERSHIP
 *   A struct resp_splice is owned by its reader's pool; it owns the
 *   payload being collected until it hands it to `took`, which then owns
 *   it (malloc'd, len + 1 bytes, NUL after the payload). resp_splice_reset
 *   frees a payload not handed over. No callback may call back into the
 *   same resp_splice.
 *
 * ERRORS
 *   resp_splice_feed returns -1 on a malformed length line of a bulk
 *   string or an array (not digits or -1, a leading zero, more than
 *   RESP_SPLICE_LINE_MAX bytes, over RESP_SPLICE_BULK_MAX or
 *   RESP_SPLICE_ARRAY_MAX)
 *   or a taken payload not followed by CRLF, and on a failed allocation;
 *   the stream is then unusable (the caller drops the connection). s->err
 *   then says why (a static string); a callback's own error leaves it NULL.
 */
#ifndef TERN_ENGINE_RESP_SPLICE_H
#define TERN_ENGINE_RESP_SPLICE_H

#include <stddef.h>
#include <stdint.h>

/* Bulk strings this long or longer are taken out: message bodies of a few
 * KiB stay with the reader, where the slices keep its moves short. */
#define RESP_SPLICE_MIN_TAKE     (16 * 1024)
/* A length line, "$" or "*" to LF: "$536870912\r\n" is 12 bytes. */
#define RESP_SPLICE_LINE_MAX     24
/* Redis's own limit on a bulk string (proto-max-bulk-len's default). */
#define RESP_SPLICE_BULK_MAX     (512ULL * 1024 * 1024)
/* Elements of one array: the engine's longest replies are takes, at most
 * QUEUE_TAKE_MAX messages of a few fields each (queue/queue.h). */
#define RESP_SPLICE_ARRAY_MAX    65536
/* resp_splice_direct offers the payload's buffer to a receive only for at
 * least this much: below it one receive into the usual buffer is as
 * cheap, and brings the bytes after the payload too. */
#define RESP_SPLICE_DIRECT_MIN   (4 * 1024)

enum resp_splice_state {
    RESP_SPLICE_ITEM,        /* at the start of an item: its type byte */
    RESP_SPLICE_LINE,        /* in a line passed through, up to its CRLF */
    RESP_SPLICE_LEN_LINE,    /* in a bulk's or an array's length line,
                                held back in line[] */
    RESP_SPLICE_BULK_PASS,   /* in a short payload (and its CRLF), passed */
    RESP_SPLICE_TAKE,        /* in a long payload, collected into take */
    RESP_SPLICE_TAKE_CR,     /* after a taken payload: its CR, then LF */
    RESP_SPLICE_TAKE_LF,
    RESP_SPLICE_OPAQUE,      /* an unknown type byte: pass everything */
};

struct resp_splice {
    enum resp_splice_state state;
    size_t min_take;                 /* RESP_SPLICE_MIN_TAKE unless a test says */
    char line[RESP_SPLICE_LINE_MAX]; /* the length line so far */
    size_t line_len;
    int line_cr;                     /* LINE: the last byte seen was a CR */
    uint64_t pass_left;              /* BULK_PASS: payload + CRLF bytes left */
    char *take;                      /* TAKE..TAKE_LF: the payload */
    size_t take_len, take_got;
    const char *err;                 /* why the last feed returned -1, if
                                        the scanner itself refused (static) */
};

/* pass hands on n bytes of the stream, in order; took hands over a taken
 * payload (ownership passes). Both return 1 to go on, 0 to stop (the
 * caller abandons the stream), -1 on an error of their own. */
struct resp_splice_sink {
    int (*pass)(void *ctx, const char *p, size_t n);
    int (*took)(void *ctx, char *payload, size_t len);
    void *ctx;
};

void resp_splice_init(struct resp_splice *s, size_t min_take);

/* resp_splice_reset: back to the start of an item (a new connection),
 * freeing a payload being collected. */
void resp_splice_reset(struct resp_splice *s);

/* resp_splice_feed scans p[0..n): 1 when all was consumed, 0 when a
 * callback asked to stop, -1 on an error (see ERRORS) or a callback's. */
int resp_splice_feed(struct resp_splice *s, const char *p, size_t n,
                     const struct resp_splice_sink *out);

/* resp_splice_direct: while a long payload is being collected and at least
 * RESP_SPLICE_DIRECT_MIN of it is still to come, sets *dst and *len to
 * where the rest goes and returns 1: a receive may write there, and
 * resp_splice_direct_done(s, got) accounts for what it wrote (got <= len).
 * Otherwise returns 0. The buffer stays where it is until the payload is
 * complete or resp_splice_reset, so a receive in flight stays valid as
 * long as neither happens before it completes. */
int resp_splice_direct(const struct resp_splice *s, void **dst, size_t *len);
void resp_splice_direct_done(struct resp_splice *s, size_t got);

#endif
