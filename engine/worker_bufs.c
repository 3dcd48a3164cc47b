/*
 * worker_bufs.c - the worker's provided buffer ring: the SMTP connections'
 * multishot receives take their buffers from it, so no connection holds a
 * receive buffer of its own (see worker_int.h, struct worker_bufs).
 */
#include "engine/worker_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

/* The ring wants a power of two: round the configured count up. */
static unsigned ring_entries(int want)
{
    unsigned n = 1;
    while (n < (unsigned)want && n < WORKER_RECV_BUFS_MAX)
        n <<= 1;
    return n;
}

static void add_buf(struct worker_bufs *b, unsigned bid)
{
    io_uring_buf_ring_add(b->br, b->mem + (size_t)bid * WORKER_RECV_BUF_SIZE,
                          WORKER_RECV_BUF_SIZE, (unsigned short)bid, b->mask, 0);
}

static void unmap(struct worker_bufs *b)
{
    if (b->br)
        munmap(b->br, b->br_bytes);
    if (b->mem)
        munmap(b->mem, b->mem_bytes);
    b->br = NULL;
    b->mem = NULL;
}

int worker_bufs_init(struct worker *w)
{
    struct worker_bufs *b = &w->bufs;
    memset(b, 0, sizeof(*b));
    if (!w->cfg->recv_multishot)
        return 0;
    b->nbufs = ring_entries(w->cfg->recv_buffers);
    /* liburing 2.3 has no io_uring_setup_buf_ring: map the ring ourselves
     * (page aligned, as the kernel wants). */
    b->br_bytes = b->nbufs * sizeof(struct io_uring_buf);
    b->mem_bytes = (size_t)b->nbufs * WORKER_RECV_BUF_SIZE;
    void *r = mmap(NULL, b->br_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    void *m = mmap(NULL, b->mem_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    b->br = r == MAP_FAILED ? NULL : r;
    b->mem = m == MAP_FAILED ? NULL : m;
    if (b->br == NULL || b->mem == NULL) {
        fprintf(stderr, "tern: worker %d: receive buffers: mmap: %s; single-shot receives\n",
                w->id, strerror(errno));
        unmap(b);
        return 0;
    }
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (unsigned long)b->br;
    reg.ring_entries = b->nbufs;
    reg.bgid = WORKER_RECV_BGID;
    int rc = io_uring_register_buf_ring(&w->ring, &reg, 0);
    if (rc < 0) {
        /* an old kernel (before 5.19): the single-shot path */
        fprintf(stderr, "tern: worker %d: io_uring_register_buf_ring: %s; single-shot receives\n",
                w->id, strerror(-rc));
        unmap(b);
        return 0;
    }
    io_uring_buf_ring_init(b->br);
    b->mask = (unsigned)io_uring_buf_ring_mask(b->nbufs);
    for (unsigned i = 0; i < b->nbufs; i++)
        io_uring_buf_ring_add(b->br, b->mem + (size_t)i * WORKER_RECV_BUF_SIZE,
                              WORKER_RECV_BUF_SIZE, (unsigned short)i, b->mask, (int)i);
    io_uring_buf_ring_advance(b->br, (int)b->nbufs);
    b->on = 1;
    w->st.recv_ring_bufs = b->nbufs;
    return 1;
}

void worker_bufs_free(struct worker *w)
{
    /* after io_uring_queue_exit: nothing can write into them any more */
    if (w->bufs.held)
        fprintf(stderr, "tern: worker %d: %u receive buffers never returned to the ring\n",
                w->id, w->bufs.held);
    unmap(&w->bufs);
}

void worker_bufs_arm(struct worker *w, int fd, struct op *op)
{
    struct io_uring_sqe *sqe = worker_sqe(w);
    io_uring_prep_recv_multishot(sqe, fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = WORKER_RECV_BGID;
    io_uring_sqe_set_data(sqe, op);
}

const uint8_t *worker_bufs_take(struct worker *w, unsigned cqe_flags, int *bid)
{
    *bid = -1;
    if (!(cqe_flags & IORING_CQE_F_BUFFER))
        return NULL;
    unsigned id = cqe_flags >> IORING_CQE_BUFFER_SHIFT;
    if (id >= w->bufs.nbufs)
        return NULL;
    *bid = (int)id;
    w->bufs.held++;
    w->st.recv_bufs_used++;
    return w->bufs.mem + (size_t)id * WORKER_RECV_BUF_SIZE;
}

void worker_bufs_put(struct worker *w, int bid)
{
    if (bid < 0)
        return;
#ifdef __SANITIZE_ADDRESS__
    /* Sanitizer builds overwrite a buffer as it goes back: anything that
     * still reads it after this (a recycle too early, a pointer kept into
     * it) sees garbage, and the delivery tests of that pass fail. */
    memset(w->bufs.mem + (size_t)bid * WORKER_RECV_BUF_SIZE, 0xa5, WORKER_RECV_BUF_SIZE);
#endif
    add_buf(&w->bufs, (unsigned)bid);
    io_uring_buf_ring_advance(w->bufs.br, 1);
    w->bufs.held--;
}
