/* unit_config.c - configuration parsing: good files, and bad files refused
 * with FILE:LINE: reason; route lookup with parent domains and "*". */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "engine/config.h"
#include "tests/check.h"

static char dir[] = "/tmp/tern-unit-config.XXXXXX";

static const char *write_file(const char *name, const char *text)
{
    static char path[256];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return NULL;
    fputs(text, f);
    fclose(f);
    return path;
}

static void test_good(void)
{
    static struct tern_config c;
    char err[512] = "";
    const char *p = write_file("good.conf",
                               "# comment\n"
                               "hostname = mx.example.net\n"
                               "threads = 2\n"
                               "redis = unix:/tmp/r.sock   # trailing comment\n"
                               "partitions = 8\n"
                               "route example.com = 127.0.0.1:2525\n"
                               "route * = [::1]:25\n"
                               "timeout final = 90s\n"
                               "timeout idle = 250ms\n"
                               "lease = 2m\n"
                               "max_message_size = 10m\n"
                               "tls = encrypt\n");
    CHECK_INT(config_load(&c, p, err, sizeof(err)), 1);
    CHECK_STR(err, "");
    CHECK_STR(c.hostname, "mx.example.net");
    CHECK_INT(c.threads, 2);
    CHECK_INT(c.queue.partitions, 8);
    CHECK_INT(c.timeouts.final, 90000);
    CHECK_INT(c.timeouts.idle, 250);
    CHECK_INT(c.timeouts.greeting, 300000);   /* RFC 5321 default kept */
    CHECK_INT(c.queue.lease_ms, 120000);
    CHECK_INT(c.queue.max_message_size, 10 * 1024 * 1024);
    CHECK_INT(c.tls, SMTP_TLS_REQUIRED);
    CHECK_INT(c.nroutes, 2);
    const struct tern_route *r = config_route(&c, "EXAMPLE.com");
    CHECK(r != NULL && r->port == 2525);
    r = config_route(&c, "mx.sub.example.com");   /* parent domain */
    CHECK(r != NULL && r->port == 2525);
    r = config_route(&c, "other.org");            /* default */
    CHECK(r != NULL && r->port == 25);
    r = config_route(&c, "notexample.com");       /* not a parent */
    CHECK(r != NULL && r->port == 25);
}

static void test_bad(void)
{
    static const struct {
        const char *text;
        const char *want;   /* exact error after the path */
    } cases[] = {
        {"hostname = a\nbogus = 1\n", ":2: bogus: unknown key"},
        {"threads = 2\nthreads = 3\n", ":2: threads: duplicate setting"},
        {"threads = x\n", ":1: threads: threads must be 0..256"},
        {"hostname\n", ":1: expected \"key = value\""},
        {"route example.com = 127.0.0.1\n", ":1: route: expected HOST:PORT"},
        {"route example.com = 127.0.0.1:99999\n", ":1: route: bad port"},
        {"route = 127.0.0.1:25\n", ":1: route: this key needs an argument (key ARG = value)"},
        {"route a.com = 127.0.0.1:25\nroute A.com = 127.0.0.1:26\n", ":2: route: duplicate route"},
        {"timeout forever = 1s\n",
         ":1: timeout: unknown timeout (connect, greeting, command, tls, data, block, final, idle)"},
        {"timeout data = soon\n", ":1: timeout: bad duration (use e.g. 30s, 5m, 500ms)"},
        {"tls = sometimes\n", ":1: tls: tls must be none, may or encrypt"},
        {"hostname =\n", ":1: hostname: empty value"},
        {"max_message_size = 12q\n", ":1: max_message_size: bad size (use e.g. 10m; at least 1k)"},
        {"a b c = 1\n", ":1: too many words before '='"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        static struct tern_config c;
        char err[512] = "", want[512];
        const char *p = write_file("bad.conf", cases[i].text);
        CHECK_INT(config_load(&c, p, err, sizeof(err)), 0);
        snprintf(want, sizeof(want), "%s%s", p, cases[i].want);
        CHECK_STR(err, want);
    }
}

static void test_missing_file(void)
{
    static struct tern_config c;
    char err[512] = "";
    CHECK_INT(config_load(&c, "/nonexistent/tern.conf", err, sizeof(err)), 0);
    CHECK_STR(err, "/nonexistent/tern.conf: No such file or directory");
}

static void test_durations(void)
{
    int64_t v;
    CHECK(config_parse_duration_ms("5", &v) && v == 5000);
    CHECK(config_parse_duration_ms("5ms", &v) && v == 5);
    CHECK(config_parse_duration_ms("2h", &v) && v == 7200000);
    CHECK(!config_parse_duration_ms("-1s", &v));
    CHECK(!config_parse_duration_ms("1w", &v));
    CHECK(!config_parse_duration_ms("", &v));
    CHECK(config_parse_size("4k", &v) && v == 4096);
    CHECK(!config_parse_size("4kb", &v));
}

int main(void)
{
    if (mkdtemp(dir) == NULL)
        return 1;
    RUN(test_good);
    RUN(test_bad);
    RUN(test_missing_file);
    RUN(test_durations);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        return 1;
    return check_finish();
}
