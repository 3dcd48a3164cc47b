/*
 * smtp_drv.h - the scripted-server driver of the SMTP client tests
 * (unit_smtp_client.c, unit_smtp_pipeline.c): it feeds server bytes,
 * reacts to events the way the engine does (STARTTLS -> tls_started,
 * READY -> the next message, or QUIT once nothing is left and nothing is
 * in flight), collects every byte the client writes and logs the events
 * as text. With d->fill it starts transactions on READY while
 * smtp_client_room() says so (pipelined transactions, logged "STARTn"),
 * as worker_conn.c does; otherwise one per READY.
 */
#ifndef TERN_TESTS_SMTP_DRV_H
#define TERN_TESTS_SMTP_DRV_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/smtp_client.h"

#define OUT_CAP 16384
#define LOG_CAP 1024
#define DRV_RES_MAX 8

struct drv {
    struct smtp_client c;
    const struct smtp_msg *msgs;
    size_t nmsgs, next_msg;
    int no_tls_on_event;    /* do not call tls_started on STARTTLS */
    int no_quit;            /* stay READY instead of quitting */
    int fill;               /* start while smtp_client_room() (pipelined) */
    int later;              /* starts answered SMTP_TXN_LATER */
    int quit_after;         /* QUIT behind the last message (logged QA) */
    char out[OUT_CAP];
    size_t out_len;
    char log[LOG_CAP];
    struct smtp_txn_result res[DRV_RES_MAX];
    int nres;
    int in_doubt_at_error;
    int start_failed;
};

static inline void logf_(struct drv *d, const char *s)
{
    size_t n = strlen(d->log);
    snprintf(d->log + n, LOG_CAP - n, "%s%s", n ? " " : "", s);
}

static inline const char *stage_name(enum smtp_txn_stage s)
{
    static const char *const names[] = {"MAIL", "RCPT", "DATA", "BODY"};
    return (unsigned)s < 4 ? names[s] : "?";
}

static inline void drv_init_depth(struct drv *d, enum smtp_tls_mode tls, int depth,
                           const struct smtp_msg *msgs, size_t nmsgs)
{
    memset(d, 0, sizeof(*d));
    struct smtp_client_config cfg = {.helo_name = "client.test", .tls = tls,
                                     .pipeline_depth = depth};
    smtp_client_init(&d->c, &cfg);
    d->msgs = msgs;
    d->nmsgs = nmsgs;
    d->fill = depth > 1;
    d->in_doubt_at_error = -1;
}

static inline void drv_init(struct drv *d, enum smtp_tls_mode tls,
                     const struct smtp_msg *msgs, size_t nmsgs)
{
    drv_init_depth(d, tls, 0, msgs, nmsgs);
}

static inline void drv_collect(struct drv *d)
{
    size_t n;
    const uint8_t *p;
    while ((p = smtp_client_output(&d->c, &n)), n > 0) {
        if (d->out_len + n < OUT_CAP) {
            memcpy(d->out + d->out_len, p, n);
            d->out_len += n;
            d->out[d->out_len] = '\0';
        }
        smtp_client_output_consume(&d->c, n);
    }
}

/* drv_quit_after: with d->quit_after, QUIT goes behind the last message
 * (smtp_client_quit_after), as the engine does at a connection's last. */
static inline void drv_quit_after(struct drv *d)
{
    if (d->quit_after && d->next_msg == d->nmsgs && smtp_client_quit_after(&d->c))
        logf_(d, "QA");
}

/* drv_fill: READY in fill mode, pipelined transactions as the engine
 * starts them. */
static inline void drv_fill(struct drv *d)
{
    while (d->next_msg < d->nmsgs && smtp_client_room(&d->c)) {
        int rc = smtp_client_start_txn(&d->c, &d->msgs[d->next_msg]);
        if (rc == SMTP_TXN_LATER) {
            d->later++;
            return;
        }
        if (!rc) {
            d->start_failed = 1;
            return;
        }
        d->next_msg++;
        char tmp[32];
        snprintf(tmp, sizeof(tmp), "START%zu", d->next_msg);
        logf_(d, tmp);
        drv_quit_after(d);
    }
    if (d->next_msg == d->nmsgs && !d->no_quit && smtp_client_in_flight(&d->c) == 0)
        smtp_client_quit(&d->c);
}

static inline void drv_pump(struct drv *d)
{
    for (int guard = 0; guard < 1000; guard++) {
        struct smtp_event ev = smtp_client_next(&d->c);
        char tmp[160];
        switch (ev.kind) {
        case SMTP_EV_NONE:
            /* As the engine does after a 354: the next may go behind
             * the final dot (PIPELINING without CHUNKING). */
            if (d->fill && d->c.state == SMTP_ST_BODY && !d->c.chunking)
                drv_fill(d);
            drv_collect(d);
            return;
        case SMTP_EV_STARTTLS:
            logf_(d, "STARTTLS");
            drv_collect(d);     /* everything before the handshake */
            if (!d->no_tls_on_event)
                smtp_client_tls_started(&d->c);
            break;
        case SMTP_EV_READY:
            if (d->c.quit_sent)
                logf_(d, "READY-AFTER-QUIT");   /* never: no room once QUIT went */
            if (d->fill) {
                drv_fill(d);
                break;
            }
            logf_(d, "READY");
            if (d->next_msg < d->nmsgs) {
                if (!smtp_client_start_txn(&d->c, &d->msgs[d->next_msg++]))
                    d->start_failed = 1;
                drv_quit_after(d);
            } else if (!d->no_quit) {
                smtp_client_quit(&d->c);
            }
            break;
        case SMTP_EV_TXN_DONE: {
            const struct smtp_txn_result *t = smtp_client_txn(&d->c);
            snprintf(tmp, sizeof(tmp), "TXN(%d,%s,%d%s)", t->accepted,
                     stage_name(t->stage), t->reply.code, t->resend ? ",resend" : "");
            logf_(d, tmp);
            if (d->nres < DRV_RES_MAX)
                d->res[d->nres++] = *t;
            break;
        }
        case SMTP_EV_CLOSED:
            logf_(d, "CLOSED");
            break;
        case SMTP_EV_ERROR:
            snprintf(tmp, sizeof(tmp), "ERROR(%s)", ev.reason ? ev.reason : "?");
            logf_(d, tmp);
            d->in_doubt_at_error = smtp_client_in_doubt(&d->c);
            break;
        }
    }
    logf_(d, "LOOP");
}

static inline void drv_feed(struct drv *d, const char *s, size_t n)
{
    smtp_client_feed(&d->c, (const uint8_t *)s, n);
    drv_pump(d);
}

static inline void drv_feed_str(struct drv *d, const char *s)
{
    drv_feed(d, s, strlen(s));
}

static inline void drv_free(struct drv *d)
{
    smtp_client_cleanup(&d->c);
}

#endif
