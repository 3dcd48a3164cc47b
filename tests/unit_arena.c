/*
 * unit_arena.c - engine/arena.c: copies are exact, never move while more
 * are made, survive a new block, and reset/free release everything (ASan
 * checks the leaks and the bounds).
 */
#include <string.h>

#include "engine/arena.h"
#include "tests/check.h"

static void test_copies_stay_put(void)
{
    struct arena a = {0};
    char *first = arena_strdup(&a, "mx");
    char *empty = arena_strdup(&a, "");
    CHECK_STR(first, "mx");
    CHECK_STR(empty, "");
    /* Enough copies to need several blocks: the first ones do not move. */
    char *p[4000];
    char tmp[32];
    for (int i = 0; i < 4000; i++) {
        snprintf(tmp, sizeof(tmp), "value-%d", i);
        p[i] = arena_strdup(&a, tmp);
        CHECK(p[i] != NULL);
    }
    CHECK_STR(first, "mx");
    int bad = 0;
    for (int i = 0; i < 4000; i++) {
        snprintf(tmp, sizeof(tmp), "value-%d", i);
        bad += strcmp(p[i], tmp) != 0;
    }
    CHECK_INT(bad, 0);
    arena_free(&a);
    CHECK(a.head == NULL);
}

static void test_long_string(void)
{
    /* Longer than a block: a block of its own size. */
    static char big[ARENA_BLOCK * 2];
    memset(big, 'x', sizeof(big) - 1);
    struct arena a = {0};
    char *s = arena_strdup(&a, "short");
    char *b = arena_strdup(&a, big);
    CHECK(b != NULL && strlen(b) == sizeof(big) - 1);
    CHECK_STR(s, "short");
    arena_free(&a);
}

static void test_memdup(void)
{
    /* Bytes with NULs inside, copied exactly, next to strings. */
    struct arena a = {0};
    static const unsigned char bytes[] = {'$', '2', '\r', '\n', 0, 'x', '\r', '\n'};
    char *s = arena_strdup(&a, "before");
    unsigned char *m = arena_memdup(&a, bytes, sizeof(bytes));
    char *t = arena_strdup(&a, "after");
    CHECK(m != NULL && memcmp(m, bytes, sizeof(bytes)) == 0);
    CHECK_STR(s, "before");
    CHECK_STR(t, "after");
    arena_free(&a);
}

static void test_reset_reuses(void)
{
    struct arena a = {0};
    char *s = arena_strdup(&a, "one");
    for (int i = 0; i < 20000; i++)
        arena_strdup(&a, "filler filler filler");
    arena_reset(&a);
    /* The first block is kept and filled from its start again. */
    char *t = arena_strdup(&a, "two");
    CHECK(t == s);
    CHECK_STR(t, "two");
    arena_reset(&a);
    arena_reset(&a);
    arena_free(&a);
    arena_free(&a);     /* a freed arena is the empty one */
    struct arena z = {0};
    arena_reset(&z);
    arena_free(&z);
}

int main(void)
{
    RUN(test_copies_stay_put);
    RUN(test_long_string);
    RUN(test_memdup);
    RUN(test_reset_reuses);
    return check_finish();
}
