/* sink_record.c - builds tern-sink record lines; format documented in
 * sink.c. */
#include <string.h>

#include <openssl/sha.h>

#include "bench/sink.h"

/* Longest Message-ID value we record (RFC 5322 does not bound it; a
 * record line should stay one reasonable line). */
#define SINK_MSGID_MAX 512
/* Header bytes scanned for Message-ID: the header section of a sane
 * message fits; a missing blank line must not make us scan 64 MiB. */
#define SINK_HEADER_SCAN_MAX (256 * 1024)

static int lower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

int sink_message_id(const uint8_t *data, size_t len, char *out, size_t cap)
{
    static const char key[] = "message-id:";
    const size_t kl = sizeof(key) - 1;
    if (len > SINK_HEADER_SCAN_MAX)
        len = SINK_HEADER_SCAN_MAX;
    size_t pos = 0;
    while (pos < len) {
        const uint8_t *lf = memchr(data + pos, '\n', len - pos);
        size_t end = lf ? (size_t)(lf - data) : len;    /* line is [pos, end) */
        size_t le = end;
        if (le > pos && data[le - 1] == '\r')
            le--;
        if (le == pos)
            break;                          /* blank line: end of header */
        if (le - pos >= kl) {
            size_t i = 0;
            while (i < kl && lower(data[pos + i]) == key[i])
                i++;
            if (i == kl) {
                size_t v = pos + kl;
                while (v < le && (data[v] == ' ' || data[v] == '\t'))
                    v++;
                while (le > v && (data[le - 1] == ' ' || data[le - 1] == '\t'))
                    le--;
                size_t n = 0;
                for (; v < le && n + 1 < cap && n < SINK_MSGID_MAX; v++) {
                    uint8_t c = data[v];
                    out[n++] = (c < 0x20 || c == 0x7f) ? ' ' : (char)c;
                }
                if (n > 0) {
                    out[n] = '\0';
                    return 1;
                }
            }
        }
        pos = end + 1;
    }
    if (cap >= 2) {
        out[0] = '-';
        out[1] = '\0';
    }
    return 0;
}

void sink_record_line(struct buf *out, const struct smtp_server_envelope *e,
                      const char *proto, const char *cipher, int resumed,
                      const char *peer, int dropped)
{
    static const char hex[] = "0123456789abcdef";
    uint8_t md[SHA256_DIGEST_LENGTH];
    char mdhex[2 * SHA256_DIGEST_LENGTH];
    char msgid[SINK_MSGID_MAX + 1];

    SHA256(e->data, e->data_len, md);
    for (size_t i = 0; i < sizeof(md); i++) {
        mdhex[2 * i] = hex[md[i] >> 4];
        mdhex[2 * i + 1] = hex[md[i] & 15];
    }
    sink_message_id(e->data, e->data_len, msgid, sizeof(msgid));

    /* Addresses cannot hold tabs or newlines: the session refuses
     * control bytes in paths. */
    buf_append_str(out, e->mail_from[0] ? e->mail_from : "<>");
    buf_append(out, "\t", 1);
    for (size_t i = 0; i < e->nrcpts; i++) {
        if (i)
            buf_append(out, ",", 1);
        buf_append_str(out, e->rcpts[i]);
    }
    buf_append(out, "\t", 1);
    buf_append_u64(out, e->data_len);
    buf_append(out, "\t", 1);
    buf_append(out, mdhex, sizeof(mdhex));
    buf_append(out, "\t", 1);
    buf_append_str(out, proto && proto[0] ? proto : "-");
    buf_append(out, "\t", 1);
    buf_append_str(out, cipher && cipher[0] ? cipher : "-");
    buf_append(out, "\t", 1);
    buf_append_str(out, resumed ? "1" : "0");
    buf_append(out, "\t", 1);
    buf_append_str(out, peer && peer[0] ? peer : "-");
    buf_append(out, "\t", 1);
    buf_append_str(out, msgid);
    if (dropped)
        buf_append_str(out, "\tdropped-after-dot");
    buf_append(out, "\n", 1);
}
