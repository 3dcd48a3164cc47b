/*
 * queue_cmd.c - sans-I/O side of the queue: RESP command builders and
 * reply parsers. The engine writes what the builders append to its Redis
 * socket and feeds the bytes that come back to a hiredis redisReader.
 *
 * Commands are written straight into the caller's struct buf as RESP
 * multi-bulk ("*<argc>\r\n" then "$<len>\r\n<bytes>\r\n" per argument),
 * which is binary-safe and avoids the extra malloc+copy of
 * redisFormatCommandArgv for large message bodies. Arguments are checked
 * before the first byte is written, so an invalid call appends nothing.
 */
#include "queue/queue.h"

#include <stdlib.h>
#include <string.h>

#include "engine/text.h"

#define KEY_MAX       (QUEUE_PREFIX_MAX + 16 + QUEUE_ID_MAX)

static void resp_begin(struct buf *out, size_t argc)
{
    buf_append(out, "*", 1);
    buf_append_u64(out, argc);
    buf_append(out, "\r\n", 2);
}

/* One reservation per argument: an ack writes ~40 of them per message. */
static void resp_arg(struct buf *out, const void *p, size_t n)
{
    char len[TEXT_U64_MAX];
    size_t ln = text_u64(len, n);
    if (n > SIZE_MAX - ln - 5) {
        out->err = 1;
        return;
    }
    uint8_t *d = buf_reserve(out, 1 + ln + 2 + n + 2);
    if (d == NULL)
        return;   /* err set */
    d[0] = '$';
    memcpy(d + 1, len, ln);
    memcpy(d + 1 + ln, "\r\n", 2);
    if (n)
        memcpy(d + 3 + ln, p, n);
    memcpy(d + 3 + ln + n, "\r\n", 2);
    buf_commit(out, 1 + ln + 2 + n + 2);
}

static void resp_str(struct buf *out, const char *s)
{
    resp_arg(out, s, strlen(s));
}

static void resp_i64(struct buf *out, int64_t v)
{
    char tmp[1 + TEXT_U64_MAX] = "-";
    size_t n = text_u64(tmp + 1, v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v);
    resp_arg(out, v < 0 ? tmp : tmp + 1, v < 0 ? n + 1 : n);
}

/* Append the key "<pfx>:{p}:<name>". Key names are bounded by
 * construction (prefix < 32, id < 40), so overflow means a bad config;
 * report it through the sticky error bit. */
static void resp_key(struct buf *out, const struct queue_config *qc, int p,
                     const char *name)
{
    char key[KEY_MAX];
    size_t n = queue_key(key, sizeof(key), qc, p, name);
    if (n == 0) {
        out->err = 1;
        return;
    }
    resp_arg(out, key, n);
}

/* Append the message key "<pfx>:{p}:m:<id>" (id < QUEUE_ID_MAX, checked
 * by the callers). */
static void resp_msg_key(struct buf *out, const struct queue_config *qc, int p, const char *id)
{
    char name[2 + QUEUE_ID_MAX];
    size_t n = strnlen(id, QUEUE_ID_MAX);
    if (n >= QUEUE_ID_MAX) {
        out->err = 1;
        return;
    }
    memcpy(name, "m:", 2);
    memcpy(name + 2, id, n + 1);
    resp_key(out, qc, p, name);
}

static int partition_ok(const struct queue_config *qc, int p)
{
    return p >= 0 && p < qc->partitions;
}

const char *queue_outcome_kind_name(enum queue_outcome_kind k)
{
    switch (k) {
    case QUEUE_DELIVERED: return "delivered";
    case QUEUE_DEFERRED: return "deferred";
    case QUEUE_FAILED: return "failed";
    case QUEUE_EXPIRED: return "expired";
    case QUEUE_RETURNED: return "returned";
    case QUEUE_BAD: return "bad";
    }
    return NULL;
}

int queue_cmd_script_load(struct buf *out, const char *src)
{
    if (out->err || src == NULL)
        return 0;
    resp_begin(out, 3);
    resp_str(out, "SCRIPT");
    resp_str(out, "LOAD");
    resp_str(out, src);
    return !out->err;
}

int queue_cmd_take(struct buf *out, const struct queue_config *qc,
                   const struct queue_scripts *s, int partition, int max,
                   int64_t now_ms, int moves)
{
    if (out->err || !partition_ok(qc, partition) || max < 1 ||
        max > QUEUE_TAKE_MAX || qc->lease_ms <= 0)
        return 0;
    resp_begin(out, 16);
    resp_str(out, "EVALSHA");
    resp_str(out, s->take);
    resp_str(out, "6");
    resp_key(out, qc, partition, "ready");
    resp_key(out, qc, partition, "leased");
    resp_key(out, qc, partition, "sched");
    resp_key(out, qc, partition, "bad");
    resp_key(out, qc, partition, "stats");
    resp_key(out, qc, partition, "events");
    resp_key(out, qc, partition, "m:");
    resp_i64(out, now_ms);
    resp_i64(out, qc->lease_ms);
    resp_i64(out, max);
    resp_i64(out, qc->max_message_size);
    resp_i64(out, qc->events_maxlen);
    resp_str(out, moves ? "1" : "0");
    return !out->err;
}

int queue_cmd_ack(struct buf *out, const struct queue_config *qc,
                  const struct queue_scripts *s, int partition,
                  const struct queue_outcome *o, size_t n, int64_t now_ms)
{
    if (out->err || !partition_ok(qc, partition) || n < 1 || n > QUEUE_ACK_MAX)
        return 0;
    size_t argc = 3 + 6 + 4;
    for (size_t i = 0; i < n; i++) {
        if (o[i].id == NULL || !queue_id_check(o[i].id) ||
            queue_outcome_kind_name(o[i].kind) == NULL ||
            o[i].nfields % 2 != 0 || o[i].raw_nfields % 2 != 0 ||
            o[i].nfields + o[i].raw_nfields > QUEUE_FIELDS_MAX ||
            (o[i].nfields > 0 && o[i].fields == NULL) ||
            (o[i].raw == NULL) != (o[i].raw_len == 0) || (o[i].raw_len == 0) != (o[i].raw_nfields == 0) ||
            o[i].lease_until_ms < 0)
            return 0;
        for (size_t j = 0; j < o[i].nfields; j++)
            if (o[i].fields[j] == NULL)
                return 0;
        argc += 6 + o[i].nfields + o[i].raw_nfields;
    }
    resp_begin(out, argc);
    resp_str(out, "EVALSHA");
    resp_str(out, s->ack);
    resp_str(out, "6");
    resp_key(out, qc, partition, "leased");
    resp_key(out, qc, partition, "sched");
    resp_key(out, qc, partition, "ready");
    resp_key(out, qc, partition, "stats");
    resp_key(out, qc, partition, "events");
    resp_key(out, qc, partition, "bad");
    resp_key(out, qc, partition, "m:");
    resp_i64(out, now_ms);
    resp_i64(out, qc->events_maxlen);
    resp_i64(out, (int64_t)n);
    for (size_t i = 0; i < n; i++) {
        const struct queue_outcome *x = &o[i];
        resp_str(out, x->id);
        resp_str(out, queue_outcome_kind_name(x->kind));
        resp_i64(out, x->lease_until_ms);
        resp_str(out, x->kind == QUEUE_DEFERRED && x->remaining_rcpts
                          ? x->remaining_rcpts : "");
        resp_i64(out, x->kind == QUEUE_DEFERRED ? x->retry_at_ms : 0);
        resp_i64(out, (int64_t)(x->nfields + x->raw_nfields));
        for (size_t j = 0; j < x->nfields; j++)
            resp_str(out, x->fields[j]);
        if (x->raw_len)
            buf_append(out, x->raw, x->raw_len);
    }
    return !out->err;
}

int queue_fields_encode(struct buf *out, const char *const *fields, size_t nfields)
{
    if (nfields % 2 || nfields > QUEUE_FIELDS_MAX || (nfields > 0 && fields == NULL))
        return 0;
    for (size_t j = 0; j < nfields; j++)
        if (fields[j] == NULL)
            return 0;
    for (size_t j = 0; j < nfields; j++)
        resp_str(out, fields[j]);
    return !out->err;
}

int queue_cmd_event(struct buf *out, const struct queue_config *qc, int partition,
                    const char *status, const char *const *fields, size_t nfields)
{
    if (!partition_ok(qc, partition) || nfields % 2 || nfields > QUEUE_FIELDS_MAX)
        return 0;
    resp_begin(out, 8 + nfields);
    resp_str(out, "XADD");
    resp_key(out, qc, partition, "events");
    resp_str(out, "MAXLEN");
    resp_str(out, "~");
    resp_i64(out, qc->events_maxlen);
    resp_str(out, "*");
    resp_str(out, "status");
    resp_str(out, status);
    for (size_t i = 0; i < nfields; i++)
        resp_str(out, fields[i]);
    return !out->err;
}

static int ascii_casecmp_n(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
        if (x >= 'A' && x <= 'Z')
            x = (unsigned char)(x + 32);
        if (y >= 'A' && y <= 'Z')
            y = (unsigned char)(y + 32);
        if (x != y)
            return 1;
    }
    return 0;
}

/* enqueue writes queue_cmd_enqueue's two commands, or with report the
 * one EVALSHA of the report script, which takes the body as its last
 * argument (queue_cmd_enqueue_report). */
static int enqueue(struct buf *out, const struct queue_config *qc,
                   const struct queue_scripts *s, const char *id,
                   const char *from, const char *const *rcpts, size_t nrcpts,
                   const char *domain, const uint8_t *data, size_t len,
                   int64_t now_ms, int report)
{
    const char *why, *bare;
    size_t blen;
    if (out->err || id == NULL || !queue_id_check(id) || from == NULL ||
        domain == NULL || nrcpts < 1 || nrcpts > QUEUE_RCPTS_MAX ||
        (int64_t)len > qc->max_message_size || (len > 0 && data == NULL))
        return 0;
    size_t dlen = strlen(domain);
    if (dlen == 0 || dlen > QUEUE_ADDR_MAX)
        return 0;
    if (!queue_addr_bare(from, strlen(from), 0, &bare, &blen, &why) || bare != from)
        return 0;
    size_t rlen = 0;   /* length of the "\n"-joined recipient list */
    for (size_t i = 0; i < nrcpts; i++) {
        if (rcpts[i] == NULL)
            return 0;
        size_t n = strlen(rcpts[i]);
        if (!queue_addr_bare(rcpts[i], n, 1, &bare, &blen, &why) || bare != rcpts[i])
            return 0;
        const char *d = queue_addr_domain(rcpts[i]);
        if (d == NULL || strlen(d) != dlen || ascii_casecmp_n(d, domain, dlen) != 0)
            return 0;
        rlen += n + (i > 0);
    }
    char ldomain[QUEUE_ADDR_MAX + 1];
    for (size_t i = 0; i < dlen; i++) {
        unsigned char c = (unsigned char)domain[i];
        ldomain[i] = (char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
    }
    ldomain[dlen] = '\0';
    int p = queue_partition_of(qc, ldomain, dlen);
    /* The body goes in by HSETNX, outside the script: a string handed to
     * Lua is interned, which hashes every byte of it. A report pays that
     * to be one script that runs at maxmemory (queue_scripts.c). */
    if (!report) {
        resp_begin(out, 4);
        resp_str(out, "HSETNX");
        resp_msg_key(out, qc, p, id);
        resp_str(out, "data");
        resp_arg(out, data, len);
    }

    int ev = qc->events_queued != 0;
    resp_begin(out, 3 + 3 + 5 + 2 * (size_t)ev + (size_t)(report != 0));
    resp_str(out, "EVALSHA");
    resp_str(out, report ? s->report : s->enqueue);
    resp_str(out, ev ? "4" : "3");
    resp_msg_key(out, qc, p, id);
    resp_key(out, qc, p, "ready");
    resp_key(out, qc, p, "stats");
    if (ev)
        resp_key(out, qc, p, "events");
    resp_str(out, id);
    resp_str(out, from);
    /* The joined recipient list, written in place. */
    buf_append(out, "$", 1);
    buf_append_u64(out, rlen);
    buf_append(out, "\r\n", 2);
    for (size_t i = 0; i < nrcpts; i++) {
        if (i > 0)
            buf_append(out, "\n", 1);
        buf_append_str(out, rcpts[i]);
    }
    buf_append(out, "\r\n", 2);
    resp_arg(out, ldomain, dlen);
    resp_i64(out, now_ms);
    if (ev)
        resp_i64(out, qc->events_maxlen);
    if (report)
        resp_arg(out, data, len);
    return !out->err;
}

int queue_cmd_enqueue(struct buf *out, const struct queue_config *qc,
                      const struct queue_scripts *s, const char *id,
                      const char *from, const char *const *rcpts, size_t nrcpts,
                      const char *domain, const uint8_t *data, size_t len,
                      int64_t now_ms)
{
    return enqueue(out, qc, s, id, from, rcpts, nrcpts, domain, data, len, now_ms, 0);
}

int queue_cmd_enqueue_report(struct buf *out, const struct queue_config *qc,
                             const struct queue_scripts *s, const char *id,
                             const char *from, const char *const *rcpts, size_t nrcpts,
                             const char *domain, const uint8_t *data, size_t len,
                             int64_t now_ms)
{
    return enqueue(out, qc, s, id, from, rcpts, nrcpts, domain, data, len, now_ms, 1);
}

int queue_cmd_enqueue_undo(struct buf *out, const struct queue_config *qc, int partition,
                           const char *id)
{
    if (out->err || !partition_ok(qc, partition) || id == NULL || !queue_id_check(id))
        return 0;
    resp_begin(out, 3);
    resp_str(out, "HDEL");
    resp_msg_key(out, qc, partition, id);
    resp_str(out, "data");
    return !out->err;
}

/* --- reply parsers --- */

static int is_noscript(const redisReply *r)
{
    return r->type == REDIS_REPLY_ERROR && r->str != NULL && r->len >= 8 &&
           memcmp(r->str, "NOSCRIPT", 8) == 0;
}

int queue_reply_exists(const redisReply *r)
{
    return r != NULL && r->type == REDIS_REPLY_ERROR && r->str != NULL && r->len >= 6 &&
           memcmp(r->str, "EXISTS", 6) == 0;
}

static int error_reply(const redisReply *r, const char **err)
{
    *err = is_noscript(r) ? "NOSCRIPT" : "error reply";
    return 0;
}

int queue_parse_simple(const redisReply *r, const char **err)
{
    if (r == NULL) {
        *err = "no reply";
        return 0;
    }
    if (r->type == REDIS_REPLY_ERROR)
        return error_reply(r, err);
    if (r->type == REDIS_REPLY_INTEGER || r->type == REDIS_REPLY_STATUS)
        return 1;
    *err = "unexpected reply type";
    return 0;
}

int queue_parse_enqueue(const redisReply *const *r, int *wrote_body, const char **err,
                        const char **text)
{
    *wrote_body = 0;
    *text = "";
    if (r[0] == NULL || r[1] == NULL) {
        *err = "no reply";
        return 0;
    }
    const redisReply *bad = r[0]->type == REDIS_REPLY_ERROR ? r[0] : r[1];
    if (bad->type == REDIS_REPLY_ERROR && bad->str != NULL)
        *text = bad->str;
    if (r[0]->type == REDIS_REPLY_ERROR) {
        *err = "error reply";
        return 0;
    }
    if (r[0]->type != REDIS_REPLY_INTEGER) {
        *err = "unexpected reply type";
        return 0;
    }
    *wrote_body = r[0]->integer == 1;
    return queue_parse_simple(r[1], err);
}

static int is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

int queue_parse_script_load(const redisReply *r, char sha[41], const char **err)
{
    if (r == NULL) {
        *err = "no reply";
        return 0;
    }
    if (r->type == REDIS_REPLY_ERROR)
        return error_reply(r, err);
    if (r->type != REDIS_REPLY_STRING || r->len != 40) {
        *err = "unexpected reply type";
        return 0;
    }
    for (size_t i = 0; i < 40; i++) {
        if (!is_hex(r->str[i])) {
            *err = "SHA is not hex";
            return 0;
        }
    }
    memcpy(sha, r->str, 40);
    sha[40] = '\0';
    return 1;
}

/* Strict decimal, optional leading '-', at most 18 digits (no overflow). */
static int parse_i64(const char *s, size_t n, int64_t *v)
{
    size_t i = 0;
    int neg = 0;
    if (n > 0 && s[0] == '-') {
        neg = 1;
        i = 1;
    }
    if (i == n || n - i > 18)
        return 0;
    int64_t x = 0;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        x = x * 10 + (s[i] - '0');
    }
    *v = neg ? -x : x;
    return 1;
}

void queue_msg_free(struct queue_msg *m)
{
    if (m == NULL)
        return;
    free(m->data_buf);
    free(m);
}

int queue_cmd_take_data(struct buf *out, const struct queue_config *qc,
                        const struct queue_msg *m)
{
    size_t n = strnlen(m->id, QUEUE_ID_MAX);
    if (out->err || !partition_ok(qc, m->partition) || n == 0 || n >= QUEUE_ID_MAX)
        return 0;
    resp_begin(out, 2 + QUEUE_TAKE_DATA_FIELDS);
    resp_str(out, "HMGET");
    resp_msg_key(out, qc, m->partition, m->id);
    resp_str(out, "from");
    resp_str(out, "rcpts");
    resp_str(out, "domain");
    resp_str(out, "attempts");
    resp_str(out, "created");
    resp_str(out, "warned");
    resp_str(out, "data");
    return !out->err;
}

/* Copy n bytes plus a NUL into the arena at *pos; return the copy. */
static char *arena_put(char **pos, const char *s, size_t n)
{
    char *d = *pos;
    if (n)
        memcpy(d, s, n);
    d[n] = '\0';
    *pos += n + 1;
    return d;
}

/* entry_check: why a taken entry cannot be sent (a static string), or
 * NULL. The sender is "" or a bare address; every recipient is a bare
 * recipient in `domain` (lower-case), as queue_cmd_enqueue writes them. */
static const char *entry_check(const redisReply *from, const redisReply *rcpts,
                               const redisReply *domain, size_t nr)
{
    const char *why, *bare;
    size_t blen;
    if (rcpts->len == 0)
        return "no recipients";
    if (nr > QUEUE_RCPTS_MAX)
        return "too many recipients";
    if (domain->len == 0 || domain->len > QUEUE_ADDR_MAX)
        return "bad domain";
    for (size_t i = 0; i < domain->len; i++)
        if (domain->str[i] >= 'A' && domain->str[i] <= 'Z')
            return "domain not lower-case";
    if (from->len > 0 && (!queue_addr_bare(from->str, from->len, 0, &bare, &blen, &why) ||
                          bare != from->str || blen != from->len))
        return "bad sender address";
    const char *s = rcpts->str, *end = rcpts->str + rcpts->len;
    while (s <= end) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        const char *e = nl ? nl : end;
        size_t n = (size_t)(e - s);
        if (!queue_addr_bare(s, n, 1, &bare, &blen, &why) || bare != s || blen != n)
            return "bad recipient address";
        const char *at = s + n;
        while (at > s && at[-1] != '@')
            at--;
        size_t dl = (size_t)(e - at);
        if (dl != domain->len || ascii_casecmp_n(at, domain->str, dl) != 0)
            return "recipient not in the entry's domain";
        s = e + 1;
    }
    return NULL;
}

const char queue_err_deleted[] = "message deleted since its take";

/* The fields of queue_cmd_take_data's HMGET, in its order. */
enum { TD_FROM, TD_RCPTS, TD_DOMAIN, TD_ATT, TD_CREATED, TD_WARNED, TD_DATA };

/* take_data_check: why the HMGET's fields cannot make a message (a static
 * string), or NULL. *nr is set to the number of recipients. */
static const char *take_data_check(redisReply **f, int64_t *att, int64_t *created, size_t *nr)
{
    static const char *const missing[] = {"missing field from", "missing field rcpts",
                                          "missing field domain"};
    for (int i = TD_FROM; i <= TD_DOMAIN; i++)
        if (f[i]->type != REDIS_REPLY_STRING)
            return missing[i];
    if (f[TD_DATA]->type != REDIS_REPLY_STRING)
        return "missing field data";
    *att = 0;
    *created = 0;
    if ((f[TD_ATT]->type == REDIS_REPLY_STRING &&
         (!parse_i64(f[TD_ATT]->str, f[TD_ATT]->len, att) || *att < 0 || *att > 1000000)) ||
        (f[TD_CREATED]->type == REDIS_REPLY_STRING &&
         !parse_i64(f[TD_CREATED]->str, f[TD_CREATED]->len, created)))
        return "bad number";
    *nr = 1;
    for (size_t i = 0; i < f[TD_RCPTS]->len; i++)
        *nr += f[TD_RCPTS]->str[i] == '\n';
    return entry_check(f[TD_FROM], f[TD_RCPTS], f[TD_DOMAIN], *nr);
}

int queue_take_data(redisReply *r, struct queue_msg **mp, const char **err)
{
    if (r == NULL) {
        *err = "no reply";
        return 0;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        *err = "error reply";
        return 0;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != QUEUE_TAKE_DATA_FIELDS) {
        *err = "take data: reply is not an array of its fields";
        return 0;
    }
    redisReply **f = r->element;
    int present = 0;
    for (int i = 0; i < QUEUE_TAKE_DATA_FIELDS; i++) {
        if (f[i] == NULL || (f[i]->type != REDIS_REPLY_STRING && f[i]->type != REDIS_REPLY_NIL)) {
            *err = "take data: field is neither a string nor nil";
            return 0;
        }
        present += f[i]->type == REDIS_REPLY_STRING;
    }
    if (present == 0) {
        *err = queue_err_deleted;
        return 0;
    }
    struct queue_msg *m = *mp;
    int64_t att = 0, created = 0;
    size_t nr = 0;
    m->bad = take_data_check(f, &att, &created, &nr);
    if (m->bad != NULL)
        return 1;
    /* Grow the message to hold the recipient array and the strings after
     * the struct; the id, partition and lease stay where they are. */
    size_t rl = f[TD_RCPTS]->len;
    size_t bytes = sizeof(struct queue_msg) + nr * sizeof(char *) +
                   f[TD_FROM]->len + 1 + rl + 1 + f[TD_DOMAIN]->len + 1;
    /* A short body may live in the reply object (a pool reader's,
     * engine/resp_pool.h): copied, not taken over. */
    uint8_t *body = NULL;
    size_t dl = f[TD_DATA]->len;
    if (dl < QUEUE_TAKE_OVER_MIN) {
        body = malloc(dl + 1);
        if (body == NULL) {
            *err = "out of memory";
            return 0;
        }
        memcpy(body, f[TD_DATA]->str, dl);
        body[dl] = '\0';
    }
    if (bytes > sizeof(struct queue_msg) + m->room) {
        struct queue_msg *g = realloc(m, bytes);
        if (g == NULL) {
            free(body);
            *err = "out of memory";
            return 0;
        }
        m = g;
        m->room = bytes - sizeof(struct queue_msg);
        *mp = m;
    }
    m->rcpts = (char **)(m + 1);
    char *pos = (char *)(m->rcpts + nr);
    m->from = arena_put(&pos, f[TD_FROM]->str, f[TD_FROM]->len);
    char *rc = arena_put(&pos, f[TD_RCPTS]->str, rl);
    m->domain = arena_put(&pos, f[TD_DOMAIN]->str, f[TD_DOMAIN]->len);
    m->attempts = (int)att;
    m->created_ms = created;
    m->delay_warned = f[TD_WARNED]->type == REDIS_REPLY_STRING && f[TD_WARNED]->len > 0;
    /* Split the recipient copy on '\n' in place. */
    m->nrcpts = 0;
    char *start = rc;
    for (size_t i = 0; i <= rl; i++) {
        if (i == rl || rc[i] == '\n') {
            rc[i] = '\0';
            m->rcpts[m->nrcpts++] = start;
            start = rc + i + 1;
        }
    }
    /* hiredis allocated a long body's str with malloc (len + 1 bytes,
     * NUL-terminated) and frees it only if still set: taken, not copied. */
    free(m->data_buf);
    m->data_buf = body != NULL ? body : (uint8_t *)f[TD_DATA]->str;
    m->data = m->data_buf;
    m->data_len = dl;
    if (body == NULL) {
        f[TD_DATA]->str = NULL;
        f[TD_DATA]->len = 0;
    }
    return 1;
}

/* One message from the take's id and data length: the rest comes with
 * queue_take_data. */
static struct queue_msg *msg_from_reply(redisReply **f, int partition, int64_t lease,
                                        const char **err)
{
    enum { F_ID, F_DATA_LEN };
    if (f[F_ID] == NULL || f[F_ID]->type != REDIS_REPLY_STRING) {
        *err = "take: id is not a string";
        return NULL;
    }
    if (f[F_ID]->len == 0 || f[F_ID]->len >= QUEUE_ID_MAX ||
        memchr(f[F_ID]->str, '\0', f[F_ID]->len) != NULL) {
        *err = "take: bad id";
        return NULL;
    }
    if (f[F_DATA_LEN] == NULL || f[F_DATA_LEN]->type != REDIS_REPLY_INTEGER ||
        f[F_DATA_LEN]->integer < 0) {
        *err = "take: bad data length";
        return NULL;
    }
    /* Room for the strings queue_take_data adds, so that a message with
     * a short envelope is not reallocated (a realloc per message was ~2%
     * of the engine's CPU in the bulk benchmark). */
    struct queue_msg *m = calloc(1, sizeof(*m) + QUEUE_MSG_ROOM);
    if (m == NULL) {
        *err = "out of memory";
        return NULL;
    }
    m->room = QUEUE_MSG_ROOM;
    memcpy(m->id, f[F_ID]->str, f[F_ID]->len);
    m->id[f[F_ID]->len] = '\0';
    m->partition = partition;
    m->lease_until_ms = lease;
    m->data_len = (size_t)f[F_DATA_LEN]->integer;
    return m;
}

int queue_parse_take(const redisReply *r, int partition,
                     struct queue_msg ***msgs, size_t *n, long long *ready_left, const char **err)
{
    *msgs = NULL;
    *n = 0;
    *ready_left = 0;
    if (r == NULL) {
        *err = "no reply";
        return 0;
    }
    if (r->type == REDIS_REPLY_ERROR)
        return error_reply(r, err);
    if (r->type != REDIS_REPLY_ARRAY) {
        *err = "take: reply is not an array";
        return 0;
    }
    if (r->elements == 0)
        return 1;   /* nothing was ready */
    if (r->elements < QUEUE_TAKE_HEADER || (r->elements - QUEUE_TAKE_HEADER) % QUEUE_TAKE_FIELDS != 0 ||
        (r->elements - QUEUE_TAKE_HEADER) / QUEUE_TAKE_FIELDS > QUEUE_TAKE_MAX) {
        *err = "take: bad element count";
        return 0;
    }
    int64_t lease = 0;
    const redisReply *l = r->element[0];
    if (l == NULL || l->type != REDIS_REPLY_STRING || !parse_i64(l->str, l->len, &lease)) {
        *err = "take: bad lease";
        return 0;
    }
    const redisReply *left = r->element[1];
    if (left == NULL || left->type != REDIS_REPLY_INTEGER || left->integer < 0) {
        *err = "take: bad ready length";
        return 0;
    }
    *ready_left = left->integer;
    size_t count = (r->elements - QUEUE_TAKE_HEADER) / QUEUE_TAKE_FIELDS;
    if (count == 0)
        return 1;
    struct queue_msg **arr = calloc(count, sizeof(*arr));
    if (arr == NULL) {
        *err = "out of memory";
        return 0;
    }
    for (size_t i = 0; i < count; i++) {
        arr[i] = msg_from_reply(r->element + QUEUE_TAKE_HEADER + i * QUEUE_TAKE_FIELDS, partition, lease, err);
        if (arr[i] == NULL) {
            for (size_t j = 0; j < i; j++)
                queue_msg_free(arr[j]);
            free(arr);
            return 0;
        }
    }
    *msgs = arr;
    *n = count;
    return 1;
}
