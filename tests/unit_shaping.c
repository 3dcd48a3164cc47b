/* unit_shaping.c - rate parsing, the GCRA bucket (spacing, no burst past
 * one, the wait it reports, shared use), backoff (halving, pause, step
 * back up), and the routing/shaping/egress config keys. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/config.h"
#include "engine/shaping.h"
#include "tests/check.h"

static void test_rate_parse(void)
{
    struct rate r;
    CHECK_INT(rate_parse("100/s", &r), 1);
    CHECK(r.per_sec == 100);
    CHECK_INT(rate_parse("30/m", &r), 1);
    CHECK(r.per_sec == 0.5);
    CHECK_INT(rate_parse("36/h", &r), 1);
    CHECK(r.per_sec > 0.0099 && r.per_sec < 0.0101);
    CHECK_INT(rate_parse("7", &r), 1);
    CHECK(r.per_sec == 7);
    CHECK_INT(rate_parse("0/s", &r), 0);
    CHECK_INT(rate_parse("-1/s", &r), 0);
    CHECK_INT(rate_parse("10/d", &r), 0);
    CHECK_INT(rate_parse("/s", &r), 0);
}

static void test_bucket(void)
{
    struct rate_bucket b = {0};
    struct rate r = {.per_sec = 10};   /* one per 100 ms */
    int64_t t = 5000000;
    CHECK_INT(rate_take(&b, r, t), 0);
    CHECK_INT(rate_take(&b, r, t), 100000);          /* next one in 100 ms */
    CHECK_INT(rate_take(&b, r, t + 40000), 60000);
    CHECK_INT(rate_take(&b, r, t + 100000), 0);
    /* over one simulated second at 1 ms steps: 10 events, never 11 */
    struct rate_bucket c = {0};
    int n = 0;
    for (int64_t u = 0; u < 1000000; u += 1000)
        n += rate_take(&c, r, 10000000 + u) == 0;
    CHECK_INT(n, 10);
    /* idle time does not bank a burst */
    CHECK_INT(rate_take(&c, r, 50000000), 0);
    CHECK(rate_take(&c, r, 50000000) > 0);
    struct rate none = {0};
    CHECK_INT(rate_take(&c, none, 0), 0);
}

static void test_backoff(void)
{
    struct shaping_backoff b = {0};
    CHECK_INT(shaping_concurrency(&b, 20), 20);
    shaping_backoff_hit(&b, 8, 1000, 500);
    CHECK_INT(shaping_concurrency(&b, 20), 4);
    CHECK_INT(b.paused_until_ms, 1500);
    shaping_backoff_hit(&b, 8, 2000, 500);
    CHECK_INT(shaping_concurrency(&b, 20), 2);
    shaping_backoff_hit(&b, 1, 2000, 500);
    shaping_backoff_hit(&b, 1, 2000, 500);
    CHECK_INT(shaping_concurrency(&b, 20), 1);   /* never below one */
    for (int i = 0; i < 18; i++)
        shaping_backoff_ok(&b, 20);
    CHECK_INT(shaping_concurrency(&b, 20), 19);
    shaping_backoff_ok(&b, 20);
    CHECK_INT(b.limit, 0);                       /* recovered */
    CHECK_INT(b.events, 4);
}

static char dir[] = "/tmp/tern-unit-shaping.XXXXXX";

static int load(const char *text, struct tern_config *c, char *err, size_t errlen)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/t.conf", dir);
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return 0;
    fputs(text, f);
    fclose(f);
    return config_load(c, path, err, errlen);
}

static void test_config(void)
{
    static struct tern_config c;
    char err[512] = "";
    int ok = load("dns_servers = 127.0.0.1:5353 [::1]:53 127.0.0.2\n"
                  "mx_port = 2525\n"
                  "dns_timeout = 500ms\n"
                  "max_message_rate = 100/s\n"
                  "max_connection_rate = 10/m\n"
                  "max_message_rate_per_host = 50\n"
                  "source_address = 127.0.0.2 127.0.0.3\n"
                  "backoff_pattern = \"rate limit\"\n"
                  "backoff_pattern = too many\n"
                  "backoff_pause = 2s\n"
                  "destination slow.example = max_message_rate=1/s source_address=127.0.0.9,127.0.0.10\n",
                  &c, err, sizeof(err));
    CHECK_INT(ok, 1);
    if (!ok) {
        printf("  %s\n", err);
        return;
    }
    CHECK_STR(c.net.dns_servers, "127.0.0.1:5353,[::1]:53,127.0.0.2:53");
    CHECK_INT(c.net.mx_port, 2525);
    CHECK_INT(c.net.dns_timeout_ms, 500);
    CHECK_INT(c.net.npatterns, 2);
    CHECK_STR(c.net.backoff_patterns[0], "rate limit");
    CHECK_INT(config_net_backoff_match(&c.net, "451 4.7.0 Rate Limit exceeded"), 1);
    CHECK_INT(config_net_backoff_match(&c.net, "451 4.7.0 try later"), 0);
    CHECK_INT(c.net.backoff_pause_ms, 2000);
    struct net_dest d;
    config_dest_net(&c, "other.example", &d);
    CHECK(d.msg_rate.per_sec == 100);
    CHECK(d.conn_rate.per_sec > 0.16 && d.conn_rate.per_sec < 0.17);
    CHECK_INT(d.nsources, 2);
    config_dest_net(&c, "slow.example", &d);
    CHECK(d.msg_rate.per_sec == 1);
    CHECK_INT(d.nsources, 2);
    CHECK_INT(d.sources[1].ss_family, AF_INET);

    const char *bad[] = {
        "dns_servers = dns.example:53\n",
        "mx_port = 0\n",
        "max_message_rate = fast\n",
        "source_address = 127.0.0.300\n",
        "source_address = 192.0.2.1\n",     /* TEST-NET: not this machine's */
        "mx_port = 25\nmx_port = 26\n",
        "destination x.example = max_connection_rate=0/s\n",
        "destination x.example = source_address=\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        CHECK_INT(load(bad[i], &c, err, sizeof(err)), 0);
        CHECK(strstr(err, "t.conf:") != NULL);
    }
}

int main(void)
{
    if (mkdtemp(dir) == NULL)
        return 1;
    RUN(test_rate_parse);
    RUN(test_bucket);
    RUN(test_backoff);
    RUN(test_config);
    char path[300];
    snprintf(path, sizeof(path), "%s/t.conf", dir);
    unlink(path);
    rmdir(dir);
    return check_finish();
}
