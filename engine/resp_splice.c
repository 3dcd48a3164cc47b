/* resp_splice.c - long bulk strings taken out of a RESP stream; see resp_splice.h. */
#include "engine/resp_splice.h"

#include <stdlib.h>
#include <string.h>

void resp_splice_init(struct resp_splice *s, size_t min_take)
{
    memset(s, 0, sizeof(*s));
    s->state = RESP_SPLICE_ITEM;
    s->min_take = min_take ? min_take : 1;
}

void resp_splice_reset(struct resp_splice *s)
{
    free(s->take);
    resp_splice_init(s, s->min_take);
}

/* A length line, its type byte to LF inclusive: "-1" (nil) or 1..10
 * digits without a leading zero, not over max. Sets *len (-1 for nil). */
static int parse_len(const char *line, size_t n, unsigned long long max, long long *len)
{
    if (n < 4 || line[n - 2] != '\r' || line[n - 1] != '\n')
        return 0;
    const char *d = line + 1;
    size_t nd = n - 3;
    if (nd == 2 && d[0] == '-' && d[1] == '1') {
        *len = -1;
        return 1;
    }
    if (nd > 10 || (nd > 1 && d[0] == '0'))
        return 0;   /* Redis writes no leading zeros */
    unsigned long long v = 0;
    for (size_t i = 0; i < nd; i++) {
        if (d[i] < '0' || d[i] > '9')
            return 0;
        v = v * 10 + (unsigned long long)(d[i] - '0');
    }
    if (v > max)
        return 0;
    *len = (long long)v;
    return 1;
}

static int pass_range(const struct resp_splice_sink *out, const char *a, const char *b)
{
    return b > a ? out->pass(out->ctx, a, (size_t)(b - a)) : 1;
}

/* The length line is complete in s->line. held: how many of its bytes
 * came in earlier inputs (not passed yet; the rest lies at the start of
 * this input's run). *run / line_at: see resp_splice_feed. */
static int len_line_done(struct resp_splice *s, const struct resp_splice_sink *out,
                         size_t held, const char **run, const char *line_at, const char *p)
{
    int array = s->line[0] == '*';
    long long len;
    if (!parse_len(s->line, s->line_len, array ? RESP_SPLICE_ARRAY_MAX : RESP_SPLICE_BULK_MAX, &len)) {
        s->err = array ? "array count malformed or over RESP_SPLICE_ARRAY_MAX"
                       : "bulk string length malformed or over RESP_SPLICE_BULK_MAX";
        return -1;
    }
    if (array || len < 0 || (unsigned long long)len < s->min_take) {
        /* Passed on like any item: the held bytes first, then the run. */
        if (held > 0) {
            int rc = out->pass(out->ctx, s->line, held);
            if (rc != 1)
                return rc;
        }
        s->pass_left = array || len < 0 ? 0 : (uint64_t)len + 2;
        s->state = s->pass_left ? RESP_SPLICE_BULK_PASS : RESP_SPLICE_ITEM;
        return 1;
    }
    /* Taken: what came before the line goes on; the line goes nowhere. */
    int rc = pass_range(out, *run, line_at);
    if (rc != 1)
        return rc;
    s->take = malloc((size_t)len + 1);
    if (s->take == NULL) {
        s->err = "out of memory for a bulk string";
        return -1;
    }
    s->take_len = (size_t)len;
    s->take_got = 0;
    s->state = len > 0 ? RESP_SPLICE_TAKE : RESP_SPLICE_TAKE_CR;
    *run = p;
    return 1;
}

int resp_splice_feed(struct resp_splice *s, const char *p, size_t n,
                     const struct resp_splice_sink *out)
{
    const char *end = p + n;
    /* run: the first byte of this input not passed on yet. line_at: where
     * the length line being read began in this input (its start, if the
     * line began in an earlier one; held is then its bytes from there). */
    const char *run = p, *line_at = p;
    size_t held = s->state == RESP_SPLICE_LEN_LINE ? s->line_len : 0;
    int rc;
    while (p < end) {
        switch (s->state) {
        case RESP_SPLICE_ITEM:
            if (*p == '$' || *p == '*') {
                s->state = RESP_SPLICE_LEN_LINE;
                s->line_len = 0;
                line_at = p;
                held = 0;
            } else if (*p == '+' || *p == '-' || *p == ':') {
                s->state = RESP_SPLICE_LINE;
                s->line_cr = 0;
                p++;
            } else {
                s->state = RESP_SPLICE_OPAQUE;
            }
            break;
        case RESP_SPLICE_LINE: {
            /* Ends at CRLF, as the reader's lines do: a bare LF is text. */
            const char *lf = memchr(p, '\n', (size_t)(end - p));
            if (lf == NULL) {
                s->line_cr = end[-1] == '\r';
                p = end;
                break;
            }
            int crlf = lf > p ? lf[-1] == '\r' : s->line_cr;
            s->line_cr = 0;
            p = lf + 1;
            if (crlf)
                s->state = RESP_SPLICE_ITEM;
            break;
        }
        case RESP_SPLICE_LEN_LINE:
            while (p < end && s->line_len < RESP_SPLICE_LINE_MAX) {
                char c = *p++;
                s->line[s->line_len++] = c;
                if (c == '\n')
                    break;
            }
            if (s->line[s->line_len - 1] != '\n') {
                if (s->line_len >= RESP_SPLICE_LINE_MAX) {
                    s->err = "length line longer than RESP_SPLICE_LINE_MAX";
                    return -1;
                }
                break;   /* the input ended inside the line */
            }
            rc = len_line_done(s, out, held, &run, line_at, p);
            if (rc != 1)
                return rc;
            held = 0;
            break;
        case RESP_SPLICE_BULK_PASS: {
            size_t k = (size_t)(end - p) < s->pass_left ? (size_t)(end - p) : (size_t)s->pass_left;
            p += k;
            s->pass_left -= k;
            if (s->pass_left == 0)
                s->state = RESP_SPLICE_ITEM;
            break;
        }
        case RESP_SPLICE_TAKE: {
            size_t want = s->take_len - s->take_got;
            size_t k = (size_t)(end - p) < want ? (size_t)(end - p) : want;
            memcpy(s->take + s->take_got, p, k);
            s->take_got += k;
            p += k;
            if (s->take_got == s->take_len)
                s->state = RESP_SPLICE_TAKE_CR;
            break;
        }
        case RESP_SPLICE_TAKE_CR:
            if (*p++ != '\r') {
                s->err = "bulk string not followed by CRLF";
                return -1;
            }
            s->state = RESP_SPLICE_TAKE_LF;
            break;
        case RESP_SPLICE_TAKE_LF: {
            if (*p++ != '\n') {
                s->err = "bulk string not followed by CRLF";
                return -1;
            }
            char *payload = s->take;
            size_t len = s->take_len;
            payload[len] = '\0';
            s->take = NULL;
            s->state = RESP_SPLICE_ITEM;
            run = p;
            rc = out->took(out->ctx, payload, len);
            if (rc != 1)
                return rc;
            break;
        }
        case RESP_SPLICE_OPAQUE:
            p = end;
            break;
        }
    }
    switch (s->state) {
    case RESP_SPLICE_LEN_LINE:
        return pass_range(out, run, line_at);   /* the line's bytes wait in s->line */
    case RESP_SPLICE_TAKE:
    case RESP_SPLICE_TAKE_CR:
    case RESP_SPLICE_TAKE_LF:
        return 1;                               /* nothing after the line was passable */
    default:
        return pass_range(out, run, end);
    }
}

int resp_splice_direct(const struct resp_splice *s, void **dst, size_t *len)
{
    if (s->state != RESP_SPLICE_TAKE || s->take_len - s->take_got < RESP_SPLICE_DIRECT_MIN)
        return 0;
    *dst = s->take + s->take_got;
    *len = s->take_len - s->take_got;
    return 1;
}

void resp_splice_direct_done(struct resp_splice *s, size_t got)
{
    size_t want = s->take_len - s->take_got;
    s->take_got += got < want ? got : want;
    if (s->take_got == s->take_len)
        s->state = RESP_SPLICE_TAKE_CR;
}
