/*
 * body_cost.c - what engine/smtp_body.c costs per byte on a realistic
 * message body: CRLF lines of 60 to 78 characters, about one line in 40
 * starting with '.', about 1% 8-bit bytes (the canonical form tern's
 * queue holds). For a 4 KiB and a 100 KiB body it times smtp_body_scan,
 * the DATA form (smtp_body_encode, dot-stuffing and terminator; and
 * smtp_body_walk with the scan's answer, which the engine's SMTP client
 * runs, here appending every piece as it does below 16 KiB), the
 * BDAT form (smtp_body_encode_chunk) and the two length counts, each over
 * about MB_PER_OP megabytes of input (bench/README.md).
 *
 *   build/tern-body-cost
 *   <size> <op> ns_per_byte=N gb_per_s=N      (one line per size and op)
 */
#include <stdio.h>
#include <stdlib.h>

#include "engine/smtp_body.h"
#include "bench/bench_clock.h"

#define MB_PER_OP 256           /* input bytes timed per figure, in MB */
#define LINE_MIN 60
#define LINE_MAX 78

static uint32_t rnd(uint32_t *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    return *seed >> 8;
}

/* make_body fills a body of n bytes (n >= 2) that ends in CRLF. */
static void make_body(uint8_t *d, size_t n)
{
    uint32_t seed = 1;
    size_t i = 0;
    while (i + 2 < n) {
        size_t line = LINE_MIN + rnd(&seed) % (LINE_MAX - LINE_MIN + 1);
        for (size_t k = 0; k < line && i + 2 < n; k++, i++) {
            if (k == 0 && rnd(&seed) % 40 == 0)
                d[i] = '.';
            else if (rnd(&seed) % 100 == 0)
                d[i] = 0xc3;
            else
                d[i] = (uint8_t)('a' + rnd(&seed) % 26);
        }
        if (i + 2 < n) {
            d[i++] = '\r';
            d[i++] = '\n';
        }
    }
    d[n - 2] = '\r';
    d[n - 1] = '\n';
}

enum op { OP_SCAN, OP_DATA, OP_DATA_SCANNED, OP_BDAT, OP_DATA_LEN, OP_BDAT_LEN, OP_COUNT };
static const char *const op_names[OP_COUNT] = {"scan",     "data",     "data_scanned",
                                               "bdat",     "data_len", "bdat_len"};

static void to_buf(void *ctx, const uint8_t *p, size_t n)
{
    buf_append(ctx, p, n);
}

/* run_op runs op once on d[0..n); its result goes to a volatile so that
 * the call is not optimised away. out is emptied first (the engine's output buffer is
 * reused between messages, so its growth is not part of the cost). */
static size_t run_op(enum op op, const uint8_t *d, size_t n, int canonical, struct buf *out)
{
    int e8;
    buf_reset(out);
    switch (op) {
    case OP_SCAN:
        return (size_t)smtp_body_scan(d, n, &e8) + (size_t)e8;
    case OP_DATA:
        return (size_t)smtp_body_encode(out, d, n) + buf_used(out);
    case OP_DATA_SCANNED:
        smtp_body_walk(d, n, 1, canonical, to_buf, out);
        return (size_t)!out->err + buf_used(out);
    case OP_BDAT:
        return (size_t)smtp_body_encode_chunk(out, d, n) + buf_used(out);
    case OP_DATA_LEN:
        return smtp_body_encoded_len(d, n);
    default:
        return smtp_body_chunk_len(d, n);
    }
}

int main(int argc, char **argv)
{
    static const size_t sizes[] = {4096, 100 * 1024};
    (void)argv;
    if (argc != 1) {
        fprintf(stderr, "usage: tern-body-cost\n");
        return 2;
    }
    volatile size_t sink = 0;
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        size_t n = sizes[s];
        uint8_t *d = malloc(n);
        if (d == NULL)
            return 1;
        make_body(d, n);
        int e8, canonical = smtp_body_scan(d, n, &e8);
        struct buf out;
        buf_init(&out, 0);
        size_t reps = (size_t)MB_PER_OP * 1000000 / n;
        for (int op = 0; op < OP_COUNT; op++) {
            sink += run_op(op, d, n, canonical, &out);       /* warm the caches and out */
            double t = bench_now_s();
            for (size_t r = 0; r < reps; r++)
                sink += run_op(op, d, n, canonical, &out);
            double ns_per_byte = (bench_now_s() - t) * 1e9 / ((double)reps * (double)n);
            printf("%zuk %s ns_per_byte=%.4f gb_per_s=%.2f\n", n / 1024, op_names[op],
                   ns_per_byte, 1 / ns_per_byte);
        }
        buf_free(&out);
        free(d);
    }
    return 0;
}
