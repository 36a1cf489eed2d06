/* Unicode NFC (canonical decomposition, canonical ordering, canonical composition; UAX #15), for
 * the NFC normalizer of HF tokenizers (Qwen2/Qwen3). Tables: nfc_tables.h (gen_nfc_tables.py);
 * Hangul syllables are handled arithmetically. */
#include "tokenizer/tok_internal.h"

#include <stdlib.h>
#include <string.h>

#include "tokenizer/nfc_tables.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))
enum { S_BASE = 0xAC00, L_BASE = 0x1100, V_BASE = 0x1161, T_BASE = 0x11A7, L_COUNT = 19, V_COUNT = 21,
       T_COUNT = 28, N_COUNT = V_COUNT * T_COUNT, S_COUNT = L_COUNT * N_COUNT };

static int ccc_of(uint32_t cp) {
    if (cp < 0x300) return 0;
    size_t lo = 0, hi = NELEM(nfc_ccc);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (nfc_ccc[mid][0] == cp) return (int)nfc_ccc[mid][1];
        if (nfc_ccc[mid][0] < cp) lo = mid + 1;
        else hi = mid;
    }
    return 0;
}

static const uint32_t *decomp_of(uint32_t cp) {
    if (cp < 0xC0) return NULL;
    size_t lo = 0, hi = NELEM(nfc_decomp);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (nfc_decomp[mid][0] == cp) return nfc_decomp[mid];
        if (nfc_decomp[mid][0] < cp) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

static uint32_t compose(uint32_t a, uint32_t b) {
    if (a >= L_BASE && a < L_BASE + L_COUNT && b >= V_BASE && b < V_BASE + V_COUNT)
        return S_BASE + ((a - L_BASE) * V_COUNT + (b - V_BASE)) * T_COUNT;
    if (a >= S_BASE && a < S_BASE + S_COUNT && (a - S_BASE) % T_COUNT == 0 && b > T_BASE && b < T_BASE + T_COUNT)
        return a + (b - T_BASE);
    size_t lo = 0, hi = NELEM(nfc_comp);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const uint32_t *e = nfc_comp[mid];
        if (e[0] == a && e[1] == b) return e[2];
        if (e[0] < a || (e[0] == a && e[1] < b)) lo = mid + 1;
        else hi = mid;
    }
    return 0;
}

struct cps {
    uint32_t *v;
    size_t n, cap;
};

static void cps_push(struct cps *c, uint32_t x) {
    if (c->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 64;
        c->v = realloc(c->v, c->cap * sizeof *c->v);
    }
    c->v[c->n++] = x;
}

static void decompose(uint32_t cp, struct cps *out) {
    if (cp >= S_BASE && cp < S_BASE + S_COUNT) {
        uint32_t s = cp - S_BASE;
        cps_push(out, L_BASE + s / N_COUNT);
        cps_push(out, V_BASE + (s % N_COUNT) / T_COUNT);
        if (s % T_COUNT) cps_push(out, T_BASE + s % T_COUNT);
        return;
    }
    const uint32_t *d = decomp_of(cp);
    if (!d) {
        cps_push(out, cp);
        return;
    }
    decompose(d[1], out);
    if (d[2]) decompose(d[2], out);
}

static int utf8_next(const unsigned char *s, size_t n, size_t *i, uint32_t *cp) {
    int len = piso_tok_utf8_len(s[*i]);
    if (len == 1 || *i + (size_t)len > n) {
        *cp = s[(*i)++];
        return 0;
    }
    uint32_t c = s[*i] & (0x7Fu >> len);
    for (int k = 1; k < len; k++) c = (c << 6) | (s[*i + k] & 0x3F);
    *i += (size_t)len;
    *cp = c;
    return 0;
}

static int in_sorted(const uint32_t *a, size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (a[mid] == cp) return 1;
        if (a[mid] < cp) lo = mid + 1;
        else hi = mid;
    }
    return 0;
}

/* Quick check: text without combining marks, without characters that NFC changes on their own and
 * without characters that compose with their predecessor (incl. Hangul vowels/trailing consonants)
 * is already NFC. */
static int maybe_not_nfc(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        if (s[i] < 0xCC) { /* below U+0300: all stable, none composes with a predecessor */
            i += (size_t)piso_tok_utf8_len(s[i]);
            continue;
        }
        uint32_t cp;
        utf8_next(s, n, &i, &cp);
        if (ccc_of(cp) || (cp >= 0x1160 && cp < 0x1200) || in_sorted(nfc_unstable, NELEM(nfc_unstable), cp) ||
            in_sorted(nfc_second, NELEM(nfc_second), cp))
            return 1;
    }
    return 0;
}

char *piso_tok_nfc(const char *text, size_t n, size_t *out_n) {
    const unsigned char *s = (const unsigned char *)text;
    if (!maybe_not_nfc(s, n)) return NULL;
    struct cps d = {0};
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        utf8_next(s, n, &i, &cp);
        decompose(cp, &d);
    }
    /* canonical ordering: stable sort of each run of non-starters by combining class */
    for (size_t i = 1; i < d.n; i++) {
        int c = ccc_of(d.v[i]);
        if (!c) continue;
        for (size_t j = i; j > 0; j--) {
            int p = ccc_of(d.v[j - 1]);
            if (p <= c) break;
            uint32_t tmp = d.v[j];
            d.v[j] = d.v[j - 1];
            d.v[j - 1] = tmp;
        }
    }
    /* canonical composition */
    size_t o = 0;
    long starter = -1;
    int last = -1; /* class of the last character kept since the starter; -1: none */
    for (size_t i = 0; i < d.n; i++) {
        uint32_t c = d.v[i];
        int cc = ccc_of(c);
        if (starter >= 0 && (last == -1 || (last != 0 && last < cc))) {
            uint32_t m = compose(d.v[starter], c);
            if (m) {
                d.v[starter] = m;
                continue;
            }
        }
        if (cc == 0) {
            starter = (long)o;
            last = -1;
        } else {
            last = cc;
        }
        d.v[o++] = c;
    }
    char *out = malloc(4 * o + 1);
    size_t k = 0;
    for (size_t i = 0; i < o; i++) k += (size_t)piso_tok_utf8_put(d.v[i], out + k);
    out[k] = 0;
    free(d.v);
    *out_n = k;
    return out;
}
