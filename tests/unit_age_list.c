/*
 * unit_age_list.c - engine/age_list.c: entries come out oldest first,
 * removal anywhere keeps the links whole, a requeue goes to the young end,
 * a clock stepping back does not break the order, and removing an entry
 * not listed does nothing.
 */
#include "engine/age_list.h"
#include "tests/check.h"

#define N 8

/* the list's times from oldest to youngest, checked against the links
 * the other way and the count */
static int walk(const struct age_list *l, int64_t *out, int max)
{
    int k = 0;
    for (const struct age_node *a = l->oldest; a && k < max; a = a->younger)
        out[k++] = a->since_ms;
    int back = 0;
    for (const struct age_node *a = l->youngest; a; a = a->older)
        back++;
    return back == k && (size_t)k == l->n ? k : -1;
}

static void test_order_and_remove(void)
{
    struct age_list l = {0};
    struct age_node n[N] = {{0}};
    CHECK(age_list_oldest(&l) == NULL);
    for (int i = 0; i < N; i++)
        age_list_push(&l, &n[i], 100 + i);
    CHECK(age_list_oldest(&l) == &n[0]);
    age_list_remove(&l, &n[0]);   /* the oldest */
    age_list_remove(&l, &n[4]);   /* the middle */
    age_list_remove(&l, &n[N - 1]);   /* the youngest */
    int64_t t[N];
    CHECK_INT(walk(&l, t, N), N - 3);
    CHECK_INT(t[0], 101);
    CHECK_INT(t[2], 103);
    CHECK_INT(t[3], 105);
    CHECK_INT(t[4], 106);
    CHECK(age_list_oldest(&l) == &n[1]);
    CHECK_INT(n[4].listed, 0);
    age_list_remove(&l, &n[4]);   /* not listed: nothing */
    CHECK_INT(walk(&l, t, N), N - 3);
    for (int i = 1; i < N - 1; i++)
        age_list_remove(&l, &n[i]);
    CHECK(l.oldest == NULL && l.youngest == NULL);
    CHECK_INT(l.n, 0);
}

static void test_requeue(void)
{
    struct age_list l = {0};
    struct age_node n[3] = {{0}};
    for (int i = 0; i < 3; i++)
        age_list_push(&l, &n[i], 10);
    /* the sweep's "in use: later" */
    struct age_node *a = age_list_oldest(&l);
    age_list_remove(&l, a);
    age_list_push(&l, a, 50);
    CHECK(age_list_oldest(&l) == &n[1]);
    CHECK(l.youngest == &n[0]);
    CHECK_INT(n[0].since_ms, 50);
    int64_t t[3];
    CHECK_INT(walk(&l, t, 3), 3);
}

static void test_clock_back(void)
{
    struct age_list l = {0};
    struct age_node n[3] = {{0}};
    age_list_push(&l, &n[0], 1000);
    age_list_push(&l, &n[1], 400);   /* stepped back: raised to 1000 */
    age_list_push(&l, &n[2], 2000);
    int64_t t[3];
    CHECK_INT(walk(&l, t, 3), 3);
    CHECK_INT(t[0], 1000);
    CHECK_INT(t[1], 1000);
    CHECK_INT(t[2], 2000);
}

/* sweep: entries with an odd index are "unused" and taken off; even
 * ones are requeued; the count of calls shows where it stopped. */
struct sweep_ctx {
    struct age_list *l;
    struct age_node *base;
    int calls;
};

static int take_odd(void *ctx, struct age_node *n)
{
    struct sweep_ctx *c = ctx;
    c->calls++;
    if ((n - c->base) % 2 == 0)
        return 0;
    age_list_remove(c->l, n);
    return 1;
}

static void test_sweep(void)
{
    struct age_list l = {0};
    struct age_node n[6] = {{0}};
    for (int i = 0; i < 6; i++)
        age_list_push(&l, &n[i], i < 4 ? 100 : 900);   /* 4 old, 2 young */
    struct sweep_ctx c = {&l, n, 0};
    /* at most 3: n0 requeued, n1 gone, n2 requeued */
    age_list_sweep(&l, 1000, 500, 3, take_odd, &c);
    CHECK_INT(c.calls, 3);
    CHECK_INT(l.n, 5);
    CHECK(age_list_oldest(&l) == &n[3]);
    CHECK_INT(n[0].since_ms, 1000);
    /* no limit to speak of: n3 gone, then n4 is too young: stop */
    c.calls = 0;
    age_list_sweep(&l, 1000, 500, 100, take_odd, &c);
    CHECK_INT(c.calls, 1);
    CHECK_INT(l.n, 4);
    CHECK(age_list_oldest(&l) == &n[4]);
    CHECK(!n[1].listed && !n[3].listed && n[0].listed && n[2].listed);
}

int main(void)
{
    RUN(test_order_and_remove);
    RUN(test_requeue);
    RUN(test_clock_back);
    RUN(test_sweep);
    return check_finish();
}
