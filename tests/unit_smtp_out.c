/*
 * unit_smtp_out.c - the SMTP client's output references (smtp_client.h,
 * smtp_client_output): a long body run goes out from the message itself,
 * the bytes on the wire are exactly the encoder's, and no reference
 * outlives its message.
 *
 * Each test drives a client by hand (no TLS, PIPELINING; CHUNKING where
 * BDAT is wanted), collects every piece of output into one buffer and
 * compares it with what smtp_body_encode / the BDAT form give.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/buf.h"
#include "engine/smtp_body.h"
#include "engine/smtp_client.h"
#include "tests/check.h"

static const char *const rcpts1[] = {"b@y.test"};

struct out {
    uint8_t *p;
    size_t n, cap;
    size_t pieces, refs;        /* pieces seen; those inside a body */
    size_t max_piece;           /* consume at most this much at once */
};

static void out_add(struct out *o, const uint8_t *p, size_t n)
{
    if (o->n + n > o->cap) {
        o->cap = (o->n + n) * 2;
        o->p = realloc(o->p, o->cap);
        if (o->p == NULL)
            abort();
    }
    memcpy(o->p + o->n, p, n);
    o->n += n;
}

/* collect drains the client's output; a piece that points into one of the
 * bodies counts as a reference. */
static void collect(struct smtp_client *c, struct out *o, const uint8_t *const *bodies,
                    const size_t *lens, size_t nbodies)
{
    size_t n;
    const uint8_t *p;
    while ((p = smtp_client_output(c, &n)), n > 0) {
        if (o->max_piece && n > o->max_piece)
            n = o->max_piece;
        o->pieces++;
        for (size_t i = 0; i < nbodies; i++)
            if (p >= bodies[i] && p < bodies[i] + lens[i])
                o->refs++;
        out_add(o, p, n);
        smtp_client_output_consume(c, n);
    }
}

static void feed(struct smtp_client *c, const char *s)
{
    CHECK(smtp_client_feed(c, (const uint8_t *)s, strlen(s)));
}

/* next_kind: the next event's kind (NONE when nothing is due). */
static enum smtp_event_kind next_kind(struct smtp_client *c)
{
    return smtp_client_next(c).kind;
}

/* ready: greeting and EHLO with the given extensions, READY seen. */
static void ready(struct smtp_client *c, const char *ehlo)
{
    struct smtp_client_config cfg = {.helo_name = "client.test", .tls = SMTP_TLS_NONE,
                                     .pipeline_depth = 4};
    smtp_client_init(c, &cfg);
    feed(c, "220 mx.test ESMTP\r\n");
    CHECK_INT(next_kind(c), SMTP_EV_NONE);
    feed(c, ehlo);
    CHECK_INT(next_kind(c), SMTP_EV_READY);
}

/* body_make: a canonical body of about n bytes, lines of 70 with a line
 * starting with '.' every `dots` lines (0: none). */
static uint8_t *body_make(size_t n, size_t dots, size_t *len)
{
    uint8_t *b = malloc(n + 80);
    size_t i = 0, line = 0;
    while (i < n) {
        for (size_t k = 0; k < 70; k++)
            b[i + k] = (uint8_t)('a' + (line + k) % 26);
        if (dots && line % dots == dots - 1)
            b[i] = '.';
        b[i + 70] = '\r';
        b[i + 71] = '\n';
        i += 72;
        line++;
    }
    *len = i;
    return b;
}

static void expect_prefix_suffix(const struct out *o, const char *head, const struct buf *body,
                                 const char *tail)
{
    size_t h = strlen(head), t = strlen(tail);
    CHECK_INT(o->n, h + buf_used(body) + t);
    if (o->n != h + buf_used(body) + t)
        return;
    CHECK(memcmp(o->p, head, h) == 0);
    CHECK(memcmp(o->p + h, buf_peek(body), buf_used(body)) == 0);
    CHECK(memcmp(o->p + h + buf_used(body), tail, t) == 0);
}

/* DATA: a 100 KiB body with stuffed dots goes out as references between
 * the stuffed dots, and the wire bytes are the encoder's. */
static void test_data_refs(void)
{
    size_t len;
    uint8_t *body = body_make(100 * 1024, 300, &len);   /* a dot line every ~21 KiB */
    struct smtp_msg m = {"a@x.test", rcpts1, 1, body, len};
    struct smtp_client c;
    ready(&c, "250-mx.test\r\n250 PIPELINING\r\n");
    struct out o = {0};
    collect(&c, &o, NULL, NULL, 0);
    CHECK_INT(smtp_client_start_txn(&c, &m), 1);
    const uint8_t *bodies[] = {body};
    collect(&c, &o, bodies, &len, 1);
    feed(&c, "250 ok\r\n250 ok\r\n354 go\r\n");
    CHECK_INT(next_kind(&c), SMTP_EV_NONE);
    size_t before = o.n;
    collect(&c, &o, bodies, &len, 1);
    CHECK(o.refs >= 4);             /* the runs between the dots */
    struct buf want;
    buf_init(&want, 0);
    CHECK(smtp_body_encode(&want, body, len));
    CHECK_INT(o.n - before, buf_used(&want));
    CHECK(memcmp(o.p + before, buf_peek(&want), buf_used(&want)) == 0);
    feed(&c, "250 queued\r\n");
    CHECK_INT(next_kind(&c), SMTP_EV_TXN_DONE);
    CHECK_INT(next_kind(&c), SMTP_EV_READY);
    buf_free(&want);
    smtp_client_cleanup(&c);
    free(o.p);
    free(body);
}

/* BDAT: two pipelined 40 KiB messages, consumed 1000 bytes at a time: each
 * body is one reference, in order between the commands. */
static void test_bdat_refs_partial_consume(void)
{
    size_t len1, len2;
    uint8_t *b1 = body_make(40 * 1024, 0, &len1);
    uint8_t *b2 = body_make(40 * 1024, 7, &len2);
    struct smtp_msg m1 = {"a@x.test", rcpts1, 1, b1, len1};
    struct smtp_msg m2 = {"a@x.test", rcpts1, 1, b2, len2};
    struct smtp_client c;
    ready(&c, "250-mx.test\r\n250-PIPELINING\r\n250 CHUNKING\r\n");
    struct out o = {.max_piece = 1000};
    collect(&c, &o, NULL, NULL, 0);
    size_t start = o.n;
    CHECK_INT(smtp_client_start_txn(&c, &m1), 1);
    CHECK(smtp_client_room(&c));
    CHECK_INT(smtp_client_start_txn(&c, &m2), 1);
    const uint8_t *bodies[] = {b1, b2};
    size_t lens[] = {len1, len2};
    collect(&c, &o, bodies, lens, 2);
    CHECK(o.refs >= 2 * (len1 / 1000));   /* every body byte came from a body */
    char head[128];
    struct buf want;
    buf_init(&want, 0);
    snprintf(head, sizeof(head), "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nBDAT %zu LAST\r\n", len1);
    buf_append_str(&want, head);
    buf_append(&want, b1, len1);
    snprintf(head, sizeof(head), "RSET\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nBDAT %zu LAST\r\n", len2);
    buf_append_str(&want, head);
    buf_append(&want, b2, len2);
    CHECK_INT(o.n - start, buf_used(&want));
    CHECK(memcmp(o.p + start, buf_peek(&want), buf_used(&want)) == 0);
    feed(&c, "250 ok\r\n250 ok\r\n250 queued\r\n250 reset\r\n250 ok\r\n250 ok\r\n250 queued\r\n");
    CHECK_INT(next_kind(&c), SMTP_EV_TXN_DONE);
    CHECK_INT(next_kind(&c), SMTP_EV_READY);
    CHECK_INT(next_kind(&c), SMTP_EV_TXN_DONE);
    buf_free(&want);
    smtp_client_cleanup(&c);
    free(o.p);
    free(b1);
    free(b2);
}

/* A message whose caller frees (scribbles over) its body once the event
 * that ends it has come: what still goes out must be the original. */
struct freed_case {
    uint8_t *body, *orig;
    size_t len;
    struct smtp_msg m;
    struct smtp_client c;
    struct out o;
    size_t start;           /* where this transaction's output begins */
};

static void freed_begin(struct freed_case *f, size_t size, const char *ehlo)
{
    memset(f, 0, sizeof(*f));
    f->body = body_make(size, 0, &f->len);
    f->orig = malloc(f->len);
    memcpy(f->orig, f->body, f->len);
    f->m = (struct smtp_msg){"a@x.test", rcpts1, 1, f->body, f->len};
    ready(&f->c, ehlo);
    collect(&f->c, &f->o, NULL, NULL, 0);
    f->start = f->o.n;
}

/* freed_end: the body is freed now; the rest of the output is drained and
 * must be head, then the original body (its DATA form when dotted), nothing
 * else. */
static void freed_end(struct freed_case *f, const char *head, int dotted)
{
    memset(f->body, 'X', f->len);
    const uint8_t *bodies[] = {f->body};
    collect(&f->c, &f->o, bodies, &f->len, 1);
    CHECK_INT(f->o.refs, 0);
    struct buf want;
    buf_init(&want, 0);
    if (dotted)
        CHECK(smtp_body_encode(&want, f->orig, f->len));
    else
        buf_append(&want, f->orig, f->len);
    expect_prefix_suffix(&(struct out){.p = f->o.p + f->start, .n = f->o.n - f->start}, head, &want, "");
    buf_free(&want);
    smtp_client_cleanup(&f->c);
    free(f->o.p);
    free(f->orig);
    free(f->body);
}

/* A receiver that gives its final reply right behind the 354, before the
 * body went out: TXN_DONE comes only after the unsent body was copied, so
 * the caller may free the message at TXN_DONE and still sends the right
 * bytes. */
static void test_early_reply_copies(void)
{
    struct freed_case f;
    freed_begin(&f, 64 * 1024, "250-mx.test\r\n250 PIPELINING\r\n");
    CHECK_INT(smtp_client_start_txn(&f.c, &f.m), 1);
    collect(&f.c, &f.o, NULL, NULL, 0);
    f.start = f.o.n;
    feed(&f.c, "250 ok\r\n250 ok\r\n354 go\r\n250 queued\r\n");
    CHECK_INT(next_kind(&f.c), SMTP_EV_TXN_DONE);
    freed_end(&f, "", 1);
}

/* ERROR (here a 421 right behind BDAT's group, before the output was
 * sent) copies every unsent reference: the caller requeues the messages
 * and may free them, then sends what is queued (QUIT is not: 421). */
static void test_error_copies(void)
{
    struct freed_case f;
    freed_begin(&f, 32 * 1024, "250-mx.test\r\n250-PIPELINING\r\n250 CHUNKING\r\n");
    CHECK_INT(smtp_client_start_txn(&f.c, &f.m), 1);
    feed(&f.c, "421 4.3.2 going down\r\n");
    enum smtp_event_kind k;
    while ((k = next_kind(&f.c)) != SMTP_EV_ERROR && k != SMTP_EV_NONE)
        ;
    CHECK_INT(k, SMTP_EV_ERROR);
    char head[128];
    snprintf(head, sizeof(head), "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nBDAT %zu LAST\r\n", f.len);
    freed_end(&f, head, 0);
}

/* A body just under SMTP_OUT_REF_MIN is copied: small pieces would only
 * make small TLS records. */
static void test_short_body_copied(void)
{
    size_t len;
    uint8_t *body = body_make(SMTP_OUT_REF_MIN - 200, 0, &len);
    CHECK(len < SMTP_OUT_REF_MIN);
    struct smtp_msg m = {"a@x.test", rcpts1, 1, body, len};
    struct smtp_client c;
    ready(&c, "250-mx.test\r\n250-PIPELINING\r\n250 CHUNKING\r\n");
    struct out o = {0};
    CHECK_INT(smtp_client_start_txn(&c, &m), 1);
    const uint8_t *bodies[] = {body};
    collect(&c, &o, bodies, &len, 1);
    CHECK_INT(o.refs, 0);
    CHECK_INT(o.pieces, 1);
    smtp_client_cleanup(&c);
    free(o.p);
    free(body);
}

int main(void)
{
    RUN(test_data_refs);
    RUN(test_bdat_refs_partial_consume);
    RUN(test_early_reply_copies);
    RUN(test_error_copies);
    RUN(test_short_body_copied);
    return check_finish();
}
