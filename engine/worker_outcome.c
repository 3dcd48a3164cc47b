/*
 * worker_outcome.c - what happens to a message after an attempt: per
 * recipient classification of the receiver's replies, the ack record that
 * goes to Redis with its event fields, bounces, retry schedule, counters.
 */
#include "engine/worker_int.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/dsn.h"
#include "engine/text.h"

struct job *job_new(struct worker *w)
{
    struct job *j = w->job_pool;
    if (j == NULL)
        return calloc(1, sizeof(*j));
    w->job_pool = j->next;
    w->job_pool_n--;
    memset(j, 0, sizeof(*j));
    return j;
}

void job_free(struct worker *w, struct job *j)
{
    job_txn_free(j);
    worker_msg_release(w, j->m);
    if (w->job_pool_n >= JOB_POOL_KEEP) {
        free(j);
        return;
    }
    j->next = w->job_pool;
    w->job_pool = j;
    w->job_pool_n++;
}

void job_pool_free(struct worker *w)
{
    for (struct job *j = w->job_pool, *n; j; j = n) {
        n = j->next;
        free(j);
    }
    w->job_pool = NULL;
    w->job_pool_n = 0;
}

void dest_requeue_front(struct dest *d, struct job *j)
{
    j->next = d->ready_head;
    d->ready_head = j;
    if (d->ready_tail == NULL)
        d->ready_tail = j;
    d->nready++;
}

void job_requeue(struct worker *w, const struct conn *c, struct job *j)
{
    dest_requeue_front(j->d, j);
    if (j->d != c->d)
        worker_mark_dirty(w, j->d);   /* a site's message: scheduled through its own */
}

void stats_tls_mix(struct worker_stats *st, const char *name)
{
    for (int i = 0; i < st->nmix; i++) {
        if (strcmp(st->mix[i].name, name) == 0) {
            st->mix[i].n++;
            return;
        }
    }
    if (st->nmix < TLS_MIX_MAX) {
        snprintf(st->mix[st->nmix].name, sizeof(st->mix[0].name), "%s", name);
        st->mix[st->nmix++].n = 1;
    }
}

static int64_t retry_at(const struct worker *w, const struct job *j)
{
    int n = w->cfg->nretry_schedule;
    if (n > 0)
        return w->now_ms + w->cfg->retry_schedule_ms[j->m->attempts < n ? j->m->attempts : n - 1];
    int64_t delay = w->cfg->retry_base_ms;
    for (int i = 0; i < j->m->attempts && delay < w->cfg->retry_max_ms; i++)
        delay *= 2;
    if (delay > w->cfg->retry_max_ms)
        delay = w->cfg->retry_max_ms;
    return w->now_ms + delay;
}

/* add_field: k is a string literal (kept as is); the value is copied to
 * the partition's arena, freed with the whole ack batch. Runs ~16 times
 * per delivered message, so no formatting or copying beyond that. */
static void add_field(struct ack_item *a, const char *k, const char *v)
{
    if (a->nfields + 2 > EV_FIELDS_MAX)
        return;
    const char *copy = arena_strdup(a->arena, v ? v : "");
    if (copy == NULL)
        return;
    a->fields[a->nfields] = k;
    a->fields[a->nfields + 1] = copy;
    a->nfields += 2;
}

/* ack_set_id: the message id (NUL-terminated, < QUEUE_ID_MAX) into the
 * ack; once per message, so a copy rather than snprintf. */
static void ack_set_id(struct ack_item *a, const char *id)
{
    size_t n = strnlen(id, sizeof(a->id) - 1);
    memcpy(a->id, id, n);
    a->id[n] = '\0';
}

static void add_field_u64(struct ack_item *a, const char *k, uint64_t v)
{
    char tmp[TEXT_U64_MAX];
    text_u64(tmp, v);
    add_field(a, k, tmp);
}

/* host_port writes "host:port" into out[cap] (truncated to fit). */
static void host_port(char *out, size_t cap, const char *host, unsigned port)
{
    size_t h = strnlen(host, cap - 1);
    char digits[TEXT_U64_MAX];
    size_t d = text_u64(digits, port);
    if (h + 1 + d >= cap)
        d = 0;   /* cannot happen with CONFIG_HOST_MAX hosts; keep it bounded */
    memcpy(out, host, h);
    out[h] = ':';
    memcpy(out + h + 1, digits, d);
    out[h + 1 + d] = '\0';
}

/* The next hop's IP address as text ("" if it is not IPv4 or IPv6). */
static void hop_ip(const struct nexthop *h, char *out, size_t cap)
{
    const struct sockaddr_storage *ss = &h->addr;
    const void *src = ss->ss_family == AF_INET ? (const void *)&((const struct sockaddr_in *)ss)->sin_addr
                      : ss->ss_family == AF_INET6 ? (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr
                                                  : NULL;
    if (src == NULL || inet_ntop(ss->ss_family, src, out, (socklen_t)cap) == NULL)
        out[0] = '\0';
}

/* session_fields writes the fields that describe c's session into f
 * (name/value pairs, at most SESSION_FIELDS strings; mx and ip point into
 * the caller's buffers) and returns how many. */
#define SESSION_FIELDS 20
_Static_assert(EV_FIELDS_MAX + SESSION_FIELDS <= QUEUE_FIELDS_MAX,
               "an event's own fields and its session's fit one outcome");
static size_t session_fields(const struct conn *c, const char **f, const char *mx, const char *ip)
{
    size_t n = 0;
#define FIELD(k, v) (f[n] = (k), f[n + 1] = (v) ? (v) : "", n += 2)
    FIELD("mx", mx);
    FIELD("ip", ip);
    FIELD("policy", policy_level_name(dest_level(c->d)));
    if (!c->tls_done) {
        FIELD("tier", "plaintext");
        FIELD("tls", "none");
        FIELD("verified", "not checked");
        FIELD("verify", c->tls_mode_none ? "not checked: TLS failed earlier with this host, "
                                           "plaintext remembered"
                        : dest_level(c->d) == POLICY_NONE ? "not checked: policy none"
                        : smtp_client_caps(&c->smtp)->starttls ? "not checked: STARTTLS refused"
                                                              : "not checked: STARTTLS not offered");
        return n;
    }
    const struct tls_info *t = &c->tinfo;
    FIELD("tier", tls_tier_name(tls_info_tier(t)));
    FIELD("tls", t->protocol);
    FIELD("cipher", t->cipher);
    FIELD("group", t->group);
    /* yes / no / not checked (e.g. a resumed session whose handshake
     * left no result): never yes unless the check ran and passed. */
    FIELD("verified", t->verified ? "yes"
                      : strncmp(t->verify_detail, "not checked", 11) == 0 ? "not checked" : "no");
    FIELD("verify", t->verify_detail);
    FIELD("resumed", t->resumed ? "yes" : "no");
#undef FIELD
    return n;
}

/* add_session_fields adds c's session fields to a. They are encoded once
 * per connection, at its first outcome (the session is settled before
 * the first transaction), and copied whole into each ack: per message a
 * copy instead of ~11 string copies and their encoding. */
static void add_session_fields(struct ack_item *a, struct conn *c)
{
    if (c->ev_nfields == 0) {
        char mx[CONFIG_HOST_MAX + 8], ip[INET6_ADDRSTRLEN];
        const char *f[SESSION_FIELDS];
        host_port(mx, sizeof(mx), c->d->hop.host, (unsigned)c->d->hop.port);
        hop_ip(&c->d->hop, ip, sizeof(ip));
        size_t n = session_fields(c, f, mx, ip);
        buf_reset(&c->ev);
        if (!queue_fields_encode(&c->ev, f, n) || c->ev.err) {
            buf_free(&c->ev);
            buf_init(&c->ev, 0);
            return;   /* out of memory: this event goes without them */
        }
        c->ev_nfields = n;
    }
    void *copy = arena_memdup(a->arena, buf_peek(&c->ev), buf_used(&c->ev));
    if (copy == NULL)
        return;
    a->raw = copy;
    a->raw_len = buf_used(&c->ev);
    a->raw_nfields = c->ev_nfields;
}

static void join(struct buf *b, const char *s)
{
    if (buf_used(b))
        buf_append(b, "\n", 1);
    buf_append_str(b, s);
}

static char *buf_strdup(struct buf *b)
{
    char *s = malloc(buf_used(b) + 1);
    if (s) {
        memcpy(s, buf_peek(b), buf_used(b));
        s[buf_used(b)] = '\0';
    }
    return s;
}

/* attach_bounce builds the DSN for n recipients (a bounce, or a delay
 * warning when r[0].action is "delayed") and its enqueue command and adds
 * it to ack a: flush_acks sends it just before the ack, so it is never
 * lost while the message still exists, and it waits with the ack while
 * Redis is away. */
static int attach_bounce(struct worker *w, const struct job *j, struct ack_item *a,
                         const struct dsn_rcpt *r, size_t n)
{
    const char *sender = j->m->from;
    if (a == NULL || sender[0] == '\0' || n == 0)
        return 0;   /* never bounce a bounce */
    const char *dom = queue_addr_domain(sender);
    if (dom == NULL) {
        fprintf(stderr, "tern: message %s: sender <%s> has no domain; no bounce\n", j->m->id, sender);
        return 0;
    }
    int done = 0;
    struct buf b;
    buf_init(&b, 0);
    char id[QUEUE_ID_MAX];
    dsn_report_id(id, sizeof(id), j->m->id, j->m->created_ms, j->m->attempts + 1,
                  r[0].action != NULL && strcmp(r[0].action, "delayed") == 0);
    if (dsn_build(&b, w->cfg->hostname, sender, j->m->id, r, n, j->m->data, j->m->data_len,
                  w->now_ms / 1000)) {
        const char *rc[1] = {sender};
        struct buf cmd;
        buf_init(&cmd, 0);
        uint8_t *all = NULL;
        if (queue_cmd_enqueue_report(&cmd, &w->cfg->queue, &w->scripts, id, "", rc, 1, dom,
                                     buf_peek(&b), buf_used(&b), w->now_ms) &&
            (all = realloc(a->bounce, a->bounce_len + buf_used(&cmd))) != NULL) {
            memcpy(all + a->bounce_len, buf_peek(&cmd), buf_used(&cmd));
            a->bounce = all;
            a->bounce_len += buf_used(&cmd);
            a->bounce_cmds++;
            a->bounce_partition = queue_partition_of(&w->cfg->queue, dom, strlen(dom));
            done = 1;
        }
        buf_free(&cmd);
    }
    buf_free(&b);
    return done;
}

/* maybe_warn: the first deferral of a message older than delay_warning
 * sends its sender a delay report (Action: delayed) for the n recipients
 * still pending. The ack's `warned` field is stored in the message, so a
 * later take knows (queue_msg.delay_warned): once per message. */
static void maybe_warn(struct worker *w, const struct job *j, struct ack_item *a,
                       const struct dsn_rcpt *r, size_t n)
{
    const struct queue_msg *m = j->m;
    if (a == NULL || r == NULL || w->cfg->delay_warning_ms <= 0 || m->delay_warned ||
        w->now_ms - m->created_ms < w->cfg->delay_warning_ms)
        return;
    if (attach_bounce(w, j, a, r, n)) {
        add_field(a, "warned", "yes");
        w->st.delay_warnings++;
    }
}

/* count_delivery: the TLS mix and latency counters for a delivered message. */
static void count_delivery(struct worker *w, const struct conn *c, const struct queue_msg *m)
{
    enum tls_tier tier = c->tls_done ? tls_info_tier(&c->tinfo) : TLS_TIER_PLAINTEXT;
    w->st.tier_msgs[tier]++;
    stats_tls_mix(&w->st, c->tls_done ? c->tinfo.mix : "plaintext");
    int64_t lat = w->now_ms - m->created_ms;
    lat_hist_add(&w->st.lat, lat < 0 ? 0 : lat > UINT32_MAX ? UINT32_MAX : (uint32_t)lat);
}

/* record_outcome: the message's one outcome once every recipient has a
 * result (j->rr): the ack with its event fields, the bounce for the
 * failed ones, the counters. c: the connection of the last transaction,
 * or NULL. reply: what the event says happened last; esc: its enhanced
 * status code or "". retry_now: deferred recipients go back at once
 * (the attempt was cut short, not refused). */
static void record_outcome(struct worker *w, struct conn *c, struct job *j, const char *reply,
                           const char *esc, int retry_now)
{
    struct queue_msg *m = j->m;
    struct buf *ok = &w->rcpts_ok, *later = &w->rcpts_later, *failed = &w->rcpts_failed;
    buf_reset(ok);
    buf_reset(later);
    buf_reset(failed);
    /* The report lists only when some recipient needs one. */
    struct dsn_rcpt *dr = NULL, *dl = NULL;   /* bounce; delay warning */
    size_t ndr = 0, ndl = 0, nok = 0, nperm = 0;

    for (size_t i = 0; i < m->nrcpts; i++) {
        const struct rcpt_result *r = &j->rr[i];
        const char *diag = r->diag ? r->diag : reply;
        if (r->state == RCPT_OK) {
            join(ok, m->rcpts[i]);
            nok++;
        } else if (r->state == RCPT_FAILED) {
            join(failed, m->rcpts[i]);
            nperm += strcmp(r->esc, "4.4.7") != 0;   /* refused, not expired */
            if (dr == NULL)
                dr = calloc(m->nrcpts, sizeof(*dr));
            if (dr)
                dr[ndr++] = (struct dsn_rcpt){m->rcpts[i], r->esc, diag, NULL};
        } else {
            join(later, m->rcpts[i]);
            if (dl == NULL)
                dl = calloc(m->nrcpts, sizeof(*dl));
            if (dl)
                dl[ndl++] = (struct dsn_rcpt){m->rcpts[i], r->code / 100 == 4 ? r->esc : "4.0.0",
                                              diag, "delayed"};
        }
    }
    buf_append(ok, "", 1);
    buf_append(later, "", 1);
    buf_append(failed, "", 1);

    struct ack_item *a = worker_ack_slot(w, m->partition);
    if (a == NULL) {
        fprintf(stderr, "tern: message %s: out of memory recording the outcome; "
                        "it will be retried when its lease expires\n", m->id);
    } else {
        ack_set_id(a, m->id);
        a->lease_until = m->lease_until_ms;
        if (buf_used(later) > 1) {
            a->kind = QUEUE_DEFERRED;
            a->remaining = buf_strdup(later);
            a->retry_at = retry_now ? w->now_ms : retry_at(w, j);
            w->st.deferred++;
        } else if (buf_used(failed) > 1) {
            a->kind = nperm ? QUEUE_FAILED : QUEUE_EXPIRED;
            w->st.failed++;
        } else {
            a->kind = QUEUE_DELIVERED;
            w->st.delivered++;
            rate_window_add(&w->st.deliveries, w->now_ms - w->e->start_ms);
        }
        add_field(a, "reply", reply);
        if (esc[0])
            add_field(a, "esc", esc);
        add_field(a, "delivered", (const char *)buf_peek(ok));
        if (buf_used(later) > 1)
            add_field(a, "deferred", (const char *)buf_peek(later));
        if (buf_used(failed) > 1)
            add_field(a, "failed", (const char *)buf_peek(failed));
        if (c)
            add_session_fields(a, c);
        /* the message's: a site's connection carries several domains' */
        if (j->d)
            add_field(a, "domain", j->d->domain);
        add_field_u64(a, "attempt", (uint64_t)m->attempts + 1);
        if (c)
            add_field_u64(a, "conn_msgs", c->msgs);
        if (a->kind == QUEUE_DEFERRED)
            maybe_warn(w, j, a, dl, ndl);
    }
    if (ndr && attach_bounce(w, j, a, dr, ndr))
        w->st.bounces++;
    if (nok) {
        w->st.rcpts_delivered += nok;
        if (c)
            count_delivery(w, c, m);
    }
    free(dr);
    free(dl);
    job_free(w, j);
}

void outcome_txn(struct worker *w, struct conn *c, struct job *j)
{
    const struct smtp_txn_result *t = smtp_client_txn(&c->smtp);
    struct queue_msg *m = j->m;
    char reply[SMTP_REPLY_TEXT_MAX + 32];
    size_t rn = text_u64(reply, (uint64_t)(t->reply.code > 0 ? t->reply.code : 0));
    reply[rn++] = ' ';
    size_t tn = strnlen(t->reply.text, sizeof(reply) - rn - 1);
    for (size_t i = 0; i < tn; i++)   /* one line in the event */
        reply[rn + i] = t->reply.text[i] == '\n' ? ' ' : t->reply.text[i];
    reply[rn + tn] = '\0';
    int expired = w->now_ms - m->created_ms > w->cfg->max_age_ms;
    if (job_record_txn(j, t, reply, expired)) {
        /* Recipients left for a new transaction (452, or the limit per
         * transaction): first in line, so this connection sends them
         * next, or the next connection if this one goes. */
        job_requeue(w, c, j);
        return;
    }
    record_outcome(w, c, j, reply, t->reply.esc, 0);
}

static void simple_outcome(struct worker *w, struct job *j, enum queue_outcome_kind kind,
                           const char *reason, const struct dsn_rcpt *dr, size_t ndr)
{
    struct ack_item *a = worker_ack_slot(w, j->m->partition);
    if (a == NULL) {
        fprintf(stderr, "tern: message %s: out of memory recording the outcome; "
                        "it will be retried when its lease expires\n", j->m->id);
        job_free(w, j);
        return;
    }
    ack_set_id(a, j->m->id);
    a->lease_until = j->m->lease_until_ms;
    a->kind = kind;
    if (kind == QUEUE_DEFERRED)
        a->retry_at = retry_at(w, j);
    add_field(a, "reply", reason);
    if (j->d) {
        add_field(a, "domain", j->d->domain);
        add_field(a, "policy", policy_level_name(dest_level(j->d)));
    }
    if (j->d && j->d->have_hop) {
        char mx[CONFIG_HOST_MAX + 8];
        host_port(mx, sizeof(mx), j->d->hop.host, (unsigned)j->d->hop.port);
        add_field(a, "mx", mx);
    }
    add_field_u64(a, "attempt", (uint64_t)j->m->attempts + (kind == QUEUE_RETURNED ? 0 : 1));
    if (kind == QUEUE_DEFERRED) {
        struct dsn_rcpt *dl = calloc(j->m->nrcpts, sizeof(*dl));
        for (size_t i = 0; dl && i < j->m->nrcpts; i++)
            dl[i] = (struct dsn_rcpt){j->m->rcpts[i], "4.0.0", reason, "delayed"};
        maybe_warn(w, j, a, dl, j->m->nrcpts);
        free(dl);
    }
    if (ndr && attach_bounce(w, j, a, dr, ndr))
        w->st.bounces++;
    job_free(w, j);
}

void outcome_return(struct worker *w, struct job *j, const char *reason)
{
    if (job_progress(j)) {
        /* Some recipients have their result: only the others go back,
         * at once (returning it whole would deliver twice). */
        job_settle_rest(j, RCPT_LATER, "", reason);
        record_outcome(w, NULL, j, reason, "", 1);
        return;
    }
    w->st.returned++;
    simple_outcome(w, j, QUEUE_RETURNED, reason, NULL, 0);
}

/* outcome_expire: past max_age with no final answer: every recipient
 * bounces with 4.4.7 and the event says expired. */
static void outcome_expire(struct worker *w, struct job *j, const char *reason)
{
    struct dsn_rcpt *dr = calloc(j->m->nrcpts, sizeof(*dr));
    if (dr)
        for (size_t i = 0; i < j->m->nrcpts; i++)
            dr[i] = (struct dsn_rcpt){j->m->rcpts[i], "4.4.7", reason, NULL};
    w->st.failed++;
    simple_outcome(w, j, QUEUE_EXPIRED, reason, dr, dr ? j->m->nrcpts : 0);
    free(dr);
}

void outcome_defer(struct worker *w, struct job *j, const char *reason)
{
    if (w->now_ms - j->m->created_ms > w->cfg->max_age_ms) {
        outcome_expire(w, j, reason);
        return;
    }
    if (job_progress(j)) {
        job_settle_rest(j, RCPT_LATER, "", reason);
        record_outcome(w, NULL, j, reason, "", 0);
        return;
    }
    w->st.deferred++;
    simple_outcome(w, j, QUEUE_DEFERRED, reason, NULL, 0);
}

void outcome_fail(struct worker *w, struct job *j, const char *reason)
{
    outcome_fail_status(w, j, "5.0.0", reason);
}

void outcome_fail_status(struct worker *w, struct job *j, const char *status, const char *reason)
{
    if (job_progress(j)) {
        job_settle_rest(j, RCPT_FAILED, status, reason);
        record_outcome(w, NULL, j, reason, "", 0);
        return;
    }
    struct dsn_rcpt *dr = calloc(j->m->nrcpts, sizeof(*dr));
    if (dr)
        for (size_t i = 0; i < j->m->nrcpts; i++)
            dr[i] = (struct dsn_rcpt){j->m->rcpts[i], status, reason, NULL};
    w->st.failed++;
    simple_outcome(w, j, QUEUE_FAILED, reason, dr, dr ? j->m->nrcpts : 0);
    free(dr);
}

void outcome_bad(struct worker *w, struct queue_msg *m)
{
    fprintf(stderr, "tern: worker %d: queue entry %s is malformed (%s); set aside\n", w->id, m->id,
            m->bad);
    struct ack_item *a = worker_ack_slot(w, m->partition);
    if (a != NULL) {
        ack_set_id(a, m->id);
        a->lease_until = m->lease_until_ms;
        a->kind = QUEUE_BAD;
        add_field(a, "reply", m->bad);
        w->st.bad++;
    }
    queue_msg_free(m);
}

void dest_defer_all(struct worker *w, struct dest *d, const char *reason)
{
    while (d->ready_head) {
        struct job *j = d->ready_head;
        d->ready_head = j->next;
        d->nready--;
        outcome_defer(w, j, reason);
    }
    d->ready_tail = NULL;
}
