/* arena.c - bump allocator for strings that die together; see arena.h. */
#include "engine/arena.h"

#include <stdlib.h>
#include <string.h>

struct arena_block {
    struct arena_block *next;   /* the block filled before this one */
    size_t used, cap;           /* bytes of data[] */
    char data[];
};

/* new_block puts a block with room for at least n bytes in front. A
 * string longer than ARENA_BLOCK gets a block of its own size. */
static struct arena_block *new_block(struct arena *a, size_t n)
{
    size_t cap = n > ARENA_BLOCK ? n : ARENA_BLOCK;
    struct arena_block *b = malloc(sizeof(*b) + cap);
    if (b == NULL)
        return NULL;
    b->next = a->head;
    b->used = 0;
    b->cap = cap;
    a->head = b;
    return b;
}

char *arena_strdup(struct arena *a, const char *s)
{
    return arena_memdup(a, s, strlen(s) + 1);
}

void *arena_memdup(struct arena *a, const void *p, size_t n)
{
    struct arena_block *b = a->head;
    if (b == NULL || b->cap - b->used < n) {
        b = new_block(a, n);
        if (b == NULL)
            return NULL;
    }
    char *copy = b->data + b->used;
    memcpy(copy, p, n);
    b->used += n;
    return copy;
}

void arena_reset(struct arena *a)
{
    struct arena_block *b = a->head;
    if (b == NULL)
        return;
    /* Keep the oldest block (the last in the list): a normal batch fits
     * in it, so steady state allocates nothing. */
    while (b->next) {
        struct arena_block *next = b->next;
        free(b);
        b = next;
    }
    b->used = 0;
    a->head = b;
}

void arena_free(struct arena *a)
{
    struct arena_block *b = a->head;
    while (b) {
        struct arena_block *next = b->next;
        free(b);
        b = next;
    }
    a->head = NULL;
}
