/* llama2.c checkpoint (7-int header + fp32 arrays). Invariants: an accepted header describes the
 * file exactly (its size is the header plus the weights it names) and the model runs a forward pass
 * without a fault. No tokenizer is beside the file in the private directory. */
#include "fuzz_common.h"
#include "piso/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *in = fuzz_file(data, size, "model.bin");
    struct piso_model *m = NULL;
    if (piso_model_load(in, NULL, &m) != 0) return 0;
    const struct piso_config *c = &m->cfg;
    int32_t h[7];
    memcpy(h, data, sizeof h);
    FUZZ_CHECK(c->dim == h[0] && c->hidden_dim == h[1] && c->n_layers == h[2], "config differs from the header");
    const int64_t D = c->dim, F = c->hidden_dim, L = c->n_layers, V = c->vocab_size, hd = c->head_dim;
    const int64_t Hq = (int64_t)c->n_heads * hd, Hkv = (int64_t)c->n_kv_heads * hd;
    int64_t floats = V * D + L * (2 * D + Hq * D + 2 * Hkv * D + D * Hq + 3 * F * D) + D +
                     (int64_t)c->max_seq_len * hd + (h[5] < 0 ? V * D : 0);
    FUZZ_CHECK((int64_t)size == 28 + 4 * floats, "file of %zu bytes accepted, header describes %lld", size,
               (long long)(28 + 4 * floats));
    int toks[2] = {0, c->vocab_size - 1};
    float *logits = malloc(sizeof(float) * 2 * (size_t)c->vocab_size);
    (void)piso_forward(m, toks, 2, 0, logits);
    free(logits);
    piso_model_free(m);
    return 0;
}
