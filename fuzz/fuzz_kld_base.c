/* KL base files (llama-perplexity's --kl-divergence-base layout, piso/kld.h). Invariants: an
 * accepted file has a sane header, exactly the size it implies, and tokens inside the vocabulary;
 * its rows can be read to the end; a model-free accumulation over them stays in bounds. */
#include "fuzz_common.h"
#include "piso/kld.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *in = fuzz_file(data, size, "in.kld");
    struct piso_kld_base b;
    if (piso_kld_base_open(in, &b) != 0) return 0;
    FUZZ_CHECK(b.ctx >= 4 && b.vocab >= 1 && b.chunks >= 1, "header %d %d %d", b.ctx, b.vocab, b.chunks);
    const int per = b.ctx - 1 - b.ctx / 2, len = piso_kld_row_len(b.vocab);
    const size_t want = 20 + 4 * (size_t)b.ctx * b.chunks + 2 * (size_t)len * per * b.chunks;
    FUZZ_CHECK(want == size, "accepted %zu bytes, the header implies %zu", size, want);
    for (size_t i = 0; i < (size_t)b.ctx * b.chunks; i++)
        FUZZ_CHECK(b.tokens[i] >= 0 && b.tokens[i] < b.vocab, "token %zu = %d", i, b.tokens[i]);
    if ((int64_t)per * b.chunks <= 256 && b.vocab <= 4096) {
        uint16_t *rows = malloc(sizeof *rows * (size_t)len * per);
        float *logits = calloc((size_t)b.vocab, sizeof *logits);
        struct piso_kld_acc acc;
        FUZZ_CHECK(rows && logits && piso_kld_acc_init(&acc, (int64_t)per * b.chunks) == 0, "alloc");
        FUZZ_CHECK(fseek(b.f, 20 + 4 * (long)b.ctx * b.chunks, SEEK_SET) == 0, "seek");
        for (int c = 0; c < b.chunks; c++) {
            FUZZ_CHECK(fread(rows, sizeof *rows, (size_t)len * per, b.f) == (size_t)len * per, "rows of chunk %d", c);
            for (int j = 0; j < per; j++)
                FUZZ_CHECK(piso_kld_acc_add(&acc, logits, rows + (size_t)j * len, b.vocab, b.tokens[c * b.ctx + b.ctx / 2 + j + 1]) == 0,
                           "add");
        }
        struct piso_kld_result r;
        piso_kld_acc_finish(&acc, &r);
        FUZZ_CHECK(r.count == (int64_t)per * b.chunks, "count");
        piso_kld_acc_free(&acc);
        free(rows);
        free(logits);
    }
    piso_kld_base_close(&b);
    return 0;
}
