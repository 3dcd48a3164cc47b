/*
 * queue_admin.h - `tern queue`: look at and act on queued messages.
 *
 * SYNOPSIS
 *   tern queue -c FILE stats [--json]
 *   tern queue -c FILE show ID
 *   tern queue -c FILE retry [--domain D]
 *   tern queue -c FILE delete ID...
 *   tern queue -c FILE bounce ID...
 *
 * DESCRIPTION
 *   stats   counts by state (ready, leased, scheduled, bad), the outcome
 *           counters, the oldest message's age, and the same per
 *           destination domain. The per-domain part reads every queued id
 *           and its hash's domain and created fields, in pipelined chunks
 *           of ADMIN_CHUNK: O(messages) for the CLI, never a long Redis
 *           call.
 *   show    one message: partition, state, envelope, size, attempts, ages,
 *           next attempt or lease, last reply, bad_reason.
 *   retry   every scheduled message (or those of one domain) moves to
 *           ready now; one script call per ADMIN_CHUNK scheduled ids.
 *   delete  removes messages (one script call per partition for all the
 *           ids given); a `deleted` event is written for each.
 *   bounce  sends a DSN (RFC 3464, Action: failed) to each message's
 *           sender, unless it is the null sender, then removes it with a
 *           `failed` event.
 *   A message that is leased (being delivered) when deleted or bounced may
 *   still reach its receiver: the engine's ack is then ignored.
 *
 * EXIT STATUS
 *   0 done; 1 Redis unreachable or a runtime error; 2 bad usage;
 *   3 a message id was not found (the others given were still acted on).
 */
#ifndef TERN_QUEUE_QUEUE_ADMIN_H
#define TERN_QUEUE_QUEUE_ADMIN_H

#include <stdio.h>

#include "queue/queue.h"

#define ADMIN_CHUNK 1000    /* ids per pipelined read or script call */

#define ADMIN_EXIT_OK        0
#define ADMIN_EXIT_RUNTIME   1
#define ADMIN_EXIT_USAGE     2
#define ADMIN_EXIT_NOT_FOUND 3

/* queue_admin_main runs one `tern queue` subcommand: argv[0] is the
 * subcommand, the rest its arguments. hostname names the reporting MTA in
 * bounces. Output goes to out, errors to stderr. Returns an exit status. */
int queue_admin_main(const struct queue_config *qc, const char *redis_addr,
                     const char *hostname, int argc, char **argv, FILE *out);

#endif
