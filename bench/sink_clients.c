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

static int64_t now_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec;
}

/* One more event in the current second; the most in any second. */
static void per_second(int64_t now, int64_t *sec, uint64_t *in_sec, uint64_t *max)
{
    if (now != *sec) {
        *sec = now;
        *in_sec = 0;
    }
    if (++*in_sec > *max)
        *max = *in_sec;
}

void sink_clients_open(struct sink_clients *t, const char *peer)
{
    int64_t now = now_sec();
    pthread_mutex_lock(&t->mu);
    struct sink_client *c = slot(t, peer);
    if (c) {
        if (++c->open > c->peak)
            c->peak = c->open;
        per_second(now, &c->conn_sec, &c->conns_in_sec, &c->max_conns_per_s);
    }
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
    int64_t now = now_sec();
    pthread_mutex_lock(&t->mu);
    struct sink_client *c = slot(t, peer);
    if (c) {
        c->msgs++;
        per_second(now, &c->sec, &c->in_sec, &c->max_per_s);
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
                                     "max_messages_per_s=%llu max_conns_per_s=%llu\n",
                 c->ip, (unsigned long long)c->open, (unsigned long long)c->peak,
                 (unsigned long long)c->msgs, (unsigned long long)c->max_per_s,
                 (unsigned long long)c->max_conns_per_s);
        buf_append_str(out, line);
    }
    pthread_mutex_unlock(&t->mu);
}
