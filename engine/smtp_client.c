/*
 * smtp_client.c - sans-I/O SMTP client session; see smtp_client.h.
 *
 * Structure: smtp_client_next() pops pending events first, then parses one
 * reply at a time from the input and hands it to on_reply(), a switch over
 * the state that waits for that reply ("handle reply in state"). Commands
 * are written by the send_* helpers ("enter state"). With PIPELINING the
 * whole MAIL/RCPT.../DATA group is written at once and the states
 * RSET -> MAIL -> RCPT (x n) -> DATA then only consume the replies, in the
 * order RFC 2920 guarantees; without it each handler writes the next
 * command. Events that follow from a reply are queued in pending_* flags
 * and returned by the next calls, so one reply can yield TXN_DONE + READY.
 */
#include "engine/smtp_client.h"

#include <stdio.h>
#include <string.h>

#include "engine/smtp_body.h"
#include "engine/span.h"

static const char *const state_names[] = {
    [SMTP_ST_GREETING] = "GREETING",
    [SMTP_ST_EHLO] = "EHLO",
    [SMTP_ST_HELO] = "HELO",
    [SMTP_ST_STARTTLS] = "STARTTLS",
    [SMTP_ST_TLS_HANDSHAKE] = "TLS_HANDSHAKE",
    [SMTP_ST_READY] = "READY",
    [SMTP_ST_RSET] = "RSET",
    [SMTP_ST_MAIL] = "MAIL",
    [SMTP_ST_RCPT] = "RCPT",
    [SMTP_ST_DATA] = "DATA",
    [SMTP_ST_BODY] = "BODY",
    [SMTP_ST_QUIT] = "QUIT",
    [SMTP_ST_CLOSED] = "CLOSED",
    [SMTP_ST_FAILED] = "FAILED",
};
_Static_assert(sizeof(state_names) / sizeof(state_names[0]) == SMTP_ST_COUNT,
               "state_names out of sync with enum smtp_client_state");

const char *smtp_client_state_name(enum smtp_client_state s)
{
    if ((unsigned)s >= SMTP_ST_COUNT || state_names[s] == NULL)
        return "?";
    return state_names[s];
}

/* Error texts (static: the caller may keep the pointer). */
static const char ERR_421[] = "service not available (421)";
static const char ERR_MALFORMED[] = "malformed reply";
static const char ERR_EOF[] = "connection closed by peer";
static const char ERR_INJECTED[] = "plaintext injected after STARTTLS";
static const char ERR_UNEXPECTED[] = "unexpected reply";

/* fail marks the session unusable; ERROR is the next event. With
 * send_quit the session is still in sync, so QUIT is queued politely
 * (the caller flushes the output before closing). */
static void fail(struct smtp_client *c, const char *reason,
                 const struct smtp_reply *r, int send_quit)
{
    if (send_quit && !c->quit_sent) {
        buf_append_str(&c->out, "QUIT\r\n");
        c->quit_sent = 1;
    }
    c->state = SMTP_ST_FAILED;
    c->pending_error = 1;
    c->err_reason = reason;
    c->err_reply = r;
    c->pending_ready = 0;
    c->pending_starttls = 0;
}

/* ---- output: the buffer and the body references ---- */

const uint8_t *smtp_client_output(const struct smtp_client *c, size_t *n)
{
    size_t used = buf_used(&c->out);
    if (c->nrefs > 0) {
        const struct smtp_out_ref *r = &c->refs[c->ref_head];
        size_t before = (size_t)(r->at - c->out_taken);   /* out's bytes ahead of it */
        if (before == 0) {
            *n = r->n;
            return r->p;
        }
        used = before;
    }
    *n = used;
    /* Never form NULL + 0 (undefined) for a buffer that never grew. */
    return used ? buf_peek(&c->out) : (const uint8_t *)"";
}

void smtp_client_output_consume(struct smtp_client *c, size_t n)
{
    if (c->nrefs > 0 && c->refs[c->ref_head].at == c->out_taken) {
        struct smtp_out_ref *r = &c->refs[c->ref_head];
        r->p += n;
        r->n -= n;
        if (r->n == 0) {
            c->ref_head = (c->ref_head + 1) % SMTP_OUT_REFS_MAX;
            c->nrefs--;
        }
        return;
    }
    buf_consume(&c->out, n);
    c->out_taken += n;
}

/* inside: p[0..n) lies within m's data (n >= 1). */
static int inside(const struct smtp_msg *m, const uint8_t *p, size_t n)
{
    return m != NULL && n > 0 && p >= m->data && n <= m->data_len &&
           (size_t)(p - m->data) <= m->data_len - n;
}

/* out_body queues a piece of a body: a long run of m's data as a
 * reference, anything else (and a run when the ring is full) as a copy. */
struct body_out {
    struct smtp_client *c;
    const struct smtp_msg *m;
};

static void out_body(void *ctx, const uint8_t *p, size_t n)
{
    struct body_out *b = ctx;
    struct smtp_client *c = b->c;
    if (n < SMTP_OUT_REF_MIN || !inside(b->m, p, n) || c->nrefs == SMTP_OUT_REFS_MAX) {
        buf_append(&c->out, p, n);      /* sticky error; the callers check it */
        return;
    }
    struct smtp_out_ref *r = &c->refs[(c->ref_head + c->nrefs) % SMTP_OUT_REFS_MAX];
    r->at = c->out_taken + buf_used(&c->out);
    r->p = p;
    r->n = n;
    c->nrefs++;
}

static void queue_body(struct smtp_client *c, const struct smtp_msg *m, int dotted, int canonical)
{
    struct body_out b = {c, m};
    smtp_body_walk(m->data, m->data_len, dotted, canonical, out_body, &b);
}

/* refs_into: a reference still unsent points into m's data. */
static int refs_into(const struct smtp_client *c, const struct smtp_msg *m)
{
    for (size_t i = 0; i < c->nrefs; i++) {
        const struct smtp_out_ref *r = &c->refs[(c->ref_head + i) % SMTP_OUT_REFS_MAX];
        if (inside(m, r->p, r->n))
            return 1;
    }
    return 0;
}

/* refs_copy turns the whole output into bytes of its buffer, in order, so
 * that no reference outlives its message. Returns 0 when out of memory
 * (the output is then dropped: the session is failing anyway). */
static int refs_copy(struct smtp_client *c)
{
    struct buf all;
    buf_init(&all, 0);
    size_t n;
    const uint8_t *p;
    while ((p = smtp_client_output(c, &n)), n > 0) {
        buf_append(&all, p, n);
        smtp_client_output_consume(c, n);
    }
    buf_free(&c->out);
    c->out = all;
    if (all.err) {
        buf_reset(&c->out);
        return 0;
    }
    return 1;
}

/* ---- commands ("enter state") ---- */

static void send_ehlo(struct smtp_client *c, const char *verb)
{
    buf_append_str(&c->out, verb);
    buf_append_str(&c->out, c->helo_name);
    buf_append_str(&c->out, "\r\n");
    c->replies_due = 1;
}

static void send_mail(struct smtp_client *c, const struct smtp_msg *m, int e8, int utf8)
{
    buf_append_str(&c->out, "MAIL FROM:<");
    buf_append_str(&c->out, m->from);
    buf_append_str(&c->out, ">");
    /* RFC 1870: declare the size so an oversized message fails at MAIL. */
    if (c->caps.size) {
        buf_append_str(&c->out, " SIZE=");
        buf_append_u64(&c->out, m->data_len);
    }
    /* RFC 6152 / 6531: say what the transaction carries; start_txn has
     * already refused a message the peer cannot take. */
    if (e8)
        buf_append_str(&c->out, " BODY=8BITMIME");
    if (utf8)
        buf_append_str(&c->out, " SMTPUTF8");
    buf_append_str(&c->out, "\r\n");
}

static void send_rcpt(struct smtp_client *c, const struct smtp_msg *m, size_t i)
{
    buf_append_str(&c->out, "RCPT TO:<");
    buf_append_str(&c->out, m->rcpts[i]);
    buf_append_str(&c->out, ">\r\n");
}

/* ---- capabilities ---- */

/* parse_ehlo fills caps from the keyword lines (all but the first). */
static void parse_ehlo(struct smtp_caps *caps, const struct smtp_reply *r)
{
    memset(caps, 0, sizeof(*caps));
    caps->esmtp = 1;
    for (int i = 1; i < r->nlines; i++) {
        size_t n;
        const char *line = smtp_reply_line(r, i, &n);
        if (line == NULL)
            break;
        /* A line cut by truncation could read as a different keyword or
         * a smaller SIZE; ignore it. */
        if (r->truncated && line + n == r->text + r->text_len)
            break;
        struct span s, kw;
        span_init(&s, (const uint8_t *)line, n);
        if (!span_get_until(&s, &kw, ' ')) {
            kw = s;
            s.len = 0;
        }
        if (span_eq_nocase(&kw, "PIPELINING")) {
            caps->pipelining = 1;
        } else if (span_eq_nocase(&kw, "STARTTLS")) {
            caps->starttls = 1;
        } else if (span_eq_nocase(&kw, "CHUNKING")) {
            caps->chunking = 1;
        } else if (span_eq_nocase(&kw, "8BITMIME")) {
            caps->eightbitmime = 1;
        } else if (span_eq_nocase(&kw, "SMTPUTF8")) {
            caps->smtputf8 = 1;
        } else if (span_eq_nocase(&kw, "ENHANCEDSTATUSCODES")) {
            caps->enhancedstatuscodes = 1;
        } else if (span_eq_nocase(&kw, "SIZE")) {
            /* "SIZE" alone or "SIZE 0": no fixed limit. A number too large
             * for 64 bits is no practical limit either. */
            uint64_t v = 0;
            span_skip(&s, 1);
            if (!span_get_decimal_u64(&s, &v))
                v = 0;
            caps->size = v;
        }
    }
}

/* ---- transaction helpers ---- */

/* finish_txn ends the transaction: TXN_DONE, then READY. Any failure
 * leaves the server's transaction state unknown to us, so the next
 * transaction starts with RSET (RFC 5321 4.1.1.5). */
static void finish_txn(struct smtp_client *c, int accepted)
{
    c->txn.accepted = accepted;
    c->need_rset = !accepted;
    /* Those already sent behind it may meet a receiver still in this
     * transaction (PIPELINED TRANSACTIONS in the header). */
    c->after_failure = !accepted && c->nbehind > 0;
    c->promote = c->nbehind > 0;
    c->done_msg = c->msg;
    c->msg = NULL;
    c->body_sent = 0;
    c->dot_only = 0;
    c->replies_due = 0;
    c->state = SMTP_ST_READY;
    c->pending_txn_done = 1;
    /* Once QUIT went behind the last transaction there is no room again:
     * no READY, also while those behind this one are still in flight. */
    c->pending_ready = !c->quit_sent;
    if (c->nbehind > 0)
        return;
    if (c->quit_sent) {
        /* QUIT went behind it (smtp_client_quit_after): its reply is
         * next, and the session is not READY again. */
        c->state = SMTP_ST_QUIT;
        c->pending_ready = 0;
        c->replies_due = 1;
    }
    c->quit_after = 0;   /* not sent (refused before the body): QUIT when READY */
}

/* quit_if_due: QUIT goes out behind the session's last transaction
 * (smtp_client_quit_after) once all of it is queued: at once with BDAT,
 * after the body (or the "." alone) with DATA. RFC 2920 3.1: QUIT may
 * end a group. */
static void quit_if_due(struct smtp_client *c)
{
    if (!c->quit_after || c->quit_sent)
        return;
    if (!c->chunking && !(c->state == SMTP_ST_BODY && c->nbehind == 0))
        return;
    buf_append_str(&c->out, "QUIT\r\n");
    c->quit_sent = 1;
}

/* note_rcpt_reply keeps what the outcome needs of recipient i's reply:
 * its code, enhanced code and, for a refusal, the first line of its text
 * (while the pool has room). */
_Static_assert(sizeof(((struct smtp_txn_result *)0)->rcpt_esc[0]) ==
                   sizeof(((struct smtp_reply *)0)->esc),
               "a recipient's enhanced code is copied whole");
static void note_rcpt_reply(struct smtp_txn_result *t, size_t i, const struct smtp_reply *r)
{
    t->rcpt_code[i] = r->code;
    /* Both are SMTP_ESC_MAX and the parser terminates esc; a bounded
     * copy, not snprintf, on this per-recipient path. */
    size_t el = strnlen(r->esc, sizeof(r->esc) - 1);
    memcpy(t->rcpt_esc[i], r->esc, el);
    t->rcpt_esc[i][el] = '\0';
    if (r->code / 100 == 2)
        return;
    if (t->rcpt_texts_used == 0)
        t->rcpt_texts_used = 1;     /* offset 0 stays the empty string */
    size_t n = strcspn(r->text, "\n");
    if (n > SMTP_RCPT_TEXT_MAX - 1)
        n = SMTP_RCPT_TEXT_MAX - 1;
    if (t->rcpt_texts_used + n + 1 > sizeof(t->rcpt_texts))
        return;
    memcpy(t->rcpt_texts + t->rcpt_texts_used, r->text, n);
    t->rcpt_texts[t->rcpt_texts_used + n] = '\0';
    t->rcpt_text_off[i] = (uint16_t)t->rcpt_texts_used;
    t->rcpt_texts_used += n + 1;
}

/* The session is established: decide about STARTTLS or go READY. */
static void after_hello(struct smtp_client *c, const struct smtp_reply *r)
{
    if (!c->tls_active && c->cfg.tls != SMTP_TLS_NONE && c->caps.starttls) {
        buf_append_str(&c->out, "STARTTLS\r\n");
        c->replies_due = 1;
        c->state = SMTP_ST_STARTTLS;
        return;
    }
    if (!c->tls_active && c->cfg.tls == SMTP_TLS_REQUIRED) {
        fail(c, "STARTTLS not offered", r, 1);
        return;
    }
    c->replies_due = 0;
    c->state = SMTP_ST_READY;
    c->pending_ready = 1;
}

/* ---- replies ("handle reply in state") ---- */

static void on_reply(struct smtp_client *c, const struct smtp_reply *r)
{
    int cls = smtp_reply_class(r);

    if (c->replies_due > 0)
        c->replies_due--;

    /* RFC 5321 3.8: 421 may answer any command; the server is closing.
     * The greeting has its own rule below. After the final dot, the
     * outcome is known (not delivered), so report it before the error. */
    if (r->code == 421 && c->state != SMTP_ST_GREETING &&
        c->state != SMTP_ST_QUIT) {
        /* A 421 before BDAT's turn: the server closes without the message,
         * and without any pipelined behind it. */
        if (c->chunking && c->state != SMTP_ST_BODY)
            c->body_sent = 0;
        c->behind_refused = 1;
        if (c->state == SMTP_ST_BODY && c->body_sent) {
            c->txn.stage = SMTP_STAGE_BODY;
            c->txn.reply = *r;
            finish_txn(c, 0);
            c->pending_ready = 0;
            c->need_rset = 1;
        }
        fail(c, ERR_421, r, 0);
        return;
    }

    switch (c->state) {
    case SMTP_ST_GREETING:
        if (r->code != 220) {
            fail(c, "greeting refused", r, 1);
            return;
        }
        send_ehlo(c, "EHLO ");
        c->state = SMTP_ST_EHLO;
        return;

    case SMTP_ST_EHLO:
        if (cls == 2) {
            parse_ehlo(&c->caps, r);
            after_hello(c, r);
        } else if (cls == 5) {
            /* RFC 5321 4.1.4: fall back to HELO; no extensions then. */
            send_ehlo(c, "HELO ");
            c->state = SMTP_ST_HELO;
        } else {
            fail(c, "EHLO refused", r, 1);
        }
        return;

    case SMTP_ST_HELO:
        if (cls != 2) {
            fail(c, "HELO refused", r, 1);
            return;
        }
        memset(&c->caps, 0, sizeof(c->caps));
        after_hello(c, r);
        return;

    case SMTP_ST_STARTTLS:
        if (r->code == 220) {
            /* RFC 3207 / CVE-2011-0411 class: bytes after the 220 were
             * sent before the handshake, so they are not protected by it;
             * processing them after TLS would let an attacker inject
             * replies. Stop without sending anything more. */
            if (buf_used(&c->in) > 0) {
                fail(c, ERR_INJECTED, r, 0);
                return;
            }
            c->replies_due = 0;
            c->state = SMTP_ST_TLS_HANDSHAKE;
            c->pending_starttls = 1;
            return;
        }
        if (c->cfg.tls == SMTP_TLS_REQUIRED) {
            fail(c, "STARTTLS refused", r, 1);
            return;
        }
        /* MAY: carry on in plaintext; the plaintext EHLO caps stand. */
        c->replies_due = 0;
        c->state = SMTP_ST_READY;
        c->pending_ready = 1;
        return;

    case SMTP_ST_RSET:
        if (cls != 2) {
            fail(c, "RSET refused", r, 1);
            return;
        }
        c->need_rset = 0;
        if (!c->pipelined) {
            send_mail(c, c->msg, c->txn_8bit, c->txn_utf8);
            c->replies_due = 1;
        }
        c->state = SMTP_ST_MAIL;
        return;

    case SMTP_ST_MAIL:
        if (cls == 2) {
            c->mail_ok = 1;
        } else if (cls == 3) {
            fail(c, ERR_UNEXPECTED, r, 1);
            return;
        } else {
            c->txn.stage = SMTP_STAGE_MAIL;
            c->txn.reply = *r;
            c->txn.resend = r->code == 503 && c->after_failure;
            if (!c->pipelined) {
                finish_txn(c, 0);
                return;
            }
            /* Pipelined: the RCPT and DATA replies still come; drain. */
        }
        if (!c->pipelined) {
            send_rcpt(c, c->msg, 0);
            c->replies_due = 1;
        }
        c->state = SMTP_ST_RCPT;
        return;

    case SMTP_ST_RCPT:
        if (cls == 3) {
            fail(c, ERR_UNEXPECTED, r, 1);
            return;
        }
        note_rcpt_reply(&c->txn, c->rcpt_next++, r);
        if (cls == 2 && c->mail_ok) {
            c->rcpt_ok++;
        } else if (c->mail_ok && c->rcpt_ok == 0) {
            /* Remember the latest refusal in case none is accepted. */
            c->txn.stage = SMTP_STAGE_RCPT;
            c->txn.reply = *r;
        }
        if (c->rcpt_next < c->msg->nrcpts) {
            if (!c->pipelined) {
                send_rcpt(c, c->msg, c->rcpt_next);
                c->replies_due = 1;
            }
            return;
        }
        if (!c->pipelined) {
            if (c->rcpt_ok == 0) {
                finish_txn(c, 0);   /* no DATA sent; RSET comes next time */
                return;
            }
            buf_append_str(&c->out, "DATA\r\n");
            c->replies_due = 1;
        }
        if (c->chunking) {
            /* The body went with the commands; BDAT's reply is the final
             * one. Nobody to receive it: its reply changes nothing. */
            if (!c->mail_ok || c->rcpt_ok == 0) {
                c->dot_only = 1;
                c->body_sent = 0;
            }
            c->state = SMTP_ST_BODY;
            return;
        }
        c->state = SMTP_ST_DATA;
        return;

    case SMTP_ST_DATA:
        if (r->code == 354) {
            if (c->mail_ok && c->rcpt_ok > 0) {
                queue_body(c, c->msg, 1, c->txn_canonical);
                if (c->out.err) {
                    fail(c, "out of memory", NULL, 0);
                    return;
                }
                c->body_sent = 1;
            } else {
                /* Pipelined DATA accepted although nobody will receive
                 * the message: end it empty and ignore the outcome. */
                buf_append_str(&c->out, ".\r\n");
                c->dot_only = 1;
            }
            c->replies_due = 1;
            c->state = SMTP_ST_BODY;
            quit_if_due(c);
            return;
        }
        if (cls == 2 || cls == 3) {
            fail(c, ERR_UNEXPECTED, r, 1);
            return;
        }
        if (c->mail_ok && c->rcpt_ok > 0) {
            c->txn.stage = SMTP_STAGE_DATA;
            c->txn.reply = *r;
        }
        finish_txn(c, 0);
        return;

    case SMTP_ST_BODY:
        if (c->dot_only) {
            finish_txn(c, 0);       /* stage and reply set earlier */
            return;
        }
        if (cls == 3) {
            /* Nonsense after the dot: keep in_doubt set for the caller. */
            fail(c, ERR_UNEXPECTED, r, 0);
            return;
        }
        c->txn.stage = SMTP_STAGE_BODY;
        c->txn.reply = *r;
        finish_txn(c, cls == 2);
        return;

    case SMTP_ST_QUIT:
        c->state = SMTP_ST_CLOSED;
        c->pending_closed = 1;
        return;

    case SMTP_ST_READY:
        /* Nothing was asked (a 421 was handled above). */
        fail(c, ERR_UNEXPECTED, r, 1);
        return;

    case SMTP_ST_TLS_HANDSHAKE:
    case SMTP_ST_CLOSED:
    case SMTP_ST_FAILED:
    case SMTP_ST_COUNT:
    default:
        fail(c, "internal error: reply in bad state", r, 0);
        return;
    }
}

/* ---- pipelined transactions ---- */

/* promote: once the caller has read the TXN_DONE of msg, the oldest
 * transaction sent behind it becomes msg; its replies are next. */
static void promote(struct smtp_client *c)
{
    if (!c->promote || c->pending_txn_done || c->state == SMTP_ST_FAILED ||
        c->state == SMTP_ST_CLOSED)
        return;
    c->promote = 0;
    /* Only one waits behind a DATA transaction, so the flag is its own. */
    int data = c->behind_data;
    c->behind_data = 0;
    const struct smtp_msg *m = c->behind[c->behind_head];
    c->behind_head = (c->behind_head + 1) % SMTP_PIPELINE_MAX;
    c->nbehind--;
    memset(&c->txn, 0, sizeof(c->txn));
    c->msg = m;
    c->rcpt_next = 0;
    c->rcpt_ok = 0;
    c->mail_ok = 0;
    c->body_sent = !data;   /* BDAT: it went out with its commands */
    c->dot_only = 0;
    c->pipelined = 1;
    c->chunking = !data;
    if (data)
        c->txn_canonical = c->behind_canonical;   /* DATA's encoder, after 354 */
    /* MAIL, each RCPT, DATA or BDAT; BDAT's group starts with RSET */
    c->replies_due = m->nrcpts + 2 + !data;
    c->state = data ? SMTP_ST_MAIL : SMTP_ST_RSET;
}

/* stackable: one more transaction may go out behind those in flight. */
static int stackable(const struct smtp_client *c)
{
    if (c->msg == NULL || !c->pipelined || c->need_rset || c->quit_sent || c->quit_after ||
        c->pending_error || c->pending_txn_done)
        return 0;
    int depth = c->cfg.pipeline_depth > SMTP_PIPELINE_MAX ? SMTP_PIPELINE_MAX : c->cfg.pipeline_depth;
    if (!c->chunking)
        /* DATA: the next group may follow the final dot (RFC 2920 3.1),
         * and only one: its body must wait for its own 354. A dot alone
         * (no recipient took it) is a failure: nothing goes behind it. */
        return depth > 1 && c->nbehind == 0 && c->state == SMTP_ST_BODY && c->body_sent;
    /* (RSET: the current one was sent behind another, RSET first) */
    if (c->state != SMTP_ST_RSET && c->state != SMTP_ST_MAIL && c->state != SMTP_ST_RCPT &&
        c->state != SMTP_ST_BODY)
        return 0;
    return (int)c->nbehind + 1 < depth;
}

void smtp_client_set_depth(struct smtp_client *c, int depth)
{
    c->cfg.pipeline_depth = depth > SMTP_PIPELINE_MAX ? SMTP_PIPELINE_MAX : depth;
}

int smtp_client_room(struct smtp_client *c)
{
    promote(c);
    if (c->state == SMTP_ST_READY && c->nbehind == 0)
        return !c->pending_error && !c->pending_txn_done;
    return stackable(c);
}

size_t smtp_client_in_flight(const struct smtp_client *c)
{
    return (c->msg != NULL) + c->nbehind;
}

/* ---- public API ---- */

/* A HELO name goes on the wire verbatim: only printable ASCII without
 * spaces, else fall back to a safe default. */
static int helo_name_ok(const char *s)
{
    if (s == NULL || s[0] == '\0' || strlen(s) > SMTP_HELO_NAME_MAX)
        return 0;
    for (; *s; s++)
        if ((unsigned char)*s <= ' ' || (unsigned char)*s >= 0x7f)
            return 0;
    return 1;
}

void smtp_client_init(struct smtp_client *c, const struct smtp_client_config *cfg)
{
    memset(c, 0, sizeof(*c));
    c->cfg = *cfg;
    const char *name = helo_name_ok(cfg->helo_name) ? cfg->helo_name : "localhost";
    size_t n = strlen(name);
    memcpy(c->helo_name, name, n + 1);
    c->cfg.helo_name = c->helo_name;
    buf_init(&c->in, SMTP_CLIENT_INPUT_MAX);
    buf_init(&c->out, 0);
    c->state = SMTP_ST_GREETING;
    c->replies_due = 1;
}

void smtp_client_cleanup(struct smtp_client *c)
{
    buf_free(&c->in);
    buf_free(&c->out);
    c->nrefs = 0;
    c->msg = NULL;
}

int smtp_client_feed(struct smtp_client *c, const uint8_t *p, size_t n)
{
    if (n == 0 || c->state == SMTP_ST_CLOSED || c->state == SMTP_ST_FAILED)
        return 1;
    if (c->state == SMTP_ST_TLS_HANDSHAKE || c->pending_starttls) {
        /* No plaintext can legitimately arrive between the 220 to
         * STARTTLS and the end of the handshake. */
        fail(c, ERR_INJECTED, NULL, 0);
        return 1;
    }
    if (!buf_append(&c->in, p, n)) {
        fail(c, "input limit exceeded", NULL, 0);
        return 0;
    }
    return 1;
}

void smtp_client_eof(struct smtp_client *c)
{
    c->eof = 1;
}

static struct smtp_event ev(enum smtp_event_kind kind, const char *reason,
                            const struct smtp_reply *r)
{
    struct smtp_event e = {kind, reason, r};
    return e;
}

struct smtp_event smtp_client_next(struct smtp_client *c)
{
    for (;;) {
        /* No reference may outlive its message: copy what is unsent before
         * the event after which the caller may free it. */
        if (c->nrefs > 0 && ((c->pending_txn_done && refs_into(c, c->done_msg)) ||
                             c->pending_error || c->pending_closed) && !refs_copy(c)) {
            c->pending_txn_done = 0;   /* unsent: the caller requeues it after ERROR */
            fail(c, "out of memory", NULL, 0);
        }
        if (c->pending_txn_done) {
            c->pending_txn_done = 0;
            return ev(SMTP_EV_TXN_DONE, NULL, &c->txn.reply);
        }
        if (c->pending_error) {
            c->pending_error = 0;
            return ev(SMTP_EV_ERROR, c->err_reason, c->err_reply);
        }
        if (c->pending_starttls) {
            c->pending_starttls = 0;
            return ev(SMTP_EV_STARTTLS, NULL, &c->last);
        }
        if (c->pending_ready) {
            c->pending_ready = 0;
            return ev(SMTP_EV_READY, NULL, NULL);
        }
        if (c->pending_closed) {
            c->pending_closed = 0;
            return ev(SMTP_EV_CLOSED, NULL, &c->last);
        }
        if (c->state == SMTP_ST_CLOSED || c->state == SMTP_ST_FAILED)
            return ev(SMTP_EV_NONE, NULL, NULL);
        promote(c);   /* the TXN_DONE before was read: the next one's replies */
        if (c->state == SMTP_ST_TLS_HANDSHAKE) {
            if (!c->eof)
                return ev(SMTP_EV_NONE, NULL, NULL);
            fail(c, ERR_EOF, NULL, 0);
            continue;
        }

        size_t used = buf_used(&c->in), consumed = 0;
        const char *perr = NULL;
        enum smtp_reply_status st = SMTP_REPLY_NEED_MORE;
        if (used > 0)
            st = smtp_reply_parse(buf_peek(&c->in), used, &c->last, &consumed, &perr);
        switch (st) {
        case SMTP_REPLY_OK:
            buf_consume(&c->in, consumed);
            on_reply(c, &c->last);
            continue;
        case SMTP_REPLY_ERR:
            fail(c, ERR_MALFORMED, NULL, 0);
            continue;
        case SMTP_REPLY_NEED_MORE:
        default:
            break;
        }
        if (!c->eof)
            return ev(SMTP_EV_NONE, NULL, NULL);
        if (c->state == SMTP_ST_QUIT) {
            c->state = SMTP_ST_CLOSED;
            if (c->nrefs > 0)
                refs_copy(c);   /* as above; without memory nothing more goes out */
            return ev(SMTP_EV_CLOSED, NULL, NULL);
        }
        fail(c, ERR_EOF, NULL, 0);
    }
}

void smtp_client_tls_started(struct smtp_client *c)
{
    if (c->state != SMTP_ST_TLS_HANDSHAKE)
        return;
    c->tls_active = 1;
    /* RFC 3207 4.2: discard everything learnt before TLS. */
    memset(&c->caps, 0, sizeof(c->caps));
    buf_reset(&c->in);
    send_ehlo(c, "EHLO ");
    c->state = SMTP_ST_EHLO;
}

/* An address goes on the wire inside <...>: refuse anything that could end
 * the line or the path early, or smuggle an ESMTP parameter. */
static int addr_ok(const char *a, int may_be_empty)
{
    if (a == NULL)
        return 0;
    size_t n = strnlen(a, SMTP_ADDR_MAX + 1);
    if (n > SMTP_ADDR_MAX || (n == 0 && !may_be_empty))
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)a[i];
        if (ch < 0x20 || ch == 0x7f || ch == '<' || ch == '>')
            return 0;
    }
    return 1;
}

/* send_bdat_last queues the whole body as one last chunk (RFC 3030 2):
 * with PIPELINING it joins MAIL and RCPT in one write, so the outcome is
 * in doubt from here on. */
static void send_bdat_last(struct smtp_client *c, const struct smtp_msg *m, int as_is)
{
    /* Mail in canonical form (the usual case) goes as it is: a large body
     * as an output reference, no copy. */
    buf_append_str(&c->out, "BDAT ");
    buf_append_u64(&c->out, as_is ? m->data_len : smtp_body_chunk_len(m->data, m->data_len));
    buf_append_str(&c->out, " LAST\r\n");
    if (as_is)
        queue_body(c, m, 0, 1);                            /* err checked by the caller */
    else
        smtp_body_encode_chunk(&c->out, m->data, m->data_len);
    c->body_sent = 1;
}

/* has_8bit: any byte >= 0x80 (RFC 6152 8-bit data), a word at a time. */
static int has_8bit(const uint8_t *p, size_t n)
{
    const uint64_t high = 0x8080808080808080ULL;
    size_t i = 0;
    for (; i + sizeof(uint64_t) <= n; i += sizeof(uint64_t)) {
        uint64_t w;
        memcpy(&w, p + i, sizeof(w));
        if (w & high)
            return 1;
    }
    for (; i < n; i++)
        if (p[i] & 0x80)
            return 1;
    return 0;
}

/* addrs_non_ascii: the envelope needs SMTPUTF8 (RFC 6531). */
static int addrs_non_ascii(const struct smtp_msg *m)
{
    if (has_8bit((const uint8_t *)m->from, strlen(m->from)))
        return 1;
    for (size_t i = 0; i < m->nrcpts; i++)
        if (has_8bit((const uint8_t *)m->rcpts[i], strlen(m->rcpts[i])))
            return 1;
    return 0;
}

/* refuse_locally ends the transaction before anything is sent, with the
 * reply the receiver would have given; the session stays READY. */
static void refuse_locally(struct smtp_client *c, int code, const char *esc, const char *text)
{
    struct smtp_reply *r = &c->txn.reply;
    c->txn.stage = SMTP_STAGE_MAIL;
    r->code = code;
    r->nlines = 1;
    snprintf(r->esc, sizeof(r->esc), "%s", esc);
    r->text_len = (size_t)snprintf(r->text, sizeof(r->text), "%s %s", esc, text);
    c->txn.local = 1;
    int keep_rset = c->need_rset;
    finish_txn(c, 0);
    c->need_rset = keep_rset;   /* nothing was sent */
}

int smtp_client_start_txn(struct smtp_client *c, const struct smtp_msg *m)
{
    promote(c);
    int stack = c->state != SMTP_ST_READY || c->nbehind > 0;
    if (stack ? !stackable(c) : (c->pending_error || c->pending_txn_done))
        return 0;
    if (m == NULL || m->nrcpts == 0 || m->nrcpts > SMTP_MAX_RCPTS_PER_TXN ||
        m->rcpts == NULL || (m->data == NULL && m->data_len > 0))
        return 0;
    if (!addr_ok(m->from, 1))
        return 0;
    for (size_t i = 0; i < m->nrcpts; i++)
        if (!addr_ok(m->rcpts[i], 0))
            return 0;

    int e8 = 0;
    int canonical = smtp_body_scan(m->data, m->data_len, &e8);
    int utf8 = addrs_non_ascii(m);
    /* Do not send what the peer said it cannot take (RFC 1870, 6152,
     * 6531): refuse here, with the status a receiver would have given.
     * Behind other transactions its TXN_DONE would come out of order:
     * the caller offers it again when the session is idle. */
    int too_big = c->caps.size && m->data_len > c->caps.size;
    int no_utf8 = utf8 && !c->caps.smtputf8;
    int no_8bit = e8 && !c->caps.eightbitmime;
    if (stack && (too_big || no_utf8 || no_8bit))
        return SMTP_TXN_LATER;
    if (stack) {
        /* RFC 2920 3.1: MAIL, RCPT and BDAT may stand anywhere in a group;
         * the message content after 354 may start one (the group then
         * ends with DATA, whose 354 the body waits for). Behind a BDAT
         * transaction RSET comes first: one that failed (no recipient
         * taken, the chunk refused) may leave the receiver in it (Exim
         * does, RFC 3030 lets it), and it would take this MAIL as out of
         * sequence (503) and these RCPTs and this body into that
         * transaction: delivered under the other's sender, then again
         * when resent. After a final dot the receiver's transaction is
         * over whatever its reply. */
        if (c->chunking)
            buf_append_str(&c->out, "RSET\r\n");
        send_mail(c, m, e8, utf8);
        for (size_t i = 0; i < m->nrcpts; i++)
            send_rcpt(c, m, i);
        if (c->chunking) {
            send_bdat_last(c, m, canonical);
        } else {
            buf_append_str(&c->out, "DATA\r\n");
            c->behind_data = 1;
            c->behind_canonical = canonical;
        }
        c->behind[(c->behind_head + c->nbehind) % SMTP_PIPELINE_MAX] = m;
        c->nbehind++;
        if (c->out.err)
            fail(c, "out of memory", NULL, 0);
        return 1;
    }

    memset(&c->txn, 0, sizeof(c->txn));
    c->msg = m;
    c->rcpt_next = 0;
    c->rcpt_ok = 0;
    c->mail_ok = 0;
    c->body_sent = 0;
    c->dot_only = 0;
    c->pending_ready = 0;
    c->pipelined = c->caps.pipelining;
    c->chunking = c->pipelined && c->caps.chunking;
    c->txn_8bit = e8;
    c->txn_canonical = canonical;   /* scanned once; DATA's encoder reuses it */
    c->txn_utf8 = utf8;

    if (too_big) {
        refuse_locally(c, 552, "5.3.4", "message exceeds the receiver's SIZE limit");
        return 1;
    }
    if (no_utf8) {
        refuse_locally(c, 553, "5.6.7",
                       "non-ASCII address and the receiver does not offer SMTPUTF8");
        return 1;
    }
    if (no_8bit) {
        refuse_locally(c, 554, "5.6.3",
                       "8-bit message data and the receiver does not offer 8BITMIME");
        return 1;
    }

    size_t due = 0;
    if (c->need_rset) {
        buf_append_str(&c->out, "RSET\r\n");
        due++;
        c->state = SMTP_ST_RSET;
    } else {
        c->state = SMTP_ST_MAIL;
    }
    if (c->pipelined || !c->need_rset) {
        send_mail(c, m, e8, utf8);
        due++;
    }
    if (c->pipelined) {
        /* RFC 2920 3.1: DATA ends the group; all of it in one write. */
        for (size_t i = 0; i < m->nrcpts; i++)
            send_rcpt(c, m, i);
        if (c->chunking)
            send_bdat_last(c, m, canonical);
        else
            buf_append_str(&c->out, "DATA\r\n");
        due += m->nrcpts + 1;
    }
    c->replies_due = due;
    if (c->out.err) {
        fail(c, "out of memory", NULL, 0);
        return 1;
    }
    return 1;
}

int smtp_client_quit_after(struct smtp_client *c)
{
    promote(c);
    if (c->msg == NULL || !c->pipelined || c->quit_after || c->quit_sent ||
        c->pending_error || c->pending_txn_done || c->state == SMTP_ST_FAILED ||
        c->state == SMTP_ST_CLOSED)
        return 0;
    c->quit_after = 1;
    quit_if_due(c);
    if (c->out.err)
        fail(c, "out of memory", NULL, 0);
    return 1;
}

int smtp_client_quit(struct smtp_client *c)
{
    promote(c);
    if (c->state != SMTP_ST_READY || c->pending_error || c->pending_txn_done || c->nbehind)
        return 0;
    buf_append_str(&c->out, "QUIT\r\n");
    c->quit_sent = 1;
    c->pending_ready = 0;
    c->replies_due = 1;
    c->state = SMTP_ST_QUIT;
    return 1;
}
