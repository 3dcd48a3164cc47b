/*
 * fuzz_smtp_client.c - libFuzzer target for engine/smtp_client.c.
 *
 * Byte 0 picks the configuration: bits 0-1 the TLS mode (3 -> MAY), bits
 * 2-4 the feed chunk size (1, 2, 3, 5, 8, 13, 64 or all at once), bit 5
 * whether the peer closes (EOF) at the end, bits 6-7 the message (7-bit,
 * 8-bit body, UTF-8 recipient, both: BODY=8BITMIME, SMTPUTF8 and the
 * local refusals when the EHLO reply lacks them). The rest is what the server
 * sends; an odd length allows 3 pipelined transactions in flight
 * (smtp_client.h), an even one 1. The harness acts like the engine:
 * tls_started on STARTTLS, on READY the fixed message while
 * smtp_client_room() says so, twice in all, then QUIT once nothing is
 * in flight; and, as after a 354, while a DATA transaction's body is out
 * (PIPELINING without CHUNKING: one may go behind its final dot). When
 * the length is 2 or 3 modulo 4, the second start also asks for QUIT
 * behind it (smtp_client_quit_after), as the engine does for a
 * connection's last message.
 *
 * Invariants checked (abort on violation):
 *   - no event loop runs away (bounded events per feed);
 *   - output per drain is bounded (commands plus one encoded body);
 *   - with SMTP_TLS_REQUIRED no MAIL/RCPT/DATA is ever written before
 *     TLS is active;
 *   - nothing is written after ERROR or CLOSED (except the QUIT queued
 *     with the error itself, drained in the same round);
 *   - an ERROR leaves the session in state FAILED;
 *   - at most one transaction waits behind a DATA transaction, and it is
 *     never in doubt (its body has not been sent).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/smtp_client.h"

static const char *const fuzz_rcpts[] = {"a@example.test", "b@example.test",
                                         "c@example.test"};
static const char *const fuzz_rcpts_utf8[] = {"a@example.test", "\xc3\xa9@example.test",
                                              "c@example.test"};
static const uint8_t fuzz_body[] = "Subject: x\n\n.line\r\nmore\rtext\r\n.\r\n";
static const uint8_t fuzz_body8[] = "Subject: x\n\n.l\xc3\xa9ne\r\nmore\rtext\r\n.\r\n";

struct fuzz_state {
    struct smtp_client c;
    struct smtp_msg msg;
    int started;
    int quit_after;         /* QUIT behind the second transaction */
    int done;               /* ERROR or CLOSED seen */
};

static void fuzz_drain(struct fuzz_state *s, int required, int done_at_entry)
{
    size_t n, total = 0;
    const uint8_t *p;
    while ((p = smtp_client_output(&s->c, &n)), n > 0) {
        total += n;
        if (required && !s->c.tls_active &&
            (memmem(p, n, "MAIL", 4) || memmem(p, n, "RCPT", 4) || memmem(p, n, "DATA", 4)))
            abort();
        smtp_client_output_consume(&s->c, n);
    }
    /* Bound: EHLO/STARTTLS/QUIT lines, a pipelined group with 3 RCPTs,
     * and one encoded body (at most twice the input, plus terminator). */
    if (total > 4096 + 4 * sizeof(fuzz_body8))
        abort();
    if (done_at_entry && total > 0)
        abort();
}

/* fuzz_start: the fixed message while the session has room, twice in
 * all, as the engine hands out mail. */
static void fuzz_start(struct fuzz_state *s)
{
    while (s->started < 2 && smtp_client_room(&s->c)) {
        int rc = smtp_client_start_txn(&s->c, &s->msg);
        if (rc == 0)
            abort();
        if (rc == SMTP_TXN_LATER)
            break;
        s->started++;
        if (s->started == 2 && s->quit_after)
            smtp_client_quit_after(&s->c);
    }
}

static void fuzz_check_behind(const struct smtp_client *c)
{
    if (c->behind_data && (c->nbehind != 1 || c->chunking || smtp_client_behind_in_doubt(c)))
        abort();
}

static void fuzz_pump(struct fuzz_state *s, int required)
{
    int done_at_entry = s->done;
    for (int guard = 0;; guard++) {
        if (guard > 64)
            abort();
        struct smtp_event ev = smtp_client_next(&s->c);
        fuzz_check_behind(&s->c);
        switch (ev.kind) {
        case SMTP_EV_NONE:
            if (s->c.state == SMTP_ST_BODY && !s->c.chunking)
                fuzz_start(s);   /* the engine does so after a 354 */
            fuzz_check_behind(&s->c);
            fuzz_drain(s, required, done_at_entry);
            return;
        case SMTP_EV_STARTTLS:
            if (s->c.state != SMTP_ST_TLS_HANDSHAKE)
                abort();
            fuzz_drain(s, required, done_at_entry);
            smtp_client_tls_started(&s->c);
            break;
        case SMTP_EV_READY:
            if (smtp_client_in_flight(&s->c) == 0 && !smtp_client_room(&s->c))
                abort();    /* READY and idle: a transaction can start */
            if (s->c.quit_sent)
                abort();    /* never READY once QUIT went behind the last */
            fuzz_start(s);
            if (s->started == 2 && smtp_client_in_flight(&s->c) == 0)
                smtp_client_quit(&s->c);
            break;
        case SMTP_EV_TXN_DONE: {
            const struct smtp_txn_result *t = smtp_client_txn(&s->c);
            if (smtp_client_busy(&s->c) || smtp_client_in_doubt(&s->c))
                abort();
            if (t->accepted && (t->stage != SMTP_STAGE_BODY || t->reply.code / 100 != 2))
                abort();
            break;
        }
        case SMTP_EV_CLOSED:
            s->done = 1;
            break;
        case SMTP_EV_ERROR:
            if (ev.reason == NULL || s->c.state != SMTP_ST_FAILED)
                abort();
            s->done = 1;
            break;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t chunks[8] = {1, 2, 3, 5, 8, 13, 64, SIZE_MAX};
    if (size < 1)
        return 0;
    uint8_t cfgb = data[0];
    data++;
    size--;
    enum smtp_tls_mode modes[4] = {SMTP_TLS_NONE, SMTP_TLS_MAY, SMTP_TLS_REQUIRED,
                                   SMTP_TLS_MAY};
    enum smtp_tls_mode mode = modes[cfgb & 3];
    size_t chunk = chunks[(cfgb >> 2) & 7];
    int required = mode == SMTP_TLS_REQUIRED;

    struct fuzz_state *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return 0;
    struct smtp_client_config cfg = {.helo_name = "fuzz.test", .tls = mode,
                                     .pipeline_depth = (size & 1) ? 3 : 1};
    smtp_client_init(&s->c, &cfg);
    s->quit_after = (size & 2) != 0;
    s->msg.from = "sender@example.test";
    s->msg.rcpts = (cfgb & 0x80) ? fuzz_rcpts_utf8 : fuzz_rcpts;
    s->msg.nrcpts = 3;
    s->msg.data = (cfgb & 0x40) ? fuzz_body8 : fuzz_body;
    s->msg.data_len = (cfgb & 0x40) ? sizeof(fuzz_body8) - 1 : sizeof(fuzz_body) - 1;

    fuzz_pump(s, required);
    size_t off = 0;
    while (off < size) {
        size_t n = size - off < chunk ? size - off : chunk;
        smtp_client_feed(&s->c, data + off, n);
        off += n;
        fuzz_pump(s, required);
    }
    if (cfgb & 0x20) {
        smtp_client_eof(&s->c);
        fuzz_pump(s, required);
    }
    smtp_client_cleanup(&s->c);
    free(s);
    return 0;
}
