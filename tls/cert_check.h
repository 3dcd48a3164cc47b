/*
 * cert_check.h - check a certificate tern will present before it is used.
 *
 * DESCRIPTION
 *   cert_check_files() reads a PEM chain (leaf first) and its key, as tern
 *   would load them for its client certificate (and, later, for the
 *   listener), and reports what would go wrong with peers: at start and in
 *   `tern check-config`. Every problem is one finding with a severity:
 *
 *   CERT_ERROR (the certificate cannot work at all)
 *     - the certificate file is unreadable or holds no PEM certificate;
 *     - the key file is unreadable, or the key does not match the leaf;
 *     - the leaf key is RSA below TLS_RSA_MIN_BITS, EC on a curve other
 *       than P-256 / P-384, DSA, or another type TLS peers do not take;
 *     - a certificate of the chain (leaf or intermediate; not a
 *       self-signed root, whose own signature nobody checks) is signed
 *       with MD5 or SHA-1;
 *     - a certificate of the chain has expired or is not yet valid.
 *   CERT_WARN (some peers will refuse it, or it will break soon)
 *     - a certificate expires within CERT_EXPIRY_WARN_DAYS (the date and
 *       the days left are named);
 *     - the leaf is self-signed;
 *     - the chain does not build to the trust store (X509's reason);
 *     - it builds only to a CA from the configured ca_file, not to one in
 *       the system bundle ("private CA");
 *     - server role: hostname is not covered by any DNS SAN;
 *     - an extended key usage is present but lacks serverAuth (server
 *       role) or clientAuth (client role).
 *   CERT_NOTE (information)
 *     - subject, key type, expiry date; client role: hostname not
 *       covered (peers rarely check a client's name); which trust store
 *       the chain builds to.
 *
 *   Validity and chain building use now_s, not the clock, so tests can
 *   pass a fixed time (X509_VERIFY_PARAM_set_time). Expiry of the file's
 *   own certificates is reported once, by the validity check; the chain
 *   check reports only what else stops the chain (unknown issuer, an
 *   expired CA from the trust store, ...). Names are DNS-IDs only (no
 *   common-name fallback), wildcards only as the whole left-most label.
 *
 *   The cert_fmt_* helpers describe one certificate in the words the
 *   findings use; `tern tls-check` prints a peer's chain with them.
 *
 * ERRORS
 *   cert_check_files never fails as a call: every problem is a finding.
 *   At most CERT_FINDINGS_MAX findings keep their text; errors and
 *   warnings are counted even when the text no longer fits (dropped
 *   counts those), so a full report still says pass or fail truthfully.
 *
 * OWNERSHIP
 *   struct cert_report is a plain value the caller owns. No pointer is
 *   kept after a call returns.
 */
#ifndef TERN_TLS_CERT_CHECK_H
#define TERN_TLS_CERT_CHECK_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/x509.h>

#define CERT_FINDINGS_MAX      16
#define CERT_FINDING_TEXT_MAX  256
#define CERT_SUBJECT_MAX       256
#define CERT_TIME_MAX          32      /* "2026-12-31 23:59:59 UTC" */
#define CERT_EXPIRY_WARN_DAYS  30
#define CERT_CHAIN_MAX         10      /* certificates read from one file */
#define CERT_SYSTEM_BUNDLE     "/etc/ssl/certs/ca-certificates.crt"

enum cert_role { CERT_ROLE_CLIENT, CERT_ROLE_SERVER };
enum cert_severity { CERT_NOTE, CERT_WARN, CERT_ERROR };

struct cert_finding {
    enum cert_severity sev;
    char text[CERT_FINDING_TEXT_MAX];
};

struct cert_report {
    struct cert_finding f[CERT_FINDINGS_MAX];
    size_t n;                       /* findings with text, in f[0..n) */
    size_t dropped;                 /* findings that did not fit */
    int errors, warnings;           /* all of them, dropped ones included */
    char subject[CERT_SUBJECT_MAX]; /* leaf subject, "" if unreadable */
    char not_after[CERT_TIME_MAX];  /* leaf notAfter, "" if unreadable */
};

/* cert_check_files checks the certificate chain in cert_file (PEM, leaf
 * first) and its key in key_file (NULL: the key is not checked, a note
 * says so) for a role. ca_file is the trust store the chain should build
 * to (NULL: the system bundle, CERT_SYSTEM_BUNDLE); hostname is the name
 * the certificate must cover (NULL: not checked); now_s is the time to
 * check validity at, normally time(NULL). Fills *out (cleared first).
 * Returns 1 when there is no CERT_ERROR finding, else 0. */
int cert_check_files(enum cert_role role, const char *cert_file, const char *key_file,
                     const char *ca_file, const char *hostname, int64_t now_s,
                     struct cert_report *out);

/* cert_severity_name: "note", "warning", "error". */
const char *cert_severity_name(enum cert_severity s);

/* ---- helpers shared with `tern tls-check` (describe one certificate) ----
 * Each writes a NUL-terminated, printable-ASCII text into buf[0..len)
 * (truncated to fit; control and non-ASCII bytes become '?' or escapes)
 * and never fails: what cannot be decoded is written as "?". */

/* cert_fmt_name: an X509 name in RFC 2253 form, "CN=mx.test,O=...". */
void cert_fmt_name(const X509_NAME *name, char *buf, size_t len);
/* cert_fmt_time: "2026-12-31 23:59:59 UTC". */
void cert_fmt_time(const ASN1_TIME *t, char *buf, size_t len);
/* cert_fmt_key: "EC P-256", "RSA 2048 bits", "Ed25519", "DSA 2048 bits". */
void cert_fmt_key(X509 *x, char *buf, size_t len);
/* cert_fmt_sans: the subjectAltName entries, "DNS:a, DNS:b, IP:127.0.0.1",
 * or "(none)". */
void cert_fmt_sans(X509 *x, char *buf, size_t len);
/* cert_fmt_sig: the signature algorithm, "ecdsa-with-SHA256". */
void cert_fmt_sig(const X509 *x, char *buf, size_t len);

#endif
