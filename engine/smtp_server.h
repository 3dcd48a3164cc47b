/*
 * smtp_server.h - sans-I/O SMTP server session (RFC 5321, 3207, 2920, 3030,
 * 1870).
 *
 * DESCRIPTION
 *   One struct smtp_server answers one SMTP client, from the greeting to
 *   QUIT. It never touches a socket: the caller feeds it the plaintext the
 *   client sent (already decrypted when TLS is on), asks it for the next
 *   event, and sends whatever it queued in its output buffer (encrypting it
 *   first when TLS is on). Used by bench/sink and by tern's SMTP listener.
 *
 *   Flow, as seen by the caller:
 *
 *     smtp_server_init()                 greeting queued in the output
 *     loop:
 *       smtp_server_feed(bytes from client)
 *       while ((ev = smtp_server_next()).kind != SMTP_SRV_EV_NONE) act on ev
 *       send smtp_server_output() then smtp_server_output_consume()
 *
 *   smtp_server_next() handles every complete command line in the input
 *   (PIPELINING: all their replies land in the output together) and stops
 *   at an event or when it needs more input.
 *
 *   Events:
 *     SMTP_SRV_EV_MESSAGE   a message is complete (DATA ended by CRLF.CRLF,
 *                           or BDAT ... LAST). smtp_server_envelope() holds
 *                           sender, recipients and the data. The session is
 *                           paused (next() returns NONE, pipelined input is
 *                           kept) until the caller answers with
 *                           smtp_server_message_reply(); the caller may do
 *                           so later (e.g. after a queue write).
 *     SMTP_SRV_EV_STARTTLS  "220 Ready to start TLS" is in the output. The
 *                           caller sends it in plaintext, then runs the TLS
 *                           handshake and calls smtp_server_tls_started().
 *                           Anything fed before that is refused (feed
 *                           returns 0) and the session closes.
 *     SMTP_SRV_EV_AUTH      AUTH (cfg.offer_auth) produced a user name and
 *                           password (smtp_server_auth_creds). The session
 *                           is paused like for a message until the caller
 *                           answers with smtp_server_auth_result().
 *     SMTP_SRV_EV_CLOSE     the caller sends the output, then closes the
 *                           connection. ev.reason says why (static text):
 *                           "quit", or a protocol violation.
 *
 * PROTOCOL CHOICES
 *   - Command lines end with CRLF; a bare LF is accepted as a command line
 *     end (lenient), but inside DATA only CRLF ends a line, so only
 *     CRLF "." CRLF ends the data (no SMTP smuggling via bare LF).
 *   - DATA: a leading "." is removed from every line (dot-unstuffing); the
 *     data handed over is the unstuffed bytes up to and including the CRLF
 *     before the final ".", exactly as received otherwise.
 *   - BDAT chunks are taken raw. A BDAT after a failed MAIL/RCPT still
 *     consumes its chunk, then fails with 503/554 (RFC 3030 section 2).
 *     DATA and BDAT cannot be mixed in one transaction (503).
 *   - STARTTLS (RFC 3207): bytes pipelined after the STARTTLS line are an
 *     injection attempt: the reply is "554 5.5.1" and the session closes.
 *     After TLS the state is reset, EHLO is required again and STARTTLS is
 *     no longer offered.
 *   - Messages over max_message_size: data is still read to its end, then
 *     "552 5.3.4"; a larger SIZE= on MAIL FROM is refused at once.
 *   - Unknown commands "500 5.5.2", known but unimplemented (VRFY, EXPN,
 *     HELP, TURN, ETRN, and AUTH unless cfg.offer_auth) "502 5.5.1". After SMTP_SERVER_MAX_ERRORS
 *     errors the session says 421 and closes.
 *
 * LISTENER RULES (off by default; the sink leaves them off)
 *   - cfg.relay_check: MAIL FROM is refused ("530 5.7.0 Authentication
 *     required" when AUTH is offered, else "554 5.7.1 Relay access
 *     denied") unless the caller said the client may relay
 *     (smtp_server_set_relay) or AUTH succeeded. RCPT, DATA and BDAT
 *     need an accepted MAIL FROM, so nothing can be handed over.
 *   - cfg.require_tls: MAIL FROM before STARTTLS gets "530 5.7.0 Must
 *     issue a STARTTLS command first".
 *   - cfg.offer_auth: AUTH PLAIN and LOGIN, advertised and accepted only
 *     once TLS is active (before: "538 5.7.11"), once per session, never
 *     inside a transaction. SMTP_SERVER_MAX_AUTH_FAILS failures: 421.
 *     MAIL FROM then also takes (and ignores) AUTH=, RFC 4954 section 5.
 *   - cfg.strict_data: a bare CR or a bare LF anywhere in DATA or BDAT
 *     content refuses the message ("554 5.6.0") after its end has been
 *     read; only CRLF "." CRLF ends DATA. What tern accepts therefore has
 *     CRLF line ends only, and "\n.\n" can never become an end of data
 *     further down the line (SMTP smuggling).
 *   - cfg.check_addrs: addresses must pass queue_addr_check (what the
 *     queue accepts): "501 5.1.7" / "501 5.1.3" at MAIL / RCPT time.
 *
 * LIMITS
 *   Command lines: SMTP_SERVER_LINE_MAX bytes with CRLF; a longer line is
 *   discarded up to its end and answered "500 5.5.2 Line too long".
 *   Addresses: SMTP_SERVER_ADDR_MAX. Recipients per transaction:
 *   cfg.max_rcpts (default SMTP_SERVER_DEFAULT_MAX_RCPTS), over it "452".
 *   Unread input is capped at SMTP_SERVER_INPUT_MAX (feed returns 0 past it
 *   - only reachable while a message reply is pending).
 *
 * OWNERSHIP
 *   The caller owns struct smtp_server (embed it or allocate it) and must
 *   call smtp_server_cleanup(). init copies the hostname and the override
 *   replies. Envelope pointers are valid until smtp_server_message_reply().
 */
#ifndef TERN_ENGINE_SMTP_SERVER_H
#define TERN_ENGINE_SMTP_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "engine/buf.h"

#define SMTP_SERVER_LINE_MAX            2048  /* RFC 5321 minimum is 512 */
#define SMTP_SERVER_ADDR_MAX            512   /* RFC path limit 256; lenient */
#define SMTP_SERVER_HOST_MAX            255
#define SMTP_SERVER_REPLY_MAX           512   /* override reply lines */
#define SMTP_SERVER_DEFAULT_MAX_SIZE    (64u * 1024 * 1024)
#define SMTP_SERVER_DEFAULT_MAX_RCPTS   100   /* RFC 5321 4.5.3.1.8 minimum */
#define SMTP_SERVER_MAX_ERRORS          20
#define SMTP_SERVER_MAX_AUTH_FAILS      3
#define SMTP_SERVER_AUTH_USER_MAX       255
#define SMTP_SERVER_AUTH_PASS_MAX       255
/* Unread input: a full pipelined window plus one BDAT chunk in flight. */
#define SMTP_SERVER_INPUT_MAX           (4u * 1024 * 1024)

struct smtp_server_config {
    const char *hostname;       /* greeting / EHLO name; NULL: "localhost" */
    int offer_starttls;         /* advertise and accept STARTTLS */
    int offer_pipelining;
    int offer_chunking;         /* BDAT; also accepted only when offered */
    uint64_t max_message_size;  /* 0: SMTP_SERVER_DEFAULT_MAX_SIZE */
    size_t max_rcpts;           /* 0: SMTP_SERVER_DEFAULT_MAX_RCPTS */
    int max_errors;             /* 0: SMTP_SERVER_MAX_ERRORS */
    /* Listener rules (see LISTENER RULES above); 0 for the sink. */
    int relay_check;
    int require_tls;
    int offer_auth;
    int strict_data;
    int check_addrs;
    /* The body is counted, not kept (a sink that does not record what it
     * received): the envelope's data is empty, data_len the count. */
    int discard_data;
    /* Test overrides (single reply lines without CRLF, NULL: normal): */
    const char *data_reply;     /* default final reply to every message */
    const char *starttls_reply; /* reply to STARTTLS instead of 220 */
};

enum smtp_server_event_kind {
    SMTP_SRV_EV_NONE,       /* need more input (or a message reply) */
    SMTP_SRV_EV_MESSAGE,
    SMTP_SRV_EV_STARTTLS,
    SMTP_SRV_EV_AUTH,
    SMTP_SRV_EV_CLOSE,
};

struct smtp_server_event {
    enum smtp_server_event_kind kind;
    const char *reason;     /* CLOSE: static text; else NULL */
};

/* A completed message. Addresses are bare (no angle brackets), NUL
 * terminated; "" is the null reverse-path. */
struct smtp_server_envelope {
    const char *helo;               /* the EHLO/HELO argument */
    const char *mail_from;
    const char *const *rcpts;
    size_t nrcpts;
    const uint8_t *data;
    size_t data_len;
    int tls;                        /* the message came over TLS */
};

enum smtp_server_state {
    SMTP_SRV_ST_CMD,            /* reading command lines */
    SMTP_SRV_ST_DATA,           /* reading DATA body */
    SMTP_SRV_ST_BDAT,           /* reading a BDAT chunk */
    SMTP_SRV_ST_SKIP_LINE,      /* discarding an over-long command line */
    SMTP_SRV_ST_MSG_PENDING,    /* waiting for smtp_server_message_reply */
    SMTP_SRV_ST_TLS_PENDING,    /* waiting for smtp_server_tls_started */
    SMTP_SRV_ST_AUTH_PENDING,   /* waiting for smtp_server_auth_result */
    SMTP_SRV_ST_CLOSED,
    SMTP_SRV_ST_COUNT
};

struct smtp_server {
    enum smtp_server_state state;
    struct smtp_server_config cfg;          /* strings point into this struct */
    char hostname[SMTP_SERVER_HOST_MAX + 1];
    char data_reply[SMTP_SERVER_REPLY_MAX];
    char starttls_reply[SMTP_SERVER_REPLY_MAX];
    char helo[SMTP_SERVER_HOST_MAX + 1];
    int helo_done;
    int tls_active;
    int errors;
    int relay_ok;               /* smtp_server_set_relay */
    int authed;                 /* AUTH succeeded */
    int auth_fails;
    int auth_step;              /* AUTH exchange: next line is a response */
    char auth_user[SMTP_SERVER_AUTH_USER_MAX + 1];
    char auth_pass[SMTP_SERVER_AUTH_PASS_MAX + 1];  /* wiped after use */
    struct buf in;              /* unparsed input */
    struct buf out;             /* replies to send */
    /* transaction */
    int mail_done;
    char mail_from[SMTP_SERVER_ADDR_MAX + 1];
    struct buf rcpt_text;       /* recipients, each NUL terminated */
    size_t *rcpt_off;           /* offsets into rcpt_text, cfg.max_rcpts */
    const char **rcpt_ptr;      /* built for the envelope */
    size_t nrcpts;
    struct buf msg;             /* message data */
    int too_big;                /* data exceeded the limit; discarding */
    uint64_t msg_counted;       /* body bytes, with discard_data */
    int data_bol;               /* DATA: at the start of a line */
    int data_cr;                /* DATA: last byte taken was CR */
    int strict_cr;              /* strict_data: last content byte was CR */
    int bare_seen;              /* strict_data: bare CR or LF in content */
    int bdat_used;              /* this transaction used BDAT */
    int bdat_last;              /* the chunk being read is the LAST one */
    int bdat_fail;              /* envelope not ok: consume, then refuse */
    uint64_t bdat_left;         /* chunk bytes still to read */
    const char *close_reason;
    int close_told;             /* CLOSE event already returned */
};

/* smtp_server_init prepares a session and queues the 220 greeting. Returns
 * 1, or 0 on allocation failure (then call smtp_server_cleanup). Nothing
 * but the greeting is allocated until the client sends something. */
int smtp_server_init(struct smtp_server *s, const struct smtp_server_config *cfg);
/* smtp_server_cleanup frees the buffers; safe to call twice. */
void smtp_server_cleanup(struct smtp_server *s);

/* smtp_server_feed appends plaintext received from the client. Returns 1,
 * or 0 when the bytes are refused: past the input cap, or while TLS is
 * pending (plaintext injection); the next event is then CLOSE. */
int smtp_server_feed(struct smtp_server *s, const uint8_t *p, size_t n);

/* smtp_server_next handles input and returns the next event, or NONE when
 * it needs more input or a message reply. Call until NONE. */
struct smtp_server_event smtp_server_next(struct smtp_server *s);

/* smtp_server_envelope describes the message after SMTP_SRV_EV_MESSAGE.
 * Returns 0 (and leaves *e alone) when no message is pending. */
int smtp_server_envelope(struct smtp_server *s, struct smtp_server_envelope *e);

/* smtp_server_message_reply answers the pending message with `reply` (one
 * line, no CRLF, e.g. "250 2.0.0 Ok"), or with cfg.data_reply or
 * "250 2.0.0 Ok: queued" when reply is NULL, and resets the transaction.
 * Returns 1, or 0 when no message was pending. Call next() afterwards. */
int smtp_server_message_reply(struct smtp_server *s, const char *reply);

/* smtp_server_tls_started: the handshake after SMTP_SRV_EV_STARTTLS is
 * done. Resets the session to "EHLO required", STARTTLS no longer offered.
 */
void smtp_server_tls_started(struct smtp_server *s);

/* smtp_server_set_relay: the client may relay without AUTH (its address
 * is in the allowed networks). Call after init. */
void smtp_server_set_relay(struct smtp_server *s, int ok);

/* After SMTP_SRV_EV_AUTH: the user and password the client sent (valid
 * until smtp_server_auth_result). Returns 0 when no AUTH is pending. */
int smtp_server_auth_creds(const struct smtp_server *s, const char **user, const char **pass);
/* smtp_server_auth_result answers the pending AUTH, wipes the password and
 * resumes the session: ok 1 is 235, 0 is 535 (counted towards the
 * SMTP_SERVER_MAX_AUTH_FAILS that close the session), and
 * SMTP_SERVER_AUTH_UNAVAILABLE is 454 4.7.0, "try again later", for a
 * check that could not run (not counted: the client did nothing wrong).
 * Returns 0 when none is pending. */
#define SMTP_SERVER_AUTH_UNAVAILABLE (-1)
int smtp_server_auth_result(struct smtp_server *s, int ok);

/* smtp_server_close_reason: why the session closed, or NULL. */
static inline const char *smtp_server_close_reason(const struct smtp_server *s)
{
    return s->close_reason;
}

/* Output: bytes the caller must send, in order. */
static inline const uint8_t *smtp_server_output(const struct smtp_server *s, size_t *n)
{
    *n = buf_used(&s->out);
    return buf_peek(&s->out);
}
static inline void smtp_server_output_consume(struct smtp_server *s, size_t n)
{
    buf_consume(&s->out, n);
}

const char *smtp_server_state_name(enum smtp_server_state st);

#endif
