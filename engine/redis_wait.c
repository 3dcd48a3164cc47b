/*
 * redis_wait.c - retry queue_open() with backoff until Redis answers
 * (redis_wait.h).
 */
#include "engine/redis_wait.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "engine/worker_int.h"   /* REDIS_BACKOFF_MIN_MS, REDIS_BACKOFF_MAX_MS */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* pause_for sleeps ms unless a signal of set arrives: its number, or 0. */
static int pause_for(const sigset_t *set, int64_t ms)
{
    struct timespec to = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    for (;;) {
        int sig = sigtimedwait(set, NULL, &to);
        if (sig > 0)
            return sig;
        if (sig < 0 && errno == EINTR)
            continue;   /* another signal; the remaining time is close enough */
        return 0;
    }
}

int redis_wait_open(struct queue_conn *q, const struct tern_config *cfg, int64_t limit_ms,
                    char *err, size_t errlen)
{
    const char *why;
    if (!queue_config_check(&cfg->queue, &why)) {
        snprintf(err, errlen, "queue configuration: %s", why);
        return 0;
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    int64_t start = mono_ms(), backoff = 0;
    char last[256];
    for (;;) {
        if (queue_open(q, &cfg->queue, cfg->redis, last, sizeof(last))) {
            if (backoff)
                fprintf(stderr, "tern: Redis at %s answers after %.1f s\n", cfg->redis,
                        (double)(mono_ms() - start) / 1000.0);
            return 1;
        }
        int64_t waited = mono_ms() - start;
        if (limit_ms >= 0 && waited >= limit_ms) {
            snprintf(err, errlen, "Redis at %s not usable after %.1f s of waiting: %s",
                     cfg->redis, (double)waited / 1000.0, last);
            return 0;
        }
        backoff = backoff ? backoff * 2 : REDIS_BACKOFF_MIN_MS;
        if (backoff > REDIS_BACKOFF_MAX_MS)
            backoff = REDIS_BACKOFF_MAX_MS;
        int64_t pause = backoff;
        if (limit_ms >= 0 && waited + pause > limit_ms)
            pause = limit_ms - waited;   /* one last try at the limit */
        fprintf(stderr, "tern: waiting for Redis at %s: %s; next try in %lld ms\n", cfg->redis,
                last, (long long)pause);
        int sig = pause_for(&set, pause);
        if (sig) {
            snprintf(err, errlen, "%s while waiting for Redis at %s",
                     sig == SIGTERM ? "SIGTERM" : "SIGINT", cfg->redis);
            return -1;
        }
    }
}

/* The maxmemory_policy line of INFO memory (INFO works where CONFIG is
 * renamed away, as managed Redis services often do). `who` names the
 * server: "Redis", or "Redis node host:port" in a cluster. */
static int warn_eviction(redisContext *c, const char *who, FILE *out)
{
    redisReply *r = redisCommand(c, "INFO memory");
    int n = 0;
    if (r && r->type == REDIS_REPLY_STRING) {
        const char *p = strstr(r->str, "\nmaxmemory_policy:");
        if (p) {
            p += strlen("\nmaxmemory_policy:");
            size_t len = strcspn(p, "\r\n");
            if (len > 8 && strncmp(p, "allkeys-", 8) == 0) {
                fprintf(out, "tern: warning: %s maxmemory-policy is %.*s: when Redis reaches "
                             "maxmemory it evicts keys, queued messages among them, lost without a "
                             "trace; set maxmemory-policy noeviction (docs/queue.md, \"Redis "
                             "settings\")\n", who, (int)len, p);
                n = 1;
            }
        }
    }
    freeReplyObject(r);
    return n;
}

/* INFO persistence's aof_enabled: without the AOF, what Redis holds lives
 * until its next snapshot at best. */
static int note_no_aof(redisContext *c, const char *who, FILE *out)
{
    redisReply *r = redisCommand(c, "INFO persistence");
    int n = 0;
    if (r && r->type == REDIS_REPLY_STRING && strstr(r->str, "\naof_enabled:0") != NULL) {
        fprintf(out, "tern: note: %s appendonly is off: a Redis crash or restart loses the mail "
                     "queued since its last RDB snapshot, if it takes any (docs/queue.md, "
                     "\"Durability\": appendonly yes with appendfsync everysec or always)\n", who);
        n = 1;
    }
    freeReplyObject(r);
    return n;
}

static int note_listpack(redisContext *c, const char *who, FILE *out)
{
    redisReply *r = redisCommand(c, "CONFIG GET hash-max-listpack-value");
    int v = 0, n = 0;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[1]->type == REDIS_REPLY_STRING &&
        config_parse_int(r->element[1]->str, 0, 1 << 30, &v) && v < REDIS_NOTE_LISTPACK_MIN) {
        fprintf(out, "tern: note: %s hash-max-listpack-value is %d: each queued message larger "
                     "than that is stored as a hash table, which costs Redis about 3 us more per "
                     "message; docs/queue.md suggests a value a little above your usual message "
                     "size (CONFIG SET hash-max-listpack-value 8192)\n", who, v);
        n = 1;
    }
    freeReplyObject(r);
    return n;
}

/* Every server holding queue data is looked at: the one Redis, or each
 * master of a cluster (each line then names its node). */
int redis_start_notes(struct queue_conn *q, FILE *out)
{
    int notes = 0;
    for (int i = 0; i < queue_conn_nnodes(q); i++) {
        char addr[QUEUE_CLUSTER_ADDR_MAX], who[QUEUE_CLUSTER_ADDR_MAX + 16];
        redisContext *c = queue_conn_node(q, i, addr, sizeof(addr));
        if (c == NULL)
            continue;
        if (addr[0])
            snprintf(who, sizeof(who), "Redis node %s", addr);
        else
            snprintf(who, sizeof(who), "Redis");
        notes += warn_eviction(c, who, out) + note_no_aof(c, who, out) + note_listpack(c, who, out);
    }
    return notes;
}
