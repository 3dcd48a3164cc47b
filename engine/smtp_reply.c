/*
 * smtp_reply.c - bounded SMTP reply parser; see smtp_reply.h.
 *
 * Two passes over the bytes: the first validates line by line and finds
 * where the reply ends without writing anything, so that NEED_MORE and ERR
 * leave *out untouched; the second, run only on success, copies the text.
 * Both passes look only at complete lines inside [p, p+len).
 */
#include "engine/smtp_reply.h"

#include <string.h>

#include "engine/span.h"

/* One line of a reply, terminator removed. */
struct reply_line {
    int code;
    int final;          /* "code SP text" or bare "code": last line */
    struct span text;   /* after "code-" / "code " */
    size_t raw_len;     /* bytes including the line terminator */
};

/*
 * RFC 5321 4.2: Reply-code = %x32-35 %x30-35 %x30-39. We enforce the
 * second digit's 0..5 range too: a server sending 260 is broken, and
 * rejecting it keeps "code in 200..559" a checkable invariant.
 */
static int parse_code(struct span *s, int *code)
{
    struct span d;
    struct span save = *s;
    if (!span_get_bytes(s, &d, 3))
        return 0;
    if (d.p[0] < '2' || d.p[0] > '5' || d.p[1] < '0' || d.p[1] > '5' ||
        d.p[2] < '0' || d.p[2] > '9') {
        *s = save;
        return 0;
    }
    *code = (d.p[0] - '0') * 100 + (d.p[1] - '0') * 10 + (d.p[2] - '0');
    return 1;
}

/* next_line looks for one complete line at the front of *in. Returns
 * SMTP_REPLY_OK with *l filled and *in advanced, NEED_MORE, or ERR. */
static enum smtp_reply_status next_line(struct span *in, struct reply_line *l,
                                        const char **err)
{
    /* Only search as far as a legal line may reach: a peer streaming
     * megabytes without LF is rejected at SMTP_REPLY_LINE_MAX bytes. */
    size_t window = in->len < SMTP_REPLY_LINE_MAX ? in->len : SMTP_REPLY_LINE_MAX;
    struct span win, content;
    span_init(&win, in->p, window);
    if (!span_get_until(&win, &content, '\n')) {
        if (in->len >= SMTP_REPLY_LINE_MAX) {
            *err = "line too long";
            return SMTP_REPLY_ERR;
        }
        return SMTP_REPLY_NEED_MORE;
    }
    l->raw_len = content.len + 1;
    /* CRLF is the terminator; a lone LF is tolerated (lenient servers). */
    if (content.len > 0 && content.p[content.len - 1] == '\r')
        content.len--;

    if (!parse_code(&content, &l->code)) {
        *err = "bad reply code";
        return SMTP_REPLY_ERR;
    }
    uint8_t sep;
    if (!span_get_u8(&content, &sep)) {
        l->final = 1;                       /* "250" CRLF */
    } else if (sep == ' ' || sep == '-') {
        l->final = sep == ' ';
    } else {
        *err = "bad reply code";            /* "2500", "250X" */
        return SMTP_REPLY_ERR;
    }
    /* A CR not followed by LF could make a log or a later parser see a
     * different line structure than we did. */
    if (content.len > 0 && memchr(content.p, '\r', content.len) != NULL) {
        *err = "bare CR";
        return SMTP_REPLY_ERR;
    }
    l->text = content;
    span_skip(in, l->raw_len);
    return SMTP_REPLY_OK;
}

/* Enhanced status code at the start of the first line's text (RFC 3463):
 * class "." subject "." detail, 1-3 digits each, then SP or end of line.
 * Recorded only when the class equals the reply's first digit. */
static void parse_esc(struct span text, int code, char esc[SMTP_ESC_MAX])
{
    struct span s = text, subject, detail;
    uint8_t cls, dot1, dot2, after;
    esc[0] = '\0';
    if (!span_get_u8(&s, &cls) || (cls != '2' && cls != '4' && cls != '5'))
        return;
    if (cls - '0' != code / 100)
        return;
    if (!span_get_u8(&s, &dot1) || dot1 != '.' ||
        !span_get_digits(&s, &subject, 1, 3) ||
        !span_get_u8(&s, &dot2) || dot2 != '.' ||
        !span_get_digits(&s, &detail, 1, 3))
        return;
    if (span_peek_u8(&s, &after) && after != ' ')
        return;
    size_t n = text.len - s.len;          /* at most 9 bytes: 5.999.999 */
    _Static_assert(SMTP_ESC_MAX > 9, "esc buffer too small");
    memcpy(esc, text.p, n);
    esc[n] = '\0';
}

/* Append src to the reply text, truncating at SMTP_REPLY_TEXT_MAX-1. */
static void text_append(struct smtp_reply *out, const uint8_t *src, size_t n)
{
    size_t room = SMTP_REPLY_TEXT_MAX - 1 - out->text_len;
    if (n > room) {
        n = room;
        out->truncated = 1;
    }
    if (n > 0)
        memcpy(out->text + out->text_len, src, n);
    out->text_len += n;
    out->text[out->text_len] = '\0';
}

enum smtp_reply_status smtp_reply_parse(const uint8_t *p, size_t len,
                                        struct smtp_reply *out,
                                        size_t *consumed, const char **err)
{
    struct span in;
    struct reply_line l;
    int code = 0, nlines = 0;
    enum smtp_reply_status st;

    /* Pass 1: validate and find the end of the reply. */
    span_init(&in, p, len);
    for (;;) {
        st = next_line(&in, &l, err);
        if (st != SMTP_REPLY_OK)
            return st;
        if (nlines > 0 && l.code != code) {
            *err = "code mismatch in multi-line reply";
            return SMTP_REPLY_ERR;
        }
        code = l.code;
        nlines++;
        if (l.final)
            break;
        /* A continuation as line LINES_MAX means at least one more line. */
        if (nlines >= SMTP_REPLY_LINES_MAX) {
            *err = "too many lines";
            return SMTP_REPLY_ERR;
        }
    }
    size_t total = len - in.len;

    /* Pass 2: the reply is valid; copy it out. */
    out->code = code;
    out->nlines = nlines;
    out->text_len = 0;
    out->text[0] = '\0';
    out->truncated = 0;
    out->esc[0] = '\0';
    span_init(&in, p, total);
    for (int i = 0; i < nlines; i++) {
        const char *unused;
        st = next_line(&in, &l, &unused);
        (void)st;   /* validated in pass 1 */
        if (i == 0)
            parse_esc(l.text, code, out->esc);
        else
            text_append(out, (const uint8_t *)"\n", 1);
        text_append(out, l.text.p, l.text.len);
    }
    *consumed = total;
    return SMTP_REPLY_OK;
}

const char *smtp_reply_line(const struct smtp_reply *r, int i, size_t *n)
{
    if (i < 0 || i >= r->nlines)
        return NULL;
    size_t start = 0;
    for (int k = 0; k < i; k++) {
        const char *nl = memchr(r->text + start, '\n', r->text_len - start);
        if (nl == NULL)
            return NULL;                    /* lost to truncation */
        start = (size_t)(nl - r->text) + 1;
    }
    const char *nl = memchr(r->text + start, '\n', r->text_len - start);
    size_t end = nl ? (size_t)(nl - r->text) : r->text_len;
    *n = end - start;
    return r->text + start;
}
