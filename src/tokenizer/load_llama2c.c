/* llama2.c tokenizer.bin: int32 max_token_length, then per token: float32 score, int32 length,
 * bytes. The count is not stored: the file holds exactly the vocabulary. Ids 0, 1, 2 are
 * <unk>, <s>, </s> by llama2.c's convention; pieces store spaces where SentencePiece has U+2581,
 * which we restore so one SPM encoder serves all sources. */
#include "tokenizer/tok_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int is_byte_piece(const char *p, int n) {
    return n == 6 && p[0] == '<' && p[1] == '0' && p[2] == 'x' && p[5] == '>';
}

int piso_tok_load_llama2c(const char *path, struct piso_tokenizer **out) {
    struct piso_mmap m;
    if (piso_mmap_open(&m, path) != 0) return -1;
    const uint8_t *d = m.data;
    size_t size = m.size, off = 4;
    int32_t max_len;
    if (size < 4) goto bad_header;
    memcpy(&max_len, d, 4);
    if (max_len <= 0 || max_len > 65536) goto bad_header;
    /* pass 1: count and validate */
    int n = 0;
    while (off < size) {
        int32_t len;
        float score;
        if (size - off < 8) {
            piso_mmap_close(&m);
            return piso_errorf("%s: llama2.c tokenizer: token %d is truncated at byte %zu", path, n, off);
        }
        memcpy(&score, d + off, 4);
        memcpy(&len, d + off + 4, 4);
        if (len >= 0 && len <= max_len && (size_t)len > size - off - 8) {
            piso_mmap_close(&m);
            return piso_errorf("%s: llama2.c tokenizer: token %d: its %d bytes run past the end of the file at byte "
                               "%zu (truncated?)", path, n, (int)len, size);
        }
        if (len < 0 || len > max_len || !isfinite(score)) {
            piso_mmap_close(&m);
            return piso_errorf("%s: llama2.c tokenizer: token %d has an invalid length %d or score "
                               "(max_token_length %d)", path, n, (int)len, (int)max_len);
        }
        off += 8 + (size_t)len;
        n++;
    }
    if (n < 3) {
        piso_mmap_close(&m);
        return piso_errorf("%s: llama2.c tokenizer: only %d tokens", path, n);
    }
    struct piso_tokenizer *t = piso_tok_new(PISO_TOK_SPM, n, path);
    if (!t) {
        piso_mmap_close(&m);
        return piso_errorf("%s: out of memory for %d tokens", path, n);
    }
    off = 4;
    for (int i = 0; i < n; i++) {
        int32_t len;
        memcpy(&t->v.scores[i], d + off, 4);
        memcpy(&len, d + off + 4, 4);
        const char *p = (const char *)d + off + 8;
        off += 8 + (size_t)len;
        char *s = malloc((size_t)len * 3 + 1);
        if (!s) {
            piso_mmap_close(&m);
            piso_tokenizer_free(t);
            return piso_errorf("%s: out of memory for token %d", path, i);
        }
        int o = 0;
        for (int k = 0; k < len; k++) {
            if (p[k] == ' ') {
                memcpy(s + o, "\xE2\x96\x81", 3);
                o += 3;
            } else {
                s[o++] = p[k];
            }
        }
        s[o] = 0;
        t->v.pieces[i] = s;
        t->piece_len[i] = o;
        if (is_byte_piece(s, o)) t->v.types[i] = TOK_TYPE_BYTE;
    }
    piso_mmap_close(&m);
    t->v.unk_id = 0;
    t->v.bos_id = 1;
    t->v.eos_id = 2;
    t->v.types[0] = TOK_TYPE_UNKNOWN;
    t->v.types[1] = t->v.types[2] = TOK_TYPE_CONTROL;
    t->v.add_bos = 1;
    t->merge_mode = TOK_MERGE_SCORE;
    t->prefix = TOK_PREFIX_SEGMENT;
    t->byte_fallback = 1;
    if (piso_tok_index_vocab(t) != 0) {
        piso_tokenizer_free(t);
        return -1;
    }
    piso_tok_sort_added(t);
    *out = t;
    return 0;
bad_header:
    piso_mmap_close(&m);
    return piso_errorf("%s: not a llama2.c tokenizer (bad max_token_length)", path);
}
