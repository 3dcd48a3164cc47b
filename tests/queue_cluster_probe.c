/*
 * queue_cluster_probe.c - the redirection paths of queue/queue_cli.c
 * against a real Redis Cluster; run by tests/it_queue_cluster.sh, which
 * starts the cluster (3 masters) and gives its first node's address:
 *
 *   build/tests/queue_cluster_probe HOST:PORT
 *
 * With a queue_conn open, one partition's slot is moved to another
 * master by hand (CLUSTER SETSLOT IMPORTING / MIGRATING, MIGRATE, SETSLOT
 * NODE on every master), over connections of its own, so the conn's map
 * goes stale the way a resharding makes it:
 *   ask      during the migration (keys moved, slot not yet handed over)
 *            a routed read, queue_stats (pipelined) and an enqueue pair
 *            follow ASK to the importing node; the map is unchanged
 *   moved    after the hand-over a routed read follows MOVED and the map
 *            learns the slot's new node
 *   moved_pipelined  after a move back, queue_stats (a batch sent on
 *            the stale map) and queue_generate (a window) follow MOVED
 *            command by command: totals right, nothing lost or doubled
 *   take_ack_scripts  the take and ack scripts (shebang flags, message
 *            keys built inside the script) run on the slot's node
 *   start_notes  redis_start_notes asks every master, naming each
 * Keys use the prefix "probe", apart from the test's own queue.
 * Prints PASS/FAIL lines (tests/check.h); exit 0 when all passed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/redis_wait.h"
#include "queue/queue.h"
#include "tests/check.h"

#define PROBE_DOMAIN_TRIES 100000

static struct {
    struct queue_conn q;
    redisContext *ctl[QUEUE_CLUSTER_NODES_MAX];   /* ours, for moving slots */
    char id[QUEUE_CLUSTER_NODES_MAX][48];         /* CLUSTER MYID of each */
    int nnodes;
    int p;            /* the partition moved */
    unsigned slot;
    char domain[32];  /* a domain of partition p */
} T;

static redisReply *ctl(int node, int argc, const char **argv)
{
    return redisCommandArgv(T.ctl[node], argc, argv, NULL);
}

/* ctl_ok: the command answered without an error. */
static int ctl_ok(int node, int argc, const char **argv)
{
    redisReply *r = ctl(node, argc, argv);
    int ok = r != NULL && r->type != REDIS_REPLY_ERROR;
    if (!ok)
        printf("  node %d: %s %s: %s\n", node, argv[0], argv[1],
               r ? r->str : T.ctl[node]->errstr);
    freeReplyObject(r);
    return ok;
}

static int connect_ctl(void)
{
    T.nnodes = queue_conn_nnodes(&T.q);
    for (int i = 0; i < T.nnodes; i++) {
        const struct queue_cluster_node *n = &T.q.map->nodes[i];
        T.ctl[i] = redisConnect(n->host, n->port);
        if (T.ctl[i] == NULL || T.ctl[i]->err)
            return 0;
        redisReply *r = redisCommand(T.ctl[i], "CLUSTER MYID");
        if (r == NULL || r->type != REDIS_REPLY_STRING || r->len >= sizeof(T.id[i])) {
            freeReplyObject(r);
            return 0;
        }
        memcpy(T.id[i], r->str, r->len + 1);
        freeReplyObject(r);
    }
    return 1;
}

/* Start moving T.slot from node `from` to node `to`: mark it importing
 * and migrating, then MIGRATE every key in it. The slot stays `from`'s:
 * commands there for keys it no longer has are answered ASK. */
static int migrate_keys(int from, int to)
{
    char slot[16], port[16];
    snprintf(slot, sizeof(slot), "%u", T.slot);
    snprintf(port, sizeof(port), "%d", T.q.map->nodes[to].port);
    if (!ctl_ok(to, 5, (const char *[]){"CLUSTER", "SETSLOT", slot, "IMPORTING", T.id[from]}) ||
        !ctl_ok(from, 5, (const char *[]){"CLUSTER", "SETSLOT", slot, "MIGRATING", T.id[to]}))
        return 0;
    for (;;) {
        redisReply *r = ctl(from, 4, (const char *[]){"CLUSTER", "GETKEYSINSLOT", slot, "100"});
        if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
            freeReplyObject(r);
            return 0;
        }
        if (r->elements == 0) {
            freeReplyObject(r);
            return 1;
        }
        const char *argv[7 + 100];
        size_t argc = 0;
        const char *head[7] = {"MIGRATE", T.q.map->nodes[to].host, port, "", "0", "5000", "KEYS"};
        for (; argc < 7; argc++)
            argv[argc] = head[argc];
        for (size_t i = 0; i < r->elements && i < 100; i++)
            argv[argc++] = r->element[i]->str;
        int ok = ctl_ok(from, (int)argc, argv);
        freeReplyObject(r);
        if (!ok)
            return 0;
    }
}

/* Hand the slot over: SETSLOT NODE on the new owner first, then on every
 * other master (as redis-cli --cluster reshard does). */
static int hand_over(int to)
{
    char slot[16];
    snprintf(slot, sizeof(slot), "%u", T.slot);
    if (!ctl_ok(to, 5, (const char *[]){"CLUSTER", "SETSLOT", slot, "NODE", T.id[to]}))
        return 0;
    for (int i = 0; i < T.nnodes; i++)
        if (i != to && !ctl_ok(i, 5, (const char *[]){"CLUSTER", "SETSLOT", slot, "NODE", T.id[to]}))
            return 0;
    return 1;
}

/* A routed HGET of message id's domain field. */
static int read_domain(const char *id, char *out, size_t outlen)
{
    char key[QUEUE_PREFIX_MAX + QUEUE_ID_MAX + 16], name[QUEUE_ID_MAX + 4], err[256];
    snprintf(name, sizeof(name), "m:%s", id);
    queue_key(key, sizeof(key), &T.q.qc, T.p, name);
    redisReply *r = queue_conn_command_argv(&T.q, T.p, 3, (const char *[]){"HGET", key, "domain"},
                                            NULL, err, sizeof(err));
    int ok = r != NULL && r->type == REDIS_REPLY_STRING;
    snprintf(out, outlen, "%s", ok ? r->str : r ? (r->str ? r->str : "?") : err);
    freeReplyObject(r);
    return ok;
}

static long long ready_count(void)
{
    struct queue_stats st;
    char err[256];
    if (!queue_stats(&T.q, &st, err, sizeof(err))) {
        printf("  queue_stats: %s\n", err);
        return -1;
    }
    return st.ready;
}

static int enqueue_one(void)
{
    char rcpt[64], err[256];
    snprintf(rcpt, sizeof(rcpt), "user@%s", T.domain);
    const char *to[1] = {rcpt};
    static const char body[] = "Subject: probe\r\n\r\nprobe\r\n";
    int n = queue_enqueue(&T.q, "probe@tern.test", to, 1, (const uint8_t *)body,
                          sizeof(body) - 1, err, sizeof(err));
    if (n != 1)
        printf("  queue_enqueue: %d: %s\n", n, err);
    return n;
}

static char first_id[QUEUE_ID_MAX];

static void test_ask(void)
{
    int from = queue_cluster_node_of(T.q.map, T.p), to = (from + 1) % T.nnodes;
    CHECK_INT(enqueue_one(), 1);
    char key[QUEUE_PREFIX_MAX + 32], err[256], dom[64];
    queue_key(key, sizeof(key), &T.q.qc, T.p, "ready");
    redisReply *r = queue_conn_command_argv(&T.q, T.p, 4, (const char *[]){"LRANGE", key, "0", "0"},
                                            NULL, err, sizeof(err));
    CHECK(r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 1);
    if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 1)
        snprintf(first_id, sizeof(first_id), "%s", r->element[0]->str);
    freeReplyObject(r);

    CHECK(migrate_keys(from, to));
    CHECK(read_domain(first_id, dom, sizeof(dom)));   /* ASK, then ASKING + HGET there */
    CHECK_STR(dom, T.domain);
    CHECK_INT(queue_cluster_node_of(T.q.map, T.p), from);   /* ASK leaves the map */
    CHECK_INT(ready_count(), 1);                       /* a batch's ASKs */
    CHECK_INT(enqueue_one(), 1);                       /* HSETNX and script, each behind ASKING */
    CHECK_INT(ready_count(), 2);
    CHECK(hand_over(to));
}

static void test_moved(void)
{
    int now = (queue_cluster_node_of(T.q.map, T.p) + 1) % T.nnodes;   /* where test_ask put it */
    char dom[64];
    CHECK(read_domain(first_id, dom, sizeof(dom)));   /* MOVED: the map learns */
    CHECK_STR(dom, T.domain);
    CHECK_INT(queue_cluster_node_of(T.q.map, T.p), now);
    CHECK_INT(ready_count(), 2);
}

static void test_moved_pipelined(void)
{
    int from = queue_cluster_node_of(T.q.map, T.p), to = (from + 1) % T.nnodes;
    char err[256];
    CHECK(migrate_keys(from, to) && hand_over(to));
    CHECK_INT(ready_count(), 2);                       /* a batch sent on the stale map */
    CHECK_INT(queue_cluster_node_of(T.q.map, T.p), to);
    CHECK(migrate_keys(to, from) && hand_over(from));
    const char *doms[1] = {T.domain};
    long n = queue_generate(&T.q, 300, doms, 1, 400, err, sizeof(err));   /* a window, MOVED */
    if (n != 300)
        printf("  queue_generate: %ld: %s\n", n, err);
    CHECK_INT(n, 300);
    CHECK_INT(queue_cluster_node_of(T.q.map, T.p), from);
    CHECK_INT(ready_count(), 302);
    struct queue_stats st;
    CHECK(queue_stats(&T.q, &st, err, sizeof(err)));
    CHECK_INT(st.enqueued, 302);
}

/* The take and ack scripts (shebang flags allow-oom) read and write
 * message hashes they build from msg_prefix, keys not in KEYS: on a
 * cluster node they must still be served (same slot). */
static void test_take_ack_scripts(void)
{
    struct queue_batch b;
    struct queue_msg **msgs = NULL;
    size_t n = 0;
    long long left = -1;
    const char *why = "";
    char err[256];
    queue_batch_init(&b);
    queue_cmd_take(&b.cmds, &T.q.qc, &T.q.scripts, T.p, 5, 0, 1);
    queue_batch_add(&b, T.p, 1);
    CHECK(queue_batch_run(&T.q, &b, err, sizeof(err)));
    redisReply *r = queue_batch_reply(&b, 0, 0);
    CHECK(r != NULL && queue_parse_take(r, T.p, &msgs, &n, &left, &why));
    if (r != NULL && r->type == REDIS_REPLY_ERROR)
        printf("  take: %s\n", r->str);
    CHECK_INT(n, 5);
    CHECK_INT(left, 297);
    queue_batch_reset(&b);
    struct queue_outcome o[5];
    for (size_t i = 0; i < n && i < 5; i++)
        o[i] = (struct queue_outcome){.id = msgs[i]->id, .kind = QUEUE_DELIVERED};
    if (n == 5) {
        queue_cmd_ack(&b.cmds, &T.q.qc, &T.q.scripts, T.p, o, n, 0);
        queue_batch_add(&b, T.p, 1);
        CHECK(queue_batch_run(&T.q, &b, err, sizeof(err)));
        r = queue_batch_reply(&b, 0, 0);
        CHECK(r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer == 5);
        if (r != NULL && r->type == REDIS_REPLY_ERROR)
            printf("  ack: %s\n", r->str);
    }
    struct queue_stats st;
    CHECK(queue_stats(&T.q, &st, err, sizeof(err)));
    CHECK_INT(st.delivered, 5);
    CHECK_INT(st.ready, 297);
    for (size_t i = 0; i < n; i++)
        queue_msg_free(msgs[i]);
    free(msgs);
    queue_batch_free(&b);
}

/* tern run's start notes look at every master: the test's nodes run
 * without AOF and with the default hash-max-listpack-value (64), so each
 * gets those two notes, naming it. */
static void test_start_notes(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    CHECK(f != NULL);
    if (f == NULL)
        return;
    int n = redis_start_notes(&T.q, f);
    fclose(f);
    CHECK_INT(n, 2 * T.nnodes);
    for (int i = 0; i < T.nnodes; i++) {
        char want[QUEUE_CLUSTER_ADDR_MAX + 64];
        snprintf(want, sizeof(want), "tern: note: Redis node 127.0.0.1:%d appendonly is off",
                 T.q.map->nodes[i].port);
        CHECK(strstr(text, want) != NULL);
    }
    free(text);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: queue_cluster_probe HOST:PORT\n");
        return 2;
    }
    struct queue_config qc;
    queue_config_defaults(&qc);
    snprintf(qc.prefix, sizeof(qc.prefix), "probe");
    char err[256];
    if (!queue_open(&T.q, &qc, argv[1], err, sizeof(err))) {
        printf("FAIL probe_open: %s\n", err);
        return 1;
    }
    if (T.q.map == NULL || !connect_ctl() || T.nnodes < 2) {
        printf("FAIL probe_open: not a cluster of 2 or more masters\n");
        queue_close(&T.q);
        return 1;
    }
    /* Partition 0's domain: any partition would do. */
    T.p = 0;
    T.slot = queue_partition_slot(T.p);
    for (int i = 0; i < PROBE_DOMAIN_TRIES; i++) {
        snprintf(T.domain, sizeof(T.domain), "d%d.test", i);
        if (queue_partition_of(&T.q.qc, T.domain, strlen(T.domain)) == T.p)
            break;
    }
    RUN(test_ask);
    RUN(test_moved);
    RUN(test_moved_pipelined);
    RUN(test_take_ack_scripts);
    RUN(test_start_notes);
    queue_close(&T.q);
    for (int i = 0; i < T.nnodes; i++)
        if (T.ctl[i] != NULL)
            redisFree(T.ctl[i]);
    return check_finish();
}
