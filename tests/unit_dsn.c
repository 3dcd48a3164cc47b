/*
 * unit_dsn.c - engine/dsn.c: a report's queue id is the same for the same
 * message, attempt and kind (so a repeated enqueue finds it), differs when
 * any of them differs, and is a valid queue id of queue_new_id's shape;
 * the report itself names the sender, the recipient and the action.
 */
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

int main(void)
{
    RUN(test_report_id_stable);
    RUN(test_report_id_differs);
    RUN(test_report_names_what_failed);
    return check_finish();
}
