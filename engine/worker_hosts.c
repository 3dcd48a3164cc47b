/*
 * worker_hosts.c - a worker's MX hosts (struct mxhost, one per
 * "host:port"): the table they are found in, the list of those with
 * destinations waiting for a connection slot, and forgetting the ones no
 * destination uses any more.
 *
 * Why: a worker sending to millions of domains meets hundreds of
 * thousands of MX hosts. With a table of fixed size and no freeing, its
 * chains grew with them (every host_get walked one), the 50 ms tick
 * walked every host to find the few with waiters, and the hosts stayed
 * for the life of the run (352 bytes each). Now the table doubles as it
 * fills, the tick walks only hosts with waiters, and a host that no
 * destination has used for destination_forget is freed, the way
 * worker_forget.c frees destinations.
 *
 * What points to a host: destinations (d->host, counted in h->refs, set
 * only through dest_set_host), a destination on its wait list
 * (d->wait_host; the list is non-empty then), and connections through
 * their destination (counted in h->nconns). A host is freed with none of
 * these and with its remembered TLS tier and plaintext fallback expired
 * (a new host starts from the preferred tier, as an expired memory
 * does).
 */
#include "engine/worker_int.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/text.h"

#define HOST_TABLE_MIN        16     /* buckets at first (power of two); doubles */
#define HOSTS_FORGET_PER_TICK 256    /* hosts looked at per tick */

static struct mxhost *host_of(struct age_node *a)
{
    return (struct mxhost *)(void *)((char *)a - offsetof(struct mxhost, age));
}

static int table_grow(struct worker *w)
{
    size_t nsize = w->htab_size ? w->htab_size * 2 : HOST_TABLE_MIN;
    struct mxhost **nt = calloc(nsize, sizeof(*nt));
    if (nt == NULL)
        return 0;
    for (size_t i = 0; i < w->htab_size; i++)
        for (struct mxhost *h = w->htab[i], *n; h; h = n) {
            n = h->next;
            size_t j = h->hash & (nsize - 1);
            h->next = nt[j];
            nt[j] = h;
        }
    free(w->htab);
    w->htab = nt;
    w->htab_size = nsize;
    return 1;
}

struct mxhost *host_get(struct worker *w, const struct nexthop *hop)
{
    char key[sizeof(((struct mxhost *)0)->key)];
    snprintf(key, sizeof(key), "%s:%u", hop->host, (unsigned)hop->port);
    uint64_t hash = text_hash_lower(key, 0);
    if (w->htab != NULL)
        for (struct mxhost *h = w->htab[hash & (w->htab_size - 1)]; h; h = h->next)
            if (h->hash == hash && strcmp(h->key, key) == 0)
                return h;
    if ((w->htab == NULL || w->nhosts + 1 > w->htab_size) && !table_grow(w))
        return NULL;
    struct mxhost *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return NULL;
    memcpy(h->key, key, sizeof(key));
    h->hash = hash;
    h->all_conns = &w->e->host_conns[hop->host_slot];
    h->slot = hop->host_slot;
    h->all_waiting = &w->e->host_waiting[hop->host_slot];
    h->tier = TLS_TIER_PREFERRED;
    size_t i = hash & (w->htab_size - 1);
    h->next = w->htab[i];
    w->htab[i] = h;
    w->nhosts++;
    /* unused until a destination takes it: forgotten if none does */
    age_list_push(&w->host_ages, &h->age, w->now_ms);
    return h;
}

void dest_set_host(struct worker *w, struct dest *d, struct mxhost *h)
{
    if (d->host == h)
        return;
    struct mxhost *old = d->host;
    site_dest_detach(d);   /* a site is a host's: d finds its new one */
    slow_start_unwait(d);  /* so is its slow-start list */
    d->host = h;
    if (h != NULL && h->refs++ == 0)
        age_list_remove(&w->host_ages, &h->age);
    if (old != NULL && --old->refs == 0)
        age_list_push(&w->host_ages, &old->age, w->now_ms);
}

void host_waiters_changed(struct worker *w, struct mxhost *h)
{
    int want = host_first_waiting(h) != NULL;
    if (want == h->wnode.listed)
        return;
    if (want)
        age_list_push(&w->waiting_hosts, &h->wnode, w->now_ms);
    else
        age_list_remove(&w->waiting_hosts, &h->wnode);
}

/* hosts_wake_waiting, on the tick, walks only the hosts with waiters.
 * Slots that another worker's connections freed: this worker's waiting
 * destinations hear of them here (its own closes wake them at once). The
 * first is scheduled while it stays first in line: the other worker may
 * take the slot in between, and then it waits on in its place, without
 * asking another idle connection to QUIT (taken off the list, it went to
 * the back and did: connections churned and, in the transactional
 * benchmark, a message waited up to a second). Once it has a connection,
 * it passes any room left on to the next (dest_schedule). */
void hosts_wake_waiting(struct worker *w)
{
    for (struct age_node *a = age_list_oldest(&w->waiting_hosts); a; a = a->younger) {
        struct mxhost *h = (struct mxhost *)(void *)((char *)a - offsetof(struct mxhost, wnode));
        struct dest *d = host_first_waiting(h);
        if (d && atomic_load(h->all_conns) < d->lim.max_connections_per_host)
            worker_mark_dirty(w, d);
    }
}

static int host_unused(const struct worker *w, const struct mxhost *h)
{
    for (const struct site *s = h->sites; s; s = s->next)
        if (s->nconns || age_list_oldest(&s->ready))
            return 0;
    return h->refs == 0 && h->nconns == 0 && host_first_waiting(h) == NULL && !h->wnode.listed &&
           h->tier_until_ms <= w->now_ms && h->plaintext_until_ms <= w->now_ms;
}

static void host_free(struct worker *w, struct mxhost *h)
{
    if (w->e->verbose)
        fprintf(stderr, "tern: MX host %s forgotten\n", h->key);
    struct mxhost **p = &w->htab[h->hash & (w->htab_size - 1)];
    while (*p != h)
        p = &(*p)->next;
    *p = h->next;
    age_list_remove(&w->host_ages, &h->age);
    w->nhosts--;
    w->st.hosts_forgotten++;
    sites_free(h);
    free(h);
}

/* age_list_sweep's question: freed now (1), or a memory still running
 * (or in use again), so looked at again later (0)? */
static int free_if_unused(void *ctx, struct age_node *a)
{
    struct worker *w = ctx;
    struct mxhost *h = host_of(a);
    if (!host_unused(w, h))
        return 0;
    host_free(w, h);
    return 1;
}

void worker_hosts_forget_tick(struct worker *w)
{
    int64_t keep = w->cfg->destination_forget_ms;
    if (keep <= 0 || w->stopping)
        return;
    age_list_sweep(&w->host_ages, w->now_ms, keep, HOSTS_FORGET_PER_TICK, free_if_unused, w);
}

void worker_hosts_free(struct worker *w)
{
    for (size_t i = 0; i < w->htab_size; i++)
        for (struct mxhost *h = w->htab[i], *n; h; h = n) {
            n = h->next;
            sites_free(h);
            free(h);
        }
    free(w->htab);
    w->htab = NULL;
    w->htab_size = 0;
    w->nhosts = 0;
}
