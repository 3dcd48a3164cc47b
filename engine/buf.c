/* buf.c - growable byte buffer; see buf.h. */
#include "engine/buf.h"

#include "engine/text.h"

#include <stdlib.h>
#include <string.h>

void buf_init(struct buf *b, size_t limit)
{
    memset(b, 0, sizeof(*b));
    b->limit = limit;
}

void buf_free(struct buf *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

/* Make room for n bytes at len, sliding unread bytes to the front first
 * when that is enough (cheaper than growing). */
uint8_t *buf_reserve(struct buf *b, size_t n)
{
    if (b->err)
        return NULL;
    if (b->limit && buf_used(b) + n > b->limit) {
        b->err = 1;
        return NULL;
    }
    if (b->len + n <= b->cap)
        return b->data + b->len;
    if (b->off > 0 && buf_used(b) + n <= b->cap) {
        memmove(b->data, b->data + b->off, buf_used(b));
        b->len -= b->off;
        b->off = 0;
        return b->data + b->len;
    }
    size_t need = buf_used(b) + n;
    size_t ncap = b->cap ? b->cap : 256;
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2) {
            b->err = 1;
            return NULL;
        }
        ncap *= 2;
    }
    uint8_t *nd = malloc(ncap);
    if (nd == NULL) {
        b->err = 1;
        return NULL;
    }
    if (buf_used(b))
        memcpy(nd, b->data + b->off, buf_used(b));
    free(b->data);
    b->len -= b->off;
    b->off = 0;
    b->data = nd;
    b->cap = ncap;
    return b->data + b->len;
}

void buf_commit(struct buf *b, size_t n)
{
    b->len += n;
}

int buf_append(struct buf *b, const void *p, size_t n)
{
    if (n == 0)
        return !b->err;
    uint8_t *d = buf_reserve(b, n);
    if (d == NULL)
        return 0;
    memcpy(d, p, n);
    b->len += n;
    return 1;
}

int buf_append_str(struct buf *b, const char *s)
{
    return buf_append(b, s, strlen(s));
}

int buf_append_u64(struct buf *b, uint64_t v)
{
    char tmp[TEXT_U64_MAX];
    return buf_append(b, tmp, text_u64(tmp, v));
}

void buf_consume(struct buf *b, size_t n)
{
    b->off += n;
    if (b->off >= b->len)
        b->off = b->len = 0;
}

int buf_move(struct buf *dst, struct buf *src)
{
    if (src->err) {
        dst->err = 1;
        return 0;
    }
    if (buf_used(dst) == 0 && !dst->err && (dst->limit == 0 || buf_used(src) <= dst->limit)) {
        struct buf t = *dst;
        dst->data = src->data;
        dst->off = src->off;
        dst->len = src->len;
        dst->cap = src->cap;
        src->data = t.data;
        src->cap = t.cap;
        src->off = src->len = 0;
        return 1;
    }
    int ok = buf_append(dst, buf_peek(src), buf_used(src));
    buf_reset(src);
    return ok;
}

void buf_reset(struct buf *b)
{
    b->off = b->len = 0;
    b->err = 0;
}
