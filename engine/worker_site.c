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

static void unlist(struct dest *d)
{
    struct site *s = d->site;
    if (!d->slisted)
        return;
    if (d->sprev)
        d->sprev->snext = d->snext;
    else
        s->ready_head = d->snext;
    if (d->snext)
        d->snext->sprev = d->sprev;
    else
        s->ready_tail = d->sprev;
    d->snext = d->sprev = NULL;
    d->slisted = 0;
}

static void list_tail(struct site *s, struct dest *d)
{
    d->snext = NULL;
    d->sprev = s->ready_tail;
    if (s->ready_tail)
        s->ready_tail->snext = d;
    else
        s->ready_head = d;
    s->ready_tail = d;
    d->slisted = 1;
}

void site_unlist(struct dest *d)
{
    unlist(d);
}

int site_slot_wait(const struct worker *w, const struct dest *d)
{
    return d->slisted && d->nconns == 0 && d->site->nconns >= dest_max_conns(d) &&
           !d->msg_limited && !dest_paused(w, d);
}

void site_dest_detach(struct dest *d)
{
    unlist(d);
    d->site = NULL;
}

void site_dest_update(struct worker *w, struct dest *d)
{
    struct site *s = may_share(w, d) ? site_find(d) : NULL;
    if (s == d->site)
        return;
    site_dest_detach(d);
    d->site = s;
}

struct dest *site_next_ready(struct site *s)
{
    struct dest *d;
    while ((d = s->ready_head) != NULL && d->nready == 0)
        unlist(d);
    return d;
}

void site_rotate(struct site *s, struct dest *d)
{
    if (!d->slisted || s->ready_tail == d)
        return;
    unlist(d);
    list_tail(s, d);
}

void site_conn_avail(struct conn *c, int on)
{
    struct site *s = c->site;
    if (s == NULL || c->savail == on)
        return;
    if (on) {
        c->sprev = NULL;
        c->snext = s->avail;
        if (s->avail)
            s->avail->sprev = c;
        s->avail = c;
    } else {
        if (c->sprev)
            c->sprev->snext = c->snext;
        else
            s->avail = c->snext;
        if (c->snext)
            c->snext->sprev = c->sprev;
        c->snext = c->sprev = NULL;
    }
    c->savail = on;
}

size_t site_offer(struct worker *w, struct dest *d)
{
    struct site *s = d->site;
    size_t soon_free = 0;
    if (s == NULL || d->nready == 0)
        return 0;
    if (!d->slisted)
        list_tail(s, d);
    /* The connections take the list in order, so d's mail goes once the
     * destinations before it have had theirs. conn_hand_job may close c
     * (it can only leave the list then): the next is read first. */
    for (struct conn *c = s->avail, *next; c; c = next) {
        next = c->snext;
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
