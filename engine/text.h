/*
 * text.h - small helpers on C strings shared by the engine's parsers and
 * tables.
 *
 * DESCRIPTION
 *   text_hash_lower hashes a name the way DNS compares names: ASCII
 *   letters case-insensitively (FNV-1a 64 over the lower-cased bytes), so
 *   "Example.COM" and "example.com" land in the same bucket.
 *   text_copy_n copies a counted (pointer, length) word into a fixed
 *   buffer as a C string, refusing what is empty or does not fit.
 *   text_u64 writes a number in decimal without printf (per-message paths:
 *   RESP lengths, event fields).
 *   struct text_out builds a string from pieces into a fixed buffer
 *   without printf, and says when it did not fit instead of truncating.
 *
 * OWNERSHIP
 *   Nothing is allocated; the caller owns every buffer.
 */
#ifndef TERN_ENGINE_TEXT_H
#define TERN_ENGINE_TEXT_H

#include <stddef.h>
#include <stdint.h>

/* FNV-1a of s (NUL-terminated), ASCII letters lower-cased; salt is mixed
 * into the offset basis (a query type, or 0). */
uint64_t text_hash_lower(const char *s, uint64_t salt);

/* Copies src[0..n) to dst and terminates it. Returns 0, writing nothing,
 * when n is 0 or n + 1 > cap. */
int text_copy_n(char *dst, size_t cap, const char *src, size_t n);

#define TEXT_U64_MAX 21   /* 20 digits and the NUL */

/* text_u64 writes v in decimal, NUL-terminated, into out; returns the
 * number of digits. */
size_t text_u64(char out[TEXT_U64_MAX], uint64_t v);

/* A string built piece by piece into buf[cap] (cap >= 1), always
 * NUL-terminated. A piece that does not fit whole sets overflow, empties
 * the string and makes every later piece a no-op: a caller that uses the
 * result as a key must not get a truncated one that another key shares. */
struct text_out {
    char *buf;
    size_t cap, len;
    int overflow;
};

void text_out_init(struct text_out *o, char *buf, size_t cap);
void text_out_mem(struct text_out *o, const char *p, size_t n);
void text_out_str(struct text_out *o, const char *s);
void text_out_u64(struct text_out *o, uint64_t v);
void text_out_i64(struct text_out *o, int64_t v);

#endif
