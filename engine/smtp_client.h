/*
 * smtp_client.h - sans-I/O SMTP client session (RFC 5321, 3207, 2920).
 *
 * DESCRIPTION
 *   One struct smtp_client drives one SMTP connection from the greeting to
 *   QUIT. It never touches a socket: the caller feeds it the plaintext bytes
 *   received from the peer (already decrypted when TLS is on), asks it for
 *   the next event, and sends whatever it queued in its output buffer
 *   (encrypting it first when TLS is on).
 *
 *   Flow, as seen by the caller (the io_uring loop or a test):
 *
 *     smtp_client_init()                          state GREETING
 *     loop:
 *       smtp_client_feed(bytes from peer)
 *       while ((ev = smtp_client_next()).kind != SMTP_EV_NONE) act on ev
 *       send each smtp_client_output() piece, smtp_client_output_consume()
 *
 *   Events:
 *     SMTP_EV_STARTTLS   the peer answered 220 to STARTTLS. The caller must
 *                        now run the TLS handshake on the same socket and
 *                        then call smtp_client_tls_started(). Any plaintext
 *                        that arrived after the 220 makes smtp_client_next
 *                        return SMTP_EV_ERROR (reason "plaintext injected
 *                        after STARTTLS") instead: it can only be an attack.
 *     SMTP_EV_READY      the session is established (greeting, EHLO, and
 *                        TLS if any) and idle; smtp_client_caps() is final.
 *                        The caller may start a transaction or quit. READY
 *                        is emitted again after every finished transaction.
 *     SMTP_EV_TXN_DONE   a transaction ended; smtp_client_txn() holds the
 *                        outcome. READY follows at once (unless the session
 *                        went down, in which case ERROR follows).
 *     SMTP_EV_CLOSED     QUIT was answered (or the peer closed after QUIT).
 *     SMTP_EV_ERROR      the session is unusable: malformed reply, 421,
 *                        greeting refused, policy failure, peer EOF, ...
 *                        ev.reason says which (a static string) and
 *                        ev.reply is the reply that caused it, if any.
 *                        The caller sends what is in the output (a
 *                        polite QUIT is queued when the session is still
 *                        in sync: greeting/EHLO/HELO/STARTTLS refusals,
 *                        unexpected replies) and closes the connection.
 *                        smtp_client_in_doubt() still answers after it.
 *                        Reasons: "greeting refused", "EHLO refused",
 *                        "HELO refused", "STARTTLS not offered",
 *                        "STARTTLS refused", "plaintext injected after
 *                        STARTTLS", "service not available (421)",
 *                        "malformed reply", "unexpected reply",
 *                        "RSET refused", "connection closed by peer",
 *                        "input limit exceeded", "out of memory".
 *
 *   Reply handling: a non-220 greeting fails. EHLO 5xx falls back to HELO
 *   (no extensions); EHLO 4xx fails. 421 to any command fails the session;
 *   when it answers the final dot, TXN_DONE (accepted=0) comes first. RCPT
 *   replies are per recipient. A MAIL refusal ends the transaction at stage
 *   MAIL (pipelined RCPT/DATA replies are read and ignored); no accepted
 *   RCPT ends it at stage RCPT (lock-step: DATA is not sent; pipelined:
 *   a 354 is answered with "." alone). A 3xx other than 354 to DATA, or a
 *   2xx to DATA, is "unexpected reply". Any reply to QUIT, or EOF after
 *   QUIT, gives CLOSED.
 *
 *   ESMTP parameters on MAIL FROM: SIZE=<data_len> when the peer announced
 *   SIZE (RFC 1870); BODY=8BITMIME when the data holds a byte >= 0x80
 *   (RFC 6152); SMTPUTF8 when an envelope address does (RFC 6531). A
 *   message the peer cannot take is refused locally, before anything is
 *   sent: TXN_DONE follows at once with accepted=0, stage MAIL, txn.local
 *   set and a reply carrying the enhanced status a receiver would give:
 *     data_len over the announced SIZE    552 5.3.4
 *     non-ASCII address, no SMTPUTF8      553 5.6.7
 *     8-bit data, no 8BITMIME             554 5.6.3
 *   (checked in that order; after a HELO fallback nothing is offered, so
 *   only 7-bit mail with ASCII addresses goes through).
 *
 *   Enhanced status codes (RFC 2034/3463) are taken from every reply that
 *   starts with one, announced or not (smtp_reply.h); per recipient the
 *   RCPT reply's code and enhanced code, and for a refusal its first text
 *   line, are kept in the transaction result.
 *
 *   With PIPELINING the transaction goes out as one write: MAIL, every RCPT,
 *   DATA; then the body after 354. When the peer offers CHUNKING as well
 *   (RFC 3030), the body goes in that same write instead: MAIL, every RCPT,
 *   "BDAT <n> LAST" and the n body bytes (line ends converted as below, no
 *   dot-stuffing, no terminator): one write and one round trip per message
 *   instead of two. The BDAT reply is the final one (stage BODY); with no
 *   accepted RCPT it is read and ignored (the RCPT or MAIL refusal stands).
 *   The body is then on the wire from the start, so smtp_client_in_doubt()
 *   is set until the final reply, or until every RCPT was refused. Without
 *   PIPELINING, commands go in lock-step (and DATA is used).
 *   The body is converted on the way out: bare CR and bare LF become CRLF,
 *   lines starting with "." are dot-stuffed, a final CRLF is added if
 *   missing, then ".\r\n". RSET is sent before a transaction only when the
 *   previous one did not end cleanly.
 *
 * PIPELINED TRANSACTIONS
 *   With PIPELINING and CHUNKING, and cfg.pipeline_depth > 1, the next
 *   transaction may be started while earlier ones wait for their replies
 *   (RFC 2920 3.1 lets BDAT, MAIL and RCPT stand anywhere in a group):
 *   RSET, MAIL, RCPT, BDAT LAST and body of several messages go out in
 *   one write, and the receiver's replies come back together. Each
 *   transaction behind another starts with RSET: a receiver may stay in a
 *   transaction whose BDAT it refused (RFC 3030; Exim does), and without
 *   it would take the next one's MAIL as out of sequence (503) and its
 *   RCPTs and body into the failed one, under the wrong sender. Replies are
 *   read strictly in order; TXN_DONE comes once per transaction, in the
 *   order they were started. smtp_client_room() says whether
 *   smtp_client_start_txn() would be taken now. A transaction that would
 *   be refused locally (SIZE, 8BITMIME, SMTPUTF8) is not queued behind
 *   others: start_txn returns SMTP_TXN_LATER and the caller offers it
 *   again once the session is idle. After a transaction fails, nothing
 *   more is queued behind until the session is idle again (and RSET has
 *   been sent); a transaction already behind the failed one whose MAIL
 *   gets 503 (the receiver still in the old transaction) ends with
 *   txn.resend set, and the caller sends it again. A session lost with
 *   several transactions sent leaves each of them in doubt.
 *
 *   With PIPELINING but no CHUNKING (and cfg.pipeline_depth > 1), one
 *   transaction may wait behind a DATA transaction: once the current one
 *   has queued its body and final ".", start_txn appends the next MAIL,
 *   RCPT... and DATA right after the "." in the same output (RFC 2920 3.1:
 *   the message content may be the first "command" of a group), so the
 *   final reply and the next group's replies come back in one round trip
 *   instead of two. Only one: its body can only go after its own 354,
 *   so smtp_client_room() says no until then. When the current one's
 *   final reply was read (TXN_DONE), the one behind becomes current with
 *   its MAIL/RCPT/DATA replies due, exactly as a pipelined group sent
 *   alone: 354 sends its body, or "." alone when no RCPT was accepted.
 *   Its body has not been sent, so a session lost meanwhile leaves it
 *   not in doubt (smtp_client_behind_in_doubt() is 0); the current one is
 *   in doubt from its "." as always. A failed final reply (554 after
 *   ".") ends that transaction at the receiver, so the MAIL behind it
 *   stands; a 503 to it gives txn.resend as above, and the failure rule
 *   above holds for new ones. Local refusals give SMTP_TXN_LATER.
 *
 * TLS POLICY
 *   cfg.tls = SMTP_TLS_NONE never sends STARTTLS. SMTP_TLS_MAY sends it when
 *   offered and carries on in plaintext when it is not offered or refused
 *   (454). SMTP_TLS_REQUIRED fails with SMTP_EV_ERROR when STARTTLS is not
 *   offered ("STARTTLS not offered") or refused ("STARTTLS refused"), after
 *   sending QUIT; the message is never sent. After TLS the capabilities
 *   seen before TLS are forgotten and EHLO is sent again.
 *
 * LIMITS
 *   Replies are parsed by smtp_reply.h with its limits. Unread input is
 *   capped at SMTP_CLIENT_INPUT_MAX bytes; a peer that exceeds it is an
 *   error. At most SMTP_MAX_RCPTS_PER_TXN recipients per transaction (the
 *   caller splits larger lists).
 *
 * OWNERSHIP
 *   The caller owns struct smtp_client (embed it or allocate it) and must
 *   call smtp_client_cleanup(). smtp_client_start_txn() copies nothing: the
 *   struct smtp_msg and everything it points to must stay valid until
 *   SMTP_EV_TXN_DONE (or ERROR) for that transaction. The body is encoded
 *   into the output when the 354 arrives (with BDAT: at once); its long
 *   runs are output references into the message's data, not copies (see
 *   smtp_client_output).
 */
#ifndef TERN_ENGINE_SMTP_CLIENT_H
#define TERN_ENGINE_SMTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "engine/buf.h"
#include "engine/smtp_reply.h"

#define SMTP_CLIENT_INPUT_MAX   (64 * 1024)
#define SMTP_MAX_RCPTS_PER_TXN  100
/* Body runs at least this long go out from the message itself (an output
 * reference) instead of being copied into the output buffer. Shorter ones
 * are copied: each output piece becomes its own TLS record (or records),
 * and a record is up to 16 KiB, so a shorter reference would only add
 * small records. */
#define SMTP_OUT_REF_MIN        (16 * 1024)
#define SMTP_OUT_REFS_MAX       32      /* references queued at once; more are copied */
#define SMTP_ADDR_MAX           512   /* RFC 5321 path limit is 256; be lenient */
#define SMTP_HELO_NAME_MAX      255
#define SMTP_RCPT_TEXT_MAX      160   /* a refused recipient's reply text kept */
#define SMTP_RCPT_TEXTS_MAX     4096  /* room for those texts in one transaction */
#define SMTP_PIPELINE_MAX       16    /* transactions in flight on one session */

enum smtp_tls_mode {
    SMTP_TLS_NONE,      /* never STARTTLS */
    SMTP_TLS_MAY,       /* STARTTLS when offered, else plaintext */
    SMTP_TLS_REQUIRED,  /* no STARTTLS, no mail */
};

struct smtp_client_config {
    const char *helo_name;      /* our EHLO name; copied by init */
    enum smtp_tls_mode tls;
    /* Transactions that may be in flight at once when the peer offers
     * PIPELINING and CHUNKING (see PIPELINED TRANSACTIONS); with
     * PIPELINING alone any value > 1 lets one wait behind a DATA
     * transaction; 0 or 1: one at a time. At most SMTP_PIPELINE_MAX. */
    int pipeline_depth;
};

/* Capabilities from the last EHLO reply (after TLS: the post-TLS one). */
struct smtp_caps {
    unsigned esmtp : 1;         /* EHLO worked (else HELO fallback) */
    unsigned pipelining : 1;
    unsigned starttls : 1;
    unsigned chunking : 1;
    unsigned eightbitmime : 1;
    unsigned smtputf8 : 1;
    unsigned enhancedstatuscodes : 1;
    uint64_t size;              /* SIZE limit, 0 if none announced */
};

/* One message to send. Addresses are bare (no angle brackets); the empty
 * string is the null reverse-path "<>". */
struct smtp_msg {
    const char *from;
    const char *const *rcpts;
    size_t nrcpts;              /* 1 .. SMTP_MAX_RCPTS_PER_TXN */
    const uint8_t *data;        /* RFC 5322 message, any line endings */
    size_t data_len;
};

enum smtp_txn_stage {
    SMTP_STAGE_MAIL, SMTP_STAGE_RCPT, SMTP_STAGE_DATA, SMTP_STAGE_BODY,
};

/* Outcome of one transaction. */
struct smtp_txn_result {
    /* 1 when DATA's final reply was 2xx: every recipient whose rcpt_code is
     * 2xx has been delivered. */
    int accepted;
    enum smtp_txn_stage stage;      /* where the transaction ended */
    struct smtp_reply reply;        /* the reply that ended it (final reply
                                       to the body, or the failing one) */
    int rcpt_code[SMTP_MAX_RCPTS_PER_TXN]; /* RCPT reply code per recipient,
                                       0 if never answered */
    char rcpt_esc[SMTP_MAX_RCPTS_PER_TXN][SMTP_ESC_MAX];   /* "" if none */
    /* The first line of each refused (non-2xx) RCPT reply, truncated to
     * SMTP_RCPT_TEXT_MAX-1 bytes, kept while SMTP_RCPT_TEXTS_MAX lasts
     * (then ""): read it with smtp_txn_rcpt_text(). A pool rather than a
     * line per recipient keeps the session small. */
    uint16_t rcpt_text_off[SMTP_MAX_RCPTS_PER_TXN];   /* 0: none */
    char rcpt_texts[SMTP_RCPT_TEXTS_MAX];             /* [0] is "" */
    size_t rcpt_texts_used;
    int local;                      /* refused by us before sending (SIZE,
                                       8BITMIME, SMTPUTF8): reply is ours */
    int resend;                     /* pipelined behind a transaction that
                                       failed, and refused at MAIL with 503
                                       (bad sequence): the receiver never
                                       considered it; send it again */
};

enum smtp_event_kind {
    SMTP_EV_NONE,       /* nothing to do until more input arrives */
    SMTP_EV_STARTTLS,
    SMTP_EV_READY,
    SMTP_EV_TXN_DONE,
    SMTP_EV_CLOSED,
    SMTP_EV_ERROR,
};

struct smtp_event {
    enum smtp_event_kind kind;
    const char *reason;              /* ERROR: static text; else NULL */
    const struct smtp_reply *reply;  /* reply involved, or NULL; valid until
                                        the next call into the client */
};

enum smtp_client_state {
    SMTP_ST_GREETING,
    SMTP_ST_EHLO,
    SMTP_ST_HELO,
    SMTP_ST_STARTTLS,
    SMTP_ST_TLS_HANDSHAKE,  /* waiting for smtp_client_tls_started() */
    SMTP_ST_READY,
    SMTP_ST_RSET,
    SMTP_ST_MAIL,
    SMTP_ST_RCPT,
    SMTP_ST_DATA,
    SMTP_ST_BODY,           /* body sent, waiting for the final reply */
    SMTP_ST_QUIT,
    SMTP_ST_CLOSED,
    SMTP_ST_FAILED,
    SMTP_ST_COUNT
};

struct smtp_client {
    enum smtp_client_state state;
    struct smtp_client_config cfg;
    char helo_name[SMTP_HELO_NAME_MAX + 1];
    struct smtp_caps caps;
    int tls_active;
    int need_rset;               /* previous transaction did not end cleanly */
    struct buf in;               /* unparsed input */
    struct buf out;              /* bytes to send */
    const struct smtp_msg *msg;  /* transaction in progress */
    size_t replies_due;          /* pipelined replies still to read */
    size_t rcpt_next;            /* next RCPT reply to attribute */
    size_t rcpt_ok;              /* RCPTs accepted so far */
    int body_sent;               /* final dot or BDAT LAST queued: in doubt */
    int quit_sent;
    struct smtp_reply last;      /* last reply parsed */
    struct smtp_txn_result txn;
    int pending_ready;           /* emit READY after TXN_DONE */
    int pending_error;           /* emit ERROR (with err_reason) next */
    const char *err_reason;
    /* Added by the implementation (private; read through the accessors). */
    const struct smtp_reply *err_reply; /* reply for the ERROR event */
    int pending_txn_done;        /* emit TXN_DONE next */
    int pending_starttls;        /* emit STARTTLS next */
    int pending_closed;          /* emit CLOSED next */
    int eof;                     /* peer closed its side */
    int pipelined;               /* current transaction uses PIPELINING */
    int chunking;                /* ... and BDAT LAST instead of DATA */
    int mail_ok;                 /* MAIL FROM got 2xx */
    int dot_only;                /* no accepted RCPT: "." after 354, or BDAT's reply ignored */
    int txn_8bit;                /* data has bytes >= 0x80: BODY=8BITMIME */
    int txn_canonical;           /* smtp_body_scan: data is CRLF-only, ends in CRLF */
    int txn_utf8;                /* non-ASCII envelope: SMTPUTF8 */
    /* Pipelined transactions sent after msg, oldest first; their replies
     * follow msg's. One becomes msg when msg's TXN_DONE was read. */
    const struct smtp_msg *behind[SMTP_PIPELINE_MAX];
    size_t behind_head, nbehind;
    int promote;                 /* msg finished: the next behind becomes msg */
    int after_failure;           /* a transaction before msg failed while
                                    msg was already sent behind it */
    int behind_refused;          /* a 421 closed the session: the receiver
                                    took none of those behind */
    int behind_data;             /* the one behind went out as MAIL/RCPT/DATA
                                    after msg's final dot: its body is not
                                    sent (it waits for its own 354) */
    int behind_canonical;        /* its smtp_body_scan result */
    int quit_after;              /* smtp_client_quit_after: QUIT follows the
                                    last transaction once it is all queued */
    /* Output references (smtp_client_output): runs of a message's body
     * sent from the message itself, a ring in output order. at is the
     * offset in the output stream (out_taken counts the bytes of out
     * consumed so far) where the run goes, before what out holds from
     * there on. */
    struct smtp_out_ref {
        uint64_t at;
        const uint8_t *p;
        size_t n;
    } refs[SMTP_OUT_REFS_MAX];
    size_t ref_head, nrefs;
    uint64_t out_taken;
    const struct smtp_msg *done_msg;    /* the transaction TXN_DONE ends */
};

/* smtp_client_init prepares a session in state GREETING. A helo_name that
 * is NULL, empty, longer than SMTP_HELO_NAME_MAX or holds anything but
 * printable ASCII without spaces is replaced by "localhost" (it goes on
 * the wire verbatim). */
void smtp_client_init(struct smtp_client *c, const struct smtp_client_config *cfg);
/* smtp_client_cleanup frees the buffers; safe to call twice. */
void smtp_client_cleanup(struct smtp_client *c);

/* smtp_client_feed appends plaintext received from the peer. Returns 1, or
 * 0 when the input cap is exceeded (the next event is then ERROR). Bytes
 * fed between SMTP_EV_STARTTLS and smtp_client_tls_started() also make
 * the next event ERROR ("plaintext injected after STARTTLS"). Bytes fed
 * after ERROR or CLOSED are ignored. */
int smtp_client_feed(struct smtp_client *c, const uint8_t *p, size_t n);
/* smtp_client_eof tells the session the peer closed the connection. */
void smtp_client_eof(struct smtp_client *c);

/* smtp_client_next parses what it can and returns the next event, or
 * SMTP_EV_NONE when it needs more input. Call until NONE. */
struct smtp_event smtp_client_next(struct smtp_client *c);

/* smtp_client_tls_started: the TLS handshake after SMTP_EV_STARTTLS has
 * completed. Forgets the plaintext capabilities and queues EHLO. */
void smtp_client_tls_started(struct smtp_client *c);

/* smtp_client_start_txn queues a transaction. Valid right after
 * SMTP_EV_READY, or while smtp_client_room() says so (pipelined
 * transactions); returns 0 (and does nothing) otherwise, when nrcpts is 0
 * or over the limit, or when an address is NULL, longer than
 * SMTP_ADDR_MAX, holds a control character (CR, LF, ...) or '<' / '>'
 * (which could inject commands or ESMTP parameters), or a recipient is
 * empty. A message the peer cannot take (SIZE, 8BITMIME, SMTPUTF8; see
 * DESCRIPTION) returns 1, sends nothing, and TXN_DONE follows with
 * accepted=0, stage MAIL, txn.local=1 and the local refusal; queued
 * behind other transactions, such a message is not taken: SMTP_TXN_LATER
 * (nothing done; offer it again when the session is idle). */
#define SMTP_TXN_LATER 2
int smtp_client_start_txn(struct smtp_client *c, const struct smtp_msg *m);

/* smtp_client_room: 1 when smtp_client_start_txn() would take a
 * transaction now: the session is READY, or pipelined transactions are in
 * use and fewer than cfg.pipeline_depth are in flight (with DATA: the
 * current one's body and final dot are queued and none waits behind). */
int smtp_client_room(struct smtp_client *c);
/* smtp_client_set_depth: cfg.pipeline_depth from now on (at most
 * SMTP_PIPELINE_MAX); transactions already in flight stay, a lower depth
 * only stops new ones from stacking. */
void smtp_client_set_depth(struct smtp_client *c, int depth);
/* smtp_client_in_flight: transactions started whose TXN_DONE has not
 * been returned yet (0 when idle). */
size_t smtp_client_in_flight(const struct smtp_client *c);

/* smtp_client_quit queues QUIT (only when READY); CLOSED follows. */
int smtp_client_quit(struct smtp_client *c);
/* smtp_client_quit_after: the transactions in flight are the session's
 * last. With PIPELINING, QUIT goes out right behind the last of them,
 * once all of it is queued (RFC 2920 3.1: QUIT may end a group): with
 * BDAT at once, with DATA after the body (or the "." alone) that its 354
 * brings. The replies then end with QUIT's: TXN_DONE for each, no READY
 * once QUIT has gone (not even between transactions still in flight),
 * and CLOSED at QUIT's reply (state QUIT in between). One send and one round trip less for a connection that
 * carries one message. Nothing more may be started (smtp_client_room
 * says no). When the last transaction ends before its body was sent (a
 * DATA refused, a local refusal) no QUIT went: READY follows as usual
 * and the caller quits then. Returns 1 when taken; 0 (nothing done)
 * without a transaction in flight, without PIPELINING, after QUIT or
 * after an error. */
int smtp_client_quit_after(struct smtp_client *c);

/* Output: bytes the caller must send, in order, one piece at a time.
 * smtp_client_output returns the next piece (*n is 0 when there is none)
 * and smtp_client_output_consume(n) says that n of its bytes (at most *n)
 * went out; the caller loops until *n is 0:
 *     while ((p = smtp_client_output(c, &n)), n > 0) { send p, n; consume n }
 * A piece is either queued command bytes or a run of a message's body
 * of at least SMTP_OUT_REF_MIN bytes that points into the message itself
 * (struct smtp_msg's data: no copy of a large body). Such a pointer is
 * valid until that transaction's TXN_DONE or ERROR: a caller must send (or
 * copy) the output before it frees a message. smtp_client_next copies
 * what is still unsent of a message's runs into the output buffer before
 * it returns the event that ends it (a receiver that answers before the
 * body was sent), so a caller that flushes after acting on the events
 * never reads a freed body. */
const uint8_t *smtp_client_output(const struct smtp_client *c, size_t *n);
void smtp_client_output_consume(struct smtp_client *c, size_t n);

static inline const struct smtp_caps *smtp_client_caps(const struct smtp_client *c) { return &c->caps; }
static inline const struct smtp_txn_result *smtp_client_txn(const struct smtp_client *c) { return &c->txn; }
/* smtp_client_in_doubt: the final dot (or the BDAT LAST chunk) was sent
 * and its reply not read. A
 * session lost now leaves the outcome unknown (possible duplicate). It
 * stays set after SMTP_EV_ERROR (state FAILED), so the caller can ask
 * right after the error; it is cleared when the final reply is read. */
static inline int smtp_client_in_doubt(const struct smtp_client *c)
{
    return c->body_sent;
}
/* smtp_client_behind_in_doubt: transactions were sent behind the current
 * one and the session ended without their replies, not by a 421 (after
 * which the receiver has none of them). Each may have been delivered.
 * Never for one waiting behind a DATA transaction: its body was not sent. */
static inline int smtp_client_behind_in_doubt(const struct smtp_client *c)
{
    return c->nbehind > 0 && !c->behind_refused && !c->behind_data;
}
/* smtp_client_busy: a transaction is in progress (message attached). */
static inline int smtp_client_busy(const struct smtp_client *c) { return c->msg != NULL; }

const char *smtp_client_state_name(enum smtp_client_state s);

/* smtp_txn_rcpt_text: recipient i's refusal text (first line of its RCPT
 * reply, without the code), or "" when accepted, never answered or not
 * kept. Valid as long as the result it points into. */
static inline const char *smtp_txn_rcpt_text(const struct smtp_txn_result *t, size_t i)
{
    return i < SMTP_MAX_RCPTS_PER_TXN ? t->rcpt_texts + t->rcpt_text_off[i] : "";
}

#endif
