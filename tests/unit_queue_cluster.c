/* unit_queue_cluster.c - tests for queue/queue_cluster.c: key slots as
 * Redis computes them, CLUSTER SLOTS replies read into a map (and the
 * malformed ones refused), MOVED and ASK redirections. */
#include "queue/queue_cluster.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/check.h"

/* A reply parsed from RESP text by hiredis' reader, as the engine gets it. */
static redisReply *reply_of(const char *resp)
{
    redisReader *rd = redisReaderCreate();
    void *r = NULL;
    if (redisReaderFeed(rd, resp, strlen(resp)) != REDIS_OK || redisReaderGetReply(rd, &r) != REDIS_OK)
        r = NULL;
    redisReaderFree(rd);
    return r;
}

static void test_key_slot(void)
{
    /* The specification's CRC16 check value, and CLUSTER KEYSLOT's. */
    CHECK_INT(queue_key_slot("123456789", 9), 0x31C3);
    CHECK_INT(queue_key_slot("foo", 3), 12182);
    /* A hash tag: only what is inside the first {...} counts. */
    CHECK_INT(queue_key_slot("{foo}.bar", 9), 12182);
    CHECK_INT(queue_key_slot("x{foo}{bar}", 11), 12182);
    /* "{}" is no tag: the whole key is hashed. */
    CHECK(queue_key_slot("{}foo", 5) != 12182);
    CHECK_INT(queue_key_slot("{}foo", 5), queue_key_slot("{}foo", 5));
    CHECK_INT(queue_key_slot("{foo", 4), queue_key_slot("{foo", 4));
    /* A partition's keys all fall into its slot. */
    CHECK_INT(queue_key_slot("tern:{7}:ready", 14), queue_partition_slot(7));
    CHECK_INT(queue_key_slot("tern:{7}:m:abc", 14), queue_partition_slot(7));
    CHECK_INT(queue_key_slot("7", 1), queue_partition_slot(7));
}

static void test_parse_slots(void)
{
    struct queue_cluster_map *m = malloc(sizeof(*m));
    int standalone = 9;
    const char *err = NULL;
    redisReply *r = reply_of(
        "*3\r\n"
        "*3\r\n:0\r\n:5460\r\n*3\r\n$9\r\n127.0.0.1\r\n:7001\r\n$2\r\nid\r\n"
        "*4\r\n:5461\r\n:10922\r\n*3\r\n$0\r\n\r\n:7002\r\n$2\r\nid\r\n*3\r\n$9\r\n127.0.0.1\r\n:7009\r\n$2\r\nid\r\n"
        "*3\r\n:10923\r\n:16383\r\n*3\r\n$3\r\n::1\r\n:7003\r\n$2\r\nid\r\n");
    CHECK(r != NULL);
    CHECK_INT(queue_cluster_parse_slots(r, "10.0.0.1", m, &standalone, &err), 1);
    CHECK_INT(standalone, 0);
    CHECK_INT(m->nnodes, 3);   /* masters only: the replica at 7009 is not named */
    CHECK_INT(m->slot_node[0], 0);
    CHECK_INT(m->slot_node[5460], 0);
    CHECK_INT(m->slot_node[5461], 1);
    CHECK_INT(m->slot_node[16383], 2);
    CHECK_STR(m->nodes[1].host, "10.0.0.1");   /* no endpoint announced: the one asked */
    CHECK_INT(m->nodes[1].port, 7002);
    char addr[QUEUE_CLUSTER_ADDR_MAX];
    queue_cluster_node_addr(m, 0, addr);
    CHECK_STR(addr, "127.0.0.1:7001");
    queue_cluster_node_addr(m, 2, addr);
    CHECK_STR(addr, "[::1]:7003");
    char host[QUEUE_CLUSTER_HOST_MAX];
    queue_cluster_addr_host(addr, host);
    CHECK_STR(host, "::1");
    queue_cluster_addr_host("127.0.0.1:7001", host);
    CHECK_STR(host, "127.0.0.1");
    queue_cluster_addr_host("noport", host);
    CHECK_STR(host, "");
    CHECK_INT(queue_cluster_node_of(m, 7), m->slot_node[queue_partition_slot(7)]);
    CHECK_INT(queue_cluster_find_node(m, "10.0.0.1", 7002), 1);
    CHECK_INT(queue_cluster_find_node(m, "10.0.0.1", 7003), -1);
    freeReplyObject(r);

    /* A range left out stays unserved. */
    r = reply_of("*1\r\n*3\r\n:0\r\n:99\r\n*2\r\n$1\r\nh\r\n:1\r\n");
    CHECK_INT(queue_cluster_parse_slots(r, "x", m, &standalone, &err), 1);
    CHECK_INT(m->slot_node[99], 0);
    CHECK_INT(m->slot_node[100], -1);
    freeReplyObject(r);

    /* A Redis without cluster support. */
    r = reply_of("-ERR This instance has cluster support disabled\r\n");
    CHECK_INT(queue_cluster_parse_slots(r, "x", m, &standalone, &err), 0);
    CHECK_INT(standalone, 1);
    freeReplyObject(r);
    r = reply_of("-ERR unknown command 'CLUSTER'\r\n");
    CHECK_INT(queue_cluster_parse_slots(r, "x", m, &standalone, &err), 0);
    CHECK_INT(standalone, 0);
    freeReplyObject(r);

    /* Malformed: each is refused, never a crash or a slot out of range. */
    static const char *const bad[] = {
        ":1\r\n",
        "*0\r\n",                                                   /* nothing served */
        "*1\r\n:1\r\n",
        "*1\r\n*2\r\n:0\r\n:1\r\n",
        "*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n$1\r\nh\r\n:1\r\n",      /* slot out of range */
        "*1\r\n*3\r\n:5\r\n:4\r\n*2\r\n$1\r\nh\r\n:1\r\n",          /* end before start */
        "*1\r\n*3\r\n:-1\r\n:4\r\n*2\r\n$1\r\nh\r\n:1\r\n",
        "*1\r\n*3\r\n:0\r\n:4\r\n*2\r\n$1\r\nh\r\n:0\r\n",          /* port 0 */
        "*1\r\n*3\r\n:0\r\n:4\r\n*2\r\n$1\r\nh\r\n:70000\r\n",
        "*1\r\n*3\r\n:0\r\n:4\r\n*2\r\n:1\r\n:1\r\n",               /* host not a string */
        "*1\r\n*3\r\n:0\r\n:4\r\n*1\r\n$1\r\nh\r\n",                /* no port */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        r = reply_of(bad[i]);
        CHECK(r != NULL);
        err = NULL;
        CHECK_INT(queue_cluster_parse_slots(r, "x", m, &standalone, &err), 0);
        CHECK(err != NULL);
        freeReplyObject(r);
    }

    /* A NUL in a host (fed whole: strlen would stop at it). */
    static const char nul_host[] = "*1\r\n*3\r\n:0\r\n:4\r\n*2\r\n$3\r\na\0b\r\n:1\r\n";
    redisReader *rd = redisReaderCreate();
    void *v = NULL;
    CHECK_INT(redisReaderFeed(rd, nul_host, sizeof(nul_host) - 1), REDIS_OK);
    CHECK_INT(redisReaderGetReply(rd, &v), REDIS_OK);
    redisReaderFree(rd);
    CHECK(v != NULL);
    CHECK_INT(queue_cluster_parse_slots(v, "x", m, &standalone, &err), 0);
    freeReplyObject(v);

    /* More masters than a map holds. */
    char big[QUEUE_CLUSTER_NODES_MAX * 64 + 64];
    size_t n = (size_t)snprintf(big, sizeof(big), "*%d\r\n", QUEUE_CLUSTER_NODES_MAX + 1);
    for (int i = 0; i <= QUEUE_CLUSTER_NODES_MAX; i++)
        n += (size_t)snprintf(big + n, sizeof(big) - n, "*3\r\n:%d\r\n:%d\r\n*2\r\n$1\r\nh\r\n:%d\r\n", i, i,
                              1000 + i);
    r = reply_of(big);
    CHECK_INT(queue_cluster_parse_slots(r, "x", m, &standalone, &err), 0);
    CHECK_STR(err, "CLUSTER SLOTS: too many masters");
    freeReplyObject(r);
    free(m);
}

static void test_redirect(void)
{
    unsigned slot = 0;
    char host[QUEUE_CLUSTER_HOST_MAX];
    int port = 0, ask = -1;
    const char *s = "MOVED 3999 127.0.0.1:6381";
    CHECK_INT(queue_cluster_parse_redirect(s, strlen(s), "d", &slot, host, &port, &ask), 1);
    CHECK_INT(slot, 3999);
    CHECK_STR(host, "127.0.0.1");
    CHECK_INT(port, 6381);
    CHECK_INT(ask, 0);
    s = "ASK 16383 ::1:7000";
    CHECK_INT(queue_cluster_parse_redirect(s, strlen(s), "d", &slot, host, &port, &ask), 1);
    CHECK_INT(slot, 16383);
    CHECK_STR(host, "::1");
    CHECK_INT(port, 7000);
    CHECK_INT(ask, 1);
    s = "MOVED 12 :7001";   /* no endpoint announced */
    CHECK_INT(queue_cluster_parse_redirect(s, strlen(s), "127.0.0.9", &slot, host, &port, &ask), 1);
    CHECK_STR(host, "127.0.0.9");

    static const char *const bad[] = {
        "ERR unknown command", "MOVED", "MOVED ", "MOVED x 1.2.3.4:5", "MOVED 16384 h:1",
        "MOVED 1 h", "MOVED 1 h:", "MOVED 1 h:0", "MOVED 1 h:65536", "MOVED 1 h:12a",
        "MOVED 1234567 h:1", "MOVED 1  h:1x", "ASK 1", "moved 1 h:1",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK_INT(queue_cluster_parse_redirect(bad[i], strlen(bad[i]), "d", &slot, host, &port, &ask), 0);
}

static void test_set_slot(void)
{
    struct queue_cluster_map *m = calloc(1, sizeof(*m));
    memset(m->slot_node, -1, sizeof(m->slot_node));
    CHECK_INT(queue_cluster_set_slot(m, 5, "a", 1), 0);
    CHECK_INT(queue_cluster_set_slot(m, 6, "a", 1), 0);   /* a known node is not added again */
    CHECK_INT(queue_cluster_set_slot(m, 5, "b", 1), 1);   /* the slot moved */
    CHECK_INT(m->slot_node[5], 1);
    CHECK_INT(m->slot_node[6], 0);
    CHECK_INT(queue_cluster_set_slot(m, QUEUE_CLUSTER_SLOTS, "a", 1), -1);
    CHECK_INT(queue_cluster_set_slot(m, 1, "", 1), -1);
    CHECK_INT(queue_cluster_set_slot(m, 1, "a", 0), -1);
    CHECK_INT(m->nnodes, 2);
    /* add_node (an ASK's target): a node, no slot. */
    CHECK_INT(queue_cluster_add_node(m, "c", 3), 2);
    CHECK_INT(queue_cluster_add_node(m, "a", 1), 0);
    CHECK_INT(queue_cluster_add_node(m, "", 3), -1);
    CHECK_INT(queue_cluster_add_node(m, "c", 65536), -1);
    CHECK_INT(m->nnodes, 3);
    CHECK_INT(m->slot_node[5], 1);
    for (int i = 3; i < QUEUE_CLUSTER_NODES_MAX; i++) {
        char h[8];
        snprintf(h, sizeof(h), "n%d", i);
        CHECK_INT(queue_cluster_add_node(m, h, 1), i);
    }
    CHECK_INT(queue_cluster_add_node(m, "full", 1), -1);   /* the map is full */
    CHECK_INT(queue_cluster_set_slot(m, 7, "full", 1), -1);
    CHECK_INT(m->slot_node[7], -1);
    free(m);
}

int main(void)
{
    RUN(test_key_slot);
    RUN(test_parse_slots);
    RUN(test_redirect);
    RUN(test_set_slot);
    return check_finish();
}
