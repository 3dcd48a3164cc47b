/*
 * unit_worker_site.c - engine/worker_site.c: a site's connections beyond
 * max_connections follow its transaction times (site_txn_time,
 * site_max_conns). The site starts at max_connections; it may open more
 * only while mail waits for room and its transactions take no longer than
 * its quickest (a round trip); a queue (times twice the least) takes them
 * back; never more than max_connections per destination nor the worker's
 * share of the host's limit; a backoff's lower limit holds for the site.
 * At its connection cap, with CHUNKING, it stacks more transactions on
 * each connection instead (site_depth).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/worker_int.h"
#include "tests/check.h"

struct fixture {
    struct engine e;
    struct worker w;
    struct site s;
    struct dest d;
};

static void setup(struct fixture *f, int max_conns, int per_host, int ndests, int nworkers)
{
    memset(f, 0, sizeof(*f));
    f->e.nworkers = nworkers;
    f->w.e = &f->e;
    f->w.now_us = 1000000;
    f->s.lim.max_connections = max_conns;
    f->s.lim.max_connections_per_host = per_host;
    f->s.ndests = ndests;
    f->d.lim = f->s.lim;
    f->d.site = &f->s;
}

/* One period of transactions of `us` each, `waited` marking that mail
 * found no room: eight samples, then the ninth a period later gives the
 * verdict (the one before ended with one, so this one sees only these). */
static void period(struct fixture *f, int64_t us, int waited)
{
    for (int k = 0; k < 8; k++) {
        f->w.now_us += 1;
        site_txn_time(&f->w, &f->s, us);
    }
    f->s.waited = waited;
    f->w.now_us += (us > 10000 ? us : 10000) + 1;
    site_txn_time(&f->w, &f->s, us);
}

static void test_round_trip_grows(void)
{
    struct fixture f;
    setup(&f, 20, 100, 100, 2);
    CHECK_INT(site_max_conns(&f.d), 20);
    period(&f, 20000, 1);   /* the first samples set the least */
    period(&f, 20000, 1);
    CHECK(site_max_conns(&f.d) > 20);
    for (int i = 0; i < 10; i++)
        period(&f, 20500, 1);
    /* the worker's share of the host's 100 slots */
    CHECK_INT(site_max_conns(&f.d), 50);
    CHECK(f.w.st.site_grown >= 2);
}

static void test_no_wait_no_growth(void)
{
    struct fixture f;
    setup(&f, 20, 100, 100, 2);
    for (int i = 0; i < 10; i++)
        period(&f, 20000, 0);
    CHECK_INT(site_max_conns(&f.d), 20);
    CHECK_INT(f.w.st.site_grown, 0);
}

static void test_queue_no_growth_and_shrinks(void)
{
    struct fixture f;
    setup(&f, 20, 1000, 100, 1);
    period(&f, 100, 0);   /* quick once: loopback, nothing waiting */
    for (int i = 0; i < 5; i++)
        period(&f, 3000, 1);   /* then 30 times that: a queue, not a round trip */
    CHECK_INT(site_max_conns(&f.d), 20);
    CHECK_INT(f.w.st.site_grown, 0);

    setup(&f, 20, 1000, 100, 1);
    for (int i = 0; i < 4; i++)
        period(&f, 20000, 1);
    int grown = site_max_conns(&f.d);
    CHECK(grown > 20);
    period(&f, 45000, 1);   /* over twice the least: a quarter back */
    CHECK_INT(site_max_conns(&f.d), grown - 5);
    for (int i = 0; i < 40; i++)
        period(&f, 45000, 1);
    CHECK_INT(site_max_conns(&f.d), 20);   /* never below max_connections */
}

static void test_caps(void)
{
    struct fixture f;
    /* three destinations at max_connections 1: at most 3 */
    setup(&f, 1, 100, 3, 2);
    for (int i = 0; i < 10; i++)
        period(&f, 100000, 1);
    CHECK_INT(site_max_conns(&f.d), 3);
    /* a backoff lowered the destination's limit: the site keeps to it */
    setup(&f, 20, 100, 100, 1);
    for (int i = 0; i < 6; i++)
        period(&f, 20000, 1);
    CHECK(site_max_conns(&f.d) > 20);
    f.d.bo.limit = 5;
    CHECK_INT(site_max_conns(&f.d), dest_max_conns(&f.d));
    CHECK(dest_max_conns(&f.d) < 20);
}

/* At its connection cap, with CHUNKING, the site stacks deeper instead,
 * up to SMTP_PIPELINE_MAX; without CHUNKING it does not (DATA stacks one
 * at most); a queue halves the extra depth before it gives connections
 * back. */
static void test_depth_after_cap(void)
{
    struct fixture f;
    setup(&f, 20, 100, 100, 2);
    f.s.lim.max_txns_in_flight = 4;
    for (int i = 0; i < 10; i++)
        period(&f, 20000, 1);
    CHECK_INT(site_max_conns(&f.d), 50);
    CHECK_INT(site_depth(&f.s), 4);   /* no CHUNKING seen */
    CHECK_INT(f.w.st.site_deepened, 0);
    f.s.chunking = 1;
    period(&f, 20000, 1);
    CHECK_INT(site_depth(&f.s), 6);
    for (int i = 0; i < 10; i++)
        period(&f, 20000, 1);
    CHECK_INT(site_depth(&f.s), SMTP_PIPELINE_MAX);
    period(&f, 45000, 1);   /* a queue: depth first */
    CHECK(site_depth(&f.s) < SMTP_PIPELINE_MAX);
    CHECK_INT(site_max_conns(&f.d), 50);
    for (int i = 0; i < 10; i++)
        period(&f, 45000, 1);
    CHECK_INT(site_depth(&f.s), 4);
    CHECK(site_max_conns(&f.d) < 50);

    /* max_transactions_in_flight = 1: one at a time, kept */
    setup(&f, 1, 100, 1, 1);
    f.s.lim.max_txns_in_flight = 1;
    f.s.chunking = 1;
    for (int i = 0; i < 10; i++)
        period(&f, 20000, 1);
    CHECK_INT(site_depth(&f.s), 1);
    CHECK_INT(f.w.st.site_deepened, 0);
}

int main(void)
{
    RUN(test_round_trip_grows);
    RUN(test_no_wait_no_growth);
    RUN(test_queue_no_growth_and_shrinks);
    RUN(test_caps);
    RUN(test_depth_after_cap);
    return check_finish();
}
