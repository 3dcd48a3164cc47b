/* unit_auth.c - CIDR matching, AUTH decoding, the credentials file, and the
 * listener rules of engine/smtp_server (relay check, AUTH over TLS, strict
 * CRLF data). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/auth.h"
#include "engine/auth_pool.h"
#include "engine/smtp_server.h"
#include "tests/check.h"

static int match(const struct auth_nets *n, const char *ip)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1)
        v4->sin_family = AF_INET;
    else if (inet_pton(AF_INET6, ip, &v6->sin6_addr) == 1)
        v6->sin6_family = AF_INET6;
    return auth_nets_match(n, (struct sockaddr *)&ss);
}

static void add(struct auth_nets *n, const char *cidr)
{
    CHECK(auth_cidr_parse(cidr, strlen(cidr), &n->net[n->n]));
    n->n++;
}

static void test_cidr(void)
{
    struct auth_nets n;
    memset(&n, 0, sizeof(n));
    add(&n, "127.0.0.1/32");
    add(&n, "10.0.0.0/8");
    add(&n, "192.168.1.128/25");
    add(&n, "2001:db8::/32");
    add(&n, "::1");
    CHECK_INT(match(&n, "127.0.0.1"), 1);
    CHECK_INT(match(&n, "127.0.0.2"), 0);
    CHECK_INT(match(&n, "10.255.1.2"), 1);
    CHECK_INT(match(&n, "11.0.0.1"), 0);
    CHECK_INT(match(&n, "192.168.1.200"), 1);
    CHECK_INT(match(&n, "192.168.1.127"), 0);
    CHECK_INT(match(&n, "2001:db8:ffff::1"), 1);
    CHECK_INT(match(&n, "2001:db9::1"), 0);
    CHECK_INT(match(&n, "::1"), 1);
    CHECK_INT(match(&n, "::ffff:10.1.2.3"), 1);     /* v4-mapped */
    CHECK_INT(match(&n, "::ffff:11.1.2.3"), 0);
    struct auth_net e;
    CHECK_INT(auth_cidr_parse("10.0.0.1/8", 10, &e), 0);  /* host bits */
    CHECK_INT(auth_cidr_parse("10.0.0.0/33", 11, &e), 0);
    CHECK_INT(auth_cidr_parse("10.0.0.0/", 9, &e), 0);
    CHECK_INT(auth_cidr_parse("example.com", 11, &e), 0);
    CHECK_INT(auth_cidr_parse("0.0.0.0/0", 9, &e), 1);
    struct auth_nets empty;
    memset(&empty, 0, sizeof(empty));
    CHECK_INT(match(&empty, "127.0.0.1"), 0);
}

static void test_b64_plain(void)
{
    uint8_t out[64];
    size_t n;
    CHECK(auth_b64_decode("AHUAcA==", 8, out, sizeof(out), &n));
    CHECK_INT(n, 4);
    CHECK(memcmp(out, "\0u\0p", 4) == 0);
    CHECK(auth_b64_decode("=", 1, out, sizeof(out), &n));
    CHECK_INT(n, 0);
    CHECK_INT(auth_b64_decode("AHUAcA=", 7, out, sizeof(out), &n), 0);    /* length */
    CHECK_INT(auth_b64_decode("AH=AcA==", 8, out, sizeof(out), &n), 0);   /* pad inside */
    CHECK_INT(auth_b64_decode("AHU*cA==", 8, out, sizeof(out), &n), 0);
    CHECK_INT(auth_b64_decode("AHUAcA==", 8, out, 3, &n), 0);             /* room */
    CHECK(auth_b64_decode("YWxpY2U=", 8, out, sizeof(out), &n));
    CHECK_MEM(out, n, "alice");
    char u[AUTH_USER_MAX + 1], p[AUTH_PASS_MAX + 1];
    CHECK(auth_plain_decode((const uint8_t *)"\0alice\0pw", 9, u, p));
    CHECK_STR(u, "alice");
    CHECK_STR(p, "pw");
    CHECK(auth_plain_decode((const uint8_t *)"alice\0alice\0pw", 14, u, p));
    CHECK_INT(auth_plain_decode((const uint8_t *)"bob\0alice\0pw", 12, u, p), 0);
    CHECK_INT(auth_plain_decode((const uint8_t *)"\0alice\0", 7, u, p), 0);
    CHECK_INT(auth_plain_decode((const uint8_t *)"\0\0pw", 4, u, p), 0);
    CHECK_INT(auth_plain_decode((const uint8_t *)"alice", 5, u, p), 0);
    CHECK_INT(auth_plain_decode((const uint8_t *)"\0a\0p\0q", 7, u, p), 0);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

/* Wait for n results of the pool (its eventfd), in order, into r. */
static void take_results(struct auth_pool *pool, struct auth_result *r, size_t n)
{
    size_t got = 0;
    while (got < n) {
        uint64_t v;
        CHECK_INT(read(auth_pool_fd(pool), &v, sizeof(v)), sizeof(v));
        got += auth_pool_take(pool, r + got, n - got);
    }
}

static void test_creds(void)
{
    char hash[AUTH_HASH_MAX + 1], text[1024], err[256];
    CHECK(auth_hash_password("right horse", hash, sizeof(hash)));
    CHECK(strncmp(hash, "$y$", 3) == 0);
    char path[] = "/tmp/tern-unit-auth.XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    snprintf(text, sizeof(text), "# users\n\nalice:%s\nbob:%s  # comment\n", hash, hash);
    write_file(path, text);
    struct auth_creds c;
    CHECK(auth_creds_load(&c, path, err, sizeof(err)));
    CHECK_INT(c.n, 2);
    CHECK_INT(auth_creds_check(&c, "alice", "right horse"), 1);
    CHECK_INT(auth_creds_check(&c, "bob", "right horse"), 1);
    CHECK_INT(auth_creds_check(&c, "alice", "wrong horse"), 0);
    CHECK_INT(auth_creds_check(&c, "carol", "right horse"), 0);

    /* The same checks through the pool: results in order, by tag. */
    struct auth_pool *pool = auth_pool_new(&c);
    CHECK(pool != NULL);
    if (pool) {
        CHECK(auth_pool_submit(pool, 7, "alice", "right horse"));
        CHECK(auth_pool_submit(pool, 8, "alice", "wrong"));
        struct auth_result r[4];
        take_results(pool, r, 2);
        CHECK_INT(r[0].tag, 7);
        CHECK_INT(r[0].ok, 1);
        CHECK_INT(r[1].tag, 8);
        CHECK_INT(r[1].ok, 0);

        /* Credentials replaced (a reload): checks from then on use the
         * new ones, and the old may be freed as soon as the call returns. */
        char hash2[AUTH_HASH_MAX + 1];
        CHECK(auth_hash_password("new horse", hash2, sizeof(hash2)));
        snprintf(text, sizeof(text), "alice:%s\n", hash2);
        write_file(path, text);
        struct auth_creds c2;
        CHECK(auth_creds_load(&c2, path, err, sizeof(err)));
        CHECK(auth_pool_submit(pool, 9, "alice", "right horse"));   /* may run with either */
        auth_pool_set_creds(pool, &c2);
        auth_creds_free(&c);                  /* ASan: no check may still read it */
        CHECK(auth_pool_submit(pool, 10, "alice", "right horse"));
        CHECK(auth_pool_submit(pool, 11, "alice", "new horse"));
        take_results(pool, r, 3);
        CHECK_INT(r[1].tag, 10);
        CHECK_INT(r[1].ok, 0);
        CHECK_INT(r[2].tag, 11);
        CHECK_INT(r[2].ok, 1);
        auth_pool_free(pool);
        auth_creds_free(&c2);
    }
    auth_creds_free(&c);

    write_file(path, "alice:secret\n");         /* plaintext: refused */
    CHECK_INT(auth_creds_load(&c, path, err, sizeof(err)), 0);
    CHECK(strstr(err, ":1: not a yescrypt") != NULL);
    write_file(path, "alice:$1$abc$def\n");     /* md5-crypt: refused */
    CHECK_INT(auth_creds_load(&c, path, err, sizeof(err)), 0);
    snprintf(text, sizeof(text), "alice:%s\nalice:%s\n", hash, hash);
    write_file(path, text);
    CHECK_INT(auth_creds_load(&c, path, err, sizeof(err)), 0);
    CHECK(strstr(err, ":2: duplicate user") != NULL);
    write_file(path, "no colon here\n");
    CHECK_INT(auth_creds_load(&c, path, err, sizeof(err)), 0);
    unlink(path);
    CHECK_INT(auth_creds_load(&c, path, err, sizeof(err)), 0);
}

/* --- smtp_server listener rules ------------------------------------------ */

static void talk(struct smtp_server *s, const char *in, struct buf *out, int *events)
{
    smtp_server_feed(s, (const uint8_t *)in, strlen(in));
    for (;;) {
        struct smtp_server_event ev = smtp_server_next(s);
        if (ev.kind == SMTP_SRV_EV_NONE)
            break;
        events[ev.kind]++;
        if (ev.kind == SMTP_SRV_EV_STARTTLS)
            smtp_server_tls_started(s);
        if (ev.kind == SMTP_SRV_EV_AUTH) {
            const char *u, *p;
            smtp_server_auth_creds(s, &u, &p);
            smtp_server_auth_result(s, strcmp(u, "busy") == 0 ? SMTP_SERVER_AUTH_UNAVAILABLE
                                       : strcmp(u, "alice") == 0 && strcmp(p, "pw") == 0);
        }
        if (ev.kind == SMTP_SRV_EV_MESSAGE)
            smtp_server_message_reply(s, NULL);
        if (ev.kind == SMTP_SRV_EV_CLOSE)
            break;
    }
    size_t n;
    const uint8_t *p = smtp_server_output(s, &n);
    if (buf_used(out) > 0)
        out->len--;             /* the NUL the last call added */
    buf_append(out, p, n);
    buf_append(out, "", 1);     /* keep it a C string for strstr */
    smtp_server_output_consume(s, n);
}

static const struct smtp_server_config lcfg = {
    .hostname = "t", .offer_starttls = 1, .offer_pipelining = 1, .offer_chunking = 1,
    .relay_check = 1, .offer_auth = 1, .strict_data = 1, .check_addrs = 1,
};

static void test_relay_and_auth(void)
{
    struct smtp_server s;
    struct buf out;
    int ev[SMTP_SRV_EV_CLOSE + 1] = {0};
    buf_init(&out, 0);
    smtp_server_init(&s, &lcfg);
    talk(&s, "EHLO c\r\nMAIL FROM:<a@b.test>\r\nAUTH PLAIN AGFsaWNlAHB3\r\n", &out, ev);
    const char *o = (const char *)buf_peek(&out);
    CHECK(strstr(o, "AUTH PLAIN") == NULL);                 /* not offered before TLS */
    CHECK(strstr(o, "530 5.7.0 Authentication required") != NULL);
    CHECK(strstr(o, "538 5.7.11") != NULL);
    CHECK_INT(ev[SMTP_SRV_EV_AUTH], 0);
    buf_reset(&out);
    talk(&s, "STARTTLS\r\n", &out, ev);
    talk(&s, "EHLO c\r\n", &out, ev);
    CHECK(strstr((const char *)buf_peek(&out), "AUTH PLAIN LOGIN") != NULL);
    buf_reset(&out);
    /* a check that could not run: 454, and not a failure (three would close) */
    talk(&s, "AUTH PLAIN AGJ1c3kAcHc=\r\nAUTH PLAIN AGJ1c3kAcHc=\r\nAUTH PLAIN AGJ1c3kAcHc=\r\n",
         &out, ev);
    o = (const char *)buf_peek(&out);
    CHECK(strstr(o, "454 4.7.0") != NULL);
    CHECK(strstr(o, "535") == NULL && strstr(o, "421") == NULL);
    buf_reset(&out);
    talk(&s, "AUTH PLAIN AGFsaWNlAHd4\r\nMAIL FROM:<a@b.test>\r\n", &out, ev);  /* wrong */
    o = (const char *)buf_peek(&out);
    CHECK(strstr(o, "535 5.7.8") != NULL);
    CHECK(strstr(o, "530 5.7.0") != NULL);
    buf_reset(&out);
    talk(&s, "AUTH LOGIN\r\nYWxpY2U=\r\ncHc=\r\nMAIL FROM:<a@b.test> AUTH=<>\r\nRCPT TO:<bad>\r\n",
         &out, ev);
    o = (const char *)buf_peek(&out);
    CHECK(strstr(o, "334 VXNlcm5hbWU6") != NULL);
    CHECK(strstr(o, "334 UGFzc3dvcmQ6") != NULL);
    CHECK(strstr(o, "235 2.7.0") != NULL);
    CHECK(strstr(o, "250 2.1.0") != NULL);
    CHECK(strstr(o, "501 5.1.3") != NULL);                  /* check_addrs */
    CHECK_INT(ev[SMTP_SRV_EV_AUTH], 5);
    buf_reset(&out);
    talk(&s, "AUTH PLAIN AGFsaWNlAHB3\r\n", &out, ev);
    CHECK(strstr((const char *)buf_peek(&out), "503 5.5.1") != NULL);
    smtp_server_cleanup(&s);

    /* An allowed network needs no AUTH; require_tls still wants TLS. */
    struct smtp_server_config rc = lcfg;
    rc.require_tls = 1;
    smtp_server_init(&s, &rc);
    smtp_server_set_relay(&s, 1);
    buf_reset(&out);
    talk(&s, "EHLO c\r\nMAIL FROM:<a@b.test>\r\n", &out, ev);
    CHECK(strstr((const char *)buf_peek(&out), "530 5.7.0 Must issue a STARTTLS") != NULL);
    smtp_server_cleanup(&s);
    rc.require_tls = 0;
    rc.offer_auth = 0;
    smtp_server_init(&s, &rc);
    buf_reset(&out);
    talk(&s, "EHLO c\r\nMAIL FROM:<a@b.test>\r\n", &out, ev);
    CHECK(strstr((const char *)buf_peek(&out), "554 5.7.1 Relay access denied") != NULL);
    smtp_server_cleanup(&s);
    buf_free(&out);
}

static void test_strict_data(void)
{
    static const char *const bad[] = {
        "a\n.\nb\r\n.\r\n", "a\r.\rb\r\n.\r\n", "a\r\n.\nb\r\n.\r\n", "a\rb\r\n.\r\n",
        "a\nb\r\n.\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct smtp_server s;
        struct buf out;
        int ev[SMTP_SRV_EV_CLOSE + 1] = {0};
        buf_init(&out, 0);
        smtp_server_init(&s, &lcfg);
        smtp_server_set_relay(&s, 1);
        talk(&s, "EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n", &out, ev);
        talk(&s, bad[i], &out, ev);
        if (strstr((const char *)buf_peek(&out), "554 5.6.0") == NULL)
            CHECK_FAILF("body %zu not refused", i);
        CHECK_INT(ev[SMTP_SRV_EV_MESSAGE], 0);
        /* The same, fed one byte at a time. */
        buf_reset(&out);
        talk(&s, "MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n", &out, ev);
        for (const char *p = bad[i]; *p; p++) {
            char one[2] = {*p, 0};
            talk(&s, one, &out, ev);
        }
        CHECK_INT(ev[SMTP_SRV_EV_MESSAGE], 0);
        /* BDAT content follows the same rule. */
        talk(&s, "MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nBDAT 4 LAST\r\na\nb\n", &out, ev);
        CHECK_INT(ev[SMTP_SRV_EV_MESSAGE], 0);
        talk(&s, "MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\nok\r\n..x\r\n.\r\n", &out,
             ev);
        CHECK_INT(ev[SMTP_SRV_EV_MESSAGE], 1);
        smtp_server_cleanup(&s);
        buf_free(&out);
    }
}

/* The line-end check carries a CR across input pieces: every body, split
 * at every point, gets the same verdict as in one piece. */
static void test_strict_data_splits(void)
{
    static const struct { const char *body; int ok; } cases[] = {
        {"a\r\nb\r\n\r\nlong line here\r\n.\r\n", 1}, {"\r\n\r\n.\r\n", 1},
        {"a\rb\r\n.\r\n", 0}, {"a\nb\r\n.\r\n", 0}, {"a\r\r\nb\r\n.\r\n", 0},
        {"a\r\n\nb\r\n.\r\n", 0}, {"\nb\r\n.\r\n", 0}, {"ab\r\nc\r\r\n.\r\n", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t len = strlen(cases[i].body);
        for (size_t cut = 0; cut <= len; cut++) {
            struct smtp_server s;
            struct buf out;
            int ev[SMTP_SRV_EV_CLOSE + 1] = {0};
            char head[64];
            buf_init(&out, 0);
            smtp_server_init(&s, &lcfg);
            smtp_server_set_relay(&s, 1);
            talk(&s, "EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n", &out, ev);
            snprintf(head, sizeof(head), "%.*s", (int)cut, cases[i].body);
            talk(&s, head, &out, ev);
            talk(&s, cases[i].body + cut, &out, ev);
            if (ev[SMTP_SRV_EV_MESSAGE] != cases[i].ok)
                CHECK_FAILF("body %zu split at %zu: %d messages, want %d", i, cut,
                            ev[SMTP_SRV_EV_MESSAGE], cases[i].ok);
            smtp_server_cleanup(&s);
            buf_free(&out);
        }
    }
}

int main(void)
{
    RUN(test_cidr);
    RUN(test_b64_plain);
    RUN(test_creds);
    RUN(test_relay_and_auth);
    RUN(test_strict_data);
    RUN(test_strict_data_splits);
    return check_finish();
}
