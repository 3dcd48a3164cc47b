/* smtp_body.c - DATA body encoder; see smtp_body.h. */
#include "engine/smtp_body.h"

#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_AVX2_PATH 1
#endif

#define VEC  16     /* bytes per SSE2 block */
#define VEC2 32     /* bytes per AVX2 block */

/*
 * The body's two scans (smtp_body_scan, line_dot) read every byte of
 * every message; with 100 KiB bodies they were ~8% of the engine's CPU
 * at 16 bytes a step. Where the CPU has AVX2 (checked on each call: a
 * load of libgcc's CPU model) they take 32 bytes a step; the 16-byte and
 * bytewise loops finish what is left.
 */
#ifdef HAVE_AVX2_PATH
static int have_avx2(void)
{
    return __builtin_cpu_supports("avx2");
}

/* line_dot_avx2 looks for an LF followed by '.' from candidate LF
 * position *k on, in whole 33-byte windows. Returns 1 with *k at the
 * '.', or 0 with *k where the windows ran out. */
__attribute__((target("avx2")))
static int line_dot_avx2(const uint8_t *d, size_t len, size_t *k)
{
    const __m256i lf = _mm256_set1_epi8('\n'), dot = _mm256_set1_epi8('.');
    size_t at = *k;
    for (; at + VEC2 + 1 <= len; at += VEC2) {
        __m256i a = _mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)(d + at)), lf);
        __m256i b = _mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)(d + at + 1)), dot);
        unsigned m = (unsigned)_mm256_movemask_epi8(_mm256_and_si256(a, b));
        if (m) {
            *k = at + (size_t)__builtin_ctz(m) + 1;
            return 1;
        }
    }
    *k = at;
    return 0;
}

/* scan_avx2 is smtp_body_scan's test over d[i..) in whole 32-byte
 * blocks (i >= 1: each block's previous bytes are loaded one byte back);
 * ORs its findings into *bad and *high and returns where it stopped. */
__attribute__((target("avx2")))
static size_t scan_avx2(const uint8_t *d, size_t len, size_t i, unsigned *bad, unsigned *high)
{
    const __m256i cr = _mm256_set1_epi8('\r'), lf = _mm256_set1_epi8('\n');
    __m256i vbad = _mm256_setzero_si256(), vhigh = _mm256_setzero_si256();
    for (; i + VEC2 <= len; i += VEC2) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(d + i));
        __m256i prev = _mm256_loadu_si256((const __m256i *)(d + i - 1));
        vbad = _mm256_or_si256(vbad, _mm256_xor_si256(_mm256_cmpeq_epi8(prev, cr),
                                                      _mm256_cmpeq_epi8(v, lf)));
        vhigh = _mm256_or_si256(vhigh, v);
    }
    *bad |= (unsigned)_mm256_movemask_epi8(vbad);
    *high |= _mm256_movemask_epi8(vhigh) ? 0x80u : 0u;
    return i;
}
#endif

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
 * The walks drive both the encoders and the length counts: they call emit
 * for each output piece, so that the two can never disagree. dotted: DATA
 * form (dot-stuffing and the ".\r\n" terminator); else the BDAT form, the
 * same line ends without either.
 *
 * walk is the general one, for a body with any line ends: a piece per
 * line. Bodies already canonical take walk_canonical below instead.
 */
typedef smtp_body_emit_fn emit_fn;

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

/*
 * line_dot returns the offset of the next '.' at or after i (i >= 1) that
 * starts a line, i.e. follows an LF, or len when there is none. In a
 * canonical body these are the only bytes dot-stuffing touches, and they
 * are rare: the search runs 16 bytes at a time, comparing the block with
 * LF and the block one byte further on with '.'.
 */
static size_t line_dot(const uint8_t *d, size_t len, size_t i)
{
    if (i >= len)
        return len;
    size_t k = i - 1;           /* candidate LF positions: k, k + 1, ... */
#ifdef HAVE_AVX2_PATH
    if (have_avx2() && line_dot_avx2(d, len, &k))
        return k;
#endif
#ifdef __SSE2__
    const __m128i lf = _mm_set1_epi8('\n'), dot = _mm_set1_epi8('.');
    for (; k + VEC + 1 <= len; k += VEC) {
        __m128i a = _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(d + k)), lf);
        __m128i b = _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(d + k + 1)), dot);
        unsigned m = (unsigned)_mm_movemask_epi8(_mm_and_si128(a, b));
        if (m)
            return k + (size_t)__builtin_ctz(m) + 1;
    }
#endif
    /* The tail, and the whole body without SSE2: an LF at a time. */
    while (k + 1 < len) {
        const uint8_t *q = memchr(d + k, '\n', len - 1 - k);
        if (q == NULL)
            break;
        k = (size_t)(q - d);
        if (d[k + 1] == '.')
            return k + 1;
        k++;
    }
    return len;
}

/*
 * walk_canonical is walk for a canonical body (smtp_body_scan returned 1):
 * every line end already is CRLF and the body ends with one (or is
 * empty), so the DATA form is the body with a '.' before each line that
 * starts with '.', then the terminator. It emits a run per stuffed dot,
 * not a piece per line.
 */
static void walk_canonical(const uint8_t *d, size_t len, emit_fn emit, void *ctx)
{
    static const uint8_t dot[1] = {'.'};
    static const uint8_t end[3] = {'.', '\r', '\n'};
    size_t from = 0;
    if (len > 0 && d[0] == '.')
        emit(ctx, dot, 1);
    for (size_t at = line_dot(d, len, 1); at < len; at = line_dot(d, len, at + 1)) {
        emit(ctx, d + from, at - from);
        emit(ctx, dot, 1);
        from = at;              /* the line's own '.' starts the next run */
    }
    if (len > from)
        emit(ctx, d + from, len - from);
    emit(ctx, end, 3);
}

/* walk_any picks the walk; canonical is smtp_body_scan's answer for d.
 * A canonical body's BDAT form is the body itself: one piece. */
static void walk_any(const uint8_t *d, size_t len, int dotted, int canonical,
                     emit_fn emit, void *ctx)
{
    if (!canonical)
        walk(d, len, dotted, emit, ctx);
    else if (dotted)
        walk_canonical(d, len, emit, ctx);
    else if (len > 0)
        emit(ctx, d, len);
}

void smtp_body_walk(const uint8_t *data, size_t len, int dotted, int canonical,
                    smtp_body_emit_fn emit, void *ctx)
{
    walk_any(data, len, dotted, canonical, emit, ctx);
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
    int eight;
    size_t n = 0;
    walk_any(data, len, dot, smtp_body_scan(data, len, &eight), emit_count, &n);
    return n;
}

static int encode(struct buf *out, const uint8_t *data, size_t len, int dot, int canonical)
{
    /* Grow once for the common case (few conversions) instead of doubling
     * through a large body; stay within the buffer's limit if it has one. */
    size_t hint = len + len / 64 + 8;
    if (hint > len && (out->limit == 0 || buf_used(out) + hint <= out->limit))
        buf_reserve(out, hint);
    walk_any(data, len, dot, canonical, emit_buf, out);
    return !out->err;
}

size_t smtp_body_encoded_len(const uint8_t *data, size_t len)
{
    return count(data, len, 1);
}

int smtp_body_encode(struct buf *out, const uint8_t *data, size_t len)
{
    int eight;
    return encode(out, data, len, 1, smtp_body_scan(data, len, &eight));
}

size_t smtp_body_chunk_len(const uint8_t *data, size_t len)
{
    return count(data, len, 0);
}

int smtp_body_encode_chunk(struct buf *out, const uint8_t *data, size_t len)
{
    int eight;
    return encode(out, data, len, 0, smtp_body_scan(data, len, &eight));
}

/*
 * scan_bytes is the scan one byte at a time over d[i..len): the tail
 * after the last whole block, and the whole body without SSE2. A byte is
 * out of place when "the byte before is CR" and "this byte is LF"
 * disagree: a CR not followed by LF, or an LF not preceded by CR.
 */
static void scan_bytes(const uint8_t *d, size_t len, size_t i, unsigned *bad, unsigned *high)
{
    uint8_t prev = i > 0 ? d[i - 1] : 0;
    for (; i < len; i++) {
        *bad |= (prev == '\r') != (d[i] == '\n');
        *high |= d[i];
        prev = d[i];
    }
}

int smtp_body_scan(const uint8_t *d, size_t len, int *eight_bit)
{
    unsigned bad = 0, high = 0;     /* high: OR of all bytes; bit 7 = 8-bit */
    size_t i = 0;
#ifdef __SSE2__
    /* The byte-wise test above, 16 bytes at once and without a branch:
     * compare "previous byte is CR" (the block loaded one byte earlier)
     * with "byte is LF", and OR every byte together for bit 7. For the
     * first block the previous bytes are the block shifted by one, with
     * a zero (not CR) in front of the body. */
    if (len >= VEC) {
        const __m128i cr = _mm_set1_epi8('\r'), lf = _mm_set1_epi8('\n');
        __m128i v = _mm_loadu_si128((const __m128i *)d);
        __m128i vbad = _mm_xor_si128(_mm_cmpeq_epi8(_mm_slli_si128(v, 1), cr),
                                     _mm_cmpeq_epi8(v, lf));
        __m128i vhigh = v;
        i = VEC;
#ifdef HAVE_AVX2_PATH
        if (have_avx2())
            i = scan_avx2(d, len, i, &bad, &high);
#endif
        for (; i + VEC <= len; i += VEC) {
            v = _mm_loadu_si128((const __m128i *)(d + i));
            __m128i prev = _mm_loadu_si128((const __m128i *)(d + i - 1));
            vbad = _mm_or_si128(vbad, _mm_xor_si128(_mm_cmpeq_epi8(prev, cr),
                                                    _mm_cmpeq_epi8(v, lf)));
            vhigh = _mm_or_si128(vhigh, v);
        }
        bad |= (unsigned)_mm_movemask_epi8(vbad);
        high |= _mm_movemask_epi8(vhigh) ? 0x80 : 0;
    }
#endif
    scan_bytes(d, len, i, &bad, &high);
    /* A final CR or LF-less end would get a CRLF added. (A final CR also
     * has no LF after it; the test above never sees that position.) */
    if (len > 0 && d[len - 1] != '\n')
        bad = 1;
    *eight_bit = (high & 0x80) != 0;
    return bad == 0;
}

size_t smtp_body_line_dot(const uint8_t *data, size_t len, size_t i)
{
    return line_dot(data, len, i < 1 ? 1 : i);
}
