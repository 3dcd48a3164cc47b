/* unit_srv_io.c - engine/srv_io over a socketpair: connection slots and
 * their generations (a stale tag finds nothing), a reply sent and the
 * client's bytes received through the provided buffers, and a graceful
 * close that shuts the socket, ends the recv and frees the slot. */
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine/srv_io.h"
#include "tests/check.h"

#define T_BUF_SIZE 4096
#define T_WAIT_MAX 64   /* batches waited for before giving up */
#define T_HANG_S   10   /* a batch with nothing completing: give up (a bug, not a slow run) */

struct server {
    struct srv_io io;
    char got[256];      /* bytes on_data saw */
    size_t ngot;
    int freed;          /* connections released by the test */
};

static void on_data(void *ctx, struct srv_conn *c, const uint8_t *p, size_t n)
{
    struct server *s = ctx;
    (void)c;
    if (n > sizeof(s->got) - s->ngot)
        n = sizeof(s->got) - s->ngot;
    memcpy(s->got + s->ngot, p, n);
    s->ngot += n;
}

static void service(void *ctx, struct srv_conn *c)
{
    struct server *s = ctx;
    srv_conn_service(&s->io, c);
    if (srv_conn_done(c)) {
        srv_conn_release(&s->io, c);
        s->freed++;
    }
}

static void drop(void *ctx, struct srv_conn *c)
{
    struct server *s = ctx;
    srv_conn_release(&s->io, c);
}

/* One batch: submit, wait for a completion, handle them all. */
static void batch(struct server *s)
{
    srv_io_each_dirty(&s->io, service, s);
    srv_io_return_bufs(&s->io);
    struct __kernel_timespec ts = {.tv_sec = T_HANG_S};
    struct io_uring_cqe *cqe;
    io_uring_submit_and_wait_timeout(&s->io.ring, &cqe, 1, &ts, NULL);
    unsigned head, n = 0;
    io_uring_for_each_cqe(&s->io.ring, head, cqe) {
        CHECK(srv_io_cqe(&s->io, cqe, on_data, s));
        n++;
    }
    io_uring_cq_advance(&s->io.ring, n);
    srv_io_each_dirty(&s->io, service, s);
}

/* A server and a connection on one end of a socketpair (the test's end
 * in *peer); NULL, everything freed, when any of it fails. */
static struct srv_conn *setup(struct server *s, int *peer)
{
    static const struct srv_io_params p = {
        .sq_entries = 16, .cq_entries = 64, .buf_size = T_BUF_SIZE, .nbufs = 8, .bgid = 3,
        .sqe_block = 1, .conn_size = sizeof(struct srv_conn), .first_slots = 2,
    };
    char err[256] = "";
    int fds[2];
    memset(s, 0, sizeof(*s));
    if (!srv_io_init(&s->io, &p, err, sizeof(err))) {
        CHECK_FAILF("srv_io_init: %s", err);
        srv_io_free(&s->io, drop, s);
        return NULL;
    }
    CHECK_INT(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    struct srv_conn *c = srv_conn_new(&s->io, fds[0]);
    CHECK(c != NULL);
    if (c == NULL) {
        close(fds[0]);
        close(fds[1]);
        srv_io_free(&s->io, drop, s);
        return NULL;
    }
    *peer = fds[1];
    return c;
}

static void test_slots(void)
{
    struct server s;
    int peer;
    struct srv_conn *a = setup(&s, &peer);
    if (a == NULL)
        return;
    struct srv_conn *b = srv_conn_new(&s.io, peer);
    struct srv_conn *c = srv_conn_new(&s.io, dup(peer));     /* grows the table */
    CHECK(b != NULL && c != NULL);
    if (b == NULL || c == NULL) {
        srv_io_free(&s.io, drop, &s);
        return;
    }
    CHECK_INT(s.io.nconns, 3);
    uint64_t old = srv_tag(SRV_OP_RECV, b->slot, b->gen);
    CHECK(srv_conn_of(&s.io, old) == b);
    srv_conn_release(&s.io, b);
    CHECK(srv_conn_of(&s.io, old) == NULL);        /* freed: stale */
    struct srv_conn *d = srv_conn_new(&s.io, dup(a->fd));
    CHECK(d == b);                                  /* the slot is reused ... */
    CHECK(srv_conn_of(&s.io, old) == NULL);        /* ... under a new generation */
    CHECK(srv_conn_at(&s.io, 7, 0) == NULL);
    srv_io_free(&s.io, drop, &s);                   /* releases a, c, d */
}

static void test_reply_recv_close(void)
{
    struct server s;
    int peer;
    struct srv_conn *c = setup(&s, &peer);
    if (c == NULL)
        return;
    CHECK_INT(srv_conn_arm_recv(&s.io, c), 1);
    CHECK_INT(srv_conn_write(&s.io, c, (const uint8_t *)"220 hi\r\n", 8), 1);
    batch(&s);                                      /* the send completes */
    char in[64] = "";
    CHECK_INT(read(peer, in, sizeof(in) - 1), 8);
    CHECK_STR(in, "220 hi\r\n");

    CHECK_INT(write(peer, "QUIT\r\n", 6), 6);
    for (int i = 0; i < T_WAIT_MAX && s.ngot < 6; i++)
        batch(&s);
    CHECK_INT(s.ngot, 6);
    CHECK(memcmp(s.got, "QUIT\r\n", 6) == 0);

    srv_conn_write(&s.io, c, (const uint8_t *)"221 bye\r\n", 9);
    srv_conn_finish(&s.io, c);                      /* graceful: after the reply */
    for (int i = 0; i < T_WAIT_MAX && !s.freed; i++)
        batch(&s);
    CHECK_INT(s.freed, 1);
    memset(in, 0, sizeof(in));
    CHECK_INT(read(peer, in, sizeof(in) - 1), 9);
    CHECK_STR(in, "221 bye\r\n");
    CHECK_INT(read(peer, in, sizeof(in)), 0);     /* then EOF */
    close(peer);
    srv_io_free(&s.io, drop, &s);
}

int main(void)
{
    RUN(test_slots);
    RUN(test_reply_recv_close);
    return check_finish();
}
