/*
 * srv_io.c - io_uring plumbing shared by the listener and the sink; see
 * srv_io.h.
 */
#include "engine/srv_io.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

static int ring_init(struct srv_io *io, char *err, size_t errlen)
{
    struct io_uring_params p;
    memset(&p, 0, sizeof(p));
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE;
    p.cq_entries = io->p.cq_entries;
    int ret = io_uring_queue_init_params(io->p.sq_entries, &io->ring, &p);
    if (ret < 0) {
        /* Older kernel: plain ring. */
        memset(&p, 0, sizeof(p));
        p.flags = IORING_SETUP_CQSIZE;
        p.cq_entries = io->p.cq_entries;
        ret = io_uring_queue_init_params(io->p.sq_entries, &io->ring, &p);
    }
    if (ret < 0) {
        snprintf(err, errlen, "io_uring_queue_init: %s", strerror(-ret));
        return 0;
    }
    io->ring_ok = 1;
    (void)io_uring_register_ring_fd(&io->ring);  /* an optimisation only */
    return 1;
}

static void add_buf(struct srv_io *io, unsigned bid, int offset)
{
    io_uring_buf_ring_add(io->br, io->bufs + (size_t)bid * io->p.buf_size,
                          (unsigned)io->p.buf_size, (unsigned short)bid, io->br_mask, offset);
}

/* liburing 2.3 has no io_uring_setup_buf_ring: map the ring ourselves. */
static int bufs_init(struct srv_io *io, char *err, size_t errlen)
{
    io->br_bytes = io->p.nbufs * sizeof(struct io_uring_buf);
    void *m = mmap(NULL, io->br_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    io->bufs_bytes = (size_t)io->p.nbufs * io->p.buf_size;
    void *b = mmap(NULL, io->bufs_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (m == MAP_FAILED || b == MAP_FAILED) {
        if (m != MAP_FAILED)
            munmap(m, io->br_bytes);
        if (b != MAP_FAILED)
            munmap(b, io->bufs_bytes);
        snprintf(err, errlen, "mmap: %s", strerror(errno));
        return 0;
    }
    io->br = m;
    io->bufs = b;
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (unsigned long)io->br;
    reg.ring_entries = io->p.nbufs;
    reg.bgid = io->p.bgid;
    int ret = io_uring_register_buf_ring(&io->ring, &reg, 0);
    if (ret < 0) {
        snprintf(err, errlen, "io_uring_register_buf_ring: %s", strerror(-ret));
        return 0;
    }
    io_uring_buf_ring_init(io->br);
    io->br_mask = (unsigned)io_uring_buf_ring_mask(io->p.nbufs);
    for (unsigned i = 0; i < io->p.nbufs; i++)
        add_buf(io, i, (int)i);
    io_uring_buf_ring_advance(io->br, (int)io->p.nbufs);
    return 1;
}

int srv_io_init(struct srv_io *io, const struct srv_io_params *p, char *err, size_t errlen)
{
    memset(io, 0, sizeof(*io));
    io->p = *p;
    return ring_init(io, err, errlen) && bufs_init(io, err, errlen);
}

void srv_io_free(struct srv_io *io, void (*drop)(void *ctx, struct srv_conn *c), void *ctx)
{
    /* Exiting the ring cancels every op; only then is it safe to free
     * the memory they point into. */
    if (io->ring_ok)
        io_uring_queue_exit(&io->ring);
    io->ring_ok = 0;
    for (uint32_t i = 0; i < io->nconns; i++) {
        struct srv_conn *c = io->conns[i];
        if (c->in_use) {
            c->inflight = 0;
            drop(ctx, c);
        }
        buf_free(&c->sending);
        buf_free(&c->pending);
        free(c);
    }
    free(io->conns);
    free(io->freelist);
    free(io->dirty);
    io->conns = NULL;
    io->freelist = io->dirty = NULL;
    io->nconns = io->capconns = io->nfree = io->ndirty = 0;
    if (io->br)
        munmap(io->br, io->br_bytes);
    if (io->bufs)
        munmap(io->bufs, io->bufs_bytes);
    io->br = NULL;
    io->bufs = NULL;
}

struct io_uring_sqe *srv_io_sqe(struct srv_io *io)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&io->ring);
    while (sqe == NULL) {
        io_uring_submit(&io->ring);
        sqe = io_uring_get_sqe(&io->ring);
        if (!io->p.sqe_block)
            break;
    }
    return sqe;
}

/* --- connection slots ---------------------------------------------------- */

static int grow_slots(struct srv_io *io)
{
    uint32_t ncap = io->capconns ? io->capconns * 2 : io->p.first_slots;
    if (ncap > SRV_MAX_SLOTS)
        return 0;
    struct srv_conn **nc = realloc(io->conns, ncap * sizeof(*nc));
    if (nc == NULL)
        return 0;
    io->conns = nc;
    uint32_t *nf = realloc(io->freelist, ncap * sizeof(*nf));
    if (nf == NULL)
        return 0;
    io->freelist = nf;
    uint32_t *nd = realloc(io->dirty, ncap * sizeof(*nd));
    if (nd == NULL)
        return 0;
    io->dirty = nd;
    io->capconns = ncap;
    return 1;
}

struct srv_conn *srv_conn_new(struct srv_io *io, int fd)
{
    uint32_t slot;
    if (io->nfree) {
        slot = io->freelist[--io->nfree];
    } else {
        if (io->nconns == io->capconns && !grow_slots(io))
            return NULL;
        io->conns[io->nconns] = calloc(1, io->p.conn_size);
        if (io->conns[io->nconns] == NULL)
            return NULL;
        slot = io->nconns++;
    }
    struct srv_conn *c = io->conns[slot];
    uint32_t gen = c->gen;
    struct buf sending = c->sending, pending = c->pending;  /* kept memory, empty */
    memset(c, 0, io->p.conn_size);
    c->slot = slot;
    c->gen = gen;
    c->fd = fd;
    c->in_use = 1;
    c->sending = sending;
    c->pending = pending;
    return c;
}

/* Empty a buffer for the slot's next connection, keeping its memory
 * unless it grew past SRV_KEEP_BUF_MAX. */
static void keep_buf(struct buf *b)
{
    if (b->cap > SRV_KEEP_BUF_MAX)
        buf_free(b);
    else
        buf_reset(b);
}

void srv_conn_release(struct srv_io *io, struct srv_conn *c)
{
    close(c->fd);
    tls_conn_free(c->tls);
    c->tls = NULL;
    keep_buf(&c->sending);
    keep_buf(&c->pending);
    c->in_use = 0;
    c->gen++;
    io->freelist[io->nfree++] = c->slot;
}

struct srv_conn *srv_conn_at(struct srv_io *io, uint32_t slot, uint32_t gen)
{
    if (slot >= io->nconns)
        return NULL;
    struct srv_conn *c = io->conns[slot];
    return c->in_use && c->gen == gen ? c : NULL;
}

void srv_conn_dirty(struct srv_io *io, struct srv_conn *c)
{
    if (!c->dirty) {
        c->dirty = 1;
        io->dirty[io->ndirty++] = c->slot;
    }
}

void srv_conn_close(struct srv_io *io, struct srv_conn *c, enum srv_close k)
{
    if (k > c->closing)
        c->closing = k;
    srv_conn_dirty(io, c);
}

int srv_conn_arm_recv(struct srv_io *io, struct srv_conn *c)
{
    struct io_uring_sqe *sqe = srv_io_sqe(io);
    if (sqe == NULL)
        return 0;
    io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = io->p.bgid;
    io_uring_sqe_set_data64(sqe, srv_tag(SRV_OP_RECV, c->slot, c->gen));
    c->recv_armed = 1;
    c->inflight++;
    return 1;
}

/* --- output and TLS ------------------------------------------------------ */

void srv_conn_take_tls(struct srv_conn *c)
{
    tls_conn_output_move(c->tls, &c->pending);
}

int srv_conn_write(struct srv_io *io, struct srv_conn *c, const uint8_t *p, size_t n)
{
    int ok = 1;
    if (n == 0)
        return 1;
    if (c->tls && c->tls_done) {
        if (tls_conn_write(c->tls, p, n) != TLS_OK) {
            ok = 0;
            srv_conn_close(io, c, SRV_CLOSE_ABORT);
        }
        srv_conn_take_tls(c);
    } else {
        buf_append(&c->pending, p, n);
    }
    if (c->pending.err)
        srv_conn_close(io, c, SRV_CLOSE_ABORT);
    srv_conn_dirty(io, c);
    return ok;
}

void srv_conn_finish(struct srv_io *io, struct srv_conn *c)
{
    if (c->tls && c->tls_done) {
        tls_conn_close(c->tls);
        srv_conn_take_tls(c);
    }
    srv_conn_close(io, c, SRV_CLOSE_GRACEFUL);
}

static void tls_data_lent(struct srv_io *io, struct srv_conn *c, struct buf *plain,
                          const struct srv_tls_hooks *h, void *ctx)
{
    if (!c->tls_done) {
        enum tls_status st = tls_conn_handshake(c->tls);
        srv_conn_take_tls(c);
        srv_conn_dirty(io, c);
        if (st == TLS_WANT_IO)
            return;
        if (st != TLS_OK) {
            h->failed(ctx, c, 1);
            return;
        }
        c->tls_done = 1;
        h->up(ctx, c);
    }
    buf_reset(plain);
    enum tls_status st = tls_conn_read(c->tls, plain);
    srv_conn_take_tls(c);
    srv_conn_dirty(io, c);
    if (buf_used(plain))
        h->plain(ctx, c, buf_peek(plain), buf_used(plain));
    if (c->closing)
        return;
    if (st == TLS_CLOSED)
        srv_conn_finish(io, c);
    else if (st == TLS_ERROR)
        h->failed(ctx, c, 0);
}

void srv_conn_tls_data(struct srv_io *io, struct srv_conn *c, const uint8_t *p, size_t n,
                       struct buf *plain, const struct srv_tls_hooks *h, void *ctx)
{
    /* Read in place: p is the ring's buffer, back in the ring once we
     * return, so what TLS left unread is copied before (tls.h). */
    if (!tls_conn_lend(c->tls, p, n)) {
        srv_conn_close(io, c, SRV_CLOSE_ABORT);
        return;
    }
    tls_data_lent(io, c, plain, h, ctx);
    if (c->tls && !tls_conn_unlend(c->tls))
        srv_conn_close(io, c, SRV_CLOSE_ABORT);
}

/* --- completions --------------------------------------------------------- */

static void on_recv(struct srv_io *io, const struct io_uring_cqe *cqe,
                    void (*on_data)(void *ctx, struct srv_conn *c, const uint8_t *p, size_t n),
                    void *ctx)
{
    struct srv_conn *c = srv_conn_of(io, cqe->user_data);
    int more = (cqe->flags & IORING_CQE_F_MORE) != 0;
    if (cqe->flags & IORING_CQE_F_BUFFER) {
        unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
        if (c && cqe->res > 0 && !c->closing)
            on_data(ctx, c, io->bufs + (size_t)bid * io->p.buf_size, (size_t)cqe->res);
        add_buf(io, bid, (int)io->br_added);
        io->br_added++;
    }
    if (c == NULL || more)
        return;
    /* The multishot recv ended. */
    c->recv_armed = 0;
    c->inflight--;
    srv_conn_dirty(io, c);
    if (c->closing)
        return;
    if (cqe->res == -ENOBUFS || cqe->res > 0) {
        /* Out of buffers (they come back at the end of this batch) or the
         * kernel ended the multishot for its own reasons: re-arm. */
        if (!srv_conn_arm_recv(io, c))
            srv_conn_close(io, c, SRV_CLOSE_ABORT);
    } else {
        srv_conn_close(io, c, cqe->res == 0 ? SRV_CLOSE_GRACEFUL : SRV_CLOSE_ABORT);
    }
}

static void on_send(struct srv_io *io, const struct io_uring_cqe *cqe)
{
    struct srv_conn *c = srv_conn_of(io, cqe->user_data);
    if (c == NULL)
        return;
    c->send_inflight = 0;
    c->inflight--;
    srv_conn_dirty(io, c);
    if (cqe->res < 0) {
        buf_reset(&c->sending);
        srv_conn_close(io, c, SRV_CLOSE_ABORT);
        return;
    }
    buf_consume(&c->sending, (size_t)cqe->res);
}

int srv_io_cqe(struct srv_io *io, const struct io_uring_cqe *cqe,
               void (*on_data)(void *ctx, struct srv_conn *c, const uint8_t *p, size_t n),
               void *ctx)
{
    switch (srv_tag_kind(cqe->user_data)) {
    case SRV_OP_RECV:
        on_recv(io, cqe, on_data, ctx);
        return 1;
    case SRV_OP_SEND:
        on_send(io, cqe);
        return 1;
    case SRV_OP_CANCEL:
        return 1;   /* cancel results (ENOENT, EALREADY) need nothing */
    default:
        return 0;
    }
}

void srv_io_return_bufs(struct srv_io *io)
{
    if (io->br_added) {
        io_uring_buf_ring_advance(io->br, (int)io->br_added);
        io->br_added = 0;
    }
}

/* Move what may go from pending to sending: all of it by swapping the
 * two, or (paced) the released head by copying it. */
static void take_pending(struct srv_io *io, struct srv_conn *c)
{
    size_t n = buf_used(&c->pending);
    if (c->paced && c->may_send < n) {
        if (c->may_send == 0)
            return;
        buf_append(&c->sending, buf_peek(&c->pending), c->may_send);
        if (c->sending.err) {
            srv_conn_close(io, c, SRV_CLOSE_ABORT);
            return;
        }
        buf_consume(&c->pending, c->may_send);
        c->may_send = 0;
        return;
    }
    struct buf t = c->sending;
    c->sending = c->pending;
    c->pending = t;
    c->may_send = c->paced ? c->may_send - n : 0;
}

static void start_send(struct srv_io *io, struct srv_conn *c)
{
    if (buf_used(&c->sending) == 0 && buf_used(&c->pending) > 0) {
        take_pending(io, c);
        if (c->closing == SRV_CLOSE_ABORT)
            return;
    }
    if (buf_used(&c->sending) == 0)
        return;
    struct io_uring_sqe *sqe = srv_io_sqe(io);
    if (sqe == NULL) {
        srv_conn_close(io, c, SRV_CLOSE_ABORT);
        return;
    }
    io_uring_prep_send(sqe, c->fd, buf_peek(&c->sending), buf_used(&c->sending), MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, srv_tag(SRV_OP_SEND, c->slot, c->gen));
    c->send_inflight = 1;
    c->inflight++;
}

int srv_conn_service(struct srv_io *io, struct srv_conn *c)
{
    int shut_now = 0;
    /* c->dirty stays set until the end: srv_conn_close below must not put
     * the connection on the list a second time. */
    if (c->closing == SRV_CLOSE_ABORT) {
        buf_reset(&c->pending);
        c->may_send = 0;
    }
    if (!c->send_inflight && c->closing != SRV_CLOSE_ABORT)
        start_send(io, c);
    if (c->closing && !c->shut &&
        (c->closing == SRV_CLOSE_ABORT ||
         (!c->send_inflight && buf_used(&c->sending) == 0 && buf_used(&c->pending) == 0))) {
        /* shutdown wakes the pending recv (it ends with 0); the cancel
         * covers a recv that is not waiting on the socket. */
        shutdown(c->fd, SHUT_RDWR);
        c->shut = 1;
        shut_now = 1;
        if (c->recv_armed) {
            struct io_uring_sqe *sqe = srv_io_sqe(io);
            if (sqe) {
                io_uring_prep_cancel64(sqe, srv_tag(SRV_OP_RECV, c->slot, c->gen), 0);
                sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
                io_uring_sqe_set_data64(sqe, srv_tag(SRV_OP_CANCEL, c->slot, c->gen));
            }
        }
    }
    c->dirty = 0;
    return shut_now;
}

void srv_io_each_dirty(struct srv_io *io, void (*service)(void *ctx, struct srv_conn *c),
                       void *ctx)
{
    for (uint32_t i = 0; i < io->ndirty; i++) {
        struct srv_conn *c = io->conns[io->dirty[i]];
        if (c->in_use && c->dirty)
            service(ctx, c);
    }
    io->ndirty = 0;
}
