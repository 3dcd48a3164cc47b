/*
 * unit_smtp_quit.c - QUIT behind a session's last transaction
 * (smtp_client_quit_after, engine/smtp_client.h): with BDAT it joins the
 * same write, with DATA it follows the body its 354 brings; the replies
 * end with QUIT's and no READY comes between; a transaction that ends
 * before its body went (DATA refused) gets no QUIT behind it, READY
 * follows and the session quits as before; a session lost after the
 * final dot is still in doubt.
 *
 * The driver (tests/smtp_drv.h) with d.quit_after asks for QUIT right
 * after starting the last message, as worker_conn.c does when a
 * connection reaches max_messages_per_connection (logged "QA").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/smtp_client.h"
#include "tests/check.h"
#include "tests/smtp_drv.h"

static const char *const rcpt_b[] = {"b@y.test"};
static const uint8_t body[] = "Subject: hi\r\n\r\nhello\r\n";
static const struct smtp_msg m1 = {"a@x.test", rcpt_b, 1, body, sizeof(body) - 1};

#define EHLO_PC "220 mx\r\n250-mx\r\n250-PIPELINING\r\n250 CHUNKING\r\n"
#define EHLO_P "220 mx\r\n250-mx\r\n250 PIPELINING\r\n"
#define EHLO_PLAIN "220 mx\r\n250 mx\r\n"
#define BGROUP "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nBDAT 22 LAST\r\nSubject: hi\r\n\r\nhello\r\n"
#define DGROUP "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n"
#define DBODY "Subject: hi\r\n\r\nhello\r\n.\r\n"

static void qinit(struct drv *d, int depth, const struct smtp_msg *msgs, size_t n)
{
    drv_init_depth(d, SMTP_TLS_NONE, depth, msgs, n);
    d->quit_after = 1;
    drv_pump(d);
}

/* BDAT: QUIT in the same write as the message; its 221 ends the session
 * right after the final reply, no READY between. */
static void test_bdat(void)
{
    struct drv d;
    qinit(&d, 0, &m1, 1);
    drv_feed_str(&d, EHLO_PC);
    CHECK_STR(d.out, "EHLO client.test\r\n" BGROUP "QUIT\r\n");
    CHECK_INT(smtp_client_room(&d.c), 0);
    CHECK_INT(smtp_client_in_doubt(&d.c), 1);
    drv_feed_str(&d, "250 ok\r\n250 ok\r\n250 2.0.0 one\r\n");
    CHECK_STR(d.log, "READY QA TXN(1,BODY,250)");
    CHECK_INT(d.c.state, SMTP_ST_QUIT);
    CHECK_INT(smtp_client_in_doubt(&d.c), 0);
    CHECK_INT(smtp_client_quit(&d.c), 0);   /* QUIT already went */
    drv_feed_str(&d, "221 bye\r\n");
    CHECK_STR(d.log, "READY QA TXN(1,BODY,250) CLOSED");
    CHECK_STR(d.out, "EHLO client.test\r\n" BGROUP "QUIT\r\n");
    drv_free(&d);

    /* all replies in one read; a refused MAIL still ends with QUIT's */
    qinit(&d, 0, &m1, 1);
    drv_feed_str(&d, EHLO_PC "550 5.7.1 no\r\n503 5.5.1 no MAIL\r\n503 5.5.1 no MAIL\r\n221 bye\r\n");
    CHECK_STR(d.log, "READY QA TXN(0,MAIL,550) CLOSED");
    drv_free(&d);
}

/* Three BDAT transactions in flight: QUIT behind the third. */
static void test_bdat_pipelined(void)
{
    const struct smtp_msg msgs[] = {m1, m1, m1};
    struct drv d;
    qinit(&d, 4, msgs, 3);
    drv_feed_str(&d, EHLO_PC);
    CHECK_STR(d.out, "EHLO client.test\r\n" BGROUP "RSET\r\n" BGROUP "RSET\r\n" BGROUP "QUIT\r\n");
    drv_feed_str(&d, "250 ok\r\n250 ok\r\n250 2.0.0 one\r\n250 reset\r\n250 ok\r\n250 ok\r\n"
                     "250 2.0.0 two\r\n250 reset\r\n250 ok\r\n250 ok\r\n250 2.0.0 three\r\n221 bye\r\n");
    CHECK_STR(d.log, "START1 START2 START3 QA TXN(1,BODY,250) TXN(1,BODY,250) "
                     "TXN(1,BODY,250) CLOSED");
    CHECK_STR(d.out, "EHLO client.test\r\n" BGROUP "RSET\r\n" BGROUP "RSET\r\n" BGROUP "QUIT\r\n");
    drv_free(&d);
}

/* DATA: QUIT waits for the 354 and follows the final dot. */
static void test_data(void)
{
    struct drv d;
    qinit(&d, 0, &m1, 1);
    drv_feed_str(&d, EHLO_P);
    CHECK_STR(d.out, "EHLO client.test\r\n" DGROUP);
    drv_feed_str(&d, "250 ok\r\n250 ok\r\n354 go\r\n");
    CHECK_STR(d.out, "EHLO client.test\r\n" DGROUP DBODY "QUIT\r\n");
    drv_feed_str(&d, "250 2.0.0 one\r\n221 bye\r\n");
    CHECK_STR(d.log, "READY QA TXN(1,BODY,250) CLOSED");
    drv_free(&d);

    /* no recipient accepted: "." alone, then QUIT */
    qinit(&d, 0, &m1, 1);
    drv_feed_str(&d, EHLO_P "250 ok\r\n550 5.1.1 no b\r\n354 go\r\n");
    CHECK_STR(d.out, "EHLO client.test\r\n" DGROUP ".\r\nQUIT\r\n");
    drv_feed_str(&d, "554 5.5.1 no valid recipients\r\n221 bye\r\n");
    CHECK_STR(d.log, "READY QA TXN(0,RCPT,550) CLOSED");
    drv_free(&d);
}

/* DATA with one behind: QUIT after the second message's body. */
static void test_data_behind(void)
{
    const struct smtp_msg msgs[] = {m1, m1};
    struct drv d;
    qinit(&d, 2, msgs, 2);
    drv_feed_str(&d, EHLO_P "250 ok\r\n250 ok\r\n354 go\r\n");
    CHECK_STR(d.out, "EHLO client.test\r\n" DGROUP DBODY DGROUP);
    drv_feed_str(&d, "250 2.0.0 one\r\n250 ok\r\n250 ok\r\n354 go\r\n");
    CHECK_STR(d.out, "EHLO client.test\r\n" DGROUP DBODY DGROUP DBODY "QUIT\r\n");
    drv_feed_str(&d, "250 2.0.0 two\r\n221 bye\r\n");
    CHECK_STR(d.log, "START1 START2 QA TXN(1,BODY,250) TXN(1,BODY,250) CLOSED");
    drv_free(&d);
}

/* DATA refused: no body, so no QUIT went; READY follows and the session
 * quits as before. */
static void test_data_refused(void)
{
    struct drv d;
    qinit(&d, 0, &m1, 1);
    drv_feed_str(&d, EHLO_P "250 ok\r\n250 ok\r\n554 5.3.0 no DATA now\r\n");
    CHECK_STR(d.log, "READY QA TXN(0,DATA,554) READY");
    CHECK_STR(d.out, "EHLO client.test\r\n" DGROUP "QUIT\r\n");
    drv_feed_str(&d, "221 bye\r\n");
    CHECK_STR(d.log, "READY QA TXN(0,DATA,554) READY CLOSED");
    drv_free(&d);
}

/* Lost after the final dot: in doubt as always; a 421 answers both. */
static void test_lost(void)
{
    struct drv d;
    qinit(&d, 0, &m1, 1);
    drv_feed_str(&d, EHLO_PC "250 ok\r\n250 ok\r\n");
    smtp_client_eof(&d.c);
    drv_pump(&d);
    CHECK_STR(d.log, "READY QA ERROR(connection closed by peer)");
    CHECK_INT(d.in_doubt_at_error, 1);
    drv_free(&d);

    qinit(&d, 0, &m1, 1);
    drv_feed_str(&d, EHLO_P "250 ok\r\n250 ok\r\n354 go\r\n421 4.3.2 closing\r\n");
    CHECK_STR(d.log, "READY QA TXN(0,BODY,421) ERROR(service not available (421))");
    CHECK_INT(d.c.state, SMTP_ST_FAILED);
    drv_free(&d);
}

/* Without PIPELINING, or with nothing in flight, nothing is taken. */
static void test_not_taken(void)
{
    struct drv d;
    qinit(&d, 0, &m1, 1);
    drv_feed_str(&d, EHLO_PLAIN);
    CHECK_STR(d.log, "READY");
    CHECK_STR(d.out, "EHLO client.test\r\nMAIL FROM:<a@x.test>\r\n");
    drv_feed_str(&d, "250 ok\r\n250 ok\r\n354 go\r\n250 2.0.0 one\r\n");
    CHECK_STR(d.log, "READY TXN(1,BODY,250) READY");
    CHECK_INT(smtp_client_quit_after(&d.c), 0);   /* idle: nothing in flight */
    drv_feed_str(&d, "221 bye\r\n");
    CHECK_STR(d.log, "READY TXN(1,BODY,250) READY CLOSED");
    drv_free(&d);
}

int main(void)
{
    RUN(test_bdat);
    RUN(test_bdat_pipelined);
    RUN(test_data);
    RUN(test_data_behind);
    RUN(test_data_refused);
    RUN(test_lost);
    RUN(test_not_taken);
    return check_finish();
}
