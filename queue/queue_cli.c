/*
 * queue_cli.c - blocking queue calls for the CLI (tern inject, stats):
 * connect, load scripts, enqueue, generate load, read counters.
 *
 * Writes are pipelined: enqueues are built with queue_cmd_enqueue into one
 * buffer, handed to hiredis with redisAppendFormattedCommand in windows
 * (WINDOW_ENTRIES enqueues or WINDOW_BYTES bytes, whichever first), and
 * their QUEUE_ENQUEUE_CMDS replies each read back in order. A window whose
 * enqueues come back NOSCRIPT (Redis restarted, SCRIPT FLUSH) reloads the
 * scripts and resends just those enqueues once: NOSCRIPT means the script
 * did not run, a script's SHA depends only on its text, so the bytes are
 * still valid, and the resent HSETNX finds the same body in place. An
 * enqueue that fails for good has the body its HSETNX stored removed
 * again (queue_cmd_enqueue_undo), so nothing is left half-stored.
 */
#include "queue/queue.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#define WINDOW_ENTRIES   512
#define WINDOW_BYTES     (8u * 1024 * 1024)
#define CONNECT_TIMEOUT_S 10
#define HOST_MAX         256
#define GEN_FROM         "generator@tern.test"
#define GEN_LINE_LEN     76
#define GEN_HEADER_GUESS 240   /* typical header bytes, for sizing the body */

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* --- connection --- */

static int load_one(redisContext *rc, const char *src, char sha[41],
                    char *err, size_t errlen)
{
    const char *argv[3] = {"SCRIPT", "LOAD", src};
    size_t lens[3] = {6, 4, strlen(src)};
    redisReply *r = redisCommandArgv(rc, 3, argv, lens);
    const char *why = NULL;
    int ok = r != NULL && queue_parse_script_load(r, sha, &why);
    if (!ok)
        seterr(err, errlen, "SCRIPT LOAD: %s%s%s",
               r == NULL ? rc->errstr : why,
               r && r->type == REDIS_REPLY_ERROR ? ": " : "",
               r && r->type == REDIS_REPLY_ERROR ? r->str : "");
    freeReplyObject(r);
    return ok;
}

int queue_reload_scripts(struct queue_conn *q, char *err, size_t errlen)
{
    return load_one(q->rc, queue_script_enqueue_src(), q->scripts.enqueue, err, errlen) &&
           load_one(q->rc, queue_script_take_src(), q->scripts.take, err, errlen) &&
           load_one(q->rc, queue_script_ack_src(), q->scripts.ack, err, errlen) &&
           load_one(q->rc, queue_script_report_src(), q->scripts.report, err, errlen);
}

/* Split "host:port", "[v6]:port", "host" or a bare IPv6 address. */
static int parse_host_port(const char *a, char host[HOST_MAX], int *port)
{
    const char *colon;
    size_t hl;
    *port = 6379;
    if (a[0] == '[') {
        const char *close = strchr(a, ']');
        if (close == NULL)
            return 0;
        hl = (size_t)(close - a - 1);
        if (hl == 0 || hl >= HOST_MAX)
            return 0;
        memcpy(host, a + 1, hl);
        host[hl] = '\0';
        colon = close[1] == ':' ? close + 1 : NULL;
        if (colon == NULL && close[1] != '\0')
            return 0;
    } else {
        colon = strrchr(a, ':');
        if (colon != NULL && strchr(a, ':') != colon)
            colon = NULL;   /* several colons: a bare IPv6 address */
        hl = colon ? (size_t)(colon - a) : strlen(a);
        if (hl == 0 || hl >= HOST_MAX)
            return 0;
        memcpy(host, a, hl);
        host[hl] = '\0';
    }
    if (colon != NULL) {
        char *end;
        long p = strtol(colon + 1, &end, 10);
        if (colon[1] == '\0' || *end != '\0' || p < 1 || p > 65535)
            return 0;
        *port = (int)p;
    }
    return 1;
}

int queue_open(struct queue_conn *q, const struct queue_config *qc,
               const char *redis_addr, char *err, size_t errlen)
{
    const char *why;
    memset(q, 0, sizeof(*q));
    if (!queue_config_check(qc, &why)) {
        seterr(err, errlen, "queue config: %s", why);
        return 0;
    }
    q->qc = *qc;
    struct timeval tv = {CONNECT_TIMEOUT_S, 0};
    if (strncmp(redis_addr, "unix:", 5) == 0) {
        if (redis_addr[5] == '\0') {
            seterr(err, errlen, "redis address %s: empty socket path", redis_addr);
            return 0;
        }
        q->rc = redisConnectUnixWithTimeout(redis_addr + 5, tv);
    } else {
        char host[HOST_MAX];
        int port;
        if (!parse_host_port(redis_addr, host, &port)) {
            seterr(err, errlen, "redis address %s: want host:port or unix:/path",
                   redis_addr);
            return 0;
        }
        q->rc = redisConnectWithTimeout(host, port, tv);
    }
    if (q->rc == NULL || q->rc->err) {
        seterr(err, errlen, "cannot connect to Redis at %s: %s", redis_addr,
               q->rc ? q->rc->errstr : "out of memory");
        queue_close(q);
        return 0;
    }
    redisSetTimeout(q->rc, tv);
    if (!queue_reload_scripts(q, err, errlen)) {
        queue_close(q);
        return 0;
    }
    return 1;
}

void queue_close(struct queue_conn *q)
{
    if (q->rc != NULL)
        redisFree(q->rc);
    q->rc = NULL;
}

/* --- pipelined windows --- */

struct window {
    struct buf cmds;          /* the enqueues, back to back */
    size_t offs[WINDOW_ENTRIES + 1];
    char ids[WINDOW_ENTRIES][QUEUE_ID_MAX];
    int parts[WINDOW_ENTRIES];             /* their partitions */
    int wrote[WINDOW_ENTRIES];             /* its HSETNX stored the body */
    size_t n;
};

static void window_reset(struct window *w)
{
    buf_reset(&w->cmds);
    w->n = 0;
    w->offs[0] = 0;
}

/* Call after queue_cmd_enqueue appended enqueue n (id, domain) successfully. */
static void window_commit(struct window *w, const struct queue_config *qc, const char *id,
                          const char *domain)
{
    memcpy(w->ids[w->n], id, strlen(id) + 1);
    w->parts[w->n] = queue_partition_of(qc, domain, strlen(domain));
    w->wrote[w->n] = 0;
    w->n++;
    w->offs[w->n] = buf_used(&w->cmds);
}

static int window_full(const struct window *w)
{
    return w->n >= WINDOW_ENTRIES || buf_used(&w->cmds) >= WINDOW_BYTES;
}

/* Read the QUEUE_ENQUEUE_CMDS replies of one enqueue into r[]. 0 on a
 * connection error (r[] then holds nothing to free). */
static int read_enqueue(struct queue_conn *q, redisReply **r, char *err, size_t errlen)
{
    for (size_t i = 0; i < QUEUE_ENQUEUE_CMDS; i++) {
        void *rv = NULL;
        if (redisGetReply(q->rc, &rv) != REDIS_OK) {
            seterr(err, errlen, "redis: %s", q->rc->errstr);
            for (size_t j = 0; j < i; j++)
                freeReplyObject(r[j]);
            return 0;
        }
        r[i] = rv;
    }
    return 1;
}

/* Send the enqueues whose indexes are in idx[0..k) and read their replies.
 * Sets retry[] to the NOSCRIPT ones and gone[] to those refused otherwise.
 * Returns the count that succeeded, or -1 on a connection error. The first
 * refusal is copied to err. */
static long send_some(struct queue_conn *q, struct window *w,
                      const size_t *idx, size_t k, size_t *retry, size_t *nretry,
                      size_t *gone, size_t *ngone, long *failed, char *err, size_t errlen)
{
    const char *base = (const char *)buf_peek(&w->cmds);
    for (size_t i = 0; i < k; i++) {
        size_t c = idx[i];
        if (redisAppendFormattedCommand(q->rc, base + w->offs[c],
                                        w->offs[c + 1] - w->offs[c]) != REDIS_OK) {
            seterr(err, errlen, "redis: %s", q->rc->errstr);
            return -1;
        }
    }
    long ok = 0;
    *nretry = 0;
    for (size_t i = 0; i < k; i++) {
        redisReply *r[QUEUE_ENQUEUE_CMDS];
        if (!read_enqueue(q, r, err, errlen))
            return -1;
        const char *why, *text;
        int wrote;
        if (queue_parse_enqueue((const redisReply *const *)r, &wrote, &why, &text)) {
            ok++;
        } else if (strcmp(why, "NOSCRIPT") == 0) {
            w->wrote[idx[i]] |= wrote;
            retry[(*nretry)++] = idx[i];
        } else {
            w->wrote[idx[i]] |= wrote;
            gone[(*ngone)++] = idx[i];
            if (*failed == 0)
                seterr(err, errlen, "enqueue: %s%s%s", why, text[0] ? ": " : "", text);
            (*failed)++;
        }
        for (size_t j = 0; j < QUEUE_ENQUEUE_CMDS; j++)
            freeReplyObject(r[j]);
    }
    return ok;
}

/* Remove the bodies stored by the enqueues in gone[0..k) that made no
 * entry. Returns 0 on a connection error. The HDEL replies are read but
 * not checked: one Redis refused leaves a lone body that nothing refers
 * to, and the enqueue's own error is the one to report. */
static int undo_some(struct queue_conn *q, const struct window *w, const size_t *gone,
                     size_t k, char *err, size_t errlen)
{
    struct buf b;
    buf_init(&b, 0);
    size_t n = 0;
    for (size_t i = 0; i < k; i++)
        if (w->wrote[gone[i]] &&
            queue_cmd_enqueue_undo(&b, &q->qc, w->parts[gone[i]], w->ids[gone[i]]))
            n++;
    int ok = !b.err;
    if (ok && n > 0 &&
        redisAppendFormattedCommand(q->rc, (const char *)buf_peek(&b), buf_used(&b)) != REDIS_OK)
        ok = 0;
    for (size_t i = 0; ok && i < n; i++) {
        void *rv = NULL;
        ok = redisGetReply(q->rc, &rv) == REDIS_OK;
        freeReplyObject(rv);
    }
    if (!ok)
        seterr(err, errlen, "redis: %s", b.err ? "out of memory" : q->rc->errstr);
    buf_free(&b);
    return ok;
}

/* Flush the window: returns the number of enqueues that succeeded, -1 on
 * a connection error; *failed counts enqueues Redis refused. */
static long window_flush(struct queue_conn *q, struct window *w, long *failed,
                        char *err, size_t errlen)
{
    size_t idx[WINDOW_ENTRIES], retry[WINDOW_ENTRIES], gone[WINDOW_ENTRIES], nretry, ngone = 0;
    if (w->cmds.err) {
        seterr(err, errlen, "out of memory building commands");
        return -1;
    }
    for (size_t i = 0; i < w->n; i++)
        idx[i] = i;
    long ok = send_some(q, w, idx, w->n, retry, &nretry, gone, &ngone, failed, err, errlen);
    if (ok >= 0 && nretry > 0) {
        if (!queue_reload_scripts(q, err, errlen))
            return -1;
        memcpy(idx, retry, nretry * sizeof(idx[0]));
        long ok2 = send_some(q, w, idx, nretry, retry, &nretry, gone, &ngone, failed, err, errlen);
        if (ok2 < 0)
            return -1;
        ok += ok2;
        if (nretry > 0) {
            if (*failed == 0)
                seterr(err, errlen, "enqueue: NOSCRIPT after reloading scripts");
            *failed += (long)nretry;
            memcpy(gone + ngone, retry, nretry * sizeof(gone[0]));
            ngone += nretry;
        }
    }
    if (ok >= 0 && ngone > 0 && !undo_some(q, w, gone, ngone, err, errlen))
        ok = -1;
    window_reset(w);
    return ok;
}

/* --- enqueue --- */

struct rcpt_copy {
    char a[QUEUE_ADDR_MAX + 1];   /* bare address, domain lower-cased */
    const char *domain;           /* into a */
    int group;                    /* -1 until grouped */
};

int queue_enqueue(struct queue_conn *q, const char *from,
                  const char *const *rcpts, size_t nrcpts,
                  const uint8_t *data, size_t len, char *err, size_t errlen)
{
    const char *why, *bare;
    size_t blen;
    char bfrom[QUEUE_ADDR_MAX + 1];

    /* Every check before anything is written. */
    if (from == NULL || !queue_addr_bare(from, strlen(from), 0, &bare, &blen, &why)) {
        seterr(err, errlen, "sender %s: %s", from ? from : "(null)",
               from ? why : "missing");
        return -1;
    }
    memcpy(bfrom, bare, blen);
    bfrom[blen] = '\0';
    if (nrcpts < 1 || nrcpts > QUEUE_RCPTS_MAX) {
        seterr(err, errlen, "need 1..%d recipients, got %zu", QUEUE_RCPTS_MAX, nrcpts);
        return -1;
    }
    if ((int64_t)len > q->qc.max_message_size) {
        seterr(err, errlen, "message of %zu bytes exceeds the limit of %lld",
               len, (long long)q->qc.max_message_size);
        return -1;
    }
    struct rcpt_copy *rc = calloc(nrcpts, sizeof(*rc));
    const char **group = calloc(nrcpts, sizeof(*group));
    if (rc == NULL || group == NULL) {
        free(rc);
        free(group);
        seterr(err, errlen, "out of memory");
        return -1;
    }
    size_t nr = 0;
    int ret = -1;
    for (size_t i = 0; i < nrcpts; i++) {
        if (rcpts[i] == NULL ||
            !queue_addr_bare(rcpts[i], strlen(rcpts[i]), 1, &bare, &blen, &why)) {
            seterr(err, errlen, "recipient %s: %s", rcpts[i] ? rcpts[i] : "(null)",
                   rcpts[i] ? why : "missing");
            goto out;
        }
        struct rcpt_copy *c = &rc[nr];
        memcpy(c->a, bare, blen);
        c->a[blen] = '\0';
        char *at = strrchr(c->a, '@');
        for (char *p = at + 1; *p; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p + 32);
        c->domain = at + 1;
        c->group = -1;
        /* Drop exact duplicates: each would be delivered twice. */
        int dup = 0;
        for (size_t j = 0; j < nr && !dup; j++)
            dup = strcmp(rc[j].a, c->a) == 0;
        if (!dup)
            nr++;
    }

    struct window *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        seterr(err, errlen, "out of memory");
        goto out;
    }
    buf_init(&w->cmds, 0);
    window_reset(w);
    int64_t now = now_ms();
    size_t ngroups = 0;
    for (size_t i = 0; i < nr; i++) {
        if (rc[i].group >= 0)
            continue;
        size_t ng = 0;
        for (size_t j = i; j < nr; j++) {
            if (rc[j].group < 0 && strcmp(rc[j].domain, rc[i].domain) == 0) {
                rc[j].group = (int)ngroups;
                group[ng++] = rc[j].a;
            }
        }
        char id[QUEUE_ID_MAX];
        queue_new_id(id);
        if (!queue_cmd_enqueue(&w->cmds, &q->qc, &q->scripts, id, bfrom, group, ng,
                               rc[i].domain, data, len, now)) {
            seterr(err, errlen, "building enqueue for %s failed", rc[i].domain);
            goto out_w;
        }
        window_commit(w, &q->qc, id, rc[i].domain);
        ngroups++;
        /* A message has at most QUEUE_RCPTS_MAX domains; a window holds
         * WINDOW_ENTRIES, so flush when full (atomicity is per entry anyway). */
        if (w->n >= WINDOW_ENTRIES) {
            long failed = 0;
            long ok = window_flush(q, w, &failed, err, errlen);
            if (ok < 0 || failed > 0)
                goto out_w;
        }
    }
    long failed = 0;
    long ok = window_flush(q, w, &failed, err, errlen);
    if (ok >= 0 && failed == 0)
        ret = (int)ngroups;
out_w:
    buf_free(&w->cmds);
    free(w);
out:
    free(rc);
    free(group);
    return ret;
}

/* --- generate --- */

/* Body of printable lines, GEN_LINE_LEN characters + CRLF each, about
 * `want` bytes (at least one line). Lines differ so compression and
 * dedup in the path do not flatter the numbers. */
static void gen_body(struct buf *b, size_t want)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    size_t nlines = want / (GEN_LINE_LEN + 2);
    if (nlines == 0)
        nlines = 1;
    for (size_t l = 0; l < nlines; l++) {
        uint8_t *d = buf_reserve(b, GEN_LINE_LEN + 2);
        if (d == NULL)
            return;
        for (size_t i = 0; i < GEN_LINE_LEN; i++)
            d[i] = (uint8_t)alphabet[(l + i) % (sizeof(alphabet) - 1)];
        d[GEN_LINE_LEN] = '\r';
        d[GEN_LINE_LEN + 1] = '\n';
        buf_commit(b, GEN_LINE_LEN + 2);
    }
}

static void gen_headers(struct buf *m, const char *id, const char *from, const char *rcpt,
                        long i, const char *date)
{
    char h[1024 + 2 * QUEUE_ADDR_MAX];
    int k = snprintf(h, sizeof(h),
                     "Date: %s\r\n"
                     "From: <%s>\r\n"
                     "To: <%s>\r\n"
                     "Subject: tern load test message %ld\r\n"
                     "Message-ID: <%s@tern.test>\r\n"
                     "\r\n",
                     date, from, rcpt, i, id);
    if (k < 0 || (size_t)k >= sizeof(h)) {
        m->err = 1;
        return;
    }
    buf_append(m, h, (size_t)k);
}

long queue_generate(struct queue_conn *q, long n, const char *const *domains,
                    size_t ndomains, size_t size, char *err, size_t errlen)
{
    return queue_generate_from(q, NULL, n, domains, ndomains, size, err, errlen);
}

long queue_generate_from(struct queue_conn *q, const char *from, long n,
                         const char *const *domains, size_t ndomains, size_t size,
                         char *err, size_t errlen)
{
    const char *why, *bare;
    size_t blen;
    char rcpt[QUEUE_ADDR_MAX + 1], bfrom[QUEUE_ADDR_MAX + 1];
    if (from == NULL)
        from = GEN_FROM;
    if (!queue_addr_bare(from, strlen(from), 0, &bare, &blen, &why)) {
        seterr(err, errlen, "sender %s: %s", from, why);
        return -1;
    }
    memcpy(bfrom, bare, blen);
    bfrom[blen] = '\0';
    /* The null sender still needs a From: header; the generator's stands in. */
    const char *hfrom = blen ? bfrom : GEN_FROM;
    if (n < 0) {
        seterr(err, errlen, "negative message count");
        return -1;
    }
    if (n > 0 && (domains == NULL || ndomains == 0)) {
        seterr(err, errlen, "no domains");
        return -1;
    }
    if ((int64_t)size > q->qc.max_message_size) {
        seterr(err, errlen, "size %zu exceeds the limit of %lld", size,
               (long long)q->qc.max_message_size);
        return -1;
    }
    for (size_t d = 0; d < ndomains; d++) {
        int k = snprintf(rcpt, sizeof(rcpt), "user%ld@%s", n, domains[d]);
        if (k < 0 || (size_t)k >= sizeof(rcpt) ||
            !queue_addr_check(rcpt, (size_t)k, 1, &why) ||
            strchr(domains[d], '@') != NULL || domains[d][0] == '<') {
            seterr(err, errlen, "domain %s: %s", domains[d],
                   k > 0 && (size_t)k < sizeof(rcpt) ? why : "too long");
            return -1;
        }
    }
    struct buf body, msg;
    buf_init(&body, 0);
    buf_init(&msg, 0);
    gen_body(&body, size > GEN_HEADER_GUESS ? size - GEN_HEADER_GUESS : 0);
    struct window *w = calloc(1, sizeof(*w));
    if (w == NULL || body.err) {
        seterr(err, errlen, "out of memory");
        free(w);
        buf_free(&body);
        return -1;
    }
    buf_init(&w->cmds, 0);
    window_reset(w);

    char date[64];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);

    long done = 0, failed = 0;
    int64_t now = now_ms();
    for (long i = 0; i < n; i++) {
        const char *dom = domains[(size_t)i % ndomains];
        char id[QUEUE_ID_MAX];
        queue_new_id(id);
        snprintf(rcpt, sizeof(rcpt), "user%ld@%s", i, dom);
        buf_reset(&msg);
        gen_headers(&msg, id, hfrom, rcpt, i, date);
        buf_append(&msg, buf_peek(&body), buf_used(&body));
        const char *rp = rcpt;
        if (msg.err ||
            !queue_cmd_enqueue(&w->cmds, &q->qc, &q->scripts, id, bfrom, &rp, 1,
                               dom, buf_peek(&msg), buf_used(&msg), now)) {
            seterr(err, errlen, "building message %ld failed", i);
            done = -1;
            break;
        }
        window_commit(w, &q->qc, id, dom);
        if (window_full(w)) {
            long ok = window_flush(q, w, &failed, err, errlen);
            if (ok < 0) {
                done = -1;
                break;
            }
            done += ok;
        }
    }
    if (done >= 0) {
        long ok = window_flush(q, w, &failed, err, errlen);
        done = ok < 0 ? -1 : done + ok;
    }
    if (done >= 0 && failed > 0)
        done = -1;   /* err holds the first refusal */
    buf_free(&w->cmds);
    free(w);
    buf_free(&body);
    buf_free(&msg);
    return done;
}

/* --- stats --- */

static int add_counter(struct queue_stats *st, const redisReply *name,
                       const redisReply *val)
{
    static const struct {
        const char *name;
        size_t off;
    } fields[] = {
        {"enqueued", offsetof(struct queue_stats, enqueued)},
        {"delivered", offsetof(struct queue_stats, delivered)},
        {"deferred", offsetof(struct queue_stats, deferred)},
        {"failed", offsetof(struct queue_stats, failed)},
        {"returned", offsetof(struct queue_stats, returned)},
        {"expired", offsetof(struct queue_stats, expired)},
        {"deleted", offsetof(struct queue_stats, deleted)},
    };
    if (name->type != REDIS_REPLY_STRING || val->type != REDIS_REPLY_STRING)
        return 0;
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        if (name->len == strlen(fields[i].name) &&
            memcmp(name->str, fields[i].name, name->len) == 0) {
            char *end;
            long long v = strtoll(val->str, &end, 10);
            if (end != val->str + val->len)
                return 0;
            *(long long *)((char *)st + fields[i].off) += v;
        }
    }
    return 1;   /* unknown counters are skipped: other tools may add some */
}

int queue_stats(struct queue_conn *q, struct queue_stats *st, char *err, size_t errlen)
{
    static const char *const cmds[4] = {"LLEN", "ZCARD", "ZCARD", "HGETALL"};
    static const char *const names[4] = {"ready", "leased", "sched", "stats"};
    memset(st, 0, sizeof(*st));
    for (int p = 0; p < q->qc.partitions; p++) {
        for (int c = 0; c < 4; c++) {
            char key[QUEUE_PREFIX_MAX + 32];
            size_t kl = queue_key(key, sizeof(key), &q->qc, p, names[c]);
            const char *argv[2] = {cmds[c], key};
            size_t lens[2] = {strlen(cmds[c]), kl};
            if (redisAppendCommandArgv(q->rc, 2, argv, lens) != REDIS_OK) {
                seterr(err, errlen, "redis: %s", q->rc->errstr);
                return 0;
            }
        }
    }
    /* Read every reply even after a bad one so the connection stays in
     * step for the next call. */
    int ok = 1;
    for (int p = 0; p < q->qc.partitions; p++) {
        for (int c = 0; c < 4; c++) {
            void *rv = NULL;
            if (redisGetReply(q->rc, &rv) != REDIS_OK) {
                seterr(err, errlen, "redis: %s", q->rc->errstr);
                return 0;
            }
            redisReply *r = rv;
            if (c < 3) {
                if (r->type != REDIS_REPLY_INTEGER) {
                    ok = 0;
                } else if (c == 0) {
                    st->ready += r->integer;
                } else if (c == 1) {
                    st->leased += r->integer;
                } else {
                    st->scheduled += r->integer;
                }
            } else if (r->type != REDIS_REPLY_ARRAY || r->elements % 2 != 0) {
                ok = 0;
            } else {
                for (size_t i = 0; i < r->elements; i += 2)
                    if (!add_counter(st, r->element[i], r->element[i + 1]))
                        ok = 0;
            }
            freeReplyObject(r);
        }
    }
    if (!ok && err && errlen)
        seterr(err, errlen, "stats: unexpected reply (wrong key type?)");
    return ok;
}
