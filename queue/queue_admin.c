/*
 * queue_admin.c - `tern queue` subcommands (see queue_admin.h): blocking
 * hiredis calls, each sent to the partition's node (one connection to a
 * standalone Redis; a Redis Cluster's are routed by queue_conn_command_argv
 * and queue_batch_run), reads pipelined in chunks, changes made by Lua
 * scripts so each is atomic per partition.
 *
 * The admin scripts are sent with EVAL (their text each time): they run
 * rarely, and Redis caches a script by its SHA anyway.
 */
#include "queue/queue_admin.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/dsn.h"

#define KEY_MAX          (QUEUE_PREFIX_MAX + 16 + QUEUE_ID_MAX)
#define DOMAIN_BUCKETS   65536   /* stats: per-domain table (power of two) */
#define ADMIN_ARGS_MAX   16      /* arguments of one fixed command */
#define BOUNCE_REASON    "5.0.0 bounced by the queue administrator (tern queue bounce)"

enum { ST_READY, ST_LEASED, ST_SCHED, ST_BAD, ST_COUNT };
/* The key of each state, under <pfx>:{p}: */
static const char *const state_keys[ST_COUNT] = {"ready", "leased", "sched", "bad"};

/*
 * remove
 *   KEYS[1] leased  KEYS[2] sched  KEYS[3] bad  KEYS[4] stats  KEYS[5] events
 *   KEYS[6] ready
 *   ARGV    msg_prefix, status ("deleted" or "failed"), reason,
 *           events_maxlen, ids...
 *   Reply   the number of ids that had a message.
 * An id in none of leased, sched and bad is on ready; those leave ready
 * too, so its length (the `ready` count) stays right. Up to
 * REMOVE_LREM_MAX of them: one LREM each (a scan up to the id). More: one
 * walk over ready in chunks of 1000 (memory bounded) finds them all and
 * overwrites each with "" (never an id), then one LREM, stopping at the
 * last of them, takes the marks out: O(length of ready) per call however
 * many ids it has (docs/queue.md, "Cost of delete").
 */
#define REMOVE_LREM_MAX 8    /* 8 LREMs near the tail cost about one walk (bench/delete_cost.sh) */
static const char remove_src[] =
    "local n, want, k = 0, {}, 0\n"
    "for i = 5, #ARGV do\n"
    "  local id = ARGV[i]\n"
    "  if redis.call('DEL', ARGV[1] .. id) == 1 then\n"
    "    local other = redis.call('ZREM', KEYS[1], id) + redis.call('ZREM', KEYS[2], id)\n"
    "      + redis.call('SREM', KEYS[3], id)\n"
    "    if other == 0 then\n"
    "      want[id] = true\n"
    "      k = k + 1\n"
    "    end\n"
    "    redis.call('HINCRBY', KEYS[4], ARGV[2], 1)\n"
    "    redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[4], '*',\n"
    "      'id', id, 'status', ARGV[2], 'reply', ARGV[3])\n"
    "    n = n + 1\n"
    "  end\n"
    "end\n"
    "if k <= " QUEUE_STR(REMOVE_LREM_MAX) " then\n"
    "  for id in pairs(want) do\n"
    "    redis.call('LREM', KEYS[6], 1, id)\n"
    "  end\n"
    "  return n\n"
    "end\n"
    "local len, at, marked = redis.call('LLEN', KEYS[6]), 0, 0\n"
    "while marked < k and at < len do\n"
    "  local chunk = redis.call('LRANGE', KEYS[6], at, at + 999)\n"
    "  for j, id in ipairs(chunk) do\n"
    "    if want[id] then\n"
    "      redis.call('LSET', KEYS[6], at + j - 1, '')\n"
    "      want[id] = nil\n"
    "      marked = marked + 1\n"
    "    end\n"
    "  end\n"
    "  at = at + 1000\n"
    "end\n"
    "if marked > 0 then\n"
    "  redis.call('LREM', KEYS[6], marked, '')\n"
    "end\n"
    "return n\n";

/*
 * retry
 *   KEYS[1] sched  KEYS[2] ready
 *   ARGV    msg_prefix, start, count, domain ("" for all)
 *   Reply   {moved, scanned}: of the scheduled ids at ranks
 *           [start, start+count), those of the domain move to ready.
 */
static const char retry_src[] =
    "local ids = redis.call('ZRANGE', KEYS[1], ARGV[2], tonumber(ARGV[2]) + tonumber(ARGV[3]) - 1)\n"
    "local moved = 0\n"
    "for _, id in ipairs(ids) do\n"
    "  if ARGV[4] == '' or redis.call('HGET', ARGV[1] .. id, 'domain') == ARGV[4] then\n"
    "    redis.call('ZREM', KEYS[1], id)\n"
    "    redis.call('RPUSH', KEYS[2], id)\n"
    "    moved = moved + 1\n"
    "  end\n"
    "end\n"
    "if moved > 0 then redis.call('PUBLISH', KEYS[2], '') end\n"
    "return {moved, #ids}\n";

struct admin {
    struct queue_conn q;
    const char *hostname;
    FILE *out;
};

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void pkey(const struct admin *a, int p, const char *name, char key[KEY_MAX])
{
    if (queue_key(key, KEY_MAX, &a->q.qc, p, name) == 0)
        key[0] = '\0';
}

/* cmd: one command for partition p, sent to the node serving it
 * (queue_conn_command_argv follows a cluster's redirections). Errors are
 * printed; an error reply is returned for the caller to see too. */
static redisReply *cmd(struct admin *a, int p, int argc, const char **argv)
{
    char err[256];
    if (argc > ADMIN_ARGS_MAX)
        return NULL;
    redisReply *r = queue_conn_command_argv(&a->q, p, argc, argv, NULL, err, sizeof(err));
    if (r == NULL)
        fprintf(stderr, "tern: redis: %s\n", err);
    else if (r->type == REDIS_REPLY_ERROR)
        fprintf(stderr, "tern: redis: %s\n", r->str);
    return r;
}

/* run_batch: the batch's commands sent, each partition's to its node, and
 * every reply read (queue_batch_run). */
static int run_batch(struct admin *a, struct queue_batch *b)
{
    char err[256];
    if (!queue_batch_run(&a->q, b, err, sizeof(err))) {
        fprintf(stderr, "tern: redis: %s\n", err);
        return 0;
    }
    return 1;
}

static int64_t reply_i64(const redisReply *r)
{
    if (r == NULL)
        return -1;
    if (r->type == REDIS_REPLY_INTEGER)
        return r->integer;
    if (r->type == REDIS_REPLY_STRING) {
        char *end;
        long long v = strtoll(r->str, &end, 10);
        return end != r->str ? v : -1;
    }
    return -1;
}

/* find_partition: the partition holding message id, -1 if none, -2 on a
 * Redis error. One pipelined EXISTS per partition. */
static int find_partition(struct admin *a, const char *id)
{
    char key[KEY_MAX], name[2 + QUEUE_ID_MAX];
    snprintf(name, sizeof(name), "m:%s", id);
    struct queue_batch b;
    queue_batch_init(&b);
    for (int p = 0; p < a->q.qc.partitions; p++) {
        pkey(a, p, name, key);
        queue_batch_add_argv(&b, p, 2, (const char *[]){"EXISTS", key}, NULL);
    }
    int found = -1, bad = !run_batch(a, &b);
    for (int p = 0; !bad && p < a->q.qc.partitions; p++) {
        const redisReply *r = queue_batch_reply(&b, (size_t)p, 0);
        if (r->type == REDIS_REPLY_INTEGER && r->integer == 1 && found < 0)
            found = p;
        if (r->type == REDIS_REPLY_ERROR)
            fprintf(stderr, "tern: redis: %s\n", r->str);
        bad |= r->type != REDIS_REPLY_INTEGER;
    }
    queue_batch_free(&b);
    return bad ? -2 : found;
}

/* ---- stats ------------------------------------------------------------------ */

struct dstat {
    char *domain;
    long long n[ST_COUNT];
    int64_t oldest;            /* created, ms; 0: none known */
    struct dstat *next;
};

struct dtable {
    struct dstat **b;
    struct dstat **all;
    size_t n, cap;
};

static struct dstat *dtable_get(struct dtable *t, const char *d, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)d[i]) * 0x100000001b3ULL;
    struct dstat **slot = &t->b[h & (DOMAIN_BUCKETS - 1)];
    for (struct dstat *s = *slot; s; s = s->next)
        if (strlen(s->domain) == len && memcmp(s->domain, d, len) == 0)
            return s;
    if (t->n == t->cap) {
        size_t ncap = t->cap ? t->cap * 2 : 64;
        struct dstat **na = realloc(t->all, ncap * sizeof(*na));
        if (na == NULL)
            return NULL;
        t->all = na;
        t->cap = ncap;
    }
    struct dstat *s = calloc(1, sizeof(*s));
    if (s == NULL || (s->domain = strndup(d, len)) == NULL) {
        free(s);
        return NULL;
    }
    s->next = *slot;
    *slot = s;
    t->all[t->n++] = s;
    return s;
}

static void dtable_free(struct dtable *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->all[i]->domain);
        free(t->all[i]);
    }
    free(t->all);
    free(t->b);
}

/* Count the ids in ids (array reply) into the table: one pipelined HMGET
 * domain created per id. Ids whose hash is gone (deleted) are skipped. */
static int count_ids(struct admin *a, int p, const redisReply *ids, int state, struct dtable *t,
                     int64_t *oldest)
{
    char pfx[KEY_MAX], key[KEY_MAX + QUEUE_ID_MAX];
    pkey(a, p, "m:", pfx);
    struct queue_batch b;
    queue_batch_init(&b);
    for (size_t i = 0; i < ids->elements; i++) {
        snprintf(key, sizeof(key), "%s%s", pfx, ids->element[i]->str ? ids->element[i]->str : "");
        queue_batch_add_argv(&b, p, 4, (const char *[]){"HMGET", key, "domain", "created"}, NULL);
    }
    int ok = run_batch(a, &b);
    for (size_t i = 0; ok && i < ids->elements; i++) {
        const redisReply *r = queue_batch_reply(&b, i, 0);
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
            r->element[0]->type == REDIS_REPLY_STRING) {
            struct dstat *s = dtable_get(t, r->element[0]->str, r->element[0]->len);
            int64_t c = reply_i64(r->element[1]);
            if (s == NULL) {
                ok = 0;
            } else {
                s->n[state]++;
                if (c > 0 && (s->oldest == 0 || c < s->oldest))
                    s->oldest = c;
                if (c > 0 && (*oldest == 0 || c < *oldest))
                    *oldest = c;
            }
        }
    }
    queue_batch_free(&b);
    return ok;
}

/* Read every id of one state of partition p in chunks and count them by
 * domain; *members counts every id read, with a readable domain or not
 * (a bad entry may have none, or not be a hash at all). */
static int scan_state(struct admin *a, int p, int state, struct dtable *t, int64_t *oldest,
                      long long *members)
{
    char key[KEY_MAX], start[24], stop[24], cursor[24] = "0";
    pkey(a, p, state_keys[state], key);
    for (long long at = 0;; at += ADMIN_CHUNK) {
        snprintf(start, sizeof(start), "%lld", at);
        snprintf(stop, sizeof(stop), "%lld", at + ADMIN_CHUNK - 1);
        redisReply *r;
        if (state == ST_READY)
            r = cmd(a, p, 4, (const char *[]){"LRANGE", key, start, stop});
        else if (state == ST_BAD)
            r = cmd(a, p, 5, (const char *[]){"SSCAN", key, cursor, "COUNT", QUEUE_STR(ADMIN_CHUNK)});
        else
            r = cmd(a, p, 4, (const char *[]){"ZRANGE", key, start, stop});
        if (r == NULL)
            return 0;
        const redisReply *ids = r;
        int more;
        if (state == ST_BAD) {
            if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
                r->element[0]->type != REDIS_REPLY_STRING) {
                freeReplyObject(r);
                return 0;
            }
            snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
            ids = r->element[1];
            more = strcmp(cursor, "0") != 0;
        } else {
            more = r->type == REDIS_REPLY_ARRAY && r->elements == ADMIN_CHUNK;
        }
        int ok = ids->type == REDIS_REPLY_ARRAY && count_ids(a, p, ids, state, t, oldest);
        if (ok)
            *members += (long long)ids->elements;
        freeReplyObject(r);
        if (!ok)
            return 0;
        if (!more)
            return 1;
    }
}

static int cmp_dstat(const void *x, const void *y)
{
    const struct dstat *a = *(const struct dstat *const *)x, *b = *(const struct dstat *const *)y;
    long long ta = 0, tb = 0;
    for (int i = 0; i < ST_COUNT; i++) {
        ta += a->n[i];
        tb += b->n[i];
    }
    return ta != tb ? (ta < tb ? 1 : -1) : strcmp(a->domain, b->domain);
}

static void json_str(FILE *out, const char *s)
{
    fputc('"', out);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(out, "\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            fprintf(out, "\\u%04x", c);
        else
            fputc(c, out);
    }
    fputc('"', out);
}

static long long age_s(int64_t created, int64_t now)
{
    return created > 0 && now > created ? (long long)((now - created) / 1000) : 0;
}

/* stats_totals: the counters alone, a few commands per partition however
 * long the queue (for monitoring every second; the per-domain view below
 * reads every queued entry). */
/* The state counts and counters, as JSON members (no braces) or one per
 * line: `stats --totals` is these alone, `stats` adds to them. */
static void print_counters(FILE *o, const struct queue_stats *st, int json)
{
    if (json)
        fprintf(o, "\"ready\":%lld,\"leased\":%lld,\"scheduled\":%lld,\"enqueued\":%lld,"
                   "\"delivered\":%lld,\"deferred\":%lld,\"failed\":%lld,\"returned\":%lld,"
                   "\"expired\":%lld,\"deleted\":%lld",
                st->ready, st->leased, st->scheduled, st->enqueued, st->delivered, st->deferred,
                st->failed, st->returned, st->expired, st->deleted);
    else
        fprintf(o, "ready %lld\nleased %lld\nscheduled %lld\nenqueued %lld\ndelivered %lld\n"
                   "deferred %lld\nfailed %lld\nreturned %lld\nexpired %lld\ndeleted %lld\n",
                st->ready, st->leased, st->scheduled, st->enqueued, st->delivered, st->deferred,
                st->failed, st->returned, st->expired, st->deleted);
}

static int stats_totals(struct admin *a, const struct queue_stats *st, int json)
{
    fprintf(a->out, "%s", json ? "{" : "");
    print_counters(a->out, st, json);
    fprintf(a->out, "%s", json ? "}\n" : "");
    return ADMIN_EXIT_OK;
}

static int cmd_stats(struct admin *a, int json, int totals)
{
    char err[256];
    struct queue_stats st;
    if (!queue_stats(&a->q, &st, err, sizeof(err))) {
        fprintf(stderr, "tern: stats: %s\n", err);
        return ADMIN_EXIT_RUNTIME;
    }
    if (totals)
        return stats_totals(a, &st, json);
    struct dtable t = {.b = calloc(DOMAIN_BUCKETS, sizeof(struct dstat *))};
    if (t.b == NULL) {
        fprintf(stderr, "tern: out of memory\n");
        return ADMIN_EXIT_RUNTIME;
    }
    int64_t oldest = 0;
    long long members[ST_COUNT] = {0};
    for (int p = 0; p < a->q.qc.partitions; p++)
        for (int s = 0; s < ST_COUNT; s++)
            if (!scan_state(a, p, s, &t, &oldest, &members[s])) {
                fprintf(stderr, "tern: stats: reading partition %d failed\n", p);
                dtable_free(&t);
                return ADMIN_EXIT_RUNTIME;
            }
    long long bad = members[ST_BAD];   /* the per-domain lines miss those without a domain */
    if (t.n)   /* an empty queue has no table: qsort must not see NULL */
        qsort(t.all, t.n, sizeof(*t.all), cmp_dstat);
    int64_t now = wall_ms();
    FILE *o = a->out;
    if (json) {
        fprintf(o, "{");
        print_counters(o, &st, 1);
        fprintf(o, ",\"bad\":%lld,\"oldest_age_s\":%lld,\"domains\":{", bad, age_s(oldest, now));
        for (size_t i = 0; i < t.n; i++) {
            const struct dstat *d = t.all[i];
            fprintf(o, "%s", i ? "," : "");
            json_str(o, d->domain);
            fprintf(o, ":{\"ready\":%lld,\"leased\":%lld,\"scheduled\":%lld,\"bad\":%lld,"
                       "\"oldest_age_s\":%lld}",
                    d->n[ST_READY], d->n[ST_LEASED], d->n[ST_SCHED], d->n[ST_BAD],
                    age_s(d->oldest, now));
        }
        fprintf(o, "}}\n");
    } else {
        print_counters(o, &st, 0);
        fprintf(o, "bad %lld\noldest_age_s %lld\n", bad, age_s(oldest, now));
        for (size_t i = 0; i < t.n; i++) {
            const struct dstat *d = t.all[i];
            fprintf(o, "domain %s ready=%lld leased=%lld scheduled=%lld bad=%lld oldest_age_s=%lld\n",
                    d->domain, d->n[ST_READY], d->n[ST_LEASED], d->n[ST_SCHED], d->n[ST_BAD],
                    age_s(d->oldest, now));
        }
    }
    dtable_free(&t);
    return ADMIN_EXIT_OK;
}

/* ---- show ------------------------------------------------------------------- */

static void show_time(FILE *o, const char *name, int64_t ms, int64_t now)
{
    char when[64] = "?";
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    if (gmtime_r(&s, &tm))
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (ms <= now)
        fprintf(o, "%s %s (%lld s ago)\n", name, when, (long long)((now - ms) / 1000));
    else
        fprintf(o, "%s %s (in %lld s)\n", name, when, (long long)((ms - now) / 1000));
}

static int cmd_show(struct admin *a, const char *id)
{
    if (!queue_id_check(id)) {
        fprintf(stderr, "tern: bad message id %s\n", id);
        return ADMIN_EXIT_USAGE;
    }
    int p = find_partition(a, id);
    if (p == -2)
        return ADMIN_EXIT_RUNTIME;
    if (p < 0) {
        fprintf(stderr, "tern: no message %s\n", id);
        return ADMIN_EXIT_NOT_FOUND;
    }
    char mkey[KEY_MAX + QUEUE_ID_MAX], pfx[KEY_MAX], k[ST_COUNT][KEY_MAX];
    pkey(a, p, "m:", pfx);
    snprintf(mkey, sizeof(mkey), "%s%s", pfx, id);
    for (int s = 0; s < ST_COUNT; s++)
        pkey(a, p, state_keys[s], k[s]);
    /* Six reads of one partition: one unit, sent together to its node. */
    struct queue_batch b;
    queue_batch_init(&b);
    queue_batch_append_argv(&b, 9, (const char *[]){"HMGET", mkey, "from", "rcpts", "domain",
                                                    "attempts", "created", "last", "bad_reason"},
                            NULL);
    queue_batch_append_argv(&b, 3, (const char *[]){"HSTRLEN", mkey, "data"}, NULL);
    queue_batch_append_argv(&b, 3, (const char *[]){"LPOS", k[ST_READY], id}, NULL);
    queue_batch_append_argv(&b, 3, (const char *[]){"ZSCORE", k[ST_LEASED], id}, NULL);
    queue_batch_append_argv(&b, 3, (const char *[]){"ZSCORE", k[ST_SCHED], id}, NULL);
    queue_batch_append_argv(&b, 3, (const char *[]){"SISMEMBER", k[ST_BAD], id}, NULL);
    queue_batch_add(&b, p, 6);
    int ok = run_batch(a, &b);
    redisReply *r[6] = {0};
    for (int i = 0; ok && i < 6; i++)
        r[i] = queue_batch_take(&b, 0, (size_t)i);
    queue_batch_free(&b);
    if (ok && (r[0]->type != REDIS_REPLY_ARRAY || r[0]->elements != 7)) {
        /* e.g. WRONGTYPE: a producer wrote something other than a hash
         * at the message's key (the take sets such an id aside). */
        fprintf(stderr, "tern: message %s: %s\n", id,
                r[0]->type == REDIS_REPLY_ERROR ? r[0]->str : "unexpected reply from Redis");
        ok = 0;
    }
    if (ok) {
        FILE *o = a->out;
        int64_t now = wall_ms();
        const char *state = r[5]->type == REDIS_REPLY_INTEGER && r[5]->integer == 1 ? "bad"
                            : r[3]->type == REDIS_REPLY_STRING                       ? "leased"
                            : r[4]->type == REDIS_REPLY_STRING                       ? "scheduled"
                            : r[2]->type == REDIS_REPLY_INTEGER                      ? "ready"
                                                                                     : "unknown";
        static const char *const names[7] = {"from", "rcpts", "domain", "attempts", "created",
                                             "last", "bad_reason"};
        redisReply **f = r[0]->element;
        fprintf(o, "id %s\npartition %d\nstate %s\n", id, p, state);
        for (int i = 0; i < 7; i++) {
            if (f[i]->type != REDIS_REPLY_STRING || i == 4)
                continue;
            if (i == 0)
                fprintf(o, "from <%s>\n", f[i]->str);
            else if (i == 1) {
                fprintf(o, "rcpts ");
                for (const char *c = f[i]->str; *c; c++)
                    fputc(*c == '\n' ? ' ' : *c, o);
                fputc('\n', o);
            } else
                fprintf(o, "%s %s\n", names[i], f[i]->str);
        }
        fprintf(o, "size %lld\n", (long long)reply_i64(r[1]));
        if (f[4]->type == REDIS_REPLY_STRING)
            show_time(o, "created", reply_i64(f[4]), now);
        if (r[3]->type == REDIS_REPLY_STRING)
            show_time(o, "lease_until", reply_i64(r[3]), now);
        if (r[4]->type == REDIS_REPLY_STRING)
            show_time(o, "next_attempt", reply_i64(r[4]), now);
    }
    for (int i = 0; i < 6; i++)
        freeReplyObject(r[i]);
    return ok ? ADMIN_EXIT_OK : ADMIN_EXIT_RUNTIME;
}

/* ---- retry ------------------------------------------------------------------ */

static int retry_partition(struct admin *a, int p, const char *domain, long long *moved)
{
    char sched[KEY_MAX], ready[KEY_MAX], pfx[KEY_MAX], start[24];
    pkey(a, p, "sched", sched);
    pkey(a, p, "ready", ready);
    pkey(a, p, "m:", pfx);
    for (long long at = 0;;) {
        snprintf(start, sizeof(start), "%lld", at);
        redisReply *r = cmd(a, p, 9, (const char *[]){"EVAL", retry_src, "2", sched, ready, pfx,
                                                      start, QUEUE_STR(ADMIN_CHUNK), domain});
        if (r == NULL)
            return 0;
        int ok = r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
                 r->element[0]->type == REDIS_REPLY_INTEGER &&
                 r->element[1]->type == REDIS_REPLY_INTEGER;
        long long m = ok ? r->element[0]->integer : 0, scanned = ok ? r->element[1]->integer : 0;
        freeReplyObject(r);
        if (!ok)
            return 0;
        *moved += m;
        at += scanned - m;   /* the moved ids left the ranks below */
        if (scanned < ADMIN_CHUNK)
            return 1;
    }
}

static int cmd_retry(struct admin *a, const char *domain)
{
    long long moved = 0;
    char ld[QUEUE_ADDR_MAX + 1] = "";
    if (domain) {
        size_t n = strlen(domain);
        if (n == 0 || n > QUEUE_ADDR_MAX) {
            fprintf(stderr, "tern: retry: bad domain\n");
            return ADMIN_EXIT_USAGE;
        }
        for (size_t i = 0; i <= n; i++)
            ld[i] = (char)(domain[i] >= 'A' && domain[i] <= 'Z' ? domain[i] + 32 : domain[i]);
        if (!retry_partition(a, queue_partition_of(&a->q.qc, ld, n), ld, &moved))
            return ADMIN_EXIT_RUNTIME;
    } else {
        for (int p = 0; p < a->q.qc.partitions; p++)
            if (!retry_partition(a, p, "", &moved))
                return ADMIN_EXIT_RUNTIME;
    }
    fprintf(a->out, "retried %lld\n", moved);
    return ADMIN_EXIT_OK;
}

/* ---- delete and bounce ---------------------------------------------------------- */

/* remove_ids: one script call for ids[0..n) of partition p. */
static int remove_ids(struct admin *a, int p, const char *status, const char *reason,
                      const char *const *ids, size_t n, long long *removed)
{
    char k[6][KEY_MAX], pfx[KEY_MAX];
    static const char *const names[6] = {"leased", "sched", "bad", "stats", "events", "ready"};
    for (int i = 0; i < 6; i++)
        pkey(a, p, names[i], k[i]);
    pkey(a, p, "m:", pfx);
    size_t argc = 3 + 6 + 4 + n;
    const char **argv = malloc(argc * sizeof(*argv));
    size_t *lens = malloc(argc * sizeof(*lens));
    if (argv == NULL || lens == NULL) {
        free(argv);
        free(lens);
        return 0;
    }
    char maxlen[24];
    snprintf(maxlen, sizeof(maxlen), "%d", a->q.qc.events_maxlen);
    const char *head[13] = {"EVAL", remove_src, "6", k[0], k[1], k[2], k[3], k[4], k[5], pfx,
                            status, reason, maxlen};
    for (size_t i = 0; i < argc; i++) {
        argv[i] = i < 13 ? head[i] : ids[i - 13];
        lens[i] = strlen(argv[i]);
    }
    char err[256];
    redisReply *r = queue_conn_command_argv(&a->q, p, (int)argc, argv, lens, err, sizeof(err));
    free(argv);
    free(lens);
    int ok = r != NULL && r->type == REDIS_REPLY_INTEGER;
    if (ok)
        *removed += r->integer;
    else
        fprintf(stderr, "tern: redis: %s\n", r ? (r->str ? r->str : "bad reply") : err);
    freeReplyObject(r);
    return ok;
}

/* bounce_one: the DSN for message id (partition p) to its sender. Returns
 * 1 when sent or not needed (null sender), 0 on failure. */
static int bounce_one(struct admin *a, int p, const char *id)
{
    char mkey[KEY_MAX + QUEUE_ID_MAX], pfx[KEY_MAX], err[256];
    pkey(a, p, "m:", pfx);
    snprintf(mkey, sizeof(mkey), "%s%s", pfx, id);
    redisReply *r = cmd(a, p, 5, (const char *[]){"HMGET", mkey, "from", "rcpts", "data"});
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
        r->element[0]->type != REDIS_REPLY_STRING) {
        freeReplyObject(r);
        return 0;
    }
    const char *from = r->element[0]->str;
    int ok = 1;
    if (from[0] != '\0') {
        char *rc = r->element[1]->type == REDIS_REPLY_STRING ? strdup(r->element[1]->str) : NULL;
        size_t nr = 0;
        struct dsn_rcpt dr[QUEUE_RCPTS_MAX];
        for (char *s = rc, *save = NULL, *t = s ? strtok_r(s, "\n", &save) : NULL;
             t && nr < QUEUE_RCPTS_MAX; t = strtok_r(NULL, "\n", &save))
            dr[nr++] = (struct dsn_rcpt){t, "5.0.0", BOUNCE_REASON, NULL};
        struct buf b;
        buf_init(&b, 0);
        const redisReply *d = r->element[2];
        ok = nr > 0 && dsn_build(&b, a->hostname, from, id, dr, nr,
                                 d->type == REDIS_REPLY_STRING ? (const uint8_t *)d->str : NULL,
                                 d->type == REDIS_REPLY_STRING ? d->len : 0, wall_ms() / 1000);
        const char *to[1] = {from};
        if (ok && queue_enqueue(&a->q, "", to, 1, buf_peek(&b), buf_used(&b), err, sizeof(err)) < 1) {
            fprintf(stderr, "tern: bounce %s: %s\n", id, err);
            ok = 0;
        }
        buf_free(&b);
        free(rc);
    }
    freeReplyObject(r);
    return ok;
}

static int cmd_remove(struct admin *a, int bounce, int nids, char **ids)
{
    int rc = ADMIN_EXIT_OK;
    long long removed = 0;
    for (int i = 0; i < nids; i++) {
        if (!queue_id_check(ids[i])) {
            fprintf(stderr, "tern: bad message id %s\n", ids[i]);
            return ADMIN_EXIT_USAGE;
        }
    }
    /* Group by partition: one remove call per partition. */
    int *part = malloc((size_t)nids * sizeof(*part));
    const char **batch = malloc((size_t)nids * sizeof(*batch));
    if (part == NULL || batch == NULL) {
        free(part);
        free(batch);
        return ADMIN_EXIT_RUNTIME;
    }
    for (int i = 0; i < nids && rc != ADMIN_EXIT_RUNTIME; i++) {
        part[i] = find_partition(a, ids[i]);
        if (part[i] == -2)
            rc = ADMIN_EXIT_RUNTIME;
        else if (part[i] < 0) {
            fprintf(stderr, "tern: no message %s\n", ids[i]);
            rc = ADMIN_EXIT_NOT_FOUND;
        } else if (bounce && !bounce_one(a, part[i], ids[i])) {
            fprintf(stderr, "tern: message %s: the bounce could not be queued; not removed\n", ids[i]);
            part[i] = -1;
            rc = ADMIN_EXIT_RUNTIME;
        }
    }
    for (int p = 0; p < a->q.qc.partitions && rc != ADMIN_EXIT_RUNTIME; p++) {
        size_t n = 0;
        for (int i = 0; i < nids; i++)
            if (part[i] == p)
                batch[n++] = ids[i];
        /* ADMIN_CHUNK ids per call: no long script on Redis. */
        for (size_t at = 0; at < n && rc != ADMIN_EXIT_RUNTIME; at += ADMIN_CHUNK)
            if (!remove_ids(a, p, bounce ? "failed" : "deleted",
                            bounce ? "bounced by the queue administrator"
                                   : "deleted by the queue administrator",
                            batch + at, n - at < ADMIN_CHUNK ? n - at : ADMIN_CHUNK, &removed))
                rc = ADMIN_EXIT_RUNTIME;
    }
    free(part);
    free(batch);
    fprintf(a->out, "%s %lld\n", bounce ? "bounced" : "deleted", removed);
    return rc;
}

/* ---- entry point -------------------------------------------------------------- */

static int usage(void)
{
    fprintf(stderr, "usage: tern queue -c FILE stats [--json] [--totals]\n"
                    "       tern queue -c FILE show ID\n"
                    "       tern queue -c FILE retry [--domain D]\n"
                    "       tern queue -c FILE delete ID...\n"
                    "       tern queue -c FILE bounce ID...\n");
    return ADMIN_EXIT_USAGE;
}

int queue_admin_main(const struct queue_config *qc, const char *redis_addr,
                     const char *hostname, int argc, char **argv, FILE *out)
{
    if (argc < 1)
        return usage();
    const char *sub = argv[0];
    int json = 0, totals = 0;
    const char *domain = NULL;
    if (strcmp(sub, "stats") == 0) {
        for (int i = 1; i < argc; i++) {
            if (strcmp(argv[i], "--json") == 0 && !json)
                json = 1;
            else if (strcmp(argv[i], "--totals") == 0 && !totals)
                totals = 1;
            else
                return usage();
        }
    } else if (strcmp(sub, "show") == 0) {
        if (argc != 2)
            return usage();
    } else if (strcmp(sub, "retry") == 0) {
        if (argc == 3 && strcmp(argv[1], "--domain") == 0)
            domain = argv[2];
        else if (argc != 1)
            return usage();
    } else if (strcmp(sub, "delete") == 0 || strcmp(sub, "bounce") == 0) {
        if (argc < 2)
            return usage();
    } else {
        return usage();
    }
    struct admin a = {.hostname = hostname, .out = out};
    char err[512];
    if (!queue_open(&a.q, qc, redis_addr, err, sizeof(err))) {
        fprintf(stderr, "tern: %s\n", err);
        return ADMIN_EXIT_RUNTIME;
    }
    int rc;
    if (strcmp(sub, "stats") == 0)
        rc = cmd_stats(&a, json, totals);
    else if (strcmp(sub, "show") == 0)
        rc = cmd_show(&a, argv[1]);
    else if (strcmp(sub, "retry") == 0)
        rc = cmd_retry(&a, domain);
    else
        rc = cmd_remove(&a, strcmp(sub, "bounce") == 0, argc - 1, argv + 1);
    queue_close(&a.q);
    return rc;
}
