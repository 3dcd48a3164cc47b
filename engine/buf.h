/*
 * buf.h - growable byte buffer with a read cursor and a sticky error bit.
 *
 * DESCRIPTION
 *   struct buf holds bytes [off, len) of data[]. Writers append at len;
 *   readers consume from off. Appends never fail loudly: on allocation
 *   failure or when the buffer would exceed its cap, the sticky `err` bit
 *   is set and later appends are ignored, so a caller can build a whole
 *   command and check once (the CBB idea).
 *
 * OWNERSHIP
 *   The buffer owns data[]. buf_free() releases it and accepts a zeroed
 *   struct. Pointers returned by buf_peek() are valid until the next
 *   append or buf_compact().
 */
#ifndef TERN_ENGINE_BUF_H
#define TERN_ENGINE_BUF_H

#include <stddef.h>
#include <stdint.h>

struct buf {
    uint8_t *data;
    size_t off;     /* first unread byte */
    size_t len;     /* one past the last written byte */
    size_t cap;     /* allocated size of data */
    size_t limit;   /* maximum len - off; 0 means no limit */
    int err;        /* sticky: an append failed */
};

/* buf_init prepares an empty buffer that may hold at most `limit` unread
 * bytes (0: unlimited). It allocates nothing. */
void buf_init(struct buf *b, size_t limit);
void buf_free(struct buf *b);

/* buf_append copies n bytes. On failure sets b->err and returns 0;
 * returns 1 on success. */
int buf_append(struct buf *b, const void *p, size_t n);
int buf_append_str(struct buf *b, const char *s);
/* buf_append_u64 appends the decimal form of v. */
int buf_append_u64(struct buf *b, uint64_t v);
/* buf_reserve makes room for n more bytes and returns a pointer to them,
 * or NULL (and sets err). Call buf_commit(b, k) after writing k <= n bytes. */
uint8_t *buf_reserve(struct buf *b, size_t n);
void buf_commit(struct buf *b, size_t n);

static inline size_t buf_used(const struct buf *b) { return b->len - b->off; }
static inline const uint8_t *buf_peek(const struct buf *b)
{
    static const uint8_t empty[1];
    return b->data ? b->data + b->off : empty;
}
/* buf_consume drops n unread bytes from the front (n <= buf_used). */
void buf_consume(struct buf *b, size_t n);
/* buf_reset empties the buffer and clears err, keeping the allocation. */
void buf_reset(struct buf *b);
/* buf_move appends every unread byte of src to dst and empties src. When
 * dst holds nothing and src's bytes fit dst's limit, the two swap their
 * storage instead of copying (src keeps dst's old allocation for reuse;
 * each keeps its own limit). Returns 0 and sets dst->err on failure, or
 * when src->err was set. */
int buf_move(struct buf *dst, struct buf *src);

#endif
