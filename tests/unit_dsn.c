/*
 * unit_dsn.c - engine/dsn.c: a report's queue id is the same for the same
 * message, attempt and kind (so a repeated enqueue finds it), differs when
 * any of them differs, and is a valid queue id of queue_new_id's shape;
 * the report itself names the sender, the recipient and the action; its
 * lines end in CRLF and stay within DSN_LINE_MAX whatever the original and
 * the reply held, and the original's header section goes in whole lines.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/dsn.h"
#include "queue/queue.h"
#include "tests/check.h"

static void test_report_id_stable(void)
{
    char a[QUEUE_ID_MAX], b[QUEUE_ID_MAX];
    dsn_report_id(a, sizeof(a), "0000018c2f3a1b2cdeadbeefcafef00d", 1764400000000, 3, 0);
    dsn_report_id(b, sizeof(b), "0000018c2f3a1b2cdeadbeefcafef00d", 1764400000000, 3, 0);
    CHECK_STR(a, b);
    CHECK_INT(strlen(a), 32);
    CHECK_INT(queue_id_check(a), 1);
    CHECK(strncmp(a, "0000019ace6f6c00", 16) == 0);   /* 1764400000000 in hex */
}

static void test_report_id_differs(void)
{
    char base[QUEUE_ID_MAX], o[QUEUE_ID_MAX];
    dsn_report_id(base, sizeof(base), "m1", 1000, 1, 0);
    dsn_report_id(o, sizeof(o), "m1", 1000, 2, 0);   /* another attempt */
    CHECK(strcmp(base, o) != 0);
    dsn_report_id(o, sizeof(o), "m1", 1000, 1, 1);   /* a delay warning */
    CHECK(strcmp(base, o) != 0);
    dsn_report_id(o, sizeof(o), "m2", 1000, 1, 0);   /* another message */
    CHECK(strcmp(base, o) != 0);
    dsn_report_id(o, sizeof(o), "m", 1000, 1, 0);    /* a prefix of the id */
    CHECK(strcmp(base, o) != 0);
}

static void test_report_names_what_failed(void)
{
    struct buf b;
    buf_init(&b, 0);
    struct dsn_rcpt r = {.rcpt = "x@b.test", .status = "5.1.1", .diagnostic = "550 5.1.1 no such user"};
    static const char orig[] = "Subject: hi\r\n\r\nbody\r\n";
    CHECK_INT(dsn_build(&b, "mx.tern.test", "a@a.test", "q1", &r, 1, (const uint8_t *)orig,
                        sizeof(orig) - 1, 1764400000),
              1);
    buf_append(&b, "", 1);   /* NUL for strstr */
    const char *s = (const char *)buf_peek(&b);
    CHECK(strstr(s, "a@a.test") != NULL);
    CHECK(strstr(s, "x@b.test") != NULL);
    CHECK(strstr(s, "Action: failed") != NULL);
    CHECK(strstr(s, "Status: 5.1.1") != NULL);
    buf_free(&b);
}

/* Every line ends in CRLF and has at most DSN_LINE_MAX octets before it. */
static int lines_ok(const struct buf *b)
{
    const uint8_t *p = buf_peek(b);
    size_t n = buf_used(b), i = 0;
    while (i < n) {
        const uint8_t *lf = memchr(p + i, '\n', n - i);
        if (lf == NULL)
            return 0;
        size_t e = (size_t)(lf - p);
        if (e == i || p[e - 1] != '\r' || e - 1 - i > DSN_LINE_MAX ||
            memchr(p + i, '\r', e - 1 - i) != NULL)
            return 0;
        i = e + 1;
    }
    return 1;
}

/* The report for one recipient and the original orig[0..n), into b (the
 * caller frees it), its lines checked; returned as a C string. */
static const char *build_checked(struct buf *b, const struct dsn_rcpt *r, const char *orig, size_t n)
{
    buf_init(b, 0);
    CHECK_INT(dsn_build(b, "mx.tern.test", "a@a.test", "q1", r, 1, (const uint8_t *)orig, n,
                        1764400000),
              1);
    CHECK(lines_ok(b));
    buf_append(b, "", 1);
    return (const char *)buf_peek(b);
}

static void test_lines_bounded(void)
{
    static char rcpt[DSN_ADDR_MAX + 1], diag[DSN_DIAG_MAX + 1];
    memset(rcpt, 'r', DSN_ADDR_MAX);
    memset(diag, 'd', DSN_DIAG_MAX);
    struct dsn_rcpt r = {.rcpt = rcpt, .status = "5.1.1", .diagnostic = diag};
    /* bare LF, a bare CR, a header line of 3000 octets, a line that reads
     * as the report's boundary, then the body */
    static char orig[4096];
    size_t n = 0;
    n += (size_t)snprintf(orig + n, sizeof(orig) - n, "Subject: hi\nX-A: a\rb\r\nX-Long: ");
    memset(orig + n, 'L', 3000);
    n += 3000;
    n += (size_t)snprintf(orig + n, sizeof(orig) - n,
                          "\r\n--tern-dsn-q1\r\nX-Last: z\r\n\r\nbody\r\n");
    struct buf b;
    const char *s = build_checked(&b, &r, orig, n);
    CHECK(strstr(s, "\r\nSubject: hi\r\nX-A: a b\r\nX-Long: LLL") != NULL);
    CHECK(strstr(s, "\r\n --tern-dsn-q1\r\nX-Last: z\r\n\r\n--tern-dsn-q1--\r\n") != NULL);
    CHECK(strstr(s, "body") == NULL);                /* the header section only */
    CHECK(strstr(s, "    ddd") != NULL);             /* the reply on its own line */
    buf_free(&b);
}

/* The header section stops at the last whole line within DSN_HEADERS_MAX. */
static void test_headers_whole_lines(void)
{
    size_t n = 2 * DSN_HEADERS_MAX / 100 * 100;
    char *orig = malloc(n);
    CHECK(orig != NULL);
    for (size_t i = 0; i < n; i += 100) {             /* lines of 98 + CRLF */
        memset(orig + i, 'h', 98);
        orig[i + 98] = '\r';
        orig[i + 99] = '\n';
    }
    struct dsn_rcpt r = {.rcpt = "x@b.test", .status = "5.1.1", .diagnostic = "550 no"};
    struct buf b;
    const char *s = build_checked(&b, &r, orig, n);
    const char *h = strstr(s, "text/rfc822-headers\r\n\r\n");
    const char *end = strstr(s, "\r\n--tern-dsn-q1--");
    CHECK(h != NULL && end != NULL);
    size_t section = (size_t)(end - (h + strlen("text/rfc822-headers\r\n\r\n")));
    CHECK_INT(section, DSN_HEADERS_MAX / 100 * 100);
    buf_free(&b);
    free(orig);
}

int main(void)
{
    RUN(test_report_id_stable);
    RUN(test_report_id_differs);
    RUN(test_report_names_what_failed);
    RUN(test_lines_bounded);
    RUN(test_headers_whole_lines);
    return check_finish();
}
