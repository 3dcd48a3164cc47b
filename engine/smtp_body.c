/* smtp_body.c - DATA body encoder; see smtp_body.h. */
#include "engine/smtp_body.h"

#include <string.h>

/*
 * find_eol returns the offset of the next CR or LF at or after i, or len.
 * The two memchr results are cached in *cr and *lf (len meaning "none
 * left") and recomputed only once the scan has passed them, so the whole
 * message is scanned at most once per byte value.
 */
static size_t find_eol(const uint8_t *d, size_t len, size_t i,
                       size_t *cr, size_t *lf)
{
    if (*cr < i) {
        const uint8_t *q = memchr(d + i, '\r', len - i);
        *cr = q ? (size_t)(q - d) : len;
    }
    if (*lf < i) {
        const uint8_t *q = memchr(d + i, '\n', len - i);
        *lf = q ? (size_t)(q - d) : len;
    }
    return *cr < *lf ? *cr : *lf;
}

/*
 * walk drives both the encoders and the length counts: it calls emit for
 * each output piece. Kept as one function so they can never disagree.
 * dotted: DATA form (dot-stuffing and the ".\r\n" terminator); else the
 * BDAT form, the same line ends without either.
 */
typedef void (*emit_fn)(void *ctx, const uint8_t *p, size_t n);

static void walk(const uint8_t *d, size_t len, int dotted, emit_fn emit, void *ctx)
{
    static const uint8_t crlf[2] = {'\r', '\n'};
    static const uint8_t dot[1] = {'.'};
    size_t i = 0;
    size_t cr = len, lf = len;  /* next CR / LF at or after i; len: none */
    int at_line_start = 1;

    if (len > 0) {
        const uint8_t *q = memchr(d, '\r', len);
        cr = q ? (size_t)(q - d) : len;
        q = memchr(d, '\n', len);
        lf = q ? (size_t)(q - d) : len;
    }
    while (i < len) {
        /* RFC 5321 4.5.2: a line starting with "." gets one more. */
        if (dotted && at_line_start && d[i] == '.')
            emit(ctx, dot, 1);
        size_t e = find_eol(d, len, i, &cr, &lf);
        if (e > i)
            emit(ctx, d + i, e - i);
        if (e == len) {
            at_line_start = 0;
            i = len;
            break;
        }
        /* CRLF, bare CR and bare LF all end the line with one CRLF. */
        if (d[e] == '\r' && e + 1 < len && d[e + 1] == '\n')
            i = e + 2;
        else
            i = e + 1;
        emit(ctx, crlf, 2);
        at_line_start = 1;
    }
    if (len > 0 && !at_line_start)
        emit(ctx, crlf, 2);
    static const uint8_t end[3] = {'.', '\r', '\n'};
    if (dotted)
        emit(ctx, end, 3);
}

static void emit_buf(void *ctx, const uint8_t *p, size_t n)
{
    buf_append(ctx, p, n);      /* sticky error; checked once at the end */
}

static void emit_count(void *ctx, const uint8_t *p, size_t n)
{
    (void)p;
    *(size_t *)ctx += n;
}

static size_t count(const uint8_t *data, size_t len, int dot)
{
    size_t n = 0;
    walk(data, len, dot, emit_count, &n);
    return n;
}

static int encode(struct buf *out, const uint8_t *data, size_t len, int dot)
{
    /* Grow once for the common case (few conversions) instead of doubling
     * through a large body; stay within the buffer's limit if it has one. */
    size_t hint = len + len / 64 + 8;
    if (hint > len && (out->limit == 0 || buf_used(out) + hint <= out->limit))
        buf_reserve(out, hint);
    walk(data, len, dot, emit_buf, out);
    return !out->err;
}

size_t smtp_body_encoded_len(const uint8_t *data, size_t len)
{
    return count(data, len, 1);
}

int smtp_body_encode(struct buf *out, const uint8_t *data, size_t len)
{
    return encode(out, data, len, 1);
}

size_t smtp_body_chunk_len(const uint8_t *data, size_t len)
{
    return count(data, len, 0);
}

int smtp_body_encode_chunk(struct buf *out, const uint8_t *data, size_t len)
{
    return encode(out, data, len, 0);
}

/* Bytes of w equal to c show as 0x80 in the result (possibly with false
 * positives above a true one, which the byte check below sorts out). */
static uint64_t bytes_eq(uint64_t w, uint8_t c)
{
    const uint64_t ones = 0x0101010101010101ULL, high = 0x8080808080808080ULL;
    uint64_t x = w ^ (ones * c);
    return (x - ones) & ~x & high;
}

int smtp_body_scan(const uint8_t *d, size_t len, int *eight_bit)
{
    const uint64_t high = 0x8080808080808080ULL;
    int canonical = 1, eight = 0;
    size_t i = 0;
    while (i < len) {
        /* Most words hold neither a line end nor an 8-bit byte: skip them
         * whole, look at the others byte by byte. */
        if (i + sizeof(uint64_t) <= len) {
            uint64_t w;
            memcpy(&w, d + i, sizeof(w));
            if (((w & high) | bytes_eq(w, '\r') | bytes_eq(w, '\n')) == 0) {
                i += sizeof(w);
                continue;
            }
        }
        size_t end = i + sizeof(uint64_t) < len ? i + sizeof(uint64_t) : len;
        for (; i < end; i++) {
            uint8_t ch = d[i];
            if (ch & 0x80)
                eight = 1;
            else if (ch == '\r' && (i + 1 == len || d[i + 1] != '\n'))
                canonical = 0;
            else if (ch == '\n' && (i == 0 || d[i - 1] != '\r'))
                canonical = 0;
        }
    }
    if (len > 0 && d[len - 1] != '\n')
        canonical = 0;  /* a final CRLF would be added */
    *eight_bit = eight;
    return canonical;
}
