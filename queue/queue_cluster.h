/*
 * queue_cluster.h - Redis Cluster routing for the queue: which node serves
 * a partition, read from CLUSTER SLOTS and corrected by MOVED replies.
 *
 * DESCRIPTION
 *   Every key of partition p carries the hash tag {p} (queue.h), so the
 *   whole partition lives in one of the cluster's 16,384 hash slots,
 *   queue_partition_slot(p). A struct queue_cluster_map says which node
 *   (a host and port) serves each slot. It is filled from the reply to
 *   CLUSTER SLOTS (queue_cluster_parse_slots) and updated one slot at a
 *   time from a MOVED error (queue_cluster_parse_redirect, then
 *   queue_cluster_set_slot). Only masters are used: the queue's commands
 *   all write.
 *
 *   This file does no I/O: the engine's workers, the CLI and the tests
 *   feed it replies and read the map. A standalone Redis answers CLUSTER
 *   SLOTS with an error ("ERR This instance has cluster support
 *   disabled"); queue_cluster_parse_slots then returns 0 with
 *   *standalone set, and the caller keeps its single connection.
 *
 * OWNERSHIP
 *   A map is a plain value (no pointers inside): whoever declares one owns
 *   it, and a copy is a full, independent map. ~33 KiB, mostly the slot
 *   table: allocate it, do not put it on a small stack.
 *
 * ERRORS
 *   Functions returning int return 1 on success, 0 on failure with a
 *   static description in *err.
 */
#ifndef TERN_QUEUE_QUEUE_CLUSTER_H
#define TERN_QUEUE_QUEUE_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#define QUEUE_CLUSTER_SLOTS      16384
#define QUEUE_CLUSTER_NODES_MAX  64     /* masters a map can name */
#define QUEUE_CLUSTER_HOST_MAX   256    /* a node's host, NUL included */
/* "[" host "]:" port and the NUL: what queue_cluster_node_addr writes. */
#define QUEUE_CLUSTER_ADDR_MAX   (QUEUE_CLUSTER_HOST_MAX + 8)

struct queue_cluster_node {
    char host[QUEUE_CLUSTER_HOST_MAX];
    int port;
};

struct queue_cluster_map {
    int nnodes;
    struct queue_cluster_node nodes[QUEUE_CLUSTER_NODES_MAX];
    int8_t slot_node[QUEUE_CLUSTER_SLOTS];   /* index into nodes; -1: unserved */
};

/* queue_key_slot: the cluster hash slot of a key (CRC16-XMODEM mod 16384
 * of the key, or of its first non-empty {...} hash tag), as Redis
 * computes it. */
unsigned queue_key_slot(const char *key, size_t len);

/* queue_partition_slot: the slot of every key of partition p. */
unsigned queue_partition_slot(int partition);

/* queue_cluster_parse_slots fills m from a CLUSTER SLOTS reply. A node
 * given with an empty host (a cluster announcing no endpoint) is taken to
 * be at default_host, the address the reply came from. Returns 1; 0 with
 * *standalone = 1 when r is the error of a Redis without cluster support;
 * 0 with *err for a malformed reply or more than QUEUE_CLUSTER_NODES_MAX
 * masters. Slots no range names are left unserved (-1). */
int queue_cluster_parse_slots(const redisReply *r, const char *default_host,
                              struct queue_cluster_map *m, int *standalone, const char **err);

/* queue_cluster_node_of: the node index serving partition p, or -1. */
int queue_cluster_node_of(const struct queue_cluster_map *m, int partition);

/* queue_cluster_find_node: the index of host:port in m, or -1. */
int queue_cluster_find_node(const struct queue_cluster_map *m, const char *host, int port);

/* queue_cluster_add_node: the index of host:port, added (serving no slot
 * yet) when new: for a node an ASK names, which serves the slot for one
 * command only. -1 when the map is full or host or port is out of range. */
int queue_cluster_add_node(struct queue_cluster_map *m, const char *host, int port);

/* queue_cluster_set_slot records that host:port serves slot, adding the
 * node when new. Returns its index, or -1 when the map is full or the
 * slot or host is out of range. */
int queue_cluster_set_slot(struct queue_cluster_map *m, unsigned slot, const char *host, int port);

/* queue_cluster_parse_redirect reads the error text of a redirection,
 * "MOVED <slot> <host>:<port>" or "ASK <slot> <host>:<port>" (len bytes,
 * as in redisReply.str). An empty host (":6380") means default_host.
 * Returns 1 with *ask set for ASK, 0 when s is no redirection. */
int queue_cluster_parse_redirect(const char *s, size_t len, const char *default_host,
                                 unsigned *slot, char host[QUEUE_CLUSTER_HOST_MAX], int *port,
                                 int *ask);

/* CLUSTER SLOTS as RESP, for the engine's own writers. */
#define QUEUE_CLUSTER_SLOTS_CMD "*2\r\n$7\r\nCLUSTER\r\n$5\r\nSLOTS\r\n"

/* queue_cluster_addr_host writes the host of an address in the form
 * queue_cluster_node_addr writes ("host:port", "[v6]:port"; "" for one
 * without a port): the default_host for a node that announces none,
 * which is the node the reply came from. */
void queue_cluster_addr_host(const char *addr, char host[QUEUE_CLUSTER_HOST_MAX]);

/* queue_cluster_node_addr writes node i's address in the form the
 * engine's and the CLI's connect take: "host:port", "[v6]:port";
 * queue_cluster_addr the same for any host and port (an ASK's target). */
void queue_cluster_node_addr(const struct queue_cluster_map *m, int i,
                             char out[QUEUE_CLUSTER_ADDR_MAX]);
void queue_cluster_addr(const char *host, int port, char out[QUEUE_CLUSTER_ADDR_MAX]);

#endif
