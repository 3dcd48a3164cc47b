/*
 * worker_conn.c - one outbound connection: TCP on the ring, the SMTP
 * client session, STARTTLS on BoringSSL memory BIOs, deadlines, and what
 * a failure does to the message in flight and to the destination.
 */
#include "engine/text.h"
#include "engine/worker_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum fail_kind {
    FAIL_TRANSIENT,   /* retry the destination a few times, then defer */
    FAIL_POLICY,      /* a policy check failed: defer the destination now */
};

static void conn_fail(struct worker *w, struct conn *c, const char *reason, enum fail_kind kind);
static void conn_close(struct worker *w, struct conn *c);

static int is_ip_literal(const char *h)
{
    unsigned char tmp[16];
    return inet_pton(AF_INET, h, tmp) == 1 || inet_pton(AF_INET6, h, tmp) == 1;
}

/* ---- jobs in flight ---- */

static void conn_job_push(struct conn *c, struct job *j)
{
    j->d->inflight++;   /* j->d may not be c->d (worker_site.c) */
    j->next = NULL;
    if (c->job_tail)
        c->job_tail->next = j;
    else
        c->job = j;
    c->job_tail = j;
    c->njobs++;
}

static struct job *conn_job_pop(struct conn *c)
{
    struct job *j = c->job;
    if (j == NULL)
        return NULL;
    c->job = j->next;
    if (c->job == NULL)
        c->job_tail = NULL;
    c->njobs--;
    j->d->inflight--;
    j->next = NULL;
    return j;
}

/* conn_jobs_take empties the connection's list and returns it reversed
 * (newest first), so that putting each back at the front of the ready
 * list keeps their order. */
static struct job *conn_jobs_take(struct conn *c)
{
    struct job *rev = NULL, *j;
    while ((j = conn_job_pop(c)) != NULL) {
        j->next = rev;
        rev = j;
    }
    return rev;
}

/* body_unsent: bytes of this connection are still waiting to go out (in
 * state BODY: the body has not all been sent). */
static int body_unsent(const struct conn *c)
{
    return c->out.inflight || buf_used(&c->out.active) || buf_used(&c->out.pending);
}

static int64_t state_timeout(const struct worker *w, const struct conn *c)
{
    const struct tern_timeouts *t = &w->cfg->timeouts;
    if (c->lingering)
        return CONN_LINGER_MS;
    if (c->state == CONN_CONNECTING)
        return t->connect;
    if (c->tls && !c->tls_done)
        return t->tls;
    switch (c->smtp.state) {
    case SMTP_ST_GREETING:
        return t->greeting;
    case SMTP_ST_EHLO:
    case SMTP_ST_HELO:
        return t->ehlo ? t->ehlo : t->command;
    case SMTP_ST_MAIL:
        return t->mail ? t->mail : t->command;
    case SMTP_ST_RCPT:
        return t->rcpt ? t->rcpt : t->command;
    case SMTP_ST_DATA:
        return t->data;
    case SMTP_ST_BODY:
        /* RFC 5321 4.5.3.2.5-6: each block of the body must go out
         * within block; the reply to the final dot within final. */
        return body_unsent(c) ? t->block : t->final;
    case SMTP_ST_READY:
        return c->idle ? c->d->lim.idle_ms : t->command;
    default:
        return t->command;
    }
}

static void conn_touch(struct worker *w, struct conn *c)
{
    c->deadline_ms = w->now_ms + state_timeout(w, c);
}

static void conn_kick(struct worker *w, struct conn *c)
{
    if (c->state == CONN_CLOSING)
        return;
    struct buf *b = outq_next(&c->out);
    if (b == NULL)
        return;
    struct io_uring_sqe *sqe = worker_sqe(w);
    /* Bounded sends: each completion is progress the block timeout and
     * the data rate can see. */
    size_t n = buf_used(b) < SEND_CHUNK_MAX ? buf_used(b) : SEND_CHUNK_MAX;
    io_uring_prep_send(sqe, c->fd, buf_peek(b), n, MSG_NOSIGNAL);
    io_uring_sqe_set_data(sqe, &c->op_send);
    c->out.inflight = 1;
    c->ops++;
}

static void conn_arm_recv(struct worker *w, struct conn *c)
{
    if (c->recv_armed || c->state != CONN_SMTP)
        return;
    if (w->bufs.on) {
        /* one receive for the connection's life: it ends (and is armed
         * again) only when the ring runs dry or the kernel ends it */
        worker_bufs_arm(w, c->fd, &c->op_recv);
    } else {
        struct io_uring_sqe *sqe = worker_sqe(w);
        io_uring_prep_recv(sqe, c->fd, c->rbuf, RECV_BUF_SIZE, 0);
        io_uring_sqe_set_data(sqe, &c->op_recv);
    }
    c->recv_armed = 1;
    c->ops++;
}

/* Move what the SMTP client wants to say (encrypted when TLS is up) and
 * whatever TLS itself must send into the connection's output, and send. */
static int conn_flush(struct worker *w, struct conn *c)
{
    size_t n;
    const uint8_t *p;
    /* Pieces: queued commands, and long body runs that point into the
     * job's body (smtp_client_output). Each is encrypted (or copied) now,
     * while the job is surely alive. */
    while ((c->tls == NULL || c->tls_done) && (p = smtp_client_output(&c->smtp, &n), n > 0)) {
        if (c->tls) {
            if (tls_conn_write(c->tls, p, n) != TLS_OK) {
                conn_fail(w, c, tls_conn_error(c->tls), FAIL_TRANSIENT);
                return 0;
            }
        } else {
            outq_append(&c->out, p, n);
        }
        smtp_client_output_consume(&c->smtp, n);
    }
    if (c->tls)   /* usually no copy: see buf_move */
        tls_conn_output_move(c->tls, outq_tail(&c->out));
    if (c->out.active.err || c->out.pending.err) {
        conn_fail(w, c, "out of memory", FAIL_TRANSIENT);
        return 0;
    }
    conn_kick(w, c);
    return 1;
}

enum policy_level dest_level(const struct dest *d)
{
    return d->pol->level;
}

static int host_plaintext(const struct worker *w, const struct dest *d)
{
    return (d->host->plaintext && d->host->plaintext_until_ms > w->now_ms) ||
           d->cert_plaintext_until_ms > w->now_ms;
}

int dest_tls_expected(const struct worker *w, const struct dest *d)
{
    enum policy_level l = dest_level(d);
    return l != POLICY_NONE && !(l == POLICY_MAY && host_plaintext(w, d));
}

/* The lowest tier a level may use: mandatory levels stop at sufficient
 * (TLS 1.2 with ECDHE) unless the entry's minimum version allows less. */
static enum tls_tier lowest_tier(const struct dest *d)
{
    if (!policy_level_mandatory(dest_level(d)))
        return TLS_TIER_LEGACY;
    return d->pol->min_version && d->pol->min_version < TLS1_2_VERSION ? TLS_TIER_LEGACY
                                                                        : TLS_TIER_SUFFICIENT;
}

/* The tier a new connection offers: what the host is known to need. */
enum tls_tier dest_start_tier(const struct worker *w, const struct dest *d)
{
    enum tls_tier t = d->host->tier_until_ms > w->now_ms ? d->host->tier : TLS_TIER_PREFERRED;
    return t > lowest_tier(d) ? lowest_tier(d) : t;
}

void dest_session_key(const struct worker *w, const struct dest *d, enum tls_tier tier,
                      char *out, size_t cap)
{
    /* Everything that was checked when a session was made (see
     * tls/session_cache.h): the policy entry stands for level, match
     * names, pins, minimum version and trust store; secure without match
     * names checks the domain itself; the client certificate context and
     * whether it is presented. */
    const struct policy_entry *e = d->pol;
    const struct policy_table *t = &w->cfg->policy;
    long idx = e == &t->fallback ? -1 : (long)(e - t->entries);
    /* Built without printf: the slow start asks for it at each schedule
     * of a waiting destination (1% of the engine's CPU with a connection
     * per message). A key that does not fit comes out empty, which the
     * cache never stores, rather than truncated into another's. */
    struct text_out o;
    text_out_init(&o, out, cap);
    text_out_str(&o, d->hop.host);
    text_out_mem(&o, ":", 1);
    text_out_u64(&o, d->hop.port);
    text_out_str(&o, "|sni=");
    text_out_str(&o, is_ip_literal(d->hop.host) ? "" : d->hop.host);
    text_out_str(&o, "|pol=");
    text_out_i64(&o, idx);
    text_out_mem(&o, ":", 1);
    text_out_str(&o, policy_level_name(e->level));
    text_out_str(&o, "|dom=");
    text_out_str(&o, e->level == POLICY_SECURE && e->nmatch == 0 ? d->domain : "");
    text_out_str(&o, "|cc=");
    text_out_i64(&o, e->ctx_index);
    text_out_mem(&o, ":", 1);
    text_out_i64(&o, e->client_cert);
    text_out_str(&o, "|tier=");
    text_out_str(&o, tls_tier_name(tier));
}

static void collect_sessions(struct worker *w, struct conn *c)
{
    SSL_SESSION *s;
    int single_use = 0, reusable = 0;
    while ((s = tls_conn_take_session(c->tls)) != NULL) {
        c->got_session = 1;
        if (w->cfg->tls_resumption) {
            if (SSL_SESSION_should_be_single_use(s))
                single_use++;
            else
                reusable = 1;
            tls_session_cache_put(w->sessions, c->cache_key, s, (uint64_t)(w->now_ms / 1000));
        } else {
            SSL_SESSION_free(s);
        }
    }
    /* destinations the slow start held back may open with them */
    if ((single_use || reusable) && c->d->host)
        slow_start_sessions(w, c->d->host, single_use, reusable);
}

/* TLS failed during the handshake (or right after it, where TLS 1.3
 * client-certificate failures surface). At level may, a negotiation
 * failure moves this MX host to the legacy tier and any other failure to
 * plaintext, remembered for tier_memory; the next connection tries that.
 * At mandatory levels this is a policy failure. */
/* Close a connection that failed in a way the next one avoids (a lower
 * tier, or plaintext at level may): not a destination failure. */
static void fall_back(struct worker *w, struct conn *c, const char *reason)
{
    struct dest *d = c->d;
    if (w->e->verbose)
        fprintf(stderr, "tern: %s: %s; falling back\n", d->domain, reason);
    w->st.conn_failures++;
    conn_close(w, c);   /* puts a message in flight back at the front */
    worker_mark_dirty(w, d);
}

static void remember_plaintext(struct worker *w, struct mxhost *h)
{
    h->plaintext = 1;
    h->plaintext_until_ms = w->now_ms + w->cfg->tier_memory_ms;
}

/* TLS failed during the handshake (or right after it, where TLS 1.3
 * client-certificate failures surface). A protocol or cipher mismatch
 * moves this MX host one rung down the ladder (preferred, then
 * sufficient for mandatory levels or legacy at may), remembered for
 * tier_memory. At level may, any other failure, or one on the last rung,
 * means plaintext for the host. At mandatory levels it is a policy
 * failure: the message stays queued, never sent without the TLS asked for.
 * tls_reported: the TLS layer itself failed (so its error can be asked
 * whether it was a negotiation or client-certificate problem), rather
 * than the peer closing or stalling mid-handshake. */
static void tls_failed_because(struct worker *w, struct conn *c, const char *err, int tls_reported)
{
    struct dest *d = c->d;
    enum policy_level level = dest_level(d);
    char reason[320];
    snprintf(reason, sizeof(reason), "TLS handshake failed (tier %s, policy %s%s): %s",
             tls_tier_name(c->tier), policy_level_name(level),
             policy_level_mandatory(level) && lowest_tier(d) == TLS_TIER_SUFFICIENT
                 ? ", TLS 1.2 or better required" : "",
             err ? err : "unknown");
    tls_session_cache_drop(w->sessions, c->cache_key);
    if (tls_reported && tls_conn_error_is_negotiation(c->tls) && c->tier < lowest_tier(d)) {
        enum tls_tier next = level == POLICY_MAY ? TLS_TIER_LEGACY : c->tier + 1;
        if (d->host->tier_until_ms <= w->now_ms || d->host->tier < next) {
            d->host->tier = next;
            d->host->tier_until_ms = w->now_ms + w->cfg->tier_memory_ms;
        }
        fall_back(w, c, reason);
        return;
    }
    if (level == POLICY_MAY) {
        /* A client-certificate failure depends on what this destination's
         * policy presents, not on the host: remember it here only. */
        if (tls_reported && tls_conn_error_is_client_cert(c->tls))
            d->cert_plaintext_until_ms = w->now_ms + w->cfg->tier_memory_ms;
        else
            remember_plaintext(w, d->host);
        fall_back(w, c, reason);
        return;
    }
    conn_fail(w, c, reason, FAIL_POLICY);
}

static void tls_failed(struct worker *w, struct conn *c)
{
    tls_failed_because(w, c, tls_conn_error(c->tls), 1);
}

/* During the handshake the peer closed, reset or went silent. */
static int handshake_interrupted(struct worker *w, struct conn *c, const char *why)
{
    if (c->tls == NULL || c->tls_done || c->state == CONN_CLOSING)
        return 0;
    tls_failed_because(w, c, why, 0);
    return 1;
}

static void start_tls(struct worker *w, struct conn *c)
{
    struct dest *d = c->d;
    struct tls_client_params p;
    policy_client_params(d->pol, d->hop.host, d->domain, c->tier, &p);
    dest_session_key(w, d, c->tier, c->cache_key, sizeof(c->cache_key));
    c->took_session = 1;
    d->npre_tls--;
    d->host->npre_tls--;
    if (c->site)
        c->site->npre_tls--;
    if (w->cfg->tls_resumption)
        p.session = tls_session_cache_get(w->sessions, c->cache_key, (uint64_t)(w->now_ms / 1000));
    c->resume_offered = p.session != NULL;
    if (c->resume_offered)
        w->st.resume_offered++;
    c->tls = tls_conn_client_new(w->tls[d->pol->ctx_index], &p);
    if (p.session)
        SSL_SESSION_free(p.session);
    if (c->tls == NULL) {
        conn_fail(w, c, "TLS setup failed", FAIL_TRANSIENT);
        return;
    }
    if (tls_conn_handshake(c->tls) == TLS_ERROR) {
        tls_failed(w, c);
        return;
    }
    conn_touch(w, c);
    conn_flush(w, c);
}

/* A full handshake showed the peer's certificate: if it changed, sessions
 * made with the old one (and the verification they carry) go. */
static void note_certificate(struct worker *w, struct conn *c)
{
    struct dest *d = c->d;
    uint8_t h[32];
    if (!tls_conn_peer_leaf_sha256(c->tls, h))
        return;
    if (d->have_leaf && memcmp(h, d->leaf_sha256, sizeof(h)) != 0) {
        for (enum tls_tier t = TLS_TIER_PREFERRED; t < TLS_TIER_PLAINTEXT; t++) {
            char key[TLS_CACHE_KEY_MAX];
            dest_session_key(w, d, t, key, sizeof(key));
            tls_session_cache_drop(w->sessions, key);
        }
    }
    memcpy(d->leaf_sha256, h, sizeof(h));
    d->have_leaf = 1;
}

static void handshake_done(struct worker *w, struct conn *c)
{
    struct dest *d = c->d;
    c->tls_done = 1;
    tls_conn_info(c->tls, &c->tinfo);
    c->tinfo.tier = c->tier;
    d->counters_dirty = 1;
    if (c->tinfo.resumed) {
        w->st.hs_resumed++;
        d->n.hs_resumed++;
    } else {
        w->st.hs_full++;
        d->n.hs_full++;
        if (c->resume_offered) {
            w->st.resume_refused++;
            d->n.resume_refused++;
            tls_session_cache_drop(w->sessions, c->cache_key);
        }
        note_certificate(w, c);
    }
    smtp_client_tls_started(&c->smtp);
}

/* The session is established and idle: remember what worked. */
static void on_ready(struct worker *w, struct conn *c)
{
    struct dest *d = c->d;
    if (!c->established) {
        c->established = 1;
        d->nconnecting--;
        d->host->nconnecting--;
        if (c->site) {
            c->site->nconnecting--;
            /* the site may stack deeper pipelines (worker_site.c) */
            if (smtp_client_caps(&c->smtp)->chunking && smtp_client_caps(&c->smtp)->pipelining)
                c->site->chunking = 1;
        }
        d->hops_tried = 0;   /* this address works */
        /* No session to cache from this one (no STARTTLS, no tickets):
         * opening connections need not wait for sessions. */
        d->no_sessions = !c->got_session;
        if (d->nready > 1)
            worker_mark_dirty(w, d);
        if (!c->quitting && c->site) {
            site_conn_avail(c, 1);   /* it takes its site's mail from now */
            /* Its sessions are cached now: the first destination waiting
             * on the site may open more (slow_start_may_open). */
            struct dest *first = site_next_ready(c->site);
            if (first && first != d)
                worker_mark_dirty(w, first);
        }
    }
    conn_hand_job(w, c);
}

/* After the 221 to our QUIT: send our FIN and wait (briefly) for the
 * peer's, so that the connection counts against the pool limits until
 * the receiver has really closed it (its view of our connections, not
 * only ours, stays within max_connections). */
static void conn_linger(struct worker *w, struct conn *c)
{
    c->lingering = 1;
    c->idle = 0;
    if (!c->out.inflight)
        shutdown(c->fd, SHUT_WR);
    c->deadline_ms = w->now_ms + CONN_LINGER_MS;
    conn_arm_recv(w, c);
}

static void conn_pump(struct worker *w, struct conn *c)
{
    for (;;) {
        if (c->state == CONN_CLOSING)
            return;
        struct smtp_event ev = smtp_client_next(&c->smtp);
        switch (ev.kind) {
        case SMTP_EV_NONE:
            return;
        case SMTP_EV_STARTTLS:
            start_tls(w, c);
            break;
        case SMTP_EV_READY:
            on_ready(w, c);
            break;
        case SMTP_EV_TXN_DONE: {
            const struct smtp_txn_result *t = smtp_client_txn(&c->smtp);
            struct job *j = conn_job_pop(c);
            struct dest *jd = j ? j->d : c->d;   /* the message's, maybe not c's (a site's) */
            /* A transaction's reply (a backoff pattern, a 250 that lifts a
             * backoff) counts for the message's destination, as it would
             * on a connection of its own; a 421 also ends the session and
             * counts for the connection's, at ERROR. */
            if (t->reply.code != 421)
                dest_reply_seen(w, jd, t->reply.code, t->reply.text);
            if (j && c->site)
                site_txn_time(w, c->site, w->now_us - j->started_us);
            c->body_start_ms = 0;
            c->msgs++;
            jd->n.msgs++;
            jd->counters_dirty = 1;
            c->d->consecutive_failures = 0;
            w->st.txns++;
            if (jd != c->d)
                w->st.txns_shared++;
            if (j && t->resend)
                job_requeue(w, c, j);   /* never seen by the receiver: again, no attempt */
            else if (j)
                outcome_txn(w, c, j);
            if (c->smtp.state == SMTP_ST_QUIT && !c->quitting) {
                c->quitting = 1;   /* QUIT went behind it: its reply is next */
                site_conn_avail(c, 0);
                c->idle = 0;
                conn_touch(w, c);
            }
            break;
        }
        case SMTP_EV_CLOSED:
            if (c->quitting && !c->peer_eof) {
                conn_linger(w, c);
                return;
            }
            conn_close(w, c);
            return;
        case SMTP_EV_ERROR: {
            char reason[400];
            if (ev.reply) {
                size_t first = strcspn(ev.reply->text, "\n");   /* first line only */
                snprintf(reason, sizeof(reason), "%s: %d %.*s", ev.reason, ev.reply->code,
                         (int)first, ev.reply->text);
            }
            else
                snprintf(reason, sizeof(reason), "%s", ev.reason ? ev.reason : "SMTP error");
            if (ev.reply)
                dest_reply_seen(w, c->d, ev.reply->code, ev.reply->text);
            /* A mandatory-TLS check that failed is a policy failure:
             * deferred now, never retried in plaintext. At may, the
             * STARTTLS exchange going wrong (bytes injected after the
             * 220) means plaintext for this host, like a failed handshake. */
            int starttls = ev.reason && strstr(ev.reason, "STARTTLS") != NULL;
            int policy = policy_level_mandatory(dest_level(c->d)) && starttls;
            /* The client may have queued a polite QUIT: send it on the way out. */
            conn_flush(w, c);
            if (c->state == CONN_CLOSING)
                return;
            if (starttls && dest_level(c->d) == POLICY_MAY && !c->established) {
                remember_plaintext(w, c->d->host);
                fall_back(w, c, reason);
                return;
            }
            conn_fail(w, c, reason, policy ? FAIL_POLICY : FAIL_TRANSIENT);
            return;
        }
        }
    }
}

static void on_bytes_lent(struct worker *w, struct conn *c, const uint8_t *p, size_t n)
{
    if (c->tls) {
        if (!c->tls_done) {
            enum tls_status st = tls_conn_handshake(c->tls);
            if (st == TLS_ERROR) {
                tls_failed(w, c);
                return;
            }
            if (st == TLS_OK)
                handshake_done(w, c);
        }
        if (c->tls_done) {
            /* Read until TLS has nothing more: the plain buffer is bounded,
             * so one read may leave plaintext inside. */
            enum tls_status st;
            do {
                st = tls_conn_read(c->tls, &w->plain);
                if (buf_used(&w->plain))
                    smtp_client_feed(&c->smtp, buf_peek(&w->plain), buf_used(&w->plain));
                buf_reset(&w->plain);   /* the worker's: empty (and no error) for the next */
            } while (st == TLS_OK);
            if (st == TLS_ERROR) {
                /* a TLS 1.3 client-certificate refusal shows up here */
                if (!c->established) {
                    tls_failed(w, c);
                    return;
                }
                conn_fail(w, c, tls_conn_error(c->tls), FAIL_TRANSIENT);
                return;
            }
            collect_sessions(w, c);
            if (st == TLS_CLOSED)
                smtp_client_eof(&c->smtp);
        }
    } else {
        smtp_client_feed(&c->smtp, p, n);
    }
    conn_pump(w, c);
    if (c->state == CONN_CLOSING)
        return;
    if (c->smtp.state == SMTP_ST_BODY && c->body_start_ms == 0) {
        c->body_start_ms = w->now_ms;   /* the 354 came: the body goes now */
        /* With DATA the site's clock (worker_site.c) starts again here:
         * the one behind waited for the final reply before it, and a
         * receiver slow to answer the dot would read as a queue. (BDAT's
         * whole transaction went out when it was taken.) */
        if (c->job && !c->smtp.chunking)
            c->job->started_us = w->now_us;
        c->body_bytes = 0;
        /* With DATA, the next transaction may follow the final dot in the
         * same write (smtp_client.h, PIPELINED TRANSACTIONS). */
        if ((c->d->ready_head || (c->snode.listed && age_list_oldest(&c->site->ready))) && smtp_client_room(&c->smtp)) {
            conn_hand_job(w, c);
            if (c->state == CONN_CLOSING)
                return;
        }
    }
    if (conn_flush(w, c))
        conn_touch(w, c);
}

/* A receive's bytes: TLS reads them in place (p is a ring buffer, given
 * back once this returns; tls.h, tls_conn_lend), the rest is copied. */
static void on_bytes(struct worker *w, struct conn *c, const uint8_t *p, size_t n)
{
    struct tls_conn *t = c->tls;
    if (t && !tls_conn_lend(t, p, n)) {
        conn_fail(w, c, "out of memory", FAIL_TRANSIENT);
        return;
    }
    on_bytes_lent(w, c, p, n);
    if (t && !tls_conn_unlend(t) && c->state != CONN_CLOSING)
        conn_fail(w, c, "out of memory", FAIL_TRANSIENT);
}

struct conn *conn_open(struct worker *w, struct dest *d)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    if (!w->bufs.on && (c->rbuf = malloc(RECV_BUF_SIZE)) == NULL) {
        free(c);
        return NULL;
    }
    c->fd = socket(d->hop.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        free(c->rbuf);
        free(c);
        return NULL;
    }
    if (!dest_bind_source(d, c->fd, d->hop.addr.ss_family)) {
        fprintf(stderr, "tern: %s: bind to source address: %s\n", d->domain, strerror(errno));
        close(c->fd);
        free(c->rbuf);
        free(c);
        return NULL;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->d = d;
    c->site = d->site;
    if (c->site)
        c->site->nconns++;
    c->op_connect = (struct op){OP_CONNECT, c};
    c->op_recv = (struct op){OP_RECV, c};
    c->op_send = (struct op){OP_SEND, c};
    buf_init(&c->out.active, 0);
    buf_init(&c->out.pending, 0);
    buf_init(&c->ev, 0);
    c->tier = dest_start_tier(w, d);
    d->npre_tls++;
    d->host->npre_tls++;
    if (c->site)
        c->site->npre_tls++;
    enum policy_level level = dest_level(d);
    struct smtp_client_config sc = {
        .helo_name = w->cfg->hostname,
        .pipeline_depth = d->site ? site_depth(d->site) : d->lim.max_txns_in_flight,
        .tls = level == POLICY_NONE ? SMTP_TLS_NONE
             : level == POLICY_MAY  ? SMTP_TLS_MAY : SMTP_TLS_REQUIRED,
    };
    if (level == POLICY_MAY && host_plaintext(w, d)) {
        sc.tls = SMTP_TLS_NONE;
        c->tls_mode_none = 1;
    }
    smtp_client_init(&c->smtp, &sc);
    c->state = CONN_CONNECTING;
    struct io_uring_sqe *sqe = worker_sqe(w);
    io_uring_prep_connect(sqe, c->fd, (struct sockaddr *)&d->hop.addr, d->hop.addrlen);
    io_uring_sqe_set_data(sqe, &c->op_connect);
    c->ops++;
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    c->dnext = d->conns;
    if (d->conns)
        d->conns->dprev = c;
    d->conns = c;
    w->nconns++;
    d->nconns++;
    d->conn_refs++;   /* until conn_free: c->d must outlive c */
    d->host->nconns++;
    d->nconnecting++;
    d->host->nconnecting++;
    if (c->site)
        c->site->nconnecting++;
    d->n.conns++;
    d->counters_dirty = 1;
    w->st.conns_opened++;
    conn_touch(w, c);
    return c;
}

static void conn_free(struct worker *w, struct conn *c)
{
    c->d->conn_refs--;
    c->d->last_used_ms = w->now_ms;   /* idle from here (worker_forget.c) */
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->dprev)
        c->dprev->dnext = c->dnext;
    else
        c->d->conns = c->dnext;
    if (c->dnext)
        c->dnext->dprev = c->dprev;
    close(c->fd);
    if (c->tls)
        tls_conn_free(c->tls);
    smtp_client_cleanup(&c->smtp);
    buf_free(&c->out.active);
    buf_free(&c->out.pending);
    buf_free(&c->ev);
    free(c->rbuf);
    free(c);
}

/* Close: stop the ring's operations on the socket (shutdown makes a
 * pending recv complete; cancel covers connect), and free the connection
 * once every operation has completed. */
static void conn_close(struct worker *w, struct conn *c)
{
    if (c->state == CONN_CLOSING)
        return;
    struct dest *d = c->d;
    /* a fallback: the messages go back without counting an attempt */
    for (struct job *j = conn_jobs_take(c), *n; j; j = n) {
        n = j->next;
        job_requeue(w, c, j);
    }
    site_conn_avail(c, 0);
    if (c->site) {
        /* A slot of the site is free: the first destination waiting on
         * it may open a connection (its own would wait for the tick). */
        c->site->nconns--;
        struct dest *first = site_next_ready(c->site);
        if (first)
            worker_mark_dirty(w, first);
    }
    if (!c->established) {
        d->nconnecting--;
        d->host->nconnecting--;
        if (c->site)
            c->site->nconnecting--;
    }
    d->nconns--;
    d->host->nconns--;
    atomic_fetch_sub(d->host->all_conns, 1);   /* reserved by dest_schedule */
    host_wake(w, d->host);
    if (!c->took_session) {
        d->npre_tls--;
        d->host->npre_tls--;
        if (c->site)
            c->site->npre_tls--;
    }
    w->nconns--;
    c->state = CONN_CLOSING;
    c->cnext = w->closing;
    w->closing = c;
    /* A send in flight (a last QUIT) may finish; reading stops now. */
    shutdown(c->fd, c->out.inflight ? SHUT_RD : SHUT_RDWR);
    if (c->ops) {
        struct io_uring_sqe *sqe = worker_sqe(w);
        io_uring_prep_cancel(sqe, &c->op_connect, 0);
        io_uring_sqe_set_data(sqe, NULL);
    }
    if (c->recv_armed && w->bufs.on) {
        /* shutdown (SHUT_RD or SHUT_RDWR) ends a multishot receive too:
         * its last completion reads 0 without F_MORE (checked on 6.18);
         * the cancel makes sure of it should shutdown fail */
        struct io_uring_sqe *sqe = worker_sqe(w);
        io_uring_prep_cancel(sqe, &c->op_recv, 0);
        io_uring_sqe_set_data(sqe, NULL);
    }
    /* Never freed here: callers up the stack may still hold c. */
    w->reap_pending = 1;
    if (d->nready)
        worker_mark_dirty(w, d);
}

static void conn_fail(struct worker *w, struct conn *c, const char *reason, enum fail_kind kind)
{
    if (c->state == CONN_CLOSING)
        return;
    struct dest *d = c->d;
    if (c->established && c->idle && c->job == NULL) {
        /* A peer closing (or 421-ing) an idle pooled connection costs a
         * reconnect, not a failure. */
        conn_close(w, c);
        return;
    }
    int lost_busy = c->established && c->job != NULL && kind == FAIL_TRANSIENT;
    /* The transactions behind the first went out in full unless bytes
     * are still waiting (then the last at least did not), and a 421 means
     * the receiver took none of them. */
    int behind_sent = !body_unsent(c) && smtp_client_behind_in_doubt(&c->smtp);
    struct job *first = c->job;
    for (struct job *j = conn_jobs_take(c), *n; j; j = n) {
        n = j->next;
        int doubt = j == first ? smtp_client_in_doubt(&c->smtp) && !body_unsent(c) : behind_sent;
        if (doubt) {
            /* The final dot went out and no reply came back: the receiver
             * may have the message. Retrying is the only safe choice (a
             * possible duplicate, never a loss); count and log it. */
            w->st.in_doubt++;
            fprintf(stderr, "tern: %s: message %s: connection lost after the final dot (%s); "
                            "retrying, possible duplicate\n", j->d->domain, j->m->id, reason);
        }
        /* A peer dropping a working connection costs a reconnect, not a
         * delivery attempt, unless this message keeps meeting it. */
        if (++j->lost_conns >= JOB_LOST_CONNS_MAX && lost_busy)
            outcome_defer(w, j, reason);
        else
            job_requeue(w, c, j);
    }
    w->st.conn_failures++;
    if (w->e->verbose)
        fprintf(stderr, "tern: %s: connection failed: %s\n", d->domain, reason);
    if (lost_busy) {
        conn_close(w, c);
        return;
    }
    snprintf(d->last_error, sizeof(d->last_error), "%s", reason);
    int before_ready = !c->established;
    conn_close(w, c);
    /* another MX address is left: try it before counting a failure */
    if (kind == FAIL_TRANSIENT && before_ready && dest_hop_failed(w, d)) {
        worker_mark_dirty(w, d);
        return;
    }
    d->consecutive_failures++;
    if (kind == FAIL_POLICY || d->consecutive_failures >= CONN_FAILURES_MAX) {
        d->backoff_until_ms = w->now_ms + w->cfg->retry_base_ms;
        d->consecutive_failures = 0;
        dest_defer_all(w, d, d->last_error);
    } else {
        int64_t delay = 100LL << (d->consecutive_failures - 1);
        d->next_connect_ms = w->now_ms + delay;
    }
}

void conn_abort(struct worker *w, struct conn *c, const char *reason)
{
    struct job *first = c->job;
    for (struct job *j; (j = conn_job_pop(c)) != NULL;) {
        if (j == first ? smtp_client_in_doubt(&c->smtp) : smtp_client_behind_in_doubt(&c->smtp))
            w->st.in_doubt++;
        outcome_return(w, j, reason);
    }
    conn_close(w, c);
}

/* What conn_take_from stopped at: src had no more ready mail, c has no
 * room (pipeline full, or its last message is in), or src's rate or a
 * pause holds its mail back. */
enum take_stop { TAKE_EMPTY, TAKE_FULL, TAKE_SHAPED };

/* conn_take_from starts transactions on c for src's ready mail (src is
 * c->d, or another destination of c's site); *started is set when one
 * went. */
static enum take_stop conn_take_from(struct worker *w, struct conn *c, struct dest *src, int *started)
{
    uint64_t max_msgs = (uint64_t)c->d->lim.max_messages_per_connection;
    if (c->site)   /* the site's depth moves with its round trip */
        smtp_client_set_depth(&c->smtp, site_depth(c->site));
    while (src->ready_head) {
        if (!smtp_client_room(&c->smtp) || c->msgs + c->njobs >= max_msgs)
            return TAKE_FULL;
        if (dest_paused(w, src) || !dest_may_send(w, src))
            return TAKE_SHAPED;
        struct job *j = src->ready_head;
        src->ready_head = j->next;
        if (src->ready_head == NULL)
            src->ready_tail = NULL;
        src->nready--;
        if (!job_next_batch(j, (size_t)w->cfg->max_rcpts_per_txn)) {
            outcome_defer(w, j, "out of memory");
            continue;
        }
        int rc = smtp_client_start_txn(&c->smtp, &j->sm);
        if (rc == SMTP_TXN_LATER) {
            dest_requeue_front(src, j);   /* when this connection is idle */
            return TAKE_FULL;
        }
        if (!rc) {
            outcome_fail(w, j, "invalid envelope (address with forbidden characters)");
            continue;
        }
        if (c->njobs)
            w->st.txns_pipelined++;
        j->started_us = w->now_us;
        conn_job_push(c, j);
        c->idle = 0;
        *started = 1;
        /* The connection's last message: QUIT goes out right behind it,
         * one send and one round trip less (smtp_client_quit_after). */
        if (c->msgs + c->njobs >= max_msgs)
            smtp_client_quit_after(&c->smtp);
    }
    return TAKE_EMPTY;
}

/* conn_site_mail: room left after its own destination's mail goes to the
 * destinations waiting on its site, in order; one whose rate holds it
 * back goes to the back of the line, and the walk ends when it comes
 * round to the first of those. */
static void conn_site_mail(struct worker *w, struct conn *c, int *started)
{
    struct site *s = c->site;
    struct dest *first_shaped = NULL, *sd;
    while ((sd = site_next_ready(s)) != NULL && sd != first_shaped) {
        enum take_stop stop = conn_take_from(w, c, sd, started);
        if (stop == TAKE_FULL || c->state != CONN_SMTP)
            return;
        if (stop == TAKE_SHAPED) {
            if (first_shaped == NULL)
                first_shaped = sd;
            site_rotate(s, sd);
        }
    }
}

void conn_hand_job(struct worker *w, struct conn *c)
{
    struct dest *d = c->d;
    /* A backoff halved the limit: the connections over it leave as they
     * finish, so the receiver sees fewer sessions, not just no new ones.
     * (One with transactions in flight leaves when they are done.) */
    if (w->stopping || c->msgs + c->njobs >= (uint64_t)d->lim.max_messages_per_connection ||
        dest_surplus_conn(d)) {
        if (c->njobs == 0)
            conn_quit_or_close(w, c);
        return;
    }
    int started = 0;
    enum take_stop stop = conn_take_from(w, c, d, &started);
    if (stop != TAKE_FULL && c->snode.listed)
        conn_site_mail(w, c, &started);
    if (started) {
        conn_touch(w, c);
        conn_flush(w, c);
        return;
    }
    if (stop == TAKE_SHAPED && c->njobs == 0) {
        c->idle = 1;   /* shaped: the tick hands it mail later */
        conn_touch(w, c);
    }
    if (c->njobs || (c->idle && d->ready_head))
        return;   /* busy, or shaped */
    c->idle = 1;
    conn_touch(w, c);
    /* Destinations wait for a slot on this host (in any worker): a
     * surplus connection with nothing to do gives its slot back. */
    if (d->nconns >= 2 && atomic_load(d->host->all_waiting) > 0)
        conn_quit_or_close(w, c);
}

void conn_quit_or_close(struct worker *w, struct conn *c)
{
    if (c->state == CONN_SMTP && c->smtp.state == SMTP_ST_READY && !c->quitting) {
        if (!smtp_client_quit(&c->smtp))
            return;   /* pipelined transactions still in flight: asked again once READY */
        c->quitting = 1;
        site_conn_avail(c, 0);
        c->idle = 0;
        conn_touch(w, c);
        conn_flush(w, c);
        return;
    }
    if (!c->quitting)
        conn_close(w, c);
}

/* data_too_slow: min_data_rate, averaged since the 354, once the grace
 * period has passed and while the body is still going out. */
static int data_too_slow(const struct worker *w, const struct conn *c, char *why, size_t cap)
{
    int64_t rate = w->cfg->min_data_rate, el = w->now_ms - c->body_start_ms;
    if (rate <= 0 || c->body_start_ms == 0 || el < DATA_RATE_GRACE_MS || !body_unsent(c))
        return 0;
    if (c->body_bytes * 1000 >= (uint64_t)rate * (uint64_t)el)
        return 0;
    snprintf(why, cap, "receiver reads too slowly: %llu bytes of the body in %lld ms "
                       "(min_data_rate %lld bytes/s)",
             (unsigned long long)c->body_bytes, (long long)el, (long long)rate);
    return 1;
}

void conn_check_deadline(struct worker *w, struct conn *c)
{
    char slow[160];
    if (c->state == CONN_CLOSING)
        return;
    if (data_too_slow(w, c, slow, sizeof(slow))) {
        /* A receiver this slow will be as slow next time: defer the
         * message now rather than resend it at once. */
        struct job *j = conn_job_pop(c);
        if (j)
            outcome_defer(w, j, slow);
        conn_fail(w, c, slow, FAIL_TRANSIENT);
        return;
    }
    /* ... and a destination's only connection, once idle for a while. */
    if (c->idle && !c->quitting && c->state == CONN_SMTP &&
        atomic_load(c->d->host->all_waiting) > 0 &&
        c->d->lim.idle_ms - (c->deadline_ms - w->now_ms) >= HOST_STEAL_IDLE_MS) {
        conn_quit_or_close(w, c);
        return;
    }
    if (w->now_ms < c->deadline_ms)
        return;
    if (c->lingering) {
        conn_close(w, c);
        return;
    }
    if (c->idle && !c->quitting) {
        conn_quit_or_close(w, c);
        return;
    }
    if (c->quitting) {
        conn_close(w, c);
        return;
    }
    char reason[128];
    snprintf(reason, sizeof(reason), "timeout in state %s",
             c->state == CONN_CONNECTING ? "CONNECT"
             : (c->tls && !c->tls_done) ? "TLS_HANDSHAKE" : smtp_client_state_name(c->smtp.state));
    if (handshake_interrupted(w, c, reason))
        return;
    conn_fail(w, c, reason, FAIL_TRANSIENT);
}

/* A receive's completion: p holds res bytes when res > 0. */
static void conn_on_recv(struct worker *w, struct conn *c, int res, const uint8_t *p)
{
    if (c->state == CONN_CLOSING)
        return;
    if (res < 0) {
        char reason[128];
        snprintf(reason, sizeof(reason), "recv: %s", strerror(-res));
        if (!handshake_interrupted(w, c, reason))
            conn_fail(w, c, reason, FAIL_TRANSIENT);
        return;
    }
    if (c->lingering) {   /* the peer's FIN (or anything) after 221 */
        conn_close(w, c);
        return;
    }
    if (res == 0) {
        if (handshake_interrupted(w, c, "connection closed by peer during the handshake"))
            return;
        c->peer_eof = 1;
        smtp_client_eof(&c->smtp);
        conn_pump(w, c);
        if (c->state != CONN_CLOSING)
            conn_fail(w, c, "connection closed by peer", FAIL_TRANSIENT);
        return;
    }
    if (p == NULL) {
        conn_fail(w, c, "recv: no buffer", FAIL_TRANSIENT);
        return;
    }
    on_bytes(w, c, p, (size_t)res);
}

/* A multishot receive's completion (the buffer ring is on). The op stays
 * in flight while F_MORE is set; without it the receive has ended and is
 * armed again unless the connection closed or the peer did. The buffer
 * goes back to the ring only after on_bytes: the SMTP client and TLS copy
 * what they keep (smtp_client_feed, tls_conn_feed), nothing points into it
 * afterwards. */
static void conn_on_recv_multi(struct worker *w, struct conn *c, int res, unsigned flags)
{
    int bid;
    const uint8_t *p = worker_bufs_take(w, flags, &bid);
    int more = (flags & IORING_CQE_F_MORE) != 0;
    if (!more) {
        c->ops--;
        c->recv_armed = 0;
    }
    if (res == -ENOBUFS) {
        /* The ring ran dry: the buffers come back as their completions
         * are handled, before this re-arm is submitted. */
        w->st.recv_nobufs++;
    } else {
        conn_on_recv(w, c, res, p);
    }
    worker_bufs_put(w, bid);
    if (!more && (res > 0 || res == -ENOBUFS) && c->state == CONN_SMTP && !c->peer_eof)
        conn_arm_recv(w, c);
}

void conn_on_cqe(struct worker *w, struct op *op, int res, unsigned flags)
{
    struct conn *c = op->conn;
    if (op->kind == OP_RECV && w->bufs.on) {
        conn_on_recv_multi(w, c, res, flags);
        if (c->state == CONN_CLOSING && c->ops == 0)
            w->reap_pending = 1;
        return;
    }
    c->ops--;
    switch (op->kind) {
    case OP_CONNECT:
        if (c->state == CONN_CLOSING)
            break;
        if (res < 0) {
            char reason[128];
            snprintf(reason, sizeof(reason), "connect to %s:%u: %s", c->d->hop.host,
                     (unsigned)c->d->hop.port, strerror(-res));
            conn_fail(w, c, reason, FAIL_TRANSIENT);
            break;
        }
        c->state = CONN_SMTP;
        conn_touch(w, c);
        conn_arm_recv(w, c);
        break;
    case OP_RECV:
        c->recv_armed = 0;
        conn_on_recv(w, c, res, c->rbuf);
        if (res > 0)
            conn_arm_recv(w, c);
        break;
    case OP_SEND:
        c->out.inflight = 0;
        if (c->state == CONN_CLOSING)
            break;
        if (res < 0) {
            char reason[128];
            snprintf(reason, sizeof(reason), "send: %s", strerror(-res));
            conn_fail(w, c, reason, FAIL_TRANSIENT);
            break;
        }
        buf_consume(&c->out.active, (size_t)res);
        conn_kick(w, c);
        if (c->body_start_ms && !c->lingering) {
            c->body_bytes += (uint64_t)res;
            conn_touch(w, c);   /* a block went out: block (or final) from now */
        }
        break;
    default:
        break;
    }
    if (c->state == CONN_CLOSING && c->ops == 0)
        w->reap_pending = 1;
}

void conn_reap(struct worker *w)
{
    w->reap_pending = 0;
    for (struct conn **pp = &w->closing, *c; (c = *pp) != NULL;) {
        if (c->ops == 0) {
            *pp = c->cnext;
            conn_free(w, c);
        } else {
            pp = &c->cnext;
        }
    }
}
