/*
 * fifo.h - growing a FIFO kept in a ring array: the expected-reply queues
 * of the workers' Redis links and of the listener's Redis connection.
 *
 * A ring is an array of *cap entries of elem bytes, the oldest at *head,
 * len of them in use, wrapping at *cap. The caller owns the array (free
 * it with free()); this only makes room.
 */
#ifndef TERN_ENGINE_FIFO_H
#define TERN_ENGINE_FIFO_H

#include <stdlib.h>
#include <string.h>

#define FIFO_FIRST_CAP 64

/* fifo_make_room: when the ring is full, a new array of twice the
 * entries (FIFO_FIRST_CAP the first time) with the entries in order from
 * index 0 (*head becomes 0). Returns 1, or 0 when out of memory (the ring
 * is left as it was). */
static inline int fifo_make_room(void **ring, size_t elem, size_t *head, size_t len, size_t *cap)
{
    if (len < *cap)
        return 1;
    size_t ncap = *cap ? *cap * 2 : FIFO_FIRST_CAP;
    char *n = malloc(ncap * elem);
    if (n == NULL)
        return 0;
    for (size_t i = 0; i < len; i++)
        memcpy(n + i * elem, (char *)*ring + ((*head + i) % *cap) * elem, elem);
    free(*ring);
    *ring = n;
    *head = 0;
    *cap = ncap;
    return 1;
}

#endif
