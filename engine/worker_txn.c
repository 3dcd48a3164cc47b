/*
 * worker_txn.c - a message's recipients across SMTP transactions.
 *
 * One delivery attempt may take several transactions: a receiver that
 * answers RCPT with 452 ("too many recipients", RFC 5321 4.5.3.1.10)
 * takes the rest in a new transaction, and a message with more
 * recipients than max_recipients_per_transaction is sent in batches.
 * Each recipient's result is kept in the job (struct rcpt_result) until
 * nothing is left to send now; then the message gets one outcome, one
 * ack and at most one bounce. See worker_int.h for the functions.
 */
#include "engine/worker_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An RCPT reply saying "no more recipients in this transaction": 452, or
 * 4.5.3; RFC 5321 4.5.3.1.10 asks clients to take the 552 of old servers
 * (without an enhanced code, or with 5.5.3) the same way. */
static int too_many_rcpts(int code, const char *esc)
{
    if (code == 452 || (code / 100 == 4 && strcmp(esc, "4.5.3") == 0))
        return 1;
    return code == 552 && (esc[0] == '\0' || strcmp(esc, "5.5.3") == 0);
}

static int job_alloc_rcpts(struct job *j)
{
    size_t n = j->m->nrcpts;
    if (n <= JOB_INLINE_RCPTS) {
        memset(j->rr_inline, 0, sizeof(j->rr_inline));
        j->rr = j->rr_inline;
        j->txr = j->txr_inline;
        j->txi = j->txi_inline;
        return 1;
    }
    j->rr = calloc(n, sizeof(*j->rr));
    j->txr = calloc(n, sizeof(*j->txr));
    j->txi = calloc(n, sizeof(*j->txi));
    if (j->rr == NULL || j->txr == NULL || j->txi == NULL) {
        job_txn_free(j);
        return 0;
    }
    return 1;
}

int job_next_batch(struct job *j, size_t max)
{
    if (j->rr == NULL && !job_alloc_rcpts(j))
        return 0;
    if (max == 0 || max > SMTP_MAX_RCPTS_PER_TXN)
        max = SMTP_MAX_RCPTS_PER_TXN;
    size_t k = 0;
    for (size_t i = 0; i < j->m->nrcpts && k < max; i++) {
        if (j->rr[i].state != RCPT_TODO)
            continue;
        j->txr[k] = j->m->rcpts[i];
        j->txi[k] = i;
        k++;
    }
    j->ntx = k;
    j->sm = (struct smtp_msg){
        .from = j->m->from, .rcpts = j->txr, .nrcpts = k,
        .data = j->m->data, .data_len = j->m->data_len,
    };
    return k > 0;
}

static void set_result(struct rcpt_result *r, enum rcpt_state st, int code, const char *esc,
                       const char *diag)
{
    r->state = st;
    r->code = code;
    /* Once per recipient: copies, not snprintf. Reply codes are three
     * digits (smtp_reply.c), so the class is one. */
    if (esc[0]) {
        size_t n = strnlen(esc, sizeof(r->esc) - 1);
        memcpy(r->esc, esc, n);
        r->esc[n] = '\0';
    } else {
        r->esc[0] = (char)('0' + (code / 100) % 10);
        memcpy(r->esc + 1, ".0.0", 5);
    }
    free(r->diag);
    r->diag = st == RCPT_FAILED && diag ? strdup(diag) : NULL;   /* for the bounce */
}

int job_record_txn(struct job *j, const struct smtp_txn_result *t, const char *reply, int expired)
{
    int progress = 0;
    for (size_t k = 0; k < j->ntx; k++) {
        struct rcpt_result *r = &j->rr[j->txi[k]];
        int code = t->reply.code;
        const char *esc = t->reply.esc, *diag = reply;
        char line[SMTP_RCPT_TEXT_MAX + 8];
        if (t->stage != SMTP_STAGE_MAIL && t->rcpt_code[k] / 100 != 2 && t->rcpt_code[k]) {
            /* Refused at RCPT: its own reply says why. */
            code = t->rcpt_code[k];
            esc = t->rcpt_esc[k];
            snprintf(line, sizeof(line), "%d %s", code, smtp_txn_rcpt_text(t, k));
            diag = line;
            if (too_many_rcpts(code, esc)) {
                r->state = RCPT_TODO;   /* a new transaction, not the retry schedule */
                continue;
            }
        }
        switch (code / 100) {
        case 2:
            set_result(r, RCPT_OK, code, esc, NULL);
            progress = 1;
            break;
        case 5:
            set_result(r, RCPT_FAILED, code, esc, diag);
            progress = 1;
            break;
        default:
            set_result(r, RCPT_LATER, code, esc, diag);
            break;
        }
    }
    int more = 0;
    for (size_t i = 0; i < j->m->nrcpts; i++)
        more |= j->rr[i].state == RCPT_TODO;
    /* Another transaction only while they make progress: each one settles
     * at least one recipient, so this ends. */
    if (more && progress && !expired)
        return 1;
    job_settle_rest(j, expired ? RCPT_FAILED : RCPT_LATER, expired ? "4.4.7" : "",
                    reply);
    return 0;
}

void job_settle_rest(struct job *j, enum rcpt_state st, const char *esc, const char *reason)
{
    if (j->rr == NULL)
        return;
    for (size_t i = 0; i < j->m->nrcpts; i++) {
        struct rcpt_result *r = &j->rr[i];
        if (r->state == RCPT_TODO || (st == RCPT_FAILED && r->state == RCPT_LATER))
            set_result(r, st, st == RCPT_FAILED ? 500 : 400, esc, reason);
    }
}

int job_progress(const struct job *j)
{
    if (j->rr == NULL)
        return 0;
    for (size_t i = 0; i < j->m->nrcpts; i++)
        if (j->rr[i].state == RCPT_OK || j->rr[i].state == RCPT_FAILED)
            return 1;
    return 0;
}

void job_txn_free(struct job *j)
{
    if (j->rr)
        for (size_t i = 0; i < j->m->nrcpts; i++)
            free(j->rr[i].diag);
    if (j->rr != j->rr_inline) {
        free(j->rr);
        free(j->txr);
        free(j->txi);
    }
    j->rr = NULL;
    j->txr = NULL;
    j->txi = NULL;
}
