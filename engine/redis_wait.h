/*
 * redis_wait.h - `tern run` at start: wait for Redis instead of refusing
 * to start.
 *
 * DESCRIPTION
 *   An engine started before its Redis (boot order, a Redis restart in
 *   progress, Redis still loading its data set and answering -LOADING)
 *   waits: queue_open() (connect, SCRIPT LOAD) is retried with the
 *   workers' reconnect backoff (REDIS_BACKOFF_MIN_MS doubling up to
 *   REDIS_BACKOFF_MAX_MS), each failed try logged on stderr as
 *   "tern: waiting for Redis at ADDR: why; next try in N ms". Nothing
 *   else starts (workers, listener) until Redis answered, so no mail is
 *   taken or accepted that could not be stored.
 *
 * SIGNALS
 *   SIGTERM and SIGINT are blocked in the calling thread (as `tern run`
 *   does anyway) and end the wait when they arrive.
 *
 * FAILURE MODES
 *   Returns 1 with *q open (close with queue_close), 0 when limit_ms
 *   passed without Redis (err says since when and the last reason), -1
 *   when a stop signal came first (err says which). A configuration
 *   error (queue_config_check) is no reason to wait: 0 at once.
 */
#ifndef TERN_ENGINE_REDIS_WAIT_H
#define TERN_ENGINE_REDIS_WAIT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "engine/config.h"
#include "queue/queue.h"

/* limit_ms < 0: wait until Redis answers or a signal; 0: one try. */
int redis_wait_open(struct queue_conn *q, const struct tern_config *cfg, int64_t limit_ms,
                    char *err, size_t errlen);

/* redis_start_notes: once Redis answers, settings worth knowing about go
 * to out. A warning ("tern: warning: ...") when Redis's maxmemory-policy
 * is an allkeys-* one: at maxmemory Redis would evict queued messages,
 * lost without a trace (tern's keys carry no TTL, so volatile-* policies
 * never pick them; noeviction makes writes fail instead, which tern
 * retries). A note ("tern: note: ...") when the AOF is off (a crash loses
 * what was queued since the last snapshot), and when hash-max-listpack-value is
 * below REDIS_NOTE_LISTPACK_MIN, which makes every queued message bigger
 * than it a hash table (measured: ~3 us more Redis CPU per message;
 * docs/queue.md). A Redis that refuses INFO or CONFIG GET gets no line.
 * In a Redis Cluster every master is asked, and each line names its node
 * ("Redis node 127.0.0.1:7001 appendonly is off: ...").
 * Returns the number of lines written. */
#define REDIS_NOTE_LISTPACK_MIN 1024
int redis_start_notes(struct queue_conn *q, FILE *out);

#endif
