/*
 * listener.h - tern's SMTP injection listener: senders hand mail to tern
 * by SMTP; it is stored in the Redis queue before the 250.
 *
 * DESCRIPTION
 *   One thread with its own io_uring ring serves every `listen` address
 *   (listen_config.h): multishot accept, multishot recv from a provided-
 *   buffer ring, one send in flight per connection, a 100 ms tick for
 *   deadlines, and an eventfd that stops it. Each connection runs the
 *   sans-I/O engine/smtp_server.c session with the listener rules on
 *   (relay check, AUTH over TLS only, strict CRLF data, queue address
 *   checks), through tls/tls.h server side after STARTTLS.
 *
 *   A finished message is enqueued like `tern inject` does it
 *   (queue_cmd_enqueue: HSETNX of the body, then the enqueue script), one
 *   entry per recipient domain, inside MULTI/EXEC, on the listener's own
 *   Redis connection (socket I/O on the ring, replies through hiredis'
 *   redisReader; the commands of every connection are pipelined). The
 *   client gets 250 only after EXEC answered with every entry stored; a
 *   lost or failing Redis connection gives 451 (the transaction never ran,
 *   or it is retried by the client: at-least-once, never lost). When the
 *   EXEC ran but a script did not make its entry (NOSCRIPT), an HDEL
 *   (queue_cmd_enqueue_undo) goes out for each body its HSETNX stored,
 *   ahead of anything sent later on that connection; the client gets 451
 *   and the script is loaded again. The connection is re-opened,
 *   at most once a second, when the next message comes.
 *
 *   Redis Cluster (listener_new given a slot map): one connection per
 *   master, opened when a message first needs it (SCRIPT LOAD first), and
 *   one MULTI/EXEC per partition the message has entries in (a cluster
 *   refuses a transaction across slots), on its master's connection. The
 *   client is answered when the last one replied: 250 only if all made
 *   their entries. Not all-or-nothing: entries made while another
 *   partition's transaction failed stay queued and are delivered (the
 *   client's retry may duplicate them: at-least-once). A master that
 *   cannot be reached gives 451 before anything is sent. MOVED/ASK gives
 *   451 and the map is read again (CLUSTER SLOTS); until then every
 *   message gets 451.
 *
 *   AUTH verification (crypt_r, tens of milliseconds for yescrypt) runs
 *   on a helper thread (engine/auth_pool.h); the session waits for the
 *   result, the others go on. Credentials that verified are remembered
 *   for listen_auth_cache (engine/auth_cache.h) and accepted at once when
 *   they come again: a client that authenticates on every connection
 *   would otherwise be held to what one thread can check.
 *
 *   Certificates and credentials can be replaced while it runs:
 *   listener_reload (SIGHUP) reads them again, new connections get the
 *   new certificates, a connection keeps the set it started TLS with until
 *   it closes (struct tls_gen), and the auth cache starts empty.
 *
 * OWNERSHIP
 *   listener_new binds the sockets and loads certificates and the
 *   credentials file (so errors show before `tern run` starts anything);
 *   listener_start starts the thread; listener_stop asks it to stop
 *   (messages waiting for Redis get their answer; other sessions get 421)
 *   and joins it; listener_free releases everything. cfg and scripts must
 *   outlive the listener; the cluster map is copied (the listener owns its
 *   copy, its connections and the messages in flight).
 */
#ifndef TERN_ENGINE_LISTENER_H
#define TERN_ENGINE_LISTENER_H

#include <stddef.h>
#include <stdint.h>

#include "engine/config.h"
#include "queue/queue.h"
#include "queue/queue_cluster.h"

struct listener;

struct listener_stats {
    uint64_t connections, refused_conns, messages, rejected_redis, tls, auth_ok, auth_failed;
    uint64_t auth_cached;   /* of auth_ok: accepted from the auth cache (auth_cache.h) */
    uint64_t auth_checks;   /* password checks run (sessions with the same credentials share one) */
    uint64_t reloads;       /* listener_reload's certificates (and credentials) taken */
};

/* cluster: the Redis Cluster's slot map as `tern run` read it, or NULL
 * for a standalone Redis (`redis =` alone). The listener keeps its own
 * copy (it reads the map again after a MOVED/ASK), so cluster need only
 * live through this call. */
struct listener *listener_new(const struct tern_config *cfg, const struct queue_scripts *scripts,
                              const struct queue_cluster_map *cluster, char *err, size_t errlen);
int listener_start(struct listener *l, char *err, size_t errlen);
/* listener_reload reads the listen lines' certificates and keys, and the
 * auth_file, again (the same files; `tern run` calls it on SIGHUP). The
 * password thread checks against the new credentials from its next check
 * (this call waits for a check in progress: at most one check's time);
 * the listener's thread gives the new certificates to connections from its
 * next wake on (connections in progress keep theirs) and forgets the auth
 * cache. On failure (a file missing, a key that does not match, a bad
 * credentials line) it returns 0 with the reason in err, and nothing
 * changes. Called from one thread at a time (the main thread). */
int listener_reload(struct listener *l, char *err, size_t errlen);
void listener_stop(struct listener *l);
void listener_get_stats(const struct listener *l, struct listener_stats *out);
void listener_free(struct listener *l);

#endif
