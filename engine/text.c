/*
 * text.c - small string helpers; see text.h.
 */
#include "engine/text.h"

#include <string.h>

#define TEXT_FNV_BASIS 1469598103934665603ULL
#define TEXT_FNV_PRIME 1099511628211ULL

uint64_t text_hash_lower(const char *s, uint64_t salt)
{
    uint64_t h = TEXT_FNV_BASIS ^ salt;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch >= 'A' && ch <= 'Z')
            ch = (unsigned char)(ch + 32);
        h = (h ^ ch) * TEXT_FNV_PRIME;
    }
    return h;
}

int text_copy_n(char *dst, size_t cap, const char *src, size_t n)
{
    if (n == 0 || n >= cap)
        return 0;
    memcpy(dst, src, n);
    dst[n] = '\0';
    return 1;
}

size_t text_u64(char out[TEXT_U64_MAX], uint64_t v)
{
    /* Most numbers written are RESP argument lengths under 100: an ack
     * writes ~40 per message. */
    if (v < 10) {
        out[0] = (char)('0' + v);
        out[1] = '\0';
        return 1;
    }
    if (v < 100) {
        out[0] = (char)('0' + v / 10);
        out[1] = (char)('0' + v % 10);
        out[2] = '\0';
        return 2;
    }
    char tmp[TEXT_U64_MAX];
    size_t i = sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    size_t n = sizeof(tmp) - i;
    memcpy(out, tmp + i, n);
    out[n] = '\0';
    return n;
}

void text_out_init(struct text_out *o, char *buf, size_t cap)
{
    o->buf = buf;
    o->cap = cap;
    o->len = 0;
    o->overflow = 0;
    buf[0] = '\0';
}

void text_out_mem(struct text_out *o, const char *p, size_t n)
{
    if (o->overflow)
        return;
    if (n >= o->cap - o->len) {
        o->overflow = 1;
        o->len = 0;
        o->buf[0] = '\0';
        return;
    }
    memcpy(o->buf + o->len, p, n);
    o->len += n;
    o->buf[o->len] = '\0';
}

void text_out_str(struct text_out *o, const char *s)
{
    text_out_mem(o, s, strlen(s));
}

void text_out_u64(struct text_out *o, uint64_t v)
{
    char d[TEXT_U64_MAX];
    text_out_mem(o, d, text_u64(d, v));
}

void text_out_i64(struct text_out *o, int64_t v)
{
    if (v < 0)
        text_out_mem(o, "-", 1);
    text_out_u64(o, v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v);
}
