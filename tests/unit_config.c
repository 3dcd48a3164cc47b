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
    CHECK_INT(c.policy.fallback.level, POLICY_ENCRYPT);
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

/* redis_wait: how long tern run --drain waits for Redis at start. */
static void test_redis_wait(void)
{
    static struct tern_config c;
    char err[512] = "";
    CHECK_INT(config_load(&c, write_file("rw1.conf", "hostname = h.example\n"), err, sizeof(err)), 1);
    CHECK_INT(c.redis_wait_ms, 60000);
    CHECK_INT(config_load(&c, write_file("rw2.conf", "redis_wait = 0\n"), err, sizeof(err)), 1);
    CHECK_INT(c.redis_wait_ms, 0);
    CHECK_INT(config_load(&c, write_file("rw3.conf", "redis_wait = 5m\n"), err, sizeof(err)), 1);
    CHECK_INT(c.redis_wait_ms, 300000);
    CHECK_INT(config_load(&c, write_file("rw4.conf", "redis_wait = soon\n"), err, sizeof(err)), 0);
}

/* destination_forget: 10 minutes unless set; 0 keeps destinations. */
static void test_destination_forget(void)
{
    static struct tern_config c;
    char err[512] = "";
    CHECK_INT(config_load(&c, write_file("df1.conf", "hostname = h.example\n"), err, sizeof(err)), 1);
    CHECK_INT(c.destination_forget_ms, 600000);
    CHECK_INT(config_load(&c, write_file("df2.conf", "destination_forget = 0\n"), err, sizeof(err)), 1);
    CHECK_INT(c.destination_forget_ms, 0);
    CHECK_INT(config_load(&c, write_file("df3.conf", "destination_forget = 1h\n"), err, sizeof(err)), 1);
    CHECK_INT(c.destination_forget_ms, 3600000);
    CHECK_INT(config_load(&c, write_file("df4.conf", "destination_forget = later\n"), err, sizeof(err)), 0);
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
         ":1: timeout: unknown timeout (connect, greeting, command, ehlo, mail, rcpt, tls, data, block, final, idle)"},
        {"timeout data = soon\n", ":1: timeout: bad duration (use e.g. 30s, 5m, 500ms)"},
        {"tls = sometimes\n",
         ":1: tls: sometimes: unknown level (none, may, encrypt, fingerprint, verify, secure)"},
        {"tls = may\npolicy * = encrypt\n",
         ":2: policy: the default policy is set twice (tls = and policy * =)"},
        {"policy a.com = verify\npolicy A.COM = may\n", ":2: policy: duplicate policy"},
        {"policy a.com = dane\n",
         ":1: policy: dane: dane levels need DNSSEC-validated TLSA lookups, not supported yet"},
        {"policy a.com = fingerprint\n", ":1: policy: fingerprint needs at least one pin="},
        {"policy a.com = verify min=1.4\n",
         ":1: policy: min=1.4: min= must be 1.0, 1.1, 1.2 or 1.3"},
        {"policy a b = may\n", ":1: too many words before '='"},
        {"policy a/b = may\n", ":1: policy: bad policy domain (example.com, .example.com or *)"},
        {"destination a.com = max_connections=0\n", ":1: destination: bad number or duration"},
        {"destination a.com = speed=9\n",
         ":1: destination: unknown option (max_connections, max_connections_per_host, "
         "max_messages_per_connection, max_transactions_in_flight, idle, max_message_rate, "
         "max_connection_rate, source_address)"},
        {"destination a.com = max_transactions_in_flight=17\n", ":1: destination: bad number or duration"},
        {"max_transactions_in_flight = 0\n", ":1: max_transactions_in_flight: bad number or out of range"},
        {"tls_resumption = maybe\n", ":1: tls_resumption: must be yes or no"},
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

static void test_tables(void)
{
    static struct tern_config c;
    char err[512] = "";
    const char *p = write_file("tables.conf",
                               "ca_file = /etc/ca.pem\n"
                               "policy partner.example = secure match=mx.partner.example min=1.3\n"
                               "policy .partner.example = verify ca_file=/etc/partner-ca.pem\n"
                               "policy * = may\n"
                               "max_connections = 7\n"
                               "timeout idle = 3s\n"
                               "destination big.example = max_connections=50 idle=10s\n"
                               "destination .big.example = max_messages_per_connection=9 "
                               "max_transactions_in_flight=1\n"
                               "tls_resumption = no\n");
    CHECK_INT(config_load(&c, p, err, sizeof(err)), 1);
    CHECK_STR(err, "");
    CHECK_INT(c.tls_resumption, 0);
    const struct policy_entry *e = policy_lookup(&c.policy, "partner.example");
    CHECK_INT(e->level, POLICY_SECURE);
    CHECK_INT(e->min_version, TLS1_3_VERSION);
    CHECK_INT(e->ctx_index, 0);                     /* the global trust store */
    e = policy_lookup(&c.policy, "mx.PARTNER.example");
    CHECK_INT(e->level, POLICY_VERIFY);
    CHECK_INT(e->ctx_index, 1);                     /* its own ca_file */
    CHECK_STR(c.tls_ctx[1].ca_file, "/etc/partner-ca.pem");
    CHECK_INT(c.ntls_ctx, 2);
    CHECK_INT(policy_lookup(&c.policy, "other.example")->level, POLICY_MAY);
    struct dest_limits l;
    config_dest_limits(&c, "big.example", &l);
    CHECK_INT(l.max_connections, 50);
    CHECK_INT(l.idle_ms, 10000);
    CHECK_INT(l.max_messages_per_connection, 10000);
    CHECK_INT(l.max_txns_in_flight, 4);   /* the default */
    config_dest_limits(&c, "a.big.example", &l);
    CHECK_INT(l.max_txns_in_flight, 1);
    CHECK_INT(l.max_connections, 7);
    CHECK_INT(l.max_messages_per_connection, 9);
    CHECK_INT(l.idle_ms, 3000);
}

/* Queue lifecycle keys: the retry schedule, the delay warning, the
 * engine-wide memory cap split across the workers (batch fits in it). */
static void test_queue_keys(void)
{
    static struct tern_config c;
    char err[512] = "";
    const char *p = write_file("q.conf", "threads = 4\n"
                                         "max_messages_in_memory = 100\n"
                                         "max_bytes_in_memory = 64m\n"
                                         "retry_schedule = 5m, 10m 1h\n"
                                         "delay_warning = 4h\n");
    CHECK_INT(config_load(&c, p, err, sizeof(err)), 1);
    CHECK_STR(err, "");
    CHECK_INT(c.max_in_memory, 25);
    CHECK_INT(c.batch, 25);
    CHECK_INT(c.max_bytes_in_memory, 64 << 20);
    CHECK_INT(c.max_bytes_in_memory_worker, 16 << 20);
    CHECK_INT(c.nretry_schedule, 3);
    CHECK_INT(c.retry_schedule_ms[0], 300000);
    CHECK_INT(c.retry_schedule_ms[2], 3600000);
    CHECK_INT(c.delay_warning_ms, 4 * 3600000);
    p = write_file("q.conf", "hostname = a\n");
    CHECK_INT(config_load(&c, p, err, sizeof(err)), 1);
    CHECK_INT(c.nretry_schedule, 0);
    CHECK_INT(c.retry_base_ms, 300000);
    CHECK_INT(c.retry_max_ms, 4 * 3600000);
    CHECK_INT(c.delay_warning_ms, 0);
    CHECK_INT(c.max_age_ms, 5LL * 86400 * 1000);
    CHECK_INT(c.max_bytes_in_memory, 0);
    CHECK_INT(c.max_bytes_in_memory_worker, CONFIG_WORKER_BYTES_IN_MEMORY_DEFAULT);
    p = write_file("q.conf", "max_bytes_in_memory = 10\n");   /* less than 1k */
    CHECK_INT(config_load(&c, p, err, sizeof(err)), 0);
    p = write_file("q.conf", "retry_schedule = 5m soon\n");
    CHECK_INT(config_load(&c, p, err, sizeof(err)), 0);
    char want[512];
    snprintf(want, sizeof(want), "%s: retry_schedule: bad duration (durations such as 5m, at most %d)",
             p, CONFIG_RETRY_STEPS_MAX);
    CHECK_STR(err, want);
}

static void test_missing_file(void)
{
    static struct tern_config c;
    char err[512] = "";
    CHECK_INT(config_load(&c, "/nonexistent/tern.conf", err, sizeof(err)), 0);
    CHECK_STR(err, "/nonexistent/tern.conf: No such file or directory");
}

static void test_split_hostport(void)
{
    static const struct { const char *in, *host; int port; const char *why; } cases[] = {
        {"mx.example.com:2525", "mx.example.com", 2525, NULL},
        {"mx.example.com", "mx.example.com", 0, NULL},
        {"[::1]:25", "::1", 25, NULL},
        {"[::1]", "::1", 0, NULL},
        {"2001:db8::1", "2001:db8::1", 0, NULL},   /* bare IPv6: no port */
        {"[::1]x", NULL, 0, "bad [address]:port"},
        {"[::1", NULL, 0, "bad [address]:port"},
        {":25", NULL, 0, "bad host"},
        {"[]:25", NULL, 0, "bad host"},
        {"a:0", NULL, 0, "bad port"},
        {"a:65536", NULL, 0, "bad port"},
        {"a:25x", NULL, 0, "bad port"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char host[64] = "";
        int port = -1;
        const char *why = NULL;
        int ok = config_split_hostport(cases[i].in, host, sizeof(host), &port, &why);
        CHECK_INT(ok, cases[i].why == NULL);
        if (ok) {
            CHECK_STR(host, cases[i].host);
            CHECK_INT(port, cases[i].port);
        } else {
            CHECK_STR(why, cases[i].why);
        }
    }
    char tiny[4];
    const char *why = NULL;
    int port;
    CHECK_INT(config_split_hostport("toolong:25", tiny, sizeof(tiny), &port, &why), 0);
    CHECK_STR(why, "bad host");
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

/* SMTP client keys: per-command timeouts, recipients per transaction,
 * the minimum data rate; their defaults. */
static void test_smtp_client_keys(void)
{
    static struct tern_config c;
    char err[512] = "";
    const char *p = write_file("smtpc.conf",
                               "route * = 127.0.0.1:25\n"
                               "timeout mail = 20s\n"
                               "timeout rcpt = 30s\n"
                               "timeout ehlo = 40s\n"
                               "max_recipients_per_transaction = 50\n"
                               "min_data_rate = 0\n");
    CHECK_INT(config_load(&c, p, err, sizeof(err)), 1);
    CHECK_STR(err, "");
    CHECK_INT(c.timeouts.mail, 20000);
    CHECK_INT(c.timeouts.rcpt, 30000);
    CHECK_INT(c.timeouts.ehlo, 40000);
    CHECK_INT(c.max_rcpts_per_txn, 50);
    CHECK_INT(c.min_data_rate, 0);
    p = write_file("smtpc2.conf", "route * = 127.0.0.1:25\n");
    CHECK_INT(config_load(&c, p, err, sizeof(err)), 1);
    CHECK_INT(c.timeouts.mail, 0);            /* 0: as timeout command */
    CHECK_INT(c.max_rcpts_per_txn, SMTP_MAX_RCPTS_PER_TXN);
    CHECK_INT(c.min_data_rate, 1024);
    p = write_file("smtpc3.conf", "max_recipients_per_transaction = 101\n");
    CHECK_INT(config_load(&c, p, err, sizeof(err)), 0);
}

int main(void)
{
    if (mkdtemp(dir) == NULL)
        return 1;
    RUN(test_good);
    RUN(test_redis_wait);
    RUN(test_destination_forget);
    RUN(test_smtp_client_keys);
    RUN(test_bad);
    RUN(test_tables);
    RUN(test_queue_keys);
    RUN(test_missing_file);
    RUN(test_split_hostport);
    RUN(test_durations);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        return 1;
    return check_finish();
}
