/*
 * test_certs.h - the test PKI for C unit tests: scripts/gen-test-certs.sh
 * into a fresh temporary directory, paths into it, and its removal.
 *
 * Usage (from the repository root, as tests/run.sh runs them):
 *   if (!test_certs_make("unit-tls")) return 1;
 *   ... cert_path("server.pem") ...
 *   test_certs_remove();
 *
 * One directory per test binary (static state: these are single-threaded
 * test programs, not library code).
 */
#ifndef TERN_TESTS_TEST_CERTS_H
#define TERN_TESTS_TEST_CERTS_H

#include <stdio.h>
#include <stdlib.h>

#define TEST_CERTS_PATH_MAX 512

static char test_certs_dir[128];

/* cert_path: DIR/name, from a small ring so several can be live at once. */
static const char *cert_path(const char *name)
{
    static char ring[8][TEST_CERTS_PATH_MAX];
    static int next;
    char *p = ring[next++ % 8];
    snprintf(p, TEST_CERTS_PATH_MAX, "%.127s/%.200s", test_certs_dir, name);
    return p;
}

/* test_certs_make: 1 on success; prints "FAIL setup: ..." otherwise. */
static int test_certs_make(const char *tag)
{
    snprintf(test_certs_dir, sizeof(test_certs_dir), "/tmp/tern-%.32s-XXXXXX", tag);
    if (mkdtemp(test_certs_dir) == NULL) {
        printf("FAIL setup: mkdtemp\n");
        return 0;
    }
    char cmd[TEST_CERTS_PATH_MAX + 64];
    snprintf(cmd, sizeof(cmd), "scripts/gen-test-certs.sh '%s'", test_certs_dir);
    if (system(cmd) != 0) {
        printf("FAIL setup: scripts/gen-test-certs.sh (run from the repo root)\n");
        return 0;
    }
    return 1;
}

static void test_certs_remove(void)
{
    char cmd[TEST_CERTS_PATH_MAX + 64];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", test_certs_dir);
    if (system(cmd) != 0)
        printf("  (could not remove %s)\n", test_certs_dir);
}

#endif
