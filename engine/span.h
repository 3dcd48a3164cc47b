/*
 * span.h - bounded reader over (pointer, length), in the manner of
 * BoringSSL's CBS.
 *
 * DESCRIPTION
 *   A struct span is a view of bytes the caller owns; it never allocates
 *   and never reads outside [p, p+len). Every span_get_* function returns 1
 *   on success and advances the span past what it returned, or returns 0
 *   and leaves both the span and its output arguments unmodified, so a
 *   parser can try an alternative after a failed read. Use it for every
 *   byte that comes from a peer.
 *
 * OWNERSHIP
 *   Spans borrow: the bytes must outlive every span that points at them.
 */
#ifndef TERN_ENGINE_SPAN_H
#define TERN_ENGINE_SPAN_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct span {
    const uint8_t *p;
    size_t len;
};

/* span_init points s at p[0..len). p may be NULL when len is 0. */
static inline void span_init(struct span *s, const uint8_t *p, size_t len)
{
    s->p = p;
    s->len = len;
}

/* span_skip drops n bytes from the front. Returns 0 if fewer remain. */
static inline int span_skip(struct span *s, size_t n)
{
    if (n > s->len)
        return 0;
    s->p += n;
    s->len -= n;
    return 1;
}

/* span_peek_u8 reads the first byte without consuming it. */
static inline int span_peek_u8(const struct span *s, uint8_t *out)
{
    if (s->len == 0)
        return 0;
    *out = s->p[0];
    return 1;
}

/* span_get_u8 reads and consumes one byte. */
static inline int span_get_u8(struct span *s, uint8_t *out)
{
    if (s->len == 0)
        return 0;
    *out = s->p[0];
    s->p++;
    s->len--;
    return 1;
}

/* span_get_bytes sets *out to the next n bytes and consumes them. */
static inline int span_get_bytes(struct span *s, struct span *out, size_t n)
{
    if (n > s->len)
        return 0;
    out->p = s->p;
    out->len = n;
    s->p += n;
    s->len -= n;
    return 1;
}

/* span_get_until sets *out to the bytes before the first occurrence of c
 * and consumes them; c itself stays at the front of s. Returns 0 when c
 * does not occur (the whole rest is not taken). */
static inline int span_get_until(struct span *s, struct span *out, uint8_t c)
{
    if (s->len == 0)
        return 0;
    const uint8_t *q = memchr(s->p, c, s->len);
    if (q == NULL)
        return 0;
    return span_get_bytes(s, out, (size_t)(q - s->p));
}

/* span_get_digits takes the longest run of ASCII digits, which must have
 * between min and max digits (inclusive); a longer run fails instead of
 * being split. */
static inline int span_get_digits(struct span *s, struct span *out,
                                  size_t min, size_t max)
{
    size_t n = 0;
    while (n < s->len && s->p[n] >= '0' && s->p[n] <= '9')
        n++;
    if (n < min || n > max)
        return 0;
    return span_get_bytes(s, out, n);
}

/* span_get_decimal_u64 reads a run of at least one digit as an unsigned
 * decimal number. Fails (consuming nothing) on overflow. */
static inline int span_get_decimal_u64(struct span *s, uint64_t *out)
{
    size_t n = 0;
    uint64_t v = 0;
    while (n < s->len && s->p[n] >= '0' && s->p[n] <= '9') {
        uint64_t d = (uint64_t)(s->p[n] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return 0;
        v = v * 10 + d;
        n++;
    }
    if (n == 0)
        return 0;
    *out = v;
    s->p += n;
    s->len -= n;
    return 1;
}

/* span_eq_nocase: the span equals the C string s, ASCII case-insensitive. */
static inline int span_eq_nocase(const struct span *s, const char *str)
{
    size_t n = strlen(str);
    if (n != s->len)
        return 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t a = s->p[i], b = (uint8_t)str[i];
        if (a >= 'A' && a <= 'Z')
            a = (uint8_t)(a + 32);
        if (b >= 'A' && b <= 'Z')
            b = (uint8_t)(b + 32);
        if (a != b)
            return 0;
    }
    return 1;
}

#endif
