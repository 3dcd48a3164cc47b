/*
 * fuzz_tls_names.c - libFuzzer target for tls_name_matches (tls/tls.h):
 * certificate DNS-ID pattern against a host name, both from the input
 * (split at the first '|').
 *
 * Invariants: the answer does not depend on letter case; a match without
 * a wildcard means the names are equal ignoring case and one trailing dot
 * on the name; a wildcard match covers exactly one whole left-most label,
 * so both sides have the same number of labels and the same text after
 * the first dot.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tls/tls.h"

#define NAME_MAX_FUZZ 300

static size_t labels(const char *s, size_t n)
{
    size_t k = 1;
    for (size_t i = 0; i < n; i++)
        k += s[i] == '.';
    return k;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *bar = memchr(data, '|', size);
    if (bar == NULL || size > 2 * NAME_MAX_FUZZ)
        return 0;
    char pat[NAME_MAX_FUZZ + 1], name[NAME_MAX_FUZZ + 1], up[NAME_MAX_FUZZ + 1];
    size_t pl = (size_t)(bar - data), nl = size - pl - 1;
    if (pl > NAME_MAX_FUZZ || nl > NAME_MAX_FUZZ)
        return 0;
    memcpy(pat, data, pl);
    memcpy(name, bar + 1, nl);
    for (size_t i = 0; i < nl; i++)
        up[i] = (char)toupper((unsigned char)name[i]);
    int m = tls_name_matches(pat, pl, name, nl);
    if (m != tls_name_matches(pat, pl, up, nl))
        abort();
    if (!m)
        return 0;
    size_t n2 = nl && name[nl - 1] == '.' ? nl - 1 : nl;
    if (memchr(pat, '*', pl) == NULL) {
        if (pl != n2 || strncasecmp(pat, name, pl) != 0)
            abort();
        return 0;
    }
    if (labels(pat, pl) != labels(name, n2))
        abort();
    const char *pd = memchr(pat, '.', pl), *nd = memchr(name, '.', n2);
    if (pd == NULL || nd == NULL || (size_t)(pat + pl - pd) != (size_t)(name + n2 - nd) ||
        strncasecmp(pd, nd, (size_t)(pat + pl - pd)) != 0)
        abort();
    return 0;
}
