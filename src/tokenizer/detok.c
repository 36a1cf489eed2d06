/* Decoding ids back to text. SPM and WordPiece: "▁" -> space, <0xNN> pieces -> raw bytes, and the dummy-prefix
 * space of the first piece is dropped (as SentencePiece does after BOS). Byte-level: each
 * character of a piece maps back to its byte. Added tokens decode to their text as is. */
#include "tokenizer/tok_internal.h"

#include <stdlib.h>
#include <string.h>

struct buf {
    char *p;
    size_t n, cap;
};

static void put(struct buf *b, const void *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        while (b->n + n + 1 > b->cap) b->cap = b->cap ? 2 * b->cap : 256;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Decodes one UTF-8 code point at s[n]; returns its length (1 on invalid bytes, cp = the byte). */
static int utf8_get(const unsigned char *s, size_t n, uint32_t *cp) {
    int len = piso_tok_utf8_len(s[0]);
    if (len == 1 || (size_t)len > n) {
        *cp = s[0];
        return 1;
    }
    uint32_t c = s[0] & (0x7Fu >> len);
    for (int k = 1; k < len; k++) c = (c << 6) | (s[k] & 0x3F);
    *cp = c;
    return len;
}

char *piso_detokenize(const struct piso_tokenizer *t, const int *ids, int n_ids, int skip_special) {
    struct buf b = {0};
    put(&b, "", 0);
    int spm_like = t->v.kind == PISO_TOK_SPM || t->v.kind == PISO_TOK_WPM; /* "▁" marks spaces */
    int strip_space = spm_like && t->prefix != TOK_PREFIX_NONE;
    for (int i = 0; i < n_ids; i++) {
        int id = ids[i];
        if (id < 0 || id >= t->v.n_vocab) continue;
        const char *p = t->v.pieces[id];
        size_t n = (size_t)t->piece_len[id];
        int ty = t->v.types[id];
        if (ty == TOK_TYPE_CONTROL) {
            if (!skip_special) put(&b, p, n);
            continue;
        }
        if (ty == TOK_TYPE_USER || ty == TOK_TYPE_UNKNOWN || ty == TOK_TYPE_UNUSED) {
            put(&b, p, n);
            strip_space = 0;
            continue;
        }
        if (spm_like) {
            if (n == 6 && p[0] == '<' && p[1] == '0' && p[2] == 'x' && p[5] == '>' && hexval(p[3]) >= 0 &&
                hexval(p[4]) >= 0) {
                unsigned char byte = (unsigned char)(hexval(p[3]) * 16 + hexval(p[4]));
                if (!(strip_space && byte == ' ')) put(&b, &byte, 1);
                strip_space = 0;
                continue;
            }
            for (size_t k = 0; k < n;) {
                if (k + 3 <= n && memcmp(p + k, "\xE2\x96\x81", 3) == 0) {
                    if (!strip_space) put(&b, " ", 1);
                    k += 3;
                } else {
                    put(&b, p + k, 1);
                    k++;
                }
                strip_space = 0;
            }
        } else {
            for (size_t k = 0; k < n;) {
                uint32_t cp;
                int l = utf8_get((const unsigned char *)p + k, n - k, &cp);
                int byte = piso_tok_cp_to_byte(cp);
                if (byte >= 0) {
                    unsigned char c = (unsigned char)byte;
                    put(&b, &c, 1);
                } else {
                    put(&b, p + k, (size_t)l);
                }
                k += (size_t)l;
            }
        }
    }
    b.p[b.n] = 0;
    return b.p;
}
