/*
 * worker_slowstart.c - the resumption slow start: while no cached TLS
 * session is left for the connections being opened to a host, open one
 * at a time, so that a busy route pays for one full handshake and resumes
 * the rest with the sessions it brings back (a TLS 1.3 server sends about
 * two tickets per handshake), instead of opening twenty full handshakes at
 * once. Routes that yield no sessions are not held back.
 *
 * Held-back destinations wait on their host's list (h->ss_wait, an
 * age_list.h queue: oldest first, O(1) removal), and sessions arriving on
 * the host wake them in order: one per TLS 1.3 session (each resumes one connection),
 * all for a TLS 1.2 one (it resumes any number). Before the list they
 * waited for the 50 ms tick: a burst to a hundred new destinations on one
 * host climbed to its connections one doubling per tick, ~350 ms (a
 * quick `bench/run tail`, 500 messages: p50 ~375 ms). The tick still looks
 * at them too (dest_schedule lists a destination left with mail).
 *
 * A destination leaves the list when it is woken, when it opens a
 * connection, and when its host changes or it is freed (dest_set_host).
 */
#include "engine/worker_int.h"

#include <limits.h>
#include <stddef.h>

int slow_start_may_open(struct worker *w, struct dest *d, long *sessions)
{
    /* A site's destinations share its sessions: the slow start is the
     * site's (a burst to a hundred destinations on one host opened a
     * full handshake each). Destinations on one host that are not a site
     * (share_connections = no, another policy entry) mostly share them
     * too: the host's count (behind a 20 ms round trip, `tail` with the
     * host's limit lifted opened 1,938 full handshakes for 3,000
     * messages, one per destination before any ticket came back). */
    int connecting = d->site ? d->site->nconnecting : d->host->nconnecting;
    int pre_tls = d->site ? d->site->npre_tls : d->host->npre_tls;
    if (connecting == 0 || d->no_sessions || !w->cfg->tls_resumption ||
        !dest_tls_expected(w, d))
        return 1;
    if (*sessions < 0) {   /* once per schedule: opening takes none yet */
        char key[TLS_CACHE_KEY_MAX];
        dest_session_key(w, d, dest_start_tier(w, d), key, sizeof(key));
        size_t n = tls_session_cache_count(w->sessions, key, (uint64_t)(w->now_ms / 1000));
        *sessions = n > LONG_MAX ? LONG_MAX : (long)n;
    }
    /* each connection not yet at STARTTLS will take one session (a
     * TLS 1.2 session resumes any number: LONG_MAX) */
    return *sessions > pre_tls;
}

/* The destination whose ss_node this is. */
static struct dest *waiting_dest(struct age_node *a)
{
    return (struct dest *)(void *)((char *)a - offsetof(struct dest, ss_node));
}

void slow_start_wait(struct worker *w, struct dest *d)
{
    if (!d->ss_node.listed && d->host != NULL)
        age_list_push(&d->host->ss_wait, &d->ss_node, w->now_ms);
}

void slow_start_unwait(struct dest *d)
{
    /* d->host is the one it waits on: dest_set_host unlists it first */
    if (d->ss_node.listed)
        age_list_remove(&d->host->ss_wait, &d->ss_node);
}

void slow_start_sessions(struct worker *w, struct mxhost *h, int single_use, int reusable)
{
    int n = reusable ? INT_MAX : single_use;
    struct age_node *a;
    while (n > 0 && (a = age_list_oldest(&h->ss_wait)) != NULL) {
        struct dest *d = waiting_dest(a);
        age_list_remove(&h->ss_wait, a);
        if (d->nready == 0)
            continue;   /* its mail went another way: the session is for the next */
        worker_mark_dirty(w, d);
        w->st.slow_start_woken++;
        n--;
    }
}
