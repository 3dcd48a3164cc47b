/*
 * worker_site.c - destinations that share connections.
 *
 * Many domains are hosted by one provider: their MX records name the same
 * hosts. A connection to such a host was opened to one address, and its
 * TLS session was checked against one policy entry; if that entry does
 * not check the domain's own name (dest_session_key leaves the domain out
 * exactly then), nothing the connection established depends on which of
 * those domains its next message is for. Such destinations form a site
 * (worker_int.h, struct site): a connection opened for one of them carries
 * the others' mail when it has room, and the site counts as one
 * destination for max_connections.
 *
 * Before, each destination held its own connections: a worker with a
 * hundred destinations on one host kept a hundred or more open (two
 * workers competed for the host's slots, and lost slots cost a close and
 * a handshake), each carrying a message or two per round trip. A site
 * keeps the few connections its mail needs busy, so more messages share
 * each write, TLS record and read, on both sides (bench/README.md,
 * "Optimisations").
 *
 * Counting as one destination suits a receiver that answers at once, as
 * on loopback, where the CPU is what limits and every further connection
 * costs a handshake and smaller writes. Across a network each connection
 * carries a message (DATA), or a pipeline's worth (BDAT), per round trip:
 * 40 connections to a receiver 20 ms away carried 2,000 messages a second
 * with DATA, where the same destinations with connections of their own
 * carried 4,600 (bench/run --rtt 20, bench/README.md "Round trips"). So a
 * site whose mail waits for room, while its transactions take no longer
 * than its quickest (the round trip, not a queue at either end, is what
 * holds them), may open more: half as many again per period (about a
 * round trip), up to max_connections for each of its destinations and
 * this worker's share of the host's limit; and max_connections / 4 fewer
 * per period once its transactions take twice their least (a queue has
 * formed: more connections would only lengthen it). This is TCP Vegas's
 * reading of delay, applied to connections. A site that holds all the
 * connections it may open, still held back by the round trip, and whose
 * receiver offers CHUNKING then stacks more transactions on each (half as
 * many again per period, up to SMTP_PIPELINE_MAX: at 20 ms, 4 in flight
 * carried 14,802 msg/s, 8 carried 23,054); a queue halves the extra
 * depth before it takes connections back.
 *
 * What stays per destination: its ready list and routing, its message
 * rate (checked for each message handed to a connection, whosever it
 * is), its counters (job->d), the domain in each event. What stays per
 * connection's own destination: opening, connection failures and their
 * backoff, the reply patterns seen on it.
 *
 * OWNERSHIP
 *   A host owns its sites (h->sites), freed with the host (sites_free):
 *   d->site and c->site only borrow. A destination's host cannot be
 *   freed while d->host points to it, and d->site is dropped whenever
 *   d->host changes (dest_set_host calls site_dest_detach). A host with
 *   a site that has open connections or listed destinations is not
 *   unused (worker_hosts.c), so c->site outlives c.
 */
#include <stdlib.h>
#include <string.h>

#include "engine/worker_int.h"

/* A verdict on the extra connections once per least transaction time
 * (a round trip, as TCP adjusts its window once per round trip), but no
 * more often than SITE_PERIOD_MIN_US, and over SITE_PERIOD_TXNS at least. */
#define SITE_PERIOD_MIN_US  10000
#define SITE_PERIOD_TXNS    8
#define SITE_MIN_WINDOW_US  10000000    /* the least time: of the last 10-20 s */
/* A transaction within this of its least counts as unqueued: loopback's
 * round trip, and the engine's own loop, are tens of microseconds. */
#define SITE_RTT_SLACK_US   200

static int limits_same(const struct dest_limits *a, const struct dest_limits *b)
{
    return a->max_connections == b->max_connections &&
           a->max_connections_per_host == b->max_connections_per_host &&
           a->max_messages_per_connection == b->max_messages_per_connection &&
           a->idle_ms == b->idle_ms && a->max_txns_in_flight == b->max_txns_in_flight;
}

/* May d's mail ride a connection of another destination (and theirs d's)? */
static int may_share(const struct worker *w, const struct dest *d)
{
    const struct policy_entry *e = d->pol;
    return w->cfg->share_connections && d->host != NULL && d->have_hop && e != NULL &&
           !(e->level == POLICY_SECURE && e->nmatch == 0) && d->net.nsources == 0 &&
           d->cert_plaintext_until_ms <= w->now_ms;
}

static struct site *site_find(const struct dest *d)
{
    struct mxhost *h = d->host;
    for (struct site *s = h->sites; s; s = s->next)
        if (s->pol == d->pol && s->addrlen == d->hop.addrlen &&
            memcmp(&s->addr, &d->hop.addr, d->hop.addrlen) == 0 && limits_same(&s->lim, &d->lim))
            return s;
    struct site *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;   /* d goes without one: its own connections only */
    s->pol = d->pol;
    memcpy(&s->addr, &d->hop.addr, d->hop.addrlen);
    s->addrlen = d->hop.addrlen;
    s->lim = d->lim;
    s->next = h->sites;
    h->sites = s;
    return s;
}

static struct dest *dest_of(struct age_node *a)
{
    return a ? (struct dest *)(void *)((char *)a - offsetof(struct dest, snode)) : NULL;
}

static struct conn *conn_of(struct age_node *a)
{
    return a ? (struct conn *)(void *)((char *)a - offsetof(struct conn, snode)) : NULL;
}

/* The site's lists keep their order only: the times are not used. */
static void unlist(struct dest *d)
{
    if (d->snode.listed)   /* only a listed destination is sure to have a site */
        age_list_remove(&d->site->ready, &d->snode);
}

static void list_tail(struct site *s, struct dest *d)
{
    age_list_push(&s->ready, &d->snode, 0);
}

void site_unlist(struct dest *d)
{
    unlist(d);
}

int site_max_conns(const struct dest *d)
{
    int max = dest_max_conns(d);
    /* a backoff lowered d's limit: the site keeps to it */
    return max < d->lim.max_connections ? max : max + d->site->extra;
}

int site_depth(const struct site *s)
{
    int d = s->lim.max_txns_in_flight + s->depth_extra;
    return d < SMTP_PIPELINE_MAX ? d : SMTP_PIPELINE_MAX;
}

int site_slot_wait(const struct worker *w, const struct dest *d)
{
    return d->snode.listed && d->nconns == 0 && d->site->nconns >= site_max_conns(d) &&
           !d->msg_limited && !dest_paused(w, d);
}

void site_dest_detach(struct dest *d)
{
    unlist(d);
    if (d->site)
        d->site->ndests--;
    d->site = NULL;
}

void site_dest_update(struct worker *w, struct dest *d)
{
    struct site *s = may_share(w, d) ? site_find(d) : NULL;
    if (s == d->site)
        return;
    site_dest_detach(d);
    d->site = s;
    if (s)
        s->ndests++;
}

/* The verdict of one period (site_txn_time). */
static void site_period(struct worker *w, struct site *s)
{
    int64_t least = s->min_cur_us;
    if (s->min_prev_us >= 0 && s->min_prev_us < least)
        least = s->min_prev_us;
    int64_t mean = s->period_sum_us / s->period_n;
    int step = s->lim.max_connections / 4 > 0 ? s->lim.max_connections / 4 : 1;
    /* The host's limit is shared by the workers (each has its own sites):
     * a site's share of it, so that two workers' sites do not take slots
     * from each other (a surplus idle connection gives its slot to a
     * destination waiting for one: a close and a handshake each time). */
    int nw = w->e->nworkers > 0 ? w->e->nworkers : 1;
    int host_share = (s->lim.max_connections_per_host + nw - 1) / nw;
    int cap = s->lim.max_connections * (s->ndests > 0 ? s->ndests : 1);
    if (cap > host_share)
        cap = host_share;
    cap = cap > s->lim.max_connections ? cap - s->lim.max_connections : 0;
    int rtt_bound = s->waited && mean <= least + least / 2 + SITE_RTT_SLACK_US;
    if (rtt_bound && s->extra < cap) {
        /* half as many again: from 20, 60 takes three periods */
        int grow = (s->lim.max_connections + s->extra) / 2;
        if (grow < step)
            grow = step;
        s->extra = s->extra + grow < cap ? s->extra + grow : cap;
        w->st.site_grown++;
        /* Destinations waiting for a slot of the site are woken only by a
         * close (site_slot_wait): those on the list may open the new ones
         * now. (The first is often the one whose connection took the
         * site's mail, already at its own max_connections.) */
        for (struct dest *d = site_next_ready(s); d; d = dest_of(d->snode.younger))
            if (d->nready)
                worker_mark_dirty(w, d);
    } else if (rtt_bound && s->chunking && s->lim.max_txns_in_flight > 1 &&
               site_depth(s) < SMTP_PIPELINE_MAX) {
        /* All the connections it may open: deeper pipelines, half as
         * many transactions again on each. (max_transactions_in_flight
         * = 1 says one at a time, and is kept.) */
        s->depth_extra += (s->lim.max_txns_in_flight + s->depth_extra) / 2;
        w->st.site_deepened++;
    } else if (mean > 2 * least + SITE_RTT_SLACK_US && (s->depth_extra > 0 || s->extra > 0)) {
        /* a queue: the pipelines give back first, then the connections */
        if (s->depth_extra > 0)
            s->depth_extra /= 2;
        else
            s->extra = s->extra > step ? s->extra - step : 0;
    }
    s->period_since_us = w->now_us;
    s->period_sum_us = 0;
    s->period_n = 0;
    s->waited = 0;
}

void site_txn_time(struct worker *w, struct site *s, int64_t us)
{
    if (us < 0)
        return;
    if (s->min_since_us == 0 || w->now_us - s->min_since_us >= SITE_MIN_WINDOW_US) {
        /* the least of the last two windows: a route that got slower is
         * believed within 20 s */
        s->min_prev_us = s->min_since_us ? s->min_cur_us : -1;
        s->min_cur_us = us;
        s->min_since_us = w->now_us;
    } else if (us < s->min_cur_us) {
        s->min_cur_us = us;
    }
    if (s->period_n == 0)
        s->period_since_us = w->now_us;
    s->period_sum_us += us;
    s->period_n++;
    int64_t period = s->min_cur_us > SITE_PERIOD_MIN_US ? s->min_cur_us : SITE_PERIOD_MIN_US;
    if (w->now_us - s->period_since_us >= period && s->period_n >= SITE_PERIOD_TXNS)
        site_period(w, s);
}

struct dest *site_next_ready(struct site *s)
{
    struct dest *d;
    while ((d = dest_of(age_list_oldest(&s->ready))) != NULL && d->nready == 0)
        unlist(d);
    return d;
}

void site_rotate(struct site *s, struct dest *d)
{
    if (!d->snode.listed || s->ready.youngest == &d->snode)
        return;
    unlist(d);
    list_tail(s, d);
}

void site_conn_avail(struct conn *c, int on)
{
    struct site *s = c->site;
    if (s == NULL || c->snode.listed == on)
        return;
    if (on)
        age_list_push(&s->avail, &c->snode, 0);
    else
        age_list_remove(&s->avail, &c->snode);
}

size_t site_offer(struct worker *w, struct dest *d)
{
    struct site *s = d->site;
    size_t soon_free = 0;
    if (s == NULL || d->nready == 0)
        return 0;
    if (!d->snode.listed)
        list_tail(s, d);
    /* The connections take the list in order, so d's mail goes once the
     * destinations before it have had theirs. conn_hand_job may close c
     * (it can only leave the list then): the next is read first. */
    for (struct conn *c = conn_of(s->avail.youngest), *next; c; c = next) {
        next = conn_of(c->snode.older);   /* the most recently available first */
        if (c->d == d || c->state != CONN_SMTP || c->quitting)
            continue;
        if (d->nready && smtp_client_room(&c->smtp))
            conn_hand_job(w, c);
        if (c->state == CONN_SMTP && c->job && !c->quitting &&
            c->msgs + 1 < (uint64_t)c->d->lim.max_messages_per_connection)
            soon_free++;
    }
    return soon_free;
}

void sites_free(struct mxhost *h)
{
    for (struct site *s = h->sites, *n; s; s = n) {
        n = s->next;
        free(s);
    }
    h->sites = NULL;
}
