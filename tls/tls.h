/*
 * tls.h - TLS over memory for tern (BoringSSL), client and server side.
 *
 * DESCRIPTION
 *   A struct tls_conn wraps one SSL object whose BIOs are in memory: the
 *   caller (the io_uring loop, or a test) owns the socket. Ciphertext that
 *   arrived goes in with tls_conn_feed(); ciphertext to send comes out of
 *   tls_conn_output() (or tls_conn_output_move()). After every call the
 *   output must be drained (it may hold an alert). Both BIOs are views of
 *   the conn's own input and output buffers (tls.c, buf_bio_*): a record
 *   is copied once on the way in and once on the way out, and reading
 *   moves an offset, not the unread bytes.
 *
 *   Profiles are tiers, defined as BoringSSL strings in tls/tls_tiers.c
 *   and nowhere else:
 *     PREFERRED   TLS 1.3; TLS 1.2 ECDHE with AEAD only; X25519, P-256,
 *                 P-384; SHA-2 signature algorithms.
 *     SUFFICIENT  PREFERRED plus ECDHE CBC suites (TLS 1.2).
 *     LEGACY      TLS 1.0..1.3, the wide list (includes static RSA).
 *     PLAINTEXT   no TLS (a label for events, never a context).
 *   A client context holds one SSL_CTX per tier.
 *
 * VERIFICATION
 *   Every RECORD or PKIX client handshake computes chain + name
 *   verification against the configured trust store. TLS_VERIFY_RECORD only
 *   records the result (opportunistic: an unverified peer is reported as
 *   not verified, never the reverse). TLS_VERIFY_PKIX fails the handshake
 *   unless the chain builds to a trusted CA and one of the match names (or
 *   the SNI name when none are given) matches a DNS-ID (wildcards only as
 *   the whole left-most label). TLS_VERIFY_FINGERPRINT fails unless the
 *   SHA-256 of the leaf certificate or of its SubjectPublicKeyInfo equals
 *   one of the pins.
 *
 *   WEAK KEYS: under RECORD and PKIX the leaf's public key is checked
 *   first. RSA below 2048 bits, DSA, an EC key on a curve other than
 *   P-256/P-384/P-521 (or any other key type but Ed25519) is weak:
 *   verified=0 with verify_detail "weak key: RSA 1024 bits", "weak key:
 *   DSA", "weak key: EC curve secp224r1", ...; under PKIX the handshake
 *   then fails ("certificate verify failed: weak key: RSA 1024 bits").
 *   Under FINGERPRINT the key size is not checked: pinning a key is an
 *   explicit operator decision about that very key, so a matching pin
 *   passes whatever its size (and whatever the chain).
 *
 *   The PKIX check builds the chain with X509_verify_cert against the
 *   trust store (cfg.ca_file, else the system bundle; if that is missing
 *   the context still works but nothing is ever verified, see
 *   tls_client_ctx_store_usable). Names are DNS-IDs only (no CN
 *   fallback); IP-literal match names are used only when no DNS name is
 *   given. With no match name and no SNI nothing can be verified.
 *   In FINGERPRINT mode `verified` means a pin matched.
 *   A chain that verified is remembered by its context for the same names
 *   (tls/verify_cache.h: at most VERIFY_CACHE_TTL_S, never past the expiry
 *   of a certificate of its path), and the next full handshake that
 *   presents exactly that chain skips X509_verify_cert; the handshake still
 *   checks the peer's signature with the leaf's key. Failures are not
 *   remembered.
 *   verify_detail is "ok" or why not: X509 texts such as "unable to get
 *   local issuer certificate", "certificate has expired", "certificate is
 *   not yet valid", "self signed certificate", and our own "hostname
 *   mismatch", "IP address mismatch", "fingerprint mismatch", "weak key:
 *   ...", "no reference name to check", "no trust store (...)", "not
 *   checked", "not checked: resumed session". A failed PKIX/FINGERPRINT
 *   handshake has tls_conn_error "certificate verify failed: <detail>".
 *
 * SESSIONS
 *   New sessions the client receives (TLS 1.3 tickets arrive after the
 *   handshake, with the first application data) are queued in the conn
 *   (at most 4, oldest dropped); tls_conn_take_session() hands them to the
 *   caller, who caches them (tls/session_cache.h) and passes one back in
 *   params.session to resume.
 *
 *   BoringSSL does not run verification on a resumed handshake. Each
 *   session the conn hands out carries (SSL_SESSION ex_data of its client
 *   context) the verification result of the handshake that made it; a
 *   resumed conn reports that result. A session without it (e.g. one
 *   rebuilt with SSL_SESSION_from_bytes, or from another context) resumes
 *   as verified=0, verify_detail "not checked: resumed session". The
 *   caller's session cache key must still include the policy, so that a
 *   session is only offered under the policy it was made with.
 *
 * OWNERSHIP
 *   Contexts are created once per worker thread and outlive their conns.
 *   tls_conn_client_new takes its own reference on params.session.
 *   tls_conn_take_session returns a reference the caller owns.
 *   tls_conn_peer_cert returns a borrowed X509 (the conn's session owns it).
 *   Strings in struct tls_info are copies.
 */
#ifndef TERN_TLS_TLS_H
#define TERN_TLS_TLS_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "engine/buf.h"

#define TLS_MAX_PINS        8
#define TLS_MAX_MATCH_NAMES 8
#define TLS_FEED_MAX        (64 * 1024)
#define TLS_RSA_MIN_BITS    2048   /* smaller RSA keys are weak (RFC 9325 4.5), ours or a peer's */

enum tls_tier {
    TLS_TIER_PREFERRED,
    TLS_TIER_SUFFICIENT,
    TLS_TIER_LEGACY,
    TLS_TIER_PLAINTEXT,
    TLS_TIER_COUNT
};
const char *tls_tier_name(enum tls_tier t);   /* "preferred", ... */

enum tls_verify_mode {
    TLS_VERIFY_RECORD,      /* compute and record; never fail */
    TLS_VERIFY_PKIX,        /* chain to trusted CA + name match, or fail */
    TLS_VERIFY_FINGERPRINT, /* leaf cert or SPKI SHA-256 pin, or fail */
};

struct tls_client_config {
    const char *ca_file;    /* PEM trust store; NULL: system bundle */
    const char *cert_file;  /* optional client certificate chain (PEM) */
    const char *key_file;   /* its key */
};

struct tls_server_config {
    const char *cert_file;  /* PEM chain */
    const char *key_file;
    uint16_t min_version;   /* 0: TLS1_VERSION; else TLS1_2_VERSION etc. */
    uint16_t max_version;   /* 0: TLS1_3_VERSION */
    const char *cipher_list;/* TLS <= 1.2 list, NULL: BoringSSL default */
    int tickets;            /* issue session tickets */
    int no_session_ids;     /* keep no sessions for TLS 1.2 session-ID
                               resumption (with tickets = 0: nothing resumes) */
    int require_client_cert;/* request and require a client certificate */
    const char *client_ca_file; /* CA for client certs */
    int track_tickets;      /* seal tickets ourselves and count them, see
                               tls_server_ctx_ticket_stats */
    int use_tier;           /* 1: versions, ciphers, groups and signature
                               algorithms of `tier` (tls_tiers.c); min/max
                               and cipher_list above may narrow them */
    enum tls_tier tier;     /* PREFERRED, SUFFICIENT or LEGACY */
    const char *cert2_file; /* optional second certificate: one of the two
                               must be ECDSA and the other RSA; a client
                               that cannot verify ECDSA gets the RSA one.
                               Not with track_tickets. */
    const char *key2_file;
};

/* Ticket counters of a server context with track_tickets (all 0 without).
 * issued: tickets sealed (sent). opened: presented and opened (the server
 * then resumes, unless the session no longer fits the handshake). */
struct tls_ticket_stats { uint64_t issued, opened, reused, rejected; };

struct tls_client_params {
    enum tls_tier tier;     /* PREFERRED, SUFFICIENT or LEGACY */
    const char *sni;        /* server name to send, may be NULL */
    enum tls_verify_mode verify;
    const char *match_names[TLS_MAX_MATCH_NAMES];   /* for PKIX */
    size_t nmatch;
    uint8_t pins[TLS_MAX_PINS][32];                 /* for FINGERPRINT */
    size_t npins;
    uint16_t min_version;   /* 0: the tier's minimum */
    int present_client_cert;/* use the context's client cert if any */
    SSL_SESSION *session;   /* to resume, or NULL */
};

/* What a handshake achieved; filled by tls_conn_info. */
struct tls_info {
    enum tls_tier tier;
    char protocol[16];      /* "TLSv1.3" */
    char cipher[64];        /* standard or OpenSSL name */
    char group[16];         /* "X25519", or "" */
    char mix[98];           /* "<protocol> <cipher> <group>": the engine's TLS mix key */
    int verified;           /* chain and name verified (see above) */
    char verify_detail[128];/* why not verified, or "ok" */
    int resumed;
    int peer_cert_present;
};

enum tls_status {
    TLS_OK,         /* done (handshake finished / bytes processed) */
    TLS_WANT_IO,    /* send output and/or feed more input, call again */
    TLS_CLOSED,     /* peer sent close_notify */
    TLS_ERROR,      /* fatal; tls_conn_error() says why */
};

struct tls_client_ctx;
struct tls_server_ctx;
struct tls_conn;

struct tls_client_ctx *tls_client_ctx_new(const struct tls_client_config *cfg,
                                          char *err, size_t errlen);
void tls_client_ctx_free(struct tls_client_ctx *c);
/* tls_client_ctx_store_usable returns 1 if a trust store was loaded, 0 if
 * the system bundle was missing (every PKIX check then fails and RECORD
 * reports verified=0 with detail "no trust store (...)"). */
int tls_client_ctx_store_usable(const struct tls_client_ctx *c);
/* tls_client_ctx_verify_stats: PKIX verdicts taken from the context's
 * cache of chains that verified (cached; tls/verify_cache.h), and chains
 * checked because none was there (checked). */
void tls_client_ctx_verify_stats(const struct tls_client_ctx *c, uint64_t *cached, uint64_t *checked);

struct tls_server_ctx *tls_server_ctx_new(const struct tls_server_config *cfg,
                                          char *err, size_t errlen);
void tls_server_ctx_free(struct tls_server_ctx *s);
/* tls_server_ctx_rotate_ticket_keys installs fresh random ticket keys and
 * flushes the server's session-ID cache, so every session issued before
 * can no longer resume (the next handshake is full). Returns 1 on
 * success, 0 on failure. Automatic key rotation stops afterwards. With
 * track_tickets it replaces the ticket AEAD key: older tickets then
 * count as rejected. */
int tls_server_ctx_rotate_ticket_keys(struct tls_server_ctx *s);

/* TICKET TRACKING (for the test sink)
 *   With cfg.track_tickets the context seals its own tickets
 *   (SSL_CTX_set_ticket_aead_method: AES-256-GCM under a random key; each
 *   ticket carries a random 12-byte nonce that is also its id), so it sees
 *   every ticket a client presents. The ids of opened tickets are kept in
 *   a set of 65,536 (when full, the oldest is forgotten). A ticket opened
 *   before is still accepted, so that what the client does is what gets
 *   tested, but it is counted. The context may be shared by threads: the
 *   key and the set are locked, the counters are atomics. */
/* reused: a ticket presented again after it had already been used to resume (a TLS 1.3 ticket
 * offered twice). rejected: a ticket that could not be opened (old key).
 * (TLS 1.2 lets a client present a ticket again, RFC 5077; it is counted
 * as reused all the same, so read reused as "single use broken" only for
 * TLS 1.3 traffic.) s may be NULL; the counters may be read from any
 * thread while others handshake. */
void tls_server_ctx_ticket_stats(const struct tls_server_ctx *s, struct tls_ticket_stats *out);

/* Returns NULL on failure (allocation, bad params: tier not a TLS tier,
 * nmatch/npins too large, FINGERPRINT without pins, a name that is empty,
 * longer than 253 bytes, or holds spaces, control or non-ASCII bytes, a
 * '*' or an empty label). One trailing dot is dropped from every name
 * (it is matched and sent without it). The SNI is sent only when it is a
 * host name, not an IP literal. */
struct tls_conn *tls_conn_client_new(struct tls_client_ctx *c,
                                     const struct tls_client_params *p);
struct tls_conn *tls_conn_server_new(struct tls_server_ctx *s);
void tls_conn_free(struct tls_conn *t);

/* tls_conn_feed hands ciphertext from the socket to the TLS layer (it is
 * copied). Returns 1, or 0 on allocation failure. */
int tls_conn_feed(struct tls_conn *t, const uint8_t *p, size_t n);
/* tls_conn_lend is tls_conn_feed without the copy: the TLS layer reads
 * p[0..n) in place (after anything fed before), so p must stay valid and
 * unchanged until tls_conn_unlend, which copies what was not read yet
 * into the conn. Call unlend before returning to the loop that owns p;
 * between the two, handshake and read as after a feed. A receive of whole
 * records is then decrypted without first being copied (the sink's
 * `large`: 8% of its CPU was that copy). Both return 0 when out of memory
 * (the bytes not kept are lost: treat it as a failed conn). */
int tls_conn_lend(struct tls_conn *t, const uint8_t *p, size_t n);
int tls_conn_unlend(struct tls_conn *t);

/* tls_conn_handshake advances the handshake: TLS_OK when done,
 * TLS_WANT_IO (send the output, feed input, call again), TLS_ERROR. A
 * client's handshake can succeed while the server then rejects it (TLS
 * 1.3 client certificate): that error shows on the first tls_conn_read. */
enum tls_status tls_conn_handshake(struct tls_conn *t);

/* tls_conn_read appends every plaintext byte now available to *plain.
 * Returns TLS_OK if it appended something, TLS_WANT_IO if nothing is
 * available yet, TLS_CLOSED on close_notify, TLS_ERROR on failure.
 * When data and close_notify arrive together the data comes with TLS_OK
 * and the next call returns TLS_CLOSED. It appends no more than
 * plain->limit allows: when *plain fills up it returns TLS_OK with what
 * fit (consume, then call again: more may be buffered inside); a call
 * with no room at all fails the conn ("read: buffer full ..."). Reading
 * also processes TLS 1.3 tickets, so keep reading after the handshake. */
enum tls_status tls_conn_read(struct tls_conn *t, struct buf *plain);

/* tls_conn_write encrypts all n bytes into the output (16 KiB records).
 * Call it after the handshake finished; TLS_WANT_IO before that means
 * "handshake first, then write the same bytes again". */
enum tls_status tls_conn_write(struct tls_conn *t, const uint8_t *p, size_t n);

/* tls_conn_close queues a close_notify alert. */
void tls_conn_close(struct tls_conn *t);

/* Ciphertext the caller must send: a pointer to *n bytes (NULL when 0),
 * valid until the next call on t. Consume what was sent. */
const uint8_t *tls_conn_output(struct tls_conn *t, size_t *n);
void tls_conn_output_consume(struct tls_conn *t, size_t n);
/* tls_conn_output_move moves all the ciphertext to the end of dst (by
 * buf_move: no copy when dst is empty). Returns 0 when out of memory
 * (dst->err is set). */
int tls_conn_output_move(struct tls_conn *t, struct buf *dst);

/* tls_conn_error: description of the last TLS_ERROR (static or internal
 * storage valid until the conn is freed), e.g. "handshake: protocol
 * version", "certificate verify failed: hostname mismatch". */
const char *tls_conn_error(const struct tls_conn *t);
/* tls_conn_error_is_negotiation: the failure was a protocol version or
 * cipher/group mismatch (a lower tier might work), not a verification
 * failure, a client certificate failure or an I/O problem. Based on the
 * library reason (unsupported protocol, protocol_version alert, wrong
 * version number, no shared cipher/group, no common signature
 * algorithms, handshake_failure alert). */
int tls_conn_error_is_negotiation(const struct tls_conn *t);

/* tls_conn_error_is_client_cert: the server refused our client
 * certificate, or its absence (a lower tier would not help). It is 1
 * when the server sent a CertificateRequest and then, before sending any
 * application data, a fatal alert a server uses for that (handshake_
 * failure, bad_certificate, unsupported/revoked/expired/unknown
 * certificate, unknown_ca, access_denied, decrypt_error,
 * certificate_required). tls_conn_error then says either
 *   "peer requires a client certificate (none presented)"
 *   "client certificate rejected by peer: <alert>"   e.g. "unknown CA"
 * and tls_conn_error_is_negotiation is 0. A TLS 1.2 server says so
 * during the handshake; a TLS 1.3 server only after the client's
 * handshake finished, so the error comes from the first tls_conn_read. */
int tls_conn_error_is_client_cert(const struct tls_conn *t);

/* tls_conn_info: for a server conn, tier is meaningless (PREFERRED) and
 * verified means a client certificate was presented and verified. */
void tls_conn_info(const struct tls_conn *t, struct tls_info *out);

/* tls_info_tier: the tier a finished handshake reached, from the protocol
 * and cipher negotiated (TLS 1.3, or TLS 1.2 ECDHE with GCM/ChaCha20:
 * preferred; TLS 1.2 ECDHE CBC: sufficient; anything else: legacy). */
enum tls_tier tls_info_tier(const struct tls_info *t);

/* tls_conn_take_session returns one newly received session (oldest
 * first), or NULL. The caller owns the reference. */
SSL_SESSION *tls_conn_take_session(struct tls_conn *t);

/* tls_name_matches: does certificate DNS-ID `pattern` cover host `name` (both length-bounded,
 * case-insensitive, trailing dot ignored)? A wildcard is allowed only as the whole left-most label
 * ("*.example.com" covers "a.example.com", not "example.com", not "a.b.example.com"); "*" alone,
 * "*.com" style (fewer than two labels after the wildcard), partial-label wildcards ("f*.example.com"),
 * and IDNA A-labels under a wildcard ("*.xn--...") per RFC 6125 are handled as documented.
 *
 * The rule, exactly (the PKIX check's BoringSSL matcher follows the same
 * one for the names tls_conn_client_new accepts; tests/unit_tls_names.c
 * runs both over one table):
 *   - name: one trailing dot (the root) is ignored. A name that is
 *     empty, longer than 253 bytes, holds an empty label, a space, a
 *     control or non-ASCII byte or a '*' matches nothing.
 *   - Letters compare without case, ASCII only (RFC 4343); every other
 *     byte must be equal. A NUL in the pattern never matches.
 *   - A pattern is a wildcard only if it is "*." followed by at least two
 *     labels, each of letters, digits and hyphens, starting with a letter
 *     or digit and not ending with a hyphen.
 *     The "*" then stands for exactly one whole, non-empty label of
 *     letters, digits and hyphens, which may itself be an A-label
 *     ("*.example.com" covers "xn--bcher-kva.example.com"), and the rest
 *     compares literally, A-labels included ("*.xn--bcher-kva.example"
 *     covers "mail.xn--bcher-kva.example").
 *   - Any other pattern compares literally, so "*", "*.com",
 *     "f*.example.com", "*o.example.com", "xn--*.example", "a.*.example"
 *     and "*.*.example" (RFC 6125 6.4.3: no partial-label wildcards, none
 *     inside an A-label, none below the left-most label) match no name.
 *   - A pattern with a trailing dot matches nothing: DNS-IDs are written
 *     without the root, and a name keeps none after the first rule.
 * It matches DNS names only: IP literals are matched against iPAddress
 * SANs by the PKIX check, never through this function. */
int tls_name_matches(const char *pattern, size_t plen, const char *name, size_t nlen);

/* Peer certificates as the peer sent them, leaf first (client side); borrowed, valid until
 * tls_conn_free. 0 / NULL when none (plaintext, or a resumed session without a chain).
 * t may be NULL (a plaintext connection has no conn). Before the handshake there are none;
 * on a server conn they are the client's certificates, if it sent any. */
size_t tls_conn_peer_cert_count(const struct tls_conn *t);
X509 *tls_conn_peer_cert(const struct tls_conn *t, size_t i);
/* SHA-256 of the leaf certificate's DER; 1 on success, 0 when there is no peer certificate. */
int tls_conn_peer_leaf_sha256(const struct tls_conn *t, uint8_t out[32]);

#endif
