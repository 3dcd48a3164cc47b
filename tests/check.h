/*
 * check.h - the tiny assertion kit every unit test binary uses.
 *
 * Each test binary prints one line per check group: "PASS name" or
 * "FAIL name: got ..., want ..." and exits non-zero if anything failed.
 * tests/run.sh counts those lines for the suite's "N passed, M failed".
 *
 * Usage:
 *   static void test_foo(void) { CHECK_INT(f(1), 2); CHECK_STR(s, "x"); }
 *   int main(void) { RUN(test_foo); return check_finish(); }
 */
#ifndef TERN_TESTS_CHECK_H
#define TERN_TESTS_CHECK_H

#include <stdio.h>
#include <string.h>

static int check_failed_total;   /* groups that failed */
static int check_group_failed;   /* failures in the running group */

#define CHECK_FAILF(...)                                                   \
    do {                                                                   \
        fprintf(stdout, "  %s:%d: ", __FILE__, __LINE__);                  \
        fprintf(stdout, __VA_ARGS__);                                      \
        fputc('\n', stdout);                                               \
        check_group_failed++;                                              \
    } while (0)

#define CHECK(cond)                                                        \
    do {                                                                   \
        if (!(cond)) CHECK_FAILF("check failed: %s", #cond);               \
    } while (0)

#define CHECK_INT(got, want)                                               \
    do {                                                                   \
        long long g_ = (long long)(got), w_ = (long long)(want);           \
        if (g_ != w_) CHECK_FAILF("%s: got %lld, want %lld", #got, g_, w_);\
    } while (0)

#define CHECK_STR(got, want)                                               \
    do {                                                                   \
        const char *g_ = (got), *w_ = (want);                              \
        if (g_ == NULL || w_ == NULL ? g_ != w_ : strcmp(g_, w_) != 0)     \
            CHECK_FAILF("%s: got \"%s\", want \"%s\"", #got,               \
                        g_ ? g_ : "(null)", w_ ? w_ : "(null)");           \
    } while (0)

/* Compare a (pointer, length) byte string with a C string. */
#define CHECK_MEM(gp, glen, want)                                          \
    do {                                                                   \
        const char *w_ = (want);                                           \
        size_t gl_ = (size_t)(glen);                                       \
        if (gl_ != strlen(w_) || memcmp((gp), w_, gl_) != 0)               \
            CHECK_FAILF("%s: got \"%.*s\", want \"%s\"", #gp, (int)gl_,    \
                        (const char *)(gp), w_);                           \
    } while (0)

#define RUN(fn)                                                            \
    do {                                                                   \
        check_group_failed = 0;                                            \
        fn();                                                              \
        if (check_group_failed) {                                          \
            printf("FAIL %s\n", #fn);                                      \
            check_failed_total++;                                          \
        } else {                                                           \
            printf("PASS %s\n", #fn);                                      \
        }                                                                  \
        fflush(stdout);                                                    \
    } while (0)

static inline int check_finish(void) { return check_failed_total ? 1 : 0; }

#endif
