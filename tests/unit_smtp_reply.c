/* unit_smtp_reply.c - table tests for engine/smtp_reply.c. */
#include <stdlib.h>
#include <string.h>

#include "engine/smtp_reply.h"
#include "tests/check.h"

static enum smtp_reply_status parse_str(const char *s, struct smtp_reply *r,
                                        size_t *consumed, const char **err)
{
    return smtp_reply_parse((const uint8_t *)s, strlen(s), r, consumed, err);
}

struct good_case {
    const char *name;
    const char *in;
    int code;
    const char *esc;
    int nlines;
    const char *text;
    size_t consumed;        /* 0: strlen(in) */
};

static const struct good_case good[] = {
    {"single", "250 ok\r\n", 250, "", 1, "ok", 0},
    {"bare code", "250\r\n", 250, "", 1, "", 0},
    {"empty text", "250 \r\n", 250, "", 1, "", 0},
    {"multi", "250-mx.example\r\n250-PIPELINING\r\n250 SIZE 100\r\n", 250, "", 3,
     "mx.example\nPIPELINING\nSIZE 100", 0},
    {"multi bare continuation", "250-\r\n250 x\r\n", 250, "", 2, "\nx", 0},
    {"bare LF", "250 ok\n", 250, "", 1, "ok", 0},
    {"bare LF multi", "250-a\n250 b\r\n", 250, "", 2, "a\nb", 0},
    {"lowest", "200 x\r\n", 200, "", 1, "x", 0},
    {"highest", "559 x\r\n", 559, "", 1, "x", 0},
    {"354", "354 go ahead\r\n", 354, "", 1, "go ahead", 0},
    {"esc ok", "250 2.1.0 Sender ok\r\n", 250, "2.1.0", 1, "2.1.0 Sender ok", 0},
    {"esc 5xx", "550 5.7.1 denied\r\n", 550, "5.7.1", 1, "5.7.1 denied", 0},
    {"esc 4xx", "451 4.7.0 later\r\n", 451, "4.7.0", 1, "4.7.0 later", 0},
    {"esc end of line", "250 2.0.0\r\n", 250, "2.0.0", 1, "2.0.0", 0},
    {"esc max digits", "250 2.999.999 x\r\n", 250, "2.999.999", 1, "2.999.999 x", 0},
    {"esc class mismatch", "250 5.1.0 x\r\n", 250, "", 1, "5.1.0 x", 0},
    {"esc class 3", "354 3.0.0 x\r\n", 354, "", 1, "3.0.0 x", 0},
    {"esc trailing junk", "250 2.1.0x y\r\n", 250, "", 1, "2.1.0x y", 0},
    {"esc too many digits", "250 2.1000.0 y\r\n", 250, "", 1, "2.1000.0 y", 0},
    {"esc missing detail", "250 2.1. y\r\n", 250, "", 1, "2.1. y", 0},
    {"esc only first line", "250-ok\r\n250 2.1.0 x\r\n", 250, "", 2, "ok\n2.1.0 x", 0},
    {"esc multi first line", "550-5.1.1 no\r\n550 5.1.1 such user\r\n", 550, "5.1.1", 2,
     "5.1.1 no\n5.1.1 such user", 0},
    {"trailing junk", "250 ok\r\nJUNK", 250, "", 1, "ok", 8},
    {"two replies", "250 a\r\n354 b\r\n", 250, "", 1, "a", 7},
    {"NUL in text kept", "250 a\0b\r\n", 250, "", 1, "a", 0},
};

static void test_good(void)
{
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        const struct good_case *t = &good[i];
        size_t inlen = strlen(t->in);
        if (strcmp(t->name, "NUL in text kept") == 0)
            inlen = 9;
        struct smtp_reply r;
        size_t consumed = 12345;
        const char *err = NULL;
        enum smtp_reply_status st =
            smtp_reply_parse((const uint8_t *)t->in, inlen, &r, &consumed, &err);
        if (st != SMTP_REPLY_OK) {
            CHECK_FAILF("%s: status %d err %s", t->name, st, err ? err : "-");
            continue;
        }
        if (r.code != t->code)
            CHECK_FAILF("%s: code got %d want %d", t->name, r.code, t->code);
        if (strcmp(r.esc, t->esc) != 0)
            CHECK_FAILF("%s: esc got \"%s\" want \"%s\"", t->name, r.esc, t->esc);
        if (r.nlines != t->nlines)
            CHECK_FAILF("%s: nlines got %d want %d", t->name, r.nlines, t->nlines);
        if (strcmp(r.text, t->text) != 0)
            CHECK_FAILF("%s: text got \"%s\" want \"%s\"", t->name, r.text, t->text);
        if (strcmp(t->name, "NUL in text kept") == 0) {
            CHECK_INT(r.text_len, 3);
            CHECK(memcmp(r.text, "a\0b", 3) == 0);
        } else if (r.text_len != strlen(t->text)) {
            CHECK_FAILF("%s: text_len got %zu", t->name, r.text_len);
        }
        size_t want = t->consumed ? t->consumed : inlen;
        if (consumed != want)
            CHECK_FAILF("%s: consumed got %zu want %zu", t->name, consumed, want);
        CHECK_INT(r.truncated, 0);
    }
}

/* Every proper prefix of a valid reply needs more input, and leaves *out
 * alone. */
static void test_need_more_prefixes(void)
{
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        const struct good_case *t = &good[i];
        size_t full = t->consumed ? t->consumed : strlen(t->in);
        for (size_t k = 0; k < full; k++) {
            struct smtp_reply r;
            r.code = -7;
            size_t consumed = 999;
            const char *err = NULL;
            enum smtp_reply_status st =
                smtp_reply_parse((const uint8_t *)t->in, k, &r, &consumed, &err);
            if (st != SMTP_REPLY_NEED_MORE)
                CHECK_FAILF("%s prefix %zu: status %d err %s", t->name, k, st,
                            err ? err : "-");
            if (r.code != -7 || consumed != 999)
                CHECK_FAILF("%s prefix %zu: out touched", t->name, k);
        }
    }
}

struct bad_case {
    const char *name;
    const char *in;
    const char *err;
};

static const struct bad_case bad[] = {
    {"two digits", "25\r\n", "bad reply code"},
    {"two digits text", "25 ok\r\n", "bad reply code"},
    {"four digits", "2500 x\r\n", "bad reply code"},
    {"600", "600 x\r\n", "bad reply code"},
    {"199", "199 x\r\n", "bad reply code"},
    {"1xx", "100 x\r\n", "bad reply code"},
    {"letter", "2x0 x\r\n", "bad reply code"},
    {"second digit 6", "260 x\r\n", "bad reply code"},
    {"bad separator", "250X\r\n", "bad reply code"},
    {"tab separator", "250\tx\r\n", "bad reply code"},
    {"empty line", "\r\n", "bad reply code"},
    {"leading space", " 250 x\r\n", "bad reply code"},
    {"bad code in continuation", "250-a\r\n25x b\r\n", "bad reply code"},
    {"code mismatch", "250-a\r\n251 b\r\n", "code mismatch in multi-line reply"},
    {"class mismatch", "250-a\r\n550 b\r\n", "code mismatch in multi-line reply"},
    {"bare CR mid", "250 a\rb\r\n", "bare CR"},
    {"bare CR end", "250 ok\r\r\n", "bare CR"},
    {"bare CR continuation", "250-a\r\n250 b\rc\n", "bare CR"},
    /* Garbage under pipelining (Postfix smtp_chat.c scenario). */
    {"garbage before 2xx", "xyz\r\n250 ok\r\n", "bad reply code"},
};

static void test_bad(void)
{
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const struct bad_case *t = &bad[i];
        struct smtp_reply r;
        r.code = -7;
        size_t consumed = 999;
        const char *err = NULL;
        enum smtp_reply_status st = parse_str(t->in, &r, &consumed, &err);
        if (st != SMTP_REPLY_ERR) {
            CHECK_FAILF("%s: status %d, want ERR", t->name, st);
            continue;
        }
        if (err == NULL || strcmp(err, t->err) != 0)
            CHECK_FAILF("%s: err got \"%s\" want \"%s\"", t->name, err ? err : "(null)",
                        t->err);
        if (r.code != -7 || consumed != 999)
            CHECK_FAILF("%s: out touched on error", t->name);
    }
}

/* Build "250 xxx...\r\n" with exactly total bytes. */
static char *line_of(size_t total, const char *prefix, int with_crlf)
{
    char *s = malloc(total + 1);
    size_t pl = strlen(prefix);
    memcpy(s, prefix, pl);
    memset(s + pl, 'x', total - pl);
    if (with_crlf) {
        s[total - 2] = '\r';
        s[total - 1] = '\n';
    }
    s[total] = '\0';
    return s;
}

static void test_line_limit(void)
{
    struct smtp_reply r;
    size_t consumed = 0;
    const char *err = NULL;

    char *s = line_of(SMTP_REPLY_LINE_MAX, "250 ", 1);
    CHECK_INT(parse_str(s, &r, &consumed, &err), SMTP_REPLY_OK);
    CHECK_INT(consumed, SMTP_REPLY_LINE_MAX);
    CHECK_INT(r.truncated, 1);
    CHECK_INT(r.text_len, SMTP_REPLY_TEXT_MAX - 1);
    CHECK_INT(strlen(r.text), SMTP_REPLY_TEXT_MAX - 1);
    free(s);

    s = line_of(SMTP_REPLY_LINE_MAX + 1, "250 ", 1);
    err = NULL;
    CHECK_INT(parse_str(s, &r, &consumed, &err), SMTP_REPLY_ERR);
    CHECK_STR(err, "line too long");
    free(s);

    /* Rejected before the line ends: no LF within the limit. */
    s = line_of(SMTP_REPLY_LINE_MAX, "250 ", 0);
    err = NULL;
    CHECK_INT(parse_str(s, &r, &consumed, &err), SMTP_REPLY_ERR);
    CHECK_STR(err, "line too long");
    s[SMTP_REPLY_LINE_MAX - 1] = '\0';
    CHECK_INT(parse_str(s, &r, &consumed, &err), SMTP_REPLY_NEED_MORE);
    free(s);

    /* A bare-LF line of exactly LINE_MAX bytes is fine, one more is not. */
    s = line_of(SMTP_REPLY_LINE_MAX, "250 ", 0);
    s[SMTP_REPLY_LINE_MAX - 1] = '\n';
    CHECK_INT(parse_str(s, &r, &consumed, &err), SMTP_REPLY_OK);
    free(s);
}

static char *many_lines(int n, int last_final)
{
    char *s = malloc((size_t)n * 8 + 1);
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        int fin = last_final && i == n - 1;
        memcpy(s + off, fin ? "250 l\r\n" : "250-l\r\n", 7);
        off += 7;
    }
    s[off] = '\0';
    return s;
}

static void test_lines_limit(void)
{
    struct smtp_reply r;
    size_t consumed = 0;
    const char *err = NULL;

    char *s = many_lines(SMTP_REPLY_LINES_MAX, 1);
    CHECK_INT(parse_str(s, &r, &consumed, &err), SMTP_REPLY_OK);
    CHECK_INT(r.nlines, SMTP_REPLY_LINES_MAX);
    CHECK_INT(consumed, strlen(s));
    free(s);

    s = many_lines(SMTP_REPLY_LINES_MAX + 1, 1);
    err = NULL;
    CHECK_INT(parse_str(s, &r, &consumed, &err), SMTP_REPLY_ERR);
    CHECK_STR(err, "too many lines");
    free(s);

    /* Detected before the reply is complete. */
    s = many_lines(SMTP_REPLY_LINES_MAX, 0);
    err = NULL;
    CHECK_INT(parse_str(s, &r, &consumed, &err), SMTP_REPLY_ERR);
    CHECK_STR(err, "too many lines");
    free(s);
    s = many_lines(SMTP_REPLY_LINES_MAX - 1, 0);
    CHECK_INT(parse_str(s, &r, &consumed, &err), SMTP_REPLY_NEED_MORE);
    free(s);
}

static void test_truncation_lines(void)
{
    /* 20 lines of 100 text bytes: text is cut, iteration stops early. */
    char s[20 * 106 + 1];
    size_t off = 0;
    for (int i = 0; i < 20; i++) {
        memcpy(s + off, i == 19 ? "250 " : "250-", 4);
        memset(s + off + 4, (char)('a' + i), 100);
        memcpy(s + off + 104, "\r\n", 2);
        off += 106;
    }
    s[off] = '\0';
    struct smtp_reply r;
    size_t consumed = 0, n = 0;
    const char *err = NULL;
    CHECK_INT(parse_str(s, &r, &consumed, &err), SMTP_REPLY_OK);
    CHECK_INT(r.nlines, 20);
    CHECK_INT(r.truncated, 1);
    CHECK_INT(r.text_len, SMTP_REPLY_TEXT_MAX - 1);
    /* 1023 = 10 full lines (10*100 + 9 '\n') + '\n' + 13 bytes of line 10. */
    const char *l = smtp_reply_line(&r, 9, &n);
    CHECK(l != NULL);
    CHECK_INT(n, 100);
    CHECK(l && l[0] == 'j');
    l = smtp_reply_line(&r, 10, &n);
    CHECK(l != NULL);
    CHECK_INT(n, 13);
    CHECK(smtp_reply_line(&r, 11, &n) == NULL);
    CHECK(smtp_reply_line(&r, 19, &n) == NULL);
}

static void test_line_iter(void)
{
    struct smtp_reply r;
    size_t consumed = 0, n = 0;
    const char *err = NULL;
    CHECK_INT(parse_str("250-mx\r\n250-\r\n250 SIZE 10\r\n", &r, &consumed, &err),
              SMTP_REPLY_OK);
    const char *l = smtp_reply_line(&r, 0, &n);
    CHECK_MEM(l, n, "mx");
    l = smtp_reply_line(&r, 1, &n);
    CHECK_MEM(l, n, "");
    l = smtp_reply_line(&r, 2, &n);
    CHECK_MEM(l, n, "SIZE 10");
    CHECK(smtp_reply_line(&r, 3, &n) == NULL);
    CHECK(smtp_reply_line(&r, -1, &n) == NULL);

    CHECK_INT(parse_str("220\r\n", &r, &consumed, &err), SMTP_REPLY_OK);
    l = smtp_reply_line(&r, 0, &n);
    CHECK_MEM(l, n, "");
    CHECK(smtp_reply_line(&r, 1, &n) == NULL);
    CHECK_INT(smtp_reply_class(&r), 2);
}

/* The esc of one parse must not leak into the next (the Postfix stale-ESC
 * bug): reuse one struct across replies. */
static void test_no_stale_fields(void)
{
    struct smtp_reply r;
    size_t consumed = 0;
    const char *err = NULL;
    CHECK_INT(parse_str("550 5.1.1 nope\r\n", &r, &consumed, &err), SMTP_REPLY_OK);
    CHECK_STR(r.esc, "5.1.1");
    CHECK_INT(parse_str("550 nope\r\n", &r, &consumed, &err), SMTP_REPLY_OK);
    CHECK_STR(r.esc, "");
    CHECK_STR(r.text, "nope");
    CHECK_INT(r.nlines, 1);
}

int main(void)
{
    RUN(test_good);
    RUN(test_need_more_prefixes);
    RUN(test_bad);
    RUN(test_line_limit);
    RUN(test_lines_limit);
    RUN(test_truncation_lines);
    RUN(test_line_iter);
    RUN(test_no_stale_fields);
    return check_finish();
}
