/* SentencePiece-style segments: the normalizer (dummy prefix "▁", spaces -> "▁"), then BPE over
 * the whole segment (llama2.c, SentencePiece and HF tokenizers' Llama-2 layout do not pre-split). */
#include "tokenizer/tok_internal.h"

#include <stdlib.h>
#include <string.h>

static const char SPACE_MARK[] = "\xE2\x96\x81"; /* U+2581 */

/* BPE over normalized text buf[o] (no added tokens inside). */
static int encode_normalized(const struct piso_tokenizer *t, const char *buf, size_t o, struct tok_ids *out) {
    int rc = 0;
    if (t->metaspace_split) { /* HF Metaspace split: every "▁" begins a new word */
        size_t w = 0;
        for (size_t i = 3; i + 3 <= o && rc == 0; i++) {
            if (memcmp(buf + i, SPACE_MARK, 3) != 0) continue;
            rc = piso_tok_merge_word(t, buf + w, i - w, out);
            w = i;
        }
        if (rc == 0) rc = piso_tok_merge_word(t, buf + w, o - w, out);
    } else { /* cut around bytes that can never merge: same result, far smaller merge heaps */
        size_t w = 0;
        for (size_t i = 0; i < o && rc == 0; i++) {
            unsigned char c = (unsigned char)buf[i];
            if (c >= 128 || !t->split_ok[c]) continue;
            if (i > w) rc = piso_tok_merge_word(t, buf + w, i - w, out);
            if (rc == 0) rc = piso_tok_merge_word(t, buf + i, 1, out);
            w = i + 1;
        }
        if (rc == 0 && o > w) rc = piso_tok_merge_word(t, buf + w, o - w, out);
    }
    return rc;
}

/* Length of buf that spells added token `id` once normalized (its spaces as "▁"), or 0. */
static size_t normalized_match(const struct piso_tokenizer *t, int id, const char *buf, size_t o) {
    const char *p = t->v.pieces[id];
    size_t k = 0;
    for (int i = 0; i < t->piece_len[id]; i++) {
        if (p[i] == ' ') {
            if (k + 3 > o || memcmp(buf + k, SPACE_MARK, 3) != 0) return 0;
            k += 3;
        } else {
            if (k >= o || buf[k] != p[i]) return 0;
            k++;
        }
    }
    return k;
}

/* HF matches added tokens flagged "normalized" in the normalized text: cut them out here. */
static int split_normalized_added(const struct piso_tokenizer *t, const char *buf, size_t o, struct tok_ids *out) {
    size_t w = 0;
    for (size_t i = 0; i < o;) {
        int hit = -1;
        size_t len = 0;
        for (int a = 0; a < t->n_added && hit < 0; a++) { /* longest first */
            int id = t->added[a];
            if (!(t->strip[id] & 4) || (!t->parse_special && t->v.types[id] != TOK_TYPE_USER)) continue;
            if ((len = normalized_match(t, id, buf + i, o - i)) > 0) hit = id;
        }
        if (hit < 0) {
            i++;
            continue;
        }
        if (i > w && encode_normalized(t, buf + w, i - w, out) != 0) return -1;
        piso_tok_ids_push(out, hit);
        i += len;
        w = i;
    }
    return o > w ? encode_normalized(t, buf + w, o - w, out) : 0;
}

int piso_tok_spm_encode_segment(const struct piso_tokenizer *t, const char *text, size_t n, int first,
                           struct tok_ids *out) {
    if (n == 0) return 0;
    size_t spaces = 0;
    for (size_t i = 0; i < n; i++) spaces += text[i] == ' ';
    char *buf = malloc(n + 2 * spaces + 4);
    size_t o = 0;
    int prefix = t->prefix == TOK_PREFIX_SEGMENT || (t->prefix == TOK_PREFIX_FIRST && first);
    if (t->metaspace && text[0] == ' ') prefix = 0; /* HF Metaspace: already starts with "▁" */
    if (prefix) {
        memcpy(buf, SPACE_MARK, 3);
        o = 3;
    }
    for (size_t i = 0; i < n; i++) {
        if (text[i] == ' ') {
            memcpy(buf + o, SPACE_MARK, 3);
            o += 3;
        } else {
            buf[o++] = text[i];
        }
    }
    int rc = t->match_normalized ? split_normalized_added(t, buf, o, out) : encode_normalized(t, buf, o, out);
    free(buf);
    return rc;
}
