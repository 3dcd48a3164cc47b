/*
 * fuzz_smtp_reply.c - libFuzzer target for engine/smtp_reply.c.
 *
 * Parses replies back to back over the input, as the client does with its
 * receive buffer, and checks the invariants the rest of tern relies on:
 * consumed within bounds and non-zero, code in 200..559, text
 * NUL-terminated at text_len, esc empty or of the reply's class, every
 * line reachable through smtp_reply_line inside text. Each complete reply
 * is re-parsed from a copy of exactly its bytes (same result: the parse
 * must not depend on what follows), and every proper prefix of it must
 * need more input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/smtp_reply.h"

static void fuzz_check_reply(const struct smtp_reply *r, size_t consumed, size_t len)
{
    if (consumed == 0 || consumed > len)
        abort();
    if (r->code < 200 || r->code > 559 || (r->code / 10) % 10 > 5)
        abort();
    if (r->nlines < 1 || r->nlines > SMTP_REPLY_LINES_MAX)
        abort();
    if (r->text_len >= SMTP_REPLY_TEXT_MAX || r->text[r->text_len] != '\0')
        abort();
    size_t el = strnlen(r->esc, SMTP_ESC_MAX);
    if (el == SMTP_ESC_MAX)
        abort();
    if (el > 0 && r->esc[0] - '0' != r->code / 100)
        abort();
    for (int i = 0; i < r->nlines; i++) {
        size_t n = 0;
        const char *l = smtp_reply_line(r, i, &n);
        if (l == NULL) {
            if (!r->truncated)
                abort();            /* only truncation loses lines */
            break;
        }
        if (l < r->text || l + n > r->text + r->text_len)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;
    while (off < size) {
        struct smtp_reply r, r2;
        size_t consumed = 0, consumed2 = 0;
        const char *err = NULL;
        enum smtp_reply_status st =
            smtp_reply_parse(data + off, size - off, &r, &consumed, &err);
        if (st == SMTP_REPLY_ERR) {
            if (err == NULL)
                abort();
            return 0;
        }
        if (st == SMTP_REPLY_NEED_MORE)
            return 0;
        if (st != SMTP_REPLY_OK)
            abort();
        fuzz_check_reply(&r, consumed, size - off);

        /* Exactly the reply's bytes, in their own allocation so ASan
         * catches any read past them. */
        uint8_t *copy = malloc(consumed);
        if (copy == NULL)
            return 0;
        memcpy(copy, data + off, consumed);
        if (smtp_reply_parse(copy, consumed, &r2, &consumed2, &err) != SMTP_REPLY_OK ||
            consumed2 != consumed || r2.code != r.code || r2.nlines != r.nlines ||
            r2.text_len != r.text_len || memcmp(r2.text, r.text, r.text_len) != 0 ||
            strcmp(r2.esc, r.esc) != 0)
            abort();
        /* Proper prefixes (a sample, to keep the target fast). */
        size_t step = consumed / 16 + 1;
        for (size_t k = 0; k < consumed; k += step)
            if (smtp_reply_parse(copy, k, &r2, &consumed2, &err) != SMTP_REPLY_NEED_MORE)
                abort();
        free(copy);
        off += consumed;
    }
    return 0;
}
