/* unit_smtp_body.c - byte-exact tests for engine/smtp_body.c. */
#include <stdlib.h>
#include <string.h>

#include "engine/smtp_body.h"
#include "tests/check.h"

struct body_case {
    const char *name;
    const char *in;
    size_t in_len;          /* 0: strlen(in) unless in is "" */
    const char *want;
};

static const struct body_case cases[] = {
    {"empty", "", 0, ".\r\n"},
    {"crlf kept", "a\r\nb\r\n", 0, "a\r\nb\r\n.\r\n"},
    {"final crlf added", "a\r\nb", 0, "a\r\nb\r\n.\r\n"},
    {"bare lf", "a\nb\n", 0, "a\r\nb\r\n.\r\n"},
    {"bare cr", "a\rb\r", 0, "a\r\nb\r\n.\r\n"},
    {"cr cr lf", "a\r\r\nb", 0, "a\r\n\r\nb\r\n.\r\n"},
    {"lf cr", "a\n\rb", 0, "a\r\n\r\nb\r\n.\r\n"},
    {"only crlf", "\r\n", 0, "\r\n.\r\n"},
    {"only lf", "\n", 0, "\r\n.\r\n"},
    {"only cr", "\r", 0, "\r\n.\r\n"},
    {"just dot", ".", 0, "..\r\n.\r\n"},
    {"dot crlf", ".\r\n", 0, "..\r\n.\r\n"},
    {"dot at start", ".hidden\r\n", 0, "..hidden\r\n.\r\n"},
    {"lf dot at start", "\n.", 0, "\r\n..\r\n.\r\n"},
    {"embedded terminator", "a\r\n.\r\nb\r\n", 0, "a\r\n..\r\nb\r\n.\r\n"},
    {"ends with terminator", "a\r\n.\r\n", 0, "a\r\n..\r\n.\r\n"},
    {"bare lf dot lf", "a\n.\nb", 0, "a\r\n..\r\nb\r\n.\r\n"},
    {"bare cr dot cr", "a\r.\rb", 0, "a\r\n..\r\nb\r\n.\r\n"},
    {"two dots", "..x\r\n", 0, "...x\r\n.\r\n"},
    {"dot mid line", "a.b\r\n.c", 0, "a.b\r\n..c\r\n.\r\n"},
    {"blank lines", "a\n\n\nb", 0, "a\r\n\r\n\r\nb\r\n.\r\n"},
    {"crlf crlf", "\r\n\r\n", 0, "\r\n\r\n.\r\n"},
    {"nul kept", "a\0b\n", 4, "a\0b\r\n.\r\n"},
};

static void test_cases(void)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct body_case *t = &cases[i];
        size_t in_len = t->in_len ? t->in_len : strlen(t->in);
        /* The NUL case: expected output length computed from the input. */
        size_t want_len = strcmp(t->name, "nul kept") == 0 ? 8 : strlen(t->want);
        struct buf b;
        buf_init(&b, 0);
        buf_append_str(&b, "X");            /* encoder appends after this */
        CHECK_INT(smtp_body_encode(&b, (const uint8_t *)t->in, in_len), 1);
        const uint8_t *got = buf_peek(&b) + 1;
        size_t got_len = buf_used(&b) - 1;
        if (buf_peek(&b)[0] != 'X')
            CHECK_FAILF("%s: clobbered existing output", t->name);
        if (got_len != want_len || memcmp(got, t->want, want_len) != 0)
            CHECK_FAILF("%s: got \"%.*s\" want \"%s\"", t->name, (int)got_len,
                        (const char *)got, t->want);
        size_t n = smtp_body_encoded_len((const uint8_t *)t->in, in_len);
        if (n != want_len)
            CHECK_FAILF("%s: encoded_len got %zu want %zu", t->name, n, want_len);
        buf_free(&b);
    }
    /* NULL data with zero length is allowed. */
    struct buf b;
    buf_init(&b, 0);
    CHECK_INT(smtp_body_encode(&b, NULL, 0), 1);
    CHECK_MEM(buf_peek(&b), buf_used(&b), ".\r\n");
    buf_free(&b);
}

/* unstuff: what a DATA receiver makes of the DATA form (RFC 5321 4.5.2):
 * the terminator dropped and one leading "." per line removed. That is
 * exactly the BDAT form. Returns its length. */
static size_t unstuff(const char *w, size_t n, char *out)
{
    size_t o = 0;
    n -= 3;                                 /* ".\r\n" */
    for (size_t i = 0; i < n; i++) {
        int line_start = i == 0 || (w[i - 1] == '\n' && i >= 2 && w[i - 2] == '\r');
        if (line_start && w[i] == '.')
            continue;
        out[o++] = w[i];
    }
    return o;
}

static void test_chunk_cases(void)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct body_case *t = &cases[i];
        size_t in_len = t->in_len ? t->in_len : strlen(t->in);
        size_t dlen = strcmp(t->name, "nul kept") == 0 ? 8 : strlen(t->want);
        char want[64];
        size_t want_len = unstuff(t->want, dlen, want);
        struct buf b;
        buf_init(&b, 0);
        buf_append_str(&b, "X");
        CHECK_INT(smtp_body_encode_chunk(&b, (const uint8_t *)t->in, in_len), 1);
        const uint8_t *got = buf_peek(&b) + 1;
        size_t got_len = buf_used(&b) - 1;
        if (got_len != want_len || memcmp(got, want, want_len) != 0)
            CHECK_FAILF("%s: chunk got \"%.*s\" want \"%.*s\"", t->name, (int)got_len,
                        (const char *)got, (int)want_len, want);
        size_t n = smtp_body_chunk_len((const uint8_t *)t->in, in_len);
        if (n != want_len)
            CHECK_FAILF("%s: chunk_len got %zu want %zu", t->name, n, want_len);
        buf_free(&b);
    }
    struct buf b;
    buf_init(&b, 0);
    CHECK_INT(smtp_body_encode_chunk(&b, NULL, 0), 1);
    CHECK_INT(buf_used(&b), 0);
    CHECK_INT(smtp_body_chunk_len(NULL, 0), 0);
    buf_free(&b);
}

/* Reference encoder written the slow, obvious way, byte by byte. */
static size_t slow_encode(const uint8_t *in, size_t n, uint8_t *out)
{
    size_t o = 0;
    int bol = 1;
    for (size_t i = 0; i < n; i++) {
        uint8_t ch = in[i];
        if (ch == '\r' || ch == '\n') {
            if (ch == '\r' && i + 1 < n && in[i + 1] == '\n')
                i++;
            out[o++] = '\r';
            out[o++] = '\n';
            bol = 1;
            continue;
        }
        if (bol && ch == '.')
            out[o++] = '.';
        out[o++] = ch;
        bol = 0;
    }
    if (n > 0 && !bol) {
        out[o++] = '\r';
        out[o++] = '\n';
    }
    memcpy(out + o, ".\r\n", 3);
    return o + 3;
}

/* Random inputs over the alphabet that matters, against the reference. */
static void test_random_vs_reference(void)
{
    static const uint8_t alpha[] = {'\r', '\n', '.', 'a', 'b'};
    uint32_t seed = 12345;
    uint8_t in[64], want[64 * 2 + 8];
    for (int iter = 0; iter < 20000; iter++) {
        seed = seed * 1103515245u + 12345u;
        size_t n = (seed >> 16) % sizeof(in);
        for (size_t i = 0; i < n; i++) {
            seed = seed * 1103515245u + 12345u;
            in[i] = alpha[(seed >> 16) % sizeof(alpha)];
        }
        size_t wn = slow_encode(in, n, want);
        struct buf b;
        buf_init(&b, 0);
        smtp_body_encode(&b, in, n);
        if (buf_used(&b) != wn || memcmp(buf_peek(&b), want, wn) != 0) {
            CHECK_FAILF("iteration %d: mismatch for input of %zu bytes", iter, n);
            buf_free(&b);
            break;
        }
        buf_free(&b);
    }
}

/* smtp_body_scan against the encoder: "canonical" exactly when the BDAT
 * form equals the input; eight_bit exactly when a byte is >= 0x80. Sizes
 * up to 64 cover whole words and the tail. */
static void test_scan_vs_encoder(void)
{
    static const uint8_t alpha[] = {'\r', '\n', '\r', '\n', '.', 'a', 'b', 0xc3};
    uint32_t seed = 777;
    uint8_t in[64];
    int canon_seen = 0;
    for (int iter = 0; iter < 50000; iter++) {
        seed = seed * 1103515245u + 12345u;
        size_t n = (seed >> 16) % sizeof(in);
        for (size_t i = 0; i < n; i++) {
            seed = seed * 1103515245u + 12345u;
            /* Mostly plain text so that canonical inputs come up too. */
            uint32_t r = (seed >> 16) % 64;
            in[i] = r < sizeof(alpha) ? alpha[r] : (uint8_t)('a' + r % 26);
        }
        if (n >= 2 && (seed >> 8) % 2) {
            in[n - 2] = '\r';
            in[n - 1] = '\n';
        }
        int eight = -1, want8 = 0;
        for (size_t i = 0; i < n; i++)
            want8 |= in[i] >= 0x80;
        int canon = smtp_body_scan(in, n, &eight);
        struct buf b;
        buf_init(&b, 0);
        smtp_body_encode_chunk(&b, in, n);
        int same = buf_used(&b) == n && (n == 0 || memcmp(buf_peek(&b), in, n) == 0);
        buf_free(&b);
        canon_seen += canon;
        if (canon != same || eight != want8) {
            CHECK_FAILF("iteration %d (%zu bytes): canonical %d, chunk same %d, 8bit %d want %d",
                        iter, n, canon, same, eight, want8);
            break;
        }
    }
    CHECK(canon_seen > 1000);
}

/* A body whose encoding exceeds the buffer limit fails cleanly. */
static void test_limit(void)
{
    struct buf b;
    buf_init(&b, 16);
    const char *in = "0123456789\n0123456789\n";
    CHECK_INT(smtp_body_encode(&b, (const uint8_t *)in, strlen(in)), 0);
    CHECK_INT(b.err, 1);
    buf_free(&b);

    buf_init(&b, 16);
    CHECK_INT(smtp_body_encode(&b, (const uint8_t *)"hi\n", 3), 1);
    CHECK_MEM(buf_peek(&b), buf_used(&b), "hi\r\n.\r\n");
    buf_free(&b);
}

/* A large body with long lines: exact output and length. */
static void test_large(void)
{
    size_t n = 1 << 20;
    uint8_t *in = malloc(n);
    for (size_t i = 0; i < n; i++)
        in[i] = (i % 100 == 99) ? '\n' : (i % 100 == 0 ? '.' : 'x');
    uint8_t *want = malloc(2 * n + 8);
    size_t wn = slow_encode(in, n, want);
    struct buf b;
    buf_init(&b, 0);
    CHECK_INT(smtp_body_encode(&b, in, n), 1);
    CHECK_INT(buf_used(&b), wn);
    CHECK(buf_used(&b) == wn && memcmp(buf_peek(&b), want, wn) == 0);
    buf_free(&b);
    free(in);
    free(want);
}

int main(void)
{
    RUN(test_cases);
    RUN(test_chunk_cases);
    RUN(test_random_vs_reference);
    RUN(test_scan_vs_encoder);
    RUN(test_limit);
    RUN(test_large);
    return check_finish();
}
