/*
 * main.c - the tern command line.
 *
 *   tern run -c FILE [--drain] [-v]        deliver from the queue
 *   tern inject -c FILE --from A --to B[,C...] [FILE|-]
 *   tern inject -c FILE --generate N --domains d1,d2,... [--size BYTES] [--from A]
 *   tern queue -c FILE stats [--json] [--totals] | show ID | retry [--domain D] | delete ID... | bounce ID...
 *   tern check-config -c FILE             configuration and certificate checks
 *   tern tls-check [options] HOST[:PORT]  what TLS a receiver negotiates, under a policy
 *
 * Exit status: 0 success, 1 runtime failure, 2 bad usage or bad input.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "engine/config.h"
#include "engine/worker.h"
#include "engine/listener.h"
#include "engine/redis_wait.h"
#include "engine/auth.h"
#include "engine/tls_check.h"
#include "tls/cert_check.h"
#include "queue/queue.h"
#include "queue/queue_admin.h"

#define INJECT_MAX_RCPTS QUEUE_RCPTS_MAX
#define DEST_REPORT_LINES 20   /* per worker, busiest destinations first */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: tern run -c FILE [--drain] [-v]\n"
            "       tern inject -c FILE --from ADDR --to ADDR[,ADDR...] [FILE|-]\n"
            "       tern inject -c FILE --generate N --domains D1,D2,... [--size BYTES] [--from ADDR]\n"
            "       tern queue -c FILE stats [--json] [--totals] | show ID | retry [--domain D]\n"
            "       tern queue -c FILE delete ID... | bounce ID...\n"
            "       tern check-config -c FILE\n"
            "       tern passwd < password            a hash for the listener's auth_file\n"
            "       tern tls-check [--policy LEVEL] [--match NAME]... [--pin HEX]... HOST[:PORT]\n");
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const char *opt_value(int argc, char **argv, int *i)
{
    if (*i + 1 >= argc) {
        fprintf(stderr, "tern: %s needs a value\n", argv[*i]);
        exit(2);
    }
    return argv[++*i];
}

static int load_config(const char *path, struct tern_config *cfg)
{
    char err[512];
    if (path == NULL) {
        fprintf(stderr, "tern: -c FILE is required\n");
        return 0;
    }
    if (!config_load(cfg, path, err, sizeof(err))) {
        fprintf(stderr, "tern: %s\n", err);
        return 0;
    }
    return 1;
}

/* ---- run ------------------------------------------------------------------ */

struct thread_arg {
    struct worker *w;
    int rc;
    atomic_int finished;
    pthread_t main_thread;     /* woken with SIGUSR1 when this worker ends */
};

/* A worker that ends wakes the main thread at once: it waits for the
 * workers in sigtimedwait, and waiting out its 100 ms timeout added up to
 * that much to the end of every --drain run. */
static void *thread_main(void *p)
{
    struct thread_arg *a = p;
    a->rc = worker_run(a->w);
    atomic_store(&a->finished, 1);
    pthread_kill(a->main_thread, SIGUSR1);
    return NULL;
}

static void print_summary(struct worker **ws, int n, double wall, const struct rusage *ru)
{
    struct worker_stats t = {0};
    for (int i = 0; i < n; i++) {
        const struct worker_stats *s = worker_stats(ws[i]);
        t.taken += s->taken;
        t.delivered += s->delivered;
        t.deferred += s->deferred;
        t.failed += s->failed;
        t.returned += s->returned;
        t.bounces += s->bounces;
        t.rcpts_delivered += s->rcpts_delivered;
        t.in_doubt += s->in_doubt;
        t.conns_opened += s->conns_opened;
        t.conn_failures += s->conn_failures;
        t.txns += s->txns;
        t.txns_pipelined += s->txns_pipelined;
        t.txns_shared += s->txns_shared;
        t.site_grown += s->site_grown;
        t.site_deepened += s->site_deepened;
        t.recv_ring_bufs += s->recv_ring_bufs;
        t.recv_bufs_used += s->recv_bufs_used;
        t.recv_nobufs += s->recv_nobufs;
        t.recv_bufs_held += s->recv_bufs_held;
        t.hs_full += s->hs_full;
        t.hs_resumed += s->hs_resumed;
        t.resume_offered += s->resume_offered;
        t.resume_refused += s->resume_refused;
        t.verify_cached += s->verify_cached;
        t.verify_checked += s->verify_checked;
        t.slow_start_woken += s->slow_start_woken;
        t.dests_live += s->dests_live;
        t.dests_peak += s->dests_peak;
        t.dests_forgotten += s->dests_forgotten;
        t.hosts_forgotten += s->hosts_forgotten;
        for (int tt = 0; tt < TLS_TIER_COUNT; tt++)
            t.tier_msgs[tt] += s->tier_msgs[tt];
        for (int m = 0; m < s->nmix; m++) {
            int q = 0;
            while (q < t.nmix && strcmp(t.mix[q].name, s->mix[m].name) != 0)
                q++;
            if (q < t.nmix)
                t.mix[q].n += s->mix[m].n;
            else if (t.nmix < TLS_MIX_MAX)
                t.mix[t.nmix++] = s->mix[m];
        }
        lat_hist_merge(&t.lat, &s->lat);
        rate_window_merge(&t.deliveries, &s->deliveries);
    }
    double cpu = (double)ru->ru_utime.tv_sec + (double)ru->ru_utime.tv_usec / 1e6 +
                 (double)ru->ru_stime.tv_sec + (double)ru->ru_stime.tv_usec / 1e6;
    double rate = wall > 0 ? (double)t.delivered / wall : 0;
    double us_per = t.delivered ? cpu * 1e6 / (double)t.delivered : 0;
    /* Without the start-up and the drain's end (rate_window.h). */
    double steady = rate_window_steady(&t.deliveries, 0.1, 0.9);
    printf("tern run: %llu messages delivered (%llu recipients) in %.2f s: %.0f msg/s\n",
           (unsigned long long)t.delivered, (unsigned long long)t.rcpts_delivered, wall, rate);
    if (steady > 0)
        printf("  steady: %.0f msg/s (from the 10th to the 90th percentile of deliveries)\n", steady);
    printf("  deferred %llu, failed %llu, returned %llu, bounces queued %llu, "
           "in-doubt retries %llu\n",
           (unsigned long long)t.deferred, (unsigned long long)t.failed,
           (unsigned long long)t.returned, (unsigned long long)t.bounces,
           (unsigned long long)t.in_doubt);
    printf("  connections: %llu opened, %llu failed; %llu transactions (%.1f per connection, "
           "%llu pipelined behind another, %llu on a connection opened for another destination "
           "of its site); sites let open more %llu times, stack more %llu times (the round trip "
           "held them)\n",
           (unsigned long long)t.conns_opened, (unsigned long long)t.conn_failures,
           (unsigned long long)t.txns,
           t.conns_opened ? (double)t.txns / (double)t.conns_opened : 0.0,
           (unsigned long long)t.txns_pipelined, (unsigned long long)t.txns_shared,
           (unsigned long long)t.site_grown, (unsigned long long)t.site_deepened);
    printf("  TLS handshakes: %llu full, %llu resumed (%llu resumption offers, %llu refused); "
           "certificate chains checked %llu, verdict remembered %llu; destinations the "
           "resumption slow start held back woken by a session %llu times\n",
           (unsigned long long)t.hs_full, (unsigned long long)t.hs_resumed,
           (unsigned long long)t.resume_offered, (unsigned long long)t.resume_refused,
           (unsigned long long)t.verify_checked, (unsigned long long)t.verify_cached,
           (unsigned long long)t.slow_start_woken);
    printf("  tiers: preferred %llu, sufficient %llu, legacy %llu, plaintext %llu\n",
           (unsigned long long)t.tier_msgs[TLS_TIER_PREFERRED],
           (unsigned long long)t.tier_msgs[TLS_TIER_SUFFICIENT],
           (unsigned long long)t.tier_msgs[TLS_TIER_LEGACY],
           (unsigned long long)t.tier_msgs[TLS_TIER_PLAINTEXT]);
    for (int m = 0; m < t.nmix; m++)
        printf("  seen: %s: %llu messages\n", t.mix[m].name, (unsigned long long)t.mix[m].n);
    if (t.recv_ring_bufs)
        printf("  receives: multishot, %llu ring buffers in all: %llu filled, ring dry %llu times, "
               "%llu not returned\n",
               (unsigned long long)t.recv_ring_bufs, (unsigned long long)t.recv_bufs_used,
               (unsigned long long)t.recv_nobufs, (unsigned long long)t.recv_bufs_held);
    else
        printf("  receives: single-shot\n");
    uint32_t p50 = 0, p99 = 0, pmax = 0;
    uint64_t k = t.lat.n;
    if (k) {
        p50 = lat_hist_at_rank(&t.lat, k / 2);
        p99 = lat_hist_at_rank(&t.lat, (k * 99) / 100);
        pmax = t.lat.max;
        printf("  latency enqueue->250: p50 %u ms, p99 %u ms, max %u ms\n", p50, p99, pmax);
    }
    printf("  engine CPU: %.3f s (user %.3f, sys %.3f): %.1f us/message\n", cpu,
           (double)ru->ru_utime.tv_sec + (double)ru->ru_utime.tv_usec / 1e6,
           (double)ru->ru_stime.tv_sec + (double)ru->ru_stime.tv_usec / 1e6, us_per);
    printf("summary delivered=%llu deferred=%llu failed=%llu returned=%llu in_doubt=%llu "
           "wall_s=%.3f msgs_per_s=%.0f cpu_s=%.3f cpu_us_per_msg=%.1f conns=%llu "
           "hs_full=%llu hs_resumed=%llu resume_refused=%llu p50_ms=%u p99_ms=%u "
           "plaintext=%llu max_ms=%u maxrss_kb=%ld pipelined=%llu dests_forgotten=%llu "
           "dests_live=%llu dests_peak=%llu hosts_forgotten=%llu shared=%llu steady_msgs_per_s=%.0f "
           "site_grown=%llu site_deepened=%llu verify_cached=%llu slow_start_woken=%llu\n",
           (unsigned long long)t.delivered, (unsigned long long)t.deferred,
           (unsigned long long)t.failed, (unsigned long long)t.returned,
           (unsigned long long)t.in_doubt, wall, rate, cpu, us_per,
           (unsigned long long)t.conns_opened, (unsigned long long)t.hs_full,
           (unsigned long long)t.hs_resumed, (unsigned long long)t.resume_refused, p50, p99,
           (unsigned long long)t.tier_msgs[TLS_TIER_PLAINTEXT], pmax, ru->ru_maxrss,
           (unsigned long long)t.txns_pipelined, (unsigned long long)t.dests_forgotten,
           (unsigned long long)t.dests_live, (unsigned long long)t.dests_peak,
           (unsigned long long)t.hosts_forgotten, (unsigned long long)t.txns_shared, steady,
           (unsigned long long)t.site_grown, (unsigned long long)t.site_deepened,
           (unsigned long long)t.verify_cached, (unsigned long long)t.slow_start_woken);
}

static void print_listener_summary(const struct listener *ls)
{
    struct listener_stats st;
    listener_get_stats(ls, &st);
    printf("listener: connections=%llu refused=%llu messages=%llu queue_failures=%llu tls=%llu "
           "auth_ok=%llu auth_failed=%llu auth_cached=%llu auth_checks=%llu reloads=%llu\n",
           (unsigned long long)st.connections, (unsigned long long)st.refused_conns,
           (unsigned long long)st.messages, (unsigned long long)st.rejected_redis,
           (unsigned long long)st.tls, (unsigned long long)st.auth_ok,
           (unsigned long long)st.auth_failed, (unsigned long long)st.auth_cached,
           (unsigned long long)st.auth_checks, (unsigned long long)st.reloads);
}

/* One line on the queue side: the most messages and body bytes any moment
 * held in memory (per-worker peaks summed: upper bounds of the engine's),
 * the most body bytes one worker had asked for and not received yet
 * (FETCH_WINDOW_BYTES), the take calls, the ready notices received
 * (worker_notice.c), the bounce and delay report enqueues that found their
 * report queued already (dsn_report_id) and how often the Redis link was
 * lost and restored. */
static void print_queue_line(struct worker **ws, int n)
{
    unsigned long long peak = 0, peak_bytes = 0, lost = 0, back = 0, notices = 0, repeated = 0, takes = 0;
    unsigned long long peak_fetch = 0, redirects = 0, maps = 0, resent = 0, asks = 0;
    for (int i = 0; i < n; i++) {
        const struct worker_stats *s = worker_stats(ws[i]);
        peak += s->peak_in_memory;
        peak_bytes += s->peak_bytes_in_memory;
        lost += s->redis_losses;
        back += s->redis_reconnects;
        notices += s->notices;
        repeated += s->reports_repeated;
        takes += s->takes;
        redirects += s->cluster_redirects;
        maps += s->cluster_maps;
        resent += s->acks_resent;
        asks += s->cluster_asks;
        if (s->peak_fetch_bytes > peak_fetch)
            peak_fetch = s->peak_fetch_bytes;
    }
    printf("queue peak_in_memory=%llu peak_bytes_in_memory=%llu peak_fetch_bytes=%llu redis_losses=%llu "
           "redis_reconnects=%llu takes=%llu notices=%llu reports_repeated=%llu cluster_redirects=%llu "
           "cluster_maps=%llu cluster_asks=%llu acks_resent=%llu\n", peak, peak_bytes, peak_fetch, lost, back,
           takes, notices, repeated, redirects, maps, asks, resent);
}

static int check_listen_certificates(const struct tern_config *cfg, FILE *out, int notes);

/* How the queue's partitions fall on the cluster's masters: each is one
 * slot, and CRC16 of small numbers clusters (16 partitions on 8 equal
 * masters leave 4 of them none). A master with no partition does no
 * queue work: said at start, with what to do about it. */
static void print_cluster_spread(const struct queue_cluster_map *m, int partitions, FILE *out)
{
    int per[QUEUE_CLUSTER_NODES_MAX] = {0};
    for (int p = 0; p < partitions; p++) {
        int n = queue_cluster_node_of(m, p);
        if (n >= 0)
            per[n]++;
    }
    fprintf(out, "tern: Redis Cluster: %d masters serve the queue's %d partitions:", m->nnodes, partitions);
    int idle = 0, most = 0, least = partitions;
    for (int i = 0; i < m->nnodes; i++) {
        char addr[QUEUE_CLUSTER_ADDR_MAX];
        queue_cluster_node_addr(m, i, addr);
        fprintf(out, " %s %d%s", addr, per[i], i + 1 < m->nnodes ? "," : "\n");
        idle += per[i] == 0;
        most = per[i] > most ? per[i] : most;
        least = per[i] < least ? per[i] : least;
    }
    if (idle > 0 || (least > 0 && most > 2 * least))
        fprintf(out, "tern: note: the partitions are spread unevenly over the masters (%d to %d each%s): "
                     "the busiest master paces the queue; more partitions spread them better "
                     "(`partitions`, docs/queue.md, \"Redis Cluster\")\n",
                least, most, idle ? ", some none" : "");
}

static int cmd_run(const struct tern_config *cfg, int drain, int verbose)
{
    char err[512];
    struct queue_conn q;
    /* Redis may come up after us: wait (engine/redis_wait.h); --drain
     * only as long as redis_wait says. */
    int up = redis_wait_open(&q, cfg, drain ? cfg->redis_wait_ms : -1, err, sizeof(err));
    if (up <= 0) {
        fprintf(stderr, "tern: %s\n", err);
        return up < 0 ? 0 : 1;
    }
    redis_start_notes(&q, stderr);
    struct engine e = {.cfg = cfg, .scripts = q.scripts, .drain = drain,
                       .nworkers = cfg->threads, .verbose = verbose};
    /* A cluster's slot map outlives the connection that read it: each
     * worker starts from a copy (engine/worker_redis.c). */
    struct queue_cluster_map *cluster = NULL;
    if (q.map) {
        if ((cluster = malloc(sizeof(*cluster))) == NULL) {
            fprintf(stderr, "tern: out of memory\n");
            queue_close(&q);
            return 1;
        }
        memcpy(cluster, q.map, sizeof(*cluster));
        e.cluster = cluster;
        print_cluster_spread(cluster, cfg->queue.partitions, stderr);
    }
    queue_close(&q);
    e.host_conns = calloc(ENGINE_HOST_SLOTS, sizeof(*e.host_conns));
    e.host_waiting = calloc(ENGINE_HOST_SLOTS, sizeof(*e.host_waiting));
    e.host_msg_rate = calloc(ENGINE_HOST_SLOTS, sizeof(*e.host_msg_rate));
    e.host_conn_rate = calloc(ENGINE_HOST_SLOTS, sizeof(*e.host_conn_rate));
    if (e.host_conns == NULL || e.host_waiting == NULL || e.host_msg_rate == NULL ||
        e.host_conn_rate == NULL) {
        fprintf(stderr, "tern: out of memory\n");
        free(cluster);
        return 1;
    }

    /* Signals go to this thread only: workers never see them. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);    /* the listener's certificates and credentials are read again */
    sigaddset(&set, SIGUSR1);   /* a worker ended (thread_main) */
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct worker **ws = calloc((size_t)e.nworkers, sizeof(*ws));
    struct thread_arg *ta = calloc((size_t)e.nworkers, sizeof(*ta));
    pthread_t *th = calloc((size_t)e.nworkers, sizeof(*th));
    if (ws == NULL || ta == NULL || th == NULL) {
        fprintf(stderr, "tern: out of memory\n");
        return 1;
    }
    for (int i = 0; i < e.nworkers; i++) {
        ws[i] = worker_new(&e, i, err, sizeof(err));
        if (ws[i] == NULL) {
            fprintf(stderr, "tern: worker %d: %s\n", i, err);
            return 1;
        }
    }
    struct listener *ls = NULL;
    if (cfg->listen.n > 0 &&
        ((ls = listener_new(cfg, &e.scripts, e.cluster, err, sizeof(err))) == NULL ||
         !listener_start(ls, err, sizeof(err)))) {
        fprintf(stderr, "tern: listener: %s\n", err);
        return 1;
    }
    double t0 = now_s();
    e.start_ms = worker_clock_ms();   /* read by the workers only after pthread_create */
    for (int i = 0; i < e.nworkers; i++) {
        ta[i].w = ws[i];
        ta[i].main_thread = pthread_self();
        if (pthread_create(&th[i], NULL, thread_main, &ta[i]) != 0) {
            fprintf(stderr, "tern: cannot start worker thread\n");
            return 1;
        }
    }
    int stopping = 0;
    for (;;) {
        int all = 1;
        for (int i = 0; i < e.nworkers; i++)
            all &= atomic_load(&ta[i].finished);
        if (all)
            break;
        struct timespec to = {0, 100 * 1000000L};
        int sig = sigtimedwait(&set, NULL, &to);
        if ((sig == SIGTERM || sig == SIGINT) && !stopping) {
            fprintf(stderr, "tern: %s: finishing in-flight messages, returning the rest\n",
                    sig == SIGTERM ? "SIGTERM" : "SIGINT");
            stopping = 1;
        }
        if (sig == SIGHUP) {
            if (ls == NULL)
                fprintf(stderr, "tern: SIGHUP: no listener, nothing to reload (the configuration "
                                "itself is read at start)\n");
            else if (check_listen_certificates(cfg, stderr, 1) > 0)
                /* what `tern run` refuses to start with, a reload does
                 * not take either: expired, weak, a key that does not
                 * match. Notes too (subject, key, expiry): the operator
                 * sees which certificate the listener now presents. */
                fprintf(stderr, "tern: SIGHUP: certificate errors above; the listener keeps its "
                                "certificates and credentials\n");
            else if (listener_reload(ls, err, sizeof(err)))
                fprintf(stderr, "tern: SIGHUP: listener certificates and credentials reloaded\n");
            else
                fprintf(stderr, "tern: SIGHUP: %s; the listener keeps its certificates and "
                                "credentials\n", err);
        }
        if (stopping && ls) {
            listener_stop(ls);  /* no new mail while the workers finish */
            print_listener_summary(ls);
            listener_free(ls);
            ls = NULL;
        }
        /* With --drain a finished worker stops the others only when all
         * are done; each drains its own partitions. */
        if (stopping)
            for (int i = 0; i < e.nworkers; i++)
                worker_stop(ws[i]);
    }
    if (ls) {
        print_listener_summary(ls);
        listener_free(ls);
    }
    int rc = 0;
    for (int i = 0; i < e.nworkers; i++) {
        pthread_join(th[i], NULL);
        rc |= ta[i].rc;
    }
    double wall = now_s() - t0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    for (int i = 0; i < e.nworkers; i++)
        worker_dest_report(ws[i], stdout, DEST_REPORT_LINES);
    for (int i = 0; i < e.nworkers; i++)
        worker_dns_report(ws[i], stdout);
    print_summary(ws, e.nworkers, wall, &ru);
    print_queue_line(ws, e.nworkers);
    for (int i = 0; i < e.nworkers; i++)
        worker_free(ws[i]);
    free(ws);
    free(ta);
    free(th);
    free(e.host_conns);
    free(e.host_msg_rate);
    free(e.host_conn_rate);
    free(e.host_waiting);
    free(cluster);
    return rc;
}

/* ---- certificates we present ------------------------------------------------ */

/* check_certificates checks every client certificate a policy entry (or
 * the global setting) would present, once per distinct file, and prints
 * the findings (notes only when asked). Returns the number of errors. */
static int check_certificates(const struct tern_config *cfg, FILE *out, int notes)
{
    int errors = 0;
    for (int i = 0; i < cfg->ntls_ctx; i++) {
        const struct tls_ctx_spec *sp = &cfg->tls_ctx[i];
        if (sp->cert_file[0] == '\0')
            continue;
        int seen = 0;
        for (int j = 0; j < i; j++)
            seen |= strcmp(cfg->tls_ctx[j].cert_file, sp->cert_file) == 0 &&
                    strcmp(cfg->tls_ctx[j].ca_file, sp->ca_file) == 0;
        if (seen)
            continue;
        struct cert_report r;
        cert_check_files(CERT_ROLE_CLIENT, sp->cert_file, sp->key_file,
                         sp->ca_file[0] ? sp->ca_file : NULL, cfg->hostname, (int64_t)time(NULL), &r);
        errors += r.errors;
        for (size_t k = 0; k < r.n; k++)
            if (notes || r.f[k].sev != CERT_NOTE)
                fprintf(out, "client certificate %s: %s: %s\n", sp->cert_file,
                        cert_severity_name(r.f[k].sev), r.f[k].text);
        if (r.dropped)
            fprintf(out, "client certificate %s: %zu more findings not shown\n", sp->cert_file,
                    r.dropped);
    }
    return errors;
}

/* check_listen_certificates: the same checks for the listener's server
 * certificates. Returns the number of errors. */
static int check_listen_certificates(const struct tern_config *cfg, FILE *out, int notes)
{
    int errors = 0;
    for (int i = 0; i < cfg->listen.n; i++) {
        const struct listen_addr *a = &cfg->listen.addrs[i];
        const char *files[2][2] = {{a->cert, a->key}, {a->cert2, a->key2}};
        for (int k = 0; k < 2; k++) {
            if (files[k][0][0] == '\0')
                continue;
            struct cert_report r;
            cert_check_files(CERT_ROLE_SERVER, files[k][0], files[k][1],
                             cfg->ca_file[0] ? cfg->ca_file : NULL, NULL, (int64_t)time(NULL), &r);
            errors += r.errors;
            for (size_t j = 0; j < r.n; j++)
                if (notes || r.f[j].sev != CERT_NOTE)
                    fprintf(out, "listen %s certificate %s: %s: %s\n", a->text, files[k][0],
                            cert_severity_name(r.f[j].sev), r.f[j].text);
        }
    }
    return errors;
}

/* ---- inject --------------------------------------------------------------- */

static int read_all(const char *path, uint8_t **out, size_t *len, int64_t max)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "tern: %s: %s\n", path, strerror(errno));
        return 0;
    }
    size_t cap = 65536, n = 0;
    uint8_t *b = malloc(cap);
    while (b) {
        if (n == cap) {
            if ((int64_t)cap > max + 1)
                break;
            uint8_t *nb = realloc(b, cap * 2);
            if (nb == NULL) {
                free(b);
                b = NULL;
                break;
            }
            b = nb;
            cap *= 2;
        }
        size_t r = fread(b + n, 1, cap - n, f);
        if (r == 0)
            break;
        n += r;
    }
    int bad = ferror(f);
    if (f != stdin)
        fclose(f);
    if (b == NULL || bad) {
        fprintf(stderr, "tern: %s: read error\n", path);
        free(b);
        return 0;
    }
    *out = b;
    *len = n;
    return 1;
}

static int split_list(char *s, const char **out, size_t max, size_t *n)
{
    *n = 0;
    for (char *tok = strtok(s, ","); tok; tok = strtok(NULL, ",")) {
        if (*n == max)
            return 0;
        out[(*n)++] = tok;
    }
    return 1;
}

static int cmd_inject(const struct tern_config *cfg, int argc, char **argv, int i)
{
    const char *from = NULL, *file = NULL;
    char *to = NULL, *domains = NULL;
    long generate = -1;
    int64_t size = 4096;
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--from") == 0) from = opt_value(argc, argv, &i);
        else if (strcmp(argv[i], "--to") == 0) to = (char *)opt_value(argc, argv, &i);
        else if (strcmp(argv[i], "--generate") == 0) {
            char *end;
            generate = strtol(opt_value(argc, argv, &i), &end, 10);
            if (*end || generate < 0) {
                fprintf(stderr, "tern: --generate needs a count\n");
                return 2;
            }
        } else if (strcmp(argv[i], "--domains") == 0) domains = (char *)opt_value(argc, argv, &i);
        else if (strcmp(argv[i], "--size") == 0) {
            if (!config_parse_size(opt_value(argc, argv, &i), &size) || size < 64) {
                fprintf(stderr, "tern: --size needs a size of at least 64 bytes\n");
                return 2;
            }
        } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "tern: unknown option %s\n", argv[i]);
            return 2;
        } else if (file == NULL) file = argv[i];
        else {
            fprintf(stderr, "tern: one message file at most\n");
            return 2;
        }
    }
    char err[512];
    if (generate >= 0) {
        if (domains == NULL) {
            fprintf(stderr, "tern: --generate needs --domains\n");
            return 2;
        }
        if (size > cfg->queue.max_message_size) {
            fprintf(stderr, "tern: --size exceeds max_message_size (%lld)\n",
                    (long long)cfg->queue.max_message_size);
            return 2;
        }
        const char *dl[4096];
        size_t nd;
        if (!split_list(domains, dl, 4096, &nd) || nd == 0) {
            fprintf(stderr, "tern: --domains: 1 to 4096 domains\n");
            return 2;
        }
        struct queue_conn q;
        if (!queue_open(&q, &cfg->queue, cfg->redis, err, sizeof(err))) {
            fprintf(stderr, "tern: %s\n", err);
            return 1;
        }
        double t0 = now_s();
        long n = queue_generate_from(&q, from, generate, dl, nd, (size_t)size, err,
                                     sizeof(err));
        queue_close(&q);
        if (n < 0) {
            fprintf(stderr, "tern: generate: %s\n", err);
            return 1;
        }
        double dt = now_s() - t0;
        printf("tern inject: %ld messages of %lld bytes to %zu domains enqueued in %.2f s (%.0f/s)\n",
               n, (long long)size, nd, dt, dt > 0 ? (double)n / dt : 0.0);
        return 0;
    }
    if (from == NULL || to == NULL) {
        fprintf(stderr, "tern: inject needs --from and --to (or --generate)\n");
        usage(stderr);
        return 2;
    }
    const char *rl[INJECT_MAX_RCPTS];
    size_t nr;
    if (!split_list(to, rl, INJECT_MAX_RCPTS, &nr) || nr == 0) {
        fprintf(stderr, "tern: --to: 1 to %d recipients\n", INJECT_MAX_RCPTS);
        return 2;
    }
    uint8_t *data;
    size_t len;
    if (!read_all(file ? file : "-", &data, &len, cfg->queue.max_message_size))
        return 2;
    if ((int64_t)len > cfg->queue.max_message_size) {
        fprintf(stderr, "tern: message of %zu+ bytes exceeds max_message_size (%lld)\n", len,
                (long long)cfg->queue.max_message_size);
        free(data);
        return 2;
    }
    struct queue_conn q;
    if (!queue_open(&q, &cfg->queue, cfg->redis, err, sizeof(err))) {
        fprintf(stderr, "tern: %s\n", err);
        free(data);
        return 1;
    }
    int n = queue_enqueue(&q, from, rl, nr, data, len, err, sizeof(err));
    queue_close(&q);
    free(data);
    if (n < 0) {
        fprintf(stderr, "tern: inject: %s\n", err);
        return 2;
    }
    printf("tern inject: queued for %zu recipients (%d queue entries)\n", nr, n);
    return 0;
}

/* tern passwd: one password on stdin (a line), its yescrypt hash on
 * stdout, for the listener's auth_file ("user:" + hash). */
static int cmd_passwd(void)
{
    char pass[AUTH_PASS_MAX + 2], hash[AUTH_HASH_MAX + 1];
    if (fgets(pass, sizeof(pass), stdin) == NULL) {
        fprintf(stderr, "tern: passwd: no password on stdin\n");
        return 2;
    }
    size_t n = strcspn(pass, "\r\n");
    int whole = pass[n] != '\0' || feof(stdin);
    pass[n] = '\0';
    int ok = whole && n > 0 && auth_hash_password(pass, hash, sizeof(hash));
    explicit_bzero(pass, sizeof(pass));
    if (!ok) {
        fprintf(stderr, "tern: passwd: need a password of 1..%d bytes on one line\n", AUTH_PASS_MAX);
        return 2;
    }
    printf("%s\n", hash);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    const char *cfgpath = NULL;
    int drain = 0, verbose = 0;
    const char *sub = NULL;
    int i = 2;
    /* -c may come first; the rest is command specific */
    if (i + 1 < argc && strcmp(argv[i], "-c") == 0) {
        cfgpath = argv[i + 1];
        i += 2;
    }
    static struct tern_config cfg;   /* large; immutable once loaded */
    if (strcmp(cmd, "tls-check") == 0)   /* needs no configuration */
        return tls_check_main(argc - 1, argv + 1, stdout);
    if (strcmp(cmd, "passwd") == 0)
        return cmd_passwd();
    if (strcmp(cmd, "inject") == 0) {
        if (!load_config(cfgpath, &cfg))
            return 2;
        return cmd_inject(&cfg, argc, argv, i);
    }
    if (strcmp(cmd, "queue") == 0) {   /* queue/queue_admin.h */
        if (!load_config(cfgpath, &cfg))
            return 2;
        return queue_admin_main(&cfg.queue, cfg.redis, cfg.hostname, argc - i, argv + i, stdout);
    }
    for (; i < argc; i++) {
        if (strcmp(argv[i], "-c") == 0) cfgpath = opt_value(argc, argv, &i);
        else if (strcmp(argv[i], "--drain") == 0) drain = 1;
        else if (strcmp(argv[i], "-v") == 0) verbose = 1;
        else if (sub == NULL && argv[i][0] != '-') sub = argv[i];
        else {
            fprintf(stderr, "tern: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (!load_config(cfgpath, &cfg))
        return 2;
    if (strcmp(cmd, "run") == 0) {
        /* Warnings go to stderr; a certificate that cannot work stops us. */
        if (check_certificates(&cfg, stderr, 0) + check_listen_certificates(&cfg, stderr, 0) > 0) {
            fprintf(stderr, "tern: refusing to start: fix the certificate errors above "
                            "(tern check-config -c %s shows details)\n", cfgpath);
            return 2;
        }
        return cmd_run(&cfg, drain, verbose);
    }
    if (strcmp(cmd, "check-config") == 0) {
        int errors = check_certificates(&cfg, stdout, 1) + check_listen_certificates(&cfg, stdout, 1);
        struct auth_creds creds;
        char aerr[512];
        if (cfg.listen.auth_file[0] && !auth_creds_load(&creds, cfg.listen.auth_file, aerr, sizeof(aerr))) {
            printf("auth_file: error: %s\n", aerr);
            errors++;
        } else if (cfg.listen.auth_file[0]) {
            auth_creds_free(&creds);
        }
        printf("%s: %s (%d threads, %d partitions, %d routes, %zu policy entries)\n", cfgpath,
               errors ? "certificate errors" : "ok", cfg.threads, cfg.queue.partitions,
               cfg.nroutes, cfg.policy.n);
        return errors ? 1 : 0;
    }
    usage(stderr);
    return 2;
}
