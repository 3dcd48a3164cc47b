/*
 * auth.c - CIDR lists, SMTP AUTH decoding, credentials file; see auth.h.
 */
#include "engine/auth.h"

#include <arpa/inet.h>
#include <crypt.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- CIDR ------------------------------------------------------------- */

int auth_cidr_parse(const char *s, size_t n, struct auth_net *out)
{
    char text[AUTH_CIDR_TEXT_MAX];
    if (n == 0 || n >= sizeof(text))
        return 0;
    memcpy(text, s, n);
    text[n] = '\0';
    char *slash = strchr(text, '/');
    if (slash)
        *slash = '\0';
    memset(out, 0, sizeof(*out));
    int maxbits;
    if (inet_pton(AF_INET, text, out->addr) == 1) {
        out->family = AF_INET;
        maxbits = 32;
    } else if (inet_pton(AF_INET6, text, out->addr) == 1) {
        out->family = AF_INET6;
        maxbits = 128;
    } else {
        return 0;
    }
    out->prefix = maxbits;
    if (slash) {
        const char *d = slash + 1;
        size_t dl = strlen(d);
        if (dl == 0 || dl > 3)
            return 0;
        int v = 0;
        for (size_t i = 0; i < dl; i++) {
            if (d[i] < '0' || d[i] > '9')
                return 0;
            v = v * 10 + (d[i] - '0');
        }
        if (v > maxbits)
            return 0;
        out->prefix = v;
    }
    /* Host bits set: refuse rather than guess. */
    for (int bit = out->prefix; bit < maxbits; bit++)
        if (out->addr[bit / 8] & (0x80 >> (bit % 8)))
            return 0;
    return 1;
}

static int prefix_eq(const uint8_t *a, const uint8_t *b, int bits)
{
    int whole = bits / 8;
    if (memcmp(a, b, (size_t)whole) != 0)
        return 0;
    int rest = bits % 8;
    if (rest == 0)
        return 1;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (a[whole] & mask) == (b[whole] & mask);
}

int auth_nets_match(const struct auth_nets *nets, const struct sockaddr *sa)
{
    uint8_t v4[4], v6[16];
    int has4 = 0, has6 = 0;
    if (sa->sa_family == AF_INET) {
        memcpy(v4, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        has4 = 1;
    } else if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        memcpy(v6, a, 16);
        has6 = 1;
        if (IN6_IS_ADDR_V4MAPPED(a)) {
            memcpy(v4, v6 + 12, 4);
            has4 = 1;
        }
    }
    for (int i = 0; i < nets->n; i++) {
        const struct auth_net *e = &nets->net[i];
        if (e->family == AF_INET && has4 && prefix_eq(e->addr, v4, e->prefix))
            return 1;
        if (e->family == AF_INET6 && has6 && prefix_eq(e->addr, v6, e->prefix))
            return 1;
    }
    return 0;
}

/* --- base64 and PLAIN ---------------------------------------------------- */

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

int auth_b64_decode(const char *in, size_t n, uint8_t *out, size_t cap, size_t *outlen)
{
    if (n == 1 && in[0] == '=') {
        *outlen = 0;
        return 1;
    }
    if (n % 4 != 0)
        return 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            unsigned char c = (unsigned char)in[i + (size_t)k];
            if (c == '=' && i + 4 == n && k >= 2) {
                v[k] = 0;
                pad++;
                continue;
            }
            if (pad > 0)
                return 0;       /* data after padding */
            v[k] = b64_value(c);
            if (v[k] < 0)
                return 0;
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 |
                     (uint32_t)v[3];
        size_t take = 3 - (size_t)pad;
        if (o + take > cap)
            return 0;
        out[o++] = (uint8_t)(w >> 16);
        if (take > 1)
            out[o++] = (uint8_t)(w >> 8);
        if (take > 2)
            out[o++] = (uint8_t)w;
    }
    *outlen = o;
    return 1;
}

/* Copy field [p, p+n) into dst (cap bytes with NUL); 0 if empty, too long
 * or holding a NUL. */
static int copy_field(char *dst, size_t cap, const uint8_t *p, size_t n)
{
    if (n == 0 || n >= cap || memchr(p, '\0', n))
        return 0;
    memcpy(dst, p, n);
    dst[n] = '\0';
    return 1;
}

int auth_plain_decode(const uint8_t *p, size_t n, char *user, char *pass)
{
    const uint8_t *z1 = memchr(p, '\0', n);
    if (z1 == NULL)
        return 0;
    size_t azlen = (size_t)(z1 - p);
    const uint8_t *u = z1 + 1;
    size_t left = n - azlen - 1;
    const uint8_t *z2 = memchr(u, '\0', left);
    if (z2 == NULL)
        return 0;
    size_t ulen = (size_t)(z2 - u);
    if (!copy_field(user, AUTH_USER_MAX + 1, u, ulen) ||
        !copy_field(pass, AUTH_PASS_MAX + 1, z2 + 1, left - ulen - 1))
        return 0;
    if (azlen > 0 && (azlen != ulen || memcmp(p, u, ulen) != 0))
        return 0;
    return 1;
}

/* --- credentials ------------------------------------------------------------ */

int auth_hash_ok(const char *h)
{
    size_t n = strlen(h);
    if (n < 8 || n > AUTH_HASH_MAX)
        return 0;
    return strncmp(h, "$y$", 3) == 0 || strncmp(h, "$6$", 3) == 0;
}

static int user_ok(const char *u, size_t n)
{
    if (n == 0 || n > AUTH_USER_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (u[i] <= ' ' || u[i] == 0x7f || u[i] == ':')
            return 0;
    return 1;
}

static int add_entry(struct auth_creds *c, size_t *cap, const char *u, size_t ul, const char *h)
{
    for (size_t i = 0; i < c->n; i++)
        if (strlen(c->e[i].user) == ul && memcmp(c->e[i].user, u, ul) == 0)
            return -1;
    if (c->n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 16;
        struct auth_entry *ne = realloc(c->e, ncap * sizeof(*ne));
        if (ne == NULL)
            return 0;
        c->e = ne;
        *cap = ncap;
    }
    struct auth_entry *e = &c->e[c->n++];
    memcpy(e->user, u, ul);
    e->user[ul] = '\0';
    snprintf(e->hash, sizeof(e->hash), "%s", h);
    return 1;
}

/* One line (comment and trailing whitespace already removed). Returns NULL
 * or why it is wrong. */
static const char *creds_line(struct auth_creds *c, size_t *cap, char *line)
{
    char *colon = strchr(line, ':');
    if (colon == NULL)
        return "expected user:hash";
    size_t ul = (size_t)(colon - line);
    if (!user_ok(line, ul))
        return "bad user name";
    const char *h = colon + 1;
    if (!auth_hash_ok(h))
        return "not a yescrypt ($y$) or sha512-crypt ($6$) hash";
    int r = add_entry(c, cap, line, ul, h);
    if (r < 0)
        return "duplicate user";
    if (r == 0)
        return "out of memory";
    if (c->n > AUTH_CREDS_MAX)
        return "too many users";
    return NULL;
}

int auth_creds_load(struct auth_creds *c, const char *path, char *err, size_t errlen)
{
    memset(c, 0, sizeof(*c));
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return 0;
    }
    char line[AUTH_LINE_MAX + 2];
    size_t cap = 0;
    int lineno = 0;
    const char *why = NULL;
    while (why == NULL && fgets(line, sizeof(line), f)) {
        lineno++;
        size_t n = strlen(line);
        if (n == sizeof(line) - 1 && line[n - 1] != '\n') {
            why = "line too long";
            break;
        }
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        n = strlen(line);
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ' ||
                         line[n - 1] == '\t'))
            line[--n] = '\0';
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0')
            continue;
        why = creds_line(c, &cap, p);
    }
    fclose(f);
    if (why) {
        snprintf(err, errlen, "%s:%d: %s", path, lineno, why);
        auth_creds_free(c);
        return 0;
    }
    return 1;
}

void auth_creds_free(struct auth_creds *c)
{
    free(c->e);
    c->e = NULL;
    c->n = 0;
}

/* Constant-time comparison of two NUL-terminated hashes. */
static int hash_eq(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char d = la != lb;
    size_t n = la < lb ? la : lb;
    for (size_t i = 0; i < n; i++)
        d |= (unsigned char)(a[i] ^ b[i]);
    return d == 0;
}

int auth_creds_check(const struct auth_creds *c, const char *user, const char *pass)
{
    const char *hash = NULL;
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->e[i].user, user) == 0) {
            hash = c->e[i].hash;
            break;
        }
    if (c->n == 0)
        return 0;
    struct crypt_data *cd = calloc(1, sizeof(*cd));
    if (cd == NULL)
        return 0;
    /* An unknown user is hashed with the first user's settings, so that a
     * failed login costs the same whether or not the user exists. */
    const char *out = crypt_r(pass, hash ? hash : c->e[0].hash, cd);
    int ok = hash != NULL && out != NULL && out[0] != '*' && hash_eq(out, hash);
    explicit_bzero(cd, sizeof(*cd));
    free(cd);
    return ok;
}

int auth_hash_password(const char *pass, char *out, size_t cap)
{
    char salt[CRYPT_GENSALT_OUTPUT_SIZE];
    if (crypt_gensalt_rn("$y$", 0, NULL, 0, salt, sizeof(salt)) == NULL)
        return 0;
    struct crypt_data *cd = calloc(1, sizeof(*cd));
    if (cd == NULL)
        return 0;
    const char *h = crypt_r(pass, salt, cd);
    int ok = h != NULL && h[0] != '*' && strlen(h) < cap;
    if (ok)
        snprintf(out, cap, "%s", h);
    explicit_bzero(cd, sizeof(*cd));
    free(cd);
    return ok;
}
