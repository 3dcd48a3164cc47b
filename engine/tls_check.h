/*
 * tls_check.h - `tern tls-check`: what TLS a receiving server gives tern.
 *
 * DESCRIPTION
 *   tern tls-check [--policy LEVEL] [--match NAME]... [--pin HEX]...
 *                  [--min-version 1.0|1.1|1.2|1.3] [--ca-file PATH]
 *                  [--client-cert PATH --client-key PATH] [--helo NAME]
 *                  [--domain NAME] [--timeout SECONDS] [--port N]
 *                  HOST[:PORT]
 *
 *   Connects to HOST (port 25 unless given; IPv6 as [addr]:port), reads
 *   the greeting, sends EHLO and STARTTLS, and prints: the greeting and
 *   the capabilities offered, each TLS attempt with the tier offered, the
 *   tier reached with protocol, cipher and group, the peer's certificate
 *   chain (subject, issuer, key, validity, names, SHA-256 of the
 *   certificate and of its public key, ready for --pin), the verification
 *   result under the policy, and whether a second connection resumes the
 *   session the first one received. It then sends QUIT.
 *
 *   LEVEL is a policy level of engine/policy.h (none, may, encrypt,
 *   fingerprint, verify, secure; default verify). The options become one
 *   policy entry ("verify match=a,b min=1.2 ca_file=..."), parsed and
 *   turned into handshake parameters by the engine's own policy module,
 *   so the check means what delivery under that entry would do. --domain
 *   is the next-hop domain (for secure; default HOST). --timeout bounds
 *   every single wait (connect, each read, each write; default 30 s).
 *
 *   Tiers are tried like the engine falls back: the preferred tier first;
 *   when its handshake fails for negotiation reasons, mandatory levels try
 *   the sufficient tier and then (only when --min-version allows below
 *   TLS 1.2) the legacy tier; may tries the legacy tier.
 *
 * EXIT STATUS
 *   0  pass: delivery under the policy would go ahead (for may that
 *      includes plaintext when STARTTLS is missing, refused or failing;
 *      for none, plaintext);
 *   1  fail: it would not (connection or SMTP failure, no STARTTLS or no
 *      TLS at a mandatory level, verification failed);
 *   2  usage or setup error (bad option, policy, trust store or client
 *      certificate).
 *   The last line printed is "PASS: ..." or "FAIL: <what failed>" (for 0
 *   and 1).
 *
 * OWNERSHIP
 *   Nothing is kept between calls; argv is only read.
 */
#ifndef TERN_ENGINE_TLS_CHECK_H
#define TERN_ENGINE_TLS_CHECK_H

#include <stdio.h>

#define TLS_CHECK_PASS  0
#define TLS_CHECK_FAIL  1
#define TLS_CHECK_USAGE 2

/* tls_check_main: argv[0] is "tls-check". Output to out. Returns the exit
 * status: 0 pass, 1 fail under the policy, 2 usage or setup error. */
int tls_check_main(int argc, char **argv, FILE *out);

#endif
