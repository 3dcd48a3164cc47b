/*
 * age_list.c - see age_list.h.
 */
#include "engine/age_list.h"

void age_list_push(struct age_list *l, struct age_node *n, int64_t now_ms)
{
    if (l->youngest && now_ms < l->youngest->since_ms)
        now_ms = l->youngest->since_ms;   /* the clock stepped back: stay in order */
    n->since_ms = now_ms;
    n->younger = NULL;
    n->older = l->youngest;
    if (l->youngest)
        l->youngest->younger = n;
    else
        l->oldest = n;
    l->youngest = n;
    n->listed = 1;
    l->n++;
}

void age_list_remove(struct age_list *l, struct age_node *n)
{
    if (!n->listed)
        return;
    if (n->older)
        n->older->younger = n->younger;
    else
        l->oldest = n->younger;
    if (n->younger)
        n->younger->older = n->older;
    else
        l->youngest = n->older;
    n->older = n->younger = NULL;
    n->listed = 0;
    l->n--;
}

struct age_node *age_list_oldest(const struct age_list *l)
{
    return l->oldest;
}

void age_list_sweep(struct age_list *l, int64_t now_ms, int64_t keep_ms, int max,
                    int (*gone)(void *ctx, struct age_node *n), void *ctx)
{
    for (int i = 0; i < max; i++) {
        struct age_node *n = l->oldest;
        if (n == NULL || now_ms - n->since_ms < keep_ms)
            return;
        if (gone(ctx, n))
            continue;
        age_list_remove(l, n);
        age_list_push(l, n, now_ms);
    }
}
