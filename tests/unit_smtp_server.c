/* unit_smtp_server.c - drives engine/smtp_server with client bytes. */
#include <stdlib.h>
#include <string.h>

#include "engine/smtp_server.h"
#include "tests/check.h"

#define MAX_MSGS 8

/* What one conversation produced. */
struct run {
    struct buf out;                 /* every reply byte, in order */
    int nmsgs;
    char from[MAX_MSGS][128];
    char rcpts[MAX_MSGS][256];      /* comma-joined */
    struct buf data[MAX_MSGS];
    int starttls;                   /* STARTTLS events seen */
    int closed;
    const char *close_reason;
    int feed_refused;
};

static void run_init(struct run *r)
{
    memset(r, 0, sizeof(*r));
    buf_init(&r->out, 0);
    for (int i = 0; i < MAX_MSGS; i++)
        buf_init(&r->data[i], 0);
}

static void run_free(struct run *r)
{
    buf_free(&r->out);
    for (int i = 0; i < MAX_MSGS; i++)
        buf_free(&r->data[i]);
}

static void collect_output(struct smtp_server *s, struct run *r)
{
    size_t n;
    const uint8_t *p = smtp_server_output(s, &n);
    buf_append(&r->out, p, n);
    smtp_server_output_consume(s, n);
    /* Keep a NUL after the bytes (not counted) so strstr works. */
    uint8_t *z = buf_reserve(&r->out, 1);
    if (z)
        *z = 0;
}

/* Run the session until it needs input; answer messages with `msg_reply`
 * (NULL: the session's default). */
static void pump(struct smtp_server *s, struct run *r, const char *msg_reply)
{
    for (;;) {
        struct smtp_server_event ev = smtp_server_next(s);
        if (ev.kind == SMTP_SRV_EV_NONE)
            break;
        if (ev.kind == SMTP_SRV_EV_MESSAGE) {
            struct smtp_server_envelope e;
            if (!smtp_server_envelope(s, &e) || r->nmsgs >= MAX_MSGS)
                break;
            int i = r->nmsgs++;
            snprintf(r->from[i], sizeof(r->from[i]), "%s", e.mail_from);
            size_t used = 0;
            for (size_t k = 0; k < e.nrcpts; k++) {
                int w = snprintf(r->rcpts[i] + used, sizeof(r->rcpts[i]) - used, "%s%s",
                                 k ? "," : "", e.rcpts[k]);
                if (w > 0)
                    used += (size_t)w;
            }
            buf_append(&r->data[i], e.data, e.data_len);
            buf_reserve(&r->data[i], 1);    /* never NULL, even when empty */
            smtp_server_message_reply(s, msg_reply);
        } else if (ev.kind == SMTP_SRV_EV_STARTTLS) {
            r->starttls++;
            break;
        } else if (ev.kind == SMTP_SRV_EV_CLOSE) {
            r->closed = 1;
            r->close_reason = ev.reason;
            break;
        }
    }
    collect_output(s, r);
}

/* Feed `in` in pieces of at most `chunk` bytes (0: all at once). */
static void converse(struct smtp_server *s, struct run *r, const char *in, size_t len,
                     size_t chunk)
{
    size_t off = 0;
    if (chunk == 0)
        chunk = len ? len : 1;
    while (off < len) {
        size_t k = len - off < chunk ? len - off : chunk;
        if (!smtp_server_feed(s, (const uint8_t *)in + off, k))
            r->feed_refused = 1;
        off += k;
        pump(s, r, NULL);
    }
    pump(s, r, NULL);
}

static const struct smtp_server_config base_cfg = {
    .hostname = "sink.test",
    .offer_starttls = 1,
    .offer_pipelining = 1,
    .offer_chunking = 1,
    .max_message_size = 1000,
    .max_rcpts = 3,
};

/* One whole conversation with a config; returns the run (caller frees). */
static void talk(const struct smtp_server_config *cfg, const char *in, size_t chunk,
                 struct run *r)
{
    struct smtp_server s;
    run_init(r);
    CHECK(smtp_server_init(&s, cfg));
    collect_output(&s, r);
    converse(&s, r, in, strlen(in), chunk);
    smtp_server_cleanup(&s);
}

#define GREETING "220 sink.test ESMTP tern\r\n"

static void test_ehlo_caps(void)
{
    struct run r;
    talk(&base_cfg, "EHLO client.example\r\n", 0, &r);
    CHECK_MEM(r.out.data, buf_used(&r.out),
              GREETING "250-sink.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n"
                       "250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n"
                       "250-CHUNKING\r\n250 STARTTLS\r\n");
    run_free(&r);

    struct smtp_server_config c = base_cfg;
    c.offer_starttls = 0;
    c.offer_pipelining = 0;
    c.offer_chunking = 0;
    talk(&c, "HELO a\r\nEHLO b\r\n", 0, &r);
    CHECK_MEM(r.out.data, buf_used(&r.out),
              GREETING "250 sink.test\r\n250-sink.test\r\n250-SIZE 1000\r\n"
                       "250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8\r\n");
    run_free(&r);
}

static void test_pipelined_transaction(void)
{
    static const char in[] =
        "EHLO c\r\nMAIL FROM:<a@x.test> SIZE=20 BODY=8BITMIME\r\n"
        "RCPT TO:<b@y.test>\r\nRCPT TO: <c@z.test>\r\nDATA\r\n"
        "Subject: hi\r\n\r\nbody\r\n.\r\n"
        "MAIL FROM:<>\r\nRCPT TO:<d@y.test>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n";
    /* The same replies whatever the split: one chunk, then byte by byte. */
    size_t chunks[] = {0, 1, 7};
    for (size_t i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++) {
        struct smtp_server_config c = base_cfg;
        c.offer_chunking = 0;
        c.offer_starttls = 0;
        struct run r;
        talk(&c, in, chunks[i], &r);
        CHECK_MEM(r.out.data, buf_used(&r.out),
                  GREETING "250-sink.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n"
                  "250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8\r\n"
                  "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n"
                  "354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued\r\n"
                  "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
                  "354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued\r\n"
                  "221 2.0.0 Bye\r\n");
        CHECK_INT(r.nmsgs, 2);
        CHECK_STR(r.from[0], "a@x.test");
        CHECK_STR(r.rcpts[0], "b@y.test,c@z.test");
        CHECK_MEM(r.data[0].data, buf_used(&r.data[0]), "Subject: hi\r\n\r\nbody\r\n");
        CHECK_STR(r.from[1], "");
        CHECK_STR(r.rcpts[1], "d@y.test");
        CHECK_MEM(r.data[1].data, buf_used(&r.data[1]), "x\r\n");
        CHECK_INT(r.closed, 1);
        CHECK_STR(r.close_reason, "quit");
        run_free(&r);
    }
}

#define TXN "EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"

static void test_dot_unstuffing(void)
{
    static const struct {
        const char *body;   /* as sent after DATA, through the final dot */
        const char *want;   /* data handed to the caller */
    } cases[] = {
        {".\r\n", ""},
        {"a\r\n.\r\n", "a\r\n"},
        {"..\r\n.\r\n", ".\r\n"},
        {"..x\r\n...\r\n.\r\n", ".x\r\n..\r\n"},
        {"a.\r\n.b\r\n.\r\n", "a.\r\nb\r\n"},
        {".\rx\r\n.\r\n", "\rx\r\n"},
        /* Bare LF never ends a line in DATA (SMTP smuggling). */
        {"a\n.\nb\r\n.\r\n", "a\n.\nb\r\n"},
        {"a\r\n.\nb\r\n.\r\n", "a\r\n\nb\r\n"},   /* ".\n" is not the end: dot dropped */
        {"a\n.\r\nb\r\n.\r\n", "a\n.\r\nb\r\n"},
        {"a\r\r\n.\r\n", "a\r\r\n"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char in[256];
        snprintf(in, sizeof(in), TXN "%sNOOP\r\n", cases[i].body);
        for (size_t chunk = 0; chunk <= 3; chunk++) {
            struct run r;
            talk(&base_cfg, in, chunk, &r);
            CHECK_INT(r.nmsgs, 1);
            if (r.nmsgs == 1 &&
                (buf_used(&r.data[0]) != strlen(cases[i].want) ||
                 memcmp(r.data[0].data, cases[i].want, strlen(cases[i].want)) != 0))
                CHECK_FAILF("case %zu chunk %zu: got \"%.*s\"", i, chunk,
                            (int)buf_used(&r.data[0]), (const char *)r.data[0].data);
            /* The NOOP after the message was parsed as a command. */
            size_t ol = buf_used(&r.out);
            CHECK(ol >= 14 && memcmp(r.out.data + ol - 14, "250 2.0.0 Ok\r\n", 14) == 0);
            run_free(&r);
        }
    }
}

/* The end marker split at every byte position across two feeds. */
static void test_end_split_everywhere(void)
{
    static const char in[] = TXN "line1\r\n..dot\r\nlast\r\n.\r\nNOOP\r\n";
    size_t len = strlen(in);
    for (size_t cut = 1; cut < len; cut++) {
        struct smtp_server s;
        struct run r;
        run_init(&r);
        smtp_server_init(&s, &base_cfg);
        smtp_server_feed(&s, (const uint8_t *)in, cut);
        pump(&s, &r, NULL);
        smtp_server_feed(&s, (const uint8_t *)in + cut, len - cut);
        pump(&s, &r, NULL);
        CHECK_INT(r.nmsgs, 1);
        CHECK_MEM(r.data[0].data, buf_used(&r.data[0]), "line1\r\n.dot\r\nlast\r\n");
        size_t ol = buf_used(&r.out);
        CHECK(ol >= 14 && memcmp(r.out.data + ol - 14, "250 2.0.0 Ok\r\n", 14) == 0);
        smtp_server_cleanup(&s);
        run_free(&r);
    }
}

static void test_starttls(void)
{
    /* Plaintext pipelined after STARTTLS: refused, session closed. */
    struct run r;
    talk(&base_cfg, "EHLO c\r\nSTARTTLS\r\nMAIL FROM:<evil@x>\r\n", 0, &r);
    CHECK_INT(r.starttls, 0);
    CHECK_INT(r.closed, 1);
    CHECK_STR(r.close_reason, "data pipelined after STARTTLS");
    CHECK(strstr((const char *)r.out.data, "554 5.5.1") != NULL);
    CHECK(strstr((const char *)r.out.data, "250 2.1.0") == NULL);
    run_free(&r);

    /* Normal STARTTLS, then plaintext fed before tls_started: refused. */
    struct smtp_server s;
    run_init(&r);
    smtp_server_init(&s, &base_cfg);
    converse(&s, &r, "EHLO c\r\nSTARTTLS\r\n", 18, 0);
    CHECK_INT(r.starttls, 1);
    CHECK(strstr((const char *)r.out.data, "220 2.0.0 Ready to start TLS\r\n") != NULL);
    CHECK_INT(smtp_server_feed(&s, (const uint8_t *)"NOOP\r\n", 6), 0);
    CHECK_INT(smtp_server_next(&s).kind, SMTP_SRV_EV_CLOSE);
    CHECK_STR(smtp_server_close_reason(&s), "plaintext after STARTTLS");
    smtp_server_cleanup(&s);
    run_free(&r);

    /* After the handshake: EHLO required again, STARTTLS not offered. */
    run_init(&r);
    smtp_server_init(&s, &base_cfg);
    static const char before[] = "EHLO c\r\nMAIL FROM:<a@x>\r\nSTARTTLS\r\n";
    converse(&s, &r, before, strlen(before), 0);
    CHECK_INT(r.starttls, 1);
    smtp_server_tls_started(&s);
    buf_reset(&r.out);
    static const char after[] = "RCPT TO:<b@y>\r\nMAIL FROM:<a@x>\r\nEHLO c\r\nSTARTTLS\r\n"
                                "MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nhi\r\n.\r\n";
    converse(&s, &r, after, strlen(after), 0);
    CHECK_MEM(r.out.data, buf_used(&r.out),
              "503 5.5.1 Error: need MAIL command\r\n"
              "503 5.5.1 Error: send HELO/EHLO first\r\n"
              "250-sink.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n"
              "250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n"
              "503 5.5.1 Error: TLS already active\r\n"
              "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
              "250 2.0.0 Ok: queued\r\n");
    struct smtp_server_envelope e;
    CHECK_INT(smtp_server_envelope(&s, &e), 0);     /* no message pending now */
    smtp_server_cleanup(&s);
    run_free(&r);

    /* Override reply, and STARTTLS when not offered. */
    struct smtp_server_config c = base_cfg;
    c.starttls_reply = "454 4.7.0 TLS not available";
    talk(&c, "EHLO c\r\nSTARTTLS\r\nNOOP\r\n", 0, &r);
    CHECK_INT(r.starttls, 0);
    CHECK(strstr((const char *)r.out.data, "454 4.7.0 TLS not available\r\n250 2.0.0 Ok\r\n"));
    run_free(&r);
    c = base_cfg;
    c.offer_starttls = 0;
    talk(&c, "EHLO c\r\nSTARTTLS\r\n", 0, &r);
    CHECK_INT(r.starttls, 0);
    CHECK(strstr((const char *)r.out.data, "502 5.5.1"));
    run_free(&r);
}

static void test_bdat(void)
{
    static const char in[] =
        "EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\n"
        "BDAT 7\r\nhel\r\n.\r"
        "BDAT 7 LAST\r\n\n world"
        "DATA\r\n"                                   /* no MAIL now: 503 */
        "BDAT 4\r\nNOOP"                             /* chunk consumed: 503 */
        "MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nBDAT 0 LAST\r\n"
        "MAIL FROM:<a@x>\r\nBDAT 3 LAST\r\nabc"        /* no RCPT: 554 */
        "RSET\r\n";
    size_t chunks[] = {0, 1, 5};
    for (size_t i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++) {
        struct run r;
        talk(&base_cfg, in, chunks[i], &r);
        CHECK_INT(r.nmsgs, 2);
        CHECK_MEM(r.data[0].data, buf_used(&r.data[0]), "hel\r\n.\r\n world");
        CHECK_INT(buf_used(&r.data[1]), 0);
        const char *want_tail =
            "250 2.0.0 7 octets received\r\n250 2.0.0 Ok: queued\r\n"
            "503 5.5.1 Error: need MAIL command\r\n503 5.5.1 Error: need MAIL command\r\n"
            "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 Ok: queued\r\n"
            "250 2.1.0 Ok\r\n554 5.5.1 Error: no valid recipients\r\n250 2.0.0 Ok\r\n";
        const char *got = strstr((const char *)r.out.data, "250 2.0.0 7 octets");
        CHECK(got != NULL && (size_t)((const char *)r.out.data + buf_used(&r.out) - got) ==
                                 strlen(want_tail) &&
              memcmp(got, want_tail, strlen(want_tail)) == 0);
        run_free(&r);
    }

    /* CHUNKING not offered: the chunk is still consumed, then 502. */
    struct smtp_server_config c = base_cfg;
    c.offer_chunking = 0;
    struct run r;
    talk(&c, "EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nBDAT 6 LAST\r\nQUIT\r\nNOOP\r\n",
         0, &r);
    CHECK_INT(r.nmsgs, 0);
    CHECK_INT(r.closed, 0);
    CHECK(strstr((const char *)r.out.data, "502 5.5.1 Error: CHUNKING not offered\r\n"
                                           "250 2.0.0 Ok\r\n"));
    run_free(&r);
}

static void test_size_limit(void)
{
    struct run r;
    talk(&base_cfg, "EHLO c\r\nMAIL FROM:<a@x> SIZE=1001\r\nMAIL FROM:<a@x> SIZE=1000\r\n",
         0, &r);
    CHECK(strstr((const char *)r.out.data,
                 "552 5.3.4 Message size exceeds fixed limit\r\n250 2.1.0 Ok\r\n"));
    run_free(&r);

    /* 1000 bytes of data pass, 1001 fail after the end marker. */
    for (int extra = 0; extra <= 1; extra++) {
        static char in[2048];
        size_t n = (size_t)snprintf(in, sizeof(in), TXN);
        size_t body = 1000 + (size_t)extra;
        for (size_t k = 0; k < body - 2; k++)
            in[n++] = 'x';
        static const char tail[] = "\r\n.\r\nRCPT TO:<c@d>\r\n";
        memcpy(in + n, tail, sizeof(tail));
        for (size_t chunk = 0; chunk <= 100; chunk += 100) {
            talk(&base_cfg, in, chunk, &r);
            CHECK_INT(r.nmsgs, extra ? 0 : 1);
            if (extra) {
                /* The transaction was reset: RCPT now needs MAIL. */
                CHECK(strstr((const char *)r.out.data,
                             "552 5.3.4 Error: message size exceeds fixed limit\r\n"
                             "503 5.5.1 Error: need MAIL command\r\n"));
            } else {
                CHECK_INT(buf_used(&r.data[0]), 1000);
            }
            run_free(&r);
        }
    }

    /* BDAT over the limit across chunks. */
    static char big[1200];
    size_t n = (size_t)snprintf(big, sizeof(big),
                                "EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nBDAT 600\r\n");
    memset(big + n, 'y', 600);
    n += 600;
    n += (size_t)snprintf(big + n, sizeof(big) - n, "BDAT 401 LAST\r\n");
    memset(big + n, 'z', 401);
    big[n + 401] = '\0';
    talk(&base_cfg, big, 0, &r);
    CHECK_INT(r.nmsgs, 0);
    CHECK(strstr((const char *)r.out.data, "250 2.0.0 600 octets received\r\n"
                                           "552 5.3.4 Error: message size exceeds fixed limit\r\n"));
    run_free(&r);
}

static void test_rset_and_rcpt_limit(void)
{
    struct run r;
    talk(&base_cfg,
         "EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRSET\r\nDATA\r\n"
         "MAIL FROM:<a@x>\r\nRCPT TO:<1@y>\r\nRCPT TO:<2@y>\r\nRCPT TO:<3@y>\r\n"
         "RCPT TO:<4@y>\r\nDATA\r\n.\r\n",
         0, &r);
    CHECK(strstr((const char *)r.out.data,
                 "250 2.1.5 Ok\r\n250 2.0.0 Ok\r\n503 5.5.1 Error: need MAIL command\r\n"));
    CHECK(strstr((const char *)r.out.data,
                 "250 2.1.5 Ok\r\n452 4.5.3 Error: too many recipients\r\n354 "));
    CHECK_INT(r.nmsgs, 1);
    CHECK_STR(r.rcpts[0], "1@y,2@y,3@y");
    run_free(&r);
}

static void test_bad_commands(void)
{
    static const struct {
        const char *line;
        const char *want;   /* reply to the line, after EHLO c */
    } cases[] = {
        {"FOO\r\n", "500 5.5.2 Error: command not recognized\r\n"},
        {"\r\n", "500 5.5.2 Error: command not recognized\r\n"},
        {"VRFY x\r\n", "502 5.5.1 Error: command not implemented\r\n"},
        {"RCPT TO:<b@y>\r\n", "503 5.5.1 Error: need MAIL command\r\n"},
        {"DATA\r\n", "503 5.5.1 Error: need MAIL command\r\n"},
        {"MAIL FROM:a@x\r\n", "501 5.1.7 Bad sender address syntax\r\n"},
        {"MAIL FROM:<a@x\r\n", "501 5.1.7 Bad sender address syntax\r\n"},
        {"MAIL TO:<a@x>\r\n", "501 5.5.4 Syntax error in parameters\r\n"},
        {"MAIL FROM:<a@x> FOO=1\r\n", "555 5.5.4 Unsupported MAIL FROM parameter\r\n"},
        {"MAIL FROM:<a@x> SIZE=12x\r\n", "501 5.5.4 Bad SIZE parameter\r\n"},
        {"BDAT x\r\n", "501 5.5.4 Syntax: BDAT size [LAST]\r\n"},
        {"BDAT 1 FIRST\r\n", "501 5.5.4 Syntax: BDAT size [LAST]\r\n"},
        {"STARTTLS now\r\n", "501 5.5.4 Syntax: STARTTLS\r\n"},
        {"EHLO\r\n", "501 5.5.4 Syntax: EHLO hostname\r\n"},
        {"mail from:<a@x>\r\n", "250 2.1.0 Ok\r\n"},
        {"noop\n", "250 2.0.0 Ok\r\n"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char in[128];
        snprintf(in, sizeof(in), "EHLO c\r\n%s", cases[i].line);
        struct run r;
        talk(&base_cfg, in, 0, &r);
        size_t wl = strlen(cases[i].want), ol = buf_used(&r.out);
        if (ol < wl || memcmp(r.out.data + ol - wl, cases[i].want, wl) != 0)
            CHECK_FAILF("%s: got tail \"%.*s\", want \"%s\"", cases[i].line,
                        (int)(ol < wl ? ol : wl), (const char *)r.out.data + ol - (ol < wl ? ol : wl),
                        cases[i].want);
        run_free(&r);
    }

    /* MAIL before EHLO. */
    struct run r;
    talk(&base_cfg, "MAIL FROM:<a@x>\r\n", 0, &r);
    CHECK_MEM(r.out.data, buf_used(&r.out), GREETING "503 5.5.1 Error: send HELO/EHLO first\r\n");
    run_free(&r);

    /* Too many errors: 421 and close, later input ignored. */
    char junk[SMTP_SERVER_MAX_ERRORS * 5 + 16];
    size_t n = 0;
    for (int i = 0; i < SMTP_SERVER_MAX_ERRORS + 2; i++)
        n += (size_t)snprintf(junk + n, sizeof(junk) - n, "XX\r\n");
    talk(&base_cfg, junk, 0, &r);
    CHECK_INT(r.closed, 1);
    CHECK_STR(r.close_reason, "too many errors");
    CHECK(strstr((const char *)r.out.data, "421 4.7.0 sink.test Error: too many errors\r\n"));
    static const char last[] = "421 4.7.0 sink.test Error: too many errors\r\n";
    size_t ol = buf_used(&r.out), ll = strlen(last);
    CHECK(ol > ll && memcmp(r.out.data + ol - ll, last, ll) == 0);
    run_free(&r);
}

static void test_line_too_long(void)
{
    size_t len = SMTP_SERVER_LINE_MAX + 500;
    char *in = malloc(len + 32);
    memcpy(in, "NOOP ", 5);
    memset(in + 5, 'A', len - 5);
    memcpy(in + len, "\r\nNOOP\r\n", 9);
    for (size_t chunk = 0; chunk <= 1000; chunk += 1000) {
        struct run r;
        talk(&base_cfg, in, chunk, &r);
        CHECK_MEM(r.out.data, buf_used(&r.out),
                  GREETING "500 5.5.2 Error: line too long\r\n250 2.0.0 Ok\r\n");
        run_free(&r);
    }
    /* Exactly at the limit (with CRLF) is fine. */
    memset(in, 'A', SMTP_SERVER_LINE_MAX);
    memcpy(in, "NOOP ", 5);
    memcpy(in + SMTP_SERVER_LINE_MAX - 2, "\r\n", 3);
    struct run r;
    talk(&base_cfg, in, 0, &r);
    CHECK_MEM(r.out.data, buf_used(&r.out), GREETING "250 2.0.0 Ok\r\n");
    run_free(&r);
    free(in);
}

static void test_message_reply(void)
{
    /* Configured data reply. */
    struct smtp_server_config c = base_cfg;
    c.data_reply = "451 4.3.0 try later";
    struct run r;
    talk(&c, TXN "x\r\n.\r\n", 0, &r);
    CHECK_INT(r.nmsgs, 1);
    size_t ol = buf_used(&r.out);
    CHECK(ol > 21 && memcmp(r.out.data + ol - 21, "451 4.3.0 try later\r\n", 21) == 0);
    run_free(&r);

    /* The session pauses until the caller answers, keeping pipelined input. */
    struct smtp_server s;
    smtp_server_init(&s, &base_cfg);
    static const char in[] = TXN "x\r\n.\r\nNOOP\r\n";
    smtp_server_feed(&s, (const uint8_t *)in, strlen(in));
    CHECK_INT(smtp_server_next(&s).kind, SMTP_SRV_EV_MESSAGE);
    CHECK_INT(smtp_server_next(&s).kind, SMTP_SRV_EV_NONE);
    size_t n;
    const uint8_t *o = smtp_server_output(&s, &n);
    CHECK(n > 0 && memmem(o, n, "250 2.0.0 Ok\r\n", 14) == NULL);
    struct smtp_server_envelope e;
    CHECK_INT(smtp_server_envelope(&s, &e), 1);
    CHECK_INT(e.nrcpts, 1);
    CHECK_STR(e.helo, "c");
    CHECK_INT(e.tls, 0);
    CHECK_INT(smtp_server_message_reply(&s, "554 5.7.1 no"), 1);
    CHECK_INT(smtp_server_message_reply(&s, "554 5.7.1 no"), 0);
    CHECK_INT(smtp_server_next(&s).kind, SMTP_SRV_EV_NONE);
    o = smtp_server_output(&s, &n);
    CHECK(n > 28 && memcmp(o + n - 28, "554 5.7.1 no\r\n250 2.0.0 Ok\r\n", 28) == 0);
    smtp_server_cleanup(&s);
    smtp_server_cleanup(&s);    /* twice is safe */
}

/* ref_unstuff: the DATA rules byte by byte (a line starts after CRLF; a
 * '.' starting a line is dropped, or with CRLF ends the data). Returns the
 * unstuffed length written to out, or -1 without an end marker. */
static long ref_unstuff(const char *b, size_t n, char *out)
{
    size_t o = 0;
    int bol = 1;
    for (size_t i = 0; i < n;) {
        if (bol && b[i] == '.') {
            if (i + 2 < n && b[i + 1] == '\r' && b[i + 2] == '\n')
                return (long)o;
            i++;
            bol = 0;
            continue;
        }
        out[o++] = b[i];
        bol = b[i] == '\n' && i > 0 && b[i - 1] == '\r';
        i++;
    }
    return -1;
}

/* The DATA reader (which jumps between LF-dot pairs) against ref_unstuff
 * on random bodies of '.', CR, LF and letters, fed in pieces of every
 * size from 1 to 9 and whole. */
static void test_data_random(void)
{
    unsigned seed = 12345;
    for (int round = 0; round < 300; round++) {
        char body[700], want[700], in[1024];
        size_t n = 0, len = 1 + (size_t)(seed % 600);
        for (; n < len; n++) {
            seed = seed * 1103515245u + 12345u;
            static const char alpha[] = ".\r\n.ab\r\nx";
            body[n] = alpha[(seed >> 16) % (sizeof(alpha) - 1)];
        }
        memcpy(body + n, "\r\n.\r\n", 5);
        n += 5;
        long wl = ref_unstuff(body, n, want);
        CHECK(wl >= 0);
        int k = snprintf(in, sizeof(in), TXN);
        memcpy(in + k, body, n);
        in[k + n] = '\0';
        if (memchr(body, '\0', n))
            continue;
        for (size_t chunk = 0; chunk <= 9; chunk++) {
            struct run r;
            talk(&base_cfg, in, chunk, &r);
            CHECK_INT(r.nmsgs, 1);
            if (r.nmsgs == 1 && (buf_used(&r.data[0]) != (size_t)wl ||
                                 memcmp(r.data[0].data, want, (size_t)wl) != 0))
                CHECK_FAILF("round %d chunk %zu: %zu bytes, want %ld", round, chunk,
                            buf_used(&r.data[0]), wl);
            run_free(&r);
        }
    }
}

/* discard_data: the body is counted (as unstuffed), never kept; the limit
 * still holds. */
static void test_discard_data(void)
{
    struct smtp_server_config cfg = base_cfg;
    cfg.discard_data = 1;
    static const struct {
        const char *in;
        size_t want_len;    /* 0: refused (over the limit) */
    } cases[] = {
        {TXN "..x\r\nab\r\n.\r\n", 8},                        /* ".x\r\nab\r\n" */
        {"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nBDAT 3\r\nabcBDAT 2 LAST\r\nde", 5},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        for (size_t chunk = 0; chunk <= 2; chunk++) {
            struct smtp_server s;
            CHECK(smtp_server_init(&s, &cfg));
            const char *in = cases[i].in;
            size_t len = strlen(in), off = 0, step = chunk ? chunk : len;
            int got = 0;
            while (off < len || !got) {
                size_t k = off < len ? (len - off < step ? len - off : step) : 0;
                if (k)
                    CHECK(smtp_server_feed(&s, (const uint8_t *)in + off, k));
                off += k;
                struct smtp_server_event ev = smtp_server_next(&s);
                if (ev.kind == SMTP_SRV_EV_MESSAGE) {
                    struct smtp_server_envelope e;
                    CHECK(smtp_server_envelope(&s, &e));
                    CHECK_INT(e.data_len, cases[i].want_len);
                    CHECK(e.data != NULL && e.data[0] == '\0');
                    smtp_server_message_reply(&s, NULL);
                    got = 1;
                }
                size_t n;
                smtp_server_output(&s, &n);
                smtp_server_output_consume(&s, n);
                if (off >= len && ev.kind == SMTP_SRV_EV_NONE)
                    break;
            }
            CHECK(got);
            smtp_server_cleanup(&s);
        }
    }
    /* Over the limit: refused, as when kept. */
    static char in[2048];
    size_t n = (size_t)snprintf(in, sizeof(in), TXN);
    for (size_t k = 0; k < 1001 - 2; k++)
        in[n++] = 'x';
    static const char tail[] = "\r\n.\r\n";
    memcpy(in + n, tail, sizeof(tail));
    struct run r;
    talk(&cfg, in, 0, &r);
    CHECK_INT(r.nmsgs, 0);
    CHECK(strstr((const char *)r.out.data, "552 5.3.4 Error: message size exceeds fixed limit\r\n"));
    run_free(&r);
}

int main(void)
{
    RUN(test_ehlo_caps);
    RUN(test_pipelined_transaction);
    RUN(test_dot_unstuffing);
    RUN(test_end_split_everywhere);
    RUN(test_starttls);
    RUN(test_bdat);
    RUN(test_size_limit);
    RUN(test_rset_and_rcpt_limit);
    RUN(test_bad_commands);
    RUN(test_line_too_long);
    RUN(test_message_reply);
    RUN(test_discard_data);
    RUN(test_data_random);
    return check_finish();
}
