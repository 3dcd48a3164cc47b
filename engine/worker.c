/*
 * worker.c - the worker thread: ring, Redis connection on the ring,
 * partitions, destinations, the loop, stopping and draining.
 * Connections live in worker_conn.c, outcomes in worker_outcome.c.
 */
#include "engine/worker_int.h"

#include <errno.h>
#include <netdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <netinet/tcp.h>

#include "engine/fifo.h"
#include "engine/resp_feed.h"
#include "engine/resp_pool.h"
#include "engine/text.h"

int64_t worker_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t worker_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* worker_sqe returns a submission entry, flushing the queue when full. */
struct io_uring_sqe *worker_sqe(struct worker *w)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);
    while (sqe == NULL) {
        io_uring_submit(&w->ring);
        sqe = io_uring_get_sqe(&w->ring);
    }
    return sqe;
}

/* outq_tail is where new bytes go: behind everything not yet sent. While a
 * send reads `active`, or once `pending` holds bytes, that is `pending`. */
struct buf *outq_tail(struct outq *q)
{
    return q->inflight || buf_used(&q->pending) ? &q->pending : &q->active;
}

void outq_append(struct outq *q, const void *p, size_t n)
{
    buf_append(outq_tail(q), p, n);
}

struct buf *outq_next(struct outq *q)
{
    if (q->inflight)
        return NULL;
    if (buf_used(&q->active) == 0 && buf_used(&q->pending) > 0) {
        struct buf t = q->active;
        q->active = q->pending;
        q->pending = t;
    }
    return buf_used(&q->active) ? &q->active : NULL;
}

/* ---- Redis links (worker_redis.c makes and mends them) ------------------ */

void worker_link_push(struct worker *w, struct redis_link *l, enum redis_req kind, int partition,
                      int hold, struct queue_msg *msg)
{
    void *rq = l->rq;
    if (!fifo_make_room(&rq, sizeof(*l->rq), &l->rq_head, l->rq_len, &l->rq_cap)) {
        fprintf(stderr, "tern: worker %d: out of memory\n", w->id);
        abort();
    }
    l->rq = rq;
    l->rq[(l->rq_head + l->rq_len) % l->rq_cap] = (struct redis_pending){kind, partition, hold, msg, NULL, 0};
    l->rq_len++;
}

void worker_rq_push(struct worker *w, enum redis_req kind, int partition)
{
    worker_link_push(w, worker_link_of(w, partition), kind, partition, -1, NULL);
}

void worker_msg_release(struct worker *w, struct queue_msg *m)
{
    w->bytes_in_memory -= m->data_len;
    w->in_memory--;
    queue_msg_free(m);
}

static struct partition *part_of(struct worker *w, int id);

/* ack_resend_later keeps cmd (taking it over) to send again at due_ms.
 * Out of memory it is dropped: its messages come back with their leases. */
static void ack_resend_later(struct worker *w, int partition, uint8_t *cmd, size_t len, int64_t due_ms)
{
    if (w->nresend == w->resend_cap) {
        size_t ncap = w->resend_cap ? w->resend_cap * 2 : 16;
        struct ack_resend *n = realloc(w->resend, ncap * sizeof(*n));
        if (n == NULL) {
            fprintf(stderr, "tern: worker %d: partition %d: an ack to send again (out of memory) is "
                            "dropped; its messages are left to their leases\n", w->id, partition);
            free(cmd);
            return;
        }
        w->resend = n;
        w->resend_cap = ncap;
    }
    w->resend[w->nresend++] = (struct ack_resend){partition, cmd, len, due_ms};
    w->st.acks_resent++;
}

/* acks_resend sends the acks kept by ack_resend_later that are due, each
 * to its partition's link as the map now has it. */
static void acks_resend(struct worker *w)
{
    size_t keep = 0;
    for (size_t i = 0; i < w->nresend; i++) {
        struct ack_resend *r = &w->resend[i];
        struct redis_link *l = worker_link_of(w, r->partition);
        if (r->due_ms > w->now_ms || !worker_link_ready(w, l)) {
            w->resend[keep++] = *r;
            continue;
        }
        buf_append(outq_tail(&l->out), r->cmd, r->cmd_len);
        worker_link_push(w, l, RQ_ACK, r->partition, -1, NULL);
        struct redis_pending *pr = &l->rq[(l->rq_head + l->rq_len - 1) % l->rq_cap];
        pr->cmd = r->cmd;
        pr->cmd_len = r->cmd_len;
    }
    w->nresend = keep;
}

/* bounce_released: a reply a partition's ack waited for came (ok) or
 * will never come (the link was lost, or Redis refused the report). */
static void bounce_released(struct worker *w, int hold, int ok)
{
    struct partition *p = hold >= 0 ? part_of(w, hold) : NULL;
    if (p == NULL)
        return;
    p->bounce_holds--;
    if (!ok)
        p->bounce_failed = 1;
}

void worker_rq_drop(struct worker *w, struct redis_link *l)
{
    for (size_t i = 0; i < l->rq_len; i++) {
        struct redis_pending *pr = &l->rq[(l->rq_head + i) % l->rq_cap];
        if (pr->kind == RQ_DATA && pr->msg) {
            w->fetch_inflight -= pr->msg->data_len;
            worker_msg_release(w, pr->msg);
        }
        if (pr->kind == RQ_ENQUEUE)
            bounce_released(w, pr->hold, 0);
        if (pr->cmd) {   /* it may or may not have run: send it again */
            ack_resend_later(w, pr->partition, pr->cmd, pr->cmd_len, w->now_ms);
            pr->cmd = NULL;
        }
    }
    l->rq_head = 0;
    l->rq_len = 0;
}

size_t worker_rq_pending(const struct worker *w)
{
    size_t n = 0;
    for (int i = 0; i < w->nlinks; i++)
        n += w->links[i]->rq_len;
    return n;
}

int worker_redis_idle(const struct worker *w)
{
    for (int i = 0; i < w->nlinks; i++) {
        const struct redis_link *l = w->links[i];
        if (l->down)
            continue;   /* what it held went with it (dropped at a reconnect) */
        if (l->rq_len || l->out.inflight || buf_used(&l->out.active) || buf_used(&l->out.pending))
            return 0;
    }
    return 1;
}

/* The command builders append to whichever buffer is not being sent. */
struct buf *worker_redis_buf(struct worker *w, int partition)
{
    return outq_tail(&worker_link_of(w, partition)->out);
}

static void redis_kick(struct worker *w)
{
    if (w->redis_dead)
        return;
    for (int i = 0; i < w->nlinks; i++) {
        struct redis_link *l = w->links[i];
        if (l->down)
            continue;
        struct buf *b = outq_next(&l->out);
        if (b == NULL)
            continue;
        struct io_uring_sqe *sqe = worker_sqe(w);
        io_uring_prep_send(sqe, l->fd, buf_peek(b), buf_used(b), MSG_NOSIGNAL);
        io_uring_sqe_set_data(sqe, &l->op_send);
        l->out.inflight = 1;
    }
}

void worker_redis_arm_recv(struct worker *w, struct redis_link *l)
{
    if (l->recv_armed || w->redis_dead || l->down)
        return;
    struct io_uring_sqe *sqe = worker_sqe(w);
    void *dst;
    size_t len;
    /* Inside a long body the bytes go straight into its string (one copy
     * fewer; resp_feed.h). The reader stays until this receive completes:
     * worker_redis_tick replaces it only with no receive armed. */
    l->recv_direct = resp_feed_direct(l->reader, &dst, &len);
    if (l->recv_direct)
        io_uring_prep_recv(sqe, l->fd, dst, len, 0);
    else
        io_uring_prep_recv(sqe, l->fd, l->recv, REDIS_RECV_SIZE, 0);
    io_uring_sqe_set_data(sqe, &l->op_recv);
    l->recv_armed = 1;
}

/* Returns the number of SCRIPT LOADs queued on l (replies to come). */
int worker_redis_load_scripts(struct worker *w, struct redis_link *l)
{
    const char *const src[] = {queue_script_enqueue_src(), queue_script_take_src(),
                               queue_script_ack_src(), queue_script_report_src()};
    int n = (int)(sizeof(src) / sizeof(src[0]));
    for (int i = 0; i < n; i++) {
        queue_cmd_script_load(outq_tail(&l->out), src[i]);
        worker_link_push(w, l, RQ_SCRIPT, -1, -1, NULL);
    }
    return n;
}

/* ---- destinations ------------------------------------------------------- */

static uint64_t hash_domain(const char *s)
{
    return text_hash_lower(s, 0);
}

static struct dest *dest_get(struct worker *w, const char *domain)
{
    uint64_t h = hash_domain(domain);
    size_t i = h & (w->dtab_size - 1);
    for (struct dest *d = w->dtab[i]; d; d = d->hnext)
        if (strcasecmp(d->domain, domain) == 0)
            return d;
    if (w->ndests + 1 > w->dtab_size) {
        size_t nsize = w->dtab_size * 2;
        struct dest **nt = calloc(nsize, sizeof(*nt));
        if (nt == NULL)
            return NULL;
        for (struct dest *d = w->dests; d; d = d->dnext) {
            size_t j = hash_domain(d->domain) & (nsize - 1);
            d->hnext = nt[j];
            nt[j] = d;
        }
        free(w->dtab);
        w->dtab = nt;
        w->dtab_size = nsize;
        i = h & (nsize - 1);
    }
    struct dest *d = calloc(1, sizeof(*d));
    if (d == NULL || (d->domain = strdup(domain)) == NULL) {
        free(d);
        return NULL;
    }
    d->pol = policy_lookup(&w->cfg->policy, domain);
    config_dest_limits(w->cfg, domain, &d->lim);
    const char *why = "no route";
    d->have_hop = resolver_lookup(&w->resolver, domain, &d->hop, 1, &why) == 1;
    if (d->have_hop) {
        struct mxhost *mh = host_get(w, &d->hop);
        if (mh == NULL) {
            d->have_hop = 0;
            why = "out of memory";
        }
        dest_set_host(w, d, mh);
    }
    d->no_route = d->have_hop ? NULL : why;
    d->use_dns = config_route(w->cfg, domain) == NULL;   /* no static route: MX lookups */
    dest_shaping_init(w, d);
    d->hnext = w->dtab[i];
    w->dtab[i] = d;
    d->dnext = w->dests;
    w->dests = d;
    w->ndests++;
    dest_forget_track(w, d);
    return d;
}

void dest_remove(struct worker *w, struct dest *d)
{
    struct dest **pp = &w->dtab[hash_domain(d->domain) & (w->dtab_size - 1)];
    while (*pp && *pp != d)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = d->hnext;
    if (d->dprev)
        d->dprev->dnext = d->dnext;
    else
        w->dests = d->dnext;
    if (d->dnext)
        d->dnext->dprev = d->dprev;
    w->ndests--;
}

void worker_mark_dirty(struct worker *w, struct dest *d)
{
    if (d->dirty)
        return;
    d->dirty = 1;
    d->dirty_next = w->dirty;
    w->dirty = d;
}

static void dest_push(struct worker *w, struct dest *d, struct job *j)
{
    j->next = NULL;
    if (d->ready_tail)
        d->ready_tail->next = j;
    else
        d->ready_head = j;
    d->ready_tail = j;
    d->nready++;
    worker_mark_dirty(w, d);
}

static void host_wait(struct worker *w, struct dest *d)
{
    struct mxhost *h = d->host;
    if (d->host_waiting)
        return;
    d->host_waiting = 1;
    atomic_fetch_add(h->all_waiting, 1);
    d->wait_host = h;
    age_list_push(&h->wait, &d->host_wait_node, w->now_ms);
    host_waiters_changed(w, h);
}

/* The host is full and d has mail but no connection: an idle connection
 * of another destination on the host says QUIT, and its slot comes to d
 * when it closes. Idle connections would otherwise hold the host's slots
 * until their idle timeout while d gets nothing. The victim is one of a
 * destination with several connections, or one idle for a while: the
 * only connection of a destination that is just between two takes would
 * leave that destination empty-handed in turn, and slots would pass round
 * robin, a close and a handshake every few messages. */
static void host_release_idle(struct worker *w, struct dest *d)
{
    for (struct conn *c = w->conns; c; c = c->next) {
        if (c->d == d || c->d->host != d->host || !c->idle || c->quitting ||
            c->state != CONN_SMTP)
            continue;
        int64_t idle_for = c->d->lim.idle_ms - (c->deadline_ms - w->now_ms);
        if (c->d->nconns >= 2 || idle_for >= HOST_STEAL_IDLE_MS) {
            conn_quit_or_close(w, c);
            return;
        }
    }
}

/* d got a connection without being woken: it waits no more. (With
 * thousands of destinations on one host, the tail benchmark, a walk of
 * the wait list here was the engine's hottest function.) */
static void host_unwait(struct worker *w, struct dest *d)
{
    struct mxhost *h = d->wait_host;
    if (!d->host_waiting)
        return;
    age_list_remove(&h->wait, &d->host_wait_node);
    d->host_waiting = 0;
    atomic_fetch_sub(h->all_waiting, 1);
    host_waiters_changed(w, h);
}

void host_wake(struct worker *w, struct mxhost *h)
{
    struct dest *d = host_first_waiting(h);
    if (d == NULL)
        return;
    age_list_remove(&h->wait, &d->host_wait_node);
    d->host_waiting = 0;
    atomic_fetch_sub(h->all_waiting, 1);
    host_waiters_changed(w, h);
    worker_mark_dirty(w, d);
}

/* Hand ready jobs to idle connections, open new ones as the ready list
 * outgrows the connections that will soon be free, within the limits. */
static void dest_schedule_ready(struct worker *w, struct dest *d)
{
    if (d->nready == 0)
        return;
    if (w->stopping) {
        /* Late take replies and requeued messages go back to the queue. */
        while (d->ready_head) {
            struct job *j = d->ready_head;
            d->ready_head = j->next;
            d->nready--;
            outcome_return(w, j, "engine stopping");
        }
        d->ready_tail = NULL;
        return;
    }
    enum route_state rs = dest_route(w, d);
    if (rs == ROUTE_WAIT)
        return;   /* woken when the DNS answers come */
    if (rs != ROUTE_READY) {
        while (d->ready_head) {
            struct job *j = d->ready_head;
            d->ready_head = j->next;
            d->nready--;
            if (rs == ROUTE_BOUNCE)
                outcome_fail_status(w, j, d->bounce_status, d->no_route);
            else
                outcome_defer(w, j, d->no_route);
        }
        d->ready_tail = NULL;
        return;
    }
    if (d->backoff_until_ms > w->now_ms) {
        dest_defer_all(w, d, d->last_error[0] ? d->last_error : "destination in backoff");
        return;
    }
    if (dest_paused(w, d))
        return;   /* backing off: woken on the tick */
    site_dest_update(w, d);
    /* Idle connections take ready mail now; busy ones that may carry
     * another message will take the next one as soon as they finish. */
    size_t soon_free = 0;
    /* (Its own list: a walk over every connection of the worker, ~5,000
     * open at once for `tail` behind a 20 ms round trip, was 30% of the
     * engine's CPU.) */
    for (struct conn *c = d->conns; c; c = c->dnext) {
        if (c->state != CONN_SMTP)
            continue;
        if ((c->idle || c->njobs) && d->nready)   /* busy ones may take pipelined mail */
            conn_hand_job(w, c);
        if (c->job && !c->quitting &&
                 c->msgs + 1 < (uint64_t)d->lim.max_messages_per_connection)
            soon_free++;
    }
    /* What its own connections left, its site's connections take as
     * they have room (worker_site.c). */
    soon_free += site_offer(w, d);
    /* (while the message rate holds mail back, open connections are enough) */
    if (w->stopping || d->next_connect_ms > w->now_ms || (d->msg_limited && d->nconns) ||
        !dest_hop_settled(w, d))
        return;
    /* New connections only while the ready list outgrows the ones being
     * set up and the busy ones that will take more. */
    long sessions = -1;
    while (d->nready > (size_t)d->nconnecting + soon_free && d->nconns < dest_max_conns(d)) {
        if (d->site && d->site->nconns >= site_max_conns(d))
            break;
        if (!slow_start_may_open(w, d, &sessions)) {
            slow_start_wait(w, d);   /* woken as sessions come back */
            break;
        }
        /* A freed host slot is for the destinations waiting without a
         * connection (in any worker), not for a busy one that would take
         * it first. */
        if (d->nconns > 0 && atomic_load(d->host->all_waiting) > 0)
            break;
        if (!dest_may_connect(w, d))
            break;
        /* Reserve the host slot first: other workers count on it too. */
        if (atomic_fetch_add(d->host->all_conns, 1) >= d->lim.max_connections_per_host) {
            atomic_fetch_sub(d->host->all_conns, 1);
            /* Only a destination without a connection claims a slot (the
             * next one freed, or an idle one's): one that has connections
             * tries again when next scheduled. Freed slots going to busy
             * destinations left others empty-handed, and they took slots
             * back from destinations only idle between two takes: a
             * close and a handshake every ~10 messages, half the engine's
             * CPU in the bulk benchmark (bench/README.md). */
            if (d->nconns == 0 && !d->host_waiting) {
                /* once per wait: one idle connection freed for it (the
                 * walk over every connection, again at each schedule of
                 * a waiting destination, was 2.4% of tail's CPU) */
                host_release_idle(w, d);
                host_wait(w, d);
            }
            break;
        }
        if (conn_open(w, d) == NULL) {
            atomic_fetch_sub(d->host->all_conns, 1);
            d->next_connect_ms = w->now_ms + 1000;   /* not again on every tick */
            break;
        }
        if (d->host_waiting)
            host_unwait(w, d);
        slow_start_unwait(d);
        if (d->nready <= (size_t)d->nconnecting)
            site_unlist(d);   /* its own connections will take the rest */
        if (d->consecutive_failures)
            break;   /* probe with one connection while failing */
    }
    /* Mail without room that a limit keeps from a new connection: its
     * own max_connections or its site's (worker_site.c, site_txn_time). */
    if (d->site && d->nready > (size_t)d->nconnecting + soon_free &&
        (d->nconns >= dest_max_conns(d) || d->site->nconns >= site_max_conns(d)))
        d->site->waited = 1;
}

static void dest_schedule(struct worker *w, struct dest *d)
{
    d->last_used_ms = w->now_ms;   /* not forgotten soon (worker_forget.c) */
    dest_schedule_ready(w, d);
    /* Mail left that no host slot will wake it for: a time (reconnect
     * backoff, pause, rate) or a busy connection; the tick looks again. */
    if (d->nready && !d->host_waiting && !d->tick_listed && !site_slot_wait(w, d)) {
        d->tick_listed = 1;
        d->tick_next = w->tick_dests;
        w->tick_dests = d;
    }
    /* Room left on the host that this destination did not use (it may
     * have been woken with nothing left to send): pass it on. */
    struct mxhost *h = d->host;
    if (h && host_first_waiting(h) && atomic_load(h->all_conns) < d->lim.max_connections_per_host)
        host_wake(w, h);
}

/* ---- per-destination counters -------------------------------------------- */

static void dest_counter_fields(const struct dest *d, char vals[][24], const char **f)
{
    const struct { const char *name; uint64_t v; } c[] = {
        {"conns", d->n.conns}, {"hs_full", d->n.hs_full}, {"hs_resumed", d->n.hs_resumed},
        {"resume_refused", d->n.resume_refused}, {"msgs", d->n.msgs},
    };
    for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
        snprintf(vals[i], 24, "%llu", (unsigned long long)c[i].v);
        f[2 * i] = c[i].name;
        f[2 * i + 1] = vals[i];
    }
}

int worker_dest_stats_event(struct worker *w, struct dest *d)
{
    char vals[5][24];
    const char *f[12];
    dest_counter_fields(d, vals, f);
    f[10] = "domain";
    f[11] = d->domain;
    int p = queue_partition_of(&w->cfg->queue, d->domain, strlen(d->domain));
    if (!worker_redis_ready(w, p) ||
        !queue_cmd_event(worker_redis_buf(w, p), &w->cfg->queue, p, "dest-stats", f, 12))
        return 0;
    worker_rq_push(w, RQ_EVENT, p);
    d->counters_dirty = 0;
    return 1;
}

/* A `dest-stats` event per destination whose counters changed since the
 * last one (every DEST_STATS_EVERY_MS and at exit). */
static void worker_dest_stats_events(struct worker *w)
{
    for (struct dest *d = w->dests; d; d = d->dnext)
        if (d->counters_dirty)
            worker_dest_stats_event(w, d);
}

static int dest_stats_dirty(const struct worker *w)
{
    for (const struct dest *d = w->dests; d; d = d->dnext)
        if (d->counters_dirty)
            return 1;
    return 0;
}

static int cmp_dest_msgs(const void *a, const void *b)
{
    const struct dest *x = *(const struct dest *const *)a, *y = *(const struct dest *const *)b;
    return x->n.msgs < y->n.msgs ? 1 : x->n.msgs > y->n.msgs ? -1 : strcmp(x->domain, y->domain);
}

void worker_dest_report(const struct worker *w, FILE *out, size_t max)
{
    size_t n = 0;
    for (struct dest *d = w->dests; d; d = d->dnext)
        n += d->n.conns > 0;
    struct dest **v = n ? malloc(n * sizeof(*v)) : NULL;
    if (v == NULL)
        return;
    size_t k = 0;
    for (struct dest *d = w->dests; d; d = d->dnext)
        if (d->n.conns)
            v[k++] = d;
    qsort(v, k, sizeof(*v), cmp_dest_msgs);
    for (size_t i = 0; i < k && i < max; i++) {
        const struct dest *d = v[i];
        fprintf(out, "dest %s conns=%llu hs_full=%llu hs_resumed=%llu resume_refused=%llu "
                     "msgs=%llu msgs_per_conn=%.1f\n", d->domain, (unsigned long long)d->n.conns,
                (unsigned long long)d->n.hs_full, (unsigned long long)d->n.hs_resumed,
                (unsigned long long)d->n.resume_refused, (unsigned long long)d->n.msgs,
                (double)d->n.msgs / (double)d->n.conns);
    }
    if (k > max)
        fprintf(out, "dest (%zu more destinations of worker %d not listed)\n", k - max, w->id);
    free(v);
}

/* ---- partitions: take and ack ------------------------------------------ */

static void take_batches(struct worker *w)
{
    if (w->stopping || w->redis_dead || w->slots_stale)
        return;
    /* Bodies first: a take's bodies are all asked for before the next. */
    if (w->fetch_wait_len > 0 || w->bytes_in_memory >= (size_t)w->cfg->max_bytes_in_memory_worker)
        return;
    for (int i = 0; i < w->nparts; i++) {
        struct partition *p = &w->parts[i];
        if (p->take_inflight || p->next_poll_ms > w->now_ms || !worker_redis_ready(w, p->id))
            continue;
        long room = (long)w->cfg->max_in_memory - (long)w->in_memory - (long)w->in_take;
        if (room < w->cfg->batch / 2 + 1)
            return;
        int n = room < w->cfg->batch ? (int)room : w->cfg->batch;
        /* Due retries and expired leases need not move on every take: a
         * take of one message after a notice would pay two range queries. */
        int moves = w->now_ms - p->moved_ms >= QUEUE_MOVES_EVERY_MS;
        if (!queue_cmd_take(worker_redis_buf(w, p->id), &w->cfg->queue, &w->scripts, p->id, n, w->now_ms, moves)) {
            fprintf(stderr, "tern: worker %d: cannot build take (out of memory); stopping\n", w->id);
            w->redis_dead = 1;
            worker_stop(w);
            return;
        }
        worker_rq_push(w, RQ_TAKE, p->id);
        if (moves)
            p->moved_ms = w->now_ms;
        p->take_inflight = 1;
        p->refilled = 0;
        p->take_asked = n;
        w->in_take += (size_t)n;
    }
}

static struct partition *part_of(struct worker *w, int id)
{
    for (int i = 0; i < w->nparts; i++)
        if (w->parts[i].id == id)
            return &w->parts[i];
    return NULL;
}

static void ack_item_free(struct ack_item *a)
{
    free(a->bounce);
    free(a->remaining);
}

/* When a partition's held outcomes are due for their ack call at the
 * latest: the oldest has waited ACK_FLUSH_MS (flush_acks sends them then;
 * wait_ms wakes the loop for it). */
static int64_t ack_due_ms(const struct partition *p)
{
    return p->first_ack_ms + ACK_FLUSH_MS;
}

/* The report's partition is delivered by this worker: with --drain it
 * must take again to find it. */
static void bounce_refill(struct worker *w, int partition)
{
    struct partition *bp = part_of(w, partition);
    if (bp) {
        bp->empty = 0;
        bp->refilled = 1;
        bp->next_poll_ms = 0;
    }
}

/* send_cross_bounces: a bounce must be stored before the ack that
 * removes its message. With one Redis the order of the commands on the
 * one link sees to it. On a cluster the bounce's partition may be on
 * another master, and any bounce may be redirected while its ack is not:
 * every bounce is sent ahead, and the outcome is acked once the whole
 * wave's replies came (p->bounce_holds; flush_acks). Returns 0 while one
 * of them cannot be sent yet (its link is not ready). */
static int send_cross_bounces(struct worker *w, struct partition *p, const struct redis_link *al)
{
    int all = 1;
    for (size_t k = 0; k < p->nacks; k++) {
        struct ack_item *a = &p->acks[k];
        if (a->bounce == NULL || a->bounce_sent)
            continue;
        struct redis_link *bl = worker_link_of(w, a->bounce_partition);
        if (bl == al && w->cluster == NULL)
            continue;   /* goes just before the ack */
        if (!worker_link_ready(w, bl)) {
            all = 0;
            continue;
        }
        outq_append(&bl->out, a->bounce, a->bounce_len);
        for (int b = 0; b < a->bounce_cmds * QUEUE_REPORT_CMDS; b++) {
            worker_link_push(w, bl, RQ_ENQUEUE, a->bounce_partition, p->id, NULL);
            p->bounce_holds++;
        }
        a->bounce_sent = 1;
        bounce_refill(w, a->bounce_partition);
    }
    return all;
}

/* drop_unbounced: a bounce sent ahead failed or its link was lost, and
 * which one is not known: the outcomes whose bounce went ahead are not
 * acked. Their messages stay leased and come back when the lease ends;
 * the bounce made again then has the same id, so one that did get
 * stored is not stored twice (dsn_report_id). */
static void drop_unbounced(struct worker *w, struct partition *p)
{
    size_t keep = 0, dropped = 0;
    for (size_t k = 0; k < p->nacks; k++) {
        if (p->acks[k].bounce_sent) {
            ack_item_free(&p->acks[k]);
            dropped++;
        } else {
            p->acks[keep++] = p->acks[k];
        }
    }
    p->nacks = keep;
    p->bounce_failed = 0;
    fprintf(stderr, "tern: worker %d: partition %d: %zu report(s) not stored; their messages are "
                    "left to their leases\n", w->id, p->id, dropped);
}

/* bounced_first orders p's outcomes (stably) so that those that may be
 * acked now come first: no bounce, or a bounce of a wave that was
 * stored. Returns how many; the rest wait for their bounce. SIZE_MAX
 * when out of memory. */
static size_t bounced_first(struct partition *p)
{
    size_t waiting = 0;
    for (size_t k = 0; k < p->nacks; k++)
        waiting += p->acks[k].bounce != NULL && !p->acks[k].bounce_sent;
    if (waiting == 0)
        return p->nacks;   /* the usual batch: nothing to reorder */
    struct ack_item *t = malloc(p->nacks * sizeof(*t));
    if (t == NULL)
        return SIZE_MAX;
    size_t n = 0;
    for (size_t k = 0; k < p->nacks; k++)
        if (p->acks[k].bounce == NULL || p->acks[k].bounce_sent)
            t[n++] = p->acks[k];
    size_t ready = n;
    for (size_t k = 0; k < p->nacks; k++)
        if (!(p->acks[k].bounce == NULL || p->acks[k].bounce_sent))
            t[n++] = p->acks[k];
    memcpy(p->acks, t, p->nacks * sizeof(*t));
    free(t);
    return ready;
}

/* keep_waiting: the first `done` outcomes were acked; the others (their
 * bounce not stored yet) move to the front, their strings copied into a
 * fresh arena, and the old one, with the acked outcomes' strings, goes.
 * One whose strings cannot be copied is dropped: its lease brings the
 * message back. */
static void keep_waiting(struct worker *w, struct partition *p, size_t done)
{
    struct arena fresh = {0};
    size_t keep = 0;
    for (size_t k = done; k < p->nacks; k++) {
        struct ack_item *a = &p->acks[k];
        int ok = 1;
        for (size_t f = 1; ok && f < a->nfields; f += 2)
            ok = (a->fields[f] = arena_strdup(&fresh, a->fields[f])) != NULL;
        if (ok && a->raw_len)
            ok = (a->raw = arena_memdup(&fresh, a->raw, a->raw_len)) != NULL;
        if (!ok) {
            fprintf(stderr, "tern: worker %d: message %s: out of memory; left to its lease\n", w->id, a->id);
            ack_item_free(a);
            continue;
        }
        p->acks[keep++] = *a;
    }
    p->nacks = keep;
    arena_free(&p->ack_strs);
    p->ack_strs = fresh;   /* the outcomes' arena pointers name this field */
    if (keep)
        p->first_ack_ms = w->now_ms;
}

static void flush_acks(struct worker *w)
{
    if (w->nresend)
        acks_resend(w);
    for (int i = 0; i < w->nparts; i++) {
        struct partition *p = &w->parts[i];
        if (p->nacks == 0)
            continue;
        struct redis_link *al = worker_link_of(w, p->id);
        if (!worker_link_ready(w, al))
            continue;   /* held until Redis is back and ready (worker_redis.c) */
        /* Bigger batches: the script call's fixed cost is paid per call.
         * A drain holding no message has nothing more to add: its last
         * acks go at once (the drain ends when they are answered). */
        if (!w->stopping && !(w->e->drain && w->in_memory == 0) && p->nacks < ACK_FLUSH_MIN &&
            w->now_ms < ack_due_ms(p))
            continue;
        /* On a cluster the bounces go ahead, one wave at a time; outcomes
         * whose bounce came after the wave left wait for the next batch
         * (a stream of failures never holds up the others' acks). */
        size_t nready = p->nacks;
        if (w->cluster) {
            if (p->bounce_holds > 0)
                continue;
            if (p->bounce_failed)
                drop_unbounced(w, p);
            if (p->nacks == 0 || (nready = bounced_first(p)) == SIZE_MAX)
                continue;
            if (nready == 0) {
                send_cross_bounces(w, p, al);
                continue;
            }
        }
        struct queue_outcome *o = calloc(nready, sizeof(*o));
        if (o == NULL)
            continue;   /* retried on the next iteration */
        int returned = 0;
        for (size_t k = 0; k < nready; k++) {
            struct ack_item *a = &p->acks[k];
            o[k] = (struct queue_outcome){
                .id = a->id, .kind = a->kind, .remaining_rcpts = a->remaining,
                .retry_at_ms = a->retry_at, .lease_until_ms = a->lease_until, .fields = (const char *const *)a->fields,
                .nfields = a->nfields, .raw = a->raw, .raw_len = a->raw_len, .raw_nfields = a->raw_nfields,
            };
            returned |= a->kind == QUEUE_RETURNED;
            if (a->bounce && !a->bounce_sent) {   /* one Redis: stored just before the ack */
                outq_append(&al->out, a->bounce, a->bounce_len);
                for (int b = 0; b < a->bounce_cmds * QUEUE_REPORT_CMDS; b++)
                    worker_link_push(w, al, RQ_ENQUEUE, a->bounce_partition, -1, NULL);
                bounce_refill(w, a->bounce_partition);
            }
        }
        struct buf *out = outq_tail(&al->out);
        size_t start = buf_used(out);
        if (queue_cmd_ack(out, &w->cfg->queue, &w->scripts, p->id, o, nready, w->now_ms)) {
            worker_rq_push(w, RQ_ACK, p->id);
            if (w->cluster) {   /* kept until its reply: resent if redirected, refused or lost */
                struct redis_pending *pr = &al->rq[(al->rq_head + al->rq_len - 1) % al->rq_cap];
                pr->cmd_len = buf_used(out) - start;
                if ((pr->cmd = malloc(pr->cmd_len)) != NULL)
                    memcpy(pr->cmd, buf_peek(out) + start, pr->cmd_len);
            }
            for (size_t k = 0; k < nready; k++)
                ack_item_free(&p->acks[k]);
            if (nready == p->nacks) {
                arena_reset(&p->ack_strs);
                p->nacks = 0;
            } else {
                keep_waiting(w, p, nready);
                send_cross_bounces(w, p, al);
            }
            if (returned) {
                p->empty = 0;   /* they are ready again in Redis */
                p->refilled = 1;
                p->next_poll_ms = 0;
            }
        } else {
            /* The command buffer is now unusable; stop. The leases bring
             * these messages back: at-least-once, never lost. */
            fprintf(stderr, "tern: worker %d: cannot build ack (out of memory); stopping\n", w->id);
            w->redis_dead = 1;
            worker_stop(w);
        }
        free(o);
    }
}

/* worker_ack_slot returns a fresh outcome record for partition's next ack
 * batch, or NULL when out of memory (the lease then brings it back). */
struct ack_item *worker_ack_slot(struct worker *w, int partition)
{
    struct partition *p = part_of(w, partition);
    if (p == NULL)
        return NULL;
    if (p->nacks == p->acks_cap) {
        size_t ncap = p->acks_cap ? p->acks_cap * 2 : 64;
        struct ack_item *n = realloc(p->acks, ncap * sizeof(*n));
        if (n == NULL)
            return NULL;
        p->acks = n;
        p->acks_cap = ncap;
    }
    if (p->nacks == 0)
        p->first_ack_ms = w->now_ms;
    struct ack_item *a = &p->acks[p->nacks++];
    memset(a, 0, sizeof(*a));
    a->arena = &p->ack_strs;
    return a;
}

/* fetch_wait_push queues a taken message for its HMGET (FIFO).
 * Returns 0 when out of memory. */
static int fetch_wait_push(struct worker *w, struct queue_msg *m)
{
    if (w->fetch_wait_len == 0)
        w->fetch_wait_head = 0;
    if (w->fetch_wait_head + w->fetch_wait_len == w->fetch_wait_cap) {
        size_t ncap = w->fetch_wait_cap ? w->fetch_wait_cap * 2 : 256;
        struct queue_msg **n = realloc(w->fetch_wait, ncap * sizeof(*n));
        if (n == NULL)
            return 0;
        w->fetch_wait = n;
        w->fetch_wait_cap = ncap;
    }
    w->fetch_wait[w->fetch_wait_head + w->fetch_wait_len++] = m;
    return 1;
}

/*
 * fetch_waiting sends the HMGET of each waiting message (metadata and
 * body), in take
 * order, while the bytes held stay within max_bytes_in_memory (a body
 * larger than the whole budget goes alone). Bounding the bodies asked
 * for also bounds what Redis buffers for this worker: a take of 256
 * 100 KiB bodies asked at once made Redis fault in fresh pages for 25 MB
 * of replies, a third of its CPU in the large benchmark. Stopping, the
 * rest are asked for regardless (each is then returned to the queue), so
 * a stop never waits on the budget.
 */
static void fetch_waiting(struct worker *w)
{
    size_t budget = (size_t)w->cfg->max_bytes_in_memory_worker;
    if (w->now_ms < w->fetch_hold_ms)
        return;   /* an ASK whose master was not ready: not at every turn of the loop */
    while (w->fetch_wait_len > 0) {
        struct queue_msg *m = w->fetch_wait[w->fetch_wait_head];
        if (!worker_redis_ready(w, m->partition))
            return;   /* in take order: the rest wait with it */
        if (!w->stopping && w->bytes_in_memory > 0 &&
            (w->bytes_in_memory >= budget || m->data_len > budget - w->bytes_in_memory))
            return;
        /* A few MiB asked for at a time, not the whole budget: Redis
         * builds every reply of the commands it has read before it
         * writes any, so 64 MiB of HMGETs made it copy 64 MiB into fresh
         * reply buffers (page faults, then freed) before the first body
         * left, and the start of a run of 100 KiB messages waited ~50 ms
         * for it (bench/README.md, Optimisations). One body larger than
         * the window goes alone. */
        if (w->fetch_inflight > 0 && w->fetch_inflight + m->data_len > FETCH_WINDOW_BYTES)
            return;
        w->fetch_wait_head++;
        w->fetch_wait_len--;
        /* Its metadata and body follow in the HMGET sent now
         * (queue.h: queue_cmd_take_data). */
        if (!queue_cmd_take_data(worker_redis_buf(w, m->partition), &w->cfg->queue, m)) {
            fprintf(stderr, "tern: worker %d: cannot ask for message %s (out of memory); left to its lease\n",
                    w->id, m->id);
            queue_msg_free(m);
            w->in_memory--;
            continue;
        }
        worker_link_push(w, worker_link_of(w, m->partition), RQ_DATA, m->partition, -1, m);
        w->bytes_in_memory += m->data_len;
        w->fetch_inflight += m->data_len;
        if (w->fetch_inflight > w->st.peak_fetch_bytes)
            w->st.peak_fetch_bytes = w->fetch_inflight;
        if (w->bytes_in_memory > w->st.peak_bytes_in_memory)
            w->st.peak_bytes_in_memory = w->bytes_in_memory;
    }
}

static void on_take(struct worker *w, int partition, redisReply *r)
{
    struct partition *p = part_of(w, partition);
    if (p == NULL)
        return;
    p->take_inflight = 0;
    w->in_take -= (size_t)p->take_asked;
    p->take_asked = 0;
    struct queue_msg **msgs = NULL;
    size_t n = 0;
    long long ready_left = 0;
    const char *err = NULL;
    int red = worker_redis_redirected(w, r);
    if (red) {
        /* MOVED: taken again once the map is read; ASK (the partition's
         * slot is being migrated): a tick later. */
        p->next_poll_ms = red == WORKER_REDIRECT_ASK ? w->now_ms + TICK_MS : 0;
        return;
    }
    if (!queue_parse_take(r, partition, &msgs, &n, &ready_left, &err)) {
        fprintf(stderr, "tern: worker %d: take on partition %d failed: %s\n", w->id, partition, err);
        if (err && strcmp(err, "NOSCRIPT") == 0)
            worker_redis_load_scripts(w, worker_link_of(w, partition));
        p->next_poll_ms = w->now_ms + 1000;
        return;
    }
    w->st.taken += n;
    w->st.takes++;
    /* A take that left ready empty needs no second take to find that out
     * (in a steady stream every message cost two takes, the second
     * empty): mail queued after it comes with a ready notice. One that
     * was refilled while in flight (a notice, a bounce, a return) may
     * have missed that mail, and takes again. */
    p->empty = ready_left == 0 && !p->refilled;
    if (p->empty)   /* until then, or a ready notice (worker_notice.c) */
        p->next_poll_ms = w->now_ms + w->cfg->idle_poll_ms;
    for (size_t i = 0; i < n; i++) {
        /* The message counts against max_in_memory from here; its body
         * bytes from when its HMGET is sent (fetch_waiting). */
        if (!fetch_wait_push(w, msgs[i])) {
            fprintf(stderr, "tern: worker %d: cannot hold message %s (out of memory); left to its lease\n",
                    w->id, msgs[i]->id);
            queue_msg_free(msgs[i]);
            continue;
        }
        w->in_memory++;
        if (w->in_memory > w->st.peak_in_memory)
            w->st.peak_in_memory = w->in_memory;
    }
    free(msgs);
    fetch_waiting(w);
}

/* on_take_data: a taken message's metadata and body came; it joins its
 * destination, or is set aside when malformed. */
static void on_take_data(struct worker *w, struct queue_msg *m, redisReply *r)
{
    const char *err = NULL;
    size_t charged = m->data_len;
    int red = worker_redis_redirected(w, r);
    if (red) {
        /* ASK: asked of the master its slot is moving to; else asked again
         * once the map is read (MOVED), or a tick later. */
        if (red == WORKER_REDIRECT_ASK && worker_redis_ask(w, r, m)) {
            w->fetch_inflight += m->data_len;
            return;
        }
        w->bytes_in_memory -= charged;
        if (!fetch_wait_push(w, m)) {
            w->in_memory--;
            queue_msg_free(m);   /* left to its lease */
        }
        if (red == WORKER_REDIRECT_ASK)
            w->fetch_hold_ms = w->now_ms + TICK_MS;
        return;
    }
    if (!queue_take_data(r, &m, &err)) {
        /* Deleted since the take, or Redis failed: the lease settles it. */
        if (err != queue_err_deleted)
            fprintf(stderr, "tern: worker %d: message %s: %s%s%s; left to its lease\n", w->id, m->id, err,
                    r->type == REDIS_REPLY_ERROR ? ": " : "", r->type == REDIS_REPLY_ERROR ? r->str : "");
        worker_msg_release(w, m);
        return;
    }
    if (m->bad) {
        w->bytes_in_memory -= charged;
        w->in_memory--;
        outcome_bad(w, m);   /* frees m */
        return;
    }
    /* The body as it came, not as the take reported it (changed since?). */
    w->bytes_in_memory = w->bytes_in_memory - charged + m->data_len;
    if (w->bytes_in_memory > w->st.peak_bytes_in_memory)
        w->st.peak_bytes_in_memory = w->bytes_in_memory;
    struct job *j = job_new(w);
    struct dest *d = j ? dest_get(w, m->domain) : NULL;
    if (d == NULL) {
        /* Out of memory: leave the message leased; the lease expires
         * and it is taken again. */
        fprintf(stderr, "tern: worker %d: out of memory, message %s left to its lease\n", w->id, m->id);
        free(j);
        worker_msg_release(w, m);
        return;
    }
    j->m = m;
    j->d = d;
    dest_push(w, d, j);
}

static void on_redis_reply(struct worker *w, struct redis_link *l, redisReply *r)
{
    if (l->rq_len == 0) {
        fprintf(stderr, "tern: worker %d: unexpected reply from Redis\n", w->id);
        return;
    }
    struct redis_pending pr = l->rq[l->rq_head];
    l->rq_head = (l->rq_head + 1) % l->rq_cap;
    l->rq_len--;
    const char *err = NULL;
    switch (pr.kind) {
    case RQ_TAKE:
        on_take(w, pr.partition, r);
        break;
    case RQ_DATA:
        w->fetch_inflight -= pr.msg->data_len;   /* as asked for: on_take_data may change it */
        on_take_data(w, pr.msg, r);
        break;
    case RQ_ACK:
    case RQ_ENQUEUE:
        /* A report enqueued again after its ack was lost (dsn_report_id)
         * finds itself queued: done already. */
        if (pr.kind == RQ_ENQUEUE && queue_reply_exists(r)) {
            w->st.reports_repeated++;
            bounce_released(w, pr.hold, 1);
            break;
        }
        if (pr.cmd) {
            int red = worker_redis_redirected(w, r);
            if (red || worker_redis_not_run(r)) {
                /* Not run: sent again, to the master the map names once it
                 * is read again, or a tick later (a slot migrating, a
                 * Redis loading; after NOSCRIPT, behind the scripts). */
                if (strncmp(r->str, "NOSCRIPT", 8) == 0)
                    worker_redis_load_scripts(w, l);
                ack_resend_later(w, pr.partition, pr.cmd, pr.cmd_len,
                                 w->now_ms + (red == WORKER_REDIRECT_MOVED ? 0 : TICK_MS));
                break;
            }
            free(pr.cmd);
        }
        worker_redis_redirected(w, r);
        if (!queue_parse_simple(r, &err)) {
            /* The messages stay leased and are delivered again when the
             * lease expires: at-least-once, never lost. Redis's own words
             * say why. */
            fprintf(stderr, "tern: worker %d: %s on partition %d failed: %s%s%s\n", w->id,
                    pr.kind == RQ_ACK ? "ack" : "bounce enqueue", pr.partition, err,
                    r->type == REDIS_REPLY_ERROR && r->str ? ": " : "",
                    r->type == REDIS_REPLY_ERROR && r->str ? r->str : "");
            if (err && strcmp(err, "NOSCRIPT") == 0)
                worker_redis_load_scripts(w, l);
            if (pr.kind == RQ_ENQUEUE)
                bounce_released(w, pr.hold, 0);
        } else if (pr.kind == RQ_ENQUEUE) {
            bounce_released(w, pr.hold, 1);
        }
        break;
    case RQ_SCRIPT:
        worker_redis_script_reply(w, l, r);
        break;
    case RQ_EVENT:
        worker_redis_redirected(w, r);
        if (r->type == REDIS_REPLY_ERROR)
            fprintf(stderr, "tern: worker %d: events XADD failed: %s\n", w->id, r->str);
        break;
    case RQ_SLOTS:
        worker_redis_slots_reply(w, l, r);
        break;
    case RQ_ASKING:
        if (r->type == REDIS_REPLY_ERROR)
            fprintf(stderr, "tern: worker %d: ASKING refused: %s\n", w->id, r->str ? r->str : "?");
        break;
    }
}

/* resp_feed's callback: the worker and the link the reply came on. */
struct reply_ctx {
    struct worker *w;
    struct redis_link *l;
};

static int redis_reply_cb(void *ctx, redisReply *r)
{
    struct reply_ctx *c = ctx;
    on_redis_reply(c->w, c->l, r);
    return !c->l->down;   /* lost while handling it: the rest is moot */
}

static void redis_on_recv(struct worker *w, struct redis_link *l, int res)
{
    l->recv_armed = 0;
    if (l->down)
        return;   /* the lost connection's last receive */
    if (res <= 0) {
        worker_redis_lost(w, l, res == 0 ? "EOF" : strerror(-res));
        return;
    }
    if (l->recv_direct) {
        resp_feed_direct_done(l->reader, (size_t)res);
        worker_redis_arm_recv(w, l);
        return;
    }
    struct reply_ctx c = {w, l};
    int rc = resp_feed(l->reader, l->recv, (size_t)res, redis_reply_cb, &c);
    if (l->down)
        return;
    if (rc < 0) {
        worker_redis_lost(w, l, l->reader->err ? l->reader->errstr : "protocol error");
        return;
    }
    worker_redis_arm_recv(w, l);
}

static void redis_on_send(struct worker *w, struct redis_link *l, int res)
{
    struct outq *q = &l->out;
    q->inflight = 0;
    if (l->down)
        return;   /* its bytes are dropped at reconnect */
    if (res < 0) {
        worker_redis_lost(w, l, strerror(-res));
        return;
    }
    buf_consume(&q->active, (size_t)res);
}

/* ---- lifecycle ------------------------------------------------------------ */

static void free_tls(struct worker *w)
{
    for (int i = 0; i < CONFIG_TLS_CTX_MAX; i++)
        if (w->tls[i])
            tls_client_ctx_free(w->tls[i]);
}

struct worker *worker_new(const struct engine *e, int id, char *err, size_t errlen)
{
    struct worker *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    w->e = e;
    w->cfg = e->cfg;
    w->id = id;
    w->wake_fd = -1;
    w->notice_fd = -1;
    w->op_notice.kind = OP_NOTICE_RECV;
    w->resolver.cfg = e->cfg;
    w->scripts = e->scripts;
    w->op_wake.kind = OP_WAKE;
    buf_init(&w->rcpts_ok, 0);
    buf_init(&w->rcpts_later, 0);
    buf_init(&w->rcpts_failed, 0);
    buf_init(&w->plain, SMTP_CLIENT_INPUT_MAX);
    w->dtab_size = 1024;
    w->dtab = calloc(w->dtab_size, sizeof(*w->dtab));
    if (w->dtab == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }

    int nparts = 0;
    for (int p = id; p < w->cfg->queue.partitions; p += e->nworkers)
        nparts++;
    w->parts = calloc((size_t)nparts, sizeof(*w->parts));
    if (w->parts == NULL && nparts) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (int p = id, k = 0; p < w->cfg->queue.partitions; p += e->nworkers, k++)
        w->parts[k].id = p;
    w->nparts = nparts;

    w->wake_fd = eventfd(0, EFD_CLOEXEC);
    if (w->wake_fd < 0) {
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        goto fail;
    }
    /* A link whose Redis is gone again since tern run saw it reconnects
     * from the loop. */
    if (!worker_links_init(w, err, errlen))
        goto fail;

    for (int i = 0; i < w->cfg->ntls_ctx; i++) {
        const struct tls_ctx_spec *sp = &w->cfg->tls_ctx[i];
        struct tls_client_config tc = {
            .ca_file = sp->ca_file[0] ? sp->ca_file : NULL,
            .cert_file = sp->cert_file[0] ? sp->cert_file : NULL,
            .key_file = sp->key_file[0] ? sp->key_file : NULL,
        };
        w->tls[i] = tls_client_ctx_new(&tc, err, errlen);
        if (w->tls[i] == NULL)
            goto fail;
    }
    w->sessions = tls_session_cache_new(SESSION_CACHE_KEYS, SESSION_CACHE_SESSIONS);
    if (w->sessions == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (!worker_dns_init(w, err, errlen))
        goto fail;
    return w;
fail:
    worker_dns_free(w);
    if (w->sessions)
        tls_session_cache_free(w->sessions);
    worker_links_free(w);
    if (w->wake_fd >= 0)
        close(w->wake_fd);
    free_tls(w);
    free(w->dtab);
    free(w->parts);
    free(w);
    return NULL;
}

void worker_stop(struct worker *w)
{
    atomic_store(&w->stop_requested, 1);
    uint64_t one = 1;
    if (write(w->wake_fd, &one, sizeof(one)) < 0) {
        /* the loop also polls stop_requested on every tick */
    }
}

const struct worker_stats *worker_stats(const struct worker *w)
{
    return &w->st;
}

static void arm_wake(struct worker *w)
{
    struct io_uring_sqe *sqe = worker_sqe(w);
    io_uring_prep_read(sqe, w->wake_fd, &w->wake_val, sizeof(w->wake_val), 0);
    io_uring_sqe_set_data(sqe, &w->op_wake);
}

/* Begin stopping: return ready mail, QUIT idle connections. */
static void begin_stop(struct worker *w)
{
    if (w->stopping)
        return;
    w->stopping = 1;
    w->stop_deadline_ms = w->now_ms + STOP_GRACE_MS;
    for (struct dest *d = w->dests; d; d = d->dnext)
        dest_schedule(w, d);
    /* Idle connections say QUIT now; one still opening (connect, TLS,
     * EHLO) says it once READY (conn_hand_job sees stopping) rather than
     * vanishing mid-EHLO, which receivers log as a lost connection. The
     * stop deadline still bounds both. */
    for (struct conn *c = w->conns, *n; c; c = n) {
        n = c->next;
        if (c->job == NULL && c->established)
            conn_quit_or_close(w, c);
    }
}

/* The destinations the last schedule left with mail (w->tick_dests) are
 * scheduled again once due; those with none left, or now waiting for a
 * host slot (woken in turn by host_wake) or a site slot (conn_close),
 * leave the list. A walk over
 * every destination here, scheduling thousands that wait on a full host,
 * was ~5% of tail's engine CPU, and the walk alone (three cache lines of
 * each of 5,000 destinations, 20 times a second) still 2%. */
static void tick_dests(struct worker *w)
{
    struct dest **pp = &w->tick_dests;
    while (*pp) {
        struct dest *d = *pp;
        if (d->nready == 0 || d->host_waiting || site_slot_wait(w, d)) {
            *pp = d->tick_next;
            d->tick_listed = 0;
            continue;
        }
        if (d->next_connect_ms <= w->now_ms && !d->dns_waiting)
            worker_mark_dirty(w, d);
        pp = &d->tick_next;
    }
}

static int drained(struct worker *w)
{
    if (w->in_memory || w->nresend)
        return 0;
    for (int i = 0; i < w->nparts; i++)
        if (w->parts[i].take_inflight || !w->parts[i].empty || w->parts[i].nacks)
            return 0;
    return 1;
}

/* How long the loop may sleep when nothing completes: until the next
 * tick, or until the oldest held outcome is due to be acked (ACK_FLUSH_MS
 * is a promise; the tick alone kept the last outcomes of a burst ~50 ms). */
static int64_t wait_ms(const struct worker *w, int64_t next_tick)
{
    int64_t due = next_tick;
    for (int i = 0; i < w->nlinks; i++)
        if (w->links[i]->down || w->links[i]->warming)
            return TICK_MS;   /* the acks wait for Redis (flush_acks) */
    for (int i = 0; i < w->nparts; i++)
        if (w->parts[i].nacks && ack_due_ms(&w->parts[i]) < due)
            due = ack_due_ms(&w->parts[i]);
    int64_t ms = due - w->now_ms;
    return ms < 1 ? 1 : ms > TICK_MS ? TICK_MS : ms;
}

static void on_tick(struct worker *w)
{
    if (atomic_load(&w->stop_requested) && !w->stopping)
        begin_stop(w);
    if (w->stopping && w->now_ms > w->stop_deadline_ms) {
        if (w->nresend) {
            fprintf(stderr, "tern: worker %d: %zu ack(s) still refused at the end of the grace period; "
                            "their messages are left to their leases\n", w->id, w->nresend);
            for (size_t i = 0; i < w->nresend; i++)
                free(w->resend[i].cmd);
            w->nresend = 0;
        }
        for (struct conn *c = w->conns, *n; c; c = n) {
            n = c->next;
            if (c->state != CONN_CLOSING)
                conn_abort(w, c, "engine stopping: grace period over");
        }
    }
    for (struct conn *c = w->conns, *n; c; c = n) {
        n = c->next;
        conn_check_deadline(w, c);
    }
    worker_dns_tick(w);
    worker_redis_tick(w);
    worker_notice_open(w);
    tick_dests(w);
    hosts_wake_waiting(w);
    worker_forget_tick(w);
    worker_hosts_forget_tick(w);
    if (w->now_ms >= w->next_dest_stats_ms) {
        if (w->next_dest_stats_ms)
            worker_dest_stats_events(w);
        w->next_dest_stats_ms = w->now_ms + DEST_STATS_EVERY_MS;
    }
}

static void dispatch(struct worker *w, struct io_uring_cqe *cqe)
{
    struct op *op = io_uring_cqe_get_data(cqe);
    if (op == NULL)
        return;
    switch (op->kind) {
    case OP_CONNECT:
    case OP_RECV:
    case OP_SEND:
        conn_on_cqe(w, op, cqe->res, cqe->flags);
        break;
    case OP_REDIS_RECV:
        redis_on_recv(w, (struct redis_link *)(void *)((char *)op - offsetof(struct redis_link, op_recv)),
                      cqe->res);
        break;
    case OP_REDIS_SEND:
        redis_on_send(w, (struct redis_link *)(void *)((char *)op - offsetof(struct redis_link, op_send)),
                      cqe->res);
        break;
    case OP_DNS:
        worker_dns_on_cqe(w, op, cqe->res);
        break;
    case OP_NOTICE_RECV:
        worker_notice_on_recv(w, cqe->res);
        break;
    case OP_WAKE:
        if (atomic_load(&w->stop_requested))
            begin_stop(w);
        else
            arm_wake(w);
        break;
    }
}

/* The ring is created on the worker's own thread: SINGLE_ISSUER binds it
 * to the task that creates it. */
static int ring_init(struct worker *w)
{
    struct io_uring_params params = {0};
    params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE;
    params.cq_entries = 8192;
    int rc = io_uring_queue_init_params(1024, &w->ring, &params);
    if (rc < 0) {
        memset(&params, 0, sizeof(params));
        rc = io_uring_queue_init_params(1024, &w->ring, &params);
    }
    if (rc < 0) {
        fprintf(stderr, "tern: worker %d: io_uring setup: %s\n", w->id, strerror(-rc));
        return 0;
    }
    w->ring_ok = 1;
    worker_bufs_init(w);   /* else single-shot receives */
    return 1;
}

int worker_run(struct worker *w)
{
    if (!ring_init(w))
        return 1;
    w->now_ms = worker_clock_ms();
    w->now_us = worker_mono_us();
    arm_wake(w);
    for (int i = 0; i < w->nlinks; i++)
        worker_redis_arm_recv(w, w->links[i]);
    worker_notice_open(w);
    int64_t next_tick = w->now_ms + TICK_MS;
    while (!w->done) {
        w->now_ms = worker_clock_ms();
        w->now_us = worker_mono_us();
        if (w->now_ms >= next_tick) {
            on_tick(w);
            next_tick = w->now_ms + TICK_MS;
        }
        fetch_waiting(w);
        take_batches(w);
        while (w->dirty) {
            struct dest *d = w->dirty;
            w->dirty = d->dirty_next;
            d->dirty = 0;
            dest_schedule(w, d);
        }
        flush_acks(w);
        worker_redis_refresh(w);
        redis_kick(w);
        if (w->e->drain && !w->stopping && drained(w) && worker_rq_pending(w) == 0)
            begin_stop(w);
        if (w->stopping && w->conns == NULL && (w->in_memory == 0 || w->redis_dead) && worker_redis_idle(w) &&
            (w->nresend == 0 || w->redis_dead)) {
            int pending_acks = 0;
            for (int i = 0; i < w->nparts; i++)
                pending_acks |= w->parts[i].nacks != 0;
            if (pending_acks && !w->redis_dead)
                ;   /* wait for the acks */
            else if (!w->redis_dead && dest_stats_dirty(w)) {
                worker_dest_stats_events(w);   /* the last counters, then stop */
                redis_kick(w);
            } else {
                break;
            }
        }
        struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = wait_ms(w, next_tick) * 1000000LL};
        struct io_uring_cqe *cqe;
        int rc = io_uring_submit_and_wait_timeout(&w->ring, &cqe, 1, &ts, NULL);
        if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EBUSY) {
            fprintf(stderr, "tern: worker %d: io_uring: %s\n", w->id, strerror(-rc));
            return 1;
        }
        w->now_ms = worker_clock_ms();
        w->now_us = worker_mono_us();
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&w->ring, head, cqe)
        {
            dispatch(w, cqe);
            seen++;
        }
        io_uring_cq_advance(&w->ring, seen);
        if (w->reap_pending)
            conn_reap(w);
    }
    w->st.recv_bufs_held = w->bufs.held;   /* every connection gone: 0 */
    for (int i = 0; i < CONFIG_TLS_CTX_MAX; i++) {
        uint64_t cached, checked;
        tls_client_ctx_verify_stats(w->tls[i], &cached, &checked);
        w->st.verify_cached += cached;
        w->st.verify_checked += checked;
    }
    struct rusage ru;
    if (getrusage(RUSAGE_THREAD, &ru) == 0) {
        w->st.cpu_user_s = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
        w->st.cpu_sys_s = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    }
    return w->redis_dead ? 1 : 0;
}

void worker_free(struct worker *w)
{
    if (w == NULL)
        return;
    worker_dns_free(w);   /* before the destinations its lookups name */
    /* The ring first: a receive still armed (Redis's, perhaps straight
     * into a body being taken) must not outlive the memory it writes. */
    if (w->ring_ok)
        io_uring_queue_exit(&w->ring);
    w->ring_ok = 0;
    /* Before the partitions: a dropped bounce reply releases its hold. */
    worker_links_free(w);
    for (struct dest *d = w->dests, *n; d; d = n) {
        n = d->dnext;
        for (struct job *j = d->ready_head, *jn; j; j = jn) {
            jn = j->next;
            job_txn_free(j);   /* a requeued one may hold its recipients' state */
            queue_msg_free(j->m);
            free(j);
        }
        free(d->domain);
        free(d->hops);
        free(d);
    }
    for (int i = 0; i < w->nparts; i++) {
        for (size_t k = 0; k < w->parts[i].nacks; k++)
            ack_item_free(&w->parts[i].acks[k]);
        arena_free(&w->parts[i].ack_strs);
        free(w->parts[i].acks);
    }
    free(w->parts);
    job_pool_free(w);
    free(w->dtab);
    for (size_t i = 0; i < w->fetch_wait_len; i++)
        queue_msg_free(w->fetch_wait[w->fetch_wait_head + i]);
    free(w->fetch_wait);
    buf_free(&w->rcpts_ok);
    buf_free(&w->rcpts_later);
    buf_free(&w->rcpts_failed);
    buf_free(&w->plain);
    if (w->sessions)
        tls_session_cache_free(w->sessions);
    free_tls(w);
    worker_hosts_free(w);
    worker_bufs_free(w);
    worker_notice_free(w);
    for (size_t i = 0; i < w->nresend; i++)   /* those links_free gave back too */
        free(w->resend[i].cmd);
    free(w->resend);
    if (w->wake_fd >= 0)
        close(w->wake_fd);
    free(w);
}
