/*
 * tls_check.c - `tern tls-check`; see tls_check.h.
 *
 * This is a one-shot command-line tool, not the engine: it uses one plain
 * socket (non-blocking, every wait a poll() bounded by --timeout) and
 * drives the same sans-I/O pieces the io_uring workers use: the SMTP
 * client session (engine/smtp_client.h, TLS mode REQUIRED so that a
 * missing STARTTLS is seen as such), the TLS layer over memory
 * (tls/tls.h), and the policy module that turns a level into handshake
 * parameters (engine/policy.h).
 *
 * Layout: options, the target, the socket, one probe (a connection from
 * connect to QUIT), what a probe prints, the tier ladder with the
 * verdict, the resumption check, and tls_check_main.
 */
#include "engine/tls_check.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/mem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "engine/buf.h"
#include "engine/config.h"
#include "engine/policy.h"
#include "engine/smtp_client.h"
#include "tls/cert_check.h"
#include "tls/tls.h"

#define TC_HOST_MAX         255     /* a DNS name (RFC 1035) */
#define TC_PORT_MAX         65535
#define TC_PORT_DEFAULT     "25"
#define TC_TIMEOUT_DEFAULT  30
#define TC_TIMEOUT_MAX      3600
#define TC_ENTRY_MAX        8192    /* policy entry text built from options */
#define TC_RECV_CHUNK       16384   /* one TLS record (see tls.h on feeding) */
#define TC_ERR_MAX          192
#define TC_ADDR_MAX         64      /* "[v6 address]:port" */
#define TC_LADDER_MAX       3       /* preferred, sufficient, legacy */
#define TC_SANS_MAX         1024
#define TC_HEX_MAX          (2 * SHA256_DIGEST_LENGTH + 1)
#define TC_VERIFY_PREFIX    "certificate verify failed: "
#define TC_HELP             (-1)    /* parse_opts: --help was printed */

/* ---- options ------------------------------------------------------------ */

struct tc_opts {
    const char *level;
    const char *match[TLS_MAX_MATCH_NAMES];
    size_t nmatch;
    const char *pin[TLS_MAX_PINS];
    size_t npins;
    const char *min_version, *ca_file, *client_cert, *client_key, *helo, *domain;
    int timeout_s;
    int port;               /* --port, 0 when not given */
    const char *target;     /* HOST[:PORT] */
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tern tls-check [--policy LEVEL] [--match NAME]... [--pin HEX]...\n"
            "         [--min-version 1.0|1.1|1.2|1.3] [--ca-file PATH]\n"
            "         [--client-cert PATH --client-key PATH] [--helo NAME] [--domain NAME]\n"
            "         [--timeout SECONDS] [--port N] HOST[:PORT]\n"
            "  LEVEL: none, may, encrypt, fingerprint, verify (default), secure\n"
            "  exit status: 0 pass, 1 fail under the policy, 2 usage or setup error\n");
}

/* add_value appends a repeatable option's value; 0 when full. */
static int add_value(const char **list, size_t *n, size_t max, const char *v)
{
    if (*n == max)
        return 0;
    list[(*n)++] = v;
    return 1;
}

/* The field of an option that takes one word as given, or NULL. */
static const char **string_slot(struct tc_opts *o, const char *name)
{
    if (strcmp(name, "--policy") == 0) return &o->level;
    if (strcmp(name, "--min-version") == 0) return &o->min_version;
    if (strcmp(name, "--ca-file") == 0) return &o->ca_file;
    if (strcmp(name, "--client-cert") == 0) return &o->client_cert;
    if (strcmp(name, "--client-key") == 0) return &o->client_key;
    if (strcmp(name, "--helo") == 0) return &o->helo;
    if (strcmp(name, "--domain") == 0) return &o->domain;
    return NULL;
}

/* One "--name value" option; returns NULL or why not. */
static const char *set_option(struct tc_opts *o, const char *name, const char *v)
{
    const char **slot = string_slot(o, name);
    if (slot != NULL) {
        *slot = v;
        return NULL;
    }
    if (strcmp(name, "--match") == 0)
        return add_value(o->match, &o->nmatch, TLS_MAX_MATCH_NAMES, v) ? NULL : "too many (at most 8)";
    if (strcmp(name, "--pin") == 0)
        return add_value(o->pin, &o->npins, TLS_MAX_PINS, v) ? NULL : "too many (at most 8)";
    if (strcmp(name, "--timeout") == 0)
        return config_parse_int(v, 1, TC_TIMEOUT_MAX, &o->timeout_s) ? NULL : "wants 1..3600 seconds";
    if (strcmp(name, "--port") == 0)
        return config_parse_int(v, 1, TC_PORT_MAX, &o->port) ? NULL : "wants 1..65535";
    return "unknown option";
}

/* parse_opts returns TLS_CHECK_PASS when the options were read, TC_HELP
 * after printing the usage for --help, or TLS_CHECK_USAGE after printing
 * why not. */
static int parse_opts(int argc, char **argv, struct tc_opts *o, FILE *out)
{
    memset(o, 0, sizeof(*o));
    o->level = "verify";
    o->timeout_s = TC_TIMEOUT_DEFAULT;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *why = NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(out);
            return TC_HELP;
        }
        if (a[0] != '-' && o->target != NULL)
            why = "more than one HOST given";
        else if (a[0] != '-')
            o->target = a;
        else if (i + 1 == argc)
            why = "needs a value";
        else
            why = set_option(o, a, argv[++i]);
        if (why) {
            fprintf(out, "tern tls-check: %s: %s\n", a, why);
            return TLS_CHECK_USAGE;
        }
    }
    if (o->target == NULL) {
        usage(out);
        return TLS_CHECK_USAGE;
    }
    return TLS_CHECK_PASS;
}

/* ---- the policy entry ---------------------------------------------------- */

/* A value that goes into the entry text must stay one word there. */
static int word_ok(const char *s, int allow_comma)
{
    if (*s == '\0')
        return 0;
    for (; *s; s++)
        if ((unsigned char)*s <= ' ' || (unsigned char)*s == 0x7f || (*s == ',' && !allow_comma))
            return 0;
    return 1;
}

static int put(char *buf, size_t len, size_t *n, const char *a, const char *b)
{
    int k = snprintf(buf + *n, len - *n, "%s%s", a, b);
    if (k < 0 || (size_t)k >= len - *n)
        return 0;
    *n += (size_t)k;
    return 1;
}

/* build_entry writes the options as one policy entry ("verify
 * match=a,b min=1.2 ..."); returns NULL or why not. */
static const char *build_entry(const struct tc_opts *o, char *buf, size_t len)
{
    size_t n = 0;
    int ok = word_ok(o->level, 0) && put(buf, len, &n, o->level, "");
    for (size_t i = 0; ok && i < o->nmatch; i++)
        ok = word_ok(o->match[i], 0) && put(buf, len, &n, i ? "," : " match=", o->match[i]);
    if (ok && o->min_version)
        ok = word_ok(o->min_version, 0) && put(buf, len, &n, " min=", o->min_version);
    for (size_t i = 0; ok && i < o->npins; i++)
        ok = word_ok(o->pin[i], 0) && put(buf, len, &n, " pin=", o->pin[i]);
    if (ok && o->ca_file)
        ok = word_ok(o->ca_file, 1) && put(buf, len, &n, " ca_file=", o->ca_file);
    if (!ok)
        return "option values must be single words (no spaces; no commas in names)";
    if ((o->client_cert == NULL) != (o->client_key == NULL))
        return "--client-cert and --client-key go together";
    if (o->client_cert && !(word_ok(o->client_cert, 1) && word_ok(o->client_key, 1) &&
                            put(buf, len, &n, " cert=", o->client_cert) &&
                            put(buf, len, &n, " key=", o->client_key)))
        return "certificate paths must be single words";
    return NULL;
}

/* ---- the target ------------------------------------------------------------ */

struct tc_target {
    char host[TC_HOST_MAX + 1];
    char port[8];
};

/* parse_target splits HOST[:PORT] / [V6]:PORT / a bare IPv6 address. */
static const char *parse_target(const char *t, int port_opt, struct tc_target *out)
{
    const char *why = NULL;
    int pn;
    if (!config_split_hostport(t, out->host, sizeof(out->host), &pn, &why))
        return why;
    if (pn && port_opt && pn != port_opt)
        return "two different ports given";
    if (pn == 0)
        pn = port_opt;
    if (pn)
        snprintf(out->port, sizeof(out->port), "%d", pn);
    else
        snprintf(out->port, sizeof(out->port), "%s", TC_PORT_DEFAULT);
    return NULL;
}

/* ---- the socket ------------------------------------------------------------- */

struct tc_io {
    int fd;
    int timeout_ms;
    char err[TC_ERR_MAX];
};

static int wait_fd(int fd, short events, int timeout_ms)
{
    struct pollfd p = { .fd = fd, .events = events };
    int r;
    do
        r = poll(&p, 1, timeout_ms);
    while (r < 0 && errno == EINTR);
    return r;
}

static int connect_one(struct tc_io *io, const struct addrinfo *ai)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
        snprintf(io->err, sizeof(io->err), "socket: %s", strerror(errno));
        return 0;
    }
    int e = connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 ? 0 : errno;
    if (e == EINPROGRESS) {
        int r = wait_fd(fd, POLLOUT, io->timeout_ms);
        socklen_t elen = sizeof(e);
        if (r == 0)
            e = ETIMEDOUT;
        else if (r < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &elen) != 0)
            e = errno;
    }
    if (e != 0) {
        snprintf(io->err, sizeof(io->err), "%s", strerror(e));
        close(fd);
        return 0;
    }
    io->fd = fd;
    return 1;
}

static void fmt_addr(const struct addrinfo *ai, char *buf, size_t len)
{
    char h[NI_MAXHOST], s[NI_MAXSERV];
    if (getnameinfo(ai->ai_addr, ai->ai_addrlen, h, sizeof(h), s, sizeof(s),
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0)
        snprintf(buf, len, "?");
    else
        snprintf(buf, len, ai->ai_family == AF_INET6 ? "[%s]:%s" : "%s:%s", h, s);
}

/* io_connect tries every address of the target in turn. */
static int io_connect(struct tc_io *io, const struct tc_target *t, char *addr, size_t alen)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res;
    int rc = getaddrinfo(t->host, t->port, &hints, &res);
    if (rc != 0) {
        snprintf(io->err, sizeof(io->err), "%s: %s", t->host, gai_strerror(rc));
        return 0;
    }
    int ok = 0;
    for (const struct addrinfo *ai = res; ai && !ok; ai = ai->ai_next)
        if ((ok = connect_one(io, ai)))
            fmt_addr(ai, addr, alen);
    freeaddrinfo(res);
    return ok;
}

static int io_send(struct tc_io *io, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t k = send(io->fd, p, n, MSG_NOSIGNAL);
        if (k > 0) {
            p += k;
            n -= (size_t)k;
        } else if (k < 0 && errno == EINTR) {
            continue;
        } else if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int r = wait_fd(io->fd, POLLOUT, io->timeout_ms);
            if (r <= 0) {
                snprintf(io->err, sizeof(io->err), "send: %s", r == 0 ? "timed out" : strerror(errno));
                return 0;
            }
        } else {
            snprintf(io->err, sizeof(io->err), "send: %s", strerror(errno));
            return 0;
        }
    }
    return 1;
}

/* io_recv returns the bytes read, 0 when the peer closed, -1 on an error
 * or a timeout (io->err says which). */
static ssize_t io_recv(struct tc_io *io, uint8_t *b, size_t cap)
{
    for (;;) {
        ssize_t k = recv(io->fd, b, cap, 0);
        if (k >= 0)
            return k;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            snprintf(io->err, sizeof(io->err), "recv: %s", strerror(errno));
            return -1;
        }
        int r = wait_fd(io->fd, POLLIN, io->timeout_ms);
        if (r <= 0) {
            snprintf(io->err, sizeof(io->err), "%s", r == 0 ? "timed out waiting for the server"
                                                            : strerror(errno));
            return -1;
        }
    }
}

/* ---- one probe: a connection from connect to QUIT ------------------------- */

struct probe {
    FILE *out;                      /* progress lines; NULL: quiet */
    struct tc_io io;
    struct smtp_client sc;
    struct tls_conn *tls;           /* from STARTTLS's 220 on */
    struct buf plain;               /* decrypted bytes on their way to sc */
    int eof;
    /* What it found. */
    int connected;
    char addr[TC_ADDR_MAX];
    int greeted;
    int caps_known;                 /* capabilities before TLS were printed */
    int starttls_accepted;          /* 220 to STARTTLS */
    int tls_up;                     /* handshake finished */
    int tls_failed;                 /* handshake or later TLS error */
    int tls_negotiation;            /* ... of the kind a lower tier may fix */
    char tls_err[TC_ERR_MAX];
    struct tls_info info;
    int ready;                      /* the SMTP session was established */
    const char *smtp_err;           /* SMTP_EV_ERROR's reason */
    int io_failed;
};

static void probe_init(struct probe *p, FILE *out, const char *helo, int timeout_s,
                       enum smtp_tls_mode mode)
{
    memset(p, 0, sizeof(*p));
    p->out = out;
    p->io.fd = -1;
    p->io.timeout_ms = timeout_s * 1000;
    struct smtp_client_config cfg = { .helo_name = helo, .tls = mode };
    smtp_client_init(&p->sc, &cfg);
    buf_init(&p->plain, SMTP_CLIENT_INPUT_MAX);
}

static void probe_free(struct probe *p)
{
    if (p->io.fd >= 0)
        close(p->io.fd);
    p->io.fd = -1;
    tls_conn_free(p->tls);
    p->tls = NULL;
    smtp_client_cleanup(&p->sc);
    buf_free(&p->plain);
}

static void say(const struct probe *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void say(const struct probe *p, const char *fmt, ...)
{
    if (p->out == NULL)
        return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(p->out, fmt, ap);
    va_end(ap);
}

/* Peer text is printed with anything but printable ASCII replaced. */
static void clean(char *dst, size_t len, const char *src, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k + 1 < len; i++)
        dst[k++] = (src[i] >= 0x20 && src[i] < 0x7f) ? src[i] : '?';
    if (len)
        dst[k] = '\0';
}

static void tls_failure(struct probe *p)
{
    p->tls_failed = 1;
    p->tls_negotiation = tls_conn_error_is_negotiation(p->tls);
    snprintf(p->tls_err, sizeof(p->tls_err), "%s", tls_conn_error(p->tls));
}

static int send_tls_output(struct probe *p)
{
    size_t n;
    const uint8_t *d = tls_conn_output(p->tls, &n);
    if (n == 0)
        return 1;
    if (!io_send(&p->io, d, n)) {
        p->io_failed = 1;
        return 0;
    }
    tls_conn_output_consume(p->tls, n);
    return 1;
}

/* recv_bytes reads once; 0 when nothing more will come. */
static ssize_t recv_bytes(struct probe *p, uint8_t *b, size_t cap)
{
    ssize_t k = io_recv(&p->io, b, cap);
    if (k < 0)
        p->io_failed = 1;
    else if (k == 0 && p->eof++) {   /* a second EOF: nobody listened to the first */
        snprintf(p->io.err, sizeof(p->io.err), "connection closed by the server");
        p->io_failed = 1;
    }
    return k;
}

/* Hands every plaintext byte TLS has to the SMTP session. */
static int tls_to_smtp(struct probe *p)
{
    for (;;) {
        enum tls_status st = tls_conn_read(p->tls, &p->plain);
        size_t n = buf_used(&p->plain);
        if (n) {
            smtp_client_feed(&p->sc, buf_peek(&p->plain), n);
            buf_consume(&p->plain, n);
        }
        if (!send_tls_output(p))
            return 0;
        if (st == TLS_WANT_IO)
            return 1;
        if (st == TLS_CLOSED) {
            smtp_client_eof(&p->sc);
            return 1;
        }
        if (st == TLS_ERROR) {
            tls_failure(p);
            return 0;
        }
    }
}

static int receive(struct probe *p)
{
    uint8_t b[TC_RECV_CHUNK];
    ssize_t k = recv_bytes(p, b, sizeof(b));
    if (p->io_failed)
        return 0;
    if (k == 0) {
        smtp_client_eof(&p->sc);
        return 1;
    }
    if (p->tls == NULL) {
        smtp_client_feed(&p->sc, b, (size_t)k);   /* over the cap: the next event is ERROR */
        return 1;
    }
    if (!tls_conn_feed(p->tls, b, (size_t)k)) {
        snprintf(p->tls_err, sizeof(p->tls_err), "out of memory");
        p->tls_failed = 1;
        return 0;
    }
    return tls_to_smtp(p);
}

/* Sends what the SMTP session queued, encrypted once TLS is up. Nothing
 * goes out in plaintext after STARTTLS was accepted. */
static int flush(struct probe *p)
{
    size_t n;
    const uint8_t *d;
    if (p->tls != NULL && !p->tls_up)
        return 1;
    while ((d = smtp_client_output(&p->sc, &n)), n > 0) {
        if (p->tls_up && tls_conn_write(p->tls, d, n) != TLS_OK) {
            tls_failure(p);
            return 0;
        }
        if (!p->tls_up && !io_send(&p->io, d, n)) {
            p->io_failed = 1;
            return 0;
        }
        smtp_client_output_consume(&p->sc, n);
    }
    return p->tls_up ? send_tls_output(p) : 1;
}

/* ---- what a probe prints ------------------------------------------------- */

static void print_caps(const struct probe *p, const char *when)
{
    const struct smtp_caps *c = smtp_client_caps(&p->sc);
    if (!c->esmtp) {
        say(p, "%s: EHLO refused, HELO used (no extensions)\n", when);
        return;
    }
    say(p, "%s: STARTTLS %s, PIPELINING %s, SIZE %llu, 8BITMIME %s, SMTPUTF8 %s, CHUNKING %s, "
           "ENHANCEDSTATUSCODES %s\n", when, c->starttls ? "yes" : "no",
        c->pipelining ? "yes" : "no", (unsigned long long)c->size, c->eightbitmime ? "yes" : "no",
        c->smtputf8 ? "yes" : "no", c->chunking ? "yes" : "no",
        c->enhancedstatuscodes ? "yes" : "no");
}

static void print_reply(const struct probe *p, const char *what, const struct smtp_reply *r)
{
    char text[SMTP_REPLY_TEXT_MAX];
    size_t n = 0;
    const char *line = smtp_reply_line(r, 0, &n);
    clean(text, sizeof(text), line ? line : "", line ? n : 0);
    say(p, "%s: %d %s%s\n", what, r->code, text, r->nlines > 1 ? " ..." : "");
}

static void hex(const uint8_t *d, size_t n, char *out, size_t len)
{
    static const char digits[] = "0123456789abcdef";
    size_t k = 0;
    for (size_t i = 0; i < n && k + 2 < len; i++) {
        out[k++] = digits[d[i] >> 4];
        out[k++] = digits[d[i] & 0xf];
    }
    out[k] = '\0';
}

/* SHA-256 of the certificate's DER and of its SubjectPublicKeyInfo, the
 * two things a --pin may name. */
static void cert_hashes(X509 *x, char *cert_hex, char *spki_hex)
{
    uint8_t h[SHA256_DIGEST_LENGTH], *der = NULL;
    int n = i2d_X509(x, &der);
    snprintf(cert_hex, TC_HEX_MAX, "?");
    snprintf(spki_hex, TC_HEX_MAX, "?");
    if (n > 0) {
        SHA256(der, (size_t)n, h);
        hex(h, sizeof(h), cert_hex, TC_HEX_MAX);
    }
    OPENSSL_free(der);
    der = NULL;
    n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &der);
    if (n > 0) {
        SHA256(der, (size_t)n, h);
        hex(h, sizeof(h), spki_hex, TC_HEX_MAX);
    }
    OPENSSL_free(der);
}

static void print_cert(const struct probe *p, size_t i, X509 *x)
{
    char subj[CERT_SUBJECT_MAX], iss[CERT_SUBJECT_MAX], key[64], sig[96];
    char nb[CERT_TIME_MAX], na[CERT_TIME_MAX], sans[TC_SANS_MAX];
    char ch[TC_HEX_MAX], sh[TC_HEX_MAX];
    cert_fmt_name(X509_get_subject_name(x), subj, sizeof(subj));
    cert_fmt_name(X509_get_issuer_name(x), iss, sizeof(iss));
    cert_fmt_key(x, key, sizeof(key));
    cert_fmt_sig(x, sig, sizeof(sig));
    cert_fmt_time(X509_get0_notBefore(x), nb, sizeof(nb));
    cert_fmt_time(X509_get0_notAfter(x), na, sizeof(na));
    cert_fmt_sans(x, sans, sizeof(sans));
    cert_hashes(x, ch, sh);
    say(p, "  [%zu] subject: %s\n", i, subj);
    say(p, "      issuer:  %s\n", iss);
    say(p, "      key:     %s, signed with %s\n", key, sig);
    say(p, "      valid:   %s to %s\n", nb, na);
    say(p, "      names:   %s\n", sans);
    say(p, "      sha256 of certificate: %s\n", ch);
    say(p, "      sha256 of public key:  %s\n", sh);
}

static void print_chain(const struct probe *p)
{
    size_t n = tls_conn_peer_cert_count(p->tls);
    if (n == 0) {
        say(p, "certificate chain: none available\n");
        return;
    }
    say(p, "certificate chain: %zu certificate%s, as sent by the server\n", n, n == 1 ? "" : "s");
    for (size_t i = 0; i < n; i++)
        print_cert(p, i, tls_conn_peer_cert(p->tls, i));
}

static void print_tls(const struct probe *p)
{
    const struct tls_info *i = &p->info;
    say(p, "TLS: %s, cipher %s, group %s, resumed %s\n", i->protocol, i->cipher,
        i->group[0] ? i->group : "(none)", i->resumed ? "yes" : "no");
    say(p, "tier reached: %s\n", tls_tier_name(tls_info_tier(i)));
    print_chain(p);
    say(p, "verification: %s (%s)\n", i->verified ? "verified" : "not verified", i->verify_detail);
}

/* ---- one probe, driven ---------------------------------------------------- */

static int start_tls(struct probe *p, struct tls_client_ctx *ctx,
                     const struct tls_client_params *params)
{
    p->starttls_accepted = 1;
    p->tls = tls_conn_client_new(ctx, params);
    if (p->tls == NULL) {
        snprintf(p->tls_err, sizeof(p->tls_err), "TLS setup failed (parameters refused)");
        p->tls_failed = 1;
        return 0;
    }
    enum tls_status st;
    uint8_t b[TC_RECV_CHUNK];
    while ((st = tls_conn_handshake(p->tls)) == TLS_WANT_IO) {
        if (!send_tls_output(p))
            return 0;
        ssize_t k = recv_bytes(p, b, sizeof(b));
        if (k <= 0) {
            snprintf(p->tls_err, sizeof(p->tls_err), "connection lost during the handshake (%s)",
                     k == 0 ? "closed by the server" : p->io.err);
            p->tls_failed = 1;
            return 0;
        }
        tls_conn_feed(p->tls, b, (size_t)k);
    }
    send_tls_output(p);   /* the last flight, or the alert we send */
    if (st != TLS_OK) {
        tls_failure(p);
        say(p, "TLS handshake failed: %s%s\n", p->tls_err,
            p->tls_negotiation ? " (negotiation: a lower tier may work)" : "");
        print_chain(p);
        return 0;
    }
    p->tls_up = 1;
    tls_conn_info(p->tls, &p->info);
    print_tls(p);
    return 1;
}

static int on_event(struct probe *p, struct smtp_event ev, struct tls_client_ctx *ctx,
                    const struct tls_client_params *params)
{
    switch (ev.kind) {
    case SMTP_EV_STARTTLS:
        print_caps(p, "EHLO");
        p->caps_known = 1;
        if (!start_tls(p, ctx, params))
            return 0;
        smtp_client_tls_started(&p->sc);
        return 1;
    case SMTP_EV_READY:
        print_caps(p, p->caps_known ? "EHLO after TLS" : "EHLO");
        p->caps_known = 1;
        p->ready = 1;
        smtp_client_quit(&p->sc);
        return 1;
    case SMTP_EV_ERROR:
        if (!p->caps_known && smtp_client_caps(&p->sc)->esmtp)
            print_caps(p, "EHLO");
        p->smtp_err = ev.reason;
        if (ev.reply && smtp_reply_class(ev.reply) >= 4)   /* not the EHLO without STARTTLS */
            print_reply(p, "refused", ev.reply);
        say(p, "SMTP: %s\n", ev.reason);
        return 0;
    case SMTP_EV_CLOSED:
        return 0;
    default:
        return 1;
    }
}

/* Runs the SMTP session's events; 0 once the session is over. */
static int pump(struct probe *p, struct tls_client_ctx *ctx, const struct tls_client_params *params)
{
    for (;;) {
        struct smtp_event ev = smtp_client_next(&p->sc);
        if (!p->greeted && p->sc.state != SMTP_ST_GREETING && p->sc.last.code != 0) {
            p->greeted = 1;
            print_reply(p, "greeting", &p->sc.last);
        }
        if (ev.kind == SMTP_EV_NONE)
            return 1;
        if (!on_event(p, ev, ctx, params))
            return 0;
    }
}

static void probe_run(struct probe *p, const struct tc_target *t, struct tls_client_ctx *ctx,
                      const struct tls_client_params *params)
{
    if (!io_connect(&p->io, t, p->addr, sizeof(p->addr))) {
        say(p, "cannot connect to %s port %s: %s\n", t->host, t->port, p->io.err);
        return;
    }
    p->connected = 1;
    say(p, "connected to %s\n", p->addr);
    for (;;) {
        int more = pump(p, ctx, params);
        if (!flush(p) || !more || !receive(p))
            break;
    }
    if (p->tls_up && p->tls_failed)
        say(p, "TLS failed after the handshake: %s\n", p->tls_err);
    else if (p->io_failed && !p->smtp_err)
        say(p, "connection: %s\n", p->io.err);
}

/* ---- the check: tier ladder, verdict, resumption ----------------------------- */

struct tc_check {
    FILE *out;
    const struct tc_opts *o;
    struct tc_target target;
    const char *domain;
    char helo[SMTP_HELO_NAME_MAX + 1];
    struct policy_entry entry;
    struct tls_client_ctx *ctx;
};

/* The tiers to offer in turn, as the engine falls back (see tls_check.h). */
static size_t ladder(const struct policy_entry *e, enum tls_tier *t)
{
    size_t n = 0;
    t[n++] = TLS_TIER_PREFERRED;
    if (!policy_level_mandatory(e->level)) {
        t[n++] = TLS_TIER_LEGACY;
        return n;
    }
    t[n++] = TLS_TIER_SUFFICIENT;
    if (e->min_version != 0 && e->min_version < TLS1_2_VERSION)
        t[n++] = TLS_TIER_LEGACY;
    return n;
}

static void run_probe(struct tc_check *c, struct probe *p, FILE *out, enum tls_tier tier,
                      SSL_SESSION *session)
{
    struct tls_client_params params;
    policy_client_params(&c->entry, c->target.host, c->domain, tier, &params);
    params.session = session;
    /* REQUIRED, also for may: a missing STARTTLS must show as such. */
    probe_init(p, out, c->helo, c->o->timeout_s,
               c->entry.level == POLICY_NONE ? SMTP_TLS_NONE : SMTP_TLS_REQUIRED);
    probe_run(p, &c->target, c->ctx, &params);
}

/* judge writes the last line's text; returns the exit status. Under may,
 * a missing, refused or failing TLS means plaintext delivery, as the
 * engine does it: a pass. */
static int judge(const struct tc_check *c, const struct probe *p, char *why, size_t len)
{
    int may = c->entry.level == POLICY_MAY;
    if (!p->connected) {
        snprintf(why, len, "cannot connect: %s", p->io.err);
        return TLS_CHECK_FAIL;
    }
    if (p->ready && !p->tls_failed && (p->tls_up || c->entry.level == POLICY_NONE)) {
        if (!p->tls_up)
            snprintf(why, len, "none: plaintext, as the policy asks");
        else
            snprintf(why, len, "%s: %s (tier %s), %s (%s)", policy_level_name(c->entry.level),
                     p->info.protocol, tls_tier_name(tls_info_tier(&p->info)),
                     p->info.verified ? "verified" : "not verified", p->info.verify_detail);
        return TLS_CHECK_PASS;
    }
    if (p->tls_failed && strncmp(p->tls_err, TC_VERIFY_PREFIX, strlen(TC_VERIFY_PREFIX)) == 0) {
        snprintf(why, len, "certificate verification: %s", p->tls_err + strlen(TC_VERIFY_PREFIX));
        return TLS_CHECK_FAIL;
    }
    if (p->tls_failed) {
        snprintf(why, len, "%s%s", may ? "may: plaintext, TLS failed: " : "TLS: ", p->tls_err);
        return may ? TLS_CHECK_PASS : TLS_CHECK_FAIL;
    }
    /* smtp_client's reasons "STARTTLS not offered" / "STARTTLS refused". */
    if (!p->starttls_accepted && p->smtp_err && strncmp(p->smtp_err, "STARTTLS", 8) == 0) {
        snprintf(why, len, "%s%s", may ? "may: plaintext, " : "", p->smtp_err);
        return may ? TLS_CHECK_PASS : TLS_CHECK_FAIL;
    }
    snprintf(why, len, "%s%s: %s", p->tls_up ? "after TLS, " : "", p->smtp_err ? "SMTP" : "connection",
             p->smtp_err ? p->smtp_err : p->io.err);
    return TLS_CHECK_FAIL;
}

/* Takes the newest session the probe received (the others are freed). */
static SSL_SESSION *newest_session(struct probe *p)
{
    SSL_SESSION *s, *last = NULL;
    while (p->tls && (s = tls_conn_take_session(p->tls)) != NULL) {
        SSL_SESSION_free(last);
        last = s;
    }
    return last;
}

static void check_resumption(struct tc_check *c, struct probe *first, enum tls_tier tier)
{
    SSL_SESSION *s = newest_session(first);
    if (s == NULL) {
        fprintf(c->out, "resumption: no (the server gave no session to resume)\n");
        return;
    }
    fprintf(c->out, "== second connection, offering the session received\n");
    struct probe p;
    run_probe(c, &p, NULL, tier, s);
    SSL_SESSION_free(s);
    if (p.tls_up && !p.tls_failed && p.info.resumed)
        fprintf(c->out, "resumption: yes (%s)\n", p.info.protocol);
    else if (p.tls_up && !p.tls_failed)
        fprintf(c->out, "resumption: no (the server answered with a full handshake)\n");
    else
        fprintf(c->out, "resumption: no (the second connection failed: %s)\n",
                p.tls_failed ? p.tls_err : p.smtp_err ? p.smtp_err : p.io.err);
    probe_free(&p);
}

static int run_check(struct tc_check *c)
{
    enum tls_tier tiers[TC_LADDER_MAX] = { TLS_TIER_PREFERRED };
    size_t n = c->entry.level == POLICY_NONE ? 1 : ladder(&c->entry, tiers);
    struct probe p;
    size_t i = 0;
    for (;; i++) {
        if (c->entry.level == POLICY_NONE)
            fprintf(c->out, "== attempt 1: plaintext (policy none never starts TLS)\n");
        else
            fprintf(c->out, "== attempt %zu: offering tier %s\n", i + 1, tls_tier_name(tiers[i]));
        run_probe(c, &p, c->out, tiers[i], NULL);
        if (i + 1 == n || p.tls_up || !(p.tls_failed && p.tls_negotiation))
            break;
        probe_free(&p);
    }
    char why[2 * TC_ERR_MAX];
    int rc = judge(c, &p, why, sizeof(why));
    if (p.tls_up && !p.tls_failed && p.ready)
        check_resumption(c, &p, tiers[i]);
    probe_free(&p);
    fprintf(c->out, "%s: %s\n", rc == TLS_CHECK_PASS ? "PASS" : "FAIL", why);
    return rc;
}

/* setup turns the options into the target, the policy entry and the TLS
 * context; returns NULL or why not. */
static const char *setup(struct tc_check *c, char *err, size_t errlen)
{
    const struct tc_opts *o = c->o;
    const char *why = parse_target(o->target, o->port, &c->target);
    char text[TC_ENTRY_MAX];
    if (why || (why = build_entry(o, text, sizeof(text))) != NULL)
        return why;
    if (!policy_entry_parse(text, strlen(text), &c->entry, err, errlen))
        return err;
    c->domain = o->domain ? o->domain : c->target.host;
    if (o->helo)
        snprintf(c->helo, sizeof(c->helo), "%s", o->helo);
    else if (gethostname(c->helo, sizeof(c->helo)) != 0)
        snprintf(c->helo, sizeof(c->helo), "localhost");
    c->helo[sizeof(c->helo) - 1] = '\0';
    struct tls_client_config cfg = {
        .ca_file = c->entry.ca_file[0] ? c->entry.ca_file : NULL,
        .cert_file = c->entry.cert_file[0] ? c->entry.cert_file : NULL,
        .key_file = c->entry.key_file[0] ? c->entry.key_file : NULL,
    };
    c->ctx = tls_client_ctx_new(&cfg, err, errlen);
    if (c->ctx == NULL)
        return err;
    fprintf(c->out, "tls-check %s port %s, policy \"%s\"%s\n", c->target.host, c->target.port, text,
            tls_client_ctx_store_usable(c->ctx) ? "" : " (no trust store: nothing can verify)");
    return NULL;
}

int tls_check_main(int argc, char **argv, FILE *out)
{
    struct tc_opts o;
    int rc = parse_opts(argc, argv, &o, out);
    if (rc != TLS_CHECK_PASS)
        return rc == TC_HELP ? TLS_CHECK_PASS : rc;
    struct tc_check c = { .out = out, .o = &o };
    char err[TC_ERR_MAX] = "";
    const char *why = setup(&c, err, sizeof(err));
    if (why != NULL) {
        fprintf(out, "tern tls-check: %s\n", why);
        tls_client_ctx_free(c.ctx);
        return TLS_CHECK_USAGE;
    }
    rc = run_check(&c);
    fflush(out);
    tls_client_ctx_free(c.ctx);
    return rc;
}
