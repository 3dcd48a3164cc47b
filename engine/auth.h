/*
 * auth.h - who may relay through tern's SMTP listener: client networks
 * (CIDR), SMTP AUTH decoding (RFC 4954, PLAIN RFC 4616, LOGIN) and the
 * credentials file with hashed passwords.
 *
 * DESCRIPTION
 *   Everything here is a pure parser or check over (pointer, length); the
 *   listener calls it, the SMTP session (engine/smtp_server.c) uses the
 *   base64 and PLAIN decoders.
 *
 *   CIDR: "192.0.2.0/24", "2001:db8::/32", or a bare address (a host:
 *   /32 or /128). An IPv4 client seen on an IPv6 socket as ::ffff:a.b.c.d
 *   matches IPv4 entries. Bits past the prefix in the written address are
 *   an error ("10.0.0.1/8" is refused: the operator meant something else).
 *
 *   Credentials file: one "user:hash" per line; '#' comments and blank
 *   lines ignored. The hash is a crypt(3) string of a strong method:
 *   yescrypt ("$y$") or sha512-crypt ("$6$"); any other method (or a
 *   plaintext password) makes the whole file invalid, so a typo never
 *   turns into a password compared in clear. Users are unique, at most
 *   AUTH_USER_MAX bytes of printable ASCII without ':'.
 *
 * ERRORS
 *   Functions return 1 on success, 0 on failure; loaders write
 *   "FILE:LINE: reason" into err.
 *
 * OWNERSHIP
 *   struct auth_creds owns its entries (auth_creds_free). auth_creds_check
 *   runs crypt_r on the caller's thread (tens of milliseconds for yescrypt
 *   at its default cost: the price of not storing passwords).
 */
#ifndef TERN_ENGINE_AUTH_H
#define TERN_ENGINE_AUTH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define AUTH_USER_MAX      255
#define AUTH_PASS_MAX      255
#define AUTH_HASH_MAX      255
#define AUTH_CREDS_MAX     100000   /* lines in a credentials file */
#define AUTH_LINE_MAX      1024
#define AUTH_NETS_MAX      256      /* listen_allow entries */
#define AUTH_CIDR_TEXT_MAX 64

struct auth_net {
    int family;            /* AF_INET or AF_INET6 */
    uint8_t addr[16];      /* network, 4 or 16 bytes used */
    int prefix;            /* 0..32 or 0..128 */
};

struct auth_nets {
    struct auth_net net[AUTH_NETS_MAX];
    int n;
};

/* auth_cidr_parse reads one CIDR (or bare address) from s[0..n). */
int auth_cidr_parse(const char *s, size_t n, struct auth_net *out);
/* auth_nets_match: does the peer address (AF_INET or AF_INET6, v4-mapped
 * handled) fall in any entry? 0 for an empty list or another family. */
int auth_nets_match(const struct auth_nets *nets, const struct sockaddr *sa);

/* auth_b64_decode decodes standard base64 (RFC 4648, padding required
 * when the length is not a multiple of 4, no whitespace) from in[0..n)
 * into out (cap bytes). Returns 1 and sets *outlen, or 0 on bad input or
 * when it does not fit. "=" alone (RFC 4954's empty response) decodes to
 * zero bytes. */
int auth_b64_decode(const char *in, size_t n, uint8_t *out, size_t cap, size_t *outlen);

/* auth_plain_decode splits a decoded PLAIN response
 * "authzid NUL authcid NUL passwd" into NUL-terminated user and pass
 * (AUTH_USER_MAX / AUTH_PASS_MAX + 1 bytes). An authzid must be empty or
 * equal to the user (tern does not let one user act for another). User
 * and password must be non-empty and contain no NUL. */
int auth_plain_decode(const uint8_t *p, size_t n, char *user, char *pass);

struct auth_entry {
    char user[AUTH_USER_MAX + 1];
    char hash[AUTH_HASH_MAX + 1];
};

struct auth_creds {
    struct auth_entry *e;
    size_t n;
};

/* auth_hash_ok: is h a hash of an accepted method ($y$ or $6$)? */
int auth_hash_ok(const char *h);

/* auth_creds_load reads a credentials file. On failure *c is empty. */
int auth_creds_load(struct auth_creds *c, const char *path, char *err, size_t errlen);
void auth_creds_free(struct auth_creds *c);

/* auth_creds_check: 1 if user exists and pass matches its hash. An unknown
 * user still costs one hash computation, so timing does not tell which
 * users exist. */
int auth_creds_check(const struct auth_creds *c, const char *user, const char *pass);

/* auth_hash_password writes a new yescrypt hash of pass (fresh random
 * salt) into out[cap]. Returns 1, or 0 when libcrypt cannot. */
int auth_hash_password(const char *pass, char *out, size_t cap);

#endif
