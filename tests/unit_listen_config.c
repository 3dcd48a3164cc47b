/* unit_listen_config.c - the listener's configuration keys through
 * config_load: good lines, and bad ones refused with FILE:LINE: reason. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/config.h"
#include "tests/check.h"

static char dir[] = "/tmp/tern-unit-listen.XXXXXX";
static struct tern_config cfg;

static int load(const char *text, char *err, size_t errlen)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/t.conf", dir);
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    fputs(text, f);
    fclose(f);
    err[0] = '\0';
    return config_load(&cfg, path, err, errlen);
}

static void test_good(void)
{
    char err[512];
    CHECK_INT(load("listen = 127.0.0.1:2525 cert=/c.pem key=/k.pem\n"
                   "listen = [::1]:587 tls=required cert=/c.pem key=/k.pem cert2=/r.pem key2=/rk.pem\n"
                   "listen = *:25 tls=none\n"
                   "listen_allow = 127.0.0.0/8 ::1/128\n"
                   "listen_allow = 10.0.0.0/8\n"
                   "auth_file = /etc/tern/users\n"
                   "listen_tls_profile = sufficient\n"
                   "listen_max_connections = 20\n"
                   "listen_max_connections_per_ip = 5\n"
                   "listen_max_rcpts = 50\n"
                   "listen_max_message_size = 2m\n"
                   "listen_max_errors = 4\n"
                   "listen_command_timeout = 30s\n"
                   "listen_data_timeout = 1m\n"
                   "listen_received = no\n",
                   err, sizeof(err)),
              1);
    CHECK_STR(err, "");
    const struct listen_config *lc = &cfg.listen;
    CHECK_INT(lc->n, 3);
    CHECK_INT(lc->addrs[0].tls, LISTEN_TLS_OPTIONAL);   /* a cert: optional */
    CHECK_INT(lc->addrs[1].tls, LISTEN_TLS_REQUIRED);
    CHECK_INT(lc->addrs[2].tls, LISTEN_TLS_NONE);
    CHECK_INT(lc->addrs[1].addr.ss_family, AF_INET6);
    CHECK_INT(ntohs(((struct sockaddr_in6 *)&lc->addrs[2].addr)->sin6_port), 25);
    CHECK_STR(lc->addrs[1].cert2, "/r.pem");
    CHECK_INT(lc->allow.n, 3);
    CHECK_STR(lc->auth_file, "/etc/tern/users");
    CHECK_INT(lc->tls_profile, TLS_TIER_SUFFICIENT);
    CHECK_INT(lc->max_connections, 20);
    CHECK_INT(lc->max_per_ip, 5);
    CHECK_INT(lc->max_rcpts, 50);
    CHECK_INT(lc->max_message_size, 2 * 1024 * 1024);
    CHECK_INT(lc->max_errors, 4);
    CHECK_INT(lc->command_timeout_ms, 30000);
    CHECK_INT(lc->data_timeout_ms, 60000);
    CHECK_INT(lc->received, 0);

    /* Defaults; the size follows max_message_size. */
    CHECK_INT(load("max_message_size = 1m\nlisten = 127.0.0.1:2525\nlisten_allow = 127.0.0.1\n", err,
                   sizeof(err)),
              1);
    CHECK_INT(cfg.listen.max_message_size, 1024 * 1024);
    CHECK_INT(cfg.listen.max_rcpts, 100);
    CHECK_INT(cfg.listen.received, 1);
    CHECK_INT(cfg.listen.tls_profile, TLS_TIER_PREFERRED);
    CHECK_INT(load("hostname = x\n", err, sizeof(err)), 1);   /* no listener at all */
    CHECK_INT(cfg.listen.n, 0);
}

static void test_bad(void)
{
    static const struct { const char *text, *want; } cases[] = {
        {"listen = 127.0.0.1\nlisten_allow = 127.0.0.1\n", ":1: listen: expected ADDR:PORT"},
        {"listen = localhost:25\nlisten_allow = 127.0.0.1\n", ":1: listen: listen address must be numeric"},
        {"listen = 127.0.0.1:25 tls=required\nlisten_allow = 127.0.0.1\n", "needs cert= and key="},
        {"listen = 127.0.0.1:25 cert=/c.pem\nlisten_allow = 127.0.0.1\n", "cert and key"},
        {"listen = 127.0.0.1:25 tls=maybe\n", "tls must be none, optional or required"},
        {"listen = 127.0.0.1:25 port=3\n", "unknown listen option"},
        {"listen = 127.0.0.1:25\n", "nobody may relay"},
        {"listen = 127.0.0.1:25\nauth_file = /u\n", "AUTH is only offered over TLS"},
        {"listen_allow = 10.0.0.1/8\n", ":1: listen_allow: bad network"},
        {"listen_allow = 10.0.0.0/33\n", "bad network"},
        {"listen_tls_profile = best\n", "preferred, sufficient or legacy"},
        {"listen_max_rcpts = 0\n", "must be 1..1000"},
        {"listen_received = maybe\n", "yes or no"},
        {"listen_command_timeout = 0\n", "bad duration"},
        {"auth_file = /a\nauth_file = /b\n", ":2: auth_file: duplicate setting"},
        {"listen_bogus = 1\n", "unknown key"},
        {"listen ARG = 127.0.0.1:25\n", "takes no argument"},
    };
    char err[512];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (load(cases[i].text, err, sizeof(err)) != 0 || strstr(err, cases[i].want) == NULL)
            CHECK_FAILF("case %zu: got \"%s\", want \"%s\"", i, err, cases[i].want);
    }
}

int main(void)
{
    if (mkdtemp(dir) == NULL)
        return 1;
    RUN(test_good);
    RUN(test_bad);
    char path[256];
    snprintf(path, sizeof(path), "%s/t.conf", dir);
    unlink(path);
    rmdir(dir);
    return check_finish();
}
