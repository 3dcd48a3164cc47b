/*
 * unit_smtp_pipeline.c - pipelined transactions (engine/smtp_client.h,
 * PIPELINED TRANSACTIONS): several BDAT transactions in flight on one
 * session, or one behind a DATA transaction's final dot; replies
 * attributed in order, and what happens when one fails or is lost.
 *
 * The driver (tests/smtp_drv.h, fill mode) fills the pipeline the way
 * the engine does: on READY it starts transactions while
 * smtp_client_room() says so, and quits once nothing is left and nothing
 * is in flight.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/smtp_client.h"
#include "tests/check.h"
#include "tests/smtp_drv.h"

/* A session at depth on a plaintext peer, its greeting not yet read. */
static void pinit(struct drv *d, int depth, const struct smtp_msg *msgs, size_t n)
{
    drv_init_depth(d, SMTP_TLS_NONE, depth, msgs, n);
    drv_pump(d);
}

static void feed(struct drv *d, const char *s)
{
    drv_feed_str(d, s);
}

/* feed s one byte at a time: replies split anywhere */
static void feed_bytes(struct drv *d, const char *s)
{
    for (size_t i = 0; s[i]; i++)
        drv_feed(d, s + i, 1);
}

static const char *const rcpt_b[] = {"b@y.test"};
static const char *const rcpt_bc[] = {"b@y.test", "c@y.test"};
static const uint8_t body[] = "Subject: hi\r\n\r\nhello\r\n";
static const uint8_t body8[] = "Subject: hi\r\n\r\n\xc3\xa9t\xc3\xa9\r\n";
#define BDAT_BODY "BDAT 22 LAST\r\nSubject: hi\r\n\r\nhello\r\n"
#define GROUP1 "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n" BDAT_BODY
#define GROUP2 "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\n" BDAT_BODY
/* a group stacked behind another BDAT transaction starts with RSET */
#define BEHIND1 "RSET\r\n" GROUP1
#define BEHIND2 "RSET\r\n" GROUP2
#define EHLO_PC "220 mx\r\n250-mx\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 CHUNKING\r\n"

static const struct smtp_msg m1 = {"a@x.test", rcpt_b, 1, body, sizeof(body) - 1};
static const struct smtp_msg m2 = {"a@x.test", rcpt_bc, 2, body, sizeof(body) - 1};

/* The results of the three-message runs: each its own final reply, the
 * second with its refused recipient. */
static void check_three_results(const struct drv *d)
{
    CHECK_INT(d->nres, 3);
    if (d->nres != 3)
        return;
    CHECK(strstr(d->res[0].reply.text, "one") != NULL);
    CHECK(strstr(d->res[1].reply.text, "two") != NULL);
    CHECK_INT(d->res[1].rcpt_code[0], 250);
    CHECK_INT(d->res[1].rcpt_code[1], 550);
    CHECK(strstr(d->res[2].reply.text, "three") != NULL);
}

/* Three transactions go out in one write before any reply; the replies,
 * whole or a byte at a time, are attributed in order. */
static void test_three_in_flight(void)
{
    const struct smtp_msg msgs[] = {m1, m2, m1};
    for (int bytes = 0; bytes < 2; bytes++) {
        struct drv d;
        pinit(&d, 4, msgs, 3);
        feed(&d, EHLO_PC);
        CHECK_STR(d.out, "EHLO client.test\r\n" GROUP1 BEHIND2 BEHIND1);
        CHECK_INT(smtp_client_in_flight(&d.c), 3);
        CHECK_INT(smtp_client_in_doubt(&d.c), 1);
        const char *replies = "250 ok\r\n250 ok\r\n250 2.0.0 one\r\n"
                              "250 reset\r\n250 ok\r\n250 ok\r\n550 5.1.1 no c\r\n250 2.0.0 two\r\n"
                              "250 reset\r\n250 ok\r\n250 ok\r\n250 2.0.0 three\r\n221 bye\r\n";
        if (bytes)
            feed_bytes(&d, replies);
        else
            feed(&d, replies);
        CHECK_STR(d.log, "START1 START2 START3 TXN(1,BODY,250) TXN(1,BODY,250) TXN(1,BODY,250) CLOSED");
        CHECK_STR(d.out, "EHLO client.test\r\n" GROUP1 BEHIND2 BEHIND1 "QUIT\r\n");
        check_three_results(&d);
        drv_free(&d);
    }
}

/* The depth is a limit: with 2, the third waits for the first's reply. */
static void test_depth_limit(void)
{
    const struct smtp_msg msgs[] = {m1, m1, m1};
    struct drv d;
    pinit(&d, 2, msgs, 3);
    feed(&d, EHLO_PC);
    CHECK_STR(d.out, "EHLO client.test\r\n" GROUP1 BEHIND1);
    CHECK_INT(smtp_client_room(&d.c), 0);
    feed(&d, "250 ok\r\n250 ok\r\n250 2.0.0 one\r\n");
    CHECK_STR(d.out, "EHLO client.test\r\n" GROUP1 BEHIND1 BEHIND1);
    feed(&d, "250 reset\r\n250 ok\r\n250 ok\r\n250 2.0.0 two\r\n"
             "250 reset\r\n250 ok\r\n250 ok\r\n250 2.0.0 three\r\n221 bye\r\n");
    CHECK_STR(d.log, "START1 START2 TXN(1,BODY,250) START3 TXN(1,BODY,250) TXN(1,BODY,250) CLOSED");
    drv_free(&d);

    /* Depth 1 (or without CHUNKING): one at a time, as always. */
    pinit(&d, 1, msgs, 2);
    feed(&d, EHLO_PC);
    CHECK_STR(d.out, "EHLO client.test\r\n" GROUP1);
    drv_free(&d);
    pinit(&d, 4, msgs, 2);
    feed(&d, "220 mx\r\n250-mx\r\n250 PIPELINING\r\n");
    CHECK_STR(d.out, "EHLO client.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n");
    CHECK_INT(smtp_client_room(&d.c), 0);
    drv_free(&d);
}

/* Three messages on a session four deep: the first group and two stacked
 * behind it leave in the EHLO reply's write. */
static void stack_three(struct drv *d, const struct smtp_msg msgs[3])
{
    pinit(d, 4, msgs, 3);
    feed(d, EHLO_PC);
    CHECK_STR(d->out, "EHLO client.test\r\n" GROUP1 BEHIND1 BEHIND1);
}

/* The first fails: its recipient refused, so its BDAT too, and the
 * receiver stays in its transaction (Exim does). The second, already
 * sent, starts with RSET, so its MAIL, RCPT and body make a transaction of
 * their own. Without the RSET the receiver answered its MAIL 503 and took
 * its RCPT and body into the first, under the first's sender, and the
 * second was resent: delivered twice (tests/it_exim.sh found it). */
static void test_failure_then_reset(void)
{
    const struct smtp_msg msgs[] = {m1, m1, m1};
    struct drv d;
    stack_three(&d, msgs);
    feed(&d, "250 ok\r\n550 5.1.1 no b\r\n554 5.5.1 no valid recipients\r\n"
             "250 reset\r\n250 ok\r\n250 ok\r\n250 2.0.0 two\r\n"
             "250 reset\r\n250 ok\r\n250 ok\r\n250 2.0.0 three\r\n");
    CHECK_STR(d.log, "START1 START2 START3 TXN(0,RCPT,550) TXN(1,BODY,250) TXN(1,BODY,250)");
    drv_free(&d);
}

/* A receiver that still answers the MAIL behind a failed one with 503
 * (after RSET: it should not) gets that message back marked resend;
 * nothing more is queued until RSET has gone out on an idle session. */
static void test_failure_resend(void)
{
    const struct smtp_msg msgs[] = {m1, m1, m1};
    struct drv d;
    stack_three(&d, msgs);
    feed(&d, "250 ok\r\n250 ok\r\n451 4.3.0 try later\r\n"
             "250 reset\r\n503 5.5.1 nested MAIL\r\n503 5.5.1 bad sequence\r\n503 5.5.1 bad sequence\r\n"
             "250 reset\r\n250 ok\r\n250 ok\r\n250 2.0.0 three\r\n");
    CHECK_STR(d.log, "START1 START2 START3 TXN(0,BODY,451) TXN(0,MAIL,503,resend) TXN(1,BODY,250)");
    /* A MAIL refusal that is not 503 is the receiver's word: no resend.
     * Both failed: RSET before the third, which goes alone. */
    drv_free(&d);
    pinit(&d, 2, msgs, 3);
    feed(&d, EHLO_PC "250 ok\r\n250 ok\r\n451 4.3.0 later\r\n250 reset\r\n550 5.7.1 sender denied\r\n"
             "503 5.5.1 no\r\n503 5.5.1 no\r\n");
    CHECK_STR(d.log, "START1 START2 TXN(0,BODY,451) TXN(0,MAIL,550) START3");
    CHECK_STR(d.out, "EHLO client.test\r\n" GROUP1 BEHIND1 "RSET\r\n" GROUP1);
    CHECK_INT(smtp_client_room(&d.c), 0);   /* nothing behind the RSET */
    drv_free(&d);
}

/* A message the peer cannot take is not queued behind others (its local
 * refusal would come out of order): SMTP_TXN_LATER, then alone. */
static void test_local_refusal_waits(void)
{
    const struct smtp_msg m8 = {"a@x.test", rcpt_b, 1, body8, sizeof(body8) - 1};
    const struct smtp_msg msgs[] = {m1, m8};
    struct drv d;
    pinit(&d, 4, msgs, 2);
    feed(&d, "220 mx\r\n250-mx\r\n250-PIPELINING\r\n250 CHUNKING\r\n");   /* no 8BITMIME */
    CHECK_INT(d.later, 1);
    CHECK_STR(d.out, "EHLO client.test\r\n" GROUP1);
    feed(&d, "250 ok\r\n250 ok\r\n250 2.0.0 one\r\n221 bye\r\n");
    CHECK_STR(d.log, "START1 TXN(1,BODY,250) START2 TXN(0,MAIL,554) CLOSED");
    drv_free(&d);
}

/* The session dies with three in flight: every one is in doubt; a 421
 * ends the first with its outcome, then the session. */
static void test_lost_in_flight(void)
{
    const struct smtp_msg msgs[] = {m1, m1, m1};
    struct drv d;
    pinit(&d, 4, msgs, 3);
    feed(&d, EHLO_PC "250 ok\r\n250 ok\r\n250 2.0.0 one\r\n250 reset\r\n250 ok\r\n");
    CHECK_INT(smtp_client_in_flight(&d.c), 2);
    smtp_client_eof(&d.c);
    drv_pump(&d);
    CHECK_STR(d.log, "START1 START2 START3 TXN(1,BODY,250) ERROR(connection closed by peer)");
    CHECK_INT(d.in_doubt_at_error, 1);
    CHECK_INT(smtp_client_behind_in_doubt(&d.c), 1);   /* the third, sent, unanswered */
    CHECK_INT(smtp_client_room(&d.c), 0);
    drv_free(&d);

    pinit(&d, 4, msgs, 3);
    feed(&d, EHLO_PC "250 ok\r\n250 ok\r\n421 4.3.2 shutting down\r\n");
    CHECK_STR(d.log, "START1 START2 START3 TXN(0,BODY,421) ERROR(service not available (421))");
    CHECK_INT(smtp_client_behind_in_doubt(&d.c), 0);   /* the receiver took none */
    CHECK_INT(smtp_client_quit(&d.c), 0);
    drv_free(&d);
}

/* ---- PIPELINING without CHUNKING: one waits behind a DATA transaction ---- */

#define EHLO_P "220 mx\r\n250-mx\r\n250-8BITMIME\r\n250 PIPELINING\r\n"
#define DGROUP1 "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n"
#define DGROUP2 "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\nDATA\r\n"
#define DBODY "Subject: hi\r\n\r\nhello\r\n.\r\n"

/* The next MAIL/RCPT/DATA follows the final dot in the same output; the
 * replies come back in order, one TXN_DONE each, and the one behind
 * sends its body on its own 354. */
static void test_data_behind(void)
{
    const struct smtp_msg msgs[] = {m1, m2, m1};
    for (int bytes = 0; bytes < 2; bytes++) {
        struct drv d;
        pinit(&d, 4, msgs, 3);
        feed(&d, EHLO_P);
        CHECK_STR(d.out, "EHLO client.test\r\n" DGROUP1);
        CHECK_INT(smtp_client_room(&d.c), 0);   /* no body sent yet */
        d.out_len = 0;
        d.out[0] = '\0';
        if (bytes)
            feed_bytes(&d, "250 ok\r\n250 ok\r\n354 go\r\n");
        else
            feed(&d, "250 ok\r\n250 ok\r\n354 go\r\n");
        CHECK_STR(d.out, DBODY DGROUP2);
        CHECK_INT(smtp_client_in_flight(&d.c), 2);
        CHECK_INT(smtp_client_room(&d.c), 0);   /* only one behind */
        CHECK_INT(smtp_client_in_doubt(&d.c), 1);
        CHECK_INT(smtp_client_behind_in_doubt(&d.c), 0);
        /* Each read as the receiver can send it: nothing after a 354
         * before the body it asks for. */
        const char *const rest[] = {
            "250 2.0.0 one\r\n250 ok\r\n250 ok\r\n550 5.1.1 no c\r\n354 go\r\n",
            "250 2.0.0 two\r\n250 ok\r\n250 ok\r\n354 go\r\n",
            "250 2.0.0 three\r\n221 bye\r\n"};
        for (size_t i = 0; i < 3; i++) {
            if (bytes)
                feed_bytes(&d, rest[i]);
            else
                feed(&d, rest[i]);
        }
        CHECK_STR(d.log, "START1 START2 TXN(1,BODY,250) START3 TXN(1,BODY,250) "
                         "TXN(1,BODY,250) CLOSED");
        CHECK_STR(d.out, DBODY DGROUP2 DBODY DGROUP1 DBODY "QUIT\r\n");
        check_three_results(&d);
        drv_free(&d);
    }
}

/* No RCPT of the one behind accepted: its 354 gets "." alone. */
static void test_data_behind_no_rcpt(void)
{
    const struct smtp_msg msgs[] = {m1, m1};
    struct drv d;
    pinit(&d, 2, msgs, 2);
    feed(&d, EHLO_P "250 ok\r\n250 ok\r\n354 go\r\n");
    feed(&d, "250 2.0.0 one\r\n250 ok\r\n550 5.1.1 no b\r\n354 go\r\n");
    CHECK_STR(d.out, "EHLO client.test\r\n" DGROUP1 DBODY DGROUP1 ".\r\n");
    feed(&d, "554 5.5.1 no valid recipients\r\n221 bye\r\n");
    CHECK_STR(d.log, "START1 START2 TXN(1,BODY,250) TXN(0,RCPT,550) CLOSED");
    CHECK_STR(d.out, "EHLO client.test\r\n" DGROUP1 DBODY DGROUP1 ".\r\nQUIT\r\n");
    drv_free(&d);
}

/* A 554 to the current dot: the receiver ended that transaction, so the
 * MAIL behind stands; nothing new goes behind until one succeeds. A 503
 * to the MAIL behind (the receiver still in the failed one): resend. */
static void test_data_behind_failure(void)
{
    const struct smtp_msg msgs[] = {m1, m1, m1};
    struct drv d;
    pinit(&d, 4, msgs, 3);
    feed(&d, EHLO_P "250 ok\r\n250 ok\r\n354 go\r\n");
    feed(&d, "554 5.7.1 rejected\r\n250 ok\r\n250 ok\r\n354 go\r\n");
    CHECK_STR(d.log, "START1 START2 TXN(0,BODY,554)");
    CHECK_STR(d.out, "EHLO client.test\r\n" DGROUP1 DBODY DGROUP1 DBODY);
    CHECK_INT(smtp_client_room(&d.c), 0);   /* after a failure: none behind */
    feed(&d, "250 2.0.0 two\r\n");
    CHECK_STR(d.log, "START1 START2 TXN(0,BODY,554) TXN(1,BODY,250) START3");
    CHECK_STR(d.out, "EHLO client.test\r\n" DGROUP1 DBODY DGROUP1 DBODY DGROUP1);
    drv_free(&d);

    pinit(&d, 4, msgs, 3);
    feed(&d, EHLO_P "250 ok\r\n250 ok\r\n354 go\r\n");
    feed(&d, "451 4.3.0 later\r\n503 5.5.1 nested MAIL\r\n503 5.5.1 bad sequence\r\n"
             "503 5.5.1 bad sequence\r\n");
    CHECK_STR(d.log, "START1 START2 TXN(0,BODY,451) TXN(0,MAIL,503,resend) START3");
    CHECK_STR(d.out, "EHLO client.test\r\n" DGROUP1 DBODY DGROUP1 "RSET\r\n" DGROUP1);
    drv_free(&d);
}

/* Lost with one behind: the current is in doubt from its dot, the one
 * behind is not (its body never went); nor after it became current. A
 * 421 after the dot ends the current, then the session. */
static void test_data_behind_lost(void)
{
    const struct smtp_msg msgs[] = {m1, m1};
    struct drv d;
    pinit(&d, 2, msgs, 2);
    feed(&d, EHLO_P "250 ok\r\n250 ok\r\n354 go\r\n");
    CHECK_INT(smtp_client_in_flight(&d.c), 2);
    smtp_client_eof(&d.c);
    drv_pump(&d);
    CHECK_STR(d.log, "START1 START2 ERROR(connection closed by peer)");
    CHECK_INT(d.in_doubt_at_error, 1);
    CHECK_INT(smtp_client_behind_in_doubt(&d.c), 0);
    drv_free(&d);

    pinit(&d, 2, msgs, 2);
    feed(&d, EHLO_P "250 ok\r\n250 ok\r\n354 go\r\n");
    CHECK_INT(d.c.state, SMTP_ST_BODY);     /* the engine's timeout: the current's final */
    feed(&d, "250 2.0.0 one\r\n");
    CHECK_INT(d.c.state, SMTP_ST_MAIL);     /* now the one behind's MAIL reply */
    CHECK_INT(smtp_client_in_doubt(&d.c), 0);
    feed(&d, "250 ok\r\n");
    CHECK_INT(d.c.state, SMTP_ST_RCPT);
    smtp_client_eof(&d.c);
    drv_pump(&d);
    CHECK_STR(d.log, "START1 START2 TXN(1,BODY,250) ERROR(connection closed by peer)");
    CHECK_INT(d.in_doubt_at_error, 0);
    CHECK_INT(smtp_client_behind_in_doubt(&d.c), 0);
    drv_free(&d);

    pinit(&d, 2, msgs, 2);
    feed(&d, EHLO_P "250 ok\r\n250 ok\r\n354 go\r\n");
    feed(&d, "421 4.3.2 shutting down\r\n");
    CHECK_STR(d.log, "START1 START2 TXN(0,BODY,421) ERROR(service not available (421))");
    CHECK_INT(smtp_client_in_doubt(&d.c), 0);
    CHECK_INT(smtp_client_behind_in_doubt(&d.c), 0);
    CHECK_INT(smtp_client_quit(&d.c), 0);
    drv_free(&d);
}

/* Depth 1: the next MAIL waits for the final reply, as before; a message
 * the peer cannot take is not queued behind (SMTP_TXN_LATER). */
static void test_data_depth1_and_later(void)
{
    const struct smtp_msg msgs[] = {m1, m1};
    struct drv d;
    pinit(&d, 1, msgs, 2);
    feed(&d, EHLO_P "250 ok\r\n250 ok\r\n354 go\r\n");
    CHECK_STR(d.out, "EHLO client.test\r\n" DGROUP1 DBODY);
    CHECK_INT(smtp_client_room(&d.c), 0);
    drv_free(&d);

    const struct smtp_msg m8 = {"a@x.test", rcpt_b, 1, body8, sizeof(body8) - 1};
    const struct smtp_msg msgs8[] = {m1, m8};
    pinit(&d, 4, msgs8, 2);
    feed(&d, "220 mx\r\n250-mx\r\n250 PIPELINING\r\n250 ok\r\n250 ok\r\n354 go\r\n");
    CHECK_INT(d.later, 1);
    CHECK_STR(d.out, "EHLO client.test\r\n" DGROUP1 DBODY);
    feed(&d, "250 2.0.0 one\r\n221 bye\r\n");
    CHECK_STR(d.log, "START1 TXN(1,BODY,250) START2 TXN(0,MAIL,554) CLOSED");
    drv_free(&d);
}

int main(void)
{
    RUN(test_three_in_flight);
    RUN(test_depth_limit);
    RUN(test_failure_then_reset);
    RUN(test_failure_resend);
    RUN(test_local_refusal_waits);
    RUN(test_lost_in_flight);
    RUN(test_data_behind);
    RUN(test_data_behind_no_rcpt);
    RUN(test_data_behind_failure);
    RUN(test_data_behind_lost);
    RUN(test_data_depth1_and_later);
    return check_finish();
}
