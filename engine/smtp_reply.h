/*
 * smtp_reply.h - bounded parser for SMTP replies (RFC 5321 section 4.2,
 * enhanced status codes RFC 3463 / RFC 2034).
 *
 * DESCRIPTION
 *   smtp_reply_parse() looks at the start of a receive buffer and either
 *   finds one complete reply (possibly multi-line), reports that more input
 *   is needed, or rejects the bytes as malformed. It is stateless: call it
 *   again from the same start once more bytes arrived. The input is never
 *   modified and nothing outside [p, p+len) is read.
 *
 *   Grammar enforced:
 *     line  = code ( "-" / " " ) text CRLF  |  code CRLF
 *     code  = 3 digits, first 2..5, second 0..5, third 0..9
 *   Every line of a multi-line reply carries the same code. A line ending
 *   in a bare LF is accepted (lenient receivers exist) but a bare CR inside
 *   a line is not. When the text of the first line starts with an enhanced
 *   status code "c.x.y" (c = 2, 4 or 5; x up to 3 digits; y up to 3 digits)
 *   whose class c equals the reply's first digit, it is stored in `esc`;
 *   a mismatching class is not an error, the esc is simply not recorded.
 *
 * LIMITS
 *   SMTP_REPLY_LINE_MAX bytes per line (including CRLF), at most
 *   SMTP_REPLY_LINES_MAX lines per reply; exceeding either is an error even
 *   before the reply is complete. The text kept in struct smtp_reply is
 *   truncated at SMTP_REPLY_TEXT_MAX-1 bytes (the parse still succeeds).
 *
 * OWNERSHIP
 *   struct smtp_reply is a plain value; the caller owns it.
 */
#ifndef TERN_ENGINE_SMTP_REPLY_H
#define TERN_ENGINE_SMTP_REPLY_H

#include <stddef.h>
#include <stdint.h>

#define SMTP_REPLY_LINE_MAX   2048
#define SMTP_REPLY_LINES_MAX  128
#define SMTP_REPLY_TEXT_MAX   1024
#define SMTP_ESC_MAX          16

struct smtp_reply {
    int code;                       /* 200..559 */
    char esc[SMTP_ESC_MAX];         /* "2.1.0" or "" */
    int nlines;
    /* Text of every line after "code-" / "code ", lines joined with '\n',
     * NUL-terminated, truncated to fit. */
    char text[SMTP_REPLY_TEXT_MAX];
    size_t text_len;
    int truncated;                  /* text was cut to fit: its last line
                                       may be partial, later lines lost */
};

enum smtp_reply_status {
    SMTP_REPLY_NEED_MORE,   /* no complete reply yet */
    SMTP_REPLY_OK,          /* *out filled, *consumed bytes used */
    SMTP_REPLY_ERR,         /* malformed; *err names the problem */
};

/* smtp_reply_parse parses one reply from the start of p[0..len). On
 * SMTP_REPLY_OK it fills *out and sets *consumed. On SMTP_REPLY_ERR it sets
 * *err to a static description ("bad reply code", "line too long",
 * "too many lines", "code mismatch in multi-line reply", "bare CR"). */
enum smtp_reply_status smtp_reply_parse(const uint8_t *p, size_t len,
                                        struct smtp_reply *out,
                                        size_t *consumed, const char **err);

/* smtp_reply_line iterates the text lines of a parsed reply (used for EHLO
 * keywords): line i (0-based) is the text of the i-th reply line. It
 * returns a pointer into r->text (not NUL-terminated at the line's end) and
 * sets *n to the line's length, or returns NULL past the last line kept
 * (i >= nlines, or a line lost to truncation). */
const char *smtp_reply_line(const struct smtp_reply *r, int i, size_t *n);

/* smtp_reply_class returns code / 100 (2, 3, 4 or 5). */
static inline int smtp_reply_class(const struct smtp_reply *r) { return r->code / 100; }

#endif
