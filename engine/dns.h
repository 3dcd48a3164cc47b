/*
 * dns.h - DNS answers for MX routing, without I/O: parsing a response
 * into what routing needs, ordering MX hosts, and a TTL cache.
 *
 * DESCRIPTION
 *   dns_parse reads one DNS response (as c-ares hands it over, bytes and
 *   length) for an MX, A or AAAA question and says what it means for
 *   delivery:
 *     DNS_OK        records of the asked type (MX hosts or addresses)
 *     DNS_NODATA    the name exists, no record of that type (for MX:
 *                   the domain itself is the implicit MX, RFC 5321 5.1)
 *     DNS_NXDOMAIN  the name does not exist: mail bounces (5.1.2)
 *     DNS_NULL_MX   a single "MX 0 ." (RFC 7505): mail bounces (5.1.10)
 *     DNS_TEMPFAIL  SERVFAIL, refused, truncated, timeout: mail waits
 *   The TTL is the smallest of the records used; for NODATA/NXDOMAIN it is
 *   the SOA's negative TTL (RFC 2308: min of its TTL and MINIMUM), else 0.
 *   Parsing is bounded by the length given; a malformed answer is
 *   DNS_TEMPFAIL.
 *
 *   dns_order_mx sorts MX records by preference, shuffling those of equal
 *   preference (so equal MX hosts share the load across domains).
 *
 *   struct dns_cache keeps answers for their TTL, clamped to a floor and
 *   a cap (negative answers have their own cap); one per worker thread,
 *   never shared. It counts hits and misses. At DNS_CACHE_MAX entries, a
 *   new answer still goes in: expired entries make room first, else a
 *   live one chosen by bucket order.
 *
 * OWNERSHIP
 *   struct dns_answer is a plain value; the cache keeps compact copies
 *   (only the records there are) and copies them back out. A cache failure
 *   (out of memory) only means the answer is not cached.
 */
#ifndef TERN_ENGINE_DNS_H
#define TERN_ENGINE_DNS_H

#include <stddef.h>
#include <stdint.h>

#define DNS_NAME_MAX      256      /* a presentation name and its NUL */
#define DNS_MX_MAX        16       /* MX records kept per domain */
#define DNS_ADDRS_MAX     16       /* addresses kept per name and family */
#define DNS_CACHE_MAX     200000   /* entries per worker */
#define DNS_TYPE_A        1
#define DNS_TYPE_MX       15
#define DNS_TYPE_AAAA     28

enum dns_status { DNS_OK, DNS_NODATA, DNS_NXDOMAIN, DNS_NULL_MX, DNS_TEMPFAIL };

struct dns_mx {
    uint16_t pref;
    char host[DNS_NAME_MAX];
};

struct dns_addr {
    int family;                   /* AF_INET or AF_INET6 */
    uint8_t bytes[16];
};

struct dns_answer {
    enum dns_status status;
    uint32_t ttl;                 /* seconds */
    size_t n;                     /* mx[] or addr[] entries */
    struct dns_mx mx[DNS_MX_MAX];
    struct dns_addr addr[DNS_ADDRS_MAX];
};

/* dns_parse fills *out from the response p[0..len) to a question of
 * qtype (DNS_TYPE_*). Always returns a usable answer (see above). */
void dns_parse(const uint8_t *p, size_t len, int qtype, struct dns_answer *out);

/* dns_status_name: "ok", "nodata", "nxdomain", "null MX", "temporary failure". */
const char *dns_status_name(enum dns_status s);

/* dns_order_mx sorts a->mx by preference; equal preferences are shuffled
 * with *rng (any seed; advanced). */
void dns_order_mx(struct dns_answer *a, uint64_t *rng);

struct dns_cache_limits {
    uint32_t ttl_min, ttl_max;    /* positive answers, seconds */
    uint32_t negative_max;        /* NODATA / NXDOMAIN / null MX, seconds */
    uint32_t tempfail;            /* how long a failure is remembered (0: not) */
};

struct dns_cache_stats {
    uint64_t hits, misses, inserts, expired;
    uint64_t evicted;             /* live entries dropped to make room when full */
};

struct dns_cache;

struct dns_cache *dns_cache_new(const struct dns_cache_limits *lim);
void dns_cache_free(struct dns_cache *c);
/* dns_cache_get copies the live answer for (name, qtype) at now_ms into
 * *out and returns 1, or returns 0 (a miss; an expired entry is dropped).
 * Names compare without case. */
int dns_cache_get(struct dns_cache *c, const char *name, int qtype, int64_t now_ms,
                  struct dns_answer *out);
/* dns_cache_put stores a copy of *a, replacing any entry for the name;
 * it lives for the clamped TTL from now_ms. */
void dns_cache_put(struct dns_cache *c, const char *name, int qtype,
                   const struct dns_answer *a, int64_t now_ms);
/* dns_cache_expiry_ms: when (name, qtype)'s entry expires; 0 if none. */
int64_t dns_cache_expiry_ms(const struct dns_cache *c, const char *name, int qtype);
const struct dns_cache_stats *dns_cache_stats(const struct dns_cache *c);

#endif
