/*
 * fuzz_dsn.c - libFuzzer target for engine/dsn.c's report.
 *
 * The input is split at its first two NUL bytes into a recipient, a
 * receiver's reply and the original message (what a remote server and a
 * sender control); the sender is the recipient reversed. Invariants
 * checked (abort on violation):
 *   - every line of the report ends in CRLF (no bare CR or LF) and is at
 *     most DSN_LINE_MAX octets before it;
 *   - the report's boundary opens exactly three parts and closes once, on
 *     its last line, and no other line starts with it;
 *   - the report is bounded: its fixed text, the two addresses and replies
 *     at their caps, and the header section at DSN_HEADERS_MAX.
 * The original is copied to an exact-size allocation, so any read past
 * its end is caught by ASan.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/dsn.h"

#define FUZZ_QUEUE_ID "0000019ace6f6c00deadbeefcafef00d"

static size_t field(const uint8_t *d, size_t n, size_t *off, char *out, size_t cap)
{
    size_t k = 0;
    while (*off < n && d[*off] != 0) {
        if (k + 1 < cap)
            out[k++] = (char)d[*off];
        (*off)++;
    }
    if (*off < n)
        (*off)++;   /* the NUL */
    out[k] = '\0';
    return k;
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    static char rcpt[2048], reply[2048], sender[2048];
    size_t off = 0;
    size_t rl = field(d, n, &off, rcpt, sizeof(rcpt));
    field(d, n, &off, reply, sizeof(reply));
    for (size_t i = 0; i < rl; i++)
        sender[i] = rcpt[rl - 1 - i];
    sender[rl] = '\0';
    size_t olen = n - off;
    uint8_t *orig = malloc(olen ? olen : 1);
    if (orig == NULL)
        return 0;
    memcpy(orig, d + off, olen);

    struct dsn_rcpt r = {.rcpt = rcpt, .status = "5.1.1", .diagnostic = reply,
                         .action = (n > 0 && (d[0] & 1)) ? "delayed" : NULL};
    struct buf b;
    buf_init(&b, 0);
    if (!dsn_build(&b, "mx.tern.test", sender, FUZZ_QUEUE_ID, &r, 1, orig, olen, 1764400000))
        abort();
    const uint8_t *p = buf_peek(&b);
    size_t len = buf_used(&b);
    if (len > 8192 + 4 * DSN_ADDR_MAX + 2 * DSN_DIAG_MAX + DSN_HEADERS_MAX)
        abort();
    static const char delim[] = "--tern-dsn-" FUZZ_QUEUE_ID;
    size_t dl = sizeof(delim) - 1;
    int opens = 0, closes = 0;
    size_t i = 0;
    while (i < len) {
        size_t e = i;
        while (e < len && p[e] != '\n')
            e++;
        if (e == len || e == i || p[e - 1] != '\r')
            abort();                     /* a line without its CRLF */
        size_t ll = e - 1 - i;
        if (ll > DSN_LINE_MAX || memchr(p + i, '\r', ll) != NULL)
            abort();
        if (ll >= dl && memcmp(p + i, delim, dl) == 0) {
            if (closes)
                abort();                 /* anything after the close */
            if (ll == dl)
                opens++;
            else if (ll == dl + 2 && p[i + dl] == '-' && p[i + dl + 1] == '-')
                closes++;
            else
                abort();
        }
        i = e + 1;
    }
    if (opens != 3 || closes != 1 || len < dl + 4 ||
        memcmp(p + len - dl - 4, delim, dl) != 0)
        abort();
    buf_free(&b);
    free(orig);
    return 0;
}
