/*
 * fuzz_queue_cluster.c - libFuzzer target for what tern reads from a Redis
 * Cluster (queue/queue_cluster.c): the first byte chooses a redirection's
 * error text (the rest of the input, as redisReply.str holds it) or a
 * CLUSTER SLOTS reply (a redisReply tree built from the rest,
 * tests/fuzz/fuzz_reply.h, nested three deep as that reply is).
 *
 * Invariants: a redirection parsed names a slot below QUEUE_CLUSTER_SLOTS,
 * a port of 1..65535 and a host of 1..QUEUE_CLUSTER_HOST_MAX-1 bytes; a
 * map parsed has 1..QUEUE_CLUSTER_NODES_MAX nodes, each with such a host
 * and port, and every slot names one of them or none (-1). A failed parse
 * sets err.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "queue/queue_cluster.h"
#include "tests/fuzz/fuzz_reply.h"

static void check_host_port(const char *host, int port)
{
    size_t hl = strnlen(host, QUEUE_CLUSTER_HOST_MAX);
    if (hl == 0 || hl >= QUEUE_CLUSTER_HOST_MAX || port < 1 || port > 65535)
        abort();
}

static struct queue_cluster_map map;   /* 33 KiB: not on the fuzzer's stack */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (data[0] & 1) {
        unsigned slot = 0;
        char host[QUEUE_CLUSTER_HOST_MAX];
        int port = 0, ask = -1;
        if (queue_cluster_parse_redirect((const char *)data + 1, size - 1, "127.0.0.1", &slot, host,
                                         &port, &ask)) {
            if (slot >= QUEUE_CLUSTER_SLOTS || (ask != 0 && ask != 1))
                abort();
            check_host_port(host, port);
        }
        return 0;
    }
    const uint8_t *p = data + 1, *end = data + size;
    redisReply *r = fuzz_reply(&p, end, 0, 3);
    if (r == NULL)
        return 0;
    int standalone = -1;
    const char *err = NULL;
    if (queue_cluster_parse_slots(r, "127.0.0.1", &map, &standalone, &err)) {
        if (map.nnodes < 1 || map.nnodes > QUEUE_CLUSTER_NODES_MAX || standalone != 0)
            abort();
        for (int i = 0; i < map.nnodes; i++)
            check_host_port(map.nodes[i].host, map.nodes[i].port);
        for (int s = 0; s < QUEUE_CLUSTER_SLOTS; s++)
            if (map.slot_node[s] < -1 || map.slot_node[s] >= map.nnodes)
                abort();
    } else if (err == NULL) {
        abort();
    }
    freeReplyObject(r);
    return 0;
}
