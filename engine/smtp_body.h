/*
 * smtp_body.h - DATA body encoder (RFC 5321 sections 2.3.8, 4.1.1.4, 4.5.2).
 *
 * DESCRIPTION
 *   smtp_body_encode() turns a message with any line endings into the
 *   bytes that follow a 354 reply:
 *     - CRLF stays CRLF; a bare CR and a bare LF each become CRLF, so
 *       "\r\r\n" is two line ends and "\n\r" is two as well;
 *     - a line starting with "." gets another "." in front (dot-stuffing),
 *       so a "\r\n.\r\n" inside the message cannot end DATA early;
 *     - a CRLF is added when the message does not end with a line end;
 *     - the terminator ".\r\n" is appended.
 *   An empty message encodes as ".\r\n" alone (and as nothing in the BDAT
 *   form below).
 *
 *   Cost: smtp_body_scan reads the body 32 bytes at a time where the CPU
 *   has AVX2, else 16 (SSE2), or a byte at a time without SSE2. A
 *   canonical body (what tern's queue normally holds) is then copied in
 *   runs broken only where a line starts with '.', so encoding costs
 *   about one memcpy; any other body is converted a line at a time.
 *
 * OWNERSHIP
 *   The caller owns both buffers; data is only read.
 */
#ifndef TERN_ENGINE_SMTP_BODY_H
#define TERN_ENGINE_SMTP_BODY_H

#include <stddef.h>
#include <stdint.h>

#include "engine/buf.h"

/* smtp_body_encode appends the encoded form of data[0..len) to out.
 * Returns 1, or 0 when out failed to grow (out->err is then set and out
 * holds a partial body that must not be sent). data may be NULL when len
 * is 0. */
int smtp_body_encode(struct buf *out, const uint8_t *data, size_t len);

/* smtp_body_walk hands the encoded form of data[0..len) to emit, in order,
 * as runs instead of appending it to a buffer: the DATA form when dotted,
 * else the BDAT form; canonical is smtp_body_scan's answer for data (a
 * wrong 1 would send bare CRs and LFs). A canonical body comes as long
 * runs that point into data itself (between stuffed dots, or the whole
 * body), the rest as short pieces (a stuffed '.', a CRLF, the terminator)
 * that may point into static storage: a caller that keeps a pointer
 * rather than copying (smtp_client's output references) may keep only
 * the ones inside data, which live as long as data does. */
typedef void (*smtp_body_emit_fn)(void *ctx, const uint8_t *p, size_t n);
void smtp_body_walk(const uint8_t *data, size_t len, int dotted, int canonical,
                    smtp_body_emit_fn emit, void *ctx);

/* smtp_body_encoded_len returns the exact number of bytes smtp_body_encode
 * would append for the same input. */
size_t smtp_body_encoded_len(const uint8_t *data, size_t len);

/* The BDAT form (RFC 3030): the same line-end conversion and final CRLF,
 * but no dot-stuffing and no terminator (a BDAT chunk is counted, not
 * delimited). smtp_body_chunk_len is the exact length for "BDAT <n>";
 * smtp_body_encode_chunk fails like smtp_body_encode. */
size_t smtp_body_chunk_len(const uint8_t *data, size_t len);
int smtp_body_encode_chunk(struct buf *out, const uint8_t *data, size_t len);

/* smtp_body_scan reads data once, 32 or 16 bytes at a time. It sets *eight_bit
 * when a byte is >= 0x80 (RFC 6152) and returns 1 when data already is
 * its BDAT form (every CR followed by LF, every LF preceded by CR, empty
 * or ending in CRLF): smtp_body_encode_chunk would copy it unchanged, so
 * the caller may send data as it is, and its length is the chunk's. */
int smtp_body_scan(const uint8_t *data, size_t len, int *eight_bit);

/* smtp_body_line_dot returns the offset of the first '.' at or after i
 * (i >= 1) whose previous byte is an LF, or len when there is none: in
 * SMTP data the only bytes where dot-stuffing and the end marker can be.
 * 32 or 16 bytes a step (the server's DATA reader jumps between them). */
size_t smtp_body_line_dot(const uint8_t *data, size_t len, size_t i);

#endif
