/*
 * queue_cluster.c - the slot map of a Redis Cluster (queue_cluster.h).
 * Pure functions over replies and strings; no I/O.
 */
#include "queue/queue_cluster.h"

#include <stdio.h>
#include <string.h>

/* CRC16-XMODEM (polynomial 0x1021, initial value 0), bit by bit: the
 * keys hashed here are a few bytes ("{p}") and hashed once per map, so a
 * table would buy nothing. */
static uint16_t crc16(const char *s, size_t len)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)((uint16_t)(unsigned char)s[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc;
}

unsigned queue_key_slot(const char *key, size_t len)
{
    const char *open = memchr(key, '{', len);
    if (open) {
        size_t start = (size_t)(open - key) + 1;
        const char *close = memchr(key + start, '}', len - start);
        if (close && close > key + start)   /* "{}" is no tag: the whole key */
            return crc16(key + start, (size_t)(close - (key + start))) & (QUEUE_CLUSTER_SLOTS - 1);
    }
    return crc16(key, len) & (QUEUE_CLUSTER_SLOTS - 1);
}

unsigned queue_partition_slot(int partition)
{
    char tag[16];
    int n = snprintf(tag, sizeof(tag), "%d", partition);
    return crc16(tag, (size_t)n) & (QUEUE_CLUSTER_SLOTS - 1);
}

int queue_cluster_find_node(const struct queue_cluster_map *m, const char *host, int port)
{
    for (int i = 0; i < m->nnodes; i++)
        if (m->nodes[i].port == port && strcmp(m->nodes[i].host, host) == 0)
            return i;
    return -1;
}

int queue_cluster_add_node(struct queue_cluster_map *m, const char *host, int port)
{
    size_t hlen = strlen(host);
    if (hlen == 0 || hlen >= QUEUE_CLUSTER_HOST_MAX || port <= 0 || port > 65535)
        return -1;
    int i = queue_cluster_find_node(m, host, port);
    if (i < 0) {
        if (m->nnodes >= QUEUE_CLUSTER_NODES_MAX)
            return -1;
        i = m->nnodes++;
        memcpy(m->nodes[i].host, host, hlen + 1);
        m->nodes[i].port = port;
    }
    return i;
}

int queue_cluster_set_slot(struct queue_cluster_map *m, unsigned slot, const char *host, int port)
{
    if (slot >= QUEUE_CLUSTER_SLOTS)
        return -1;
    int i = queue_cluster_add_node(m, host, port);
    if (i >= 0)
        m->slot_node[slot] = (int8_t)i;
    return i;
}

int queue_cluster_parse_slots(const redisReply *r, const char *default_host,
                              struct queue_cluster_map *m, int *standalone, const char **err)
{
    *standalone = 0;
    m->nnodes = 0;
    memset(m->slot_node, -1, sizeof(m->slot_node));
    if (r == NULL) {
        *err = "no reply to CLUSTER SLOTS";
        return 0;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        /* The error of a Redis started without cluster-enabled. Any other
         * error (CLUSTER renamed away, a proxy) is reported as is. */
        if (r->str && strstr(r->str, "cluster support disabled")) {
            *standalone = 1;
            *err = "cluster support disabled";
        } else {
            *err = "CLUSTER SLOTS refused";
        }
        return 0;
    }
    if (r->type != REDIS_REPLY_ARRAY) {
        *err = "CLUSTER SLOTS: not an array";
        return 0;
    }
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        /* [start, end, [host, port, id, ...], replicas...] */
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
            e->element[0]->type != REDIS_REPLY_INTEGER || e->element[1]->type != REDIS_REPLY_INTEGER ||
            e->element[2]->type != REDIS_REPLY_ARRAY || e->element[2]->elements < 2) {
            *err = "CLUSTER SLOTS: malformed range";
            return 0;
        }
        long long lo = e->element[0]->integer, hi = e->element[1]->integer;
        const redisReply *node = e->element[2];
        if (lo < 0 || hi < lo || hi >= QUEUE_CLUSTER_SLOTS || node->element[0]->type != REDIS_REPLY_STRING ||
            node->element[1]->type != REDIS_REPLY_INTEGER) {
            *err = "CLUSTER SLOTS: malformed range";
            return 0;
        }
        /* Redis writes "" (or "?", before 7.0) for a node that announces
         * no address: it is the one we asked. */
        const char *host = node->element[0]->str;
        if (node->element[0]->len == 0 || strcmp(host, "?") == 0)
            host = default_host;
        if (node->element[0]->len && memchr(node->element[0]->str, '\0', node->element[0]->len)) {
            *err = "CLUSTER SLOTS: NUL in a host";
            return 0;
        }
        for (long long s = lo; s <= hi; s++) {
            if (queue_cluster_set_slot(m, (unsigned)s, host, (int)node->element[1]->integer) < 0) {
                *err = m->nnodes >= QUEUE_CLUSTER_NODES_MAX ? "CLUSTER SLOTS: too many masters"
                                                           : "CLUSTER SLOTS: bad host or port";
                return 0;
            }
        }
    }
    if (m->nnodes == 0) {
        *err = "CLUSTER SLOTS: no slot is served";
        return 0;
    }
    return 1;
}

int queue_cluster_node_of(const struct queue_cluster_map *m, int partition)
{
    return m->slot_node[queue_partition_slot(partition)];
}

int queue_cluster_parse_redirect(const char *s, size_t len, const char *default_host,
                                 unsigned *slot, char host[QUEUE_CLUSTER_HOST_MAX], int *port,
                                 int *ask)
{
    size_t i;
    if (len > 6 && memcmp(s, "MOVED ", 6) == 0) {
        *ask = 0;
        i = 6;
    } else if (len > 4 && memcmp(s, "ASK ", 4) == 0) {
        *ask = 1;
        i = 4;
    } else {
        return 0;
    }
    unsigned v = 0;
    size_t digits = 0;
    while (i < len && s[i] >= '0' && s[i] <= '9' && digits < 6) {
        v = v * 10 + (unsigned)(s[i++] - '0');
        digits++;
    }
    if (digits == 0 || v >= QUEUE_CLUSTER_SLOTS || i >= len || s[i] != ' ')
        return 0;
    i++;
    /* host:port, the port after the last colon (an IPv6 host has more). */
    const char *a = s + i;
    size_t alen = len - i;
    const char *colon = NULL;
    for (size_t k = 0; k < alen; k++)
        if (a[k] == ':')
            colon = a + k;
    if (colon == NULL)
        return 0;
    size_t hlen = (size_t)(colon - a);
    int p = 0;
    size_t plen = alen - hlen - 1;
    if (plen == 0 || plen > 5)
        return 0;
    for (size_t k = 0; k < plen; k++) {
        char c = colon[1 + k];
        if (c < '0' || c > '9')
            return 0;
        p = p * 10 + (c - '0');
    }
    if (p <= 0 || p > 65535)
        return 0;
    if (hlen == 0) {
        hlen = strlen(default_host);
        a = default_host;
    }
    if (hlen >= QUEUE_CLUSTER_HOST_MAX || memchr(a, '\0', hlen))
        return 0;
    memcpy(host, a, hlen);
    host[hlen] = '\0';
    *slot = v;
    *port = p;
    return 1;
}

void queue_cluster_addr_host(const char *addr, char host[QUEUE_CLUSTER_HOST_MAX])
{
    const char *colon = strrchr(addr, ':');
    size_t hl = colon ? (size_t)(colon - addr) : 0;
    if (hl >= 2 && addr[0] == '[' && addr[hl - 1] == ']')
        snprintf(host, QUEUE_CLUSTER_HOST_MAX, "%.*s", (int)(hl - 2), addr + 1);
    else
        snprintf(host, QUEUE_CLUSTER_HOST_MAX, "%.*s", (int)hl, addr);
}

void queue_cluster_addr(const char *host, int port, char out[QUEUE_CLUSTER_ADDR_MAX])
{
    if (strchr(host, ':'))
        snprintf(out, QUEUE_CLUSTER_ADDR_MAX, "[%s]:%d", host, port);
    else
        snprintf(out, QUEUE_CLUSTER_ADDR_MAX, "%s:%d", host, port);
}

void queue_cluster_node_addr(const struct queue_cluster_map *m, int i,
                             char out[QUEUE_CLUSTER_ADDR_MAX])
{
    queue_cluster_addr(m->nodes[i].host, m->nodes[i].port, out);
}
