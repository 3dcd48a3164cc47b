/* sink_clients.c - --per-client: counters per client address (connections
 * open now and at most, messages, most messages in one second), for tests
 * of tern's shaping and egress addresses. See sink.h. */
#include "bench/sink.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

/* The address part of "ip:port" or "[ip]:port". */
static void peer_ip(const char *peer, char *ip, size_t cap)
{
    const char *colon = strrchr(peer, ':');
    size_t n = colon ? (size_t)(colon - peer) : strlen(peer);
    if (n >= 2 && peer[0] == '[' && peer[n - 1] == ']') {
        peer++;
        n -= 2;
    }
    if (n >= cap)
        n = cap - 1;
    memcpy(ip, peer, n);
    ip[n] = '\0';
}

/* The client's slot (mu held); NULL when the table is full. */
static struct sink_client *slot(struct sink_clients *t, const char *peer)
{
    char ip[SINK_CLIENT_IP_MAX];
    peer_ip(peer, ip, sizeof(ip));
    for (int i = 0; i < t->n; i++)
        if (strcmp(t->c[i].ip, ip) == 0)
            return &t->c[i];
    if (t->n >= SINK_CLIENTS_MAX)
        return NULL;
    struct sink_client *c = &t->c[t->n++];
    memset(c, 0, sizeof(*c));
    memcpy(c->ip, ip, sizeof(ip));
    return c;
}

void sink_clients_open(struct sink_clients *t, const char *peer)
{
    pthread_mutex_lock(&t->mu);
    struct sink_client *c = slot(t, peer);
    if (c && ++c->open > c->peak)
        c->peak = c->open;
    pthread_mutex_unlock(&t->mu);
}

void sink_clients_close(struct sink_clients *t, const char *peer)
{
    pthread_mutex_lock(&t->mu);
    struct sink_client *c = slot(t, peer);
    if (c && c->open)
        c->open--;
    pthread_mutex_unlock(&t->mu);
}

void sink_clients_message(struct sink_clients *t, const char *peer)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    pthread_mutex_lock(&t->mu);
    struct sink_client *c = slot(t, peer);
    if (c) {
        c->msgs++;
        if ((int64_t)ts.tv_sec != c->sec) {
            c->sec = (int64_t)ts.tv_sec;
            c->in_sec = 0;
        }
        if (++c->in_sec > c->max_per_s)
            c->max_per_s = c->in_sec;
    }
    pthread_mutex_unlock(&t->mu);
}

void sink_clients_format(struct sink_clients *t, struct buf *out)
{
    pthread_mutex_lock(&t->mu);
    for (int i = 0; i < t->n; i++) {
        char line[SINK_CLIENT_IP_MAX + 128];
        const struct sink_client *c = &t->c[i];
        snprintf(line, sizeof(line), "client %s conns_open=%llu peak_conns=%llu messages=%llu "
                                     "max_messages_per_s=%llu\n",
                 c->ip, (unsigned long long)c->open, (unsigned long long)c->peak,
                 (unsigned long long)c->msgs, (unsigned long long)c->max_per_s);
        buf_append_str(out, line);
    }
    pthread_mutex_unlock(&t->mu);
}
