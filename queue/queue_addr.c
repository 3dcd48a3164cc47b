/*
 * queue_addr.c - configuration, key names, partition hashing, message ids
 * and envelope address checks. Pure functions, no I/O except getrandom().
 */
#include "queue/queue.h"

#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "engine/text.h"

#define QUEUE_DEFAULT_PARTITIONS  16
#define QUEUE_DEFAULT_LEASE_MS    300000
#define QUEUE_DEFAULT_MAX_SIZE    (32LL * 1024 * 1024)

void queue_config_defaults(struct queue_config *qc)
{
    memset(qc, 0, sizeof(*qc));
    snprintf(qc->prefix, sizeof(qc->prefix), "%s", "tern");
    qc->partitions = QUEUE_DEFAULT_PARTITIONS;
    qc->lease_ms = QUEUE_DEFAULT_LEASE_MS;
    qc->max_message_size = QUEUE_DEFAULT_MAX_SIZE;
    qc->events_maxlen = QUEUE_EVENTS_MAXLEN;
    qc->events_queued = 1;
}

/* Prefix characters: no braces (the partition's {p} must be the first
 * hash tag in every key), no spaces or controls (keys are also used in
 * redis-cli examples). */
static int prefix_char_ok(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '_' || c == '.' || c == ':' ||
           c == '-';
}

int queue_config_check(const struct queue_config *qc, const char **why)
{
    size_t n = strnlen(qc->prefix, sizeof(qc->prefix));
    if (n == 0 || n >= sizeof(qc->prefix)) {
        *why = "prefix must be 1..31 bytes";
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (!prefix_char_ok((unsigned char)qc->prefix[i])) {
            *why = "prefix may only hold [A-Za-z0-9_.:-]";
            return 0;
        }
    }
    if (qc->partitions < 1 || qc->partitions > QUEUE_PARTITIONS_MAX) {
        *why = "partitions must be 1..1024";
        return 0;
    }
    if (qc->lease_ms <= 0) {
        *why = "lease_ms must be positive";
        return 0;
    }
    if (qc->max_message_size <= 0) {
        *why = "max_message_size must be positive";
        return 0;
    }
    if (qc->events_maxlen < QUEUE_EVENTS_MAXLEN_MIN) {
        *why = "events_maxlen must be at least 1000";
        return 0;
    }
    return 1;
}

/* Built with text_out, not snprintf: every take, body fetch and ack
 * names several keys, and the format parser was ~2% of the engine's CPU. */
size_t queue_key(char *out, size_t outlen, const struct queue_config *qc,
                 int partition, const char *name)
{
    if (partition < 0 || outlen == 0)
        return 0;
    struct text_out o;
    text_out_init(&o, out, outlen);
    text_out_mem(&o, qc->prefix, strnlen(qc->prefix, sizeof(qc->prefix)));
    text_out_mem(&o, ":{", 2);
    text_out_u64(&o, (uint64_t)partition);
    text_out_mem(&o, "}:", 2);
    text_out_str(&o, name);
    return o.overflow ? 0 : o.len;
}

static unsigned char lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

/* FNV-1a 64 over the lower-cased bytes: stable across builds, hosts and
 * languages (a producer in another language can compute it), and good
 * enough spread for domain names. */
int queue_partition_of(const struct queue_config *qc, const char *domain, size_t len)
{
    if (qc->partitions <= 1)
        return 0;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= lower((unsigned char)domain[i]);
        h *= 0x100000001b3ULL;
    }
    return (int)(h % (uint64_t)qc->partitions);
}

/* Fallback when getrandom() fails (very early boot, seccomp): mix clock,
 * pid and a stack address. Unique enough with the ms prefix. */
static uint64_t weak_random(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^
                 ((uint64_t)getpid() << 16) ^ (uint64_t)(uintptr_t)&ts;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

void queue_new_id(char id[QUEUE_ID_MAX])
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    uint64_t r;
    if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r))
        r = weak_random();
    snprintf(id, QUEUE_ID_MAX, "%016llx%016llx", (unsigned long long)ms,
             (unsigned long long)r);
}

int queue_id_check(const char *id)
{
    size_t n = strnlen(id, QUEUE_ID_MAX);
    if (n == 0 || n >= QUEUE_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)id[i];
        if (c <= ' ' || c >= 0x7f)
            return 0;
    }
    return 1;
}

/* Domain bytes we accept: letters, digits, '-', '.', '_' (seen in the
 * wild), UTF-8 (SMTPUTF8), or a whole address literal "[...]". */
static int domain_ok(const char *d, size_t n)
{
    if (n >= 2 && d[0] == '[' && d[n - 1] == ']') {
        for (size_t i = 1; i + 1 < n; i++)
            if (d[i] == '[' || d[i] == ']')
                return 0;
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)d[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
              c >= 0x80))
            return 0;
    }
    return 1;
}

int queue_addr_bare(const char *a, size_t len, int is_recipient,
                    const char **bare, size_t *bare_len, const char **why)
{
    if (len > QUEUE_ADDR_MAX) {
        *why = "too long";
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)a[i];
        if (c == 0) {
            *why = "NUL byte";
            return 0;
        }
        if (c == '\r' || c == '\n') {
            *why = "CR or LF";
            return 0;
        }
        if (c == ' ') {
            *why = "space";
            return 0;
        }
        if (c < 0x20 || c == 0x7f) {
            *why = "control character";
            return 0;
        }
    }
    const char *b = a;
    size_t n = len;
    int opens = n > 0 && a[0] == '<';
    int closes = n > 1 && a[n - 1] == '>';
    if ((opens && !closes) || (!opens && n > 0 && a[n - 1] == '>')) {
        *why = "unbalanced angle bracket";
        return 0;
    }
    if (opens) {
        b = a + 1;
        n -= 2;
    }
    if (memchr(b, '<', n) != NULL || memchr(b, '>', n) != NULL) {
        *why = "misplaced angle bracket";
        return 0;
    }
    if (n == 0) {
        if (is_recipient) {
            *why = "empty recipient";
            return 0;
        }
        *bare = b;
        *bare_len = 0;
        return 1;
    }
    if (is_recipient) {
        const char *at = memrchr(b, '@', n);
        if (at == NULL) {
            *why = "no @domain";
            return 0;
        }
        if (at == b) {
            *why = "empty local part";
            return 0;
        }
        size_t dlen = n - (size_t)(at + 1 - b);
        if (dlen == 0) {
            *why = "empty domain";
            return 0;
        }
        if (!domain_ok(at + 1, dlen)) {
            *why = "bad domain character";
            return 0;
        }
    }
    *bare = b;
    *bare_len = n;
    return 1;
}

int queue_addr_check(const char *a, size_t len, int is_recipient, const char **why)
{
    const char *b;
    size_t n;
    return queue_addr_bare(a, len, is_recipient, &b, &n, why);
}

const char *queue_addr_domain(const char *addr)
{
    const char *at = strrchr(addr, '@');
    if (at == NULL || at[1] == '\0')
        return NULL;
    return at + 1;
}
