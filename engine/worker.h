/*
 * worker.h - one delivery worker: a thread with its own io_uring ring, its
 * own Redis connection, and the destinations of the partitions it owns.
 *
 * DESCRIPTION
 *   Worker k of N owns every queue partition p with p % N == k, and with
 *   them every destination domain hashed to those partitions, so no other
 *   thread ever touches its connections, sessions or counters: the
 *   delivery path takes no locks. The loop:
 *
 *     take a batch per partition (one EVALSHA)  ->  destinations' ready lists
 *     -> pooled connections: TCP, SMTP client (engine/smtp_client.h),
 *        STARTTLS with BoringSSL on memory BIOs (tls/tls.h)
 *     -> outcomes batched per partition -> ack (one EVALSHA per batch)
 *
 *   All socket I/O (SMTP peers and Redis) goes through the ring; the
 *   protocol cores only see bytes. Every network wait has a deadline
 *   (config.h timeouts) checked on a tick.
 *
 * STOPPING
 *   worker_stop() (any thread) asks the worker to stop taking work: ready
 *   messages go back to the queue (returned), transactions in flight finish
 *   or are returned after STOP_GRACE_MS, connections QUIT, and
 *   worker_run() returns. With drain set, the worker stops by itself once
 *   its partitions have nothing ready and nothing is in flight.
 *
 * OWNERSHIP
 *   struct engine is shared read-only by all workers and outlives them.
 *   Counters in struct worker_stats belong to the worker; read them after
 *   worker_run() has returned.
 */
#ifndef TERN_ENGINE_WORKER_H
#define TERN_ENGINE_WORKER_H

#include <stddef.h>
#include <stdint.h>
#include <stdatomic.h>
#include <stdio.h>

#include "engine/config.h"
#include "engine/lat_hist.h"
#include "engine/rate_window.h"
#include "engine/shaping.h"
#include "queue/queue.h"
#include "queue/queue_cluster.h"
#include "tls/tls.h"

#define STOP_GRACE_MS      30000
#define DNS_HOST_SLOTS     4096     /* shared counters for DNS-routed MX hosts */
#define ENGINE_HOST_SLOTS  (CONFIG_ROUTES_MAX + DNS_HOST_SLOTS)
#define TLS_MIX_MAX        16

struct engine {
    const struct tern_config *cfg;
    /* connections open per MX host, all workers together (indexed by
     * nexthop.host_slot): max_connections_per_host holds across threads */
    atomic_int *host_conns;
    /* per MX host rate buckets (max_*_rate_per_host), same index, all
     * ENGINE_HOST_SLOTS long (DNS-routed hosts share slots by hash) */
    struct rate_bucket *host_msg_rate, *host_conn_rate;
    /* destinations waiting for a slot per MX host, all workers together
     * (same index): while any wait, busy destinations give slots back */
    atomic_int *host_waiting;
    struct queue_scripts scripts;
    /* The Redis Cluster's slot map when `redis =` names a cluster node
     * (queue_open found it), else NULL: each worker starts from a copy
     * and keeps it current itself (worker_redis.c). */
    const struct queue_cluster_map *cluster;
    int drain;                /* exit when the queue is drained */
    int64_t start_ms;         /* worker_clock_ms() when the workers started */
    int nworkers;
    int verbose;
};

struct tls_mix_entry {
    char name[96];            /* "TLSv1.3 TLS_AES_128_GCM_SHA256 X25519" or "plaintext" */
    uint64_t n;
};

struct worker_stats {
    uint64_t taken, delivered, deferred, failed, returned, bounces;
    uint64_t rcpts_delivered;
    uint64_t in_doubt;            /* lost after the final dot: retried */
    uint64_t redis_losses, redis_reconnects;
    uint64_t cluster_redirects;   /* MOVED/ASK replies (Redis Cluster resharding) */
    uint64_t cluster_maps;        /* slot maps read again after one */
    uint64_t cluster_asks;        /* body fetches sent behind ASKING to a slot's new master */
    uint64_t acks_resent;         /* acks sent again (redirected, refused or lost) */
    uint64_t notices;             /* ready notices for its partitions */
    uint64_t takes;               /* take calls answered (taken: messages) */
    uint64_t reports_repeated;    /* bounce/delay report enqueues found queued already */
    uint64_t peak_in_memory;      /* most messages held at once */
    uint64_t peak_bytes_in_memory; /* most body bytes held at once */
    uint64_t peak_fetch_bytes;    /* most body bytes asked for and not come yet */
    uint64_t bad;                 /* malformed queue entries set aside */
    uint64_t delay_warnings;      /* delay reports sent (Action: delayed) */
    uint64_t conns_opened, conn_failures, txns;
    uint64_t txns_pipelined;      /* started while others were in flight */
    uint64_t txns_shared;         /* carried for another destination of the site */
    uint64_t site_grown;          /* times a site was let open more (worker_site.c) */
    uint64_t site_deepened;       /* times its connections were let stack more */
    /* receive buffer ring (worker_bufs.c): its size (0: single-shot
     * receives), completions that carried a buffer, times a multishot
     * receive ended because the ring ran dry, buffers not back at exit */
    uint64_t recv_ring_bufs, recv_bufs_used, recv_nobufs, recv_bufs_held;
    uint64_t hs_full, hs_resumed, resume_offered, resume_refused;
    /* full handshakes whose chain verdict came from the TLS context's
     * cache of chains that verified, and those whose chain was checked */
    uint64_t verify_cached, verify_checked;
    uint64_t slow_start_woken;    /* destinations woken by a session come back */
    uint64_t tier_msgs[TLS_TIER_COUNT];
    struct tls_mix_entry mix[TLS_MIX_MAX];
    int nmix;
    /* queue-to-final-reply latency of delivered messages, ms: a
     * histogram, not every sample (a long run would grow without end) */
    struct lat_hist lat;
    /* deliveries by time since engine.start_ms (the steady rate) */
    struct rate_window deliveries;
    double cpu_user_s, cpu_sys_s; /* this thread's CPU time */
    /* destinations held now (at exit: still held), the most at once, and
     * those freed after destination_forget unused (worker_forget.c) */
    uint64_t dests_live, dests_peak, dests_forgotten;
    uint64_t hosts_forgotten;     /* MX hosts freed, unused as long (worker_hosts.c) */
};

struct worker;

/* worker_clock_ms: the workers' clock, milliseconds since the epoch
 * (CLOCK_REALTIME: the queue's timestamps in Redis are wall-clock). */
int64_t worker_clock_ms(void);
/* worker_mono_us: CLOCK_MONOTONIC in microseconds, for durations. */
int64_t worker_mono_us(void);

/* worker_new prepares worker `id`: ring, Redis connection, TLS context.
 * Returns NULL with err set on failure. */
struct worker *worker_new(const struct engine *e, int id, char *err, size_t errlen);
/* worker_run is the thread body; returns 0 on a clean stop. */
int worker_run(struct worker *w);
/* worker_stop may be called from any thread. */
void worker_stop(struct worker *w);
const struct worker_stats *worker_stats(const struct worker *w);
/* worker_dest_report prints, after worker_run, one line per destination
 * the worker connected to, busiest first, at most max:
 *   dest DOMAIN conns=N hs_full=N hs_resumed=N resume_refused=N msgs=N msgs_per_conn=X
 * (the same counters go to the events stream as status dest-stats). */
void worker_dest_report(const struct worker *w, FILE *out, size_t max);
/* worker_dns_report prints, after worker_run, the worker's DNS counters:
 *   dns worker=N lookups=N queries=N cache_hit_rate=X answers=N timeouts=N */
void worker_dns_report(const struct worker *w, FILE *out);
void worker_free(struct worker *w);

/* worker_redis_connect opens a stream socket to "unix:/path" or
 * "host:port" with a bounded wait (used to set up a ring's Redis
 * connection: the workers' and the listener's). Returns the fd, or -1
 * with err set. */
int worker_redis_connect(const char *addr, char *err, size_t errlen);

#endif
