/*
 * dsn.h - build a non-delivery report (RFC 3464 multipart/report) for
 * recipients that failed permanently, addressed to the envelope sender.
 *
 * DESCRIPTION
 *   The report has three parts: a human-readable explanation, the
 *   message/delivery-status part (one per-recipient block with Action:
 *   failed or delayed, Status and Diagnostic-Code), and the original message's header
 *   (text/rfc822-headers, whole lines up to DSN_HEADERS_MAX bytes). Every
 *   line of the report ends in CRLF and is at most DSN_LINE_MAX octets,
 *   whatever the original and the replies held. The engine
 *   enqueues it with the null reverse path "<>", so a bounce never bounces.
 *
 * OWNERSHIP
 *   Everything is appended to the caller's buffer; check out->err once.
 */
#ifndef TERN_ENGINE_DSN_H
#define TERN_ENGINE_DSN_H

#include <stddef.h>
#include <stdint.h>

#include "engine/buf.h"

#define DSN_HEADERS_MAX (16 * 1024)  /* the original's header section, at most */
#define DSN_LINE_MAX    998          /* octets of a line before its CRLF (RFC 5322) */
#define DSN_ADDR_MAX    512          /* an address as the report shows it */
#define DSN_DIAG_MAX    900          /* a receiver's reply as the report shows it */

struct dsn_rcpt {
    const char *rcpt;
    const char *status;      /* enhanced status, e.g. "5.1.1" */
    const char *diagnostic;  /* the receiver's reply, one line */
    const char *action;      /* NULL: "failed"; or "delayed" (a delay warning:
                                tern keeps trying). A report is all one or the
                                other: the first recipient's picks the text */
};

/* dsn_report_id writes into id[cap] (cap >= 33) the queue id of the report
 * that attempt `attempt` of message msg_id (created at created_ms) sends:
 * 32 hex digits like queue_new_id's, the first 16 the message's creation
 * time, the rest a 64-bit FNV-1a hash of (msg_id, attempt, delayed). The
 * same report of the same attempt always gets the same id, so an enqueue
 * repeated after its ack was lost (NOSCRIPT, an engine killed before the
 * ack) finds its report queued already, or adopts the body it stored,
 * instead of queuing a second report or leaving that body behind. */
void dsn_report_id(char *id, size_t cap, const char *msg_id, int64_t created_ms, int attempt,
                   int delayed);

/* dsn_build appends the report. Returns 1, or 0 if out->err is set. */
int dsn_build(struct buf *out, const char *reporting_mta, const char *sender,
              const char *queue_id, const struct dsn_rcpt *r, size_t n,
              const uint8_t *orig, size_t orig_len, int64_t now_s);

#endif
