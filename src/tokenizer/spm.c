/* SentencePiece-style segments: the normalizer (dummy prefix "▁", spaces -> "▁"), then BPE over
 * the whole segment (llama2.c, SentencePiece and HF tokenizers' Llama-2 layout do not pre-split). */
#include "tokenizer/tok_internal.h"

#include <stdlib.h>
#include <string.h>

static const char SPACE_MARK[] = "\xE2\x96\x81"; /* U+2581 */

int tok_spm_encode_segment(const struct piso_tokenizer *t, const char *text, size_t n, int first,
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
    int rc = 0;
    if (t->metaspace_split) { /* HF Metaspace split: every "▁" begins a new word */
        size_t w = 0;
        for (size_t i = 3; i + 3 <= o && rc == 0; i++) {
            if (memcmp(buf + i, SPACE_MARK, 3) != 0) continue;
            rc = tok_merge_word(t, buf + w, i - w, out);
            w = i;
        }
        if (rc == 0) rc = tok_merge_word(t, buf + w, o - w, out);
    } else { /* cut around bytes that can never merge: same result, far smaller merge heaps */
        size_t w = 0;
        for (size_t i = 0; i < o && rc == 0; i++) {
            unsigned char c = (unsigned char)buf[i];
            if (c >= 128 || !t->split_ok[c]) continue;
            if (i > w) rc = tok_merge_word(t, buf + w, i - w, out);
            if (rc == 0) rc = tok_merge_word(t, buf + i, 1, out);
            w = i + 1;
        }
        if (rc == 0 && o > w) rc = tok_merge_word(t, buf + w, o - w, out);
    }
    free(buf);
    return rc;
}
