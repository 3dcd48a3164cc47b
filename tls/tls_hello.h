/*
 * tls_hello.h - internal: what a ClientHello says the client can verify,
 * for a server holding one ECDSA and one RSA certificate.
 *
 * DESCRIPTION
 *   tls_hello_accepts_ecdsa reads the ClientHello BoringSSL hands to the
 *   select-certificate callback: the client can take an ECDSA certificate
 *   when its signature_algorithms list an ECDSA scheme (or it sends no
 *   such extension, RFC 5246 7.4.1.4.1, and offers an ECDSA suite) and it
 *   offers TLS 1.3 or an ECDHE-ECDSA cipher suite. Every length is checked
 *   against the hello's own; a malformed hello answers 0 (the RSA
 *   certificate, which every TLS client can use).
 */
#ifndef TERN_TLS_TLS_HELLO_H
#define TERN_TLS_TLS_HELLO_H

#include <openssl/ssl.h>

int tls_hello_accepts_ecdsa(const SSL_CLIENT_HELLO *ch);

#endif
