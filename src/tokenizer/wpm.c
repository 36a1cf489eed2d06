/* WordPiece (BERT) as llama.cpp does it for GGUF model "bert": each character is mapped to the
 * first code point of its NFD (which drops accents) and lowercased; whitespace splits words,
 * control characters vanish, punctuation, ASCII symbols and CJK ideographs become words of their
 * own; each word, prefixed with "▁", is cut greedily into the longest vocab pieces, and a word
 * that cannot be cut completely becomes [UNK]. Tables: wpm_tables.h (gen_wpm_tables.py). */
#include "tokenizer/tok_internal.h"

#include <stdlib.h>
#include <string.h>

#include "tokenizer/wpm_tables.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static uint32_t lookup_pair(const uint32_t (*tab)[2], size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (tab[mid][0] == cp) return tab[mid][1];
        if (tab[mid][0] < cp) lo = mid + 1;
        else hi = mid;
    }
    return cp;
}

static int char_class(uint32_t cp) { /* 0 other, 1 control, 2 punctuation, 3 symbol */
    size_t lo = 0, hi = NELEM(wpm_class);
    while (hi - lo > 1) { /* last range start <= cp */
        size_t mid = (lo + hi) / 2;
        if (wpm_class[mid][0] <= cp) lo = mid;
        else hi = mid;
    }
    return (int)wpm_class[lo][1];
}

static int is_white_space(uint32_t cp) { /* Unicode White_Space */
    return (cp >= 0x9 && cp <= 0xD) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
           cp == 0x3000;
}

static int is_cjk(uint32_t cp) { /* the ranges BERT's tokenizer treats as Chinese characters */
    return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) || (cp >= 0x20000 && cp <= 0x2A6DF) ||
           (cp >= 0x2A700 && cp <= 0x2B73F) || (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B920 && cp <= 0x2CEAF) ||
           (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

/* Greedy longest-match of "▁" + word[n]; appends ids, or [UNK] if some position has no piece. */
static void encode_word(const struct piso_tokenizer *t, const char *word, size_t n, struct tok_ids *out) {
    char *w = malloc(n + 3);
    memcpy(w, "\xE2\x96\x81", 3);
    memcpy(w + 3, word, n);
    size_t len = n + 3;
    int start = out->n;
    for (size_t i = 0; i < len;) {
        size_t j = len < i + (size_t)t->max_piece_len ? len : i + (size_t)t->max_piece_len;
        int id = -1;
        for (; j > i; j--)
            if ((id = piso_tok_lookup(t, w + i, j - i)) >= 0) break;
        if (id < 0) {
            out->n = start;
            if (t->v.unk_id >= 0) piso_tok_ids_push(out, t->v.unk_id);
            break;
        }
        piso_tok_ids_push(out, id);
        i = j;
    }
    free(w);
}

int piso_tok_wpm_encode_segment(const struct piso_tokenizer *t, const char *text, size_t n, struct tok_ids *out) {
    const unsigned char *s = (const unsigned char *)text;
    char *word = malloc(4 * n + 4);
    size_t wl = 0;
    for (size_t i = 0; i < n;) {
        int cl = piso_tok_utf8_len(s[i]);
        uint32_t cp = s[i];
        if (cl > 1 && i + (size_t)cl <= n) {
            cp = s[i] & (0x7Fu >> cl);
            for (int k = 1; k < cl; k++) cp = (cp << 6) | (s[i + k] & 0x3F);
        } else {
            cl = 1;
        }
        i += (size_t)cl;
        if (cp >= 0xAC00 && cp <= 0xD7A3) cp = 0x1100 + (cp - 0xAC00) / 588; /* Hangul: its leading jamo */
        else cp = lookup_pair(wpm_nfd1, NELEM(wpm_nfd1), cp);
        if (is_white_space(cp)) {
            if (wl) encode_word(t, word, wl, out);
            wl = 0;
            continue;
        }
        int cls = char_class(cp);
        if (cp == 0 || cp == 0xFFFD || cls == 1) continue;
        char u[4];
        int ul = piso_tok_utf8_put(lookup_pair(wpm_lower, NELEM(wpm_lower), cp), u);
        if (cls == 2 || (cp < 0x7F && cls == 3) || is_cjk(cp)) { /* a word of its own */
            if (wl) encode_word(t, word, wl, out);
            encode_word(t, u, (size_t)ul, out);
            wl = 0;
        } else {
            memcpy(word + wl, u, (size_t)ul);
            wl += (size_t)ul;
        }
    }
    if (wl) encode_word(t, word, wl, out);
    free(word);
    return 0;
}
