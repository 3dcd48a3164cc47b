/*
 * unit_buf.c - engine/buf.c: appends and consumes keep the bytes in order;
 * buf_move hands over the storage when the destination is empty, copies
 * behind what it holds otherwise, honours the destination's limit and
 * carries an error over. text_u64 (engine/text.c), which buf_append_u64
 * uses, writes every number as snprintf's "%llu" would, around its short
 * cases (under 10, under 100). struct text_out builds a string from
 * pieces and empties it, for good, when a piece does not fit.
 */
#include <stdlib.h>
#include <string.h>

#include <stdio.h>

#include "engine/buf.h"
#include "engine/text.h"
#include "tests/check.h"

static void test_text_u64(void)
{
    static const unsigned long long v[] = {0, 1, 9, 10, 11, 42, 99, 100, 101, 999, 1000, 4096,
                                           1700000000000ULL, 18446744073709551615ULL};
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        char got[TEXT_U64_MAX], want[32];
        size_t n = text_u64(got, v[i]);
        snprintf(want, sizeof(want), "%llu", v[i]);
        CHECK_STR(got, want);
        CHECK_INT(n, strlen(want));
    }
}

static void test_text_out(void)
{
    char b[16];
    struct text_out o;
    text_out_init(&o, b, sizeof(b));
    CHECK_STR(b, "");
    text_out_str(&o, "mx:");
    text_out_u64(&o, 25);
    text_out_mem(&o, "|", 1);
    text_out_i64(&o, -1);
    text_out_i64(&o, 7);
    CHECK_STR(b, "mx:25|-17");
    CHECK_INT(o.len, 9);
    CHECK_INT(o.overflow, 0);
    text_out_str(&o, "123456");   /* 15 bytes and the NUL: fits exactly */
    CHECK_STR(b, "mx:25|-17123456");
    CHECK_INT(o.overflow, 0);
    text_out_str(&o, "x");        /* one more does not */
    CHECK_INT(o.overflow, 1);
    CHECK_STR(b, "");
    text_out_str(&o, "y");        /* and nothing comes back after */
    CHECK_STR(b, "");
    CHECK_INT(o.len, 0);
}

static void test_append_consume(void)
{
    struct buf b;
    buf_init(&b, 0);
    for (int i = 0; i < 1000; i++)
        CHECK_INT(buf_append_str(&b, "abc"), 1);
    buf_consume(&b, 2999);
    CHECK_MEM(buf_peek(&b), buf_used(&b), "c");
    buf_consume(&b, 1);
    CHECK_INT(buf_used(&b), 0);
    CHECK_INT(buf_append_u64(&b, 18446744073709551615ULL), 1);
    CHECK_MEM(buf_peek(&b), buf_used(&b), "18446744073709551615");
    buf_reset(&b);
    CHECK_INT(buf_append_u64(&b, 0), 1);
    CHECK_MEM(buf_peek(&b), buf_used(&b), "0");
    buf_free(&b);
}

static void test_move_swaps_into_empty(void)
{
    struct buf dst, src;
    buf_init(&dst, 0);
    buf_init(&src, 0);
    buf_append_str(&dst, "old");
    buf_consume(&dst, 3);   /* empty, with an allocation to give back */
    const uint8_t *dst_old = dst.data;
    buf_append_str(&src, "xxhello");
    buf_consume(&src, 2);
    const uint8_t *src_bytes = buf_peek(&src);
    CHECK_INT(buf_move(&dst, &src), 1);
    CHECK(buf_peek(&dst) == src_bytes);   /* no copy */
    CHECK_MEM(buf_peek(&dst), buf_used(&dst), "hello");
    CHECK_INT(buf_used(&src), 0);
    CHECK(src.data == dst_old);           /* the old storage is reused */
    CHECK_INT(buf_append_str(&src, "again"), 1);
    CHECK_MEM(buf_peek(&src), buf_used(&src), "again");
    buf_free(&dst);
    buf_free(&src);
}

static void test_move_appends_behind(void)
{
    struct buf dst, src;
    buf_init(&dst, 0);
    buf_init(&src, 0);
    buf_append_str(&dst, "ab");
    buf_append_str(&src, "cd");
    CHECK_INT(buf_move(&dst, &src), 1);
    CHECK_MEM(buf_peek(&dst), buf_used(&dst), "abcd");
    CHECK_INT(buf_used(&src), 0);
    /* Nothing to move: nothing changes. */
    CHECK_INT(buf_move(&dst, &src), 1);
    CHECK_MEM(buf_peek(&dst), buf_used(&dst), "abcd");
    buf_free(&dst);
    buf_free(&src);
}

static void test_move_limits_and_errors(void)
{
    struct buf dst, src;
    buf_init(&dst, 4);   /* at most 4 unread bytes */
    buf_init(&src, 0);
    buf_append_str(&src, "too long");
    CHECK_INT(buf_move(&dst, &src), 0);   /* not swapped past the limit */
    CHECK_INT(dst.err, 1);
    CHECK_INT(buf_used(&dst), 0);
    CHECK_INT(dst.limit, 4);
    buf_free(&dst);
    buf_init(&dst, 0);
    src.err = 1;   /* an append to src failed: dst must not look whole */
    CHECK_INT(buf_move(&dst, &src), 0);
    CHECK_INT(dst.err, 1);
    buf_free(&dst);
    buf_free(&src);
}

int main(void)
{
    RUN(test_text_u64);
    RUN(test_text_out);
    RUN(test_append_consume);
    RUN(test_move_swaps_into_empty);
    RUN(test_move_appends_behind);
    RUN(test_move_limits_and_errors);
    return check_finish();
}
