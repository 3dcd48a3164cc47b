/* dns.c - DNS answers, MX order and the TTL cache; see dns.h. */
#include "engine/dns.h"

#include <ares.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "engine/text.h"

#define DNS_HEADER_LEN   12
#define DNS_RR_FIXED     10      /* type, class, ttl, rdlength */
#define DNS_TYPE_SOA     6
#define DNS_RCODE_NXDOMAIN 3
#define DNS_FLAG_TC      0x0200
#define DNS_CACHE_BUCKETS0 1024
#define DNS_CACHE_SWEEP    64      /* buckets a full cache looks at per insert */

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* expand_name reads the (possibly compressed) name at *pos into out (may
 * be NULL to skip it) and moves *pos past it. 0 if malformed. */
static int expand_name(const uint8_t *msg, size_t len, size_t *pos, char *out, size_t cap)
{
    char *name = NULL;
    long enclen = 0;
    if (*pos >= len || len > INT32_MAX ||
        ares_expand_name(msg + *pos, msg, (int)len, &name, &enclen) != ARES_SUCCESS)
        return 0;
    size_t n = strlen(name);
    int ok = enclen > 0 && (out == NULL || n < cap);
    if (ok && out)
        memcpy(out, name, n + 1);
    ares_free_string(name);
    *pos += (size_t)enclen;
    return ok && *pos <= len;
}

static void take_ttl(struct dns_answer *a, uint32_t ttl, int *first)
{
    if (*first || ttl < a->ttl)
        a->ttl = ttl;
    *first = 0;
}

/* One answer record of the asked type into a. 0 if malformed. */
static int add_record(const uint8_t *p, size_t len, size_t rd, uint16_t rdlen, int qtype,
                      struct dns_answer *a)
{
    if (qtype == DNS_TYPE_MX) {
        if (rdlen < 3 || a->n >= DNS_MX_MAX)
            return rdlen >= 3;
        size_t pos = rd + 2;
        struct dns_mx *m = &a->mx[a->n];
        m->pref = rd16(p + rd);
        if (!expand_name(p, len, &pos, m->host, sizeof(m->host)))
            return 0;
        a->n++;
        return 1;
    }
    int fam = qtype == DNS_TYPE_A ? AF_INET : AF_INET6;
    size_t want = qtype == DNS_TYPE_A ? 4 : 16;
    if (rdlen != want)
        return 0;
    if (a->n < DNS_ADDRS_MAX) {
        a->addr[a->n].family = fam;
        memcpy(a->addr[a->n].bytes, p + rd, want);
        a->n++;
    }
    return 1;
}

/* The negative TTL from an SOA in the authority section (RFC 2308). */
static uint32_t soa_negative_ttl(const uint8_t *p, size_t len, size_t pos, unsigned nscount)
{
    for (unsigned i = 0; i < nscount; i++) {
        if (!expand_name(p, len, &pos, NULL, 0) || pos + DNS_RR_FIXED > len)
            return 0;
        uint16_t type = rd16(p + pos);
        uint32_t ttl = rd32(p + pos + 4);
        uint16_t rdlen = rd16(p + pos + 8);
        size_t rd = pos + DNS_RR_FIXED;
        if (rd + rdlen > len)
            return 0;
        if (type == DNS_TYPE_SOA) {
            size_t q = rd;
            if (!expand_name(p, len, &q, NULL, 0) || !expand_name(p, len, &q, NULL, 0) ||
                q + 20 > rd + rdlen)
                return 0;
            uint32_t minimum = rd32(p + q + 16);
            return minimum < ttl ? minimum : ttl;
        }
        pos = rd + rdlen;
    }
    return 0;
}

void dns_parse(const uint8_t *p, size_t len, int qtype, struct dns_answer *out)
{
    memset(out, 0, sizeof(*out));
    out->status = DNS_TEMPFAIL;
    if (p == NULL || len < DNS_HEADER_LEN)
        return;
    uint16_t flags = rd16(p + 2);
    unsigned rcode = flags & 0xF;
    unsigned qd = rd16(p + 4), an = rd16(p + 6), ns = rd16(p + 8);
    if (flags & DNS_FLAG_TC)
        return;
    size_t pos = DNS_HEADER_LEN;
    for (unsigned i = 0; i < qd; i++) {
        if (!expand_name(p, len, &pos, NULL, 0) || pos + 4 > len)
            return;
        pos += 4;
    }
    if (rcode == DNS_RCODE_NXDOMAIN || (rcode == 0 && an == 0)) {
        /* skip the (empty or CNAME-only) answer section to the authority */
        size_t q = pos;
        for (unsigned i = 0; i < an; i++) {
            if (!expand_name(p, len, &q, NULL, 0) || q + DNS_RR_FIXED > len)
                return;
            q += DNS_RR_FIXED + rd16(p + q + 8);
        }
        out->status = rcode ? DNS_NXDOMAIN : DNS_NODATA;
        out->ttl = q <= len ? soa_negative_ttl(p, len, q, ns) : 0;
        return;
    }
    if (rcode != 0)
        return;
    int first = 1;
    for (unsigned i = 0; i < an; i++) {
        if (!expand_name(p, len, &pos, NULL, 0) || pos + DNS_RR_FIXED > len)
            goto malformed;
        uint16_t type = rd16(p + pos);
        uint32_t ttl = rd32(p + pos + 4);
        uint16_t rdlen = rd16(p + pos + 8);
        size_t rd = pos + DNS_RR_FIXED;
        if (rd + rdlen > len)
            goto malformed;
        if (type == qtype) {
            size_t before = out->n;
            if (!add_record(p, len, rd, rdlen, qtype, out))
                goto malformed;
            if (out->n > before)
                take_ttl(out, ttl, &first);
        }
        pos = rd + rdlen;
    }
    out->status = out->n ? DNS_OK : DNS_NODATA;
    if (qtype == DNS_TYPE_MX && out->n == 1 && out->mx[0].pref == 0 && out->mx[0].host[0] == '\0')
        out->status = DNS_NULL_MX;
    return;
malformed:   /* nothing from a broken answer is used */
    memset(out, 0, sizeof(*out));
    out->status = DNS_TEMPFAIL;
}

const char *dns_status_name(enum dns_status s)
{
    switch (s) {
    case DNS_OK: return "ok";
    case DNS_NODATA: return "nodata";
    case DNS_NXDOMAIN: return "nxdomain";
    case DNS_NULL_MX: return "null MX";
    case DNS_TEMPFAIL: break;
    }
    return "temporary failure";
}

static uint64_t next_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

void dns_order_mx(struct dns_answer *a, uint64_t *rng)
{
    /* insertion sort by preference (a handful of records) */
    for (size_t i = 1; i < a->n; i++) {
        struct dns_mx t = a->mx[i];
        size_t j = i;
        for (; j > 0 && a->mx[j - 1].pref > t.pref; j--)
            a->mx[j] = a->mx[j - 1];
        a->mx[j] = t;
    }
    /* shuffle each run of equal preference (Fisher-Yates) */
    for (size_t s = 0; s < a->n;) {
        size_t e = s + 1;
        while (e < a->n && a->mx[e].pref == a->mx[s].pref)
            e++;
        for (size_t i = e - 1; i > s; i--) {
            size_t j = s + (size_t)(next_rand(rng) % (i - s + 1));
            struct dns_mx t = a->mx[i];
            a->mx[i] = a->mx[j];
            a->mx[j] = t;
        }
        s = e;
    }
}

/* ---- cache ---------------------------------------------------------------- */

struct dns_entry {
    char *name;
    int qtype;
    int64_t expires_ms;
    enum dns_status status;
    uint32_t ttl;
    size_t n;
    void *items;                  /* n struct dns_mx or struct dns_addr */
    struct dns_entry *next;
};

struct dns_cache {
    struct dns_cache_limits lim;
    struct dns_entry **tab;
    size_t size, count;
    size_t sweep;                 /* the next bucket make_room looks at */
    struct dns_cache_stats st;
};

static uint64_t hash_name(const char *s, int qtype)
{
    return text_hash_lower(s, (uint64_t)qtype);
}

struct dns_cache *dns_cache_new(const struct dns_cache_limits *lim)
{
    struct dns_cache *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->lim = *lim;
    c->size = DNS_CACHE_BUCKETS0;
    c->tab = calloc(c->size, sizeof(*c->tab));
    if (c->tab == NULL) {
        free(c);
        return NULL;
    }
    return c;
}

static void entry_free(struct dns_entry *e)
{
    free(e->name);
    free(e->items);
    free(e);
}

void dns_cache_free(struct dns_cache *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->size; i++)
        for (struct dns_entry *e = c->tab[i], *n; e; e = n) {
            n = e->next;
            entry_free(e);
        }
    free(c->tab);
    free(c);
}

static struct dns_entry **find_slot(const struct dns_cache *c, const char *name, int qtype)
{
    struct dns_entry **pp = &c->tab[hash_name(name, qtype) & (c->size - 1)];
    for (; *pp; pp = &(*pp)->next)
        if ((*pp)->qtype == qtype && strcasecmp((*pp)->name, name) == 0)
            break;
    return pp;
}

static void unlink_entry(struct dns_cache *c, struct dns_entry **pp)
{
    struct dns_entry *e = *pp;
    *pp = e->next;
    entry_free(e);
    c->count--;
}

int dns_cache_get(struct dns_cache *c, const char *name, int qtype, int64_t now_ms,
                  struct dns_answer *out)
{
    struct dns_entry **pp = find_slot(c, name, qtype);
    if (*pp && (*pp)->expires_ms <= now_ms) {
        unlink_entry(c, pp);
        c->st.expired++;
    }
    struct dns_entry *e = *pp;
    if (e == NULL) {
        c->st.misses++;
        return 0;
    }
    c->st.hits++;
    memset(out, 0, sizeof(*out));
    out->status = e->status;
    out->ttl = (uint32_t)((e->expires_ms - now_ms + 999) / 1000);
    out->n = e->n;
    if (e->n == 0)
        return 1;
    if (qtype == DNS_TYPE_MX)
        memcpy(out->mx, e->items, e->n * sizeof(out->mx[0]));
    else
        memcpy(out->addr, e->items, e->n * sizeof(out->addr[0]));
    return 1;
}

static uint32_t clamp_ttl(const struct dns_cache_limits *l, const struct dns_answer *a)
{
    if (a->status == DNS_TEMPFAIL)
        return l->tempfail;
    uint32_t ttl = a->ttl < l->ttl_min ? l->ttl_min : a->ttl;
    uint32_t cap = a->status == DNS_OK ? l->ttl_max : l->negative_max;
    return ttl > cap ? cap : ttl;
}

static void grow(struct dns_cache *c)
{
    size_t nsize = c->size * 2;
    struct dns_entry **nt = calloc(nsize, sizeof(*nt));
    if (nt == NULL)
        return;   /* longer chains, still correct */
    for (size_t i = 0; i < c->size; i++)
        for (struct dns_entry *e = c->tab[i], *n; e; e = n) {
            n = e->next;
            size_t j = hash_name(e->name, e->qtype) & (nsize - 1);
            e->next = nt[j];
            nt[j] = e;
        }
    free(c->tab);
    c->tab = nt;
    c->size = nsize;
}
/* make_room: the cache is full. Expired entries (of names not asked for
 * again, which dns_cache_get would drop) go first, from a cursor moving
 * over the buckets, DNS_CACHE_SWEEP of them per call; if none was, the
 * first live entry after the cursor goes. A full cache must keep taking
 * answers: the worker reads each answer back from it (worker_dns.c), so
 * one not kept would be asked for again and again while its destination
 * never resolves. With millions of one-off domains, a cache that kept its
 * expired entries until it was full did exactly that. */
static void make_room(struct dns_cache *c, int64_t now_ms)
{
    for (size_t k = 0; k < DNS_CACHE_SWEEP; k++) {
        struct dns_entry **pp = &c->tab[c->sweep++ & (c->size - 1)];
        while (*pp) {
            if ((*pp)->expires_ms <= now_ms) {
                unlink_entry(c, pp);
                c->st.expired++;
            } else {
                pp = &(*pp)->next;
            }
        }
    }
    for (size_t k = 0; c->count >= DNS_CACHE_MAX && k < c->size; k++) {
        struct dns_entry **pp = &c->tab[c->sweep & (c->size - 1)];
        if (*pp) {
            unlink_entry(c, pp);
            c->st.evicted++;
        } else {
            c->sweep++;
        }
    }
}

void dns_cache_put(struct dns_cache *c, const char *name, int qtype,
                   const struct dns_answer *a, int64_t now_ms)
{
    uint32_t ttl = clamp_ttl(&c->lim, a);
    struct dns_entry **pp = find_slot(c, name, qtype);
    if (*pp)
        unlink_entry(c, pp);
    if (ttl == 0)
        return;
    if (c->count >= DNS_CACHE_MAX)
        make_room(c, now_ms);
    if (c->count + 1 > c->size)
        grow(c);
    size_t isz = qtype == DNS_TYPE_MX ? sizeof(a->mx[0]) : sizeof(a->addr[0]);
    struct dns_entry *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return;
    e->name = strdup(name);
    e->items = a->n ? malloc(a->n * isz) : NULL;
    if (e->name == NULL || (a->n && e->items == NULL)) {
        entry_free(e);
        return;
    }
    if (a->n)
        memcpy(e->items, qtype == DNS_TYPE_MX ? (const void *)a->mx : (const void *)a->addr,
               a->n * isz);
    e->qtype = qtype;
    e->status = a->status;
    e->ttl = ttl;
    e->n = a->n;
    e->expires_ms = now_ms + (int64_t)ttl * 1000;
    pp = &c->tab[hash_name(name, qtype) & (c->size - 1)];
    e->next = *pp;
    *pp = e;
    c->count++;
    c->st.inserts++;
}

int64_t dns_cache_expiry_ms(const struct dns_cache *c, const char *name, int qtype)
{
    struct dns_entry **pp = find_slot(c, name, qtype);
    return *pp ? (*pp)->expires_ms : 0;
}

const struct dns_cache_stats *dns_cache_stats(const struct dns_cache *c)
{
    return &c->st;
}
