/*
 * fuzz_auth.c - libFuzzer target for the listener's parsers in
 * engine/auth.c: base64 (AUTH responses), PLAIN decoding, CIDR parsing.
 * Checks: no crash, no out-of-bounds access (ASan/UBSan).
 */
#include "engine/auth.h"
#include <string.h>
int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    uint8_t dec[AUTH_USER_MAX + AUTH_PASS_MAX + 3];
    size_t dl;
    char user[AUTH_USER_MAX + 1], pass[AUTH_PASS_MAX + 1];
    if (auth_b64_decode((const char *)d, n, dec, sizeof(dec), &dl))
        auth_plain_decode(dec, dl, user, pass);
    auth_plain_decode(d, n, user, pass);
    struct auth_net net;
    auth_cidr_parse((const char *)d, n, &net);
    return 0;
}
