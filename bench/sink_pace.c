/*
 * sink_pace.c - tern-sink's --latency: output held for a fixed time
 * before it is sent (sink.h documents the marks and the queue).
 *
 * Only the server's side is delayed, which is enough to give every
 * exchange the client waits on (greeting, EHLO, each TLS flight, each
 * reply) one more round trip of latency_ms. The client's TCP handshake is
 * the kernel's and stays instant, so a connection's first send is held
 * twice as long: the round trip the connect would have cost.
 */
#include <stdlib.h>

#include "bench/sink.h"

int sink_pace_mark(struct sink_pace_conn *p, const struct srv_conn *c, int64_t due_ns)
{
    size_t used = buf_used(&c->pending);
    if (used < p->seen)     /* an abort emptied it */
        p->seen = used;
    size_t fresh = used - p->seen;
    if (fresh == 0)
        return 0;
    p->seen = used;
    p->marked = 1;
    if (p->n == SINK_PACE_MARKS) {
        p->bytes[(p->head + p->n - 1) % SINK_PACE_MARKS] += fresh;
        return 0;
    }
    unsigned i = (p->head + p->n) % SINK_PACE_MARKS;
    p->bytes[i] = fresh;
    p->due_ns[i] = due_ns;
    p->n++;
    return 1;
}

void sink_pace_release(struct sink_pace_conn *p, struct srv_conn *c, int64_t now_ns)
{
    while (p->n > 0 && p->due_ns[p->head] <= now_ns) {
        c->may_send += p->bytes[p->head];
        p->head = (p->head + 1) % SINK_PACE_MARKS;
        p->n--;
    }
}

void sink_pace_sent(struct sink_pace_conn *p, const struct srv_conn *c)
{
    p->seen = buf_used(&c->pending);
}

int sink_pace_push(struct sink_pace_queue *q, uint32_t slot, uint32_t gen, int64_t due_ns)
{
    if (q->n == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 256;
        struct sink_pace_entry *e = malloc(cap * sizeof(*e));
        if (e == NULL)
            return 0;
        for (size_t i = 0; i < q->n; i++)
            e[i] = q->e[(q->head + i) % q->cap];
        free(q->e);
        q->e = e;
        q->cap = cap;
        q->head = 0;
    }
    q->e[(q->head + q->n) % q->cap] = (struct sink_pace_entry){slot, gen, due_ns};
    q->n++;
    return 1;
}

int64_t sink_pace_next(const struct sink_pace_queue *q)
{
    return q->n ? q->e[q->head].due_ns : -1;
}

int sink_pace_pop_due(struct sink_pace_queue *q, int64_t now_ns, struct sink_pace_entry *e)
{
    if (q->n == 0 || q->e[q->head].due_ns > now_ns)
        return 0;
    *e = q->e[q->head];
    q->head = (q->head + 1) % q->cap;
    q->n--;
    return 1;
}

void sink_pace_queue_free(struct sink_pace_queue *q)
{
    free(q->e);
    *q = (struct sink_pace_queue){0};
}
