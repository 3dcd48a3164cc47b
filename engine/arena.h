/*
 * arena.h - bump allocator for strings that die together.
 *
 * DESCRIPTION
 *   A struct arena hands out copies of strings from blocks of at least
 *   ARENA_BLOCK bytes and frees them all at once. The worker keeps one per
 *   queue partition for the event fields of the outcomes waiting in its
 *   ack batch: every one of them is released when the batch has gone to
 *   Redis, so a message's twenty-odd field strings cost no malloc and no
 *   free of their own.
 *
 * OWNERSHIP
 *   The arena owns its blocks. A copy stays valid, and never moves, until
 *   arena_reset() or arena_free(). arena_reset() keeps the first block for
 *   the next batch and frees the others; arena_free() frees everything and
 *   accepts a zeroed struct (the empty arena: no block until the first
 *   copy).
 *
 * FAILURE MODES
 *   arena_strdup returns NULL when a new block cannot be allocated; the
 *   arena stays usable.
 */
#ifndef TERN_ENGINE_ARENA_H
#define TERN_ENGINE_ARENA_H

#include <stddef.h>

#define ARENA_BLOCK 65536   /* holds the fields of a usual ack batch */

struct arena_block;

struct arena {
    struct arena_block *head;   /* block being filled; older ones follow */
};

/* arena_strdup copies s (with its NUL) into the arena. */
char *arena_strdup(struct arena *a, const char *s);
/* arena_memdup copies n bytes (n > 0) into the arena; no alignment. */
void *arena_memdup(struct arena *a, const void *p, size_t n);
void arena_reset(struct arena *a);
void arena_free(struct arena *a);

#endif
