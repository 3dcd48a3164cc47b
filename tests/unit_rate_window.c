/*
 * unit_rate_window.c - engine/rate_window.c: the steady rate leaves out a
 * slow start and a slow end, merges add up, and the cases without an
 * answer say 0.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "engine/rate_window.h"
#include "tests/check.h"

static struct rate_window a, b;

/* deliver n messages evenly over [from_ms, to_ms). */
static void spread(struct rate_window *w, int64_t from_ms, int64_t to_ms, int n)
{
    for (int i = 0; i < n; i++)
        rate_window_add(w, from_ms + (to_ms - from_ms) * i / n);
}

static void test_steady_skips_start_and_end(void)
{
    memset(&a, 0, sizeof(a));
    spread(&a, 0, 500, 50);          /* start-up: 100 msg/s */
    spread(&a, 500, 2500, 10000);    /* steady: 5,000 msg/s */
    spread(&a, 2500, 3500, 100);     /* one worker finishing alone */
    double s = rate_window_steady(&a, 0.1, 0.9);
    CHECK(fabs(s - 5000) < 100);
    /* the whole run's rate would be far lower: 10,150 / 3.5 s */
    CHECK(s > 10150 / 3.5 * 1.5);
}

static void test_merge(void)
{
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    spread(&a, 0, 1000, 3000);       /* two workers, 3,000 msg/s each */
    spread(&b, 0, 1000, 3000);
    rate_window_merge(&a, &b);
    CHECK_INT(a.n, 6000);
    double s = rate_window_steady(&a, 0.1, 0.9);
    CHECK(fabs(s - 6000) < 200);
}

static void test_no_answer(void)
{
    memset(&a, 0, sizeof(a));
    spread(&a, 0, 1000, RATE_WINDOW_MIN - 1);   /* too few */
    CHECK(rate_window_steady(&a, 0.1, 0.9) == 0);
    memset(&a, 0, sizeof(a));
    spread(&a, 0, 5, 1000);                      /* all in one slot */
    CHECK(rate_window_steady(&a, 0.1, 0.9) == 0);
    memset(&a, 0, sizeof(a));
    spread(&a, 0, 1000, 1000);
    rate_window_add(&a, (int64_t)RATE_WINDOW_SLOTS * RATE_WINDOW_SLOT_MS);   /* past the window */
    CHECK_INT(a.late, 1);
    CHECK(rate_window_steady(&a, 0.1, 0.9) == 0);
    CHECK(rate_window_steady(&a, 0.9, 0.1) == 0);
    memset(&a, 0, sizeof(a));
    rate_window_add(&a, -5);                     /* a clock step back: first slot */
    CHECK_INT(a.slot[0], 1);
}

int main(void)
{
    RUN(test_steady_skips_start_and_end);
    RUN(test_merge);
    RUN(test_no_answer);
    return check_finish();
}
