/*
 * fuzz_smtp_server.c - libFuzzer target for the sans-I/O SMTP server
 * session: input bytes arrive in chunks whose sizes come from the input
 * itself; every message is answered, STARTTLS is acknowledged at once.
 * The first byte's low bit turns the listener rules on (relay check,
 * require TLS, AUTH, strict data, address checks); AUTH succeeds for the
 * user "u" only, cannot be checked for "t" (454), and the relay
 * permission follows the second bit.
 * Checks: no crash, no leak, no unbounded output (ASan/UBSan).
 */
#include "engine/smtp_server.h"
#include <string.h>
int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    struct smtp_server_config cfg = {.hostname = "f",
                                     .offer_starttls = 1,
                                     .offer_pipelining = 1,
                                     .offer_chunking = 1,
                                     .max_message_size = 4096,
                                     .max_rcpts = 3};
    int listener = n > 0 && (d[0] & 1);
    if (listener) {
        cfg.relay_check = cfg.require_tls = cfg.offer_auth = 1;
        cfg.strict_data = cfg.check_addrs = 1;
        cfg.max_errors = 10;
    }
    struct smtp_server s;
    smtp_server_init(&s, &cfg);
    if (listener)
        smtp_server_set_relay(&s, (d[0] >> 1) & 1);
    size_t off = 0;
    while (off < n) {
        size_t k = d[off] % 64 + 1;
        off++;
        if (k > n - off)
            k = n - off;
        smtp_server_feed(&s, d + off, k);
        off += k;
        for (;;) {
            struct smtp_server_event ev = smtp_server_next(&s);
            if (ev.kind == SMTP_SRV_EV_NONE)
                break;
            if (ev.kind == SMTP_SRV_EV_MESSAGE) {
                struct smtp_server_envelope e;
                smtp_server_envelope(&s, &e);
                volatile size_t x = e.data_len;
                (void)x;
                smtp_server_message_reply(&s, NULL);
            }
            if (ev.kind == SMTP_SRV_EV_STARTTLS)
                smtp_server_tls_started(&s);
            if (ev.kind == SMTP_SRV_EV_AUTH) {
                const char *u, *p;
                smtp_server_auth_creds(&s, &u, &p);
                smtp_server_auth_result(&s, strcmp(u, "u") == 0   ? 1
                                            : strcmp(u, "t") == 0 ? SMTP_SERVER_AUTH_UNAVAILABLE
                                                                  : 0);
            }
            if (ev.kind == SMTP_SRV_EV_CLOSE)
                break;
        }
        size_t on;
        smtp_server_output(&s, &on);
        smtp_server_output_consume(&s, on);
    }
    smtp_server_cleanup(&s);
    return 0;
}
