/*
 * age_list.h - an intrusive list of entries ordered by when each was
 * queued, oldest first: an idle sweep looks at the old end only and stops
 * at the first entry too young, so its work does not grow with the number
 * of entries (engine/worker_forget.c forgets destinations with it).
 *
 * An entry is queued at the young end with a time; the list keeps the
 * times in order even if the clock steps back (a time older than the
 * youngest entry's is raised to it). Requeueing (remove, then push) is
 * how an entry found still in use goes to the back of the line.
 *
 * OWNERSHIP
 *   The list owns nothing: struct age_node lives inside the caller's
 *   entry, which must stay at its address while listed and must be
 *   removed before it is freed. All operations are O(1); no allocation,
 *   no failure.
 */
#ifndef TERN_ENGINE_AGE_LIST_H
#define TERN_ENGINE_AGE_LIST_H

#include <stddef.h>
#include <stdint.h>

struct age_node {
    struct age_node *older, *younger;
    int64_t since_ms;             /* when it was queued */
    int listed;
};

struct age_list {
    struct age_node *oldest, *youngest;
    size_t n;
};

/* age_list_push queues n (not listed) at the young end at now_ms. */
void age_list_push(struct age_list *l, struct age_node *n, int64_t now_ms);
/* age_list_remove takes n off the list; nothing when it is not listed. */
void age_list_remove(struct age_list *l, struct age_node *n);
/* age_list_oldest: the entry queued first (NULL: empty). */
struct age_node *age_list_oldest(const struct age_list *l);

/* age_list_sweep hands the oldest entries queued at least keep_ms before
 * now_ms, at most max of them, to gone(ctx, n) in turn: it returns 1 when
 * it took n off the list (freeing it), or 0 to have n queued again at
 * now_ms and looked at keep_ms later. Stops at the first younger entry. */
void age_list_sweep(struct age_list *l, int64_t now_ms, int64_t keep_ms, int max,
                    int (*gone)(void *ctx, struct age_node *n), void *ctx);

#endif
