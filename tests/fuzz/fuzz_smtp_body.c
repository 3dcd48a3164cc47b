/*
 * fuzz_smtp_body.c - libFuzzer target for engine/smtp_body.c.
 *
 * The input is the message body. Invariants checked (abort on violation):
 *   - each length count equals the length of its encoder's output;
 *   - smtp_body_walk (DATA form) with smtp_body_scan's answer gives what
 *     smtp_body_encode writes;
 *   - smtp_body_scan says canonical exactly when the BDAT form is the
 *     input unchanged, and 8-bit exactly when a byte is >= 0x80;
 *   - the BDAT form is canonical (so encoding it again changes nothing);
 *   - the DATA form ends with ".\r\n", and with that terminator dropped
 *     and one leading '.' removed from each line (what a receiver does,
 *     RFC 5321 4.5.2) it is the BDAT form.
 * The body is copied to an exact-size allocation, so any read past its
 * end is caught by ASan.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/smtp_body.h"

static void to_buf(void *ctx, const uint8_t *p, size_t n)
{
    buf_append(ctx, p, n);
}

static int same(const struct buf *b, const uint8_t *p, size_t n)
{
    return buf_used(b) == n && (n == 0 || memcmp(buf_peek(b), p, n) == 0);
}

/* check_data: the DATA form d[0..n) against the BDAT form c[0..cn). */
static void check_data(const uint8_t *d, size_t n, const uint8_t *c, size_t cn)
{
    if (n < 3 || memcmp(d + n - 3, ".\r\n", 3) != 0)
        abort();
    size_t o = 0;
    for (size_t i = 0; i < n - 3; i++) {
        int line_start = i == 0 || (i >= 2 && d[i - 2] == '\r' && d[i - 1] == '\n');
        if (line_start && d[i] == '.')
            continue;
        if (o >= cn || d[i] != c[o++])
            abort();
    }
    if (o != cn)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *in = size ? malloc(size) : NULL;
    if (size && in == NULL)
        return 0;
    if (size)
        memcpy(in, data, size);
    struct buf dot, dot2, chunk, again;
    buf_init(&dot, 0);
    buf_init(&dot2, 0);
    buf_init(&chunk, 0);
    buf_init(&again, 0);

    int e8 = -1, any8 = 0;
    for (size_t i = 0; i < size; i++)
        any8 |= in[i] >= 0x80;
    int canonical = smtp_body_scan(in, size, &e8);
    if (e8 != any8)
        abort();
    smtp_body_walk(in, size, 1, canonical, to_buf, &dot2);
    if (!smtp_body_encode(&dot, in, size) || dot2.err || !smtp_body_encode_chunk(&chunk, in, size))
        abort();
    if (smtp_body_encoded_len(in, size) != buf_used(&dot) ||
        smtp_body_chunk_len(in, size) != buf_used(&chunk) ||
        !same(&dot2, buf_peek(&dot), buf_used(&dot)) || canonical != same(&chunk, in, size))
        abort();
    if (!smtp_body_scan(buf_peek(&chunk), buf_used(&chunk), &e8) ||
        !smtp_body_encode_chunk(&again, buf_peek(&chunk), buf_used(&chunk)) ||
        !same(&again, buf_peek(&chunk), buf_used(&chunk)))
        abort();
    check_data(buf_peek(&dot), buf_used(&dot), buf_peek(&chunk), buf_used(&chunk));

    buf_free(&dot);
    buf_free(&dot2);
    buf_free(&chunk);
    buf_free(&again);
    free(in);
    return 0;
}
