/*
 * cert_check.c - checks on a certificate tern will present; see
 * cert_check.h for what is reported and how severe it is.
 *
 * Layout: text helpers (bounded, sanitised: certificate fields are
 * attacker-shaped bytes when tls-check prints a peer's chain), the
 * cert_fmt_* describers, then one function per check, run in order by
 * cert_check_files.
 */
#include "tls/cert_check.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/ec_key.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/nid.h>
#include <openssl/obj.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "tls/tls.h"

#define SECONDS_PER_DAY 86400
#define LABEL_MAX       (CERT_SUBJECT_MAX + 32)

/* The certificates read from one PEM file, leaf first. */
struct chain {
    X509 *c[CERT_CHAIN_MAX];
    size_t n;
    int truncated;      /* the file held more than CERT_CHAIN_MAX */
};

/* ---- bounded text ----------------------------------------------------- */

/* Appends n bytes to buf (NUL-terminated, of size len), printable ASCII
 * only: anything else becomes '?', so a hostile name cannot move a
 * terminal's cursor or forge an output line. */
static void text_add(char *buf, size_t len, const void *p, size_t n)
{
    size_t used = strnlen(buf, len);
    const unsigned char *s = p;
    for (size_t i = 0; i < n && used + 1 < len; i++)
        buf[used++] = (s[i] >= 0x20 && s[i] < 0x7f) ? (char)s[i] : '?';
    if (len > 0)
        buf[used < len ? used : len - 1] = '\0';
}

static void text_adds(char *buf, size_t len, const char *s)
{
    text_add(buf, len, s, strlen(s));
}

static void text_set(char *buf, size_t len, const char *s)
{
    if (len == 0)
        return;
    buf[0] = '\0';
    text_adds(buf, len, s);
}

/* ---- findings ----------------------------------------------------------- */

static void add(struct cert_report *r, enum cert_severity sev, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void add(struct cert_report *r, enum cert_severity sev, const char *fmt, ...)
{
    if (sev == CERT_ERROR)
        r->errors++;
    else if (sev == CERT_WARN)
        r->warnings++;
    if (r->n == CERT_FINDINGS_MAX) {
        r->dropped++;
        return;
    }
    struct cert_finding *f = &r->f[r->n++];
    f->sev = sev;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->text, sizeof(f->text), fmt, ap);
    va_end(ap);
}

const char *cert_severity_name(enum cert_severity s)
{
    switch (s) {
    case CERT_NOTE: return "note";
    case CERT_WARN: return "warning";
    case CERT_ERROR: return "error";
    }
    return "?";
}

/* open_pem opens a file for PEM reading; on failure it adds an error
 * finding with the system's reason ("No such file or directory"). */
static BIO *open_pem(const char *path, const char *what, struct cert_report *r)
{
    FILE *fp = fopen(path, "r");
    if (fp == NULL) {
        add(r, CERT_ERROR, "cannot read %s %s: %s", what, path, strerror(errno));
        return NULL;
    }
    BIO *b = BIO_new_fp(fp, BIO_CLOSE);
    if (b == NULL) {
        fclose(fp);
        add(r, CERT_ERROR, "cannot read %s %s: out of memory", what, path);
    }
    return b;
}

/* ---- describing one certificate --------------------------------------- */

void cert_fmt_name(const X509_NAME *name, char *buf, size_t len)
{
    text_set(buf, len, "?");
    BIO *b = BIO_new(BIO_s_mem());
    const uint8_t *p;
    size_t n;
    if (b != NULL && name != NULL && X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253) >= 0 &&
        BIO_mem_contents(b, &p, &n)) {
        text_set(buf, len, "");
        text_add(buf, len, p, n);
    }
    BIO_free(b);
}

/* asn1_posix converts an X.509 time to seconds since the epoch (the diff
 * from 1970 is the one conversion this BoringSSL offers). */
static int asn1_posix(const ASN1_TIME *t, int64_t *out)
{
    ASN1_TIME *epoch = ASN1_TIME_set(NULL, 0);
    int days = 0, secs = 0;
    int ok = epoch != NULL && t != NULL && ASN1_TIME_diff(&days, &secs, epoch, t);
    ASN1_TIME_free(epoch);
    if (ok)
        *out = (int64_t)days * SECONDS_PER_DAY + secs;
    return ok;
}

static void fmt_posix(int64_t t, char *buf, size_t len)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (gmtime_r(&tt, &tm) == NULL || strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
        text_set(buf, len, "?");
}

void cert_fmt_time(const ASN1_TIME *t, char *buf, size_t len)
{
    int64_t s;
    if (asn1_posix(t, &s))
        fmt_posix(s, buf, len);
    else
        text_set(buf, len, "?");
}

static const char *curve_name(int nid)
{
    switch (nid) {
    case NID_X9_62_prime256v1: return "P-256";
    case NID_secp384r1: return "P-384";
    case NID_secp521r1: return "P-521";
    case NID_secp224r1: return "P-224";
    default: {
        const char *sn = OBJ_nid2sn(nid);
        return sn ? sn : "unknown curve";
    }
    }
}

/* The curve NID of an EC key, NID_undef otherwise. */
static int key_curve(const EVP_PKEY *k)
{
    const EC_KEY *ec = EVP_PKEY_id(k) == EVP_PKEY_EC ? EVP_PKEY_get0_EC_KEY(k) : NULL;
    const EC_GROUP *g = ec ? EC_KEY_get0_group(ec) : NULL;
    return g ? EC_GROUP_get_curve_name(g) : NID_undef;
}

static void fmt_pkey(const EVP_PKEY *k, char *buf, size_t len)
{
    switch (EVP_PKEY_id(k)) {
    case EVP_PKEY_RSA: snprintf(buf, len, "RSA %d bits", EVP_PKEY_bits(k)); break;
    case EVP_PKEY_DSA: snprintf(buf, len, "DSA %d bits", EVP_PKEY_bits(k)); break;
    case EVP_PKEY_EC: snprintf(buf, len, "EC %s", curve_name(key_curve(k))); break;
    case EVP_PKEY_ED25519: snprintf(buf, len, "Ed25519"); break;
    default: snprintf(buf, len, "unknown key type"); break;
    }
}

void cert_fmt_key(X509 *x, char *buf, size_t len)
{
    EVP_PKEY *k = x ? X509_get_pubkey(x) : NULL;
    if (k == NULL)
        text_set(buf, len, "unparsable public key");
    else
        fmt_pkey(k, buf, len);
    EVP_PKEY_free(k);
    ERR_clear_error();
}

static void add_san(char *buf, size_t len, const GENERAL_NAME *g)
{
    int type;
    const ASN1_STRING *s = GENERAL_NAME_get0_value(g, &type);
    if (type == GEN_DNS) {
        text_adds(buf, len, "DNS:");
        text_add(buf, len, ASN1_STRING_get0_data(s), (size_t)ASN1_STRING_length(s));
    } else if (type == GEN_IPADD) {
        char ip[INET6_ADDRSTRLEN] = "?";
        int n = ASN1_STRING_length(s);
        if (n == 4 || n == 16)
            inet_ntop(n == 4 ? AF_INET : AF_INET6, ASN1_STRING_get0_data(s), ip, sizeof(ip));
        text_adds(buf, len, "IP:");
        text_adds(buf, len, ip);
    } else if (type == GEN_EMAIL) {
        text_adds(buf, len, "email:");
        text_add(buf, len, ASN1_STRING_get0_data(s), (size_t)ASN1_STRING_length(s));
    } else {
        text_adds(buf, len, "other");
    }
}

void cert_fmt_sans(X509 *x, char *buf, size_t len)
{
    text_set(buf, len, "");
    GENERAL_NAMES *gens = x ? X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL) : NULL;
    for (size_t i = 0; gens != NULL && i < sk_GENERAL_NAME_num(gens); i++) {
        if (i > 0)
            text_adds(buf, len, ", ");
        add_san(buf, len, sk_GENERAL_NAME_value(gens, i));
    }
    if (gens == NULL || sk_GENERAL_NAME_num(gens) == 0)
        text_set(buf, len, "(none)");
    GENERAL_NAMES_free(gens);
    ERR_clear_error();
}

void cert_fmt_sig(const X509 *x, char *buf, size_t len)
{
    const char *ln = x ? OBJ_nid2ln(X509_get_signature_nid(x)) : NULL;
    text_set(buf, len, ln ? ln : "unknown signature algorithm");
}

/* "certificate" for the leaf, "chain certificate 2 (CN=...)" otherwise. */
static void label(const struct chain *ch, size_t i, char *buf, size_t len)
{
    if (i == 0) {
        text_set(buf, len, "certificate");
        return;
    }
    char subj[CERT_SUBJECT_MAX];
    cert_fmt_name(X509_get_subject_name(ch->c[i]), subj, sizeof(subj));
    snprintf(buf, len, "chain certificate %zu (%s)", i + 1, subj);
}

/* ---- loading ------------------------------------------------------------ */

static int load_chain(const char *path, struct chain *ch, struct cert_report *r)
{
    BIO *b = open_pem(path, "certificate file", r);
    if (b == NULL)
        return 0;
    X509 *x;
    while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        if (ch->n == CERT_CHAIN_MAX) {
            X509_free(x);
            ch->truncated = 1;
            break;
        }
        ch->c[ch->n++] = x;
    }
    BIO_free(b);
    ERR_clear_error();   /* the end of the PEM data reads as an error */
    if (ch->n == 0) {
        add(r, CERT_ERROR, "%s holds no PEM certificate", path);
        return 0;
    }
    if (ch->truncated)
        add(r, CERT_WARN, "%s holds more than %d certificates; only the first %d were checked",
            path, CERT_CHAIN_MAX, CERT_CHAIN_MAX);
    return 1;
}

static void free_chain(struct chain *ch)
{
    for (size_t i = 0; i < ch->n; i++)
        X509_free(ch->c[i]);
    ch->n = 0;
}

/* ---- the checks --------------------------------------------------------- */

static void describe_leaf(X509 *leaf, struct cert_report *r)
{
    char key[64];
    cert_fmt_name(X509_get_subject_name(leaf), r->subject, sizeof(r->subject));
    cert_fmt_time(X509_get0_notAfter(leaf), r->not_after, sizeof(r->not_after));
    cert_fmt_key(leaf, key, sizeof(key));
    add(r, CERT_NOTE, "subject %s", r->subject);
    add(r, CERT_NOTE, "key %s", key);
    add(r, CERT_NOTE, "valid until %s", r->not_after);
}

static void check_key_file(X509 *leaf, const char *key_file, struct cert_report *r)
{
    if (key_file == NULL) {
        add(r, CERT_NOTE, "no key file given: key not checked");
        return;
    }
    BIO *b = open_pem(key_file, "private key", r);
    EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
    if (b != NULL && k == NULL)
        add(r, CERT_ERROR, "%s holds no readable PEM private key", key_file);
    else if (k != NULL && !X509_check_private_key(leaf, k))
        add(r, CERT_ERROR, "private key %s does not match the certificate", key_file);
    EVP_PKEY_free(k);
    BIO_free(b);
    ERR_clear_error();
}

/* Only RSA >= 2048 and EC P-256 / P-384 are offered by every peer and by
 * tern's own TLS tiers (their curve and signature lists stop at P-384). */
static void check_key_type(X509 *leaf, struct cert_report *r)
{
    EVP_PKEY *k = X509_get_pubkey(leaf);
    char desc[64];
    if (k == NULL) {
        add(r, CERT_ERROR, "the certificate's public key cannot be parsed");
        ERR_clear_error();
        return;
    }
    fmt_pkey(k, desc, sizeof(desc));
    int type = EVP_PKEY_id(k), curve = key_curve(k);
    if (type == EVP_PKEY_RSA && EVP_PKEY_bits(k) < TLS_RSA_MIN_BITS)
        add(r, CERT_ERROR, "key is %s: RSA keys need at least %d bits", desc, TLS_RSA_MIN_BITS);
    else if (type == EVP_PKEY_EC && curve != NID_X9_62_prime256v1 && curve != NID_secp384r1)
        add(r, CERT_ERROR, "key is %s: EC keys must be on P-256 or P-384", desc);
    else if (type != EVP_PKEY_RSA && type != EVP_PKEY_EC)
        add(r, CERT_ERROR, "key is %s: use RSA (%d bits or more) or EC P-256 / P-384", desc,
            TLS_RSA_MIN_BITS);
    EVP_PKEY_free(k);
}

/* A root's self-signature is never verified by anyone, so a weak digest
 * there is harmless; everywhere else it is refused by current peers. */
static int is_self_signed_ca(X509 *x)
{
    return X509_check_issued(x, x) == X509_V_OK && X509_check_ca(x);
}

static const char *weak_digest(const X509 *x)
{
    int digest = NID_undef, pkey = NID_undef;
    if (!OBJ_find_sigid_algs(X509_get_signature_nid(x), &digest, &pkey))
        return NULL;
    switch (digest) {
    case NID_md4: return "MD4";
    case NID_md5: return "MD5";
    case NID_sha1: return "SHA-1";
    default: return NULL;
    }
}

static void check_signatures(const struct chain *ch, struct cert_report *r)
{
    char what[LABEL_MAX];
    for (size_t i = 0; i < ch->n; i++) {
        const char *weak = weak_digest(ch->c[i]);
        if (weak == NULL || is_self_signed_ca(ch->c[i]))
            continue;
        label(ch, i, what, sizeof(what));
        add(r, CERT_ERROR, "%s is signed with %s: peers refuse %s signatures", what, weak, weak);
    }
}

static void check_validity_one(const struct chain *ch, size_t i, int64_t now,
                               struct cert_report *r)
{
    char what[LABEL_MAX], date[CERT_TIME_MAX];
    int64_t nb, na;
    label(ch, i, what, sizeof(what));
    if (!asn1_posix(X509_get0_notBefore(ch->c[i]), &nb) ||
        !asn1_posix(X509_get0_notAfter(ch->c[i]), &na)) {
        add(r, CERT_ERROR, "%s has unreadable validity dates", what);
        return;
    }
    if (nb > now) {
        fmt_posix(nb, date, sizeof(date));
        add(r, CERT_ERROR, "%s is not yet valid (valid from %s)", what, date);
    } else if (na < now) {
        fmt_posix(na, date, sizeof(date));
        add(r, CERT_ERROR, "%s expired on %s", what, date);
    } else if (na - now < (int64_t)CERT_EXPIRY_WARN_DAYS * SECONDS_PER_DAY) {
        fmt_posix(na, date, sizeof(date));
        add(r, CERT_WARN, "%s expires on %s (%lld days left)", what, date,
            (long long)((na - now) / SECONDS_PER_DAY));
    }
}

static void check_validity(const struct chain *ch, int64_t now, struct cert_report *r)
{
    for (size_t i = 0; i < ch->n; i++)
        check_validity_one(ch, i, now, r);
}

/* While building the chain, time errors on the file's own certificates
 * are let through: check_validity already reported them, and the trust
 * finding should name what else is wrong. A CA from the store that has
 * expired still stops the chain. */
static int trust_cb(int ok, X509_STORE_CTX *sc)
{
    if (ok)
        return 1;
    int e = X509_STORE_CTX_get_error(sc);
    if (e != X509_V_ERR_CERT_HAS_EXPIRED && e != X509_V_ERR_CERT_NOT_YET_VALID)
        return 0;
    X509 *cur = X509_STORE_CTX_get_current_cert(sc);
    if (cur == NULL)
        return 0;
    if (X509_cmp(cur, X509_STORE_CTX_get0_cert(sc)) == 0)
        return 1;
    STACK_OF(X509) *untrusted = X509_STORE_CTX_get0_untrusted(sc);
    for (size_t i = 0; untrusted != NULL && i < sk_X509_num(untrusted); i++)
        if (X509_cmp(cur, sk_X509_value(untrusted, i)) == 0)
            return 1;
    return 0;
}

/* The outcome of building the chain against one trust store. */
struct trust {
    int loaded;                     /* the store could be read */
    int built;                      /* X509_verify_cert succeeded */
    int error;                      /* X509 error when not built */
    char root[CERT_SUBJECT_MAX];    /* the anchor's subject when built */
};

static void build_chain(const struct chain *ch, const char *store_file, int64_t now,
                        struct trust *out)
{
    memset(out, 0, sizeof(*out));
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *sc = X509_STORE_CTX_new();
    STACK_OF(X509) *untrusted = sk_X509_new_null();
    int ok = store != NULL && sc != NULL && untrusted != NULL &&
             access(store_file, R_OK) == 0 &&
             X509_STORE_load_locations(store, store_file, NULL);
    out->loaded = ok;
    for (size_t i = 1; ok && i < ch->n; i++)
        ok = sk_X509_push(untrusted, ch->c[i]) != 0;   /* borrowed: freed with sk_X509_free */
    if (ok && X509_STORE_CTX_init(sc, store, ch->c[0], untrusted)) {
        X509_VERIFY_PARAM_set_time(X509_STORE_CTX_get0_param(sc), (time_t)now);
        X509_STORE_CTX_set_verify_cb(sc, trust_cb);
        out->built = X509_verify_cert(sc) == 1;
        out->error = X509_STORE_CTX_get_error(sc);
        STACK_OF(X509) *built = X509_STORE_CTX_get0_chain(sc);
        if (out->built && built != NULL && sk_X509_num(built) > 0)
            cert_fmt_name(X509_get_subject_name(sk_X509_value(built, sk_X509_num(built) - 1)),
                          out->root, sizeof(out->root));
    }
    sk_X509_free(untrusted);
    X509_STORE_CTX_free(sc);
    X509_STORE_free(store);
    ERR_clear_error();
}

static void check_trust(const struct chain *ch, const char *ca_file, int64_t now,
                        struct cert_report *r)
{
    const char *store = ca_file ? ca_file : CERT_SYSTEM_BUNDLE;
    int self_signed = X509_check_issued(ch->c[0], ch->c[0]) == X509_V_OK;
    struct trust t;
    build_chain(ch, store, now, &t);
    if (self_signed)
        add(r, CERT_WARN, "the certificate is self-signed: peers can verify it only by pinning or trusting it directly");
    if (!t.loaded) {
        add(r, CERT_WARN, "trust store %s cannot be read: the chain was not checked", store);
        return;
    }
    if (!t.built) {
        if (!(self_signed && t.error == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT))
            add(r, CERT_WARN, "the chain does not build to the trust store %s: %s", store,
                X509_verify_cert_error_string(t.error));
        return;
    }
    if (ca_file == NULL) {
        add(r, CERT_NOTE, "the chain builds to %s (system bundle)", t.root);
        return;
    }
    struct trust pub;
    build_chain(ch, CERT_SYSTEM_BUNDLE, now, &pub);
    if (pub.built)
        add(r, CERT_NOTE, "the chain builds to %s (in the system bundle too)", t.root);
    else
        add(r, CERT_WARN, "private CA: the chain builds only to %s from %s, not to the system "
                          "bundle; peers with public trust stores cannot verify it", t.root, ca_file);
}

/* Names are DNS-IDs only: peers that check names (RFC 6125 style) ignore
 * the common name when a SAN is present, and tern never falls back to it.
 * Matching is tern's own (tls_name_matches), the one its PKIX check uses. */
static int names_cover(X509 *leaf, const char *hostname)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
    int covered = 0;
    for (size_t i = 0; gens != NULL && i < sk_GENERAL_NAME_num(gens) && !covered; i++) {
        int type;
        const ASN1_STRING *s = GENERAL_NAME_get0_value(sk_GENERAL_NAME_value(gens, i), &type);
        covered = type == GEN_DNS &&
                  tls_name_matches((const char *)ASN1_STRING_get0_data(s),
                                   (size_t)ASN1_STRING_length(s), hostname, strlen(hostname));
    }
    GENERAL_NAMES_free(gens);
    ERR_clear_error();
    return covered;
}

static void check_names(X509 *leaf, enum cert_role role, const char *hostname,
                        struct cert_report *r)
{
    if (hostname == NULL || names_cover(leaf, hostname))
        return;
    char sans[CERT_FINDING_TEXT_MAX / 2];
    cert_fmt_sans(leaf, sans, sizeof(sans));
    if (role == CERT_ROLE_SERVER)
        add(r, CERT_WARN, "hostname %s is not covered by the certificate's DNS names (%s)",
            hostname, sans);
    else
        add(r, CERT_NOTE, "hostname %s is not covered by the certificate's DNS names (%s); "
                          "peers rarely check a client's name", hostname, sans);
}

static void check_eku(X509 *leaf, enum cert_role role, struct cert_report *r)
{
    if (!(X509_get_extension_flags(leaf) & EXFLAG_XKUSAGE))
        return;   /* no EKU: any purpose */
    uint32_t need = role == CERT_ROLE_CLIENT ? XKU_SSL_CLIENT : XKU_SSL_SERVER;
    if (X509_get_extended_key_usage(leaf) & (need | XKU_ANYEKU))
        return;
    const char *usage = role == CERT_ROLE_CLIENT ? "clientAuth" : "serverAuth";
    add(r, CERT_WARN, "the extended key usage lacks %s: peers that check it will refuse the "
                      "certificate as a %s certificate", usage,
        role == CERT_ROLE_CLIENT ? "client" : "server");
}

int cert_check_files(enum cert_role role, const char *cert_file, const char *key_file,
                     const char *ca_file, const char *hostname, int64_t now_s,
                     struct cert_report *out)
{
    memset(out, 0, sizeof(*out));
    ERR_clear_error();
    struct chain ch = { .n = 0 };
    if (cert_file == NULL) {
        add(out, CERT_ERROR, "no certificate file given");
        return 0;
    }
    if (load_chain(cert_file, &ch, out)) {
        X509 *leaf = ch.c[0];
        describe_leaf(leaf, out);
        check_key_file(leaf, key_file, out);
        check_key_type(leaf, out);
        check_signatures(&ch, out);
        check_validity(&ch, now_s, out);
        check_trust(&ch, ca_file, now_s, out);
        check_names(leaf, role, hostname, out);
        check_eku(leaf, role, out);
    }
    free_chain(&ch);
    return out->errors == 0;
}
