/*
 * worker_forget.c - a worker frees the destinations it no longer needs.
 *
 * Every next-hop domain a worker sees gets a struct dest (~3.3 KB); a
 * worker sending to millions of domains a day would grow without bound
 * if it kept them all. A destination unused for destination_forget
 * (config key; 0: never) is freed, and simply made again by dest_get when
 * mail for it comes back.
 *
 * The sweep: every destination is on the worker's age list (age_list.h),
 * ordered by when it was last looked at. Each tick looks at the oldest
 * end only, at most FORGET_PER_TICK entries, and stops at the first one
 * looked at less than destination_forget ago: no walk over all
 * destinations. One found unused since destination_forget (last_used_ms:
 * dest_schedule and conn_free set it) and free of every pointer to it is
 * freed; any other goes to the young end and is looked at again a
 * destination_forget later. So a destination is forgotten between
 * destination_forget and twice that after its last use.
 *
 * What may point to a destination, and the test that it no longer does:
 *   jobs (job->d)            ready ones: nready; in flight (on any
 *                            connection: a site's carry others' mail): inflight
 *   its site's ready list    snode.listed
 *   connections (c->d)       conn_refs, counted from conn_open to conn_free,
 *                            so closing and lingering ones count too
 *   the tick list            tick_listed
 *   a host's wait list       host_waiting
 *   the dirty list           dirty
 *   DNS questions in flight  dns_refs (their waiter lists, worker_dns.c)
 * What it still holds that a new destination would not have: a reconnect
 * backoff (next_connect_ms), a dead destination's backoff
 * (backoff_until_ms), a shaping pause or rate bucket still ahead of now
 * (dest_shaping_idle), the remembered client-certificate failure at level
 * may (cert_plaintext_until_ms), and counters not yet in a dest-stats
 * event (written here first; with Redis not ready, it waits). What
 * forgetting does lose is in docs/design.md, "Forgetting destinations".
 */
#include "engine/worker_int.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

/* Destinations looked at per tick (20 ticks a second): thousands a second
 * per worker, far more than new domains arrive, yet a tick stays short. */
#define FORGET_PER_TICK 256

static struct dest *dest_of(struct age_node *a)
{
    return (struct dest *)(void *)((char *)a - offsetof(struct dest, age));
}

void dest_forget_track(struct worker *w, struct dest *d)
{
    if (d->dnext)
        d->dnext->dprev = d;   /* dest_get put it first */
    d->last_used_ms = w->now_ms;
    age_list_push(&w->dest_ages, &d->age, w->now_ms);
    w->st.dests_live++;
    if (w->st.dests_live > w->st.dests_peak)
        w->st.dests_peak = w->st.dests_live;
}

/* Nothing points to d and it holds no state a new one would lack. */
static int dest_unused(const struct worker *w, const struct dest *d)
{
    return d->conn_refs == 0 && d->nconns == 0 && d->nready == 0 && d->ready_head == NULL &&
           d->inflight == 0 && !d->snode.listed &&
           !d->tick_listed && !d->host_waiting && !d->dirty && d->dns_refs == 0 &&
           !d->dns_waiting && d->next_connect_ms <= w->now_ms &&
           d->backoff_until_ms <= w->now_ms && d->cert_plaintext_until_ms <= w->now_ms &&
           dest_shaping_idle(w, d);
}

/* Its counters written out: at once when they changed (Redis ready). */
static int dest_counters_out(struct worker *w, struct dest *d)
{
    if (!d->counters_dirty)
        return 1;
    return worker_dest_stats_event(w, d);
}

static void dest_forget(struct worker *w, struct dest *d)
{
    if (w->e->verbose)
        fprintf(stderr, "tern: %s: destination forgotten (unused for %lld ms)\n", d->domain,
                (long long)(w->now_ms - d->last_used_ms));
    age_list_remove(&w->dest_ages, &d->age);
    dest_set_host(w, d, NULL);   /* its host may be forgotten in turn */
    dest_remove(w, d);
    w->st.dests_live--;
    w->st.dests_forgotten++;
    free(d->domain);
    free(d->hops);
    free(d);
}

/* age_list_sweep's question: forgotten now (1), or in use or used
 * lately, so looked at again later (0)? */
static int forget_if_unused(void *ctx, struct age_node *a)
{
    struct worker *w = ctx;
    struct dest *d = dest_of(a);
    /* Left on its site's list with nothing ready (its own connections
     * took the rest): only the list's head is ever taken off as empty. */
    if (d->snode.listed && d->nready == 0)
        site_unlist(d);
    if (w->now_ms - d->last_used_ms < w->cfg->destination_forget_ms || !dest_unused(w, d) ||
        !dest_counters_out(w, d))
        return 0;
    dest_forget(w, d);
    return 1;
}

void worker_forget_tick(struct worker *w)
{
    int64_t keep = w->cfg->destination_forget_ms;
    /* Stopping: the exit report and the last dest-stats keep them all. */
    if (keep <= 0 || w->stopping)
        return;
    age_list_sweep(&w->dest_ages, w->now_ms, keep, FORGET_PER_TICK, forget_if_unused, w);
}
