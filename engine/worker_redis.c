/*
 * worker_redis.c - the worker's Redis connection: connecting with a
 * bounded wait, noticing its loss, reconnecting with exponential backoff.
 *
 * DESCRIPTION
 *   Losing Redis (restart, failover, network) must not stop delivery: the
 *   worker keeps its SMTP connections going and keeps the outcomes they
 *   produce (ack records, with any bounce attached) in its partitions'
 *   ack lists until Redis is back. Nothing is written to the command
 *   buffer while the link is down, so at reconnect the buffer and the
 *   expected-reply queue are simply emptied: what was in flight at the
 *   loss either reached Redis or did not, and either way the lease makes
 *   it at-least-once. The held outcomes are bounded by max_in_memory
 *   (no take runs while Redis is away, and every held outcome was a job).
 *
 *   The loss is noticed on a ring completion (EOF, error, bad reply). The
 *   socket is shut down so any operation still in flight on it completes;
 *   the old descriptor is closed and a new one made only once no ring
 *   operation refers to it. The first thing sent on a new connection is
 *   SCRIPT LOAD for the three scripts (a restarted Redis has none; the
 *   SHAs do not change). Until all three are loaded ("warming") nothing
 *   else is sent: a Redis still loading its data set answers -LOADING to
 *   everything, and an ack sent then would be lost. A failed load is
 *   retried with the same backoff. Then the held acks go out.
 */
#include "engine/resp_pool.h"
#include "engine/worker_int.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* Wait for a TCP connect; connect() to a black-holed host would block
 * the whole worker for minutes otherwise. */
#define REDIS_CONNECT_TIMEOUT_MS  1000
#define REDIS_HOST_MAX            256

static int connect_wait(int fd, const struct sockaddr *sa, socklen_t len, int timeout_ms)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -1;
    int rc = connect(fd, sa, len);
    if (rc != 0 && errno == EINPROGRESS) {
        struct pollfd pf = {.fd = fd, .events = POLLOUT};
        rc = poll(&pf, 1, timeout_ms);
        if (rc == 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        if (rc < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0)
            return -1;
        if (soerr != 0) {
            errno = soerr;
            return -1;
        }
        rc = 0;
    }
    if (rc != 0)
        return -1;
    /* The ring does the I/O; blocking mode keeps its semantics simple. */
    return fcntl(fd, F_SETFL, fl);
}

int worker_redis_connect(const char *addr, char *err, size_t errlen)
{
    if (strncmp(addr, "unix:", 5) == 0) {
        struct sockaddr_un su = {.sun_family = AF_UNIX};
        if (strlen(addr + 5) >= sizeof(su.sun_path)) {
            snprintf(err, errlen, "redis socket path too long");
            return -1;
        }
        memcpy(su.sun_path, addr + 5, strlen(addr + 5) + 1);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect_wait(fd, (struct sockaddr *)&su, sizeof(su),
                                   REDIS_CONNECT_TIMEOUT_MS) != 0) {
            snprintf(err, errlen, "redis %s: %s", addr, strerror(errno));
            if (fd >= 0)
                close(fd);
            return -1;
        }
        return fd;
    }
    char host[REDIS_HOST_MAX];
    const char *colon = strrchr(addr, ':');
    if (colon == NULL || (size_t)(colon - addr) >= sizeof(host)) {
        snprintf(err, errlen, "redis address must be HOST:PORT or unix:PATH");
        return -1;
    }
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
    if (getaddrinfo(host, colon + 1, &hints, &res) != 0) {
        snprintf(err, errlen, "redis %s: cannot resolve", addr);
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect_wait(fd, res->ai_addr, res->ai_addrlen, REDIS_CONNECT_TIMEOUT_MS) != 0) {
        snprintf(err, errlen, "redis %s: %s", addr, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

/* backoff_next: the next attempt after a failed one, twice as far off
 * (REDIS_BACKOFF_MIN_MS .. REDIS_BACKOFF_MAX_MS). */
static void backoff_next(struct worker *w)
{
    w->redis_backoff_ms = w->redis_backoff_ms ? w->redis_backoff_ms * 2 : REDIS_BACKOFF_MIN_MS;
    if (w->redis_backoff_ms > REDIS_BACKOFF_MAX_MS)
        w->redis_backoff_ms = REDIS_BACKOFF_MAX_MS;
    w->redis_retry_ms = w->now_ms + w->redis_backoff_ms;
}

void worker_redis_lost(struct worker *w, const char *why)
{
    if (w->redis_down || w->redis_dead)
        return;
    fprintf(stderr, "tern: worker %d: Redis connection lost (%s); reconnecting\n", w->id, why);
    w->redis_down = 1;
    w->redis_warming = 0;
    w->scripts_pending = 0;
    w->st.redis_losses++;
    backoff_next(w);
    /* Make any receive or send still on the ring complete now. */
    shutdown(w->rfd, SHUT_RDWR);
    /* Replies to what was sent will never come. A take in flight leaves
     * its messages leased: their lease brings them back. */
    worker_rq_drop(w);
    w->in_take = 0;
    for (int i = 0; i < w->nparts; i++) {
        w->parts[i].take_inflight = 0;
        w->parts[i].take_asked = 0;
        w->parts[i].empty = 0;   /* unknown until Redis answers again */
    }
}

static void load_scripts(struct worker *w)
{
    w->scripts_failed = 0;
    w->scripts_pending = worker_redis_load_scripts(w);
}

void worker_redis_script_reply(struct worker *w, const redisReply *r)
{
    int failed = r->type == REDIS_REPLY_ERROR;
    if (failed)
        fprintf(stderr, "tern: worker %d: SCRIPT LOAD failed: %s\n", w->id, r->str ? r->str : "?");
    if (!w->redis_warming || w->scripts_pending == 0)
        return;
    w->scripts_failed |= failed;
    if (--w->scripts_pending > 0)
        return;
    if (w->scripts_failed) {   /* e.g. -LOADING: try again later */
        backoff_next(w);
        return;
    }
    w->redis_warming = 0;
    w->redis_backoff_ms = 0;
    fprintf(stderr, "tern: worker %d: Redis ready\n", w->id);
}

static void redis_reopen(struct worker *w)
{
    char err[256];
    int fd = worker_redis_connect(w->cfg->redis, err, sizeof(err));
    if (fd < 0) {
        backoff_next(w);
        fprintf(stderr, "tern: worker %d: Redis reconnect failed: %s; next try in %lld ms\n",
                w->id, err, (long long)w->redis_backoff_ms);
        return;
    }
    redisReader *r = resp_pool_reader_new();
    if (r == NULL) {
        close(fd);
        backoff_next(w);
        return;
    }
    r->maxbuf = 0;   /* keep the read buffer: replies are large */
    resp_pool_reader_free(w->reader);
    w->reader = r;
    w->rfd = fd;
    /* Commands built before the loss went with it (see above). */
    buf_reset(&w->rout.active);
    buf_reset(&w->rout.pending);
    w->redis_down = 0;
    w->redis_warming = 1;
    w->st.redis_reconnects++;
    fprintf(stderr, "tern: worker %d: Redis reconnected\n", w->id);
    load_scripts(w);
    worker_redis_arm_recv(w);
}

void worker_redis_tick(struct worker *w)
{
    if (w->redis_dead || (!w->redis_down && !w->redis_warming))
        return;
    if (w->stopping && w->now_ms > w->stop_deadline_ms) {
        /* Stopping, and Redis did not come back in the grace period: the
         * held outcomes are dropped; their leases make them at-least-once. */
        fprintf(stderr, "tern: worker %d: Redis still not usable at the end of the grace "
                        "period; held outcomes left to their leases\n", w->id);
        w->redis_dead = 1;
        return;
    }
    if (!w->redis_down) {   /* warming: load the scripts again after a failure */
        if (w->scripts_pending == 0 && w->now_ms >= w->redis_retry_ms)
            load_scripts(w);
        return;
    }
    /* The old descriptor may only go once no ring operation uses it. */
    if (w->rrecv_armed || w->rout.inflight || w->now_ms < w->redis_retry_ms)
        return;
    if (w->rfd >= 0) {
        close(w->rfd);
        w->rfd = -1;
    }
    redis_reopen(w);
}
