/* dsn.c - RFC 3464 non-delivery reports; see dsn.h. */
#include "engine/dsn.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

/* Copy a reply into a header value: no CR/LF, bounded. */
static void append_clean(struct buf *out, const char *s, size_t max)
{
    for (size_t i = 0; s[i] && i < max; i++) {
        char ch = s[i];
        if (ch == '\r' || ch == '\n')
            ch = ' ';
        buf_append(out, &ch, 1);
    }
}

/* The original's header section (up to its first empty line), one line
 * at a time: each ends in CRLF (a bare LF ends a line too, a bare CR
 * becomes a space), a line longer than DSN_LINE_MAX is cut there (the
 * report would otherwise carry a line receivers may refuse, RFC 5322
 * 2.1.1), a line that could read as one of the report's MIME boundaries
 * is indented, and the section stops at the last whole line within
 * DSN_HEADERS_MAX bytes. */
static void append_headers(struct buf *out, const uint8_t *p, size_t n, const char *boundary)
{
    size_t blen = strlen(boundary), used = 0, i = 0;
    while (i < n) {
        size_t end = i;
        while (end < n && p[end] != '\n')
            end++;
        size_t len = end - i;
        if (len > 0 && p[end - 1] == '\r' && end < n)
            len--;                          /* the CR of CRLF */
        if (len == 0)
            return;                         /* the end of the header section */
        if (len > DSN_LINE_MAX)
            len = DSN_LINE_MAX;
        int guard = len >= 2 + blen && p[i] == '-' && p[i + 1] == '-' &&
                    memcmp(p + i + 2, boundary, blen) == 0;
        if (used + (size_t)guard + len + 2 > DSN_HEADERS_MAX)
            return;
        if (guard)
            buf_append(out, " ", 1);
        uint8_t *dst = buf_reserve(out, len);
        if (dst == NULL)
            return;
        for (size_t k = 0; k < len; k++)
            dst[k] = p[i + k] == '\r' ? ' ' : p[i + k];
        buf_commit(out, len);
        buf_append(out, "\r\n", 2);
        used += (size_t)guard + len + 2;
        i = end + 1;
    }
}

int dsn_build(struct buf *out, const char *reporting_mta, const char *sender,
              const char *queue_id, const struct dsn_rcpt *r, size_t n,
              const uint8_t *orig, size_t orig_len, int64_t now_s)
{
    char date[64];
    time_t t = (time_t)now_s;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
    char boundary[96];
    snprintf(boundary, sizeof(boundary), "tern-dsn-%s", queue_id);

    buf_append_str(out, "From: Mail Delivery System <MAILER-DAEMON@");
    buf_append_str(out, reporting_mta);
    buf_append_str(out, ">\r\nTo: <");
    append_clean(out, sender, DSN_ADDR_MAX);
    int delayed = n > 0 && r[0].action && strcmp(r[0].action, "delayed") == 0;
    buf_append_str(out, delayed ? ">\r\nSubject: Delayed Mail (still being retried)\r\nDate: "
                                : ">\r\nSubject: Undelivered Mail Returned to Sender\r\nDate: ");
    buf_append_str(out, date);
    buf_append_str(out, "\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
                        "Content-Type: multipart/report; report-type=delivery-status;\r\n"
                        "\tboundary=\"");
    buf_append_str(out, boundary);
    buf_append_str(out, "\"\r\n\r\nThis is a MIME-encapsulated message.\r\n\r\n--");
    buf_append_str(out, boundary);
    buf_append_str(out, "\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n");
    buf_append_str(out, delayed ? "Your message has not been delivered yet to the following recipients.\r\n"
                                  "Delivery is still being attempted; you need not resend it.\r\n\r\n"
                                : "Your message could not be delivered to the following recipients:\r\n\r\n");
    for (size_t i = 0; i < n; i++) {
        /* the reply on a line of its own: both at their longest would
         * make one line longer than DSN_LINE_MAX */
        buf_append_str(out, "  <");
        append_clean(out, r[i].rcpt, DSN_ADDR_MAX);
        buf_append_str(out, ">:\r\n    ");
        append_clean(out, r[i].diagnostic, DSN_DIAG_MAX);
        buf_append_str(out, "\r\n");
    }
    buf_append_str(out, "\r\n--");
    buf_append_str(out, boundary);
    buf_append_str(out, "\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; ");
    buf_append_str(out, reporting_mta);
    buf_append_str(out, "\r\nX-Tern-Queue-ID: ");
    buf_append_str(out, queue_id);
    buf_append_str(out, "\r\nArrival-Date: ");
    buf_append_str(out, date);
    buf_append_str(out, "\r\n");
    for (size_t i = 0; i < n; i++) {
        buf_append_str(out, "\r\nFinal-Recipient: rfc822; ");
        append_clean(out, r[i].rcpt, DSN_ADDR_MAX);
        buf_append_str(out, "\r\nAction: ");
        buf_append_str(out, delayed ? "delayed" : "failed");
        buf_append_str(out, "\r\nStatus: ");
        append_clean(out, r[i].status && r[i].status[0] ? r[i].status : delayed ? "4.0.0" : "5.0.0", 16);
        buf_append_str(out, "\r\nDiagnostic-Code: smtp; ");
        append_clean(out, r[i].diagnostic, DSN_DIAG_MAX);
        buf_append_str(out, "\r\n");
    }
    buf_append_str(out, "\r\n--");
    buf_append_str(out, boundary);
    buf_append_str(out, "\r\nContent-Type: text/rfc822-headers\r\n\r\n");
    append_headers(out, orig, orig_len, boundary);
    buf_append_str(out, "\r\n--");
    buf_append_str(out, boundary);
    buf_append_str(out, "--\r\n");
    return !out->err;
}

void dsn_report_id(char *id, size_t cap, const char *msg_id, int64_t created_ms, int attempt,
                   int delayed)
{
    uint64_t h = 0xcbf29ce484222325ULL;   /* FNV-1a, 64-bit */
    const uint64_t prime = 0x100000001b3ULL;
    for (const unsigned char *p = (const unsigned char *)msg_id; *p; p++)
        h = (h ^ *p) * prime;
    /* A separator no id byte can be (ids are printable ASCII), then the
     * attempt's four bytes and the kind. */
    uint8_t tail[6] = {0xff, (uint8_t)attempt, (uint8_t)(attempt >> 8), (uint8_t)(attempt >> 16),
                       (uint8_t)(attempt >> 24), (uint8_t)(delayed ? 'd' : 'f')};
    for (size_t i = 0; i < sizeof(tail); i++)
        h = (h ^ tail[i]) * prime;
    snprintf(id, cap, "%016llx%016llx", (unsigned long long)(created_ms < 0 ? 0 : created_ms),
             (unsigned long long)h);
}
