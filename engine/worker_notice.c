/*
 * worker_notice.c - ready notices: a second Redis connection per worker,
 * subscribed to its partitions' ready lists, so that a take goes out as
 * soon as mail arrives in an empty partition rather than at the next
 * idle poll.
 *
 * DESCRIPTION
 *   The enqueue script, and the ack script when it returns a message to
 *   ready, PUBLISH on the ready list's own key name when their RPUSH made
 *   the list non-empty (queue_scripts.c). Under load a ready list seldom
 *   empties, so notices are rare; an idle partition gets one per message.
 *   A notice marks the partition refilled and due for a take now, which
 *   also covers a notice that overtakes the reply of a take in flight. So
 *   does the confirmation of each partition's subscription: what was
 *   enqueued before it (its notice went to nobody) is taken then.
 *
 *   The connection only makes delivery prompt; correctness never depends
 *   on it. While it is down (Redis restarting, a subscriber limit) the
 *   partitions are polled every idle_poll as before, and it is reopened
 *   from the tick every NOTICE_RETRY_MS. The receive is its only ring
 *   operation: once that has completed with an error or EOF, nothing on
 *   the ring refers to the descriptor and it is closed at once.
 */
#include "engine/worker_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/resp_feed.h"

#define NOTICE_RETRY_MS 1000

static int notice_send_all(int fd, const uint8_t *p, size_t n)
{
    /* A fresh blocking socket takes a few hundred bytes at once. */
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k <= 0)
            return 0;
        p += k;
        n -= (size_t)k;
    }
    return 1;
}

static void notice_arm(struct worker *w)
{
    struct io_uring_sqe *sqe = worker_sqe(w);
    io_uring_prep_recv(sqe, w->notice_fd, w->notice_recv, NOTICE_RECV_SIZE, 0);
    io_uring_sqe_set_data(sqe, &w->op_notice);
    w->notice_armed = 1;
}

void worker_notice_free(struct worker *w)
{
    if (w->notice_fd >= 0)
        close(w->notice_fd);
    w->notice_fd = -1;
    if (w->notice_reader)
        redisReaderFree(w->notice_reader);
    w->notice_reader = NULL;
}

static void notice_close(struct worker *w, const char *why)
{
    if (why)
        fprintf(stderr, "tern: worker %d: ready notices lost (%s); polling until they are back\n", w->id,
                why);
    worker_notice_free(w);
    w->notice_retry_ms = w->now_ms + NOTICE_RETRY_MS;
}

/* SUBSCRIBE to the ready list of every partition the worker owns. */
static int notice_subscribe(struct worker *w)
{
    struct buf b;
    buf_init(&b, 0);
    buf_append_str(&b, "*");
    buf_append_u64(&b, (uint64_t)w->nparts + 1);
    buf_append_str(&b, "\r\n$9\r\nSUBSCRIBE\r\n");
    for (int i = 0; i < w->nparts; i++) {
        char key[QUEUE_PREFIX_MAX + 32];   /* "<pfx>:{p}:ready" */
        size_t n = queue_key(key, sizeof(key), &w->cfg->queue, w->parts[i].id, "ready");
        buf_append_str(&b, "$");
        buf_append_u64(&b, n);
        buf_append_str(&b, "\r\n");
        buf_append(&b, key, n);
        buf_append_str(&b, "\r\n");
    }
    int ok = !b.err && notice_send_all(w->notice_fd, buf_peek(&b), buf_used(&b));
    buf_free(&b);
    return ok;
}

void worker_notice_open(struct worker *w)
{
    /* Only to a Redis whose command link works: its connect waits (up to
     * REDIS_CONNECT_TIMEOUT_MS for a black-holed host), and so would this
     * one, stalling the worker's SMTP connections once a second. On a
     * cluster any master will do: a PUBLISH reaches every node. */
    if (w->notice_fd >= 0 || w->notice_armed || w->now_ms < w->notice_retry_ms || w->stopping ||
        w->redis_dead)
        return;
    const struct redis_link *to = NULL;
    for (int i = 0; i < w->nlinks && to == NULL; i++)
        if (!w->links[i]->down && !w->links[i]->warming)
            to = w->links[i];
    if (to == NULL)
        return;
    char err[256];
    w->notice_fd = worker_redis_connect(to->addr, err, sizeof(err));
    if (w->notice_fd < 0) {
        w->notice_retry_ms = w->now_ms + NOTICE_RETRY_MS;
        return;
    }
    w->notice_reader = redisReaderCreate();
    if (w->notice_reader == NULL || !notice_subscribe(w)) {
        notice_close(w, "cannot subscribe");
        return;
    }
    notice_arm(w);
}

/* The partition a channel "<pfx>:{p}:ready" names, if this worker owns it. */
static struct partition *notice_partition(struct worker *w, const char *ch, size_t len)
{
    const char *open = memchr(ch, '{', len);
    if (open == NULL)
        return NULL;
    int id = 0;
    const char *q = open + 1;
    for (; q < ch + len && *q >= '0' && *q <= '9' && id < QUEUE_PARTITIONS_MAX; q++)
        id = id * 10 + (*q - '0');
    if (q == open + 1 || q >= ch + len || *q != '}')
        return NULL;
    for (int i = 0; i < w->nparts; i++)
        if (w->parts[i].id == id)
            return &w->parts[i];
    return NULL;
}

static int notice_reply(void *ctx, redisReply *r)
{
    struct worker *w = ctx;
    /* ["message", channel, payload]; the subscribe confirmations are
     * ["subscribe", channel, count]. */
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 || r->element[0]->type != REDIS_REPLY_STRING ||
        r->element[1]->type != REDIS_REPLY_STRING)
        return 1;
    int message = strcmp(r->element[0]->str, "message") == 0;
    if (!message && strcmp(r->element[0]->str, "subscribe") != 0)
        return 1;
    struct partition *p = notice_partition(w, r->element[1]->str, r->element[1]->len);
    if (p == NULL)
        return 1;
    /* A confirmed subscription counts as a notice: mail enqueued after a
     * take came back empty but before the subscription was in place sent
     * its notice to nobody, and would wait for the idle poll (the likely
     * cause of the ~1 s maximum latency that `bench/run transactional`
     * showed now and then in its first run). */
    if (message)
        w->st.notices++;
    p->refilled = 1;     /* a take in flight may have missed it */
    p->empty = 0;
    p->next_poll_ms = 0;
    return 1;
}

void worker_notice_on_recv(struct worker *w, int res)
{
    w->notice_armed = 0;
    if (w->notice_fd < 0)
        return;
    if (res <= 0) {
        notice_close(w, res == 0 ? "EOF" : strerror(-res));
        return;
    }
    if (resp_feed(w->notice_reader, w->notice_recv, (size_t)res, notice_reply, w) < 0) {
        notice_close(w, "protocol error");
        return;
    }
    if (!w->stopping)
        notice_arm(w);
}
