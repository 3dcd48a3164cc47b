/*
 * fuzz_policy.c - libFuzzer target for engine/policy.c: a policy entry as
 * an operator (or `tern tls-check --policy`) writes it.
 *
 * Invariants: a parse that succeeds yields a known level, counts within
 * their arrays, NUL-terminated names, a fingerprint level with pins and
 * pins only there, cert and key together; the handshake parameters built
 * from it stay within tls_client_params' arrays and name the entry's
 * strings. A failed parse leaves a NUL-terminated reason.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/policy.h"

static void check_entry(const struct policy_entry *e)
{
    if (e->level > POLICY_SECURE || e->nmatch > TLS_MAX_MATCH_NAMES || e->npins > TLS_MAX_PINS)
        abort();
    for (size_t i = 0; i < e->nmatch; i++)
        if (strnlen(e->match[i], POLICY_NAME_MAX) == POLICY_NAME_MAX || e->match[i][0] == '\0')
            abort();
    if ((e->level == POLICY_FINGERPRINT) != (e->npins > 0))
        abort();
    if ((e->cert_file[0] != '\0') != (e->key_file[0] != '\0'))
        abort();
    struct tls_client_params p;
    policy_client_params(e, "mx.example.com", "example.com", TLS_TIER_PREFERRED, &p);
    if (p.nmatch > TLS_MAX_MATCH_NAMES || p.npins != (e->level == POLICY_FINGERPRINT ? e->npins : 0))
        abort();
    if (policy_level_mandatory(e->level) && p.min_version == 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct policy_entry e;
    char err[256];
    memset(&e, 0, sizeof(e));
    memset(err, 'x', sizeof(err));
    if (policy_entry_parse((const char *)data, size, &e, err, sizeof(err)))
        check_entry(&e);
    else if (memchr(err, '\0', sizeof(err)) == NULL)
        abort();
    return 0;
}
