/*
 * worker_shaping.c - a destination's traffic shaping on the worker: the
 * message and connection rates (per destination, and per MX host shared
 * by all workers through struct engine), backoff after 421s and replies
 * matching backoff_pattern, and the egress address pool. See
 * engine/shaping.h for the buckets and the backoff rule.
 */
#include "engine/worker_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

void dest_shaping_init(struct worker *w, struct dest *d)
{
    config_dest_net(w->cfg, d->domain, &d->net);
    /* spread destinations sharing a pool over its addresses */
    d->src_next = (unsigned)(w->ndests + (size_t)w->id);
}

/* A bucket of d and one of its MX host: both must allow, and a refusal by
 * the second is not charged to the first. The host bucket is taken first
 * because giving a token back is not possible lock-free. */
static int take_both(struct rate_bucket *mine, struct rate my_rate, struct rate_bucket *host,
                     struct rate host_rate)
{
    int64_t t = worker_mono_us();
    if (host && rate_take(host, host_rate, t) != 0)
        return 0;
    return rate_take(mine, my_rate, t) == 0;
}

int dest_may_connect(struct worker *w, struct dest *d)
{
    const struct net_config *n = &w->cfg->net;
    /* Under a message rate, connections open one at a time: once one is
     * ready and held back by the rate (msg_limited), no more are needed;
     * otherwise a long ready list would open max_connections idle ones. */
    if ((d->net.msg_rate.per_sec > 0 || n->host_msg_rate.per_sec > 0) && d->nconnecting > 0)
        return 0;
    struct rate_bucket *hb = n->host_conn_rate.per_sec > 0 ? &w->e->host_conn_rate[d->host->slot] : NULL;
    return take_both(&d->conn_bucket, d->net.conn_rate, hb, n->host_conn_rate);
}

int dest_may_send(struct worker *w, struct dest *d)
{
    const struct net_config *n = &w->cfg->net;
    struct rate_bucket *hb = n->host_msg_rate.per_sec > 0 ? &w->e->host_msg_rate[d->host->slot] : NULL;
    d->msg_limited = !take_both(&d->msg_bucket, d->net.msg_rate, hb, n->host_msg_rate);
    return !d->msg_limited;
}

int dest_max_conns(const struct dest *d)
{
    return shaping_concurrency(&d->bo, d->lim.max_connections);
}

int dest_paused(const struct worker *w, const struct dest *d)
{
    return d->bo.paused_until_ms > w->now_ms;
}

int dest_surplus_conn(const struct dest *d)
{
    int max = dest_max_conns(d);
    if (d->nconns <= max)
        return 0;   /* the common case: no walk */
    int live = 0;
    for (const struct conn *c = d->conns; c; c = c->dnext)
        live += c->state != CONN_CLOSING && !c->quitting;
    return live > max;
}

void dest_reply_seen(struct worker *w, struct dest *d, int code, const char *text)
{
    if (code / 100 == 2) {
        /* A 250 during the pause is for mail sent before the backoff: it
         * must not undo the backoff at once. */
        if (!dest_paused(w, d))
            shaping_backoff_ok(&d->bo, d->lim.max_connections);
        return;
    }
    if (code != 421 && !(code / 100 == 4 && config_net_backoff_match(&w->cfg->net, text)))
        return;
    shaping_backoff_hit(&d->bo, d->nconns, w->now_ms, w->cfg->net.backoff_pause_ms);
    fprintf(stderr, "tern: %s: backing off for %lld ms, at most %d connections: %d %.80s\n",
            d->domain, (long long)w->cfg->net.backoff_pause_ms, d->bo.limit, code, text);
}

int dest_bind_source(struct dest *d, int fd, int family)
{
    for (int k = 0; k < d->net.nsources; k++) {
        const struct sockaddr_storage *ss = &d->net.sources[(d->src_next + (unsigned)k) % (unsigned)d->net.nsources];
        if (ss->ss_family != family)
            continue;
        d->src_next += (unsigned)k + 1;
        return bind(fd, (const struct sockaddr *)ss, config_net_source_len(ss)) == 0;
    }
    return 1;   /* none of this family: the kernel chooses */
}

int dest_shaping_idle(const struct worker *w, const struct dest *d)
{
    /* A bucket whose time is not ahead of now allows the next event just
     * as a fresh one (zero) does (rate_take). */
    int64_t t = worker_mono_us();
    return !dest_paused(w, d) && atomic_load(&d->msg_bucket.tat_us) <= t &&
           atomic_load(&d->conn_bucket.tat_us) <= t;
}
