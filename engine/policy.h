/*
 * policy.h - per-destination TLS policy: levels, the policy table, and how
 * a level turns into the parameters of one TLS client handshake.
 *
 * LEVELS (the meanings Postfix operators know)
 *   none         never STARTTLS.
 *   may          opportunistic: STARTTLS when offered, the strongest tier
 *                the peer supports, plaintext when TLS is not offered or
 *                fails altogether. The peer is checked and the result
 *                recorded, never required.
 *   encrypt      TLS required; the peer is not authenticated.
 *   fingerprint  TLS required; the leaf certificate's or its public key's
 *                SHA-256 equals one of the pins.
 *   verify       TLS required; the chain builds to a trusted CA and a name
 *                of the MX host (or a match name) is in the certificate.
 *   secure       like verify, but the names come from the next-hop domain
 *                and the configured match names, never from the MX host
 *                name (which DNS, unauthenticated, supplied).
 *   dane, dane-only are reserved: they need DNSSEC-validated TLSA lookups
 *   and are refused by the parser until then. MTA-STS would arrive as a
 *   policy source that yields a verify/secure entry with match names.
 *   Every level above may is "mandatory": nothing falls back to plaintext
 *   or below TLS 1.2 (unless the entry's min says so).
 *
 * ENTRY SYNTAX (a config line's value, and `tern tls-check --policy`)
 *   LEVEL [match=NAME[,NAME...]] [min=1.0|1.1|1.2|1.3] [pin=HEX64]...
 *         [ca_file=PATH] [cert=PATH key=PATH] [client_cert=yes|no]
 *   pin: SHA-256 of the DER certificate or of its SubjectPublicKeyInfo, 64
 *   hex digits, colons allowed. client_cert=no: never present our client
 *   certificate to this destination (default: present one when configured
 *   and asked for).
 *
 * TABLE
 *   Keys are "example.com" (that domain only), ".example.com" (every
 *   subdomain, not the domain itself) and "*" (the default entry). Lookup:
 *   exact match, then the closest parent ".suffix", then "*", then the
 *   built-in default (may). Case-insensitive.
 *
 * ERRORS
 *   policy_entry_parse returns 0 and a one-line reason in err.
 *
 * OWNERSHIP
 *   A struct policy_table and its entries are plain values owned by the
 *   configuration; read-only after load, shared by workers without locks.
 */
#ifndef TERN_ENGINE_POLICY_H
#define TERN_ENGINE_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include "tls/tls.h"

#define POLICY_ENTRIES_MAX  1024
#define POLICY_DOMAIN_MAX   256
#define POLICY_PATH_MAX     1024
#define POLICY_NAME_MAX     256

enum policy_level {
    POLICY_NONE,
    POLICY_MAY,
    POLICY_ENCRYPT,
    POLICY_FINGERPRINT,
    POLICY_VERIFY,
    POLICY_SECURE,
};

struct policy_entry {
    char domain[POLICY_DOMAIN_MAX];    /* first: "example.com", ".example.com", "*" */
    enum policy_level level;
    char match[TLS_MAX_MATCH_NAMES][POLICY_NAME_MAX];
    size_t nmatch;
    uint8_t pins[TLS_MAX_PINS][32];
    size_t npins;
    uint16_t min_version;              /* 0: level default */
    char ca_file[POLICY_PATH_MAX];     /* "" : the global one */
    char cert_file[POLICY_PATH_MAX];   /* "" : the global client cert */
    char key_file[POLICY_PATH_MAX];
    int client_cert;                   /* 1: present when asked (default) */
    int ctx_index;                     /* which TLS client context (set by config) */
};

struct policy_table {
    struct policy_entry entries[POLICY_ENTRIES_MAX];
    size_t n;
    struct policy_entry fallback;      /* "*" or the built-in may */
};

const char *policy_level_name(enum policy_level l);
/* 1 for levels above may. */
int policy_level_mandatory(enum policy_level l);

/* policy_entry_parse fills *e (domain untouched) from an entry's text. */
int policy_entry_parse(const char *text, size_t len, struct policy_entry *e,
                       char *err, size_t errlen);

/* domain_table_match: the best of n keys for domain, where key i is the
 * string at the start of element i (stride bytes apart): exact match,
 * then the closest ".parent", then "*" (case-insensitive). The index, or
 * -1. Shared by the policy table and the destination overrides. */
long domain_table_match(const void *base, size_t n, size_t stride, const char *domain);

/* policy_lookup returns the entry for a next-hop domain (never NULL). */
const struct policy_entry *policy_lookup(const struct policy_table *t, const char *domain);

/* policy_client_params fills the handshake parameters for entry e with MX
 * host mx_host, next-hop domain, and tier. Names point into e / mx_host /
 * domain and must outlive *p's use. */
void policy_client_params(const struct policy_entry *e, const char *mx_host,
                          const char *domain, enum tls_tier tier,
                          struct tls_client_params *p);

#endif
