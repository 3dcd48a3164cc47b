/*
 * crypto_cost.c - what the key exchange of one TLS 1.3 handshake costs
 * with this BoringSSL, on this machine: a key pair and a shared secret
 * for each group tern offers (X25519, P-256), and AES-128-GCM sealing of
 * a 4 KiB record. Both ends of a resumed TLS 1.3 handshake pay one key
 * pair and one shared secret (psk_dhe_ke: BoringSSL has no psk_ke), so
 * this is the floor under the `tail` workload's cost per message on each
 * side (bench/README.md).
 *
 *   build/tern-crypto-cost [ITERATIONS]     (default 2000)
 *   x25519_us=N p256_us=N aes128gcm_4k_us=N
 */
#include <openssl/aead.h>
#include <openssl/curve25519.h>
#include <openssl/ec.h>
#include <openssl/ecdh.h>
#include <openssl/nid.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine/config.h"
#include "bench/bench_clock.h"

#define RECORD_BYTES 4096
#define ITERATIONS_DEFAULT 2000

/* A key pair and a shared secret with a fixed peer, as one handshake side. */
static double x25519_us(int n)
{
    uint8_t peer_pub[32], peer_priv[32], pub[32], priv[32], secret[32];
    X25519_keypair(peer_pub, peer_priv);
    double t = bench_now_s();
    for (int i = 0; i < n; i++) {
        X25519_keypair(pub, priv);
        if (!X25519(secret, priv, peer_pub))
            return -1;
    }
    return (bench_now_s() - t) / n * 1e6;
}

static double p256_us(int n)
{
    EC_KEY *peer = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
    if (peer == NULL || !EC_KEY_generate_key(peer))
        return -1;
    double t = bench_now_s();
    for (int i = 0; i < n; i++) {
        EC_KEY *k = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
        uint8_t secret[32];
        if (k == NULL || !EC_KEY_generate_key(k) ||
            ECDH_compute_key(secret, sizeof(secret), EC_KEY_get0_public_key(peer), k, NULL) <= 0) {
            EC_KEY_free(k);
            EC_KEY_free(peer);
            return -1;
        }
        EC_KEY_free(k);
    }
    EC_KEY_free(peer);
    return (bench_now_s() - t) / n * 1e6;
}

static double aes_gcm_us(int n)
{
    static uint8_t in[RECORD_BYTES], out[RECORD_BYTES + 16];
    uint8_t key[16] = {0}, nonce[12] = {0};
    EVP_AEAD_CTX ctx;
    if (!EVP_AEAD_CTX_init(&ctx, EVP_aead_aes_128_gcm(), key, sizeof(key), 16, NULL))
        return -1;
    size_t out_len;
    double t = bench_now_s();
    for (int i = 0; i < n; i++) {
        nonce[0] = (uint8_t)i;
        if (!EVP_AEAD_CTX_seal(&ctx, out, &out_len, sizeof(out), nonce, sizeof(nonce), in,
                               sizeof(in), NULL, 0))
            break;
    }
    double us = (bench_now_s() - t) / n * 1e6;
    EVP_AEAD_CTX_cleanup(&ctx);
    return us;
}

int main(int argc, char **argv)
{
    int n = ITERATIONS_DEFAULT;
    if (argc > 2 || (argc == 2 && !config_parse_int(argv[1], 1, 10000000, &n))) {
        fprintf(stderr, "usage: tern-crypto-cost [ITERATIONS]\n");
        return 2;
    }
    double x = x25519_us(n), p = p256_us(n), a = aes_gcm_us(n * 10);
    if (x < 0 || p < 0 || a < 0) {
        fprintf(stderr, "tern-crypto-cost: a BoringSSL call failed\n");
        return 1;
    }
    printf("x25519_us=%.1f p256_us=%.1f aes128gcm_4k_us=%.2f\n", x, p, a);
    return 0;
}
