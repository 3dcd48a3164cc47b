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

/* to_buf: smtp_body_walk's pieces appended, as the SMTP client does with
 * the runs it copies. */
static void to_buf(void *ctx, const uint8_t *p, size_t n)
{
    buf_append(ctx, p, n);
}

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

/*
 * The differential test: every entry point against references written
 * byte by byte from RFC 5321 4.5.2 and smtp_body.h, over random inputs
 * that are mostly canonical text with the bytes that matter ('.', CR,
 * LF, 8-bit) sprinkled in, long lines, and special bytes at each offset
 * around the block boundaries of the vectorised code (16-byte blocks, and
 * 32-byte ones from offset 16 where the CPU has AVX2).
 */

/* ref_form writes the DATA form (dotted) or the BDAT form of in[0..n):
 * CRLF, bare CR and bare LF each end a line with CRLF; a line starting
 * with '.' gets one more in the DATA form; a missing final line end is
 * added; the DATA form ends with ".\r\n". Returns the length. */
static size_t ref_form(const uint8_t *in, size_t n, int dotted, uint8_t *out)
{
    size_t o = 0;
    int line_start = 1;
    for (size_t i = 0; i < n; i++) {
        if (in[i] == '\r' || in[i] == '\n') {
            if (in[i] == '\r' && i + 1 < n && in[i + 1] == '\n')
                i++;
            out[o++] = '\r';
            out[o++] = '\n';
            line_start = 1;
            continue;
        }
        if (dotted && line_start && in[i] == '.')
            out[o++] = '.';
        out[o++] = in[i];
        line_start = 0;
    }
    if (!line_start) {
        out[o++] = '\r';
        out[o++] = '\n';
    }
    if (dotted) {
        memcpy(out + o, ".\r\n", 3);
        o += 3;
    }
    return o;
}

/* ref_scan: canonical when every CR is followed by LF, every LF preceded
 * by CR, and the body is empty or ends in LF; eight_bit for any byte >=
 * 0x80. */
static int ref_scan(const uint8_t *in, size_t n, int *eight_bit)
{
    int canonical = n == 0 || in[n - 1] == '\n';
    *eight_bit = 0;
    for (size_t i = 0; i < n; i++) {
        if (in[i] >= 0x80)
            *eight_bit = 1;
        if (in[i] == '\r' && (i + 1 == n || in[i + 1] != '\n'))
            canonical = 0;
        if (in[i] == '\n' && (i == 0 || in[i - 1] != '\r'))
            canonical = 0;
    }
    return canonical;
}

/* diff_one checks every entry point on in[0..n) against the references;
 * returns 0 (after a FAIL line naming what) on the first difference.
 * It runs them on an exact-size heap copy, so that under ASan a read past
 * the end of the body fails the test. */
static int diff_exact(const char *what, const uint8_t *in, size_t n);

static int diff_one(const char *what, const uint8_t *in, size_t n)
{
    uint8_t *copy = n ? malloc(n) : NULL;
    if (n)
        memcpy(copy, in, n);
    int ok = diff_exact(what, copy, n);
    free(copy);
    return ok;
}

static int diff_exact(const char *what, const uint8_t *in, size_t n)
{
    static uint8_t want[2 * 4096 + 8];
    if (2 * n + 8 > sizeof(want))
        return 1;
    int e8 = -1, want8;
    int canon = smtp_body_scan(in, n, &e8);
    if (canon != ref_scan(in, n, &want8) || e8 != want8) {
        CHECK_FAILF("%s (%zu bytes): scan %d/%d, want %d/%d", what, n, canon, e8,
                    ref_scan(in, n, &want8), want8);
        return 0;
    }
    for (int dotted = 0; dotted <= 1; dotted++) {
        size_t wn = ref_form(in, n, dotted, want);
        size_t len = dotted ? smtp_body_encoded_len(in, n) : smtp_body_chunk_len(in, n);
        struct buf b[2];
        buf_init(&b[0], 0);
        buf_init(&b[1], 0);
        if (dotted) {
            smtp_body_encode(&b[0], in, n);
            smtp_body_walk(in, n, 1, canon, to_buf, &b[1]);   /* the SMTP client's path */
        } else {
            smtp_body_encode_chunk(&b[0], in, n);
            smtp_body_encode_chunk(&b[1], in, n);
        }
        int ok = len == wn;
        for (int k = 0; k < 2; k++)
            ok &= !b[k].err && buf_used(&b[k]) == wn && memcmp(buf_peek(&b[k]), want, wn) == 0;
        buf_free(&b[0]);
        buf_free(&b[1]);
        if (!ok) {
            CHECK_FAILF("%s (%zu bytes, %s form): output or length differs from the reference",
                        what, n, dotted ? "DATA" : "BDAT");
            return 0;
        }
    }
    return 1;
}

static uint32_t rnd(uint32_t *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    return *seed >> 8;
}

/* random_body fills in[0..n): text in CRLF lines of random length (up to
 * ~200, so long lines and whole blocks without a line end), each byte
 * with a small chance of being '.', CR, LF or 8-bit, lines often
 * starting with '.'. */
static void random_body(uint8_t *in, size_t n, uint32_t *seed)
{
    static const uint8_t special[] = {'.', '.', '\r', '\n', 0x80, 0xc3, 0xff};
    uint32_t odds = 1 + rnd(seed) % 64;      /* per body: 1 in odds is special */
    size_t line = 0, line_len = rnd(seed) % 200;
    for (size_t i = 0; i < n; i++) {
        if (line == line_len && i + 2 <= n) {
            in[i++] = '\r';
            in[i] = '\n';
            line = 0;
            line_len = rnd(seed) % 200;
            continue;
        }
        if (line == 0 && rnd(seed) % 4 == 0)
            in[i] = '.';
        else if (rnd(seed) % odds == 0)
            in[i] = special[rnd(seed) % sizeof(special)];
        else
            in[i] = (uint8_t)('a' + rnd(seed) % 26);
        line++;
    }
}

static void test_differential(void)
{
    static const char *const fixed[] = {"", ".", "\r", "\n", "\r\n", ".\r\n", "..",
                                        "\n.", "\r.", "a\r", "a\r\n\r", "\r\n.", "\n\r"};
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        if (!diff_one("fixed", (const uint8_t *)fixed[i], strlen(fixed[i])))
            return;
    if (!diff_one("NULL", NULL, 0))
        return;

    /* Each special byte, and each pair that forms a line end or a
     * stuffed dot, at every offset around the block boundaries, in
     * canonical text of lengths around the boundaries. */
    static const char *const pokes[] = {".", "\r", "\n", "\x80", "\r\n", "\n.", "\r\n.", "\n\r"};
    static const size_t sizes[] = {15, 16, 17, 18, 31, 32, 33, 34, 47, 48, 49, 50, 64, 65, 79, 80,
                                   81, 100, 112, 113};
    uint8_t in[4096];
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        size_t n = sizes[s];
        for (size_t p = 0; p < sizeof(pokes) / sizeof(pokes[0]); p++) {
            size_t pl = strlen(pokes[p]);
            for (size_t at = 0; at + pl <= n; at++) {
                for (int ending = 0; ending < 2; ending++) {
                    memset(in, 'x', n);
                    if (ending) {           /* canonical but for the poke */
                        in[n - 2] = '\r';
                        in[n - 1] = '\n';
                    }
                    memcpy(in + at, pokes[p], pl);
                    if (!diff_one("boundary", in, n))
                        return;
                }
            }
        }
    }

    uint32_t seed = 4242;
    int canon = 0;
    for (int iter = 0; iter < 20000; iter++) {
        size_t n = iter < 10000 ? rnd(&seed) % 80 : rnd(&seed) % sizeof(in);
        random_body(in, n, &seed);
        /* Half end with a line end, so that canonical bodies come up. */
        if (n >= 2 && rnd(&seed) % 2) {
            in[n - 2] = '\r';
            in[n - 1] = '\n';
        }
        int e8;
        canon += smtp_body_scan(in, n, &e8);
        if (!diff_one("random", in, n))
            return;
    }
    CHECK(canon > 2000);
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
    RUN(test_differential);
    RUN(test_limit);
    RUN(test_large);
    return check_finish();
}
