/*
 * unit_queue_redis.c - the queue against a real redis-server: scripts,
 * builders and the blocking CLI calls end to end.
 *
 * Starts its own redis-server on a unix socket in a mktemp directory (no
 * TCP port, no persistence), with PR_SET_PDEATHSIG so it dies with this
 * process even on a crash, and stops it by pid at the end. Prints
 * "PASS queue_redis (skipped: no redis-server)" when redis-server is not
 * installed. Times are passed to the scripts explicitly, so lease expiry
 * and retry schedules are tested without sleeping.
 */
#include "queue/queue.h"
#include "queue/queue_admin.h"
#include "tests/check.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Test fixture shared by the RUN groups (they take no arguments). */
static struct {
    struct queue_conn q;
    char dir[64];
    char sock[128];
} T;

static int have_redis_server(void)
{
    const char *path = getenv("PATH");
    if (path == NULL)
        return 0;
    char cand[4096];
    while (*path) {
        size_t n = strcspn(path, ":");
        if (n > 0 && n + 14 < sizeof(cand)) {
            snprintf(cand, sizeof(cand), "%.*s/redis-server", (int)n, path);
            if (access(cand, X_OK) == 0)
                return 1;
        }
        path += n + (path[n] == ':');
    }
    return 0;
}

static pid_t start_redis(void)
{
    char log[160];
    snprintf(log, sizeof(log), "%s/redis.log", T.dir);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execlp("redis-server", "redis-server", "--port", "0", "--unixsocket", T.sock,
               "--save", "", "--appendonly", "no", "--dir", T.dir,
               "--daemonize", "no", (char *)NULL);
        _exit(127);
    }
    return pid;
}

static redisReply *cmd(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(T.q.rc, fmt, ap);
    va_end(ap);
    return r;
}

static long long cmd_int(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(T.q.rc, fmt, ap);
    va_end(ap);
    long long v = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -999;
    freeReplyObject(r);
    return v;
}

/* HGET as a C string into out ("(nil)" when missing). */
static const char *hget(char *out, size_t outlen, const char *key, const char *field)
{
    redisReply *r = cmd("HGET %s %s", key, field);
    if (r && r->type == REDIS_REPLY_STRING)
        snprintf(out, outlen, "%.*s", (int)r->len, r->str);
    else
        snprintf(out, outlen, "(nil)");
    freeReplyObject(r);
    return out;
}

static void flush(void)
{
    freeReplyObject(cmd("FLUSHALL"));
}

/* Send the one command in b and return its reply. */
static redisReply *run_buf(struct buf *b)
{
    void *rv = NULL;
    if (b->err || redisAppendFormattedCommand(T.q.rc, (const char *)buf_peek(b),
                                              buf_used(b)) != REDIS_OK ||
        redisGetReply(T.q.rc, &rv) != REDIS_OK)
        rv = NULL;
    buf_reset(b);
    return rv;
}

/* Send the one enqueue in b (QUEUE_ENQUEUE_CMDS commands) and check its
 * replies with queue_parse_enqueue; *text gets a copy of any error text. */
static int run_enqueue(struct buf *b, int *wrote, const char **err, char *text, size_t textlen)
{
    redisReply *r[QUEUE_ENQUEUE_CMDS] = {NULL};
    int ok = !b->err && redisAppendFormattedCommand(T.q.rc, (const char *)buf_peek(b),
                                                    buf_used(b)) == REDIS_OK;
    for (size_t i = 0; ok && i < QUEUE_ENQUEUE_CMDS; i++) {
        void *rv = NULL;
        ok = redisGetReply(T.q.rc, &rv) == REDIS_OK;
        r[i] = rv;
    }
    buf_reset(b);
    const char *t = "";
    *err = "no reply";
    *wrote = 0;
    ok = ok && queue_parse_enqueue((const redisReply *const *)r, wrote, err, &t);
    snprintf(text, textlen, "%s", t);
    for (size_t i = 0; i < QUEUE_ENQUEUE_CMDS; i++)
        freeReplyObject(r[i]);
    return ok;
}

/* What the last take said ready still held after it (-1: it failed). */
static long long take_left;

/* take_moves: a take as the engine sends it; moves 0 leaves due retries
 * and expired leases where they are. */
static size_t take_moves(int p, int max, int64_t now, int moves, struct queue_msg ***m, const char **err)
{
    struct buf b;
    buf_init(&b, 0);
    size_t n = 0;
    *err = NULL;
    if (!queue_cmd_take(&b, &T.q.qc, &T.q.scripts, p, max, now, moves))
        *err = "build failed";
    redisReply *r = run_buf(&b);
    if (!queue_parse_take(r, p, m, &n, &take_left, err)) {
        n = 0;
        take_left = -1;
    }
    freeReplyObject(r);
    /* Metadata and body, one HMGET each, as the engine fetches them. */
    for (size_t i = 0; i < n; i++) {
        if (!queue_cmd_take_data(&b, &T.q.qc, (*m)[i])) {
            *err = "build failed";
            continue;
        }
        r = run_buf(&b);
        if (!queue_take_data(r, &(*m)[i], err))
            printf("  take data of %s: %s\n", (*m)[i]->id, *err);
        freeReplyObject(r);
    }
    buf_free(&b);
    return n;
}

static size_t take(int p, int max, int64_t now, struct queue_msg ***m, const char **err)
{
    return take_moves(p, max, now, 1, m, err);
}

static void free_msgs(struct queue_msg **m, size_t n)
{
    for (size_t i = 0; i < n; i++)
        queue_msg_free(m[i]);
    free(m);
}

/* ack; returns the integer reply (outcomes applied) or -1. */
static long long ack(int p, const struct queue_outcome *o, size_t n, int64_t now)
{
    struct buf b;
    buf_init(&b, 0);
    long long v = -1;
    if (queue_cmd_ack(&b, &T.q.qc, &T.q.scripts, p, o, n, now)) {
        redisReply *r = run_buf(&b);
        const char *err;
        if (queue_parse_simple(r, &err) && r->type == REDIS_REPLY_INTEGER)
            v = r->integer;
        freeReplyObject(r);
    }
    buf_free(&b);
    return v;
}

static void key(char *out, size_t n, int p, const char *name)
{
    queue_key(out, n, &T.q.qc, p, name);
}

static int part(const char *domain)
{
    return queue_partition_of(&T.q.qc, domain, strlen(domain));
}

static void test_enqueue_multi_domain(void)
{
    flush();
    char err[256] = "", k[128], v[256];
    /* one.example and two.example must land in different partitions for
     * this test to mean something. */
    CHECK(part("one.example") != part("two.example"));
    const char *rc[] = {"a@one.example", "<b@two.example>", "c@ONE.example",
                        "a@one.example"};
    static const uint8_t data[] = "Subject: hi\r\n\r\nbody\0with NUL\r\n";
    int got = queue_enqueue(&T.q, "<s@x.example>", rc, 4, data, sizeof(data), err,
                            sizeof(err));
    CHECK_INT(got, 2);
    if (got != 2)
        printf("  err: %s\n", err);
    int p1 = part("one.example"), p2 = part("two.example");
    key(k, sizeof(k), p1, "ready");
    CHECK_INT(cmd_int("LLEN %s", k), 1);
    key(k, sizeof(k), p2, "ready");
    CHECK_INT(cmd_int("LLEN %s", k), 1);

    /* The entry for one.example: two recipients, domain lower-cased. */
    key(k, sizeof(k), p1, "ready");
    redisReply *r = cmd("LINDEX %s 0", k);
    CHECK(r && r->type == REDIS_REPLY_STRING);
    char mk[128];
    snprintf(mk, sizeof(mk), "tern:{%d}:m:%s", p1, r && r->str ? r->str : "");
    freeReplyObject(r);
    CHECK_STR(hget(v, sizeof(v), mk, "rcpts"), "a@one.example\nc@one.example");
    CHECK_STR(hget(v, sizeof(v), mk, "from"), "s@x.example");
    CHECK_STR(hget(v, sizeof(v), mk, "domain"), "one.example");
    CHECK_STR(hget(v, sizeof(v), mk, "attempts"), "0");
    CHECK(atoll(hget(v, sizeof(v), mk, "created")) > 1600000000000LL);
    r = cmd("HGET %s data", mk);
    CHECK(r && r->type == REDIS_REPLY_STRING && r->len == sizeof(data) &&
          memcmp(r->str, data, sizeof(data)) == 0);
    freeReplyObject(r);

    struct queue_stats st;
    CHECK_INT(queue_stats(&T.q, &st, err, sizeof(err)), 1);
    CHECK_INT(st.enqueued, 2);
    CHECK_INT(st.ready, 2);
    CHECK_INT(st.leased, 0);

    /* Null sender, written either way. */
    const char *one[] = {"z@one.example"};
    CHECK_INT(queue_enqueue(&T.q, "<>", one, 1, data, 3, err, sizeof(err)), 1);
    CHECK_INT(queue_enqueue(&T.q, "", one, 1, data, 3, err, sizeof(err)), 1);
    key(k, sizeof(k), p1, "ready");
    r = cmd("LINDEX %s -1", k);
    snprintf(mk, sizeof(mk), "tern:{%d}:m:%s", p1, r && r->str ? r->str : "");
    freeReplyObject(r);
    CHECK_STR(hget(v, sizeof(v), mk, "from"), "");
}

static void test_enqueue_rejects(void)
{
    flush();
    char err[256];
    static const uint8_t data[] = "x";
    long long before = cmd_int("DBSIZE");
    CHECK_INT(before, 0);
    const char *bad_rcpt[] = {"ok@a.example", "bad rcpt@b.example"};
    err[0] = '\0';
    CHECK_INT(queue_enqueue(&T.q, "s@x.example", bad_rcpt, 2, data, 1, err, sizeof(err)), -1);
    CHECK(strstr(err, "space") != NULL);
    const char *inj[] = {"ok@a.example", "x@b.example>\r\nRCPT TO:<y@c.example"};
    CHECK_INT(queue_enqueue(&T.q, "s@x.example", inj, 2, data, 1, err, sizeof(err)), -1);
    const char *good[] = {"ok@a.example"};
    CHECK_INT(queue_enqueue(&T.q, "s x@x.example", good, 1, data, 1, err, sizeof(err)), -1);
    CHECK(strstr(err, "sender") != NULL);
    CHECK_INT(queue_enqueue(&T.q, "s@x.example", good, 0, data, 1, err, sizeof(err)), -1);
    int64_t saved = T.q.qc.max_message_size;
    T.q.qc.max_message_size = 10;
    static const uint8_t big[11] = "0123456789";
    CHECK_INT(queue_enqueue(&T.q, "s@x.example", good, 1, big, 11, err, sizeof(err)), -1);
    CHECK(strstr(err, "exceeds") != NULL);
    CHECK_INT(queue_generate(&T.q, 5, (const char *const[]){"a.example"}, 1, 100, err,
                             sizeof(err)), -1);
    CHECK_INT(queue_enqueue(&T.q, "s@x.example", good, 1, big, 10, err, sizeof(err)), 1);
    T.q.qc.max_message_size = saved;
    CHECK_INT(queue_generate(&T.q, 5, (const char *const[]){"bad domain"}, 1, 100, err,
                             sizeof(err)), -1);
    /* Only the one good enqueue wrote anything: hash, ready, stats and
     * the events stream (its `queued` event). */
    CHECK_INT(cmd_int("DBSIZE"), 4);
}

static void test_enqueue_script_refuses_duplicate(void)
{
    flush();
    struct buf b;
    buf_init(&b, 0);
    const char *rc[] = {"u@dup.example"};
    const char *err = NULL;
    static const char *const bodies[2] = {"first body", "second, other body"};
    char text[128];
    for (int i = 0; i < 2; i++) {
        CHECK_INT(queue_cmd_enqueue(&b, &T.q.qc, &T.q.scripts, "dupid", "", rc, 1,
                                    "dup.example", (const uint8_t *)bodies[i],
                                    strlen(bodies[i]), 5 + i), 1);
        int wrote = -1;
        CHECK_INT(run_enqueue(&b, &wrote, &err, text, sizeof(text)), i == 0);
        CHECK_INT(wrote, i == 0);   /* HSETNX left the queued body alone */
        if (i == 1)
            CHECK(strncmp(text, "EXISTS", 6) == 0);
    }
    char k[128], v[64];
    int p = part("dup.example");
    key(k, sizeof(k), p, "ready");
    CHECK_INT(cmd_int("LLEN %s", k), 1);
    key(k, sizeof(k), p, "stats");
    CHECK_STR(hget(v, sizeof(v), k, "enqueued"), "1");
    /* The queued message is untouched: its own body and creation time. */
    key(k, sizeof(k), p, "m:dupid");
    CHECK_STR(hget(v, sizeof(v), k, "data"), "first body");
    CHECK_STR(hget(v, sizeof(v), k, "created"), "5");
    buf_free(&b);

    /* Any client: HSETNX of the body, then EVALSHA with the optional 4th
     * key (events) as in docs/queue.md; the event says "queued". */
    flush();
    p = part("any.example");
    char km[128], kr[128], ks[128], ke[128];
    key(km, sizeof(km), p, "m:cli1");
    key(kr, sizeof(kr), p, "ready");
    key(ks, sizeof(ks), p, "stats");
    key(ke, sizeof(ke), p, "events");
    CHECK_INT(cmd_int("HSETNX %s data %b", km, "hello", (size_t)5), 1);
    redisReply *r = cmd("EVALSHA %s 4 %s %s %s %s cli1 s@x.example u@any.example "
                        "any.example 1700000000000",
                        T.q.scripts.enqueue, km, kr, ks, ke);
    CHECK(r && r->type == REDIS_REPLY_INTEGER && r->integer == 1);
    freeReplyObject(r);
    CHECK_STR(hget(v, sizeof(v), km, "data"), "hello");
    CHECK_STR(hget(v, sizeof(v), km, "attempts"), "0");
    r = cmd("XRANGE %s - +", ke);
    CHECK(r && r->type == REDIS_REPLY_ARRAY && r->elements == 1);
    if (r && r->elements == 1) {
        redisReply *f = r->element[0]->element[1];
        CHECK(f->elements == 8 && strcmp(f->element[3]->str, "queued") == 0);
    }
    freeReplyObject(r);
    /* tern's own enqueue writes it too, with the recipients. */
    const char *rq[] = {"u@any.example"};
    CHECK_INT(queue_enqueue(&T.q, "", rq, 1, (const uint8_t *)"x", 1, (char[64]){0}, 64), 1);
    r = cmd("XRANGE %s - +", ke);
    CHECK(r && r->type == REDIS_REPLY_ARRAY && r->elements == 2);
    if (r && r->elements == 2) {
        redisReply *f = r->element[1]->element[1];
        CHECK(f->elements == 8 && strcmp(f->element[3]->str, "queued") == 0 &&
              strcmp(f->element[7]->str, "u@any.example") == 0);
    }
    freeReplyObject(r);
}

static void test_generate(void)
{
    flush();
    char err[256] = "";
    const char *doms[] = {"g1.example", "g2.example", "g3.example"};
    long got = queue_generate(&T.q, 1000, doms, 3, 2000, err, sizeof(err));
    CHECK_INT(got, 1000);
    if (got != 1000)
        printf("  err: %s\n", err);
    struct queue_stats st;
    CHECK_INT(queue_stats(&T.q, &st, err, sizeof(err)), 1);
    CHECK_INT(st.ready, 1000);
    CHECK_INT(st.enqueued, 1000);
    /* Every id distinct: 1000 message hashes + ready lists + stats. */
    int parts[3] = {part(doms[0]), part(doms[1]), part(doms[2])};
    long long hashes = 0;
    for (int d = 0; d < 3; d++) {
        char k[128];
        key(k, sizeof(k), parts[d], "ready");
        long long len = cmd_int("LLEN %s", k);
        int shared = 0;
        for (int e = 0; e < d; e++)
            shared |= parts[e] == parts[d];
        if (!shared)
            hashes += len;
    }
    CHECK_INT(hashes, 1000);
    /* Look at one message: headers and body lines. */
    struct queue_msg **m;
    const char *perr;
    size_t n = take(parts[0], 1, 1, &m, &perr);
    CHECK_INT(n, 1);
    if (n == 1) {
        const char *d = (const char *)m[0]->data;
        CHECK(strncmp(d, "Date: ", 6) == 0);
        CHECK(strstr(d, "\r\nFrom: <generator@tern.test>\r\n") != NULL);
        CHECK(strstr(d, "\r\nTo: <user0@g1.example>\r\n") != NULL);
        CHECK(strstr(d, "\r\nSubject: ") != NULL);
        CHECK(strstr(d, "\r\nMessage-ID: <") != NULL);
        const char *body = strstr(d, "\r\n\r\n");
        CHECK(body != NULL);
        CHECK(m[0]->data_len > 1500 && m[0]->data_len < 2500);
        /* Every body line is 76 printable characters then CRLF. */
        if (body) {
            const char *p = body + 4, *end = d + m[0]->data_len;
            CHECK((size_t)(end - p) % 78 == 0);
            for (; p + 78 <= end; p += 78)
                CHECK(p[76] == '\r' && p[77] == '\n' && p[0] > ' ' && p[75] < 0x7f);
        }
        CHECK_STR(m[0]->rcpts[0], "user0@g1.example");
        free_msgs(m, n);
    }
}

/* --generate --from: the envelope sender and the From: header are the
 * given sender; the null sender keeps the generator's header. */
static void test_generate_from(void)
{
    flush();
    char err[256] = "";
    const char *doms[] = {"gf.example"};
    CHECK_INT(queue_generate_from(&T.q, "<ops@sender.example>", 2, doms, 1, 200, err,
                                  sizeof(err)), 2);
    CHECK_INT(queue_generate_from(&T.q, "bad sender@x", 1, doms, 1, 200, err, sizeof(err)), -1);
    CHECK(strstr(err, "sender") != NULL);
    struct queue_msg **m;
    const char *perr;
    size_t n = take(part(doms[0]), 10, 1, &m, &perr);
    CHECK_INT(n, 2);
    for (size_t i = 0; i < n; i++) {
        CHECK_STR(m[i]->from, "ops@sender.example");
        CHECK(strstr((const char *)m[i]->data, "\r\nFrom: <ops@sender.example>\r\n") != NULL);
    }
    if (n)
        free_msgs(m, n);
    flush();
    CHECK_INT(queue_generate_from(&T.q, "<>", 1, doms, 1, 200, err, sizeof(err)), 1);
    n = take(part(doms[0]), 10, 1, &m, &perr);
    CHECK_INT(n, 1);
    if (n == 1) {
        CHECK_STR(m[0]->from, "");
        CHECK(strstr((const char *)m[0]->data, "\r\nFrom: <generator@tern.test>\r\n") != NULL);
        free_msgs(m, n);
    }
}

/* A take says how many entries ready still holds after it: 0 only when
 * it emptied the list, whatever it returned (ids it popped but dropped
 * count as popped), so the engine takes again only when there is more. */
static void test_take_ready_left(void)
{
    flush();
    char err[256] = "";
    const char *doms[] = {"left.example"};
    int p = part(doms[0]);
    struct queue_msg **m;
    const char *perr;
    CHECK_INT(queue_generate(&T.q, 3, doms, 1, 200, err, sizeof(err)), 3);
    size_t n = take(p, 2, 1, &m, &perr);
    CHECK_INT(n, 2);
    CHECK_INT(take_left, 1);
    if (n)
        free_msgs(m, n);
    n = take(p, 2, 1, &m, &perr);
    CHECK_INT(n, 1);
    CHECK_INT(take_left, 0);   /* fewer than asked, and none left */
    if (n)
        free_msgs(m, n);
    n = take(p, 2, 1, &m, &perr);
    CHECK_INT(n, 0);
    CHECK_INT(take_left, 0);
    /* Two ids without a message in front of a real one: both popped and
     * dropped, so the take returns none, yet ready is not empty. */
    CHECK_INT(queue_generate(&T.q, 1, doms, 1, 200, err, sizeof(err)), 1);
    char key[64];
    snprintf(key, sizeof(key), "%s:{%d}:ready", T.q.qc.prefix, p);
    freeReplyObject(cmd("LPUSH %s gone1 gone2", key));
    n = take(p, 2, 1, &m, &perr);
    CHECK_INT(n, 0);
    CHECK_INT(take_left, 1);
    n = take(p, 2, 1, &m, &perr);
    CHECK_INT(n, 1);
    CHECK_INT(take_left, 0);
    if (n)
        free_msgs(m, n);
}

/* tern queue delete takes ready ids off the ready list at once (so the
 * `ready` count is right) and keeps the order of the rest: many ids (one
 * walk over the list) and a few (one LREM each). */
static void test_delete_leaves_ready(void)
{
    enum { NGEN = 30, NDEL = 12 };
    flush();
    char err[256] = "", addr[200], k[128];
    const char *doms[] = {"dl.example"};
    CHECK_INT(queue_generate(&T.q, NGEN, doms, 1, 100, err, sizeof(err)), NGEN);
    key(k, sizeof(k), part(doms[0]), "ready");
    redisReply *r = cmd("LRANGE %s 0 -1", k);
    CHECK(r && r->type == REDIS_REPLY_ARRAY && r->elements == NGEN);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != NGEN) {
        freeReplyObject(r);
        return;
    }
    snprintf(addr, sizeof(addr), "unix:%s", T.sock);
    FILE *out = fopen("/dev/null", "w");
    char *argv[2 + NDEL] = {"delete"};
    for (int i = 0; i < NDEL; i++)   /* every other id of the first 24 */
        argv[1 + i] = r->element[2 * i]->str;
    CHECK_INT(queue_admin_main(&T.q.qc, addr, "tern.test", 1 + NDEL, argv, out), 0);
    CHECK_INT(cmd_int("LLEN %s", k), NGEN - NDEL);
    redisReply *left = cmd("LRANGE %s 0 -1", k);
    CHECK(left && left->type == REDIS_REPLY_ARRAY && left->elements == NGEN - NDEL);
    for (size_t i = 0; left && i < left->elements && i < NGEN - NDEL; i++) {
        size_t want = i < NDEL ? 2 * i + 1 : i + NDEL;
        CHECK_STR(left->element[i]->str, r->element[want]->str);
    }
    freeReplyObject(left);
    argv[1] = r->element[1]->str;
    argv[2] = r->element[NGEN - 1]->str;
    CHECK_INT(queue_admin_main(&T.q.qc, addr, "tern.test", 3, argv, out), 0);
    CHECK_INT(cmd_int("LLEN %s", k), NGEN - NDEL - 2);
    fclose(out);
    freeReplyObject(r);
}

static void test_take_ack(void)
{
    flush();
    char err[256], k[128], v[256];
    const char *rc[] = {"x@d.example", "y@d.example"};
    for (int i = 0; i < 5; i++)
        CHECK_INT(queue_enqueue(&T.q, "s@x.example", rc, 2, (const uint8_t *)"DATA", 4,
                                err, sizeof(err)), 1);
    int p = part("d.example");
    key(k, sizeof(k), p, "events");
    freeReplyObject(cmd("DEL %s", k));   /* the enqueues' `queued` events: outcomes below */
    int64_t now = 1700000000000LL;
    struct queue_msg **m = NULL;
    const char *perr;
    size_t n = take(p, 3, now, &m, &perr);
    CHECK_INT(n, 3);
    if (n != 3) {
        printf("  take: %s\n", perr ? perr : "?");
        free_msgs(m, n);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        CHECK_INT(m[i]->partition, p);
        CHECK_STR(m[i]->from, "s@x.example");
        CHECK_INT(m[i]->nrcpts, 2);
        CHECK_STR(m[i]->rcpts[1], "y@d.example");
        CHECK_STR(m[i]->domain, "d.example");
        CHECK_MEM(m[i]->data, m[i]->data_len, "DATA");
        CHECK_INT(m[i]->attempts, 0);
        CHECK_INT(m[i]->lease_until_ms, now + T.q.qc.lease_ms);
    }
    key(k, sizeof(k), p, "leased");
    CHECK_INT(cmd_int("ZCARD %s", k), 3);
    key(k, sizeof(k), p, "ready");
    CHECK_INT(cmd_int("LLEN %s", k), 2);

    const char *f0[] = {"reply", "250 2.0.0 ok", "mx", "mx.d.example", "tier", "dane"};
    const char *f1[] = {"reply", "451 4.7.1 later", "attempts", "1"};
    struct queue_outcome o[3] = {
        {.id = m[0]->id, .kind = QUEUE_DELIVERED, .fields = f0, .nfields = 6,
         .lease_until_ms = m[0]->lease_until_ms},
        {.id = m[1]->id, .kind = QUEUE_DEFERRED, .remaining_rcpts = "y@d.example",
         .retry_at_ms = now + 60000, .fields = f1, .nfields = 4},
        {.id = m[2]->id, .kind = QUEUE_RETURNED},
    };
    CHECK_INT(ack(p, o, 3, now + 10), 3);
    char mk[3][128];
    for (int i = 0; i < 3; i++)
        snprintf(mk[i], sizeof(mk[i]), "tern:{%d}:m:%s", p, m[i]->id);
    CHECK_INT(cmd_int("EXISTS %s", mk[0]), 0);
    CHECK_STR(hget(v, sizeof(v), mk[1], "attempts"), "1");
    CHECK_STR(hget(v, sizeof(v), mk[1], "rcpts"), "y@d.example");
    CHECK_STR(hget(v, sizeof(v), mk[1], "last"), "451 4.7.1 later");
    CHECK_STR(hget(v, sizeof(v), mk[2], "attempts"), "0");
    CHECK_STR(hget(v, sizeof(v), mk[2], "rcpts"), "x@d.example\ny@d.example");
    key(k, sizeof(k), p, "sched");
    redisReply *r = cmd("ZSCORE %s %s", k, m[1]->id);
    CHECK(r && r->type == REDIS_REPLY_STRING && atoll(r->str) == now + 60000);
    freeReplyObject(r);
    key(k, sizeof(k), p, "leased");
    CHECK_INT(cmd_int("ZCARD %s", k), 0);
    key(k, sizeof(k), p, "ready");
    CHECK_INT(cmd_int("LLEN %s", k), 3);
    r = cmd("LINDEX %s -1", k);   /* returned goes to the back */
    CHECK(r && r->str && strcmp(r->str, m[2]->id) == 0);
    freeReplyObject(r);
    key(k, sizeof(k), p, "stats");
    CHECK_STR(hget(v, sizeof(v), k, "delivered"), "1");
    CHECK_STR(hget(v, sizeof(v), k, "deferred"), "1");
    CHECK_STR(hget(v, sizeof(v), k, "returned"), "1");

    /* Events: one per outcome, standard fields then the caller's. */
    key(k, sizeof(k), p, "events");
    r = cmd("XRANGE %s - +", k);
    CHECK(r && r->type == REDIS_REPLY_ARRAY && r->elements == 3);
    if (r && r->elements == 3) {
        redisReply *e0 = r->element[0]->element[1];
        static const char *const want0[] = {"id", NULL, "status", "delivered", "reply",
                                            "250 2.0.0 ok", "mx", "mx.d.example",
                                            "tier", "dane"};
        CHECK_INT(e0->elements, 10);
        for (size_t i = 0; i < e0->elements && i < 10; i++)
            CHECK_STR(e0->element[i]->str, want0[i] ? want0[i] : m[0]->id);
        redisReply *e1 = r->element[1]->element[1];
        CHECK(e1->elements == 8 && strcmp(e1->element[3]->str, "deferred") == 0);
        redisReply *e2 = r->element[2]->element[1];
        CHECK(e2->elements == 4 && strcmp(e2->element[3]->str, "returned") == 0 &&
              strcmp(e2->element[1]->str, m[2]->id) == 0);
    }
    freeReplyObject(r);

    /* A stale ack (no longer leased) changes nothing and adds no event. */
    struct queue_outcome stale = {.id = m[0]->id, .kind = QUEUE_FAILED};
    CHECK_INT(ack(p, &stale, 1, now + 20), 0);
    stale.id = m[2]->id;   /* back on ready, not leased */
    CHECK_INT(ack(p, &stale, 1, now + 20), 0);
    CHECK_INT(cmd_int("EXISTS %s", mk[2]), 1);
    CHECK_INT(cmd_int("XLEN %s", k), 3);
    free_msgs(m, n);

    /* Failed, with the lease check: a wrong lease is ignored. */
    n = take(p, 1, now + 30, &m, &perr);
    CHECK_INT(n, 1);
    if (n == 1) {
        struct queue_outcome f = {.id = m[0]->id, .kind = QUEUE_FAILED,
                                  .lease_until_ms = m[0]->lease_until_ms + 1};
        CHECK_INT(ack(p, &f, 1, now + 40), 0);
        f.lease_until_ms = m[0]->lease_until_ms;
        CHECK_INT(ack(p, &f, 1, now + 40), 1);
        snprintf(mk[0], sizeof(mk[0]), "tern:{%d}:m:%s", p, m[0]->id);
        CHECK_INT(cmd_int("EXISTS %s", mk[0]), 0);
        key(k, sizeof(k), p, "stats");
        CHECK_STR(hget(v, sizeof(v), k, "failed"), "1");
        free_msgs(m, n);
    }
    struct queue_stats st;
    CHECK_INT(queue_stats(&T.q, &st, err, sizeof(err)), 1);
    CHECK_INT(st.ready, 2);
    CHECK_INT(st.scheduled, 1);
    CHECK_INT(st.leased, 0);
    CHECK_INT(st.delivered + st.failed + st.deferred + st.returned, 4);

    /* A malformed batch is refused whole: nothing applied. */
    n = take(p, 1, now + 50, &m, &perr);
    CHECK_INT(n, 1);
    if (n == 1) {
        char km[128];
        key(km, sizeof(km), p, "m:");
        key(k, sizeof(k), p, "leased");
        char kall[5][128];
        key(kall[0], 128, p, "leased");
        key(kall[1], 128, p, "sched");
        key(kall[2], 128, p, "ready");
        key(kall[3], 128, p, "stats");
        key(kall[4], 128, p, "events");
        r = cmd("EVALSHA %s 5 %s %s %s %s %s %s 1 2 %s delivered 0 x 0 0 nope bogus 0 x 0 0",
                T.q.scripts.ack, kall[0], kall[1], kall[2], kall[3], kall[4], km, m[0]->id);
        CHECK(r && r->type == REDIS_REPLY_ERROR);
        freeReplyObject(r);
        CHECK_INT(cmd_int("ZCARD %s", k), 1);
        free_msgs(m, n);
    }
}

static void test_lease_expiry_and_schedule(void)
{
    flush();
    char err[256], v[256];
    const char *rc[] = {"a@e.example", "b@e.example"};
    CHECK_INT(queue_enqueue(&T.q, "", rc, 2, (const uint8_t *)"M", 1, err, sizeof(err)), 1);
    int p = part("e.example");
    int64_t t0 = 1700000000000LL, lease = T.q.qc.lease_ms;
    struct queue_msg **m;
    const char *perr;
    size_t n = take(p, 10, t0, &m, &perr);
    CHECK_INT(n, 1);
    char id[QUEUE_ID_MAX] = "";
    if (n == 1)
        snprintf(id, sizeof(id), "%s", m[0]->id);
    free_msgs(m, n);
    /* Still leased: nothing to take. */
    n = take(p, 10, t0 + lease - 1, &m, &perr);
    CHECK_INT(n, 0);
    free_msgs(m, n);
    /* The engine "died": once the lease expires the next take that moves
     * expired leases gets it; one that skips the moves does not. */
    n = take_moves(p, 10, t0 + lease, 0, &m, &perr);
    CHECK_INT(n, 0);
    free_msgs(m, n);
    n = take(p, 10, t0 + lease, &m, &perr);
    CHECK_INT(n, 1);
    if (n == 1) {
        CHECK_STR(m[0]->id, id);
        CHECK_INT(m[0]->attempts, 0);
        CHECK_INT(m[0]->lease_until_ms, t0 + 2 * lease);
        /* The first engine's late ack is stale by lease and ignored. */
        struct queue_outcome late = {.id = id, .kind = QUEUE_DELIVERED,
                                     .lease_until_ms = t0 + lease};
        CHECK_INT(ack(p, &late, 1, t0 + lease + 1), 0);
        /* Defer it, keeping only b@ as pending. */
        struct queue_outcome d = {.id = id, .kind = QUEUE_DEFERRED,
                                  .remaining_rcpts = "b@e.example",
                                  .retry_at_ms = t0 + lease + 60000,
                                  .lease_until_ms = m[0]->lease_until_ms};
        CHECK_INT(ack(p, &d, 1, t0 + lease + 1), 1);
    }
    free_msgs(m, n);
    n = take(p, 10, t0 + lease + 59999, &m, &perr);
    CHECK_INT(n, 0);
    free_msgs(m, n);
    char k[128];
    key(k, sizeof(k), p, "sched");
    CHECK_INT(cmd_int("ZCARD %s", k), 1);
    n = take(p, 10, t0 + lease + 60000, &m, &perr);
    CHECK_INT(n, 1);
    if (n == 1) {
        CHECK_STR(m[0]->id, id);
        CHECK_INT(m[0]->attempts, 1);
        CHECK_INT(m[0]->nrcpts, 1);
        CHECK_STR(m[0]->rcpts[0], "b@e.example");
    }
    free_msgs(m, n);
    CHECK_INT(cmd_int("ZCARD %s", k), 0);
    /* A message whose hash vanished is skipped by take, not returned. */
    flush();
    key(k, sizeof(k), p, "ready");
    freeReplyObject(cmd("RPUSH %s ghost", k));
    n = take(p, 10, t0, &m, &perr);
    CHECK_INT(n, 0);
    CHECK(perr == NULL);
    free_msgs(m, n);
    key(k, sizeof(k), p, "leased");
    CHECK_INT(cmd_int("ZCARD %s", k), 0);
    (void)v;
}

static void test_noscript(void)
{
    flush();
    char err[256] = "";
    freeReplyObject(cmd("SCRIPT FLUSH"));
    struct queue_msg **m;
    const char *perr;
    size_t n = take(0, 10, 1, &m, &perr);
    CHECK_INT(n, 0);
    CHECK_STR(perr, "NOSCRIPT");
    /* The CLI reloads by itself and resends. */
    const char *rc[] = {"a@ns.example"};
    CHECK_INT(queue_enqueue(&T.q, "", rc, 1, (const uint8_t *)"x", 1, err, sizeof(err)), 1);
    n = take(part("ns.example"), 10, 1, &m, &perr);
    CHECK_INT(n, 1);
    free_msgs(m, n);
    freeReplyObject(cmd("SCRIPT FLUSH"));
    CHECK_INT(queue_generate(&T.q, 600, (const char *const[]){"ns.example"}, 1, 100,
                             err, sizeof(err)), 600);
    CHECK_INT(queue_reload_scripts(&T.q, err, sizeof(err)), 1);

    /* By hand: the HSETNX runs, the script does not. The hash holds only
     * the body, in no list; the same enqueue resent after reloading makes
     * the entry with that body. */
    flush();
    freeReplyObject(cmd("SCRIPT FLUSH"));
    struct buf b;
    buf_init(&b, 0);
    int p = part("ns.example");
    char k[128], v[64], text[128];
    int wrote = -1;
    key(k, sizeof(k), p, "m:nsid");
    CHECK_INT(queue_cmd_enqueue(&b, &T.q.qc, &T.q.scripts, "nsid", "", rc, 1, "ns.example",
                                (const uint8_t *)"body", 4, 7), 1);
    struct buf again;
    buf_init(&again, 0);
    buf_append(&again, buf_peek(&b), buf_used(&b));
    CHECK_INT(run_enqueue(&b, &wrote, &perr, text, sizeof(text)), 0);
    CHECK_STR(perr, "NOSCRIPT");
    CHECK_INT(wrote, 1);
    CHECK_INT(cmd_int("HLEN %s", k), 1);
    CHECK_INT(queue_reload_scripts(&T.q, err, sizeof(err)), 1);
    buf_append(&b, buf_peek(&again), buf_used(&again));
    CHECK_INT(run_enqueue(&b, &wrote, &perr, text, sizeof(text)), 1);
    CHECK_INT(wrote, 0);
    CHECK_STR(hget(v, sizeof(v), k, "data"), "body");
    CHECK_STR(hget(v, sizeof(v), k, "created"), "7");
    n = take(p, 10, 8, &m, &perr);
    CHECK_INT(n, 1);
    if (n == 1)
        CHECK(m[0]->bad == NULL && m[0]->data_len == 4 && memcmp(m[0]->data, "body", 4) == 0);
    free_msgs(m, n);

    /* Given up instead: the undo removes the lone body, and only it. */
    freeReplyObject(cmd("SCRIPT FLUSH"));
    long long keys = cmd_int("DBSIZE");
    key(k, sizeof(k), p, "m:gone");
    CHECK_INT(queue_cmd_enqueue(&b, &T.q.qc, &T.q.scripts, "gone", "", rc, 1, "ns.example",
                                (const uint8_t *)"body", 4, 7), 1);
    CHECK_INT(run_enqueue(&b, &wrote, &perr, text, sizeof(text)), 0);
    CHECK_INT(wrote, 1);
    CHECK_INT(queue_cmd_enqueue_undo(&b, &T.q.qc, p, "gone"), 1);
    redisReply *r = run_buf(&b);
    CHECK(r && r->type == REDIS_REPLY_INTEGER && r->integer == 1);
    freeReplyObject(r);
    CHECK_INT(cmd_int("EXISTS %s", k), 0);
    CHECK_INT(cmd_int("DBSIZE"), keys);
    buf_free(&b);
    buf_free(&again);
    CHECK_INT(queue_reload_scripts(&T.q, err, sizeof(err)), 1);
}

static void test_open_errors(void)
{
    struct queue_conn q2;
    struct queue_config qc;
    char err[256] = "";
    queue_config_defaults(&qc);
    char addr[200];
    snprintf(addr, sizeof(addr), "unix:%s/nope.sock", T.dir);
    CHECK_INT(queue_open(&q2, &qc, addr, err, sizeof(err)), 0);
    CHECK(strstr(err, "connect") != NULL);
    CHECK(q2.rc == NULL);
    CHECK_INT(queue_open(&q2, &qc, "host:notaport", err, sizeof(err)), 0);
    qc.partitions = 0;
    snprintf(addr, sizeof(addr), "unix:%s", T.sock);
    CHECK_INT(queue_open(&q2, &qc, addr, err, sizeof(err)), 0);
    queue_close(&q2);
}

int main(void)
{
    if (!have_redis_server()) {
        printf("PASS queue_redis (skipped: no redis-server)\n");
        return 0;
    }
    snprintf(T.dir, sizeof(T.dir), "/tmp/tern-queue-XXXXXX");
    if (mkdtemp(T.dir) == NULL) {
        printf("FAIL queue_redis: mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    snprintf(T.sock, sizeof(T.sock), "%s/redis.sock", T.dir);
    pid_t pid = start_redis();
    int rc = 1;
    if (pid < 0) {
        printf("FAIL queue_redis: fork: %s\n", strerror(errno));
        goto out;
    }
    struct queue_config qc;
    queue_config_defaults(&qc);
    char addr[200], err[256] = "";
    snprintf(addr, sizeof(addr), "unix:%s", T.sock);
    int up = 0;
    for (int i = 0; i < 200 && !up; i++) {   /* up to ~10 s to start */
        up = queue_open(&T.q, &qc, addr, err, sizeof(err));
        if (!up) {
            if (waitpid(pid, NULL, WNOHANG) == pid) {
                pid = -1;
                break;
            }
            struct timespec ts = {0, 50 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    if (!up) {
        printf("FAIL queue_redis: redis did not start: %s\n", err);
        goto out;
    }
    RUN(test_enqueue_multi_domain);
    RUN(test_enqueue_rejects);
    RUN(test_enqueue_script_refuses_duplicate);
    RUN(test_generate);
    RUN(test_generate_from);
    RUN(test_delete_leaves_ready);
    RUN(test_take_ack);
    RUN(test_take_ready_left);
    RUN(test_lease_expiry_and_schedule);
    RUN(test_noscript);
    RUN(test_open_errors);
    queue_close(&T.q);
    rc = check_finish();
out:
    if (pid > 0) {
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
    }
    char path[200];
    snprintf(path, sizeof(path), "%s/redis.log", T.dir);
    unlink(path);
    unlink(T.sock);
    rmdir(T.dir);
    return rc;
}
