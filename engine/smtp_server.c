/*
 * smtp_server.c - sans-I/O SMTP server session; see smtp_server.h.
 *
 * The input buffer keeps every byte not yet understood, so any split of the
 * client's bytes across feeds gives the same result: a parser that needs
 * more bytes to decide (a command line without its LF, a "." at the start
 * of a DATA line) simply stops and leaves them in place.
 */
#include "engine/smtp_server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/auth.h"
#include "engine/smtp_body.h"
#include "queue/queue.h"

/* Above this a finished transaction gives its message memory back, so an
 * idle connection does not pin the largest message it ever saw. */
#define SMTP_SERVER_KEEP_MSG_CAP   (1u * 1024 * 1024)
/* Sanity cap on cfg.max_rcpts (it sizes two arrays per session). */
#define SMTP_SERVER_RCPTS_CAP      100000
/* Longest decimal we parse for SIZE= and BDAT (fits in uint64_t). */
#define SMTP_SERVER_DECIMAL_MAX    19

static const char *const state_names[] = {
    [SMTP_SRV_ST_CMD] = "cmd",
    [SMTP_SRV_ST_DATA] = "data",
    [SMTP_SRV_ST_BDAT] = "bdat",
    [SMTP_SRV_ST_SKIP_LINE] = "skip-line",
    [SMTP_SRV_ST_MSG_PENDING] = "msg-pending",
    [SMTP_SRV_ST_TLS_PENDING] = "tls-pending",
    [SMTP_SRV_ST_AUTH_PENDING] = "auth-pending",
    [SMTP_SRV_ST_CLOSED] = "closed",
};
_Static_assert(sizeof(state_names) / sizeof(state_names[0]) == SMTP_SRV_ST_COUNT,
               "state_names must name every state");

const char *smtp_server_state_name(enum smtp_server_state st)
{
    if ((unsigned)st >= SMTP_SRV_ST_COUNT)
        return "invalid";
    return state_names[st];
}

/* Copy a C string into a fixed array, truncating; returns the copy. */
static const char *copy_str(char *dst, size_t cap, const char *src)
{
    if (src == NULL)
        return NULL;
    size_t n = strnlen(src, cap - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
    return dst;
}

static void reply(struct smtp_server *s, const char *line)
{
    buf_append_str(&s->out, line);
    buf_append(&s->out, "\r\n", 2);
}

static void close_session(struct smtp_server *s, const char *why)
{
    s->state = SMTP_SRV_ST_CLOSED;
    if (s->close_reason == NULL)
        s->close_reason = why;
}

/* A reply to a client mistake. Too many of them and the client is most
 * likely not speaking SMTP at all: say 421 and close. */
static void err_reply(struct smtp_server *s, const char *line)
{
    reply(s, line);
    if (++s->errors >= s->cfg.max_errors) {
        buf_append_str(&s->out, "421 4.7.0 ");
        buf_append_str(&s->out, s->hostname);
        reply(s, " Error: too many errors");
        close_session(s, "too many errors");
    }
}

/* The message's body bytes so far: kept, or only counted. */
static uint64_t msg_len(const struct smtp_server *s)
{
    return s->cfg.discard_data ? s->msg_counted : buf_used(&s->msg);
}

static void msg_reset(struct smtp_server *s)
{
    buf_reset(&s->msg);
    s->msg_counted = 0;
}

static void reset_txn(struct smtp_server *s)
{
    s->mail_done = 0;
    s->mail_from[0] = '\0';
    s->nrcpts = 0;
    buf_reset(&s->rcpt_text);
    if (s->msg.cap > SMTP_SERVER_KEEP_MSG_CAP)
        buf_free(&s->msg);
    else
        buf_reset(&s->msg);
    s->msg_counted = 0;
    s->too_big = 0;
    s->bdat_used = 0;
    s->bdat_last = 0;
    s->bdat_fail = 0;
    s->bdat_left = 0;
}

int smtp_server_init(struct smtp_server *s, const struct smtp_server_config *cfg)
{
    memset(s, 0, sizeof(*s));
    s->cfg = *cfg;
    copy_str(s->hostname, sizeof(s->hostname),
             cfg->hostname ? cfg->hostname : "localhost");
    s->cfg.hostname = s->hostname;
    s->cfg.data_reply = copy_str(s->data_reply, sizeof(s->data_reply), cfg->data_reply);
    s->cfg.starttls_reply =
        copy_str(s->starttls_reply, sizeof(s->starttls_reply), cfg->starttls_reply);
    if (s->cfg.max_message_size == 0)
        s->cfg.max_message_size = SMTP_SERVER_DEFAULT_MAX_SIZE;
    if (s->cfg.max_rcpts == 0)
        s->cfg.max_rcpts = SMTP_SERVER_DEFAULT_MAX_RCPTS;
    if (s->cfg.max_errors <= 0)
        s->cfg.max_errors = SMTP_SERVER_MAX_ERRORS;
    if (s->cfg.max_rcpts > SMTP_SERVER_RCPTS_CAP)
        s->cfg.max_rcpts = SMTP_SERVER_RCPTS_CAP;
    buf_init(&s->in, SMTP_SERVER_INPUT_MAX);
    buf_init(&s->out, 0);
    buf_init(&s->rcpt_text, 0);
    buf_init(&s->msg, 0);
    s->state = SMTP_SRV_ST_CMD;
    buf_append_str(&s->out, "220 ");
    buf_append_str(&s->out, s->hostname);
    reply(s, " ESMTP tern");
    return !s->out.err;
}

void smtp_server_cleanup(struct smtp_server *s)
{
    buf_free(&s->in);
    buf_free(&s->out);
    buf_free(&s->rcpt_text);
    buf_free(&s->msg);
    explicit_bzero(s->auth_pass, sizeof(s->auth_pass));
    free(s->rcpt_off);
    free(s->rcpt_ptr);
    s->rcpt_off = NULL;
    s->rcpt_ptr = NULL;
    s->nrcpts = 0;
}

static void take(struct smtp_server *s, const uint8_t *p, size_t n);
static void scan_line_ends(struct smtp_server *s, const uint8_t *p, size_t n);

int smtp_server_feed(struct smtp_server *s, const uint8_t *p, size_t n)
{
    if (s->state == SMTP_SRV_ST_CLOSED)
        return 1;   /* the caller is closing anyway; ignore */
    if (s->state == SMTP_SRV_ST_TLS_PENDING) {
        /* RFC 3207 section 5: anything here was sent before the client
         * could have seen our 220; never let it reach the TLS session. */
        close_session(s, "plaintext after STARTTLS");
        return 0;
    }
    if (s->state == SMTP_SRV_ST_BDAT && buf_used(&s->in) == 0) {
        /* A chunk's bytes with nothing buffered before them are taken
         * from the caller's bytes as they are: copying them into the
         * input first was the sink's costliest copy of a 100 KiB BDAT
         * body after TLS's own (bench/README.md). bdat_step ends the
         * chunk when the next event is asked for. */
        size_t k = s->bdat_left < n ? (size_t)s->bdat_left : n;
        if (!s->bdat_fail) {
            take(s, p, k);
            scan_line_ends(s, p, k);
        }
        s->bdat_left -= k;
        p += k;
        n -= k;
    }
    if (n > 0 && !buf_append(&s->in, p, n)) {
        close_session(s, "input too large");
        return 0;
    }
    return 1;
}

/* --- small parsers over (pointer, length) ------------------------------ */

static int lower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

/* Does line[0..n) start with the ASCII word w, case-insensitively? */
static int has_prefix_ci(const char *line, size_t n, const char *w)
{
    size_t wl = strlen(w);
    if (n < wl)
        return 0;
    for (size_t i = 0; i < wl; i++)
        if (lower((unsigned char)line[i]) != lower((unsigned char)w[i]))
            return 0;
    return 1;
}

static int eq_ci(const char *a, size_t n, const char *w)
{
    return strlen(w) == n && has_prefix_ci(a, n, w);
}

/* Parse a decimal of 1..SMTP_SERVER_DECIMAL_MAX digits into *v. */
static int parse_u64(const char *p, size_t n, uint64_t *v)
{
    if (n == 0 || n > SMTP_SERVER_DECIMAL_MAX)
        return 0;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return 0;
        x = x * 10 + (uint64_t)(p[i] - '0');
    }
    *v = x;
    return 1;
}

static int has_ctl(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c < 0x20 || c == 0x7f)
            return 1;
    }
    return 0;
}

/* Parse "<addr>" after MAIL FROM: / RCPT TO: (spaces before "<" allowed,
 * as many clients send them). On success copies addr into out (NUL
 * terminated), sets *rest and *restlen to what follows ">" and returns 1. */
static int parse_path(const char *p, size_t n, char *out, size_t outcap,
                      const char **rest, size_t *restlen)
{
    size_t i = 0;
    while (i < n && p[i] == ' ')
        i++;
    if (i >= n || p[i] != '<')
        return 0;
    i++;
    const char *gt = memchr(p + i, '>', n - i);
    if (gt == NULL)
        return 0;
    size_t alen = (size_t)(gt - (p + i));
    if (alen >= outcap || has_ctl(p + i, alen) || memchr(p + i, '<', alen))
        return 0;
    memcpy(out, p + i, alen);
    out[alen] = '\0';
    *rest = gt + 1;
    *restlen = n - (size_t)(gt + 1 - p);
    return 1;
}

/* Next space-separated parameter from (*p, *n); returns its length, 0 at
 * the end. */
static size_t next_param(const char **p, size_t *n, const char **word)
{
    while (*n > 0 && **p == ' ') {
        (*p)++;
        (*n)--;
    }
    const char *sp = memchr(*p, ' ', *n);
    size_t wl = sp ? (size_t)(sp - *p) : *n;
    *word = *p;
    *p += wl;
    *n -= wl;
    return wl;
}

/* --- commands ---------------------------------------------------------- */

static void cmd_ehlo(struct smtp_server *s, const char *arg, size_t alen, int ehlo)
{
    while (alen > 0 && arg[alen - 1] == ' ')
        alen--;
    if (alen == 0 || alen > SMTP_SERVER_HOST_MAX || has_ctl(arg, alen)) {
        err_reply(s, ehlo ? "501 5.5.4 Syntax: EHLO hostname"
                          : "501 5.5.4 Syntax: HELO hostname");
        return;
    }
    memcpy(s->helo, arg, alen);
    s->helo[alen] = '\0';
    s->helo_done = 1;
    reset_txn(s);
    if (!ehlo) {
        buf_append_str(&s->out, "250 ");
        reply(s, s->hostname);
        return;
    }
    /* Lines first, then the continuation marks: the last one gets ' '. */
    const char *ext[10];
    size_t next = 0;
    char size_line[40];
    snprintf(size_line, sizeof(size_line), "SIZE %llu",
             (unsigned long long)s->cfg.max_message_size);
    if (s->cfg.offer_pipelining)
        ext[next++] = "PIPELINING";
    ext[next++] = size_line;
    ext[next++] = "8BITMIME";
    ext[next++] = "ENHANCEDSTATUSCODES";
    ext[next++] = "SMTPUTF8";
    if (s->cfg.offer_chunking)
        ext[next++] = "CHUNKING";
    if (s->cfg.offer_starttls && !s->tls_active)
        ext[next++] = "STARTTLS";
    if (s->cfg.offer_auth && s->tls_active && !s->authed)
        ext[next++] = "AUTH PLAIN LOGIN";
    buf_append_str(&s->out, "250-");
    buf_append_str(&s->out, s->hostname);
    reply(s, "");
    for (size_t i = 0; i < next; i++) {
        buf_append_str(&s->out, i + 1 == next ? "250 " : "250-");
        reply(s, ext[i]);
    }
}

static void cmd_mail(struct smtp_server *s, const char *arg, size_t alen)
{
    if (!s->helo_done) {
        err_reply(s, "503 5.5.1 Error: send HELO/EHLO first");
        return;
    }
    if (s->mail_done) {
        err_reply(s, "503 5.5.1 Error: nested MAIL command");
        return;
    }
    if (s->cfg.require_tls && !s->tls_active) {
        err_reply(s, "530 5.7.0 Must issue a STARTTLS command first");
        return;
    }
    if (s->cfg.relay_check && !s->relay_ok && !s->authed) {
        err_reply(s, s->cfg.offer_auth ? "530 5.7.0 Authentication required"
                                       : "554 5.7.1 Relay access denied");
        return;
    }
    const char *rest;
    size_t rlen;
    const char *why;
    if (!parse_path(arg, alen, s->mail_from, sizeof(s->mail_from), &rest, &rlen) ||
        (s->cfg.check_addrs &&
         !queue_addr_check(s->mail_from, strlen(s->mail_from), 0, &why))) {
        s->mail_from[0] = '\0';
        err_reply(s, "501 5.1.7 Bad sender address syntax");
        return;
    }
    const char *w;
    size_t wl;
    while ((wl = next_param(&rest, &rlen, &w)) > 0) {
        if (has_prefix_ci(w, wl, "SIZE=")) {
            uint64_t sz;
            if (!parse_u64(w + 5, wl - 5, &sz)) {
                err_reply(s, "501 5.5.4 Bad SIZE parameter");
                return;
            }
            if (sz > s->cfg.max_message_size) {
                reply(s, "552 5.3.4 Message size exceeds fixed limit");
                return;
            }
        } else if (has_prefix_ci(w, wl, "BODY=")) {
            if (!eq_ci(w + 5, wl - 5, "7BIT") && !eq_ci(w + 5, wl - 5, "8BITMIME")) {
                err_reply(s, "501 5.5.4 Bad BODY parameter");
                return;
            }
        } else if (s->cfg.offer_auth && has_prefix_ci(w, wl, "AUTH=")) {
            /* RFC 4954 section 5: the original submitter; tern keeps none. */
        } else if (!eq_ci(w, wl, "SMTPUTF8")) {
            err_reply(s, "555 5.5.4 Unsupported MAIL FROM parameter");
            return;
        }
    }
    s->mail_done = 1;
    reply(s, "250 2.1.0 Ok");
}

static void cmd_rcpt(struct smtp_server *s, const char *arg, size_t alen)
{
    if (!s->mail_done) {
        err_reply(s, "503 5.5.1 Error: need MAIL command");
        return;
    }
    if (s->bdat_used) {
        err_reply(s, "503 5.5.1 Error: RCPT after BDAT");
        return;
    }
    char addr[SMTP_SERVER_ADDR_MAX + 1];
    const char *rest;
    size_t rlen;
    const char *why;
    if (!parse_path(arg, alen, addr, sizeof(addr), &rest, &rlen) || addr[0] == '\0' ||
        (s->cfg.check_addrs && !queue_addr_check(addr, strlen(addr), 1, &why))) {
        err_reply(s, "501 5.1.3 Bad recipient address syntax");
        return;
    }
    const char *w;
    if (next_param(&rest, &rlen, &w) > 0) {
        err_reply(s, "555 5.5.4 Unsupported RCPT TO parameter");
        return;
    }
    if (s->nrcpts >= s->cfg.max_rcpts) {
        reply(s, "452 4.5.3 Error: too many recipients");
        return;
    }
    /* Recipient tables are allocated on first use: most sessions of a
     * busy listener are idle or TLS-only and should stay small. */
    if (s->rcpt_off == NULL) {
        s->rcpt_off = calloc(s->cfg.max_rcpts, sizeof(*s->rcpt_off));
        s->rcpt_ptr = calloc(s->cfg.max_rcpts, sizeof(*s->rcpt_ptr));
    }
    size_t off = buf_used(&s->rcpt_text);
    if (s->rcpt_off == NULL || s->rcpt_ptr == NULL ||
        !buf_append(&s->rcpt_text, addr, strlen(addr) + 1)) {
        buf_reset(&s->rcpt_text);   /* clears err; transaction is lost */
        s->nrcpts = 0;
        reply(s, "452 4.3.1 Error: insufficient system storage");
        return;
    }
    s->rcpt_off[s->nrcpts++] = off;
    reply(s, "250 2.1.5 Ok");
}

static void cmd_data(struct smtp_server *s, size_t alen)
{
    if (alen > 0) {
        err_reply(s, "501 5.5.4 Syntax: DATA");
    } else if (!s->mail_done) {
        err_reply(s, "503 5.5.1 Error: need MAIL command");
    } else if (s->bdat_used) {
        err_reply(s, "503 5.5.1 Error: DATA after BDAT");
    } else if (s->nrcpts == 0) {
        err_reply(s, "554 5.5.1 Error: no valid recipients");
    } else {
        reply(s, "354 End data with <CR><LF>.<CR><LF>");
        msg_reset(s);
        s->too_big = 0;
        s->data_bol = 1;
        s->data_cr = 0;
        s->strict_cr = 0;
        s->bare_seen = 0;
        s->state = SMTP_SRV_ST_DATA;
    }
}

static void cmd_bdat(struct smtp_server *s, const char *arg, size_t alen)
{
    const char *w;
    size_t wl = next_param(&arg, &alen, &w);
    uint64_t n;
    if (!parse_u64(w, wl, &n)) {
        err_reply(s, "501 5.5.4 Syntax: BDAT size [LAST]");
        return;
    }
    int last = 0;
    wl = next_param(&arg, &alen, &w);
    if (wl > 0) {
        if (!eq_ci(w, wl, "LAST") || next_param(&arg, &alen, &w) > 0) {
            err_reply(s, "501 5.5.4 Syntax: BDAT size [LAST]");
            return;
        }
        last = 1;
    }
    /* The chunk follows whatever we answer: always consume it. */
    s->bdat_left = n;
    s->bdat_last = last;
    s->bdat_fail = 0;
    if (!s->cfg.offer_chunking)
        s->bdat_fail = 1;
    else if (!s->mail_done)
        s->bdat_fail = 2;
    else if (s->nrcpts == 0)
        s->bdat_fail = 3;
    if (!s->bdat_fail) {
        if (!s->bdat_used) {
            msg_reset(s);
            s->too_big = 0;
            s->strict_cr = 0;
            s->bare_seen = 0;
        }
        s->bdat_used = 1;
    }
    s->state = SMTP_SRV_ST_BDAT;
}

/* Returns an event kind to hand back, or NONE to keep going. */
static enum smtp_server_event_kind cmd_starttls(struct smtp_server *s, size_t alen)
{
    if (alen > 0) {
        err_reply(s, "501 5.5.4 Syntax: STARTTLS");
    } else if (s->tls_active) {
        err_reply(s, "503 5.5.1 Error: TLS already active");
    } else if (!s->cfg.offer_starttls) {
        err_reply(s, "502 5.5.1 Error: command not implemented");
    } else if (s->cfg.starttls_reply) {
        reply(s, s->cfg.starttls_reply);
    } else if (buf_used(&s->in) > 0) {
        /* RFC 3207 section 4.2: the client must wait for our 220. Bytes
         * already here were injected (or the client is broken). */
        reply(s, "554 5.5.1 Error: pipelined data after STARTTLS");
        close_session(s, "data pipelined after STARTTLS");
        return SMTP_SRV_EV_CLOSE;
    } else {
        reply(s, "220 2.0.0 Ready to start TLS");
        s->state = SMTP_SRV_ST_TLS_PENDING;
        return SMTP_SRV_EV_STARTTLS;
    }
    return SMTP_SRV_EV_NONE;
}

/* --- AUTH (RFC 4954): PLAIN (RFC 4616) and LOGIN ------------------------- */

_Static_assert(SMTP_SERVER_AUTH_USER_MAX == AUTH_USER_MAX &&
                   SMTP_SERVER_AUTH_PASS_MAX == AUTH_PASS_MAX,
               "auth_plain_decode fills the session's user and password arrays");

enum { AUTH_STEP_NONE, AUTH_STEP_PLAIN, AUTH_STEP_LOGIN_USER, AUTH_STEP_LOGIN_PASS };

/* Decode one base64 response into buf; 0 (and a 501) when it is not. */
static int auth_decode(struct smtp_server *s, const char *p, size_t n, uint8_t *out,
                       size_t cap, size_t *outlen)
{
    if (!auth_b64_decode(p, n, out, cap, outlen)) {
        s->auth_step = AUTH_STEP_NONE;
        err_reply(s, "501 5.5.2 Error: cannot decode response");
        return 0;
    }
    return 1;
}

/* Handle a (decoded-to-be) response for the current step; returns the
 * event kind. */
static enum smtp_server_event_kind auth_step_input(struct smtp_server *s, const char *p,
                                                   size_t n)
{
    uint8_t dec[SMTP_SERVER_AUTH_USER_MAX + SMTP_SERVER_AUTH_PASS_MAX + 3];
    size_t dl;
    if (!auth_decode(s, p, n, dec, sizeof(dec), &dl))
        return s->state == SMTP_SRV_ST_CLOSED ? SMTP_SRV_EV_CLOSE : SMTP_SRV_EV_NONE;
    int step = s->auth_step;
    s->auth_step = AUTH_STEP_NONE;
    int ok = 1;
    if (step == AUTH_STEP_PLAIN) {
        ok = auth_plain_decode(dec, dl, s->auth_user, s->auth_pass);
    } else if (step == AUTH_STEP_LOGIN_USER) {
        ok = dl > 0 && dl <= SMTP_SERVER_AUTH_USER_MAX && !memchr(dec, '\0', dl);
        if (ok) {
            memcpy(s->auth_user, dec, dl);
            s->auth_user[dl] = '\0';
            s->auth_step = AUTH_STEP_LOGIN_PASS;
            reply(s, "334 UGFzc3dvcmQ6");   /* "Password:" */
            explicit_bzero(dec, sizeof(dec));
            return SMTP_SRV_EV_NONE;
        }
    } else {
        ok = dl > 0 && dl <= SMTP_SERVER_AUTH_PASS_MAX && !memchr(dec, '\0', dl);
        if (ok) {
            memcpy(s->auth_pass, dec, dl);
            s->auth_pass[dl] = '\0';
        }
    }
    explicit_bzero(dec, sizeof(dec));
    if (!ok) {
        err_reply(s, "501 5.5.2 Error: malformed authentication response");
        return s->state == SMTP_SRV_ST_CLOSED ? SMTP_SRV_EV_CLOSE : SMTP_SRV_EV_NONE;
    }
    s->state = SMTP_SRV_ST_AUTH_PENDING;
    return SMTP_SRV_EV_AUTH;
}

/* A line read while an AUTH exchange waits for the client's response. */
static enum smtp_server_event_kind auth_response(struct smtp_server *s, const char *line,
                                                 size_t n)
{
    if (n == 1 && line[0] == '*') {
        s->auth_step = AUTH_STEP_NONE;
        err_reply(s, "501 5.7.0 Error: authentication cancelled");
        return s->state == SMTP_SRV_ST_CLOSED ? SMTP_SRV_EV_CLOSE : SMTP_SRV_EV_NONE;
    }
    return auth_step_input(s, line, n);
}

static enum smtp_server_event_kind cmd_auth(struct smtp_server *s, const char *arg,
                                            size_t alen)
{
    const char *mech, *resp, *extra;
    size_t ml = next_param(&arg, &alen, &mech);
    size_t rl = next_param(&arg, &alen, &resp);
    if (!s->tls_active)
        err_reply(s, "538 5.7.11 Encryption required for requested authentication mechanism");
    else if (!s->helo_done)
        err_reply(s, "503 5.5.1 Error: send EHLO first");
    else if (s->authed)
        err_reply(s, "503 5.5.1 Error: already authenticated");
    else if (s->mail_done)
        err_reply(s, "503 5.5.1 Error: MAIL transaction in progress");
    else if (ml == 0 || next_param(&arg, &alen, &extra) > 0)
        err_reply(s, "501 5.5.4 Syntax: AUTH mechanism [initial-response]");
    else if (eq_ci(mech, ml, "PLAIN")) {
        s->auth_step = AUTH_STEP_PLAIN;
        if (rl > 0)
            return auth_step_input(s, resp, rl);
        reply(s, "334 ");
    } else if (eq_ci(mech, ml, "LOGIN")) {
        s->auth_step = AUTH_STEP_LOGIN_USER;
        if (rl > 0)
            return auth_step_input(s, resp, rl);
        reply(s, "334 VXNlcm5hbWU6");       /* "Username:" */
    } else {
        err_reply(s, "504 5.5.4 Error: unrecognized authentication type");
    }
    return s->state == SMTP_SRV_ST_CLOSED ? SMTP_SRV_EV_CLOSE : SMTP_SRV_EV_NONE;
}

static enum smtp_server_event_kind handle_line(struct smtp_server *s,
                                               const char *line, size_t n)
{
    const char *sp = memchr(line, ' ', n);
    size_t vl = sp ? (size_t)(sp - line) : n;
    const char *arg = sp ? sp + 1 : line + n;
    size_t alen = n - (size_t)(arg - line);

    if (eq_ci(line, vl, "EHLO") || eq_ci(line, vl, "HELO")) {
        cmd_ehlo(s, arg, alen, lower((unsigned char)line[0]) == 'e');
    } else if (has_prefix_ci(line, n, "MAIL FROM:")) {
        cmd_mail(s, line + 10, n - 10);
    } else if (has_prefix_ci(line, n, "RCPT TO:")) {
        cmd_rcpt(s, line + 8, n - 8);
    } else if (eq_ci(line, vl, "DATA")) {
        cmd_data(s, alen);
    } else if (eq_ci(line, vl, "BDAT")) {
        cmd_bdat(s, arg, alen);
    } else if (eq_ci(line, vl, "RSET")) {
        reset_txn(s);
        reply(s, "250 2.0.0 Ok");
    } else if (eq_ci(line, vl, "NOOP")) {
        reply(s, "250 2.0.0 Ok");
    } else if (eq_ci(line, vl, "QUIT")) {
        reply(s, "221 2.0.0 Bye");
        close_session(s, "quit");
        return SMTP_SRV_EV_CLOSE;
    } else if (eq_ci(line, vl, "STARTTLS")) {
        return cmd_starttls(s, alen);
    } else if (eq_ci(line, vl, "AUTH") && s->cfg.offer_auth) {
        return cmd_auth(s, arg, alen);
    } else if (eq_ci(line, vl, "MAIL") || eq_ci(line, vl, "RCPT")) {
        err_reply(s, "501 5.5.4 Syntax error in parameters");
    } else if (eq_ci(line, vl, "VRFY") || eq_ci(line, vl, "EXPN") ||
               eq_ci(line, vl, "HELP") || eq_ci(line, vl, "TURN") ||
               eq_ci(line, vl, "ETRN") || eq_ci(line, vl, "AUTH")) {
        err_reply(s, "502 5.5.1 Error: command not implemented");
    } else {
        err_reply(s, "500 5.5.2 Error: command not recognized");
    }
    return s->state == SMTP_SRV_ST_CLOSED ? SMTP_SRV_EV_CLOSE : SMTP_SRV_EV_NONE;
}

/* --- message data ------------------------------------------------------ */

/* Keep n data bytes unless the message is already over the limit. */
static void take(struct smtp_server *s, const uint8_t *p, size_t n)
{
    if (n == 0 || s->too_big)
        return;
    if (s->cfg.discard_data) {
        s->msg_counted += n;
        if (s->msg_counted > s->cfg.max_message_size)
            s->too_big = 1;
        return;
    }
    if (buf_used(&s->msg) + n > s->cfg.max_message_size || !buf_append(&s->msg, p, n)) {
        /* Keep reading to the end so the stream stays in sync, but stop
         * holding memory for a message we will refuse. */
        s->too_big = s->msg.err ? 2 : 1;
        buf_free(&s->msg);
    }
}

/* strict_data: notes a CR not followed by LF, or an LF not preceded by
 * CR, in content bytes seen in order (across calls; strict_cr: the last
 * byte seen was a CR). Jumps from CR to CR with memchr and checks that no
 * LF lies between a CRLF and the next CR: a byte-by-byte loop here was
 * the listener's costliest function of its own (bench/README.md). */
static void scan_line_ends(struct smtp_server *s, const uint8_t *p, size_t n)
{
    if (!s->cfg.strict_data || s->bare_seen || n == 0)
        return;
    const uint8_t *end = p + n;
    if (s->strict_cr && *p++ != '\n') {
        s->bare_seen = 1;
        return;
    }
    s->strict_cr = 0;
    while (p < end) {
        const uint8_t *cr = memchr(p, '\r', (size_t)(end - p));
        const uint8_t *stop = cr != NULL ? cr : end;
        if (memchr(p, '\n', (size_t)(stop - p)) != NULL) {
            s->bare_seen = 1;       /* an LF without its CR */
            return;
        }
        if (cr == NULL)
            return;
        if (cr + 1 == end) {
            s->strict_cr = 1;       /* its LF comes with the next bytes */
            return;
        }
        if (cr[1] != '\n') {
            s->bare_seen = 1;       /* a CR without its LF */
            return;
        }
        p = cr + 2;
    }
}

/* DATA body: copies unstuffed data and returns 1 at CRLF "." CRLF, 0 when
 * it needs more input. Bytes are copied in spans between dot-lines. Only
 * a '.' after an LF can change anything (a stuffed dot, the end), so the
 * scan jumps from one to the next (smtp_body_line_dot, 32 bytes a step);
 * a line-by-line memchr here was 8% of the sink's CPU with 100 KiB
 * bodies. A line starts after CRLF only: a '.' after a bare LF is data
 * (SMTP smuggling). data_bol: the next byte starts a line; data_cr: the
 * last byte of the previous input was a CR. */
static int data_step(struct smtp_server *s)
{
    const uint8_t *start = buf_peek(&s->in);
    const uint8_t *end = start + buf_used(&s->in);
    const uint8_t *p = start, *span = start;
    size_t len = (size_t)(end - start);
    int done = 0;

    while (p < end) {
        if (s->data_bol) {
            if (*p == '.') {
                if (end - p < 2)
                    break;          /* need to see what follows the dot */
                if (p[1] == '\r') {
                    if (end - p < 3)
                        break;
                    if (p[2] == '\n') {
                        take(s, span, (size_t)(p - span));
                        p += 3;
                        span = p;
                        done = 1;
                        break;
                    }
                }
                take(s, span, (size_t)(p - span));
                p++;                /* drop the stuffed dot */
                span = p;
                s->data_cr = 0;
            }
            s->data_bol = 0;
            if (p >= end)
                break;
        }
        size_t off = (size_t)(p - start);
        size_t dot = smtp_body_line_dot(start, len, off + 1);
        if (dot < len) {
            size_t lf = dot - 1;    /* >= off */
            s->data_bol = lf > 0 ? start[lf - 1] == '\r' : s->data_cr;
            s->data_cr = 0;
            p = start + dot;        /* a line's first byte, or data after a bare LF */
            continue;
        }
        /* No LF-dot left: what the next input starts with. */
        if (end[-1] == '\n') {
            s->data_bol = len > 1 ? end[-2] == '\r' : s->data_cr;
            s->data_cr = 0;
        } else {
            s->data_bol = 0;
            s->data_cr = end[-1] == '\r';
        }
        p = end;
    }
    take(s, span, (size_t)(p - span));
    scan_line_ends(s, start, (size_t)(p - start));
    buf_consume(&s->in, (size_t)(p - start));
    return done;
}

static enum smtp_server_event_kind data_done(struct smtp_server *s)
{
    if (s->too_big) {
        reply(s, s->too_big == 2 ? "452 4.3.1 Error: insufficient system storage"
                                 : "552 5.3.4 Error: message size exceeds fixed limit");
        reset_txn(s);
        s->state = SMTP_SRV_ST_CMD;
        return SMTP_SRV_EV_NONE;
    }
    if (s->bare_seen || (s->cfg.strict_data && s->strict_cr)) {
        err_reply(s, "554 5.6.0 Error: bare CR or LF in message data; lines must end with CRLF");
        reset_txn(s);
        if (s->state != SMTP_SRV_ST_CLOSED)
            s->state = SMTP_SRV_ST_CMD;
        return s->state == SMTP_SRV_ST_CLOSED ? SMTP_SRV_EV_CLOSE : SMTP_SRV_EV_NONE;
    }
    s->state = SMTP_SRV_ST_MSG_PENDING;
    return SMTP_SRV_EV_MESSAGE;
}

/* BDAT chunk: returns an event kind, or NONE with state still BDAT when it
 * needs more input. */
static enum smtp_server_event_kind bdat_step(struct smtp_server *s)
{
    size_t avail = buf_used(&s->in);
    size_t k = s->bdat_left < avail ? (size_t)s->bdat_left : avail;
    if (!s->bdat_fail) {
        take(s, buf_peek(&s->in), k);
        scan_line_ends(s, buf_peek(&s->in), k);
    }
    buf_consume(&s->in, k);
    s->bdat_left -= k;
    if (s->bdat_left > 0)
        return SMTP_SRV_EV_NONE;
    s->state = SMTP_SRV_ST_CMD;
    switch (s->bdat_fail) {
    case 0:
        break;
    case 1:
        err_reply(s, "502 5.5.1 Error: CHUNKING not offered");
        return SMTP_SRV_EV_NONE;
    case 2:
        err_reply(s, "503 5.5.1 Error: need MAIL command");
        return SMTP_SRV_EV_NONE;
    default:
        err_reply(s, "554 5.5.1 Error: no valid recipients");
        return SMTP_SRV_EV_NONE;
    }
    if (s->too_big)
        return data_done(s);    /* refuses and resets the transaction */
    if (s->bdat_last)
        return data_done(s);
    char line[64];
    snprintf(line, sizeof(line), "250 2.0.0 %llu octets received", (unsigned long long)msg_len(s));
    reply(s, line);
    return SMTP_SRV_EV_NONE;
}

/* --- driver ------------------------------------------------------------ */

struct smtp_server_event smtp_server_next(struct smtp_server *s)
{
    struct smtp_server_event ev = {SMTP_SRV_EV_NONE, NULL};
    for (;;) {
        enum smtp_server_event_kind k = SMTP_SRV_EV_NONE;
        switch (s->state) {
        case SMTP_SRV_ST_CLOSED:
            if (!s->close_told) {
                s->close_told = 1;
                ev.kind = SMTP_SRV_EV_CLOSE;
                ev.reason = s->close_reason;
            }
            return ev;
        case SMTP_SRV_ST_MSG_PENDING:
        case SMTP_SRV_ST_TLS_PENDING:
        case SMTP_SRV_ST_AUTH_PENDING:
            return ev;
        case SMTP_SRV_ST_CMD: {
            size_t avail = buf_used(&s->in);
            const char *line = (const char *)buf_peek(&s->in);
            size_t scan = avail < SMTP_SERVER_LINE_MAX ? avail : SMTP_SERVER_LINE_MAX;
            const char *lf = memchr(line, '\n', scan);
            if (lf == NULL) {
                if (avail < SMTP_SERVER_LINE_MAX)
                    return ev;
                s->state = SMTP_SRV_ST_SKIP_LINE;
                continue;
            }
            size_t total = (size_t)(lf - line) + 1;
            size_t n = total - 1;
            if (n > 0 && line[n - 1] == '\r')
                n--;
            /* Consume first: STARTTLS looks at what is left. The line
             * stays readable until the next append to s->in. */
            buf_consume(&s->in, total);
            k = s->auth_step ? auth_response(s, line, n) : handle_line(s, line, n);
            break;
        }
        case SMTP_SRV_ST_SKIP_LINE: {
            size_t avail = buf_used(&s->in);
            const uint8_t *lf = memchr(buf_peek(&s->in), '\n', avail);
            if (lf == NULL) {
                buf_consume(&s->in, avail);
                return ev;
            }
            buf_consume(&s->in, (size_t)(lf - buf_peek(&s->in)) + 1);
            s->state = SMTP_SRV_ST_CMD;
            err_reply(s, "500 5.5.2 Error: line too long");
            break;
        }
        case SMTP_SRV_ST_DATA:
            if (!data_step(s))
                return ev;
            k = data_done(s);
            break;
        case SMTP_SRV_ST_BDAT:
            k = bdat_step(s);
            if (k == SMTP_SRV_EV_NONE && s->state == SMTP_SRV_ST_BDAT)
                return ev;
            break;
        default:
            close_session(s, "internal error: bad state");
            break;
        }
        if (k == SMTP_SRV_EV_CLOSE) {
            s->close_told = 1;
            ev.kind = k;
            ev.reason = s->close_reason;
            return ev;
        }
        if (k != SMTP_SRV_EV_NONE) {
            ev.kind = k;
            return ev;
        }
    }
}

int smtp_server_envelope(struct smtp_server *s, struct smtp_server_envelope *e)
{
    if (s->state != SMTP_SRV_ST_MSG_PENDING)
        return 0;
    for (size_t i = 0; i < s->nrcpts; i++)
        s->rcpt_ptr[i] = (const char *)s->rcpt_text.data + s->rcpt_off[i];
    e->helo = s->helo;
    e->mail_from = s->mail_from;
    e->rcpts = s->rcpt_ptr;
    e->nrcpts = s->nrcpts;
    e->data = buf_used(&s->msg) ? buf_peek(&s->msg) : (const uint8_t *)"";
    e->data_len = (size_t)msg_len(s);
    e->tls = s->tls_active;
    return 1;
}

int smtp_server_message_reply(struct smtp_server *s, const char *r)
{
    if (s->state != SMTP_SRV_ST_MSG_PENDING)
        return 0;
    if (r == NULL)
        r = s->cfg.data_reply ? s->cfg.data_reply : "250 2.0.0 Ok: queued";
    reply(s, r);
    reset_txn(s);
    s->state = SMTP_SRV_ST_CMD;
    return 1;
}

void smtp_server_tls_started(struct smtp_server *s)
{
    if (s->state != SMTP_SRV_ST_TLS_PENDING)
        return;
    s->tls_active = 1;
    s->auth_step = 0;
    s->helo_done = 0;
    s->helo[0] = '\0';
    reset_txn(s);
    buf_reset(&s->in);
    s->state = SMTP_SRV_ST_CMD;
}

void smtp_server_set_relay(struct smtp_server *s, int ok)
{
    s->relay_ok = ok;
}

int smtp_server_auth_creds(const struct smtp_server *s, const char **user, const char **pass)
{
    if (s->state != SMTP_SRV_ST_AUTH_PENDING)
        return 0;
    *user = s->auth_user;
    *pass = s->auth_pass;
    return 1;
}

int smtp_server_auth_result(struct smtp_server *s, int ok)
{
    if (s->state != SMTP_SRV_ST_AUTH_PENDING)
        return 0;
    explicit_bzero(s->auth_pass, sizeof(s->auth_pass));
    s->state = SMTP_SRV_ST_CMD;
    if (ok == 1) {
        s->authed = 1;
        reply(s, "235 2.7.0 Authentication successful");
        return 1;
    }
    s->auth_user[0] = '\0';
    if (ok == SMTP_SERVER_AUTH_UNAVAILABLE) {
        reply(s, "454 4.7.0 Temporary authentication failure, try again later");
        return 1;
    }
    err_reply(s, "535 5.7.8 Error: authentication failed");
    if (++s->auth_fails >= SMTP_SERVER_MAX_AUTH_FAILS && s->state != SMTP_SRV_ST_CLOSED) {
        buf_append_str(&s->out, "421 4.7.0 ");
        buf_append_str(&s->out, s->hostname);
        reply(s, " Error: too many failed authentications");
        close_session(s, "too many failed authentications");
    }
    return 1;
}
