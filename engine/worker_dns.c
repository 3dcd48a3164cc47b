/*
 * worker_dns.c - MX routing on the worker's ring: c-ares sockets polled
 * through io_uring (IORING_OP_POLL_ADD, one-shot, re-armed after
 * ares_process_fd), c-ares timeouts on the worker tick, answers parsed
 * and cached by engine/dns.h, and a destination's next hops built from
 * them. Nothing here blocks: a destination whose answers are not cached
 * waits (its mail stays in memory) and is marked dirty when they come.
 */
#include "engine/worker_int.h"

#include <ares.h>
#include <arpa/inet.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "engine/dns.h"
#include "engine/text.h"

#define DNS_SOCKS_MAX     32      /* c-ares sockets per worker */
#define DNS_PENDING_BUCKETS 4096  /* in-flight lookups table (power of two) */
#define DNS_HOPS_MAX      32      /* addresses tried per destination */
#define DNS_TEMPFAIL_S    5       /* a failed lookup is not repeated for */
#define DNS_CLASS_IN      1
/* Queries in flight per worker: a burst of thousands of new domains would
 * overflow the server's (or our) UDP buffers and end in timeouts; the
 * rest wait for the tick (every destination with mail is retried there). */
#define DNS_INFLIGHT_MAX  256

struct dns_sock {
    struct op op;                 /* first: the ring hands this back */
    int fd;
    int live;                     /* c-ares has it open */
    int armed;                    /* a poll is in flight */
    int want_r, want_w;
    unsigned mask;                /* of the poll in flight */
};

/* One question in flight and the destinations waiting for it. */
struct dns_pending {
    struct worker *w;
    char name[DNS_NAME_MAX];
    int qtype;
    struct dest **waiters;
    size_t nwaiters, cap;
    struct dns_pending *next;
};

struct worker_dns {
    ares_channel ch;
    int ch_ok;
    int closing;                  /* ares_destroy running: no ring, no dests */
    struct dns_cache *cache;
    struct dns_sock socks[DNS_SOCKS_MAX];
    struct dns_pending *pending[DNS_PENDING_BUCKETS];
    size_t npending;
    uint64_t rng;
    /* counters: lookups a resolution needed, queries sent, answers */
    uint64_t lookups, queries, answers, timeouts;
};

/* ---- sockets on the ring ------------------------------------------------- */

static void sock_arm(struct worker *w, struct dns_sock *s)
{
    unsigned mask = (s->want_r ? POLLIN : 0) | (s->want_w ? POLLOUT : 0);
    struct io_uring_sqe *sqe = worker_sqe(w);
    io_uring_prep_poll_add(sqe, s->fd, mask);
    io_uring_sqe_set_data(sqe, &s->op);
    s->armed = 1;
    s->mask = mask;
}

static void sock_cancel(struct worker *w, struct dns_sock *s)
{
    struct io_uring_sqe *sqe = worker_sqe(w);
    io_uring_prep_poll_remove(sqe, (__u64)(uintptr_t)&s->op);
    io_uring_sqe_set_data(sqe, NULL);
}

static struct dns_sock *sock_find(struct worker_dns *x, int fd)
{
    for (int i = 0; i < DNS_SOCKS_MAX; i++)
        if (x->socks[i].live && x->socks[i].fd == fd)
            return &x->socks[i];
    return NULL;
}

static struct dns_sock *sock_free_slot(struct worker_dns *x)
{
    for (int i = 0; i < DNS_SOCKS_MAX; i++)
        if (!x->socks[i].live && !x->socks[i].armed)
            return &x->socks[i];
    return NULL;
}

/* c-ares opens, changes or closes a socket (it closes it right after). */
static void sock_state_cb(void *data, ares_socket_t fd, int readable, int writable)
{
    struct worker *w = data;
    struct worker_dns *x = w->dns;
    if (x->closing)
        return;
    struct dns_sock *s = sock_find(x, fd);
    if (!readable && !writable) {
        if (s) {
            s->live = 0;
            if (s->armed)
                sock_cancel(w, s);
        }
        return;
    }
    if (s == NULL && (s = sock_free_slot(x)) == NULL) {
        /* the query on it times out and is retried by c-ares */
        fprintf(stderr, "tern: worker %d: too many DNS sockets\n", w->id);
        return;
    }
    s->fd = fd;
    s->live = 1;
    s->want_r = readable;
    s->want_w = writable;
    unsigned mask = (readable ? POLLIN : 0) | (writable ? POLLOUT : 0);
    if (!s->armed)
        sock_arm(w, s);
    else if (s->mask != mask)
        sock_cancel(w, s);   /* re-armed with the new mask when it completes */
}

void worker_dns_on_cqe(struct worker *w, struct op *op, int res)
{
    struct worker_dns *x = w->dns;
    struct dns_sock *s = (struct dns_sock *)op;
    s->armed = 0;
    if (!s->live)
        return;
    if (res > 0) {
        int fd = s->fd;
        ares_socket_t rfd = (res & (POLLIN | POLLERR | POLLHUP)) ? fd : ARES_SOCKET_BAD;
        ares_socket_t wfd = s->want_w && (res & (POLLOUT | POLLERR | POLLHUP)) ? fd : ARES_SOCKET_BAD;
        ares_process_fd(x->ch, rfd, wfd);
    }
    /* processing may have closed it, or its slot now serves another fd */
    if (s->live && !s->armed && (s->want_r || s->want_w))
        sock_arm(w, s);
}

void worker_dns_tick(struct worker *w)
{
    if (w->dns->npending)
        ares_process_fd(w->dns->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
}

/* ---- lookups ----------------------------------------------------------------- */

static size_t pending_bucket(const char *name, int qtype)
{
    return text_hash_lower(name, (uint64_t)qtype) & (DNS_PENDING_BUCKETS - 1);
}

static void pending_unlink_free(struct worker_dns *x, struct dns_pending *p)
{
    struct dns_pending **pp = &x->pending[pending_bucket(p->name, p->qtype)];
    while (*pp && *pp != p)
        pp = &(*pp)->next;
    if (*pp)
        *pp = p->next;
    x->npending--;
    free(p->waiters);
    free(p);
}

static void on_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct dns_pending *p = arg;
    struct worker *w = p->w;
    struct worker_dns *x = w->dns;
    (void)timeouts;
    if (x->closing) {
        pending_unlink_free(x, p);
        return;
    }
    struct dns_answer a;
    if (status == ARES_ETIMEOUT)
        x->timeouts++;
    dns_parse(abuf, alen > 0 ? (size_t)alen : 0, p->qtype, &a);
    x->answers++;
    if (w->e->verbose)
        fprintf(stderr, "tern: dns %s %s: %s (%u records, ttl %u)\n", p->name,
                p->qtype == DNS_TYPE_MX ? "MX" : p->qtype == DNS_TYPE_A ? "A" : "AAAA",
                dns_status_name(a.status), (unsigned)a.n, (unsigned)a.ttl);
    dns_cache_put(x->cache, p->name, p->qtype, &a, w->now_ms);
    for (size_t i = 0; i < p->nwaiters; i++) {
        p->waiters[i]->dns_waiting = 0;
        p->waiters[i]->dns_refs--;   /* p points to it no more */
        worker_mark_dirty(w, p->waiters[i]);
    }
    pending_unlink_free(x, p);
}

/* d waits for p's answer, which wakes it (the tick leaves it alone). */
static int add_waiter(struct dns_pending *p, struct dest *d)
{
    for (size_t i = 0; i < p->nwaiters; i++)
        if (p->waiters[i] == d)
            return d->dns_waiting = 1;
    if (p->nwaiters == p->cap) {
        size_t ncap = p->cap ? p->cap * 2 : 4;
        struct dest **n = realloc(p->waiters, ncap * sizeof(*n));
        if (n == NULL)
            return 0;
        p->waiters = n;
        p->cap = ncap;
    }
    p->waiters[p->nwaiters++] = d;
    d->dns_refs++;   /* d is not forgotten while p lists it (worker_forget.c) */
    return d->dns_waiting = 1;
}

/* ask: the cached answer into *a (1), or a query in flight with d waiting
 * for it (0), or too many in flight (0: the tick asks again). Out of
 * memory: a temporary failure answer (1). */
static int ask(struct worker *w, struct dest *d, const char *name, int qtype, struct dns_answer *a)
{
    struct worker_dns *x = w->dns;
    if (dns_cache_get(x->cache, name, qtype, w->now_ms, a))
        return 1;
    size_t b = pending_bucket(name, qtype);
    for (struct dns_pending *p = x->pending[b]; p; p = p->next)
        if (p->qtype == qtype && strcasecmp(p->name, name) == 0)
            return add_waiter(p, d) ? 0 : (a->status = DNS_TEMPFAIL, a->n = 0, 1);
    if (x->npending >= DNS_INFLIGHT_MAX)
        return 0;
    struct dns_pending *p = calloc(1, sizeof(*p));
    if (p == NULL || strlen(name) >= sizeof(p->name) || !add_waiter(p, d)) {
        if (p)
            free(p->waiters);
        free(p);
        memset(a, 0, sizeof(*a));
        a->status = DNS_TEMPFAIL;
        return 1;
    }
    p->w = w;
    p->qtype = qtype;
    memcpy(p->name, name, strlen(name) + 1);
    p->next = x->pending[b];
    x->pending[b] = p;
    x->npending++;
    x->queries++;
    /* may answer at once (a bad name): on_answer marks d dirty */
    ares_query(x->ch, name, DNS_CLASS_IN, qtype, on_answer, p);
    return 0;
}

/* ---- next hops --------------------------------------------------------------- */

static void set_error(struct dest *d, const char *status, const char *fmt, const char *a1,
                      const char *a2)
{
    snprintf(d->route_error, sizeof(d->route_error), fmt, a1, a2);
    d->no_route = d->route_error;
    d->bounce_status = status;
}

static void hop_slot(struct nexthop *h)
{
    char key[CONFIG_HOST_MAX + 8];
    snprintf(key, sizeof(key), "%s:%u", h->host, (unsigned)h->port);
    uint64_t v = 1469598103934665603ULL;
    for (const char *p = key; *p; p++)
        v = (v ^ (unsigned char)*p) * 1099511628211ULL;
    h->host_slot = CONFIG_ROUTES_MAX + (int)(v % DNS_HOST_SLOTS);
}

static void add_hops(struct worker *w, struct nexthop *hops, size_t *n, const char *host,
                     const struct dns_answer *a)
{
    for (size_t i = 0; i < a->n && *n < DNS_HOPS_MAX; i++) {
        struct nexthop *h = &hops[*n];
        memset(h, 0, sizeof(*h));
        snprintf(h->host, sizeof(h->host), "%s", host);
        h->port = (uint16_t)w->cfg->net.mx_port;
        if (a->addr[i].family == AF_INET6) {
            struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&h->addr;
            s6->sin6_family = AF_INET6;
            s6->sin6_port = htons(h->port);
            memcpy(&s6->sin6_addr, a->addr[i].bytes, 16);
            h->addrlen = sizeof(*s6);
        } else {
            struct sockaddr_in *s4 = (struct sockaddr_in *)&h->addr;
            s4->sin_family = AF_INET;
            s4->sin_port = htons(h->port);
            memcpy(&s4->sin_addr, a->addr[i].bytes, 4);
            h->addrlen = sizeof(*s4);
        }
        hop_slot(h);
        (*n)++;
    }
}

static int64_t earlier(int64_t a, int64_t b)
{
    return a == 0 ? b : b == 0 ? a : a < b ? a : b;
}

/* The MX answer's meaning, when it ends the resolution. */
static enum route_state mx_verdict(struct dest *d, const struct dns_answer *mx)
{
    switch (mx->status) {
    case DNS_NXDOMAIN:
        set_error(d, "5.1.2", "5.1.2 domain %s does not exist (NXDOMAIN)%s", d->domain, "");
        return ROUTE_BOUNCE;
    case DNS_NULL_MX:
        set_error(d, "5.1.10", "5.1.10 domain %s accepts no mail (null MX, RFC 7505)%s", d->domain, "");
        return ROUTE_BOUNCE;
    case DNS_TEMPFAIL:
        set_error(d, NULL, "MX lookup for %s failed (%s); will retry", d->domain,
                  "SERVFAIL, refused or timeout");
        return ROUTE_DEFER;
    default:
        return ROUTE_READY;
    }
}

static enum route_state install_hops(struct worker *w, struct dest *d, struct nexthop *hops,
                                     size_t n, int64_t expires)
{
    struct mxhost *h = host_get(w, &hops[0]);
    if (h == NULL) {
        free(hops);
        set_error(d, NULL, "out of memory%s%s", "", "");
        return ROUTE_DEFER;
    }
    free(d->hops);
    d->hops = hops;
    d->nhops = n;
    d->hop_idx = 0;
    d->hops_tried = 0;
    d->hop_failed = 0;
    d->hop = hops[0];
    dest_set_host(w, d, h);
    d->have_hop = 1;
    d->no_route = NULL;
    d->bounce_status = NULL;
    d->hops_expire_ms = expires;
    return ROUTE_READY;
}

enum route_state dest_route(struct worker *w, struct dest *d)
{
    if (!d->use_dns)
        return d->have_hop ? ROUTE_READY : ROUTE_DEFER;
    if (d->have_hop && !dest_route_stale(w, d))
        return ROUTE_READY;
    struct worker_dns *x = w->dns;
    struct dns_answer mx;
    if (!ask(w, d, d->domain, DNS_TYPE_MX, &mx))
        return ROUTE_WAIT;
    int64_t expires = dns_cache_expiry_ms(x->cache, d->domain, DNS_TYPE_MX);
    enum route_state v = mx_verdict(d, &mx);
    if (v != ROUTE_READY) {
        x->lookups++;
        return v;
    }
    int implicit = mx.status == DNS_NODATA;
    if (implicit) {   /* RFC 5321 5.1: the domain itself, preference 0 */
        mx.n = 1;
        mx.mx[0].pref = 0;
        snprintf(mx.mx[0].host, sizeof(mx.mx[0].host), "%s", d->domain);
    }
    dns_order_mx(&mx, &x->rng);
    int waiting = 0, tempfail = 0;
    struct dns_answer *addrs = malloc(2 * mx.n * sizeof(*addrs));
    if (addrs == NULL) {
        set_error(d, NULL, "out of memory%s%s", "", "");
        return ROUTE_DEFER;
    }
    for (size_t i = 0; i < mx.n; i++) {
        for (int k = 0; k < 2; k++) {   /* AAAA, then A */
            int qt = k == 0 ? DNS_TYPE_AAAA : DNS_TYPE_A;
            struct dns_answer *a = &addrs[2 * i + (size_t)k];
            if (!ask(w, d, mx.mx[i].host, qt, a)) {
                waiting = 1;
                continue;
            }
            tempfail |= a->status == DNS_TEMPFAIL;
            expires = earlier(expires, dns_cache_expiry_ms(x->cache, mx.mx[i].host, qt));
        }
    }
    if (waiting) {
        free(addrs);
        return ROUTE_WAIT;
    }
    x->lookups += 1 + 2 * mx.n;
    struct nexthop *hops = calloc(DNS_HOPS_MAX, sizeof(*hops));
    size_t n = 0;
    for (size_t i = 0; hops && i < mx.n; i++) {
        add_hops(w, hops, &n, mx.mx[i].host, &addrs[2 * i]);
        add_hops(w, hops, &n, mx.mx[i].host, &addrs[2 * i + 1]);
    }
    free(addrs);
    if (hops == NULL || n == 0) {
        free(hops);
        if (implicit && !tempfail) {
            set_error(d, "5.1.2", "5.1.2 domain %s has no MX and no address%s", d->domain, "");
            return ROUTE_BOUNCE;
        }
        set_error(d, NULL, "no address found for the MX hosts of %s%s", d->domain,
                  tempfail ? " (lookup failed; will retry)" : "");
        return ROUTE_DEFER;
    }
    return install_hops(w, d, hops, n, expires);
}

int dest_route_stale(const struct worker *w, const struct dest *d)
{
    return d->use_dns && d->have_hop && d->nconns == 0 && d->hops_expire_ms &&
           w->now_ms >= d->hops_expire_ms;
}

static void hop_move(struct worker *w, struct dest *d)
{
    size_t next = (d->hop_idx + 1) % d->nhops;
    struct mxhost *h = host_get(w, &d->hops[next]);
    if (h == NULL)
        return;   /* stays on the current hop */
    d->hop_idx = next;
    d->hop = d->hops[next];
    dest_set_host(w, d, h);
    d->hop_failed = 0;
    if (w->e->verbose)
        fprintf(stderr, "tern: %s: trying the next MX address %s\n", d->domain, d->hop.host);
}

int dest_hop_failed(struct worker *w, struct dest *d)
{
    if (d->hops == NULL || d->nhops < 2)
        return 0;
    if (d->hop_failed)
        return 1;   /* counted once per hop */
    if (d->hops_tried + 1 >= d->nhops) {
        d->hops_tried = 0;   /* every address failed: the next round starts over */
        return 0;
    }
    d->hops_tried++;
    d->hop_failed = 1;
    dest_hop_settled(w, d);
    return 1;
}

int dest_hop_settled(struct worker *w, struct dest *d)
{
    if (!d->hop_failed)
        return 1;
    if (d->nconns > 0)
        return 0;
    hop_move(w, d);
    return !d->hop_failed;
}

/* ---- lifecycle --------------------------------------------------------------- */

int worker_dns_init(struct worker *w, char *err, size_t errlen)
{
    const struct net_config *n = &w->cfg->net;
    struct worker_dns *x = calloc(1, sizeof(*x));
    if (x == NULL) {
        snprintf(err, errlen, "out of memory");
        return 0;
    }
    w->dns = x;
    x->rng = (uint64_t)worker_clock_ms() ^ ((uint64_t)w->id << 32);
    for (int i = 0; i < DNS_SOCKS_MAX; i++)
        x->socks[i].op = (struct op){OP_DNS, NULL};
    uint32_t floor_s = (uint32_t)(n->dns_ttl_min_ms / 1000);
    struct dns_cache_limits lim = {
        .ttl_min = floor_s ? floor_s : 1,   /* a zero TTL would ask again at once */
        .ttl_max = (uint32_t)(n->dns_ttl_max_ms / 1000),
        .negative_max = (uint32_t)(n->dns_negative_ttl_ms / 1000),
        .tempfail = DNS_TEMPFAIL_S,
    };
    if (lim.ttl_max < lim.ttl_min)
        lim.ttl_max = lim.ttl_min;
    if (lim.negative_max < lim.ttl_min)
        lim.negative_max = lim.ttl_min;
    x->cache = dns_cache_new(&lim);
    if (x->cache == NULL) {
        snprintf(err, errlen, "out of memory");
        return 0;
    }
    struct ares_options o;
    memset(&o, 0, sizeof(o));
    o.sock_state_cb = sock_state_cb;
    o.sock_state_cb_data = w;
    o.timeout = (int)n->dns_timeout_ms;
    o.tries = n->dns_tries;
    o.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
    int rc = ares_init_options(&x->ch, &o,
                               ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES |
                                   ARES_OPT_FLAGS);
    if (rc != ARES_SUCCESS) {
        snprintf(err, errlen, "DNS resolver: %s", ares_strerror(rc));
        return 0;
    }
    x->ch_ok = 1;
    if (n->dns_servers[0] && (rc = ares_set_servers_ports_csv(x->ch, n->dns_servers)) != ARES_SUCCESS) {
        snprintf(err, errlen, "dns_servers: %s", ares_strerror(rc));
        return 0;
    }
    return 1;
}

void worker_dns_free(struct worker *w)
{
    struct worker_dns *x = w->dns;
    if (x == NULL)
        return;
    x->closing = 1;
    if (x->ch_ok)
        ares_destroy(x->ch);   /* pending lookups end in on_answer */
    for (size_t i = 0; i < DNS_PENDING_BUCKETS; i++)
        while (x->pending[i])
            pending_unlink_free(x, x->pending[i]);
    dns_cache_free(x->cache);
    free(x);
    w->dns = NULL;
}

void worker_dns_report(const struct worker *w, FILE *out)
{
    const struct worker_dns *x = w->dns;
    if (x == NULL || x->lookups == 0)
        return;
    double hit = 1.0 - (double)x->queries / (double)x->lookups;
    fprintf(out, "dns worker=%d lookups=%llu queries=%llu cache_hit_rate=%.3f answers=%llu "
                 "timeouts=%llu\n",
            w->id, (unsigned long long)x->lookups, (unsigned long long)x->queries,
            hit < 0 ? 0 : hit, (unsigned long long)x->answers, (unsigned long long)x->timeouts);
}
