/*
 * unit_smtp_client.c - scripted-server tests for engine/smtp_client.c.
 *
 * A driver (tests/smtp_drv.h) plays the caller: it feeds server bytes,
 * reacts to events the way the engine does, collects every byte the
 * client writes and logs the events as text. Each test compares the
 * exact client bytes and the event log.
 * Server scripts are split in phases at the TLS boundary (bytes after the
 * 220 to STARTTLS only exist after the handshake).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/smtp_client.h"
#include "tests/check.h"
#include "tests/smtp_drv.h"

/* Feeding modes for the split tests. */
enum feed_mode { FEED_WHOLE, FEED_SPLIT, FEED_BYTES };

/* Feed each phase (NULL-terminated list); split each at min(k, len). */
static void drv_run(struct drv *d, const char *const *phases, enum feed_mode mode,
                    size_t k)
{
    drv_pump(d);
    for (size_t i = 0; phases[i]; i++) {
        const char *s = phases[i];
        size_t n = strlen(s);
        switch (mode) {
        case FEED_WHOLE:
            drv_feed(d, s, n);
            break;
        case FEED_SPLIT: {
            size_t cut = k < n ? k : n;
            drv_feed(d, s, cut);
            drv_feed(d, s + cut, n - cut);
            break;
        }
        case FEED_BYTES:
            for (size_t j = 0; j < n; j++)
                drv_feed(d, s + j, 1);
            break;
        }
    }
}

/* tail returns the last strlen(want) bytes of s (or s if shorter). */
static const char *tail(const char *s, const char *want)
{
    size_t n = strlen(s), w = strlen(want);
    return n >= w ? s + n - w : s;
}

/* ---- fixtures ---- */

static const char *const rcpts2[] = {"b@y.test", "c@y.test"};
static const char *const rcpts3[] = {"b@y.test", "c@y.test", "d@y.test"};
static const char *const rcpts1[] = {"b@y.test"};
static const uint8_t body1[] = "Subject: hi\n\n.dot line\nend";
#define BODY1_WIRE "Subject: hi\r\n\r\n..dot line\r\nend\r\n.\r\n"
#define BODY1_LEN "26"

static const struct smtp_msg msg2 = {"a@x.test", rcpts2, 2, body1, sizeof(body1) - 1};
static const struct smtp_msg msg3 = {"a@x.test", rcpts3, 3, body1, sizeof(body1) - 1};
static const struct smtp_msg msg1 = {"a@x.test", rcpts1, 1, body1, sizeof(body1) - 1};

/* ---- the full happy path: STARTTLS + PIPELINING ---- */

static const char *const happy_phases[] = {
    "220 mx.test ESMTP\r\n"
    "250-mx.test\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 STARTTLS\r\n"
    "220 2.0.0 Ready to start TLS\r\n",
    /* After TLS: STARTTLS offered again must be ignored. */
    "250-mx.test hello\r\n250-pipelining\r\n250-SIZE 100000\r\n250-8BITMIME\r\n"
    "250-STARTTLS\r\n250 ENHANCEDSTATUSCODES\r\n"
    "250 2.1.0 ok\r\n250 2.1.5 ok\r\n250 2.1.5 ok\r\n354 go ahead\r\n"
    "250 2.0.0 queued as X\r\n"
    "221 2.0.0 bye\r\n",
    NULL,
};
static const char happy_out[] =
    "EHLO client.test\r\n"
    "STARTTLS\r\n"
    "EHLO client.test\r\n"
    "MAIL FROM:<a@x.test> SIZE=" BODY1_LEN "\r\n"
    "RCPT TO:<b@y.test>\r\n"
    "RCPT TO:<c@y.test>\r\n"
    "DATA\r\n" BODY1_WIRE
    "QUIT\r\n";
static const char happy_log[] = "STARTTLS READY TXN(1,BODY,250) READY CLOSED";

static void test_happy_starttls_pipelining(void)
{
    struct drv d;
    drv_init(&d, SMTP_TLS_MAY, &msg2, 1);
    drv_run(&d, happy_phases, FEED_WHOLE, 0);
    CHECK_STR(d.out, happy_out);
    CHECK_STR(d.log, happy_log);
    CHECK_INT(d.c.tls_active, 1);
    const struct smtp_caps *caps = smtp_client_caps(&d.c);
    CHECK_INT(caps->pipelining, 1);
    CHECK_INT(caps->starttls, 1);
    CHECK_INT(caps->chunking, 0);      /* pre-TLS knowledge forgotten */
    CHECK_INT(caps->eightbitmime, 1);
    CHECK_INT(caps->enhancedstatuscodes, 1);
    CHECK_INT(caps->size, 100000);
    CHECK_INT(d.res[0].rcpt_code[0], 250);
    CHECK_INT(d.res[0].rcpt_code[1], 250);
    CHECK_STR(d.res[0].reply.esc, "2.0.0");
    CHECK_INT(d.c.state, SMTP_ST_CLOSED);
    CHECK_INT(smtp_client_in_doubt(&d.c), 0);
    CHECK_INT(smtp_client_busy(&d.c), 0);
    drv_free(&d);
}

static void test_happy_split_everywhere(void)
{
    size_t maxlen = 0;
    for (size_t i = 0; happy_phases[i]; i++)
        if (strlen(happy_phases[i]) > maxlen)
            maxlen = strlen(happy_phases[i]);
    for (size_t k = 0; k <= maxlen; k++) {
        struct drv d;
        drv_init(&d, SMTP_TLS_MAY, &msg2, 1);
        drv_run(&d, happy_phases, FEED_SPLIT, k);
        if (strcmp(d.out, happy_out) != 0 || strcmp(d.log, happy_log) != 0) {
            CHECK_FAILF("split at %zu: out \"%s\" log \"%s\"", k, d.out, d.log);
            drv_free(&d);
            break;
        }
        drv_free(&d);
    }
    struct drv d;
    drv_init(&d, SMTP_TLS_MAY, &msg2, 1);
    drv_run(&d, happy_phases, FEED_BYTES, 0);
    CHECK_STR(d.out, happy_out);
    CHECK_STR(d.log, happy_log);
    drv_free(&d);
}

/* ---- STARTTLS policy ---- */

static void test_starttls_injection(void)
{
    /* The 220 and a forged reply in the same read. */
    struct drv d;
    drv_init(&d, SMTP_TLS_MAY, &msg1, 1);
    drv_pump(&d);
    drv_feed_str(&d, "220 mx\r\n250-mx\r\n250 STARTTLS\r\n220 go\r\n250-mx\r\n250 AUTH PLAIN\r\n");
    CHECK_STR(d.log, "ERROR(plaintext injected after STARTTLS)");
    CHECK_STR(d.out, "EHLO client.test\r\nSTARTTLS\r\n");
    CHECK_INT(d.c.tls_active, 0);
    CHECK_INT(d.c.state, SMTP_ST_FAILED);
    /* Nothing more, whatever comes later. */
    drv_feed_str(&d, "250 ok\r\n");
    CHECK_STR(d.log, "ERROR(plaintext injected after STARTTLS)");
    CHECK_STR(d.out, "EHLO client.test\r\nSTARTTLS\r\n");
    drv_free(&d);

    /* Plaintext fed after the STARTTLS event, before the handshake. */
    drv_init(&d, SMTP_TLS_MAY, &msg1, 1);
    d.no_tls_on_event = 1;
    drv_pump(&d);
    drv_feed_str(&d, "220 mx\r\n250-mx\r\n250 STARTTLS\r\n220 go\r\n");
    CHECK_STR(d.log, "STARTTLS");
    drv_feed_str(&d, "250 injected\r\n");
    CHECK_STR(d.log, "STARTTLS ERROR(plaintext injected after STARTTLS)");
    smtp_client_tls_started(&d.c);      /* too late: ignored */
    drv_pump(&d);
    CHECK_STR(d.out, "EHLO client.test\r\nSTARTTLS\r\n");
    CHECK_INT(d.c.tls_active, 0);
    drv_free(&d);
}

static void test_required_not_offered(void)
{
    struct drv d;
    drv_init(&d, SMTP_TLS_REQUIRED, &msg1, 1);
    drv_pump(&d);
    drv_feed_str(&d, "220 mx\r\n250-mx\r\n250 PIPELINING\r\n");
    CHECK_STR(d.log, "ERROR(STARTTLS not offered)");
    CHECK_STR(d.out, "EHLO client.test\r\nQUIT\r\n");
    CHECK(strstr(d.out, "MAIL") == NULL);
    CHECK_INT(smtp_client_start_txn(&d.c, &msg1), 0);
    drv_free(&d);

    /* HELO fallback cannot offer STARTTLS either. */
    drv_init(&d, SMTP_TLS_REQUIRED, &msg1, 1);
    drv_pump(&d);
    drv_feed_str(&d, "220 mx\r\n502 no\r\n250 mx\r\n");
    CHECK_STR(d.log, "ERROR(STARTTLS not offered)");
    CHECK_STR(d.out, "EHLO client.test\r\nHELO client.test\r\nQUIT\r\n");
    drv_free(&d);
}

static void test_required_refused(void)
{
    struct drv d;
    drv_init(&d, SMTP_TLS_REQUIRED, &msg1, 1);
    drv_pump(&d);
    drv_feed_str(&d, "220 mx\r\n250-mx\r\n250 STARTTLS\r\n454 4.7.0 TLS not available\r\n");
    CHECK_STR(d.log, "ERROR(STARTTLS refused)");
    CHECK_STR(d.out, "EHLO client.test\r\nSTARTTLS\r\nQUIT\r\n");
    drv_free(&d);
}

static void test_may_refused_plaintext(void)
{
    static const char *const phases[] = {
        "220 mx\r\n250-mx\r\n250-PIPELINING\r\n250-SIZE 0\r\n250 STARTTLS\r\n"
        "454 4.7.0 TLS not available\r\n"
        "250 ok\r\n250 ok\r\n354 go\r\n250 queued\r\n221 bye\r\n",
        NULL,
    };
    struct drv d;
    drv_init(&d, SMTP_TLS_MAY, &msg1, 1);
    drv_run(&d, phases, FEED_WHOLE, 0);
    CHECK_STR(d.log, "READY TXN(1,BODY,250) READY CLOSED");
    CHECK_STR(d.out, "EHLO client.test\r\nSTARTTLS\r\n"
                     "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n" BODY1_WIRE
                     "QUIT\r\n");
    CHECK_INT(d.c.tls_active, 0);
    CHECK_INT(smtp_client_caps(&d.c)->pipelining, 1);   /* plaintext caps kept */
    CHECK_INT(smtp_client_caps(&d.c)->size, 0);
    drv_free(&d);
}

static void test_tls_none_never_starttls(void)
{
    static const char *const phases[] = {
        "220 mx\r\n250-mx\r\n250 STARTTLS\r\n221 bye\r\n", NULL,
    };
    struct drv d;
    drv_init(&d, SMTP_TLS_NONE, NULL, 0);
    drv_run(&d, phases, FEED_WHOLE, 0);
    CHECK_STR(d.log, "READY CLOSED");
    CHECK_STR(d.out, "EHLO client.test\r\nQUIT\r\n");
    drv_free(&d);
}

/* ---- greeting and hello ---- */

static void test_greeting_refused(void)
{
    static const char *const greets[] = {"554 go away\r\n", "421 busy\r\n", "250 odd\r\n"};
    for (size_t i = 0; i < 3; i++) {
        struct drv d;
        drv_init(&d, SMTP_TLS_MAY, &msg1, 1);
        drv_pump(&d);
        drv_feed_str(&d, greets[i]);
        CHECK_STR(d.log, "ERROR(greeting refused)");
        CHECK_STR(d.out, "QUIT\r\n");
        drv_free(&d);
    }
}

static void test_helo_fallback_lockstep(void)
{
    static const char *const phases[] = {
        "220 mx\r\n500 5.5.1 what\r\n250 mx\r\n"
        "250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n250 queued\r\n221 bye\r\n",
        NULL,
    };
    struct drv d;
    drv_init(&d, SMTP_TLS_MAY, &msg2, 1);
    drv_run(&d, phases, FEED_WHOLE, 0);
    CHECK_STR(d.log, "READY TXN(1,BODY,250) READY CLOSED");
    CHECK_STR(d.out, "EHLO client.test\r\nHELO client.test\r\n"
                     "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\n"
                     "DATA\r\n" BODY1_WIRE "QUIT\r\n");
    CHECK_INT(smtp_client_caps(&d.c)->esmtp, 0);
    drv_free(&d);

    /* EHLO 4xx is not a fallback case. */
    drv_init(&d, SMTP_TLS_MAY, &msg2, 1);
    drv_pump(&d);
    drv_feed_str(&d, "220 mx\r\n450 later\r\n");
    CHECK_STR(d.log, "ERROR(EHLO refused)");
    CHECK_STR(d.out, "EHLO client.test\r\nQUIT\r\n");
    drv_free(&d);
}

/* Lock-step: each command written only after the previous reply. */
static void test_lockstep_order(void)
{
    struct drv d;
    drv_init(&d, SMTP_TLS_NONE, &msg2, 1);
    drv_pump(&d);
    drv_feed_str(&d, "220 mx\r\n250 mx\r\n");
    CHECK_STR(d.out, "EHLO client.test\r\nMAIL FROM:<a@x.test>\r\n");
    drv_feed_str(&d, "250 ok\r\n");
    CHECK_STR(tail(d.out, "RCPT TO:<b@y.test>\r\n"), "RCPT TO:<b@y.test>\r\n");
    drv_feed_str(&d, "250 ok\r\n");
    CHECK_STR(tail(d.out, "RCPT TO:<c@y.test>\r\n"), "RCPT TO:<c@y.test>\r\n");
    drv_feed_str(&d, "550 no such user\r\n");
    CHECK_STR(tail(d.out, "DATA\r\n"), "DATA\r\n");
    CHECK_INT(smtp_client_in_doubt(&d.c), 0);
    drv_feed_str(&d, "354 go\r\n");
    CHECK_STR(tail(d.out, BODY1_WIRE), BODY1_WIRE);
    CHECK_INT(smtp_client_in_doubt(&d.c), 1);
    CHECK_INT(smtp_client_busy(&d.c), 1);
    drv_feed_str(&d, "250 ok\r\n");
    CHECK_INT(smtp_client_in_doubt(&d.c), 0);
    CHECK_STR(d.log, "READY TXN(1,BODY,250) READY");
    CHECK_INT(d.res[0].rcpt_code[0], 250);
    CHECK_INT(d.res[0].rcpt_code[1], 550);
    drv_free(&d);
}

/* ---- recipients ---- */

static void test_one_rcpt_rejected(void)
{
    static const char *const phases[] = {
        "220 mx\r\n250-mx\r\n250 PIPELINING\r\n"
        "250 ok\r\n250 ok\r\n550 5.1.1 unknown\r\n451 4.3.0 later\r\n354 go\r\n250 ok\r\n"
        "221 bye\r\n",
        NULL,
    };
    struct drv d;
    drv_init(&d, SMTP_TLS_MAY, &msg3, 1);
    drv_run(&d, phases, FEED_WHOLE, 0);
    CHECK_STR(d.log, "READY TXN(1,BODY,250) READY CLOSED");
    CHECK_INT(d.res[0].rcpt_code[0], 250);
    CHECK_INT(d.res[0].rcpt_code[1], 550);
    CHECK_INT(d.res[0].rcpt_code[2], 451);
    CHECK(strstr(d.out, BODY1_WIRE) != NULL);
    drv_free(&d);
}

static void test_all_rcpts_rejected_pipelined(void)
{
    /* DATA refused: no body, RSET before the next message. */
    static const char *const phases[] = {
        "220 mx\r\n250-mx\r\n250 PIPELINING\r\n"
        "250 ok\r\n550 5.1.1 no\r\n551 5.1.6 moved\r\n554 5.5.1 no valid recipients\r\n"
        "250 reset\r\n250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n221 bye\r\n",
        NULL,
    };
    static const struct smtp_msg msgs[] = {
        {"a@x.test", rcpts2, 2, body1, sizeof(body1) - 1},
        {"a@x.test", rcpts1, 1, body1, sizeof(body1) - 1},
    };
    struct drv d;
    drv_init(&d, SMTP_TLS_NONE, msgs, 2);
    drv_run(&d, phases, FEED_WHOLE, 0);
    CHECK_STR(d.log, "READY TXN(0,RCPT,551) READY TXN(1,BODY,250) READY CLOSED");
    CHECK_STR(d.out, "EHLO client.test\r\n"
                     "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\nDATA\r\n"
                     "RSET\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n" BODY1_WIRE
                     "QUIT\r\n");
    CHECK_INT(d.res[0].rcpt_code[0], 550);
    CHECK_INT(d.res[0].rcpt_code[1], 551);
    drv_free(&d);
}

static void test_all_rcpts_rejected_354(void)
{
    /* A server that accepts DATA anyway: only "." is sent. */
    static const char *const phases[] = {
        "220 mx\r\n250-mx\r\n250 PIPELINING\r\n"
        "250 ok\r\n550 no\r\n354 go\r\n554 no recipients\r\n221 bye\r\n",
        NULL,
    };
    struct drv d;
    drv_init(&d, SMTP_TLS_NONE, &msg1, 1);
    drv_run(&d, phases, FEED_WHOLE, 0);
    CHECK_STR(d.log, "READY TXN(0,RCPT,550) READY CLOSED");
    CHECK_STR(d.out, "EHLO client.test\r\n"
                     "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n.\r\nQUIT\r\n");
    CHECK_INT(smtp_client_in_doubt(&d.c), 0);
    drv_free(&d);
}

static void test_all_rcpts_rejected_lockstep(void)
{
    static const char *const phases[] = {
        "220 mx\r\n250 mx\r\n250 ok\r\n550 no\r\n450 later\r\n"
        "250 reset\r\n250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n221 bye\r\n",
        NULL,
    };
    static const struct smtp_msg msgs[] = {
        {"a@x.test", rcpts2, 2, body1, sizeof(body1) - 1},
        {"", rcpts1, 1, body1, sizeof(body1) - 1},
    };
    struct drv d;
    drv_init(&d, SMTP_TLS_NONE, msgs, 2);
    drv_run(&d, phases, FEED_WHOLE, 0);
    CHECK_STR(d.log, "READY TXN(0,RCPT,450) READY TXN(1,BODY,250) READY CLOSED");
    CHECK_STR(d.out, "EHLO client.test\r\n"
                     "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\n"
                     "RSET\r\nMAIL FROM:<>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n" BODY1_WIRE
                     "QUIT\r\n");
    drv_free(&d);
}

/* ---- MAIL and DATA failures ---- */

static void test_mail_rejected_pipelined(void)
{
    static const char *const phases[] = {
        "220 mx\r\n250-mx\r\n250 PIPELINING\r\n"
        "550 5.7.1 sender denied\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need MAIL\r\n"
        "503 5.5.1 need RCPT\r\n221 bye\r\n",
        NULL,
    };
    struct drv d;
    drv_init(&d, SMTP_TLS_NONE, &msg2, 1);
    drv_run(&d, phases, FEED_WHOLE, 0);
    CHECK_STR(d.log, "READY TXN(0,MAIL,550) READY CLOSED");
    CHECK_STR(d.res[0].reply.esc, "5.7.1");
    CHECK_INT(d.c.need_rset, 1);
    CHECK(strstr(d.out, "Subject") == NULL);
    drv_free(&d);
}

static void test_mail_rejected_lockstep(void)
{
    struct drv d;
    drv_init(&d, SMTP_TLS_NONE, &msg2, 1);
    d.no_quit = 1;
    drv_pump(&d);
    drv_feed_str(&d, "220 mx\r\n250 mx\r\n452 4.3.1 full\r\n");
    CHECK_STR(d.log, "READY TXN(0,MAIL,452) READY");
    CHECK_STR(d.out, "EHLO client.test\r\nMAIL FROM:<a@x.test>\r\n");
    CHECK_INT(d.c.need_rset, 1);
    drv_free(&d);
}

static void test_data_refused(void)
{
    static const char *const phases[] = {
        "220 mx\r\n250-mx\r\n250 PIPELINING\r\n"
        "250 ok\r\n250 ok\r\n451 4.3.0 try later\r\n221 bye\r\n",
        NULL,
    };
    struct drv d;
    drv_init(&d, SMTP_TLS_NONE, &msg1, 1);
    drv_run(&d, phases, FEED_WHOLE, 0);
    CHECK_STR(d.log, "READY TXN(0,DATA,451) READY CLOSED");
    CHECK(strstr(d.out, "Subject") == NULL);
    drv_free(&d);
}

/* A 4xx final reply: not accepted, and RSET before the next message. */
static void test_body_4xx_then_rset(void)
{
    static const char *const phases[] = {
        "220 mx\r\n250-mx\r\n250 PIPELINING\r\n"
        "250 ok\r\n250 ok\r\n354 go\r\n451 4.3.0 local error\r\n"
        "250 reset\r\n250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n221 bye\r\n",
        NULL,
    };
    static const struct smtp_msg msgs[] = {
        {"a@x.test", rcpts1, 1, body1, sizeof(body1) - 1},
        {"a@x.test", rcpts1, 1, (const uint8_t *)"x", 1},
    };
    struct drv d;
    drv_init(&d, SMTP_TLS_NONE, msgs, 2);
    drv_run(&d, phases, FEED_WHOLE, 0);
    CHECK_STR(d.log, "READY TXN(0,BODY,451) READY TXN(1,BODY,250) READY CLOSED");
    CHECK_STR(d.out, "EHLO client.test\r\n"
                     "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n" BODY1_WIRE
                     "RSET\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nx\r\n.\r\n"
                     "QUIT\r\n");
    CHECK_STR(d.res[0].reply.text, "4.3.0 local error");
    CHECK_STR(d.res[0].reply.esc, "4.3.0");
    drv_free(&d);
}

static void test_two_clean_txns_no_rset(void)
{
    static const char *const phases[] = {
        "220 mx\r\n250-mx\r\n250 PIPELINING\r\n"
        "250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n"
        "250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n221 bye\r\n",
        NULL,
    };
    static const struct smtp_msg msgs[] = {
        {"a@x.test", rcpts1, 1, (const uint8_t *)"one", 3},
        {"a@x.test", rcpts2, 2, (const uint8_t *)"two\r\n", 5},
    };
    struct drv d;
    drv_init(&d, SMTP_TLS_NONE, msgs, 2);
    drv_run(&d, phases, FEED_WHOLE, 0);
    CHECK_STR(d.log, "READY TXN(1,BODY,250) READY TXN(1,BODY,250) READY CLOSED");
    CHECK_STR(d.out, "EHLO client.test\r\n"
                     "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\none\r\n.\r\n"
                     "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\n"
                     "DATA\r\ntwo\r\n.\r\nQUIT\r\n");
    CHECK(strstr(d.out, "RSET") == NULL);
    /* The second result does not inherit the first's codes. */
    CHECK_INT(d.res[1].rcpt_code[1], 250);
    CHECK_INT(d.res[1].rcpt_code[2], 0);
    drv_free(&d);
}

/* ---- session failures ---- */

static void test_421_mid_session(void)
{
    struct drv d;
    drv_init(&d, SMTP_TLS_NONE, &msg2, 1);
    drv_pump(&d);
    drv_feed_str(&d, "220 mx\r\n250-mx\r\n250 PIPELINING\r\n250 ok\r\n421 4.3.2 shutting down\r\n");
    CHECK_STR(d.log, "READY ERROR(service not available (421))");
    CHECK_INT(d.in_doubt_at_error, 0);
    CHECK(strstr(d.out, "QUIT") == NULL);
    drv_free(&d);

    /* 421 as the final reply: outcome known (not delivered), then error. */
    drv_init(&d, SMTP_TLS_NONE, &msg1, 1);
    drv_pump(&d);
    drv_feed_str(&d, "220 mx\r\n250-mx\r\n250 PIPELINING\r\n250 ok\r\n250 ok\r\n354 go\r\n"
                     "421 4.4.2 timeout\r\n");
    CHECK_STR(d.log, "READY TXN(0,BODY,421) ERROR(service not available (421))");
    CHECK_INT(d.in_doubt_at_error, 0);
    drv_free(&d);

    /* 421 while idle. */
    drv_init(&d, SMTP_TLS_NONE, NULL, 0);
    d.no_quit = 1;
    drv_pump(&d);
    drv_feed_str(&d, "220 mx\r\n250 mx\r\n");
    drv_feed_str(&d, "421 idle timeout\r\n");
    CHECK_STR(d.log, "READY ERROR(service not available (421))");
    drv_free(&d);
}

static void test_malformed_reply(void)
{
    static const char *const junk[] = {
        "25O ok\r\n", "250-a\r\n251 b\r\n", "250 a\rb\r\n", "2500 x\r\n",
    };
    for (size_t i = 0; i < 4; i++) {
        struct drv d;
        drv_init(&d, SMTP_TLS_NONE, &msg1, 1);
        drv_pump(&d);
        drv_feed_str(&d, "220 mx\r\n");
        drv_feed_str(&d, junk[i]);
        CHECK_STR(d.log, "ERROR(malformed reply)");
        CHECK_STR(d.out, "EHLO client.test\r\n");
        drv_free(&d);
    }
    /* Garbage before a 2xx under PIPELINING. */
    struct drv d;
    drv_init(&d, SMTP_TLS_NONE, &msg1, 1);
    drv_pump(&d);
    drv_feed_str(&d, "220 mx\r\n250-mx\r\n250 PIPELINING\r\nHTTP/1.1 200\r\n250 ok\r\n");
    CHECK_STR(d.log, "READY ERROR(malformed reply)");
    drv_free(&d);
}

static void test_unexpected_replies(void)
{
    struct drv d;
    /* A reply nobody asked for while idle. */
    drv_init(&d, SMTP_TLS_NONE, NULL, 0);
    d.no_quit = 1;
    drv_pump(&d);
    drv_feed_str(&d, "220 mx\r\n250 mx\r\n250 surprise\r\n");
    CHECK_STR(d.log, "READY ERROR(unexpected reply)");
    drv_free(&d);

    /* 354 to MAIL. */
    drv_init(&d, SMTP_TLS_NONE, &msg1, 1);
    drv_pump(&d);
    drv_feed_str(&d, "220 mx\r\n250 mx\r\n354 what\r\n");
    CHECK_STR(d.log, "READY ERROR(unexpected reply)");
    drv_free(&d);

    /* 250 to DATA. */
    drv_init(&d, SMTP_TLS_NONE, &msg1, 1);
    drv_pump(&d);
    drv_feed_str(&d, "220 mx\r\n250 mx\r\n250 ok\r\n250 ok\r\n250 data?\r\n");
    CHECK_STR(d.log, "READY ERROR(unexpected reply)");
    CHECK(strstr(d.out, "Subject") == NULL);
    drv_free(&d);
}

static void test_in_doubt_after_body(void)
{
    struct drv d;
    drv_init(&d, SMTP_TLS_NONE, &msg1, 1);
    drv_pump(&d);
    drv_feed_str(&d, "220 mx\r\n250-mx\r\n250 PIPELINING\r\n250 ok\r\n250 ok\r\n354 go\r\n");
    CHECK_INT(smtp_client_in_doubt(&d.c), 1);
    CHECK(strstr(d.out, BODY1_WIRE) != NULL);
    smtp_client_eof(&d.c);
    drv_pump(&d);
    CHECK_STR(d.log, "READY ERROR(connection closed by peer)");
    CHECK_INT(d.in_doubt_at_error, 1);
    CHECK_INT(smtp_client_busy(&d.c), 1);
    drv_free(&d);

    /* Partial final reply, then EOF: still in doubt. */
    drv_init(&d, SMTP_TLS_NONE, &msg1, 1);
    drv_pump(&d);
    drv_feed_str(&d, "220 mx\r\n250 mx\r\n250 ok\r\n250 ok\r\n354 go\r\n250 2.0.0 que");
    smtp_client_eof(&d.c);
    drv_pump(&d);
    CHECK_STR(d.log, "READY ERROR(connection closed by peer)");
    CHECK_INT(d.in_doubt_at_error, 1);
    drv_free(&d);

    /* EOF before the body: not in doubt. */
    drv_init(&d, SMTP_TLS_NONE, &msg1, 1);
    drv_pump(&d);
    drv_feed_str(&d, "220 mx\r\n250 mx\r\n250 ok\r\n");
    smtp_client_eof(&d.c);
    drv_pump(&d);
    CHECK_STR(d.log, "READY ERROR(connection closed by peer)");
    CHECK_INT(d.in_doubt_at_error, 0);
    drv_free(&d);
}

static void test_eof_after_quit(void)
{
    struct drv d;
    drv_init(&d, SMTP_TLS_NONE, NULL, 0);
    drv_pump(&d);
    drv_feed_str(&d, "220 mx\r\n250 mx\r\n");
    CHECK_STR(d.out, "EHLO client.test\r\nQUIT\r\n");
    smtp_client_eof(&d.c);
    drv_pump(&d);
    CHECK_STR(d.log, "READY CLOSED");
    CHECK_INT(d.c.state, SMTP_ST_CLOSED);
    drv_free(&d);

    /* Any reply to QUIT closes too. */
    drv_init(&d, SMTP_TLS_NONE, NULL, 0);
    drv_pump(&d);
    drv_feed_str(&d, "220 mx\r\n250 mx\r\n500 whatever\r\n");
    CHECK_STR(d.log, "READY CLOSED");
    drv_free(&d);
}

/* run_refused_first runs phases whole and checks the first message was
 * refused by the client itself (enhanced code esc, nothing of it on the
 * wire): the events, and all that was sent. The caller frees d. */
static void run_refused_first(struct drv *d, const struct smtp_msg *msgs, size_t n,
                              const char *const *phases, const char *want_log,
                              const char *want_esc, const char *want_out)
{
    drv_init(d, SMTP_TLS_NONE, msgs, n);
    drv_run(d, phases, FEED_WHOLE, 0);
    CHECK_STR(d->log, want_log);
    CHECK_STR(d->res[0].reply.esc, want_esc);
    CHECK_INT(d->res[0].local, 1);
    CHECK_STR(d->out, want_out);
}

static void test_size_limit(void)
{
    static const uint8_t big[40] = {'x'};
    static const struct smtp_msg msgs[] = {
        {"a@x.test", rcpts1, 1, big, sizeof(big)},
        {"a@x.test", rcpts1, 1, (const uint8_t *)"small", 5},
    };
    static const char *const phases[] = {
        "220 mx\r\n250-mx\r\n250-PIPELINING\r\n250 SIZE 30\r\n"
        "250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n221 bye\r\n",
        NULL,
    };
    struct drv d;
    /* Refused without a word on the wire, and no RSET owed for it. */
    run_refused_first(&d, msgs, 2, phases,
                      "READY TXN(0,MAIL,552) READY TXN(1,BODY,250) READY CLOSED", "5.3.4",
                      "EHLO client.test\r\n"
                      "MAIL FROM:<a@x.test> SIZE=5\r\nRCPT TO:<b@y.test>\r\nDATA\r\nsmall\r\n.\r\n"
                      "QUIT\r\n");
    CHECK_STR(d.res[0].reply.text, "5.3.4 message exceeds the receiver's SIZE limit");
    CHECK_INT(d.res[1].local, 0);
    drv_free(&d);
}

/* ---- ESMTP parameters and local refusals (8BITMIME, SMTPUTF8) ---- */

static const uint8_t body8[] = "Subject: caf\xc3\xa9\r\n\r\nd\xc3\xa9j\xc3\xa0 vu\r\n";
static const char *const rcpts_utf8[] = {"j\xc3\xb6rg@b\xc3\xbc" "cher.test"};

/* run_split_all runs phases whole, split at every offset and byte by byte,
 * and checks every run gives the same bytes and events. */
static void run_split_all(enum smtp_tls_mode tls, const struct smtp_msg *msgs, size_t n,
                          const char *const *phases, const char *want_out,
                          const char *want_log)
{
    size_t maxlen = 0;
    for (size_t i = 0; phases[i]; i++)
        if (strlen(phases[i]) > maxlen)
            maxlen = strlen(phases[i]);
    for (size_t k = 0; k <= maxlen + 1; k++) {
        struct drv d;
        drv_init(&d, tls, msgs, n);
        drv_run(&d, phases, k <= maxlen ? FEED_SPLIT : FEED_BYTES, k);
        int bad = strcmp(d.out, want_out) != 0 || strcmp(d.log, want_log) != 0;
        if (bad)
            CHECK_FAILF("split %zu: out \"%s\" log \"%s\"", k, d.out, d.log);
        drv_free(&d);
        if (bad)
            break;
    }
}

static void test_8bitmime_param(void)
{
    static const struct smtp_msg m = {"a@x.test", rcpts1, 1, body8, sizeof(body8) - 1};
    static const char *const phases[] = {
        "220 mx\r\n250-mx\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
        "250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n221 bye\r\n",
        NULL,
    };
    char want[512];
    snprintf(want, sizeof(want),
             "EHLO client.test\r\nMAIL FROM:<a@x.test> BODY=8BITMIME\r\nRCPT TO:<b@y.test>\r\n"
             "DATA\r\n%s.\r\nQUIT\r\n", (const char *)body8);
    run_split_all(SMTP_TLS_NONE, &m, 1, phases, want, "READY TXN(1,BODY,250) READY CLOSED");
}

static void test_8bit_refused_without_8bitmime(void)
{
    static const struct smtp_msg msgs[] = {
        {"a@x.test", rcpts1, 1, body8, sizeof(body8) - 1},
        {"a@x.test", rcpts1, 1, (const uint8_t *)"plain", 5},
    };
    static const char *const phases[] = {
        "220 mx\r\n250-mx\r\n250 PIPELINING\r\n"
        "250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n221 bye\r\n",
        NULL,
    };
    /* Nothing of the 8-bit message on the wire; the next one has no BODY=. */
    static const char want_out[] =
        "EHLO client.test\r\n"
        "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nplain\r\n.\r\n"
        "QUIT\r\n";
    static const char want_log[] = "READY TXN(0,MAIL,554) READY TXN(1,BODY,250) READY CLOSED";
    struct drv d;
    run_refused_first(&d, msgs, 2, phases, want_log, "5.6.3", want_out);
    drv_free(&d);
    run_split_all(SMTP_TLS_NONE, msgs, 2, phases, want_out, want_log);
}

static void test_helo_fallback_refuses_8bit(void)
{
    static const struct smtp_msg m = {"a@x.test", rcpts1, 1, body8, sizeof(body8) - 1};
    static const char *const phases[] = {
        "220 mx\r\n502 5.5.2 no EHLO\r\n250 mx\r\n221 bye\r\n",
        NULL,
    };
    run_split_all(SMTP_TLS_MAY, &m, 1, phases,
                  "EHLO client.test\r\nHELO client.test\r\nQUIT\r\n",
                  "READY TXN(0,MAIL,554) READY CLOSED");
}

static void test_smtputf8(void)
{
    static const struct smtp_msg m = {"a@x.test", rcpts_utf8, 1, (const uint8_t *)"hi", 2};
    static const char *const phases[] = {
        "220 mx\r\n250-mx\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
        "250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n221 bye\r\n",
        NULL,
    };
    run_split_all(SMTP_TLS_NONE, &m, 1, phases,
                  "EHLO client.test\r\nMAIL FROM:<a@x.test> SMTPUTF8\r\n"
                  "RCPT TO:<j\xc3\xb6rg@b\xc3\xbc" "cher.test>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n",
                  "READY TXN(1,BODY,250) READY CLOSED");

    /* A non-ASCII sender needs it as much; without it: 553 5.6.7. */
    static const struct smtp_msg from8 = {"\xc3\xa9@x.test", rcpts1, 1, (const uint8_t *)"hi", 2};
    static const char *const no_utf8[] = {
        "220 mx\r\n250-mx\r\n250 8BITMIME\r\n221 bye\r\n",
        NULL,
    };
    struct drv d;
    run_refused_first(&d, &from8, 1, no_utf8, "READY TXN(0,MAIL,553) READY CLOSED", "5.6.7",
                      "EHLO client.test\r\nQUIT\r\n");
    drv_free(&d);
}

/* ---- BDAT (RFC 3030): only with PIPELINING and CHUNKING offered ---- */

/* body1 in the BDAT form: line ends converted, no dot-stuffing, no ".". */
#define BODY1_CHUNK "Subject: hi\r\n\r\n.dot line\r\nend\r\n"
#define BODY1_BDAT "BDAT 31 LAST\r\n" BODY1_CHUNK
#define EHLO_CHUNKING "220 mx\r\n250-mx\r\n250-PIPELINING\r\n250 CHUNKING\r\n"

static void test_bdat_pipelined(void)
{
    /* Two messages, each one write: MAIL, RCPTs, BDAT and the body. */
    static const struct smtp_msg msgs[] = {
        {"a@x.test", rcpts1, 1, body1, sizeof(body1) - 1},
        {"a@x.test", rcpts2, 2, body1, sizeof(body1) - 1},
    };
    static const char *const phases[] = {
        EHLO_CHUNKING
        "250 ok\r\n250 ok\r\n250 2.0.0 queued\r\n"
        "250 ok\r\n550 5.1.1 no\r\n250 ok\r\n250 2.0.0 queued\r\n221 bye\r\n",
        NULL,
    };
    run_split_all(SMTP_TLS_NONE, msgs, 2, phases,
                  "EHLO client.test\r\n"
                  "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n" BODY1_BDAT
                  "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\n" BODY1_BDAT
                  "QUIT\r\n",
                  "READY TXN(1,BODY,250) READY TXN(1,BODY,250) READY CLOSED");
}

static void test_bdat_canonical_as_is(void)
{
    /* CRLF only, ends with CRLF: the chunk is the data itself, a leading
     * dot and an 8-bit byte included. */
    static const uint8_t canon[] = ".top\r\n\xc3\xa9\r\n";
    static const struct smtp_msg m = {"a@x.test", rcpts1, 1, canon, sizeof(canon) - 1};
    static const char *const phases[] = {
        "220 mx\r\n250-mx\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 CHUNKING\r\n"
        "250 ok\r\n250 ok\r\n250 2.0.0 queued\r\n221 bye\r\n",
        NULL,
    };
    run_split_all(SMTP_TLS_NONE, &m, 1, phases,
                  "EHLO client.test\r\nMAIL FROM:<a@x.test> BODY=8BITMIME\r\nRCPT TO:<b@y.test>\r\n"
                  "BDAT 10 LAST\r\n.top\r\n\xc3\xa9\r\nQUIT\r\n",
                  "READY TXN(1,BODY,250) READY CLOSED");
}

static void test_bdat_needs_pipelining(void)
{
    /* CHUNKING alone: lock-step with DATA, as before. */
    static const char *const phases[] = {
        "220 mx\r\n250-mx\r\n250 CHUNKING\r\n250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n221 bye\r\n",
        NULL,
    };
    run_split_all(SMTP_TLS_NONE, &msg1, 1, phases,
                  "EHLO client.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n"
                  BODY1_WIRE "QUIT\r\n",
                  "READY TXN(1,BODY,250) READY CLOSED");
}

static void test_bdat_refusals(void)
{
    /* No RCPT accepted: BDAT's reply is ignored, the RCPT refusal stands,
     * and RSET comes first next time. Then MAIL refused. Then the final
     * reply refuses the message. */
    static const struct smtp_msg msgs[] = {
        {"a@x.test", rcpts1, 1, body1, sizeof(body1) - 1},
        {"a@x.test", rcpts1, 1, body1, sizeof(body1) - 1},
        {"a@x.test", rcpts1, 1, body1, sizeof(body1) - 1},
    };
    static const char *const phases[] = {
        EHLO_CHUNKING
        "250 ok\r\n550 5.1.1 no\r\n554 5.5.1 no valid recipients\r\n"
        "250 reset\r\n550 5.7.1 sender denied\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need RCPT\r\n"
        "250 reset\r\n250 ok\r\n250 ok\r\n552 5.3.4 too big\r\n221 bye\r\n",
        NULL,
    };
    run_split_all(SMTP_TLS_NONE, msgs, 3, phases,
                  "EHLO client.test\r\n"
                  "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n" BODY1_BDAT
                  "RSET\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n" BODY1_BDAT
                  "RSET\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n" BODY1_BDAT
                  "QUIT\r\n",
                  "READY TXN(0,RCPT,550) READY TXN(0,MAIL,550) READY TXN(0,BODY,552) READY CLOSED");
}

static void test_bdat_in_doubt(void)
{
    /* The body is on the wire with the commands: in doubt at once. */
    struct drv d;
    drv_init(&d, SMTP_TLS_NONE, &msg1, 1);
    drv_pump(&d);
    drv_feed_str(&d, EHLO_CHUNKING);
    CHECK_INT(smtp_client_in_doubt(&d.c), 1);
    CHECK(strstr(d.out, BODY1_BDAT) != NULL);
    drv_feed_str(&d, "250 ok\r\n250 ok\r\n");
    smtp_client_eof(&d.c);
    drv_pump(&d);
    CHECK_STR(d.log, "READY ERROR(connection closed by peer)");
    CHECK_INT(d.in_doubt_at_error, 1);
    drv_free(&d);

    /* Every RCPT refused: nobody can have it. */
    drv_init(&d, SMTP_TLS_NONE, &msg1, 1);
    d.no_quit = 1;
    drv_pump(&d);
    drv_feed_str(&d, EHLO_CHUNKING "250 ok\r\n550 no\r\n");
    CHECK_INT(smtp_client_in_doubt(&d.c), 0);
    smtp_client_eof(&d.c);
    drv_pump(&d);
    CHECK_INT(d.in_doubt_at_error, 0);
    drv_free(&d);

    /* 421 to MAIL: the server leaves without the message. */
    drv_init(&d, SMTP_TLS_NONE, &msg1, 1);
    drv_pump(&d);
    drv_feed_str(&d, EHLO_CHUNKING "421 4.3.2 shutting down\r\n");
    CHECK_STR(d.log, "READY ERROR(service not available (421))");
    CHECK_INT(d.in_doubt_at_error, 0);
    drv_free(&d);

    /* 421 as the final reply: the outcome first, then the error. */
    drv_init(&d, SMTP_TLS_NONE, &msg1, 1);
    drv_pump(&d);
    drv_feed_str(&d, EHLO_CHUNKING "250 ok\r\n250 ok\r\n421 4.3.2 bye\r\n");
    CHECK_STR(d.log, "READY TXN(0,BODY,421) ERROR(service not available (421))");
    CHECK_INT(d.in_doubt_at_error, 0);
    drv_free(&d);
}

/* Per-recipient replies keep their own code, enhanced code and text; a
 * 452 "too many recipients" is just a 4xx to the client (the worker sends
 * those recipients again in a new transaction). */
static void test_rcpt_replies_kept(void)
{
    static const char *const phases[] = {
        "220 mx\r\n250-mx\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n"
        "250 2.1.0 ok\r\n250 2.1.5 ok\r\n550-5.1.1 no such user\r\n550 5.1.1 really\r\n"
        "452 4.5.3 too many recipients\r\n354 go\r\n250 2.0.0 queued\r\n221 bye\r\n",
        NULL,
    };
    char want[512];
    snprintf(want, sizeof(want),
             "EHLO client.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n"
             "RCPT TO:<c@y.test>\r\nRCPT TO:<d@y.test>\r\nDATA\r\n%sQUIT\r\n", BODY1_WIRE);
    run_split_all(SMTP_TLS_NONE, &msg3, 1, phases, want, "READY TXN(1,BODY,250) READY CLOSED");
    struct drv d;
    drv_init(&d, SMTP_TLS_NONE, &msg3, 1);
    drv_run(&d, phases, FEED_WHOLE, 0);
    CHECK_INT(d.res[0].rcpt_code[0], 250);
    CHECK_INT(d.res[0].rcpt_code[1], 550);
    CHECK_INT(d.res[0].rcpt_code[2], 452);
    CHECK_STR(d.res[0].rcpt_esc[0], "2.1.5");
    CHECK_STR(d.res[0].rcpt_esc[1], "5.1.1");
    CHECK_STR(d.res[0].rcpt_esc[2], "4.5.3");
    CHECK_STR(smtp_txn_rcpt_text(&d.res[0], 0), "");   /* accepted: nothing kept */
    CHECK_STR(smtp_txn_rcpt_text(&d.res[0], 1), "5.1.1 no such user");
    CHECK_STR(smtp_txn_rcpt_text(&d.res[0], 2), "4.5.3 too many recipients");
    CHECK_STR(d.res[0].reply.esc, "2.0.0");
    CHECK_INT(smtp_client_caps(&d.c)->enhancedstatuscodes, 1);
    drv_free(&d);
}

/* Refusal texts share a bounded pool: when it is full, later recipients
 * keep their code and enhanced code but no text. */
static void test_rcpt_text_pool_bounded(void)
{
    enum { N = 40 };
    static const char *rc[N];
    for (size_t i = 0; i < N; i++)
        rc[i] = "b@y.test";
    const struct smtp_msg m = {"a@x.test", rc, N, body1, sizeof(body1) - 1};
    static char script[N * 220 + 256];
    size_t n = (size_t)snprintf(script, sizeof(script),
                                "220 mx\r\n250-mx\r\n250 PIPELINING\r\n250 ok\r\n");
    char longtext[200];
    memset(longtext, 'x', sizeof(longtext) - 1);
    longtext[sizeof(longtext) - 1] = '\0';
    for (size_t i = 0; i < N; i++)
        n += (size_t)snprintf(script + n, sizeof(script) - n, "550 5.1.1 %s\r\n", longtext);
    snprintf(script + n, sizeof(script) - n, "554 no valid recipients\r\n221 bye\r\n");
    const char *const phases[] = {script, NULL};
    struct drv d;
    drv_init(&d, SMTP_TLS_NONE, &m, 1);
    drv_run(&d, phases, FEED_WHOLE, 0);
    CHECK_STR(d.log, "READY TXN(0,RCPT,550) READY CLOSED");
    CHECK_INT(strlen(smtp_txn_rcpt_text(&d.res[0], 0)), SMTP_RCPT_TEXT_MAX - 1);
    CHECK_STR(smtp_txn_rcpt_text(&d.res[0], N - 1), "");
    CHECK_INT(d.res[0].rcpt_code[N - 1], 550);
    CHECK_STR(d.res[0].rcpt_esc[N - 1], "5.1.1");
    CHECK(d.res[0].rcpt_texts_used <= SMTP_RCPT_TEXTS_MAX);
    drv_free(&d);
}

/* Hostile replies mid-transaction: garbage before a 2xx while pipelining,
 * a multi-line reply with mismatched codes, a line over the limit. Each
 * ends the session with "malformed reply", nothing sent after it, and no
 * outcome claimed for the message. */
static void test_hostile_replies(void)
{
    static const char *const cases[] = {
        "220 mx\r\n250-mx\r\n250 PIPELINING\r\nxyzzy\r\n250 ok\r\n",
        "220 mx\r\n250-mx\r\n250 PIPELINING\r\n250-ok\r\n251 ok\r\n",
        "220 mx\r\n250-mx\r\n251 PIPELINING\r\n",
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *const phases[] = {cases[i], NULL};
        struct drv d;
        drv_init(&d, SMTP_TLS_NONE, &msg1, 1);
        drv_run(&d, phases, FEED_BYTES, 0);
        if (strcmp(tail(d.log, "ERROR(malformed reply)"), "ERROR(malformed reply)") != 0)
            CHECK_FAILF("case %zu: log \"%s\"", i, d.log);
        CHECK_INT(d.nres, 0);
        drv_free(&d);
    }
    /* A reply line longer than SMTP_REPLY_LINE_MAX, fed in pieces. */
    struct drv d;
    drv_init(&d, SMTP_TLS_NONE, &msg1, 1);
    drv_pump(&d);
    drv_feed_str(&d, "220 mx\r\n250-mx\r\n250 PIPELINING\r\n250 ");
    char chunk[256];
    memset(chunk, 'x', sizeof(chunk));
    for (int k = 0; k < (SMTP_REPLY_LINE_MAX / 256) + 2 && d.c.state != SMTP_ST_FAILED; k++)
        drv_feed(&d, chunk, sizeof(chunk));
    CHECK_STR(d.log, "READY ERROR(malformed reply)");
    CHECK_INT(d.nres, 0);
    drv_free(&d);
}

static void test_bad_addresses_refused(void)
{
    static const char *const bad_rcpt[] = {"b@y.test\r\nRSET"};
    static const char *const bad_rcpt2[] = {"b@y.test\nx"};
    static const char *const bad_rcpt3[] = {"b@y.test> NOTIFY=NEVER"};
    static const char *const empty_rcpt[] = {""};
    static const char *const null_rcpt[] = {NULL};
    static const char *const ok_rcpt[] = {"b@y.test"};
    const struct smtp_msg bad[] = {
        {"a@x\r\nDATA", ok_rcpt, 1, body1, 3},
        {"a@x\rz", ok_rcpt, 1, body1, 3},
        {"a@x", bad_rcpt, 1, body1, 3},
        {"a@x", bad_rcpt2, 1, body1, 3},
        {"a@x", bad_rcpt3, 1, body1, 3},
        {"a@x", empty_rcpt, 1, body1, 3},
        {"a@x", null_rcpt, 1, body1, 3},
        {NULL, ok_rcpt, 1, body1, 3},
        {"a@x", ok_rcpt, 0, body1, 3},
        {"a@x", ok_rcpt, SMTP_MAX_RCPTS_PER_TXN + 1, body1, 3},
    };
    struct drv d;
    drv_init(&d, SMTP_TLS_NONE, NULL, 0);
    d.no_quit = 1;
    drv_pump(&d);
    drv_feed_str(&d, "220 mx\r\n250 mx\r\n");
    CHECK_STR(d.log, "READY");
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (smtp_client_start_txn(&d.c, &bad[i]) != 0)
            CHECK_FAILF("bad message %zu accepted", i);
    CHECK_STR(d.out, "EHLO client.test\r\n");
    CHECK_INT(d.c.state, SMTP_ST_READY);
    /* A good one still works afterwards. */
    CHECK_INT(smtp_client_start_txn(&d.c, &msg1), 1);
    CHECK_INT(smtp_client_start_txn(&d.c, &msg1), 0);   /* not READY now */
    CHECK_INT(smtp_client_quit(&d.c), 0);
    drv_free(&d);

    /* Not before READY either. */
    drv_init(&d, SMTP_TLS_NONE, NULL, 0);
    CHECK_INT(smtp_client_start_txn(&d.c, &msg1), 0);
    CHECK_INT(smtp_client_quit(&d.c), 0);
    drv_free(&d);
}

static void test_input_limit(void)
{
    struct drv d;
    drv_init(&d, SMTP_TLS_NONE, NULL, 0);
    drv_pump(&d);
    static char junk[SMTP_CLIENT_INPUT_MAX + 1];
    memset(junk, '2', sizeof(junk));
    CHECK_INT(smtp_client_feed(&d.c, (const uint8_t *)junk, sizeof(junk)), 0);
    drv_pump(&d);
    CHECK_STR(d.log, "ERROR(input limit exceeded)");
    drv_free(&d);
}

static void test_helo_name_sanitized(void)
{
    struct smtp_client c;
    struct smtp_client_config cfg = {.helo_name = "evil\r\nMAIL FROM:<x>", .tls = SMTP_TLS_NONE};
    smtp_client_init(&c, &cfg);
    CHECK_STR(c.helo_name, "localhost");
    smtp_client_cleanup(&c);
    smtp_client_cleanup(&c);    /* twice is safe */
}

static void test_state_names(void)
{
    CHECK_STR(smtp_client_state_name(SMTP_ST_GREETING), "GREETING");
    CHECK_STR(smtp_client_state_name(SMTP_ST_TLS_HANDSHAKE), "TLS_HANDSHAKE");
    CHECK_STR(smtp_client_state_name(SMTP_ST_FAILED), "FAILED");
    CHECK_STR(smtp_client_state_name(SMTP_ST_COUNT), "?");
    for (int s = 0; s < SMTP_ST_COUNT; s++)
        CHECK(strcmp(smtp_client_state_name((enum smtp_client_state)s), "?") != 0);
}

int main(void)
{
    RUN(test_happy_starttls_pipelining);
    RUN(test_happy_split_everywhere);
    RUN(test_starttls_injection);
    RUN(test_required_not_offered);
    RUN(test_required_refused);
    RUN(test_may_refused_plaintext);
    RUN(test_tls_none_never_starttls);
    RUN(test_greeting_refused);
    RUN(test_helo_fallback_lockstep);
    RUN(test_lockstep_order);
    RUN(test_one_rcpt_rejected);
    RUN(test_all_rcpts_rejected_pipelined);
    RUN(test_all_rcpts_rejected_354);
    RUN(test_all_rcpts_rejected_lockstep);
    RUN(test_mail_rejected_pipelined);
    RUN(test_mail_rejected_lockstep);
    RUN(test_data_refused);
    RUN(test_body_4xx_then_rset);
    RUN(test_two_clean_txns_no_rset);
    RUN(test_421_mid_session);
    RUN(test_malformed_reply);
    RUN(test_unexpected_replies);
    RUN(test_in_doubt_after_body);
    RUN(test_eof_after_quit);
    RUN(test_size_limit);
    RUN(test_8bitmime_param);
    RUN(test_8bit_refused_without_8bitmime);
    RUN(test_helo_fallback_refuses_8bit);
    RUN(test_smtputf8);
    RUN(test_bdat_pipelined);
    RUN(test_bdat_canonical_as_is);
    RUN(test_bdat_needs_pipelining);
    RUN(test_bdat_refusals);
    RUN(test_bdat_in_doubt);
    RUN(test_rcpt_replies_kept);
    RUN(test_rcpt_text_pool_bounded);
    RUN(test_hostile_replies);
    RUN(test_bad_addresses_refused);
    RUN(test_input_limit);
    RUN(test_helo_name_sanitized);
    RUN(test_state_names);
    return check_finish();
}
