/*
 * unit_worker_txn.c - engine/worker_txn.c: a message's recipients across
 * transactions (batches, 452 "too many recipients", when to stop).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/worker_int.h"
#include "tests/check.h"

static char *rcpt_names[] = {"r0@h.test", "r1@h.test", "r2@h.test", "r3@h.test", "r4@h.test"};

static void job_init(struct job *j, struct queue_msg *m, size_t n)
{
    memset(m, 0, sizeof(*m));
    m->from = "s@x.test";
    m->rcpts = rcpt_names;
    m->nrcpts = n;
    m->data = (uint8_t *)"hi\r\n";
    m->data_len = 4;
    memset(j, 0, sizeof(*j));
    j->m = m;
}

/* A transaction result: every RCPT answered code[k]; DATA answered final. */
static void txn_result(struct smtp_txn_result *t, const int *codes, size_t n, int final)
{
    memset(t, 0, sizeof(*t));
    t->stage = SMTP_STAGE_BODY;
    t->reply.code = final;
    snprintf(t->reply.esc, sizeof(t->reply.esc), "%d.0.0", final / 100);
    t->accepted = final / 100 == 2;
    for (size_t k = 0; k < n; k++) {
        t->rcpt_code[k] = codes[k];
        if (codes[k] == 452)
            snprintf(t->rcpt_esc[k], sizeof(t->rcpt_esc[k]), "4.5.3");
        else
            snprintf(t->rcpt_esc[k], sizeof(t->rcpt_esc[k]), "%d.1.5", codes[k] / 100);
        if (codes[k] / 100 != 2) {
            if (t->rcpt_texts_used == 0)
                t->rcpt_texts_used = 1;
            t->rcpt_text_off[k] = (uint16_t)t->rcpt_texts_used;
            memcpy(t->rcpt_texts + t->rcpt_texts_used, "why", 4);
            t->rcpt_texts_used += 4;
        }
    }
}

static void test_batches_by_limit(void)
{
    struct queue_msg m;
    struct job j;
    struct smtp_txn_result t;
    static const int ok2[] = {250, 250};
    job_init(&j, &m, 5);
    CHECK_INT(job_next_batch(&j, 2), 1);
    CHECK_INT(j.ntx, 2);
    CHECK_STR(j.sm.rcpts[0], "r0@h.test");
    CHECK_STR(j.sm.rcpts[1], "r1@h.test");
    txn_result(&t, ok2, 2, 250);
    CHECK_INT(job_record_txn(&j, &t, "250 ok", 0), 1);    /* more to send now */
    CHECK_INT(job_next_batch(&j, 2), 1);
    CHECK_STR(j.sm.rcpts[0], "r2@h.test");
    CHECK_INT(job_record_txn(&j, &t, "250 ok", 0), 1);
    CHECK_INT(job_next_batch(&j, 2), 1);
    CHECK_INT(j.ntx, 1);
    CHECK_STR(j.sm.rcpts[0], "r4@h.test");
    CHECK_INT(job_record_txn(&j, &t, "250 ok", 0), 0);    /* done */
    for (size_t i = 0; i < 5; i++)
        CHECK_INT(j.rr[i].state, RCPT_OK);
    CHECK_INT(job_next_batch(&j, 2), 0);
    job_txn_free(&j);
}

static void test_452_new_transaction(void)
{
    struct queue_msg m;
    struct job j;
    struct smtp_txn_result t;
    static const int first[] = {250, 550, 452, 452};
    static const int second[] = {250, 452};
    job_init(&j, &m, 4);
    CHECK_INT(job_next_batch(&j, 0), 1);     /* 0: no limit but the client's */
    CHECK_INT(j.ntx, 4);
    txn_result(&t, first, 4, 250);
    CHECK_INT(job_record_txn(&j, &t, "250 2.0.0 ok", 0), 1);
    CHECK_INT(j.rr[0].state, RCPT_OK);
    CHECK_INT(j.rr[1].state, RCPT_FAILED);
    CHECK_STR(j.rr[1].esc, "5.1.5");
    CHECK_STR(j.rr[1].diag, "550 why");
    CHECK_INT(j.rr[2].state, RCPT_TODO);
    CHECK_INT(job_next_batch(&j, 0), 1);
    CHECK_INT(j.ntx, 2);
    CHECK_STR(j.sm.rcpts[0], "r2@h.test");
    CHECK_STR(j.sm.rcpts[1], "r3@h.test");
    txn_result(&t, second, 2, 250);
    CHECK_INT(job_record_txn(&j, &t, "250 2.0.0 ok", 0), 1);
    CHECK_INT(job_next_batch(&j, 0), 1);
    CHECK_STR(j.sm.rcpts[0], "r3@h.test");
    /* Only 452 again: no progress, so the rest waits for the schedule. */
    static const int none[] = {452};
    txn_result(&t, none, 1, 554);
    t.stage = SMTP_STAGE_RCPT;
    CHECK_INT(job_record_txn(&j, &t, "452 4.5.3 too many", 0), 0);
    CHECK_INT(j.rr[3].state, RCPT_LATER);
    CHECK_INT(job_progress(&j), 1);
    job_txn_free(&j);
}

/* A 552 at RCPT without an enhanced code is the old "too many". */
static void test_552_old_too_many(void)
{
    struct queue_msg m;
    struct job j;
    struct smtp_txn_result t;
    static const int codes[] = {250, 552};
    job_init(&j, &m, 2);
    CHECK_INT(job_next_batch(&j, 0), 1);
    txn_result(&t, codes, 2, 250);
    t.rcpt_esc[1][0] = '\0';
    CHECK_INT(job_record_txn(&j, &t, "250 ok", 0), 1);
    CHECK_INT(j.rr[1].state, RCPT_TODO);
    job_txn_free(&j);
    /* 552 5.2.2 (mailbox full) is the recipient's own failure. */
    job_init(&j, &m, 2);
    CHECK_INT(job_next_batch(&j, 0), 1);
    txn_result(&t, codes, 2, 250);
    snprintf(t.rcpt_esc[1], sizeof(t.rcpt_esc[1]), "5.2.2");
    CHECK_INT(job_record_txn(&j, &t, "250 ok", 0), 0);
    CHECK_INT(j.rr[1].state, RCPT_FAILED);
    job_txn_free(&j);
}

static void test_temporary_and_expired(void)
{
    struct queue_msg m;
    struct job j;
    struct smtp_txn_result t;
    static const int codes[] = {250, 250, 250};
    /* 451 to the final dot with recipients left: no progress, all later. */
    job_init(&j, &m, 5);
    CHECK_INT(job_next_batch(&j, 3), 1);
    txn_result(&t, codes, 3, 451);
    CHECK_INT(job_record_txn(&j, &t, "451 4.3.0 later", 0), 0);
    for (size_t i = 0; i < 5; i++)
        CHECK_INT(j.rr[i].state, RCPT_LATER);
    CHECK_INT(job_progress(&j), 0);
    job_txn_free(&j);
    /* Expired: what is not delivered fails with 4.4.7. */
    job_init(&j, &m, 5);
    CHECK_INT(job_next_batch(&j, 3), 1);
    txn_result(&t, codes, 3, 451);
    CHECK_INT(job_record_txn(&j, &t, "451 4.3.0 later", 1), 0);
    for (size_t i = 0; i < 5; i++) {
        CHECK_INT(j.rr[i].state, RCPT_FAILED);
        CHECK_STR(j.rr[i].esc, "4.4.7");
    }
    job_txn_free(&j);
}

/* Local refusals (stage MAIL) fail every recipient of the batch. */
static void test_local_refusal(void)
{
    struct queue_msg m;
    struct job j;
    struct smtp_txn_result t;
    job_init(&j, &m, 3);
    CHECK_INT(job_next_batch(&j, 2), 1);
    memset(&t, 0, sizeof(t));
    t.stage = SMTP_STAGE_MAIL;
    t.reply.code = 554;
    snprintf(t.reply.esc, sizeof(t.reply.esc), "5.6.3");
    t.local = 1;
    CHECK_INT(job_record_txn(&j, &t, "554 5.6.3 no 8BITMIME", 0), 1);
    CHECK_INT(job_next_batch(&j, 2), 1);
    CHECK_INT(job_record_txn(&j, &t, "554 5.6.3 no 8BITMIME", 0), 0);
    for (size_t i = 0; i < 3; i++) {
        CHECK_INT(j.rr[i].state, RCPT_FAILED);
        CHECK_STR(j.rr[i].esc, "5.6.3");
        CHECK_STR(j.rr[i].diag, "554 5.6.3 no 8BITMIME");
    }
    job_txn_free(&j);
}

int main(void)
{
    RUN(test_batches_by_limit);
    RUN(test_452_new_transaction);
    RUN(test_552_old_too_many);
    RUN(test_temporary_and_expired);
    RUN(test_local_refusal);
    return check_finish();
}
