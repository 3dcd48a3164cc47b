/*
 * unit_queue.c - queue module tests that need no Redis: partition hash,
 * ids, address checks, config checks, command builders (parsed back with
 * a hiredis reader) and reply parsers (fed canned RESP).
 */
#include "queue/queue.h"
#include "tests/check.h"

#include <stdlib.h>

/* Parse the RESP in b (one command) back into a reply; NULL on error. */
static redisReply *parse_resp(const void *p, size_t n)
{
    redisReader *rd = redisReaderCreate();
    void *r = NULL;
    if (redisReaderFeed(rd, p, n) != REDIS_OK || redisReaderGetReply(rd, &r) != REDIS_OK)
        r = NULL;
    /* Exactly one command: nothing may be left over. */
    void *extra = NULL;
    if (r != NULL && (redisReaderGetReply(rd, &extra) != REDIS_OK || extra != NULL)) {
        freeReplyObject(extra);
        freeReplyObject(r);
        r = NULL;
    }
    redisReaderFree(rd);
    return r;
}

static int arg_is(const redisReply *r, size_t i, const char *want)
{
    return r && r->type == REDIS_REPLY_ARRAY && i < r->elements &&
           r->element[i]->type == REDIS_REPLY_STRING &&
           r->element[i]->len == strlen(want) &&
           memcmp(r->element[i]->str, want, r->element[i]->len) == 0;
}

#define CHECK_ARG(r, i, want)                                                  \
    do {                                                                       \
        if (!arg_is((r), (i), (want)))                                         \
            CHECK_FAILF("argv[%zu]: got \"%.*s\", want \"%s\"", (size_t)(i),   \
                        (r) && (size_t)(i) < (r)->elements                     \
                            ? (int)(r)->element[i]->len : 6,                   \
                        (r) && (size_t)(i) < (r)->elements                     \
                            ? (r)->element[i]->str : "(none)",                 \
                        (want));                                               \
    } while (0)

static void test_partition(void)
{
    struct queue_config qc;
    queue_config_defaults(&qc);
    CHECK_INT(qc.partitions, 16);
    /* Golden values pin the hash: producers in other languages depend on
     * FNV-1a 64 of the lower-cased domain mod partitions. */
    CHECK_INT(queue_partition_of(&qc, "example.com", 11), 6);   /* 0x576846634e2714c6 % 16 */
    CHECK_INT(queue_partition_of(&qc, "gmail.com", 9), 2);
    qc.partitions = 1024;
    CHECK_INT(queue_partition_of(&qc, "example.com", 11), 198);
    CHECK_INT(queue_partition_of(&qc, "Gmail.COM", 9), 818);
    qc.partitions = 16;
    CHECK_INT(queue_partition_of(&qc, "EXAMPLE.Com", 11),
              queue_partition_of(&qc, "example.com", 11));
    qc.partitions = 1;
    CHECK_INT(queue_partition_of(&qc, "example.com", 11), 0);
    qc.partitions = 7;
    int seen[7] = {0};
    char dom[32];
    for (int i = 0; i < 1000; i++) {
        int k = snprintf(dom, sizeof(dom), "d%d.example", i);
        int p = queue_partition_of(&qc, dom, (size_t)k);
        CHECK(p >= 0 && p < 7);
        if (p >= 0 && p < 7)
            seen[p]++;
        CHECK_INT(queue_partition_of(&qc, dom, (size_t)k), p);
    }
    for (int p = 0; p < 7; p++)
        CHECK(seen[p] > 50);   /* spread: every partition used */
}

static void test_ids(void)
{
    enum { N = 2000 };
    static char ids[N][QUEUE_ID_MAX];
    for (int i = 0; i < N; i++) {
        queue_new_id(ids[i]);
        CHECK_INT(strlen(ids[i]), 32);
        CHECK(queue_id_check(ids[i]));
        for (int j = 0; j < 32; j++) {
            char c = ids[i][j];
            CHECK((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
        }
    }
    int dups = 0;
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++)
            dups += strcmp(ids[i], ids[j]) == 0;
    CHECK_INT(dups, 0);
    CHECK(!queue_id_check(""));
    CHECK(!queue_id_check("a b"));
    CHECK(!queue_id_check("a\nb"));
    CHECK(queue_id_check("abc-123"));
}

static void test_addr(void)
{
    static const struct {
        const char *in;
        int rcpt;
        const char *want_bare;   /* NULL: must fail */
        const char *want_why;
    } t[] = {
        {"a@b.example", 1, "a@b.example", NULL},
        {"<a@b.example>", 1, "a@b.example", NULL},
        {"first.last+tag@Sub.Example.ORG", 1, "first.last+tag@Sub.Example.ORG", NULL},
        {"a@[192.0.2.1]", 1, "a@[192.0.2.1]", NULL},
        {"\"q\"@b.example", 1, "\"q\"@b.example", NULL},
        {"", 0, "", NULL},
        {"<>", 0, "", NULL},
        {"sender@b.example", 0, "sender@b.example", NULL},
        {"<sender@b.example>", 0, "sender@b.example", NULL},
        {"", 1, NULL, "empty recipient"},
        {"<>", 1, NULL, "empty recipient"},
        {"a@b.example\r\n", 1, NULL, "CR or LF"},
        {"a@b\rexample", 1, NULL, "CR or LF"},
        {"a@b.example\nRCPT TO:<x@y>", 1, NULL, "CR or LF"},
        {"a b@c.example", 1, NULL, "space"},
        {"a@b.example\t", 1, NULL, "control character"},
        {"a\x7f@b.example", 0, NULL, "control character"},
        {"<a@b.example", 1, NULL, "unbalanced angle bracket"},
        {"a@b.example>", 1, NULL, "unbalanced angle bracket"},
        {"<", 0, NULL, "unbalanced angle bracket"},
        {">", 0, NULL, "unbalanced angle bracket"},
        {"<<a@b.example>>", 1, NULL, "misplaced angle bracket"},
        {"a<b@c.example", 1, NULL, "misplaced angle bracket"},
        {"<a@b>c@d>", 1, NULL, "misplaced angle bracket"},
        {"postmaster", 1, NULL, "no @domain"},
        {"@b.example", 1, NULL, "empty local part"},
        {"<@b.example>", 1, NULL, "empty local part"},
        {"a@", 1, NULL, "empty domain"},
        {"a@b,c.example", 1, NULL, "bad domain character"},
        {"a@b;c", 1, NULL, "bad domain character"},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        const char *why = "unset", *bare = NULL;
        size_t blen = 0;
        int ok = queue_addr_bare(t[i].in, strlen(t[i].in), t[i].rcpt, &bare, &blen, &why);
        if (t[i].want_bare) {
            if (!ok)
                CHECK_FAILF("case %zu \"%s\": rejected (%s), want accepted", i, t[i].in, why);
            else
                CHECK_MEM(bare, blen, t[i].want_bare);
            CHECK_INT(queue_addr_check(t[i].in, strlen(t[i].in), t[i].rcpt, &why), 1);
        } else {
            if (ok)
                CHECK_FAILF("case %zu \"%s\": accepted, want %s", i, t[i].in, t[i].want_why);
            else
                CHECK_STR(why, t[i].want_why);
            CHECK_INT(queue_addr_check(t[i].in, strlen(t[i].in), t[i].rcpt, &why), 0);
        }
    }
    /* NUL inside the given length. */
    const char *why = NULL;
    CHECK_INT(queue_addr_check("a@b\0c", 5, 1, &why), 0);
    CHECK_STR(why, "NUL byte");
    /* Length limit: exactly QUEUE_ADDR_MAX passes, one more fails. */
    char big[QUEUE_ADDR_MAX + 2];
    memset(big, 'a', sizeof(big));
    memcpy(big + QUEUE_ADDR_MAX - 10, "@b.example", 10);
    CHECK_INT(queue_addr_check(big, QUEUE_ADDR_MAX, 1, &why), 1);
    memcpy(big + QUEUE_ADDR_MAX - 9, "@b.example", 10);
    CHECK_INT(queue_addr_check(big, QUEUE_ADDR_MAX + 1, 1, &why), 0);
    CHECK_STR(why, "too long");

    CHECK_STR(queue_addr_domain("a@b.example"), "b.example");
    CHECK_STR(queue_addr_domain("\"x@y\"@b.example"), "b.example");
    CHECK(queue_addr_domain("nodomain") == NULL);
    CHECK(queue_addr_domain("a@") == NULL);
}

static void test_config(void)
{
    struct queue_config qc;
    const char *why = NULL;
    queue_config_defaults(&qc);
    CHECK_STR(qc.prefix, "tern");
    CHECK_INT(qc.lease_ms, 300000);
    CHECK_INT(qc.max_message_size, 32LL * 1024 * 1024);
    CHECK_INT(queue_config_check(&qc, &why), 1);
    snprintf(qc.prefix, sizeof(qc.prefix), "a{b}");
    CHECK_INT(queue_config_check(&qc, &why), 0);
    queue_config_defaults(&qc);
    qc.partitions = 0;
    CHECK_INT(queue_config_check(&qc, &why), 0);
    qc.partitions = QUEUE_PARTITIONS_MAX + 1;
    CHECK_INT(queue_config_check(&qc, &why), 0);
    queue_config_defaults(&qc);
    qc.lease_ms = 0;
    CHECK_INT(queue_config_check(&qc, &why), 0);
    queue_config_defaults(&qc);
    char key[64];
    CHECK_INT(queue_key(key, sizeof(key), &qc, 3, "ready"), strlen("tern:{3}:ready"));
    CHECK_STR(key, "tern:{3}:ready");
    CHECK_INT(queue_key(key, 8, &qc, 3, "ready"), 0);
    /* The key and its NUL must fit: one byte short is refused. */
    CHECK_INT(queue_key(key, strlen("tern:{3}:ready"), &qc, 3, "ready"), 0);
    CHECK_INT(queue_key(key, strlen("tern:{3}:ready") + 1, &qc, 3, "ready"), strlen("tern:{3}:ready"));
    CHECK_INT(queue_key(key, sizeof(key), &qc, 1023, "m:abc"), strlen("tern:{1023}:m:abc"));
    CHECK_STR(key, "tern:{1023}:m:abc");
    CHECK_INT(queue_key(key, sizeof(key), &qc, -1, "ready"), 0);
}

static struct queue_scripts fake_scripts(void)
{
    struct queue_scripts s;
    memset(s.enqueue, 'e', 40);
    memset(s.take, 't', 40);
    memset(s.ack, 'a', 40);
    memset(s.report, 'r', 40);
    s.enqueue[40] = s.take[40] = s.ack[40] = s.report[40] = '\0';
    return s;
}

static void test_cmd_take(void)
{
    struct queue_config qc;
    queue_config_defaults(&qc);
    struct queue_scripts s = fake_scripts();
    struct buf b;
    buf_init(&b, 0);
    CHECK_INT(queue_cmd_take(&b, &qc, &s, 5, 100, 1700000000000LL, 1), 1);
    redisReply *r = parse_resp(buf_peek(&b), buf_used(&b));
    CHECK(r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 16);
    CHECK_ARG(r, 0, "EVALSHA");
    CHECK_ARG(r, 1, s.take);
    CHECK_ARG(r, 2, "6");
    CHECK_ARG(r, 3, "tern:{5}:ready");
    CHECK_ARG(r, 4, "tern:{5}:leased");
    CHECK_ARG(r, 5, "tern:{5}:sched");
    CHECK_ARG(r, 6, "tern:{5}:bad");
    CHECK_ARG(r, 7, "tern:{5}:stats");
    CHECK_ARG(r, 8, "tern:{5}:events");
    CHECK_ARG(r, 9, "tern:{5}:m:");
    CHECK_ARG(r, 10, "1700000000000");
    CHECK_ARG(r, 11, "300000");
    CHECK_ARG(r, 12, "100");
    CHECK_ARG(r, 13, "33554432");
    CHECK_ARG(r, 14, "1000000");
    CHECK_ARG(r, 15, "1");
    freeReplyObject(r);
    buf_reset(&b);
    CHECK_INT(queue_cmd_take(&b, &qc, &s, 5, 100, 1700000000000LL, 0), 1);
    r = parse_resp(buf_peek(&b), buf_used(&b));
    CHECK(r != NULL && r->elements == 16);
    CHECK_ARG(r, 15, "0");   /* no moves */
    freeReplyObject(r);
    /* Invalid arguments append nothing. */
    size_t used = buf_used(&b);
    CHECK_INT(queue_cmd_take(&b, &qc, &s, 16, 100, 1, 1), 0);
    CHECK_INT(queue_cmd_take(&b, &qc, &s, -1, 100, 1, 1), 0);
    CHECK_INT(queue_cmd_take(&b, &qc, &s, 0, 0, 1, 1), 0);
    CHECK_INT(queue_cmd_take(&b, &qc, &s, 0, QUEUE_TAKE_MAX + 1, 1, 1), 0);
    CHECK_INT(buf_used(&b), used);
    /* Sticky error: a full fixed buffer refuses. */
    struct buf small;
    buf_init(&small, 16);
    CHECK_INT(queue_cmd_take(&small, &qc, &s, 0, 1, 1, 1), 0);
    CHECK(small.err);
    buf_free(&small);
    buf_free(&b);
}

static void test_cmd_ack(void)
{
    struct queue_config qc;
    queue_config_defaults(&qc);
    struct queue_scripts s = fake_scripts();
    struct buf b;
    buf_init(&b, 0);
    const char *f1[] = {"reply", "451 4.7.1 try later", "mx", "mx1.b.example"};
    struct queue_outcome o[2] = {
        {.id = "id1", .kind = QUEUE_DEFERRED, .remaining_rcpts = "x@b\ny@b",
         .retry_at_ms = 1700000060000LL, .fields = f1, .nfields = 4,
         .lease_until_ms = 1700000300000LL},
        {.id = "id2", .kind = QUEUE_DELIVERED, .remaining_rcpts = "ignored",
         .retry_at_ms = 99},
    };
    CHECK_INT(queue_cmd_ack(&b, &qc, &s, 2, o, 2, 1700000000000LL), 1);
    redisReply *r = parse_resp(buf_peek(&b), buf_used(&b));
    CHECK(r != NULL && r->elements == 13 + 6 + 4 + 6);
    static const char *const want[] = {
        "EVALSHA", NULL, "6", "tern:{2}:leased", "tern:{2}:sched",
        "tern:{2}:ready", "tern:{2}:stats", "tern:{2}:events", "tern:{2}:bad", "tern:{2}:m:",
        "1700000000000", "1000000", "2",
        "id1", "deferred", "1700000300000", "x@b\ny@b", "1700000060000", "4",
        "reply", "451 4.7.1 try later", "mx", "mx1.b.example",
        "id2", "delivered", "0", "", "0", "0"};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        CHECK_ARG(r, i, want[i] ? want[i] : s.ack);
    freeReplyObject(r);

    size_t used = buf_used(&b);
    struct queue_outcome bad = {.id = "has space", .kind = QUEUE_FAILED};
    CHECK_INT(queue_cmd_ack(&b, &qc, &s, 0, &bad, 1, 1), 0);
    bad.id = "ok";
    bad.kind = (enum queue_outcome_kind)42;
    CHECK_INT(queue_cmd_ack(&b, &qc, &s, 0, &bad, 1, 1), 0);
    bad.kind = QUEUE_FAILED;
    bad.fields = f1;
    bad.nfields = 3;   /* odd */
    CHECK_INT(queue_cmd_ack(&b, &qc, &s, 0, &bad, 1, 1), 0);
    CHECK_INT(queue_cmd_ack(&b, &qc, &s, 0, o, 0, 1), 0);
    CHECK_INT(buf_used(&b), used);
    buf_free(&b);
}

/* Pre-encoded fields (queue_fields_encode) follow an outcome's own, and
 * its field count covers both. */
static void test_cmd_ack_raw_fields(void)
{
    struct queue_config qc;
    queue_config_defaults(&qc);
    struct queue_scripts s = fake_scripts();
    struct buf raw, b;
    buf_init(&raw, 0);
    buf_init(&b, 0);
    const char *sess[] = {"mx", "mx1.b.example:25", "tls", "TLSv1.3", "verify", ""};
    CHECK_INT(queue_fields_encode(&raw, sess, 6), 1);
    CHECK_INT(queue_fields_encode(&raw, sess, 5), 0);   /* odd: nothing appended */
    const char *bad_f[] = {"mx", NULL};
    CHECK_INT(queue_fields_encode(&raw, bad_f, 2), 0);
    const char *own[] = {"reply", "250 ok"};
    struct queue_outcome o = {.id = "id1", .kind = QUEUE_DELIVERED, .fields = own, .nfields = 2,
                              .raw = buf_peek(&raw), .raw_len = buf_used(&raw), .raw_nfields = 6};
    CHECK_INT(queue_cmd_ack(&b, &qc, &s, 0, &o, 1, 5), 1);
    redisReply *r = parse_resp(buf_peek(&b), buf_used(&b));
    CHECK(r != NULL && r->elements == 13 + 6 + 8);
    static const char *const want[] = {"id1", "delivered", "0", "", "0", "8", "reply", "250 ok",
                                       "mx", "mx1.b.example:25", "tls", "TLSv1.3", "verify", ""};
    for (size_t i = 0; r && i < sizeof(want) / sizeof(want[0]); i++)
        CHECK_ARG(r, 13 + i, want[i]);
    freeReplyObject(r);
    /* Inconsistent raw descriptions are refused, appending nothing. */
    size_t used = buf_used(&b);
    o.raw_nfields = 5;
    CHECK_INT(queue_cmd_ack(&b, &qc, &s, 0, &o, 1, 5), 0);
    o.raw_nfields = 0;
    CHECK_INT(queue_cmd_ack(&b, &qc, &s, 0, &o, 1, 5), 0);
    o.raw_nfields = QUEUE_FIELDS_MAX;   /* with the 2 own fields: over the limit */
    CHECK_INT(queue_cmd_ack(&b, &qc, &s, 0, &o, 1, 5), 0);
    o.raw = NULL;
    o.raw_nfields = 6;
    CHECK_INT(queue_cmd_ack(&b, &qc, &s, 0, &o, 1, 5), 0);
    CHECK_INT(buf_used(&b), used);
    buf_free(&raw);
    buf_free(&b);
}

/* parse_cmds: exactly n commands from p[0..len) into r[] (NULLs on failure). */
static int parse_cmds(const void *p, size_t len, redisReply **r, size_t n)
{
    redisReader *rd = redisReaderCreate();
    rd->maxbuf = 0;
    int ok = redisReaderFeed(rd, p, len) == REDIS_OK;
    for (size_t i = 0; i < n; i++) {
        void *v = NULL;
        if (ok && redisReaderGetReply(rd, &v) != REDIS_OK)
            ok = 0;
        r[i] = v;
        ok = ok && v != NULL;
    }
    void *extra = NULL;   /* nothing may be left over */
    if (ok && (redisReaderGetReply(rd, &extra) != REDIS_OK || extra != NULL))
        ok = 0;
    freeReplyObject(extra);
    redisReaderFree(rd);
    return ok;
}

static void free_cmds(redisReply **r, size_t n)
{
    for (size_t i = 0; i < n; i++)
        freeReplyObject(r[i]);
}

/* The report form: one EVALSHA of the report script, the enqueue's
 * arguments then the body; the same refusals. */
static void test_cmd_enqueue_report(void)
{
    struct queue_config qc;
    queue_config_defaults(&qc);
    struct queue_scripts s = fake_scripts();
    struct buf b;
    buf_init(&b, 0);
    static const uint8_t body[] = "Subject: bounce\r\n\r\n\0binary\xff";
    const char *rc[] = {"s@x.example"};
    CHECK_INT(queue_cmd_enqueue_report(&b, &qc, &s, "rep-1", "", rc, 1, "x.example", body,
                                       sizeof(body), 99), 1);
    redisReply *c[QUEUE_REPORT_CMDS];
    CHECK(parse_cmds(buf_peek(&b), buf_used(&b), c, QUEUE_REPORT_CMDS));
    redisReply *r = c[0];
    int p = queue_partition_of(&qc, "x.example", 9);
    char k[64];
    snprintf(k, sizeof(k), "tern:{%d}:m:rep-1", p);
    /* events_queued is on by default: 4 keys, events_maxlen, then the body */
    CHECK(r != NULL && r->elements == 14);
    CHECK_ARG(r, 0, "EVALSHA");
    CHECK_ARG(r, 1, s.report);
    CHECK_ARG(r, 2, "4");
    CHECK_ARG(r, 3, k);
    CHECK_ARG(r, 7, "rep-1");
    CHECK_ARG(r, 8, "");
    CHECK_ARG(r, 12, "1000000");
    CHECK(r && r->elements == 14 && r->element[13]->len == sizeof(body) &&
          memcmp(r->element[13]->str, body, sizeof(body)) == 0);
    freeReplyObject(r);
    size_t used = buf_used(&b);
    const char *other[] = {"s@y.example"};   /* not of the domain */
    CHECK_INT(queue_cmd_enqueue_report(&b, &qc, &s, "rep-2", "", other, 1, "x.example", body,
                                       sizeof(body), 99), 0);
    CHECK_INT(buf_used(&b), used);
    buf_free(&b);
}

static void test_cmd_enqueue(void)
{
    struct queue_config qc;
    queue_config_defaults(&qc);
    struct queue_scripts s = fake_scripts();
    struct buf b;
    buf_init(&b, 0);
    /* Binary body with CRLF, NUL and a fake RESP header inside. */
    static const uint8_t body[] = "Subject: x\r\n\r\n\0$3\r\nabc\r\n*1\r\n\xff";
    const char *rc[] = {"a@Example.COM", "b@example.com"};
    qc.events_queued = 0;   /* the 3-key form; the 4-key one below */
    CHECK_INT(queue_cmd_enqueue(&b, &qc, &s, "id-1", "s@x.example", rc, 2,
                                "EXAMPLE.com", body, sizeof(body), 1234), 1);
    redisReply *c[QUEUE_ENQUEUE_CMDS];
    CHECK(parse_cmds(buf_peek(&b), buf_used(&b), c, QUEUE_ENQUEUE_CMDS));
    int p = queue_partition_of(&qc, "example.com", 11);
    char k[64];
    /* First the body, outside Lua, never overwriting. */
    redisReply *h = c[0], *r = c[1];
    snprintf(k, sizeof(k), "tern:{%d}:m:id-1", p);
    CHECK(h != NULL && h->elements == 4);
    CHECK_ARG(h, 0, "HSETNX");
    CHECK_ARG(h, 1, k);
    CHECK_ARG(h, 2, "data");
    CHECK(h && h->elements > 3 && h->element[3]->len == sizeof(body) &&
          memcmp(h->element[3]->str, body, sizeof(body)) == 0);
    /* Then the script, with everything but the body. */
    CHECK(r != NULL && r->elements == 11);
    CHECK_ARG(r, 0, "EVALSHA");
    CHECK_ARG(r, 1, s.enqueue);
    CHECK_ARG(r, 2, "3");
    CHECK_ARG(r, 3, k);
    snprintf(k, sizeof(k), "tern:{%d}:ready", p);
    CHECK_ARG(r, 4, k);
    snprintf(k, sizeof(k), "tern:{%d}:stats", p);
    CHECK_ARG(r, 5, k);
    CHECK_ARG(r, 6, "id-1");
    CHECK_ARG(r, 7, "s@x.example");
    CHECK_ARG(r, 8, "a@Example.COM\nb@example.com");
    CHECK_ARG(r, 9, "example.com");
    CHECK_ARG(r, 10, "1234");
    free_cmds(c, QUEUE_ENQUEUE_CMDS);

    /* With the queued event: the events key, and the stream cap last. */
    buf_reset(&b);
    qc.events_queued = 1;
    CHECK_INT(queue_cmd_enqueue(&b, &qc, &s, "id-2", "", rc, 1, "example.com", body, 3, 5), 1);
    CHECK(parse_cmds(buf_peek(&b), buf_used(&b), c, QUEUE_ENQUEUE_CMDS));
    r = c[1];
    CHECK(c[0] != NULL && c[0]->elements == 4 && c[0]->element[3]->len == 3);
    CHECK(r != NULL && r->elements == 13);
    CHECK_ARG(r, 2, "4");
    snprintf(k, sizeof(k), "tern:{%d}:events", p);
    CHECK_ARG(r, 6, k);
    CHECK_ARG(r, 11, "5");
    CHECK_ARG(r, 12, "1000000");
    free_cmds(c, QUEUE_ENQUEUE_CMDS);
    qc.events_queued = 0;

    /* Large body, several enqueues: all parse back in order. */
    size_t big = 3u * 1024 * 1024 + 7;
    uint8_t *data = malloc(big);
    for (size_t i = 0; i < big; i++)
        data[i] = (uint8_t)(i * 31);
    buf_reset(&b);
    const char *one[] = {"u@big.example"};
    for (int i = 0; i < 3; i++)
        CHECK_INT(queue_cmd_enqueue(&b, &qc, &s, "big", "", one, 1, "big.example",
                                    data, big, 1), 1);
    redisReply *all[3 * QUEUE_ENQUEUE_CMDS];
    CHECK(parse_cmds(buf_peek(&b), buf_used(&b), all, 3 * QUEUE_ENQUEUE_CMDS));
    for (int i = 0; i < 3; i++) {
        redisReply *x = all[i * QUEUE_ENQUEUE_CMDS], *y = all[i * QUEUE_ENQUEUE_CMDS + 1];
        CHECK(x != NULL && x->elements == 4 && x->element[3]->len == big &&
              memcmp(x->element[3]->str, data, big) == 0);
        CHECK(y != NULL && y->elements == 11);
        CHECK_ARG(y, 7, "");
    }
    free_cmds(all, 3 * QUEUE_ENQUEUE_CMDS);
    free(data);

    /* An empty body is a body too. */
    buf_reset(&b);
    CHECK_INT(queue_cmd_enqueue(&b, &qc, &s, "e", "", one, 1, "big.example", NULL, 0, 1), 1);
    CHECK(parse_cmds(buf_peek(&b), buf_used(&b), c, QUEUE_ENQUEUE_CMDS));
    CHECK(c[0] != NULL && c[0]->elements == 4 && c[0]->element[3]->len == 0);
    free_cmds(c, QUEUE_ENQUEUE_CMDS);

    size_t used = buf_used(&b);
    const char *other[] = {"a@example.com", "b@other.example"};
    CHECK_INT(queue_cmd_enqueue(&b, &qc, &s, "i", "", other, 2, "example.com",
                                body, 3, 1), 0);   /* mixed domains */
    const char *br[] = {"<a@example.com>"};
    CHECK_INT(queue_cmd_enqueue(&b, &qc, &s, "i", "", br, 1, "example.com",
                                body, 3, 1), 0);   /* not bare */
    CHECK_INT(queue_cmd_enqueue(&b, &qc, &s, "i", "<>", rc, 1, "example.com",
                                body, 3, 1), 0);   /* sender not bare */
    CHECK_INT(queue_cmd_enqueue(&b, &qc, &s, "i", "", rc, 0, "example.com",
                                body, 3, 1), 0);   /* no rcpts */
    qc.max_message_size = 2;
    CHECK_INT(queue_cmd_enqueue(&b, &qc, &s, "i", "", rc, 1, "example.com",
                                body, 3, 1), 0);   /* too big */
    CHECK_INT(buf_used(&b), used);
    buf_free(&b);
}

/* The undo of an enqueue deletes just the body field of its hash. */
static void test_cmd_enqueue_undo(void)
{
    struct queue_config qc;
    queue_config_defaults(&qc);
    struct buf b;
    buf_init(&b, 0);
    int p = queue_partition_of(&qc, "example.com", 11);
    CHECK_INT(queue_cmd_enqueue_undo(&b, &qc, p, "id-1"), 1);
    redisReply *r = parse_resp(buf_peek(&b), buf_used(&b));
    char k[64];
    snprintf(k, sizeof(k), "tern:{%d}:m:id-1", p);
    CHECK(r != NULL && r->elements == 3);
    CHECK_ARG(r, 0, "HDEL");
    CHECK_ARG(r, 1, k);
    CHECK_ARG(r, 2, "data");
    freeReplyObject(r);
    size_t used = buf_used(&b);
    CHECK_INT(queue_cmd_enqueue_undo(&b, &qc, qc.partitions, "id-1"), 0);
    CHECK_INT(queue_cmd_enqueue_undo(&b, &qc, -1, "id-1"), 0);
    CHECK_INT(queue_cmd_enqueue_undo(&b, &qc, p, "bad id"), 0);
    CHECK_INT(buf_used(&b), used);
    buf_free(&b);
}

static redisReply *reply_of(const char *resp)
{
    return parse_resp(resp, strlen(resp));
}

/* take_data_of: queue_take_data on one RESP reply; *mp as it asks. */
static int take_data_of(const char *resp, struct queue_msg **mp, const char **err)
{
    redisReply *d = reply_of(resp);
    CHECK(d != NULL);
    int ok = queue_take_data(d, mp, err);
    freeReplyObject(d);
    return ok;
}

static void test_parse(void)
{
    const char *err = NULL;
    struct queue_msg **m = NULL;
    size_t n = 99;
    long long left = 99;

    redisReply *r = reply_of("*0\r\n");
    CHECK_INT(queue_parse_take(r, 1, &m, &n, &left, &err), 1);
    CHECK_INT(n, 0);
    CHECK_INT(left, 0);   /* ready was empty */
    CHECK(m == NULL);
    freeReplyObject(r);
    /* Ids popped but all set aside or dropped: the header alone, and
     * ready may still hold more (the taker takes again). */
    r = reply_of("*2\r\n$3\r\n900\r\n:12\r\n");
    CHECK_INT(queue_parse_take(r, 1, &m, &n, &left, &err), 1);
    CHECK_INT(n, 0);
    CHECK_INT(left, 12);
    CHECK(m == NULL);
    freeReplyObject(r);

    r = reply_of("*6\r\n$3\r\n900\r\n:0\r\n$2\r\nid\r\n:5\r\n$3\r\nid2\r\n:0\r\n");
    CHECK_INT(queue_parse_take(r, 4, &m, &n, &left, &err), 1);
    freeReplyObject(r);
    CHECK_INT(n, 2);
    CHECK_INT(left, 0);
    if (n == 2) {
        CHECK_STR(m[0]->id, "id");
        CHECK_INT(m[0]->partition, 4);
        CHECK_INT(m[0]->data_len, 5);   /* as reported; the rest follows */
        CHECK_INT(m[0]->lease_until_ms, 900);
        CHECK(m[0]->data == NULL && m[0]->from == NULL && m[0]->bad == NULL);
        CHECK_STR(m[1]->id, "id2");
        CHECK_INT(m[1]->lease_until_ms, 900);
        /* The HMGET of metadata and body, and its reply read in: the body
         * taken over without a copy. */
        struct queue_config qc;
        queue_config_defaults(&qc);
        struct buf hb;
        buf_init(&hb, 0);
        CHECK_INT(queue_cmd_take_data(&hb, &qc, m[0]), 1);
        CHECK_MEM(buf_peek(&hb), buf_used(&hb),
                  "*9\r\n$5\r\nHMGET\r\n$13\r\ntern:{4}:m:id\r\n$4\r\nfrom\r\n$5\r\nrcpts\r\n"
                  "$6\r\ndomain\r\n$8\r\nattempts\r\n$7\r\ncreated\r\n$6\r\nwarned\r\n$4\r\ndata\r\n");
        buf_free(&hb);
        redisReply *d = reply_of("*7\r\n$5\r\na@x.y\r\n$7\r\nb@d\nc@D\r\n$1\r\nd\r\n$1\r\n3\r\n"
                                 "$3\r\n100\r\n$1\r\ny\r\n$5\r\nhi\t\r\n\r\n");
        struct queue_msg *before = m[0];
        CHECK_INT(queue_take_data(d, &m[0], &err), 1);
        CHECK(m[0] == before);   /* a short envelope fits the room the take left */
        CHECK(d->element[6]->str != NULL);   /* short: copied (QUEUE_TAKE_OVER_MIN) */
        CHECK(m[0]->data != (const uint8_t *)d->element[6]->str);
        freeReplyObject(d);
        CHECK(m[0]->bad == NULL);
        CHECK_STR(m[0]->id, "id");
        CHECK_INT(m[0]->partition, 4);
        CHECK_INT(m[0]->lease_until_ms, 900);
        CHECK_STR(m[0]->from, "a@x.y");
        CHECK_INT(m[0]->nrcpts, 2);
        CHECK_STR(m[0]->rcpts[0], "b@d");
        CHECK_STR(m[0]->rcpts[1], "c@D");
        CHECK_STR(m[0]->domain, "d");
        CHECK_INT(m[0]->data_len, 5);
        CHECK(m[0]->data != NULL && memcmp(m[0]->data, "hi\t\r\n", 5) == 0);
        CHECK_INT(m[0]->attempts, 3);
        CHECK_INT(m[0]->created_ms, 100);
        CHECK_INT(m[0]->delay_warned, 1);
        /* A body of QUEUE_TAKE_OVER_MIN bytes is taken over, not copied. */
        char longmsg[512];
        char body[QUEUE_TAKE_OVER_MIN + 1];
        memset(body, 'b', QUEUE_TAKE_OVER_MIN);
        body[QUEUE_TAKE_OVER_MIN] = '\0';
        snprintf(longmsg, sizeof(longmsg),
                 "*7\r\n$5\r\na@x.y\r\n$3\r\nb@d\r\n$1\r\nd\r\n$-1\r\n$-1\r\n$-1\r\n$%d\r\n%s\r\n",
                 QUEUE_TAKE_OVER_MIN, body);
        d = reply_of(longmsg);
        char *bodystr = d->element[6]->str;
        CHECK_INT(queue_take_data(d, &m[0], &err), 1);
        CHECK(d->element[6]->str == NULL);
        CHECK(m[0]->data == (const uint8_t *)bodystr);
        CHECK_INT(m[0]->data_len, QUEUE_TAKE_OVER_MIN);
        freeReplyObject(d);
        /* An envelope larger than that room: the message grows (it may
         * move), every recipient intact. */
        char rcpts[40 * 12 + 1] = "", big[1024];
        for (int i = 0; i < 40; i++)
            snprintf(rcpts + strlen(rcpts), sizeof(rcpts) - strlen(rcpts), "%su%02d@d.test", i ? "\n" : "", i);
        snprintf(big, sizeof(big), "*7\r\n$5\r\na@x.y\r\n$%zu\r\n%s\r\n$6\r\nd.test\r\n$-1\r\n$-1\r\n$-1\r\n$2\r\nhi\r\n",
                 strlen(rcpts), rcpts);
        CHECK(strlen(rcpts) > QUEUE_MSG_ROOM);
        d = reply_of(big);
        CHECK_INT(queue_take_data(d, &m[0], &err), 1);
        freeReplyObject(d);
        CHECK_INT(m[0]->nrcpts, 40);
        CHECK_STR(m[0]->rcpts[0], "u00@d.test");
        CHECK_STR(m[0]->rcpts[39], "u39@d.test");
        CHECK_STR(m[0]->domain, "d.test");
        CHECK_STR(m[0]->id, "id");
        CHECK(m[0]->room >= strlen(rcpts));
        CHECK_INT(m[0]->data_len, 2);
        /* Deleted since the take, an error, a wrong shape: 0, the message
         * untouched and still the caller's. */
        struct queue_msg *keep = m[1];
        CHECK_INT(take_data_of("*7\r\n$-1\r\n$-1\r\n$-1\r\n$-1\r\n$-1\r\n$-1\r\n$-1\r\n", &m[1], &err), 0);
        CHECK_STR(err, "message deleted since its take");
        CHECK(err == queue_err_deleted);
        CHECK_INT(take_data_of("-ERR x\r\n", &m[1], &err), 0);
        CHECK_STR(err, "error reply");
        CHECK_INT(take_data_of("$-1\r\n", &m[1], &err), 0);
        CHECK_INT(take_data_of("*2\r\n$1\r\na\r\n$1\r\nb\r\n", &m[1], &err), 0);
        CHECK_INT(take_data_of("*7\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nd\r\n:1\r\n$1\r\n1\r\n$0\r\n\r\n$0\r\n\r\n",
                               &m[1], &err), 0);
        CHECK(m[1] == keep && m[1]->data == NULL && m[1]->from == NULL);
        /* The null sender, no `warned`, no `attempts`/`created` (0), an
         * empty body. */
        CHECK_INT(take_data_of("*7\r\n$0\r\n\r\n$3\r\nz@d\r\n$1\r\nd\r\n$-1\r\n$-1\r\n$-1\r\n$0\r\n\r\n",
                               &m[1], &err), 1);
        CHECK(m[1]->bad == NULL);
        CHECK_STR(m[1]->id, "id2");
        CHECK_STR(m[1]->from, "");
        CHECK_INT(m[1]->nrcpts, 1);
        CHECK_STR(m[1]->rcpts[0], "z@d");
        CHECK_INT(m[1]->data_len, 0);
        CHECK_INT(m[1]->attempts, 0);
        CHECK_INT(m[1]->delay_warned, 0);
        for (size_t i = 0; i < n; i++)
            queue_msg_free(m[i]);
        free(m);
    }

    static const struct {
        const char *resp;
        const char *want_err;
    } bad[] = {
        {"-NOSCRIPT No matching script. Please use EVAL.\r\n", "NOSCRIPT"},
        {"-ERR something\r\n", "error reply"},
        {":1\r\n", "take: reply is not an array"},
        {"*1\r\n$3\r\n900\r\n", "take: bad element count"},
        {"*3\r\n$1\r\n9\r\n:0\r\n$1\r\na\r\n", "take: bad element count"},
        {"*4\r\n$1\r\nx\r\n:0\r\n$1\r\na\r\n:1\r\n", "take: bad lease"},
        {"*4\r\n:9\r\n:0\r\n$1\r\na\r\n:1\r\n", "take: bad lease"},
        {"*4\r\n$1\r\n9\r\n$1\r\n0\r\n$1\r\na\r\n:1\r\n", "take: bad ready length"},
        {"*2\r\n$1\r\n9\r\n:-1\r\n", "take: bad ready length"},
        {"*4\r\n$1\r\n9\r\n:0\r\n:1\r\n:1\r\n", "take: id is not a string"},
        {"*4\r\n$1\r\n9\r\n:0\r\n$0\r\n\r\n:1\r\n", "take: bad id"},
        {"*4\r\n$1\r\n9\r\n:0\r\n$1\r\na\r\n$1\r\n5\r\n", "take: bad data length"},
        {"*4\r\n$1\r\n9\r\n:0\r\n$1\r\na\r\n:-1\r\n", "take: bad data length"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        r = reply_of(bad[i].resp);
        CHECK(r != NULL);
        err = NULL;
        m = (struct queue_msg **)&err;
        CHECK_INT(queue_parse_take(r, 0, &m, &n, &left, &err), 0);
        CHECK_STR(err, bad[i].want_err);
        CHECK(m == NULL);
        CHECK_INT(n, 0);
        freeReplyObject(r);
    }
    CHECK_INT(queue_parse_take(NULL, 0, &m, &n, &left, &err), 0);

    /* A malformed entry is a message marked bad (to be set aside), not a
     * failed read: the others of the take still go out. */
    static const struct {
        const char *resp;
        const char *why;
    } malformed[] = {
        {"*7\r\n$-1\r\n$3\r\nr@d\r\n$1\r\nd\r\n$1\r\n1\r\n$1\r\n1\r\n$-1\r\n$0\r\n\r\n", "missing field from"},
        {"*7\r\n$0\r\n\r\n$-1\r\n$1\r\nd\r\n$1\r\n1\r\n$1\r\n1\r\n$-1\r\n$0\r\n\r\n", "missing field rcpts"},
        {"*7\r\n$0\r\n\r\n$3\r\nr@d\r\n$-1\r\n$1\r\n1\r\n$1\r\n1\r\n$-1\r\n$0\r\n\r\n", "missing field domain"},
        {"*7\r\n$0\r\n\r\n$3\r\nr@d\r\n$1\r\nd\r\n$1\r\n1\r\n$1\r\n1\r\n$-1\r\n$-1\r\n", "missing field data"},
        {"*7\r\n$0\r\n\r\n$3\r\nr@d\r\n$1\r\nd\r\n$2\r\n1x\r\n$1\r\n1\r\n$-1\r\n$0\r\n\r\n", "bad number"},
        {"*7\r\n$0\r\n\r\n$3\r\nr@d\r\n$1\r\nd\r\n$1\r\n1\r\n$1\r\nz\r\n$-1\r\n$0\r\n\r\n", "bad number"},
        {"*7\r\n$0\r\n\r\n$0\r\n\r\n$1\r\nd\r\n$1\r\n1\r\n$1\r\n1\r\n$-1\r\n$0\r\n\r\n", "no recipients"},
        {"*7\r\n$0\r\n\r\n$3\r\nr@e\r\n$1\r\nd\r\n$1\r\n1\r\n$1\r\n1\r\n$-1\r\n$0\r\n\r\n",
         "recipient not in the entry's domain"},
        {"*7\r\n$0\r\n\r\n$5\r\nr s@d\r\n$1\r\nd\r\n$1\r\n1\r\n$1\r\n1\r\n$-1\r\n$0\r\n\r\n", "bad recipient address"},
        {"*7\r\n$2\r\n<s\r\n$3\r\nr@d\r\n$1\r\nd\r\n$1\r\n1\r\n$1\r\n1\r\n$-1\r\n$0\r\n\r\n", "bad sender address"},
        {"*7\r\n$0\r\n\r\n$3\r\nr@D\r\n$1\r\nD\r\n$1\r\n1\r\n$1\r\n1\r\n$-1\r\n$0\r\n\r\n", "domain not lower-case"},
    };
    for (size_t i = 0; i < sizeof(malformed) / sizeof(malformed[0]); i++) {
        r = reply_of("*4\r\n$1\r\n7\r\n:0\r\n$1\r\na\r\n:0\r\n");
        CHECK_INT(queue_parse_take(r, 2, &m, &n, &left, &err), 1);
        freeReplyObject(r);
        CHECK_INT(n, 1);
        if (n != 1)
            continue;
        CHECK_INT(take_data_of(malformed[i].resp, &m[0], &err), 1);
        CHECK(m[0]->bad != NULL);
        CHECK_STR(m[0]->bad ? m[0]->bad : "", malformed[i].why);
        CHECK_STR(m[0]->id, "a");
        CHECK_INT(m[0]->lease_until_ms, 7);
        CHECK_INT(m[0]->partition, 2);
        CHECK(m[0]->data == NULL && m[0]->from == NULL);
        queue_msg_free(m[0]);
        free(m);
    }

    r = reply_of(":3\r\n");
    CHECK_INT(queue_parse_simple(r, &err), 1);
    freeReplyObject(r);
    r = reply_of("+OK\r\n");
    CHECK_INT(queue_parse_simple(r, &err), 1);
    freeReplyObject(r);
    r = reply_of("-NOSCRIPT x\r\n");
    CHECK_INT(queue_parse_simple(r, &err), 0);
    CHECK_STR(err, "NOSCRIPT");
    freeReplyObject(r);
    r = reply_of("-EXISTS message id already queued\r\n");
    CHECK_INT(queue_parse_simple(r, &err), 0);
    CHECK_STR(err, "error reply");
    CHECK_INT(queue_reply_exists(r), 1);
    freeReplyObject(r);
    r = reply_of("-ERR EXISTS elsewhere\r\n");
    CHECK_INT(queue_reply_exists(r), 0);
    freeReplyObject(r);
    r = reply_of(":1\r\n");
    CHECK_INT(queue_reply_exists(r), 0);
    freeReplyObject(r);
    r = reply_of("$1\r\nx\r\n");
    CHECK_INT(queue_parse_simple(r, &err), 0);
    CHECK_STR(err, "unexpected reply type");
    freeReplyObject(r);

    char sha[41];
    r = reply_of("$40\r\n0123456789abcdef0123456789abcdef01234567\r\n");
    CHECK_INT(queue_parse_script_load(r, sha, &err), 1);
    CHECK_STR(sha, "0123456789abcdef0123456789abcdef01234567");
    freeReplyObject(r);
    r = reply_of("$3\r\nabc\r\n");
    CHECK_INT(queue_parse_script_load(r, sha, &err), 0);
    freeReplyObject(r);
}

/* The two replies of an enqueue: the HSETNX's integer, then the script's. */
static int parse_pair(const char *hsetnx, const char *script, int *wrote, const char **err,
                      char *text, size_t textlen)
{
    redisReply *r[QUEUE_ENQUEUE_CMDS] = {reply_of(hsetnx), reply_of(script)};
    const char *t = NULL;
    int ok = queue_parse_enqueue((const redisReply *const *)r, wrote, err, &t);
    snprintf(text, textlen, "%s", t ? t : "(null)");
    free_cmds(r, QUEUE_ENQUEUE_CMDS);
    return ok;
}

static void test_parse_enqueue(void)
{
    const char *err = NULL;
    char text[128];
    int wrote = -1;
    CHECK_INT(parse_pair(":1\r\n", ":1\r\n", &wrote, &err, text, sizeof(text)), 1);
    CHECK_INT(wrote, 1);
    /* A resend after NOSCRIPT finds its body in place: still a success. */
    CHECK_INT(parse_pair(":0\r\n", ":1\r\n", &wrote, &err, text, sizeof(text)), 1);
    CHECK_INT(wrote, 0);
    CHECK_INT(parse_pair(":1\r\n", "-NOSCRIPT No matching script\r\n", &wrote, &err, text,
                         sizeof(text)), 0);
    CHECK_STR(err, "NOSCRIPT");
    CHECK_INT(wrote, 1);   /* to be resent, or undone */
    CHECK_INT(parse_pair(":0\r\n", "-EXISTS message id already queued\r\n", &wrote, &err, text,
                         sizeof(text)), 0);
    CHECK_STR(err, "error reply");
    CHECK_STR(text, "EXISTS message id already queued");
    CHECK_INT(wrote, 0);   /* the queued message keeps its own body */
    CHECK_INT(parse_pair("-OOM command not allowed\r\n", "-OOM no\r\n", &wrote, &err, text,
                         sizeof(text)), 0);
    CHECK_STR(err, "error reply");
    CHECK_STR(text, "OOM command not allowed");
    CHECK_INT(wrote, 0);
    CHECK_INT(parse_pair("+OK\r\n", ":1\r\n", &wrote, &err, text, sizeof(text)), 0);
    CHECK_STR(err, "unexpected reply type");
    CHECK_INT(parse_pair(":1\r\n", "*0\r\n", &wrote, &err, text, sizeof(text)), 0);
    CHECK_STR(err, "unexpected reply type");
    CHECK_INT(wrote, 1);
}

static void test_cmd_script_load(void)
{
    struct buf b;
    buf_init(&b, 0);
    CHECK_INT(queue_cmd_script_load(&b, queue_script_take_src()), 1);
    redisReply *r = parse_resp(buf_peek(&b), buf_used(&b));
    CHECK(r != NULL && r->elements == 3);
    CHECK_ARG(r, 0, "SCRIPT");
    CHECK_ARG(r, 1, "LOAD");
    CHECK_ARG(r, 2, queue_script_take_src());
    freeReplyObject(r);
    buf_free(&b);
    /* The scripts embed the configured caps. */
    CHECK(strstr(queue_script_enqueue_src(), QUEUE_EVENTS_MAXLEN_STR) != NULL);
    CHECK(strstr(queue_script_take_src(), QUEUE_MOVE_MAX_STR) != NULL);
    CHECK_STR(queue_outcome_kind_name(QUEUE_RETURNED), "returned");
    CHECK_STR(queue_outcome_kind_name(QUEUE_BAD), "bad");
}

int main(void)
{
    RUN(test_partition);
    RUN(test_ids);
    RUN(test_addr);
    RUN(test_config);
    RUN(test_cmd_script_load);
    RUN(test_cmd_take);
    RUN(test_cmd_ack);
    RUN(test_cmd_ack_raw_fields);
    RUN(test_cmd_enqueue);
    RUN(test_cmd_enqueue_report);
    RUN(test_cmd_enqueue_undo);
    RUN(test_parse);
    RUN(test_parse_enqueue);
    return check_finish();
}
