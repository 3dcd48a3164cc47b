/*
 * srv_io.h - the io_uring plumbing of tern's SMTP servers: the injection
 * listener (engine/listener.c) and the test sink (bench/sink_loop.c).
 *
 * DESCRIPTION
 *   A struct srv_io is one ring with a provided-buffer ring that every
 *   connection's multishot recv draws from, plus a table of connection
 *   slots. It holds the mechanism both servers share; what a server does
 *   with the bytes (its SMTP session, counters, drops, Redis) stays with
 *   the server, reached through the callbacks below.
 *
 *   Ops carry (kind, slot, generation) in user_data (srv_tag). Kinds
 *   below SRV_OP_USER belong to this module; a server numbers its own
 *   from SRV_OP_USER. A connection counts its ops in flight (the multishot
 *   recv until its final CQE, the one send, any op the server adds) and
 *   may be freed only when it is closing, shut down, and at zero
 *   (srv_conn_done); a CQE whose generation does not match its slot is
 *   stale and ignored.
 *
 *   Sends: one in flight per connection from `sending`, which is never
 *   touched while the kernel reads it; new output goes to `pending` and
 *   the two swap when the send completes (srv_conn_service, once a batch,
 *   so that replies to everything pipelined in one batch leave together).
 *   A paced connection sends only the head of `pending` its server has
 *   released (may_send); only appends change `pending` between services.
 *
 * OWNERSHIP
 *   A server embeds struct srv_conn as the FIRST member of its own
 *   connection struct (conn_size bytes, allocated zeroed by srv_conn_new,
 *   kept across reuse of the slot and freed by srv_io_free). The
 *   connection owns its fd, its two buffers and its tls_conn; the server
 *   frees what it added, then calls srv_conn_release. The two buffers'
 *   memory stays with the slot for its next connection (emptied; up to
 *   SRV_KEEP_BUF_MAX bytes each, a larger one is freed): a connection per
 *   message then allocates no output buffers once the slots are warm.
 *
 * FAILURES
 *   srv_io_init fails (message in err) when the ring cannot be set up or
 *   the buffers cannot be mapped. srv_io_sqe returns NULL only when the
 *   queue stays full after a submit and sqe_block is off; callers close the
 *   connection then (CLOSE_ABORT). srv_conn_new returns NULL when out of
 *   slots (SRV_MAX_SLOTS) or memory. Output that cannot be buffered or
 *   encrypted closes the connection (SRV_CLOSE_ABORT).
 */
#ifndef TERN_ENGINE_SRV_IO_H
#define TERN_ENGINE_SRV_IO_H

#include <stddef.h>
#include <stdint.h>

#include <liburing.h>

#include "engine/buf.h"
#include "tls/tls.h"

#define SRV_SLOT_BITS 24
#define SRV_MAX_SLOTS (1u << SRV_SLOT_BITS)
/* Output buffer kept by a free slot for its next connection. */
#define SRV_KEEP_BUF_MAX (64 * 1024)

/* Op kinds of this module; a server's own start at SRV_OP_USER. */
enum srv_op { SRV_OP_RECV = 1, SRV_OP_SEND, SRV_OP_CANCEL, SRV_OP_USER };

/* How a connection ends: GRACEFUL sends what is queued first, ABORT drops
 * it. A later, stronger kind wins. */
enum srv_close { SRV_CLOSE_NONE, SRV_CLOSE_GRACEFUL, SRV_CLOSE_ABORT };

struct srv_conn {
    int fd;
    uint32_t slot, gen;
    int inflight;               /* ops whose last CQE has not arrived */
    unsigned recv_armed : 1, send_inflight : 1;
    unsigned dirty : 1;         /* on the batch's dirty list */
    unsigned shut : 1;          /* shutdown() done */
    unsigned in_use : 1;
    unsigned tls_done : 1;      /* handshake finished */
    unsigned paced : 1;         /* send only may_send bytes of pending */
    enum srv_close closing;
    struct buf sending;         /* bytes of the send in flight: read-only */
    struct buf pending;         /* output queued behind it */
    /* With paced set (the test sink's --latency; the listener never sets
     * it), only the first may_send bytes of pending may be sent: the
     * server raises it as their time comes, and each send lowers it. */
    size_t may_send;
    struct tls_conn *tls;       /* after STARTTLS */
};

struct srv_io_params {
    unsigned sq_entries, cq_entries;
    size_t buf_size;            /* one recv; <= TLS_FEED_MAX */
    unsigned nbufs;             /* power of two */
    unsigned short bgid;
    int sqe_block;              /* srv_io_sqe submits until an SQE is free */
    size_t conn_size;           /* sizeof the server's connection struct */
    uint32_t first_slots;       /* slot table size at the first grow */
};

struct srv_io {
    struct srv_io_params p;
    struct io_uring ring;
    int ring_ok;
    struct io_uring_buf_ring *br;
    size_t br_bytes;
    uint8_t *bufs;
    size_t bufs_bytes;
    unsigned br_mask;
    unsigned br_added;          /* buffers returned this batch */
    struct srv_conn **conns;    /* slots; freed slots keep their struct */
    uint32_t nconns, capconns;
    uint32_t *freelist;
    uint32_t nfree;
    uint32_t *dirty;            /* capacity capconns: each conn once */
    uint32_t ndirty;
};

static inline uint64_t srv_tag(unsigned kind, uint32_t slot, uint32_t gen)
{
    return ((uint64_t)kind << 56) | ((uint64_t)(slot & (SRV_MAX_SLOTS - 1)) << 32) | gen;
}
static inline unsigned srv_tag_kind(uint64_t t) { return (unsigned)(t >> 56); }
static inline uint32_t srv_tag_slot(uint64_t t) { return (uint32_t)(t >> 32) & (SRV_MAX_SLOTS - 1); }
static inline uint32_t srv_tag_gen(uint64_t t) { return (uint32_t)t; }

/* srv_io_init sets up the ring (SINGLE_ISSUER|DEFER_TASKRUN when the
 * kernel has them) and the provided buffers; on the thread that will use
 * it. On failure writes err; srv_io_free still has to be called. */
int srv_io_init(struct srv_io *io, const struct srv_io_params *p, char *err, size_t errlen);

/* srv_io_free exits the ring (cancelling every op), then calls drop for
 * each connection still in use (it must end in srv_conn_release) and
 * frees the slots and buffers. Accepts a zeroed struct. */
void srv_io_free(struct srv_io *io, void (*drop)(void *ctx, struct srv_conn *c), void *ctx);

/* An SQE, submitting what is queued when the SQ is full (see sqe_block). */
struct io_uring_sqe *srv_io_sqe(struct srv_io *io);

/* A new connection on fd, zeroed past its bookkeeping; NULL when out of
 * slots or memory (the caller still owns fd). */
struct srv_conn *srv_conn_new(struct srv_io *io, int fd);
/* Close the fd, free buffers and TLS, bump the generation, free the slot. */
void srv_conn_release(struct srv_io *io, struct srv_conn *c);
/* The live connection at slot with generation gen, or NULL. */
struct srv_conn *srv_conn_at(struct srv_io *io, uint32_t slot, uint32_t gen);
static inline struct srv_conn *srv_conn_of(struct srv_io *io, uint64_t tag)
{
    return srv_conn_at(io, srv_tag_slot(tag), srv_tag_gen(tag));
}

void srv_conn_dirty(struct srv_io *io, struct srv_conn *c);
void srv_conn_close(struct srv_io *io, struct srv_conn *c, enum srv_close k);
/* Closing, shut down and nothing in flight: the server may free it. */
static inline int srv_conn_done(const struct srv_conn *c)
{
    return c->closing && c->shut && c->inflight == 0;
}

/* Arm the multishot recv; 0 when no SQE was free. */
int srv_conn_arm_recv(struct srv_io *io, struct srv_conn *c);

/* Plaintext for the client, encrypted once TLS is up. Returns 0 when TLS
 * refused it (the connection is closed; tls_conn_error says why). */
int srv_conn_write(struct srv_io *io, struct srv_conn *c, const uint8_t *p, size_t n);
/* Move ciphertext TLS produced (handshake, alerts) to the output. */
void srv_conn_take_tls(struct srv_conn *c);
/* The last bytes are queued: close_notify once TLS is up, then close. */
void srv_conn_finish(struct srv_io *io, struct srv_conn *c);

/* What the server does at the steps of srv_conn_tls_data. */
struct srv_tls_hooks {
    /* The handshake just finished (count it, restart the SMTP session). */
    void (*up)(void *ctx, struct srv_conn *c);
    /* The handshake (in_handshake) or a later read failed: report and
     * close (tls_conn_error says why; an alert may be in the output). */
    void (*failed)(void *ctx, struct srv_conn *c, int in_handshake);
    /* Decrypted bytes for the session. */
    void (*plain)(void *ctx, struct srv_conn *c, const uint8_t *p, size_t n);
};

/* srv_conn_tls_data feeds ciphertext received after STARTTLS: drives the
 * handshake, then decrypts into plain (scratch, reset first) for
 * h->plain. The client's close_notify is answered and the connection
 * closed; input TLS cannot take aborts it. */
void srv_conn_tls_data(struct srv_io *io, struct srv_conn *c, const uint8_t *p, size_t n,
                       struct buf *plain, const struct srv_tls_hooks *h, void *ctx);

/* srv_io_cqe handles a CQE of this module's kinds and returns 1; 0 for a
 * server's own kind. A recv's bytes go to on_data (for a live connection
 * that is not closing), the buffer back to the ring, and when the
 * multishot ended it is re-armed or the connection closed (0: the client
 * closed). A send's bytes are consumed; a send error aborts. */
int srv_io_cqe(struct srv_io *io, const struct io_uring_cqe *cqe,
               void (*on_data)(void *ctx, struct srv_conn *c, const uint8_t *p, size_t n),
               void *ctx);

/* Return this batch's buffers to the kernel; once a batch, first. */
void srv_io_return_bufs(struct srv_io *io);

/* srv_conn_service starts the send and, once a closing connection has
 * nothing left to send, shuts it down and cancels its recv. Returns 1
 * when it shut it down now (the server cancels its own ops and stops
 * counting it then). Clears c->dirty. */
int srv_conn_service(struct srv_io *io, struct srv_conn *c);

/* Call service for every connection touched in this batch, then empty
 * the list. */
void srv_io_each_dirty(struct srv_io *io, void (*service)(void *ctx, struct srv_conn *c),
                       void *ctx);

#endif
